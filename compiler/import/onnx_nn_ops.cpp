// Mapping functions of the ONNX neural-network ops: convolution, pooling,
// normalization, padding and activations (the table is in onnx_ops.cpp).
#include "onnx_ops.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>
#include <numbers>

namespace stepc::onnx_import {
namespace {

// A sliding window over the spatial axes (everything after N and C).
struct Window {
  std::vector<int64_t> kernel, stride, dilation, low, high;

  size_t rank() const { return kernel.size(); }
  int64_t span(size_t i) const { return dilation[i] * (kernel[i] - 1) + 1; }
};

std::vector<int64_t> spatialAttr(NodeContext &c, std::string_view name, size_t rank) {
  std::vector<int64_t> v = c.attrInts(name, std::vector<int64_t>(rank, 1));
  if (v.size() != rank)
    c.invalid(
        fmt::format("attribute '{}' needs {} entries, got [{}]", name, rank, fmt::join(v, ",")));
  for (int64_t x : v)
    if (x < 1)
      c.invalid(
          fmt::format("attribute '{}' entries must be >= 1, got [{}]", name, fmt::join(v, ",")));
  return v;
}

// Fills the window's pads from `pads` or `auto_pad`. SAME_* pads so that
// the output has ceil(input / stride) elements, the odd one at the end
// (SAME_UPPER) or the beginning (SAME_LOWER).
void windowPads(NodeContext &c, const Shape &spatial, Window &w) {
  size_t n = w.rank();
  w.low.assign(n, 0);
  w.high.assign(n, 0);
  std::string autoPad = c.attrString("auto_pad", "NOTSET");
  if (autoPad == "NOTSET") {
    std::vector<int64_t> pads = c.attrInts("pads", std::vector<int64_t>(2 * n, 0));
    if (pads.size() != 2 * n)
      c.invalid(fmt::format("pads [{}] need {} entries", fmt::join(pads, ","), 2 * n));
    for (size_t i = 0; i < n; ++i) {
      w.low[i] = pads[i];
      w.high[i] = pads[n + i];
      if (w.low[i] < 0 || w.high[i] < 0)
        c.unsupported(fmt::format("negative pads [{}]", fmt::join(pads, ",")));
    }
  } else if (autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER") {
    for (size_t i = 0; i < n; ++i) {
      int64_t out = (spatial[i] + w.stride[i] - 1) / w.stride[i];
      int64_t total = std::max<int64_t>(0, (out - 1) * w.stride[i] + w.span(i) - spatial[i]);
      w.low[i] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2;
      w.high[i] = total - w.low[i];
    }
  } else if (autoPad != "VALID") {
    c.invalid(fmt::format("unknown auto_pad '{}'", autoPad));
  }
}

Shape spatialOf(Value x) {
  Shape shape = x.shape();
  return Shape(shape.begin() + 2, shape.end());
}

// Prepends a unit axis to the spatial axes, so 1-D convolutions and pools
// run as 2-D ones of height 1.
void liftWindowTo2d(Window &w) {
  w.kernel.insert(w.kernel.begin(), 1);
  w.stride.insert(w.stride.begin(), 1);
  w.dilation.insert(w.dilation.begin(), 1);
  w.low.insert(w.low.begin(), 0);
  w.high.insert(w.high.begin(), 0);
}

Value lift1dTo2d(Value x) { return reshape(x, {x.dim(0), x.dim(1), 1, x.dim(2)}); }

// Zero-pads the spatial axes explicitly (for pads stepc's symmetric padding
// attribute cannot express).
Value padSpatial(Value x, const std::vector<int64_t> &low, const std::vector<int64_t> &high,
                 double value) {
  std::vector<int64_t> lo{0, 0}, hi{0, 0};
  lo.insert(lo.end(), low.begin(), low.end());
  hi.insert(hi.end(), high.begin(), high.end());
  return pad(x, lo, hi, value);
}

// Per-channel parameters [C] shaped to broadcast over [N, C, spatial...].
Value perChannel(Value v, int64_t rank) {
  Shape shape{v.type().numel()};
  shape.resize(static_cast<size_t>(std::max<int64_t>(rank - 1, 1)), 1);
  return reshape(v, shape);
}

std::vector<int64_t> spatialAxes(Value x) {
  std::vector<int64_t> axes;
  for (int64_t i = 2; i < x.rank(); ++i)
    axes.push_back(i);
  return axes;
}

// ---------------------------------------------------------------------------
// Pooling.

// Pools of any rank, dilation, padding and ceil_mode. A window's max (or
// sum) is separable, so each spatial axis is reduced in turn: the
// elementwise max (or sum) of one strided slice per kernel offset along that
// axis. Average pooling then divides by a constant count of the elements
// each window covers (also separable).
Value generalPool(NodeContext &c, Value x, const Window &w, const std::vector<int64_t> &out,
                  bool isMax, bool includePad) {
  size_t n = w.rank();
  Shape in = spatialOf(x);
  std::vector<int64_t> high(n);
  bool padded = false;
  for (size_t i = 0; i < n; ++i) {
    // ceil_mode: windows may run past the padded input; pad those too.
    int64_t covered = (out[i] - 1) * w.stride[i] + w.span(i);
    high[i] = w.high[i] + std::max<int64_t>(0, covered - (in[i] + w.low[i] + w.high[i]));
    padded = padded || w.low[i] || high[i];
  }
  double fill = isMax ? -std::numeric_limits<double>::infinity() : 0.0;
  Value acc = padded ? padSpatial(x, w.low, high, fill) : x;
  for (size_t i = 0; i < n; ++i) {
    int64_t axis = static_cast<int64_t>(i) + 2;
    Value reduced;
    for (int64_t a = 0; a < w.kernel[i]; ++a) {
      std::vector<int64_t> starts(static_cast<size_t>(acc.rank()), 0),
          limits = acc.shape(), strides(static_cast<size_t>(acc.rank()), 1);
      starts[axis] = a * w.dilation[i];
      limits[axis] = starts[axis] + (out[i] - 1) * w.stride[i] + 1;
      strides[axis] = w.stride[i];
      Value part = slice(acc, starts, limits, strides);
      reduced = !reduced.valid() ? part : isMax ? maximum(reduced, part) : add(reduced, part);
    }
    acc = reduced;
  }
  if (isMax)
    return acc;
  Shape countShape{1, 1};
  countShape.insert(countShape.end(), out.begin(), out.end());
  Tensor count(x.dtype(), countShape);
  std::vector<std::vector<int64_t>> perAxis(n);
  for (size_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out[i]; ++o) {
      int64_t k = 0;
      for (int64_t a = 0; a < w.kernel[i]; ++a) {
        int64_t p = o * w.stride[i] + a * w.dilation[i];
        k += includePad ? p < in[i] + w.low[i] + w.high[i] : p >= w.low[i] && p < w.low[i] + in[i];
      }
      perAxis[i].push_back(k);
    }
  std::vector<int64_t> index(n, 0);
  for (int64_t flat = 0; flat < count.numel(); ++flat) {
    int64_t rest = flat, product = 1;
    for (size_t i = n; i-- > 0;) {
      index[i] = rest % out[i];
      rest /= out[i];
      product *= perAxis[i][index[i]];
    }
    count.setReal(flat, double(product));
  }
  return div(acc, c.constantOf(count));
}

void pool(NodeContext &c, bool isMax) {
  Value x = c.in(0);
  if (isMax && c.wants(1))
    c.unsupported("the Indices output of MaxPool is not supported");
  if (x.rank() < 3)
    c.invalid(fmt::format("expected an input [N, C, spatial...], found {}", typeString(x.type())));
  size_t n = static_cast<size_t>(x.rank() - 2);
  Window w;
  w.kernel = c.attrInts("kernel_shape");
  if (w.kernel.size() != n)
    c.invalid(fmt::format("kernel_shape [{}] needs {} entries", fmt::join(w.kernel, ","), n));
  for (int64_t k : w.kernel)
    if (k < 1)
      c.invalid(fmt::format("kernel_shape entries must be >= 1, got [{}]", fmt::join(w.kernel, ",")));
  w.stride = spatialAttr(c, "strides", n);
  w.dilation = spatialAttr(c, "dilations", n);
  Shape in = spatialOf(x);
  windowPads(c, in, w);
  bool ceilMode = c.attrInt("ceil_mode", 0) != 0;
  bool includePad = !isMax && c.attrInt("count_include_pad", 0) != 0;
  std::vector<int64_t> out(n);
  bool native = n <= 2;
  for (size_t i = 0; i < n; ++i) {
    int64_t room = in[i] + w.low[i] + w.high[i] - w.span(i);
    if (room < 0)
      c.invalid(fmt::format("the window [{}] does not fit the input {}", fmt::join(w.kernel, ","),
                            typeString(x.type())));
    out[i] = (ceilMode ? (room + w.stride[i] - 1) / w.stride[i] : room / w.stride[i]) + 1;
    native = native && w.dilation[i] == 1 && w.low[i] == w.high[i] && 2 * w.low[i] <= w.kernel[i] &&
             out[i] == room / w.stride[i] + 1;
  }
  if (!native) {
    for (int64_t k : w.kernel)
      if (k > 4096)
        c.unsupported(fmt::format("a kernel of [{}]: the general pooling path takes one "
                                  "slice per kernel element along each axis, at most 4096",
                                  fmt::join(w.kernel, ",")));
    c.setOutput(0, generalPool(c, x, w, out, isMax, includePad));
    return;
  }
  // max_pool2d is a float kernel; 8- and 16-bit integers (ONNX allows int8
  // and uint8) are exact in f32, so they pool there and come back.
  DType original = x.dtype();
  bool viaFloat = isMax && isInteger(original) && dtypeSize(original) <= 2;
  Value x4 = n == 1 ? lift1dTo2d(x) : x;
  if (viaFloat)
    x4 = cast(x4, DType::F32);
  if (n == 1)
    liftWindowTo2d(w);
  Pool2dOptions options{w.kernel, w.stride, w.low, includePad};
  Value y = isMax ? maxPool2d(x4, options) : avgPool2d(x4, options);
  if (viaFloat)
    y = cast(y, original);
  c.setOutput(0, n == 1 ? reshape(y, {y.dim(0), y.dim(1), y.dim(3)}) : y);
}

} // namespace

void mapMaxPool(NodeContext &c) { pool(c, true); }
void mapAveragePool(NodeContext &c) { pool(c, false); }

void mapGlobalAveragePool(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, mean(x, spatialAxes(x), true));
}

