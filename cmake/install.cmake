# `cmake --install BUILD --prefix P`: headers, libraries, the stepc CLI, the
# examples, and the package config that find_package(stepc) reads:
#   P/include/stepc/*.h                 P/lib/libstepc_*.a
#   P/bin/stepc                         P/share/stepc/examples/
#   P/lib/cmake/stepc/stepcConfig.cmake (+ Version, + the targets files)
# Two install components: `runtime` (headers, libstepc_runtime, the examples,
# the config files) and `compiler` (the other libraries, the CLI):
# `cmake --install BUILD --component runtime` installs what an AOT artifact
# needs and nothing that links LLVM or MLIR.
include(CMakePackageConfigHelpers)

set(STEPC_CONFIG_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/stepc)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/stepc
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT runtime)
install(TARGETS stepc_runtime EXPORT stepc-runtime-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime)
install(EXPORT stepc-runtime-targets NAMESPACE stepc:: DESTINATION ${STEPC_CONFIG_DIR}
        COMPONENT runtime)

if(NOT STEPC_RUNTIME_ONLY)
  foreach(library ir interp autodiff gradcheck passes codegen backend onnx mpi)
    set_target_properties(stepc_${library} PROPERTIES EXPORT_NAME ${library})
  endforeach()
  install(TARGETS stepc_ir stepc_interp stepc_autodiff stepc_gradcheck stepc_passes
                  stepc_codegen stepc_backend stepc_onnx stepc_mpi stepc_compiler
          EXPORT stepc-compiler-targets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT compiler)
  # The CLI is exported too (stepc::stepc), so that a consumer's build can
  # run `stepc compile` for its AOT artifacts. It finds LLVM and MLIR's
  # shared libraries through the rpath of the build.
  set_target_properties(stepc PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
  install(TARGETS stepc EXPORT stepc-compiler-targets
          RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT compiler)
  install(EXPORT stepc-compiler-targets NAMESPACE stepc:: DESTINATION ${STEPC_CONFIG_DIR}
          COMPONENT compiler)
endif()
# `stepc demo` looks for them here, relative to its own binary; aot/main.c is
# the runtime's example.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/stepc/examples COMPONENT runtime)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/stepcConfig.cmake.in
  ${PROJECT_BINARY_DIR}/stepcConfig.cmake INSTALL_DESTINATION ${STEPC_CONFIG_DIR}
  PATH_VARS CMAKE_INSTALL_DATADIR CMAKE_INSTALL_BINDIR)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/stepcConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/stepcConfig.cmake ${PROJECT_BINARY_DIR}/stepcConfigVersion.cmake
        DESTINATION ${STEPC_CONFIG_DIR} COMPONENT runtime)
