// Fused attention (issue 11, FusionKind::Attention: compiler/passes/fusion.cpp
// claims the pattern, compiler/codegen/lowering_attention.cpp emits it)
// against the interpreter: causal and not, sequence lengths that are no
// multiple of the 16-key group, the 32-key step, the 64-key block or the
// register tile's rows (1, 7, 17, 33, 48, 65, 700, 1000), batch 1 with
// several heads, D 40 and Dv 24, cross attention (Tq != Tk), head dims 16,
// 48 and 64, batch dimensions broadcast,
// the `attention` composite and the same pattern written out by hand (the
// causal mask folded to a constant, or le(iota, iota) where it is too big to
// fold), the masked_fill form torch.onnx.export writes, at 1 and 2 threads
// and with both register tiles. Each forward graph must become exactly one
// attention kernel whose plan stores no score matrix.
#include "codegen_harness.h"

#include "tiled_matmul.h"

#include "fusion_plan.h"
#include "stepc/autodiff.h"
#include "stepc/graph_values.h"
#include "stepc/passes.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <vector>

using namespace stepc;

namespace {

std::string composite(const std::string &q, const std::string &kv, bool causal,
                      const std::string &kvBatch = "") {
  return fmt::format(R"(graph g {{
  input %q : f32[{}]
  input %k : f32[{}{}]
  input %v : f32[{}{}]
  %o = attention(%q, %k, %v) {{causal={}}}
  output o = %o
}})",
                     q, kvBatch, kv, kvBatch, kv, causal ? 1 : 0);
}

std::string exportedMaskedFill(int tokens) {
  return fmt::format(R"(graph g {{
  input %x : f32[2,{0},32]
  input %y : f32[2,{0},32]
  %q4 = reshape(%x) {{shape=[2,{0},2,16]}}
  %k4 = reshape(%y) {{shape=[2,{0},2,16]}}
  %q = transpose(%q4) {{perm=[0,2,1,3]}}
  %kt = transpose(%k4) {{perm=[0,2,3,1]}}
  %v = transpose(%k4) {{perm=[0,2,1,3]}}
  %s = matmul(%q, %kt)
  %c = constant() {{dtype=f32, shape=[], value=4.0}}
  %scaled = div(%s, %c)
  %i = iota() {{dtype=i64, shape=[{0},{0}], axis=0}}
  %j = iota() {{dtype=i64, shape=[{0},{0}], axis=1}}
  %future = gt(%j, %i)
  %fill = constant() {{dtype=f32, shape=[], value=-inf}}
  %x2 = select(%future, %fill, %scaled)
  %m = reduce_max(%x2) {{axes=[3], keepdims=1}}
  %d = sub(%x2, %m)
  %e = exp(%d)
  %z = reduce_sum(%e) {{axes=[3], keepdims=1}}
  %p = div(%e, %z)
  %o = matmul(%p, %v)
  output o = %o
}})",
                     tokens);
}

