// Composite ops: built from primitive ops, so they need no kernels, shape
// rules or gradients of their own (STYLE.md, "Small, local rules").
#include "stepc/builder.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace stepc {
namespace {

// Emits primitive nodes that all carry the composite's source location.
class Emitter {
public:
  Emitter(GraphBuilder &b, SourceLoc loc) : b_(b), loc_(std::move(loc)) {}

  Value op(OpKind kind, std::vector<Value> xs, Attrs attrs = {}) {
    return b_.op(kind, std::move(xs), std::move(attrs), loc_);
  }
  // A node that errors name by what it is for (SourceLoc::origin).
  Value op(OpKind kind, std::vector<Value> xs, Attrs attrs, std::string origin) {
    SourceLoc loc = loc_;
    loc.origin = std::move(origin);
    return b_.op(kind, std::move(xs), std::move(attrs), loc);
  }
  Value scalar(Value like, double v) {
    return op(OpKind::Constant, {},
              {{"dtype", std::string(dtypeName(like.dtype()))},
               {"shape", Shape{}},
               {"value", v}});
  }
  Value reduce(OpKind kind, Value x, int64_t axis) {
    return op(kind, {x}, {{"axes", std::vector<int64_t>{axis}}, {"keepdims", int64_t(1)}});
  }
  Value reduceAll(OpKind kind, Value x) {
    std::vector<int64_t> axes;
    for (int64_t i = 0; i < x.rank(); ++i)
      axes.push_back(i);
    return op(kind, {x}, {{"axes", axes}, {"keepdims", int64_t(0)}});
  }
  [[noreturn]] void fail(std::string_view composite, const std::string &message) const {
    throw Error(locatedMessage(loc_, fmt::format("{}: {}", composite, message)));
  }
  GraphBuilder &builder() { return b_; }

private:
  GraphBuilder &b_;
  SourceLoc loc_;
};

GraphBuilder &builderOf(Value v, const SourceLoc &loc, std::string_view composite) {
  if (!v.valid())
    throw Error(locatedMessage(loc, fmt::format("{}: operand is an empty stepc::Value",
                                                composite)));
  return *v.builder();
}

void requireFloat(Emitter &e, Value x, std::string_view composite) {
  if (!isFloat(x.dtype()))
    e.fail(composite, fmt::format("expected a floating-point operand, found {}",
                                  typeString(x.type())));
}

Value linearAt(Value x, Value w, Value b, const SourceLoc &loc) {
  Emitter e(builderOf(x, loc, "linear"), loc);
  Value y = e.op(OpKind::MatMul, {x, w});
  return b.valid() ? e.op(OpKind::Add, {y, b}) : y;
}

Value leakyReluAt(Value x, double slope, const SourceLoc &loc) {
  Emitter e(builderOf(x, loc, "leaky_relu"), loc);
  Value positive = e.op(OpKind::Gt, {x, e.scalar(x, 0)});
  return e.op(OpKind::Select, {positive, x, e.op(OpKind::Mul, {x, e.scalar(x, slope)})});
}

Value geluAt(Value x, const SourceLoc &loc) {
  Emitter e(builderOf(x, loc, "gelu"), loc);
  requireFloat(e, x, "gelu");
  Value cube = e.op(OpKind::Mul, {e.op(OpKind::Square, {x}), x});
  Value inner = e.op(OpKind::Add, {x, e.op(OpKind::Mul, {cube, e.scalar(x, 0.044715)})});
  Value t = e.op(OpKind::Tanh,
                 {e.op(OpKind::Mul, {inner, e.scalar(x, std::sqrt(2.0 / std::numbers::pi))})});
  Value half = e.op(OpKind::Mul, {x, e.scalar(x, 0.5)});
  return e.op(OpKind::Mul, {half, e.op(OpKind::Add, {t, e.scalar(x, 1.0)})});
}

// Subtracting the row maximum keeps exp() from overflowing.
Value shiftedByMax(Emitter &e, Value x, int64_t axis) {
  return e.op(OpKind::Sub, {x, e.reduce(OpKind::ReduceMax, x, axis)});
}

Value softmaxAt(Value x, int64_t axis, const SourceLoc &loc) {
  Emitter e(builderOf(x, loc, "softmax"), loc);
  requireFloat(e, x, "softmax");
  Value ex = e.op(OpKind::Exp, {shiftedByMax(e, x, axis)});
  return e.op(OpKind::Div, {ex, e.reduce(OpKind::ReduceSum, ex, axis)});
}

Value logSoftmaxAt(Value x, int64_t axis, const SourceLoc &loc) {
  Emitter e(builderOf(x, loc, "log_softmax"), loc);
  requireFloat(e, x, "log_softmax");
  Value shifted = shiftedByMax(e, x, axis);
  Value total = e.reduce(OpKind::ReduceSum, e.op(OpKind::Exp, {shifted}), axis);
  return e.op(OpKind::Sub, {shifted, e.op(OpKind::Log, {total})});
}

Value crossEntropyAt(Value logits, Value labels, const SourceLoc &loc) {
  Emitter e(builderOf(logits, loc, "cross_entropy"), loc);
  requireFloat(e, logits, "cross_entropy");
  if (!labels.valid() || logits.rank() != 2 || labels.rank() != 1 ||
      labels.dim(0) != logits.dim(0) || !isInteger(labels.dtype()))
    e.fail("cross_entropy",
           fmt::format("expected logits [N,C] and integer labels [N], found {} and {}",
                       typeString(logits.type()),
                       labels.valid() ? typeString(labels.type()) : "nothing"));
  Value logProbs = logSoftmaxAt(logits, 1, loc);
  // A label outside [0, C) has no log-probability to pick: an error on every
  // backend, rather than a zero row and a wrong loss.
  Value picked = e.op(OpKind::OneHot, {labels},
                      {{"depth", logits.dim(1)},
                       {"dtype", std::string(dtypeName(logits.dtype()))},
                       {"checked", int64_t(1)}},
                      "cross_entropy labels");
  Value perExample = e.op(OpKind::ReduceSum, {e.op(OpKind::Mul, {logProbs, picked})},
                          {{"axes", std::vector<int64_t>{1}}, {"keepdims", int64_t(0)}});
  return e.op(OpKind::Neg, {e.reduceAll(OpKind::ReduceMean, perExample)});
}

Value mseAt(Value prediction, Value target, const SourceLoc &loc) {
  Emitter e(builderOf(prediction, loc, "mse"), loc);
  requireFloat(e, prediction, "mse");
  Value diff = e.op(OpKind::Sub, {prediction, target});
  return e.reduceAll(OpKind::ReduceMean, e.op(OpKind::Square, {diff}));
}

Value layerNormAt(Value x, Value gamma, Value beta, double eps, const SourceLoc &loc) {
  Emitter e(builderOf(x, loc, "layer_norm"), loc);
  requireFloat(e, x, "layer_norm");
  Value centered = e.op(OpKind::Sub, {x, e.reduce(OpKind::ReduceMean, x, -1)});
  Value variance = e.reduce(OpKind::ReduceMean, e.op(OpKind::Square, {centered}), -1);
  Value inverse = e.op(OpKind::Rsqrt, {e.op(OpKind::Add, {variance, e.scalar(x, eps)})});
  Value normalized = e.op(OpKind::Mul, {centered, inverse});
  if (gamma.valid())
    normalized = e.op(OpKind::Mul, {normalized, gamma});
  if (beta.valid())
    normalized = e.op(OpKind::Add, {normalized, beta});
  return normalized;
}

Value attentionAt(Value q, Value k, Value v, bool causal, const SourceLoc &loc) {
  Emitter e(builderOf(q, loc, "attention"), loc);
  requireFloat(e, q, "attention");
  if (q.rank() < 2 || !k.valid() || k.rank() != q.rank() || !v.valid() ||
      v.rank() != q.rank())
    e.fail("attention", "expected queries, keys and values of one rank >= 2 ([..., T, D])");
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < k.rank(); ++i)
    perm.push_back(i);
  std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
  Value keysT = e.op(OpKind::Transpose, {k}, {{"perm", perm}});
  Value scores = e.op(OpKind::Mul, {e.op(OpKind::MatMul, {q, keysT}),
                                    e.scalar(q, 1.0 / std::sqrt(double(q.dim(-1))))});
  if (causal) {
    // Query i sees keys 0..i (top-left aligned, as PyTorch's is_causal).
    Shape square{q.dim(-2), k.dim(-2)};
    auto index = [&](int64_t axis) {
      return e.op(OpKind::Iota, {},
                  {{"dtype", std::string("i64")}, {"shape", square}, {"axis", axis}});
    };
    Value visible = e.op(OpKind::Le, {index(1), index(0)});
    // A large finite negative rather than -inf keeps 0 * inf out of gradients.
    scores = e.op(OpKind::Select, {visible, scores, e.scalar(q, -1e30)});
  }
  return e.op(OpKind::MatMul, {softmaxAt(scores, -1, loc), v});
}

