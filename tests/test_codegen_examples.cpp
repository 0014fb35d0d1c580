// Every model in examples/ through the CPU backend, fused and unfused,
// against the reference interpreter: the forward pass, and the training
// step with Adam and with SGD run for two steps, so that the params and
// optimizer state updated in place by step 1 are what step 2 reads. These
// compile whole training steps, so they take seconds each: ctest label e2e
// (tests/CMakeLists.txt).
#include "codegen_harness.h"

#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

using namespace stepc;
using stepc::testing::expectMatchesInterpreter;
using stepc::testing::freshSeed;

namespace {

std::vector<std::string> exampleNames() {
  std::vector<std::string> names;
  for (const auto &entry :
       std::filesystem::directory_iterator(std::string(STEPC_SOURCE_DIR) + "/examples"))
    if (entry.path().extension() == ".sg")
      names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

Graph loadExample(const std::string &name) {
  return parseGraphFile(std::string(STEPC_SOURCE_DIR) + "/examples/" + name + ".sg");
}

// The output every example names its loss.
constexpr const char *kLoss = "loss";

class CodegenExamples : public ::testing::TestWithParam<std::string> {};

TEST_P(CodegenExamples, Forward) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {} (replay with STEPC_TEST_SEED={})", seed, seed));
  Graph model = loadExample(GetParam());
  expectMatchesInterpreter(model, randomInputs(model, seed), initialParams(model));
}

// Two steps of a training step: outputs (the loss) and every param and
// optimizer state after each step, at the harness's tolerances.
//
// But for a few weights under Adam. Its step lr * m^/(sqrt(v^) + eps) is
// g/(|g| + eps) * lr at first: for a weight whose batch gradient nearly
// cancels, |g| ~ eps = 1e-8, that ratio turns the gradient's rounding error
// (~1e-9 from summing the batch in another order, tiled and in parallel)
// into an update error of up to about lr/2. Such weights are rare (up to
// about one in 70,000 in mlp.sg over two steps, none in most models), so up
// to 1e-4 of a param's elements (at least one) may differ by up to lr per
// step taken; a wrong kernel errs on many more elements, or by more.
void checkTraining(const std::string &example, const Optimizer &optimizer, double lr) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("seed {} (replay with STEPC_TEST_SEED={})", seed, seed));
  Graph step = trainStep(loadExample(example), kLoss, optimizer);
  TensorMap inputs = randomInputs(step, seed);
  inputs.at("lr") = Tensor::scalar(DType::F32, lr);
  stepc::testing::CompareOptions options{.steps = 2};
  if (optimizer.kind == Optimizer::Kind::Adam)
    options.paramOutliers = {.fraction = 1e-4, .atol = 2 * lr};
  expectMatchesInterpreter(step, inputs, initialParams(step), options);
}

TEST_P(CodegenExamples, TrainStepAdam) { checkTraining(GetParam(), Optimizer::adam(), 1e-3); }

TEST_P(CodegenExamples, TrainStepSgd) { checkTraining(GetParam(), Optimizer::sgd(), 1e-2); }

INSTANTIATE_TEST_SUITE_P(, CodegenExamples, ::testing::ValuesIn(exampleNames()),
                         [](const auto &info) { return info.param; });

} // namespace
