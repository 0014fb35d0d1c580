// ONNX indexing ops as compositions of stepc ops, and the ops whose result
// shape depends on values, computed at import.
//
// ScatterElements, Scatter, ScatterND: one one-hot mask per update, applied
// in order with select (so a repeated index takes the last update, or
// combines with add / mul / max / min); indices out of range are an error
// when the step runs (one_hot with checked=1). GatherND linearizes its index
// tuples and gathers rows. Compress, NonZero, Unique and NonMaxSuppression
// have result shapes set by their operands' values: stepc shapes are static,
// so those operands must be known at import (a graph input given with
// --input), and the results are computed here.
#include "onnx_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace stepc::onnx_import {

namespace {

// At most this many updates are applied one by one.
constexpr int64_t kMaxScatterUpdates = 4096;

Value checkedOneHot(NodeContext &c, Value indices, int64_t depth) {
  return c.op(OpKind::OneHot, {indices},
              {{"depth", depth}, {"dtype", std::string("bool")}, {"checked", int64_t(1)}});
}

enum class Reduction { None, Add, Mul, Max, Min };

Reduction reductionAttr(NodeContext &c) {
  std::string r = c.attrString("reduction", "none");
  if (r == "none")
    return Reduction::None;
  if (r == "add")
    return Reduction::Add;
  if (r == "mul")
    return Reduction::Mul;
  if (r == "max")
    return Reduction::Max;
  if (r == "min")
    return Reduction::Min;
  c.invalid(fmt::format("reduction '{}' is not one of none, add, mul, max, min", r));
}

Value combine(Reduction r, Value acc, Value update) {
  switch (r) {
  case Reduction::None: return add(mul(acc, scalarLike(acc, 0)), update);
  case Reduction::Add: return add(acc, update);
  case Reduction::Mul: return mul(acc, update);
  case Reduction::Max: return maximum(acc, update);
  case Reduction::Min: return minimum(acc, update);
  }
  return update;
}

Shape without(Shape s, int64_t axis) {
  s.erase(s.begin() + axis);
  return s;
}

} // namespace

void mapScatterElements(NodeContext &c) {
  Value data = c.in(0), indices = c.in(1), updates = c.in(2);
  Reduction reduction = reductionAttr(c);
  int64_t r = data.rank();
  if (indices.rank() != r || updates.shape() != indices.shape())
    c.invalid(fmt::format("data {}, indices {} and updates {} must have one rank, and indices "
                          "the shape of updates",
                          typeString(data.type()), typeString(indices.type()),
                          typeString(updates.type())));
  if (updates.dtype() != data.dtype())
    c.invalid(fmt::format("updates {} must have the type of data {}", typeString(updates.type()),
                          typeString(data.type())));
  int64_t axis = normalizeAxis(c, c.attrInt("axis", 0), r, "axis");
  int64_t n = data.dim(axis), m = indices.dim(axis);
  Shape region = indices.shape();
  region[axis] = n;
  for (int64_t i = 0; i < r; ++i)
    if (region[i] > data.dim(i))
      c.invalid(fmt::format("indices {} do not fit data {}", typeString(indices.type()),
                            typeString(data.type())));
  if (m > kMaxScatterUpdates)
    c.unsupported(fmt::format("{} updates along the axis (at most {})", m, kMaxScatterUpdates));
  Value hot = checkedOneHot(c, wrapNegativeIndices(c, indices, n), n); // [U..., n]
  bool whole = region == data.shape();
  Value acc = whole ? data : slice(data, std::vector<int64_t>(r, 0), region);
  for (int64_t k = 0; k < m; ++k) {
    Value hk = sliceAxis(hot, axis, k, k + 1);
    hk = moveLastAxisTo(reshape(hk, without(hk.shape(), axis)), axis); // [region]
    acc = select(hk, combine(reduction, acc, sliceAxis(updates, axis, k, k + 1)), acc);
  }
  if (!whole) {
    std::vector<int64_t> high(r);
    for (int64_t i = 0; i < r; ++i)
      high[i] = data.dim(i) - region[i];
    Value inside = pad(c.constantOf(Tensor::of<bool>(region, std::vector<bool>(
                                                                 checkedNumel(region), true))),
                       std::vector<int64_t>(r, 0), high, 0);
    acc = select(inside, pad(acc, std::vector<int64_t>(r, 0), high, 0), data);
  }
  c.setOutput(0, acc);
}

