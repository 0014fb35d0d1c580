// bf16 products on the register-tiled micro-kernel (issue 17) against the
// interpreter: bf16 x bf16 matmuls and mixed precision's f32 products of
// widened bf16, at odd sizes (K odd: vdpbf16ps's last pair padded with 0),
// batched with broadcast, with transposed operands (the B^T dot products and
// packed panels). Each runs twice: with vdpbf16ps where the host has
// AVX512_BF16, and widened to f32 on load, which every x86 host runs; on a
// host without it the first is skipped. Both register tiles (8x32 and
// 6x16) put the edges at different places.
#include "codegen_harness.h"

#include "tiled_matmul.h"

#include "stepc/autodiff.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <string>
#include <vector>

namespace stepc {
namespace {

// The products' tolerance (docs/design.md, "Codegen"): the kernel and the
// interpreter both sum exact f32 products of bf16 numbers in f32, in other
// orders, so an element of an f32 result is within 2 K u sum_k |a_k b_k|
// (u = 2^-24, the bound of each order's error) of the interpreter's; a bf16
// result adds one bf16 rounding of the difference: 2^-7 of itself (an f16
// one 2^-10).
// K is the depth of the graph's one product.
int64_t depthOfTheProduct(const Graph &graph) {
  std::vector<int64_t> depths;
  for (const Node &node : graph.nodes)
    if (node.op == OpKind::MatMul)
      depths.push_back(graph.type(node.operands[0]).shape.back());
  if (depths.size() != 1)
    throw Error(fmt::format("expected one matmul, found {}", depths.size()));
  return depths[0];
}

// The products, in tests/snippets/codegen_matmul_bf16.sg.
std::vector<testing::SnippetCase> cases() {
  return testing::readSnippetCases("tests/snippets/codegen_matmul_bf16.sg");
}

// Forces vdpbf16ps on or off while it lives (the host's choice after).
struct ForcedBf16Dot {
  explicit ForcedBf16Dot(bool on) { codegen::forceBf16DotProducts(on ? 1 : 0); }
  ~ForcedBf16Dot() { codegen::forceBf16DotProducts(-1); }
};

bool hostHasBf16Dot() {
  codegen::forceBf16DotProducts(-1);
  return codegen::bf16DotProducts();
}

TensorMap absolute(const TensorMap &inputs) {
  TensorMap out = inputs;
  for (auto &[name, tensor] : out)
    for (int64_t i = 0; i < tensor.numel(); ++i)
      tensor.setReal(i, std::abs(tensor.real(i)));
  return out;
}

class CodegenMatMulBf16 : public ::testing::TestWithParam<testing::SnippetCase> {};

void expectProductsMatch(const testing::SnippetCase &c, bool bf16Dot) {
  ForcedBf16Dot forced(bf16Dot);
  Graph graph = parseGraph(c.text);
  int64_t depth = depthOfTheProduct(graph);
  TensorMap inputs = randomInputs(graph, 17);
  TensorMap want = interpret(graph, inputs, {});
  // sum_k |a_k b_k| per element: the same graph on |a| and |b| (relu keeps
  // what is positive).
  TensorMap magnitudes = interpret(graph, absolute(inputs), {});
  const double u = std::ldexp(1.0, -24);
  for (auto [tile, fusion] : {std::pair{&codegen::avx512Tile(), true},
                              std::pair{&codegen::avx512Tile(), false},
                              std::pair{&codegen::avx2Tile(), true}}) {
    SCOPED_TRACE(fmt::format("{} {}", tile->name, fusion ? "fused" : "unfused"));
    auto exe = [&] {
      testing::ForcedTile forced(*tile);
      return compileJit(graph, CompileOptions{.fusion = fusion, .cache = false});
    }();
    Tensor got = exe->step(inputs).at("y");
    const Tensor &expected = want.at("y");
    ASSERT_EQ(got.type(), expected.type());
    bool bf16 = expected.dtype() == DType::BF16, f16 = expected.dtype() == DType::F16;
    int64_t bad = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      double e = expected.real(i);
      double tolerance = 2 * double(depth) * u * 1.01 * magnitudes.at("y").real(i) +
                         (bf16 ? std::ldexp(std::abs(e), -7) : 0) +
                         (f16 ? std::ldexp(std::abs(e), -10) : 0);
      if (!(std::abs(got.real(i) - e) <= tolerance) && bad++ < 3)
        ADD_FAILURE() << "element " << i << ": " << got.real(i) << " vs " << e
                      << " (tolerance " << tolerance << ")";
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST_P(CodegenMatMulBf16, WithVdpbf16psMatchesInterpreter) {
  if (!hostHasBf16Dot())
    GTEST_SKIP() << "the host has no AVX512_BF16";
  expectProductsMatch(GetParam(), true);
}

TEST_P(CodegenMatMulBf16, WidenedToF32MatchesInterpreter) {
  expectProductsMatch(GetParam(), false);
}

INSTANTIATE_TEST_SUITE_P(, CodegenMatMulBf16, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// A bf16 mixed-precision model's loss and gradients (forward and backward
// products on the kernel) against the interpreter. The backends round half
// activations and gradients at different points (a fused kernel stores
// once, the interpreter rounds every op), so a gradient is compared at the
// scale of its largest element: a few bf16 ulps of it pass, a wrong
// formula does not.
void expectMixedPrecisionGradientsMatch(DType half, bool bf16Dot) {
  ForcedBf16Dot forced(bf16Dot);
  Graph model = parseGraph(R"(graph t {
    input %x : f32[37,61]
    input %y : i32[37]
    param %w1 : f32[61,29] = normal(mean=0, std=0.3, seed=7)
    param %b1 : f32[29] = normal(mean=0, std=0.1, seed=8)
    param %w2 : f32[29,5] = normal(mean=0, std=0.4, seed=9)
    %1 = linear(%x, %w1, %b1)
    %2 = tanh(%1)
    %3 = matmul(%2, %w2)
    %4 = cross_entropy(%3, %y)
    output loss = %4
  })");
  Graph graph = grad(mixedPrecisionGraph(model, half), "loss").graph;
  // A few half ulps of the largest element: 2^-8 for bf16, 2^-11 for f16.
  int ulpExponent = half == DType::BF16 ? -6 : -9;
  TensorMap inputs = randomInputs(graph, 23);
  TensorMap params = initialParams(graph);
  TensorMap want = interpret(graph, inputs, params);
  auto exe = compileJit(graph, CompileOptions{.cache = false});
  for (const auto &[name, value] : params)
    exe->setParam(name, value);
  auto got = exe->step(inputs);
  for (const auto &[name, expected] : want) {
    SCOPED_TRACE(name);
    double largest = 0;
    for (int64_t i = 0; i < expected.numel(); ++i)
      largest = std::max(largest, std::abs(expected.real(i)));
    EXPECT_GT(largest, 0);
    EXPECT_TRUE(testing::allClose(got.at(name), expected, 0, std::ldexp(largest, ulpExponent)));
  }
}

TEST(CodegenMatMulBf16Step, MixedPrecisionGradientsWithVdpbf16ps) {
  if (!hostHasBf16Dot())
    GTEST_SKIP() << "the host has no AVX512_BF16";
  expectMixedPrecisionGradientsMatch(DType::BF16, true);
}

TEST(CodegenMatMulBf16Step, MixedPrecisionGradientsWidened) {
  expectMixedPrecisionGradientsMatch(DType::BF16, false);
}

// f16 products are always widened on load (vdpbf16ps reads bf16 only).
TEST(CodegenMatMulBf16Step, MixedPrecisionF16GradientsWidened) {
  expectMixedPrecisionGradientsMatch(DType::F16, true);
}

} // namespace
} // namespace stepc
