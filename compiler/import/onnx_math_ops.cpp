// ONNX ops that stepc has no op of its own for, written with stepc's
// elementwise ops at import: rounding (Floor, Ceil, Round), Mod, the inverse
// trigonometric and hyperbolic functions, EyeLike and the window functions
// (constants), Einsum (transposes, reshapes and matmuls, so it reaches the
// matmul micro-kernel) and TopK (a rank computed by pairwise comparison).
// Being compositions, they run on every backend and have gradients wherever
// their parts have.
#include "onnx_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <numeric>

namespace stepc::onnx_import {

namespace {

Value logicalAnd(NodeContext &c, Value a, Value b) {
  return select(a, b, c.scalar(0, DType::Bool));
}

Value logicalOr(NodeContext &c, Value a, Value b) { return select(a, c.scalar(1, DType::Bool), b); }

void requireFloat(NodeContext &c, Value x) {
  if (!isFloat(x.dtype()))
    c.unsupportedDType("input", x.dtype());
}

} // namespace

// floor(x) through a round trip to i64, which truncates. Values at or above
// 2^52 in magnitude are integers already (and inf, NaN are themselves); they
// are replaced by 0 before the conversion, which is undefined out of range.
Value floorOf(NodeContext &c, Value x) {
  if (!isFloat(x.dtype()))
    return x;
  Value small = lt(abs(x), scalarOf(c, x, 4503599627370496.0)); // 2^52
  Value safe = select(small, x, scalarOf(c, x, 0));
  Value truncated = cast(cast(safe, DType::I64), x.dtype());
  Value floored = sub(truncated, cast(gt(truncated, safe), x.dtype()));
  return select(small, floored, x);
}

// From floor(x) and the exact fraction x - floor(x): rounding x + 0.5 first
// would round 0.49999997 up, and odd integers beyond 2^23 (2^10 in f16).
Value roundHalfEven(NodeContext &c, Value x) {
  Value half = scalarOf(c, x, 0.5);
  Value f = floorOf(c, x);
  Value fraction = sub(x, f);
  Value odd = eq(isEvenInteger(c, f), c.scalar(0, DType::Bool));
  Value up = logicalOr(c, gt(fraction, half), logicalAnd(c, eq(fraction, half), odd));
  return select(up, add(f, scalarOf(c, x, 1)), f);
}

Value isEvenInteger(NodeContext &c, Value x) {
  Value halves = floorOf(c, mul(x, scalarOf(c, x, 0.5)));
  return eq(sub(x, mul(halves, scalarOf(c, x, 2))), scalarOf(c, x, 0));
}

namespace {

Value ceilOf(NodeContext &c, Value x) { return neg(floorOf(c, neg(x))); }

} // namespace

void mapFloor(NodeContext &c) {
  Value x = c.in(0);
  requireFloat(c, x);
  c.setOutput(0, floorOf(c, x));
}


void mapCeil(NodeContext &c) {
  Value x = c.in(0);
  requireFloat(c, x);
  c.setOutput(0, ceilOf(c, x));
}


void mapRound(NodeContext &c) {
  Value x = c.in(0);
  requireFloat(c, x);
  c.setOutput(0, roundHalfEven(c, x));
}

// fmod = 1: the remainder takes the dividend's sign (C's fmod and %: rem);
// fmod = 0: the divisor's (Python's %), for integers only (the ONNX spec
// requires fmod = 1 for floats). x mod 0 is x (rem's rule).
void mapMod(NodeContext &c) {
  Value a = c.in(0), b = c.in(1);
  int64_t fmod = c.attrInt("fmod", 0);
  if (fmod != 0 && fmod != 1)
    c.invalid(fmt::format("attribute 'fmod' must be 0 or 1, found {}", fmod));
  if (a.dtype() != b.dtype())
    c.invalid(fmt::format("operands have different types: {} and {}", typeString(a.type()),
                          typeString(b.type())));
  if (a.dtype() == DType::Bool)
    c.unsupportedDType("input", a.dtype());
  if (isFloat(a.dtype()) && fmod == 0)
    c.invalid(fmt::format("a {} input needs fmod = 1 (ONNX defines fmod = 0 for integers only)",
                          dtypeName(a.dtype())));
  Value zero = scalarOf(c, a, 0);
  Value r = rem(a, b);
  if (fmod == 1) {
    c.setOutput(0, r);
    return;
  }
  Value signsDiffer = ne(lt(r, zero), lt(b, zero));
  c.setOutput(0, select(logicalAnd(c, ne(r, zero), signsDiffer), add(r, b), r));
}

namespace {

// atan with the Cephes single-precision range reduction: arguments above
// tan(3pi/8) use pi/2 + atan(-1/x), those above tan(pi/8) use
// pi/4 + atan((x-1)/(x+1)), leaving |x| <= 0.4142 for the polynomial.
Value atanOf(NodeContext &c, Value x) {
  auto k = [&](double v) { return scalarOf(c, x, v); };
  Value s = sign(x), ax = abs(x);
  Value big = gt(ax, k(2.414213562373095)), mid = gt(ax, k(0.4142135623730950));
  Value reduced = select(big, div(k(-1), ax), select(mid, div(sub(ax, k(1)), add(ax, k(1))), ax));
  Value offset = select(big, k(std::numbers::pi / 2), select(mid, k(std::numbers::pi / 4), k(0)));
  Value z = square(reduced);
  Value p = k(8.05374449538e-2);
  p = sub(mul(p, z), k(1.38776856032e-1));
  p = add(mul(p, z), k(1.99777106478e-1));
  p = sub(mul(p, z), k(3.33329491539e-1));
  Value y = add(mul(mul(p, z), reduced), reduced);
  return mul(s, add(offset, y));
}

Value asinOf(NodeContext &c, Value x) {
  return atanOf(c, div(x, sqrt(sub(scalarOf(c, x, 1), square(x)))));
}

template <int Which> void inverseTrig(NodeContext &c) {
  Value x = c.in(0);
  requireFloat(c, x);
  auto k = [&](double v) { return scalarOf(c, x, v); };
  Value y;
  if constexpr (Which == 0) // Atan
    y = atanOf(c, x);
  else if constexpr (Which == 1) // Asin
    y = asinOf(c, x);
  else if constexpr (Which == 2) // Acos
    y = sub(k(std::numbers::pi / 2), asinOf(c, x));
  else if constexpr (Which == 3) // Asinh: sign(x) log(|x| + sqrt(x^2 + 1))
    y = mul(sign(x), log(add(abs(x), sqrt(add(square(x), k(1))))));
  else if constexpr (Which == 4) // Acosh
    y = log(add(x, sqrt(sub(square(x), k(1)))));
  else // Atanh
    y = mul(k(0.5), log(div(add(k(1), x), sub(k(1), x))));
  c.setOutput(0, y);
}

// ---------------------------------------------------------------------------
// Constants.

DType outputDType(NodeContext &c, const char *attr, DType fallback) {
  if (!c.hasAttr(attr))
    return fallback;
  int64_t onnxType = c.attrInt(attr);
  std::optional<DType> dtype = dtypeFromOnnx(static_cast<int32_t>(onnxType));
  if (!dtype)
    c.unsupportedDType(fmt::format("attribute '{}'", attr), static_cast<int32_t>(onnxType));
  return *dtype;
}

} // namespace

void mapEyeLike(NodeContext &c) {
  TensorType x = c.type(0);
  if (x.rank() != 2)
    c.invalid(fmt::format("expected a matrix, found {}", typeString(x)));
  DType dtype = outputDType(c, "dtype", x.dtype);
  int64_t k = c.attrInt("k", 0);
  if (checkedNumel(x.shape) > kMaxImportElements)
    c.unsupported(fmt::format("an identity of {} elements (at most {})", checkedNumel(x.shape),
                              kMaxImportElements));
  Tensor eye(dtype, x.shape);
  for (int64_t i = 0; i < x.shape[0]; ++i)
    if (i + k >= 0 && i + k < x.shape[1])
      eye.setReal(i * x.shape[1] + i + k, 1);
  c.setOutput(0, std::move(eye));
}

namespace {

// HannWindow, HammingWindow, BlackmanWindow: sum_k a_k cos(2 pi k n / N)
// with alternating signs, N = size (periodic) or size - 1 (symmetric).
template <int Which> void windowOp(NodeContext &c) {
  int64_t size = static_cast<int64_t>(c.requireScalar(0, "the window size"));
  if (size < 0 || size > kMaxImportElements)
    c.invalid(fmt::format("window size {} is out of range [0, {}]", size, kMaxImportElements));
  DType dtype = outputDType(c, "output_datatype", DType::F32);
  bool periodic = c.attrInt("periodic", 1) != 0;
  double n1 = static_cast<double>(periodic ? size : size - 1);
  std::vector<double> a;
  if constexpr (Which == 0)
    a = {0.5, 0.5};
  else if constexpr (Which == 1)
    a = {25.0 / 46.0, 21.0 / 46.0};
  else
    a = {0.42, 0.5, 0.08};
  Tensor w(dtype, {size});
  for (int64_t n = 0; n < size; ++n) {
    double v = 0;
    for (size_t k = 0; k < a.size(); ++k)
      v += (k % 2 ? -1 : 1) * a[k] * std::cos(2 * std::numbers::pi * double(k) * double(n) / n1);
    w.setReal(n, v);
  }
  c.setOutput(0, std::move(w));
}

// ---------------------------------------------------------------------------
// Einsum.

// One operand while contracting: a value and the label of each of its axes.
struct Labeled {
  Value value;
  std::string labels;
};

// Labels that appear in `labels` but nowhere in `others` nor in `output`.
std::string privateLabels(const std::string &labels, const std::vector<std::string> &others,
                          const std::string &output) {
  std::string out;
  for (char l : labels) {
    bool elsewhere = output.find(l) != std::string::npos;
    for (const std::string &o : others)
      elsewhere = elsewhere || o.find(l) != std::string::npos;
    if (!elsewhere && out.find(l) == std::string::npos)
      out += l;
  }
  return out;
}

Labeled sumOut(Labeled x, const std::string &labels) {
  std::vector<int64_t> axes;
  std::string kept;
  for (size_t i = 0; i < x.labels.size(); ++i) {
    if (labels.find(x.labels[i]) != std::string::npos)
      axes.push_back(static_cast<int64_t>(i));
    else
      kept += x.labels[i];
  }
  if (axes.empty())
    return x;
  return {sum(x.value, Axes(axes), false), kept};
}

Labeled permuted(Labeled x, const std::string &order) {
  if (x.labels == order)
    return x;
  std::vector<int64_t> perm;
  for (char l : order)
    perm.push_back(static_cast<int64_t>(x.labels.find(l)));
  return {transpose(x.value, perm), order};
}

// A repeated label takes the diagonal: the two axes are moved last,
// flattened, and every (n+1)-th element kept.
Labeled diagonals(NodeContext &c, Labeled x) {
  for (;;) {
    size_t first = std::string::npos, second = std::string::npos;
    for (size_t i = 0; i < x.labels.size() && second == std::string::npos; ++i) {
      size_t j = x.labels.find(x.labels[i], i + 1);
      if (j != std::string::npos)
        first = i, second = j;
    }
    if (second == std::string::npos)
      return x;
    char l = x.labels[first];
    int64_t n = x.value.dim(static_cast<int64_t>(first));
    if (x.value.dim(static_cast<int64_t>(second)) != n)
      c.invalid(fmt::format("label '{}' names axes of sizes {} and {}", l, n,
                            x.value.dim(static_cast<int64_t>(second))));
    std::string rest;
    for (size_t i = 0; i < x.labels.size(); ++i)
      if (i != first && i != second)
        rest += x.labels[i];
    // Temporary unique labels for the two axes: '{' and '|' never occur.
    std::string order = rest + "{|";
    std::string relabeled = x.labels;
    relabeled[first] = '{';
    relabeled[second] = '|';
    Value moved = permuted({x.value, relabeled}, order).value;
    Shape shape = moved.shape();
    shape.resize(shape.size() - 2);
    shape.push_back(n * n);
    Value flat = reshape(moved, shape);
    std::vector<int64_t> starts(shape.size(), 0), limits = shape, strides(shape.size(), 1);
    strides.back() = n + 1;
    Value diag = slice(flat, starts, limits, strides);
    x = {diag, rest + l};
  }
}

// A x B with shared labels either kept (batch) or summed (contracted): one
// batched matmul [batch, M, K] x [batch, K, N].
Labeled contractPair(Labeled a, Labeled b, const std::string &keep) {
  std::string batch, contracted, aOnly, bOnly;
  for (char l : a.labels) {
    if (b.labels.find(l) == std::string::npos)
      aOnly += l;
    else if (keep.find(l) != std::string::npos)
      batch += l;
    else
      contracted += l;
  }
  for (char l : b.labels)
    if (a.labels.find(l) == std::string::npos)
      bOnly += l;
  auto dims = [](const Labeled &x, const std::string &labels) {
    Shape s;
    int64_t n = 1;
    for (char l : labels) {
      s.push_back(x.value.dim(static_cast<int64_t>(x.labels.find(l))));
      n *= s.back();
    }
    return std::pair{s, n};
  };
  auto [batchShape, nb] = dims(a, batch);
  auto [mShape, m] = dims(a, aOnly);
  auto [kShape, k] = dims(a, contracted);
  auto [nShape, n] = dims(b, bOnly);
  Value av = reshape(permuted(a, batch + aOnly + contracted).value, {nb, m, k});
  Value bv = reshape(permuted(b, batch + contracted + bOnly).value, {nb, k, n});
  Shape out = batchShape;
  out.insert(out.end(), mShape.begin(), mShape.end());
  out.insert(out.end(), nShape.begin(), nShape.end());
  return {reshape(matmul(av, bv), out), batch + aOnly + bOnly};
}

} // namespace

void mapEinsum(NodeContext &c) {
  std::string equation;
  for (char ch : c.attrString("equation"))
    if (ch != ' ')
      equation += ch;
  size_t arrow = equation.find("->");
  std::string lhs = equation.substr(0, arrow);
  std::vector<std::string> terms;
  for (size_t start = 0;;) {
    size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma - start));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  if (terms.size() != c.numInputs())
    c.invalid(fmt::format("the equation '{}' names {} operands, the node has {}", equation,
                          terms.size(), c.numInputs()));
  // "..." becomes the labels '0', '1', ... of the ellipsis axes: user labels
  // are letters, so these never clash with them. Each operand's ellipsis
  // takes the last of them (its axes align to the right, as in broadcasting),
  // so the ellipsis rank is the largest over all operands, found first.
  auto ellipsisOf = [&](size_t i) -> int64_t {
    size_t dots = terms[i].find("...");
    if (dots == std::string::npos)
      return -1;
    int64_t r = c.in(i).rank() - static_cast<int64_t>(terms[i].size() - 3);
    if (r < 0)
      c.invalid(fmt::format("term '{}' has more labels than operand {} has axes", terms[i], i));
    return r;
  };
  int64_t ellipsisRank = 0;
  for (size_t i = 0; i < terms.size(); ++i)
    ellipsisRank = std::max(ellipsisRank, ellipsisOf(i));
  if (ellipsisRank > 10)
    c.unsupported(fmt::format("an ellipsis of {} axes (at most 10)", ellipsisRank));
  std::string ellipsis;
  for (int64_t k = 0; k < ellipsisRank; ++k)
    ellipsis += static_cast<char>('0' + k);
  auto isEllipsisLabel = [](char l) { return l >= '0' && l <= '9'; };
  std::vector<Labeled> operands;
  for (size_t i = 0; i < terms.size(); ++i) {
    Value v = c.in(i);
    std::string t = terms[i];
    size_t dots = t.find("...");
    std::string user = dots == std::string::npos ? t : t.substr(0, dots) + t.substr(dots + 3);
    for (char l : user)
      if (!std::isalpha(static_cast<unsigned char>(l)))
        c.invalid(fmt::format("bad label '{}' in the equation '{}'", l, equation));
    if (int64_t r = ellipsisOf(i); r >= 0)
      t = t.substr(0, dots) + ellipsis.substr(static_cast<size_t>(ellipsisRank - r)) +
          t.substr(dots + 3);
    if (static_cast<int64_t>(t.size()) != v.rank())
      c.invalid(fmt::format("term '{}' has {} labels but operand {} is {}", terms[i], t.size(), i,
                            typeString(v.type())));
    if (!isFloat(v.dtype()) && !isInteger(v.dtype()))
      c.unsupportedDType("operand", v.dtype());
    operands.push_back({v, t});
  }
  std::string output;
  if (arrow != std::string::npos) {
    output = equation.substr(arrow + 2);
    size_t dots = output.find("...");
    if (dots != std::string::npos)
      output = output.substr(0, dots) + ellipsis + output.substr(dots + 3);
  } else {
    // Implicit output: the ellipsis axes, then every label used once, sorted.
    std::map<char, int> uses;
    for (const Labeled &o : operands)
      for (char l : o.labels)
        ++uses[l];
    output = ellipsis;
    for (auto [l, n] : uses)
      if (n == 1 && !isEllipsisLabel(l))
        output += l;
  }
  // Sizes of one label must agree; only ellipsis axes broadcast from 1.
  std::map<char, int64_t> sizes;
  for (Labeled &o : operands)
    for (size_t i = 0; i < o.labels.size(); ++i) {
      char l = o.labels[i];
      int64_t d = o.value.dim(static_cast<int64_t>(i));
      auto [it, fresh] = sizes.emplace(l, d);
      if (fresh || it->second == d)
        continue;
      if (!isEllipsisLabel(l))
        c.invalid(fmt::format("label '{}' names axes of sizes {} and {}", l, it->second, d));
      if (it->second != 1 && d != 1)
        c.invalid(fmt::format("axis {} of the '...' axes has sizes {} and {}, which do not "
                              "broadcast",
                              l - '0', it->second, d));
      it->second = std::max(it->second, d);
    }
  for (Labeled &o : operands) {
    Shape full;
    for (char l : o.labels)
      full.push_back(sizes[l]);
    if (full != o.value.shape())
      o.value = broadcastTo(o.value, full);
    o = diagonals(c, o);
  }
  for (char l : output)
    if (!sizes.count(l))
      c.invalid(fmt::format("output label '{}' names no operand axis", l));
  // Left to right: sum out labels no one else needs, then contract.
  auto others = [&](size_t from) {
    std::vector<std::string> labels;
    for (size_t j = from; j < operands.size(); ++j)
      labels.push_back(operands[j].labels);
    return labels;
  };
  Labeled acc = sumOut(operands[0], privateLabels(operands[0].labels, others(1), output));
  for (size_t i = 1; i < operands.size(); ++i) {
    std::vector<std::string> rest = others(i + 1);
    Labeled next = sumOut(operands[i], privateLabels(operands[i].labels, rest, output + acc.labels));
    std::string keep = output;
    for (const std::string &r : rest)
      keep += r;
    acc = contractPair(acc, next, keep);
  }
  acc = sumOut(acc, privateLabels(acc.labels, {}, output));
  c.setOutput(0, permuted(acc, output).value);
}

