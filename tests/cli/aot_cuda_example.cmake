# `stepc compile --target cuda` -> examples/aot/main.c built against the CUDA
# artifact and linked with libstepc_runtime and -ldl only (no LLVM, MLIR or
# CUDA library, checked with ldd). Where a CUDA device can be used its loss
# must match the interpreter's; elsewhere the program must fail cleanly with
# "no CUDA device: ...". Takes STEPC, EXAMPLES, INCLUDE, CXX, RUNTIME, FMT,
# WORK, and PTXAS (may be empty).
# SANITIZE: the sanitizer flags of a `make sanitize` build, which the runtime
# library was built with, so the program must be too.
set(CXX ${CXX} ${SANITIZE})
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

include(${CMAKE_CURRENT_LIST_DIR}/aot_program.cmake)

checked("stepc compile" ${STEPC} compile ${EXAMPLES}/mlp.sg --target cuda -o ${WORK}/artifact)
foreach(file mlp.o mlp.h mlp_spec.cpp mlp.params.safetensors mlp.ptx)
  if(NOT EXISTS ${WORK}/artifact/${file})
    message(FATAL_ERROR "stepc compile --target cuda did not write ${file}:\n${out}")
  endif()
endforeach()
if(PTXAS)
  checked("ptxas" ${PTXAS} -arch=sm_90 ${WORK}/artifact/mlp.ptx -o ${WORK}/mlp.cubin)
endif()

aot_program(mlp_cuda -ldl)
if(libraries MATCHES "llvm|mlir|cuda")
  message(FATAL_ERROR "the CUDA AOT program must not link LLVM, MLIR or CUDA:\n${out}")
endif()

execute_process(COMMAND ${WORK}/mlp_cuda ${WORK} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  if(err MATCHES "no CUDA device: ")
    message(STATUS "no GPU here; the artifact fails cleanly: ${err}")
    return()
  endif()
  message(FATAL_ERROR "mlp_cuda failed (${rc}):\n${out}\n${err}")
endif()
checked("stepc run --backend interp" ${STEPC} run ${EXAMPLES}/mlp.sg --backend interp
        --input x=${WORK}/x.npy --input y=${WORK}/y.npy)
if(NOT out MATCHES "loss: f32\\[\\] \\[([^]]+)\\]")
  message(FATAL_ERROR "no loss in the interpreter's output:\n${out}")
endif()
checked("mlp_cuda against the interpreter" ${WORK}/mlp_cuda ${WORK} ${CMAKE_MATCH_1})
message(STATUS "${out}")
