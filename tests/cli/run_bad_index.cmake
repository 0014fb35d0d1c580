# `stepc run` with an index (or a label) out of range given by --input must
# exit 1 with the interpreter's message on every backend: the op, its source
# line, the value, its element and the valid range. Takes STEPC, DIR (this
# folder), BACKEND and WORK.
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${STEPC} run ${DIR}/bad_index_inputs.sg --backend interp
                        --save-outputs ${WORK}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "writing the inputs failed (${rc}):\n${out}\n${err}")
endif()

function(expect_rejected what expected)
  execute_process(COMMAND ${STEPC} run ${DIR}/bad_index_model.sg --backend ${BACKEND} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 1)
    message(FATAL_ERROR "${what}: exit ${rc}, expected 1 (user error):\n${out}\n${err}")
  endif()
  string(FIND "${err}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${what}: stderr lacks '${expected}':\n${err}")
  endif()
  message(STATUS "${what} rejected as expected: ${err}")
endfunction()

# The other input is drawn at random, and valid.
expect_rejected("index 99" "bad_index_model.sg:6:3: error: gather: index 99 (element 2 of the indices i32[4]) is out of range for axis 0 of data f32[27,3]; valid indices are 0 to 26"
                --input i=${WORK}/i.npy)
expect_rejected("label 7" "bad_index_model.sg:7:3: error: one_hot (cross_entropy labels): index 7 (element 2 of the indices i32[4]) is out of range for depth 3; valid indices are 0 to 2"
                --input y=${WORK}/y.npy)

# Random inputs are valid indices and labels: the run succeeds.
execute_process(COMMAND ${STEPC} run ${DIR}/bad_index_model.sg --backend ${BACKEND} --seed 4
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "loss: f32\\[\\]")
  message(FATAL_ERROR "a run on random inputs failed (${rc}):\n${out}\n${err}")
endif()
