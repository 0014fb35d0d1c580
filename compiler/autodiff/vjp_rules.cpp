// One VJP rule per op (docs/design.md rule 1), each a few lines of ordinary graph
// ops. Conventions at kinks follow PyTorch: relu'(0) = 0, abs'(0) = 0,
// maximum/minimum split ties evenly between the operands, reduce_max/min
// share the gradient evenly among tied maxima (like torch.amax), max_pool2d
// sends it to the first maximum of each window in row-major order.
#include "vjp_rules.h"

#include <fmt/format.h>

#include <cmath>
#include <numbers>

namespace stepc::autodiff {
namespace {

Value zero(Value like) { return scalarLike(like, 0); }

// Brings a reduction's result (or its gradient) back to the input's shape.
// `inputShape` is taken by value: callers pass x.shape(), a reference into
// the graph's node list, which the reshape below may reallocate.
Value expandReduced(Value v, const Node &node, Shape inputShape) {
  std::vector<int64_t> axes;
  if (node.op == OpKind::ArgMax)
    axes = {node.attrs.getInt("axis")};
  else
    axes = node.attrs.getInts("axes");
  Shape kept = inputShape;
  for (int64_t a : axes)
    kept[a] = 1;
  if (v.shape() != kept)
    v = reshape(v, kept);
  return v.shape() == inputShape ? v : broadcastTo(v, inputShape);
}

double reductionCount(const Node &node, const Shape &inputShape) {
  double count = 1;
  for (int64_t a : node.attrs.getInts("axes"))
    count *= static_cast<double>(inputShape[a]);
  return count;
}

// Gradient of reduce_max/min: shared evenly among the elements equal to the
// result.
Value extremumGrad(const Node &node, Value x, Value y, Value g) {
  Value hit = cast(eq(x, expandReduced(y, node, x.shape())), x.dtype());
  Value ties = sum(hit, node.attrs.getInts("axes"), true);
  return hit * expandReduced(g, node, x.shape()) / broadcastTo(ties, x.shape());
}

// Gradient for `a` of maximum(a, b) (or minimum with `wins` = lt).
Value extremumPairGrad(Value wins, Value tie, Value g) {
  return select(wins, g, select(tie, g * 0.5, zero(g)));
}

Attrs convAttrs(const Node &node) {
  Attrs attrs;
  for (const char *key : {"stride", "padding", "dilation", "groups"})
    attrs.set(key, *node.attrs.find(key));
  return attrs;
}

Attrs poolAttrs(const Node &node, bool average) {
  Attrs attrs;
  for (const char *key : {"kernel", "stride", "padding"})
    attrs.set(key, *node.attrs.find(key));
  if (average)
    attrs.set("count_include_pad", *node.attrs.find("count_include_pad"));
  return attrs;
}

Shape spatial(const Shape &shape) { return {shape[2], shape[3]}; }

Value conv2dGradInput(Value g, Value w, const Shape &inputShape, Attrs attrs) {
  attrs.set("input_hw", spatial(inputShape));
  return g.builder()->op(OpKind::Conv2dGradInput, {g, w}, std::move(attrs), {});
}

Value conv2dGradWeight(Value x, Value g, const Shape &weightShape, Attrs attrs) {
  attrs.set("kernel", spatial(weightShape));
  return x.builder()->op(OpKind::Conv2dGradWeight, {x, g}, std::move(attrs), {});
}

Value conv2dWith(Value x, Value w, Attrs attrs) {
  return x.builder()->op(OpKind::Conv2d, {x, w}, std::move(attrs), {});
}

// Scatters `g` back into a zero tensor of `inputShape` at the slice positions.
Value sliceGrad(const Node &node, Value g, const Shape &inputShape) {
  const auto &starts = node.attrs.getInts("starts");
  const auto &strides = node.attrs.getInts("strides");
  std::vector<int64_t> high, interior;
  for (size_t i = 0; i < inputShape.size(); ++i) {
    int64_t n = g.shape()[i];
    int64_t covered = n == 0 ? 0 : (n - 1) * strides[i] + 1;
    high.push_back(inputShape[i] - starts[i] - covered);
    interior.push_back(n == 0 ? 0 : strides[i] - 1);
  }
  return g.builder()->op(
      OpKind::Pad, {g},
      {{"low", starts}, {"high", high}, {"interior", interior}, {"value", 0.0}}, {});
}

Value padGrad(const Node &node, Value g, const Shape &inputShape) {
  const auto &low = node.attrs.getInts("low");
  std::vector<int64_t> interior(inputShape.size(), 0);
  if (node.attrs.has("interior"))
    interior = node.attrs.getInts("interior");
  std::vector<int64_t> limits, strides;
  for (size_t i = 0; i < inputShape.size(); ++i) {
    int64_t n = inputShape[i];
    limits.push_back(low[i] + (n == 0 ? 0 : (n - 1) * (interior[i] + 1) + 1));
    strides.push_back(interior[i] + 1);
  }
  return slice(g, low, limits, strides);
}

std::vector<Value> concatGrad(const Node &node, const std::vector<Value> &xs, Value g,
                              const std::vector<bool> &needed) {
  int64_t rank = g.rank();
  int64_t axis = node.attrs.getInt("axis");
  std::vector<Value> grads;
  int64_t offset = 0;
  for (const Value &x : xs) {
    std::vector<int64_t> starts(rank, 0), limits = g.shape();
    starts[axis] = offset;
    limits[axis] = offset + x.shape()[axis];
    offset = limits[axis];
    grads.push_back(needed[grads.size()] ? slice(g, starts, limits) : Value());
  }
  return grads;
}

Value scatterAdd(Value indices, Value updates, int64_t axis, int64_t size) {
  return indices.builder()->op(OpKind::ScatterAdd, {indices, updates},
                               {{"axis", axis}, {"size", size}}, {});
}

std::vector<int64_t> inversePermutation(const std::vector<int64_t> &perm) {
  std::vector<int64_t> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i)
    inverse[perm[i]] = static_cast<int64_t>(i);
  return inverse;
}

} // namespace