// Reads a composite's optional attributes; unknown ones are errors.
class CompositeAttrs {
public:
  CompositeAttrs(std::string_view name, const Attrs &attrs, const SourceLoc &loc)
      : name_(name), attrs_(attrs), loc_(loc) {}
  template <class F> auto located(F &&read) const -> decltype(read()) {
    try {
      return read();
    } catch (const Error &e) {
      throw Error(locatedMessage(loc_, fmt::format("{}: {}", name_, e.what())));
    }
  }
  int64_t integer(std::string_view key, int64_t fallback) {
    used_.push_back(key);
    return located([&] { return attrs_.has(key) ? attrs_.getInt(key) : fallback; });
  }
  double real(std::string_view key, double fallback) {
    used_.push_back(key);
    return located([&] { return attrs_.has(key) ? attrs_.getReal(key) : fallback; });
  }
  void finish() const {
    for (const auto &[key, value] : attrs_.entries())
      if (std::find(used_.begin(), used_.end(), key) == used_.end())
        throw Error(locatedMessage(loc_, fmt::format("{}: unknown attribute '{}'", name_, key)));
  }

private:
  std::string_view name_;
  const Attrs &attrs_;
  const SourceLoc &loc_;
  std::vector<std::string_view> used_;
};

struct CompositeSignature {
  std::string_view name;
  size_t minOperands, maxOperands;
};
constexpr CompositeSignature kComposites[] = {
    {"linear", 2, 3},      {"leaky_relu", 1, 1},    {"gelu", 1, 1},
    {"softmax", 1, 1},     {"log_softmax", 1, 1},   {"cross_entropy", 2, 2},
    {"mse", 2, 2},         {"layer_norm", 1, 3},    {"attention", 3, 3},
};

} // namespace

