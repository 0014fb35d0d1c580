// Compiling graphs to native code: passes, fusion, buffer planning, and
// lowering through MLIR to LLVM (compiler/codegen). The result runs on the
// runtime's Executable.
#pragma once

#include "stepc/cuda.h"
#include "stepc/executable.h"
#include "stepc/passes.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stepc {

// What the kernels are compiled for.
enum class Target {
  Cpu,  // host machine code (compileJit, compileAot)
  Cuda, // PTX for an NVIDIA GPU (compileCuda, compileAot, dumpKernelIR)
};

struct CompileOptions {
  bool fusion = true;  // false: every op is its own kernel (--no-fusion)
  bool passes = true;  // run the default pass pipeline first
  // compileJit looks the graph up in the JIT cache (this process' memory,
  // then jitCacheDirectory()) before compiling, and stores what it compiles.
  // Not part of the cache key.
  bool cache = true;
  // Threads that compile the kernels through MLIR and LLVM (the JIT); 0: one
  // per core. The code is the same whatever the count.
  int compileThreads = 0;
  // Target::Cuda lowers every kernel to gpu.funcs (compiler/codegen/
  // gpu_lowering.cpp) and PTX for `gpuArch` ("sm_90", "sm_80", ...).
  // compileJit is for the CPU only.
  Target target = Target::Cpu;
  std::string gpuArch = "sm_90";
  // Bound on the planned peak: rematerialization (compiler/passes/remat.cpp)
  // runs after the passes until the plan fits, or the compile fails with
  // stepc::Error naming the smallest peak it reaches (--memory-budget).
  MemoryBudget memoryBudget;
  // Fusion bisection: only these groups of the full fusion plan stay fused
  // (FusionOptions::fusedGroups); needs `fusion`.
  std::optional<std::vector<size_t>> fusedGroups = std::nullopt;
  // Fault injection, to test fusion bisection with a known culprit: when
  // group `group` of the full fusion plan is compiled fused (not split by
  // fusedGroups), its kernel adds `amount` to the elements at even flat
  // indices of every floating-point value it writes, after computing them
  // (not to all: softmax would cancel a uniform shift). CPU only.
  struct Perturbation {
    size_t group = 0;
    double amount = 0;
  };
  std::optional<Perturbation> perturbKernel = std::nullopt;
};

// One kernel of a compiled graph, before its code is loaded.
struct KernelInfo {
  std::string name;
  int64_t parallelExtent = 1;
  std::vector<std::string> provenance;
};

// Where compile time went (jitSpec, the last compile of this thread;
// `stepc bench` prints it). Seconds; the MLIR and LLVM stages are summed
// over the objects compiled (CPU time: they run in parallel), `objects` is
// their wall time.
struct CompileTimes {
  double passes = 0, fusion = 0, bufferPlan = 0, emit = 0; // graph -> MLIR text
  double mlirParse = 0, mlirLowering = 0, llvmOptimize = 0, llvmCodegen = 0;
  double objects = 0, load = 0, total = 0;
  int kernels = 0, bodies = 0, compiledObjects = 0, diskObjects = 0, threads = 0;
};
CompileTimes lastCompileTimes();

// Compiles in memory and returns a ready Executable. Unsupported ops or
// dtypes fail with stepc::Error naming the op and its location.
std::unique_ptr<CpuExecutable> compileJit(const Graph &graph, const CompileOptions &options = {},
                                          const RunOptions &run = {});

