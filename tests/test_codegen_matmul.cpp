// Every matmul layout on the register-tiled micro-kernel (issue 11,
// compiler/codegen/lowering_matmul.cpp) against the interpreter, forward and
// through a training step's gradients: odd sizes that are no multiple of the
// 8x32 tile, rank-N x rank-2 products whose batch folds into the rows,
// batched products with broadcast batch dimensions, transposed operands,
// attention heads read through transpose(reshape(...)) views, slices, and
// the epilogues computed on the register tile. Each graph also runs at 1 and
// 2 threads, which must give the same bits, and with both register tiles
// (AVX-512's 8x32 and AVX2's 6x16, whichever the host has).
#include "codegen_harness.h"

#include "lowering.h"
#include "tiled_matmul.h"

#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace stepc;

namespace {

struct Case {
  std::string name, text;
};

// A data constant's text: `data` row-major, as the ONNX importer writes one.
std::string dataConstant(const std::string &name, const std::string &dtype, int64_t rows,
                         int64_t cols, double (*value)(int64_t, int64_t)) {
  std::string data;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      data += (data.empty() ? "" : ",") + fmt::format("{}", value(i, j));
  return fmt::format("  %{} = constant() {{data=[{}], dtype={}, shape=[{},{}]}}\n", name, data,
                     dtype, rows, cols);
}

// Each graph's `loss` is a sum of its products (and their epilogues), so the
// training step differentiates through every product.
std::vector<Case> cases() {
  return {
      {"odd_rank2", R"(graph g {
  input %x : f32[37,29]
  param %w : f32[29,45] = xavier_uniform(seed=1)
  %y = matmul(%x, %w)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      {"rank3_x_rank2_bias_relu", R"(graph g {
  input %x : f32[3,37,29]
  param %w : f32[29,45] = xavier_uniform(seed=1)
  param %b : f32[45] = normal(mean=0.0, std=1.0, seed=2)
  %y = linear(%x, %w, %b)
  %r = relu(%y)
  %loss = reduce_mean(%r) {axes=[0,1,2], keepdims=0}
  output r = %r
  output loss = %loss
})"},
      {"rank4_x_rank2_residual", R"(graph g {
  input %x : f32[2,3,11,70]
  input %res : f32[2,3,11,33]
  param %w : f32[70,33] = xavier_uniform(seed=1)
  %y = matmul(%x, %w)
  %s = add(%y, %res)
  %loss = reduce_mean(%s) {axes=[0,1,2,3], keepdims=0}
  output s = %s
  output loss = %loss
})"},
      {"rank2_x_rank3", R"(graph g {
  input %x : f32[13,29]
  param %w : f32[3,29,45] = xavier_uniform(seed=1)
  %y = matmul(%x, %w)
  %loss = reduce_sum(%y) {axes=[0,1,2], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      {"broadcast_batch", R"(graph g {
  input %a : f32[1,5,7,29]
  param %b : f32[3,1,29,45] = xavier_uniform(seed=1)
  %y = matmul(%a, %b)
  %t = tanh(%y)
  %loss = reduce_sum(%t) {axes=[0,1,2,3], keepdims=0}
  output t = %t
  output loss = %loss
})"},
      {"batched_scale_mask", R"(graph g {
  input %a : f32[4,19,29]
  param %b : f32[4,29,19] = xavier_uniform(seed=1)
  input %keep : bool[19,19]
  %y = matmul(%a, %b)
  %c = constant() {dtype=f32, shape=[], value=0.125}
  %s = mul(%y, %c)
  %z = constant() {dtype=f32, shape=[4,19,19], value=-1.0}
  %m = select(%keep, %s, %z)
  %loss = reduce_sum(%m) {axes=[0,1,2], keepdims=0}
  output m = %m
  output loss = %loss
})"},
      {"transposed_a", R"(graph g {
  input %x : f32[29,37]
  param %w : f32[29,45] = xavier_uniform(seed=1)
  %xt = transpose(%x) {perm=[1,0]}
  %y = matmul(%xt, %w)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      {"transposed_b_short_k", R"(graph g {
  input %x : f32[37,29]
  param %w : f32[45,29] = xavier_uniform(seed=1)
  %wt = transpose(%w) {perm=[1,0]}
  %y = matmul(%x, %wt)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      {"transposed_b_long_k", R"(graph g {
  input %x : f32[2,37,70]
  param %w : f32[45,70] = xavier_uniform(seed=1)
  %wt = transpose(%w) {perm=[1,0]}
  %y = matmul(%x, %wt)
  %loss = reduce_sum(%y) {axes=[0,1,2], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      // B^T packed into column panels, with an epilogue on the register tile
      // and a reshape that keeps dimension 0 (row-local: split by threads).
      {"transposed_b_packed_epilogue", R"(graph g {
  input %x : f32[3,37,70]
  param %w : f32[53,70] = xavier_uniform(seed=1)
  param %b : f32[53] = normal(mean=0.0, std=1.0, seed=2)
  %wt = transpose(%w) {perm=[1,0]}
  %y = matmul(%x, %wt)
  %yb = add(%y, %b)
  %t = tanh(%yb)
  %r = reshape(%t) {shape=[3,1961]}
  %loss = reduce_sum(%r) {axes=[0,1], keepdims=0}
  output r = %r
  output loss = %loss
})"},
      // Both operands transposed (A's K stride is not 1): packed B.
      {"transposed_a_and_b", R"(graph g {
  input %x : f32[29,37]
  param %w : f32[45,29] = xavier_uniform(seed=1)
  %xt = transpose(%x) {perm=[1,0]}
  %wt = transpose(%w) {perm=[1,0]}
  %y = matmul(%xt, %wt)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      // N under one vector with a long unit-stride K: dot products.
      {"transposed_b_narrow_n", R"(graph g {
  input %x : f32[37,70]
  param %w : f32[5,70] = xavier_uniform(seed=1)
  %wt = transpose(%w) {perm=[1,0]}
  %y = matmul(%x, %wt)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  output y = %y
  output loss = %loss
})"},
      // B^T whose packed panel would not fit a kernel's stack buffer
      // (K x 16 or K x 32 floats over 64Ki): dot products, with a transposed
      // A plain loops (at K = 300000 the panel, 19 MB, overflowed the stack).
      {"transposed_b_panel_over_stack_bound", R"(graph g {
  input %x : f32[3,4500]
  input %u : f32[4500,2]
  param %w : f32[21,4500] = xavier_uniform(seed=1)
  %wt = transpose(%w) {perm=[1,0]}
  %y = matmul(%x, %wt)
  %ut = transpose(%u) {perm=[1,0]}
  %z = matmul(%ut, %wt)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  %lz = reduce_sum(%z) {axes=[0,1], keepdims=0}
  %l = add(%loss, %lz)
  output y = %y
  output z = %z
  output loss = %l
})"},
      // A reshape across dimension 0 of the epilogue's result stays out of
      // the matmul's kernel (users read it as a view).
      {"reshape_across_rows", R"(graph g {
  input %x : f32[3,37,29]
  param %w : f32[29,45] = xavier_uniform(seed=1)
  input %res : f32[3,37,45]
  %y = matmul(%x, %w)
  %s = add(%y, %res)
  %r = reshape(%s) {shape=[111,45]}
  param %v : f32[45,19] = xavier_uniform(seed=2)
  %z = matmul(%r, %v)
  %loss = reduce_mean(%z) {axes=[0,1], keepdims=0}
  output z = %z
  output loss = %loss
})"},
      {"attention_heads", R"(graph g {
  input %x : f32[2,9,24]
  param %wq : f32[24,24] = xavier_uniform(seed=1)
  param %wk : f32[24,24] = xavier_uniform(seed=2)
  param %wv : f32[24,24] = xavier_uniform(seed=3)
  %q = matmul(%x, %wq)
  %q4 = reshape(%q) {shape=[2,9,3,8]}
  %qh = transpose(%q4) {perm=[0,2,1,3]}
  %k = matmul(%x, %wk)
  %k4 = reshape(%k) {shape=[2,9,3,8]}
  %kh = transpose(%k4) {perm=[0,2,3,1]}
  %v = matmul(%x, %wv)
  %v4 = reshape(%v) {shape=[2,9,3,8]}
  %vh = transpose(%v4) {perm=[0,2,1,3]}
  %s = matmul(%qh, %kh)
  %p = softmax(%s) {axis=-1}
  %o = matmul(%p, %vh)
  %ot = transpose(%o) {perm=[0,2,1,3]}
  %merged = reshape(%ot) {shape=[2,9,24]}
  %loss = reduce_mean(%merged) {axes=[0,1,2], keepdims=0}
  output merged = %merged
  output loss = %loss
})"},
      // Batched B^T panels packed by 16x16 transposes in registers (unit K
      // stride, B^T rows 192 floats apart through a head transpose; N = 70:
      // two wide panels and an edge panel copied element by element), one
      // B^T broadcast over the batch, with a scale and tanh on the register
      // tile. K = 29 and 70 above cover a depth that is no multiple of 16.
      {"attention_scores_packed_b", R"(graph g {
  input %q : f32[2,3,37,64]
  input %kv : f32[2,70,3,64]
  param %kb : f32[3,70,64] = xavier_uniform(seed=1)
  %kh = transpose(%kv) {perm=[0,2,3,1]}
  %s = matmul(%q, %kh)
  %c = constant() {dtype=f32, shape=[], value=0.125}
  %m = mul(%s, %c)
  %t = tanh(%m)
  %kbt = transpose(%kb) {perm=[0,2,1]}
  %u = matmul(%q, %kbt)
  %ls = reduce_sum(%t) {axes=[0,1,2,3], keepdims=0}
  %lu = reduce_sum(%u) {axes=[0,1,2,3], keepdims=0}
  %loss = add(%ls, %lu)
  output t = %t
  output u = %u
  output loss = %loss
})"},
      // The exact GELU as PyTorch's ONNX exporter writes it (Erf, opset
      // 17): x * (erf(x / sqrt 2) + 1) * 0.5 after a bias, on the register
      // tile.
      {"erf_gelu_epilogue", R"(graph g {
  input %x : f32[2,19,29]
  param %w : f32[29,53] = xavier_uniform(seed=1)
  param %b : f32[53] = normal(mean=0.0, std=1.0, seed=2)
  %y = matmul(%x, %w)
  %yb = add(%b, %y)
  %root2 = constant() {dtype=f32, shape=[], value=1.4142135381698608}
  %d = div(%yb, %root2)
  %e = erf(%d)
  %one = constant() {dtype=f32, shape=[], value=1.0}
  %e1 = add(%e, %one)
  %g = mul(%yb, %e1)
  %half = constant() {dtype=f32, shape=[], value=0.5}
  %gelu = mul(%g, %half)
  %loss = reduce_mean(%gelu) {axes=[0,1,2], keepdims=0}
  output gelu = %gelu
  output loss = %loss
})"},
      // Attention scores masked as PyTorch's ONNX exporter writes it: a
      // bool data constant [T,S] selects a scalar where a key is hidden
      // (loaded 16 columns at a time, 21 = 16 + a masked 5), an f32 data
      // constant added, and a bool [T,1] broadcast along the columns.
      {"data_constant_masks", R"(graph g {
  input %q : f32[2,3,19,29]
  param %kt : f32[3,29,21] = xavier_uniform(seed=1)
  %s = matmul(%q, %kt)
  %c = constant() {dtype=f32, shape=[], value=0.125}
  %scaled = mul(%s, %c)
  %hidden = constant() {dtype=f32, shape=[], value=-10000.0}
)" + dataConstant("future", "bool", 19, 21, [](int64_t i, int64_t j) { return double(j > i + 2); }) +
                                   R"(  %masked = select(%future, %hidden, %scaled)
)" + dataConstant("bias", "f32", 19, 21, [](int64_t i, int64_t j) { return 0.25 * double((i * 7 + j) % 5) - 0.5; }) +
                                   R"(  %biased = add(%masked, %bias)
)" + dataConstant("rows", "bool", 19, 1, [](int64_t i, int64_t) { return double(i % 3 == 0); }) +
                                   R"(  %m = select(%rows, %hidden, %biased)
  %loss = reduce_sum(%m) {axes=[0,1,2,3], keepdims=0}
  output m = %m
  output loss = %loss
})"},
      {"sliced", R"(graph g {
  input %x : f32[41,35]
  param %w : f32[70,47] = xavier_uniform(seed=1)
  %xs = slice(%x) {limits=[40,33], starts=[3,4], strides=[1,1]}
  %ws = slice(%w) {limits=[58,45], starts=[0,1], strides=[2,1]}
  %y = matmul(%xs, %ws)
  %loss = reduce_sum(%y) {axes=[0,1], keepdims=0}
  output y = %y
  output loss = %loss
})"},
  };
}