// The composites and the exported mask written here, then the graphs in
// tests/snippets/codegen_attention.sg.
std::vector<stepc::testing::SnippetCase> cases() {
  std::vector<stepc::testing::SnippetCase> cases = {
      {"causal_1", composite("2,3,1,16", "2,3,1,16", true)},
      {"causal_7", composite("2,3,7,16", "2,3,7,16", true)},
      {"causal_33", composite("2,3,33,16", "2,3,33,16", true)},
      // 65 x 65 is past constant folding's limit: the mask stays le(iota, iota).
      {"causal_65_d64", composite("2,2,65,64", "2,2,65,64", true)},
      {"plain_33_d64", composite("3,33,64", "3,33,64", false)},
      {"plain_65", composite("2,2,65,16", "2,2,65,16", false)},
      {"cross_7_by_33", composite("2,3,7,16", "2,3,33,16", false)},
      {"cross_causal_33_by_7", composite("2,3,33,16", "2,3,7,16", true)},
      {"rank2_causal_33", composite("33,16", "33,16", true)},
      {"kv_broadcast_over_batch", composite("4,2,9,16", "2,9,16", false, "1,")},
      // As torch.onnx.export writes masked_fill(~tril, -inf) after a head
      // split: k transposed by the split's permutation, the scale a division
      // by sqrt(D), then select(future, -inf, scores). At 19 tokens the mask
      // folds to a constant; at 65 it stays gt(iota, iota).
      {"exported_masked_fill_19", exportedMaskedFill(19)},
      {"exported_masked_fill_65", exportedMaskedFill(65)},
      // Past the old whole-Tk panels (Tk ~384 at D 64): key blocks of 64,
      // Tk and Tq no multiple of the block or of 16, batch 1 with several
      // heads (units are (batch x heads, query block) pairs).
      {"causal_700_heads", composite("1,3,700,16", "1,3,700,16", true)},
      {"plain_700", composite("2,700,16", "2,700,16", false)},
      {"causal_1000_d64", composite("1,2,1000,64", "1,2,1000,64", true)},
      {"cross_50_by_1000", composite("1,2,50,16", "1,2,1000,16", false)},
      // Tk a multiple of the key block (no tail block), and tails of 16 and
      // 48 keys (whole 16-key groups: the register-transpose packing).
      {"causal_64", composite("2,64,16", "2,64,16", true)},
      {"plain_130_by_128", composite("2,130,24", "2,128,24", false)},
      {"causal_80", composite("1,2,80,16", "1,2,80,16", true)},
      {"cross_causal_150_by_112", composite("2,150,16", "2,112,16", true)},
      // Where 16 or fewer keys are left after the wide (32-key) steps, one
      // 16-key step: 17 and 48 keys end on either side of that boundary.
      // Dv 48 is three 16-lane pieces, an odd count for 32-lane groups.
      {"causal_17_d48", composite("2,17,48", "2,17,48", true)},
      {"plain_48", composite("2,2,48,16", "2,2,48,16", false)},
      {"causal_48_d32", composite("1,2,48,32", "1,2,48,32", true)},
  };
  for (stepc::testing::SnippetCase &c :
       stepc::testing::readSnippetCases("tests/snippets/codegen_attention.sg"))
    cases.push_back(std::move(c));
  return cases;
}

// The graphs of CodegenAttentionValues tests that are not composites.
const std::string kValuesSnippets = "tests/snippets/codegen_attention_values.sg";

Graph optimized(const std::string &text) {
  Graph g = parseGraph(text);
  PassManager pm;
  for (const std::string &name : defaultPipeline(false))
    pm.add(name);
  pm.run(g);
  return g;
}

class CodegenAttention : public ::testing::TestWithParam<stepc::testing::SnippetCase> {};

TEST_P(CodegenAttention, IsOneAttentionKernelThatStoresNoScores) {
  Graph g = optimized(GetParam().text);
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u) << fusionReport(g, plan, planBuffers(g, plan));
  EXPECT_EQ(plan.groups[0].kind, FusionKind::Attention);
  ValueId out = g.outputs[0].value;
  std::optional<AttentionPattern> p = matchAttention(g, out);
  ASSERT_TRUE(p);
  for (const Buffer &b : planBuffers(g, plan).buffers)
    EXPECT_NE(g.type(b.value).shape, g.type(p->scores).shape)
        << "%" << b.value << " (" << opInfo(g.node(b.value).op).name << ") has a buffer";
  // The CUDA target has no attention kernel: the pattern stays split there.
  EXPECT_GT(planFusion(g, {.attention = false}).groups.size(), 1u);
}

TEST_P(CodegenAttention, ForwardMatchesInterpreter) {
  Graph graph = parseGraph(GetParam().text);
  stepc::testing::expectMatchesInterpreterOnBothTiles(graph, randomInputs(graph, 21), {});
}

