# stepc run --backend cpu --threads N: the outputs have the same bytes at 1
# and at 3 threads (docs/design.md, "Determinism").
file(REMOVE_RECURSE ${WORK})
foreach(threads 1 3)
  execute_process(COMMAND ${STEPC} run ${EXAMPLES}/mlp.sg --backend cpu --seed 4
                          --threads ${threads} --save-outputs ${WORK}/${threads}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR NOT EXISTS ${WORK}/${threads}/loss.npy)
    message(FATAL_ERROR "run at ${threads} threads failed (${rc}):\n${out}\n${err}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/1/loss.npy ${WORK}/3/loss.npy
                RESULT_VARIABLE differ)
if(NOT differ EQUAL 0)
  message(FATAL_ERROR "loss.npy differs between 1 and 3 threads")
endif()
