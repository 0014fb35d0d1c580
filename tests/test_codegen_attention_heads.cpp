// Head merges folded into the attention kernels' stores (issue 11;
// claimAttention and attentionStore in compiler/passes/fusion.cpp): multi-
// head attention as a transformer writes it, q, k and v split into heads by
// reshape [B,T,H,D] and transpose [0,2,1,3], the output merged back by the
// inverse transpose and a reshape to [B,T,H*D]. The forward kernel stores
// its output, and the backward kernel dQ, dK and dV, straight into the
// merged [B,T,H*D] buffers the projections' matmuls read, so no copy kernel
// rearranges them; d(k^T) is then stored as dK's rows. Checked against the
// interpreter (whose gradients are checked against finite differences) at
// head counts, head dims and sequence lengths that are no multiple of the
// tiles, causal and plain, cross attention, without a batch dimension, and
// with a merge that puts D at no unit stride, which keeps its copy kernel.
#include "codegen_harness.h"

#include "fusion_plan.h"
#include "gradcheck.h"
#include "stepc/autodiff.h"
#include "stepc/graph_values.h"
#include "stepc/passes.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

using namespace stepc;

namespace {

struct HeadsCase {
  std::string name;
  int batch = 2, queries = 33, keys = 33, heads = 3, depth = 24;
  bool causal = true;
  // D outermost in the split ([B,T,D,H], transpose [0,3,1,2]): the merge
  // then puts D at stride H, which the kernels cannot store 16 lanes at a
  // time, so the merge stays a copy kernel.
  bool headsInnermost = false;
};

// sum(w * (merge(attention(split(x wq), split(y wk), split(y wv))) wo)),
// y = x unless keys != queries (cross attention); batch 0: no batch axis.
std::string model(const HeadsCase &c) {
  int width = c.heads * c.depth;
  bool cross = c.keys != c.queries;
  std::string b = c.batch > 0 ? fmt::format("{},", c.batch) : "";
  // Split [..., T, W] -> [..., H, T, D]; merge back.
  size_t lead = c.batch > 0 ? 1 : 0;
  auto axis = [&](int a) { return static_cast<int>(lead) + a; };
  std::string perm = c.headsInnermost
                         ? fmt::format("{}{},{},{}", lead ? "0," : "", axis(2), axis(0), axis(1))
                         : fmt::format("{}{},{},{}", lead ? "0," : "", axis(1), axis(0), axis(2));
  std::string mergePerm =
      c.headsInnermost ? fmt::format("{}{},{},{}", lead ? "0," : "", axis(1), axis(2), axis(0))
                       : perm;
  auto split = [&](const std::string &name, const std::string &from, int tokens) {
    std::string shape = c.headsInnermost ? fmt::format("{}{},{},{}", b, tokens, c.depth, c.heads)
                                         : fmt::format("{}{},{},{}", b, tokens, c.heads, c.depth);
    return fmt::format("  %{0}4 = reshape(%{1}) {{shape=[{2}]}}\n"
                       "  %{0}h = transpose(%{0}4) {{perm=[{3}]}}\n",
                       name, from, shape, perm);
  };
  std::string text = "graph g {\n";
  text += fmt::format("  input %x : f32[{}{},{}]\n", b, c.queries, width);
  if (cross)
    text += fmt::format("  input %y : f32[{}{},{}]\n", b, c.keys, width);
  for (const char *w : {"wq", "wk", "wv", "wo"})
    text += fmt::format("  input %{} : f32[{},{}]\n", w, width, width);
  text += fmt::format("  input %w : f32[{}{},{}]\n", b, c.queries, width);
  std::string kv = cross ? "y" : "x";
  text += "  %q = matmul(%x, %wq)\n" + split("q", "q", c.queries);
  text += fmt::format("  %k = matmul(%{}, %wk)\n", kv) + split("k", "k", c.keys);
  text += fmt::format("  %v = matmul(%{}, %wv)\n", kv) + split("v", "v", c.keys);
  text += fmt::format("  %o = attention(%qh, %kh, %vh) {{causal={}}}\n", c.causal ? 1 : 0);
  text += fmt::format("  %o4 = transpose(%o) {{perm=[{}]}}\n", mergePerm);
  text += fmt::format("  %merged = reshape(%o4) {{shape=[{}{},{}]}}\n", b, c.queries, width);
  text += "  %proj = matmul(%merged, %wo)\n";
  text += "  %weighted = mul(%proj, %w)\n";
  text += fmt::format("  %loss = reduce_sum(%weighted) {{axes=[{}], keepdims=0}}\n",
                      c.batch > 0 ? "0,1,2" : "0,1");
  text += "  output loss = %loss\n}\n";
  return text;
}

std::vector<HeadsCase> headsCases() {
  return {
      {.name = "causal_33_h3_d24"},
      {.name = "plain_33_h3_d24", .causal = false},
      {.name = "causal_70_h4_d16", .queries = 70, .keys = 70, .heads = 4, .depth = 16},
      {.name = "cross_19_by_40_h2_d40", .queries = 19, .keys = 40, .heads = 2, .depth = 40,
       .causal = false},
      {.name = "no_batch_causal_21_h5_d8", .batch = 0, .queries = 21, .keys = 21, .heads = 5,
       .depth = 8},
      {.name = "heads_innermost_causal_17_h2_d16", .queries = 17, .keys = 17, .heads = 2,
       .depth = 16, .headsInnermost = true},
  };
}

Graph optimized(Graph g) {
  PassManager pm;
  for (const std::string &name : defaultPipeline(false))
    pm.add(name);
  pm.run(g);
  return g;
}

// Random inputs with the projections scaled by 1/sqrt(width), as
// initializers scale weights: scores of order 1, so the softmax is no
// sharper than in training and f32's summation orders stay within the
// tolerance.
TensorMap scaledInputs(const Graph &graph, const HeadsCase &c, uint64_t seed) {
  TensorMap inputs = randomInputs(graph, seed);
  double scale = 1 / std::sqrt(static_cast<double>(c.heads * c.depth));
  for (const char *w : {"wq", "wk", "wv", "wo"}) {
    Tensor &t = inputs.at(w);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.setReal(i, t.real(i) * scale);
  }
  return inputs;
}

std::vector<std::string> wrtAll(const Graph &model) {
  std::vector<std::string> wrt;
  for (const Node &n : model.nodes)
    if (n.op == OpKind::Input && n.name != "w")
      wrt.push_back(n.name);
  return wrt;
}

// The results an Attention group computes: its output, or dQ, d(k^T), dV.
std::vector<ValueId> attentionResults(const Graph &g, const FusionGroup &group) {
  if (std::optional<AttentionPattern> p = matchAttention(g, static_cast<ValueId>(group.hero)))
    return {p->output};
  std::optional<AttentionBackwardPattern> b =
      matchAttentionBackward(g, static_cast<ValueId>(group.hero));
  if (!b)
    return {};
  return {b->gradQueries, b->gradKeysT, b->gradValues};
}

bool onlyViews(const Graph &g, const FusionGroup &group) {
  return std::all_of(group.nodes.begin(), group.nodes.end(), [&](ValueId v) {
    return opInfo(g.node(v).op).opClass == OpClass::View;
  });
}

class CodegenAttentionHeads : public ::testing::TestWithParam<HeadsCase> {};

// The forward graph: the heads are read in place and the output is stored
// merged, so no kernel is views alone (but the merge that puts D at stride H).
TEST_P(CodegenAttentionHeads, ForwardCopiesNoHeads) {
  const HeadsCase &c = GetParam();
  Graph g = optimized(parseGraph(model(c)));
  FusionPlan plan = planFusion(g);
  std::string report = fusionReport(g, plan, planBuffers(g, plan));
  int attention = 0, copies = 0;
  for (const FusionGroup &group : plan.groups) {
    attention += group.kind == FusionKind::Attention;
    copies += onlyViews(g, group);
  }
  EXPECT_EQ(attention, 1) << report;
  EXPECT_EQ(copies, c.headsInnermost ? 1 : 0) << report;
}

// The gradient graph, with the probabilities recomputed in the backward
// (as compileJit does): forward and backward attention kernels store their
// results through the head merges (they are no kernel's outputs), no
// views-only kernel copies what an attention kernel wrote, and none copies
// a head split (the backward recomputes the scores from views of its own).
// What views-only kernels remain copy the inputs' transposes that several
// weight-gradient matmuls read.
TEST_P(CodegenAttentionHeads, BackwardStoresMergedGradients) {
  const HeadsCase &c = GetParam();
  Graph forward = parseGraph(model(c));
  Graph g = optimized(grad(forward, "loss", wrtAll(forward)).graph);
  ASSERT_TRUE(recomputeAttentionProbabilities(g));
  FusionPlan plan = planFusion(g);
  std::string report = fusionReport(g, plan, planBuffers(g, plan));
  std::set<ValueId> written; // what attention kernels store
  int attention = 0, backward = 0, stored = 0;
  for (const FusionGroup &group : plan.groups) {
    if (group.kind != FusionKind::Attention)
      continue;
    ++attention;
    std::vector<ValueId> results = attentionResults(g, group);
    backward += results.size() == 3;
    for (ValueId r : results)
      stored += std::count(group.outputs.begin(), group.outputs.end(), r) > 0;
    written.insert(group.outputs.begin(), group.outputs.end());
  }
  int mergeCopies = 0, splitCopies = 0;
  for (const FusionGroup &group : plan.groups) {
    if (!onlyViews(g, group))
      continue;
    bool merge = false, input = true;
    for (ValueId in : group.inputs) {
      merge = merge || written.count(in) > 0;
      input = input && g.node(in).op == OpKind::Input;
    }
    mergeCopies += merge;
    splitCopies += !merge && !input;
  }
  EXPECT_EQ(attention, 2) << report;
  EXPECT_EQ(backward, 1) << report;
  // With D outermost nothing folds: the output and the three gradients are
  // stored as they are and copied by the merges.
  EXPECT_EQ(stored, c.headsInnermost ? 4 : 0) << report;
  EXPECT_EQ(mergeCopies, c.headsInnermost ? 4 : 0) << report;
  EXPECT_EQ(splitCopies, 0) << report;
}

TEST_P(CodegenAttentionHeads, ForwardMatchesInterpreter) {
  Graph g = parseGraph(model(GetParam()));
  stepc::testing::expectMatchesInterpreterOnBothTiles(g, scaledInputs(g, GetParam(), 41), {});
}

// The compiled gradients against the interpreter's, and those against
// central finite differences in f64 (a sample of each tensor's elements).
TEST_P(CodegenAttentionHeads, GradientsMatchInterpreterAndFiniteDifferences) {
  Graph forward = parseGraph(model(GetParam()));
  TensorMap inputs = scaledInputs(forward, GetParam(), 42);
  GradcheckReport check = gradcheck(forward, "loss", inputs, {}, wrtAll(forward),
                                    {.tolerance = 1e-5, .maxElementsPerTensor = 12});
  EXPECT_TRUE(check.passed) << check.worstWhere;
  Graph g = grad(forward, "loss", wrtAll(forward)).graph;
  TensorMap gradInputs = scaledInputs(g, GetParam(), 43);
  stepc::testing::expectMatchesInterpreterOnBothTiles(g, gradInputs, {});
}

INSTANTIATE_TEST_SUITE_P(, CodegenAttentionHeads, ::testing::ValuesIn(headsCases()),
                         [](const auto &info) { return info.param.name; });

} // namespace
