// The graph passes (dce, cse, fold, simplify), the pass manager and the graph
// surgery under them. Each pass is tested two ways: its structural effect on a
// small .sg snippet, with the input and the expected graph side by side; and
// semantic preservation: the reference interpreter runs the graph before and
// after on random inputs, and every output and param update must match. The
// passes only remove or reuse computations and fold with the interpreter's own
// kernels, so results must match bit for bit (allClose with zero tolerance,
// which still counts -0 == +0, see x + 0 in simplify.cpp, and NaN == NaN).
#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/passes.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include "testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

using namespace stepc;
using stepc::testing::allClose;
using stepc::testing::freshSeed;
using ::testing::HasSubstr;

namespace {

Graph parse(std::string_view text) { return parseGraph(text, "test.sg"); }

Graph optimized(Graph graph, const std::vector<std::string> &passes) {
  PassManager manager;
  for (const std::string &name : passes)
    manager.add(name);
  manager.run(graph);
  return graph;
}

// --- Running a graph: the oracle ----------------------------------------------

struct Results {
  TensorMap outputs;
  TensorMap params; // after the step's updates (unchanged without updates)
};

// Random inputs for `graph`; a training step's learning rate is a realistic
// 1e-3 rather than a random number in [-1, 1).
TensorMap inputsFor(const Graph &graph, uint64_t seed) {
  TensorMap inputs = randomInputs(graph, seed);
  if (auto lr = inputs.find("lr"); lr != inputs.end() && lr->second.numel() == 1)
    lr->second = Tensor::scalar(lr->second.dtype(), 1e-3);
  return inputs;
}

Results runGraph(const Graph &graph, const TensorMap &inputs, const TensorMap &params) {
  Results r;
  r.params = params;
  r.outputs = graph.updates.empty() ? interpret(graph, inputs, r.params)
                                    : interpretStep(graph, inputs, r.params);
  return r;
}

void expectSameResults(const Results &actual, const Results &expected) {
  for (const TensorMap *which : {&expected.outputs, &expected.params}) {
    const TensorMap &got = which == &expected.outputs ? actual.outputs : actual.params;
    for (const auto &[name, tensor] : *which) {
      auto it = got.find(name);
      ASSERT_NE(it, got.end()) << "missing " << name;
      EXPECT_TRUE(allClose(it->second, tensor, 0, 0)) << name;
    }
  }
}

// Runs `before` and `after` on the same fresh random inputs and initial
// params and requires equal outputs and updated params.
void expectSameSemantics(const Graph &before, const Graph &after) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (STEPC_TEST_SEED to replay)");
  TensorMap inputs = inputsFor(before, seed);
  TensorMap params = initialParams(before);
  expectSameResults(runGraph(after, inputs, params), runGraph(before, inputs, params));
}

// The pass (or pipeline) `passes` turns `input` into exactly `expected` and
// keeps its meaning.
void expectRewrite(std::string_view input, const std::vector<std::string> &passes,
                   std::string_view expected) {
  Graph before = parse(input);
  Graph after = optimized(before, passes);
  EXPECT_EQ(printGraph(after), printGraph(parse(expected)));
  expectSameSemantics(before, after);
}

// --- simplify -----------------------------------------------------------------

TEST(Simplify, ArithmeticIdentitiesDisappear) {
  std::string_view input = R"(graph g {
    input %x : f32[4,3]
    input %n : i32[4,3]
    %one = constant() {dtype=f32, shape=[], value=1.0}
    %zero = constant() {dtype=f32, shape=[], value=0.0}
    %a = mul(%x, %one)
    %b = mul(%one, %a)
    %c = add(%b, %zero)
    %d = add(%zero, %c)
    %e = sub(%d, %zero)
    %f = div(%e, %one)
    %r = relu(%f)
    %ione = constant() {dtype=i32, shape=[4,3], value=1}
    %m = mul(%n, %ione)
    output r = %r
    output m = %m
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[4,3]
    input %n : i32[4,3]
    %r = relu(%x)
    output r = %r
    output m = %n
  })";
  expectRewrite(input, {"simplify"}, expected);
}

TEST(Simplify, IdentityThroughBroadcastOrDataIsRecognized) {
  // A ones tensor written out element by element, and a broadcast scalar zero.
  std::string_view input = R"(graph g {
    input %x : f64[2,2]
    %ones = constant() {data=[1.0,1.0,1.0,1.0], dtype=f64, shape=[2,2]}
    %z = constant() {dtype=f64, shape=[], value=0.0}
    %zb = broadcast_to(%z) {shape=[2,2]}
    %a = mul(%ones, %x)
    %b = add(%a, %zb)
    output b = %b
  })";
  std::string_view expected = R"(graph g {
    input %x : f64[2,2]
    output b = %x
  })";
  expectRewrite(input, {"simplify"}, expected);
}

