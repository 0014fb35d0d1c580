// The fixed training batches of the two smallest examples (examples/xor.sg,
// examples/poly_sin.sg): `stepc demo` trains on them, and tests/test_learning.cpp
// checks that the same training learns.
#pragma once

#include "stepc/tensor.h"

#include <cmath>
#include <numbers>
#include <vector>

namespace stepc::examples {

// The four XOR cases: x [4,2], y [4,1].
inline TensorMap xorBatch() {
  TensorMap batch;
  batch.emplace("x", Tensor::of<float>({4, 2}, {0, 0, 0, 1, 1, 0, 1, 1}));
  batch.emplace("y", Tensor::of<float>({4, 1}, {0, 1, 1, 0}));
  return batch;
}

// sin(x) at 256 points evenly spaced on [-pi, pi].
inline TensorMap polySinBatch() {
  std::vector<float> xs(256), ys(256);
  for (int i = 0; i < 256; ++i) {
    xs[i] = static_cast<float>(-std::numbers::pi + 2 * std::numbers::pi * i / 255.0);
    ys[i] = std::sin(xs[i]);
  }
  TensorMap batch;
  batch.emplace("x", Tensor::of<float>({256}, xs));
  batch.emplace("y", Tensor::of<float>({256}, ys));
  return batch;
}

} // namespace stepc::examples
