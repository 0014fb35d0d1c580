// Resize, Upsample and GridSample.
//
// Resize and Upsample: one axis at a time, as ONNX's reference does (its
// n-linear and n-cubic interpolations are separable). Each resized axis gets
// a tap list computed here from the sizes, scales and modes, which must be
// known at import: nearest becomes a gather along the axis; linear and cubic
// a matmul with an [in, out] weight matrix, so the work reaches the matmul
// micro-kernel and the gradient flows back to the input.
#include "onnx_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

namespace stepc::onnx_import {

namespace {

enum class Mode { Nearest, Linear, Cubic };

struct ResizeSpec {
  Mode mode = Mode::Nearest;
  std::string transform = "half_pixel";
  std::string nearestMode = "round_prefer_floor";
  double cubicA = -0.75;
  bool excludeOutside = false;
  double extrapolation = 0;
  std::vector<double> roi; // tf_crop_and_resize: starts, then ends
};

// One output position of one axis: input positions and their weights, or
// outside the crop (tf_crop_and_resize), where the result is the
// extrapolation value.
struct Taps {
  std::vector<std::pair<int64_t, double>> taps;
  bool outside = false;
};

std::vector<double> coefficients(NodeContext &c, const ResizeSpec &s, double ratio) {
  switch (s.mode) {
  case Mode::Nearest: {
    if (ratio == 1)
      return {0, 1};
    const std::string &m = s.nearestMode;
    if (m == "round_prefer_floor")
      return {double(ratio <= 0.5), double(ratio > 0.5)};
    if (m == "round_prefer_ceil")
      return {double(ratio < 0.5), double(ratio >= 0.5)};
    if (m == "floor")
      return {1, 0};
    if (m == "ceil")
      return {0, 1};
    c.invalid(fmt::format("nearest_mode '{}' is not one of round_prefer_floor, "
                          "round_prefer_ceil, floor, ceil",
                          m));
  }
  case Mode::Linear: return {1 - ratio, ratio};
  case Mode::Cubic: {
    double a = s.cubicA, r = ratio, q = 1 - ratio;
    return {((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1, ((a + 2) * q - (a + 3)) * q * q + 1,
            ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a};
  }
  }
  return {};
}

// The input coordinate of output position x (ONNX's
// coordinate_transformation_mode), with the reference's output width
// scale * in, which need not be a whole number.
double sourceCoordinate(NodeContext &c, const ResizeSpec &s, int64_t axis, int64_t rank,
                        double x, double scale, int64_t in) {
  double width = scale * double(in);
  const std::string &t = s.transform;
  if (t == "half_pixel")
    return (x + 0.5) / scale - 0.5;
  if (t == "pytorch_half_pixel")
    return width == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
  if (t == "align_corners")
    return width == 1 ? 0 : x * double(in - 1) / (width - 1);
  if (t == "asymmetric")
    return x / scale;
  if (t == "tf_half_pixel_for_nn")
    return (x + 0.5) / scale;
  if (t == "tf_crop_and_resize") {
    double start = s.roi[axis], end = s.roi[axis + rank];
    double v = width == 1 ? (end - start) * double(in - 1) / 2
                          : x * (end - start) * double(in - 1) / (width - 1);
    return v + start * double(in - 1);
  }
  c.invalid(fmt::format("coordinate_transformation_mode '{}' is not supported", t));
}

std::vector<Taps> axisTaps(NodeContext &c, const ResizeSpec &s, int64_t axis, int64_t rank,
                           int64_t in, int64_t out, double scale) {
  std::vector<Taps> result(static_cast<size_t>(out));
  for (int64_t xo = 0; xo < out; ++xo) {
    double x = sourceCoordinate(c, s, axis, rank, double(xo), scale, in);
    if (s.transform == "tf_crop_and_resize" && (x < 0 || x > double(in - 1))) {
      result[xo].outside = true;
      continue;
    }
    double whole = std::floor(x);
    double ratio = x == whole ? 1 : x - whole;
    std::vector<double> coeffs = coefficients(c, s, ratio);
    int64_t n = static_cast<int64_t>(coeffs.size());
    // The n positions nearest to x (ties to the lower one), in order; the
    // input is edge-padded by ceil(n/2) on both sides.
    int64_t padWidth = (n + 1) / 2, base = static_cast<int64_t>(whole);
    std::vector<int64_t> near;
    for (int64_t p = base - n; p <= base + n + 1; ++p)
      if (p >= -padWidth && p < in + padWidth)
        near.push_back(p);
    std::stable_sort(near.begin(), near.end(), [&](int64_t a, int64_t b) {
      return std::abs(x - double(a)) < std::abs(x - double(b));
    });
    near.resize(static_cast<size_t>(std::min<int64_t>(n, static_cast<int64_t>(near.size()))));
    std::sort(near.begin(), near.end());
    double total = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(near.size()); ++i) {
      if (s.excludeOutside && (near[i] < 0 || near[i] >= in))
        coeffs[i] = 0;
      total += coeffs[i];
    }
    for (int64_t i = 0; i < static_cast<int64_t>(near.size()); ++i) {
      double w = s.excludeOutside && total != 0 ? coeffs[i] / total : coeffs[i];
      if (w != 0)
        result[xo].taps.emplace_back(std::clamp<int64_t>(near[i], 0, in - 1), w);
    }
  }
  return result;
}

bool isIdentity(const std::vector<Taps> &taps, int64_t in) {
  if (static_cast<int64_t>(taps.size()) != in)
    return false;
  for (int64_t i = 0; i < in; ++i)
    if (taps[i].outside || taps[i].taps.size() != 1 || taps[i].taps[0].first != i ||
        taps[i].taps[0].second != 1)
      return false;
  return true;
}

Value resizeAxis(NodeContext &c, Value x, int64_t axis, const std::vector<Taps> &taps,
                 bool nearest) {
  int64_t in = x.dim(axis), out = static_cast<int64_t>(taps.size());
  if (nearest) {
    std::vector<int64_t> picks;
    for (const Taps &t : taps)
      picks.push_back(t.taps.empty() ? 0 : t.taps[0].first);
    return gather(x, indexConstant(c, picks), axis);
  }
  Tensor weights(x.dtype(), {in, out});
  for (int64_t o = 0; o < out; ++o)
    for (auto [i, w] : taps[o].taps)
      weights.setReal(i * out + o, weights.real(i * out + o) + w);
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < x.rank(); ++i)
    if (i != axis)
      perm.push_back(i);
  perm.push_back(axis);
  Value lined = transpose(x, perm);
  Shape shape = lined.shape();
  Value y = matmul(reshape(lined, {lined.type().numel() / std::max<int64_t>(in, 1), in}),
                   c.constantOf(weights));
  shape.back() = out;
  return moveLastAxisTo(reshape(y, shape), axis);
}

// Resizes x to `sizes` (scale per axis given too: the reference's
// coordinates use it).
void resize(NodeContext &c, Value x, const ResizeSpec &spec, const std::vector<int64_t> &sizes,
            const std::vector<double> &scales) {
  int64_t r = x.rank();
  if (spec.mode != Mode::Nearest && !isFloat(x.dtype()))
    c.unsupportedDType("input of a linear or cubic resize", x.dtype());
  if (spec.transform == "tf_crop_and_resize" && static_cast<int64_t>(spec.roi.size()) != 2 * r)
    c.invalid(fmt::format("tf_crop_and_resize needs roi with {} values, found {}", 2 * r,
                          spec.roi.size()));
  std::vector<std::vector<bool>> outside(static_cast<size_t>(r));
  bool anyOutside = false;
  for (int64_t a = 0; a < r; ++a) {
    if (sizes[a] < 0 || sizes[a] > kMaxImportElements)
      c.invalid(fmt::format("output size {} of axis {} is out of range", sizes[a], a));
    if (sizes[a] > 0 && x.dim(a) == 0)
      c.invalid(fmt::format("cannot resize the empty axis {} to {}", a, sizes[a]));
    std::vector<Taps> taps = axisTaps(c, spec, a, r, x.dim(a), sizes[a], scales[a]);
    for (const Taps &t : taps) {
      outside[a].push_back(t.outside);
      anyOutside = anyOutside || t.outside;
    }
    if (!isIdentity(taps, x.dim(a)))
      x = resizeAxis(c, x, a, taps, spec.mode == Mode::Nearest);
  }
  if (anyOutside) {
    Tensor mask(DType::Bool, x.shape());
    std::vector<int64_t> strides = rowMajorStrides(x.shape());
    for (int64_t i = 0; i < mask.numel(); ++i) {
      bool out = false;
      for (int64_t a = 0; a < r; ++a)
        out = out || outside[a][(i / strides[a]) % x.dim(a)];
      mask.setReal(i, out);
    }
    x = select(c.constantOf(mask), scalarOf(c, x, spec.extrapolation), x);
  }
  c.setOutput(0, x);
}

Mode modeAttr(NodeContext &c) {
  std::string mode = c.attrString("mode", "nearest");
  if (mode == "nearest")
    return Mode::Nearest;
  if (mode == "linear" || mode == "bilinear")
    return Mode::Linear;
  if (mode == "cubic")
    return Mode::Cubic;
  c.invalid(fmt::format("mode '{}' is not one of nearest, linear, cubic", mode));
}

std::vector<double> realsOf(const Tensor &t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.numel(); ++i)
    v.push_back(t.real(i));
  return v;
}

// Sizes from scales: floor(in * scale), as the reference.
void resizeByScales(NodeContext &c, Value x, const ResizeSpec &spec, std::vector<double> scales) {
  if (static_cast<int64_t>(scales.size()) != x.rank())
    c.invalid(fmt::format("{} scales for an input of rank {}", scales.size(), x.rank()));
  std::vector<int64_t> sizes;
  for (int64_t a = 0; a < x.rank(); ++a) {
    if (!(scales[a] > 0) || !std::isfinite(scales[a]))
      c.invalid(fmt::format("scale {} of axis {} is not positive", scales[a], a));
    sizes.push_back(static_cast<int64_t>(std::floor(double(x.dim(a)) * scales[a])));
  }
  resize(c, x, spec, sizes, scales);
}

} // namespace