TEST(Simplify, BroadcastingIdentityKeepsTheResultShape) {
  // x * ones[2,3] is x broadcast to [2,3]: the multiply goes, the broadcast
  // stays, and the node keeps its name.
  std::string_view input = R"(graph g {
    input %x : f32[3]
    %ones = constant() {dtype=f32, shape=[2,3], value=1.0}
    %y = mul(%x, %ones)
    output y = %y
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[3]
    %y = broadcast_to(%x) {shape=[2,3]}
    output y = %y
  })";
  expectRewrite(input, {"simplify"}, expected);
}

TEST(Simplify, NonIdentitiesStay) {
  // 0 - x, 1 / x, x * 2, x * 0 (nan * 0 is nan) and x + 1 are no identities.
  std::string_view text = R"(graph g {
    input %x : f32[3]
    %zero = constant() {dtype=f32, shape=[], value=0.0}
    %one = constant() {dtype=f32, shape=[], value=1.0}
    %two = constant() {dtype=f32, shape=[], value=2.0}
    %a = sub(%zero, %x)
    %b = div(%one, %a)
    %c = mul(%b, %two)
    %d = mul(%c, %zero)
    %e = add(%d, %one)
    output e = %e
  })";
  expectRewrite(text, {"simplify"}, text);
}

TEST(Simplify, SubtractSelfOnlyForIntegers) {
  // For floats x - x is nan where x is inf or nan, so it must stay.
  std::string_view input = R"(graph g {
    input %i : i64[5]
    input %x : f32[5]
    %a = sub(%i, %i)
    %b = sub(%x, %x)
    output a = %a
    output b = %b
  })";
  std::string_view expected = R"(graph g {
    input %i : i64[5]
    input %x : f32[5]
    %a = constant() {dtype=i64, shape=[5], value=0}
    %b = sub(%x, %x)
    output a = %a
    output b = %b
  })";
  expectRewrite(input, {"simplify"}, expected);
}

TEST(Simplify, SubtractSelfOnFloatsKeepsNan) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %b = sub(%x, %x)
    output b = %b
  })");
  Graph after = optimized(g, {"simplify", "fold", "cse", "dce"});
  TensorMap in{{"x", Tensor::of<float>({3}, {INFINITY, NAN, 2.0f})}};
  Tensor out = interpret(after, in, {}).at("b");
  EXPECT_TRUE(std::isnan(out.real(0)));
  EXPECT_TRUE(std::isnan(out.real(1)));
  EXPECT_EQ(out.real(2), 0.0);
}

TEST(Simplify, DoubleNegation) {
  std::string_view input = R"(graph g {
    input %x : i32[4]
    input %y : f32[4]
    %a = neg(%x)
    %b = neg(%a)
    %c = neg(%y)
    %d = neg(%c)
    %e = neg(%d)
    %f = neg(%e)
    %g = neg(%f)
    output b = %b
    output g = %g
    output a = %a
  })";
  std::string_view expected = R"(graph g {
    input %x : i32[4]
    input %y : f32[4]
    %a = neg(%x)
    %g = neg(%y)
    output b = %x
    output g = %g
    output a = %a
  })";
  expectRewrite(input, {"simplify"}, expected);
}

TEST(Simplify, TransposeChainsCompose) {
  // [0,2,1] after [1,2,0] is [1,0,2]; [1,0] twice is the identity.
  std::string_view input = R"(graph g {
    input %x : f32[2,3,4]
    input %m : f32[5,6]
    %t1 = transpose(%x) {perm=[1,2,0]}
    %t2 = transpose(%t1) {perm=[0,2,1]}
    %mt = transpose(%m) {perm=[1,0]}
    %mtt = transpose(%mt) {perm=[1,0]}
    %id = transpose(%x) {perm=[0,1,2]}
    %s = add(%id, %x)
    output t = %t2
    output m = %mtt
    output s = %s
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[2,3,4]
    input %m : f32[5,6]
    %t2 = transpose(%x) {perm=[1,0,2]}
    %s = add(%x, %x)
    output t = %t2
    output m = %m
    output s = %s
  })";
  expectRewrite(input, {"simplify"}, expected);
}

TEST(Simplify, TransposeFeedingMatmulIsLeftToCodegen) {
  // matmul has no transpose flags; the kernel folds an operand's transpose.
  std::string_view text = R"(graph g {
    input %a : f32[3,2]
    input %b : f32[3,4]
    %at = transpose(%a) {perm=[1,0]}
    %c = matmul(%at, %b)
    output c = %c
  })";
  expectRewrite(text, {"simplify"}, text);
}