namespace {

// The row index into data reshaped to [batch * prod(dims[b:b+k]), ...] of
// each index tuple (the last axis of `indices`, after `batchDims` batch
// axes); a tuple with a component out of range gives -1, which the gather
// or one-hot that reads it reports when the step runs.
Value linearIndex(NodeContext &c, Value data, Value indices, int64_t batchDims) {
  int64_t k = indices.dim(indices.rank() - 1);
  Value zero = c.scalar(0, DType::I64);
  Value inRange = c.scalar(1, DType::Bool);
  Value linear;
  int64_t stride = 1;
  for (int64_t j = k; j-- > 0;) {
    Value component = cast(sliceAxis(indices, indices.rank() - 1, j, j + 1), DType::I64);
    int64_t size = data.dim(batchDims + j);
    component = wrapNegativeIndices(c, component, size);
    Value ok = select(ge(component, zero), lt(component, c.scalar(double(size), DType::I64)),
                      c.scalar(0, DType::Bool));
    inRange = select(inRange, ok, inRange);
    Value term = mul(component, c.scalar(double(stride), DType::I64));
    linear = j == k - 1 ? term : add(linear, term);
    stride *= size;
  }
  Shape tuples = indices.shape();
  tuples.pop_back();
  if (k == 0)
    linear = c.constantOf(Tensor(DType::I64, tuples));
  else
    linear = reshape(linear, tuples);
  if (batchDims > 0) {
    Tensor batchIndex(DType::I64, tuples);
    int64_t perBatch = 1;
    for (size_t i = batchDims; i < tuples.size(); ++i)
      perBatch *= tuples[i];
    for (int64_t i = 0; i < batchIndex.numel(); ++i)
      batchIndex.setReal(i, double((i / perBatch) * stride));
    linear = add(linear, c.constantOf(batchIndex));
  }
  if (k > 0)
    linear = select(reshape(inRange, tuples), linear, c.scalar(-1, DType::I64));
  return linear;
}

// data as [rows, dims after the indexed ones...].
Value rowsOf(Value data, int64_t indexed) {
  Shape shape{1};
  for (int64_t i = 0; i < data.rank(); ++i) {
    if (i < indexed)
      shape[0] *= data.dim(i);
    else
      shape.push_back(data.dim(i));
  }
  return reshape(data, shape);
}

void checkTuples(NodeContext &c, Value data, Value indices, int64_t batchDims) {
  if (!isInteger(indices.dtype()) || indices.rank() < 1)
    c.invalid(fmt::format("indices must be integers of rank >= 1, found {}",
                          typeString(indices.type())));
  int64_t k = indices.dim(indices.rank() - 1);
  if (batchDims < 0 || batchDims >= indices.rank() || batchDims + k > data.rank())
    c.invalid(fmt::format("index tuples of length {} after {} batch axes do not fit data {}", k,
                          batchDims, typeString(data.type())));
  for (int64_t i = 0; i < batchDims; ++i)
    if (indices.dim(i) != data.dim(i))
      c.invalid(fmt::format("batch axis {} differs: indices {}, data {}", i,
                            typeString(indices.type()), typeString(data.type())));
}

} // namespace

void mapGatherND(NodeContext &c) {
  Value data = c.in(0), indices = c.in(1);
  int64_t batchDims = c.attrInt("batch_dims", 0);
  checkTuples(c, data, indices, batchDims);
  int64_t k = indices.dim(indices.rank() - 1);
  Value rows = rowsOf(data, batchDims + k);
  c.setOutput(0, gather(rows, linearIndex(c, data, indices, batchDims), 0));
}


