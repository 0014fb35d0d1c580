// ONNX's integer operators as compositions: BitShift (a multiply or divide by
// a power of two taken from a table), QuantizeLinear, DequantizeLinear,
// DynamicQuantizeLinear, MatMulInteger and QLinearMatMul (integer matmuls
// in i32, scales in f32 as the ONNX reference computes them).
#include "onnx_ops.h"

#include <fmt/format.h>

namespace stepc::onnx_import {
namespace {

// A per-axis scale or zero point ([C] for axis `axis` of `like`) reshaped to
// broadcast against `like`; a scalar stays as it is.
Value alongAxis(NodeContext &c, Value v, Value like, int64_t axis, std::string_view what) {
  if (v.rank() == 0 || (v.rank() == 1 && v.dim(0) == 1 && like.rank() == 0))
    return v.rank() == 0 ? v : reshape(v, {});
  if (v.rank() != 1)
    c.invalid(fmt::format("{} must be a scalar or 1-D, found {}", what, typeString(v.type())));
  int64_t a = normalizeAxis(c, axis, like.rank(), "axis");
  if (v.dim(0) != like.dim(a))
    c.invalid(fmt::format("{} has {} entries but axis {} of {} has {}", what, v.dim(0), a,
                          typeString(like.type()), like.dim(a)));
  Shape shape(static_cast<size_t>(like.rank()), 1);
  shape[static_cast<size_t>(a)] = v.dim(0);
  return reshape(v, shape);
}

// The range of an 8-bit quantized type.
std::pair<double, double> quantRange(NodeContext &c, DType dtype) {
  if (dtype == DType::U8)
    return {0, 255};
  if (dtype == DType::I8)
    return {-128, 127};
  c.unsupportedDType("zero point", dtype);
}

// saturate(round_half_even(scaled) + zero point), as `dtype`.
Value roundToQuantized(NodeContext &c, Value scaled, Value zeroPoint, DType dtype) {
  auto [low, high] = quantRange(c, dtype);
  Value q = add(roundHalfEven(c, scaled), cast(zeroPoint, DType::F32));
  q = minimum(maximum(q, c.scalar(low, DType::F32)), c.scalar(high, DType::F32));
  return cast(q, dtype);
}

// saturate(round_half_even(x / scale) + zero point), as `dtype`.
Value quantize(NodeContext &c, Value x, Value scale, Value zeroPoint, DType dtype) {
  return roundToQuantized(c, div(x, scale), zeroPoint, dtype);
}

Value f32(Value v) { return v.dtype() == DType::F32 ? v : cast(v, DType::F32); }

} // namespace

// X << Y or X >> Y on unsigned integers. 2^Y comes from a table with one
// entry past the width holding 0 (a shift by the width or more gives 0):
// X * 2^Y wraps like a left shift; X / 2^Y floors like a right shift, and
// X / 0 is 0 in stepc.
void mapBitShift(NodeContext &c) {
  Value x = c.in(0), y = c.in(1);
  if (!isUnsigned(x.dtype()) || y.dtype() != x.dtype())
    c.invalid(fmt::format("expected unsigned integers of one type, found {} and {}",
                          typeString(x.type()), typeString(y.type())));
  std::string direction = c.attrString("direction");
  if (direction != "LEFT" && direction != "RIGHT")
    c.invalid(fmt::format("attribute 'direction' must be LEFT or RIGHT, found '{}'", direction));
  int64_t bits = static_cast<int64_t>(dtypeSize(x.dtype()) * 8);
  Tensor powers(x.dtype(), {bits + 1});
  for (int64_t k = 0; k < bits; ++k)
    powers.setInteger(k, static_cast<int64_t>(uint64_t(1) << k));
  Value index = cast(minimum(y, c.scalar(double(bits), y.dtype())), DType::I64);
  Value power = gather(c.constantOf(powers), index, 0);
  c.setOutput(0, direction == "LEFT" ? mul(x, power) : div(x, power));
}

void mapQuantizeLinear(NodeContext &c) {
  Value x = c.in(0);
  if (x.dtype() != DType::F32 && x.dtype() != DType::I32)
    c.unsupportedDType("input", x.dtype());
  int64_t axis = c.attrInt("axis", 1);
  Value scale = alongAxis(c, c.in(1), x, axis, "y_scale");
  Value zeroPoint = c.has(2) ? alongAxis(c, c.in(2), x, axis, "y_zero_point")
                             : c.scalar(0, DType::U8);
  c.setOutput(0, quantize(c, f32(x), scale, zeroPoint, zeroPoint.dtype()));
}

void mapDequantizeLinear(NodeContext &c) {
  Value x = c.in(0);
  if (x.dtype() != DType::U8 && x.dtype() != DType::I8 && x.dtype() != DType::I32)
    c.unsupportedDType("input", x.dtype());
  int64_t axis = c.attrInt("axis", 1);
  Value scale = alongAxis(c, c.in(1), x, axis, "x_scale");
  Value centered = f32(x);
  if (c.has(2))
    centered = sub(centered, f32(alongAxis(c, c.in(2), x, axis, "x_zero_point")));
  c.setOutput(0, mul(centered, scale));
}

// The scale spans [min(0, min x), max(0, max x)] over 0..255.
void mapDynamicQuantizeLinear(NodeContext &c) {
  Value x = c.in(0);
  if (x.dtype() != DType::F32)
    c.unsupportedDType("input", x.dtype());
  Value zero = c.scalar(0, DType::F32);
  Value low = minimum(min(x), zero), high = maximum(max(x), zero);
  Value scale = div(sub(high, low), c.scalar(255, DType::F32));
  // An all-zero x has scale 0: quantize by 1 instead (y and the zero point
  // 0) rather than divide 0 by 0.
  Value divisor = select(eq(scale, zero), c.scalar(1, DType::F32), scale);
  Value zeroPoint = quantize(c, neg(low), divisor, c.scalar(0, DType::U8), DType::U8);
  c.setOutput(0, quantize(c, x, divisor, zeroPoint, DType::U8));
  c.setOutput(1, scale);
  c.setOutput(2, zeroPoint);
}

namespace {

// (A - a_zero_point) (B - b_zero_point) in i32; a's zero point may be per
// row of A, b's per column of B.
Value integerProduct(NodeContext &c, Value a, Value b, size_t aZero, size_t bZero) {
  for (Value v : {a, b})
    if (v.dtype() != DType::U8 && v.dtype() != DType::I8)
      c.unsupportedDType("operand", v.dtype());
  Value wa = cast(a, DType::I32), wb = cast(b, DType::I32);
  if (c.has(aZero)) {
    Value z = cast(c.in(aZero), DType::I32);
    if (z.rank() == 1 && a.rank() >= 2 && z.dim(0) == a.dim(a.rank() - 2) && z.dim(0) != 1)
      z = reshape(z, {z.dim(0), 1});
    wa = sub(wa, z);
  }
  if (c.has(bZero))
    wb = sub(wb, cast(c.in(bZero), DType::I32));
  return matmulNd(wa, wb);
}

} // namespace

void mapMatMulInteger(NodeContext &c) { c.setOutput(0, integerProduct(c, c.in(0), c.in(1), 2, 3)); }

// Inputs a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
// y_zero_point: the i32 product scaled by a_scale b_scale / y_scale, then
// quantized to y's type.
void mapQLinearMatMul(NodeContext &c) {
  Value a = c.in(0);
  Value product = integerProduct(c, a, c.in(3), 2, 5);
  // a's scale may be per row of A, as its zero point; b's per column of B.
  Value aScale = f32(c.in(1));
  if (aScale.rank() == 1 && a.rank() >= 2 && aScale.dim(0) == a.dim(a.rank() - 2) &&
      aScale.dim(0) != 1)
    aScale = reshape(aScale, {aScale.dim(0), 1});
  Value scale = div(mul(aScale, f32(c.in(4))), f32(c.in(6)));
  if (scale.rank() == 1 && scale.dim(0) == 1)
    scale = reshape(scale, {});
  Value zeroPoint = c.in(7);
  if (zeroPoint.rank() == 1 && zeroPoint.dim(0) == 1)
    zeroPoint = reshape(zeroPoint, {});
  c.setOutput(0, roundToQuantized(c, mul(cast(product, DType::F32), scale), zeroPoint,
                                  zeroPoint.dtype()));
}

} // namespace stepc::onnx_import
