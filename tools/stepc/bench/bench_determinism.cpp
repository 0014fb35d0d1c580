// `stepc bench --check-determinism`: the compiled step at 1, 2 and all
// cores' threads (and twice at all cores), each from the same params and
// inputs, with a hash of every output and of the updated params per run.
// The CPU backend promises the same bits at any thread count
// (docs/design.md, "Determinism"); this is how a user sees it hold on their
// model and machine.
#include "bench.h"
#include "commands.h"
#include "training.h"

#include "stepc/compile.h"
#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <thread>

namespace stepc::cli {
namespace {

// What one run left: every output of every step, then every param, by name.
struct DeterminismRun {
  int threads = 1;
  std::vector<std::pair<std::string, Tensor>> results;
  uint64_t outputsHash = kBytesHashStart, paramsHash = kBytesHashStart;
};

DeterminismRun runAt(const Graph &graph, const TensorMap &params, const TensorMap &inputs,
                     int threads, int steps) {
  RunOptions run;
  run.threads = threads;
  auto exe = compileJit(graph, {.fusion = true}, run);
  for (const auto &[name, value] : params)
    exe->setParam(name, value);
  DeterminismRun out;
  out.threads = threads;
  for (int s = 0; s < steps; ++s)
    for (auto &[name, value] : exe->step(inputs)) {
      mixBytes(out.outputsHash, value);
      out.results.emplace_back(fmt::format("output {} of step {}", name, s + 1), std::move(value));
    }
  for (const std::string &name : exe->paramNames()) {
    Tensor value = exe->param(name);
    mixBytes(out.paramsHash, value);
    out.results.emplace_back("param " + name, std::move(value));
  }
  return out;
}

// The first result whose bits differ between two runs, and how many of its
// elements do.
std::string firstDifference(const DeterminismRun &a, const DeterminismRun &b) {
  for (size_t i = 0; i < a.results.size(); ++i) {
    const Tensor &x = a.results[i].second, &y = b.results[i].second;
    if (std::memcmp(x.bytes(), y.bytes(), x.nbytes()) == 0)
      continue;
    size_t width = dtypeSize(x.dtype()), differing = 0;
    for (size_t e = 0; e < x.nbytes() / width; ++e)
      differing += std::memcmp(x.bytes() + e * width, y.bytes() + e * width, width) != 0;
    return fmt::format("{} ({} of {} elements)", a.results[i].first, differing, x.numel());
  }
  return "nothing";
}

} // namespace

int checkDeterminism(const BenchOptions &options) {
  TensorMap params;
  Graph graph =
      perf::loadBenchedGraph(options.file, options.params, options.optimizer, options.loss, params);
  TensorMap inputs = randomInputs(graph, options.seed);

  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> counts = {1, 2, cores};
  if (options.threads > 0)
    counts.push_back(options.threads);
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  // Twice at the most threads: where scheduling varies most between runs.
  counts.push_back(counts.back());

  fmt::print("determinism: {}{}, {} step{} from seed {}, fused, at {} threads ({} cores here; "
             "the last twice)\n",
             graph.name, options.optimizer.empty() ? "" : " (training step, " + options.optimizer + ")",
             options.steps, options.steps == 1 ? "" : "s", options.seed, fmt::join(counts, ", "),
             cores);
  fmt::print("  {:>7}  {:<18}  {}\n", "threads", "outputs hash", "params hash");
  std::vector<DeterminismRun> runs;
  for (int threads : counts) {
    runs.push_back(runAt(graph, params, inputs, threads, options.steps));
    const DeterminismRun &r = runs.back();
    fmt::print("  {:>7}  {:#018x}  {:#018x}\n", threads, r.outputsHash, r.paramsHash);
  }

  const DeterminismRun &first = runs.front();
  std::vector<std::string> differences;
  for (size_t i = 1; i < runs.size(); ++i)
    if (runs[i].outputsHash != first.outputsHash || runs[i].paramsHash != first.paramsHash)
      differences.push_back(fmt::format("  run {} ({} threads) differs from {} thread{} first in {}",
                                        i + 1, runs[i].threads, first.threads,
                                        first.threads == 1 ? "" : "s",
                                        firstDifference(first, runs[i])));
  if (differences.empty()) {
    fmt::print("deterministic: outputs and updated params are bitwise identical in all {} runs\n",
               runs.size());
    return 0;
  }
  fmt::print("NOT deterministic: {} of {} runs differ\n{}\n", differences.size(), runs.size() - 1,
             fmt::join(differences, "\n"));
  return 1;
}

} // namespace stepc::cli
