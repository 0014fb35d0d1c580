// The interpreter's kernel of every op: one case per op in evaluateNode().
//
// These kernels are the oracle every pass and backend is checked against, so
// they are written to be obviously right rather than fast: each walks the
// result in row-major order, computes in the node's own dtype, and
// accumulates reductions in row-major order of the input. Shape rules
// (compiler/ir/shape_rules.cpp) have already checked attributes and dtypes;
// a dtype a kernel cannot handle is an internal error (std::logic_error),
// while data-dependent failures a user can cause (a gather index out of
// range) are stepc::Error.
#include "stepc/interpreter.h"
#include "stepc/random.h"

#include "dtype_dispatch.h"
#include "grad_kernels.h"
#include "index_math.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

namespace stepc {
namespace {

using interp::broadcastStrides;
using interp::dimProduct;
using interp::axisIndex;
using interp::BoolByte;
using interp::kIsBool;
using interp::U8Byte;
using interp::unsupported;
using interp::withElementType;
using interp::withFloat;
using interp::walk;

// As withElementType, for ops whose shape rule allows every dtype but bool.
template <class F> Tensor withNumeric(const Node &node, DType dtype, F &&f) {
  return withElementType(dtype, [&](auto tag) -> Tensor {
    if constexpr (!kIsBool<decltype(tag)>)
      return f(tag);
    else
      unsupported(node, dtype);
  });
}

// ---------------------------------------------------------------------------
// Scalar arithmetic. Signed overflow is undefined in C++, and the oracle must
// never be undefined, so integers wrap like two's-complement hardware (and
// like LLVM's add/mul without nsw flags).

// The unsigned type integer T wraps in: at least unsigned int, since narrower
// ones promote to (signed) int, where 65535 * 65535 overflows.
template <class T>
using WrapType = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

template <class T> T wrapAdd(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = WrapType<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}
template <class T> T wrapSub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = WrapType<T>;
    return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
  } else {
    return a - b;
  }
}
template <class T> T wrapMul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = WrapType<T>;
    return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
  } else {
    return a * b;
  }
}
// Not 0 - a for floats: negating +0 must give -0.
template <class T> T wrapNeg(T a) {
  if constexpr (std::is_integral_v<T>)
    return wrapSub(T(0), a);
  else
    return -a;
}

// Integer division truncates toward zero (unsigned types divide as
// unsigned). x/0 gives 0 and INT_MIN/-1 gives INT_MIN (the wrapped quotient):
// both trap on x86, and the interpreter must not crash on data.
template <class T> T divide(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0)
      return 0;
    if constexpr (std::is_signed_v<T>)
      if (b == -1)
        return wrapNeg(a);
  }
  return static_cast<T>(a / b);
}

// The remainder with the dividend's sign: std::fmod for floats (exact), % for
// integers; x rem 0 = x and MIN rem -1 = 0 (both trap on x86).
template <class T> T remainder(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::fmod(a, b);
  } else {
    if (b == 0)
      return a;
    if constexpr (std::is_signed_v<T>)
      if (b == -1)
        return 0;
    return static_cast<T>(a % b);
  }
}

template <class T> bool isNaN(T x) {
  if constexpr (std::is_floating_point_v<T>)
    return std::isnan(x);
  else
    return false;
}

// maximum/minimum propagate NaN (NumPy, and MLIR's arith.maximumf): the
// first NaN of a and b, else `value`.
template <class T> T firstNaNOr(T a, T b, T value) {
  return isNaN(a) ? a : isNaN(b) ? b : value;
}
template <class T> T maxOf(T a, T b) { return firstNaNOr(a, b, a < b ? b : a); }
template <class T> T minOf(T a, T b) { return firstNaNOr(a, b, b < a ? b : a); }

// C++ conversion, except that anything becomes bool as x != 0. Integer to
// integer keeps the low bits (two's complement, as numpy's astype and LLVM's
// trunci/extsi/extui). Float to integer follows integerBitsOf (types.h), as
// the compiled kernels do: C++, LLVM and ONNX leave out-of-range values
// undefined.
template <class To, class From> To convertTo(From x) {
  if constexpr (kIsBool<To>)
    return x != From(0) ? 1 : 0;
  else if constexpr (std::is_integral_v<To> && std::is_floating_point_v<From>)
    return static_cast<To>(integerBitsOf(x));
  else
    return static_cast<To>(x);
}