void mapGlobalMaxPool(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, max(x, spatialAxes(x), true));
}

// ---------------------------------------------------------------------------
// Convolution: 2-D natively, 1-D as 2-D of height 1, and 3-D as a sum over
// the kernel's depth of 2-D convolutions, each of one strided depth slice of
// the input with the depth positions folded into the batch. Pads stepc's
// symmetric padding cannot express become an explicit pad.

namespace {

Value conv2dPadded(Value x, Value weight, const Window &w, int64_t groups) {
  std::vector<int64_t> padding = w.low;
  if (w.low != w.high) {
    x = padSpatial(x, w.low, w.high, 0);
    padding.assign(2, 0);
  }
  return conv2d(x, weight, {w.stride, padding, w.dilation, groups});
}

Value conv3d(Value x, Value weight, const Window &w, int64_t groups) {
  // Depth padding is explicit; height and width go to conv2d.
  Value xp = x;
  if (w.low[0] || w.high[0])
    xp = pad(x, {0, 0, w.low[0], 0, 0}, {0, 0, w.high[0], 0, 0});
  Window plane{{w.kernel[1], w.kernel[2]},
               {w.stride[1], w.stride[2]},
               {w.dilation[1], w.dilation[2]},
               {w.low[1], w.low[2]},
               {w.high[1], w.high[2]}};
  int64_t n = x.dim(0), ch = x.dim(1), h = x.dim(3), wd = x.dim(4);
  int64_t o = weight.dim(0), cg = weight.dim(1);
  int64_t room = xp.dim(2) - w.span(0);
  if (room < 0)
    throw Error(fmt::format("the kernel depth {} does not fit the input {}", w.kernel[0],
                            typeString(x.type())));
  int64_t depth = room / w.stride[0] + 1;
  Value sum;
  for (int64_t a = 0; a < w.kernel[0]; ++a) {
    int64_t first = a * w.dilation[0];
    Value xa = slice(xp, {0, 0, first, 0, 0}, {n, ch, first + (depth - 1) * w.stride[0] + 1, h, wd},
                     {1, 1, w.stride[0], 1, 1});
    xa = reshape(transpose(xa, {0, 2, 1, 3, 4}), {n * depth, ch, h, wd});
    Value wa = slice(weight, {0, 0, a, 0, 0}, {o, cg, a + 1, w.kernel[1], w.kernel[2]});
    wa = reshape(wa, {o, cg, w.kernel[1], w.kernel[2]});
    Value ya = conv2dPadded(xa, wa, plane, groups);
    sum = sum.valid() ? add(sum, ya) : ya;
  }
  Value y = reshape(sum, {n, depth, o, sum.dim(2), sum.dim(3)});
  return transpose(y, {0, 2, 1, 3, 4});
}

} // namespace

