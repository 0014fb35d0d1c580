// The shape and dtype rule of every op: one case per op in inferType().
#include "stepc/graph.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>

namespace stepc {
namespace {

// Bound on sizes, strides and paddings: keeps every shape computation below
// far from int64 overflow.
constexpr int64_t kMaxExtent = int64_t(1) << 40;

// Reads an op's attributes and, at the end, rejects any it did not read, so a
// misspelt attribute ("strides" for "stride") is an error, not a silent default.
class AttrReader {
public:
  explicit AttrReader(const Attrs &attrs) : attrs_(attrs) {}

  int64_t integer(std::string_view name) { return mark(name), attrs_.getInt(name); }
  double real(std::string_view name) { return mark(name), attrs_.getReal(name); }
  const std::vector<int64_t> &ints(std::string_view name) {
    return mark(name), attrs_.getInts(name);
  }
  std::vector<double> reals(std::string_view name) {
    return mark(name), attrs_.getReals(name);
  }
  DType dtype(std::string_view name) { return mark(name), attrs_.getDType(name); }
  bool flag(std::string_view name) {
    int64_t v = integer(name);
    if (v != 0 && v != 1)
      throw Error(fmt::format("attribute '{}' must be 0 or 1, got {}", name, v));
    return v == 1;
  }
  bool has(std::string_view name) const { return attrs_.has(name); }
  const Attrs &all() const { return attrs_; }
  void mark(std::string_view name) {
    // Gradient ops read some attributes twice (theirs, then the forward
    // rule's); list each once in the unknown-attribute message.
    if (std::find(used_.begin(), used_.end(), name) == used_.end())
      used_.push_back(name);
  }

  // A list attribute with one entry per spatial/axis position.
  const std::vector<int64_t> &intsOfSize(std::string_view name, size_t size,
                                         int64_t minimum) {
    const auto &v = ints(name);
    if (v.size() != size)
      throw Error(fmt::format("attribute '{}' must have {} entries, got {}", name,
                              size, attrValueSummary(v)));
    for (int64_t x : v)
      if (x < minimum || x > kMaxExtent)
        throw Error(fmt::format("attribute '{}' entries must be in {}..2^40, got {}", name,
                                minimum, attrValueSummary(v)));
    return v;
  }