// Real attribute values as the element type (pad value, constant fill).
template <class T> T fromReal(double x) { return convertTo<T>(x); }

// ---------------------------------------------------------------------------
// Elementwise maps. Operands broadcast to the node's result shape.

template <class R, class T, class F>
Tensor mapUnary(const Node &node, const Tensor &x, F f) {
  Tensor out(node.type);
  R *o = out.data<R>();
  const T *p = x.data<T>();
  for (int64_t i = 0; i < out.numel(); ++i)
    o[i] = f(p[i]);
  return out;
}

template <class R, class T, class F>
Tensor mapBinary(const Node &node, const Tensor &a, const Tensor &b, F f) {
  Tensor out(node.type);
  R *o = out.data<R>();
  const T *pa = a.data<T>(), *pb = b.data<T>();
  int64_t i = 0;
  walk<2>(out.shape(),
          {broadcastStrides(a.shape(), out.shape()),
           broadcastStrides(b.shape(), out.shape())},
          [&](const auto &off) { o[i++] = f(pa[off[0]], pb[off[1]]); });
  return out;
}

// f32/f64 math: std:: functions pick the float or double overload, so f32
// math really is single precision.
template <class F>
Tensor unaryFloat(const Node &node, const Tensor &x, F f) {
  return withFloat(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return mapUnary<T, T>(node, x, [&](T v) { return static_cast<T>(f(v)); });
  });
}

template <class F>
Tensor unaryNumeric(const Node &node, const Tensor &x, F f) {
  return withNumeric(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return mapUnary<T, T>(node, x, [&](T v) { return static_cast<T>(f(v)); });
  });
}

template <class F>
Tensor binaryNumeric(const Node &node, const Tensor &a, const Tensor &b, F f) {
  return withNumeric(node, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return mapBinary<T, T>(node, a, b, [&](T x, T y) { return static_cast<T>(f(x, y)); });
  });
}

template <class F>
Tensor compare(const Node &node, const Tensor &a, const Tensor &b, F f) {
  return withElementType(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    return mapBinary<BoolByte, T>(node, a, b,
                                  [&](T x, T y) -> BoolByte { return f(x, y) ? 1 : 0; });
  });
}

Tensor select(const Node &node, const Tensor &cond, const Tensor &a, const Tensor &b) {
  return withElementType(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *o = out.data<T>();
    const BoolByte *pc = cond.data<BoolByte>();
    const T *pa = a.data<T>(), *pb = b.data<T>();
    int64_t i = 0;
    walk<3>(out.shape(),
            {broadcastStrides(cond.shape(), out.shape()),
             broadcastStrides(a.shape(), out.shape()),
             broadcastStrides(b.shape(), out.shape())},
            [&](const auto &off) { o[i++] = pc[off[0]] ? pa[off[1]] : pb[off[2]]; });
    return out;
  });
}

Tensor cast(const Node &node, const Tensor &x) {
  return withElementType(x.dtype(), [&](auto fromTag) {
    using From = decltype(fromTag);
    return withElementType(node.type.dtype, [&](auto toTag) {
      using To = decltype(toTag);
      return mapUnary<To, From>(node, x, [](From v) { return convertTo<To>(v); });
    });
  });
}

// ---------------------------------------------------------------------------
// Sources.

Tensor constant(const Node &node) {
  return withElementType(node.type.dtype, [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *o = out.data<T>();
    const AttrValue *data = node.attrs.find("data");
    if (!data) {
      std::fill(o, o + out.numel(), fromReal<T>(node.attrs.getReal("value")));
      return out;
    }
    // Integer lists convert directly so i64 data above 2^53 stays exact.
    auto fillFrom = [&](const auto &values) {
      if (static_cast<int64_t>(values.size()) != out.numel())
        throw std::logic_error("constant: data size differs from the shape");
      for (size_t i = 0; i < values.size(); ++i)
        o[i] = convertTo<T>(values[i]);
    };
    if (const auto *ints = std::get_if<std::vector<int64_t>>(data))
      fillFrom(*ints);
    else
      fillFrom(node.attrs.getReals("data"));
    return out;
  });
}

