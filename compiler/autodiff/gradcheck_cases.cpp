// Gradient-check cases: at least one per differentiable op and per composite
// (tests/test_gradcheck.cpp walks allOps() and requires them). Each case is a
// small f64 graph whose output "loss" is sum(result * fixed pseudo-random
// weights), so no two output elements get the same weight and a transposed
// or mirrored gradient cannot pass by symmetry.
#include "gradcheck.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/random.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <stdexcept>

namespace stepc {
namespace {

constexpr DType F64 = DType::F64;
constexpr uint64_t kWeightSeed = 0x5eed0f1055ull;

// How a floating-point input's values are drawn.
enum class Draw {
  Smooth,   // uniform in [-1, 1): ops smooth everywhere
  Positive, // uniform in [0.5, 2): log, sqrt, rsqrt, pow bases, divisors
  // Magnitudes from 0.2 up, random signs, pairwise at least 1e-2 apart across
  // every Distinct input of the case: relu/abs stay off 0 and max/min/pooling
  // never tie, so the function is smooth within the finite-difference step.
  Distinct,
};

// A sequential stream of counter-based random numbers.
class Stream {
public:
  explicit Stream(uint64_t seed) : seed_(seed) {}
  uint64_t bits() { return randomBits(seed_, counter_++); }
  double uniform(double low, double high) {
    return low + (high - low) * randomUniform(seed_, counter_++);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(bits() % static_cast<uint64_t>(n)); }

private:
  uint64_t seed_;
  uint64_t counter_ = 0;
};

std::vector<double> distinctValues(int64_t n, Stream &rng) {
  double spacing = std::max(0.8 / static_cast<double>(n), 0.015);
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    double magnitude = 0.2 + spacing * (static_cast<double>(k) + 0.3 * rng.uniform(0, 1));
    values[k] = (rng.bits() & 1) ? magnitude : -magnitude;
  }
  for (int64_t i = n - 1; i > 0; --i) // Fisher-Yates
    std::swap(values[i], values[rng.below(i + 1)]);
  return values;
}

// Fills a non-float input; gets its own seed.
using Fill = std::function<Tensor(const TensorType &, uint64_t seed)>;

// Labels (or indices) drawn in [0, n).
Fill labelsBelow(int64_t n) {
  return [n](const TensorType &type, uint64_t seed) {
    Stream rng(seed);
    Tensor t(type);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.setReal(i, static_cast<double>(rng.below(n)));
    return t;
  };
}

// Indices in [0, n); the last repeats the first, so a gather's gradient has to
// accumulate (scatter-add) rather than overwrite.
Fill indicesBelow(int64_t n) {
  return [n](const TensorType &type, uint64_t seed) {
    Tensor t = labelsBelow(n)(type, seed);
    if (t.numel() >= 2)
      t.setReal(t.numel() - 1, t.real(0));
    return t;
  };
}

// A dropout seed: any i64, fixed for the whole check.
Tensor anySeed(const TensorType &type, uint64_t seed) {
  Tensor t(type);
  t.data<int64_t>()[0] = static_cast<int64_t>(randomBits(seed, 0) >> 1);
  return t;
}

// A random mask with at least one true and one false, so both branches of a
// select are exercised.
Tensor someTrue(const TensorType &type, uint64_t seed) {
  Stream rng(seed);
  Tensor t(type);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.setReal(i, static_cast<double>(rng.bits() & 1));
  if (t.numel() >= 2) {
    t.setReal(0, 1);
    t.setReal(1, 0);
  }
  return t;
}

struct PointSpec {
  Draw draw = Draw::Smooth;            // for float inputs not named below
  std::map<std::string, Draw> draws{}; // per float input
  std::map<std::string, Fill> fills{}; // every non-float input
};

PointSpec distinct() { return {.draw = Draw::Distinct}; }

std::function<TensorMap(const Graph &, uint64_t)> pointFrom(PointSpec spec) {
  return [spec = std::move(spec)](const Graph &graph, uint64_t seed) {
    Stream rng(seed);
    TensorMap out;
    std::vector<Tensor *> pooled; // Distinct inputs share one pool of values
    int64_t pooledCount = 0;
    for (ValueId id : graph.inputs()) {
      const Node &node = graph.node(id);
      if (auto fill = spec.fills.find(node.name); fill != spec.fills.end()) {
        out[node.name] = fill->second(node.type, rng.bits());
        continue;
      }
      if (!isFloat(node.type.dtype))
        throw std::logic_error(
            fmt::format("gradcheck case '{}': input '{}' of type {} needs a fill", graph.name,
                        node.name, typeString(node.type)));
      auto named = spec.draws.find(node.name);
      Draw draw = named != spec.draws.end() ? named->second : spec.draw;
      Tensor &t = out[node.name] = Tensor(node.type);
      for (int64_t i = 0; draw != Draw::Distinct && i < t.numel(); ++i)
        t.setReal(i, draw == Draw::Smooth ? rng.uniform(-1, 1) : rng.uniform(0.5, 2));
      if (draw == Draw::Distinct) {
        pooled.push_back(&t);
        pooledCount += t.numel();
      }
    }
    std::vector<double> values = distinctValues(pooledCount, rng);
    size_t next = 0;
    for (Tensor *t : pooled)
      for (int64_t i = 0; i < t->numel(); ++i)
        t->setReal(i, values[next++]);
    return out;
  };
}

// loss = sum(y * w) with fixed weights in +-[0.25, 1).
Value weightedSum(Value y) {
  GraphBuilder &b = *y.builder();
  std::vector<double> w(static_cast<size_t>(y.type().numel()));
  for (size_t i = 0; i < w.size(); ++i) {
    double magnitude = 0.25 + 0.75 * randomUniform(kWeightSeed, 2 * i);
    w[i] = (randomBits(kWeightSeed, 2 * i + 1) & 1) ? magnitude : -magnitude;
  }
  Value weighted = y * constantData(b, std::move(w), y.dtype(), y.shape());
  return y.rank() == 0 ? weighted : sum(weighted);
}

Value in(GraphBuilder &b, const std::string &name, Shape shape) {
  return b.input(name, F64, std::move(shape));
}

std::string shapeTag(const Shape &shape) {
  if (shape.empty())
    return "scalar";
  std::string out;
  for (int64_t d : shape)
    out += (out.empty() ? "" : "x") + std::to_string(d);
  return out;
}

using Body = std::function<Value(GraphBuilder &)>;

class CaseList {
public:
  void add(const std::string &name, const std::string &op, Body body, PointSpec spec = {}) {
    cases_.push_back({name, op,
                      [name, body] {
                        GraphBuilder b(name);
                        b.output("loss", weightedSum(body(b)));
                        return b.finish();
                      },
                      pointFrom(std::move(spec))});
  }
  std::vector<GradcheckCase> take() { return std::move(cases_); }

private:
  std::vector<GradcheckCase> cases_;
};

Value opNode(GraphBuilder &b, OpKind kind, std::vector<Value> operands, Attrs attrs) {
  return b.op(kind, std::move(operands), std::move(attrs), SourceLoc{});
}

Attrs convAttrs(std::vector<int64_t> stride, std::vector<int64_t> padding,
                std::vector<int64_t> dilation, int64_t groups) {
  return {{"stride", stride}, {"padding", padding}, {"dilation", dilation}, {"groups", groups}};
}

void addUnary(CaseList &cases) {
  struct Unary {
    const char *op;
    Value (*fn)(Value, Loc);
    Draw draw;
  };
  const Unary unaries[] = {
      {"neg", neg, Draw::Smooth},         {"abs", abs, Draw::Distinct},
      {"exp", exp, Draw::Smooth},         {"log", log, Draw::Positive},
      {"sqrt", sqrt, Draw::Positive},     {"rsqrt", rsqrt, Draw::Positive},
      {"square", square, Draw::Smooth},   {"tanh", tanh, Draw::Smooth},
      {"sigmoid", sigmoid, Draw::Smooth}, {"relu", relu, Draw::Distinct},
      {"sin", sin, Draw::Smooth},         {"cos", cos, Draw::Smooth},
      {"erf", erf, Draw::Smooth},
  };
  for (const Unary &u : unaries)
    cases.add(u.op, u.op,
              [fn = u.fn](GraphBuilder &b) {
                return fn(in(b, "x", {3, 4}), Loc::current());
              },
              {.draw = u.draw});

  // gradcheck runs everything in f64, so a float round trip is checked as
  // cast f64 -> f64; the integer factor's cast must stay out of the gradient.
  cases.add("cast_float_round_trip", "cast", [](GraphBuilder &b) {
    Value x = in(b, "x", {3, 4});
    return cast(tanh(cast(x, DType::F32)), F64);
  });
  cases.add("cast_with_integer_factor", "cast",
            [](GraphBuilder &b) {
              Value x = in(b, "x", {3, 4});
              Value k = b.input("k", DType::I32, {3, 4});
              return cast(x, F64) * cast(k, F64);
            },
            {.fills = {{"k", labelsBelow(5)}}});
}

void addBinary(CaseList &cases) {
  struct Binary {
    const char *op;
    Value (*fn)(Value, Value, Loc);
    PointSpec spec;
  };
  const Binary binaries[] = {
      {"add", add, {}},
      {"sub", sub, {}},
      {"mul", mul, {}},
      {"div", div, {.draws = {{"b", Draw::Positive}}}},
      {"pow", pow, {.draws = {{"a", Draw::Positive}}}},
      {"maximum", maximum, distinct()},
      {"minimum", minimum, distinct()},
  };
  const std::pair<Shape, Shape> shapes[] = {
      {{3, 4}, {3, 4}}, {{3, 1}, {1, 4}}, {{2, 3}, {3}}, {{}, {2, 3}}, {{2, 3}, {}}};
  for (const Binary &op : binaries)
    for (const auto &[sa, sb] : shapes)
      cases.add(
          fmt::format("{}_{}_{}", op.op, shapeTag(sa), shapeTag(sb)), op.op,
          [fn = op.fn, sa, sb](GraphBuilder &b) {
            return fn(in(b, "a", sa), in(b, "b", sb), Loc::current());
          },
          op.spec);
  // Both operands the same value: the two contributions are summed.
  cases.add("mul_same_operand", "mul", [](GraphBuilder &b) {
    Value x = in(b, "x", {2, 3});
    return x * x;
  });

  cases.add(
      "select_2x3", "select",
      [](GraphBuilder &b) {
        return select(b.input("cond", DType::Bool, {2, 3}), in(b, "a", {2, 3}), in(b, "b", {2, 3}));
      },
      {.fills = {{"cond", someTrue}}});
  cases.add(
      "select_broadcast", "select",
      [](GraphBuilder &b) {
        return select(b.input("cond", DType::Bool, {2, 1}), in(b, "a", {1, 3}), in(b, "b", {}));
      },
      {.fills = {{"cond", someTrue}}});
}

void addReductions(CaseList &cases) {
  struct Reduction {
    const char *op;
    Value (*fn)(Value, Axes, bool, Loc);
    Draw draw;
  };
  const Reduction reductions[] = {{"reduce_sum", sum, Draw::Smooth},
                                  {"reduce_mean", mean, Draw::Smooth},
                                  {"reduce_max", max, Draw::Distinct},
                                  {"reduce_min", min, Draw::Distinct}};
  const std::pair<Axes, bool> axesCases[] = {
      {{1}, false}, {{0, 2}, true}, {{-1}, true}, {Axes::all(), false}};
  for (const Reduction &r : reductions)
    for (const auto &[axes, keep] : axesCases) {
      std::string tag = axes.isAll() ? "all" : "";
      for (int64_t a : axes.list())
        tag +=
            (tag.empty() ? "axes" : "_") + (a < 0 ? "m" + std::to_string(-a) : std::to_string(a));
      cases.add(fmt::format("{}_{}{}", r.op, tag, keep ? "_keepdims" : ""), r.op,
                [fn = r.fn, axes, keep](GraphBuilder &b) {
                  return fn(in(b, "x", {2, 3, 4}), axes, keep, Loc::current());
                },
                {.draw = r.draw});
    }
}

void addDataMovement(CaseList &cases) {
  const std::pair<Shape, Shape> matmuls[] = {
      {{3, 4}, {4, 5}},
      {{2, 3, 4}, {2, 4, 5}},
      {{2, 1, 3, 4}, {3, 4, 2}}, // batch dims [2,1] x [3] -> [2,3]
      {{3, 4}, {2, 4, 5}},
  };
  for (const auto &[sa, sb] : matmuls)
    cases.add(fmt::format("matmul_{}_{}", shapeTag(sa), shapeTag(sb)), "matmul",
              [sa, sb](GraphBuilder &b) { return matmul(in(b, "a", sa), in(b, "b", sb)); });

  cases.add("transpose_3d", "transpose", [](GraphBuilder &b) {
    return transpose(in(b, "x", {2, 3, 4}), {2, 0, 1});
  });
  cases.add("transpose_2d", "transpose", [](GraphBuilder &b) {
    return transpose(in(b, "x", {3, 4}), {1, 0});
  });

  cases.add("reshape", "reshape", [](GraphBuilder &b) {
    return reshape(in(b, "x", {2, 3, 4}), {4, 6});
  });
  cases.add("reshape_inferred", "reshape", [](GraphBuilder &b) {
    return reshape(in(b, "x", {2, 3, 4}), {-1, 2});
  });

  const std::pair<Shape, Shape> broadcasts[] = {{{3, 1}, {2, 3, 4}}, {{}, {2, 3}}, {{4}, {3, 4}}};
  for (const auto &[from, to] : broadcasts)
    cases.add(fmt::format("broadcast_to_{}_{}", shapeTag(from), shapeTag(to)), "broadcast_to",
              [from, to](GraphBuilder &b) { return broadcastTo(in(b, "x", from), to); });

  cases.add("slice_contiguous", "slice", [](GraphBuilder &b) {
    return slice(in(b, "x", {4, 5}), {1, 1}, {3, 5}, {1, 1});
  });
  cases.add("slice_strided", "slice", [](GraphBuilder &b) {
    return slice(in(b, "x", {5, 6}), {1, 0}, {5, 6}, {2, 3});
  });
  // Limits that are not a whole number of strides past the start.
  cases.add("slice_strided_ragged", "slice", [](GraphBuilder &b) {
    return slice(in(b, "x", {2, 5, 7}), {0, 1, 2}, {2, 4, 7}, {1, 2, 2});
  });

  cases.add("concat_axis0", "concat", [](GraphBuilder &b) {
    return concat({in(b, "a", {2, 3}), in(b, "b", {1, 3}), in(b, "c", {3, 3})}, 0);
  });
  cases.add("concat_last_axis", "concat", [](GraphBuilder &b) {
    return concat({in(b, "a", {2, 2}), in(b, "b", {2, 3})}, -1);
  });
  cases.add("concat_same_operand", "concat", [](GraphBuilder &b) {
    Value x = in(b, "x", {2, 3});
    return concat({x, in(b, "y", {2, 1}), x}, 1);
  });

  cases.add("pad", "pad", [](GraphBuilder &b) {
    return pad(in(b, "x", {2, 3}), {1, 0}, {0, 2}, 0.0);
  });
  cases.add("pad_value", "pad", [](GraphBuilder &b) {
    return pad(in(b, "x", {3, 2}), {0, 2}, {1, 1}, 0.75);
  });
  cases.add("pad_interior", "pad", [](GraphBuilder &b) {
    return opNode(b, OpKind::Pad, {in(b, "x", {3, 4})},
                  {{"low", std::vector<int64_t>{1, 2}},
                   {"high", std::vector<int64_t>{2, 0}},
                   {"interior", std::vector<int64_t>{1, 2}},
                   {"value", 0.5}});
  });

  cases.add("gather_embedding", "gather",
            [](GraphBuilder &b) {
              return gather(in(b, "table", {5, 3}), b.input("ids", DType::I32, {2, 4}), 0);
            },
            {.fills = {{"ids", indicesBelow(5)}}});
  cases.add("gather_axis1", "gather",
            [](GraphBuilder &b) {
              return gather(in(b, "x", {3, 6}), b.input("ids", DType::I64, {4}), 1);
            },
            {.fills = {{"ids", indicesBelow(6)}}});
  cases.add("gather_scalar_index", "gather",
            [](GraphBuilder &b) {
              return gather(in(b, "x", {4, 3}), b.input("ids", DType::I64, {}), -2);
            },
            {.fills = {{"ids", indicesBelow(4)}}});

  cases.add("scatter_add_axis0", "scatter_add",
            [](GraphBuilder &b) {
              return opNode(b, OpKind::ScatterAdd,
                            {b.input("ids", DType::I32, {2, 4}), in(b, "updates", {2, 4, 3})},
                            {{"axis", int64_t(0)}, {"size", int64_t(5)}});
            },
            {.fills = {{"ids", indicesBelow(5)}}});
  cases.add("scatter_add_axis1", "scatter_add",
            [](GraphBuilder &b) {
              return opNode(b, OpKind::ScatterAdd,
                            {b.input("ids", DType::I64, {4}), in(b, "updates", {3, 4})},
                            {{"axis", int64_t(1)}, {"size", int64_t(6)}});
            },
            {.fills = {{"ids", indicesBelow(6)}}});
}

void addConvolution(CaseList &cases) {
  struct Conv {
    const char *name;
    Shape x, w;
    Conv2dOptions options;
  };
  const Conv convs[] = {
      {"conv2d_basic", {2, 2, 5, 5}, {3, 2, 3, 3}, {}},
      {"conv2d_stride2_pad1", {1, 2, 6, 6}, {3, 2, 3, 3}, {.stride = {2, 2}, .padding = {1, 1}}},
      {"conv2d_dilation2", {1, 2, 7, 7}, {2, 2, 3, 3}, {.padding = {1, 1}, .dilation = {2, 2}}},
      {"conv2d_groups2", {1, 4, 5, 5}, {4, 2, 3, 3}, {.padding = {1, 1}, .groups = 2}},
      {"conv2d_depthwise", {1, 3, 5, 5}, {3, 1, 3, 3}, {.stride = {2, 1}, .groups = 3}},
      {"conv2d_asymmetric",
       {1, 2, 5, 6},
       {2, 2, 2, 3},
       {.stride = {1, 2}, .padding = {0, 1}, .dilation = {2, 1}}},
  };
  for (const Conv &c : convs)
    cases.add(c.name, "conv2d",
              [c](GraphBuilder &b) { return conv2d(in(b, "x", c.x), in(b, "w", c.w), c.options); });

  // The transposed convolutions the conv2d VJP emits, on their own.
  struct ConvGrad {
    const char *name;
    OpKind op;
    Shape first, second; // (g, w) of conv2d_grad_input, (x, g) of conv2d_grad_weight
    std::vector<int64_t> stride, dilation;
    int64_t groups;
    std::vector<int64_t> size; // input_hw of conv2d_grad_input, kernel of conv2d_grad_weight
  };
  const ConvGrad convGrads[] = {
      {"conv2d_grad_input_stride2", OpKind::Conv2dGradInput, {1, 3, 3, 3}, {3, 2, 3, 3},
       {2, 2}, {1, 1}, 1, {6, 6}},
      {"conv2d_grad_input_groups_dilation", OpKind::Conv2dGradInput, {1, 4, 3, 3},
       {4, 2, 3, 3}, {1, 1}, {2, 2}, 2, {5, 5}},
      {"conv2d_grad_weight_stride2", OpKind::Conv2dGradWeight, {1, 2, 6, 6}, {1, 3, 3, 3},
       {2, 2}, {1, 1}, 1, {3, 3}},
      {"conv2d_grad_weight_groups_dilation", OpKind::Conv2dGradWeight, {1, 4, 5, 5},
       {1, 4, 3, 3}, {1, 1}, {2, 2}, 2, {3, 3}},
  };
  for (const ConvGrad &c : convGrads) {
    bool input = c.op == OpKind::Conv2dGradInput;
    cases.add(c.name, input ? "conv2d_grad_input" : "conv2d_grad_weight", [c, input](GraphBuilder &b) {
      Attrs attrs = convAttrs(c.stride, {1, 1}, c.dilation, c.groups);
      attrs.set(input ? "input_hw" : "kernel", c.size);
      return opNode(b, c.op, {in(b, input ? "g" : "x", c.first), in(b, input ? "w" : "g", c.second)},
                    attrs);
    });
  }
  // Double backward: the loss is built from conv2d's own gradients, so its
  // gradient runs the VJPs of conv2d_grad_input and conv2d_grad_weight.
  cases.add("conv2d_double_backward", "conv2d_grad_input", [](GraphBuilder &b) {
    Value x = in(b, "x", {1, 2, 5, 5}), w = in(b, "w", {3, 2, 3, 3});
    Value y = conv2d(x, w, {.stride = {2, 2}, .padding = {1, 1}});
    std::vector<Value> g = gradients(weightedSum(square(y)), {x, w});
    return weightedSum(g[0]) + weightedSum(square(g[1]));
  });
  cases.add("conv2d_double_backward_groups", "conv2d_grad_weight", [](GraphBuilder &b) {
    Value x = in(b, "x", {1, 4, 4, 4}), w = in(b, "w", {2, 2, 2, 2});
    Value y = conv2d(x, w, {.dilation = {2, 1}, .groups = 2});
    std::vector<Value> g = gradients(weightedSum(tanh(y)), {x, w});
    return weightedSum(square(g[0])) + weightedSum(g[1]);
  });

  struct Pool {
    const char *name;
    Shape x;
    Pool2dOptions options;
  };
  const Pool maxPools[] = {
      {"max_pool2d_2x2", {2, 2, 4, 5}, {}},
      {"max_pool2d_overlap_pad",
       {1, 2, 5, 5},
       {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}},
      {"max_pool2d_rect", {1, 1, 6, 7}, {.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}}},
  };
  for (const Pool &p : maxPools)
    cases.add(
        p.name, "max_pool2d",
        [p](GraphBuilder &b) { return maxPool2d(in(b, "x", p.x), p.options); }, distinct());
  const Pool avgPools[] = {
      {"avg_pool2d_2x2", {2, 2, 4, 4}, {}},
      {"avg_pool2d_pad_include",
       {1, 2, 5, 5},
       {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .countIncludePad = true}},
      {"avg_pool2d_pad_exclude",
       {1, 2, 5, 5},
       {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .countIncludePad = false}},
      {"avg_pool2d_rect_exclude",
       {1, 1, 6, 7},
       {.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}, .countIncludePad = false}},
  };
  for (const Pool &p : avgPools)
    cases.add(p.name, "avg_pool2d",
              [p](GraphBuilder &b) { return avgPool2d(in(b, "x", p.x), p.options); });
  for (int64_t include : {1, 0})
    cases.add(include ? "avg_pool2d_grad_pad_include" : "avg_pool2d_grad_pad_exclude",
              "avg_pool2d_grad", [include](GraphBuilder &b) {
                return opNode(b, OpKind::AvgPool2dGrad, {in(b, "g", {1, 2, 3, 3})},
                              {{"input_hw", std::vector<int64_t>{5, 5}},
                               {"kernel", std::vector<int64_t>{3, 3}},
                               {"stride", std::vector<int64_t>{2, 2}},
                               {"padding", std::vector<int64_t>{1, 1}},
                               {"count_include_pad", include}});
              });

  cases.add("dropout", "dropout",
            [](GraphBuilder &b) {
              return dropout(in(b, "x", {4, 5}), b.input("seed", DType::I64, {}), 0.3);
            },
            {.fills = {{"seed", anySeed}}});
  // One process: the identity, so its VJP (an all_reduce of the cotangent)
  // must be the identity too.
  cases.add("all_reduce_mean", "all_reduce",
            [](GraphBuilder &b) { return allReduce(tanh(in(b, "x", {3, 7})), "mean"); });
  cases.add("all_reduce_sum", "all_reduce",
            [](GraphBuilder &b) { return allReduce(in(b, "x", {5}), "sum"); });
}

