// Counter-based random numbers: a value is a pure function of (seed, index),
// so initializers and dropout are reproducible on every backend and thread
// count. The mixing is splitmix64, cheap to emit in generated code.
#pragma once

#include <cstdint>

namespace stepc {

inline uint64_t randomBits(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 53 random bits.
inline double randomUniform(uint64_t seed, uint64_t counter) {
  return static_cast<double>(randomBits(seed, counter) >> 11) * 0x1.0p-53;
}

// Standard normal by Box-Muller from two counters (2*counter, 2*counter+1).
double randomNormal(uint64_t seed, uint64_t counter);

} // namespace stepc
