// The shape sweep (issue 12): configurations of every root kind drawn at
// realistic sizes (up to a few MB a tensor) from seeds, each built with its
// gradients (or as a training step), compiled fused and unfused and compared
// with the reference interpreter. The normal run draws from a fixed list of
// seeds; ShapeSweepFresh draws from a fresh one (CTest label sweep-fresh),
// printed so that STEPC_SWEEP_SEED=<seed> replays it. Every configuration is
// printed before it runs. Regressions the sweep or the issue found follow.
#include "codegen_harness.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace stepc;
using stepc::testing::CompareOptions;
using stepc::testing::expectMatchesInterpreter;

namespace {

// One drawn graph: its builder, rng, the data it is fed, the values whose
// gradients it checks, and the terms of a loss that reaches all of them.
struct Sweep {
  explicit Sweep(const std::string &family, uint64_t seed)
      : b(family), rng(seed), family(family) {}

  GraphBuilder b;
  std::mt19937_64 rng;
  std::string family;
  TensorMap inputs, params;
  std::vector<Value> wrt, lossTerms;
  std::vector<std::string> configs;
  int outputs = 0;

  int64_t dim(int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(rng);
  }
  bool coin() { return dim(0, 1) == 1; }
  template <class T> T pick(const std::vector<T> &from) {
    return from[static_cast<size_t>(dim(0, static_cast<int64_t>(from.size()) - 1))];
  }
  // A size around the register tiles' edges (8 rows, 16 and 32 columns) or
  // anywhere in [1, high].
  int64_t size(int64_t high) {
    std::vector<int64_t> edges;
    for (int64_t e : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256})
      if (e <= high)
        edges.push_back(e);
    return coin() ? pick(edges) : dim(1, high);
  }
  Tensor random(DType dtype, const Shape &shape, double low, double high) {
    return stepc::testing::randomTensor(dtype, shape, rng(), low, high);
  }
  // A float input in [-scale, scale), its gradient checked.
  Value data(const Shape &shape, double scale = 1, DType dtype = DType::F32) {
    std::string name = fmt::format("x{}", inputs.size());
    Value v = b.input(name, dtype, shape);
    inputs[name] = random(dtype, shape, -scale, scale);
    wrt.push_back(v);
    return v;
  }
  // A float param, scaled by 1/sqrt(fan_in) as initializers do, so that
  // long sums stay O(1) and their rounding within the harness's tolerance.
  Value weight(const Shape &shape, int64_t fanIn, DType dtype = DType::F32) {
    std::string name = fmt::format("w{}", params.size());
    Value v = b.param(name, dtype, shape, Init::zeros());
    double scale = 1 / std::sqrt(static_cast<double>(std::max<int64_t>(fanIn, 1)));
    params[name] = random(dtype, shape, -scale, scale);
    wrt.push_back(v);
    return v;
  }
  // Integer indices in [0, bound).
  Value indices(DType dtype, const Shape &shape, int64_t bound) {
    std::string name = fmt::format("i{}", inputs.size());
    Value v = b.input(name, dtype, shape);
    inputs[name] = random(dtype, shape, 0, static_cast<double>(bound));
    return v;
  }
  // An output, and (if `differentiate`) a term of the loss: the sum of the
  // value times random weights, so that each gradient element differs.
  void out(const std::string &config, Value v, bool differentiate = true) {
    std::string name = fmt::format("out{}", outputs++);
    configs.push_back(fmt::format("{}: {} -> {}", name, config, typeString(v.type())));
    b.output(name, v);
    TensorType t = v.type(); // a copy: adding nodes moves the graph's storage
    if (!isFloat(t.dtype) || !differentiate)
      return;
    std::string weights = fmt::format("r{}", inputs.size());
    Value r = b.input(weights, t.dtype, t.shape);
    double scale = 1 / std::sqrt(static_cast<double>(std::max<int64_t>(t.numel(), 1)));
    inputs[weights] = random(t.dtype, t.shape, -scale, scale);
    Value term = sum(v * r);
    lossTerms.push_back(t.dtype == DType::F32 ? term : cast(term, DType::F32));
  }

