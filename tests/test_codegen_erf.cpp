// The CPU backend's f32 erf (ElementRules::erfF32, its own polynomials)
// against f64 erf, and the erf GELU it serves against the interpreter, in
// the elementwise loops and on the matmul's register tile.
#include "codegen_harness.h"

#include "stepc/graph_values.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace stepc {
namespace {

using testing::expectMatchesInterpreter;
using testing::expectMatchesInterpreterOnBothTiles;
using testing::randomTensor;

// The distance from `got` to the exact `want` in ulps of the f32 nearest
// `want` (subnormal ulps near zero).
double ulpsFrom(float got, double want) {
  float nearest = static_cast<float>(want);
  double ulp = std::nextafter(std::abs(nearest), std::numeric_limits<float>::infinity()) -
               static_cast<double>(std::abs(nearest));
  return std::abs(static_cast<double>(got) - want) / ulp;
}

Tensor erfOnCpu(const std::vector<float> &values) {
  Graph graph = parseGraph(fmt::format(R"(graph e {{
    input %x : f32[{}]
    %y = erf(%x)
    output y = %y
  }})",
                                       values.size()));
  std::vector<double> reals(values.begin(), values.end());
  TensorMap inputs{{"x", Tensor::fromReals(DType::F32, {static_cast<int64_t>(values.size())}, reals)}};
  return compileJit(graph, {.cache = false})->step(inputs).at("y");
}

// A dense sweep of [-10, 10], every f32 around the switch from the odd
// polynomial to 1 - 2^Q at |x| = 1 and around the clamp at 3.95, and
// subnormals: within 2 ulps of the exact erf everywhere (the fit's bound is
// about 1.25).
TEST(CodegenErf, F32WithinTwoUlpsOfF64Erf) {
  std::vector<float> values;
  for (int i = 0; i <= 2'000'000; ++i)
    values.push_back(static_cast<float>(-10 + 20.0 * i / 2'000'000));
  for (float start : {0.98f, -0.98f, 3.9f, -3.9f}) {
    float v = start;
    for (int i = 0; i < 300'000; ++i, v = std::nextafter(v, 2 * v))
      values.push_back(v);
  }
  for (int e = -149; e < -100; ++e)
    for (float sign : {1.0f, -1.0f})
      values.push_back(sign * std::ldexp(1.0f, e) * 1.75f);
  Tensor got = erfOnCpu(values);
  double worst = 0;
  float worstAt = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    double ulps = ulpsFrom(static_cast<float>(got.real(static_cast<int64_t>(i))),
                           std::erf(static_cast<double>(values[i])));
    if (ulps > worst) {
      worst = ulps;
      worstAt = values[i];
    }
  }
  RecordProperty("worst_ulps", fmt::format("{:.3f} at x = {}", worst, worstAt));
  EXPECT_LE(worst, 2.0) << "at x = " << worstAt;
}

TEST(CodegenErf, F32SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> values = {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                               std::numeric_limits<float>::denorm_min(),
                               -std::numeric_limits<float>::denorm_min(), 1.0f, -1.0f, 3.95f,
                               5.0f, -7.5f, std::numeric_limits<float>::max(),
                               -std::numeric_limits<float>::max()};
  Tensor got = erfOnCpu(values);
  auto at = [&](int i) { return static_cast<float>(got.real(i)); };
  EXPECT_EQ(std::bit_cast<uint32_t>(at(0)), 0u) << "erf(0) = +0";
  EXPECT_EQ(std::bit_cast<uint32_t>(at(1)), 0x80000000u) << "erf(-0) = -0";
  EXPECT_EQ(at(2), 1.0f);
  EXPECT_EQ(at(3), -1.0f);
  EXPECT_TRUE(std::isnan(at(4)));
  // erf(x) ~ 2x/sqrt(pi) rounds to the smallest subnormal at both signs.
  EXPECT_EQ(at(5), std::numeric_limits<float>::denorm_min());
  EXPECT_EQ(at(6), -std::numeric_limits<float>::denorm_min());
  EXPECT_LE(ulpsFrom(at(7), std::erf(1.0)), 2.0);
  EXPECT_LE(ulpsFrom(at(8), std::erf(-1.0)), 2.0);
  for (int i = 9; i < static_cast<int>(values.size()); ++i)
    EXPECT_EQ(at(i), values[i] > 0 ? 1.0f : -1.0f) << "erf(" << values[i] << ")";
}

// The erf GELU of `x` as PyTorch's ONNX exporter writes it (x/sqrt(2), erf,
// +1, times x, times 0.5), output `gelu`, closing the graph.
std::string geluOf(const std::string &x) {
  return fmt::format(R"(    %root2 = constant() {{dtype=f32, shape=[], value=1.4142135381698608}}
    %d = div({0}, %root2)
    %e = erf(%d)
    %one = constant() {{dtype=f32, shape=[], value=1.0}}
    %e1 = add(%e, %one)
    %g = mul({0}, %e1)
    %half = constant() {{dtype=f32, shape=[], value=0.5}}
    %gelu = mul(%g, %half)
    output gelu = %gelu
  }})", x);
}

// The erf GELU as PyTorch's ONNX exporter writes it, elementwise over an odd
// shape with inputs in [-6, 6) (both halves of erfF32 and the clamp).
TEST(CodegenErf, ElementwiseGeluMatchesInterpreter) {
  Graph graph = parseGraph("graph g {\n  input %x : f32[3,37,41]\n" + geluOf("%x"));
  for (uint64_t seed : {3, 17}) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    TensorMap inputs{{"x", randomTensor(DType::F32, {3, 37, 41}, seed, -6, 6)}};
    expectMatchesInterpreter(graph, inputs, {});
  }
}

// The same GELU as the epilogue of a matmul on each register tile, at sizes
// that leave partial tiles; the products reach |x| of several units.
TEST(CodegenErf, GeluEpilogueMatchesInterpreterOnBothTiles) {
  Graph graph = parseGraph(R"(graph g {
    input %x : f32[43,67]
    input %w : f32[67,75]
    input %b : f32[75]
    %y = matmul(%x, %w)
    %yb = add(%y, %b)
)" + geluOf("%yb"));
  TensorMap inputs{{"x", randomTensor(DType::F32, {43, 67}, 5, -1, 1)},
                   {"w", randomTensor(DType::F32, {67, 75}, 6, -1, 1)},
                   {"b", randomTensor(DType::F32, {75}, 7, -2, 2)}};
  expectMatchesInterpreterOnBothTiles(graph, inputs, {});
}

} // namespace
} // namespace stepc
