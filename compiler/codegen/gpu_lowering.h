// The CUDA target's driver (compile.h's compileCudaSpec, compileCuda, and
// the Target::Cuda paths of compileAot and dumpKernelIR): the graph is
// lowered as for the CPU, but every kernel becomes gpu.funcs (lowerGroup
// with gpu = true, lowering.h) in one gpu.module, taken to PTX by
// gpu_backend.h. Internal to compiler/codegen.
#pragma once

#include "stepc/compile.h"

#include <string>

namespace stepc::codegen {

// The module that holds a graph's GPU kernels.
std::string gpuModuleText(const std::string &globals, const std::string &functions);

// dumpKernelIR for Target::Cuda: stages "mlir", "nvvm", "ptx".
std::string dumpGpuIR(const Graph &graph, const CompileOptions &options, const std::string &kernel,
                      const std::string &stage);

// The GPU kernels' code run on the CPU, for tests on machines without a GPU:
// each gpu.func becomes a CPU function that visits its nest's elements in
// reverse order (a nest whose elements depend on each other's order then
// fails), one kernel of the spec per launch, over the GPU's arena layout
// (scratch included) and with its atomics. It checks what the GPU lowering
// decides (nests, flattening, scratch, zeroing and atomic accumulation), not
// NVPTX or real concurrency.
ExecutableSpec emulateCudaOnCpu(const Graph &graph, const CompileOptions &options);

// compileAot for Target::Cuda.
AotArtifact compileAotCuda(const Graph &graph, const CompileOptions &options,
                           const std::string &dir, const std::string &name);

} // namespace stepc::codegen
