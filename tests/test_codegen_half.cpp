// The CPU backend on f16 and bf16 graphs against the interpreter: kernels
// load halves, compute in f32 and round on store, so elementwise chains
// fused into one kernel are a few half ulps from the interpreter (which
// rounds after every op) and plain conversions are bit for bit equal.
#include "codegen_harness.h"
#include "half_cases.h"

#include "stepc/autodiff.h"
#include "stepc/error.h"
#include "stepc/graph_values.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace stepc {
namespace {

using testing::expectMatchesInterpreter;
using testing::halfCases;

TEST(CodegenHalf, OpsMatchTheInterpreter) {
  for (const auto &c : halfCases())
    for (DType half : {DType::F16, DType::BF16}) {
      SCOPED_TRACE(c.name + " in " + std::string(dtypeName(half)));
      Graph graph = convertFloatType(parseGraph(c.f32Graph), DType::F32, half);
      expectMatchesInterpreter(graph, randomInputs(graph, 31), {}, {});
    }
}

// Rounding at the edges (ties, subnormals, overflow, NaN, -0) is the same bits
// in a compiled kernel (LLVM's fptrunc for f16, MLIR's bf16 expansion) as in
// stepc/half.h.
TEST(CodegenHalf, ConversionsAreBitForBitTheInterpreters) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> values = {1.0,
                                1.0 + std::ldexp(1.0, -11),
                                1.0 + 3 * std::ldexp(1.0, -11),
                                1.0 + std::ldexp(1.0, -8),
                                1.0 + 3 * std::ldexp(1.0, -8),
                                std::ldexp(1.0, -25),
                                std::ldexp(3.0, -25),
                                std::ldexp(1023.5, -24),
                                std::ldexp(1.0, -130),
                                std::ldexp(3.0, -134),
                                65519.0,
                                65520.0,
                                -1e30,
                                3.4e38,
                                -inf,
                                std::nan(""),
                                -0.0,
                                0.1,
                                -2.7182818};
  Shape shape{static_cast<int64_t>(values.size())};
  for (const char *half : {"f16", "bf16"}) {
    SCOPED_TRACE(half);
    Graph graph = parseGraph(fmt::format(R"(graph c {{
      input %x : f32[{0}]
      %1 = cast(%x) {{dtype={1}}}
      %2 = cast(%1) {{dtype=f32}}
      output h = %1
      output w = %2
    }})",
                                         values.size(), half));
    TensorMap inputs{{"x", Tensor::fromReals(DType::F32, shape, values)}};
    TensorMap want = interpret(graph, inputs, {});
    for (bool fusion : {true, false}) {
      auto exe = compileJit(graph, {.fusion = fusion, .cache = false});
      auto got = exe->step(inputs);
      for (const char *name : {"h", "w"})
        for (int64_t i = 0; i < want.at(name).numel(); ++i) {
          double a = got.at(name).real(i), e = want.at(name).real(i);
          if (std::isnan(e))
            EXPECT_TRUE(std::isnan(a)) << name << "[" << i << "]";
          else
            EXPECT_EQ(std::bit_cast<uint64_t>(a), std::bit_cast<uint64_t>(e))
                << name << "[" << i << "] = " << a << ", interpreter " << e;
        }
    }
  }
}

// A half computed inside a kernel (an unrounded f32 in a register) rounds to
// its own type before a cast takes it elsewhere, to f32 or to the other half
// type, as the interpreter rounds each op: the same bits fused and unfused.
TEST(CodegenHalf, CastsOutOfAComputedHalfRoundItFirst) {
  Graph graph = parseGraph(R"(graph c {
    input %a : bf16[257]
    input %b : f16[257]
    %sa = mul(%a, %a)
    %sb = mul(%b, %b)
    %1 = cast(%sa) {dtype=f16}
    %2 = cast(%sa) {dtype=f32}
    %3 = cast(%sb) {dtype=bf16}
    %4 = cast(%sb) {dtype=f64}
    output to_f16 = %1
    output to_f32 = %2
    output to_bf16 = %3
    output to_f64 = %4
  })");
  TensorMap inputs = randomInputs(graph, 37);
  TensorMap want = interpret(graph, inputs, {});
  for (bool fusion : {true, false}) {
    SCOPED_TRACE(fusion ? "fused" : "unfused");
    auto got = compileJit(graph, {.fusion = fusion, .cache = false})->step(inputs);
    for (const auto &[name, expected] : want)
      EXPECT_EQ(got.at(name), expected) << name;
  }
}

// sin and cos of halves at large arguments (position encodings): the kernel
// reduces in f32 with f32 constants, so the result is within one half ulp of
// the interpreter's even next to a zero of the function (sin(355) ~ -3e-5),
// where constants rounded to the half type were off by tens of ulps.
TEST(CodegenHalf, SinAndCosOfLargeArgumentsWithinAHalfUlp) {
  std::vector<double> values = {355, 688, 887.5, 4992, -1021, 710, 2.5, -0.75};
  for (int i = 0; i < 57; ++i)
    values.push_back(100 + 61.7 * i);
  Shape shape{static_cast<int64_t>(values.size())};
  for (DType half : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtypeName(half));
    Graph graph = parseGraph(fmt::format(R"(graph s {{
      input %x : {0}[{1}]
      %s = sin(%x)
      %c = cos(%x)
      output s = %s
      output c = %c
    }})",
                                         dtypeName(half), values.size()));
    TensorMap inputs{{"x", Tensor::fromReals(half, shape, values)}};
    TensorMap want = interpret(graph, inputs, {});
    auto got = compileJit(graph, {.cache = false})->step(inputs);
    int mantissa = half == DType::F16 ? 10 : 7, minExponent = half == DType::F16 ? -24 : -133;
    for (const char *name : {"s", "c"})
      for (int64_t i = 0; i < want.at(name).numel(); ++i) {
        double e = want.at(name).real(i), a = got.at(name).real(i);
        double ulp = std::ldexp(1.0, std::max(std::ilogb(e == 0 ? 1e-30 : e) - mantissa, minExponent));
        EXPECT_LE(std::abs(a - e), ulp) << name << "(" << inputs.at("x").real(i) << ") = " << a
                                        << ", interpreter " << e;
      }
  }
}

