// Dtype dispatch shared by the interpreter's kernels (kernels.cpp,
// grad_kernels.cpp): each calls a generic lambda with a value of the C++
// element type of a dtype.
#pragma once

#include "stepc/graph.h"
#include "stepc/tensor.h"

#include <fmt/format.h>

#include <cstdint>
#include <stdexcept>
#include <type_traits>

namespace stepc::interp {

// Bool tensors hold one byte 0/1 per element. u8 elements are char8_t here:
// the same byte, but a type of their own, so the dispatch below can tell u8
// from bool.
using BoolByte = uint8_t;
using U8Byte = char8_t;
template <class T> constexpr bool kIsBool = std::is_same_v<T, BoolByte>;

// Calls f(T{}) with the element type of `dtype`.
template <class F> Tensor withElementType(DType dtype, F &&f) {
  switch (dtype) {
  case DType::F32: return f(float{});
  case DType::F64: return f(double{});
  case DType::I32: return f(int32_t{});
  case DType::I64: return f(int64_t{});
  case DType::I8: return f(int8_t{});
  case DType::U8: return f(U8Byte{});
  case DType::I16: return f(int16_t{});
  case DType::U16: return f(uint16_t{});
  case DType::U32: return f(uint32_t{});
  case DType::U64: return f(uint64_t{});
  case DType::Bool: return f(BoolByte{});
  case DType::F16:
  case DType::BF16: break; // evaluateNode widens halves to f32 first
  }
  throw std::logic_error("interpreter: unknown dtype");
}

[[noreturn]] inline void unsupported(const Node &node, DType dtype) {
  throw std::logic_error(fmt::format(
      "interpreter: {} has no kernel for {} (its shape rule should reject it)",
      opInfo(node.op).name, dtypeName(dtype)));
}

// As withElementType, for ops whose shape rule allows only f32/f64.
template <class F> Tensor withFloat(const Node &node, DType dtype, F &&f) {
  return withElementType(dtype, [&](auto tag) -> Tensor {
    if constexpr (std::is_floating_point_v<decltype(tag)>)
      return f(tag);
    else
      unsupported(node, dtype);
  });
}

} // namespace stepc::interp