TEST(Simplify, ReshapeAndBroadcastChains) {
  std::string_view input = R"(graph g {
    input %x : f32[2,6]
    input %v : f32[3]
    %r1 = reshape(%x) {shape=[3,4]}
    %r2 = reshape(%r1) {shape=[4,-1]}
    %same = reshape(%x) {shape=[2,6]}
    %back = reshape(%r1) {shape=[2,6]}
    %b1 = broadcast_to(%v) {shape=[1,3]}
    %b2 = broadcast_to(%b1) {shape=[5,2,3]}
    %b3 = broadcast_to(%v) {shape=[3]}
    %c = cast(%x) {dtype=f32}
    %s = add(%same, %back)
    %t = add(%s, %c)
    output r = %r2
    output t = %t
    output b = %b2
    output b3 = %b3
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[2,6]
    input %v : f32[3]
    %r2 = reshape(%x) {shape=[4,3]}
    %b2 = broadcast_to(%v) {shape=[5,2,3]}
    %s = add(%x, %x)
    %t = add(%s, %x)
    output r = %r2
    output t = %t
    output b = %b2
    output b3 = %v
  })";
  expectRewrite(input, {"simplify"}, expected);
}

// --- fold ---------------------------------------------------------------------

TEST(Fold, ConstantSubgraphBecomesOneConstant) {
  // The folded node keeps its name and place; its now unused operands go.
  std::string_view input = R"(graph g {
    input %x : f32[3]
    %a = constant() {data=[1.0,2.0,3.0], dtype=f32, shape=[3]}
    %b = constant() {dtype=f32, shape=[], value=0.5}
    %c = mul(%a, %b)
    %d = exp(%c)
    %y = add(%x, %d)
    output y = %y
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[3]
    %d = constant() {data=[1.6487212181091309,2.7182817459106445,4.4816889762878418], dtype=f32, shape=[3]}
    %y = add(%x, %d)
    output y = %y
  })";
  expectRewrite(input, {"fold"}, expected);
}

TEST(Fold, KeepsLocationAndUsesTheInterpretersKernels) {
  Graph g = parse(R"(graph g {
    %i = iota() {axis=1, dtype=i32, shape=[2,3]}
    %sq = mul(%i, %i)
    %s = reduce_sum(%sq) {axes=[0], keepdims=0}
    %f = cast(%s) {dtype=f64}
    output f = %f
  })");
  Graph after = optimized(g, {"fold"});
  ASSERT_EQ(after.size(), 1u) << printGraph(after);
  const Node &f = after.nodes[0];
  EXPECT_EQ(f.op, OpKind::Constant);
  EXPECT_EQ(f.name, "f");
  EXPECT_EQ(f.loc.str(), "test.sg:5:5");
  EXPECT_THAT(printGraph(after), HasSubstr("data=[0.0,2.0,8.0]"));
  expectSameSemantics(g, after);
}

TEST(Fold, IntegersAndBoolsStayExact) {
  // i64 beyond 2^53 does not survive a double: folding stores integers as
  // integers.
  std::string_view input = R"(graph g {
    %a = constant() {data=[9007199254740993,-3], dtype=i64, shape=[2]}
    %one = constant() {dtype=i64, shape=[], value=1}
    %b = add(%a, %one)
    %c = lt(%a, %one)
    output b = %b
    output c = %c
  })";
  std::string_view expected = R"(graph g {
    %b = constant() {data=[9007199254740994,-2], dtype=i64, shape=[2]}
    %c = constant() {data=[0,1], dtype=bool, shape=[2]}
    output b = %b
    output c = %c
  })";
  expectRewrite(input, {"fold"}, expected);
}

TEST(Fold, BigResultsFoldOnlyAsFills) {
  // A broadcast scalar of 10000 elements becomes a fill; an iota-based
  // 10000-element result has distinct elements and stays as it is.
  std::string_view input = R"(graph g {
    input %x : f32[100,100]
    %h = constant() {dtype=f32, shape=[], value=0.25}
    %hb = broadcast_to(%h) {shape=[100,100]}
    %twice = add(%hb, %hb)
    %i = iota() {axis=1, dtype=f32, shape=[100,100]}
    %j = add(%i, %twice)
    %y = mul(%x, %twice)
    %z = add(%y, %j)
    output z = %z
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[100,100]
    %twice = constant() {dtype=f32, shape=[100,100], value=0.5}
    %i = iota() {axis=1, dtype=f32, shape=[100,100]}
    %j = add(%i, %twice)
    %y = mul(%x, %twice)
    %z = add(%y, %j)
    output z = %z
  })";
  expectRewrite(input, {"fold"}, expected);
}

TEST(Fold, SmallNonSplatFoldsToData) {
  std::string_view input = R"(graph g {
    %i = iota() {axis=0, dtype=f32, shape=[4]}
    %t = constant() {dtype=f32, shape=[], value=2.0}
    %p = pow(%t, %i)
    output p = %p
  })";
  std::string_view expected = R"(graph g {
    %p = constant() {data=[1.0,2.0,4.0,8.0], dtype=f32, shape=[4]}
    output p = %p
  })";
  expectRewrite(input, {"fold"}, expected);
}

