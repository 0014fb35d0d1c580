// One mapping function per ONNX op type, and the table that names them
// (mappings() at the end). Elementwise, constant and reduction ops live here;
// data movement in onnx_shape_ops.cpp; convolution, pooling, normalization,
// activations and losses in onnx_nn_ops.cpp.
//
// Each function reads its node through NodeContext, emits stepc ops, and sets
// the node's outputs. It throws Unsupported (via ctx.unsupported) for a
// variant stepc cannot express, naming the attribute or mode, and lets
// stepc::Error from the builder report anything else.
#include "onnx_ops.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

namespace stepc::onnx_import {

// ---------------------------------------------------------------------------
// Shared helpers (declared in onnx_ops.h).

int64_t normalizeAxis(NodeContext &c, int64_t axis, int64_t rank, std::string_view what) {
  if (axis < -rank || axis >= rank)
    c.invalid(fmt::format("{} {} is out of range for rank {}", what, axis, rank));
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> normalizeAxes(NodeContext &c, std::vector<int64_t> axes, int64_t rank,
                                   std::string_view what) {
  for (int64_t &a : axes)
    a = normalizeAxis(c, a, rank, what);
  std::sort(axes.begin(), axes.end());
  if (std::adjacent_find(axes.begin(), axes.end()) != axes.end())
    c.invalid(fmt::format("{}s {} repeat an axis", what, fmt::join(axes, ",")));
  return axes;
}

Value scalarOf(NodeContext &c, Value like, double value) { return c.scalar(value, like.dtype()); }

// An i64 constant of the given values.
Value indexConstant(NodeContext &c, const std::vector<int64_t> &values) {
  return c.constantOf(Tensor::of<int64_t>({static_cast<int64_t>(values.size())}, values));
}

Value moveLastAxisTo(Value x, int64_t axis) {
  int64_t r = x.rank();
  if (axis == r - 1)
    return x;
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < r - 1; ++i) {
    if (i == axis)
      perm.push_back(r - 1);
    perm.push_back(i);
  }
  return transpose(x, perm);
}

// Integer indices with negative entries counted from the end of `size`.
Value wrapNegativeIndices(NodeContext &c, Value indices, int64_t size) {
  if (!isInteger(indices.dtype()))
    c.unsupportedDType("indices", indices.dtype());
  Value zero = scalarOf(c, indices, 0);
  return select(lt(indices, zero), add(indices, scalarOf(c, indices, double(size))), indices);
}

Value sliceAxis(Value x, int64_t axis, int64_t start, int64_t limit) {
  std::vector<int64_t> starts(static_cast<size_t>(x.rank()), 0), limits = x.shape();
  starts[axis] = start;
  limits[axis] = limit;
  return slice(x, starts, limits);
}

// 1-D operands are promoted to matrices and the added axis dropped again
// (NumPy's matmul rules).
Value matmulNd(Value a, Value b) {
  bool vecA = a.rank() == 1, vecB = b.rank() == 1;
  if (vecA)
    a = reshape(a, {1, a.dim(0)});
  if (vecB)
    b = reshape(b, {b.dim(0), 1});
  Value y = matmul(a, b);
  Shape shape = y.shape();
  if (vecB)
    shape.erase(shape.end() - 1);
  if (vecA)
    shape.erase(shape.end() - (vecB ? 1 : 2));
  return vecA || vecB ? reshape(y, shape) : y;
}

namespace {

// ---------------------------------------------------------------------------
// Elementwise.

// Before opset 7, binary ops broadcast only with broadcast=1, aligning the
// second operand at `axis` of the first rather than at its end.
std::pair<Value, Value> binaryOperands(NodeContext &c) {
  Value a = c.in(0), b = c.in(1);
  if (c.opset < 7 && c.attrInt("broadcast", 0) == 1 && c.hasAttr("axis")) {
    int64_t axis = normalizeAxis(c, c.attrInt("axis"), a.rank(), "broadcast axis");
    Shape shape = b.shape();
    while (static_cast<int64_t>(shape.size()) < a.rank() - axis)
      shape.push_back(1);
    b = reshape(b, shape);
  }
  return {a, b};
}

template <Value (*F)(Value, Loc)> void unaryOp(NodeContext &c) {
  c.setOutput(0, F(c.in(0), Loc::current()));
}

template <Value (*F)(Value, Value, Loc)> void binaryOp(NodeContext &c) {
  auto [a, b] = binaryOperands(c);
  c.setOutput(0, F(a, b, Loc::current()));
}

void mapReciprocal(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, div(scalarOf(c, x, 1), x));
}

// Pow's exponent may have another type than its base; the result has the
// base's type. stepc's pow is floating-point only, so integer bases go
// through f64.
void mapPow(NodeContext &c) {
  auto [base, exponent] = binaryOperands(c);
  if (isFloat(base.dtype())) {
    c.setOutput(0, pow(base, cast(exponent, base.dtype())));
    return;
  }
  Value r = pow(cast(base, DType::F64), cast(exponent, DType::F64));
  c.setOutput(0, cast(r, base.dtype()));
}

void mapNot(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, eq(x, c.scalar(0, DType::Bool)));
}

