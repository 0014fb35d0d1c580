// MLIR text of a gpu.module of kernels -> NVVM (LLVM dialect) -> PTX, through
// MLIR's NVVM target (gpu-module-to-binary, format=isa). Like llvm_backend.h,
// one of the few files that include MLIR or LLVM headers (docs/design.md rule 2).
#pragma once

#include <string>
#include <vector>

namespace stepc::codegen {

// The stages `stepc compile --target cuda --dump` can show.
enum class GpuStage { Mlir, Nvvm, Ptx };

// The chips stepc emits PTX for; the first is the default.
const std::vector<std::string> &supportedGpuArchs();
// Throws stepc::Error naming the supported chips if `arch` is not one.
void checkGpuArch(const std::string &arch);

// Lowers a module holding one gpu.module to `stage` for `arch` and prints it.
std::string lowerGpuToStage(const std::string &mlirModule, GpuStage stage, const std::string &arch);

// The module's PTX for each chip of `archs`, in that order: text ending in
// a newline, with no NUL (the CUDA driver wants exactly one more, which the
// runtime adds). libdevice (for exp, log, tanh, erf, pow, ... and every f64
// function) is linked from the CUDA toolkit: $CUDA_HOME, $CUDA_PATH or
// /usr/local/cuda, whichever has nvvm/libdevice/libdevice.10.bc; without it
// a kernel that needs it fails with a stepc::Error.
std::vector<std::string> compileToPtx(const std::string &mlirModule,
                                      const std::vector<std::string> &archs);

// The CUDA toolkit the PTX path uses (see compileToPtx), or "" if none.
std::string cudaToolkitPath();

} // namespace stepc::codegen
