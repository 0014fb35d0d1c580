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

// Its rewrite cases; the tests above check what a rewrite cannot show.
const bool registered = registerRewriteTests("Fold", {"fold"}, "tests/snippets/fold.sg");

} // namespace