INSTANTIATE_TEST_SUITE_P(, CodegenAttention, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// The backward pass (matchAttentionBackward): the gradient graph of
// sum(attention(q, k, v) * w) for q, k and v, whose backward recomputes the
// probabilities, is one backward attention kernel beside the forward one,
// and its gradients match the interpreter's.
std::string backwardModel(const std::string &q, const std::string &kv, bool causal,
                          const std::string &kvBatch = "") {
  return fmt::format(R"(graph g {{
  input %q : f32[{0}]
  input %k : f32[{2}{1}]
  input %v : f32[{2}{1}]
  input %w : f32[{0}]
  %o = attention(%q, %k, %v) {{causal={3}}}
  %ow = mul(%o, %w)
  %loss = reduce_sum(%ow) {{axes=[{4}], keepdims=0}}
  output loss = %loss
}})",
                     q, kv, kvBatch, causal ? 1 : 0,
                     fmt::join(std::views::iota(0, static_cast<int>(std::count(q.begin(), q.end(), ',')) + 1), ","));
}

// The exported masked_fill form, heads split from [2, T, 32] inputs by
// reshape and transpose (the gradients flow back through the views).
std::string exportedBackwardModel(int tokens) {
  std::string text = exportedMaskedFill(tokens);
  text.replace(text.find("  output o = %o"), 15, fmt::format(R"(  input %w : f32[2,2,{0},16]
  %ow = mul(%o, %w)
  %loss = reduce_sum(%ow) {{axes=[0,1,2,3], keepdims=0}}
  output loss = %loss)", tokens));
  return text;
}

std::vector<stepc::testing::SnippetCase> backwardCases() {
  return {
      {"causal_1", backwardModel("2,3,1,16", "2,3,1,16", true)},
      {"causal_7", backwardModel("2,3,7,16", "2,3,7,16", true)},
      {"causal_33", backwardModel("2,3,33,16", "2,3,33,16", true)},
      {"causal_65_d64", backwardModel("2,2,65,64", "2,2,65,64", true)},
      {"plain_65", backwardModel("2,2,65,16", "2,2,65,16", false)},
      {"causal_130", backwardModel("1,2,130,16", "1,2,130,16", true)},
      {"plain_130_d64", backwardModel("2,130,64", "2,130,64", false)},
      {"causal_48_d48", backwardModel("1,2,48,48", "1,2,48,48", true)},
      {"plain_17_d48", backwardModel("2,17,48", "2,17,48", false)},
      {"cross_7_by_33", backwardModel("2,3,7,16", "2,3,33,16", false)},
      {"cross_causal_33_by_7", backwardModel("2,3,33,16", "2,3,7,16", true)},
      {"rank2_causal_33", backwardModel("33,16", "33,16", true)},
      {"kv_broadcast_over_batch", backwardModel("4,2,9,16", "2,9,16", false, "1,")},
      {"exported_masked_fill_19", exportedBackwardModel(19)},
      {"exported_masked_fill_65", exportedBackwardModel(65)},
  };
}

class CodegenAttentionBackward
    : public ::testing::TestWithParam<stepc::testing::SnippetCase> {};

Graph gradientGraph(const std::string &text) {
  Graph model = parseGraph(text);
  std::vector<std::string> wrt;
  for (const Node &n : model.nodes)
    if (n.op == OpKind::Input && n.name != "w")
      wrt.push_back(n.name);
  return grad(model, "loss", wrt).graph;
}

TEST_P(CodegenAttentionBackward, IsOneBackwardKernelAndMatchesInterpreter) {
  Graph g = gradientGraph(GetParam().text);
  auto exe = compileJit(g, CompileOptions{.cache = false});
  int backward = 0;
  std::vector<std::string> names;
  for (const KernelSpec &kernel : exe->spec().kernels) {
    backward += kernel.name.find("_attention_backward") != std::string::npos;
    names.push_back(kernel.name);
  }
  // One key: the pipeline simplifies the softmax over one element, and the
  // backward pattern is gone (the split kernels compute it).
  EXPECT_EQ(backward, GetParam().name == "causal_1" ? 0 : 1)
      << fmt::format("{}", fmt::join(names, " "));
  stepc::testing::expectMatchesInterpreterOnBothTiles(g, randomInputs(g, 31), {});
}

// Each output element has one writer and one summation order: 1 and 2
// threads give the same bits.
TEST_P(CodegenAttentionBackward, SameBitsAtOneAndTwoThreads) {
  Graph g = gradientGraph(GetParam().text);
  TensorMap inputs = randomInputs(g, 32);
  std::map<std::string, Tensor> results[2];
  for (int threads : {1, 2})
    results[threads - 1] =
        compileJit(g, CompileOptions{.cache = false}, RunOptions{.threads = threads})->step(inputs);
  for (const auto &[name, value] : results[0])
    EXPECT_EQ(std::memcmp(value.bytes(), results[1].at(name).bytes(), value.nbytes()), 0) << name;
}

INSTANTIATE_TEST_SUITE_P(, CodegenAttentionBackward, ::testing::ValuesIn(backwardCases()),
                         [](const auto &info) { return info.param.name; });

// Operands broadcast along their rows or columns (one key, query or value
// repeated: a zero stride, which MLIR's strided memrefs reject) stay outside
// the attention kernel, copied first; broadcast over a batch dimension (keys
// shared by the heads) they are read in place. Forward and gradients.
TEST(CodegenAttentionValues, BroadcastOperandsMatchInterpreter) {
  const char *kText = R"(graph g {{
  input %q1 : f32[2,{}]
  input %k1 : f32[2,{}]
  input %v1 : f32[2,{}]
  input %w : f32[2,9,16]
  %q = broadcast_to(%q1) {{shape=[2,9,16]}}
  %k = broadcast_to(%k1) {{shape=[2,9,16]}}
  %v = broadcast_to(%v1) {{shape=[2,9,16]}}
  %o = attention(%q, %k, %v) {{causal={}}}
  %ow = mul(%o, %w)
  %loss = reduce_sum(%ow) {{axes=[0,1,2], keepdims=0}}
  output o = %o
  output loss = %loss
}})";
  const std::string full = "9,16", row = "1,16", column = "9,1";
  for (const auto &[name, q, k, v, causal] :
       {std::tuple{"one key", full, row, full, 0}, std::tuple{"one query", row, full, full, 1},
        std::tuple{"one value", full, full, row, 0}, std::tuple{"one column", column, full, column, 1}}) {
    SCOPED_TRACE(name);
    Graph graph = parseGraph(fmt::format(fmt::runtime(kText), q, k, v, causal));
    stepc::testing::expectMatchesInterpreterOnBothTiles(graph, randomInputs(graph, 24), {});
    Graph g = grad(graph, "loss", {"q1", "k1", "v1"}).graph;
    stepc::testing::expectMatchesInterpreterOnBothTiles(g, randomInputs(g, 25), {});
  }
  const char *kHeads = R"(graph g {
  input %q : f32[2,3,9,16]
  input %k1 : f32[2,1,9,16]
  input %v1 : f32[2,1,9,16]
  %k = broadcast_to(%k1) {shape=[2,3,9,16]}
  %v = broadcast_to(%v1) {shape=[2,3,9,16]}
  %o = attention(%q, %k, %v) {causal=1}
  output o = %o
})";
  Graph heads = parseGraph(kHeads);
  Graph optimizedHeads = optimized(kHeads);
  EXPECT_EQ(planFusion(optimizedHeads).groups.size(), 1u);
  stepc::testing::expectMatchesInterpreterOnBothTiles(heads, randomInputs(heads, 26), {});
}

