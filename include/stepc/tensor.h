// A host tensor: dtype, static shape and row-major data owned by value.
#pragma once

#include "stepc/types.h"

#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace stepc {

template <class T> constexpr DType dtypeOf();
template <> constexpr DType dtypeOf<float>() { return DType::F32; }
template <> constexpr DType dtypeOf<double>() { return DType::F64; }
template <> constexpr DType dtypeOf<int32_t>() { return DType::I32; }
template <> constexpr DType dtypeOf<int64_t>() { return DType::I64; }
template <> constexpr DType dtypeOf<bool>() { return DType::Bool; }
template <> constexpr DType dtypeOf<int8_t>() { return DType::I8; }
template <> constexpr DType dtypeOf<int16_t>() { return DType::I16; }
template <> constexpr DType dtypeOf<uint16_t>() { return DType::U16; }
template <> constexpr DType dtypeOf<uint32_t>() { return DType::U32; }
template <> constexpr DType dtypeOf<uint64_t>() { return DType::U64; }
// No dtypeOf<uint8_t>: that type holds bools; u8 tensors are written through
// bytes() or fromReals.

class Tensor {
public:
  Tensor() = default;
  // Zero-filled. Throws stepc::Error for negative dims or overflowing sizes.
  Tensor(DType dtype, Shape shape);
  explicit Tensor(const TensorType &type) : Tensor(type.dtype, type.shape) {}

  template <class T> static Tensor of(Shape shape, const std::vector<T> &values);
  // A tensor of any dtype from reals (rounded/truncated like a C++ cast).
  static Tensor fromReals(DType dtype, Shape shape,
                          const std::vector<double> &values);
  static Tensor scalar(DType dtype, double value);

  DType dtype() const { return type_.dtype; }
  const Shape &shape() const { return type_.shape; }
  const TensorType &type() const { return type_; }
  int64_t rank() const { return type_.rank(); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return bytes_.size(); }

  std::byte *bytes() { return bytes_.data(); }
  const std::byte *bytes() const { return bytes_.data(); }

  // Typed access; T must match the dtype (bool is stored as one byte 0/1).
  template <class T> T *data();
  template <class T> const T *data() const;

  // Element at a flat row-major index, as a double.
  double real(int64_t flat) const;
  void setReal(int64_t flat, double value);
  std::vector<double> reals() const;
  // Element of an integer or bool tensor as int64 (a u64 above INT64_MAX as
  // its two's-complement bits), exact where real() would round; and back,
  // keeping the low bits as a C++ conversion does.
  int64_t integer(int64_t flat) const;
  void setInteger(int64_t flat, int64_t value);

  // Same dtype, shape and bytes.
  bool operator==(const Tensor &other) const {
    return type_ == other.type_ && bytes_ == other.bytes_;
  }

private:
  TensorType type_;
  int64_t numel_ = 0;
  std::vector<std::byte> bytes_;
};

// Converts between dtypes element by element (C++ casts; bool is x != 0;
// integer to integer keeps the low bits, as numpy's astype does).
Tensor castTensor(const Tensor &tensor, DType dtype);

template <class T> T *Tensor::data() {
  static_assert(!std::is_same_v<T, bool>, "use uint8_t for bool tensors");
  return reinterpret_cast<T *>(bytes_.data());
}
template <class T> const T *Tensor::data() const {
  static_assert(!std::is_same_v<T, bool>, "use uint8_t for bool tensors");
  return reinterpret_cast<const T *>(bytes_.data());
}

template <class T>
Tensor Tensor::of(Shape shape, const std::vector<T> &values) {
  Tensor t(dtypeOf<T>(), std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw std::invalid_argument("Tensor::of: value count does not match shape");
  if constexpr (std::is_same_v<T, bool>) {
    for (size_t i = 0; i < values.size(); ++i)
      t.bytes_[i] = std::byte(values[i] ? 1 : 0);
  } else if (!values.empty()) {
    std::memcpy(t.bytes_.data(), values.data(), values.size() * sizeof(T));
  }
  return t;
}

// Tensors by name: a step's inputs, outputs and params.
using TensorMap = std::map<std::string, Tensor, std::less<>>;

} // namespace stepc
