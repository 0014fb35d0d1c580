// What differs between the kernels written for the CPU and for the GPU, each
// difference named once. KernelEmitter reads these instead of asking which
// of the two it writes for; the GPU's kernel assembly (one gpu.func per loop
// nest, see lowering.h) is KernelEmitter::emitGpu.
#pragma once

namespace stepc::codegen {

struct LoweringTarget {
  // How the parallel loops of a nest run: dimension 0 split into [%begin,
  // %end) ranges among the calls of the kernel (the CPU's thread pool), or
  // one GPU thread per element of the whole nest (%begin is the thread's
  // flat index in a grid-stride loop). With threads per element, index
  // checks are a nest of their own too (one thread per index); each CPU
  // call checks every index before its rows.
  enum class Parallel { SplitDimension0, ThreadPerElement };
  Parallel parallel;
  // Arena offsets are arguments of the kernel's function
  // (KernelSource::offsets), so kernels that differ only in where their
  // values live are the same code (compiled once, see compile.cpp); else
  // constants in the code.
  bool offsetArguments;
  // The CPU's vector paths: the register-tiled matmul (and convolutions
  // through it), vector pools, reductions into a stack buffer. A GPU thread
  // computes one element instead.
  bool vectorPaths;
  // f32 sin, cos and erf by ElementRules' polynomials: MLIR's polynomials
  // for math.sin/cos on the CPU are inaccurate and the one for math.erf is
  // slow; the GPU's libdevice is accurate and fast.
  bool ownF32Polynomials;
  // Threads add into shared output elements: a scatter-form nest runs one
  // thread per element of what it scatters and adds atomically, after a
  // nest of its own zeroed the output (rather than each call zeroing the
  // rows it owns).
  bool atomicAccumulate;

  static LoweringTarget cpu() { return {Parallel::SplitDimension0, true, true, true, false}; }
  static LoweringTarget gpu() { return {Parallel::ThreadPerElement, false, false, false, true}; }
};

} // namespace stepc::codegen