// ---------------------------------------------------------------------------
// TopK: rank[i] = #{j : x_j before x_i} with "before" meaning larger (or
// smaller), ties to the lower index; output position p takes the element of
// rank p. O(n^2) in the axis length, which is bounded.

void mapTopK(NodeContext &c) {
  Value x = c.in(0);
  if (x.rank() == 0)
    c.invalid("expected an input of rank >= 1");
  int64_t axis = normalizeAxis(c, c.attrInt("axis", -1), x.rank(), "axis");
  int64_t k = c.opset >= 10 ? static_cast<int64_t>(c.requireScalar(1, "K")) : c.attrInt("k");
  bool largest = c.attrInt("largest", 1) != 0;
  int64_t n = x.dim(axis);
  if (k < 0 || k > n)
    c.invalid(fmt::format("K = {} is out of range [0, {}]", k, n));
  if (n > 4096)
    c.unsupported(fmt::format("TopK over {} elements (at most 4096)", n));
  if (x.dtype() == DType::Bool)
    c.unsupportedDType("input", x.dtype());
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < x.rank(); ++i)
    if (i != axis)
      perm.push_back(i);
  perm.push_back(axis);
  Value lined = transpose(x, perm); // [..., n]
  Shape rows = lined.shape(), cols = lined.shape();
  rows.push_back(1);              // x_i: [..., n, 1]
  cols.insert(cols.end() - 1, 1); // x_j: [..., 1, n]
  Value xi = reshape(lined, rows), xj = reshape(lined, cols);
  Tensor lower(DType::Bool, {n, n}); // j < i
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j)
      lower.setReal(i * n + j, 1);
  Value strictly = largest ? gt(xj, xi) : lt(xj, xi);
  Value before = select(strictly, c.scalar(1, DType::Bool),
                        logicalAnd(c, eq(xj, xi), c.constantOf(lower)));
  Value rank = sum(cast(before, DType::I64), {-1}, false); // [..., n]
  Value hot = oneHot(rank, k, DType::Bool);                 // [..., n, k]
  Shape expanded = lined.shape();
  expanded.push_back(1);
  Value values = sum(select(hot, reshape(lined, expanded), scalarOf(c, x, 0)), {-2}, false);
  Tensor positions(DType::I64, {n, 1});
  for (int64_t i = 0; i < n; ++i)
    positions.setReal(i, double(i));
  Value indices = sum(select(hot, c.constantOf(positions), c.scalar(0, DType::I64)), {-2}, false);
  c.setOutput(0, moveLastAxisTo(values, axis));
  c.setOutput(1, moveLastAxisTo(indices, axis));
}

