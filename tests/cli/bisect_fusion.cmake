# stepc bisect-fusion on GRAPH's training step: with CLEAN, the clean step
# reports no difference (two more compiles of the step); a fault injected into the middle fused kernel is found, alone,
# in at most ceil(log2 fused kernels) + 2 probes. The fused kernels' names
# come from the error for an unknown kernel, which is tested on the way.
include(${CMAKE_CURRENT_LIST_DIR}/checked.cmake)

set(base ${STEPC} bisect-fusion ${GRAPH} --train-step adam --metric diff --tolerance ${TOLERANCE})

execute_process(COMMAND ${base} --inject-fault no_such_kernel=1
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(NOT rc STREQUAL "1")
  message(FATAL_ERROR "an unknown kernel exited with '${rc}', expected 1:\n${out}\n${err}")
endif()
if(NOT err MATCHES "has no kernel 'no_such_kernel'; the fused kernels are: ([^\n]*)")
  message(FATAL_ERROR "the error does not list the fused kernels:\n${err}")
endif()
string(REPLACE ", " ";" kernels "${CMAKE_MATCH_1}")
list(LENGTH kernels count)
math(EXPR middle "${count} / 2")
list(GET kernels ${middle} culprit)

if(CLEAN)
  execute_process(COMMAND ${base} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 300)
  if(NOT rc EQUAL 0 OR NOT out MATCHES "no difference beyond ${TOLERANCE}")
    message(FATAL_ERROR "the clean step (exit ${rc}) should show no difference:\n${out}\n${err}")
  endif()
endif()

checked("bisect-fusion with a fault" ${base} --inject-fault ${culprit}=0.01)
message(STATUS "${out}")
if(NOT out MATCHES "culprit: fusing this kernel explains the difference \\(([0-9]+) probes for ([0-9]+) fused kernels[^\n]*\n  ([^ ]+) ")
  message(FATAL_ERROR "no single culprit reported")
endif()
set(probes ${CMAKE_MATCH_1})
set(fused ${CMAKE_MATCH_2})
if(NOT CMAKE_MATCH_3 STREQUAL culprit)
  message(FATAL_ERROR "found ${CMAKE_MATCH_3}, but the fault was injected into ${culprit}")
endif()
if(NOT fused EQUAL count)
  message(FATAL_ERROR "${fused} fused kernels bisected, but the error listed ${count}")
endif()
set(log2 0)
set(power 1)
while(power LESS fused)
  math(EXPR power "${power} * 2")
  math(EXPR log2 "${log2} + 1")
endwhile()
math(EXPR limit "${log2} + 2")
string(REGEX MATCHALL "\nprobe [0-9]+:" lines "\n${out}")
list(LENGTH lines printed)
if(NOT printed EQUAL probes OR probes GREATER limit)
  message(FATAL_ERROR "${printed} probes printed, ${probes} counted; at most ${limit} allowed")
endif()