// Large scores: the online softmax's rescaling must keep exp from
// overflowing where a row's max grows from block to block.
TEST(CodegenAttentionValues, LargeGrowingScoresMatchInterpreter) {
  Graph graph = parseGraph(composite("2,40,16", "2,40,16", false));
  TensorMap inputs = randomInputs(graph, 22);
  // q near 1 and k rising with the key index t: a row's scores grow by about
  // 8 per key, to ~300 at the last key, so every 16-key block raises the max
  // and exp overflows f32 unless earlier blocks are rescaled.
  Tensor &q = inputs.at("q"), &k = inputs.at("k");
  for (int64_t i = 0; i < q.numel(); ++i)
    q.setReal(i, 1.0 + 0.1 * q.real(i));
  for (int64_t i = 0; i < k.numel(); ++i)
    k.setReal(i, k.real(i) + 0.5 * double(i / 16 % 40));
  stepc::testing::CompareOptions options;
  options.unfused = false;
  stepc::testing::expectMatchesInterpreter(graph, inputs, {}, options);
}

// No keys: not an attention kernel (its softmax would divide 0 by 0); the
// split kernels give the interpreter's zeros.
TEST(CodegenAttentionValues, NoKeysIsNotAnAttentionKernel) {
  Graph graph = parseGraph(composite("2,5,16", "2,0,16", false));
  Graph g = optimized(composite("2,5,16", "2,0,16", false));
  EXPECT_FALSE(matchAttention(g, g.outputs[0].value));
  stepc::testing::expectMatchesInterpreter(graph, randomInputs(graph, 23), {});
}