Tensor iota(const Node &node) {
  return withNumeric(node, node.type.dtype, [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    size_t axis = axisIndex(node.attrs.getInt("axis"), node.type.rank());
    int64_t n = node.type.shape[axis];
    int64_t inner = dimProduct(node.type.shape, axis + 1, node.type.shape.size());
    T *o = out.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i)
      o[i] = static_cast<T>((i / inner) % n);
    return out;
  });
}

// ---------------------------------------------------------------------------
// Reductions.

// Strides that map an input index to its output element: reduced axes get
// stride 0, so walking the input in row-major order accumulates each output
// element in row-major order of its inputs. keepdims does not change the
// output's layout, only its shape.
struct ReductionPlan {
  std::vector<int64_t> outStrides;
  int64_t count = 1; // elements reduced into each output
};

ReductionPlan planReduction(const Node &node, const Shape &in) {
  int64_t rank = static_cast<int64_t>(in.size());
  std::vector<bool> reduced(in.size(), false);
  for (int64_t axis : node.attrs.getInts("axes"))
    reduced[axisIndex(axis, rank)] = true;
  Shape kept = in;
  ReductionPlan plan;
  for (size_t i = 0; i < in.size(); ++i)
    if (reduced[i]) {
      kept[i] = 1;
      plan.count *= in[i];
    }
  plan.outStrides = rowMajorStrides(kept);
  for (size_t i = 0; i < in.size(); ++i)
    if (reduced[i])
      plan.outStrides[i] = 0;
  return plan;
}

template <class T, class F>
Tensor reduce(const Node &node, const Tensor &x, T init, F combine) {
  ReductionPlan plan = planReduction(node, x.shape());
  Tensor out(node.type);
  T *o = out.data<T>();
  const T *p = x.data<T>();
  std::fill(o, o + out.numel(), init);
  int64_t i = 0;
  walk<1>(x.shape(), {plan.outStrides},
          [&](const auto &off) { o[off[0]] = combine(o[off[0]], p[i++]); });
  return out;
}

// Identity of max: -inf for floats, the lowest value for integers.
template <class T> T lowestOf() {
  if constexpr (std::numeric_limits<T>::has_infinity)
    return -std::numeric_limits<T>::infinity();
  else
    return std::numeric_limits<T>::lowest();
}
template <class T> T highestOf() {
  if constexpr (std::numeric_limits<T>::has_infinity)
    return std::numeric_limits<T>::infinity();
  else
    return std::numeric_limits<T>::max();
}

Tensor argmax(const Node &node, const Tensor &x) {
  return withNumeric(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    size_t axis = axisIndex(node.attrs.getInt("axis"), x.rank());
    int64_t outer = dimProduct(x.shape(), 0, axis), n = x.shape()[axis];
    int64_t inner = dimProduct(x.shape(), axis + 1, x.shape().size());
    // The shape rule rejects an empty axis unless the result is empty too.
    assert(n > 0 || outer * inner == 0);
    Tensor out(node.type);
    int64_t *o = out.data<int64_t>();
    const T *p = x.data<T>();
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t b = 0; b < inner; ++b) {
        const T *line = p + a * n * inner + b;
        // Strictly greater keeps the first index on ties; the first NaN wins
        // like NumPy, since NaN is what reduce_max would return.
        int64_t best = 0;
        for (int64_t k = 1; k < n && !isNaN(line[best * inner]); ++k)
          if (line[k * inner] > line[best * inner] || isNaN(line[k * inner]))
            best = k;
        o[a * inner + b] = best;
      }
    return out;
  });
}

// ---------------------------------------------------------------------------
// Linear algebra and data movement.

