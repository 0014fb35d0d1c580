// The fold pass: constant subgraphs become constants, computed with the
// interpreter's kernels (testing.h says how pass tests check results).
#include "stepc/text.h"

#include "testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace stepc;
using namespace stepc::testing;
using ::testing::HasSubstr;

namespace {

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
  Graph g = parseSnippet(R"(graph g {
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
  Graph g = parseSnippet(R"(graph g {
    %a = constant() {data=[0.0,1.0,-1.0], dtype=f32, shape=[3]}
    %z = constant() {dtype=f32, shape=[], value=0.0}
    %d = div(%a, %z)
    output d = %d
  })");
  Graph after = optimized(g, {"fold"});
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(printGraph(parseSnippet(printGraph(after))), printGraph(after));
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
  Graph after = optimized(parseSnippet(text), {"fold"});
  EXPECT_EQ(printGraph(after), printGraph(parseSnippet(text)));
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

} // namespace