void mapConv(NodeContext &c) {
  Value x = c.in(0), weight = c.in(1);
  int64_t n = x.rank() - 2;
  if (n < 1 || n > 3)
    c.unsupported(fmt::format("{}-D convolution is not supported (1-D, 2-D and 3-D are)", n));
  if (weight.rank() != x.rank())
    c.invalid(fmt::format("weight {} does not match input {}", typeString(weight.type()),
                          typeString(x.type())));
  Window w;
  Shape kernel = spatialOf(weight);
  w.kernel = c.attrInts("kernel_shape", kernel);
  if (w.kernel != kernel)
    c.invalid(fmt::format("kernel_shape [{}] differs from the weight {}", fmt::join(w.kernel, ","),
                          typeString(weight.type())));
  w.stride = spatialAttr(c, "strides", static_cast<size_t>(n));
  w.dilation = spatialAttr(c, "dilations", static_cast<size_t>(n));
  windowPads(c, spatialOf(x), w);
  int64_t groups = c.attrInt("group", 1);
  Value y;
  if (n == 3) {
    y = conv3d(x, weight, w, groups);
  } else if (n == 2) {
    y = conv2dPadded(x, weight, w, groups);
  } else {
    liftWindowTo2d(w);
    y = conv2dPadded(lift1dTo2d(x), lift1dTo2d(weight), w, groups);
    y = reshape(y, {y.dim(0), y.dim(1), y.dim(3)});
  }
  if (c.has(2))
    y = add(y, perChannel(c.in(2), y.rank()));
  c.setOutput(0, y);
}