Tensor matmul(const Node &node, const Tensor &a, const Tensor &b) {
  return withNumeric(node, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Shape &sa = a.shape(), &sb = b.shape();
    int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
    Shape batch(node.type.shape.begin(), node.type.shape.end() - 2);
    Shape batchA(sa.begin(), sa.end() - 2), batchB(sb.begin(), sb.end() - 2);
    Tensor out(node.type);
    T *o = out.data<T>();
    const T *pa = a.data<T>(), *pb = b.data<T>();
    // The walk runs over batch indices; offsets count whole matrices.
    walk<3>(batch,
            {broadcastStrides(batchA, batch), broadcastStrides(batchB, batch),
             rowMajorStrides(batch)},
            [&](const auto &off) {
              const T *ma = pa + off[0] * m * k, *mb = pb + off[1] * k * n;
              T *mo = o + off[2] * m * n;
              for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < n; ++j) {
                  T acc = 0;
                  for (int64_t l = 0; l < k; ++l)
                    acc = wrapAdd(acc, wrapMul(ma[i * k + l], mb[l * n + j]));
                  mo[i * n + j] = acc;
                }
            });
    return out;
  });
}

// out[i] = x[base + index(i) . strides]: transpose, broadcast_to and slice
// are all this with different strides.
Tensor gatherStrided(const Node &node, const Tensor &x, std::vector<int64_t> strides,
                     int64_t base = 0) {
  return withElementType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *o = out.data<T>();
    const T *p = x.data<T>();
    int64_t i = 0;
    walk<1>(out.shape(), {strides}, [&](const auto &off) { o[i++] = p[off[0]]; },
            {base});
    return out;
  });
}

Tensor transpose(const Node &node, const Tensor &x) {
  const auto &perm = node.attrs.getInts("perm");
  std::vector<int64_t> inStrides = rowMajorStrides(x.shape()), strides(perm.size());
  for (size_t j = 0; j < perm.size(); ++j)
    strides[j] = inStrides[perm[j]];
  return gatherStrided(node, x, strides);
}

Tensor slice(const Node &node, const Tensor &x) {
  const auto &starts = node.attrs.getInts("starts");
  const auto &steps = node.attrs.getInts("strides");
  std::vector<int64_t> strides = rowMajorStrides(x.shape());
  int64_t base = 0;
  for (size_t j = 0; j < strides.size(); ++j) {
    base += starts[j] * strides[j];
    strides[j] *= steps[j];
  }
  return gatherStrided(node, x, strides, base);
}

// Reshape keeps the row-major order, so the bytes are unchanged.
Tensor reshape(const Node &node, const Tensor &x) {
  Tensor out(node.type);
  if (x.nbytes() != 0)
    std::memcpy(out.bytes(), x.bytes(), x.nbytes());
  return out;
}

Tensor concat(const Node &node, std::span<const Tensor *const> xs) {
  Tensor out(node.type);
  size_t axis = axisIndex(node.attrs.getInt("axis"), out.rank());
  size_t elem = dtypeSize(out.dtype());
  int64_t outer = dimProduct(out.shape(), 0, axis);
  int64_t inner = dimProduct(out.shape(), axis + 1, out.shape().size());
  // Each outer index holds one block of every operand, in operand order.
  std::byte *o = out.bytes();
  for (int64_t a = 0; a < outer; ++a)
    for (const Tensor *x : xs) {
      size_t block = static_cast<size_t>(x->shape()[axis] * inner) * elem;
      if (block != 0)
        std::memcpy(o, x->bytes() + a * block, block);
      o += block;
    }
  return out;
}

Tensor pad(const Node &node, const Tensor &x) {
  return withElementType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *o = out.data<T>();
    std::fill(o, o + out.numel(), fromReal<T>(node.attrs.getReal("value")));
    // Walk the input and write each element where it lands in the output;
    // interior padding spreads neighbours (interior + 1) apart.
    const auto &low = node.attrs.getInts("low");
    std::vector<int64_t> strides = rowMajorStrides(out.shape());
    int64_t base = 0;
    for (size_t j = 0; j < strides.size(); ++j)
      base += low[j] * strides[j];
    if (node.attrs.has("interior")) {
      const auto &interior = node.attrs.getInts("interior");
      for (size_t j = 0; j < strides.size(); ++j)
        strides[j] *= interior[j] + 1;
    }
    const T *p = x.data<T>();
    int64_t i = 0;
    walk<1>(x.shape(), {strides}, [&](const auto &off) { o[off[0]] = p[i++]; }, {base});
    return out;
  });
}

