# The output difference of stepc bench --per-kernel on GRAPH's training step:
# with every fused kernel reading the unfused build's values of its inputs and
# the difference taken over each output's largest element, a clean step reads
# f32 rounding (below LIMIT) on every kernel, attention and GELU kernels deep
# in the step included; a fault injected into one fused kernel reads large on
# that kernel and on no other (the kernels after it read the unfused values,
# not the faulty ones). The fused kernels' names come from the error for an
# unknown kernel, which is tested on the way.
include(${CMAKE_CURRENT_LIST_DIR}/checked.cmake)

set(base ${STEPC} bench ${GRAPH} --train-step adam --per-kernel --steps 1 --warmup 0
    --threads 2)

execute_process(COMMAND ${base} --inject-fault no_such_kernel=1
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(NOT rc STREQUAL "1")
  message(FATAL_ERROR "an unknown kernel exited with '${rc}', expected 1:\n${out}\n${err}")
endif()
if(NOT err MATCHES "bench: --inject-fault: graph '[^']+' has no kernel 'no_such_kernel'; the fused kernels are: ([^\n]*)")
  message(FATAL_ERROR "the error does not list the fused kernels:\n${err}")
endif()
string(REPLACE ", " ";" kernels "${CMAKE_MATCH_1}")
list(LENGTH kernels count)
math(EXPR middle "${count} / 2")
list(GET kernels ${middle} culprit)

# Each row of JSON's per_kernel table as "KERNEL=MAX_DIFF" in `rows`.
function(read_rows json)
  file(READ ${json} text)
  string(JSON count LENGTH "${text}" per_kernel)
  math(EXPR last "${count} - 1")
  set(rows "")
  foreach(i RANGE ${last})
    string(JSON kernel GET "${text}" per_kernel ${i} kernel)
    string(JSON diff GET "${text}" per_kernel ${i} max_diff)
    list(APPEND rows "${kernel}=${diff}")
  endforeach()
  set(rows "${rows}" PARENT_SCOPE)
endfunction()

checked("bench, clean" ${base} --json ${WORK}/clean.json)
if(NOT out MATCHES "max diff = max \\|fused - unfused\\| / max \\|unfused\\| over each output")
  message(FATAL_ERROR "the table does not say what its difference is:\n${out}")
endif()
read_rows(${WORK}/clean.json)
foreach(row ${rows})
  string(REGEX REPLACE "=.*" "" kernel "${row}")
  string(REGEX REPLACE ".*=" "" diff "${row}")
  if(NOT diff LESS ${LIMIT})
    message(FATAL_ERROR "${kernel} differs by ${diff} (over its largest element) in a clean "
                        "step, expected below ${LIMIT}:\n${out}")
  endif()
endforeach()

checked("bench, fault in ${culprit}" ${base} --inject-fault ${culprit}=0.25
        --json ${WORK}/fault.json)
read_rows(${WORK}/fault.json)
set(found OFF)
foreach(row ${rows})
  string(REGEX REPLACE "=.*" "" kernel "${row}")
  string(REGEX REPLACE ".*=" "" diff "${row}")
  if(kernel STREQUAL culprit)
    set(found ON)
    if(diff LESS 0.001)
      message(FATAL_ERROR "the faulty ${kernel} differs by only ${diff}:\n${out}")
    endif()
  elseif(NOT diff LESS ${LIMIT})
    message(FATAL_ERROR "${kernel} differs by ${diff} with the fault in ${culprit}, expected "
                        "below ${LIMIT}: the fault spread past its kernel:\n${out}")
  endif()
endforeach()
if(NOT found)
  message(FATAL_ERROR "no row for the faulty ${culprit}:\n${out}")
endif()