// ---------------------------------------------------------------------------
// Normalization.

// Inference form: y = (x - mean) * scale / sqrt(var + eps) + bias, per channel.
void mapBatchNormalization(NodeContext &c) {
  if (c.attrInt("training_mode", 0) != 0)
    c.unsupported("training mode is not supported (inference only)");
  for (size_t i = 1; i < c.numOutputs(); ++i)
    if (c.wants(i))
      c.unsupported("the running-statistics outputs (training mode) are not supported");
  Value x = c.in(0);
  bool spatial = c.opset >= 9 || c.attrInt("spatial", 1) != 0;
  auto channel = [&](Value v) { return spatial ? perChannel(v, x.rank()) : v; };
  double eps = c.attrFloat("epsilon", 1e-5);
  Value var = channel(c.in(4));
  Value factor = div(channel(c.in(1)), sqrt(add(var, scalarOf(c, var, eps))));
  Value y = add(mul(sub(x, channel(c.in(3))), factor), channel(c.in(2)));
  c.setOutput(0, y);
}

void mapInstanceNormalization(NodeContext &c) {
  Value x = c.in(0);
  double eps = c.attrFloat("epsilon", 1e-5);
  std::vector<int64_t> axes = spatialAxes(x);
  Value centered = sub(x, mean(x, axes, true));
  Value var = mean(square(centered), axes, true);
  Value y = div(centered, sqrt(add(var, scalarOf(c, var, eps))));
  y = add(mul(y, perChannel(c.in(1), x.rank())), perChannel(c.in(2), x.rank()));
  c.setOutput(0, y);
}

// Normalizes over the axes from `axis` to the end; Mean and InvStdDev keep
// the reduced axes as 1s.
void mapLayerNormalization(NodeContext &c) {
  Value x = c.in(0);
  int64_t axis = normalizeAxis(c, c.attrInt("axis", -1), x.rank(), "axis");
  double eps = c.attrFloat("epsilon", 1e-5);
  std::vector<int64_t> axes;
  for (int64_t i = axis; i < x.rank(); ++i)
    axes.push_back(i);
  Value m = mean(x, axes, true);
  Value centered = sub(x, m);
  Value var = mean(square(centered), axes, true);
  Value inv = rsqrt(add(var, scalarOf(c, var, eps)));
  Value y = mul(centered, inv);
  if (c.has(1))
    y = mul(y, c.in(1));
  if (c.has(2))
    y = add(y, c.in(2));
  c.setOutput(0, y);
  c.setOutput(1, m);
  c.setOutput(2, inv);
}

// ONNX's function body: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9).
void mapMeanVarianceNormalization(NodeContext &c) {
  Value x = c.in(0);
  std::vector<int64_t> axes = normalizeAxes(c, c.attrInts("axes", {0, 2, 3}), x.rank(), "axis");
  Value m = mean(x, axes, true);
  Value var = sub(mean(square(x), axes, true), square(m));
  Value std = add(sqrt(var), scalarOf(c, var, 1e-9));
  c.setOutput(0, div(sub(x, m), std));
}

// ---------------------------------------------------------------------------
// Pad: constant mode with stepc's pad (negative pads crop first); edge and
// reflect as a gather of the source index of every output position.

