// The graphs the half-precision tests run in f16 and bf16: a representative
// op set (elementwise, reductions, matmul, softmax, layer_norm, casts),
// written in f32 and converted with convertFloatType, odd shapes throughout.
// Shared by test_half.cpp (interpreter) and test_codegen_half.cpp (CPU).
#pragma once

#include <string>
#include <vector>

namespace stepc::testing {

struct HalfCase {
  std::string name;
  std::string f32Graph; // .sg text
};

inline std::vector<HalfCase> halfCases() {
  return {
      {"elementwise", R"(graph e {
        input %x : f32[3,7]
        input %y : f32[7]
        %1 = exp(%x)
        %2 = mul(%1, %y)
        %3 = tanh(%2)
        %4 = sub(%3, %x)
        %5 = sigmoid(%4)
        %6 = maximum(%5, %y)
        %7 = div(%6, %1)
        %8 = sqrt(%1)
        %9 = sin(%x)
        output a = %7
        output b = %8
        output c = %9
      })"},
      {"reduce", R"(graph r {
        input %x : f32[5,3,9]
        %1 = reduce_sum(%x) {axes=[2], keepdims=0}
        %2 = reduce_max(%x) {axes=[0,2], keepdims=1}
        %3 = reduce_mean(%x) {axes=[1], keepdims=0}
        %4 = reduce_min(%x) {keepdims=0}
        output s = %1
        output m = %2
        output a = %3
        output n = %4
      })"},
      {"matmul", R"(graph m {
        input %x : f32[5,13]
        input %w : f32[13,7]
        input %b : f32[7]
        %1 = matmul(%x, %w)
        %2 = add(%1, %b)
        %3 = relu(%2)
        output y = %3
      })"},
      {"softmax", R"(graph s {
        input %x : f32[6,11]
        %1 = softmax(%x)
        output y = %1
      })"},
      {"layer_norm", R"(graph l {
        input %x : f32[5,9]
        %1 = layer_norm(%x) {eps=0.001}
        output y = %1
      })"},
      {"casts", R"(graph c {
        input %x : f32[4,5]
        %1 = cast(%x) {dtype=f64}
        %2 = mul(%1, %1)
        %3 = cast(%2) {dtype=f32}
        %4 = cast(%x) {dtype=i32}
        %5 = cast(%4) {dtype=f32}
        output a = %3
        output b = %5
      })"},
  };
}

} // namespace stepc::testing