// stepc has no logical ops: And and Or are selects on bool operands.
void mapAnd(NodeContext &c) {
  auto [a, b] = binaryOperands(c);
  c.setOutput(0, select(a, b, c.scalar(0, DType::Bool)));
}

void mapOr(NodeContext &c) {
  auto [a, b] = binaryOperands(c);
  c.setOutput(0, select(a, c.scalar(1, DType::Bool), b));
}

void mapXor(NodeContext &c) {
  auto [a, b] = binaryOperands(c);
  c.setOutput(0, ne(a, b));
}

void mapWhere(NodeContext &c) { c.setOutput(0, select(c.in(0), c.in(1), c.in(2))); }

void mapIsNaN(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, ne(x, x));
}

void mapIsInf(NodeContext &c) {
  Value x = c.in(0);
  double inf = std::numeric_limits<double>::infinity();
  bool positive = c.attrInt("detect_positive", 1) != 0;
  bool negative = c.attrInt("detect_negative", 1) != 0;
  Value none = c.constantOf(Tensor(DType::Bool, x.shape()));
  Value pos = positive ? eq(x, scalarOf(c, x, inf)) : none;
  Value neg = negative ? eq(x, scalarOf(c, x, -inf)) : none;
  c.setOutput(0, select(pos, c.scalar(1, DType::Bool), neg));
}

// Max, Min, Sum, Mean: one or more operands, broadcast together.
template <Value (*F)(Value, Value, Loc)> Value variadic(NodeContext &c) {
  if (c.numInputs() == 0)
    c.invalid("expected at least one input");
  Value acc = c.in(0);
  for (size_t i = 1; i < c.numInputs(); ++i)
    acc = F(acc, c.in(i), Loc::current());
  return acc;
}
void mapMax(NodeContext &c) { c.setOutput(0, variadic<maximum>(c)); }
void mapMin(NodeContext &c) { c.setOutput(0, variadic<minimum>(c)); }
void mapSum(NodeContext &c) { c.setOutput(0, variadic<add>(c)); }
void mapMean(NodeContext &c) {
  Value total = variadic<add>(c);
  c.setOutput(0, div(total, scalarOf(c, total, double(c.numInputs()))));
}

// ---------------------------------------------------------------------------
// Casts and constants.

DType dtypeAttr(NodeContext &c, int32_t onnxType) {
  std::optional<DType> dtype = dtypeFromOnnx(onnxType);
  if (!dtype)
    c.unsupportedDType("the target type", onnxType);
  return *dtype;
}

void mapCast(NodeContext &c) {
  DType to = dtypeAttr(c, static_cast<int32_t>(c.attrInt("to")));
  Value x = c.in(0);
  c.setOutput(0, x.dtype() == to ? x : cast(x, to));
}

void mapCastLike(NodeContext &c) {
  Value x = c.in(0);
  DType to = c.type(1).dtype;
  c.setOutput(0, x.dtype() == to ? x : cast(x, to));
}