void mapPad(NodeContext &c) {
  Value x = c.in(0);
  int64_t r = x.rank();
  std::string mode = c.attrString("mode", "constant");
  std::vector<int64_t> pads, axes;
  double value = 0;
  if (c.opset < 11) {
    pads = c.attrInts(c.opset < 2 ? "paddings" : "pads");
    value = c.attrFloat("value", 0);
  } else {
    pads = c.requireInts(1, "the pads");
    if (c.has(2)) {
      Tensor v = c.require(2, "the constant value");
      value = v.numel() > 0 ? v.real(0) : 0;
    }
    if (c.has(3))
      axes = c.requireInts(3, "the axes");
  }
  if (axes.empty())
    for (int64_t i = 0; i < r; ++i)
      axes.push_back(i);
  if (pads.size() != 2 * axes.size())
    c.invalid(fmt::format("pads [{}] need {} entries for {}", fmt::join(pads, ","), 2 * axes.size(),
                          typeString(x.type())));
  std::vector<int64_t> low(static_cast<size_t>(r), 0), high(static_cast<size_t>(r), 0);
  for (size_t k = 0; k < axes.size(); ++k) {
    int64_t a = normalizeAxis(c, axes[k], r, "axis");
    low[a] = pads[k];
    high[a] = pads[axes.size() + k];
  }
  if (mode == "constant") {
    std::vector<int64_t> start(static_cast<size_t>(r)), limit(static_cast<size_t>(r)),
        lo(static_cast<size_t>(r)), hi(static_cast<size_t>(r));
    bool crop = false, grow = false;
    for (int64_t i = 0; i < r; ++i) {
      start[i] = std::max<int64_t>(0, -low[i]);
      limit[i] = x.dim(i) - std::max<int64_t>(0, -high[i]);
      if (limit[i] < start[i])
        c.invalid(fmt::format("pads [{}] crop more than {} holds", fmt::join(pads, ","),
                              typeString(x.type())));
      lo[i] = std::max<int64_t>(0, low[i]);
      hi[i] = std::max<int64_t>(0, high[i]);
      crop = crop || low[i] < 0 || high[i] < 0;
      grow = grow || low[i] > 0 || high[i] > 0;
    }
    if (crop)
      x = slice(x, start, limit);
    if (grow)
      x = pad(x, lo, hi, value);
    c.setOutput(0, x);
    return;
  }
  if (mode != "edge" && mode != "reflect")
    c.unsupported(fmt::format("mode '{}' is not supported (constant, edge and reflect are)", mode));
  for (int64_t a = 0; a < r; ++a) {
    if (low[a] == 0 && high[a] == 0)
      continue;
    int64_t d = x.dim(a);
    if (low[a] > kMaxImportElements || high[a] > kMaxImportElements)
      c.invalid(fmt::format("pads [{}] are out of range", fmt::join(pads, ",")));
    if (d == 0 || -low[a] >= d + high[a])
      c.invalid(fmt::format("cannot pad an axis of size {} with [{}, {}]", d, low[a], high[a]));
    std::vector<int64_t> source;
    for (int64_t j = -low[a]; j < d + high[a]; ++j) {
      if (mode == "edge" || d == 1) {
        source.push_back(std::clamp<int64_t>(j, 0, d - 1));
      } else {
        int64_t period = 2 * (d - 1), m = ((j % period) + period) % period;
        source.push_back(m < d ? m : period - m);
      }
    }
    x = gather(x, indexConstant(c, source), a);
  }
  c.setOutput(0, x);
}

// ---------------------------------------------------------------------------
// Activations.

// Bounds are attributes before opset 11, optional inputs after.
void mapClip(NodeContext &c) {
  Value x = c.in(0);
  if (c.opset < 11) {
    if (c.hasAttr("min"))
      x = maximum(x, scalarOf(c, x, c.attrFloat("min", 0)));
    if (c.hasAttr("max"))
      x = minimum(x, scalarOf(c, x, c.attrFloat("max", 0)));
  } else {
    if (c.has(1))
      x = maximum(x, c.in(1));
    if (c.has(2))
      x = minimum(x, c.in(2));
  }
  c.setOutput(0, x);
}

void mapLeakyRelu(NodeContext &c) {
  c.setOutput(0, leakyRelu(c.in(0), c.attrFloat("alpha", 0.01)));
}

// alpha * (exp(x) - 1) below zero, x above.
static Value eluOf(NodeContext &c, Value x, double alpha) {
  Value below = mul(sub(exp(x), scalarOf(c, x, 1)), scalarOf(c, x, alpha));
  return select(gt(x, scalarOf(c, x, 0)), x, below);
}

void mapElu(NodeContext &c) { c.setOutput(0, eluOf(c, c.in(0), c.attrFloat("alpha", 1))); }

void mapSelu(NodeContext &c) {
  Value x = c.in(0);
  double alpha = c.attrFloat("alpha", 1.67326319217681884765625);
  double gamma = c.attrFloat("gamma", 1.05070102214813232421875);
  c.setOutput(0, mul(eluOf(c, x, alpha), scalarOf(c, x, gamma)));
}

void mapCelu(NodeContext &c) {
  Value x = c.in(0);
  double alpha = c.attrFloat("alpha", 1);
  Value zero = scalarOf(c, x, 0), a = scalarOf(c, x, alpha);
  Value below = mul(sub(exp(div(x, a)), scalarOf(c, x, 1)), a);
  c.setOutput(0, add(maximum(x, zero), minimum(below, zero)));
}

void mapPRelu(NodeContext &c) {
  Value x = c.in(0), slope = c.in(1);
  // Before opset 7 a slope of C values applies per channel (axis 1).
  if (c.opset < 7 && slope.rank() == 1 && x.rank() > 2 && slope.dim(0) == x.dim(1))
    slope = perChannel(slope, x.rank());
  c.setOutput(0, select(lt(x, scalarOf(c, x, 0)), mul(x, slope), x));
}

void mapThresholdedRelu(NodeContext &c) {
  Value x = c.in(0);
  Value above = gt(x, scalarOf(c, x, c.attrFloat("alpha", 1)));
  c.setOutput(0, select(above, x, scalarOf(c, x, 0)));
}