// --- The JIT cache (compiler/codegen/jit_cache.cpp) -------------------------
// The key is a hash of the graph's text with every node's source location
// (the kernels' provenance names them), the host target, the options that
// change code (fusion, passes), the LLVM version and a fingerprint of the
// codegen sources. Input shapes and dtypes are part of the graph's text.
//
// In memory, a hit shares a finished ExecutableSpec, initial params
// included: no passes, no MLIR, no LLVM, no disk, no copy (a structural hash
// of the graph compared with a stored copy; each executable writes the
// initial params into its own arena on first use). On disk,
// under jitCacheDirectory(), objects are cached one by one: each distinct
// kernel body as kernels/body_HASH.o (HASH: of its MLIR text, which holds no
// arena offsets, so graphs that share a layer share its objects), and the
// graph's entry points as NAME-KEY.o; each with a .json that names the
// codegen, the target, the MLIR text's checksum and size, and the object's
// size and checksum. A miss re-runs the graph passes and the kernel text
// emission (milliseconds), loads what is on disk and compiles the rest in
// parallel (CompileOptions::compileThreads), so changing one layer
// recompiles only its kernels. Entries are written atomically (temporary
// file, rename); one that is truncated, corrupt or stale is ignored,
// counted, recompiled and overwritten. Memory keeps the 64 latest graphs;
// nothing is ever evicted from disk.
// $STEPC_CACHE_DIR, else $XDG_CACHE_HOME/stepc, else $HOME/.cache/stepc;
// empty (no disk cache) when none is set. Read on every compile.
std::string jitCacheDirectory();
// --- Ahead of time (compiler/codegen/aot.cpp) -------------------------------
// What compileAot wrote, as paths.
struct AotArtifact {
  std::string name;   // the C identifier in the API: stepc_<name>_step
  std::string object; // DIR/<name>.o: the kernels (CUDA: the PTX) and the initial params
  std::string ptx;    // Target::Cuda: DIR/<name>.ptx, the PTX also in the object
  std::string header; // DIR/<name>.h: the C API
  std::string source; // DIR/<name>_spec.cpp: the C API on libstepc_runtime
  std::string params; // DIR/<name>.params.safetensors: the initial params
};

// Compiles `graph` for the host CPU into DIR (created if missing). A program
// compiles DIR/<name>_spec.cpp (with -I include/ and -I DIR) and links it with
// DIR/<name>.o and libstepc_runtime.a (plus libfmt, -pthread, -lm): no LLVM
// or MLIR. The object embeds the params' initial values, so
// stepc_<name>_create(NULL) needs no file; the .safetensors copy of them is
// for inspection and for stepc_<name>_create(path). `name` defaults to the
// graph's name made a C identifier.
//
// With Target::Cuda the object holds the PTX (for options.gpuArch) and the
// params, and DIR/<name>.ptx is written too; the C API is the same, and the
// program also links -ldl: it runs where there is a CUDA driver and a GPU,
// with no LLVM, MLIR or CUDA toolkit (the driver JIT-compiles the PTX).
AotArtifact compileAot(const Graph &graph, const CompileOptions &options, const std::string &dir,
                       const std::string &name = {});

// --- CUDA (compiler/codegen/gpu_lowering.cpp) -------------------------------
// Compiles `graph` to PTX for options.gpuArch (options.target is ignored).
// Needs neither a GPU nor the CUDA driver: the PTX comes from MLIR's NVVM
// target, with libdevice from the CUDA toolkit for math functions.
CudaExecutableSpec compileCudaSpec(const Graph &graph, const CompileOptions &options = {});
// compileCudaSpec, then a CudaExecutable on the first GPU. Where no CUDA
// device can be used this throws stepc::Error("no CUDA device: ...") before
// compiling anything.
std::unique_ptr<CudaExecutable> compileCuda(const Graph &graph, const CompileOptions &options = {},
                                            const RunOptions &run = {});

// The IR of one kernel (or all, with an empty name) at a lowering stage:
// "mlir", "llvm-dialect", "llvm", "llvm-opt"; with Target::Cuda: "mlir"
// (the gpu.module), "nvvm" (its LLVM dialect) or "ptx".
std::string dumpKernelIR(const Graph &graph, const CompileOptions &options,
                         const std::string &kernel, const std::string &stage);

} // namespace stepc