// Before opset 11, Resize (like Upsample) has no coordinate modes: the
// source coordinate is x / scale and nearest rounds down.
void mapResize(NodeContext &c) {
  Value x = c.in(0);
  ResizeSpec spec;
  spec.mode = modeAttr(c);
  if (c.hasAttr("axes") || c.hasAttr("keep_aspect_ratio_policy"))
    c.unsupported("the axes and keep_aspect_ratio_policy attributes (opset 18) are not "
                  "supported");
  if (c.opset < 11) {
    spec.transform = "asymmetric";
    spec.nearestMode = "floor";
    resizeByScales(c, x, spec, realsOf(c.require(1, "the scales")));
    return;
  }
  spec.transform = c.attrString("coordinate_transformation_mode", "half_pixel");
  spec.nearestMode = c.attrString("nearest_mode", "round_prefer_floor");
  spec.cubicA = c.attrFloat("cubic_coeff_a", -0.75);
  spec.excludeOutside = c.attrInt("exclude_outside", 0) != 0;
  spec.extrapolation = c.attrFloat("extrapolation_value", 0);
  if (spec.transform == "tf_crop_and_resize")
    spec.roi = realsOf(c.require(1, "roi"));
  std::optional<Tensor> scales;
  if (c.has(2))
    scales = c.require(2, "the scales");
  if (scales && scales->numel() > 0) {
    if (c.has(3))
      c.invalid("only one of scales and sizes may be given");
    resizeByScales(c, x, spec, realsOf(*scales));
    return;
  }
  if (!c.has(3))
    c.invalid("one of scales and sizes is required");
  std::vector<int64_t> sizes = c.requireInts(3, "the sizes");
  if (static_cast<int64_t>(sizes.size()) != x.rank())
    c.invalid(fmt::format("{} sizes for an input of rank {}", sizes.size(), x.rank()));
  std::vector<double> ratios;
  for (int64_t a = 0; a < x.rank(); ++a)
    ratios.push_back(x.dim(a) == 0 ? 1 : double(sizes[a]) / double(x.dim(a)));
  resize(c, x, spec, sizes, ratios);
}