// Fault injection (bisect-fusion's perturbKernel) on an attention kernel
// whose units split batch, heads and query blocks among threads: the
// elements at even flat indices are shifted once, whatever thread wrote them.
TEST(CodegenAttentionValues, PerturbedKernelShiftsEveryOtherElement) {
  Graph graph = parseGraph(composite("1,3,70,24", "1,3,70,24", true));
  TensorMap inputs = randomInputs(graph, 27);
  auto run = [&](const CompileOptions &options) {
    return compileJit(graph, options, {.threads = 2})->step(inputs).at("o");
  };
  Tensor plain = run({.cache = false});
  Tensor shifted = run({.cache = false, .perturbKernel = CompileOptions::Perturbation{0, 0.25}});
  for (int64_t i = 0; i < plain.numel(); ++i)
    ASSERT_NEAR(shifted.real(i), plain.real(i) + (i % 2 == 0 ? 0.25 : 0), 1e-6) << "o[" << i << "]";
}

// Through a head merge at an odd head dim (D = 13, where an element's flat
// indices in [B,H,T,D] and in the merged [B,T,H*D] differ in parity), the
// forward and the backward attention kernel shift the elements at even flat
// indices of the values they store: the merged output, and the merged dQ,
// dK and dV (a gradient graph's outputs), each once.
TEST(CodegenAttentionValues, PerturbedKernelsShiftEvenElementsOfMergedValues) {
  Graph forward = parseGraph(R"(graph g {
  input %x : f32[2,20,39]
  input %y : f32[2,20,39]
  input %z : f32[2,20,39]
  input %w : f32[2,20,39]
  %x4 = reshape(%x) {shape=[2,20,3,13]}
  %qh = transpose(%x4) {perm=[0,2,1,3]}
  %y4 = reshape(%y) {shape=[2,20,3,13]}
  %kh = transpose(%y4) {perm=[0,2,1,3]}
  %z4 = reshape(%z) {shape=[2,20,3,13]}
  %vh = transpose(%z4) {perm=[0,2,1,3]}
  %o = attention(%qh, %kh, %vh) {causal=1}
  %o4 = transpose(%o) {perm=[0,2,1,3]}
  %merged = reshape(%o4) {shape=[2,20,39]}
  %p = mul(%merged, %w)
  %loss = reduce_sum(%p) {axes=[0,1,2], keepdims=0}
  output merged = %merged
  output loss = %loss
})");
  Graph gradients = grad(forward, "loss", {"x", "y", "z"}).graph;
  for (auto [graph, shifted] :
       {std::pair{&forward, std::vector<std::string>{"merged"}},
        std::pair{&gradients, std::vector<std::string>{"grad_x", "grad_y", "grad_z"}}}) {
    LoweredGraph lowered = lowerGraph(*graph, {.cache = false});
    // The forward graph's attention kernel, the gradient graph's backward one.
    std::optional<size_t> kernel;
    for (size_t k = 0; k < lowered.plan.groups.size(); ++k)
      if (lowered.plan.groups[k].kind == FusionKind::Attention)
        kernel = k;
    ASSERT_TRUE(kernel.has_value()) << fusionReport(lowered.graph, lowered.plan,
                                                    planBuffers(lowered.graph, lowered.plan));
    TensorMap inputs = randomInputs(*graph, 28);
    CompileOptions options{.cache = false};
    auto plain = compileJit(*graph, options, {.threads = 2})->step(inputs);
    options.perturbKernel = CompileOptions::Perturbation{*kernel, 0.25};
    auto perturbed = compileJit(*graph, options, {.threads = 2})->step(inputs);
    for (const std::string &name : shifted)
      for (int64_t i = 0; i < plain.at(name).numel(); ++i)
        ASSERT_NEAR(perturbed.at(name).real(i), plain.at(name).real(i) + (i % 2 == 0 ? 0.25 : 0),
                    1e-5)
            << name << "[" << i << "], kernel k" << *kernel;
  }
}

