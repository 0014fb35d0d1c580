// The simplify pass: algebraic identities and chains of views, each a
// snippet before and after in tests/snippets/simplify.sg, checked against the
// interpreter (testing.h).

#include "testing.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace stepc;
using namespace stepc::testing;

namespace {

TEST(Simplify, SubtractSelfOnFloatsKeepsNan) {
  Graph g = parseSnippet(R"(graph g {
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

// Its rewrite cases; the tests above check what a rewrite cannot show.
const bool registered = registerRewriteTests("Simplify", {"simplify"}, "tests/snippets/simplify.sg");

} // namespace
