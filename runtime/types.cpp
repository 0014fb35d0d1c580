#include "stepc/types.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace stepc {

std::string_view dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32: return "f32";
  case DType::F64: return "f64";
  case DType::I32: return "i32";
  case DType::I64: return "i64";
  case DType::Bool: return "bool";
  case DType::F16: return "f16";
  case DType::BF16: return "bf16";
  }
  return "?";
}

std::optional<DType> parseDType(std::string_view name) {
  for (DType d : {DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool, DType::F16,
                  DType::BF16})
    if (dtypeName(d) == name)
      return d;
  return std::nullopt;
}

size_t dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::F32: return 4;
  case DType::F64: return 8;
  case DType::I32: return 4;
  case DType::I64: return 8;
  case DType::Bool: return 1;
  case DType::F16: return 2;
  case DType::BF16: return 2;
  }
  return 0;
}

bool isFloat(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F64 || isHalf(dtype);
}
bool isHalf(DType dtype) { return dtype == DType::F16 || dtype == DType::BF16; }
bool isInteger(DType dtype) { return dtype == DType::I32 || dtype == DType::I64; }

std::string shapeString(const Shape &shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

std::string typeString(const TensorType &type) {
  return fmt::format("{}{}", dtypeName(type.dtype), shapeString(type.shape));
}

int64_t checkedNumel(const Shape &shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw Error(fmt::format("shape {} has a negative dimension", shapeString(shape)));
    if (d != 0 && n > INT64_MAX / d)
      throw Error(fmt::format("shape {} has more elements than fit in 64 bits",
                              shapeString(shape)));
    n *= d;
  }
  return n;
}

int64_t TensorType::numel() const { return checkedNumel(shape); }

std::vector<int64_t> rowMajorStrides(const Shape &shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

} // namespace stepc