TEST(Fold, NonFiniteValuesSurviveTheTextFormat) {
  Graph g = parse(R"(graph g {
    %a = constant() {data=[0.0,1.0,-1.0], dtype=f32, shape=[3]}
    %z = constant() {dtype=f32, shape=[], value=0.0}
    %d = div(%a, %z)
    output d = %d
  })");
  Graph after = optimized(g, {"fold"});
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(printGraph(parse(printGraph(after))), printGraph(after));
  expectSameSemantics(g, after);
}

TEST(Fold, ErrorsAreLeftForTheRun) {
  // A gather index out of range is reported when the graph runs, against
  // the node; folding leaves the node alone.
  std::string_view text = R"(graph g {
    %data = constant() {data=[1.0,2.0], dtype=f32, shape=[2]}
    %idx = constant() {data=[5], dtype=i32, shape=[1]}
    %g = gather(%data, %idx) {axis=0}
    output g = %g
  })";
  Graph after = optimized(parse(text), {"fold"});
  EXPECT_EQ(printGraph(after), printGraph(parse(text)));
}

TEST(Fold, NodesWithAVariableOperandStay) {
  std::string_view text = R"(graph g {
    input %x : f32[2]
    %c = constant() {dtype=f32, shape=[], value=3.0}
    %y = mul(%x, %c)
    output y = %y
  })";
  expectRewrite(text, {"fold"}, text);
}

// --- cse ----------------------------------------------------------------------

TEST(Cse, IdenticalNodesMerge) {
  std::string_view input = R"(graph g {
    input %x : f32[3]
    input %y : f32[3]
    %e1 = exp(%x)
    %e2 = exp(%x)
    %s1 = add(%e1, %y)
    %s2 = add(%y, %e2)
    %m = mul(%s1, %s2)
    output m = %m
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[3]
    input %y : f32[3]
    %e1 = exp(%x)
    %s1 = add(%e1, %y)
    %m = mul(%s1, %s1)
    output m = %m
  })";
  expectRewrite(input, {"cse"}, expected);
}

TEST(Cse, AttributesTypesAndOrderMatter) {
  // Different attributes, different dtypes of equal constants, and the
  // operand order of non-commutative ops (maximum of nan, sub) keep nodes
  // apart.
  std::string_view text = R"(graph g {
    input %x : f32[2,3]
    input %y : f32[2,3]
    %a = reduce_sum(%x) {axes=[0], keepdims=0}
    %b = reduce_sum(%x) {axes=[1], keepdims=0}
    %c1 = constant() {dtype=f32, shape=[], value=1.0}
    %c2 = constant() {dtype=f64, shape=[], value=1.0}
    %p = maximum(%x, %y)
    %q = maximum(%y, %x)
    %r = sub(%x, %y)
    %s = sub(%y, %x)
    output a = %a
    output b = %b
    output c1 = %c1
    output c2 = %c2
    output p = %p
    output q = %q
    output r = %r
    output s = %s
  })";
  expectRewrite(text, {"cse"}, text);
}

TEST(Cse, ChainsOfDuplicatesMergeInOneRun) {
  // The second chain only becomes identical once its first link merged.
  Graph g = parse(R"(graph g {
    input %x : f32[4]
    %a1 = tanh(%x)
    %b1 = exp(%a1)
    %c1 = neg(%b1)
    %a2 = tanh(%x)
    %b2 = exp(%a2)
    %c2 = neg(%b2)
    %s = add(%c1, %c2)
    output s = %s
  })");
  Graph after = optimized(g, {"cse"});
  EXPECT_EQ(after.size(), 5u) << printGraph(after);
}

TEST(Cse, DropoutWithTheSameSeedIsTheSameMask) {
  // dropout is counter-based: same input, seed and rate, same result.
  std::string_view input = R"(graph g {
    input %x : f32[64]
    input %seed : i64[]
    %d1 = dropout(%x, %seed) {rate=0.5}
    %d2 = dropout(%x, %seed) {rate=0.5}
    %d3 = dropout(%x, %seed) {rate=0.25}
    %s = add(%d1, %d2)
    %t = add(%s, %d3)
    output t = %t
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[64]
    input %seed : i64[]
    %d1 = dropout(%x, %seed) {rate=0.5}
    %d3 = dropout(%x, %seed) {rate=0.25}
    %s = add(%d1, %d1)
    %t = add(%s, %d3)
    output t = %t
  })";
  expectRewrite(input, {"cse"}, expected);
}

TEST(Cse, KeptNodeTakesTheNameWhenItHasNone) {
  // An unnamed earlier node takes the duplicate's name; when both are named
  // the later name is lost.
  std::string_view input = R"(graph g {
    input %x : f32[2]
    %1 = exp(%x)
    %named = exp(%x)
    %first = sqrt(%x)
    %second = sqrt(%x)
    %s = add(%named, %1)
    %t = add(%second, %s)
    output t = %t
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[2]
    %named = exp(%x)
    %first = sqrt(%x)
    %s = add(%named, %named)
    %t = add(%first, %s)
    output t = %t
  })";
  expectRewrite(input, {"cse"}, expected);
}

