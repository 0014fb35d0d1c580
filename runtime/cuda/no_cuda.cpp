// The CUDA driver of a build configured with -DSTEPC_BUILD_CUDA=OFF: CMake
// compiles this file instead of driver.cpp (and compiler/codegen/no_gpu.cpp
// instead of the GPU code generator). This is the one place that says so:
// driver() always throws, so cudaUnavailableReason(), a CudaExecutable, the
// code generator's stubs and every `--backend cuda` give this message.
#include "driver.h"

#include "stepc/error.h"

#include <fmt/format.h>

namespace stepc::cuda {

std::string Driver::describe(CUresult result) const { return fmt::format("CUDA result {}", result); }

void Driver::check(CUresult result, const char *call, const std::string &what) const {
  if (result != CUDA_SUCCESS)
    throw Error(fmt::format("CUDA error in {}: {}", call, describe(result)));
}

const Driver &driver() {
  throw Error("stepc was built without CUDA (STEPC_BUILD_CUDA=OFF): configure with "
              "-DSTEPC_BUILD_CUDA=ON for the cuda backend");
}

} // namespace stepc::cuda
