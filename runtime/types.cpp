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
  case DType::I8: return "i8";
  case DType::U8: return "u8";
  case DType::I16: return "i16";
  case DType::U16: return "u16";
  case DType::U32: return "u32";
  case DType::U64: return "u64";
  }
  return "?";
}

std::optional<DType> parseDType(std::string_view name) {
  for (DType d : kAllDTypes)
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
  case DType::I8: return 1;
  case DType::U8: return 1;
  case DType::I16: return 2;
  case DType::U16: return 2;
  case DType::U32: return 4;
  case DType::U64: return 8;
  }
  return 0;
}

bool isFloat(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F64 || isHalf(dtype);
}
bool isHalf(DType dtype) { return dtype == DType::F16 || dtype == DType::BF16; }
bool isInteger(DType dtype) {
  switch (dtype) {
  case DType::I8:
  case DType::U8:
  case DType::I16:
  case DType::U16:
  case DType::I32:
  case DType::U32:
  case DType::I64:
  case DType::U64: return true;
  case DType::F32:
  case DType::F64:
  case DType::F16:
  case DType::BF16:
  case DType::Bool: return false;
  }
  return false;
}
bool isUnsigned(DType dtype) {
  return dtype == DType::U8 || dtype == DType::U16 || dtype == DType::U32 ||
         dtype == DType::U64;
}

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
