// The CPU backend, op by op, against the reference interpreter: every op of
// ops.def is compiled fused and unfused on random shapes and data (plus the
// edge values the interpreter defines: NaN, integer division by zero,
// INT_MIN / -1, out-of-range one_hot) and must match interpret(). Each case
// batches many ops into one graph, one output each, because compiling costs
// far more than running. Seeds are fresh per run and printed on failure; set
// STEPC_TEST_SEED to replay one. The models in examples/ are checked in
// test_codegen_examples.cpp (ctest label e2e).
#include "codegen_harness.h"

#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>

using namespace stepc;
using stepc::testing::expectMatchesInterpreter;
using stepc::testing::freshSeed;
using ::testing::HasSubstr;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// --- Building test graphs ----------------------------------------------------

// What a case builds from: a builder, its rng, and the inputs it feeds.
struct CaseContext {
  GraphBuilder &b;
  std::mt19937_64 &rng;
  TensorMap &inputs;
  int outputs = 0;

  int64_t dim(int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(rng);
  }
  // Floats uniform in [low, high); integers uniform in [low, high].
  Tensor random(DType dtype, const Shape &shape, double low = -1, double high = 1) {
    if (isFloat(dtype))
      return stepc::testing::randomTensor(dtype, shape, rng(), low, high);
    return stepc::testing::randomTensor(dtype, shape, rng(), low, high + 1);
  }
  // A graph input fed with `value`.
  Value feed(Tensor value) {
    std::string name = fmt::format("in{}", inputs.size());
    Value v = b.input(name, value.dtype(), value.shape());
    inputs[name] = std::move(value);
    return v;
  }
  Value feedRandom(DType dtype, const Shape &shape, double low = -1, double high = 1) {
    return feed(random(dtype, shape, low, high));
  }
  void out(Value v) { b.output(fmt::format("out{}", outputs++), v); }
};

struct OpCase {
  std::string name;
  // The ops the case compiles (checked against the kernels' provenance, so
  // that a pass rewriting one away cannot hide it).
  std::vector<OpKind> covers;
  std::function<void(CaseContext &)> build;
};

std::vector<OpKind> ops(std::initializer_list<OpKind> list) { return list; }

const DType kFloats[] = {DType::F32, DType::F64};
const DType kInts[] = {DType::I32, DType::I64};
const DType kNarrowInts[] = {DType::I8, DType::U8, DType::I16, DType::U16, DType::U32, DType::U64};

Attrs convAttrs(std::vector<int64_t> stride, std::vector<int64_t> padding,
                std::vector<int64_t> dilation, int64_t groups) {
  return {{"stride", stride}, {"padding", padding}, {"dilation", dilation}, {"groups", groups}};
}

// --- The cases -----------------------------------------------------------------

void unaryFloat(CaseContext &c, DType dt) {
  Shape s{c.dim(1, 5), c.dim(1, 7), c.dim(2, 9)};
  Value x = c.feedRandom(dt, s, -4, 4);      // log/sqrt/rsqrt of negatives: NaN
  Value wide = c.feedRandom(dt, s, -30, 30); // saturating exp/tanh/sigmoid/erf
  Value positive = c.feedRandom(dt, {s[2]}, 0.01, 5);
  for (Value v : {x, wide}) {
    c.out(neg(v));
    c.out(abs(v));
    c.out(exp(v));
    c.out(tanh(v));
    c.out(sigmoid(v));
    c.out(relu(v));
    c.out(sin(v));
    c.out(cos(v));
    c.out(sign(v));
    c.out(erf(v));
    c.out(square(v));
  }
  c.out(log(x));
  c.out(sqrt(x));
  c.out(rsqrt(x));
  c.out(log(positive));
  c.out(sqrt(positive));
  c.out(rsqrt(positive));
  // A fused chain of them.
  c.out(tanh(exp(neg(square(x))) * sigmoid(wide)) + erf(sin(x)) * cos(positive));
}

void unaryInt(CaseContext &c, DType dt) {
  Shape s{c.dim(2, 6), c.dim(2, 9)};
  Tensor t = c.random(dt, s, -1000, 1000);
  // Wrapping square, and INT_MIN, whose negation and abs wrap to itself.
  t.setReal(0, dt == DType::I32 ? std::numeric_limits<int32_t>::min() : -9.2233720368547758e18);
  t.setReal(1, dt == DType::I32 ? 70000 : 5e9);
  Value x = c.feed(t);
  c.out(neg(x));
  c.out(abs(x));
  c.out(square(x));
  c.out(relu(x));
  c.out(sign(x));
}

void casts(CaseContext &c) {
  Shape s{c.dim(2, 5), c.dim(2, 8)};
  Tensor f32 = c.random(DType::F32, s, -100, 100);
  f32.setReal(0, 0);
  f32.setReal(1, -0.5); // truncates toward zero
  Tensor i64 = c.random(DType::I64, s, -1000, 1000);
  i64.setReal(0, 6e9); // wraps when narrowed to i32
  i64.setReal(1, 0);
  Tensor boolean = c.random(DType::Bool, s, 0, 1);
  std::vector<Value> sources = {c.feed(f32), c.feed(castTensor(f32, DType::F64)),
                                c.feedRandom(DType::I32, s, -1000, 1000), c.feed(i64),
                                c.feed(boolean)};
  for (Value from : sources)
    for (DType to : {DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool})
      if (to != from.dtype())
        c.out(cast(from, to));
}

