// Element types, shapes and tensor types shared by every stage.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// F16 (IEEE binary16) and BF16 (bfloat16) are storage types: every stage
// computes on them in f32 and rounds to nearest-even when it stores
// (stepc/half.h), as hardware does.
// I8..U64 are the narrow and unsigned integers ONNX models carry: they
// compute in their own width with two's-complement wraparound, as numpy does;
// division, remainder, comparisons and conversions follow the
// signedness (isUnsigned).
enum class DType : uint8_t { F32, F64, I32, I64, Bool, F16, BF16, I8, U8, I16, U16, U32, U64 };

// Every dtype, in enum order (for parsing and tests).
inline constexpr DType kAllDTypes[] = {DType::F32, DType::F64, DType::I32, DType::I64,
                                       DType::Bool, DType::F16, DType::BF16, DType::I8,
                                       DType::U8,  DType::I16, DType::U16, DType::U32,
                                       DType::U64};

using Shape = std::vector<int64_t>;

// The static type of a graph value.
struct TensorType {
  DType dtype = DType::F32;
  Shape shape;

  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const;
  bool operator==(const TensorType &) const = default;
};

// "f32", "i64", ...
std::string_view dtypeName(DType dtype);
std::optional<DType> parseDType(std::string_view name);
size_t dtypeSize(DType dtype);
bool isFloat(DType dtype);   // f32, f64, f16, bf16
bool isHalf(DType dtype);    // f16, bf16
bool isInteger(DType dtype); // i8..i64, u8..u64 (not bool)
bool isUnsigned(DType dtype); // u8, u16, u32, u64

// A real value as the two's-complement bits of an integer element, truncated
// toward zero: -1 gives all ones (255 as u8, as numpy), values up to 2^64 keep
// their u64 bits. NaN, infinities and values outside (-2^63, 2^64) give 0 (C++
// and LLVM leave them undefined; every stage takes them from here, so the
// interpreter and the compiled kernels agree).
// Exact for wider reals (long double) too.
template <class Real> int64_t integerBitsOf(Real value) {
  constexpr Real kTwo63 = Real(9223372036854775808.0);
  if (value >= -kTwo63 && value < kTwo63)
    return static_cast<int64_t>(value);
  if (value >= kTwo63 && value < 2 * kTwo63)
    return static_cast<int64_t>(static_cast<uint64_t>(value));
  return 0;
}

// "[128,784]"
std::string shapeString(const Shape &shape);
// "f32[128,784]"
std::string typeString(const TensorType &type);

// Product of dims; throws stepc::Error on negative dims or int64 overflow.
int64_t checkedNumel(const Shape &shape);

// Row-major strides of a shape, in elements.
std::vector<int64_t> rowMajorStrides(const Shape &shape);

} // namespace stepc