// Integer index tensors as int64, whatever their dtype.
std::vector<int64_t> indexValues(const Node &node, const Tensor &indices) {
  if (indices.dtype() == DType::I64)
    return {indices.data<int64_t>(), indices.data<int64_t>() + indices.numel()};
  if (indices.dtype() == DType::I32)
    return {indices.data<int32_t>(), indices.data<int32_t>() + indices.numel()};
  unsupported(node, indices.dtype());
}

// Throws the error indexCheckFor describes for the first index out of its
// range, if the op checks its indices.
void checkIndices(const Node &node, std::vector<TensorType> operands,
                  const std::vector<int64_t> &index) {
  std::optional<IndexCheck> check = indexCheckFor(node, operands);
  if (!check)
    return;
  for (size_t i = 0; i < index.size(); ++i)
    if (index[i] < 0 || index[i] >= check->bound)
      throw Error(indexOutOfRange(*check, index[i], static_cast<int64_t>(i)));
}

Tensor gather(const Node &node, const Tensor &data, const Tensor &indices) {
  size_t axis = axisIndex(node.attrs.getInt("axis"), data.rank());
  int64_t outer = dimProduct(data.shape(), 0, axis), n = data.shape()[axis];
  int64_t inner = dimProduct(data.shape(), axis + 1, data.shape().size());
  std::vector<int64_t> index = indexValues(node, indices);
  checkIndices(node, {data.type(), indices.type()}, index);
  Tensor out(node.type);
  size_t block = static_cast<size_t>(inner) * dtypeSize(data.dtype());
  std::byte *o = out.bytes();
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t idx : index) {
      if (block != 0)
        std::memcpy(o, data.bytes() + (a * n + idx) * block, block);
      o += block;
    }
  return out;
}

Tensor oneHot(const Node &node, const Tensor &indices) {
  int64_t depth = node.attrs.getInt("depth");
  std::vector<int64_t> index = indexValues(node, indices);
  // Unless checked=1, an index out of range gives an all-zero row.
  checkIndices(node, {indices.type()}, index);
  return withElementType(node.type.dtype, [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *o = out.data<T>();
    for (size_t i = 0; i < index.size(); ++i)
      if (index[i] >= 0 && index[i] < depth)
        o[static_cast<int64_t>(i) * depth + index[i]] = T(1);
    return out;
  });
}

// ---------------------------------------------------------------------------
// Convolution, pooling, dropout.

// A pair attribute [h, w].
struct Pair {
  int64_t h, w;
};
Pair pairAttr(const Node &node, std::string_view name) {
  const auto &v = node.attrs.getInts(name);
  return {v.at(0), v.at(1)};
}

Tensor conv2d(const Node &node, const Tensor &x, const Tensor &w) {
  return withFloat(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Pair stride = pairAttr(node, "stride"), padding = pairAttr(node, "padding"),
         dilation = pairAttr(node, "dilation");
    int64_t groups = node.attrs.getInt("groups");
    const Shape &xs = x.shape(), &ws = w.shape(), &os = node.type.shape;
    int64_t batch = xs[0], c = xs[1], h = xs[2], wd = xs[3];
    int64_t oc = ws[0], cg = ws[1], kh = ws[2], kw = ws[3];
    int64_t oh = os[2], ow = os[3], ocg = oc / groups;
    Tensor out(node.type);
    T *o = out.data<T>();
    const T *px = x.data<T>(), *pw = w.data<T>();
    for (int64_t n = 0; n < batch; ++n)
      for (int64_t f = 0; f < oc; ++f) {
        int64_t firstChannel = (f / ocg) * cg;
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            T acc = 0;
            for (int64_t ci = 0; ci < cg; ++ci)
              for (int64_t a = 0; a < kh; ++a) {
                int64_t y = i * stride.h - padding.h + a * dilation.h;
                if (y < 0 || y >= h)
                  continue; // zero padding contributes nothing
                for (int64_t b = 0; b < kw; ++b) {
                  int64_t xw = j * stride.w - padding.w + b * dilation.w;
                  if (xw < 0 || xw >= wd)
                    continue;
                  acc += px[((n * c + firstChannel + ci) * h + y) * wd + xw] *
                         pw[((f * cg + ci) * kh + a) * kw + b];
                }
              }
            o[((n * oc + f) * oh + i) * ow + j] = acc;
          }
      }
    return out;
  });
}

