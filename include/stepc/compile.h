// Compiling graphs to native code: passes, fusion, buffer planning, and
// lowering through MLIR to LLVM (compiler/codegen). The result runs on the
// runtime's Executable.
#pragma once

#include "stepc/executable.h"
#include "stepc/fusion.h"

#include <memory>
#include <string>

namespace stepc {

struct CompileOptions {
  bool fusion = true;  // false: every op is its own kernel (--no-fusion)
  bool passes = true;  // run the default pass pipeline first
};

// One kernel of a compiled graph, before its code is loaded.
struct KernelInfo {
  std::string name;
  int64_t parallelExtent = 1;
  std::vector<std::string> provenance;
};

// A graph taken down to an MLIR module of kernels.
struct LoweredGraph {
  Graph graph; // after the passes
  FusionPlan plan;
  BufferPlan buffers;
  std::string mlirModule;
  ExecutableSpec spec; // complete but for the kernels' function pointers
};

LoweredGraph lowerGraph(const Graph &graph, const CompileOptions &options = {});

// Compiles in memory and returns a ready Executable. Unsupported ops or
// dtypes fail with stepc::Error naming the op and its location.
std::unique_ptr<Executable> compileJit(const Graph &graph, const CompileOptions &options = {},
                                       const RunOptions &run = {});

// The IR of one kernel (or all, with an empty name) at a lowering stage:
// "mlir", "llvm-dialect", "llvm", "llvm-opt".
std::string dumpKernelIR(const Graph &graph, const CompileOptions &options,
                         const std::string &kernel, const std::string &stage);

} // namespace stepc