void mapScatterND(NodeContext &c) {
  Value data = c.in(0), indices = c.in(1), updates = c.in(2);
  Reduction reduction = reductionAttr(c);
  checkTuples(c, data, indices, 0);
  int64_t k = indices.dim(indices.rank() - 1);
  Shape expected = indices.shape();
  expected.pop_back();
  for (int64_t i = k; i < data.rank(); ++i)
    expected.push_back(data.dim(i));
  if (updates.shape() != expected || updates.dtype() != data.dtype())
    c.invalid(fmt::format("updates must be {}{}, found {}", dtypeName(data.dtype()),
                          shapeString(expected), typeString(updates.type())));
  Value acc = rowsOf(data, k); // [P, R...]
  int64_t p = acc.dim(0);
  Value linear = reshape(linearIndex(c, data, indices, 0), {-1});
  int64_t q = linear.dim(0);
  if (q > kMaxScatterUpdates)
    c.unsupported(fmt::format("{} updates (at most {})", q, kMaxScatterUpdates));
  Value rows = rowsOf(updates, indices.rank() - 1); // [Q, R...]
  Value hot = checkedOneHot(c, linear, p);          // [Q, P]
  Shape column(static_cast<size_t>(acc.rank()), 1);
  column[0] = p;
  for (int64_t i = 0; i < q; ++i) {
    Value hi = reshape(sliceAxis(hot, 0, i, i + 1), column);
    acc = select(hi, combine(reduction, acc, sliceAxis(rows, 0, i, i + 1)), acc);
  }
  c.setOutput(0, reshape(acc, data.shape()));
}

// ---------------------------------------------------------------------------
// Value-dependent shapes, computed at import.

void mapCompress(NodeContext &c) {
  Value x = c.in(0);
  Tensor condition = c.require(1, "the condition (it sets the result's shape)");
  if (condition.shape().size() != 1)
    c.invalid(fmt::format("the condition must be 1-D, found {}", typeString(condition.type())));
  int64_t axis = 0;
  if (c.hasAttr("axis"))
    axis = normalizeAxis(c, c.attrInt("axis"), x.rank(), "axis");
  else
    x = reshape(x, {x.type().numel()});
  if (condition.numel() > x.dim(axis))
    c.invalid(fmt::format("the condition has {} entries but the axis only {}", condition.numel(),
                          x.dim(axis)));
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < condition.numel(); ++i)
    if (condition.real(i) != 0)
      kept.push_back(i);
  c.setOutput(0, gather(x, indexConstant(c, kept), axis));
}


void mapNonZero(NodeContext &c) {
  Tensor x = c.require(0, "the input (it sets the result's shape)");
  Shape shape = x.shape();
  std::vector<int64_t> strides = rowMajorStrides(shape);
  std::vector<int64_t> hits;
  for (int64_t i = 0; i < x.numel(); ++i)
    if (x.real(i) != 0)
      hits.push_back(i);
  int64_t r = static_cast<int64_t>(shape.size()), n = static_cast<int64_t>(hits.size());
  Tensor out(DType::I64, {r, n});
  for (int64_t j = 0; j < n; ++j)
    for (int64_t a = 0; a < r; ++a)
      out.setReal(a * n + j, double((hits[j] / strides[a]) % shape[a]));
  c.setOutput(0, std::move(out));
}