// Binary arithmetic under broadcasting: [m,1] op [1,n], scalar op [2,3,5],
// [n] op [m,n], and same shapes.
void binaryFloat(CaseContext &c, DType dt) {
  int64_t m = c.dim(2, 6), n = c.dim(2, 9);
  Value col = c.feedRandom(dt, {m, 1}), row = c.feedRandom(dt, {1, n});
  Value scalar = c.feedRandom(dt, {}), cube = c.feedRandom(dt, {2, 3, 5});
  Value vec = c.feedRandom(dt, {n}), mat = c.feedRandom(dt, {m, n});
  std::pair<Value, Value> pairs[] = {{col, row}, {scalar, cube}, {cube, scalar}, {vec, mat},
                                     {mat, mat}};
  for (auto [a, b] : pairs) {
    c.out(add(a, b));
    c.out(sub(a, b));
    c.out(mul(a, b));
    c.out(div(a, b));
    c.out(maximum(a, b));
    c.out(minimum(a, b));
    c.out(rem(a, b));
  }
  // rem with quotients far beyond 2^24 (exact, as C's fmod) and of both signs.
  c.out(rem(c.feedRandom(dt, {m, n}, -1e30, 1e30), c.feedRandom(dt, {n}, 0.5, 3)));
  // pow: positive bases with real exponents, negative bases with integer ones.
  Value base = c.feedRandom(dt, {m, n}, 0.1, 3);
  c.out(pow(base, c.feedRandom(dt, {1, n}, -2, 2)));
  c.out(pow(c.feedRandom(dt, {m, n}, -3, 3),
            constantData(c.b, std::vector<double>(size_t(n), 3.0), dt, {n})));
  // Comparisons on small integers stored as floats, so that ties occur.
  Tensor ties = c.random(dt, {m, n}, 0, 3);
  for (int64_t i = 0; i < ties.numel(); ++i)
    ties.setReal(i, std::floor(ties.real(i)));
  Value t1 = c.feed(ties), t2 = c.feed(castTensor(castTensor(c.random(DType::I32, {1, n}, 0, 2), DType::F64), dt));
  for (Value v : {eq(t1, t2), ne(t1, t2), lt(t1, t2), le(t1, t2), gt(t1, t2), ge(t1, t2)})
    c.out(v);
  c.out(select(gt(col, row), scalar, mat));
  c.out(select(c.feedRandom(DType::Bool, {m, 1}, 0, 1), row, scalar));
}

void binaryInt(CaseContext &c, DType dt) {
  int64_t m = c.dim(2, 6), n = c.dim(2, 9);
  double lowest = dt == DType::I32 ? std::numeric_limits<int32_t>::min() : -9.2233720368547758e18;
  Tensor a = c.random(dt, {m, n}, -100, 100);
  a.setReal(0, lowest);
  a.setReal(1, lowest);
  a.setReal(2, 7);
  a.setReal(3, -7);
  Tensor b = c.random(dt, {m, n}, -6, 6); // zeros occur
  b.setReal(0, -1);                         // INT_MIN / -1
  b.setReal(1, 0);                          // INT_MIN / 0
  b.setReal(2, 2);                          // truncation toward zero
  b.setReal(3, 2);
  Value x = c.feed(a), y = c.feed(b), row = c.feedRandom(dt, {n}, -5, 5);
  for (auto [p, q] : {std::pair{x, y}, std::pair{x, row}, std::pair{row, y}}) {
    c.out(add(p, q));
    c.out(sub(p, q));
    c.out(mul(p, q));
    c.out(div(p, q));
    c.out(maximum(p, q));
    c.out(minimum(p, q));
    c.out(rem(p, q));
    c.out(eq(p, q));
    c.out(ne(p, q));
    c.out(lt(p, q));
    c.out(le(p, q));
    c.out(gt(p, q));
    c.out(ge(p, q));
  }
  c.out(select(lt(x, y), x, row));
}

// Values of an i8..u64 tensor that exercise its edges: the extremes (as their
// bits: the top bit set is negative when signed, above INT_MAX when
// unsigned), 0, 1, -1 and small ones, so that signed/unsigned division,
// comparison, extension and wraparound all show.
Tensor narrowIntTensor(CaseContext &c, DType dt, const Shape &shape) {
  Tensor t = c.random(dt, shape, 0, 100);
  uint64_t signBit = uint64_t(1) << (dtypeSize(dt) * 8 - 1);
  const int64_t edges[] = {static_cast<int64_t>(signBit), static_cast<int64_t>(signBit - 1),
                           -1, 0, 1, 7, -7, static_cast<int64_t>(signBit + 5)};
  for (size_t i = 0; i < std::size(edges) && int64_t(i) < t.numel(); ++i)
    t.setInteger(int64_t(i) * 3 % t.numel(), edges[i]);
  return t;
}

void binaryNarrowInt(CaseContext &c, DType dt) {
  int64_t m = c.dim(3, 6), n = c.dim(3, 9);
  Value x = c.feed(narrowIntTensor(c, dt, {m, n})), y = c.feed(narrowIntTensor(c, dt, {m, n}));
  Value row = c.feed(narrowIntTensor(c, dt, {n}));
  for (auto [p, q] : {std::pair{x, y}, std::pair{x, row}, std::pair{row, y}}) {
    for (Value v : {add(p, q), sub(p, q), mul(p, q), div(p, q), maximum(p, q), minimum(p, q),
                    rem(p, q), eq(p, q), ne(p, q), lt(p, q), le(p, q), gt(p, q), ge(p, q)})
      c.out(v);
  }
  c.out(select(lt(x, y), x, row));
}

void unaryNarrowInt(CaseContext &c, DType dt) {
  Value x = c.feed(narrowIntTensor(c, dt, {c.dim(3, 6), c.dim(3, 9)}));
  for (Value v : {neg(x), abs(x), square(x), relu(x), sign(x)})
    c.out(v);
}

// Floats to every integer type where the target's range ends: negative
// fractions into unsigned types, values from 2^63 to 2^64, NaN, infinities
// and values past 2^64 (integerBitsOf's rule: truncate, keep the low bits,
// 0 outside (-2^63, 2^64)).
void floatsToIntegersOutOfRange(CaseContext &c) {
  Shape s{c.dim(3, 5), c.dim(4, 7)};
  for (DType from : {DType::F32, DType::F64}) {
    Tensor x = c.random(from, s, -300, 300);
    const double edges[] = {-1.0, -3.7, 300.5, 1e19, 9223372036854775808.0, -9.3e18,
                            std::nan(""), INFINITY, -INFINITY, 2e19, -0.5, 65535.9};
    for (size_t i = 0; i < std::size(edges); ++i)
      x.setReal(int64_t(i), edges[i]);
    Value v = c.feed(x);
    for (DType to : {DType::I32, DType::I64, DType::I8, DType::U8, DType::I16, DType::U16,
                     DType::U32, DType::U64})
      c.out(cast(v, to));
  }
}