void addComposites(CaseList &cases) {
  // The max subtracted inside softmax must not tie: Distinct.
  for (int64_t axis : {-1, 0}) {
    std::string tag = axis < 0 ? "last_axis" : fmt::format("axis{}", axis);
    cases.add(
        "softmax_" + tag, "softmax",
        [axis](GraphBuilder &b) {
          return softmax(in(b, "x", {3, 4}), axis);
        },
        distinct());
    cases.add(
        "log_softmax_" + tag, "log_softmax",
        [axis](GraphBuilder &b) {
          return logSoftmax(in(b, "x", {3, 4}), axis);
        },
        distinct());
  }
  cases.add("cross_entropy", "cross_entropy",
            [](GraphBuilder &b) {
              return crossEntropy(in(b, "logits", {4, 5}), b.input("labels", DType::I32, {4}));
            },
            {.draw = Draw::Distinct, .fills = {{"labels", labelsBelow(5)}}});
  cases.add("layer_norm", "layer_norm", [](GraphBuilder &b) {
    return layerNorm(in(b, "x", {3, 5}), in(b, "gamma", {5}), in(b, "beta", {5}));
  });
  cases.add("layer_norm_no_affine", "layer_norm", [](GraphBuilder &b) {
    return layerNorm(in(b, "x", {2, 2, 4}), Value(), Value());
  });
  for (bool causal : {false, true})
    cases.add(causal ? "attention_causal" : "attention", "attention", [causal](GraphBuilder &b) {
      return attention(in(b, "q", {2, 3, 4}), in(b, "k", {2, 3, 4}), in(b, "v", {2, 3, 4}), causal);
    });
  cases.add("attention_cross", "attention", [](GraphBuilder &b) {
    return attention(in(b, "q", {2, 3, 4}), in(b, "k", {2, 5, 4}), in(b, "v", {2, 5, 2}), false);
  });
  cases.add("gelu", "gelu", [](GraphBuilder &b) { return gelu(in(b, "x", {3, 4}) * 2.0); });
  cases.add(
      "leaky_relu", "leaky_relu",
      [](GraphBuilder &b) {
        return leakyRelu(in(b, "x", {3, 4}), 0.1);
      },
      distinct());
  cases.add("mse", "mse", [](GraphBuilder &b) {
    return mse(in(b, "prediction", {3, 4}), in(b, "target", {3, 4}));
  });
  cases.add("linear", "linear", [](GraphBuilder &b) {
    return linear(in(b, "x", {3, 4}), in(b, "w", {4, 2}), in(b, "b", {2}));
  });
  cases.add("linear_batched_no_bias", "linear", [](GraphBuilder &b) {
    return linear(in(b, "x", {2, 3, 4}), in(b, "w", {4, 5}), Value());
  });
}

constexpr GradcheckExclusion kExclusions[] = {
    {"max_pool2d_grad",
     "second derivatives through max_pool2d are not supported: its VJP throws for the "
     "incoming gradient, and the one for x is zero almost everywhere"},
};

} // namespace

const std::vector<GradcheckCase> &gradcheckCases() {
  static const std::vector<GradcheckCase> cases = [] {
    CaseList list;
    addUnary(list);
    addBinary(list);
    addReductions(list);
    addDataMovement(list);
    addConvolution(list);
    addComposites(list);
    return list.take();
  }();
  return cases;
}

std::span<const GradcheckExclusion> gradcheckExclusions() { return kExclusions; }

} // namespace stepc
