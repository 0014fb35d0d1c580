# The AOT header's communicator: mlp.sg's data-parallel Adam step compiled
# with `stepc compile`, driven from C (aot_distributed.c) through
# stepc_mlp_dp_create_distributed with fake callbacks for a job of 2.
# Takes STEPC, EXAMPLES, INCLUDE, CXX, RUNTIME, FMT, SOURCE (the .c file),
# SANITIZE and WORK, like aot_example.cmake.
set(CXX ${CXX} ${SANITIZE})
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

include(${CMAKE_CURRENT_LIST_DIR}/checked.cmake)

checked("stepc train-step --data-parallel" ${STEPC} train-step ${EXAMPLES}/mlp.sg --loss loss
        --optimizer adam --lr 1e-3 --data-parallel -o ${WORK}/mlp_dp.sg)
checked("stepc compile" ${STEPC} compile ${WORK}/mlp_dp.sg --target cpu -o ${WORK}/artifact
        --name mlp_dp)
checked("compiling mlp_dp_spec.cpp" ${CXX} -std=c++20 -O2 -Wall -Werror -I${INCLUDE}
        -I${WORK}/artifact -c ${WORK}/artifact/mlp_dp_spec.cpp -o ${WORK}/mlp_dp_spec.o)
checked("compiling aot_distributed.c" ${CXX} -x c -std=c11 -O2 -Wall -Wextra -Werror
        -I${WORK}/artifact -c ${SOURCE} -o ${WORK}/main.o)
checked("linking" ${CXX} ${WORK}/main.o ${WORK}/mlp_dp_spec.o ${WORK}/artifact/mlp_dp.o
        ${RUNTIME} ${FMT} -pthread -lm -o ${WORK}/mlp_dp)
checked("mlp_dp" ${WORK}/mlp_dp)
message(STATUS "${out}")