  // Adds the gradients of the loss terms (outputs grad_<k>), then compares
  // the compiled graph with the interpreter.
  void check() {
    std::vector<Value> grads;
    if (!lossTerms.empty()) {
      Value loss = lossTerms.front();
      for (size_t k = 1; k < lossTerms.size(); ++k)
        loss = loss + lossTerms[k];
      b.output("loss", loss);
      grads = gradients(loss, wrt);
      for (size_t k = 0; k < grads.size(); ++k)
        b.output(fmt::format("grad_{}", b.graph().node(wrt[k].id()).name), grads[k]);
    }
    run(b.finish(), inputs, params, {});
  }

  void run(const Graph &graph, const TensorMap &in, const TensorMap &p,
           CompareOptions options) {
    std::string text = fmt::format("{} ({} configurations):\n  {}", family, configs.size(),
                                   fmt::join(configs, "\n  "));
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
    SCOPED_TRACE(text);
    // Three threads: more than the cores here and an odd count, so rows
    // split unevenly among the parallel calls.
    options.threads = 3;
    expectMatchesInterpreter(graph, in, p, options);
  }
};

// --- The families ------------------------------------------------------------------

// matmul in every layout and batch form its shape rule accepts: fifteen
// forms, a third of them per seed (seed % 3 picks which), so that the three
// fixed seeds cover each once and a compile stays a few seconds.
void matmuls(Sweep &s, uint64_t seed) {
  int64_t m = s.size(256), k = s.size(256), n = s.size(256);
  // Rank-N x rank-2 and batched forms, smaller.
  int64_t bm = s.size(48), bk = s.size(64), bn = s.size(48), b1 = s.dim(1, 4), b2 = s.dim(2, 3);
  auto plain = [&](const char *form, Value a, Value b) {
    s.out(fmt::format("matmul {} {} x {}", form, shapeString(a.shape()), shapeString(b.shape())),
          matmul(a, b));
  };
  const std::vector<std::function<void()>> forms = {
      [&] { plain("rank-2", s.data({m, k}), s.weight({k, n}, k)); },
      // Operands produced by transpose: one stored [1,0] transpose is read in
      // place, the other materialized.
      [&] { plain("A^T", transpose(s.data({k, m}), {1, 0}), s.weight({k, n}, k)); },
      [&] { plain("B^T", s.data({m, k}), transpose(s.weight({n, k}, k), {1, 0})); },
      [&] {
        plain("A^T B^T", transpose(s.data({k, m}), {1, 0}),
              transpose(s.weight({n, k}, k), {1, 0}));
      },
      // A transpose computed in the kernel (of an elementwise result).
      [&] { plain("(2A)^T", transpose(s.data({k, m}) * 2.0, {1, 0}), s.weight({k, n}, k)); },
      [&] { plain("rank-3 x rank-2", s.data({b1, bm, bk}), s.weight({bk, bn}, bk)); },
      [&] { plain("rank-4 x rank-2", s.data({b2, b1, bm, bk}), s.weight({bk, bn}, bk)); },
      [&] { plain("rank-2 x rank-3", s.data({bm, bk}), s.weight({b1, bk, bn}, bk)); },
      [&] { plain("batched", s.data({b1, bm, bk}), s.weight({b1, bk, bn}, bk)); },
      [&] { plain("broadcast batch", s.data({b2, 1, bm, bk}), s.weight({1, b1, bk, bn}, bk)); },
      [&] { plain("broadcast rank", s.data({b1, bm, bk}), s.weight({b2, b1, bk, bn}, bk)); },
      [&] {
        plain("batched, A^T", transposeLast2(s.data({b1, bk, bm})), s.weight({b1, bk, bn}, bk));
      },
      [&] {
        plain("batched, B^T", s.data({b1, bm, bk}), transposeLast2(s.weight({b1, bn, bk}, bk)));
      },
      // f64 takes the generic path.
      [&] {
        plain("rank-2 f64", s.data({bm, bk}, 1, DType::F64), s.weight({bk, bn}, bk, DType::F64));
      },
      // An epilogue on the register tile: bias and relu.
      [&] {
        Value a = s.data({m, k}), b = s.weight({k, n}, k), bias = s.weight({n}, 1);
        s.out(fmt::format("relu(matmul {} x {} + bias)", shapeString(a.shape()),
                          shapeString(b.shape())),
              relu(matmul(a, b) + bias));
      },
  };
  for (size_t f = seed % 3; f < forms.size(); f += 3)
    forms[f]();
}

