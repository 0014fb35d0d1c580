#include "mlir_text.h"

#include "stepc/half.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>

namespace stepc::codegen {

std::string scalarType(DType dtype) {
  switch (dtype) {
  case DType::F32: return "f32";
  case DType::F64: return "f64";
  case DType::I32: return "i32";
  case DType::I64: return "i64";
  // MLIR integers are signless: unsigned dtypes share the signed types, and
  // the lowering picks the unsigned op (divui, cmpi ult, extui, uitofp, ...).
  case DType::I8:
  case DType::U8: return "i8";
  case DType::I16:
  case DType::U16: return "i16";
  case DType::U32: return "i32";
  case DType::U64: return "i64";
  case DType::Bool: return "i1";
  // Halves compute in f32: loads extend, stores round (KernelEmitter).
  case DType::F16:
  case DType::BF16: return "f32";
  }
  return "?";
}

std::string memoryElementType(DType dtype) {
  // Memory holds a bool as a byte and a half as itself; every other dtype is
  // stored as it computes.
  if (dtype == DType::Bool)
    return "i8";
  if (isHalf(dtype))
    return dtype == DType::F16 ? "f16" : "bf16";
  return scalarType(dtype);
}

std::string memrefType(const TensorType &type) {
  std::string dims;
  for (int64_t d : type.shape)
    dims += fmt::format("{}x", d);
  return fmt::format("memref<{}{}>", dims, memoryElementType(type.dtype));
}

void MlirWriter::line(const std::string &text) {
  out_.append(static_cast<size_t>(depth_) * 2 + 4, ' ');
  out_ += text;
  out_ += '\n';
}

std::string MlirWriter::fresh(const std::string &hint) {
  return fmt::format("%{}{}", hint, counter_++);
}

std::string MlirWriter::assign(const std::string &rhs) {
  std::string name = fresh();
  line(fmt::format("{} = {}", name, rhs));
  return name;
}

std::string MlirWriter::indexConstant(int64_t value) {
  std::string key = fmt::format("idx:{}", value);
  if (const std::string *hit = cached(key))
    return *hit;
  std::string name = assign(fmt::format("arith.constant {} : index", value));
  cache(key, name);
  return name;
}

std::string MlirWriter::constant(double value, DType dtype) {
  std::string literal;
  switch (dtype) {
  case DType::F32:
    // Hexadecimal bit patterns are exact, including inf, nan and -0.
    literal = fmt::format("0x{:08X}", std::bit_cast<uint32_t>(static_cast<float>(value)));
    break;
  case DType::F64:
    literal = fmt::format("0x{:016X}", std::bit_cast<uint64_t>(value));
    break;
  case DType::I32:
  case DType::I64:
  case DType::I8:
  case DType::I16:
  case DType::U8:
  case DType::U16:
  case DType::U32:
  case DType::U64:
    return integerConstant(integerBitsOf(value), dtype);
  case DType::Bool:
    return integerConstant(value != 0, dtype);
  case DType::F16:
  case DType::BF16:
    // The half value nearest `value`, held in f32 like every half value.
    return constant(halfBitsToFloat(doubleToHalfBits(value, dtype), dtype), DType::F32);
  }
  return literalConstant(literal, dtype);
}

std::string MlirWriter::integerConstant(int64_t value, DType dtype) {
  // MLIR spells i1 constants `true` with no type, or as integers; `true : i1`
  // does not parse. Narrow integers print as their low bits read signed, the
  // range every signless width accepts.
  if (dtype == DType::Bool)
    value = value != 0;
  else if (size_t bits = dtypeSize(dtype) * 8; bits < 64)
    value = static_cast<int64_t>(static_cast<uint64_t>(value) << (64 - bits)) >> (64 - bits);
  return literalConstant(fmt::format("{}", value), dtype);
}

std::string MlirWriter::literalConstant(const std::string &literal, DType dtype) {
  std::string key = fmt::format("c:{}:{}", literal, scalarType(dtype));
  if (const std::string *hit = cached(key))
    return *hit;
  std::string name = assign(fmt::format("arith.constant {} : {}", literal, scalarType(dtype)));
  cache(key, name);
  return name;
}

std::string MlirWriter::beginFor(const std::string &lb, const std::string &ub, int64_t step) {
  std::string iv = fresh("i");
  std::string stepValue = indexConstant(step);
  line(fmt::format("scf.for {} = {} to {} step {} {{", iv, lb, ub, stepValue));
  indent();
  pushScope();
  return iv;
}

void MlirWriter::endFor() {
  popScope();
  dedent();
  line("}");
}

const std::string *MlirWriter::cached(const std::string &key) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
    if (auto found = it->find(key); found != it->end())
      return &found->second;
  return nullptr;
}

void MlirWriter::cache(const std::string &key, const std::string &value) {
  scopes_.back()[key] = value;
}

std::string replaceAll(std::string text, const std::string &from, const std::string &to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

} // namespace stepc::codegen