void mapAtan(NodeContext &c) { inverseTrig<0>(c); }
void mapAsin(NodeContext &c) { inverseTrig<1>(c); }
void mapAcos(NodeContext &c) { inverseTrig<2>(c); }
void mapAsinh(NodeContext &c) { inverseTrig<3>(c); }
void mapAcosh(NodeContext &c) { inverseTrig<4>(c); }
void mapAtanh(NodeContext &c) { inverseTrig<5>(c); }
void mapHannWindow(NodeContext &c) { windowOp<0>(c); }
void mapHammingWindow(NodeContext &c) { windowOp<1>(c); }
void mapBlackmanWindow(NodeContext &c) { windowOp<2>(c); }

namespace {

// The determinant of the trailing n x n matrices of `m` by cofactor
// expansion along the first row (n! terms, so n is bounded by mapDet).
Value determinant(Value m, int64_t n) {
  int64_t rank = m.rank();
  auto entry = [&](int64_t i, int64_t j) {
    Value e = sliceAxis(sliceAxis(m, rank - 2, i, i + 1), rank - 1, j, j + 1);
    Shape batch = m.shape();
    batch.resize(batch.size() - 2);
    return reshape(e, batch);
  };
  if (n == 1)
    return entry(0, 0);
  Value total;
  for (int64_t j = 0; j < n; ++j) {
    // The minor: rows 1.., every column but j.
    Value rows = sliceAxis(m, rank - 2, 1, n);
    std::vector<Value> columns;
    if (j > 0)
      columns.push_back(sliceAxis(rows, rank - 1, 0, j));
    if (j + 1 < n)
      columns.push_back(sliceAxis(rows, rank - 1, j + 1, n));
    Value minor = columns.size() == 1 ? columns[0] : concat(columns, rank - 1);
    Value term = mul(entry(0, j), determinant(minor, n - 1));
    total = !total.valid() ? term : j % 2 ? sub(total, term) : add(total, term);
  }
  return total;
}

} // namespace

// Det of [..., n, n] by cofactor expansion, for n up to 5 (120 terms).
void mapDet(NodeContext &c) {
  Value x = c.in(0);
  requireFloat(c, x);
  if (x.rank() < 2 || x.dim(x.rank() - 1) != x.dim(x.rank() - 2))
    c.invalid(fmt::format("expected square matrices [..., n, n], found {}", typeString(x.type())));
  int64_t n = x.dim(x.rank() - 1);
  if (n > 5 || n < 1)
    c.unsupported(fmt::format("the determinant of {}x{} matrices (cofactor expansion, n in "
                              "[1, 5])",
                              n, n));
  c.setOutput(0, determinant(x, n));
}

} // namespace stepc::onnx_import