// conv2d with stride, padding, dilation and groups, channels up to 128; its
// gradients are conv2d_grad_input and conv2d_grad_weight.
void convolutions(Sweep &s) {
  for (int variant = 0; variant < 3; ++variant) {
    // 0: one group, many channels (im2col; its col buffer above or below
    // 1 MB); 1: groups (depthwise at times); 2: anything.
    int64_t groups = 1, c, o;
    if (variant == 0) {
      c = s.pick<int64_t>({16, 32, 64, 96, 128});
      o = s.pick<int64_t>({16, 33, 64, 128});
    } else {
      groups = s.pick<int64_t>({2, 3, 4, 8});
      bool depthwise = variant == 1 && s.coin();
      c = groups * (depthwise ? 1 : s.dim(1, 16));
      o = groups * s.dim(1, 16);
    }
    int64_t kh = s.dim(1, 5), kw = s.coin() ? kh : s.dim(1, 5);
    std::vector<int64_t> stride{s.dim(1, 3), s.dim(1, 3)}, padding{s.dim(0, 2), s.dim(0, 2)},
        dilation{s.pick<int64_t>({1, 1, 2}), s.pick<int64_t>({1, 1, 2})};
    int64_t minH = std::max<int64_t>(1, (kh - 1) * dilation[0] + 1 - 2 * padding[0]);
    int64_t minW = std::max<int64_t>(1, (kw - 1) * dilation[1] + 1 - 2 * padding[1]);
    int64_t h = s.dim(minH, 32), w = s.dim(minW, 32), oh, ow, macs;
    // The interpreter's work stays near 8M multiply-adds: a smaller image
    // where one sample takes more, else the batch that takes that many.
    for (;;) {
      oh = (h + 2 * padding[0] - (kh - 1) * dilation[0] - 1) / stride[0] + 1;
      ow = (w + 2 * padding[1] - (kw - 1) * dilation[1] - 1) / stride[1] + 1;
      macs = o * oh * ow * (c / groups) * kh * kw;
      if (macs <= 8'000'000 || (h == minH && w == minW))
        break;
      h = std::max(minH, h * 3 / 4);
      w = std::max(minW, w * 3 / 4);
    }
    int64_t n = std::clamp<int64_t>(8'000'000 / std::max<int64_t>(macs, 1), 1, 16);
    Value x = s.data({n, c, h, w});
    Value wt = s.weight({o, c / groups, kh, kw}, c / groups * kh * kw);
    Conv2dOptions options{stride, padding, dilation, groups};
    std::string config = fmt::format("conv2d x[{},{},{},{}] w[{},{},{},{}] stride {} padding {} "
                                     "dilation {} groups {}",
                                     n, c, h, w, o, c / groups, kh, kw, stride, padding, dilation,
                                     groups);
    Value y = conv2d(x, wt, options);
    if (variant == 2) {
      Value bias = s.weight({o, 1, 1}, 1);
      s.out("relu(" + config + " + bias)", relu(y + bias));
    } else {
      s.out(config, y);
    }
  }
}

// max and average pools and their gradients.
void pools(Sweep &s) {
  for (bool isMax : {true, false}) {
    for (int variant = 0; variant < 2; ++variant) {
      int64_t kh = s.dim(1, 4), kw = s.coin() ? kh : s.dim(1, 4);
      Pool2dOptions options;
      options.kernel = {kh, kw};
      options.stride = {s.dim(1, 3), s.dim(1, 3)};
      options.padding = {s.dim(0, kh / 2), s.dim(0, kw / 2)};
      options.countIncludePad = s.coin();
      int64_t n = s.dim(1, 8), c = s.size(64), h = s.dim(kh, 32), w = s.dim(kw, 32);
      Value x = s.data({n, c, h, w});
      std::string config = fmt::format(
          "{} x[{},{},{},{}] kernel {} stride {} padding {}{}", isMax ? "max_pool2d" : "avg_pool2d",
          n, c, h, w, options.kernel, options.stride, options.padding,
          isMax ? "" : options.countIncludePad ? " count_include_pad" : " exclude pad");
      s.out(config, isMax ? maxPool2d(x, options) : avgPool2d(x, options));
    }
  }
}

