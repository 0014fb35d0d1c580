// Conversions between f32/f64 and the half-precision storage types: IEEE
// binary16 (f16) and bfloat16 (bf16), both held as their 16-bit patterns.
// This is the one place every stage takes them from (the interpreter, the
// tensor I/O, the constant folder), so they all round alike: to nearest,
// ties to even, subnormals kept (no flush to zero), f16 overflows to inf,
// NaN stays NaN (quiet). These are the semantics of LLVM's fptrunc, which
// the compiled kernels use.
#pragma once

#include "stepc/types.h"

#include <cstdint>

namespace stepc {

uint16_t floatToF16Bits(float value);
float f16BitsToFloat(uint16_t bits);
uint16_t floatToBF16Bits(float value);
float bf16BitsToFloat(uint16_t bits);

// From f64 with a single rounding (not f64 -> f32 -> half, which can round
// twice): rounds to f32 with round-to-odd first, which is exact for a later
// rounding to a type with fewer than 23 fraction bits.
uint16_t doubleToHalfBits(double value, DType half);

// A half dtype's bits <-> f32. `half` is DType::F16 or DType::BF16.
uint16_t floatToHalfBits(float value, DType half);
float halfBitsToFloat(uint16_t bits, DType half);

// `value` rounded to the nearest `half` value, as an f32.
inline float roundToHalf(float value, DType half) {
  return halfBitsToFloat(floatToHalfBits(value, half), half);
}

} // namespace stepc
