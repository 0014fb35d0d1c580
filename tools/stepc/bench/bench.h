// Pieces of `stepc bench` (bench.cpp drives them): the machine's measured
// peaks and the per-kernel fused-vs-unfused comparison.
#pragma once

#include "stepc/compile.h"
#include "stepc/interpreter.h"
#include "stepc/train.h"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace stepc {
struct LoweredGraph;
struct FusionPlan;
}

namespace stepc::cli::perf {

double median(std::vector<double> values);

// FILE.sg with its params (see loadModelParams), or with `optimizer` its
// training step (learning rate 1e-3 baked in, minimizing output `loss`, in
// mixed precision when `mixed` says so): what `stepc bench` and `stepc
// bisect-fusion` measure.
Graph loadBenchedGraph(const std::string &file, const std::string &paramsOption,
                       const std::string &optimizer, const std::string &loss, TensorMap &params,
                       const MixedPrecision &mixed = {});

// "k3", the short name of a plan's group ("k3_matmul_add_relu" in full).
std::string kernelShortName(size_t group);

// The groups of a plan that fuse more than one op (what --inject-fault and
// bisect-fusion's probes may name).
std::vector<size_t> fusedGroups(const FusionPlan &plan);

// --inject-fault KERNEL=AMOUNT of `command` (bisect-fusion, bench): KERNEL is
// a fused kernel (more than one op) of `full`, by name or as "kN"; throws
// naming the fused kernels otherwise.
CompileOptions::Perturbation parseFault(std::string_view command, const std::string &text,
                                        const LoweredGraph &full);

// How far apart two tensors of one type are, over their elements: the
// largest |a - b|, |a - b| / max(|a|, |b|, 1e-6) and |a - b| / max(|a|, |b|, 1)
// (absolute below 1, relative above). A NaN on one side only (or Inf against
// a finite value) is an infinite difference, NaN against NaN none.
struct Difference {
  double rel = 0, abs = 0, scaled = 0;
};
void accumulateDifference(const Tensor &a, const Tensor &b, Difference &d);

// What this machine does right now on `threads` threads at once: fp32 FMA
// throughput on independent accumulators (AVX-512 where the CPU has it, else
// AVX2) and memcpy bandwidth over 256 MB (bytes read + bytes written per
// second, the convention the GELU figure uses). Best of a few repetitions.
struct MachinePeak {
  int threads = 1;
  std::string isa;    // "avx512f", "avx2", or "none" (no FMA: gflops 0)
  double gflops = 0;  // fp32, 2 flops per lane per FMA
  double copyGBs = 0; // 1e9 bytes/s
};
MachinePeak measureMachine(int threads);

// One fused kernel against the unfused kernels of its ops.
struct KernelComparison {
  std::string kernel;               // the fused kernel
  std::string kind;                 // "epilogue", "loop", ...
  std::vector<std::string> unfused; // the one-op kernels of its ops
  size_t ops = 0;
  double fusedMicros = 0, unfusedMicros = 0; // medians; unfused: their sum
  int64_t fusedBytes = 0, unfusedBytes = 0;  // read + written
  // Over the fused kernel's outputs, each against the same value computed
  // unfused, with the kernel reading the unfused build's values of its
  // inputs: the largest |a - b| over the value's largest |b|, and the largest
  // |a - b|. NaN when no output could be matched (see `note`).
  double maxDiff = 0, maxAbsDiff = 0;
  int64_t comparedElements = 0; // over the outputs matched in both builds
  std::string note;
};

struct KernelComparisonOptions {
  int steps = 20, warmup = 3, threads = 0;
  // With a budget, both builds run the fused build's rematerialized graph.
  MemoryBudget memoryBudget = {};
  // KERNEL=AMOUNT (parseFault): that fused kernel adds AMOUNT to every other
  // element it writes (CompileOptions::perturbKernel) in the compared step,
  // not in the timed ones; to test that the comparison finds a wrong kernel.
  std::string injectFault;
};

struct KernelTime {
  std::string name;
  double micros = 0; // median
  double flops = 0;  // of its matmuls and convolutions
  double allFlops = 0; // with the estimate for its other ops (kernelFlops)
  int64_t bytes = 0;   // read + written (FusionGroup)
};

struct KernelReport {
  std::vector<KernelComparison> rows; // sorted by time saved, largest first
  std::vector<KernelTime> fused;      // every fused kernel, in execution order
  std::string note;                   // how the two builds were made
};

// Compiles `graph` fused and unfused (both after the same passes, so node ids
// match), runs one step of each with the same inputs and initial params while
// copying every kernel's outputs, then alternates profiled steps.
KernelReport compareKernels(const Graph &graph, const TensorMap &inputs,
                            const KernelComparisonOptions &options);

nlohmann::json toJson(const KernelComparison &row);

} // namespace stepc::cli::perf

namespace stepc::cli {

struct BenchOptions;

// `stepc bench --check-determinism` (bench_determinism.cpp): the step at 1,
// 2 and all cores' threads (and --threads N), twice at the most; prints a
// hash of the outputs and of the updated params per run and a verdict.
// Returns 1 if any run's bits differ from the first's.
int checkDeterminism(const BenchOptions &options);

} // namespace stepc::cli
