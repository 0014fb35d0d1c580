// Index arithmetic shared by the interpreter's kernels: NumPy broadcast
// strides and a row-major walk over a shape that carries flat offsets into
// several tensors at once. Every data-movement kernel is "walk the output,
// map each index to an input offset", so this is the one place that math
// lives.
#pragma once

#include "stepc/types.h"

#include <array>
#include <cassert>
#include <cstdint>
#include <vector>

namespace stepc::interp {

// Strides (in elements) for reading a tensor of shape `in` while walking
// `out` under NumPy broadcasting: shapes align on the right, and an axis the
// input lacks or has as 1 gets stride 0, so every output index along it reads
// the same element.
inline std::vector<int64_t> broadcastStrides(const Shape &in, const Shape &out) {
  assert(in.size() <= out.size());
  std::vector<int64_t> strides(out.size(), 0);
  std::vector<int64_t> own = rowMajorStrides(in);
  size_t lead = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    assert(in[i] == out[lead + i] || in[i] == 1);
    strides[lead + i] = in[i] == 1 ? 0 : own[i];
  }
  return strides;
}

// Calls f(offsets) for every index of `shape` in row-major order, where
// offsets[k] = base[k] + sum_i index[i] * strides[k][i]. The offsets are
// updated incrementally (an odometer), so a walk costs O(1) per element
// amortized, and strides may be 0 (broadcast), permuted (transpose) or scaled
// (strided slice).
template <size_t N, class F>
void walk(const Shape &shape, const std::array<std::vector<int64_t>, N> &strides,
          F &&f, std::array<int64_t, N> base = {}) {
  const size_t rank = shape.size();
  for (int64_t d : shape)
    if (d == 0)
      return;
  for (size_t k = 0; k < N; ++k)
    assert(strides[k].size() == rank);
  std::vector<int64_t> index(rank, 0);
  std::array<int64_t, N> offsets = base;
  while (true) {
    f(offsets);
    // Advance the innermost axis; carry into outer axes as they wrap.
    size_t axis = rank;
    while (axis > 0) {
      --axis;
      if (++index[axis] < shape[axis]) {
        for (size_t k = 0; k < N; ++k)
          offsets[k] += strides[k][axis];
        break;
      }
      for (size_t k = 0; k < N; ++k)
        offsets[k] -= strides[k][axis] * (shape[axis] - 1);
      index[axis] = 0;
      if (axis == 0)
        return;
    }
    if (rank == 0)
      return;
  }
}

// Product of dims [begin, end): the outer/inner counts around one axis.
inline int64_t dimProduct(const Shape &shape, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i)
    n *= shape[i];
  return n;
}

// An axis attribute as an index (the graph holds only non-negative axes:
// Graph::add normalizes them).
inline size_t axisIndex(int64_t axis, int64_t rank) {
  assert(axis >= 0 && axis < (rank == 0 ? 1 : rank));
  return static_cast<size_t>(axis);
}

} // namespace stepc::interp
