# stepc run --save-outputs writes .npy files that --input reads back.
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${STEPC} run ${EXAMPLES}/poly_sin.sg --seed 5 --save-outputs ${WORK}
                RESULT_VARIABLE rc OUTPUT_VARIABLE first ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT EXISTS ${WORK}/pred.npy)
  message(FATAL_ERROR "first run failed (${rc}):\n${err}")
endif()
# Fitting the prediction itself gives a different loss than the random target.
execute_process(COMMAND ${STEPC} run ${EXAMPLES}/poly_sin.sg --seed 5 --input y=${WORK}/pred.npy
                RESULT_VARIABLE rc OUTPUT_VARIABLE second ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "second run failed (${rc}):\n${err}")
endif()
string(REGEX MATCH "loss: f32\\[\\] \\[[^]]*\\]" loss "${second}")
if(NOT loss STREQUAL "loss: f32[] [0]")
  message(FATAL_ERROR "loss against its own prediction should be 0, got '${loss}':\n${second}")
endif()
execute_process(COMMAND ${STEPC} run ${EXAMPLES}/poly_sin.sg --input y=${WORK}/missing.npy
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "cannot open")
  message(FATAL_ERROR "missing .npy should fail with 'cannot open', got ${rc}:\n${err}")
endif()
execute_process(COMMAND ${STEPC} run ${EXAMPLES}/poly_sin.sg --input x=${WORK}/loss.npy
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "input 'x': expected f32\\[256\\]")
  message(FATAL_ERROR "wrong-shape input should name it, got ${rc}:\n${err}")
endif()
