// `stepc demo`: trains the two smallest examples on the reference interpreter
// so a fresh checkout shows the whole front half of the pipeline working:
// parse -> grad -> optimizer step graph -> run.
#include "commands.h"
#include "example_batches.h"

#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <filesystem>
#include <system_error>

namespace stepc::cli {
namespace {

struct TrainResult {
  TensorMap params;
  double firstLoss = 0, lastLoss = 0;
};

TrainResult train(const Graph &model, const Optimizer &opt, const TensorMap &batch, int steps,
                  int reportEvery) {
  Graph step = stepc::trainStep(model, "loss", opt);
  fmt::print("  training step graph: {} nodes ({} in the model), optimizer {}\n",
             step.nodes.size(), model.nodes.size(), optimizerName(opt.kind));
  TrainResult result;
  result.params = initialParams(step);
  for (int i = 1; i <= steps; ++i) {
    TensorMap outputs = interpretStep(step, batch, result.params);
    double loss = outputs.at("loss").real(0);
    if (i == 1)
      result.firstLoss = loss;
    result.lastLoss = loss;
    if (i == 1 || i % reportEvery == 0)
      fmt::print("  step {:>5}  loss {:.6f}\n", i, loss);
  }
  return result;
}

int xorDemo(const std::string &examples) {
  fmt::print("XOR: 2-2-1 tanh/sigmoid network, {}/xor.sg, Adam lr 0.1\n", examples);
  Graph model = parseGraphFile(examples + "/xor.sg");
  TensorMap batch = examples::xorBatch();
  Optimizer opt = Optimizer::adam();
  opt.lr = 0.1;
  TrainResult r = train(model, opt, batch, 400, 100);
  // The step's params include optimizer state; the model wants its own only.
  TensorMap weights;
  for (ValueId id : model.params())
    weights.emplace(model.node(id).name, r.params.at(model.node(id).name));
  TensorMap out = interpret(model, batch, weights);
  const Tensor &prob = out.at("prob");
  int correct = 0;
  for (int i = 0; i < 4; ++i) {
    const Tensor &x = batch.at("x");
    bool want = batch.at("y").real(i) > 0.5, got = prob.real(i) > 0.5;
    correct += want == got;
    fmt::print("  {} xor {} -> {:.4f} ({})\n", x.real(2 * i), x.real(2 * i + 1), prob.real(i),
               want == got ? "right" : "wrong");
  }
  fmt::print("  {}/4 right\n\n", correct);
  return correct == 4 ? 0 : 1;
}

int polySinDemo(const std::string &examples) {
  fmt::print("poly_sin: fit sin(x) on [-pi, pi] with a + bx + cx^2 + dx^3, "
             "{}/poly_sin.sg, Adam lr 0.05\n",
             examples);
  Graph model = parseGraphFile(examples + "/poly_sin.sg");
  TensorMap batch = examples::polySinBatch();
  Optimizer opt = Optimizer::adam();
  opt.lr = 0.05;
  TrainResult r = train(model, opt, batch, 1000, 200);
  fmt::print("  y = {:.4f} + {:.4f} x + {:.4f} x^2 + {:.4f} x^3, final loss {:.5f} "
             "(target < 0.01)\n\n",
             r.params.at("a").real(0), r.params.at("b").real(0), r.params.at("c").real(0),
             r.params.at("d").real(0), r.lastLoss);
  return r.lastLoss < 1e-2 ? 0 : 1;
}

} // namespace

std::string findExamples(const std::string &given) {
  if (!given.empty())
    return given;
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  // Installed: PREFIX/bin/stepc next to PREFIX/share/stepc/examples.
  std::error_code error;
  fs::path binary = fs::read_symlink("/proc/self/exe", error);
  if (!error)
    candidates.push_back(binary.parent_path().parent_path() / "share" / "stepc" / "examples");
  // A build tree: the source tree it was built from.
  candidates.push_back(STEPC_SOURCE_EXAMPLES_DIR);
  for (const fs::path &dir : candidates)
    if (fs::is_regular_file(dir / "mlp.sg", error))
      return dir.lexically_normal().string();
  std::string looked;
  for (const fs::path &dir : candidates)
    looked += fmt::format("{}{}", looked.empty() ? "" : ", ", dir.lexically_normal().string());
  throw Error(fmt::format("demo: cannot find the examples folder (looked in {}); "
                          "give it with --examples DIR",
                          looked));
}

int demo(const std::string &examples) {
  int failures = xorDemo(examples) + polySinDemo(examples);
  fmt::print("{}\n", failures == 0 ? "demo: both models learned their task"
                                   : "demo: a model did not reach its target");
  return failures == 0 ? 0 : 1;
}

} // namespace stepc::cli
