#include "grad_kernels.h"

#include "dtype_dispatch.h"
#include "index_math.h"

#include "stepc/interpreter.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace stepc::interp {
namespace {

struct Pair {
  int64_t h, w;
};
Pair pairAttr(const Node &node, std::string_view name) {
  const auto &v = node.attrs.getInts(name);
  return {v.at(0), v.at(1)};
}

// The geometry shared by conv2d and its two gradients.
struct ConvGeometry {
  Pair stride, padding, dilation;
  int64_t groups;
  int64_t batch, channels, h, w;    // x [N,C,H,W]
  int64_t filters, groupChannels, kh, kw; // w [O,C/groups,KH,KW]
  int64_t oh, ow;                   // g [N,O,OH,OW]

  ConvGeometry(const Node &node, const Shape &x, const Shape &weight, const Shape &g)
      : stride(pairAttr(node, "stride")), padding(pairAttr(node, "padding")),
        dilation(pairAttr(node, "dilation")), groups(node.attrs.getInt("groups")),
        batch(x[0]), channels(x[1]), h(x[2]), w(x[3]), filters(weight[0]),
        groupChannels(weight[1]), kh(weight[2]), kw(weight[3]), oh(g[2]), ow(g[3]) {}

  // Calls f(xOffset, wOffset, gOffset) for every multiply of the forward
  // convolution; the gradients accumulate the same products into x or w.
  template <class F> void forEachTap(F &&f) const {
    int64_t perGroup = filters / groups;
    for (int64_t n = 0; n < batch; ++n)
      for (int64_t o = 0; o < filters; ++o) {
        int64_t firstChannel = (o / perGroup) * groupChannels;
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j)
            for (int64_t ci = 0; ci < groupChannels; ++ci)
              for (int64_t a = 0; a < kh; ++a) {
                int64_t y = i * stride.h - padding.h + a * dilation.h;
                if (y < 0 || y >= h)
                  continue;
                for (int64_t b = 0; b < kw; ++b) {
                  int64_t xw = j * stride.w - padding.w + b * dilation.w;
                  if (xw < 0 || xw >= w)
                    continue;
                  f(((n * channels + firstChannel + ci) * h + y) * w + xw,
                    ((o * groupChannels + ci) * kh + a) * kw + b,
                    ((n * filters + o) * oh + i) * ow + j);
                }
              }
      }
  }
};

// Calls f(outIndex, positions) for each pooling window, with the flat input
// offsets of its in-bounds elements in row-major order.
template <class F>
void forEachWindow(const Node &node, const Shape &x, const Shape &g, F &&f) {
  Pair kernel = pairAttr(node, "kernel"), stride = pairAttr(node, "stride"),
       padding = pairAttr(node, "padding");
  int64_t planes = x[0] * x[1], h = x[2], w = x[3], oh = g[2], ow = g[3];
  std::vector<int64_t> positions;
  for (int64_t plane = 0; plane < planes; ++plane)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        positions.clear();
        for (int64_t a = 0; a < kernel.h; ++a)
          for (int64_t b = 0; b < kernel.w; ++b) {
            int64_t y = i * stride.h - padding.h + a, xw = j * stride.w - padding.w + b;
            if (y >= 0 && y < h && xw >= 0 && xw < w)
              positions.push_back((plane * h + y) * w + xw);
          }
        f((plane * oh + i) * ow + j, positions);
      }
}

template <class T> void scatterRows(const Node &node, const std::vector<int64_t> &index,
                                    const Tensor &updates, Tensor &out) {
  int64_t axis = node.attrs.getInt("axis"), size = node.attrs.getInt("size");
  int64_t outer = dimProduct(out.shape(), 0, static_cast<size_t>(axis));
  int64_t inner = dimProduct(out.shape(), static_cast<size_t>(axis) + 1, out.shape().size());
  int64_t count = static_cast<int64_t>(index.size());
  const T *u = updates.data<T>();
  T *o = out.data<T>();
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t j = 0; j < count; ++j)
      for (int64_t k = 0; k < inner; ++k)
        o[(a * size + index[j]) * inner + k] += u[(a * count + j) * inner + k];
}

} // namespace