static Value hardSigmoidOf(NodeContext &c, Value x, double alpha, double beta) {
  Value y = add(mul(x, scalarOf(c, x, alpha)), scalarOf(c, x, beta));
  return maximum(minimum(y, scalarOf(c, x, 1)), scalarOf(c, x, 0));
}

void mapHardSigmoid(NodeContext &c) {
  c.setOutput(0, hardSigmoidOf(c, c.in(0), c.attrFloat("alpha", 0.2), c.attrFloat("beta", 0.5)));
}

void mapHardSwish(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, mul(x, hardSigmoidOf(c, x, 1.0 / 6.0, 0.5)));
}

void mapSoftplus(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, log(add(exp(x), scalarOf(c, x, 1))));
}

void mapSoftsign(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, div(x, add(abs(x), scalarOf(c, x, 1))));
}

void mapShrink(NodeContext &c) {
  Value x = c.in(0);
  double lambd = c.attrFloat("lambd", 0.5), bias = c.attrFloat("bias", 0);
  Value below = lt(x, scalarOf(c, x, -lambd)), above = gt(x, scalarOf(c, x, lambd));
  Value y = select(above, sub(x, scalarOf(c, x, bias)), scalarOf(c, x, 0));
  c.setOutput(0, select(below, add(x, scalarOf(c, x, bias)), y));
}

// approximate="none": 0.5 x (1 + erf(x / sqrt 2)); "tanh": stepc's gelu.
void mapGelu(NodeContext &c) {
  Value x = c.in(0);
  std::string approximate = c.attrString("approximate", "none");
  if (approximate == "tanh") {
    c.setOutput(0, gelu(x));
    return;
  }
  if (approximate != "none")
    c.invalid(fmt::format("unknown approximate '{}'", approximate));
  Value e = erf(mul(x, scalarOf(c, x, 1 / std::numbers::sqrt2)));
  c.setOutput(0, mul(mul(x, scalarOf(c, x, 0.5)), add(e, scalarOf(c, x, 1))));
}

void mapTan(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, div(sin(x), cos(x)));
}

void mapSinh(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, mul(sub(exp(x), exp(neg(x))), scalarOf(c, x, 0.5)));
}

void mapCosh(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, mul(add(exp(x), exp(neg(x))), scalarOf(c, x, 0.5)));
}

// ---------------------------------------------------------------------------
// Losses.

// -input[n, target[n, d...], d...] * weight[target], reduced; targets equal to
// ignore_index count with weight 0 (and are not looked up).
static Value nllLoss(NodeContext &c, Value input, Value target, Value weight) {
  if (input.rank() < 2 || target.rank() != input.rank() - 1 || !isInteger(target.dtype()))
    c.invalid(fmt::format("expected input [N, C, d...] and integer target [N, d...], found "
                          "{} and {}",
                          typeString(input.type()), typeString(target.type())));
  int64_t classes = input.dim(1);
  std::optional<int64_t> ignore;
  if (c.hasAttr("ignore_index"))
    ignore = c.attrInt("ignore_index");
  // one_hot gives an all-zero row for a target outside [0, C), such as an
  // ignored one.
  Value hot = moveLastAxisTo(oneHot(target, classes, DType::Bool), 1);
  Value picked = sum(select(hot, input, scalarOf(c, input, 0)), {1}, false);
  Value ignored;
  if (ignore)
    ignored = eq(target, scalarOf(c, target, double(*ignore)));
  Value w;
  if (weight.valid()) {
    Value safe = ignore ? select(ignored, scalarOf(c, target, 0), target) : target;
    w = gather(weight, safe, 0);
    if (ignore)
      w = select(ignored, scalarOf(c, w, 0), w);
  } else if (ignore) {
    w = select(ignored, scalarOf(c, input, 0), scalarOf(c, input, 1));
  }
  Value loss = neg(w.valid() ? mul(picked, w) : picked);
  std::string reduction = c.attrString("reduction", "mean");
  if (reduction == "none")
    return loss;
  if (reduction == "sum")
    return sum(loss);
  if (reduction != "mean")
    c.invalid(fmt::format("unknown reduction '{}'", reduction));
  if (!w.valid())
    return mean(loss);
  if (w.shape() != loss.shape())
    w = broadcastTo(w, loss.shape());
  return div(sum(loss), sum(w));
}

void mapNegativeLogLikelihoodLoss(NodeContext &c) {
  c.setOutput(0, nllLoss(c, c.in(0), c.in(1), c.has(2) ? c.in(2) : Value()));
}

void mapSoftmaxCrossEntropyLoss(NodeContext &c) {
  Value scores = c.in(0);
  if (scores.rank() < 2)
    c.invalid(fmt::format("expected scores [N, C, d...], found {}", typeString(scores.type())));
  Value logProb = logSoftmax(scores, 1);
  c.setOutput(0, nllLoss(c, logProb, c.in(1), c.has(2) ? c.in(2) : Value()));
  c.setOutput(1, logProb);
}

