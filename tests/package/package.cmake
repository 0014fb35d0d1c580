# The CMake package as another project sees it (label `package`). MODE:
#   find_package     `cmake --install` into WORK/prefix, then consumer/ is
#                    configured against that prefix, built and run: the
#                    README's C++ example (stepc::compiler) and the AOT C
#                    example (stepc::runtime only: ldd must show no LLVM/MLIR);
#                    the installed CLI's `demo small` takes the installed examples;
#                    then the same AOT program against an install of the
#                    `runtime` component alone
#   add_subdirectory subdirectory/ vendors the source tree runtime-only, with
#                    the compiler's dependencies made unfindable, and builds
#                    and runs the AOT C example against stepc::runtime
# Takes MODE, SOURCE, BUILD, WORK, STEPC (the CLI), GENERATOR, CXX and
# SANITIZE (a `make sanitize` build's flags, which the program needs too).
# WORK is kept between runs, so that a second run only rebuilds what changed.
include(${SOURCE}/tests/cli/checked.cmake)

string(REPLACE ";" " " SANITIZE "${SANITIZE}")
set(flags "-DCMAKE_CXX_FLAGS=${SANITIZE}" "-DCMAKE_C_FLAGS=${SANITIZE}"
          "-DCMAKE_EXE_LINKER_FLAGS=${SANITIZE}")
# The consumers' C compiler is CXX's own C driver (clang++-19 -> clang-19), so
# the sanitizer flags, which are clang's under `make sanitize`, fit it too.
string(REGEX REPLACE "clang\\+\\+" "clang" CC "${CXX}")
string(REGEX REPLACE "g\\+\\+$" "gcc" CC "${CC}")
string(REGEX REPLACE "c\\+\\+$" "cc" CC "${CC}")
set(configure ${CMAKE_COMMAND} -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release
              -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_C_COMPILER=${CC} ${flags})

function(run_aot_program program)
  checked("ldd ${program}" ldd ${program})
  string(TOLOWER "${out}" libraries)
  if(libraries MATCHES "llvm|mlir")
    message(FATAL_ERROR "a program linked with stepc::runtime must not need LLVM or MLIR:\n${out}")
  endif()
  checked("${program}" ${program})
  if(NOT out MATCHES "loss = [0-9.]+")
    message(FATAL_ERROR "${program} printed no loss:\n${out}")
  endif()
  message(STATUS "${program}: ${out}")
endfunction()

if(MODE STREQUAL "find_package")
  checked("cmake --install" ${CMAKE_COMMAND} --install ${BUILD} --prefix ${WORK}/prefix)
  checked("configuring the consumer" ${configure} -S ${SOURCE}/tests/package/consumer
          -B ${WORK}/consumer -DCMAKE_PREFIX_PATH=${WORK}/prefix)
  checked("building the consumer" ${CMAKE_COMMAND} --build ${WORK}/consumer)
  checked("readme_example" ${WORK}/consumer/readme_example)
  message(STATUS "readme_example: ${out}")
  run_aot_program(${WORK}/consumer/mlp_aot)
  # The installed CLI finds the installed examples, from any directory.
  execute_process(COMMAND ${WORK}/prefix/bin/stepc demo small WORKING_DIRECTORY ${WORK}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${out}" "${WORK}/prefix/share/stepc/examples/xor.sg" at)
  if(NOT rc EQUAL 0 OR at EQUAL -1)
    message(FATAL_ERROR "the installed `stepc demo small` (${rc}) did not train "
                        "${WORK}/prefix/share/stepc/examples/xor.sg:\n${out}\n${err}")
  endif()
  # The runtime component alone: a package that never looks for LLVM or MLIR.
  checked("cmake --install --component runtime" ${CMAKE_COMMAND} --install ${BUILD}
          --component runtime --prefix ${WORK}/runtime_prefix)
  checked("configuring the runtime-only consumer" ${configure} -S ${SOURCE}/tests/package/consumer
          -B ${WORK}/runtime_consumer -DCMAKE_PREFIX_PATH=${WORK}/runtime_prefix
          -DSTEPC_COMPONENTS=runtime -DSTEPC_CLI=${STEPC})
  file(STRINGS ${WORK}/runtime_consumer/CMakeCache.txt found REGEX "^(MLIR|LLVM)_DIR:")
  if(found)
    message(FATAL_ERROR "find_package(stepc COMPONENTS runtime) looked for LLVM/MLIR: ${found}")
  endif()
  checked("building the runtime-only consumer" ${CMAKE_COMMAND} --build ${WORK}/runtime_consumer)
  run_aot_program(${WORK}/runtime_consumer/mlp_aot)
elseif(MODE STREQUAL "add_subdirectory")
  checked("stepc compile" ${STEPC} compile ${SOURCE}/examples/mlp.sg --target cpu
          -o ${WORK}/artifact)
  checked("configuring the consumer" ${configure} -S ${SOURCE}/tests/package/subdirectory
          -B ${WORK}/consumer -DSTEPC_SOURCE_DIR=${SOURCE} -DSTEPC_ARTIFACT=${WORK}/artifact)
  checked("building the consumer" ${CMAKE_COMMAND} --build ${WORK}/consumer)
  run_aot_program(${WORK}/consumer/mlp_aot)
else()
  message(FATAL_ERROR "MODE must be find_package or add_subdirectory, got '${MODE}'")
endif()