void mapConstant(NodeContext &c) {
  if (c.hasAttr("value")) {
    c.setOutput(0, c.attrTensor("value"));
  } else if (c.hasAttr("value_float")) {
    c.setOutput(0, Tensor::scalar(DType::F32, c.attrFloat("value_float", 0)));
  } else if (c.hasAttr("value_int")) {
    c.setOutput(0, Tensor::of<int64_t>({}, {c.attrInt("value_int")}));
  } else if (c.hasAttr("value_floats")) {
    std::vector<double> v = c.attrFloats("value_floats");
    c.setOutput(0, Tensor::fromReals(DType::F32, {static_cast<int64_t>(v.size())}, v));
  } else if (c.hasAttr("value_ints")) {
    std::vector<int64_t> v = c.attrInts("value_ints");
    c.setOutput(0, Tensor::of<int64_t>({static_cast<int64_t>(v.size())}, v));
  } else if (c.hasAttr("value_string") || c.hasAttr("value_strings")) {
    throw Unsupported{OnnxProblem::Kind::DType, "string constants are not supported", "", "string"};
  } else if (c.hasAttr("sparse_value")) {
    c.unsupported("sparse constants are not supported");
  } else {
    c.invalid("a Constant needs a value attribute");
  }
}

void mapConstantOfShape(NodeContext &c) {
  std::vector<int64_t> shape = c.requireInts(0, "the shape");
  Tensor fill = c.hasAttr("value") ? c.attrTensor("value") : Tensor::scalar(DType::F32, 0);
  if (fill.numel() != 1)
    c.invalid(fmt::format("value must hold one element, found {}", typeString(fill.type())));
  for (int64_t d : shape)
    if (d < 0)
      c.invalid(fmt::format("negative dimension in shape {}", shapeString(shape)));
  // A large fill stays a node (a fill constant) rather than a tensor held at
  // import.
  if (checkedNumel(shape) > kMaxImportElements) {
    c.setOutput(0, c.op(OpKind::Constant, {},
                        {{"dtype", std::string(dtypeName(fill.dtype()))},
                         {"shape", shape},
                         {"value", fill.real(0)}}));
    return;
  }
  Tensor out(fill.dtype(), shape);
  for (int64_t i = 0; i < out.numel(); ++i)
    out.setReal(i, fill.real(0));
  c.setOutput(0, std::move(out));
}

// Identity, and Dropout at inference: the output is the input, whether known
// at import or not.
void forward(NodeContext &c) {
  if (std::optional<Tensor> v = c.known(0); v && c.type(0).numel() <= 4096)
    c.setOutput(0, *v);
  else
    c.setOutput(0, c.in(0));
}

void mapIdentity(NodeContext &c) { forward(c); }

void mapDropout(NodeContext &c) {
  bool training = false;
  if (c.opset >= 12 && c.has(2))
    training = c.requireScalar(2, "training_mode") != 0;
  if (c.opset < 7 && c.attrInt("is_test", 0) == 0 && c.wants(1))
    training = true;
  if (training)
    c.unsupported("training mode (a random mask) is not supported; only inference, where "
                  "Dropout is the identity");
  forward(c);
  if (c.wants(1)) {
    Tensor mask(DType::Bool, c.type(0).shape);
    std::fill(mask.bytes(), mask.bytes() + mask.nbytes(), std::byte(1));
    c.setOutput(1, std::move(mask));
  }
}

// ---------------------------------------------------------------------------
// Shapes, folded at import.

void mapShape(NodeContext &c) {
  Shape shape = c.type(0).shape;
  int64_t r = static_cast<int64_t>(shape.size());
  auto clampIndex = [&](int64_t i) { return std::clamp(i < 0 ? i + r : i, int64_t(0), r); };
  int64_t start = clampIndex(c.attrInt("start", 0));
  int64_t end = clampIndex(c.attrInt("end", r));
  std::vector<int64_t> dims;
  for (int64_t i = start; i < end; ++i)
    dims.push_back(shape[i]);
  c.setOutput(0, Tensor::of<int64_t>({static_cast<int64_t>(dims.size())}, dims));
}

void mapSize(NodeContext &c) { c.setOutput(0, Tensor::of<int64_t>({}, {c.type(0).numel()})); }

// ---------------------------------------------------------------------------
// Matrix products.

void mapMatMul(NodeContext &c) { c.setOutput(0, matmulNd(c.in(0), c.in(1))); }

