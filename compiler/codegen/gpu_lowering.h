// The CUDA target's driver (compile.h's compileCudaSpec, compileCuda, and
// the Target::Cuda paths of compileAot and dumpKernelIR): the graph is
// lowered as for the CPU, but every kernel becomes gpu.funcs (lowering.h,
// GpuTarget) in one gpu.module, taken to PTX by gpu_backend.h. Internal to
// compiler/codegen.
#pragma once

#include "stepc/compile.h"

#include <string>

namespace stepc::codegen {

// The module that holds a graph's GPU kernels.
std::string gpuModuleText(const std::string &globals, const std::string &functions);

// dumpKernelIR for Target::Cuda: stages "mlir", "nvvm", "ptx".
std::string dumpGpuIR(const Graph &graph, const CompileOptions &options,
                      const std::string &kernel, const std::string &stage);

// compileAot for Target::Cuda.
AotArtifact compileAotCuda(const Graph &graph, const CompileOptions &options,
                           const std::string &dir, const std::string &name);

} // namespace stepc::codegen
