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
enum class DType : uint8_t { F32, F64, I32, I64, Bool, F16, BF16 };

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
bool isInteger(DType dtype); // i32, i64 (not bool)

// "[128,784]"
std::string shapeString(const Shape &shape);
// "f32[128,784]"
std::string typeString(const TensorType &type);

// Product of dims; throws stepc::Error on negative dims or int64 overflow.
int64_t checkedNumel(const Shape &shape);

// Row-major strides of a shape, in elements.
std::vector<int64_t> rowMajorStrides(const Shape &shape);

} // namespace stepc