// ---------------------------------------------------------------------------
// ConvTranspose: stepc's conv2d_grad_input is the transposed convolution
// (its weight layout [C_in, C_out / groups, kH, kW] is ONNX's). It runs
// without padding; pads then crop the full result and output_padding grows
// it at the end.

void mapConvTranspose(NodeContext &c) {
  Value x = c.in(0), weight = c.in(1);
  int64_t n = x.rank() - 2;
  if (n != 1 && n != 2)
    c.unsupported(fmt::format("{}-D transposed convolution is not supported (1-D and 2-D are)", n));
  if (weight.rank() != x.rank() || weight.dim(0) != x.dim(1))
    c.invalid(fmt::format("weight {} does not match input {}", typeString(weight.type()),
                          typeString(x.type())));
  size_t sn = static_cast<size_t>(n);
  int64_t groups = c.attrInt("group", 1);
  Window w;
  w.kernel = c.attrInts("kernel_shape", spatialOf(weight));
  if (w.kernel != spatialOf(weight))
    c.invalid(fmt::format("kernel_shape [{}] differs from the weight {}", fmt::join(w.kernel, ","),
                          typeString(weight.type())));
  w.stride = spatialAttr(c, "strides", sn);
  w.dilation = spatialAttr(c, "dilations", sn);
  std::vector<int64_t> extra = c.attrInts("output_padding", std::vector<int64_t>(sn, 0));
  if (extra.size() != sn)
    c.invalid("output_padding needs one entry per spatial axis");
  Shape in = spatialOf(x);
  std::vector<int64_t> full(sn), low(sn, 0), high(sn, 0);
  for (size_t i = 0; i < sn; ++i)
    full[i] = (in[i] - 1) * w.stride[i] + w.span(i);
  std::vector<int64_t> outputShape = c.attrInts("output_shape");
  std::string autoPad = c.attrString("auto_pad", "NOTSET");
  if (!outputShape.empty() || autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER") {
    // Pads follow from the wanted output size; the odd one goes at the end
    // for SAME_UPPER (and output_shape), at the beginning for SAME_LOWER.
    if (outputShape.size() == sn + 2)
      outputShape.erase(outputShape.begin(), outputShape.begin() + 2);
    if (outputShape.empty())
      for (size_t i = 0; i < sn; ++i)
        outputShape.push_back(in[i] * w.stride[i]);
    if (outputShape.size() != sn)
      c.invalid("output_shape needs one entry per spatial axis");
    for (size_t i = 0; i < sn; ++i) {
      // A negative total (an output larger than the full result) extends it
      // with zeros, at the end for an odd total like the reference.
      int64_t total = full[i] + extra[i] - outputShape[i];
      low[i] = autoPad == "SAME_LOWER" ? total - total / 2 : total / 2;
      high[i] = total - low[i];
    }
  } else if (autoPad == "NOTSET") {
    std::vector<int64_t> pads = c.attrInts("pads", std::vector<int64_t>(2 * sn, 0));
    if (pads.size() != 2 * sn)
      c.invalid("pads need two entries per spatial axis");
    for (size_t i = 0; i < sn; ++i) {
      low[i] = pads[i];
      high[i] = pads[sn + i];
    }
  } else if (autoPad != "VALID") {
    c.invalid(fmt::format("unknown auto_pad '{}'", autoPad));
  }
  Value x4 = n == 1 ? lift1dTo2d(x) : x, w4 = n == 1 ? lift1dTo2d(weight) : weight;
  std::vector<int64_t> hw = full, stride = w.stride, dilation = w.dilation;
  if (n == 1) {
    hw.insert(hw.begin(), 1);
    stride.insert(stride.begin(), 1);
    dilation.insert(dilation.begin(), 1);
  }
  Value y = c.op(OpKind::Conv2dGradInput, {x4, w4},
                 {{"input_hw", hw},
                  {"stride", stride},
                  {"padding", std::vector<int64_t>{0, 0}},
                  {"dilation", dilation},
                  {"groups", groups}});
  if (n == 1)
    y = reshape(y, {y.dim(0), y.dim(1), y.dim(3)});
  // output_padding and negative pads add zeros; positive pads crop.
  std::vector<int64_t> growLow(sn), growHigh(sn);
  bool grow = false;
  for (size_t i = 0; i < sn; ++i) {
    growLow[i] = std::max<int64_t>(0, -low[i]);
    growHigh[i] = extra[i] + std::max<int64_t>(0, -high[i]);
    grow = grow || growLow[i] || growHigh[i];
  }
  if (grow)
    y = padSpatial(y, growLow, growHigh, 0);
  std::vector<int64_t> starts{0, 0}, limits{y.dim(0), y.dim(1)};
  bool crop = false;
  for (size_t i = 0; i < sn; ++i) {
    int64_t size = y.dim(static_cast<int64_t>(i) + 2);
    starts.push_back(std::max<int64_t>(0, low[i]));
    limits.push_back(size - std::max<int64_t>(0, high[i]));
    if (limits.back() < starts.back())
      c.invalid("pads crop away the whole output");
    crop = crop || low[i] > 0 || high[i] > 0;
  }
  if (crop)
    y = slice(y, starts, limits);
  if (c.has(2))
    y = add(y, perChannel(c.in(2), y.rank()));
  c.setOutput(0, y);
}