// f16 overflows to inf early (exp(12) > 65504): --check-numerics reads half
// outputs as halves and names the value.
TEST(CodegenHalf, CheckNumericsFindsHalfOverflow) {
  Graph graph = parseGraph(R"(graph o {
    input %x : f16[3]
    %1 = exp(%x)
    output y = %1
  })");
  auto exe = compileJit(graph, {.cache = false}, RunOptions{.checkNumerics = true});
  try {
    exe->step({{"x", Tensor::fromReals(DType::F16, {3}, {1.0, 12.0, -3.0})}});
    FAIL() << "no check-numerics error";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("produced Inf in output"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f16[3] at element 1"), std::string::npos) << e.what();
  }
}

// A half training step (SGD), gradients and updates in half, two steps.
TEST(CodegenHalf, TrainingStepMatchesTheInterpreter) {
  Graph wide = parseGraph(R"(graph t {
    input %x : f32[6,11]
    input %y : i32[6]
    param %w : f32[11,5] = normal(mean=0, std=0.3, seed=7)
    param %b : f32[5] = zeros()
    %1 = matmul(%x, %w)
    %2 = add(%1, %b)
    %3 = tanh(%2)
    %4 = cross_entropy(%3, %y)
    output loss = %4
  })");
  for (DType half : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtypeName(half));
    Graph step = trainStep(convertFloatType(wide, DType::F32, half), "loss", Optimizer::sgd());
    TensorMap inputs = randomInputs(step, 41);
    for (auto &[name, t] : inputs)
      if (name == "lr")
        t = Tensor::scalar(t.dtype(), 0.1);
    expectMatchesInterpreter(step, inputs, initialParams(step), {.steps = 2});
  }
}

// Every element of `actual` within `fraction` of `expected`'s largest
// magnitude: rounding noise passes, a wrong formula (a factor, a missing
// term) does not.
::testing::AssertionResult closeAtItsScale(const Tensor &actual, const Tensor &expected,
                                           double fraction) {
  double largest = 0;
  for (int64_t i = 0; i < expected.numel(); ++i)
    largest = std::max(largest, std::abs(expected.real(i)));
  return testing::allClose(actual, expected, 0, fraction * largest);
}

// Mixed-precision Adam steps (f32 master weights, half compute, f16 with
// loss scaling) compiled, against the interpreter. The backends round the
// half activations and gradients at different points (a fused kernel stores
// once, the interpreter rounds every op), so they are a few half ulps apart
// (2^-8 of themselves for bf16, 2^-11 for f16): the loss and Adam's moments,
// which follow the gradients, within 4 such ulps of their scale. Adam's
// update is about lr * m / sqrt(v), +-lr at first whatever the gradient's
// size, so a weight may move by a part of lr differently where a gradient
// element is near zero (measured: up to 0.27 lr, an f16 w1 element whose
// gradient cancels to 2e-5 and differs by a third between the backends);
// 0.5 lr covers that, where a missing or wrong update is off by lr or more. The loss scale, its counter
// and the step counter match exactly.
TEST(CodegenHalf, MixedPrecisionStepMatchesTheInterpreter) {
  Graph model = testing::snippetGraph("tests/snippets/codegen_half.sg", "classifier");
  Optimizer adam = Optimizer::adam();
  adam.lr = 1e-3;
  for (auto [half, ulps] : {std::pair{DType::BF16, 1.6e-2}, std::pair{DType::F16, 2e-3}}) {
    for (double scale : {1024.0, 1e30}) { // 1e30: every step overflows f16
      if (half == DType::BF16 && scale != 1024.0)
        continue;
      SCOPED_TRACE(fmt::format("{} scale {}", dtypeName(half), scale));
      MixedPrecision mixed{.compute = half, .initialScale = scale};
      Graph step = trainStep(model, "loss", adam, {}, mixed);
      TensorMap inputs = randomInputs(step, 43);
      TensorMap want = initialParams(step);
      auto exe = compileJit(step, {.cache = false});
      for (const auto &[name, value] : want)
        exe->setParam(name, value);
      for (int i = 0; i < 3; ++i) {
        SCOPED_TRACE(fmt::format("step {}", i));
        TensorMap expected = interpretStep(step, inputs, want);
        auto got = exe->step(inputs);
        EXPECT_TRUE(testing::allClose(got.at("loss"), expected.at("loss"), ulps));
        for (const auto &[name, value] : want) {
          if (name.starts_with("loss_scale") || name == "step")
            EXPECT_TRUE(exe->param(name) == value) << name;
          else if (name.ends_with(".m") || name.ends_with(".v"))
            EXPECT_TRUE(closeAtItsScale(exe->param(name), value, ulps)) << name;
          else
            EXPECT_TRUE(testing::allClose(exe->param(name), value, 0, 0.5 * *adam.lr)) << name;
        }
      }
      if (scale == 1e30)
        EXPECT_TRUE(exe->param("w1") == initialParams(step).at("w1")) << "overflow: skipped";
    }
  }
}

} // namespace
} // namespace stepc
