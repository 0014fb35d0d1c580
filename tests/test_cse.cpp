// The cse pass: identical nodes merge (testing.h says how pass tests check
// results).
#include "stepc/text.h"

#include "testing.h"

#include <gtest/gtest.h>

using namespace stepc;
using namespace stepc::testing;

namespace {

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
  Graph g = parseSnippet(R"(graph g {
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

} // namespace