// Every cast into and out of the narrow and unsigned integers.
void narrowCasts(CaseContext &c) {
  Shape s{c.dim(2, 5), c.dim(3, 8)};
  std::vector<Value> sources;
  for (DType dt : kNarrowInts)
    sources.push_back(c.feed(narrowIntTensor(c, dt, s)));
  Tensor small = c.random(DType::F32, s, 0, 120);
  small.setReal(0, 0.5);
  small.setReal(1, 119.9f);
  sources.push_back(c.feed(small));
  sources.push_back(c.feed(castTensor(small, DType::F64)));
  sources.push_back(c.feed(narrowIntTensor(c, DType::I32, s)));
  sources.push_back(c.feed(narrowIntTensor(c, DType::I64, s)));
  sources.push_back(c.feedRandom(DType::Bool, s, 0, 1));
  for (Value from : sources)
    for (DType to : {DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool, DType::I8,
                     DType::U8, DType::I16, DType::U16, DType::U32, DType::U64})
      if (to != from.dtype() && (isInteger(from.dtype()) || from.dtype() == DType::Bool ||
                                 isInteger(to) || to == DType::Bool))
        c.out(cast(from, to));
}

void boolOps(CaseContext &c) {
  int64_t m = c.dim(2, 6), n = c.dim(2, 9);
  Value p = c.feedRandom(DType::Bool, {m, n}, 0, 1), q = c.feedRandom(DType::Bool, {n}, 0, 1);
  c.out(eq(p, q));
  c.out(ne(p, q));
  c.out(select(p, q, eq(q, q)));
  c.out(transpose(p, {1, 0}));
  c.out(concat({p, p, reshape(q, {1, n})}, 0));
  c.out(pad(p, {1, 0}, {0, 2}, 1));
  c.out(reshape(p, {-1}));
  c.out(broadcastTo(q, {3, m, n}));
  c.out(slice(p, {0, 1}, {m, n}, {2, 1}));
  c.out(gather(p, c.feedRandom(DType::I32, {4}, 0, m - 1), 0));
}

