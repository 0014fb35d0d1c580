// f16 and bf16: the rounding conversions (stepc/half.h), the text format,
// .npy and safetensors I/O, the interpreter (f32 compute, rounding on store)
// against the f32 graph, and gradients of half graphs.
#include "half_cases.h"
#include "testing.h"

#include "stepc/autodiff.h"
#include "stepc/error.h"
#include "stepc/executable.h"
#include "stepc/graph_values.h"
#include "stepc/half.h"
#include "stepc/interpreter.h"
#include "stepc/npy.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

namespace stepc {
namespace {

using testing::allClose;
using testing::halfCases;

float bits(uint32_t pattern) { return std::bit_cast<float>(pattern); }

TEST(HalfConversion, F16RoundsToNearestEven) {
  EXPECT_EQ(floatToF16Bits(1.0f), 0x3c00);
  EXPECT_EQ(floatToF16Bits(-2.5f), 0xc100);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even one.
  EXPECT_EQ(floatToF16Bits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(floatToF16Bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(floatToF16Bits(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
  EXPECT_EQ(floatToF16Bits(0.1f), 0x2e66);
}

TEST(HalfConversion, F16SubnormalsOverflowInfAndNaN) {
  EXPECT_EQ(floatToF16Bits(std::ldexp(1.0f, -24)), 0x0001); // smallest subnormal
  EXPECT_EQ(floatToF16Bits(std::ldexp(1.0f, -25)), 0x0000); // tie: to even (zero)
  EXPECT_EQ(floatToF16Bits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(floatToF16Bits(std::ldexp(3.0f, -25)), 0x0002); // tie between 1 and 2 units
  EXPECT_EQ(floatToF16Bits(std::ldexp(1023.0f, -24)), 0x03ff);
  EXPECT_EQ(floatToF16Bits(std::ldexp(1023.5f, -24)), 0x0400); // rounds up to the smallest normal
  EXPECT_EQ(floatToF16Bits(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(floatToF16Bits(-0.0f), 0x8000);
  EXPECT_EQ(floatToF16Bits(65504.0f), 0x7bff);
  EXPECT_EQ(floatToF16Bits(65519.0f), 0x7bff);
  EXPECT_EQ(floatToF16Bits(65520.0f), 0x7c00); // overflow to inf
  EXPECT_EQ(floatToF16Bits(-1e10f), 0xfc00);
  EXPECT_EQ(floatToF16Bits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(std::isnan(f16BitsToFloat(floatToF16Bits(std::nanf("")))));
  // A NaN whose payload sits below f16's fraction stays NaN (not inf).
  EXPECT_TRUE(std::isnan(f16BitsToFloat(floatToF16Bits(bits(0x7f800001)))));
  EXPECT_EQ(f16BitsToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16BitsToFloat(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(HalfConversion, BF16RoundsToNearestEven) {
  EXPECT_EQ(floatToBF16Bits(1.0f), 0x3f80);
  EXPECT_EQ(floatToBF16Bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80); // tie to even
  EXPECT_EQ(floatToBF16Bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(floatToBF16Bits(bits(0x00008000)), 0x0000); // subnormal tie to even
  EXPECT_EQ(floatToBF16Bits(bits(0x00018000)), 0x0002);
  EXPECT_EQ(floatToBF16Bits(bits(0x80010001)), 0x8001);
  EXPECT_EQ(floatToBF16Bits(std::numeric_limits<float>::max()), 0x7f80); // overflow to inf
  EXPECT_EQ(floatToBF16Bits(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(bf16BitsToFloat(floatToBF16Bits(bits(0x7f800001)))));
  EXPECT_TRUE(std::isnan(bf16BitsToFloat(floatToBF16Bits(bits(0xffffffff)))));
}

TEST(HalfConversion, EveryHalfValueRoundTripsThroughF32) {
  for (DType half : {DType::F16, DType::BF16})
    for (uint32_t b = 0; b <= 0xffff; ++b) {
      float wide = halfBitsToFloat(static_cast<uint16_t>(b), half);
      uint16_t back = floatToHalfBits(wide, half);
      if (std::isnan(wide))
        EXPECT_TRUE(std::isnan(halfBitsToFloat(back, half))) << dtypeName(half) << " " << b;
      else
        ASSERT_EQ(back, b) << dtypeName(half);
    }
}

TEST(HalfConversion, FromF64RoundsOnce) {
  // Just above the tie between 1 and 1 + 2^-10: f64 -> f32 alone would land
  // on the tie and then round down; the right answer rounds up.
  double justAbove = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(doubleToHalfBits(justAbove, DType::F16), 0x3c01);
  EXPECT_EQ(doubleToHalfBits(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40), DType::BF16),
            0x3f81);
  EXPECT_EQ(doubleToHalfBits(1e300, DType::F16), 0x7c00);
  EXPECT_EQ(doubleToHalfBits(-1e300, DType::BF16), 0xff80);
  EXPECT_EQ(doubleToHalfBits(1e-300, DType::F16), 0x0000);
  EXPECT_EQ(doubleToHalfBits(0.1, DType::F16), 0x2e66);
  Tensor t = Tensor::fromReals(DType::F16, {2}, {justAbove, -65504.0});
  EXPECT_EQ(t.data<uint16_t>()[0], 0x3c01);
  EXPECT_EQ(t.real(1), -65504.0);
}

TEST(HalfText, TypesAndConstantsRoundTrip) {
  std::string text = R"(graph h {
    input %x : f16[3,5]
    param %w : bf16[5,2] = normal(mean=0, std=1, seed=3)
    %c = constant() {dtype=bf16, shape=[2], value=0.1}
    %1 = cast(%x) {dtype=bf16}
    %2 = matmul(%1, %w)
    %3 = add(%2, %c)
    output y = %3
  })";
  Graph g = parseGraph(text, "h.sg");
  EXPECT_EQ(g.type(g.outputs[0].value), (TensorType{DType::BF16, {3, 2}}));
  std::string printed = printGraph(g);
  EXPECT_NE(printed.find("input %x : f16[3,5]"), std::string::npos) << printed;
  EXPECT_NE(printed.find(": bf16[3,2]"), std::string::npos) << printed;
  EXPECT_EQ(printGraph(parseGraph(printed)), printed);
  EXPECT_EQ(parseDType("bf16"), DType::BF16);
  EXPECT_EQ(dtypeSize(DType::F16), 2u);
  EXPECT_TRUE(isFloat(DType::BF16));
}

TEST(HalfText, ShapeRulesKeepFloatOnlyOpsFloat) {
  // Ops that take floats take halves; operands must still agree.
  EXPECT_NO_THROW(parseGraph("graph a { input %x : f16[2] %1 = erf(%x) output y = %1 }"));
  try {
    parseGraph("graph a { input %x : f16[2] input %y : bf16[2] %1 = add(%x, %y) output y = %1 }",
               "a.sg");
    FAIL() << "mixed half dtypes accepted";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("f16[2] and bf16[2]"), std::string::npos) << e.what();
  }
}

Tensor halfTensor(DType half) {
  // Odd shape; a subnormal, an inf and a negative zero among ordinary values.
  std::vector<double> values;
  for (int i = 0; i < 15; ++i)
    values.push_back(std::sin(i * 1.7) * (i + 1));
  values[3] = half == DType::F16 ? std::ldexp(3.0, -24) : std::ldexp(1.0, -130);
  values[7] = -std::numeric_limits<double>::infinity();
  values[11] = -0.0;
  return Tensor::fromReals(half, {3, 5}, values);
}

TEST(HalfIO, NpyRoundTripsBitForBit) {
  for (DType half : {DType::F16, DType::BF16}) {
    Tensor t = halfTensor(half);
    std::string bytes = serializeNpy(t);
    EXPECT_NE(bytes.find(half == DType::F16 ? "'<f2'" : "'<u2'"), std::string::npos);
    EXPECT_EQ(bitsAs(parseNpy(bytes), half), t) << dtypeName(half);
  }
}

// NumPy has no bfloat16, so a bf16 .npy is <u2 bits: `stepc run` takes such a
// file as the bf16 param or input it is bound to, never as a u16 array.
TEST(HalfIO, RunReadsBf16NpyParamsAndInputsAsTheirBits) {
  namespace fs = std::filesystem;
  fs::path dir = stepc::testing::scratchPath("bf16_npy");
  fs::create_directories(dir / "params");
  std::ofstream(dir / "g.sg") << R"(graph g {
  param %w : bf16[3,5] = zeros()
  input %x : bf16[3,5]
  %y = mul(%w, %x)
  output y = %y
})";
  Tensor w = halfTensor(DType::BF16);
  Tensor x = Tensor::fromReals(DType::BF16, {3, 5}, std::vector<double>(15, 2.0));
  writeNpy((dir / "params" / "w.npy").string(), w);
  writeNpy((dir / "x.npy").string(), x);
  stepc::testing::CommandResult r = stepc::testing::stepcCommand(fmt::format(
      "run {} --params {} --input x={} --save-outputs {}", (dir / "g.sg").string(),
      (dir / "params").string(), (dir / "x.npy").string(), (dir / "out").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  Tensor y = bitsAs(readNpy((dir / "out" / "y.npy").string()), DType::BF16);
  ASSERT_EQ(y.dtype(), DType::BF16);
  for (int64_t i = 0; i < y.numel(); ++i) {
    double expected = 2.0 * w.real(i);
    if (std::isnan(expected))
      EXPECT_TRUE(std::isnan(y.real(i))) << i;
    else
      EXPECT_EQ(y.real(i), expected) << i;
  }
  fs::remove_all(dir);
}

TEST(HalfIO, SafetensorsRoundTripBitForBit) {
  std::string path = stepc::testing::scratchPath("half17.safetensors");
  std::map<std::string, Tensor> tensors{{"a", halfTensor(DType::F16)},
                                        {"b", halfTensor(DType::BF16)}};
  writeSafetensors(path, tensors);
  EXPECT_EQ(readSafetensors(path), tensors);
  std::filesystem::remove(path);
}

// Inputs of the f32 graph, rounded to `half`, for the half graph and (as
// f32 again) for the f32 graph: both see the same values.
struct PairedInputs {
  TensorMap half, wide;
};
PairedInputs pairedInputs(const Graph &f32Graph, DType half, uint64_t seed) {
  PairedInputs out;
  for (auto &[name, t] : randomInputs(f32Graph, seed)) {
    Tensor h = t.dtype() == DType::F32 ? castTensor(t, half) : t;
    out.wide.emplace(name, h.dtype() == half ? castTensor(h, DType::F32) : h);
    out.half.emplace(name, std::move(h));
  }
  return out;
}

// Half results against f32 ones computed from the same inputs: each op
// rounds once, so a chain of a few ops is a few half ulps off.
double halfTolerance(DType half) { return half == DType::F16 ? 1e-2 : 5e-2; }

TEST(HalfInterpreter, OpsMatchTheF32GraphWithinHalfTolerance) {
  for (const auto &c : halfCases())
    for (DType half : {DType::F16, DType::BF16}) {
      SCOPED_TRACE(c.name + " in " + std::string(dtypeName(half)));
      Graph wide = parseGraph(c.f32Graph);
      Graph narrow = convertFloatType(wide, DType::F32, half);
      PairedInputs in = pairedInputs(wide, half, 17);
      TensorMap want = interpret(wide, in.wide, {});
      TensorMap got = interpret(narrow, in.half, {});
      for (const auto &[name, w] : want) {
        const Tensor &g = got.at(name);
        EXPECT_EQ(g.dtype(), w.dtype() == DType::F32 ? half : w.dtype()) << name;
        double tol = halfTolerance(half);
        EXPECT_TRUE(allClose(castTensor(g, w.dtype()), w, tol, tol)) << name;
      }
    }
}

TEST(HalfInterpreter, RoundsEachResultOnStore) {
  // 1 + 2^-11 in f16 is 1 (tie to even), so x + 2^-11 == x at x = 1 while
  // f32 keeps the difference.
  Graph g = parseGraph(R"(graph r {
    input %x : f16[2]
    %c = constant() {dtype=f16, shape=[2], value=0.00048828125}
    %1 = add(%x, %c)
    %2 = sub(%1, %x)
    %3 = cast(%x) {dtype=f32}
    %k = constant() {dtype=f32, shape=[2], value=0.00048828125}
    %4 = add(%3, %k)
    output d = %2
    output w = %4
  })");
  TensorMap out = interpret(g, {{"x", Tensor::fromReals(DType::F16, {2}, {1.0, 3.0})}}, {});
  EXPECT_EQ(out.at("d").real(0), 0.0);
  EXPECT_EQ(out.at("d").real(1), 0.0);
  EXPECT_EQ(out.at("w").real(0), 1.00048828125);
}

TEST(HalfGradients, HalfGradientsMatchTheF32GraphsWithinHalfTolerance) {
  Graph wide = parseGraph(R"(graph g {
    input %x : f32[5,13]
    param %w : f32[13,7] = normal(mean=0, std=0.3, seed=5)
    param %b : f32[7] = normal(mean=0, std=0.1, seed=6)
    %1 = matmul(%x, %w)
    %2 = add(%1, %b)
    %3 = tanh(%2)
    %4 = softmax(%3)
    %5 = mul(%4, %3)
    %6 = reduce_mean(%5) {keepdims=0}
    output loss = %6
  })");
  Graph wideGrad = grad(wide, "loss", {"w", "b"}).graph;
  for (DType half : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtypeName(half));
    Graph narrowGrad = grad(convertFloatType(wide, DType::F32, half), "loss", {"w", "b"}).graph;
    PairedInputs in = pairedInputs(wide, half, 23);
    TensorMap wideParams = initialParams(wide), halfParams;
    for (auto &[name, p] : wideParams) {
      halfParams.emplace(name, castTensor(p, half));
      p = castTensor(halfParams.at(name), DType::F32);
    }
    TensorMap want = interpret(wideGrad, in.wide, wideParams);
    TensorMap got = interpret(narrowGrad, in.half, halfParams);
    for (const char *name : {"grad_w", "grad_b"}) {
      EXPECT_EQ(got.at(name).dtype(), half) << name;
      // Gradients here are ~1e-2: the absolute term is scaled to them.
      double tol = halfTolerance(half);
      EXPECT_TRUE(allClose(castTensor(got.at(name), DType::F32), want.at(name), 2 * tol, 2e-3))
          << name;
    }
  }
}

} // namespace
} // namespace stepc
