# stepc bench --per-kernel on tests/cli/roofline.sg: the roofline columns are
# printed, and each kernel's figures in the JSON are sane: a positive
# intensity and bound, a fraction of the bound in (0, 2] (the bound is
# measured, and a loaded machine measures it low, so a kernel may beat it;
# timings are not asserted: the bound catches unit errors).
include(${CMAKE_CURRENT_LIST_DIR}/checked.cmake)
checked("stepc bench" ${STEPC} bench ${GRAPH} --per-kernel --steps 5 --warmup 1 --json ${JSON})
message(STATUS "${out}")
if(NOT out MATCHES "FLOP/B +roof GF/s +% roof\n")
  message(FATAL_ERROR "no roofline columns in the per-kernel table")
endif()
file(READ ${JSON} json)
string(JSON count LENGTH "${json}" kernels)
if(count LESS 2)
  message(FATAL_ERROR "expected the matmul and the elementwise kernel, got ${count} kernels")
endif()
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  string(JSON name GET "${json}" kernels ${i} kernel)
  string(JSON intensity GET "${json}" kernels ${i} intensity)
  string(JSON bound GET "${json}" kernels ${i} roofline_gflops)
  string(JSON fraction GET "${json}" kernels ${i} roofline_fraction)
  if(NOT intensity GREATER 0 OR NOT bound GREATER 0 OR NOT fraction GREATER 0 OR
     fraction GREATER 2)
    message(FATAL_ERROR "${name}: intensity ${intensity}, bound ${bound} GFLOP/s, fraction "
                        "${fraction}: expected positive figures and a fraction in (0, 2]")
  endif()
endforeach()
# The matmul is bounded by the peak, the elementwise chain by bandwidth.
if(NOT json MATCHES "\"roofline_bound\": \"compute\"" OR
   NOT json MATCHES "\"roofline_bound\": \"memory\"")
  message(FATAL_ERROR "expected one compute-bound and one memory-bound kernel:\n${json}")
endif()