// Unique elements (or slices along `axis`), sorted or in order of first
// appearance, with the first index, the inverse map and the counts.
void mapUnique(NodeContext &c) {
  Tensor x = c.require(0, "the input (it sets the result's shape)");
  bool sorted = c.attrInt("sorted", 1) != 0;
  Shape shape = x.shape();
  bool hasAxis = c.hasAttr("axis");
  int64_t axis = 0;
  if (hasAxis)
    axis = normalizeAxis(c, c.attrInt("axis"), static_cast<int64_t>(shape.size()), "axis");
  else
    shape = {x.numel()};
  int64_t n = shape[axis];
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i)
    (i < axis ? outer : i > axis ? inner : n) *= i == axis ? 1 : shape[i];
  auto sliceValues = [&](int64_t s) {
    std::vector<double> v;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t in = 0; in < inner; ++in)
        v.push_back(x.real((o * n + s) * inner + in));
    return v;
  };
  std::map<std::vector<double>, int64_t> firstOf; // slice -> first index
  std::vector<int64_t> order;                     // unique slices, first appearance
  std::vector<std::vector<double>> slices(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) {
    slices[s] = sliceValues(s);
    if (firstOf.emplace(slices[s], s).second)
      order.push_back(s);
  }
  if (sorted)
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return slices[a] < slices[b]; });
  int64_t u = static_cast<int64_t>(order.size());
  std::map<std::vector<double>, int64_t> position;
  for (int64_t i = 0; i < u; ++i)
    position[slices[order[i]]] = i;
  Shape yShape = shape;
  yShape[axis] = u;
  Tensor y(x.dtype(), yShape), first(DType::I64, {u}), inverse(DType::I64, {n}),
      counts(DType::I64, {u});
  for (int64_t i = 0; i < u; ++i) {
    first.setReal(i, double(order[i]));
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t in = 0; in < inner; ++in)
        y.setReal((o * u + i) * inner + in, slices[order[i]][o * inner + in]);
  }
  for (int64_t s = 0; s < n; ++s) {
    int64_t p = position[slices[s]];
    inverse.setReal(s, double(p));
    counts.setReal(p, counts.real(p) + 1);
  }
  c.setOutput(0, std::move(y));
  c.setOutput(1, std::move(first));
  c.setOutput(2, std::move(inverse));
  c.setOutput(3, std::move(counts));
}

namespace {

struct Box {
  double y1, x1, y2, x2;
  double area() const { return (y2 - y1) * (x2 - x1); }
};

} // namespace

// Greedy non-maximum suppression per batch and class, as onnxruntime: boxes
// scoring above score_threshold, best first (ties to the lower index), each
// kept unless its IoU with a kept box exceeds iou_threshold.
void mapNonMaxSuppression(NodeContext &c) {
  Tensor boxes = c.require(0, "the boxes (they set the result's shape)");
  Tensor scores = c.require(1, "the scores (they set the result's shape)");
  int64_t maxPerClass =
      c.has(2) ? static_cast<int64_t>(c.requireScalar(2, "max_output_boxes_per_class")) : 0;
  double iouThreshold = c.has(3) ? c.requireScalar(3, "iou_threshold") : 0;
  bool hasScoreThreshold = c.has(4);
  double scoreThreshold = hasScoreThreshold ? c.requireScalar(4, "score_threshold") : 0;
  int64_t centerPoint = c.attrInt("center_point_box", 0);
  if (centerPoint != 0 && centerPoint != 1)
    c.invalid(fmt::format("center_point_box must be 0 or 1, found {}", centerPoint));
  if (boxes.shape().size() != 3 || boxes.shape()[2] != 4 || scores.shape().size() != 3 ||
      scores.shape()[0] != boxes.shape()[0] || scores.shape()[2] != boxes.shape()[1])
    c.invalid(fmt::format("expected boxes [B,N,4] and scores [B,C,N], found {} and {}",
                          typeString(boxes.type()), typeString(scores.type())));
  if (iouThreshold < 0 || iouThreshold > 1)
    c.invalid(fmt::format("iou_threshold {} is outside [0, 1]", iouThreshold));
  int64_t batches = boxes.shape()[0], n = boxes.shape()[1], classes = scores.shape()[1];
  auto boxAt = [&](int64_t b, int64_t i) {
    const int64_t o = (b * n + i) * 4;
    double v[4] = {boxes.real(o), boxes.real(o + 1), boxes.real(o + 2), boxes.real(o + 3)};
    if (centerPoint == 1) // [x_center, y_center, width, height]
      return Box{v[1] - v[3] / 2, v[0] - v[2] / 2, v[1] + v[3] / 2, v[0] + v[2] / 2};
    return Box{std::min(v[0], v[2]), std::min(v[1], v[3]), std::max(v[0], v[2]),
               std::max(v[1], v[3])};
  };
  auto suppresses = [&](const Box &a, const Box &b) {
    double h = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
    double w = std::min(a.x2, b.x2) - std::max(a.x1, b.x1);
    if (h <= 0 || w <= 0 || a.area() <= 0 || b.area() <= 0)
      return false;
    double inter = h * w, uni = a.area() + b.area() - inter;
    return uni > 0 && inter / uni > iouThreshold;
  };
  std::vector<int64_t> selected;
  for (int64_t b = 0; b < batches; ++b)
    for (int64_t k = 0; k < classes && maxPerClass > 0; ++k) {
      std::vector<int64_t> candidates;
      auto score = [&](int64_t i) { return scores.real((b * classes + k) * n + i); };
      for (int64_t i = 0; i < n; ++i)
        if (!hasScoreThreshold || score(i) > scoreThreshold)
          candidates.push_back(i);
      std::stable_sort(candidates.begin(), candidates.end(),
                       [&](int64_t i, int64_t j) { return score(i) > score(j); });
      std::vector<int64_t> kept;
      for (int64_t i : candidates) {
        if (static_cast<int64_t>(kept.size()) >= maxPerClass)
          break;
        bool keep = true;
        for (int64_t j : kept)
          keep = keep && !suppresses(boxAt(b, i), boxAt(b, j));
        if (keep)
          kept.push_back(i);
      }
      for (int64_t i : kept)
        selected.insert(selected.end(), {b, k, i});
    }
  int64_t count = static_cast<int64_t>(selected.size()) / 3;
  c.setOutput(0, Tensor::of<int64_t>({count, 3}, selected));
}


