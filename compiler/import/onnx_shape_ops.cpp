// Mapping functions of the ONNX data-movement ops: reshapes, slices,
// gathers, concatenation and the like (the table is in onnx_ops.cpp). Their
// shape arguments must be known at import: stepc shapes are static.
#include "onnx_ops.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace stepc::onnx_import {

void mapTranspose(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> perm = c.attrInts("perm");
  if (perm.empty())
    for (int64_t i = x.rank() - 1; i >= 0; --i)
      perm.push_back(i);
  c.setOutput(0, transpose(x, perm));
}

// Reshape's target: 0 copies the input's dimension (unless allowzero), -1
// is inferred.
void mapReshape(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> target =
      c.opset < 5 ? c.attrInts("shape") : c.requireInts(1, "the target shape");
  bool allowZero = c.attrInt("allowzero", 0) != 0;
  int64_t known = 1, inferred = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == 0 && !allowZero) {
      if (static_cast<int64_t>(i) >= x.rank())
        c.invalid(fmt::format("shape {}: a 0 at position {} copies no dimension of {}",
                              shapeString(target), i, typeString(x.type())));
      target[i] = x.dim(static_cast<int64_t>(i));
    }
    if (target[i] == -1) {
      if (inferred >= 0)
        c.invalid(fmt::format("shape {} has more than one -1", shapeString(target)));
      inferred = static_cast<int64_t>(i);
    } else if (target[i] < 0) {
      c.invalid(fmt::format("shape {} has a negative dimension", shapeString(target)));
    } else {
      known *= target[i];
    }
  }
  if (inferred >= 0) {
    if (known == 0 || x.type().numel() % known != 0)
      c.invalid(fmt::format("cannot reshape {} to {}", typeString(x.type()), shapeString(target)));
    target[inferred] = x.type().numel() / known;
  }
  c.setOutput(0, reshape(x, target));
}

void mapFlatten(NodeContext &c) {
  Value x = c.in(0);
  int64_t axis = c.attrInt("axis", 1);
  if (axis != x.rank())
    axis = normalizeAxis(c, axis, x.rank(), "axis");
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < x.rank(); ++i)
    (i < axis ? outer : inner) *= x.dim(i);
  c.setOutput(0, reshape(x, {outer, inner}));
}

static std::vector<int64_t> axesOperand(NodeContext &c, size_t input) {
  if (c.opset >= 13 && c.has(input))
    return c.requireInts(input, "the axes");
  return c.attrInts("axes");
}

void mapSqueeze(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> axes = axesOperand(c, 1);
  std::vector<bool> drop(static_cast<size_t>(x.rank()), false);
  if (axes.empty()) {
    for (int64_t i = 0; i < x.rank(); ++i)
      drop[i] = x.dim(i) == 1;
  } else {
    for (int64_t a : normalizeAxes(c, axes, x.rank(), "axis")) {
      if (x.dim(a) != 1)
        c.invalid(fmt::format("cannot squeeze axis {} of {}: its size is not 1", a,
                              typeString(x.type())));
      drop[a] = true;
    }
  }
  Shape shape;
  for (int64_t i = 0; i < x.rank(); ++i)
    if (!drop[i])
      shape.push_back(x.dim(i));
  c.setOutput(0, reshape(x, shape));
}

void mapUnsqueeze(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> axes = axesOperand(c, 1);
  int64_t rank = x.rank() + static_cast<int64_t>(axes.size());
  axes = normalizeAxes(c, axes, rank, "axis");
  Shape shape;
  size_t next = 0, k = 0;
  for (int64_t i = 0; i < rank; ++i) {
    if (k < axes.size() && axes[k] == i) {
      shape.push_back(1);
      ++k;
    } else {
      shape.push_back(x.shape()[next++]);
    }
  }
  c.setOutput(0, reshape(x, shape));
}

void mapConcat(NodeContext &c) {
  std::vector<Value> xs;
  for (size_t i = 0; i < c.numInputs(); ++i)
    if (c.has(i))
      xs.push_back(c.in(i));
  if (xs.empty())
    c.invalid("expected at least one input");
  int64_t axis = normalizeAxis(c, c.attrInt("axis"), xs[0].rank(), "axis");
  c.setOutput(0, xs.size() == 1 ? xs[0] : concat(xs, axis));
}

