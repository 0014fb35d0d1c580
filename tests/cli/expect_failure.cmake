# Runs `stepc check FILE` and requires a non-zero exit and EXPECTED in stderr.
execute_process(COMMAND ${STEPC} check ${FILE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "stepc check ${FILE} succeeded but should have failed:\n${out}")
endif()
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "stepc check ${FILE} exited with ${rc}, expected 1 (user error):\n${err}")
endif()
string(FIND "${err}" "${EXPECTED}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "stderr lacks '${EXPECTED}':\n${err}")
endif()
message(STATUS "rejected as expected: ${err}")
