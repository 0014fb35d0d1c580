# `stepc compile --target cpu` -> examples/aot/main.c built with the C++
# compiler and linked with libstepc_runtime only; its loss must match the
# interpreter's on the same inputs, and ldd must show no LLVM or MLIR library.
# Takes STEPC, EXAMPLES, INCLUDE, CXX, RUNTIME (libstepc_runtime.a), FMT
# (libfmt) and WORK.
# SANITIZE: the sanitizer flags of a `make sanitize` build, which the runtime
# library was built with, so the program must be too.
set(CXX ${CXX} ${SANITIZE})
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

include(${CMAKE_CURRENT_LIST_DIR}/aot_program.cmake)

checked("stepc compile" ${STEPC} compile ${EXAMPLES}/mlp.sg --target cpu -o ${WORK}/artifact)
foreach(file mlp.o mlp.h mlp_spec.cpp mlp.params.safetensors)
  if(NOT EXISTS ${WORK}/artifact/${file})
    message(FATAL_ERROR "stepc compile did not write ${file}:\n${out}")
  endif()
endforeach()

aot_program(mlp_aot)
if(libraries MATCHES "llvm|mlir")
  message(FATAL_ERROR "the AOT program must not need LLVM or MLIR:\n${out}")
endif()

# The program writes its inputs as .npy; the interpreter computes the loss on
# them; the program then checks its own loss against that.
checked("mlp_aot" ${WORK}/mlp_aot ${WORK})
string(REGEX MATCH "loss = [^\n]*" aot "${out}")
checked("stepc run --backend interp" ${STEPC} run ${EXAMPLES}/mlp.sg --backend interp
        --input x=${WORK}/x.npy --input y=${WORK}/y.npy)
if(NOT out MATCHES "loss: f32\\[\\] \\[([^]]+)\\]")
  message(FATAL_ERROR "no loss in the interpreter's output:\n${out}")
endif()
set(expected ${CMAKE_MATCH_1})
checked("mlp_aot against the interpreter" ${WORK}/mlp_aot ${WORK} ${expected})
message(STATUS "AOT ${aot}; interpreter loss = ${expected}\n${out}")

# A training step (Adam: i64 and dotted param names, update copies) compiles
# too, and its artifact links into the same program as mlp's: kernel symbols
# are prefixed with the artifact's name.
checked("stepc train-step" ${STEPC} train-step ${EXAMPLES}/mlp.sg --loss loss --optimizer adam
        --lr 1e-3 -o ${WORK}/mlp_train.sg)
checked("stepc compile (training step)" ${STEPC} compile ${WORK}/mlp_train.sg --target cpu
        -o ${WORK}/artifact --name mlp_train)
checked("compiling mlp_train_spec.cpp" ${CXX} -std=c++20 -O2 -Wall -Werror -I${INCLUDE}
        -I${WORK}/artifact -c ${WORK}/artifact/mlp_train_spec.cpp -o ${WORK}/mlp_train_spec.o)
checked("linking both artifacts" ${CXX} ${WORK}/main.o ${WORK}/mlp_spec.o ${WORK}/artifact/mlp.o
        ${WORK}/mlp_train_spec.o ${WORK}/artifact/mlp_train.o ${RUNTIME} ${FMT} -pthread -lm
        -o ${WORK}/both)