// Calls visit(value) for the in-bounds elements of each pooling window and
// store(outIndex, count) after each window; padding positions are skipped.
template <class T, class Begin, class Visit, class Store>
void pool2d(const Node &node, const Tensor &x, Begin begin, Visit visit, Store store) {
  Pair kernel = pairAttr(node, "kernel"), stride = pairAttr(node, "stride"),
       padding = pairAttr(node, "padding");
  const Shape &xs = x.shape(), &os = node.type.shape;
  int64_t planes = xs[0] * xs[1], h = xs[2], w = xs[3], oh = os[2], ow = os[3];
  const T *p = x.data<T>();
  for (int64_t plane = 0; plane < planes; ++plane)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        begin();
        int64_t count = 0;
        for (int64_t a = 0; a < kernel.h; ++a) {
          int64_t y = i * stride.h - padding.h + a;
          for (int64_t b = 0; b < kernel.w; ++b) {
            int64_t xw = j * stride.w - padding.w + b;
            if (y < 0 || y >= h || xw < 0 || xw >= w)
              continue;
            visit(p[(plane * h + y) * w + xw]);
            ++count;
          }
        }
        store((plane * oh + i) * ow + j, count);
      }
}

Tensor maxPool2d(const Node &node, const Tensor &x) {
  return withFloat(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor out(node.type);
    T *o = out.data<T>();
    T best = 0;
    pool2d<T>(
        node, x, [&] { best = lowestOf<T>(); }, [&](T v) { best = maxOf(best, v); },
        [&](int64_t at, int64_t) { o[at] = best; });
    return out;
  });
}

Tensor avgPool2d(const Node &node, const Tensor &x) {
  return withFloat(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    bool includePad = node.attrs.getInt("count_include_pad") != 0;
    Pair kernel = pairAttr(node, "kernel");
    Tensor out(node.type);
    T *o = out.data<T>();
    T sum = 0;
    // The shape rule guarantees every window holds a real element, so
    // count > 0.
    pool2d<T>(
        node, x, [&] { sum = 0; }, [&](T v) { sum += v; },
        [&](int64_t at, int64_t count) {
          o[at] = sum / static_cast<T>(includePad ? kernel.h * kernel.w : count);
        });
    return out;
  });
}

// Element i is kept iff uniform(seed, i) >= rate: counter-based, so every
// backend draws the same mask from the same seed.
Tensor dropout(const Node &node, const Tensor &x, const Tensor &seedTensor) {
  return withFloat(node, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    double rate = node.attrs.getReal("rate");
    uint64_t seed = static_cast<uint64_t>(seedTensor.data<int64_t>()[0]);
    T scale = static_cast<T>(1.0 / (1.0 - rate));
    Tensor out(node.type);
    T *o = out.data<T>();
    const T *p = x.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i)
      o[i] = randomUniform(seed, static_cast<uint64_t>(i)) >= rate ? p[i] * scale : T(0);
    return out;
  });
}

} // namespace

