// Training steps of examples/mlp.sg against golden values computed outside
// stepc: tests/golden/make_optimizer_golden.py writes the MLP's forward and
// backward pass by hand in numpy float64 and follows torch.optim's documented
// algorithms (SGD, momentum, Nesterov, RMSprop, Adam, AdamW, L2 decay,
// clip_grad_norm_, StepLR/ExponentialLR/CosineAnnealingLR). Each test runs
// trainStep() in the reference interpreter (f32) from the same saved starting
// point and compares the loss of every step and a fixed sample of 512
// elements of every parameter and optimizer state tensor after the last step.
#include "testing.h"

#include "stepc/interpreter.h"
#include "stepc/npy.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace stepc {
namespace {

using testing::sourcePath;

// Tolerances. stepc computes in f32, the goldens in f64 from the same
// f32-rounded starting point, so the difference is f32 rounding: a gradient
// element is a sum of up to 784 products whose rounding error (~2^-24 per
// operation, growing with the number of terms) is relative to the size of
// the terms, not of the result, and a few layers of that compound. 1e-5
// relative is ~100x the typical f32 error and catches any formula mistake
// (a wrong constant, a missing bias correction, a swapped order of decay
// and update all change values by far more). An element that happens to
// cancel to near zero has a large relative error but an absolute error small
// against its tensor, so each tensor also gets an absolute tolerance of
// kScaleTol times the largest sampled |value| of that tensor: an absolute
// 1e-7 would swamp tensors whose whole scale is below it (Adam's second
// moment v = (1 - 0.999) g^2 is ~1e-9 .. 1e-6) and is needlessly loose for
// none.
constexpr double kRelTol = 1e-5;
constexpr double kScaleTol = 1e-6;

std::string goldenPath(const std::string &relative) {
  return sourcePath("tests/golden/optimizer/" + relative);
}

const Graph &model() {
  static const Graph graph = parseGraphFile(sourcePath("examples/mlp.sg"));
  return graph;
}

// The starting point: the batch and the model's parameters.
struct Start {
  Tensor x, y;
  TensorMap params;
};

const Start &start() {
  static const Start s = [] {
    Start s;
    s.x = readNpy(goldenPath("x.npy"));
    s.y = readNpy(goldenPath("y.npy"));
    for (const char *name : {"w1", "b1", "w2", "b2", "w3", "b3"})
      s.params[name] = readNpy(goldenPath(fmt::format("{}.npy", name)));
    return s;
  }();
  return s;
}

// Compares the sampled elements of `actual` (the whole tensor) with the
// golden values; reports how many differ and the worst one.
::testing::AssertionResult matchesSample(const Tensor &actual, const Tensor &indices,
                                         const Tensor &golden) {
  if (indices.numel() != golden.numel())
    return ::testing::AssertionFailure() << "golden files disagree: " << indices.numel()
                                         << " indices but " << golden.numel() << " values";
  double scale = 0;
  for (int64_t i = 0; i < golden.numel(); ++i)
    scale = std::max(scale, std::abs(golden.real(i)));
  double atol = kScaleTol * scale;
  int64_t bad = 0;
  double worstRatio = 0;
  std::string worst;
  for (int64_t i = 0; i < golden.numel(); ++i) {
    auto flat = static_cast<int64_t>(indices.real(i));
    if (flat < 0 || flat >= actual.numel())
      return ::testing::AssertionFailure() << "sample index " << flat << " out of range";
    double a = actual.real(flat), e = golden.real(i);
    double ratio = std::abs(a - e) / (atol + kRelTol * std::abs(e));
    if (!(ratio <= 1))
      ++bad;
    if (!(ratio <= worstRatio)) {
      worstRatio = ratio;
      worst = fmt::format("element {}: {:.9g} vs expected {:.9g} (|diff| {:.3g})", flat, a,
                          e, std::abs(a - e));
    }
  }
  if (bad == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << golden.numel() << " sampled elements differ beyond rtol "
         << kRelTol << " + atol " << atol << "; worst " << worst;
}

// Runs `steps` training steps of `opt` at base rate `lr` from the starting
// point and checks them against tests/golden/optimizer/<config>/.
void checkAgainstGolden(const std::string &config, Optimizer opt, double lr, int steps) {
  SCOPED_TRACE(config);
  Graph step = trainStep(model(), "loss", opt);

  // Optimizer state and the step counter start at their (zero) initial
  // values; the model's parameters at the saved starting point.
  TensorMap params = initialParams(step);
  for (const auto &[name, value] : start().params) {
    ASSERT_TRUE(params.count(name)) << "the step graph has no param " << name;
    params[name] = value;
  }
  TensorMap inputs{{"x", start().x}, {"y", start().y},
                   {"lr", Tensor::scalar(DType::F32, lr)}};

  Tensor losses = readNpy(goldenPath(config + "/loss.npy"));
  ASSERT_EQ(losses.numel(), steps);
  for (int i = 0; i < steps; ++i) {
    TensorMap outputs = interpretStep(step, inputs, params);
    double loss = outputs.at("loss").real(0);
    // The loss sums 128 log-softmax terms; f32 keeps it well within 1e-5.
    EXPECT_NEAR(loss, losses.real(i), kRelTol * std::abs(losses.real(i)))
        << "loss at step " << i;
  }
  EXPECT_EQ(params.at("step").real(0), steps);

  // Every parameter and state tensor the step graph keeps has a golden.
  int compared = 0;
  for (const auto &[name, value] : params) {
    if (name == "step")
      continue;
    SCOPED_TRACE(name);
    std::string base = name.substr(0, name.find('.'));
    Tensor indices = readNpy(goldenPath("indices/" + base + ".npy"));
    Tensor golden = readNpy(goldenPath(config + "/" + name + ".npy"));
    EXPECT_TRUE(matchesSample(value, indices, golden)) << name << " after " << steps
                                                       << " step(s)";
    ++compared;
  }
  int states = 0;
  switch (opt.kind) {
  case Optimizer::Kind::Sgd: states = 0; break;
  case Optimizer::Kind::Momentum:
  case Optimizer::Kind::Nesterov:
  case Optimizer::Kind::RmsProp: states = 1; break;
  case Optimizer::Kind::Adam:
  case Optimizer::Kind::AdamW: states = 2; break;
  }
  EXPECT_EQ(compared, 6 * (1 + states)) << "params and optimizer state tensors compared";
}

Optimizer make(Optimizer::Kind kind) {
  Optimizer opt;
  opt.kind = kind;
  return opt;
}

TEST(TrainStepGolden, Sgd) { checkAgainstGolden("sgd", make(Optimizer::Kind::Sgd), 0.1, 1); }

TEST(TrainStepGolden, SgdWeightDecay) {
  Optimizer opt = make(Optimizer::Kind::Sgd);
  opt.weightDecay = 1e-2;
  checkAgainstGolden("sgd_weight_decay", opt, 0.1, 1);
}

TEST(TrainStepGolden, Momentum) {
  Optimizer opt = make(Optimizer::Kind::Momentum);
  opt.momentum = 0.9;
  checkAgainstGolden("momentum", opt, 0.05, 1);
}

TEST(TrainStepGolden, Nesterov) {
  Optimizer opt = make(Optimizer::Kind::Nesterov);
  opt.momentum = 0.9;
  checkAgainstGolden("nesterov", opt, 0.05, 1);
}

TEST(TrainStepGolden, RmsProp) {
  Optimizer opt = make(Optimizer::Kind::RmsProp);
  opt.alpha = 0.99;
  opt.eps = 1e-8;
  checkAgainstGolden("rmsprop", opt, 1e-3, 1);
}

TEST(TrainStepGolden, Adam) { checkAgainstGolden("adam", make(Optimizer::Kind::Adam), 1e-3, 1); }

TEST(TrainStepGolden, AdamWeightDecay) {
  Optimizer opt = make(Optimizer::Kind::Adam);
  opt.weightDecay = 1e-2;
  checkAgainstGolden("adam_weight_decay", opt, 1e-3, 1);
}

TEST(TrainStepGolden, AdamW) {
  Optimizer opt = make(Optimizer::Kind::AdamW);
  opt.weightDecay = 1e-2;
  checkAgainstGolden("adamw", opt, 1e-3, 1);
}

// The starting gradient norm is 2.92 (the script prints it), so clipping to
// 1.0 scales the gradients by ~0.34: visible in Adam's m and v.
TEST(TrainStepGolden, AdamClipNorm) {
  Optimizer opt = make(Optimizer::Kind::Adam);
  opt.clipNorm = 1.0;
  checkAgainstGolden("adam_clip", opt, 1e-3, 1);
}

TEST(TrainStepGolden, MomentumThreeSteps) {
  Optimizer opt = make(Optimizer::Kind::Momentum);
  opt.momentum = 0.9;
  checkAgainstGolden("momentum_3steps", opt, 0.05, 3);
}

TEST(TrainStepGolden, AdamThreeSteps) {
  checkAgainstGolden("adam_3steps", make(Optimizer::Kind::Adam), 1e-3, 3);
}

TEST(TrainStepGolden, SgdStepLr) {
  Optimizer opt = make(Optimizer::Kind::Sgd);
  opt.schedule = {.kind = Schedule::Kind::Step, .stepSize = 2, .gamma = 0.5};
  checkAgainstGolden("sgd_step_lr", opt, 0.1, 3);
}

TEST(TrainStepGolden, SgdExponentialLr) {
  Optimizer opt = make(Optimizer::Kind::Sgd);
  opt.schedule = {.kind = Schedule::Kind::Exponential, .gamma = 0.9};
  checkAgainstGolden("sgd_exponential_lr", opt, 0.1, 3);
}

TEST(TrainStepGolden, SgdCosineLr) {
  Optimizer opt = make(Optimizer::Kind::Sgd);
  opt.schedule = {.kind = Schedule::Kind::Cosine, .totalSteps = 4, .minLr = 1e-4};
  checkAgainstGolden("sgd_cosine_lr", opt, 0.1, 3);
}

} // namespace
} // namespace stepc