  void finish() const {
    for (const auto &[name, value] : attrs_.entries())
      if (std::find(used_.begin(), used_.end(), name) == used_.end())
        throw Error(fmt::format("unknown attribute '{}'{}", name,
                                used_.empty() ? std::string(" (this op takes none)")
                                              : fmt::format("; expected: {}",
                                                            fmt::join(used_, ", "))));
  }

private:
  const Attrs &attrs_;
  std::vector<std::string_view> used_;
};

[[noreturn]] void fail(const std::string &message) { throw Error(message); }

int64_t normalizeAxis(int64_t axis, int64_t rank, std::string_view what) {
  if (axis < -rank || axis >= rank || (rank == 0))
    fail(fmt::format("{} {} is out of range for rank {}", what, axis, rank));
  return axis < 0 ? axis + rank : axis;
}

Shape checkedShape(const std::vector<int64_t> &shape) {
  for (int64_t d : shape)
    if (d < 0)
      fail(fmt::format("shape {} has a negative dimension", shapeString(shape)));
  checkedNumel(shape);
  return shape;
}

// NumPy broadcasting: align trailing dims; each pair is equal or one is 1.
Shape broadcastShapes(const Shape &a, const Shape &b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(fmt::format("shapes {} and {} are not broadcastable (dim {}: {} vs {})",
                       shapeString(a), shapeString(b),
                       static_cast<int64_t>(i) - static_cast<int64_t>(rank), da, db));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

void requireFloat(const TensorType &t, std::string_view what = "operand") {
  if (!isFloat(t.dtype))
    fail(fmt::format("expected a floating-point {} (f32 or f64), found {}", what,
                     typeString(t)));
}

void requireNumeric(const TensorType &t, std::string_view what = "operand") {
  if (t.dtype == DType::Bool)
    fail(fmt::format("expected a numeric {}, found {}", what, typeString(t)));
}

// Index operands are i32 or i64: the kernels of every backend read indices in
// those two widths only (ONNX import casts narrower index types to i64).
void requireIndexType(const TensorType &t, std::string_view what) {
  if (t.dtype != DType::I32 && t.dtype != DType::I64)
    fail(fmt::format("expected integer {} (i32 or i64), found {}", what, typeString(t)));
}

void requireSameDType(const TensorType &a, const TensorType &b) {
  if (a.dtype != b.dtype)
    fail(fmt::format("operand dtypes differ: {} and {}; insert a cast",
                     typeString(a), typeString(b)));
}

void requireRank(const TensorType &t, int64_t rank, std::string_view what) {
  if (t.rank() != rank)
    fail(fmt::format("expected {} of rank {}, found {}", what, rank, typeString(t)));
}

TensorType unaryFloat(std::span<const TensorType> in) {
  requireFloat(in[0]);
  return in[0];
}

TensorType unaryNumeric(std::span<const TensorType> in) {
  requireNumeric(in[0]);
  return in[0];
}

TensorType binaryArithmetic(std::span<const TensorType> in) {
  requireSameDType(in[0], in[1]);
  requireNumeric(in[0]);
  return {in[0].dtype, broadcastShapes(in[0].shape, in[1].shape)};
}

TensorType comparison(std::span<const TensorType> in, bool orderedOnly) {
  requireSameDType(in[0], in[1]);
  if (orderedOnly)
    requireNumeric(in[0]);
  return {DType::Bool, broadcastShapes(in[0].shape, in[1].shape)};
}

TensorType reduction(std::span<const TensorType> in, AttrReader &attrs, bool floatOnly) {
  if (floatOnly)
    requireFloat(in[0]);
  else
    requireNumeric(in[0]);
  const auto &axes = attrs.ints("axes");
  bool keepdims = attrs.flag("keepdims");
  std::vector<bool> reduced(in[0].shape.size(), false);
  for (int64_t axis : axes) {
    int64_t a = normalizeAxis(axis, in[0].rank(), "reduction axis");
    if (reduced[a])
      fail(fmt::format("reduction axis {} appears twice in {}", axis,
                       attrValueSummary(axes)));
    reduced[a] = true;
  }
  Shape out;
  for (size_t i = 0; i < reduced.size(); ++i) {
    if (!reduced[i])
      out.push_back(in[0].shape[i]);
    else if (keepdims)
      out.push_back(1);
  }
  return {in[0].dtype, out};
}

TensorType matmul(std::span<const TensorType> in) {
  const TensorType &a = in[0], &b = in[1];
  requireSameDType(a, b);
  requireNumeric(a);
  if (a.rank() < 2 || b.rank() < 2)
    fail(fmt::format("operands must have rank >= 2, found {} x {}", typeString(a),
                     typeString(b)));
  int64_t k1 = a.shape[a.rank() - 1], k2 = b.shape[b.rank() - 2];
  if (k1 != k2)
    fail(fmt::format("inner dimensions differ: {} x {}", shapeString(a.shape),
                     shapeString(b.shape)));
  Shape batchA(a.shape.begin(), a.shape.end() - 2);
  Shape batchB(b.shape.begin(), b.shape.end() - 2);
  Shape out;
  try {
    out = broadcastShapes(batchA, batchB);
  } catch (const Error &) {
    fail(fmt::format("batch dimensions {} and {} are not broadcastable",
                     shapeString(batchA), shapeString(batchB)));
  }
  out.push_back(a.shape[a.rank() - 2]);
  out.push_back(b.shape[b.rank() - 1]);
  return {a.dtype, out};
}

TensorType reshape(const TensorType &x, AttrReader &attrs) {
  Shape shape = attrs.ints("shape");
  int64_t inferred = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (inferred >= 0)
        fail(fmt::format("shape {} has more than one -1", shapeString(shape)));
      inferred = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      fail(fmt::format("shape {} has a negative dimension", shapeString(shape)));
    } else {
      known = checkedNumel({known, shape[i]});
    }
  }
  int64_t numel = x.numel();
  if (inferred >= 0) {
    if (known == 0 || numel % known != 0)
      fail(fmt::format("cannot reshape {} ({} elements) to {}", typeString(x), numel,
                       shapeString(shape)));
    shape[inferred] = numel / known;
  } else if (known != numel) {
    fail(fmt::format("cannot reshape {} ({} elements) to {} ({} elements)",
                     typeString(x), numel, shapeString(shape), known));
  }
  return {x.dtype, shape};
}

TensorType broadcastTo(const TensorType &x, AttrReader &attrs) {
  Shape target = checkedShape(attrs.ints("shape"));
  bool ok = x.rank() <= static_cast<int64_t>(target.size());
  for (int64_t i = 0; ok && i < x.rank(); ++i) {
    int64_t d = x.shape[x.rank() - 1 - i];
    ok = d == 1 || d == target[target.size() - 1 - i];
  }
  if (!ok)
    fail(fmt::format("cannot broadcast {} to {}", typeString(x), shapeString(target)));
  return {x.dtype, target};
}

TensorType slice(const TensorType &x, AttrReader &attrs) {
  size_t r = x.shape.size();
  const auto &starts = attrs.intsOfSize("starts", r, 0);
  const auto &limits = attrs.intsOfSize("limits", r, 0);
  const auto &strides = attrs.intsOfSize("strides", r, 1);
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    if (starts[i] > limits[i] || limits[i] > x.shape[i])
      fail(fmt::format("axis {}: slice [{}:{}] is outside 0..{} of {}", i, starts[i],
                       limits[i], x.shape[i], typeString(x)));
    out[i] = limits[i] == starts[i] ? 0 : (limits[i] - starts[i] - 1) / strides[i] + 1;
  }
  return {x.dtype, out};
}

