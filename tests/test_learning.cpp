// The examples learn on the reference interpreter (issues 2 and 3): XOR with
// hand-set weights, XOR and poly_sin trained from their initializers, and
// mlp.sg's loss falling at every step on a fixed batch.
#include "example_batches.h"
#include "testing.h"

#include "stepc/text.h"
#include "stepc/train.h"


namespace stepc {
namespace {

using examples::xorBatch;

// Trains `model` on one fixed batch and returns the loss of every step.
std::vector<double> train(const Graph &model, Optimizer opt, const TensorMap &batch, int steps,
                          TensorMap *finalParams = nullptr) {
  Graph step = trainStep(model, "loss", opt);
  TensorMap params = initialParams(step);
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i)
    losses.push_back(interpretStep(step, batch, params).at("loss").real(0));
  if (finalParams)
    for (ValueId id : model.params())
      (*finalParams)[model.node(id).name] = params.at(model.node(id).name);
  return losses;
}

// The classic construction: hidden unit 1 is OR, hidden unit 2 is AND, and
// the output fires for OR and not AND.
TEST(Learning, XorWithHandSetWeightsIsExact) {
  Graph model = testing::loadExample("xor");
  TensorMap params;
  params.emplace("w1", Tensor::of<float>({2, 2}, {20, 20, 20, 20}));
  params.emplace("b1", Tensor::of<float>({2}, {-10, -30}));
  params.emplace("w2", Tensor::of<float>({2, 1}, {10, -10}));
  params.emplace("b2", Tensor::of<float>({1}, {-10}));
  TensorMap batch = xorBatch();
  Tensor prob = interpret(model, batch, params).at("prob");
  for (int i = 0; i < 4; ++i) {
    double want = batch.at("y").real(i);
    EXPECT_EQ(prob.real(i) > 0.5, want > 0.5) << "case " << i;
    EXPECT_NEAR(prob.real(i), want, 1e-4) << "case " << i;
  }
}

TEST(Learning, XorLearnsAllFourCases) {
  Optimizer opt = Optimizer::adam();
  opt.lr = 0.1;
  TensorMap params;
  std::vector<double> losses = train(testing::loadExample("xor"), opt, xorBatch(), 400, &params);
  Tensor prob = interpret(testing::loadExample("xor"), xorBatch(), params).at("prob");
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(prob.real(i) > 0.5, xorBatch().at("y").real(i) > 0.5) << "case " << i;
  EXPECT_LT(losses.back(), 0.01);
}

TEST(Learning, PolySinFitsWithinItsBudget) {
  TensorMap batch = examples::polySinBatch();
  Optimizer opt = Optimizer::adam();
  opt.lr = 0.05;
  std::vector<double> losses = train(testing::loadExample("poly_sin"), opt, batch, 1000);
  EXPECT_GT(losses.front(), 0.1);
  EXPECT_LT(losses.back(), 1e-2);
}

TEST(Learning, MlpLossFallsAtEveryStepOnAFixedBatch) {
  Graph model = testing::loadExample("mlp");
  uint64_t seed = testing::freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  TensorMap batch = randomInputs(model, seed);
  Optimizer opt = Optimizer::adam();
  opt.lr = 1e-3;
  std::vector<double> losses = train(model, opt, batch, 20);
  for (size_t i = 1; i < losses.size(); ++i)
    EXPECT_LT(losses[i], losses[i - 1]) << "step " << i;
}

} // namespace
} // namespace stepc