void mapSplit(NodeContext &c) {
  Value x = c.in(0);
  int64_t axis = normalizeAxis(c, c.attrInt("axis", 0), x.rank(), "axis");
  int64_t size = x.dim(axis);
  std::vector<int64_t> sizes;
  if (c.opset >= 13 && c.has(1))
    sizes = c.requireInts(1, "the split sizes");
  else if (c.opset < 13)
    sizes = c.attrInts("split");
  if (sizes.empty()) {
    int64_t n = c.attrInt("num_outputs", static_cast<int64_t>(c.numOutputs()));
    if (n < 1)
      c.invalid("expected at least one output");
    int64_t chunk = (size + n - 1) / n;
    if (c.opset < 18 && size % n != 0)
      c.invalid(
          fmt::format("axis {} of size {} does not split into {} equal parts", axis, size, n));
    for (int64_t i = 0; i < n; ++i)
      sizes.push_back(std::max<int64_t>(0, std::min(chunk, size - i * chunk)));
  }
  if (sizes.size() != c.numOutputs())
    c.invalid(fmt::format("{} split sizes for {} outputs", sizes.size(), c.numOutputs()));
  int64_t start = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0 || start + sizes[i] > size)
      c.invalid(fmt::format("split sizes {} do not fit axis {} of size {}", fmt::join(sizes, ","),
                            axis, size));
    c.setOutput(i, sliceAxis(x, axis, start, start + sizes[i]));
    start += sizes[i];
  }
  if (start != size)
    c.invalid(fmt::format("split sizes {} add up to {}, not the size {} of axis {}",
                          fmt::join(sizes, ","), start, size, axis));
}

// Slice with NumPy's rules for out-of-range and negative starts and ends.
// Positive steps become one stepc slice; a negative step becomes a gather of
// the indices it visits.
void mapSlice(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (c.opset < 10) {
    starts = c.attrInts("starts");
    ends = c.attrInts("ends");
    axes = c.attrInts("axes");
  } else {
    starts = c.requireInts(1, "the starts");
    ends = c.requireInts(2, "the ends");
    if (c.has(3))
      axes = c.requireInts(3, "the axes");
    if (c.has(4))
      steps = c.requireInts(4, "the steps");
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i)
      axes.push_back(static_cast<int64_t>(i));
  if (steps.empty())
    steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    c.invalid("starts, ends, axes and steps must have one entry each per sliced axis");
  int64_t r = x.rank();
  std::vector<int64_t> lo(static_cast<size_t>(r), 0), hi = x.shape(),
                                                      stride(static_cast<size_t>(r), 1);
  std::vector<std::pair<int64_t, std::vector<int64_t>>> reversed;
  std::vector<bool> seen(static_cast<size_t>(r), false);
  for (size_t k = 0; k < starts.size(); ++k) {
    int64_t axis = normalizeAxis(c, axes[k], r, "axis");
    if (seen[axis])
      c.invalid(fmt::format("axis {} is sliced twice", axis));
    seen[axis] = true;
    int64_t d = x.dim(axis), step = steps[k];
    if (step == 0)
      c.invalid("a step of 0");
    // Saturating arithmetic: ends are often INT64_MAX or INT64_MIN.
    auto adjust = [&](int64_t v, int64_t lowest, int64_t highest) {
      if (v < 0)
        v = v < -d ? -d - 1 : v + d;
      return std::clamp(v, lowest, highest);
    };
    if (step > 0) {
      int64_t s = adjust(starts[k], 0, d), e = adjust(ends[k], 0, d);
      lo[axis] = s;
      hi[axis] = std::max(s, e);
      stride[axis] = step;
    } else {
      int64_t s = adjust(starts[k], -1, d - 1), e = adjust(ends[k], -1, d - 1);
      std::vector<int64_t> visit;
      for (int64_t i = s; i > e; i += step)
        visit.push_back(i);
      reversed.emplace_back(axis, visit);
    }
  }
  Value y = slice(x, lo, hi, stride);
  for (auto &[axis, visit] : reversed)
    y = visit.empty() ? sliceAxis(y, axis, 0, 0) : gather(y, indexConstant(c, visit), axis);
  c.setOutput(0, y);
}