// Two layers at 65 tokens: the unfolded causal mask le(iota, iota) is one
// node after CSE, read by both; each layer is still one attention kernel.
TEST(CodegenAttentionValues, LayersSharingAnUnfoldedMaskAreAttentionKernels) {
  std::string text = R"(graph g {
  input %q : f32[2,65,16]
  input %k : f32[2,65,16]
  input %v : f32[2,65,16]
  %a = attention(%q, %k, %v) {causal=1}
  %b = attention(%a, %k, %v) {causal=1}
  output b = %b
})";
  Graph g = optimized(text);
  FusionPlan plan = planFusion(g);
  int attention = 0;
  for (const FusionGroup &group : plan.groups)
    attention += group.kind == FusionKind::Attention;
  EXPECT_EQ(attention, 2) << fusionReport(g, plan, planBuffers(g, plan));
  Graph graph = parseGraph(text);
  stepc::testing::CompareOptions options;
  options.unfused = false;
  stepc::testing::expectMatchesInterpreter(graph, randomInputs(graph, 24), {}, options);
}

// Where an output reads the probabilities, the pattern is no attention
// kernel.
TEST(CodegenAttentionValues, ProbabilitiesReadElsewhereKeepTheSplitKernels) {
  Graph g = optimized(stepc::testing::snippetText(kValuesSnippets, "probabilities_read_elsewhere"));
  for (const FusionGroup &group : planFusion(g).groups)
    EXPECT_NE(group.kind, FusionKind::Attention) << group.name;
}

TEST(CodegenAttentionValues, TrainingStepGradientsMatchInterpreter) {
  Graph model = parseGraph(R"(graph g {
  input %x : f32[2,33,16]
  param %wq : f32[16,16] = xavier_uniform(seed=1)
  param %wk : f32[16,16] = xavier_uniform(seed=2)
  param %wv : f32[16,16] = xavier_uniform(seed=3)
  %q = matmul(%x, %wq)
  %k = matmul(%x, %wk)
  %v = matmul(%x, %wv)
  %o = attention(%q, %k, %v) {causal=1}
  %o2 = square(%o)
  %loss = reduce_mean(%o2) {axes=[0,1,2], keepdims=0}
  output loss = %loss
})");
  Graph step = trainStep(model, "loss", Optimizer::sgd());
  // The backward pass recomputes the probabilities (recomputeAttentionProbabilities),
  // so the forward is one attention kernel that stores the row max and sum,
  // and the backward another (matchAttentionBackward).
  auto exe = compileJit(step, CompileOptions{.cache = false});
  int attention = 0, backward = 0;
  for (const KernelSpec &kernel : exe->spec().kernels) {
    attention += kernel.name.find("_attention") != std::string::npos;
    backward += kernel.name.find("_attention_backward") != std::string::npos;
  }
  EXPECT_EQ(attention, 2);
  EXPECT_EQ(backward, 1);
  TensorMap inputs = randomInputs(step, 23);
  inputs.at("lr") = Tensor::scalar(DType::F32, 0.5);
  stepc::testing::CompareOptions options;
  options.steps = 2;
  options.unfused = false;
  stepc::testing::expectMatchesInterpreter(step, inputs, initialParams(step), options);
}