// Local response normalization across channels: y = x / (bias + alpha /
// size * sum of x^2 over the `size` channels around c)^beta, the window
// floor((size - 1) / 2) channels before c and ceil((size - 1) / 2) after,
// zero-padded at the edges.
void mapLRN(NodeContext &c) {
  Value x = c.in(0);
  if (!isFloat(x.dtype()) || x.rank() < 3)
    c.invalid(fmt::format("expected a floating-point input [N, C, spatial...], found {}",
                          typeString(x.type())));
  int64_t size = c.attrInt("size");
  if (size < 1)
    c.invalid(fmt::format("attribute 'size' must be >= 1, found {}", size));
  double alpha = c.attrFloat("alpha", 1e-4), beta = c.attrFloat("beta", 0.75);
  double bias = c.attrFloat("bias", 1.0);
  int64_t before = (size - 1) / 2, after = size - 1 - before, channels = x.dim(1);
  std::vector<int64_t> low(static_cast<size_t>(x.rank()), 0), high = low;
  low[1] = before;
  high[1] = after;
  Value padded = pad(square(x), low, high);
  Value total = sliceAxis(padded, 1, 0, channels);
  for (int64_t k = 1; k < size; ++k)
    total = add(total, sliceAxis(padded, 1, k, k + channels));
  Value base = add(scalarOf(c, x, bias), mul(scalarOf(c, x, alpha / double(size)), total));
  c.setOutput(0, div(x, pow(base, scalarOf(c, x, beta))));
}

// The inverse of MaxPool with Indices: zeros of the output shape with each
// x at its index into the whole flattened output (MaxPool's Indices count
// over N and C too), as one scatter_add of the flattened values. The indices
// address the default output (kernel_shape, strides, pads); a larger
// output_shape pads it at the end of each spatial axis.
void mapMaxUnpool(NodeContext &c) {
  Value x = c.in(0), indices = c.in(1);
  if (x.rank() < 3 || indices.shape() != x.shape() || !isInteger(indices.dtype()))
    c.invalid(fmt::format("expected an input [N, C, spatial...] and integer indices of its "
                          "shape, found {} and {}",
                          typeString(x.type()), typeString(indices.type())));
  size_t n = static_cast<size_t>(x.rank() - 2);
  std::vector<int64_t> kernel = c.attrInts("kernel_shape");
  std::vector<int64_t> strides = c.attrInts("strides", std::vector<int64_t>(n, 1));
  std::vector<int64_t> pads = c.attrInts("pads", std::vector<int64_t>(2 * n, 0));
  if (kernel.size() != n || strides.size() != n || pads.size() != 2 * n)
    c.invalid(fmt::format("kernel_shape, strides and pads need {}, {} and {} entries", n, n,
                          2 * n));
  Shape out = x.shape();
  for (size_t i = 0; i < n; ++i)
    out[2 + i] = (x.shape()[2 + i] - 1) * strides[i] - pads[i] - pads[n + i] + kernel[i];
  Shape requested = out;
  if (c.has(2)) {
    requested = c.requireInts(2, "the output shape");
    if (requested.size() != out.size() || requested[0] != out[0] || requested[1] != out[1])
      c.invalid(fmt::format("output_shape [{}] must keep N and C of {}",
                            fmt::join(requested, ","), typeString(x.type())));
    for (size_t i = 2; i < out.size(); ++i)
      if (requested[i] < out[i])
        c.unsupported(fmt::format("an output_shape [{}] smaller than the default [{}]",
                                  fmt::join(requested, ","), fmt::join(out, ",")));
  }
  int64_t total = checkedNumel(out);
  if (total > kMaxImportElements)
    c.unsupported(fmt::format("an output of {} elements (at most {})", total, kMaxImportElements));
  int64_t count = checkedNumel(x.shape());
  Value flatIndices = reshape(cast(indices, DType::I64), {count});
  Value scattered = c.op(OpKind::ScatterAdd, {flatIndices, reshape(x, {count})},
                         Attrs{{"axis", int64_t(0)}, {"size", total}});
  std::vector<int64_t> low(out.size(), 0), high(out.size(), 0);
  for (size_t i = 2; i < out.size(); ++i)
    high[i] = requested[i] - out[i];
  Value y = reshape(scattered, out);
  c.setOutput(0, requested == out ? y : pad(y, low, high));
}

} // namespace stepc::onnx_import