TEST(Cse, InputsAndParamsNeverMerge) {
  std::string_view text = R"(graph g {
    input %a : f32[2]
    input %b : f32[2]
    param %p : f32[2] = zeros()
    param %q : f32[2] = zeros()
    %s = add(%a, %b)
    %t = add(%p, %q)
    %u = add(%s, %t)
    output u = %u
  })";
  expectRewrite(text, {"cse"}, text);
}

// --- dce ----------------------------------------------------------------------

TEST(Dce, RemovesWhatNoOutputOrUpdateNeeds) {
  std::string_view input = R"(graph g {
    input %x : f32[3]
    input %unused : f32[3]
    param %w : f32[3] = ones()
    %dead1 = exp(%x)
    %dead2 = tanh(%dead1)
    %y = mul(%x, %w)
    %next = add(%w, %y)
    %dead3 = neg(%next)
    output y = %y
    update %w = %next
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[3]
    input %unused : f32[3]
    param %w : f32[3] = ones()
    %y = mul(%x, %w)
    %next = add(%w, %y)
    output y = %y
    update %w = %next
  })";
  expectRewrite(input, {"dce"}, expected);
}

TEST(Dce, RemovesAGradientBranchNobodyReads) {
  Graph model = parse(R"(graph m {
    input %x : f64[4,3]
    param %w : f64[3,2] = normal(mean=0.0, std=1.0, seed=1)
    param %b : f64[2] = normal(mean=0.0, std=1.0, seed=2)
    %z = matmul(%x, %w)
    %y = add(%z, %b)
    %t = tanh(%y)
    %loss = reduce_mean(%t) {axes=[0,1], keepdims=0}
    output loss = %loss
  })");
  Graph both = grad(model, "loss", {"w", "b"}).graph;
  // Drop the output of b's gradient: the nodes only it used are dead.
  Graph onlyW = both;
  std::erase_if(onlyW.outputs, [](const GraphOutput &o) { return o.name == "grad_b"; });
  Graph after = optimized(onlyW, {"dce"});
  EXPECT_LT(after.size(), onlyW.size());
  // What is left is what grad() builds for w alone.
  EXPECT_EQ(printGraph(after), printGraph(grad(model, "loss", {"w"}).graph));
  expectSameSemantics(onlyW, after);
}

TEST(Dce, KeepsTheInterfaceEvenWhenUnused) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    param %p : f32[3] = zeros()
    %c = constant() {dtype=f32, shape=[], value=1.0}
    output c = %c
  })");
  Graph after = optimized(g, {"dce"});
  EXPECT_EQ(after.inputs().size(), 1u);
  EXPECT_EQ(after.params().size(), 1u);
  EXPECT_EQ(after.size(), 3u);
}

// --- graph surgery ------------------------------------------------------------

TEST(Rewrite, CompactRenumbersOperandsOutputsAndUpdates) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %dead = exp(%x)
    param %w : f32[3] = zeros()
    %a = add(%x, %w)
    %also_dead = neg(%a)
    %b = mul(%a, %a)
    output b = %b
    update %w = %a
  })");
  compact(g, {true, false, false, true, false, true});
  EXPECT_EQ(printGraph(g), printGraph(parse(R"(graph g {
    input %x : f32[3]
    param %w : f32[3] = zeros()
    %a = add(%x, %w)
    %b = mul(%a, %a)
    output b = %b
    update %w = %a
  })")));
  EXPECT_EQ(g.node(2).loc.str(), "test.sg:5:5");
  EXPECT_NO_THROW(verify(g));
}

// findNamed goes through the graph's name index: after nodes are dropped and
// renumbered, and after CSE moves a name to the surviving node, it must find
// each name at its new place and no longer find dropped names.
TEST(Rewrite, NameLookupFollowsCompactAndCse) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %dead = exp(%x)
    %a = neg(%x)
    %b = mul(%a, %a)
    output b = %b
  })");
  compact(g, {true, false, true, true});
  EXPECT_EQ(g.findNamed("a"), ValueId(1));
  EXPECT_EQ(g.findNamed("b"), ValueId(2));
  EXPECT_EQ(g.findNamed("dead"), std::nullopt);

  Graph h = parse(R"(graph g {
    input %x : f32[3]
    %1 = exp(%x)
    %named = exp(%x)
    %t = add(%named, %1)
    output t = %t
  })");
  EXPECT_EQ(h.findNamed("named"), ValueId(2));
  EXPECT_TRUE(createPass("cse")->run(h));
  EXPECT_EQ(h.findNamed("named"), ValueId(1));
  EXPECT_EQ(h.findNamed("t"), ValueId(2));
  EXPECT_THROW(h.add(Node{OpKind::Neg, {0}, {}, {}, "named"}), Error);
}

