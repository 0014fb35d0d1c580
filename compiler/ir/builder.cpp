#include "stepc/builder.h"

#include <fmt/format.h>

#include <numeric>

namespace stepc {
namespace {

SourceLoc here(const Loc &at) { return SourceLoc::fromCpp(at); }

GraphBuilder &builderOf(Value v, const Loc &at) {
  if (!v.valid())
    throw Error(locatedMessage(here(at), "operand is an empty stepc::Value"));
  return *v.builder();
}

Value unary(OpKind op, Value x, const Loc &at, Attrs attrs = {}) {
  return builderOf(x, at).op(op, {x}, std::move(attrs), here(at));
}

Value binary(OpKind op, Value a, Value b, const Loc &at) {
  GraphBuilder &builder = builderOf(a, at);
  if (&builderOf(b, at) != &builder)
    throw Error(locatedMessage(here(at), fmt::format("{}: operands belong to different graphs",
                                                     opInfo(op).name)));
  return builder.op(op, {a, b}, {}, here(at));
}

std::vector<int64_t> allAxes(Value x) {
  std::vector<int64_t> axes(static_cast<size_t>(x.rank()));
  std::iota(axes.begin(), axes.end(), 0);
  return axes;
}

Value reduce(OpKind op, Value x, const Axes &axes, bool keepdims, const Loc &at) {
  return unary(op, x, at,
               {{"axes", axes.isAll() ? allAxes(x) : axes.list()},
                {"keepdims", int64_t(keepdims)}});
}

// Turns an operator's operands into two values; a plain number becomes a
// scalar constant of the other side's dtype.
std::pair<Value, Value> operands(const Operand &a, const Operand &b) {
  if (!a.value.valid() && !b.value.valid())
    throw Error(locatedMessage(here(b.at), "operator needs at least one stepc::Value"));
  Value x = a.value.valid() ? a.value : scalarLike(b.value, a.number, a.at);
  Value y = b.value.valid() ? b.value : scalarLike(a.value, b.number, b.at);
  return {x, y};
}

} // namespace

TensorType Value::type() const { return builder_->graph().type(id_); }

int64_t Value::dim(int64_t axis) const {
  int64_t r = rank();
  if (axis < -r || axis >= r)
    throw Error(fmt::format("axis {} is out of range for {}", axis, typeString(type())));
  return shape()[axis < 0 ? axis + r : axis];
}

GraphBuilder::GraphBuilder(std::string name) { graph_.name = std::move(name); }
GraphBuilder::GraphBuilder(Graph graph) : graph_(std::move(graph)) {}

Value GraphBuilder::input(std::string name, DType dtype, Shape shape, Loc at) {
  Node node;
  node.op = OpKind::Input;
  node.attrs = {{"dtype", std::string(dtypeName(dtype))}, {"shape", shape}};
  node.name = std::move(name);
  node.loc = here(at);
  return Value(this, graph_.add(std::move(node)));
}

Value GraphBuilder::param(std::string name, DType dtype, Shape shape, Init init, Loc at) {
  Node node;
  node.op = OpKind::Parameter;
  node.attrs = init.toAttrs();
  node.attrs.set("dtype", std::string(dtypeName(dtype)));
  node.attrs.set("shape", shape);
  node.name = std::move(name);
  node.loc = here(at);
  return Value(this, graph_.add(std::move(node)));
}

void GraphBuilder::output(std::string name, Value value) {
  if (value.builder() != this)
    throw Error(fmt::format("output '{}' is not a value of graph '{}'", name, graph_.name));
  graph_.addOutput(std::move(name), value.id());
}

void GraphBuilder::update(Value param, Value value) {
  if (param.builder() != this || value.builder() != this)
    throw Error(fmt::format("update: values must belong to graph '{}'", graph_.name));
  graph_.addUpdate(param.id(), value.id());
}

Value GraphBuilder::op(OpKind kind, std::vector<Value> operands, Attrs attrs,
                       const SourceLoc &loc, std::string name) {
  Node node;
  node.op = kind;
  for (const Value &v : operands) {
    if (v.builder() != this)
      throw Error(locatedMessage(loc, fmt::format("{}: an operand belongs to another graph",
                                                  opInfo(kind).name)));
    node.operands.push_back(v.id());
  }
  node.attrs = std::move(attrs);
  node.loc = override_ ? *override_ : loc;
  node.name = std::move(name);
  return Value(this, graph_.add(std::move(node)));
}

Graph GraphBuilder::finish() {
  verify(graph_);
  Graph out = std::move(graph_);
  graph_ = Graph();
  return out;
}

Value constant(GraphBuilder &b, double value, DType dtype, Shape shape, Loc at) {
  return b.op(OpKind::Constant, {},
              {{"dtype", std::string(dtypeName(dtype))}, {"shape", shape}, {"value", value}},
              here(at));
}

Value constantData(GraphBuilder &b, std::vector<double> data, DType dtype, Shape shape,
                   Loc at) {
  return b.op(OpKind::Constant, {},
              {{"dtype", std::string(dtypeName(dtype))}, {"shape", shape}, {"data", data}},
              here(at));
}

Value iota(GraphBuilder &b, DType dtype, Shape shape, int64_t axis, Loc at) {
  return b.op(OpKind::Iota, {},
              {{"dtype", std::string(dtypeName(dtype))}, {"shape", shape}, {"axis", axis}},
              here(at));
}

Value scalarLike(Value like, double value, Loc at) {
  return constant(builderOf(like, at), value, like.dtype(), {}, at);
}

Value neg(Value x, Loc at) { return unary(OpKind::Neg, x, at); }
Value abs(Value x, Loc at) { return unary(OpKind::Abs, x, at); }
Value exp(Value x, Loc at) { return unary(OpKind::Exp, x, at); }
Value log(Value x, Loc at) { return unary(OpKind::Log, x, at); }
Value sqrt(Value x, Loc at) { return unary(OpKind::Sqrt, x, at); }
Value rsqrt(Value x, Loc at) { return unary(OpKind::Rsqrt, x, at); }
Value square(Value x, Loc at) { return unary(OpKind::Square, x, at); }
Value tanh(Value x, Loc at) { return unary(OpKind::Tanh, x, at); }
Value sigmoid(Value x, Loc at) { return unary(OpKind::Sigmoid, x, at); }
Value relu(Value x, Loc at) { return unary(OpKind::Relu, x, at); }
Value sin(Value x, Loc at) { return unary(OpKind::Sin, x, at); }
Value cos(Value x, Loc at) { return unary(OpKind::Cos, x, at); }
Value sign(Value x, Loc at) { return unary(OpKind::Sign, x, at); }
Value erf(Value x, Loc at) { return unary(OpKind::Erf, x, at); }
Value cast(Value x, DType dtype, Loc at) {
  return unary(OpKind::Cast, x, at, {{"dtype", std::string(dtypeName(dtype))}});
}

Value add(Value a, Value b, Loc at) { return binary(OpKind::Add, a, b, at); }
Value sub(Value a, Value b, Loc at) { return binary(OpKind::Sub, a, b, at); }
Value mul(Value a, Value b, Loc at) { return binary(OpKind::Mul, a, b, at); }
Value div(Value a, Value b, Loc at) { return binary(OpKind::Div, a, b, at); }
Value pow(Value a, Value b, Loc at) { return binary(OpKind::Pow, a, b, at); }
Value maximum(Value a, Value b, Loc at) { return binary(OpKind::Maximum, a, b, at); }
Value minimum(Value a, Value b, Loc at) { return binary(OpKind::Minimum, a, b, at); }
Value rem(Value a, Value b, Loc at) { return binary(OpKind::Rem, a, b, at); }
Value eq(Value a, Value b, Loc at) { return binary(OpKind::Eq, a, b, at); }
Value ne(Value a, Value b, Loc at) { return binary(OpKind::Ne, a, b, at); }
Value lt(Value a, Value b, Loc at) { return binary(OpKind::Lt, a, b, at); }
Value le(Value a, Value b, Loc at) { return binary(OpKind::Le, a, b, at); }
Value gt(Value a, Value b, Loc at) { return binary(OpKind::Gt, a, b, at); }
Value ge(Value a, Value b, Loc at) { return binary(OpKind::Ge, a, b, at); }

Value select(Value cond, Value a, Value b, Loc at) {
  return builderOf(cond, at).op(OpKind::Select, {cond, a, b}, {}, here(at));
}

Value operator+(Operand a, Operand b) {
  auto [x, y] = operands(a, b);
  return add(x, y, b.at);
}
Value operator-(Operand a, Operand b) {
  auto [x, y] = operands(a, b);
  return sub(x, y, b.at);
}
Value operator*(Operand a, Operand b) {
  auto [x, y] = operands(a, b);
  return mul(x, y, b.at);
}
Value operator/(Operand a, Operand b) {
  auto [x, y] = operands(a, b);
  return div(x, y, b.at);
}
Value operator-(Operand a) {
  if (!a.value.valid())
    throw Error(locatedMessage(here(a.at), "unary minus needs a stepc::Value"));
  return neg(a.value, a.at);
}

Value sum(Value x, Axes axes, bool keepdims, Loc at) {
  return reduce(OpKind::ReduceSum, x, axes, keepdims, at);
}
Value mean(Value x, Axes axes, bool keepdims, Loc at) {
  return reduce(OpKind::ReduceMean, x, axes, keepdims, at);
}
Value max(Value x, Axes axes, bool keepdims, Loc at) {
  return reduce(OpKind::ReduceMax, x, axes, keepdims, at);
}
Value min(Value x, Axes axes, bool keepdims, Loc at) {
  return reduce(OpKind::ReduceMin, x, axes, keepdims, at);
}
Value argmax(Value x, int64_t axis, bool keepdims, Loc at) {
  return unary(OpKind::ArgMax, x, at, {{"axis", axis}, {"keepdims", int64_t(keepdims)}});
}

Value matmul(Value a, Value b, Loc at) { return binary(OpKind::MatMul, a, b, at); }

Value transpose(Value x, std::vector<int64_t> perm, Loc at) {
  return unary(OpKind::Transpose, x, at, {{"perm", perm}});
}

Value transposeLast2(Value x, Loc at) {
  std::vector<int64_t> perm = allAxes(x);
  if (perm.size() < 2)
    throw Error(locatedMessage(here(at), fmt::format("transpose: {} has fewer than 2 axes",
                                                     typeString(x.type()))));
  std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
  return transpose(x, perm, at);
}

Value reshape(Value x, Shape shape, Loc at) {
  return unary(OpKind::Reshape, x, at, {{"shape", shape}});
}

Value broadcastTo(Value x, Shape shape, Loc at) {
  return unary(OpKind::BroadcastTo, x, at, {{"shape", shape}});
}

Value slice(Value x, std::vector<int64_t> starts, std::vector<int64_t> limits,
            std::vector<int64_t> strides, Loc at) {
  if (strides.empty())
    strides.assign(starts.size(), 1);
  return unary(OpKind::Slice, x, at,
               {{"starts", starts}, {"limits", limits}, {"strides", strides}});
}

Value concat(std::vector<Value> xs, int64_t axis, Loc at) {
  if (xs.empty())
    throw Error(locatedMessage(here(at), "concat: expected at least one operand, got none"));
  return builderOf(xs[0], at).op(OpKind::Concat, xs, {{"axis", axis}}, here(at));
}

Value pad(Value x, std::vector<int64_t> low, std::vector<int64_t> high, double value,
          Loc at) {
  return unary(OpKind::Pad, x, at, {{"low", low}, {"high", high}, {"value", value}});
}

Value gather(Value data, Value indices, int64_t axis, Loc at) {
  return builderOf(data, at).op(OpKind::Gather, {data, indices}, {{"axis", axis}}, here(at));
}

Value oneHot(Value indices, int64_t depth, DType dtype, Loc at) {
  return unary(OpKind::OneHot, indices, at,
               {{"depth", depth}, {"dtype", std::string(dtypeName(dtype))}});
}

Value conv2d(Value x, Value w, Conv2dOptions o, Loc at) {
  return builderOf(x, at).op(OpKind::Conv2d, {x, w},
                             {{"stride", o.stride},
                              {"padding", o.padding},
                              {"dilation", o.dilation},
                              {"groups", o.groups}},
                             here(at));
}

Value maxPool2d(Value x, Pool2dOptions o, Loc at) {
  return unary(OpKind::MaxPool2d, x, at,
               {{"kernel", o.kernel}, {"stride", o.stride}, {"padding", o.padding}});
}

Value avgPool2d(Value x, Pool2dOptions o, Loc at) {
  return unary(OpKind::AvgPool2d, x, at,
               {{"kernel", o.kernel},
                {"stride", o.stride},
                {"padding", o.padding},
                {"count_include_pad", int64_t(o.countIncludePad)}});
}

Value dropout(Value x, Value seed, double rate, Loc at) {
  return builderOf(x, at).op(OpKind::Dropout, {x, seed}, {{"rate", rate}}, here(at));
}

Value allReduce(Value x, std::string_view reduction, Loc at) {
  return unary(OpKind::AllReduce, x, at, {{"reduction", std::string(reduction)}});
}

} // namespace stepc
