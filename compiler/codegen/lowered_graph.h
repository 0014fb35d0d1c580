// A graph lowered to its MLIR kernels, before any of them is compiled: what
// compileJit, compileAot and compileCuda build on, and what `stepc opt`,
// `stepc bench` and the codegen tests inspect (the fusion plan, the buffer
// plan, the kernel bodies). Internal to the compiler: users call compile.h.
#pragma once

#include "fusion_plan.h"
#include "stepc/compile.h"
#include "stepc/passes.h"

#include <string>
#include <vector>

namespace stepc {

// CPU: the code of one or more kernels. Kernels whose MLIR is the same but
// for where their values live in the arena (the same ops, shapes and
// attributes, as in repeated layers) share one body, compiled once; each
// kernel is an entry point that calls its body with its arena offsets.
struct KernelBody {
  std::string symbol; // "body_<hash of the text>"
  std::string text; // its globals and its function (module-level ops)
  std::vector<size_t> kernels; // the kernels of spec that run it, first first
};

// A graph taken down to an MLIR module of kernels.
struct LoweredGraph {
  Graph graph; // after the passes
  RematReport remat; // with a memory budget: what rematerialization did
  FusionPlan plan;
  BufferPlan buffers;
  std::string mlirModule; // Target::Cuda: one gpu.module of gpu.funcs
  // CPU: mlirModule's parts, compiled one by one (and in parallel) by the
  // JIT: the distinct kernel bodies, and the kernels' entry points (which
  // declare the bodies they call).
  std::vector<KernelBody> bodies;
  std::vector<std::string> entryPoints; // per kernel of spec ("" for collectives)
  std::string entryModule; // the entry points and declarations of the bodies
  // Per kernel of spec: the index of the first kernel with the same body
  // (`stepc opt --fusion-report` shows "k57 = k9"), or its own index.
  std::vector<size_t> sameCodeAs;
  CompileTimes times; // passes, fusion, buffer plan, emission
  ExecutableSpec spec; // complete but for the kernels' function pointers
  // Target::Cuda: per kernel of spec, the gpu.funcs it launches in order.
  std::vector<std::vector<CudaLaunch>> launches;
};

LoweredGraph lowerGraph(const Graph &graph, const CompileOptions &options = {});

} // namespace stepc
