#include "stepc/random.h"

#include <cmath>
#include <numbers>

namespace stepc {

double randomNormal(uint64_t seed, uint64_t counter) {
  // 1 - u keeps the logarithm's argument in (0, 1].
  double u1 = 1.0 - randomUniform(seed, 2 * counter);
  double u2 = randomUniform(seed, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

} // namespace stepc