class CodegenMatMul : public ::testing::TestWithParam<Case> {};

TEST_P(CodegenMatMul, ForwardMatchesInterpreter) {
  Graph graph = parseGraph(GetParam().text);
  TensorMap inputs = randomInputs(graph, 11);
  for (int threads : {1, 2}) {
    stepc::testing::CompareOptions options;
    options.threads = threads;
    stepc::testing::expectMatchesInterpreter(graph, inputs, initialParams(graph), options);
  }
}

TEST_P(CodegenMatMul, GradientsMatchInterpreter) {
  Graph step = trainStep(parseGraph(GetParam().text), "loss", Optimizer::sgd());
  TensorMap inputs = randomInputs(step, 12);
  inputs.at("lr") = Tensor::scalar(DType::F32, 0.5);
  stepc::testing::CompareOptions options;
  options.steps = 2;
  options.unfused = false;
  options.threads = 2;
  stepc::testing::expectMatchesInterpreter(step, inputs, initialParams(step), options);
}

// A parallel call owns whole output rows or batch entries: the thread count
// never changes a bit.
void expectSameBitsAtOneAndTwoThreads(const std::string &text) {
  Graph step = trainStep(parseGraph(text), "loss", Optimizer::adam());
  TensorMap inputs = randomInputs(step, 13);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  std::vector<std::vector<Tensor>> runs;
  for (int threads : {1, 2}) {
    RunOptions run;
    run.threads = threads;
    auto exe = compileJit(step, CompileOptions{.cache = false}, run);
    std::vector<Tensor> results;
    for (int s = 0; s < 2; ++s)
      for (auto &[name, value] : exe->step(inputs))
        results.push_back(std::move(value));
    for (const std::string &name : exe->paramNames())
      results.push_back(exe->param(name));
    runs.push_back(std::move(results));
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) {
    ASSERT_EQ(runs[0][i].nbytes(), runs[1][i].nbytes());
    EXPECT_EQ(std::memcmp(runs[0][i].bytes(), runs[1][i].bytes(), runs[0][i].nbytes()), 0)
        << "result " << i << " differs between 1 and 2 threads";
  }
}