TensorType concat(std::span<const TensorType> in, AttrReader &attrs) {
  int64_t axis = normalizeAxis(attrs.integer("axis"), in[0].rank(), "concat axis");
  Shape out = in[0].shape;
  for (size_t i = 1; i < in.size(); ++i) {
    requireSameDType(in[0], in[i]);
    bool ok = in[i].rank() == in[0].rank();
    for (int64_t d = 0; ok && d < in[0].rank(); ++d)
      ok = d == axis || in[i].shape[d] == in[0].shape[d];
    if (!ok)
      fail(fmt::format("operand {} has type {}, which does not match {} outside axis {}",
                       i, typeString(in[i]), typeString(in[0]), axis));
    if (out[axis] > std::numeric_limits<int64_t>::max() - in[i].shape[axis])
      fail(fmt::format("axis {} of the result has more elements than fit in 64 bits", axis));
    out[axis] += in[i].shape[axis];
  }
  return {in[0].dtype, out};
}

TensorType pad(const TensorType &x, AttrReader &attrs) {
  const auto &low = attrs.intsOfSize("low", x.shape.size(), 0);
  const auto &high = attrs.intsOfSize("high", x.shape.size(), 0);
  attrs.real("value");
  std::vector<int64_t> interior(x.shape.size(), 0);
  if (attrs.has("interior"))
    interior = attrs.intsOfSize("interior", x.shape.size(), 0);
  Shape out = x.shape;
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t spread = checkedNumel({interior[i], std::max<int64_t>(x.shape[i] - 1, 0)});
    if (spread > kMaxExtent || out[i] > kMaxExtent)
      fail(fmt::format("padded axis {} of {} would exceed 2^40 elements", i, typeString(x)));
    out[i] += low[i] + high[i] + spread;
  }
  return {x.dtype, checkedShape(out)};
}

