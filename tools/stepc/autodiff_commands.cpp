#include "commands.h"

#include "gradcheck.h"

#include "stepc/autodiff.h"
#include "stepc/file.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <utility>

namespace stepc::cli {
namespace {

// Prints the graph, or writes it to `path` when one is given.
void emitGraph(const Graph &graph, const std::string &path) {
  std::string text = printGraph(graph);
  if (path.empty()) {
    fmt::print("{}", text);
    return;
  }
  writeFileAtomically(path, text);
  fmt::print("wrote {} ({} nodes)\n", path, graph.nodes.size());
}

} // namespace

int grad(const GradOptions &options) {
  Graph graph = parseGraphFile(options.file);
  GradResult result = stepc::grad(graph, options.loss, options.wrt);
  for (const std::string &warning : result.warnings)
    fmt::print(stderr, "warning: {}\n", warning);
  emitGraph(result.graph, options.output);
  return 0;
}

Optimizer optimizerFrom(const TrainStepOptions &options) {
  Optimizer opt;
  opt.kind = parseOptimizerKind(options.optimizer);
  opt.lr = options.lr;
  opt.weightDecay = options.weightDecay;
  opt.clipNorm = options.clipNorm;
  opt.momentum = options.momentum;
  opt.schedule.kind = parseScheduleKind(options.schedule);
  opt.schedule.stepSize = options.stepSize;
  opt.schedule.gamma = options.gamma;
  opt.schedule.totalSteps = options.totalSteps;
  opt.schedule.minLr = options.minLr;
  return opt;
}

MixedPrecision mixedPrecisionFrom(const TrainStepOptions &options) {
  MixedPrecision mixed;
  if (!options.mixedPrecision.empty())
    mixed.compute = parseMixedPrecision(options.mixedPrecision, "--mixed-precision");
  // Said rather than ignored: only f16 steps scale their loss.
  for (auto [flag, given] : {std::pair{"--loss-scale", options.lossScale.has_value()},
                             std::pair{"--growth-interval", options.growthInterval.has_value()}})
    if (given && mixed.compute != DType::F16)
      throw Error(fmt::format("{} applies to --mixed-precision f16 only (bf16 and f32 steps "
                              "scale no loss)",
                              flag));
  mixed.initialScale = options.lossScale.value_or(mixed.initialScale);
  mixed.growthInterval = options.growthInterval.value_or(mixed.growthInterval);
  return mixed;
}

int trainStep(const TrainStepOptions &options) {
  Graph graph = parseGraphFile(options.file);
  Optimizer opt = optimizerFrom(options);
  DataParallel dp{.enabled = options.dataParallel,
                  .bucketBytes = static_cast<int64_t>(options.bucketMb * (1 << 20))};
  emitGraph(stepc::trainStep(graph, options.loss, opt, dp, mixedPrecisionFrom(options)),
            options.output);
  return 0;
}

int gradcheck(const GradcheckCliOptions &options) {
  if (options.allOps == !options.file.empty())
    throw Error("gradcheck: give either --all-ops or a FILE.sg with --loss");
  if (!options.allOps) {
    if (options.loss.empty())
      throw Error("gradcheck: --loss NAME is required with a graph file");
    // GradcheckOptions reads 0 as "all"; on the command line a count below
    // 1 is a mistake, not a request to perturb every element of a model.
    if (options.samples < 1)
      throw Error(fmt::format("gradcheck: --samples must be at least 1 (elements checked per "
                              "tensor), got {}",
                              options.samples));
    Graph graph = parseGraphFile(options.file);
    GradcheckOptions checkOptions;
    checkOptions.maxElementsPerTensor = options.samples;
    GradcheckReport report = stepc::gradcheck(graph, options.loss,
                                              randomInputs(graph, options.seed),
                                              initialParams(graph), {}, checkOptions);
    fmt::print("{}: {} elements checked, worst relative error {:.3g} at {}\n",
               report.passed ? "passed" : "FAILED", report.elementsChecked,
               report.worstError, report.worstWhere);
    return report.passed ? 0 : 1;
  }

  int cases = 0, failed = 0;
  std::vector<std::string> ops;
  for (const GradcheckCase &c : gradcheckCases()) {
    Graph graph = c.build();
    GradcheckReport report =
        stepc::gradcheck(graph, "loss", c.point(graph, options.seed + cases), {});
    ++cases;
    if (std::find(ops.begin(), ops.end(), c.op) == ops.end())
      ops.push_back(c.op);
    if (!report.passed)
      ++failed;
    fmt::print("{:<14} {:<36} {:>6} elements  worst {:.2e}  {}\n", c.op, c.name,
               report.elementsChecked, report.worstError,
               report.passed ? "ok" : "FAILED at " + report.worstWhere);
  }
  fmt::print("gradcheck: {} ops, {} cases passed, {} failed\n", ops.size(), cases - failed,
             failed);
  return failed == 0 ? 0 : 1;
}

} // namespace stepc::cli