// Gather with negative indices counted from the end: constant indices are
// normalized here, runtime ones wrapped with a select.
void mapGather(NodeContext &c) {
  Value data = c.in(0);
  int64_t axis = normalizeAxis(c, c.attrInt("axis", 0), data.rank(), "axis");
  int64_t n = data.dim(axis);
  Value indices;
  if (std::optional<Tensor> known = c.known(1); known && isInteger(known->dtype())) {
    Tensor t = castTensor(*known, DType::I64);
    int64_t *p = t.data<int64_t>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (p[i] < -n || p[i] >= n)
        c.invalid(fmt::format("index {} is out of range for axis {} of size {}", p[i], axis, n));
      if (p[i] < 0)
        p[i] += n;
    }
    indices = c.constantOf(t);
  } else {
    indices = wrapNegativeIndices(c, c.in(1), n);
  }
  c.setOutput(0, gather(data, indices, axis));
}

// GatherElements picks data[..., indices[i], ...] along one axis for every
// element of indices. stepc's gather takes whole slices, so this selects
// with a one-hot mask of the indices and sums it away.
void mapGatherElements(NodeContext &c) {
  Value data = c.in(0);
  Value indices = c.in(1);
  int64_t r = data.rank();
  if (indices.rank() != r)
    c.invalid("data and indices must have the same rank");
  int64_t axis = normalizeAxis(c, c.attrInt("axis", 0), r, "axis");
  int64_t n = data.dim(axis);
  std::vector<int64_t> limits = indices.shape();
  limits[axis] = n;
  for (int64_t i = 0; i < r; ++i)
    if (limits[i] > data.dim(i))
      c.invalid(fmt::format("indices {} do not fit data {}", typeString(indices.type()),
                            typeString(data.type())));
  Value picked = slice(data, std::vector<int64_t>(static_cast<size_t>(r), 0), limits);
  // [..., n at axis, ...] -> [..., 1 at axis, ..., n]
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < r; ++i)
    if (i != axis)
      perm.push_back(i);
  perm.push_back(axis);
  Shape lined = indices.shape();
  lined[axis] = 1;
  lined.push_back(n);
  picked = reshape(transpose(picked, perm), lined);
  Value hot = oneHot(wrapNegativeIndices(c, indices, n), n, DType::Bool);
  Value chosen = select(hot, picked, scalarOf(c, picked, 0));
  c.setOutput(0, sum(chosen, {r}, false));
}

// Expand broadcasts both ways: the result has the broadcast of the input's
// shape and the given one.
void mapExpand(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> shape = c.requireInts(1, "the shape");
  size_t rank = std::max(shape.size(), x.shape().size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t a = i < rank - x.shape().size() ? 1 : x.shape()[i - (rank - x.shape().size())];
    int64_t b = i < rank - shape.size() ? 1 : shape[i - (rank - shape.size())];
    if (a != b && a != 1 && b != 1)
      c.invalid(fmt::format("cannot expand {} to {}", typeString(x.type()), shapeString(shape)));
    out[i] = a == 1 ? b : a;
  }
  c.setOutput(0, out == x.shape() ? x : broadcastTo(x, out));
}

void mapTile(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> repeats = c.requireInts(1, "the repeats");
  if (static_cast<int64_t>(repeats.size()) != x.rank())
    c.invalid(fmt::format("{} repeats for {}", repeats.size(), typeString(x.type())));
  for (int64_t axis = 0; axis < x.rank(); ++axis) {
    int64_t n = repeats[axis];
    if (n < 0 || n > kMaxImportElements)
      c.invalid(fmt::format("repeat {} is out of range", n));
    if (n == 0)
      x = sliceAxis(x, axis, 0, 0);
    else if (n > 1)
      x = concat(std::vector<Value>(static_cast<size_t>(n), x), axis);
  }
  c.setOutput(0, x);
}