// Reductions over every nonempty axis set of a tensor (sum), over random
// ones (mean, max, min), with and without keepdims, and argmax over every
// axis.
void reductions(Sweep &s) {
  int64_t rank = s.dim(1, 4);
  // About 1M elements at most.
  Shape shape;
  int64_t budget = 1 << 20;
  for (int64_t d = 0; d < rank; ++d) {
    int64_t left = std::max<int64_t>(1, budget / (d + 1 < rank ? 8 : 1));
    int64_t e = std::min<int64_t>(s.size(rank == 1 ? 4096 : 256), left);
    shape.push_back(e);
    budget = std::max<int64_t>(1, budget / e);
  }
  Value x = s.data(shape);
  auto axesOf = [&](int64_t mask) {
    std::vector<int64_t> axes;
    for (int64_t a = 0; a < rank; ++a)
      if (mask & (int64_t(1) << a))
        axes.push_back(s.coin() ? a : a - rank); // negative axes too
    return axes;
  };
  std::string xs = shapeString(shape);
  // The gradient of one of the sums (each is a broadcast: more would only
  // add compile time).
  int64_t differentiated = s.dim(1, (int64_t(1) << rank) - 1);
  for (int64_t mask = 1; mask < (int64_t(1) << rank); ++mask) {
    std::vector<int64_t> axes = axesOf(mask);
    bool keep = s.coin();
    s.out(fmt::format("reduce_sum {} axes {} keepdims {}", xs, axes, keep), sum(x, axes, keep),
          mask == differentiated);
  }
  for (const char *op : {"reduce_mean", "reduce_max", "reduce_min"}) {
    std::vector<int64_t> axes = axesOf(s.dim(1, (int64_t(1) << rank) - 1));
    bool keep = s.coin();
    std::string config = fmt::format("{} {} axes {} keepdims {}", op, xs, axes, keep);
    std::string name = op;
    s.out(config, name == "reduce_mean"  ? mean(x, axes, keep)
                  : name == "reduce_max" ? max(x, axes, keep)
                                         : min(x, axes, keep));
  }
  for (int64_t a = 0; a < rank; ++a) {
    bool keep = s.coin();
    s.out(fmt::format("argmax {} axis {} keepdims {}", xs, a, keep), argmax(x, a, keep));
  }
}

// gather along each axis (its gradient is scatter_add), and scatter_add of
// floats and integers along axis 0 and an inner axis.
void gathers(Sweep &s) {
  int64_t v = s.size(4096), d = s.size(256), t = s.dim(1, 64), bsz = s.dim(1, 32);
  DType it = s.coin() ? DType::I32 : DType::I64;
  Value table = s.weight({v, d}, 1);
  s.out(fmt::format("gather [{},{}] axis 0 indices [{},{}] {}", v, d, bsz, t, dtypeName(it)),
        gather(table, s.indices(it, {bsz, t}, v), 0));
  int64_t a = s.dim(1, 16), c = s.size(512);
  Value x = s.data({a, c, 8});
  s.out(fmt::format("gather [{},{},8] axis 1 indices [{}] {}", a, c, t, dtypeName(it)),
        gather(x, s.indices(it, {t}, c), 1));
  s.out(fmt::format("gather [{},{},8] axis -1 indices [{},3]", a, c, t),
        gather(x, s.indices(DType::I64, {t, 3}, 8), -1));
  int64_t size = s.size(1024), count = s.size(2048), width = s.size(128);
  s.out(fmt::format("scatter_add updates [{},{}] axis 0 size {}", count, width, size),
        s.b.op(OpKind::ScatterAdd, {s.indices(it, {count}, size), s.data({count, width})},
               {{"axis", int64_t(0)}, {"size", size}}, SourceLoc("sweep", 1, 1)));
  s.out(fmt::format("scatter_add updates [{},{},4] axis 1 size {}", width, count, size),
        s.b.op(OpKind::ScatterAdd, {s.indices(it, {count}, size), s.data({width, count, 4})},
               {{"axis", int64_t(1)}, {"size", size}}, SourceLoc("sweep", 2, 1)));
  Value ints = s.b.input("ints", DType::I32, {count, width});
  s.inputs["ints"] = s.random(DType::I32, {count, width}, -1000, 1000);
  s.out(fmt::format("scatter_add i32 updates [{},{}] axis 0 size {}", count, width, size),
        s.b.op(OpKind::ScatterAdd, {s.indices(it, {count}, size), ints},
               {{"axis", int64_t(0)}, {"size", size}}, SourceLoc("sweep", 3, 1)));
}