// The kernels proper, for every dtype but the halves.
static Tensor evaluateInOwnDType(const Node &node, std::span<const Tensor *const> operands) {
  assert(opInfo(node.op).arity < 0 ||
         operands.size() == static_cast<size_t>(opInfo(node.op).arity));
  auto x = [&](size_t i) -> const Tensor & { return *operands[i]; };
  switch (node.op) {
  case OpKind::Input:
  case OpKind::Parameter:
    // The interpreter binds these from the caller's maps.
    throw std::logic_error(fmt::format("evaluateNode: {} '{}' has no kernel",
                                       opInfo(node.op).name, node.name));
  case OpKind::Constant: return constant(node);
  case OpKind::Iota: return iota(node);

  case OpKind::Neg: return unaryNumeric(node, x(0), [](auto v) { return wrapNeg(v); });
  case OpKind::Abs:
    return unaryNumeric(node, x(0), [](auto v) {
      if constexpr (std::is_floating_point_v<decltype(v)>)
        return std::abs(v);
      else if constexpr (std::is_signed_v<decltype(v)>)
        return v < 0 ? wrapNeg(v) : v; // abs(INT_MIN) wraps to INT_MIN
      else
        return v;
    });
  case OpKind::Exp: return unaryFloat(node, x(0), [](auto v) { return std::exp(v); });
  case OpKind::Log: return unaryFloat(node, x(0), [](auto v) { return std::log(v); });
  case OpKind::Sqrt: return unaryFloat(node, x(0), [](auto v) { return std::sqrt(v); });
  case OpKind::Rsqrt:
    return unaryFloat(node, x(0), [](auto v) { return decltype(v)(1) / std::sqrt(v); });
  case OpKind::Square: return unaryNumeric(node, x(0), [](auto v) { return wrapMul(v, v); });
  case OpKind::Tanh: return unaryFloat(node, x(0), [](auto v) { return std::tanh(v); });
  case OpKind::Sigmoid:
    return unaryFloat(node, x(0), [](auto v) {
      using T = decltype(v);
      return T(1) / (T(1) + std::exp(-v));
    });
  case OpKind::Relu:
    // `v < 0 ? 0 : v` lets NaN through, as max(x, 0) with NaN propagation.
    return unaryNumeric(node, x(0), [](auto v) {
      if constexpr (std::is_unsigned_v<decltype(v)>)
        return v;
      else
        return v < 0 ? decltype(v)(0) : v;
    });
  case OpKind::Sin: return unaryFloat(node, x(0), [](auto v) { return std::sin(v); });
  case OpKind::Cos: return unaryFloat(node, x(0), [](auto v) { return std::cos(v); });
  case OpKind::Sign:
    return unaryNumeric(node, x(0), [](auto v) {
      using T = decltype(v);
      return isNaN(v) ? v : T((T(0) < v) - (v < T(0)));
    });
  case OpKind::Erf: return unaryFloat(node, x(0), [](auto v) { return std::erf(v); });
  case OpKind::Cast: return cast(node, x(0));

  case OpKind::Add:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return wrapAdd(a, b); });
  case OpKind::Sub:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return wrapSub(a, b); });
  case OpKind::Mul:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return wrapMul(a, b); });
  case OpKind::Div:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return divide(a, b); });
  case OpKind::Rem:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return remainder(a, b); });
  case OpKind::Pow:
    return withFloat(node, x(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      return mapBinary<T, T>(node, x(0), x(1), [](T a, T b) { return std::pow(a, b); });
    });
  case OpKind::Maximum:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return maxOf(a, b); });
  case OpKind::Minimum:
    return binaryNumeric(node, x(0), x(1), [](auto a, auto b) { return minOf(a, b); });

  case OpKind::Eq: return compare(node, x(0), x(1), [](auto a, auto b) { return a == b; });
  case OpKind::Ne: return compare(node, x(0), x(1), [](auto a, auto b) { return a != b; });
  case OpKind::Lt: return compare(node, x(0), x(1), [](auto a, auto b) { return a < b; });
  case OpKind::Le: return compare(node, x(0), x(1), [](auto a, auto b) { return a <= b; });
  case OpKind::Gt: return compare(node, x(0), x(1), [](auto a, auto b) { return a > b; });
  case OpKind::Ge: return compare(node, x(0), x(1), [](auto a, auto b) { return a >= b; });
  case OpKind::Select: return select(node, x(0), x(1), x(2));

  case OpKind::ReduceSum:
    return withNumeric(node, x(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      return reduce<T>(node, x(0), T(0), [](T a, T b) { return wrapAdd(a, b); });
    });
  case OpKind::ReduceMean:
    return withFloat(node, x(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      Tensor out = reduce<T>(node, x(0), T(0), [](T a, T b) { return a + b; });
      // An empty reduction gives 0/0 = NaN, as NumPy's mean does.
      T count = static_cast<T>(planReduction(node, x(0).shape()).count);
      for (int64_t i = 0; i < out.numel(); ++i)
        out.data<T>()[i] /= count;
      return out;
    });
  case OpKind::ReduceMax:
    return withNumeric(node, x(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      return reduce<T>(node, x(0), lowestOf<T>(), [](T a, T b) { return maxOf(a, b); });
    });
  case OpKind::ReduceMin:
    return withNumeric(node, x(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      return reduce<T>(node, x(0), highestOf<T>(), [](T a, T b) { return minOf(a, b); });
    });
  case OpKind::ArgMax: return argmax(node, x(0));

  case OpKind::MatMul: return matmul(node, x(0), x(1));
  case OpKind::Transpose: return transpose(node, x(0));
  case OpKind::Reshape: return reshape(node, x(0));
  case OpKind::BroadcastTo:
    return gatherStrided(node, x(0), broadcastStrides(x(0).shape(), node.type.shape));
  case OpKind::Slice: return slice(node, x(0));
  case OpKind::Concat: return concat(node, operands);
  case OpKind::Pad: return pad(node, x(0));
  case OpKind::Gather: return gather(node, x(0), x(1));
  case OpKind::OneHot: return oneHot(node, x(0));

  case OpKind::Conv2d: return conv2d(node, x(0), x(1));
  case OpKind::MaxPool2d: return maxPool2d(node, x(0));
  case OpKind::AvgPool2d: return avgPool2d(node, x(0));
  case OpKind::Dropout: return dropout(node, x(0), x(1));

  case OpKind::ScatterAdd: return interp::scatterAdd(node, x(0), x(1));
  case OpKind::Conv2dGradInput: return interp::conv2dGradInput(node, x(0), x(1));
  case OpKind::Conv2dGradWeight: return interp::conv2dGradWeight(node, x(0), x(1));
  case OpKind::MaxPool2dGrad: return interp::maxPool2dGrad(node, x(0), x(1));
  case OpKind::AvgPool2dGrad: return interp::avgPool2dGrad(node, x(0));
  // One process: the sum or mean over all processes is the value itself.
  // interpret() sends it through InterpretOptions::communicator when given.
  case OpKind::AllReduce: return x(0);
  }
  throw std::logic_error("evaluateNode: unknown op");
}