// A causal select whose fill does not vanish in the softmax (0 here) is a
// different function: the kernel would skip the masked keys' exp(0 - max).
// It stays split and matches the interpreter.
TEST(CodegenAttentionValues, FillThatDoesNotVanishKeepsTheSplitKernels) {
  std::string text = exportedMaskedFill(19);
  text.replace(text.find("value=-inf"), 10, "value=0.0");
  Graph graph = parseGraph(text);
  for (const FusionGroup &group : planFusion(optimized(text)).groups)
    EXPECT_NE(group.kind, FusionKind::Attention) << group.name;
  stepc::testing::expectMatchesInterpreter(graph, randomInputs(graph, 25), {});
}

// A bool mask constant holding reals (as the builder's constantData writes
// it) is read as one, not refused with an error.
TEST(CodegenAttentionValues, MaskDataGivenAsRealsIsCausal) {
  Graph g = optimized(exportedMaskedFill(19));
  bool found = false;
  for (Node &n : g.nodes)
    if (n.op == OpKind::Constant && n.type.dtype == DType::Bool && n.attrs.has("data")) {
      n.attrs.set("data", n.attrs.getReals("data"));
      found = true;
    }
  ASSERT_TRUE(found) << "the mask folded to a constant";
  FusionPlan plan = planFusion(g);
  ASSERT_EQ(plan.groups.size(), 1u);
  EXPECT_EQ(plan.groups[0].kind, FusionKind::Attention);
}

// The forward pass also reads the scores (an auxiliary loss on them) before
// the softmax: the recompute pass leaves that pattern alone (copies placed
// among the pattern's nodes would read values defined after them).
TEST(CodegenAttentionValues, ScoresReadInsideTheForwardAreNotRecomputed) {
  Graph model = stepc::testing::snippetGraph(kValuesSnippets, "scores_read_inside_the_forward");
  Graph g = grad(model, "loss").graph;
  Graph copy = g;
  EXPECT_FALSE(recomputeAttentionProbabilities(copy));
  stepc::testing::CompareOptions options;
  options.unfused = false;
  stepc::testing::expectMatchesInterpreter(g, randomInputs(g, 26), {}, options);
}

// A gradient graph (no optimizer, no updates) recomputes too, at a head dim
// and value dim that are not multiples of 16 and batched heads.
TEST(CodegenAttentionValues, GradientGraphIsOneAttentionKernelAndMatchesInterpreter) {
  Graph model = parseGraph(R"(graph g {
  input %q : f32[2,3,21,24]
  input %k : f32[2,3,21,24]
  input %v : f32[2,3,21,40]
  %o = attention(%q, %k, %v) {causal=1}
  %o2 = square(%o)
  %loss = reduce_sum(%o2) {axes=[0,1,2,3], keepdims=0}
  output loss = %loss
})");
  Graph g = grad(model, "loss").graph;
  auto exe = compileJit(g, CompileOptions{.cache = false});
  int attention = 0;
  for (const KernelSpec &kernel : exe->spec().kernels)
    attention += kernel.name.find("_attention") != std::string::npos;
  EXPECT_EQ(attention, 1);
  stepc::testing::CompareOptions options;
  options.unfused = false;
  stepc::testing::expectMatchesInterpreter(g, randomInputs(g, 24), {}, options);
}

} // namespace
