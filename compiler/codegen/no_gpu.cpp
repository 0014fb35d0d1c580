// The CUDA target of a build configured with -DSTEPC_BUILD_CUDA=OFF: CMake
// compiles this file instead of gpu_lowering.cpp and gpu_backend.cpp, so
// nothing needs LLVM's NVPTX target. Every entry point says why it cannot
// run, with the message of the runtime's driver stub (runtime/cuda/no_cuda.cpp).
#include "gpu_lowering.h"

#include "stepc/error.h"

namespace stepc::codegen {

namespace {
[[noreturn]] void builtWithoutCuda() { throw Error(cudaUnavailableReason()); }
} // namespace

std::string gpuModuleText(const std::string &, const std::string &) { builtWithoutCuda(); }

std::string dumpGpuIR(const Graph &, const CompileOptions &, const std::string &,
                      const std::string &) {
  builtWithoutCuda();
}

ExecutableSpec emulateCudaOnCpu(const Graph &, const CompileOptions &) { builtWithoutCuda(); }

AotArtifact compileAotCuda(const Graph &, const CompileOptions &, const std::string &,
                           const std::string &) {
  builtWithoutCuda();
}

} // namespace stepc::codegen

namespace stepc {

CudaExecutableSpec compileCudaSpec(const Graph &, const CompileOptions &) {
  codegen::builtWithoutCuda();
}

std::unique_ptr<CudaExecutable> compileCuda(const Graph &, const CompileOptions &,
                                            const RunOptions &) {
  codegen::builtWithoutCuda();
}

} // namespace stepc