TensorType gather(std::span<const TensorType> in, AttrReader &attrs) {
  const TensorType &data = in[0], &indices = in[1];
  requireIndexType(indices, "indices");
  int64_t axis = normalizeAxis(attrs.integer("axis"), data.rank(), "gather axis");
  Shape out(data.shape.begin(), data.shape.begin() + axis);
  out.insert(out.end(), indices.shape.begin(), indices.shape.end());
  out.insert(out.end(), data.shape.begin() + axis + 1, data.shape.end());
  return {data.dtype, checkedShape(out)};
}

// Output size of a sliding window; fails when the window does not fit.
int64_t windowOutput(int64_t input, int64_t kernel, int64_t stride, int64_t padding,
                     int64_t dilation, std::string_view axis) {
  if (kernel > kMaxExtent || input > kMaxExtent)
    fail(fmt::format("{} of {} with kernel {} exceeds 2^40", axis, input, kernel));
  int64_t span = checkedNumel({dilation, kernel - 1}) + 1;
  int64_t padded = input + 2 * padding;
  if (padded < span)
    fail(fmt::format("window of {} (kernel {}, dilation {}) does not fit the {} of {} "
                     "plus padding {}",
                     span, kernel, dilation, axis, input, padding));
  return (padded - span) / stride + 1;
}

TensorType conv2d(std::span<const TensorType> in, AttrReader &attrs) {
  const TensorType &x = in[0], &w = in[1];
  requireRank(x, 4, "input x[N,C,H,W]");
  requireRank(w, 4, "weight w[O,C/groups,KH,KW]");
  requireFloat(x, "input");
  requireSameDType(x, w);
  const auto &stride = attrs.intsOfSize("stride", 2, 1);
  const auto &padding = attrs.intsOfSize("padding", 2, 0);
  const auto &dilation = attrs.intsOfSize("dilation", 2, 1);
  int64_t groups = attrs.integer("groups");
  if (groups < 1 || groups > kMaxExtent)
    fail(fmt::format("groups must be in 1..2^40, got {}", groups));
  int64_t c = x.shape[1], o = w.shape[0];
  if (c % groups != 0 || o % groups != 0)
    fail(fmt::format("input channels {} and output channels {} must both be divisible "
                     "by groups {}",
                     c, o, groups));
  if (w.shape[1] != c / groups)
    fail(fmt::format("weight {} expects {} input channels per group, but input {} "
                     "with groups={} has {}",
                     shapeString(w.shape), w.shape[1], shapeString(x.shape), groups,
                     c / groups));
  int64_t oh = windowOutput(x.shape[2], w.shape[2], stride[0], padding[0], dilation[0], "height");
  int64_t ow = windowOutput(x.shape[3], w.shape[3], stride[1], padding[1], dilation[1], "width");
  return {x.dtype, {x.shape[0], o, oh, ow}};
}

TensorType pool2d(const TensorType &x, AttrReader &attrs, bool average) {
  requireRank(x, 4, "input x[N,C,H,W]");
  requireFloat(x, "input");
  const auto &kernel = attrs.intsOfSize("kernel", 2, 1);
  const auto &stride = attrs.intsOfSize("stride", 2, 1);
  const auto &padding = attrs.intsOfSize("padding", 2, 0);
  if (average)
    attrs.flag("count_include_pad");
  // Every window must hold at least one real element (PyTorch's rule too).
  for (int i = 0; i < 2; ++i)
    if (padding[i] * 2 > kernel[i])
      fail(fmt::format("padding {} must be at most half the kernel {}",
                       attrValueSummary(padding), attrValueSummary(kernel)));
  // With an empty height or width, padding alone would make windows with no
  // real element (a max of nothing, an average over zero elements).
  for (int i = 0; i < 2; ++i)
    if (x.shape[2 + i] == 0)
      fail(fmt::format("input {} has an empty {}: every window would hold padding only",
                       typeString(x), i == 0 ? "height" : "width"));
  int64_t oh = windowOutput(x.shape[2], kernel[0], stride[0], padding[0], 1, "height");
  int64_t ow = windowOutput(x.shape[3], kernel[1], stride[1], padding[1], 1, "width");
  return {x.dtype, {x.shape[0], x.shape[1], oh, ow}};
}

