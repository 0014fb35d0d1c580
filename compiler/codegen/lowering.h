// Lowering of one FusionGroup to one MLIR function (text), the codegen
// stage's rule per op (docs/design.md rule 1).
#pragma once

#include "fusion_plan.h"

#include "stepc/executable.h"

#include <functional>
#include <string>
#include <vector>

namespace stepc::codegen {

// One loop nest of a kernel lowered for the GPU: a gpu.func run by
// `extent` threads, each computing one element of the nest's parallel
// loops (see lowerGroup).
struct GpuFunction {
  std::string name;     // "k3_matmul_add_relu", or "..._1" for a kernel's second nest
  std::string function; // gpu.func @name(%arena: memref<?xi8>, %extent: index) kernel
  int64_t extent = 1;   // 0: nothing to compute, no launch
};

struct KernelSource {
  std::string name;
  std::string globals;  // module-level ops (constant data), may be empty
  // CPU: func.func @name(%arena: memref<?xi8>, %begin, %end, %off0, ...),
  // the byte offsets in the arena of what it reads and writes passed as
  // index arguments (`offsets`, in order), so that its text says nothing of
  // where values live. Not a C interface: compile.cpp calls it from an
  // entry point with the offsets as constants.
  std::string function;
  std::vector<int64_t> offsets;
  int64_t parallelExtent = 1;
  // GPU only (function is then empty): the kernel's loop nests, launched in
  // order.
  std::vector<GpuFunction> gpuFunctions;
  // Scratch bytes the kernel uses from scratchOffset on (values only it
  // reads: CPU and GPU keep them in the arena, after the planned buffers,
  // every kernel from the same offset since kernels run one at a time).
  int64_t scratchBytes = 0;
  // Its index checks (gather, scatter_add, checked one_hot), numbered in the
  // fault record from FaultRecord::firstCheck on, with kernel = name.
  std::vector<IndexCheck> indexChecks;
};

// Where kernels report an index out of range (ExecutableSpec::faultOffset),
// and the number of the kernel's first check among the executable's.
struct FaultRecord {
  int64_t offset = -1;
  int64_t firstCheck = 0;
};

// Lowering for the GPU (compiler/codegen/gpu_lowering.cpp drives it). The
// CPU splits a kernel's dimension 0 among threads and runs its loop nests
// one after another in one call; a GPU has no grid-wide barrier inside a
// kernel, so each loop nest (a root, a run of same-shape elementwise roots,
// or the zeroing pass of a scatter-form gradient) becomes a gpu.func of its
// own, and all the nest's output loops are parallel: one thread per element
// (a grid-stride loop over the flattened index). Scatter-form gradients add
// their contributions with atomics. Roots only the kernel reads get scratch
// in the arena (no allocation inside a GPU kernel).

// `arenaOffset(v)` gives the byte offset of every value the kernel reads
// from or writes to the arena (its inputs, outputs, params and graph inputs).
// A nest's gpu.func up to the grid-stride loop that binds the element index
// %begin; the nest's body follows, then "      }\n      gpu.return\n    }\n".
std::string gpuFunctionHead(const std::string &name);

// The kernel carries out the group's plan (FusionGroup::kernel, from
// planKernels with kernelTarget(gpu)): its roots, nests, epilogue and row
// split. With `gpu`, the kernel is lowered for the GPU (KernelSource::gpuFunctions).
// A group that reads indices needs `fault` (its offset >= 0). A nonzero
// `perturbation` (CPU only: CompileOptions::perturbKernel) is added to the
// floating-point values the kernel writes, at even flat indices, after it
// computed them all.
KernelSource lowerGroup(const Graph &graph, const FusionGroup &group,
                        const std::function<int64_t(ValueId)> &arenaOffset,
                        const std::vector<bool> &usedOutside, int64_t scratchOffset,
                        bool gpu = false, FaultRecord fault = {}, double perturbation = 0);

// What lowerGroup's kernels can do, for planKernels: the CPU's
// register-tiled matmul reads strided views of its operands and computes
// epilogues on its tile where it has vector code for them; the GPU's matmul
// reads only row-major buffers and has no tile.
KernelTarget kernelTarget(bool gpu);

// Whether a node's kernel checks the indices it reads (see IndexCheck).
bool checksIndices(const Node &node);

} // namespace stepc::codegen
