// The simplify pass: algebraic identities and chains of views, each a
// snippet before and after, checked against the interpreter (testing.h).

#include "testing.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace stepc;
using namespace stepc::testing;

namespace {

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

} // namespace