// A small conv net's or MLP's training step, two steps, under one of the
// optimizers (seed % 6 picks it: the fixed seeds 1, 2, 3 take SGD, momentum
// and Adam; fresh seeds any).
void optimizers(Sweep &s, uint64_t seed) {
  const Optimizer::Kind kinds[] = {Optimizer::Kind::AdamW,    Optimizer::Kind::Sgd,
                                   Optimizer::Kind::Momentum, Optimizer::Kind::Adam,
                                   Optimizer::Kind::Nesterov, Optimizer::Kind::RmsProp};
  {
    Optimizer::Kind kind = kinds[seed % 6];
    GraphBuilder b(fmt::format("model_{}", optimizerName(kind)));
    int64_t batch = s.dim(1, 32), classes = s.dim(2, 12), hidden = s.size(256);
    std::string config;
    Value x, logits;
    if (s.coin()) {
      int64_t c = s.pick<int64_t>({1, 3, 8}), hw = s.dim(6, 16), f = s.pick<int64_t>({8, 16, 32});
      x = b.input("x", DType::F32, {batch, c, hw, hw});
      Value w1 = b.param("w1", DType::F32, {f, c, 3, 3}, Init::heNormal(s.dim(1, 1000)));
      Value h = relu(conv2d(x, w1, {.padding = {1, 1}}));
      h = maxPool2d(h, {});
      int64_t flat = f * (hw / 2) * (hw / 2);
      Value w2 = b.param("w2", DType::F32, {flat, classes}, Init::xavierUniform(s.dim(1, 1000)));
      logits = matmul(reshape(h, {batch, flat}), w2);
      config = fmt::format("conv {}x{}x{}x{} -> {} -> pool -> {} classes", batch, c, hw, hw, f,
                           classes);
    } else {
      int64_t in = s.size(512);
      x = b.input("x", DType::F32, {batch, in});
      Value w1 = b.param("w1", DType::F32, {in, hidden}, Init::heUniform(s.dim(1, 1000)));
      Value b1 = b.param("b1", DType::F32, {hidden}, Init::zeros());
      Value w2 = b.param("w2", DType::F32, {hidden, classes}, Init::xavierUniform(s.dim(1, 1000)));
      logits = matmul(relu(linear(x, w1, b1)), w2);
      config = fmt::format("mlp {}x{} -> {} -> {} classes", batch, in, hidden, classes);
    }
    Value y = b.input("y", DType::I32, {batch});
    b.output("loss", crossEntropy(logits, y));
    Optimizer optimizer;
    optimizer.kind = kind;
    if (kind == Optimizer::Kind::AdamW)
      optimizer.weightDecay = 0.01;
    else if (s.coin())
      optimizer.weightDecay = 1e-3;
    if (s.coin())
      optimizer.clipNorm = 1;
    Graph step = trainStep(b.finish(), "loss", optimizer);
    TensorMap inputs = randomInputs(step, s.rng());
    double lr = 1e-2;
    inputs.at("lr") = Tensor::scalar(DType::F32, lr);
    inputs.at("y") = s.random(DType::I32, {batch}, 0, static_cast<double>(classes));
    s.configs = {fmt::format("{} train step, {}, weight decay {}, clip norm {}",
                             optimizerName(kind), config, optimizer.weightDecay,
                             optimizer.clipNorm)};
    CompareOptions options;
    options.steps = 2;
    // Adam's and RMSProp's steps divide by sqrt(v) of the gradient itself:
    // where a gradient is near zero, its rounding error (a sum of many
    // terms) becomes the step's (see test_codegen_examples.cpp).
    if (kind == Optimizer::Kind::Adam || kind == Optimizer::Kind::AdamW ||
        kind == Optimizer::Kind::RmsProp)
      options.paramOutliers = {.fraction = 5e-2, .atol = 2 * lr};
    s.run(step, inputs, initialParams(step), options);
  }
}

