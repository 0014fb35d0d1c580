#include "stepc/half.h"

#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace stepc {

uint16_t floatToF16Bits(float value) {
  uint32_t x = std::bit_cast<uint32_t>(value);
  auto sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t magnitude = x & 0x7fffffff;
  if (magnitude > 0x7f800000) // NaN: quiet, the top payload bits kept
    return static_cast<uint16_t>(sign | 0x7e00 | ((magnitude >> 13) & 0x3ff));
  // 65520 is halfway between f16's largest finite value (65504) and 2^16;
  // the tie goes to the even neighbour, which is inf.
  if (magnitude >= 0x477ff000)
    return static_cast<uint16_t>(sign | 0x7c00);
  uint32_t exponent = magnitude >> 23;
  if (exponent < 113) {
    // Below f16's smallest normal (2^-14): a subnormal in units of 2^-24.
    // Below 2^-25 (exponent 102) everything rounds to zero.
    if (exponent < 102)
      return sign;
    uint32_t mantissa = (magnitude & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exponent; // 14..24
    uint32_t quotient = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (quotient & 1)))
      ++quotient; // may carry into the smallest normal, which encodes alike
    return static_cast<uint16_t>(sign | quotient);
  }
  // Normal: rebias the exponent (127 -> 15) and round away 13 fraction bits;
  // a carry out of the fraction correctly bumps the exponent.
  uint32_t bits = (magnitude >> 13) - (112u << 10);
  uint32_t rest = magnitude & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (bits & 1)))
    ++bits;
  return static_cast<uint16_t>(sign | bits);
}

float f16BitsToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  uint32_t exponent = (bits >> 10) & 0x1f;
  uint32_t fraction = bits & 0x3ff;
  if (exponent == 0x1f) // inf, NaN (payload kept)
    return std::bit_cast<float>(sign | 0x7f800000 | (fraction << 13));
  if (exponent == 0) { // zero or subnormal: fraction * 2^-24, exact in f32
    float magnitude = std::ldexp(static_cast<float>(fraction), -24);
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (fraction << 13));
}

uint16_t floatToBF16Bits(float value) {
  uint32_t x = std::bit_cast<uint32_t>(value);
  if ((x & 0x7fffffff) > 0x7f800000) // NaN: keep it NaN, and quiet
    return static_cast<uint16_t>((x >> 16) | 0x40);
  // bf16 is the top half of an f32: round the low 16 bits away, ties to
  // even. Overflow carries into the exponent and gives inf, as it should.
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float bf16BitsToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t floatToHalfBits(float value, DType half) {
  if (half == DType::F16)
    return floatToF16Bits(value);
  if (half == DType::BF16)
    return floatToBF16Bits(value);
  throw std::logic_error("floatToHalfBits: not a half dtype");
}

float halfBitsToFloat(uint16_t bits, DType half) {
  if (half == DType::F16)
    return f16BitsToFloat(bits);
  if (half == DType::BF16)
    return bf16BitsToFloat(bits);
  throw std::logic_error("halfBitsToFloat: not a half dtype");
}

uint16_t doubleToHalfBits(double value, DType half) {
  float nearest = static_cast<float>(value);
  if (std::isnan(value) || static_cast<double>(nearest) == value)
    return floatToHalfBits(nearest, half);
  // Round to odd: of the two f32 neighbours of `value`, take the one whose
  // last bit is 1, so the later rounding sees that bits were dropped.
  if (std::isinf(nearest)) // beyond FLT_MAX: its odd neighbour is FLT_MAX
    nearest = std::copysign(std::numeric_limits<float>::max(), nearest);
  uint32_t bits = std::bit_cast<uint32_t>(nearest);
  if ((bits & 1) == 0) {
    if (std::fabs(static_cast<double>(nearest)) < std::fabs(value))
      ++bits;
    else
      --bits;
  }
  return floatToHalfBits(std::bit_cast<float>(bits), half);
}

} // namespace stepc