Value unbroadcast(Value g, const Shape &shapeRef) {
  Shape shape = shapeRef; // may point into the graph, which sum() below grows
  if (g.shape() == shape)
    return g;
  int64_t extra = g.rank() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < g.rank(); ++i)
    if (i < extra || (shape[i - extra] == 1 && g.shape()[i] != 1))
      axes.push_back(i);
  Value summed = axes.empty() ? g : sum(g, axes, true);
  return summed.shape() == shape ? summed : reshape(summed, shape);
}

std::vector<Value> vjp(const Node &node, const std::vector<Value> &x, Value y, Value g,
                       const std::vector<bool> &needed) {
  auto a = [&] { return x[0]; };
  auto b = [&] { return x[1]; };
  auto shapeOf = [&](size_t i) { return x[i].shape(); };
  switch (node.op) {
  case OpKind::Input:
  case OpKind::Parameter:
  case OpKind::Constant:
  case OpKind::Iota:
  case OpKind::Sign:
  case OpKind::Rem:
  case OpKind::Eq:
  case OpKind::Ne:
  case OpKind::Lt:
  case OpKind::Le:
  case OpKind::Gt:
  case OpKind::Ge:
  case OpKind::ArgMax:
  case OpKind::OneHot:
    return {};
  case OpKind::Neg: return {-g};
  case OpKind::Abs: return {g * sign(a())};
  case OpKind::Exp: return {g * y};
  case OpKind::Log: return {g / a()};
  case OpKind::Sqrt: return {g / (y * 2.0)};
  case OpKind::Rsqrt: return {g * y * y * y * -0.5};
  case OpKind::Square: return {g * a() * 2.0};
  case OpKind::Tanh: return {g * (1.0 - square(y))};
  case OpKind::Sigmoid: return {g * y * (1.0 - y)};
  case OpKind::Relu: return {select(gt(a(), zero(a())), g, zero(g))};
  case OpKind::Sin: return {g * cos(a())};
  case OpKind::Cos: return {-(g * sin(a()))};
  case OpKind::Erf:
    return {g * exp(-square(a())) * (2.0 / std::sqrt(std::numbers::pi))};
  case OpKind::Cast:
    if (!isFloat(a().dtype()) || !isFloat(y.dtype()))
      return {};
    return {cast(g, a().dtype())};
  // Operands off the path get nothing: not even a neg or a broadcast sum.
  case OpKind::Add:
    return {needed[0] ? unbroadcast(g, shapeOf(0)) : Value(),
            needed[1] ? unbroadcast(g, shapeOf(1)) : Value()};
  case OpKind::Sub:
    return {needed[0] ? unbroadcast(g, shapeOf(0)) : Value(),
            needed[1] ? unbroadcast(-g, shapeOf(1)) : Value()};
  case OpKind::Mul:
    return {needed[0] ? unbroadcast(g * b(), shapeOf(0)) : Value(),
            needed[1] ? unbroadcast(g * a(), shapeOf(1)) : Value()};
  case OpKind::Div:
    return {needed[0] ? unbroadcast(g / b(), shapeOf(0)) : Value(),
            needed[1] ? unbroadcast(-(g * y / b()), shapeOf(1)) : Value()};
  case OpKind::Pow: {
    Value ga, gb;
    if (needed[0])
      ga = unbroadcast(g * b() * pow(a(), b() - 1.0), shapeOf(0));
    // d/db a^b = a^b log a; PyTorch's convention makes it 0 where a == 0.
    if (needed[1])
      gb = unbroadcast(g * select(eq(a(), zero(a())), zero(y), y * log(a())), shapeOf(1));
    return {ga, gb};
  }
  case OpKind::Maximum:
  case OpKind::Minimum: {
    bool isMax = node.op == OpKind::Maximum;
    Value tie = eq(a(), b());
    Value aWins = isMax ? gt(a(), b()) : lt(a(), b());
    Value bWins = isMax ? lt(a(), b()) : gt(a(), b());
    return {needed[0] ? unbroadcast(extremumPairGrad(aWins, tie, g), shapeOf(0)) : Value(),
            needed[1] ? unbroadcast(extremumPairGrad(bWins, tie, g), shapeOf(1)) : Value()};
  }
  case OpKind::Select:
    return {Value(),
            needed[1] ? unbroadcast(select(x[0], g, zero(g)), shapeOf(1)) : Value(),
            needed[2] ? unbroadcast(select(x[0], zero(g), g), shapeOf(2)) : Value()};
  case OpKind::ReduceSum: return {expandReduced(g, node, shapeOf(0))};
  case OpKind::ReduceMean:
    return {expandReduced(g, node, shapeOf(0)) / reductionCount(node, shapeOf(0))};
  case OpKind::ReduceMax:
  case OpKind::ReduceMin: return {extremumGrad(node, a(), y, g)};
  case OpKind::MatMul: {
    // a [..., M, K] x b [K, N]: b's gradient sums a^T g over the batch, one
    // product with the batch folded into K (the batch entries' rows follow
    // each other), not a batched product and a [batch, K, N] sum after it.
    const Shape &as = shapeOf(0), &bs = shapeOf(1);
    if (needed[1] && bs.size() == 2 && as.size() > 2) {
      int64_t rows = 1;
      for (size_t d = 0; d + 1 < as.size(); ++d)
        rows *= as[d];
      Value gradB = matmul(transposeLast2(reshape(a(), {rows, as.back()})),
                           reshape(g, {rows, bs.back()}));
      return {needed[0] ? matmul(g, transposeLast2(b())) : Value(), gradB};
    }
    return {needed[0] ? unbroadcast(matmul(g, transposeLast2(b())), shapeOf(0)) : Value(),
            needed[1] ? unbroadcast(matmul(transposeLast2(a()), g), shapeOf(1)) : Value()};
  }
  case OpKind::Transpose:
    return {transpose(g, inversePermutation(node.attrs.getInts("perm")))};
  case OpKind::Reshape: return {reshape(g, shapeOf(0))};
  case OpKind::BroadcastTo: return {unbroadcast(g, shapeOf(0))};
  case OpKind::Slice: return {sliceGrad(node, g, shapeOf(0))};
  case OpKind::Concat: return concatGrad(node, x, g, needed);
  case OpKind::Pad: return {padGrad(node, g, shapeOf(0))};
  case OpKind::Gather: {
    int64_t axis = node.attrs.getInt("axis");
    return {scatterAdd(b(), g, axis, shapeOf(0)[axis]), Value()};
  }
  case OpKind::ScatterAdd:
    return {Value(), gather(g, a(), node.attrs.getInt("axis"))};
  case OpKind::Conv2d:
    return {needed[0] ? conv2dGradInput(g, b(), shapeOf(0), convAttrs(node)) : Value(),
            needed[1] ? conv2dGradWeight(a(), g, shapeOf(1), convAttrs(node)) : Value()};
  case OpKind::Conv2dGradInput: // y = conv_transpose(g_in = a, w = b)
    return {needed[0] ? conv2dWith(g, b(), convAttrs(node)) : Value(),
            needed[1] ? conv2dGradWeight(g, a(), shapeOf(1), convAttrs(node)) : Value()};
  case OpKind::Conv2dGradWeight: // y = dW(x = a, g_out = b)
    return {needed[0] ? conv2dGradInput(b(), g, shapeOf(0), convAttrs(node)) : Value(),
            needed[1] ? conv2dWith(a(), g, convAttrs(node)) : Value()};
  case OpKind::MaxPool2d:
    return {g.builder()->op(OpKind::MaxPool2dGrad, {a(), g}, poolAttrs(node, false), {})};
  case OpKind::MaxPool2dGrad:
    if (needed[1])
      throw Error(locatedMessage(node.loc, "max_pool2d: second derivatives through "
                                           "max_pool2d are not supported"));
    return {};
  case OpKind::AvgPool2d: {
    Attrs attrs = poolAttrs(node, true);
    attrs.set("input_hw", spatial(shapeOf(0)));
    return {g.builder()->op(OpKind::AvgPool2dGrad, {g}, std::move(attrs), {})};
  }
  case OpKind::AvgPool2dGrad:
    return {g.builder()->op(OpKind::AvgPool2d, {g}, poolAttrs(node, true), {})};
  case OpKind::Dropout:
    return {g.builder()->op(OpKind::Dropout, {g, b()},
                            {{"rate", node.attrs.getReal("rate")}}, {}),
            Value()};
  // Every process's output depends on every process's input with weight 1
  // (sum) or 1/size (mean): the cotangents are reduced the same way.
  case OpKind::AllReduce: return {allReduce(g, node.attrs.getString("reduction"))};
  }
  throw std::logic_error("vjp: unknown op");
}

} // namespace stepc::autodiff
