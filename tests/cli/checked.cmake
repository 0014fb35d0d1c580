# checked(WHAT COMMAND ARGS...) for the cmake -P test scripts: runs the
# command, fails the test with WHAT, the command line and its output unless it
# exits 0, and leaves its stdout in `out` for the caller.
function(checked what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "${what} failed (${rc}): ${command}\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()