TensorType scatterAdd(std::span<const TensorType> in, AttrReader &attrs) {
  const TensorType &indices = in[0], &updates = in[1];
  requireIndexType(indices, "indices");
  int64_t axis = attrs.integer("axis");
  int64_t size = attrs.integer("size");
  int64_t ir = indices.rank();
  if (axis < 0 || axis > updates.rank() || ir > updates.rank() - axis)
    fail(fmt::format("axis {} does not fit indices {} into updates {}", axis,
                     typeString(indices), typeString(updates)));
  if (size < 0)
    fail(fmt::format("size must be >= 0, got {}", size));
  Shape middle(updates.shape.begin() + axis, updates.shape.begin() + axis + ir);
  if (middle != indices.shape)
    fail(fmt::format("updates {} do not have indices' shape {} at axis {}",
                     typeString(updates), shapeString(indices.shape), axis));
  Shape out(updates.shape.begin(), updates.shape.begin() + axis);
  out.push_back(size);
  out.insert(out.end(), updates.shape.begin() + axis + ir, updates.shape.end());
  return {updates.dtype, out};
}

// The gradient ops of conv2d and the pools recompute the forward shape from
// their result and require it to match the incoming gradient.
void requireForwardShape(const TensorType &forward, const TensorType &gradient) {
  if (forward.shape != gradient.shape)
    fail(fmt::format("gradient {} does not match the forward result shape {}",
                     typeString(gradient), shapeString(forward.shape)));
}

TensorType conv2dGradInput(std::span<const TensorType> in, AttrReader &attrs) {
  const TensorType &g = in[0], &w = in[1];
  requireRank(g, 4, "gradient g[N,O,OH,OW]");
  requireRank(w, 4, "weight w[O,C/groups,KH,KW]");
  requireFloat(g, "gradient");
  requireSameDType(g, w);
  // 0 allowed: conv2d accepts an empty height or width when padded.
  const auto &hw = attrs.intsOfSize("input_hw", 2, 0);
  int64_t groups = attrs.integer("groups");
  TensorType x{g.dtype,
               {g.shape[0], checkedNumel({w.shape[1], std::max<int64_t>(groups, 1)}), hw[0], hw[1]}};
  TensorType forward[] = {x, w};
  requireForwardShape(conv2d(forward, attrs), g);
  return x;
}

TensorType conv2dGradWeight(std::span<const TensorType> in, AttrReader &attrs) {
  const TensorType &x = in[0], &g = in[1];
  requireRank(x, 4, "input x[N,C,H,W]");
  requireRank(g, 4, "gradient g[N,O,OH,OW]");
  requireSameDType(x, g);
  const auto &kernel = attrs.intsOfSize("kernel", 2, 1);
  int64_t groups = std::max<int64_t>(attrs.integer("groups"), 1);
  TensorType w{x.dtype, {g.shape[1], x.shape[1] / groups, kernel[0], kernel[1]}};
  TensorType forward[] = {x, w};
  requireForwardShape(conv2d(forward, attrs), g);
  return w;
}

TensorType maxPool2dGrad(std::span<const TensorType> in, AttrReader &attrs) {
  requireSameDType(in[0], in[1]);
  requireForwardShape(pool2d(in[0], attrs, false), in[1]);
  return in[0];
}

TensorType avgPool2dGrad(const TensorType &g, AttrReader &attrs) {
  requireRank(g, 4, "gradient g[N,C,OH,OW]");
  const auto &hw = attrs.intsOfSize("input_hw", 2, 1);
  TensorType x{g.dtype, {g.shape[0], g.shape[1], hw[0], hw[1]}};
  requireForwardShape(pool2d(x, attrs, true), g);
  return x;
}