// Y = alpha * A' B' + beta * C, where C broadcasts to [M, N].
void mapGemm(NodeContext &c) {
  Value a = c.in(0), b = c.in(1);
  if (a.rank() != 2 || b.rank() != 2)
    c.invalid(fmt::format("expected matrices, found {} and {}", typeString(a.type()),
                          typeString(b.type())));
  if (c.attrInt("transA", 0))
    a = transpose(a, {1, 0});
  if (c.attrInt("transB", 0))
    b = transpose(b, {1, 0});
  double alpha = c.attrFloat("alpha", 1), beta = c.attrFloat("beta", 1);
  Value y = matmul(a, b);
  if (alpha != 1)
    y = mul(y, scalarOf(c, y, alpha));
  if (c.has(2) && beta != 0) {
    Value bias = c.in(2);
    if (beta != 1)
      bias = mul(bias, scalarOf(c, bias, beta));
    y = add(y, bias);
  }
  c.setOutput(0, y);
}

// ---------------------------------------------------------------------------
// Reductions: axes are an attribute, or (ReduceSum from opset 13, every
// reduction from 18) an optional input.

struct ReduceArgs {
  std::vector<int64_t> axes;
  bool keepdims = true;
  bool all = false;  // no axes given and noop_with_empty_axes = 0
  bool none = false; // no axes given and noop_with_empty_axes = 1
};

ReduceArgs reduceArgs(NodeContext &c, int64_t rank) {
  ReduceArgs args;
  std::vector<int64_t> axes;
  if (c.has(1))
    axes = c.requireInts(1, "the axes");
  else
    axes = c.attrInts("axes");
  args.keepdims = c.attrInt("keepdims", 1) != 0;
  if (axes.empty()) {
    if (c.attrInt("noop_with_empty_axes", 0) != 0)
      args.none = true;
    else
      for (int64_t i = 0; i < rank; ++i)
        args.axes.push_back(i);
    return args;
  }
  args.axes = normalizeAxes(c, axes, rank, "reduction axis");
  return args;
}

Value reduceWith(NodeContext &c, OpKind kind, Value x, const ReduceArgs &args) {
  if (args.none)
    return x;
  return c.op(kind, {x}, {{"axes", args.axes}, {"keepdims", int64_t(args.keepdims)}});
}

template <OpKind K> void reduceOp(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, reduceWith(c, K, x, reduceArgs(c, x.rank())));
}

void mapReduceSumSquare(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, reduceWith(c, OpKind::ReduceSum, square(x), reduceArgs(c, x.rank())));
}

void mapReduceL1(NodeContext &c) {
  Value x = c.in(0);
  c.setOutput(0, reduceWith(c, OpKind::ReduceSum, abs(x), reduceArgs(c, x.rank())));
}

void mapReduceL2(NodeContext &c) {
  Value x = c.in(0);
  ReduceArgs args = reduceArgs(c, x.rank());
  Value s = reduceWith(c, OpKind::ReduceSum, square(x), args);
  c.setOutput(0, args.none ? abs(x) : sqrt(s));
}

void mapReduceLogSum(NodeContext &c) {
  Value x = c.in(0);
  ReduceArgs args = reduceArgs(c, x.rank());
  c.setOutput(0, args.none ? log(x) : log(reduceWith(c, OpKind::ReduceSum, x, args)));
}

// log(sum(exp(x))) shifted by the maximum so exp() cannot overflow.
void mapReduceLogSumExp(NodeContext &c) {
  Value x = c.in(0);
  ReduceArgs args = reduceArgs(c, x.rank());
  if (args.none) {
    c.setOutput(0, x);
    return;
  }
  ReduceArgs kept = args;
  kept.keepdims = true;
  Value m = reduceWith(c, OpKind::ReduceMax, x, kept);
  Value s = reduceWith(c, OpKind::ReduceSum, exp(sub(x, m)), args);
  Value mOut = args.keepdims ? m : reshape(m, s.shape());
  c.setOutput(0, add(log(s), mOut));
}

