# aot_program(PROGRAM LINK_FLAGS...) for the AOT example scripts: builds
# examples/aot/main.c against the mlp artifact in ${WORK}/artifact (its header
# is C: main.c is compiled as C11), links it with mlp.o, libstepc_runtime, fmt
# and LINK_FLAGS into ${WORK}/PROGRAM, and leaves what ldd says of it,
# lower-cased, in `libraries`. Uses CXX, INCLUDE, EXAMPLES, RUNTIME, FMT, WORK.
include(${CMAKE_CURRENT_LIST_DIR}/checked.cmake)

function(aot_program program)
  checked("compiling mlp_spec.cpp" ${CXX} -std=c++20 -O2 -Wall -Werror -I${INCLUDE}
          -I${WORK}/artifact -c ${WORK}/artifact/mlp_spec.cpp -o ${WORK}/mlp_spec.o)
  checked("compiling main.c" ${CXX} -x c -std=c11 -O2 -Wall -Wextra -Werror -I${WORK}/artifact
          -c ${EXAMPLES}/aot/main.c -o ${WORK}/main.o)
  checked("linking" ${CXX} ${WORK}/main.o ${WORK}/mlp_spec.o ${WORK}/artifact/mlp.o ${RUNTIME}
          ${FMT} -pthread -lm ${ARGN} -o ${WORK}/${program})
  checked("ldd" ldd ${WORK}/${program})
  string(TOLOWER "${out}" lowered)
  set(libraries "${lowered}" PARENT_SCOPE)
  set(out "${out}" PARENT_SCOPE)
endfunction()