Tensor scatterAdd(const Node &node, const Tensor &indices, const Tensor &updates) {
  std::vector<int64_t> index(static_cast<size_t>(indices.numel()));
  for (int64_t i = 0; i < indices.numel(); ++i)
    index[i] = static_cast<int64_t>(indices.real(i));
  IndexCheck check = *indexCheckFor(node, std::vector{indices.type(), updates.type()});
  for (size_t i = 0; i < index.size(); ++i)
    if (index[i] < 0 || index[i] >= check.bound)
      throw Error(indexOutOfRange(check, index[i], static_cast<int64_t>(i)));
  Tensor out(node.type);
  switch (updates.dtype()) {
  case DType::F32: scatterRows<float>(node, index, updates, out); break;
  case DType::F64: scatterRows<double>(node, index, updates, out); break;
  case DType::I32: scatterRows<int32_t>(node, index, updates, out); break;
  case DType::I64: scatterRows<int64_t>(node, index, updates, out); break;
  case DType::I8: scatterRows<int8_t>(node, index, updates, out); break;
  case DType::U8: scatterRows<uint8_t>(node, index, updates, out); break;
  case DType::I16: scatterRows<int16_t>(node, index, updates, out); break;
  case DType::U16: scatterRows<uint16_t>(node, index, updates, out); break;
  case DType::U32: scatterRows<uint32_t>(node, index, updates, out); break;
  case DType::U64: scatterRows<uint64_t>(node, index, updates, out); break;
  case DType::Bool: throw std::logic_error("scatter_add: bool updates");
  case DType::F16:
  case DType::BF16: throw std::logic_error("scatter_add: half updates reach no kernel");
  }
  return out;
}

namespace {

// Both gradients of conv2d accumulate the forward products at every tap:
// dx[x] += g * w[w] for the input, dw[w] += g * x[x] for the weight.
Tensor conv2dGrad(const Node &node, const Tensor &g, const Tensor &other, bool forWeight) {
  return withFloat(node, g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *d = out.data<T>();
    const T *po = other.data<T>(), *pg = g.data<T>();
    const Shape &x = forWeight ? other.shape() : out.shape();
    const Shape &w = forWeight ? out.shape() : other.shape();
    ConvGeometry(node, x, w, g.shape()).forEachTap([&](int64_t xi, int64_t wi, int64_t gi) {
      if (forWeight)
        d[wi] += pg[gi] * po[xi];
      else
        d[xi] += pg[gi] * po[wi];
    });
    return out;
  });
}

} // namespace

Tensor conv2dGradInput(const Node &node, const Tensor &g, const Tensor &w) {
  return conv2dGrad(node, g, w, false);
}

Tensor conv2dGradWeight(const Node &node, const Tensor &x, const Tensor &g) {
  return conv2dGrad(node, g, x, true);
}

Tensor maxPool2dGrad(const Node &node, const Tensor &x, const Tensor &g) {
  return withFloat(node, g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *dx = out.data<T>();
    const T *px = x.data<T>(), *pg = g.data<T>();
    forEachWindow(node, x.shape(), g.shape(), [&](int64_t at, const auto &positions) {
      // The first maximum wins ties; a NaN wins over numbers (PyTorch's rule).
      int64_t best = positions.front();
      for (int64_t p : positions)
        if (px[p] > px[best] || (std::isnan(px[p]) && !std::isnan(px[best])))
          best = p;
      dx[best] += pg[at];
    });
    return out;
  });
}

Tensor avgPool2dGrad(const Node &node, const Tensor &g) {
  return withFloat(node, g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *dx = out.data<T>();
    const T *pg = g.data<T>();
    Pair kernel = pairAttr(node, "kernel");
    bool includePad = node.attrs.getInt("count_include_pad") != 0;
    forEachWindow(node, out.shape(), g.shape(), [&](int64_t at, const auto &positions) {
      T divisor = static_cast<T>(includePad ? kernel.h * kernel.w
                                            : static_cast<int64_t>(positions.size()));
      for (int64_t p : positions)
        dx[p] += pg[at] / divisor;
    });
    return out;
  });
}

} // namespace stepc::interp