// The product over the reduced axes, as a product of slices: stepc has no
// multiplicative reduction. The reduced axes are moved last and flattened.
void mapReduceProd(NodeContext &c) {
  Value x = c.in(0);
  ReduceArgs args = reduceArgs(c, x.rank());
  if (args.none) {
    c.setOutput(0, x);
    return;
  }
  std::vector<int64_t> perm, keptShape, outShape;
  int64_t count = 1;
  for (int64_t i = 0; i < x.rank(); ++i) {
    bool reduced = std::binary_search(args.axes.begin(), args.axes.end(), i);
    if (!reduced) {
      perm.push_back(i);
      keptShape.push_back(x.dim(i));
    }
    if (!reduced || args.keepdims)
      outShape.push_back(reduced ? 1 : x.dim(i));
  }
  for (int64_t a : args.axes) {
    perm.push_back(a);
    count *= x.dim(a);
  }
  if (count > 4096)
    c.unsupported(fmt::format("a product over {} elements (at most 4096)", count));
  Shape lined = keptShape;
  lined.push_back(count);
  Value y = reshape(transpose(x, perm), lined);
  int64_t last = static_cast<int64_t>(lined.size()) - 1;
  Value product = count == 0 ? Value() : sliceAxis(y, last, 0, 1);
  for (int64_t k = 1; k < count; ++k)
    product = mul(product, sliceAxis(y, last, k, k + 1));
  if (count == 0) {
    Tensor ones(x.dtype(), outShape);
    for (int64_t i = 0; i < ones.numel(); ++i)
      ones.setReal(i, 1);
    c.setOutput(0, std::move(ones));
    return;
  }
  c.setOutput(0, reshape(product, outShape));
}

// Running sums along one axis as a product with a triangular 0/1 matrix
// (exclusive: strictly triangular; reverse: the other triangle).
void mapCumSum(NodeContext &c) {
  Value x = c.in(0);
  if (x.rank() == 0)
    c.invalid("expected an input of rank >= 1");
  int64_t axis =
      normalizeAxis(c, static_cast<int64_t>(c.requireScalar(1, "the axis")), x.rank(), "axis");
  bool exclusive = c.attrInt("exclusive", 0) != 0, reverse = c.attrInt("reverse", 0) != 0;
  int64_t n = x.dim(axis);
  if (n > 4096)
    c.unsupported(fmt::format("a running sum over {} elements (at most 4096)", n));
  Tensor mask(x.dtype(), {n, n});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      // out[j] = sum_i x[i] * mask[i][j]
      bool in = reverse ? (exclusive ? i > j : i >= j) : (exclusive ? i < j : i <= j);
      mask.setReal(i * n + j, in ? 1 : 0);
    }
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < x.rank(); ++i)
    if (i != axis)
      perm.push_back(i);
  perm.push_back(axis);
  Value y = matmulNd(transpose(x, perm), c.constantOf(mask));
  c.setOutput(0, moveLastAxisTo(y, axis));
}

// ArgMax/ArgMin; select_last_index reverses the axis with a gather.
Value argExtreme(NodeContext &c, bool isMin) {
  Value x = c.in(0);
  int64_t axis = normalizeAxis(c, c.attrInt("axis", 0), x.rank(), "axis");
  bool keepdims = c.attrInt("keepdims", 1) != 0;
  bool last = c.attrInt("select_last_index", 0) != 0;
  int64_t n = x.dim(axis);
  if (isMin) {
    if (x.dtype() == DType::Bool)
      x = cast(x, DType::I32);
    x = neg(x);
  }
  if (last) {
    std::vector<int64_t> reversed(static_cast<size_t>(n));
    std::iota(reversed.rbegin(), reversed.rend(), 0);
    x = gather(x, indexConstant(c, reversed), axis);
  }
  Value index = argmax(x, axis, keepdims);
  if (last)
    index = sub(scalarOf(c, index, double(n - 1)), index);
  return index;
}

void mapArgMax(NodeContext &c) { c.setOutput(0, argExtreme(c, false)); }
void mapArgMin(NodeContext &c) { c.setOutput(0, argExtreme(c, true)); }

// Softmax, LogSoftmax and Hardmax before opset 13 coerce the input to 2-D
// [prod(dims before axis), prod(dims from axis)] and normalize each row;
// from 13 on they normalize along one axis.
template <class F> void softmaxLike(NodeContext &c, F f) {
  Value x = c.in(0);
  if (c.opset >= 13) {
    int64_t axis = normalizeAxis(c, c.attrInt("axis", -1), x.rank(), "axis");
    c.setOutput(0, f(x, axis));
    return;
  }
  int64_t axis = c.attrInt("axis", 1);
  if (x.rank() == 0)
    c.invalid("expected an input of rank >= 1");
  axis = axis == x.rank() ? axis : normalizeAxis(c, axis, x.rank(), "axis");
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < x.rank(); ++i)
    (i < axis ? outer : inner) *= x.dim(i);
  Value y = f(reshape(x, {outer, inner}), 1);
  c.setOutput(0, reshape(y, x.shape()));
}

