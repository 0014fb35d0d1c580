#include "stepc/tensor.h"

#include "stepc/error.h"
#include "stepc/half.h"

#include <fmt/format.h>

#include <new>
#include <stdexcept>
#include <type_traits>

#include <unistd.h>

namespace stepc {

Tensor::Tensor(DType dtype, Shape shape) {
  type_.dtype = dtype;
  type_.shape = std::move(shape);
  numel_ = checkedNumel(type_.shape);
  if (numel_ > INT64_MAX / 8)
    throw Error(fmt::format("tensor {} is too large", typeString(type_)));
  size_t bytes = static_cast<size_t>(numel_) * dtypeSize(dtype);
  // Running out of memory is a user error (the graph asks for more than the
  // machine has), said in numbers; callers add which input, param or value
  // it was for. More than the machine's memory is refused before asking the
  // allocator, which may overcommit and leave the process to be killed later.
  auto outOfMemory = [&](const std::string &more) {
    return Error(fmt::format("out of memory: a {} tensor needs {} bytes ({:.1f} GiB){}",
                             typeString(type_), bytes, static_cast<double>(bytes) / (1 << 30),
                             more));
  };
  static const uint64_t physical =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  if (bytes > physical)
    throw outOfMemory(fmt::format(", more than this machine's {:.1f} GiB",
                                  static_cast<double>(physical) / (1 << 30)));
  try {
    bytes_.assign(bytes, std::byte{0});
  } catch (const std::bad_alloc &) {
    throw outOfMemory("");
  }
}

Tensor Tensor::fromReals(DType dtype, Shape shape, const std::vector<double> &values) {
  Tensor t(dtype, std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw Error(fmt::format("{} values given for a tensor of type {} ({} elements)",
                            values.size(), typeString(t.type()), t.numel()));
  for (size_t i = 0; i < values.size(); ++i)
    t.setReal(static_cast<int64_t>(i), values[i]);
  return t;
}

Tensor Tensor::scalar(DType dtype, double value) {
  Tensor t(dtype, {});
  t.setReal(0, value);
  return t;
}

namespace {

// Calls f(T{}) with the C++ type that holds an element of a float or integer
// dtype. Bool (one byte 0/1) and the halves (bit patterns) are not plain
// values of a C++ type: callers handle them first.
template <class F> decltype(auto) withValueType(DType dtype, F &&f) {
  switch (dtype) {
  case DType::F32: return f(float{});
  case DType::F64: return f(double{});
  case DType::I32: return f(int32_t{});
  case DType::I64: return f(int64_t{});
  case DType::I8: return f(int8_t{});
  case DType::U8: return f(uint8_t{});
  case DType::I16: return f(int16_t{});
  case DType::U16: return f(uint16_t{});
  case DType::U32: return f(uint32_t{});
  case DType::U64: return f(uint64_t{});
  case DType::Bool:
  case DType::F16:
  case DType::BF16: break;
  }
  throw std::logic_error(fmt::format("{} elements are not values of a C++ type", dtypeName(dtype)));
}

} // namespace

double Tensor::real(int64_t i) const {
  if (dtype() == DType::Bool)
    return data<uint8_t>()[i] ? 1.0 : 0.0;
  if (isHalf(dtype()))
    return halfBitsToFloat(data<uint16_t>()[i], dtype());
  return withValueType(dtype(), [&](auto tag) {
    return static_cast<double>(data<decltype(tag)>()[i]);
  });
}

void Tensor::setReal(int64_t i, double v) {
  if (dtype() == DType::Bool) {
    data<uint8_t>()[i] = v != 0 ? 1 : 0;
    return;
  }
  if (isHalf(dtype())) {
    data<uint16_t>()[i] = doubleToHalfBits(v, dtype());
    return;
  }
  withValueType(dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>)
      data<T>()[i] = static_cast<T>(v);
    else
      data<T>()[i] = static_cast<T>(integerBitsOf(v));
  });
}

std::vector<double> Tensor::reals() const {
  std::vector<double> out(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i)
    out[i] = real(i);
  return out;
}

int64_t Tensor::integer(int64_t i) const {
  if (dtype() == DType::Bool)
    return data<uint8_t>()[i] ? 1 : 0;
  if (!isInteger(dtype()))
    throw std::logic_error(fmt::format("Tensor::integer: {} is not an integer dtype",
                                       dtypeName(dtype())));
  return withValueType(dtype(), [&](auto tag) {
    return static_cast<int64_t>(data<decltype(tag)>()[i]);
  });
}

void Tensor::setInteger(int64_t i, int64_t v) {
  if (dtype() == DType::Bool) {
    data<uint8_t>()[i] = v != 0 ? 1 : 0;
    return;
  }
  if (!isInteger(dtype()))
    throw std::logic_error(fmt::format("Tensor::setInteger: {} is not an integer dtype",
                                       dtypeName(dtype())));
  withValueType(dtype(), [&](auto tag) {
    using T = decltype(tag);
    data<T>()[i] = static_cast<T>(v);
  });
}

Tensor castTensor(const Tensor &tensor, DType dtype) {
  Tensor out(dtype, tensor.shape());
  // i64 -> i64 must not round-trip through double.
  if (dtype == tensor.dtype()) {
    out = tensor;
    return out;
  }
  // Between integers (and from bool) the bits are kept exactly, not rounded
  // through a double; u64 -> float goes through the unsigned value.
  if ((isInteger(tensor.dtype()) || tensor.dtype() == DType::Bool) &&
      (isInteger(dtype) || dtype == DType::Bool)) {
    for (int64_t i = 0; i < tensor.numel(); ++i)
      out.setInteger(i, tensor.integer(i));
    return out;
  }
  for (int64_t i = 0; i < tensor.numel(); ++i)
    out.setReal(i, tensor.real(i));
  return out;
}

} // namespace stepc