struct Family {
  const char *name;
  std::function<void(Sweep &, uint64_t seed)> draw;
  bool builds = true; // false: draw() checks its own graphs
};

template <void (*F)(Sweep &)> void ignoringSeed(Sweep &s, uint64_t) { F(s); }

const std::vector<Family> &families() {
  static const std::vector<Family> list = {
      {"matmul", matmuls},
      {"conv2d", ignoringSeed<convolutions>},
      {"pool", ignoringSeed<pools>},
      {"reduction", ignoringSeed<reductions>},
      {"gather_scatter", ignoringSeed<gathers>},
      {"optimizer", optimizers, false},
  };
  return list;
}

void sweep(const Family &family, uint64_t seed) {
  SCOPED_TRACE(fmt::format("family {}, seed {} (replay: STEPC_SWEEP_SEED={} "
                           "--gtest_filter=ShapeSweepFresh.*)",
                           family.name, seed, seed));
  std::printf("== %s, seed %llu\n", family.name, static_cast<unsigned long long>(seed));
  Sweep s(family.name, seed);
  family.draw(s, seed);
  if (family.builds)
    s.check();
}

// The fixed seeds of the normal run.
constexpr uint64_t kSeeds[] = {1, 2, 3};

struct SweepCase {
  size_t family;
  uint64_t seed;
};

void PrintTo(const SweepCase &c, std::ostream *os) {
  *os << families()[c.family].name << " seed " << c.seed;
}

std::vector<SweepCase> allCases() {
  std::vector<SweepCase> cases;
  for (size_t f = 0; f < families().size(); ++f)
    for (uint64_t seed : kSeeds)
      cases.push_back({f, seed});
  return cases;
}

class ShapeSweep : public ::testing::TestWithParam<SweepCase> {};

TEST_P(ShapeSweep, MatchesInterpreterFusedAndUnfused) {
  sweep(families()[GetParam().family], GetParam().seed);
}

INSTANTIATE_TEST_SUITE_P(, ShapeSweep, ::testing::ValuesIn(allCases()), [](const auto &info) {
  return fmt::format("{}_seed{}", families()[info.param.family].name, info.param.seed);
});

// A fresh seed for every family (STEPC_SWEEP_SEED replays one).
TEST(ShapeSweepFresh, EveryFamily) {
  uint64_t seed = 0;
  if (const char *fixed = std::getenv("STEPC_SWEEP_SEED")) {
    seed = std::strtoull(fixed, nullptr, 10);
  } else {
    std::random_device device;
    seed = (uint64_t(device()) << 32) | device();
  }
  std::printf("shape sweep seed %llu (replay: STEPC_SWEEP_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  for (const Family &family : families())
    sweep(family, seed);
}

// --- Regressions -----------------------------------------------------------------

// Issue 12: the conv net's SGD step crashed (stack overflow): the im2col
// buffer (576 x 256 floats) was allocated anew on the stack for each of the
// 16 samples, 9 MB in all. Batch 8 or 32 channels stayed under 8 MB.
TEST(ShapeSweepRegression, ConvNetTrainStepWithLargeIm2colBuffer) {
  Graph model = parseGraph(R"(
    graph t {
      input %x : f32[16,64,16,16]
      input %y : i32[16]
      param %w3 : f32[64,64,3,3] = he_normal(seed=3)
      param %wf : f32[16384,10] = xavier_uniform(seed=4)
      %c3 = conv2d(%x, %w3) {stride=[1,1], padding=[1,1], dilation=[1,1], groups=1}
      %f = reshape(%c3) {shape=[16,16384]}
      %logits = matmul(%f, %wf)
      %loss = cross_entropy(%logits, %y)
      output loss = %loss
    })");
  Graph step = trainStep(model, "loss", Optimizer::sgd());
  TensorMap inputs = randomInputs(step, 12);
  inputs.at("lr") = Tensor::scalar(DType::F32, 0.01);
  expectMatchesInterpreter(step, inputs, initialParams(step));
}

} // namespace
