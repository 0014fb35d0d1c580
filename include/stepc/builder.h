// The C++ API for building graphs. It reads like the math:
//
//   stepc::GraphBuilder b("mlp");
//   auto x = b.input("x", stepc::DType::F32, {128, 784});
//   auto w1 = b.param("w1", stepc::DType::F32, {784, 512}, stepc::Init::heUniform(1));
//   auto b1 = b.param("b1", stepc::DType::F32, {512}, stepc::Init::zeros());
//   auto h = relu(matmul(x, w1) + b1);
//   b.output("h", h);
//   stepc::Graph g = b.finish();
//
// Every op checks shapes as it is built; an error throws stepc::Error whose
// message starts with the C++ call site ("train.cpp:12:5: error: matmul: ...").
#pragma once

#include "stepc/graph.h"

#include <initializer_list>
#include <source_location>
#include <string>
#include <vector>

namespace stepc {

class GraphBuilder;
using Loc = std::source_location;

// A value in a graph under construction. Cheap to copy.
class Value {
public:
  Value() = default;
  Value(GraphBuilder *builder, ValueId id) : builder_(builder), id_(id) {}

  GraphBuilder *builder() const { return builder_; }
  ValueId id() const { return id_; }
  bool valid() const { return builder_ != nullptr; }

  // By value: adding nodes may move the graph's storage, so a reference
  // would dangle as soon as the caller builds the next op.
  TensorType type() const;
  DType dtype() const { return type().dtype; }
  Shape shape() const { return type().shape; }
  int64_t rank() const { return type().rank(); }
  int64_t dim(int64_t axis) const; // negative axes count from the end

private:
  GraphBuilder *builder_ = nullptr;
  ValueId id_ = 0;
};

class GraphBuilder {
public:
  explicit GraphBuilder(std::string name = "main");
  // Continues building on an existing graph (used by grad() and the parser).
  explicit GraphBuilder(Graph graph);

  Value input(std::string name, DType dtype, Shape shape, Loc at = Loc::current());
  Value param(std::string name, DType dtype, Shape shape, Init init,
              Loc at = Loc::current());
  void output(std::string name, Value value);
  // After each step, `param` takes `value` (see ParamUpdate).
  void update(Value param, Value value);

  // Appends one op node; the generic form behind every op function.
  Value op(OpKind kind, std::vector<Value> operands, Attrs attrs,
           const SourceLoc &loc, std::string name = {});
  // Wraps an existing node of this builder's graph.
  Value value(ValueId id) { return Value(this, id); }

  const Graph &graph() const { return graph_; }
  // Verifies and hands out the graph; the builder is empty afterwards.
  Graph finish();