void mapUpsample(NodeContext &c) {
  ResizeSpec spec;
  spec.mode = modeAttr(c);
  spec.transform = "asymmetric";
  spec.nearestMode = "floor";
  std::vector<double> scales =
      c.opset < 9 ? c.attrFloats("scales") : realsOf(c.require(1, "the scales"));
  resizeByScales(c, c.in(0), spec, scales);
}

// ---------------------------------------------------------------------------
// GridSample (as onnxruntime): each output pixel reads X at a position the
// grid gives at run time, so every tap is a gather of X's pixels (rows of
// X as [N*H*W, C]) by a computed index, weighted and summed. Taps outside X
// read 0 (zeros), the nearest edge pixel (border) or the pixel mirrored at
// the edges (reflection).

namespace {

struct GridAxis {
  Value position; // the sampling coordinate in pixels, [N, Ho, Wo]
  int64_t size;
};

// x mirrored into [low, high] (fractional bounds when align_corners = 0).
Value reflect(NodeContext &c, Value x, double low, double high) {
  auto k = [&](double v) { return scalarOf(c, x, v); };
  Value range = k(high - low);
  auto fold = [&](Value dx, Value nearEdge, Value farEdge, Value sign) {
    Value n = floorOf(c, div(dx, range));
    Value r = sub(dx, mul(n, range));
    return select(isEvenInteger(c, n), add(nearEdge, mul(sign, r)), sub(farEdge, mul(sign, r)));
  };
  Value below = fold(sub(k(low), x), k(low), k(high), k(1));
  Value above = fold(sub(x, k(high)), k(high), k(low), k(-1));
  return select(lt(x, k(low)), below, select(gt(x, k(high)), above, x));
}

// One tap's integer position along an axis after padding, and whether it
// reads X at all (zeros padding).
std::pair<Value, Value> padTap(NodeContext &c, Value tap, int64_t size, const std::string &padding,
                               bool alignCorners) {
  auto k = [&](double v) { return scalarOf(c, tap, v); };
  Value inside = select(ge(tap, k(0)), le(tap, k(double(size - 1))), c.scalar(0, DType::Bool));
  if (padding == "border")
    tap = minimum(maximum(tap, k(0)), k(double(size - 1)));
  else if (padding == "reflection")
    tap = alignCorners ? reflect(c, tap, 0, double(size - 1))
                       : reflect(c, tap, -0.5, double(size) - 0.5);
  if (padding != "zeros")
    inside = c.scalar(1, DType::Bool);
  // Clamped so the gather stays in range where the tap reads nothing.
  Value index = cast(minimum(maximum(tap, k(0)), k(double(size - 1))), DType::I64);
  return {index, inside};
}

std::vector<Value> cubicWeights(NodeContext &c, Value t) {
  auto k = [&](double v) { return scalarOf(c, t, v); };
  const double a = -0.75;
  Value s = add(t, k(1)), q = sub(k(1), t), u = sub(k(2), t);
  auto outer = [&](Value x) { // ((a x - 5a) x + 8a) x - 4a
    return sub(mul(add(mul(sub(mul(k(a), x), k(5 * a)), x), k(8 * a)), x), k(4 * a));
  };
  auto inner = [&](Value x) { // ((a + 2) x - (a + 3)) x x + 1
    return add(mul(mul(sub(mul(k(a + 2), x), k(a + 3)), x), x), k(1));
  };
  return {outer(s), inner(t), inner(q), outer(u)};
}

} // namespace