void mapRange(NodeContext &c) {
  Tensor start = c.require(0, "start"), limit = c.require(1, "limit"),
         delta = c.require(2, "delta");
  double s = start.real(0), l = limit.real(0), d = delta.real(0);
  if (d == 0)
    c.invalid("delta is 0");
  int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((l - s) / d)));
  if (n > kMaxImportElements)
    c.unsupported(fmt::format("a range of {} elements is too large to fold at import", n));
  Tensor out(start.dtype(), {n});
  for (int64_t i = 0; i < n; ++i) {
    if (isFloat(start.dtype()))
      out.setReal(i, start.dtype() == DType::F32 ? double(float(s) + float(i) * float(d))
                                                 : s + double(i) * d);
    else
      out.setReal(i, s + double(i) * d);
  }
  c.setOutput(0, std::move(out));
}

// The upper (or lower) triangle from diagonal k on; the rest is zero.
void mapTrilu(NodeContext &c) {
  Value x = c.in(0);
  if (x.rank() < 2)
    c.invalid("expected an input of rank >= 2");
  int64_t k = c.has(1) ? static_cast<int64_t>(c.requireScalar(1, "k")) : 0;
  Shape square{x.dim(-2), x.dim(-1)};
  Value row = iota(c.b, DType::I64, square, 0), col = iota(c.b, DType::I64, square, 1);
  Value diagonal = sub(col, row);
  Value kk = c.scalar(double(k), DType::I64);
  Value keep = c.attrInt("upper", 1) ? ge(diagonal, kk) : le(diagonal, kk);
  c.setOutput(0, select(keep, x, scalarOf(c, x, 0)));
}

void mapOneHot(NodeContext &c) {
  Value indices = c.in(0);
  double depthValue = c.requireScalar(1, "depth");
  int64_t depth = static_cast<int64_t>(depthValue);
  if (depth < 1)
    c.invalid(fmt::format("depth must be >= 1, got {}", depthValue));
  Value values = c.in(2);
  if (values.type().numel() != 2)
    c.invalid(fmt::format("values must hold [off, on], found {}", typeString(values.type())));
  values = reshape(values, {2});
  Value off = reshape(slice(values, {0}, {1}), {});
  Value on = reshape(slice(values, {1}, {2}), {});
  if (!isInteger(indices.dtype()))
    indices = cast(indices, DType::I64);
  Value hot = oneHot(wrapNegativeIndices(c, indices, depth), depth, DType::Bool);
  int64_t axis = c.attrInt("axis", -1);
  axis = normalizeAxis(c, axis, hot.rank(), "axis");
  c.setOutput(0, moveLastAxisTo(select(hot, on, off), axis));
}

// DCR (depth, column, row) or CRD order of the block within the channels.
void mapDepthToSpace(NodeContext &c) {
  Value x = c.in(0);
  int64_t b = c.attrInt("blocksize");
  if (x.rank() != 4 || b < 1 || x.dim(1) % (b * b) != 0)
    c.invalid(fmt::format("cannot move blocks of {} out of {}", b, typeString(x.type())));
  int64_t n = x.dim(0), ch = x.dim(1) / (b * b), h = x.dim(2), w = x.dim(3);
  Value y;
  if (c.attrString("mode", "DCR") == "CRD")
    y = transpose(reshape(x, {n, ch, b, b, h, w}), {0, 1, 4, 2, 5, 3});
  else
    y = transpose(reshape(x, {n, b, b, ch, h, w}), {0, 3, 4, 1, 5, 2});
  c.setOutput(0, reshape(y, {n, ch, h * b, w * b}));
}

void mapSpaceToDepth(NodeContext &c) {
  Value x = c.in(0);
  int64_t b = c.attrInt("blocksize");
  if (x.rank() != 4 || b < 1 || x.dim(2) % b != 0 || x.dim(3) % b != 0)
    c.invalid(fmt::format("cannot move blocks of {} out of {}", b, typeString(x.type())));
  int64_t n = x.dim(0), ch = x.dim(1), h = x.dim(2) / b, w = x.dim(3) / b;
  Value y = transpose(reshape(x, {n, ch, h, b, w, b}), {0, 3, 5, 1, 2, 4});
  c.setOutput(0, reshape(y, {n, ch * b * b, h, w}));
}

} // namespace stepc::onnx_import