TensorType inferUnchecked(OpKind op, AttrReader &attrs, std::span<const TensorType> in) {
  switch (op) {
  case OpKind::Input:
    return {attrs.dtype("dtype"), checkedShape(attrs.ints("shape"))};
  case OpKind::Parameter: {
    TensorType t{attrs.dtype("dtype"), checkedShape(attrs.ints("shape"))};
    for (const char *name : {"init", "value", "mean", "std", "low", "high", "seed"})
      attrs.mark(name);
    Init::fromAttrs(attrs.all());
    return t;
  }
  case OpKind::Constant: {
    TensorType t{attrs.dtype("dtype"), checkedShape(attrs.ints("shape"))};
    bool fill = attrs.has("value"), data = attrs.has("data");
    if (fill == data)
      fail("expected exactly one of the attributes 'value' (fill) or 'data' (elements)");
    if (fill)
      attrs.real("value");
    else if (int64_t n = static_cast<int64_t>(attrs.reals("data").size()); n != t.numel())
      fail(fmt::format("'data' has {} elements but {} needs {}", n, typeString(t),
                       t.numel()));
    return t;
  }
  case OpKind::Iota: {
    TensorType t{attrs.dtype("dtype"), checkedShape(attrs.ints("shape"))};
    requireNumeric(t, "result type");
    normalizeAxis(attrs.integer("axis"), t.rank(), "iota axis");
    return t;
  }
  case OpKind::Neg:
  case OpKind::Abs:
  case OpKind::Square:
  case OpKind::Relu:
  case OpKind::Sign:
    return unaryNumeric(in);
  case OpKind::Exp:
  case OpKind::Log:
  case OpKind::Sqrt:
  case OpKind::Rsqrt:
  case OpKind::Tanh:
  case OpKind::Sigmoid:
  case OpKind::Sin:
  case OpKind::Cos:
  case OpKind::Erf:
    return unaryFloat(in);
  case OpKind::Cast:
    return {attrs.dtype("dtype"), in[0].shape};
  case OpKind::Add:
  case OpKind::Sub:
  case OpKind::Mul:
  case OpKind::Div:
  case OpKind::Maximum:
  case OpKind::Minimum:
  case OpKind::Rem:
    return binaryArithmetic(in);
  case OpKind::Pow:
    requireFloat(in[0]);
    return binaryArithmetic(in);
  case OpKind::Eq:
  case OpKind::Ne:
    return comparison(in, false);
  case OpKind::Lt:
  case OpKind::Le:
  case OpKind::Gt:
  case OpKind::Ge:
    return comparison(in, true);
  case OpKind::Select: {
    if (in[0].dtype != DType::Bool)
      fail(fmt::format("condition must be bool, found {}", typeString(in[0])));
    requireSameDType(in[1], in[2]);
    Shape s = broadcastShapes(broadcastShapes(in[0].shape, in[1].shape), in[2].shape);
    return {in[1].dtype, s};
  }
  case OpKind::ReduceSum:
  case OpKind::ReduceMax:
  case OpKind::ReduceMin:
    return reduction(in, attrs, false);
  case OpKind::ReduceMean:
    return reduction(in, attrs, true);
  case OpKind::ArgMax: {
    requireNumeric(in[0]);
    int64_t axis = normalizeAxis(attrs.integer("axis"), in[0].rank(), "argmax axis");
    Shape out = in[0].shape;
    if (attrs.flag("keepdims"))
      out[axis] = 1;
    else
      out.erase(out.begin() + axis);
    // Shapes are static, so an index of the maximum of nothing is an error
    // here rather than a value some backend would have to make up.
    if (in[0].shape[axis] == 0 && checkedNumel(out) > 0)
      fail(fmt::format("axis {} of {} is empty, so it has no maximum", axis,
                       typeString(in[0])));
    return {DType::I64, out};
  }
  case OpKind::MatMul:
    return matmul(in);
  case OpKind::Transpose: {
    const auto &perm = attrs.ints("perm");
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    bool ok = static_cast<int64_t>(perm.size()) == in[0].rank();
    for (size_t i = 0; ok && i < sorted.size(); ++i)
      ok = sorted[i] == static_cast<int64_t>(i);
    if (!ok)
      fail(fmt::format("perm {} is not a permutation of the {} axes of {}",
                       attrValueSummary(perm), in[0].rank(), typeString(in[0])));
    Shape out(perm.size());
    for (size_t i = 0; i < perm.size(); ++i)
      out[i] = in[0].shape[perm[i]];
    return {in[0].dtype, out};
  }
  case OpKind::Reshape:
    return reshape(in[0], attrs);
  case OpKind::BroadcastTo:
    return broadcastTo(in[0], attrs);
  case OpKind::Slice:
    return slice(in[0], attrs);
  case OpKind::Concat:
    return concat(in, attrs);
  case OpKind::Pad:
    return pad(in[0], attrs);
  case OpKind::Gather:
    return gather(in, attrs);
  case OpKind::OneHot: {
    requireIndexType(in[0], "indices");
    int64_t depth = attrs.integer("depth");
    if (depth < 1)
      fail(fmt::format("depth must be >= 1, got {}", depth));
    // checked=1: an index outside [0, depth) is an error, not a zero row.
    if (attrs.has("checked"))
      attrs.flag("checked");
    Shape out = in[0].shape;
    out.push_back(depth);
    return {attrs.dtype("dtype"), checkedShape(out)};
  }
  case OpKind::Conv2d:
    return conv2d(in, attrs);
  case OpKind::MaxPool2d:
    return pool2d(in[0], attrs, false);
  case OpKind::AvgPool2d:
    return pool2d(in[0], attrs, true);
  case OpKind::ScatterAdd:
    return scatterAdd(in, attrs);
  case OpKind::Conv2dGradInput:
    return conv2dGradInput(in, attrs);
  case OpKind::Conv2dGradWeight:
    return conv2dGradWeight(in, attrs);
  case OpKind::MaxPool2dGrad:
    return maxPool2dGrad(in, attrs);
  case OpKind::AvgPool2dGrad:
    return avgPool2dGrad(in[0], attrs);
  case OpKind::Dropout: {
    requireFloat(in[0], "input");
    if (in[1].dtype != DType::I64 || in[1].rank() != 0)
      fail(fmt::format("seed must be an i64 scalar (i64[]), found {}", typeString(in[1])));
    double rate = attrs.real("rate");
    if (!(rate >= 0 && rate < 1))
      fail(fmt::format("rate must be in [0, 1), got {}", rate));
    return in[0];
  }
  case OpKind::AllReduce: {
    attrs.mark("reduction");
    const std::string &reduction = attrs.all().getString("reduction");
    if (reduction == "mean")
      requireFloat(in[0]);
    else if (reduction == "sum")
      requireNumeric(in[0]);
    else
      fail(fmt::format("reduction must be sum or mean, got '{}'", reduction));
    return in[0];
  }
  }
  fail("unknown op");
}

} // namespace

TensorType inferType(OpKind op, const Attrs &attrs, std::span<const TensorType> operands) {
  try {
    AttrReader reader(attrs);
    TensorType type = inferUnchecked(op, reader, operands);
    // remat=N (N >= 1) marks a copy the rematerialization pass made
    // (remat.cpp): the same value as its original, kept apart from it (and
    // from the copies made for other users) by CSE and fusion.
    if (reader.has("remat") && opInfo(op).opClass != OpClass::Source)
      if (int64_t n = reader.integer("remat"); n < 1)
        throw Error(fmt::format("attribute 'remat' must be at least 1, got {}", n));
    reader.finish();
    // Every result has a representable element count, whatever its rule
    // (broadcasts, matmul, concat and the gradient ops' sizes can grow it).
    checkedShape(type.shape);
    return type;
  } catch (const Error &e) {
    throw Error(fmt::format("{}: {}", opInfo(op).name, e.what()));
  }
}

} // namespace stepc