TEST(Rewrite, CompactRefusesToDropAUsedNode) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %a = exp(%x)
    %b = neg(%a)
    output b = %b
  })");
  Graph copy = g;
  EXPECT_THROW(compact(g, {true, false, true}), std::logic_error);
  EXPECT_TRUE(g == copy); // refused before changing anything
  EXPECT_THROW(compact(g, {true, true, false}), std::logic_error); // an output
}

TEST(Rewrite, ReplaceAllUsesCoversOutputsAndUpdates) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    param %w : f32[3] = zeros()
    %a = add(%x, %w)
    %b = add(%x, %w)
    %c = mul(%b, %b)
    output b = %b
    output c = %c
    update %w = %b
  })");
  replaceAllUses(g, 3, 2);
  EXPECT_EQ(g.node(4).operands, (std::vector<ValueId>{2, 2}));
  EXPECT_EQ(g.outputs[0].value, 2u);
  EXPECT_EQ(g.updates[0].value, 2u);
  EXPECT_NO_THROW(verify(g));
}

TEST(Rewrite, ReplaceAllUsesKeepsOrderAndTypes) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %a = exp(%x)
    %b = neg(%a)
    %c = tanh(%x)
    %s = reduce_sum(%x) {axes=[0], keepdims=0}
    output b = %b
    output c = %c
    output s = %s
  })");
  Graph copy = g;
  // %c comes after %b, a user of %a.
  EXPECT_THROW(replaceAllUses(g, 1, 3), std::logic_error);
  // Different types.
  EXPECT_THROW(replaceAllUses(g, 1, 4), std::logic_error);
  EXPECT_TRUE(g == copy);
}

// --- pass manager ---------------------------------------------------------------

// Points the last node's first operand at the node itself: not topological.
class BreakingPass final : public Pass {
public:
  std::string_view name() const override { return "breaker"; }
  bool run(Graph &graph) override {
    Node &last = graph.nodes.back();
    last.operands[0] = static_cast<ValueId>(graph.size() - 1);
    return true;
  }
};

TEST(PassManager, VerificationFailureNamesThePass) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %a = exp(%x)
    output a = %a
  })");
  PassManager manager;
  manager.add("dce");
  manager.add(std::make_unique<BreakingPass>());
  manager.add("cse");
  try {
    manager.run(g);
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("pass 'breaker' produced an invalid graph"));
    EXPECT_THAT(e.what(), HasSubstr("test.sg:3:5")); // and the node it broke
  }
}

TEST(PassManager, StatsAndAfterEachHook) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    %one = constant() {dtype=f32, shape=[], value=1.0}
    %a = mul(%x, %one)
    %b = exp(%a)
    %c = exp(%x)
    %d = add(%b, %c)
    %dead = neg(%d)
    output d = %d
  })");
  PassManager manager;
  for (std::string_view name : {"simplify", "fold", "cse", "dce"})
    manager.add(name);
  std::vector<std::string> seen;
  manager.setAfterEach([&](std::string_view pass, const Graph &graph) {
    seen.push_back(std::string(pass) + ":" + std::to_string(graph.size()));
  });
  std::vector<PassStats> stats = manager.run(g);
  ASSERT_EQ(stats.size(), 4u);
  EXPECT_EQ(seen, (std::vector<std::string>{"simplify:5", "fold:5", "cse:4", "dce:3"}));
  EXPECT_EQ(stats[0].pass, "simplify");
  EXPECT_EQ(stats[0].nodesBefore, 7u);
  EXPECT_EQ(stats[0].nodesAfter, 5u);
  EXPECT_TRUE(stats[0].changed);
  EXPECT_FALSE(stats[1].changed);
  EXPECT_EQ(stats[1].nodesBefore, stats[1].nodesAfter);
  EXPECT_TRUE(stats[2].changed);
  EXPECT_EQ(stats[3].nodesAfter, 3u);
  for (const PassStats &s : stats)
    EXPECT_GE(s.milliseconds, 0.0);
}

TEST(PassManager, UnknownPassListsTheKnownOnes) {
  try {
    createPass("inline");
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown pass 'inline'"));
    for (std::string_view name : passNames())
      EXPECT_THAT(e.what(), HasSubstr(std::string(name)));
  }
}

TEST(PassManager, EveryPipelinePassExists) {
  for (bool training : {false, true})
    for (const std::string &name : defaultPipeline(training))
      EXPECT_EQ(createPass(name)->name(), name);
  EXPECT_EQ(passNames().size(), 4u);
}

TEST(PassManager, RejectsABadInputBeforeAnyPass) {
  Graph g = parse(R"(graph g {
    input %x : f32[3]
    output x = %x
  })");
  g.outputs.clear();
  PassManager manager;
  manager.add("dce");
  try {
    manager.run(g);
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("has no outputs"));
    EXPECT_THAT(e.what(), ::testing::Not(HasSubstr("pass 'dce'")));
  }
}

// --- pipelines on a whole snippet -----------------------------------------------