void reductions(CaseContext &c, DType dt) {
  Shape s{c.dim(2, 5), c.dim(1, 6), c.dim(2, 7)};
  Value x = c.feedRandom(dt, s, -10, 10);
  std::vector<std::vector<int64_t>> axesList = {{}, {0}, {1}, {-1}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (const auto &axes : axesList)
    for (bool keep : {false, true}) {
      c.out(sum(x, axes, keep));
      c.out(max(x, axes, keep));
      c.out(min(x, axes, keep));
      if (isFloat(dt))
        c.out(mean(x, axes, keep));
    }
  // Ties: few distinct values, so argmax must return the first maximum.
  Tensor small = c.random(dt, s, 0, 2);
  for (int64_t i = 0; i < small.numel(); ++i)
    small.setReal(i, std::floor(small.real(i)));
  Value tied = c.feed(small);
  for (int64_t axis : {0, 1, 2, -1})
    for (bool keep : {false, true}) {
      c.out(argmax(tied, axis, keep));
      c.out(argmax(x, axis, keep));
    }
  // Reductions of a fused elementwise producer.
  if (isFloat(dt))
    c.out(sum(exp(x * scalarLike(x, 0.1)), {1, 2}));
  else
    c.out(max(x * x, {0}, true));
}

void matmuls(CaseContext &c, DType dt) {
  bool f32 = dt == DType::F32;
  double hi = isFloat(dt) ? 1 : 9;
  // Odd sizes: partial register tiles on every edge of the tiled f32 path.
  int64_t m = c.dim(1, 40), k = c.dim(1, 40), n = c.dim(1, 70);
  Value a = c.feedRandom(dt, {m, k}, -hi, hi), w = c.feedRandom(dt, {k, n}, -hi, hi);
  c.out(matmul(a, w));
  // Whole tiles (8 rows x 32 columns) and a bias-relu epilogue.
  int64_t M = 8 * c.dim(1, 4), N = 32 * c.dim(1, 3), K = c.dim(16, 64);
  Value a2 = c.feedRandom(dt, {M, K}, -hi, hi), w2 = c.feedRandom(dt, {K, N}, -hi, hi);
  c.out(relu(matmul(a2, w2) + c.feedRandom(dt, {N}, -hi, hi)));
  // Transposed operands (views folded into the operand reads).
  c.out(matmul(transpose(c.feedRandom(dt, {k, m}, -hi, hi), {1, 0}), w));
  c.out(matmul(a, transpose(c.feedRandom(dt, {n, k}, -hi, hi), {1, 0})));
  // Batched with broadcasting: [B,m,k] x [k,n] and [1,m,k] x [B,k,n].
  int64_t batch = c.dim(2, 3);
  c.out(matmul(c.feedRandom(dt, {batch, m, k}, -hi, hi), w));
  c.out(matmul(c.feedRandom(dt, {1, m, k}, -hi, hi), c.feedRandom(dt, {batch, k, n}, -hi, hi)));
  c.out(matmul(c.feedRandom(dt, {2, batch, m, k}, -hi, hi),
               c.feedRandom(dt, {batch, k, n}, -hi, hi)));
  if (f32) {
    // A weight held as a param (set through Executable::setParam).
    Value p = c.b.param("w", dt, {k, n}, Init::heUniform(1));
    c.out(matmul(a, p) * scalarLike(a, 0.5));
  }
}

void movement(CaseContext &c, DType dt) {
  int64_t a = c.dim(2, 5), b = c.dim(2, 6), d = c.dim(3, 7);
  Value x = c.feedRandom(dt, {a, b, d}, -9, 9);
  Value y = c.feedRandom(dt, {a, b, d}, -9, 9);
  Value four = c.feedRandom(dt, {2, a, b, d}, -9, 9);
  for (auto perm : {std::vector<int64_t>{2, 0, 1}, {1, 0, 2}, {0, 2, 1}, {2, 1, 0}})
    c.out(transpose(x, perm));
  c.out(transpose(four, {0, 2, 1, 3}));
  c.out(transpose(four, {3, 2, 1, 0}));
  c.out(reshape(x, {a * b, d}));
  c.out(reshape(x, {-1}));
  c.out(reshape(x, {d, -1}));
  c.out(reshape(c.feedRandom(dt, {}, -9, 9), {1, 1}));
  c.out(broadcastTo(c.feedRandom(dt, {1, d}, -9, 9), {a, b, d}));
  c.out(broadcastTo(c.feedRandom(dt, {}, -9, 9), {2, 3}));
  c.out(slice(x, {0, 1, 0}, {a, b, d}, {2, 1, 3}));
  c.out(slice(x, {1, 0, 2}, {a, b - 1, d}, {1, 2, 1}));
  c.out(slice(x, {0, 0, 0}, {a, b, d}));
  for (int64_t axis : {0, 1, -1})
    c.out(concat({x, y, x}, axis));
  c.out(concat({c.feedRandom(dt, {1, b, d}, -9, 9), x, c.feedRandom(dt, {3, b, d}, -9, 9)}, 0));
  c.out(pad(x, {1, 0, 2}, {0, 3, 1}, 0));
  c.out(pad(x, {0, 1, 0}, {2, 0, 1}, -2.5));
  Attrs interior{{"low", std::vector<int64_t>{1, 0, 2}},
                 {"high", std::vector<int64_t>{0, 2, 1}},
                 {"interior", std::vector<int64_t>{1, 2, 0}},
                 {"value", 7.0}};
  c.out(c.b.op(OpKind::Pad, {x}, interior, SourceLoc("movement", 1, 1)));
  // Views feeding elementwise ops inside one kernel.
  c.out(transpose(x, {2, 0, 1}) + reshape(y, {d, a, b}));
  c.out(slice(pad(x, {1, 1, 1}, {1, 1, 1}, 0), {0, 0, 0}, {a, b, d}) * y);
  c.out(broadcastTo(c.feedRandom(dt, {b, 1}, -9, 9), {a, b, d}) - x);
}

void gathers(CaseContext &c, DType dt) {
  int64_t rows = c.dim(3, 8), cols = c.dim(3, 8);
  Value data = c.feedRandom(dt, {rows, cols, 2}, -9, 9);
  Value idx0 = c.feedRandom(DType::I32, {5}, 0, rows - 1);
  Value idx1 = c.feedRandom(DType::I64, {2, 3}, 0, cols - 1);
  c.out(gather(data, idx0, 0));
  c.out(gather(data, idx1, 1));
  c.out(gather(data, c.feedRandom(DType::I64, {4}, 0, 1), -1));
  c.out(gather(data, idx1, 1) * scalarLike(data, 2));
  // one_hot: indices below 0 and at or above depth give all-zero rows.
  Tensor labels = c.random(DType::I32, {7}, -2, 6);
  labels.setReal(0, -1);
  labels.setReal(1, 5);
  labels.setReal(2, 4);
  Value l = c.feed(labels);
  c.out(oneHot(l, 5, dt));
  c.out(oneHot(c.feedRandom(DType::I64, {2, 3}, -1, 4), 4, DType::Bool));
}

void convolutions(CaseContext &c, DType dt) {
  int64_t n = c.dim(1, 2), h = c.dim(5, 9), w = c.dim(5, 9);
  Value x = c.feedRandom(dt, {n, 4, h, w});
  struct Variant {
    std::vector<int64_t> stride, padding, dilation;
    int64_t groups, filters, kh, kw;
  };
  Variant variants[] = {
      {{1, 1}, {0, 0}, {1, 1}, 1, 3, 3, 3},
      {{2, 1}, {1, 2}, {1, 1}, 1, 5, 3, 2},
      {{1, 2}, {2, 1}, {2, 1}, 1, 2, 2, 3},
      {{1, 1}, {1, 1}, {1, 1}, 2, 4, 3, 3}, // groups
      {{2, 2}, {1, 0}, {1, 2}, 4, 8, 2, 2}, // depthwise, 2 filters per channel
  };
  for (const Variant &v : variants) {
    Value k = c.feedRandom(dt, {v.filters, 4 / v.groups, v.kh, v.kw});
    c.out(conv2d(x, k, {v.stride, v.padding, v.dilation, v.groups}));
  }
  // conv + bias + relu epilogue.
  Value k = c.feedRandom(dt, {6, 4, 3, 3});
  c.out(relu(conv2d(x, k, {{1, 1}, {1, 1}, {1, 1}, 1}) + c.feedRandom(dt, {6, 1, 1})));
}

void pools(CaseContext &c, DType dt) {
  Value x = c.feedRandom(dt, {c.dim(1, 2), c.dim(1, 3), c.dim(4, 9), c.dim(4, 9)}, -5, 5);
  Pool2dOptions variants[] = {
      {{2, 2}, {2, 2}, {0, 0}, true},
      {{3, 3}, {2, 1}, {1, 1}, true},
      {{3, 3}, {2, 1}, {1, 1}, false},
      {{3, 2}, {1, 2}, {1, 0}, false},
      {{2, 3}, {3, 1}, {1, 1}, true},
  };
  for (const Pool2dOptions &o : variants) {
    c.out(maxPool2d(x, o));
    c.out(avgPool2d(x, o));
  }
  // Pool of a fused producer's result.
  c.out(maxPool2d(relu(x), variants[1]));
  // Windows inside rows wider than 16 outputs: the f32 vector path's whole
  // 16-column chunks and its masked last chunk, strides 2 and 3.
  Value wide = c.feedRandom(dt, {c.dim(1, 2), 2, c.dim(4, 7), c.dim(33, 70)}, -5, 5);
  for (const Pool2dOptions &o : {Pool2dOptions{{2, 2}, {2, 2}, {0, 0}, true},
                                 Pool2dOptions{{3, 2}, {1, 3}, {0, 0}, false}}) {
    c.out(maxPool2d(wide, o));
    c.out(avgPool2d(wide, o));
  }
}

// The gradient ops, as grad() emits them; the training steps of
// test_codegen_examples.cpp cover them in context.
void gradientOps(CaseContext &c, DType dt) {
  // scatter_add along axis 0 and 1; repeated indices accumulate.
  int64_t size = c.dim(2, 5);
  Value idx = c.feedRandom(DType::I32, {7}, 0, size - 1);
  Value upd = c.feedRandom(dt, {7, 3});
  c.out(c.b.op(OpKind::ScatterAdd, {idx, upd}, {{"axis", int64_t(0)}, {"size", size}},
               SourceLoc("grad", 1, 1)));
  Value idx2 = c.feedRandom(DType::I64, {2, 3}, 0, size - 1);
  Value upd2 = c.feedRandom(dt, {4, 2, 3, 2});
  c.out(c.b.op(OpKind::ScatterAdd, {idx2, upd2}, {{"axis", int64_t(1)}, {"size", size}},
               SourceLoc("grad", 2, 1)));

  // conv2d gradients with stride, padding, dilation and groups.
  int64_t h = c.dim(5, 8), w = c.dim(5, 8);
  struct Variant {
    std::vector<int64_t> stride, padding, dilation;
    int64_t groups;
  };
  for (Variant v : {Variant{{1, 1}, {0, 0}, {1, 1}, 1}, Variant{{2, 1}, {1, 2}, {1, 2}, 2}}) {
    Attrs a = convAttrs(v.stride, v.padding, v.dilation, v.groups);
    Shape xs{2, 4, h, w}, ws{6, 4 / v.groups, 3, 2};
    TensorType out = inferType(OpKind::Conv2d, a, std::vector<TensorType>{{dt, xs}, {dt, ws}});
    Value g = c.feedRandom(dt, out.shape);
    Attrs gi = a;
    gi.set("input_hw", std::vector<int64_t>{h, w});
    c.out(c.b.op(OpKind::Conv2dGradInput, {g, c.feedRandom(dt, ws)}, gi, SourceLoc("grad", 3, 1)));
    Attrs gw = a;
    gw.set("kernel", std::vector<int64_t>{3, 2});
    c.out(c.b.op(OpKind::Conv2dGradWeight, {c.feedRandom(dt, xs), g}, gw, SourceLoc("grad", 4, 1)));
  }

  // Pool gradients; integer-valued inputs make ties (the first maximum wins).
  for (auto [kernel, stride, padding, include] :
       {std::tuple{std::vector<int64_t>{2, 2}, std::vector<int64_t>{2, 2}, std::vector<int64_t>{0, 0}, 1},
        std::tuple{std::vector<int64_t>{3, 3}, std::vector<int64_t>{2, 1}, std::vector<int64_t>{1, 1}, 0},
        std::tuple{std::vector<int64_t>{3, 2}, std::vector<int64_t>{1, 2}, std::vector<int64_t>{1, 1}, 1}}) {
    Shape xs{2, 2, h, w};
    Tensor ties = c.random(dt, xs, 0, 3);
    for (int64_t i = 0; i < ties.numel(); ++i)
      ties.setReal(i, std::floor(ties.real(i)));
    Value x = c.feed(ties);
    Attrs a{{"kernel", kernel}, {"stride", stride}, {"padding", padding}};
    TensorType out = inferType(OpKind::MaxPool2d, a, std::vector<TensorType>{{dt, xs}});
    c.out(c.b.op(OpKind::MaxPool2dGrad, {x, c.feedRandom(dt, out.shape)}, a, SourceLoc("grad", 5, 1)));
    Attrs avg = a;
    avg.set("input_hw", std::vector<int64_t>{h, w});
    avg.set("count_include_pad", int64_t(include));
    c.out(c.b.op(OpKind::AvgPool2dGrad, {c.feedRandom(dt, out.shape)}, avg, SourceLoc("grad", 6, 1)));
  }
}

// scatter_add also takes integer updates (an embedding's gradient is float,
// but the op is not restricted to it).
void scatterInt(CaseContext &c, DType dt) {
  int64_t size = c.dim(2, 6);
  Value idx = c.feedRandom(DType::I64, {9}, 0, size - 1);
  c.out(c.b.op(OpKind::ScatterAdd, {idx, c.feedRandom(dt, {9, 4}, -50, 50)},
               {{"axis", int64_t(0)}, {"size", size}}, SourceLoc("scatter", 1, 1)));
  c.out(c.b.op(OpKind::ScatterAdd, {idx, c.feedRandom(dt, {3, 9}, -50, 50)},
               {{"axis", int64_t(1)}, {"size", size}}, SourceLoc("scatter", 2, 1)));
}

void dropouts(CaseContext &c, DType dt) {
  Value x = c.feedRandom(dt, {c.dim(2, 9), c.dim(3, 40)});
  Tensor seed(DType::I64, {});
  seed.data<int64_t>()[0] = static_cast<int64_t>(c.rng());
  Value s = c.feed(seed);
  for (double rate : {0.0, 0.3, 0.9})
    c.out(dropout(x, s, rate));
  c.out(relu(dropout(x * scalarLike(x, 3), s, 0.5)) + x);
}

// One process: the collective step copies. Its result feeds a kernel, so
// the kernel's wait and the buffer kept alive for the send are exercised.
void collectives(CaseContext &c, DType dt) {
  Value x = c.feedRandom(dt, {c.dim(2, 9), c.dim(3, 40)});
  Value y = allReduce(x * scalarLike(x, 2), isFloat(dt) ? "mean" : "sum");
  c.out(y + x);
  c.out(allReduce(x, "sum"));
}

void sources(CaseContext &c) {
  int64_t m = c.dim(2, 5), n = c.dim(2, 6);
  Value x = c.feedRandom(DType::F32, {m, n});
  Value i = c.feedRandom(DType::I64, {m, n}, -5, 5);
  c.out(constant(c.b, 2.5, DType::F32, {m, n}));
  c.out(x + constant(c.b, -1.5, DType::F32, {n}));
  c.out(constantData(c.b, {1, -2, 3.5, 0}, DType::F32, {2, 2}));
  c.out(x * constantData(c.b, std::vector<double>(size_t(n), 0.25), DType::F32, {n}));
  c.out(constantData(c.b, {1, 0, 1}, DType::Bool, {3}));
  c.out(constantData(c.b, {1, -7, 40}, DType::I32, {3}));
  // i64 data above 2^53 must stay exact.
  Attrs big{{"dtype", std::string("i64")},
            {"shape", std::vector<int64_t>{3}},
            {"data", std::vector<int64_t>{(int64_t(1) << 53) + 1, -(int64_t(1) << 60) - 3, 5}}};
  Value bigConst = c.b.op(OpKind::Constant, {}, big, SourceLoc("sources", 1, 1));
  c.out(bigConst);
  c.out(c.feedRandom(DType::I64, {3}, -5, 5) + bigConst);
  for (auto [dt, axis] : {std::pair{DType::I32, 0}, std::pair{DType::I64, 1},
                          std::pair{DType::F32, 1}, std::pair{DType::F64, 0}}) {
    c.out(iota(c.b, dt, {m, n}, axis));
  }
  c.out(i + iota(c.b, DType::I64, {m, n}, 1));
  c.out(x * iota(c.b, DType::F32, {m, n}, 0));
}

// NaN and infinities through the ops whose handling the interpreter defines:
// relu, sign, maximum/minimum and the max reductions propagate NaN; argmax
// picks the first NaN; a NaN is nonzero as a bool.
void specialValues(CaseContext &c) {
  std::vector<double> values = {kNaN, 1, -1, kInf, -kInf, 0, -0.0, 2, kNaN, -3, 0.5, kNaN};
  Value x = c.feed(Tensor::fromReals(DType::F32, {3, 4}, values));
  Value y = c.feed(Tensor::fromReals(DType::F32, {3, 4},
                                     {0, kNaN, -2, 1, kNaN, kInf, 3, -kInf, kNaN, 4, 0, -1}));
  c.out(relu(x));
  c.out(sign(x));
  c.out(maximum(x, y));
  c.out(minimum(x, y));
  c.out(max(x, {1}));
  c.out(min(x, {0}));
  c.out(max(x));
  c.out(argmax(x, 1));
  c.out(argmax(y, 0));
  c.out(cast(x, DType::Bool));
  c.out(exp(x));
  c.out(log(x));
  c.out(sqrt(x));
  c.out(tanh(x));
  c.out(sigmoid(x));
  c.out(erf(x));
  c.out(eq(x, x));
  c.out(ne(x, y));
  c.out(lt(x, y));
  c.out(ge(x, y));
  c.out(x / y);
  Value img = c.feed(Tensor::fromReals(DType::F32, {1, 1, 3, 4}, values));
  c.out(maxPool2d(img, {{2, 2}, {1, 1}, {0, 0}, true}));
}

// Composites: built from primitives, so they exercise fusion of reductions
// with their producers and epilogues.
void composites(CaseContext &c, DType dt) {
  int64_t n = c.dim(2, 9), classes = c.dim(2, 12);
  Value logits = c.feedRandom(dt, {n, classes}, -5, 5);
  c.out(softmax(logits));
  c.out(softmax(logits, 0));
  c.out(logSoftmax(logits));
  c.out(crossEntropy(logits, c.feedRandom(DType::I32, {n}, 0, classes - 1)));
  Value gamma = c.feedRandom(dt, {classes}), beta = c.feedRandom(dt, {classes});
  c.out(layerNorm(logits, gamma, beta));
  c.out(gelu(logits));
  c.out(leakyRelu(logits, 0.1));
  c.out(mse(logits, c.feedRandom(dt, {n, classes})));
  Value w = c.feedRandom(dt, {classes, 5}), bias = c.feedRandom(dt, {5});
  c.out(linear(logits, w, bias));
  c.out(linear(logits, w, Value()));
  int64_t t = c.dim(2, 9), d = c.dim(2, 8);
  Value q = c.feedRandom(dt, {2, t, d}), k = c.feedRandom(dt, {2, t, d}),
        v = c.feedRandom(dt, {2, t, d});
  c.out(attention(q, k, v, false));
  c.out(attention(q, k, v, true));
}

std::vector<OpCase> allCases() {
  std::vector<OpCase> cases;
  auto perDType = [&](std::string name, std::vector<OpKind> covers,
                      void (*f)(CaseContext &, DType), std::span<const DType> dtypes) {
    for (DType dt : dtypes)
      cases.push_back({fmt::format("{}_{}", name, dtypeName(dt)), covers,
                       [f, dt](CaseContext &c) { f(c, dt); }});
  };
  using enum OpKind;
  perDType("unary", ops({Neg, Abs, Exp, Log, Sqrt, Rsqrt, Square, Tanh, Sigmoid, Relu, Sin,
                         Cos, Sign, Erf}),
           unaryFloat, kFloats);
  perDType("unary", ops({Neg, Abs, Square, Relu, Sign}), unaryInt, kInts);
  cases.push_back({"cast", ops({Cast}), casts});
  perDType("binary", ops({Add, Sub, Mul, Div, Pow, Maximum, Minimum, Rem, Eq, Ne, Lt, Le, Gt, Ge,
                          Select}),
           binaryFloat, kFloats);
  perDType("binary", ops({Add, Sub, Mul, Div, Maximum, Minimum, Rem, Eq, Ne, Lt, Le, Gt, Ge,
                          Select}),
           binaryInt, kInts);
  perDType("binary", ops({Add, Sub, Mul, Div, Maximum, Minimum, Rem, Eq, Ne, Lt, Le, Gt, Ge,
                          Select}),
           binaryNarrowInt, kNarrowInts);
  perDType("unary", ops({Neg, Abs, Square, Relu, Sign}), unaryNarrowInt, kNarrowInts);
  cases.push_back({"cast_narrow", ops({Cast}), narrowCasts});
  cases.push_back({"cast_float_to_int_edges", ops({Cast}), floatsToIntegersOutOfRange});
  cases.push_back({"bool", ops({Eq, Ne, Select, Transpose, Concat, Pad, Reshape, BroadcastTo,
                                Slice, Gather}),
                   boolOps});
  const DType kAll[] = {DType::F32, DType::F64, DType::I32, DType::I64};
  perDType("reduce", ops({ReduceSum, ReduceMax, ReduceMin, ArgMax}), reductions, kAll);
  perDType("matmul", ops({MatMul, Transpose}), matmuls, kAll);
  perDType("movement", ops({Transpose, Reshape, BroadcastTo, Slice, Concat, Pad}), movement,
           kAll);
  perDType("gather", ops({Gather, OneHot}), gathers, kAll);
  perDType("conv2d", ops({Conv2d}), convolutions, kFloats);
  perDType("pool", ops({MaxPool2d, AvgPool2d}), pools, kFloats);
  perDType("gradient_ops", ops({ScatterAdd, Conv2dGradInput, Conv2dGradWeight, MaxPool2dGrad,
                                AvgPool2dGrad}),
           gradientOps, kFloats);
  perDType("scatter_add", ops({ScatterAdd}), scatterInt, kInts);
  perDType("dropout", ops({Dropout}), dropouts, kFloats);
  perDType("all_reduce", ops({AllReduce}), collectives, kAll);
  cases.push_back({"sources", ops({Constant, Iota}), sources});
  cases.push_back({"special_values", ops({Relu, Sign, Maximum, Minimum, ReduceMax, ReduceMin,
                                          ArgMax, Cast, MaxPool2d}),
                   specialValues});
  perDType("composites", ops({ReduceMean, ReduceSum, ReduceMax, MatMul, OneHot}), composites,
           kFloats);
  return cases;
}

// gtest prints a case by its name, not its bytes.
void PrintTo(const OpCase &c, std::ostream *os) { *os << c.name; }

class CodegenOps : public ::testing::TestWithParam<OpCase> {};

TEST_P(CodegenOps, MatchesInterpreterFusedAndUnfused) {
  const OpCase &oc = GetParam();
  uint64_t seed = freshSeed();
  SCOPED_TRACE(fmt::format("case {}, seed {} (replay with STEPC_TEST_SEED={})", oc.name, seed,
                           seed));
  std::mt19937_64 rng(seed);
  GraphBuilder b(oc.name);
  TensorMap inputs;
  CaseContext c{b, rng, inputs};
  oc.build(c);
  Graph graph = b.finish();
  TensorMap params = initialParams(graph);
  for (auto &[name, value] : params)
    value = c.random(value.dtype(), value.shape());
  std::set<std::string> compiled;
  // Three threads, more than the cores here and an odd count, so a kernel's
  // rows split unevenly and one that reads another thread's rows shows.
  expectMatchesInterpreter(graph, inputs, params, {.threads = 3, .opsCompiled = &compiled});
  for (OpKind op : oc.covers)
    EXPECT_TRUE(compiled.count(std::string(opInfo(op).name)))
        << oc.name << " claims to cover " << opInfo(op).name << " but compiled no kernel with it";
}

INSTANTIATE_TEST_SUITE_P(, CodegenOps, ::testing::ValuesIn(allCases()),
                         [](const auto &info) { return info.param.name; });

// Completeness (docs/design.md rule 1): every op of ops.def has a case. Inputs
// and params are in every case.
TEST(CodegenOpsCoverage, EveryOpHasACase) {
  std::set<OpKind> covered = {OpKind::Input, OpKind::Parameter};
  for (const OpCase &c : allCases())
    covered.insert(c.covers.begin(), c.covers.end());
  for (const OpInfo &info : allOps())
    EXPECT_TRUE(covered.count(info.kind)) << "no codegen test case covers " << info.name;
}

// --- Buffer reuse --------------------------------------------------------------
// planBuffers lets a kernel's elementwise output take over the buffer of an
// input that dies in that kernel (or of the param it updates). That is only
// safe if the kernel reads no element of the input after writing it. These
// graphs put the writer before another root of the same kernel that reads
// the input through an inlined elementwise producer.

// Whether the fused plan computes an `a` and a `b` node in one kernel: the
// reuse tests mean something only while fusion puts writer and reader together.
bool fusedTogether(const Graph &graph, OpKind a, OpKind b) {
  LoweredGraph lowered = lowerGraph(graph, {.cache = false});
  for (const FusionGroup &group : lowered.plan.groups) {
    bool hasA = false, hasB = false;
    for (ValueId v : group.nodes) {
      hasA = hasA || lowered.graph.node(v).op == a;
      hasB = hasB || lowered.graph.node(v).op == b;
    }
    if (hasA && hasB)
      return true;
  }
  return false;
}

void expectMatchesOnRandomData(const Graph &graph, uint64_t seed) {
  SCOPED_TRACE(fmt::format("seed {} (replay with STEPC_TEST_SEED={})", seed, seed));
  TensorMap params = initialParams(graph);
  expectMatchesInterpreter(graph, randomInputs(graph, seed), params, {.steps = 2});
}

// The graph `name` of tests/snippets/codegen.sg.
Graph snippet(std::string_view name) {
  return stepc::testing::snippetGraph("tests/snippets/codegen.sg", name);
}

// Kernels that write a buffer some value of the same kernel still reads, or
// read a value their loop nest has not stored yet (the graphs, with what each
// exercises, in tests/snippets/codegen.sg): ops a and b must share a kernel,
// and the results match the interpreter's.
struct FusedKernelCase {
  std::string name; // the test's and the graph's
  OpKind a, b;
  std::optional<uint64_t> seed; // freshSeed() where none
  friend void PrintTo(const FusedKernelCase &c, std::ostream *os) { *os << c.name; }
};

class CodegenFusedKernel : public ::testing::TestWithParam<FusedKernelCase> {};

TEST_P(CodegenFusedKernel, MatchesInterpreter) {
  const FusedKernelCase &c = GetParam();
  Graph graph = snippet(c.name);
  ASSERT_TRUE(fusedTogether(graph, c.a, c.b));
  expectMatchesOnRandomData(graph, c.seed ? *c.seed : freshSeed());
}

INSTANTIATE_TEST_SUITE_P(
    , CodegenFusedKernel,
    ::testing::Values(
        FusedKernelCase{"OutputOverInputReadLaterInTheKernel", OpKind::Mul, OpKind::ReduceSum, {}},
        FusedKernelCase{"RootReadTransposedByAnotherRootOfItsNest", OpKind::Reshape,
                        OpKind::Transpose, 20261205},
        FusedKernelCase{"ParamUpdateOverParamReadLaterInTheKernel", OpKind::Mul,
                        OpKind::ReduceSum, {}},
        FusedKernelCase{"OutputOverInputReadByALaterOutputOfTheLoopNest", OpKind::Add,
                        OpKind::Mul, {}}),
    [](const auto &info) { return info.param.name; });

// fuzz_graph's input tests/fuzz/corpus/graph/mismatch-fused-scatter-add, as
// .sg: the gradient's last kernel wrote grad_x0 over the scatter_add result
// that grad_x2 still read (CodegenFusedKernel's
// OutputOverInputReadByALaterOutputOfTheLoopNest, found by the fuzzer).
TEST(CodegenBufferReuse, FuzzFindingFusedScatterAdd) {
  Graph graph = parseGraphFile(stepc::testing::sourcePath("tests/fuzz/mismatch-fused-scatter-add.sg"));
  expectMatchesOnRandomData(graph, 1);
}

// A fuzz finding: a kernel whose nodes all come after the consumer's can still
// reach it through a kernel merged earlier; fusion missed that path and built
// a cyclic kernel graph.
TEST(CodegenFusion, FuzzFindingCyclicKernelGraph) {
  Graph graph = parseGraphFile(stepc::testing::sourcePath("tests/fuzz/cyclic-kernel-graph.sg"));
  expectMatchesOnRandomData(graph, 1);
}

// --- Fusion bisection: a subset of the groups fused, and fault injection ----------

// Only the chosen groups of the full plan stay fused, and the result is the
// interpreter's; perturbKernel adds its amount to every other element of the
// float values of that kernel (a matmul epilogue split across threads, a
// scalar a reduction writes) only while the kernel is compiled fused.
TEST(CodegenFusion, SubsetFusionAndPerturbedKernel) {
  Graph graph = parseGraph(R"(
    graph perturbed {
      input %x : f32[64,32]
      param %w : f32[32,16] = xavier_uniform(seed=1)
      param %b : f32[16] = zeros()
      %m = matmul(%x, %w)
      %a = add(%m, %b)
      %h = relu(%a)
      %e = exp(%h)
      %s = reduce_sum(%e) {axes=[0,1], keepdims=0}
      %t = sqrt(%s)
      output h = %h
      output t = %t
    })");
  TensorMap inputs = randomInputs(graph, 5);
  TensorMap expected = interpret(graph, inputs, initialParams(graph));
  LoweredGraph full = lowerGraph(graph);
  std::vector<size_t> fused;
  for (size_t g = 0; g < full.plan.groups.size(); ++g)
    if (full.plan.groups[g].nodes.size() > 1)
      fused.push_back(g);
  ASSERT_EQ(fused.size(), 2u) << fusionReport(full.graph, full.plan, full.buffers);
  auto run = [&](const CompileOptions &options) {
    return compileJit(graph, options, {.threads = 2})->step(inputs);
  };
  for (size_t keep : fused) {
    CompileOptions options{.fusedGroups = std::vector<size_t>{keep}};
    EXPECT_EQ(lowerGraph(graph, options).plan.groups.size(),
              full.plan.groups.size() + full.plan.groups[fused[0] + fused[1] - keep].nodes.size() -
                  1);
    auto plain = run(options);
    for (auto &[name, tensor] : expected)
      EXPECT_TRUE(stepc::testing::allClose(plain.at(name), tensor, 1e-5, 1e-5)) << name;
    // Perturbing the fused group shifts its outputs by the amount; perturbing
    // the split one changes nothing.
    for (size_t target : fused) {
      options.perturbKernel = CompileOptions::Perturbation{target, 0.25};
      auto got = run(options);
      bool hShifted = target == fused[0] && keep == target;
      bool sShifted = target == fused[1] && keep == target;
      for (int64_t i = 0; i < got.at("h").numel(); ++i)
        ASSERT_NEAR(got.at("h").real(i),
                    plain.at("h").real(i) + (hShifted && i % 2 == 0 ? 0.25 : 0), 1e-5)
            << "h[" << i << "], kept k" << keep << ", perturbed k" << target;
      // The first kernel also writes exp(h), perturbed alike.
      double sum = 0;
      for (int64_t i = 0; i < plain.at("h").numel(); ++i)
        sum += std::exp(plain.at("h").real(i)) + (hShifted && i % 2 == 0 ? 0.25 : 0);
      EXPECT_NEAR(got.at("t").real(0), std::sqrt(sum) + (sShifted ? 0.25 : 0), 1e-4)
          << "kept k" << keep << ", perturbed k" << target;
    }
  }
  EXPECT_THROW(lowerGraph(graph, {.perturbKernel = CompileOptions::Perturbation{99, 1}}), Error);
}

// --- Shapes with a zero dimension ------------------------------------------------

TEST(CodegenShapes, ZeroSizedDimensions) {
  Graph graph = snippet("empty");
  expectMatchesOnRandomData(graph, freshSeed());
}

// --- Negative axes ----------------------------------------------------------------
// The graph holds only non-negative axes (Graph::add normalizes them), so a
// graph written with negative ones is the graph written with their
// non-negative equivalents: it prints them, reads back the same and runs the
// same on the interpreter and the compiled backend.
TEST(CodegenShapes, NegativeAxesAreNormalizedWhenTheGraphIsBuilt) {
  auto graphWithAxes = [](int last, int first) {
    return parseGraph(fmt::format(R"(
    graph axes {{
      input %x : f32[3,5]
      %s = reduce_sum(%x) {{axes=[{0}], keepdims=0}}
      %m = reduce_max(%x) {{axes=[{1},{0}], keepdims=1}}
      %a = argmax(%x) {{axis={0}, keepdims=0}}
      %c = concat(%x, %x) {{axis={0}}}
      %i = iota() {{dtype=f32, shape=[3,5], axis={1}}}
      %y = add(%x, %i)
      output s = %s
      output m = %m
      output a = %a
      output c = %c
      output y = %y
    }})",
                                  last, first));
  };
  Graph negative = graphWithAxes(-1, -2);
  EXPECT_EQ(negative.nodes, graphWithAxes(1, 0).nodes);
  std::string text = printGraph(negative);
  EXPECT_EQ(text.find("-1"), std::string::npos) << text;
  EXPECT_EQ(parseGraph(text).nodes, negative.nodes);
  expectMatchesOnRandomData(negative, freshSeed());
}

// --- What this backend does not compile -------------------------------------------
// Every op and dtype the shape rules accept compiles (the cases above), but
// one: scatter_add of bool updates, which the shape rule lets through and
// which has no meaning (the interpreter refuses it too). It must be a
// stepc::Error naming the op and its location, not invalid code.
TEST(CodegenErrors, UnsupportedDTypeNamesTheOpAndLocation) {
  Graph graph = parseGraph(R"(
    graph bad {
      input %i : i32[3]
      input %u : bool[3,2]
      %s = scatter_add(%i, %u) {axis=0, size=4}
      output s = %s
    })",
                           "bad.sg");
  try {
    compileJit(graph, {.cache = false});
    FAIL() << "compileJit accepted scatter_add of bool updates";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.sg:5:7"));
    EXPECT_THAT(e.what(), HasSubstr("scatter_add"));
    EXPECT_THAT(e.what(), HasSubstr("bool"));
  }
}

} // namespace