// Half precision (f16, bf16) computes in f32 and rounds on store, as the
// hardware and the compiled kernels do: the node runs as its f32 twin, half
// operands widened exactly, and its result is rounded to nearest-even once.
// Reductions and matmuls therefore accumulate in f32.
Tensor evaluateNode(const Node &node, std::span<const Tensor *const> operands) {
  bool anyHalf = isHalf(node.type.dtype);
  for (const Tensor *operand : operands)
    anyHalf = anyHalf || isHalf(operand->dtype());
  if (!anyHalf)
    return evaluateInOwnDType(node, operands);
  // A cast to a half type rounds its operand once, even from f64 (going
  // through f32 could round twice).
  if (node.op == OpKind::Cast && isHalf(node.type.dtype))
    return castTensor(*operands[0], node.type.dtype);
  Node wide = node;
  if (isHalf(wide.type.dtype))
    wide.type.dtype = DType::F32;
  if (const AttrValue *dtype = node.attrs.find("dtype");
      dtype && std::holds_alternative<std::string>(*dtype) &&
      isHalf(parseDType(std::get<std::string>(*dtype)).value_or(DType::F32)))
    wide.attrs.set("dtype", std::string(dtypeName(DType::F32)));
  std::vector<Tensor> widened(operands.size());
  std::vector<const Tensor *> wideOperands(operands.begin(), operands.end());
  for (size_t i = 0; i < operands.size(); ++i)
    if (isHalf(operands[i]->dtype())) {
      widened[i] = castTensor(*operands[i], DType::F32);
      wideOperands[i] = &widened[i];
    }
  Tensor result = evaluateInOwnDType(wide, wideOperands);
  return isHalf(node.type.dtype) ? castTensor(result, node.type.dtype) : result;
}

} // namespace stepc
