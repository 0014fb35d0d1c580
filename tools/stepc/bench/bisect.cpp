// `stepc bisect-fusion`: which fused kernels make a step's results differ
// from the same step with every op its own kernel (--metric diff), or make it
// slower (--metric time).
//
// --metric diff runs the unfused step as the reference, then probes builds
// that fuse only some groups of the full plan (CompileOptions::fusedGroups)
// from the same params and inputs for the same steps, and bisects
// (bisectFusedGroups) to the smallest set of fused kernels whose fusion
// explains a difference beyond the tolerance. --inject-fault perturbs one
// kernel (CompileOptions::perturbKernel) so a test knows the culprit.
#include "bench.h"
#include "commands.h"
#include "lowered_graph.h"

#include "stepc/backend.h"
#include "stepc/compile.h"
#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <map>

namespace stepc::cli {
namespace {

// What a build computed over `steps` steps: every step's outputs, then the
// params (and optimizer state) after the last.
struct StepsResult {
  std::vector<std::map<std::string, Tensor>> outputs;
  std::map<std::string, Tensor> params;
};

StepsResult runSteps(const Graph &graph, const CompileOptions &options, const TensorMap &inputs,
                     const TensorMap &params, int steps, int threads) {
  auto exe = compileJit(graph, options, {.threads = threads});
  for (const auto &[name, value] : params)
    exe->setParam(name, value);
  StepsResult result;
  for (int i = 0; i < steps; ++i)
    result.outputs.push_back(exe->step(inputs));
  for (const std::string &name : exe->paramNames())
    result.params[name] = exe->param(name);
  return result;
}

perf::Difference difference(const StepsResult &a, const StepsResult &b) {
  perf::Difference d;
  for (size_t step = 0; step < a.outputs.size(); ++step)
    for (const auto &[name, value] : a.outputs[step])
      perf::accumulateDifference(value, b.outputs[step].at(name), d);
  for (const auto &[name, value] : a.params)
    perf::accumulateDifference(value, b.params.at(name), d);
  return d;
}

// The fused kernels of a probe, as runs of consecutive candidates:
// "k0..k13, k17".
std::string describeSet(const std::vector<size_t> &set, const std::vector<size_t> &candidates) {
  std::vector<std::string> runs;
  size_t i = 0;
  while (i < candidates.size()) {
    if (!std::binary_search(set.begin(), set.end(), candidates[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < candidates.size() &&
           std::binary_search(set.begin(), set.end(), candidates[j + 1]))
      ++j;
    runs.push_back(i == j ? perf::kernelShortName(candidates[i])
                          : fmt::format("{}..{}", perf::kernelShortName(candidates[i]),
                                        perf::kernelShortName(candidates[j])));
    i = j + 1;
  }
  return runs.empty() ? "none" : fmt::format("{}", fmt::join(runs, ", "));
}

// A kernel as the culprit lists show it: name, kind, then one line per op
// with its source location (the kernel's provenance).
void printKernel(const FusionGroup &group, const KernelSpec &kernel, const std::string &what) {
  fmt::print("  {} ({}, {} ops){}\n", group.name, fusionKindName(group.kind), group.nodes.size(),
             what);
  for (const std::string &line : kernel.provenance)
    fmt::print("    {}\n", line);
}

int bisectByDifference(const BisectOptions &options, const Graph &graph, const TensorMap &params,
                       const TensorMap &inputs, const LoweredGraph &full,
                       const std::vector<size_t> &candidates) {
  int steps = options.steps.value_or(1);
  CompileOptions probeOptions{.cache = false};
  if (!options.injectFault.empty()) {
    probeOptions.perturbKernel = perf::parseFault("bisect-fusion", options.injectFault, full);
    fmt::print("injected fault: {} adds {} to every other element of the float values it "
               "writes, when fused\n",
               full.plan.groups[probeOptions.perturbKernel->group].name,
               probeOptions.perturbKernel->amount);
  }
  fmt::print("reference: every op its own kernel; {} step{} from the same params and inputs "
             "(seed {}); an element differs when |fused - unfused| > {:g} * max(1, |value|)\n",
             steps, steps == 1 ? "" : "s", options.seed, options.tolerance);
  StepsResult reference = runSteps(graph, {.fusion = false, .cache = false}, inputs, params,
                                   steps, options.threads);

  int probes = 0;
  auto differs = [&](const std::vector<size_t> &set) {
    CompileOptions probe = probeOptions;
    probe.fusedGroups = set;
    perf::Difference d =
        difference(runSteps(graph, probe, inputs, params, steps, options.threads), reference);
    bool beyond = !(d.scaled <= options.tolerance);
    fmt::print("probe {}: fusing {} of {} fused kernels ({}): max diff {:.1e} {} {:g} (abs "
               "{:.1e}, rel {:.1e})\n",
               ++probes, set.size(), candidates.size(), describeSet(set, candidates), d.scaled,
               beyond ? ">" : "<=", options.tolerance, d.abs, d.rel);
    return beyond;
  };
  if (!differs(candidates)) {
    fmt::print("no difference beyond {:g}: the fused step agrees with the unfused one\n",
               options.tolerance);
    return 0;
  }
  std::vector<size_t> culprits = bisectFusedGroups(candidates, differs);
  int log2 = 0;
  while ((size_t(1) << log2) < candidates.size())
    ++log2;
  fmt::print("culprit{}: fusing {} explains the difference ({} probes for {} fused kernels; one "
             "culprit takes at most ceil(log2 {}) + 2 = {})\n",
             culprits.size() == 1 ? "" : "s",
             culprits.size() == 1 ? "this kernel" : fmt::format("these {} kernels together",
                                                               culprits.size()),
             probes, candidates.size(), candidates.size(), log2 + 2);
  for (size_t g : culprits)
    printKernel(full.plan.groups[g], full.spec.kernels[g], "");
  return 0;
}

int bisectByTime(const BisectOptions &options, const Graph &graph, const TensorMap &inputs,
                 const LoweredGraph &full) {
  perf::KernelComparisonOptions timing{.steps = options.steps.value_or(20),
                                       .threads = options.threads};
  fmt::print("timing each fused kernel against its ops unfused ({} steps, as bench "
             "--per-kernel), twice\n",
             timing.steps);
  perf::KernelReport first = perf::compareKernels(graph, inputs, timing);
  perf::KernelReport again = perf::compareKernels(graph, inputs, timing);
  std::map<std::string, const perf::KernelComparison *> retimed;
  for (const perf::KernelComparison &row : again.rows)
    retimed[row.kernel] = &row;
  int slower = 0;
  for (const perf::KernelComparison &row : first.rows) {
    auto it = retimed.find(row.kernel);
    if (row.ops < 2 || row.fusedMicros <= row.unfusedMicros || it == retimed.end() ||
        it->second->fusedMicros <= it->second->unfusedMicros)
      continue;
    if (slower++ == 0)
      fmt::print("fused kernels slower than their ops unfused, in both timings:\n");
    for (size_t g = 0; g < full.plan.groups.size(); ++g)
      if (full.spec.kernels[g].name == row.kernel)
        printKernel(full.plan.groups[g], full.spec.kernels[g],
                    fmt::format(": fused {:.1f} us, unfused {:.1f} us: {:.2f}x slower (re-timed "
                                "{:.1f} us against {:.1f} us: {:.2f}x)",
                                row.fusedMicros, row.unfusedMicros,
                                row.fusedMicros / row.unfusedMicros, it->second->fusedMicros,
                                it->second->unfusedMicros,
                                it->second->fusedMicros / it->second->unfusedMicros));
  }
  if (slower == 0)
    fmt::print("no fused kernel was slower than its ops unfused in both timings\n");
  return 0;
}

} // namespace

int bisectFusion(const BisectOptions &options) {
  findBackend(options.backend, "bisect-fusion", options.kBackends);
  if (options.metric != "diff" && options.metric != "time")
    throw Error(fmt::format("bisect-fusion: --metric must be diff or time, got '{}'",
                            options.metric));
  if (!(options.tolerance >= 0) || !std::isfinite(options.tolerance))
    throw Error(fmt::format("bisect-fusion: --tolerance must be a finite number >= 0, got {}",
                            options.tolerance));
  if (options.steps && *options.steps < 1)
    throw Error(fmt::format("bisect-fusion: --steps must be at least 1, got {}", *options.steps));
  if (options.metric == "time" && !options.injectFault.empty())
    throw Error("bisect-fusion: --inject-fault perturbs values; it goes with --metric diff");

  TensorMap params;
  Graph graph =
      perf::loadBenchedGraph(options.file, options.params, options.optimizer, options.loss, params);
  TensorMap inputs = randomInputs(graph, options.seed);
  // The full plan names the kernels; probes fuse subsets of its groups.
  LoweredGraph full = lowerGraph(graph, {.cache = false});
  std::vector<size_t> candidates = perf::fusedGroups(full.plan);
  fmt::print("{}{}: {} kernels, {} of them fused (more than one op)\n", graph.name,
             options.optimizer.empty() ? "" : " (training step, " + options.optimizer + ")",
             full.plan.groups.size(), candidates.size());
  if (options.metric == "time")
    return bisectByTime(options, graph, inputs, full);
  if (candidates.empty() && options.injectFault.empty()) {
    fmt::print("nothing is fused: no difference to explain\n");
    return 0;
  }
  return bisectByDifference(options, graph, params, inputs, full, candidates);
}

} // namespace stepc::cli