TEST(Pipeline, PassesFeedEachOther) {
  // fold makes 1 out of 0.5 * 2, simplify then drops the multiply, cse merges
  // the two tanh that the multiply kept apart, dce drops the dead branch.
  std::string_view input = R"(graph g {
    input %x : f32[8]
    %h = constant() {dtype=f32, shape=[], value=0.5}
    %t = constant() {dtype=f32, shape=[], value=2.0}
    %one = mul(%h, %t)
    %xs = mul(%x, %one)
    %a = tanh(%xs)
    %b = tanh(%x)
    %c = add(%a, %b)
    %dead = exp(%c)
    output c = %c
  })";
  std::string_view expected = R"(graph g {
    input %x : f32[8]
    %a = tanh(%x)
    %c = add(%a, %a)
    output c = %c
  })";
  expectRewrite(input, defaultPipeline(false), expected);
}

// --- random graphs ------------------------------------------------------------

// A random graph over two float inputs, an integer input and constants that
// the rules look for (0, 1, -0, splats and data): every pass must keep its
// results. Ops whose result depends on the sign of a zero (div, rsqrt, pow)
// are left out, since x + 0 -> x may turn a -0 into +0 (see simplify.cpp).
Graph randomGraph(uint64_t seed, DType floatType) {
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  GraphBuilder b("random");
  std::vector<Value> pool = {b.input("x", floatType, {2, 3}), b.input("y", floatType, {3}),
                             b.input("n", DType::I32, {2, 3})};
  const std::vector<Shape> shapes = {{}, {3}, {2, 3}};
  auto addConstant = [&] {
    DType dtype = pick(3) == 0 ? DType::I32 : floatType;
    Shape shape = shapes[pick(shapes.size())];
    const double values[] = {0.0, 1.0, 2.0, -0.0, 0.5}; // the last two for floats
    double v = values[pick(dtype == DType::I32 ? 3 : 5)];
    if (pick(4) == 0) {
      std::vector<double> data(checkedNumel(shape), v);
      data[0] = pick(2) ? v : 3.0;
      return constantData(b, data, dtype, shape);
    }
    if (pick(6) == 0)
      return iota(b, dtype, {2, 3}, 1);
    return constant(b, v, dtype, shape);
  };
  struct Choice {
    OpKind op;
    int arity;
    Attrs attrs;
  };
  const std::vector<Choice> menu = {
      {OpKind::Neg, 1, {}},
      {OpKind::Abs, 1, {}},
      {OpKind::Exp, 1, {}},
      {OpKind::Tanh, 1, {}},
      {OpKind::Add, 2, {}},
      {OpKind::Sub, 2, {}},
      {OpKind::Mul, 2, {}},
      {OpKind::Maximum, 2, {}},
      {OpKind::Transpose, 1, {{"perm", std::vector<int64_t>{1, 0}}}},
      {OpKind::Reshape, 1, {{"shape", std::vector<int64_t>{3, 2}}}},
      {OpKind::Reshape, 1, {{"shape", std::vector<int64_t>{2, 3}}}},
      {OpKind::Reshape, 1, {{"shape", std::vector<int64_t>{-1}}}},
      {OpKind::BroadcastTo, 1, {{"shape", std::vector<int64_t>{2, 3}}}},
      {OpKind::BroadcastTo, 1, {{"shape", std::vector<int64_t>{2, 2, 3}}}},
      {OpKind::ReduceSum, 1, {{"axes", std::vector<int64_t>{0}}, {"keepdims", int64_t(0)}}},
      {OpKind::Cast, 1, {{"dtype", std::string(dtypeName(floatType))}}},
      {OpKind::Cast, 1, {{"dtype", std::string("i32")}}},
  };
  SourceLoc loc("random.sg", 1, 1);
  for (int added = 0, tries = 0; added < 30 && tries < 1000; ++tries) {
    if (pick(4) == 0) {
      pool.push_back(addConstant());
      continue;
    }
    const Choice &c = menu[pick(menu.size())];
    // Recent values more often, so chains (neg of neg, reshape of reshape)
    // form; sometimes the same value twice (x - x).
    auto operand = [&] {
      return pool[pool.size() - 1 - pick(std::min<size_t>(pool.size(), 6))];
    };
    std::vector<Value> operands;
    for (int i = 0; i < c.arity; ++i)
      operands.push_back(i == 1 && pick(4) == 0 ? operands[0] : operand());
    try {
      pool.push_back(b.op(c.op, operands, c.attrs, loc));
      ++added;
    } catch (const Error &) {
      // Shapes or dtypes that do not fit this op: draw again.
    }
  }
  // The last values and a few earlier ones are outputs; the rest may be dead.
  for (size_t i = 0; i < 4; ++i)
    b.output("out" + std::to_string(i),
             i < 2 ? pool[pool.size() - 1 - i] : pool[3 + pick(pool.size() - 3)]);
  return b.finish();
}