void mapSoftmax(NodeContext &c) {
  softmaxLike(c, [](Value x, int64_t axis) { return softmax(x, axis); });
}
void mapLogSoftmax(NodeContext &c) {
  softmaxLike(c, [](Value x, int64_t axis) { return logSoftmax(x, axis); });
}
void mapHardmax(NodeContext &c) {
  softmaxLike(c, [](Value x, int64_t axis) {
    Value hot = oneHot(argmax(x, axis, false), x.dim(axis), x.dtype());
    return moveLastAxisTo(hot, axis);
  });
}

// ---------------------------------------------------------------------------
// The table: ONNX op type -> mapping function.

const std::unordered_map<std::string_view, MapFn> &mappings() {
  static const std::unordered_map<std::string_view, MapFn> table = {
      // Elementwise.
      {"Neg", unaryOp<neg>},
      {"Abs", unaryOp<abs>},
      {"Exp", unaryOp<exp>},
      {"Log", unaryOp<log>},
      {"Sqrt", unaryOp<sqrt>},
      {"Tanh", unaryOp<tanh>},
      {"Sigmoid", unaryOp<sigmoid>},
      {"Relu", unaryOp<relu>},
      {"Sin", unaryOp<sin>},
      {"Cos", unaryOp<cos>},
      {"Erf", unaryOp<erf>},
      {"Sign", unaryOp<sign>},
      {"Reciprocal", mapReciprocal},
      {"Add", binaryOp<add>},
      {"Sub", binaryOp<sub>},
      {"Mul", binaryOp<mul>},
      {"Div", binaryOp<div>},
      {"Pow", mapPow},
      {"Equal", binaryOp<eq>},
      {"Less", binaryOp<lt>},
      {"LessOrEqual", binaryOp<le>},
      {"Greater", binaryOp<gt>},
      {"GreaterOrEqual", binaryOp<ge>},
      {"Not", mapNot},
      {"And", mapAnd},
      {"Or", mapOr},
      {"Xor", mapXor},
      {"Where", mapWhere},
      {"IsNaN", mapIsNaN},
      {"IsInf", mapIsInf},
      {"Max", mapMax},
      {"Min", mapMin},
      {"Sum", mapSum},
      {"Mean", mapMean},
      // Casts, constants, shapes.
      {"Cast", mapCast},
      {"CastLike", mapCastLike},
      {"Constant", mapConstant},
      {"ConstantOfShape", mapConstantOfShape},
      {"Identity", mapIdentity},
      {"Dropout", mapDropout},
      {"Shape", mapShape},
      {"Size", mapSize},
      // Linear algebra, reductions.
      {"MatMul", mapMatMul},
      {"MatMulInteger", mapMatMulInteger},
      {"QLinearMatMul", mapQLinearMatMul},
      {"QuantizeLinear", mapQuantizeLinear},
      {"DequantizeLinear", mapDequantizeLinear},
      {"DynamicQuantizeLinear", mapDynamicQuantizeLinear},
      {"BitShift", mapBitShift},
      {"LRN", mapLRN},
      {"MaxUnpool", mapMaxUnpool},
      {"Det", mapDet},
      {"ReverseSequence", mapReverseSequence},
      {"Gemm", mapGemm},
      {"ReduceSum", reduceOp<OpKind::ReduceSum>},
      {"ReduceMean", reduceOp<OpKind::ReduceMean>},
      {"ReduceMax", reduceOp<OpKind::ReduceMax>},
      {"ReduceMin", reduceOp<OpKind::ReduceMin>},
      {"ReduceSumSquare", mapReduceSumSquare},
      {"ReduceL1", mapReduceL1},
      {"ReduceL2", mapReduceL2},
      {"ReduceLogSum", mapReduceLogSum},
      {"ReduceLogSumExp", mapReduceLogSumExp},
      {"ArgMax", mapArgMax},
      {"ArgMin", mapArgMin},
      {"Softmax", mapSoftmax},
      {"LogSoftmax", mapLogSoftmax},
      {"Hardmax", mapHardmax},
      // Data movement.
      {"Transpose", mapTranspose},
      {"Reshape", mapReshape},
      {"Flatten", mapFlatten},
      {"Squeeze", mapSqueeze},
      {"Unsqueeze", mapUnsqueeze},
      {"Concat", mapConcat},
      {"Split", mapSplit},
      {"Slice", mapSlice},
      {"Gather", mapGather},
      {"GatherElements", mapGatherElements},
      {"Expand", mapExpand},
      {"Tile", mapTile},
      {"Range", mapRange},
      {"Trilu", mapTrilu},
      {"OneHot", mapOneHot},
      {"DepthToSpace", mapDepthToSpace},
      {"SpaceToDepth", mapSpaceToDepth},
      // Neural-network ops (onnx_nn_ops.cpp).
      {"Conv", mapConv},
      {"MaxPool", mapMaxPool},
      {"AveragePool", mapAveragePool},
      {"GlobalAveragePool", mapGlobalAveragePool},
      {"GlobalMaxPool", mapGlobalMaxPool},
      {"BatchNormalization", mapBatchNormalization},
      {"InstanceNormalization", mapInstanceNormalization},
      {"LayerNormalization", mapLayerNormalization},
      {"MeanVarianceNormalization", mapMeanVarianceNormalization},
      {"Pad", mapPad},
      {"Clip", mapClip},
      {"LeakyRelu", mapLeakyRelu},
      {"Elu", mapElu},
      {"Selu", mapSelu},
      {"Celu", mapCelu},
      {"PRelu", mapPRelu},
      {"ThresholdedRelu", mapThresholdedRelu},
      {"HardSigmoid", mapHardSigmoid},
      {"HardSwish", mapHardSwish},
      {"Softplus", mapSoftplus},
      {"Softsign", mapSoftsign},
      {"Shrink", mapShrink},
      {"Gelu", mapGelu},
      {"Tan", mapTan},
      {"Sinh", mapSinh},
      {"Cosh", mapCosh},
      {"NegativeLogLikelihoodLoss", mapNegativeLogLikelihoodLoss},
      {"SoftmaxCrossEntropyLoss", mapSoftmaxCrossEntropyLoss},
      {"ConvTranspose", mapConvTranspose},
      {"CumSum", mapCumSum},
      {"ReduceProd", mapReduceProd},
      // Compositions of stepc ops (onnx_math_ops.cpp).
      {"Floor", mapFloor},
      {"Ceil", mapCeil},
      {"Round", mapRound},
      {"Mod", mapMod},
      {"Atan", mapAtan},
      {"Asin", mapAsin},
      {"Acos", mapAcos},
      {"Asinh", mapAsinh},
      {"Acosh", mapAcosh},
      {"Atanh", mapAtanh},
      {"EyeLike", mapEyeLike},
      {"HannWindow", mapHannWindow},
      {"HammingWindow", mapHammingWindow},
      {"BlackmanWindow", mapBlackmanWindow},
      {"Einsum", mapEinsum},
      {"TopK", mapTopK},
      // Indexing; value-dependent shapes (onnx_index_ops.cpp).
      {"ScatterElements", mapScatterElements},
      {"Scatter", mapScatterElements},
      {"GatherND", mapGatherND},
      {"ScatterND", mapScatterND},
      {"Compress", mapCompress},
      {"NonZero", mapNonZero},
      {"Unique", mapUnique},
      {"NonMaxSuppression", mapNonMaxSuppression},
      // Resampling (onnx_resize_ops.cpp).
      {"Resize", mapResize},
      {"Upsample", mapUpsample},
      {"GridSample", mapGridSample},
      // Recurrent cells, unrolled (onnx_rnn_ops.cpp).
      {"RNN", mapRnn},
      {"GRU", mapGru},
      {"LSTM", mapLstm},
  };
  return table;
}

} // namespace

MapFn findMapping(std::string_view opType) {
  auto it = mappings().find(opType);
  return it == mappings().end() ? nullptr : it->second;
}

MapFn findTrainingMapping(std::string_view opType) {
  if (opType == "Adagrad")
    return mapAdagrad;
  if (opType == "Momentum")
    return mapMomentum;
  if (opType == "Adam")
    return mapAdam;
  return nullptr;
}

} // namespace stepc::onnx_import
