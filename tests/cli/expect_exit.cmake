# Runs `stepc ARGS` (ARGS separated by '|') and requires exit status 1 (a user
# error; CTest's WILL_FAIL would accept any non-zero status, a crash included)
# and EXPECTED in stderr.
string(REPLACE "|" ";" args "${ARGS}")
execute_process(COMMAND ${STEPC} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc STREQUAL "1")
  message(FATAL_ERROR "stepc ${args} exited with '${rc}', expected 1 (user error):\n${out}\n${err}")
endif()
string(FIND "${err}" "${EXPECTED}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "stderr lacks '${EXPECTED}':\n${err}")
endif()
message(STATUS "rejected as expected: ${err}")
