// The dce pass: what no output or update needs is removed (testing.h says
// how pass tests check results).
#include "stepc/autodiff.h"
#include "stepc/text.h"

#include "testing.h"

#include <gtest/gtest.h>

using namespace stepc;
using namespace stepc::testing;

namespace {

TEST(Dce, RemovesAGradientBranchNobodyReads) {
  Graph model = parseSnippet(R"(graph m {
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
  Graph g = parseSnippet(R"(graph g {
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

// Its rewrite cases; the tests above check what a rewrite cannot show.
const bool registered = registerRewriteTests("Dce", {"dce"}, "tests/snippets/dce.sg");

} // namespace