  // While set, every new node gets this location instead of its C++ call
  // site: graph transforms (grad) stamp generated nodes with the source op.
  void setLocationOverride(std::optional<SourceLoc> loc) { override_ = std::move(loc); }
  const std::optional<SourceLoc> &locationOverride() const { return override_; }

private:
  Graph graph_;
  std::optional<SourceLoc> override_;
};

// Sets a builder's location override for a scope, restoring the previous one.
class LocationScope {
public:
  LocationScope(GraphBuilder &b, SourceLoc loc) : b_(b), saved_(b.locationOverride()) {
    b_.setLocationOverride(std::move(loc));
  }
  ~LocationScope() { b_.setLocationOverride(saved_); }
  LocationScope(const LocationScope &) = delete;
  LocationScope &operator=(const LocationScope &) = delete;

private:
  GraphBuilder &b_;
  std::optional<SourceLoc> saved_;
};

// --- Sources --------------------------------------------------------------
// Filled constant in `like`'s graph.
Value constant(GraphBuilder &b, double value, DType dtype, Shape shape = {},
               Loc at = Loc::current());
// Row-major data.
Value constantData(GraphBuilder &b, std::vector<double> data, DType dtype,
                   Shape shape, Loc at = Loc::current());
Value iota(GraphBuilder &b, DType dtype, Shape shape, int64_t axis,
           Loc at = Loc::current());
// A scalar constant of `like`'s dtype in `like`'s graph.
Value scalarLike(Value like, double value, Loc at = Loc::current());

// --- Elementwise ----------------------------------------------------------
Value neg(Value x, Loc at = Loc::current());
Value abs(Value x, Loc at = Loc::current());
Value exp(Value x, Loc at = Loc::current());
Value log(Value x, Loc at = Loc::current());
Value sqrt(Value x, Loc at = Loc::current());
Value rsqrt(Value x, Loc at = Loc::current());
Value square(Value x, Loc at = Loc::current());
Value tanh(Value x, Loc at = Loc::current());
Value sigmoid(Value x, Loc at = Loc::current());
Value relu(Value x, Loc at = Loc::current());
Value sin(Value x, Loc at = Loc::current());
Value cos(Value x, Loc at = Loc::current());
Value sign(Value x, Loc at = Loc::current());
Value erf(Value x, Loc at = Loc::current());
Value cast(Value x, DType dtype, Loc at = Loc::current());

Value add(Value a, Value b, Loc at = Loc::current());
Value sub(Value a, Value b, Loc at = Loc::current());
Value mul(Value a, Value b, Loc at = Loc::current());
Value div(Value a, Value b, Loc at = Loc::current());
Value pow(Value a, Value b, Loc at = Loc::current());
Value maximum(Value a, Value b, Loc at = Loc::current());
Value minimum(Value a, Value b, Loc at = Loc::current());
Value rem(Value a, Value b, Loc at = Loc::current());
Value eq(Value a, Value b, Loc at = Loc::current());
Value ne(Value a, Value b, Loc at = Loc::current());
Value lt(Value a, Value b, Loc at = Loc::current());
Value le(Value a, Value b, Loc at = Loc::current());
Value gt(Value a, Value b, Loc at = Loc::current());
Value ge(Value a, Value b, Loc at = Loc::current());
Value select(Value cond, Value a, Value b, Loc at = Loc::current());

// Operators take an Operand so that the call site is recorded (a default
// argument is not allowed on operators, but it is on the conversion) and so
// that a plain number becomes a scalar constant of the other side's dtype.
struct Operand {
  Value value;
  double number = 0;
  Loc at;
  Operand(Value v, Loc at = Loc::current()) : value(v), at(at) {}
  Operand(double n, Loc at = Loc::current()) : number(n), at(at) {}
};
Value operator+(Operand a, Operand b);
Value operator-(Operand a, Operand b);
Value operator*(Operand a, Operand b);
Value operator/(Operand a, Operand b);
Value operator-(Operand a);

// --- Reductions -------------------------------------------------------------
// The axes a reduction reduces, as in .sg: a list ({1}, {0, -1}; negative
// axes count from the end), where an empty list ({}) reduces none (the
// identity, as {axes=[]} in .sg), or every axis: Axes::all(), which leaving
// the argument out means (as leaving `axes` out in .sg).
class Axes {
public:
  Axes() = default; // no axes
  Axes(std::initializer_list<int64_t> list) : list_(list) {}
  Axes(std::vector<int64_t> list) : list_(std::move(list)) {}
  static Axes all() {
    Axes axes;
    axes.all_ = true;
    return axes;
  }
  bool isAll() const { return all_; }
  const std::vector<int64_t> &list() const { return list_; } // when not all

private:
  std::vector<int64_t> list_;
  bool all_ = false;
};

Value sum(Value x, Axes axes = Axes::all(), bool keepdims = false, Loc at = Loc::current());
Value mean(Value x, Axes axes = Axes::all(), bool keepdims = false, Loc at = Loc::current());
Value max(Value x, Axes axes = Axes::all(), bool keepdims = false, Loc at = Loc::current());
Value min(Value x, Axes axes = Axes::all(), bool keepdims = false, Loc at = Loc::current());
Value argmax(Value x, int64_t axis, bool keepdims = false, Loc at = Loc::current());

// --- Shape and data movement ----------------------------------------------
Value matmul(Value a, Value b, Loc at = Loc::current());
Value transpose(Value x, std::vector<int64_t> perm, Loc at = Loc::current());
// Swaps the last two axes.
Value transposeLast2(Value x, Loc at = Loc::current());
Value reshape(Value x, Shape shape, Loc at = Loc::current());
Value broadcastTo(Value x, Shape shape, Loc at = Loc::current());
Value slice(Value x, std::vector<int64_t> starts, std::vector<int64_t> limits,
            std::vector<int64_t> strides = {}, Loc at = Loc::current());
Value concat(std::vector<Value> xs, int64_t axis, Loc at = Loc::current());
Value pad(Value x, std::vector<int64_t> low, std::vector<int64_t> high,
          double value = 0, Loc at = Loc::current());
Value gather(Value data, Value indices, int64_t axis, Loc at = Loc::current());
Value oneHot(Value indices, int64_t depth, DType dtype, Loc at = Loc::current());

// --- Convolution, pooling, dropout ----------------------------------------
struct Conv2dOptions {
  std::vector<int64_t> stride{1, 1};
  std::vector<int64_t> padding{0, 0};
  std::vector<int64_t> dilation{1, 1};
  int64_t groups = 1;
};
Value conv2d(Value x, Value w, Conv2dOptions options = {}, Loc at = Loc::current());
struct Pool2dOptions {
  std::vector<int64_t> kernel{2, 2};
  std::vector<int64_t> stride{2, 2};
  std::vector<int64_t> padding{0, 0};
  bool countIncludePad = true; // avg_pool2d only; PyTorch's default
};
Value maxPool2d(Value x, Pool2dOptions options = {}, Loc at = Loc::current());
Value avgPool2d(Value x, Pool2dOptions options = {}, Loc at = Loc::current());
// Zeroes each element with probability `rate` and scales the rest by
// 1/(1-rate); `seed` is an i64 scalar, normally a graph input.
Value dropout(Value x, Value seed, double rate, Loc at = Loc::current());

// --- Collectives ------------------------------------------------------------
// The elementwise sum ("sum") or mean ("mean") of x over every process of a
// data-parallel job; x itself when the job is one process.
Value allReduce(Value x, std::string_view reduction, Loc at = Loc::current());

// --- Composites: built from the ops above, no kernels of their own ----------
// x @ w + b (b may be an invalid Value for no bias).
Value linear(Value x, Value w, Value b, Loc at = Loc::current());
Value leakyRelu(Value x, double slope = 0.01, Loc at = Loc::current());
// tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
Value gelu(Value x, Loc at = Loc::current());
Value softmax(Value x, int64_t axis = -1, Loc at = Loc::current());
Value logSoftmax(Value x, int64_t axis = -1, Loc at = Loc::current());
// Mean over the batch of -log softmax(logits)[label]; logits [N,C], labels
// integer [N].
Value crossEntropy(Value logits, Value labels, Loc at = Loc::current());
Value mse(Value prediction, Value target, Loc at = Loc::current());
// Normalizes over the last axis; gamma/beta of the last axis' size.
Value layerNorm(Value x, Value gamma, Value beta, double eps = 1e-5,
                Loc at = Loc::current());
// Scaled dot-product attention over [..., T, D] queries/keys/values.
Value attention(Value q, Value k, Value v, bool causal,
                Loc at = Loc::current());

// The composites by their .sg names ("softmax", "cross_entropy", ...), so the
// text format can call them. Attributes: softmax/log_softmax {axis},
// leaky_relu {slope}, layer_norm {eps}, attention {causal}.
// Returns an invalid Value when `name` is no composite.
Value buildComposite(std::string_view name, GraphBuilder &b,
                     const std::vector<Value> &operands, const Attrs &attrs,
                     const SourceLoc &loc);
bool isComposite(std::string_view name);

} // namespace stepc