Value linear(Value x, Value w, Value b, Loc at) {
  return linearAt(x, w, b, SourceLoc::fromCpp(at));
}
Value leakyRelu(Value x, double slope, Loc at) {
  return leakyReluAt(x, slope, SourceLoc::fromCpp(at));
}
Value gelu(Value x, Loc at) { return geluAt(x, SourceLoc::fromCpp(at)); }
Value softmax(Value x, int64_t axis, Loc at) {
  return softmaxAt(x, axis, SourceLoc::fromCpp(at));
}
Value logSoftmax(Value x, int64_t axis, Loc at) {
  return logSoftmaxAt(x, axis, SourceLoc::fromCpp(at));
}
Value crossEntropy(Value logits, Value labels, Loc at) {
  return crossEntropyAt(logits, labels, SourceLoc::fromCpp(at));
}
Value mse(Value prediction, Value target, Loc at) {
  return mseAt(prediction, target, SourceLoc::fromCpp(at));
}
Value layerNorm(Value x, Value gamma, Value beta, double eps, Loc at) {
  return layerNormAt(x, gamma, beta, eps, SourceLoc::fromCpp(at));
}
Value attention(Value q, Value k, Value v, bool causal, Loc at) {
  return attentionAt(q, k, v, causal, SourceLoc::fromCpp(at));
}

bool isComposite(std::string_view name) {
  for (const CompositeSignature &c : kComposites)
    if (c.name == name)
      return true;
  return false;
}

Value buildComposite(std::string_view name, GraphBuilder &b,
                     const std::vector<Value> &xs, const Attrs &attrs,
                     const SourceLoc &loc) {
  const CompositeSignature *sig = nullptr;
  for (const CompositeSignature &c : kComposites)
    if (c.name == name)
      sig = &c;
  if (!sig)
    return Value();
  if (xs.size() < sig->minOperands || xs.size() > sig->maxOperands)
    throw Error(locatedMessage(
        loc, sig->minOperands == sig->maxOperands
                 ? fmt::format("{}: expected {} operands, got {}", name, sig->minOperands,
                               xs.size())
                 : fmt::format("{}: expected {} to {} operands, got {}", name,
                               sig->minOperands, sig->maxOperands, xs.size())));
  auto operand = [&](size_t i) { return i < xs.size() ? xs[i] : Value(); };
  CompositeAttrs a(name, attrs, loc);
  Value result;
  if (name == "linear")
    result = linearAt(xs[0], xs[1], operand(2), loc);
  else if (name == "leaky_relu")
    result = leakyReluAt(xs[0], a.real("slope", 0.01), loc);
  else if (name == "gelu")
    result = geluAt(xs[0], loc);
  else if (name == "softmax")
    result = softmaxAt(xs[0], a.integer("axis", -1), loc);
  else if (name == "log_softmax")
    result = logSoftmaxAt(xs[0], a.integer("axis", -1), loc);
  else if (name == "cross_entropy")
    result = crossEntropyAt(xs[0], xs[1], loc);
  else if (name == "mse")
    result = mseAt(xs[0], xs[1], loc);
  else if (name == "layer_norm")
    result = layerNormAt(xs[0], operand(1), operand(2), a.real("eps", 1e-5), loc);
  else
    result = attentionAt(xs[0], xs[1], xs[2], a.integer("causal", 0) != 0, loc);
  a.finish();
  return result;
}

} // namespace stepc
