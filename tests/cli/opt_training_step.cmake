# stepc opt on a training step: the default (training) pipeline shrinks it,
# -o writes a graph that checks and runs, and --stats reports every pass.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${STEPC} train-step ${EXAMPLES}/xor.sg --loss loss --optimizer adam
                        -o ${WORK}/step.sg
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "train-step failed (${rc}):\n${err}")
endif()
execute_process(COMMAND ${STEPC} opt ${WORK}/step.sg --stats -o ${WORK}/opt.sg
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT EXISTS ${WORK}/opt.sg)
  message(FATAL_ERROR "opt failed (${rc}):\n${err}")
endif()
file(GLOB leftovers ${WORK}/*.tmp*)
if(leftovers)
  message(FATAL_ERROR "opt left its temporary file behind")
endif()
foreach(pass simplify fold cse dce)
  if(NOT err MATCHES "\n${pass} +[0-9]+ +[0-9]+ +[0-9.]+ +(yes|no)\n")
    message(FATAL_ERROR "--stats lacks a row for ${pass}:\n${err}")
  endif()
endforeach()
string(REGEX MATCH "\ntotal +([0-9]+) +([0-9]+)" total "${err}")
if(NOT CMAKE_MATCH_2 LESS CMAKE_MATCH_1)
  message(FATAL_ERROR "the pipeline did not shrink the training step:\n${err}")
endif()
execute_process(COMMAND ${STEPC} run ${WORK}/opt.sg --seed 2
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "loss: f32\\[\\]")
  message(FATAL_ERROR "the optimized step does not run (${rc}):\n${out}${err}")
endif()