TEST(RandomGraphs, EveryPassKeepsTheResults) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (STEPC_TEST_SEED to replay)");
  std::vector<std::vector<std::string>> configs;
  for (std::string_view name : passNames())
    configs.push_back({std::string(name)});
  configs.push_back(defaultPipeline(false));
  std::map<std::string, int> changed; // graphs each pass changed, by pass
  for (uint64_t i = 0; i < 200; ++i) {
    Graph graph = randomGraph(seed + i, i % 2 ? DType::F32 : DType::F64);
    TensorMap inputs = inputsFor(graph, seed + i);
    Results expected = runGraph(graph, inputs, {});
    for (const std::vector<std::string> &passes : configs) {
      Graph after = graph;
      PassManager manager;
      for (const std::string &name : passes)
        manager.add(name);
      std::vector<PassStats> stats = manager.run(after);
      if (passes.size() == 1 && stats[0].changed)
        ++changed[passes[0]];
      SCOPED_TRACE(::testing::Message() << "graph " << i << ", passes " << passes[0] << "...\n"
                                        << printGraph(graph) << "after:\n"
                                        << printGraph(after));
      expectSameResults(runGraph(after, inputs, {}), expected);
      if (::testing::Test::HasFailure())
        return;
    }
  }
  // The rules do fire on these graphs.
  for (std::string_view name : passNames())
    EXPECT_GE(changed[std::string(name)], 20) << name;
}

// --- every example and its training step -----------------------------------------


Graph example(const std::string &name) {
  return parseGraphFile(stepc::testing::sourcePath("examples/" + name + ".sg"));
}

Graph adamStep(const Graph &model) {
  return trainStep(model, "loss", Optimizer::adam()); // lr is an input
}

// Each pass alone and the default pipeline, against one run of the original.
void checkEveryPass(const Graph &graph) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (STEPC_TEST_SEED to replay)");
  TensorMap inputs = inputsFor(graph, seed);
  TensorMap params = initialParams(graph);
  Results expected = runGraph(graph, inputs, params);

  std::vector<std::pair<std::string, std::vector<std::string>>> configs;
  for (std::string_view name : passNames())
    configs.push_back({std::string(name), {std::string(name)}});
  configs.push_back({"default pipeline", defaultPipeline(!graph.updates.empty())});
  for (const auto &[label, passes] : configs) {
    SCOPED_TRACE(label);
    Graph after = optimized(graph, passes);
    EXPECT_LE(after.size(), graph.size());
    // The result is a valid .sg file that reads back as itself.
    EXPECT_EQ(printGraph(parse(printGraph(after))), printGraph(after));
    // An unchanged graph needs no second run (this keeps mlp's step fast).
    if (!(after == graph))
      expectSameResults(runGraph(after, inputs, params), expected);
  }
}

class ExampleGraph : public ::testing::TestWithParam<std::string> {};

// The slowest, mlp's training step, runs the interpreter 4 times (simplify
// and dce leave it unchanged): about 1 s in a Release build on an idle
// machine, 0.25 s a run.
TEST_P(ExampleGraph, ModelKeepsItsResults) { checkEveryPass(example(GetParam())); }

TEST_P(ExampleGraph, TrainingStepKeepsItsResults) {
  checkEveryPass(adamStep(example(GetParam())));
}

TEST_P(ExampleGraph, PipelineReachesAFixedPoint) {
  // Running the pipeline on its own output changes nothing, and it shrinks
  // every training step (it has constants to fold and duplicates to merge).
  for (bool training : {false, true}) {
    Graph model = example(GetParam());
    Graph graph = training ? adamStep(model) : model;
    Graph once = optimized(graph, defaultPipeline(training));
    PassManager again;
    for (const std::string &name : defaultPipeline(training))
      again.add(name);
    Graph twice = once;
    for (const PassStats &s : again.run(twice))
      EXPECT_FALSE(s.changed) << s.pass << (training ? " on the training step" : "");
    EXPECT_EQ(printGraph(twice), printGraph(once));
    if (training)
      EXPECT_LT(once.size(), graph.size());
  }
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleGraph,
                         ::testing::ValuesIn(stepc::testing::exampleNames()),
                         [](const auto &info) { return info.param; });

TEST(Examples, OtherOptimizersToo) {
  // SGD with momentum and clipping, AdamW with a schedule: different update
  // graphs, same guarantee.
  Graph model = example("xor");
  Optimizer momentum{.kind = Optimizer::Kind::Momentum, .clipNorm = 1.0};
  Optimizer adamw = Optimizer::adamw();
  adamw.schedule.kind = Schedule::Kind::Cosine;
  adamw.schedule.totalSteps = 10;
  for (const Optimizer &opt : {momentum, adamw}) {
    SCOPED_TRACE(optimizerName(opt.kind));
    Graph step = trainStep(model, "loss", opt);
    Graph after = optimized(step, defaultPipeline(true));
    EXPECT_LT(after.size(), step.size());
    expectSameSemantics(step, after);
  }
}

} // namespace