void mapGridSample(NodeContext &c) {
  Value x = c.in(0), grid = c.in(1);
  if (x.rank() != 4 || grid.rank() != 4 || grid.dim(3) != 2 || grid.dim(0) != x.dim(0))
    c.unsupported(fmt::format("GridSample of X {} with grid {} (2-D sampling of X [N,C,H,W] "
                              "with grid [N,Ho,Wo,2] is supported)",
                              typeString(x.type()), typeString(grid.type())));
  if (!isFloat(x.dtype()) || grid.dtype() != x.dtype())
    c.unsupportedDType("input", x.dtype());
  std::string mode = c.attrString("mode", "bilinear");
  std::string padding = c.attrString("padding_mode", "zeros");
  bool alignCorners = c.attrInt("align_corners", 0) != 0;
  if (mode != "bilinear" && mode != "nearest" && mode != "bicubic")
    c.invalid(fmt::format("mode '{}' is not one of bilinear, nearest, bicubic", mode));
  if (padding != "zeros" && padding != "border" && padding != "reflection")
    c.invalid(fmt::format("padding_mode '{}' is not one of zeros, border, reflection", padding));
  int64_t n = x.dim(0), ch = x.dim(1), h = x.dim(2), w = x.dim(3);
  int64_t ho = grid.dim(1), wo = grid.dim(2);
  auto k = [&](double v) { return scalarOf(c, x, v); };
  // Normalized [-1, 1] to pixels.
  auto denormalize = [&](Value v, int64_t size) {
    return alignCorners ? mul(add(v, k(1)), k(double(size - 1) / 2))
                        : mul(sub(mul(add(v, k(1)), k(double(size))), k(1)), k(0.5));
  };
  Value gx = reshape(sliceAxis(grid, 3, 0, 1), {n, ho, wo});
  Value gy = reshape(sliceAxis(grid, 3, 1, 2), {n, ho, wo});
  GridAxis axes[2] = {{denormalize(gy, h), h}, {denormalize(gx, w), w}};
  // Per axis: the taps (integer positions as floats) and their weights.
  std::vector<std::pair<Value, Value>> taps[2];
  for (int a = 0; a < 2; ++a) {
    Value p = axes[a].position;
    if (mode == "nearest") {
      taps[a].push_back({roundHalfEven(c, p), k(1)});
      continue;
    }
    Value base = floorOf(c, p), t = sub(p, base);
    if (mode == "bilinear") {
      taps[a].push_back({base, sub(k(1), t)});
      taps[a].push_back({add(base, k(1)), t});
      continue;
    }
    std::vector<Value> weights = cubicWeights(c, t);
    for (int i = 0; i < 4; ++i)
      taps[a].push_back({add(base, k(double(i - 1))), weights[i]});
  }
  // X's pixels as rows [N*H*W, C]; a row index per output pixel.
  Value pixels = reshape(transpose(x, {0, 2, 3, 1}), {n * h * w, ch});
  Tensor batchBase(DType::I64, {n, ho, wo});
  for (int64_t i = 0; i < batchBase.numel(); ++i)
    batchBase.setReal(i, double((i / (ho * wo)) * h * w));
  Value rowBase = c.constantOf(batchBase);
  Value total;
  for (auto &[ty, wy] : taps[0]) {
    auto [iy, insideY] = padTap(c, ty, h, padding, alignCorners);
    for (auto &[tx, wx] : taps[1]) {
      auto [ix, insideX] = padTap(c, tx, w, padding, alignCorners);
      Value inside = select(insideY, insideX, c.scalar(0, DType::Bool));
      Value weight = select(inside, mul(wy, wx), k(0));
      Value row = add(rowBase, add(mul(iy, c.scalar(double(w), DType::I64)), ix));
      Value sample = mul(gather(pixels, row, 0), reshape(weight, {n, ho, wo, 1}));
      total = total.valid() ? add(total, sample) : sample;
    }
  }
  c.setOutput(0, transpose(total, {0, 3, 1, 2}));
}

} // namespace stepc::onnx_import