TEST_P(CodegenMatMul, SameBitsAtOneAndTwoThreads) { expectSameBitsAtOneAndTwoThreads(GetParam().text); }

// Both register tiles, whatever the host's: the same products, the edges
// (rows past the last whole tile, masked columns) at different places.
TEST_P(CodegenMatMul, BothRegisterTilesMatchInterpreter) {
  Graph graph = parseGraph(GetParam().text);
  TensorMap inputs = randomInputs(graph, 11);
  for (const codegen::RegisterTile *tile : {&codegen::avx2Tile(), &codegen::avx512Tile()}) {
    SCOPED_TRACE(tile->name);
    stepc::testing::ForcedTile forced(*tile);
    for (int threads : {1, 2}) {
      stepc::testing::CompareOptions options;
      options.threads = threads;
      options.unfused = false;
      stepc::testing::expectMatchesInterpreter(graph, inputs, initialParams(graph), options);
    }
    expectSameBitsAtOneAndTwoThreads(GetParam().text);
  }
}

INSTANTIATE_TEST_SUITE_P(, CodegenMatMul, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// Codegen carries out the kernel plan (planKernels): the epilogue the plan
// puts on the product's register tile is computed there, on 16-lane vectors
// (relu as a select of vector<16xi1>); a plan without it gets the product
// stored and the relu in a loop of its own after it.
TEST(CodegenMatMulPlan, EpilogueRunsOnTheTileOnlyWhereThePlanSaysSo) {
  Graph graph = parseGraph(R"(graph dense {
  input %x : f32[32,64]
  input %w : f32[64,48]
  %z = matmul(%x, %w)
  %h = relu(%z)
  output h = %h
})");
  FusionPlan plan = planFusion(graph);
  ASSERT_EQ(plan.groups.size(), 1u);
  planKernels(graph, plan, codegen::kernelTarget(false));
  FusionGroup group = plan.groups[0];
  ASSERT_EQ(group.kernel.nests.size(), 2u);
  ASSERT_EQ(group.kernel.nests[0].epilogue, std::vector<ValueId>{*graph.findNamed("h")});
  std::vector<bool> usedOutside = usedOutsideGroup(graph, plan);
  std::function<int64_t(ValueId)> offset = [](ValueId v) { return 4096 * int64_t(v + 1); };
  const std::string vectorRelu = ": vector<16xi1>, vector<16xf32>";
  std::string onTile = codegen::lowerGroup(graph, group, offset, usedOutside, 1 << 20).function;
  EXPECT_NE(onTile.find(vectorRelu), std::string::npos) << onTile;
  group.kernel.nests[0].epilogue.clear();
  std::string after = codegen::lowerGroup(graph, group, offset, usedOutside, 1 << 20).function;
  EXPECT_EQ(after.find(vectorRelu), std::string::npos) << after;
}

} // namespace