// Reverses the first sequence_lens[b] elements along the time axis of each
// batch entry b: one gather of rows of x flattened to [T * B, rest...], at
// row (len - 1 - t) or t, combined with b.
void mapReverseSequence(NodeContext &c) {
  Value x = c.in(0), lens = c.in(1);
  int64_t timeAxis = c.attrInt("time_axis", 0), batchAxis = c.attrInt("batch_axis", 1);
  if (x.rank() < 2 || !((timeAxis == 0 && batchAxis == 1) || (timeAxis == 1 && batchAxis == 0)))
    c.invalid(fmt::format("expected time_axis and batch_axis to be 0 and 1 (in either order) "
                          "of an input of rank >= 2, found {} and {} of {}",
                          timeAxis, batchAxis, typeString(x.type())));
  int64_t steps = x.dim(timeAxis), batch = x.dim(batchAxis);
  if (!isInteger(lens.dtype()) || lens.rank() != 1 || lens.dim(0) != batch)
    c.invalid(fmt::format("sequence_lens must be integers [{}], found {}", batch,
                          typeString(lens.type())));
  if (std::optional<Tensor> given = c.known(1))
    for (int64_t i = 0; i < given->numel(); ++i)
      if (given->real(i) < 0 || given->real(i) > double(steps))
        c.invalid(fmt::format("sequence_lens[{}] is {}, expected 0 to {} (the time axis)", i,
                              given->real(i), steps));
  Shape grid = timeAxis == 0 ? Shape{steps, batch} : Shape{batch, steps};
  Value t = iota(c.b, DType::I64, grid, timeAxis), b = iota(c.b, DType::I64, grid, batchAxis);
  Value len = reshape(cast(lens, DType::I64), timeAxis == 0 ? Shape{1, batch} : Shape{batch, 1});
  Value one = c.scalar(1, DType::I64);
  Value source = select(lt(t, len), sub(sub(len, one), t), t);
  // Row-major rows of the [grid..., rest...] layout.
  Value row = timeAxis == 0 ? add(mul(source, c.scalar(double(batch), DType::I64)), b)
                            : add(mul(b, c.scalar(double(steps), DType::I64)), source);
  // Lengths known only when the model runs: one outside 0..T makes the
  // gather's index out of range (an error) rather than read another entry.
  Value outOfRange = c.scalar(double(steps * batch), DType::I64);
  row = select(ge(len, c.scalar(0, DType::I64)), row, outOfRange);
  row = select(le(len, c.scalar(double(steps), DType::I64)), row, outOfRange);
  Shape rows = x.shape();
  rows.erase(rows.begin());
  rows[0] = steps * batch;
  c.setOutput(0, gather(reshape(x, rows), row, 0));
}

} // namespace stepc::onnx_import
