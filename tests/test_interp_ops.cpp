// The reference interpreter, op by op: small hand-computed cases, and random
// cases checked against naive reimplementations written here in a different
// style (multi-index unravel/ravel in double precision, scatter-form
// convolution) so a shared mistake is unlikely. Random seeds are fixed (fresh
// under the `random` label, see testing.h) and printed on failure; set
// STEPC_TEST_SEED to replay one.
#include "testing.h"

#include "stepc/builder.h"
#include "stepc/interpreter.h"
#include "stepc/random.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <string>

using namespace stepc;
using stepc::testing::errorOf;
using stepc::testing::runOp;
using ::testing::HasSubstr;

namespace {

// --- Seeds, random tensors, comparisons -----------------------------------

using stepc::testing::freshSeed;

std::string seedNote(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (replay with STEPC_TEST_SEED=" +
         std::to_string(seed) + ")";
}

// `trials` calls of `trial` drawing from one generator, seeded by freshSeed()
// and traced so that a failure can be replayed.
void randomTrials(int trials, const std::function<void(std::mt19937_64 &rng, int trial)> &trial) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(seedNote(seed));
  std::mt19937_64 rng(seed);
  for (int t = 0; t < trials; ++t)
    trial(rng, t);
}

int64_t numelOf(const Shape &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

// Floats uniform in [low, high); integers uniform in [low, high]; bool 0/1.
Tensor randomTensor(std::mt19937_64 &rng, DType dtype, const Shape &shape,
                    double low = -2, double high = 2) {
  Tensor t(dtype, shape);
  std::uniform_real_distribution<double> real(low, high);
  std::uniform_int_distribution<int64_t> integer{int64_t(low), int64_t(high)};
  std::uniform_int_distribution<int> bit(0, 1);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.setReal(i, isFloat(dtype)           ? real(rng)
                 : dtype == DType::Bool ? bit(rng)
                                        : double(integer(rng)));
  return t;
}

Shape randomShape(std::mt19937_64 &rng, int rank, int64_t maxDim = 4) {
  std::uniform_int_distribution<int64_t> dim(1, maxDim);
  Shape s(rank);
  for (auto &d : s)
    d = dim(rng);
  return s;
}

int64_t uniformInt(std::mt19937_64 &rng, int64_t low, int64_t high) {
  return std::uniform_int_distribution<int64_t>(low, high)(rng);
}

// A reference result: shape and values in double.
struct Ref {
  Shape shape;
  std::vector<double> values;
  explicit Ref(Shape s) : shape(std::move(s)), values(size_t(numelOf(shape)), 0.0) {}
};

void expectValues(const Tensor &got, DType dtype, const Shape &shape,
                  const std::vector<double> &want, double tol = 1e-6) {
  ASSERT_EQ(typeString(got.type()), typeString(TensorType{dtype, shape}));
  ASSERT_EQ(got.numel(), int64_t(want.size()));
  for (int64_t i = 0; i < got.numel(); ++i) {
    double g = got.real(i), w = want[i];
    if (std::isnan(w))
      EXPECT_TRUE(std::isnan(g)) << "element " << i << ": got " << g;
    else if (std::isinf(w))
      EXPECT_EQ(g, w) << "element " << i;
    else
      EXPECT_NEAR(g, w, tol * (1 + std::abs(w))) << "element " << i;
  }
}

void expectMatches(const Tensor &got, DType dtype, const Ref &want, double tol) {
  expectValues(got, dtype, want.shape, want.values, tol);
}

double tolFor(DType dtype) { return dtype == DType::F32 ? 3e-5 : 1e-12; }

// Multi-index <-> flat index, by division rather than strides.
std::vector<int64_t> unravel(int64_t flat, const Shape &shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

int64_t ravel(const std::vector<int64_t> &idx, const Shape &shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    flat = flat * shape[d] + idx[d];
  return flat;
}

// The element of `t` that NumPy broadcasting reads for output index `out`.
double broadcastRead(const Tensor &t, const std::vector<int64_t> &out) {
  size_t lead = out.size() - t.shape().size();
  std::vector<int64_t> idx(t.shape().size());
  for (size_t d = 0; d < idx.size(); ++d)
    idx[d] = t.shape()[d] == 1 ? 0 : out[lead + d];
  return t.real(ravel(idx, t.shape()));
}

Tensor run1(const Tensor &x, const std::function<Value(Value)> &f) {
  return runOp({x}, [&](GraphBuilder &, std::vector<Value> &v) { return f(v[0]); });
}
Tensor run2(const Tensor &x, const Tensor &y, const std::function<Value(Value, Value)> &f) {
  return runOp({x, y}, [&](GraphBuilder &, std::vector<Value> &v) { return f(v[0], v[1]); });
}

const DType kFloatTypes[] = {DType::F32, DType::F64};

// --- Sources ----------------------------------------------------------------

TEST(InterpSources, ConstantFillAndData) {
  Tensor fill = runOp({}, [](GraphBuilder &b, auto &) {
    return constant(b, 2.5, DType::F32, {2, 2});
  });
  expectValues(fill, DType::F32, {2, 2}, {2.5, 2.5, 2.5, 2.5});

  Tensor data = runOp({}, [](GraphBuilder &b, auto &) {
    return constantData(b, {1, -2, 3.5, 0, 5, 6}, DType::F64, {2, 3});
  });
  expectValues(data, DType::F64, {2, 3}, {1, -2, 3.5, 0, 5, 6});

  // A fill converts like a C++ cast: toward zero for integers, x != 0 for bool.
  Tensor ints = runOp({}, [](GraphBuilder &b, auto &) {
    return constant(b, -2.7, DType::I32, {3});
  });
  expectValues(ints, DType::I32, {3}, {-2, -2, -2});
  Tensor bools = runOp({}, [](GraphBuilder &b, auto &) {
    return constantData(b, {0, 0.5, -1}, DType::Bool, {3});
  });
  expectValues(bools, DType::Bool, {3}, {0, 1, 1});
}

TEST(InterpSources, ConstantI64DataIsExact) {
  // 2^62 + 1 is not a double; an integer 'data' list must not go through one.
  int64_t big = (int64_t(1) << 62) + 1;
  Node node;
  node.op = OpKind::Constant;
  node.attrs.set("dtype", std::string("i64"));
  node.attrs.set("shape", std::vector<int64_t>{2});
  node.attrs.set("data", std::vector<int64_t>{big, -big});
  node.type = {DType::I64, {2}};
  Tensor t = evaluateNode(node, {});
  EXPECT_EQ(t.data<int64_t>()[0], big);
  EXPECT_EQ(t.data<int64_t>()[1], -big);
}

TEST(InterpSources, Iota) {
  Tensor rows = runOp({}, [](GraphBuilder &b, auto &) {
    return iota(b, DType::I32, {2, 3}, 0);
  });
  expectValues(rows, DType::I32, {2, 3}, {0, 0, 0, 1, 1, 1});
  Tensor cols = runOp({}, [](GraphBuilder &b, auto &) {
    return iota(b, DType::F32, {2, 3}, -1);
  });
  expectValues(cols, DType::F32, {2, 3}, {0, 1, 2, 0, 1, 2});
  Tensor mid = runOp({}, [](GraphBuilder &b, auto &) {
    return iota(b, DType::I64, {2, 2, 2}, 1);
  });
  expectValues(mid, DType::I64, {2, 2, 2}, {0, 0, 1, 1, 0, 0, 1, 1});
}

// --- Elementwise unary ------------------------------------------------------

struct UnaryCase {
  const char *name;
  std::function<Value(Value)> build;
  std::function<double(double)> reference; // written differently where possible
  double low, high;
};

std::vector<UnaryCase> floatUnaryCases() {
  return {
      {"exp", [](Value x) { return stepc::exp(x); }, [](double x) { return std::exp(x); }, -4, 4},
      {"log", [](Value x) { return stepc::log(x); }, [](double x) { return std::log(x); }, 0.05, 5},
      {"sqrt", [](Value x) { return stepc::sqrt(x); }, [](double x) { return std::pow(x, 0.5); }, 0, 5},
      {"rsqrt", [](Value x) { return rsqrt(x); }, [](double x) { return std::pow(x, -0.5); }, 0.05, 5},
      {"tanh", [](Value x) { return stepc::tanh(x); },
       [](double x) { return (std::exp(2 * x) - 1) / (std::exp(2 * x) + 1); }, -4, 4},
      {"sigmoid", [](Value x) { return sigmoid(x); },
       [](double x) { return 0.5 * (1 + std::tanh(x / 2)); }, -8, 8},
      {"sin", [](Value x) { return stepc::sin(x); }, [](double x) { return std::sin(x); }, -4, 4},
      {"cos", [](Value x) { return stepc::cos(x); }, [](double x) { return std::cos(x); }, -4, 4},
      {"erf", [](Value x) { return stepc::erf(x); }, [](double x) { return std::erf(x); }, -3, 3},
      {"neg", [](Value x) { return neg(x); }, [](double x) { return 0 - x; }, -4, 4},
      {"abs", [](Value x) { return stepc::abs(x); }, [](double x) { return x < 0 ? -x : x; }, -4, 4},
      {"square", [](Value x) { return square(x); }, [](double x) { return x * x; }, -4, 4},
      {"relu", [](Value x) { return relu(x); }, [](double x) { return std::max(x, 0.0); }, -4, 4},
      {"sign", [](Value x) { return sign(x); },
       [](double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }, -4, 4},
  };
}

TEST(InterpUnary, HandValues) {
  Tensor x = Tensor::of<float>({4}, {0.0f, 1.0f, 4.0f, -2.0f});
  expectValues(run1(x, [](Value v) { return stepc::exp(v); }), DType::F32, {4},
               {1, std::exp(1.0), std::exp(4.0), std::exp(-2.0)});
  expectValues(run1(x, [](Value v) { return sigmoid(v); }), DType::F32, {4},
               {0.5, 1 / (1 + std::exp(-1.0)), 1 / (1 + std::exp(-4.0)),
                1 / (1 + std::exp(2.0))});
  expectValues(run1(x, [](Value v) { return rsqrt(v); }), DType::F32, {4},
               {INFINITY, 1, 0.5, NAN});
  expectValues(run1(x, [](Value v) { return stepc::sqrt(v); }), DType::F32, {4},
               {0, 1, 2, NAN});
  expectValues(run1(x, [](Value v) { return stepc::log(v); }), DType::F32, {4},
               {-INFINITY, 0, std::log(4.0), NAN});
  expectValues(run1(x, [](Value v) { return sign(v); }), DType::F32, {4}, {0, 1, 1, -1});
  expectValues(run1(x, [](Value v) { return relu(v); }), DType::F32, {4}, {0, 1, 4, 0});
  expectValues(run1(x, [](Value v) { return square(v); }), DType::F32, {4}, {0, 1, 16, 4});
  expectValues(run1(x, [](Value v) { return stepc::cos(v); }), DType::F32, {4},
               {1, std::cos(1.0), std::cos(4.0), std::cos(-2.0)});
  // sign keeps NaN; neg of +0 is -0.
  Tensor special = Tensor::of<double>({2}, {NAN, 0.0});
  expectValues(run1(special, [](Value v) { return sign(v); }), DType::F64, {2}, {NAN, 0});
  Tensor negZero = run1(special, [](Value v) { return neg(v); });
  EXPECT_TRUE(std::signbit(negZero.data<double>()[1]));
}

TEST(InterpUnary, RandomAgainstReference) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(seedNote(seed));
  std::mt19937_64 rng(seed);
  for (const UnaryCase &c : floatUnaryCases())
    for (DType dtype : kFloatTypes) {
      SCOPED_TRACE(std::string(c.name) + " " + std::string(dtypeName(dtype)));
      Tensor x = randomTensor(rng, dtype, randomShape(rng, int(uniformInt(rng, 0, 3))),
                              c.low, c.high);
      Ref want(x.shape());
      for (int64_t i = 0; i < x.numel(); ++i)
        want.values[i] = c.reference(x.real(i));
      // f32 math is single precision: a few ulp of the true value.
      expectMatches(run1(x, c.build), dtype, want, dtype == DType::F32 ? 1e-6 : 1e-14);
    }
}

TEST(InterpUnary, Integers) {
  const int32_t kMin = std::numeric_limits<int32_t>::min();
  Tensor x = Tensor::of<int32_t>({5}, {-3, 0, 7, kMin, -1});
  auto ints = [](const Tensor &t) {
    return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  };
  EXPECT_EQ(ints(run1(x, [](Value v) { return neg(v); })),
            (std::vector<int32_t>{3, 0, -7, kMin, 1})); // -INT_MIN wraps
  EXPECT_EQ(ints(run1(x, [](Value v) { return stepc::abs(v); })),
            (std::vector<int32_t>{3, 0, 7, kMin, 1}));
  EXPECT_EQ(ints(run1(x, [](Value v) { return relu(v); })),
            (std::vector<int32_t>{0, 0, 7, 0, 0}));
  EXPECT_EQ(ints(run1(x, [](Value v) { return sign(v); })),
            (std::vector<int32_t>{-1, 0, 1, -1, -1}));
  EXPECT_EQ(ints(run1(x, [](Value v) { return square(v); })),
            (std::vector<int32_t>{9, 0, 49, 0, 1})); // INT_MIN^2 wraps to 0

  Tensor y = Tensor::of<int64_t>({3}, {-5, 6, 0});
  expectValues(run1(y, [](Value v) { return square(v); }), DType::I64, {3}, {25, 36, 0});
  expectValues(run1(y, [](Value v) { return stepc::abs(v); }), DType::I64, {3}, {5, 6, 0});
}

TEST(InterpUnary, Cast) {
  Tensor x = Tensor::of<float>({5}, {-2.7f, -0.5f, 0.0f, 1.9f, 3.0f});
  expectValues(run1(x, [](Value v) { return cast(v, DType::I32); }), DType::I32, {5},
               {-2, 0, 0, 1, 3});
  expectValues(run1(x, [](Value v) { return cast(v, DType::Bool); }), DType::Bool, {5},
               {1, 1, 0, 1, 1});
  expectValues(run1(x, [](Value v) { return cast(v, DType::F64); }), DType::F64, {5},
               {double(-2.7f), -0.5, 0, double(1.9f), 3}, 0);
  Tensor b = Tensor::of<bool>({3}, {true, false, true});
  expectValues(run1(b, [](Value v) { return cast(v, DType::F32); }), DType::F32, {3},
               {1, 0, 1});
  Tensor i = Tensor::of<int64_t>({3}, {-7, 0, (int64_t(1) << 40) + 3});
  expectValues(run1(i, [](Value v) { return cast(v, DType::I32); }), DType::I32, {3},
               {-7, 0, 3}, 0); // wraps modulo 2^32 like a C++ cast
  expectValues(run1(i, [](Value v) { return cast(v, DType::Bool); }), DType::Bool, {3},
               {1, 0, 1});
}

// --- Elementwise binary -----------------------------------------------------

struct BinaryCase {
  const char *name;
  std::function<Value(Value, Value)> build;
  std::function<double(double, double)> reference;
  double low, high; // operand range
};

std::vector<BinaryCase> floatBinaryCases() {
  return {
      {"add", [](Value a, Value b) { return a + b; }, [](double a, double b) { return a + b; }, -2, 2},
      {"sub", [](Value a, Value b) { return sub(a, b); }, [](double a, double b) { return a - b; }, -2, 2},
      {"mul", [](Value a, Value b) { return a * b; }, [](double a, double b) { return a * b; }, -2, 2},
      {"div", [](Value a, Value b) { return div(a, b); }, [](double a, double b) { return a / b; }, 0.5, 2},
      {"pow", [](Value a, Value b) { return stepc::pow(a, b); },
       [](double a, double b) { return std::exp(b * std::log(a)); }, 0.5, 2},
      {"maximum", [](Value a, Value b) { return maximum(a, b); },
       [](double a, double b) { return a >= b ? a : b; }, -2, 2},
      {"minimum", [](Value a, Value b) { return minimum(a, b); },
       [](double a, double b) { return a <= b ? a : b; }, -2, 2},
  };
}

// Operand shape pairs that exercise every broadcasting rule.
const std::vector<std::pair<Shape, Shape>> kBroadcastPairs = {
    {{3, 1}, {1, 4}}, {{}, {2, 3}},     {{2, 3}, {}},      {{2, 1, 4}, {3, 1}},
    {{4}, {2, 3, 4}}, {{2, 3}, {2, 3}}, {{1, 1}, {2, 1, 3}}};

TEST(InterpBinary, HandValues) {
  Tensor a = Tensor::of<float>({3, 1}, {1, 2, 3});
  Tensor b = Tensor::of<float>({1, 4}, {10, 20, 30, 40});
  expectValues(run2(a, b, [](Value x, Value y) { return x + y; }), DType::F32, {3, 4},
               {11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43});
  expectValues(run2(a, b, [](Value x, Value y) { return sub(y, x); }), DType::F32, {3, 4},
               {9, 19, 29, 39, 8, 18, 28, 38, 7, 17, 27, 37});
  Tensor s = Tensor::of<double>({}, {2});
  Tensor m = Tensor::of<double>({2, 3}, {1, 2, 3, 4, 5, 6});
  expectValues(run2(s, m, [](Value x, Value y) { return div(x, y); }), DType::F64, {2, 3},
               {2, 1, 2.0 / 3, 0.5, 0.4, 2.0 / 6});
  expectValues(run2(m, s, [](Value x, Value y) { return stepc::pow(x, y); }), DType::F64,
               {2, 3}, {1, 4, 9, 16, 25, 36});
  Tensor c = Tensor::of<float>({2, 1, 2}, {1, 2, 3, 4});
  Tensor d = Tensor::of<float>({3, 1}, {0, 10, 100});
  expectValues(run2(c, d, [](Value x, Value y) { return x * y; }), DType::F32, {2, 3, 2},
               {0, 0, 10, 20, 100, 200, 0, 0, 30, 40, 300, 400});
  // maximum/minimum propagate NaN whichever side it is on.
  Tensor n = Tensor::of<float>({3}, {NAN, 1, 5});
  Tensor k = Tensor::of<float>({3}, {0, NAN, 2});
  expectValues(run2(n, k, [](Value x, Value y) { return maximum(x, y); }), DType::F32, {3},
               {NAN, NAN, 5});
  expectValues(run2(n, k, [](Value x, Value y) { return minimum(x, y); }), DType::F32, {3},
               {NAN, NAN, 2});
}

TEST(InterpBinary, RandomBroadcastAgainstReference) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(seedNote(seed));
  std::mt19937_64 rng(seed);
  for (const BinaryCase &c : floatBinaryCases())
    for (DType dtype : kFloatTypes)
      for (const auto &[sa, sb] : kBroadcastPairs) {
        SCOPED_TRACE(std::string(c.name) + " " + std::string(dtypeName(dtype)) + " " +
                     shapeString(sa) + " " + shapeString(sb));
        Tensor a = randomTensor(rng, dtype, sa, c.low, c.high);
        Tensor b = randomTensor(rng, dtype, sb, c.low, c.high);
        Tensor got = run2(a, b, c.build);
        Ref want(got.shape());
        for (int64_t i = 0; i < got.numel(); ++i) {
          auto idx = unravel(i, got.shape());
          want.values[i] = c.reference(broadcastRead(a, idx), broadcastRead(b, idx));
        }
        expectMatches(got, dtype, want, dtype == DType::F32 ? 1e-6 : 1e-14);
      }
}

TEST(InterpBinary, IntegerArithmetic) {
  for (DType dtype : {DType::I32, DType::I64}) {
    SCOPED_TRACE(std::string(dtypeName(dtype)));
    double lowest = dtype == DType::I32 ? double(std::numeric_limits<int32_t>::min())
                                        : double(std::numeric_limits<int64_t>::min());
    Tensor a = Tensor::fromReals(dtype, {7}, {7, -7, 7, -7, 5, lowest, 0});
    Tensor b = Tensor::fromReals(dtype, {7}, {2, 2, -2, -2, 0, -1, 0});
    // Truncation toward zero; x/0 = 0 and INT_MIN/-1 = INT_MIN, never a trap.
    expectValues(run2(a, b, [](Value x, Value y) { return div(x, y); }), dtype, {7},
                 {3, -3, -3, 3, 0, lowest, 0}, 0);
    expectValues(run2(a, b, [](Value x, Value y) { return x * y; }), dtype, {7},
                 {14, -14, -14, 14, 0, lowest, 0}, 0); // INT_MIN * -1 wraps
    expectValues(run2(a, b, [](Value x, Value y) { return maximum(x, y); }), dtype, {7},
                 {7, 2, 7, -2, 5, -1, 0}, 0);
    expectValues(run2(a, b, [](Value x, Value y) { return minimum(x, y); }), dtype, {7},
                 {2, -7, -2, -7, 0, lowest, 0}, 0);
    expectValues(run2(a, b, [](Value x, Value y) { return x - y; }), dtype, {7},
                 {5, -9, 9, -5, 5, lowest + 1, 0}, 0);
  }
  // Overflow wraps rather than being undefined.
  Tensor big = Tensor::of<int32_t>({1}, {std::numeric_limits<int32_t>::max()});
  Tensor one = Tensor::of<int32_t>({1}, {1});
  Tensor sum = run2(big, one, [](Value x, Value y) { return x + y; });
  EXPECT_EQ(sum.data<int32_t>()[0], std::numeric_limits<int32_t>::min());
  // Broadcasting works for integers too.
  Tensor col = Tensor::of<int64_t>({2, 1}, {1, 2});
  Tensor row = Tensor::of<int64_t>({3}, {10, 20, 30});
  expectValues(run2(col, row, [](Value x, Value y) { return x + y; }), DType::I64, {2, 3},
               {11, 21, 31, 12, 22, 32}, 0);
}

TEST(InterpBinary, Comparisons) {
  Tensor a = Tensor::of<float>({2, 1}, {1, 3});
  Tensor b = Tensor::of<float>({3}, {1, 2, 3});
  using Cmp = std::function<Value(Value, Value)>;
  std::vector<std::pair<Cmp, std::vector<double>>> cases = {
      {[](Value x, Value y) { return eq(x, y); }, {1, 0, 0, 0, 0, 1}},
      {[](Value x, Value y) { return ne(x, y); }, {0, 1, 1, 1, 1, 0}},
      {[](Value x, Value y) { return lt(x, y); }, {0, 1, 1, 0, 0, 0}},
      {[](Value x, Value y) { return le(x, y); }, {1, 1, 1, 0, 0, 1}},
      {[](Value x, Value y) { return gt(x, y); }, {0, 0, 0, 1, 1, 0}},
      {[](Value x, Value y) { return ge(x, y); }, {1, 0, 0, 1, 1, 1}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("comparison " + std::to_string(i));
    expectValues(run2(a, b, cases[i].first), DType::Bool, {2, 3}, cases[i].second, 0);
  }
  // Bool and integer operands; NaN is unequal to everything, itself included.
  Tensor p = Tensor::of<bool>({3}, {true, false, true});
  Tensor q = Tensor::of<bool>({3}, {true, true, false});
  expectValues(run2(p, q, [](Value x, Value y) { return eq(x, y); }), DType::Bool, {3},
               {1, 0, 0}, 0);
  Tensor n = Tensor::of<double>({2}, {NAN, 1});
  expectValues(run2(n, n, [](Value x, Value y) { return eq(x, y); }), DType::Bool, {2},
               {0, 1}, 0);
  expectValues(run2(n, n, [](Value x, Value y) { return ne(x, y); }), DType::Bool, {2},
               {1, 0}, 0);
  Tensor i = Tensor::of<int32_t>({3}, {-1, 0, 1});
  Tensor z = Tensor::of<int32_t>({}, {0});
  expectValues(run2(i, z, [](Value x, Value y) { return lt(x, y); }), DType::Bool, {3},
               {1, 0, 0}, 0);
}

TEST(InterpBinary, Select) {
  Tensor cond = Tensor::of<bool>({2, 1}, {true, false});
  Tensor a = Tensor::of<float>({3}, {1, 2, 3});
  Tensor b = Tensor::of<float>({}, {-1});
  Tensor got = runOp({cond, a, b}, [](GraphBuilder &, std::vector<Value> &v) {
    return select(v[0], v[1], v[2]);
  });
  expectValues(got, DType::F32, {2, 3}, {1, 2, 3, -1, -1, -1});

  uint64_t seed = freshSeed();
  SCOPED_TRACE(seedNote(seed));
  std::mt19937_64 rng(seed);
  for (DType dtype : {DType::F64, DType::I32, DType::Bool}) {
    Tensor c = randomTensor(rng, DType::Bool, {2, 1, 4});
    Tensor x = randomTensor(rng, dtype, {3, 1});
    Tensor y = randomTensor(rng, dtype, {3, 4});
    Tensor r = runOp({c, x, y}, [](GraphBuilder &, std::vector<Value> &v) {
      return select(v[0], v[1], v[2]);
    });
    Ref want({2, 3, 4});
    for (int64_t i = 0; i < numelOf(want.shape); ++i) {
      auto idx = unravel(i, want.shape);
      want.values[i] = broadcastRead(c, idx) != 0 ? broadcastRead(x, idx) : broadcastRead(y, idx);
    }
    expectMatches(r, dtype, want, 0);
  }
}

// --- Reductions ---------------------------------------------------------------

TEST(InterpReduce, HandValues) {
  Tensor x = Tensor::of<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  expectValues(run1(x, [](Value v) { return sum(v, {0}); }), DType::F32, {3}, {5, 7, 9});
  expectValues(run1(x, [](Value v) { return sum(v, {-1}, true); }), DType::F32, {2, 1},
               {6, 15});
  expectValues(run1(x, [](Value v) { return sum(v, {0, 1}); }), DType::F32, {}, {21});
  expectValues(run1(x, [](Value v) { return sum(v); }), DType::F32, {}, {21});
  expectValues(run1(x, [](Value v) { return mean(v, {1}); }), DType::F32, {2}, {2, 5});
  expectValues(run1(x, [](Value v) { return mean(v, {0, 1}, true); }), DType::F32, {1, 1},
               {3.5});
  expectValues(run1(x, [](Value v) { return max(v, {0}); }), DType::F32, {3}, {4, 5, 6});
  expectValues(run1(x, [](Value v) { return min(v, {1}); }), DType::F32, {2}, {1, 4});
  Tensor i = Tensor::of<int32_t>({2, 2}, {-3, 7, 2, -9});
  expectValues(run1(i, [](Value v) { return sum(v, {1}); }), DType::I32, {2}, {4, -7}, 0);
  expectValues(run1(i, [](Value v) { return max(v, {0, 1}); }), DType::I32, {}, {7}, 0);
  expectValues(run1(i, [](Value v) { return min(v, {0}); }), DType::I32, {2}, {-3, -9}, 0);
  // NaN propagates through max/min.
  Tensor n = Tensor::of<double>({3}, {1, NAN, 2});
  expectValues(run1(n, [](Value v) { return max(v, {0}); }), DType::F64, {}, {NAN});
  expectValues(run1(n, [](Value v) { return min(v, {0}); }), DType::F64, {}, {NAN});
}

TEST(InterpReduce, RandomAgainstReference) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(seedNote(seed));
  std::mt19937_64 rng(seed);
  enum Kind { Sum, Mean, Max, Min };
  for (int trial = 0; trial < 40; ++trial) {
    DType dtype = kFloatTypes[trial % 2];
    Kind kind = Kind(trial / 2 % 4);
    int rank = int(uniformInt(rng, 1, 4));
    Tensor x = randomTensor(rng, dtype, randomShape(rng, rank));
    std::vector<int64_t> axes;
    std::vector<bool> reduced(rank, false);
    for (int d = 0; d < rank; ++d)
      if (uniformInt(rng, 0, 1)) {
        reduced[d] = true;
        axes.push_back(uniformInt(rng, 0, 1) ? d : d - rank); // negative form too
      }
    if (axes.empty()) {
      reduced[0] = true;
      axes.push_back(0);
    }
    bool keepdims = uniformInt(rng, 0, 1);
    SCOPED_TRACE("trial " + std::to_string(trial) + " x " + typeString(x.type()) +
                 " kind " + std::to_string(kind) + " keepdims " + std::to_string(keepdims));
    Tensor got = run1(x, [&](Value v) {
      switch (kind) {
      case Sum: return sum(v, axes, keepdims);
      case Mean: return mean(v, axes, keepdims);
      case Max: return max(v, axes, keepdims);
      case Min: return min(v, axes, keepdims);
      }
      return Value();
    });
    // For each output element, scan all inputs and keep those whose kept
    // coordinates match: quadratic, and shares no index math with the kernel.
    Shape outShape, keptShape;
    for (int d = 0; d < rank; ++d) {
      keptShape.push_back(reduced[d] ? 1 : x.shape()[d]);
      if (!reduced[d] || keepdims)
        outShape.push_back(keptShape.back());
    }
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto kept = unravel(o, keptShape);
      std::vector<double> members;
      for (int64_t i = 0; i < x.numel(); ++i) {
        auto idx = unravel(i, x.shape());
        bool match = true;
        for (int d = 0; d < rank; ++d)
          match = match && (reduced[d] || idx[d] == kept[d]);
        if (match)
          members.push_back(x.real(i));
      }
      double acc = 0;
      for (double m : members)
        acc += m;
      switch (kind) {
      case Sum: want.values[o] = acc; break;
      case Mean: want.values[o] = acc / double(members.size()); break;
      case Max: want.values[o] = *std::max_element(members.begin(), members.end()); break;
      case Min: want.values[o] = *std::min_element(members.begin(), members.end()); break;
      }
    }
    expectMatches(got, dtype, want, tolFor(dtype));
  }
}

TEST(InterpReduce, ArgMax) {
  // Ties give the first index.
  Tensor x = Tensor::of<float>({2, 4}, {1, 3, 3, 2, 5, 5, 5, 5});
  expectValues(run1(x, [](Value v) { return argmax(v, 1); }), DType::I64, {2}, {1, 0}, 0);
  expectValues(run1(x, [](Value v) { return argmax(v, -1, true); }), DType::I64, {2, 1},
               {1, 0}, 0);
  expectValues(run1(x, [](Value v) { return argmax(v, 0); }), DType::I64, {4},
               {1, 1, 1, 1}, 0);
  Tensor i = Tensor::of<int32_t>({3}, {-4, -2, -2});
  expectValues(run1(i, [](Value v) { return argmax(v, 0); }), DType::I64, {}, {1}, 0);

  randomTrials(10, [&](std::mt19937_64 &rng, int trial) {
    int rank = int(uniformInt(rng, 1, 4));
    // Small integers make ties common.
    Tensor t = randomTensor(rng, trial % 2 ? DType::I64 : DType::F32, randomShape(rng, rank),
                            -2, 2);
    if (isFloat(t.dtype()))
      for (int64_t k = 0; k < t.numel(); ++k)
        t.setReal(k, std::round(t.real(k)));
    int64_t axis = uniformInt(rng, 0, rank - 1);
    Tensor got = run1(t, [&](Value v) { return argmax(v, axis, true); });
    Shape outShape = t.shape();
    outShape[axis] = 1;
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto idx = unravel(o, outShape);
      int64_t best = -1;
      double bestValue = -INFINITY;
      for (int64_t k = 0; k < t.shape()[axis]; ++k) {
        idx[axis] = k;
        double v = t.real(ravel(idx, t.shape()));
        if (best < 0 || v > bestValue) {
          best = k;
          bestValue = v;
        }
      }
      want.values[o] = double(best);
    }
    expectMatches(got, DType::I64, want, 0);
  });
}

// --- Linear algebra and data movement ----------------------------------------

TEST(InterpMatMul, HandValues) {
  Tensor a = Tensor::of<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::of<float>({3, 2}, {7, 8, 9, 10, 11, 12});
  expectValues(run2(a, b, [](Value x, Value y) { return matmul(x, y); }), DType::F32, {2, 2},
               {58, 64, 139, 154});
  Tensor i = Tensor::of<int32_t>({1, 2}, {2, -3});
  Tensor j = Tensor::of<int32_t>({2, 2}, {1, 2, 3, 4});
  expectValues(run2(i, j, [](Value x, Value y) { return matmul(x, y); }), DType::I32, {1, 2},
               {-7, -8}, 0);
}

TEST(InterpMatMul, RandomBatchBroadcast) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(seedNote(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::pair<Shape, Shape>> batches = {
      {{}, {}}, {{3}, {3}}, {{2, 1}, {3}}, {{1}, {2, 4}}, {{}, {2}}, {{2, 3}, {}}};
  for (DType dtype : kFloatTypes)
    for (const auto &[ba, bb] : batches) {
      int64_t m = uniformInt(rng, 1, 5), k = uniformInt(rng, 1, 6), n = uniformInt(rng, 1, 5);
      Shape sa = ba, sb = bb;
      sa.insert(sa.end(), {m, k});
      sb.insert(sb.end(), {k, n});
      SCOPED_TRACE(shapeString(sa) + " x " + shapeString(sb));
      Tensor a = randomTensor(rng, dtype, sa), b = randomTensor(rng, dtype, sb);
      Tensor got = run2(a, b, [](Value x, Value y) { return matmul(x, y); });
      // Expected batch shape: NumPy broadcast of the batch dims.
      ASSERT_EQ(got.shape()[got.rank() - 2], m);
      ASSERT_EQ(got.shape()[got.rank() - 1], n);
      Ref want(got.shape());
      for (int64_t o = 0; o < got.numel(); ++o) {
        auto idx = unravel(o, got.shape());
        size_t r = idx.size();
        double acc = 0;
        for (int64_t l = 0; l < k; ++l) {
          auto ia = idx, ib = idx;
          ia[r - 1] = l; // a[..., i, l]
          ib[r - 2] = l; // b[..., l, j]
          acc += broadcastRead(a, ia) * broadcastRead(b, ib);
        }
        want.values[o] = acc;
      }
      expectMatches(got, dtype, want, tolFor(dtype));
    }
}

TEST(InterpMovement, TransposeReshapeBroadcast) {
  Tensor x = Tensor::of<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  expectValues(run1(x, [](Value v) { return transpose(v, {1, 0}); }), DType::F32, {3, 2},
               {1, 4, 2, 5, 3, 6});
  expectValues(run1(x, [](Value v) { return reshape(v, {3, -1}); }), DType::F32, {3, 2},
               {1, 2, 3, 4, 5, 6});
  expectValues(run1(x, [](Value v) { return reshape(v, {6}); }), DType::F32, {6},
               {1, 2, 3, 4, 5, 6});
  Tensor c = Tensor::of<int32_t>({2, 1}, {7, 8});
  expectValues(run1(c, [](Value v) { return broadcastTo(v, {2, 2, 3}); }), DType::I32,
               {2, 2, 3}, {7, 7, 7, 8, 8, 8, 7, 7, 7, 8, 8, 8}, 0);

  randomTrials(10, [&](std::mt19937_64 &rng, int trial) {
    int rank = int(uniformInt(rng, 1, 5));
    Tensor t = randomTensor(rng, trial % 2 ? DType::F64 : DType::Bool, randomShape(rng, rank));
    std::vector<int64_t> perm(rank);
    for (int d = 0; d < rank; ++d)
      perm[d] = d;
    std::shuffle(perm.begin(), perm.end(), rng);
    Tensor got = run1(t, [&](Value v) { return transpose(v, perm); });
    Shape outShape(rank);
    for (int d = 0; d < rank; ++d)
      outShape[d] = t.shape()[perm[d]];
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto idx = unravel(o, outShape);
      std::vector<int64_t> in(rank);
      for (int d = 0; d < rank; ++d)
        in[perm[d]] = idx[d];
      want.values[o] = t.real(ravel(in, t.shape()));
    }
    expectMatches(got, t.dtype(), want, 0);
  });
}

TEST(InterpMovement, Slice) {
  Tensor x = Tensor::of<float>({3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  expectValues(run1(x, [](Value v) { return slice(v, {1, 0}, {3, 4}, {1, 2}); }),
               DType::F32, {2, 2}, {4, 6, 8, 10});
  expectValues(run1(x, [](Value v) { return slice(v, {0, 1}, {3, 4}, {2, 3}); }),
               DType::F32, {2, 1}, {1, 9});
  expectValues(run1(x, [](Value v) { return slice(v, {2, 2}, {2, 4}, {1, 1}); }),
               DType::F32, {0, 2}, {});

  randomTrials(10, [&](std::mt19937_64 &rng, int) {
    int rank = int(uniformInt(rng, 1, 4));
    Tensor t = randomTensor(rng, DType::I32, randomShape(rng, rank, 6), -50, 50);
    std::vector<int64_t> starts(rank), limits(rank), steps(rank);
    Shape outShape(rank);
    for (int d = 0; d < rank; ++d) {
      starts[d] = uniformInt(rng, 0, t.shape()[d] - 1);
      limits[d] = uniformInt(rng, starts[d] + 1, t.shape()[d]);
      steps[d] = uniformInt(rng, 1, 3);
      outShape[d] = (limits[d] - starts[d] + steps[d] - 1) / steps[d];
    }
    Tensor got = run1(t, [&](Value v) { return slice(v, starts, limits, steps); });
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto idx = unravel(o, outShape);
      for (int d = 0; d < rank; ++d)
        idx[d] = starts[d] + idx[d] * steps[d];
      want.values[o] = t.real(ravel(idx, t.shape()));
    }
    expectMatches(got, DType::I32, want, 0);
  });
}

TEST(InterpMovement, Concat) {
  Tensor a = Tensor::of<float>({2, 1}, {1, 2});
  Tensor b = Tensor::of<float>({2, 2}, {3, 4, 5, 6});
  Tensor c = Tensor::of<float>({2, 0}, {});
  Tensor got = runOp({a, b, c, a}, [](GraphBuilder &, std::vector<Value> &v) {
    return concat(v, -1);
  });
  expectValues(got, DType::F32, {2, 4}, {1, 3, 4, 1, 2, 5, 6, 2});
  expectValues(runOp({a, a}, [](GraphBuilder &, std::vector<Value> &v) {
                 return concat(v, 0);
               }),
               DType::F32, {4, 1}, {1, 2, 1, 2});

  randomTrials(10, [&](std::mt19937_64 &rng, int) {
    int rank = int(uniformInt(rng, 1, 4));
    int64_t axis = uniformInt(rng, 0, rank - 1);
    Shape base = randomShape(rng, rank);
    std::vector<Tensor> parts;
    for (int64_t p = uniformInt(rng, 1, 4); p > 0; --p) {
      Shape s = base;
      s[axis] = uniformInt(rng, 1, 3);
      parts.push_back(randomTensor(rng, DType::F64, s));
    }
    Tensor r = runOp(parts, [&](GraphBuilder &, std::vector<Value> &v) {
      return concat(v, axis);
    });
    Shape outShape = base;
    outShape[axis] = 0;
    for (const Tensor &p : parts)
      outShape[axis] += p.shape()[axis];
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto idx = unravel(o, outShape);
      size_t p = 0;
      while (idx[axis] >= parts[p].shape()[axis])
        idx[axis] -= parts[p++].shape()[axis];
      want.values[o] = parts[p].real(ravel(idx, parts[p].shape()));
    }
    expectMatches(r, DType::F64, want, 0);
  });
}

TEST(InterpMovement, Pad) {
  Tensor x = Tensor::of<float>({2, 2}, {1, 2, 3, 4});
  expectValues(run1(x, [](Value v) { return pad(v, {1, 0}, {0, 2}, -1); }), DType::F32,
               {3, 4}, {-1, -1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1});

  randomTrials(10, [&](std::mt19937_64 &rng, int trial) {
    int rank = int(uniformInt(rng, 1, 4));
    Tensor t = randomTensor(rng, trial % 2 ? DType::I64 : DType::F32, randomShape(rng, rank));
    std::vector<int64_t> low(rank), high(rank);
    Shape outShape(rank);
    for (int d = 0; d < rank; ++d) {
      low[d] = uniformInt(rng, 0, 2);
      high[d] = uniformInt(rng, 0, 2);
      outShape[d] = t.shape()[d] + low[d] + high[d];
    }
    Tensor got = run1(t, [&](Value v) { return pad(v, low, high, 7); });
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto idx = unravel(o, outShape);
      bool inside = true;
      for (int d = 0; d < rank; ++d) {
        idx[d] -= low[d];
        inside = inside && idx[d] >= 0 && idx[d] < t.shape()[d];
      }
      want.values[o] = inside ? t.real(ravel(idx, t.shape())) : 7;
    }
    expectMatches(got, t.dtype(), want, 0);
  });
}

TEST(InterpMovement, Gather) {
  Tensor data = Tensor::of<float>({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor rows = Tensor::of<int64_t>({2, 2}, {2, 0, 1, 1});
  expectValues(run2(data, rows, [](Value d, Value i) { return gather(d, i, 0); }),
               DType::F32, {2, 2, 2}, {5, 6, 1, 2, 3, 4, 3, 4});
  Tensor cols = Tensor::of<int32_t>({3}, {1, 0, 1});
  expectValues(run2(data, cols, [](Value d, Value i) { return gather(d, i, -1); }),
               DType::F32, {3, 3}, {2, 1, 2, 4, 3, 4, 6, 5, 6});
  Tensor scalar = Tensor::of<int32_t>({}, {2});
  expectValues(run2(data, scalar, [](Value d, Value i) { return gather(d, i, 0); }),
               DType::F32, {2}, {5, 6});

  randomTrials(10, [&](std::mt19937_64 &rng, int) {
    int rank = int(uniformInt(rng, 1, 3));
    Tensor d = randomTensor(rng, DType::F64, randomShape(rng, rank));
    int64_t axis = uniformInt(rng, 0, rank - 1);
    int indexRank = int(uniformInt(rng, 0, 2));
    Tensor idx = randomTensor(rng, DType::I32, randomShape(rng, indexRank), 0,
                              double(d.shape()[axis] - 1));
    Tensor got = run2(d, idx, [&](Value a, Value i) { return gather(a, i, axis); });
    Shape outShape(d.shape().begin(), d.shape().begin() + axis);
    outShape.insert(outShape.end(), idx.shape().begin(), idx.shape().end());
    outShape.insert(outShape.end(), d.shape().begin() + axis + 1, d.shape().end());
    Ref want(outShape);
    for (int64_t o = 0; o < numelOf(outShape); ++o) {
      auto out = unravel(o, outShape);
      std::vector<int64_t> inner(out.begin() + axis, out.begin() + axis + indexRank);
      std::vector<int64_t> src(out.begin(), out.begin() + axis);
      src.push_back(int64_t(idx.real(ravel(inner, idx.shape()))));
      src.insert(src.end(), out.begin() + axis + indexRank, out.end());
      want.values[o] = d.real(ravel(src, d.shape()));
    }
    expectMatches(got, DType::F64, want, 0);
  });
}

TEST(InterpMovement, GatherOutOfRangeNamesIndexAndRange) {
  Tensor data = Tensor::of<float>({3, 2}, {1, 2, 3, 4, 5, 6});
  for (int64_t bad : {3, 5, -1}) {
    Tensor idx = Tensor::of<int64_t>({2}, {0, bad});
    std::string message = errorOf([&] {
      run2(data, idx, [](Value d, Value i) { return gather(d, i, 0); });
    });
    EXPECT_THAT(message, HasSubstr("gather: index " + std::to_string(bad)));
    EXPECT_THAT(message, HasSubstr("valid indices are 0 to 2"));
    // The node's location is the builder call site in this file.
    EXPECT_THAT(message, HasSubstr("test_interp_ops.cpp:"));
  }
}

TEST(InterpMovement, OneHot) {
  Tensor idx = Tensor::of<int32_t>({4}, {0, 2, 3, -1});
  expectValues(run1(idx, [](Value v) { return oneHot(v, 3, DType::F32); }), DType::F32,
               {4, 3}, {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0});
  Tensor idx2 = Tensor::of<int64_t>({2, 1}, {1, 0});
  expectValues(run1(idx2, [](Value v) { return oneHot(v, 2, DType::I32); }), DType::I32,
               {2, 1, 2}, {0, 1, 1, 0}, 0);
  expectValues(run1(idx2, [](Value v) { return oneHot(v, 2, DType::Bool); }), DType::Bool,
               {2, 1, 2}, {0, 1, 1, 0}, 0);
}

// --- Convolution and pooling ------------------------------------------------------

TEST(InterpConv, HandValues) {
  // 3x3 input 1..9, 2x2 kernel of ones: each output is a 2x2 window sum.
  Tensor x = Tensor::of<float>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = Tensor::of<float>({1, 1, 2, 2}, {1, 1, 1, 1});
  expectValues(run2(x, w, [](Value a, Value b) { return conv2d(a, b); }), DType::F32,
               {1, 1, 2, 2}, {12, 16, 24, 28});
  // Padding 1, stride 2: windows at the corners see the zero padding.
  Conv2dOptions padded;
  padded.padding = {1, 1};
  padded.stride = {2, 2};
  expectValues(run2(x, w, [&](Value a, Value b) { return conv2d(a, b, padded); }),
               DType::F32, {1, 1, 2, 2}, {1, 5, 11, 28});
  // Dilation 2 with a 2x2 kernel reads the four corners.
  Conv2dOptions dilated;
  dilated.dilation = {2, 2};
  expectValues(run2(x, w, [&](Value a, Value b) { return conv2d(a, b, dilated); }),
               DType::F32, {1, 1, 1, 1}, {20});
  // Two groups: each output channel sees only its own input channel.
  Tensor x2 = Tensor::of<double>({1, 2, 1, 2}, {1, 2, 10, 20});
  Tensor w2 = Tensor::of<double>({2, 1, 1, 1}, {3, -1});
  Conv2dOptions grouped;
  grouped.groups = 2;
  expectValues(run2(x2, w2, [&](Value a, Value b) { return conv2d(a, b, grouped); }),
               DType::F64, {1, 2, 1, 2}, {3, 6, -10, -20});
}

TEST(InterpConv, RandomAgainstScatterReference) {
  randomTrials(16, [&](std::mt19937_64 &rng, int trial) {
    DType dtype = kFloatTypes[trial % 2];
    int64_t n = uniformInt(rng, 1, 2), groups = uniformInt(rng, 1, 3);
    int64_t cg = uniformInt(rng, 1, 3), og = uniformInt(rng, 1, 3);
    int64_t kh = uniformInt(rng, 1, 3), kw = uniformInt(rng, 1, 3);
    int64_t h = uniformInt(rng, 3, 8), wd = uniformInt(rng, 3, 8);
    Conv2dOptions opt;
    opt.stride = {uniformInt(rng, 1, 2), uniformInt(rng, 1, 2)};
    opt.padding = {uniformInt(rng, 0, 2), uniformInt(rng, 0, 2)};
    opt.dilation = {uniformInt(rng, 1, 2), uniformInt(rng, 1, 2)};
    opt.groups = groups;
    int64_t spanH = opt.dilation[0] * (kh - 1) + 1, spanW = opt.dilation[1] * (kw - 1) + 1;
    if (h + 2 * opt.padding[0] < spanH || wd + 2 * opt.padding[1] < spanW)
      return; // the kernel does not fit: a trial without a check
    int64_t oh = (h + 2 * opt.padding[0] - spanH) / opt.stride[0] + 1;
    int64_t ow = (wd + 2 * opt.padding[1] - spanW) / opt.stride[1] + 1;
    int64_t c = cg * groups, o = og * groups;
    Tensor x = randomTensor(rng, dtype, {n, c, h, wd});
    Tensor w = randomTensor(rng, dtype, {o, cg, kh, kw});
    SCOPED_TRACE("trial " + std::to_string(trial) + " x " + typeString(x.type()) + " w " +
                 typeString(w.type()));
    Tensor got = run2(x, w, [&](Value a, Value b) { return conv2d(a, b, opt); });
    // Scatter form: every input pixel pushes its contribution to each output
    // that reads it, instead of each output gathering its window.
    Ref want({n, o, oh, ow});
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t xx = 0; xx < wd; ++xx) {
            double v = x.real(ravel({b, ci, y, xx}, x.shape()));
            int64_t g = ci / cg;
            for (int64_t f = g * og; f < (g + 1) * og; ++f)
              for (int64_t a = 0; a < kh; ++a)
                for (int64_t e = 0; e < kw; ++e) {
                  int64_t ty = y + opt.padding[0] - a * opt.dilation[0];
                  int64_t tx = xx + opt.padding[1] - e * opt.dilation[1];
                  if (ty < 0 || tx < 0 || ty % opt.stride[0] || tx % opt.stride[1])
                    continue;
                  int64_t oy = ty / opt.stride[0], ox = tx / opt.stride[1];
                  if (oy >= oh || ox >= ow)
                    continue;
                  want.values[ravel({b, f, oy, ox}, want.shape)] +=
                      v * w.real(ravel({f, ci % cg, a, e}, w.shape()));
                }
          }
    expectMatches(got, dtype, want, tolFor(dtype));
  });
}

TEST(InterpPool, HandValues) {
  Tensor x = Tensor::of<float>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Pool2dOptions k2s1;
  k2s1.kernel = {2, 2};
  k2s1.stride = {1, 1};
  expectValues(run1(x, [&](Value v) { return maxPool2d(v, k2s1); }), DType::F32,
               {1, 1, 2, 2}, {5, 6, 8, 9});
  expectValues(run1(x, [&](Value v) { return avgPool2d(v, k2s1); }), DType::F32,
               {1, 1, 2, 2}, {3, 4, 6, 7});
  // Padding 1, stride 2: corner windows hold one real element.
  Pool2dOptions padded;
  padded.kernel = {2, 2};
  padded.stride = {2, 2};
  padded.padding = {1, 1};
  Tensor neg = Tensor::of<float>({1, 1, 3, 3}, {-1, -2, -3, -4, -5, -6, -7, -8, -9});
  // Padding never wins a max, even over negative values.
  expectValues(run1(neg, [&](Value v) { return maxPool2d(v, padded); }), DType::F32,
               {1, 1, 2, 2}, {-1, -2, -4, -5});
  expectValues(run1(x, [&](Value v) { return avgPool2d(v, padded); }), DType::F32,
               {1, 1, 2, 2}, {0.25, 5.0 / 4, 11.0 / 4, 28.0 / 4});
  padded.countIncludePad = false;
  expectValues(run1(x, [&](Value v) { return avgPool2d(v, padded); }), DType::F32,
               {1, 1, 2, 2}, {1, 5.0 / 2, 11.0 / 2, 28.0 / 4});
}

TEST(InterpPool, RandomAgainstReference) {
  randomTrials(24, [&](std::mt19937_64 &rng, int trial) {
    DType dtype = kFloatTypes[trial % 2];
    bool average = trial % 4 >= 2;
    Pool2dOptions opt;
    opt.kernel = {uniformInt(rng, 1, 3), uniformInt(rng, 1, 3)};
    opt.stride = {uniformInt(rng, 1, 3), uniformInt(rng, 1, 3)};
    opt.padding = {uniformInt(rng, 0, opt.kernel[0] / 2), uniformInt(rng, 0, opt.kernel[1] / 2)};
    opt.countIncludePad = uniformInt(rng, 0, 1);
    Tensor x = randomTensor(rng, dtype,
                            {uniformInt(rng, 1, 2), uniformInt(rng, 1, 3),
                             uniformInt(rng, 3, 7), uniformInt(rng, 3, 7)});
    SCOPED_TRACE("trial " + std::to_string(trial) + " x " + typeString(x.type()));
    Tensor got = run1(x, [&](Value v) {
      return average ? avgPool2d(v, opt) : maxPool2d(v, opt);
    });
    const Shape &s = x.shape();
    int64_t oh = (s[2] + 2 * opt.padding[0] - opt.kernel[0]) / opt.stride[0] + 1;
    int64_t ow = (s[3] + 2 * opt.padding[1] - opt.kernel[1]) / opt.stride[1] + 1;
    Ref want({s[0], s[1], oh, ow});
    for (int64_t o = 0; o < numelOf(want.shape); ++o) {
      auto idx = unravel(o, want.shape);
      std::vector<double> window;
      for (int64_t a = 0; a < opt.kernel[0]; ++a)
        for (int64_t e = 0; e < opt.kernel[1]; ++e) {
          int64_t y = idx[2] * opt.stride[0] + a - opt.padding[0];
          int64_t z = idx[3] * opt.stride[1] + e - opt.padding[1];
          if (y >= 0 && y < s[2] && z >= 0 && z < s[3])
            window.push_back(x.real(ravel({idx[0], idx[1], y, z}, s)));
        }
      double total = 0;
      for (double v : window)
        total += v;
      double area = double(opt.kernel[0] * opt.kernel[1]);
      want.values[o] = !average ? *std::max_element(window.begin(), window.end())
                       : opt.countIncludePad ? total / area
                                             : total / double(window.size());
    }
    expectMatches(got, dtype, want, tolFor(dtype));
  });
}

// --- Dropout --------------------------------------------------------------------

TEST(InterpDropout, MaskIsCounterBasedAndScaled) {
  for (DType dtype : kFloatTypes) {
    SCOPED_TRACE(std::string(dtypeName(dtype)));
    int64_t n = 2000;
    Tensor x(dtype, {n});
    for (int64_t i = 0; i < n; ++i)
      x.setReal(i, 1 + double(i % 7));
    for (int64_t seedValue : {int64_t(42), int64_t(-3)}) {
      Tensor s = Tensor::of<int64_t>({}, {seedValue});
      double rate = 0.25;
      Tensor got = run2(x, s, [&](Value v, Value sd) { return dropout(v, sd, rate); });
      int64_t kept = 0;
      for (int64_t i = 0; i < n; ++i) {
        bool keep = randomUniform(uint64_t(seedValue), uint64_t(i)) >= rate;
        kept += keep;
        double want = keep ? x.real(i) / (1 - rate) : 0;
        EXPECT_NEAR(got.real(i), want, 1e-6 * want) << "element " << i;
      }
      EXPECT_NEAR(double(kept) / double(n), 1 - rate, 0.05);
    }
    // Rate 0 is the identity, bit for bit.
    Tensor s = Tensor::of<int64_t>({}, {7});
    Tensor same = run2(x, s, [](Value v, Value sd) { return dropout(v, sd, 0.0); });
    EXPECT_TRUE(same == x);
  }
}

// --- The interpreter driver -------------------------------------------------------

Graph twoInputGraph() {
  GraphBuilder b("g");
  Value x = b.input("x", DType::F32, {2, 3});
  Value y = b.input("y", DType::F32, {3});
  Value w = b.param("w", DType::F32, {3}, Init::ones());
  b.output("out", x * w + y);
  return b.finish();
}

TensorMap twoInputs() {
  return {{"x", Tensor(DType::F32, {2, 3})}, {"y", Tensor(DType::F32, {3})}};
}

TEST(Interpret, RunsAGraph) {
  Graph g = twoInputGraph();
  TensorMap in = {{"x", Tensor::of<float>({2, 3}, {1, 2, 3, 4, 5, 6})},
                  {"y", Tensor::of<float>({3}, {10, 20, 30})}};
  TensorMap params = {{"w", Tensor::of<float>({3}, {1, 0, -1})}};
  TensorMap out = interpret(g, in, params);
  ASSERT_EQ(out.size(), 1u);
  expectValues(out.at("out"), DType::F32, {2, 3}, {11, 20, 27, 14, 20, 24});
}

TEST(Interpret, InputErrorsNameTheInputAndBothTypes) {
  Graph g = twoInputGraph();
  TensorMap params = {{"w", Tensor(DType::F32, {3})}};

  TensorMap missing = twoInputs();
  missing.erase("y");
  EXPECT_THAT(errorOf([&] { interpret(g, missing, params); }),
              HasSubstr("missing input 'y' (f32[3])"));

  TensorMap unknown = twoInputs();
  unknown.emplace("foo", Tensor(DType::F32, {3}));
  EXPECT_THAT(errorOf([&] { interpret(g, unknown, params); }),
              HasSubstr("unknown input 'foo'; the graph's inputs are: x, y"));

  TensorMap wrongShape = twoInputs();
  wrongShape["x"] = Tensor(DType::F32, {2, 4});
  EXPECT_THAT(errorOf([&] { interpret(g, wrongShape, params); }),
              HasSubstr("input 'x': expected f32[2,3], got f32[2,4]"));

  TensorMap wrongDType = twoInputs();
  wrongDType["y"] = Tensor(DType::F64, {3});
  EXPECT_THAT(errorOf([&] { interpret(g, wrongDType, params); }),
              HasSubstr("input 'y': expected f32[3], got f64[3]"));

  // A param passed as an input is unknown there, with a hint.
  TensorMap asInput = twoInputs();
  asInput.emplace("w", Tensor(DType::F32, {3}));
  std::string message = errorOf([&] { interpret(g, asInput, params); });
  EXPECT_THAT(message, HasSubstr("unknown input 'w'"));
  EXPECT_THAT(message, HasSubstr("'w' is a param"));
}

TEST(Interpret, ParamErrors) {
  Graph g = twoInputGraph();
  EXPECT_THAT(errorOf([&] { interpret(g, twoInputs(), {}); }),
              HasSubstr("missing param 'w' (f32[3])"));
  EXPECT_THAT(errorOf([&] {
                interpret(g, twoInputs(), {{"w", Tensor(DType::I32, {3})}});
              }),
              HasSubstr("param 'w': expected f32[3], got i32[3]"));
  EXPECT_THAT(errorOf([&] {
                interpret(g, twoInputs(),
                          {{"w", Tensor(DType::F32, {3})}, {"v", Tensor(DType::F32, {})}});
              }),
              HasSubstr("unknown param 'v'; the graph's params are: w"));
}

TEST(Interpret, SizeLimitNamesTheNode) {
  GraphBuilder b("g");
  Value x = b.input("x", DType::F32, {4});
  b.output("y", broadcastTo(x, {1000, 4}));
  Graph g = b.finish();
  InterpretOptions options;
  options.maxTensorBytes = 1024;
  std::string message = errorOf([&] {
    interpret(g, {{"x", Tensor(DType::F32, {4})}}, {}, options);
  });
  EXPECT_THAT(message, HasSubstr("broadcast_to: result f32[1000,4]"));
  EXPECT_THAT(message, HasSubstr("1024 bytes"));
  EXPECT_THAT(message, HasSubstr("test_interp_ops.cpp:"));
}

TEST(Interpret, FreesIntermediatesWithoutLosingOutputs) {
  // h is read by two later nodes; x is itself an output; two outputs share a
  // value; a dead node is computed and dropped.
  GraphBuilder b("g");
  Value x = b.input("x", DType::F64, {3});
  Value h = x * 2.0;
  Value a = h + 1.0;
  Value c = a * h;
  stepc::exp(x); // dead
  b.output("c", c);
  b.output("a", a);
  b.output("a2", a);
  b.output("x_out", x);
  Graph g = b.finish();
  Tensor in = Tensor::of<double>({3}, {1, 2, 3});
  TensorMap out = interpret(g, {{"x", in}}, {});
  expectValues(out.at("c"), DType::F64, {3}, {6, 20, 42});
  expectValues(out.at("a"), DType::F64, {3}, {3, 5, 7});
  expectValues(out.at("a2"), DType::F64, {3}, {3, 5, 7});
  EXPECT_TRUE(out.at("x_out") == in);

  std::vector<Tensor> all = interpretAll(g, {{"x", in}}, {});
  ASSERT_EQ(all.size(), g.size());
  for (ValueId id = 0; id < g.size(); ++id)
    EXPECT_EQ(all[id].type(), g.type(id)) << "value %" << id;
  EXPECT_TRUE(all[x.id()] == in);
  EXPECT_TRUE(all[h.id()] == Tensor::of<double>({3}, {2, 4, 6}));
}

TEST(Interpret, StepAssignsUpdatesAfterComputingEverything) {
  // a <- a * 2 + x and b <- a (the old a): updates read the step's values, not
  // params already assigned during the same step. c is not updated.
  GraphBuilder b("step");
  Value x = b.input("x", DType::F64, {2});
  Value pa = b.param("a", DType::F64, {2}, Init::ones());
  Value pb = b.param("b", DType::F64, {2}, Init::zeros());
  Value pc = b.param("c", DType::F64, {}, Init::constant(5));
  Value next = pa * 2.0 + x;
  b.output("sum", sum(next, {0}) + pc);
  b.update(pa, next);
  b.update(pb, pa);
  Graph g = b.finish();

  TensorMap params = initialParams(g);
  TensorMap in = {{"x", Tensor::of<double>({2}, {1, -1})}};
  TensorMap out = interpretStep(g, in, params);
  expectValues(out.at("sum"), DType::F64, {}, {4 + 5});
  expectValues(params.at("a"), DType::F64, {2}, {3, 1});
  expectValues(params.at("b"), DType::F64, {2}, {1, 1});
  expectValues(params.at("c"), DType::F64, {}, {5});
  out = interpretStep(g, in, params);
  expectValues(out.at("sum"), DType::F64, {}, {(7 + 1) + 5});
  expectValues(params.at("a"), DType::F64, {2}, {7, 1});
  expectValues(params.at("b"), DType::F64, {2}, {3, 1});

  // A failing step changes nothing.
  TensorMap before = params;
  EXPECT_THAT(errorOf([&] { interpretStep(g, {}, params); }),
              HasSubstr("missing input 'x'"));
  for (const auto &[name, t] : before)
    EXPECT_TRUE(params.at(name) == t) << name;
}

// --- Initial values and random inputs -----------------------------------------------

TEST(InitialValues, FixedKinds) {
  TensorType t{DType::F32, {2, 2}};
  expectValues(initialTensor(Init::zeros(), t), DType::F32, {2, 2}, {0, 0, 0, 0});
  expectValues(initialTensor(Init::ones(), t), DType::F32, {2, 2}, {1, 1, 1, 1});
  expectValues(initialTensor(Init::constant(2.5), t), DType::F32, {2, 2},
               {2.5, 2.5, 2.5, 2.5});
  // Integers round toward zero; bool is x != 0.
  expectValues(initialTensor(Init::constant(-2.5), {DType::I32, {2}}), DType::I32, {2},
               {-2, -2}, 0);
  expectValues(initialTensor(Init::constant(0.5), {DType::Bool, {2}}), DType::Bool, {2},
               {1, 1}, 0);
}

TEST(InitialValues, RandomKindsFollowTheirFormulas) {
  // Element i draws with counter i, so the values are checkable one by one.
  Tensor u = initialTensor(Init::uniform(-2, 3, 7), {DType::F64, {500}});
  for (int64_t i = 0; i < u.numel(); ++i) {
    ASSERT_EQ(u.real(i), -2 + 5 * randomUniform(7, uint64_t(i))) << i;
    ASSERT_TRUE(u.real(i) >= -2 && u.real(i) < 3) << i;
  }
  Tensor nrm = initialTensor(Init::normal(1, 2, 9), {DType::F64, {20000}});
  double total = 0, squares = 0;
  for (int64_t i = 0; i < nrm.numel(); ++i) {
    ASSERT_EQ(nrm.real(i), 1 + 2 * randomNormal(9, uint64_t(i))) << i;
    total += nrm.real(i);
    squares += (nrm.real(i) - 1) * (nrm.real(i) - 1);
  }
  EXPECT_NEAR(total / 20000, 1, 0.1);
  EXPECT_NEAR(std::sqrt(squares / 20000), 2, 0.1);

  // A [in, out] weight: fan_in = 20, fan_out = 30.
  Tensor he = initialTensor(Init::heUniform(5), {DType::F64, {20, 30}});
  double heBound = std::sqrt(6.0 / 20);
  for (int64_t i = 0; i < he.numel(); ++i)
    ASSERT_DOUBLE_EQ(he.real(i), -heBound + 2 * heBound * randomUniform(5, uint64_t(i)));
  Tensor heN = initialTensor(Init::heNormal(5), {DType::F64, {20, 30}});
  for (int64_t i = 0; i < heN.numel(); ++i)
    ASSERT_DOUBLE_EQ(heN.real(i), std::sqrt(2.0 / 20) * randomNormal(5, uint64_t(i)));
  // A conv weight [O=8, I=4, 3, 3]: fan_in = 36, fan_out = 72.
  Tensor xu = initialTensor(Init::xavierUniform(3), {DType::F64, {8, 4, 3, 3}});
  double xBound = std::sqrt(6.0 / (36 + 72));
  for (int64_t i = 0; i < xu.numel(); ++i)
    ASSERT_DOUBLE_EQ(xu.real(i), -xBound + 2 * xBound * randomUniform(3, uint64_t(i)));
  // Rank 1: fan_in = fan_out = 10. Rank 0: both 1.
  Tensor xn = initialTensor(Init::xavierNormal(4), {DType::F64, {10}});
  for (int64_t i = 0; i < xn.numel(); ++i)
    ASSERT_DOUBLE_EQ(xn.real(i), std::sqrt(2.0 / 20) * randomNormal(4, uint64_t(i)));
  Tensor s = initialTensor(Init::heUniform(4), {DType::F64, {}});
  EXPECT_DOUBLE_EQ(s.real(0), -std::sqrt(6.0) + 2 * std::sqrt(6.0) * randomUniform(4, 0));
  // f32 is the f64 value rounded.
  Tensor f = initialTensor(Init::heUniform(5), {DType::F32, {20, 30}});
  for (int64_t i = 0; i < f.numel(); ++i)
    ASSERT_EQ(f.data<float>()[i], float(he.real(i)));
  // Integer dtypes truncate the real value toward zero.
  Tensor iu = initialTensor(Init::uniform(-5, 5, 1), {DType::I32, {100}});
  for (int64_t i = 0; i < iu.numel(); ++i)
    ASSERT_EQ(iu.real(i), std::trunc(-5 + 10 * randomUniform(1, uint64_t(i))));
}

TEST(InitialValues, InitialParamsAndRandomInputs) {
  GraphBuilder b("g");
  Value x = b.input("x", DType::F32, {50, 4});
  Value labels = b.input("labels", DType::I32, {50});
  Value mask = b.input("mask", DType::Bool, {50});
  Value seed = b.input("seed", DType::I64, {});
  Value w = b.param("w", DType::F32, {4, 3}, Init::heUniform(1));
  Value bias = b.param("bias", DType::F64, {3}, Init::constant(0.5));
  b.output("y", matmul(x, w));
  b.output("l", labels);
  b.output("m", mask);
  b.output("s", seed);
  b.output("b", bias);
  Graph g = b.finish();

  TensorMap params = initialParams(g);
  ASSERT_EQ(params.size(), 2u);
  EXPECT_TRUE(params.at("w") == initialTensor(Init::heUniform(1), {DType::F32, {4, 3}}));
  expectValues(params.at("bias"), DType::F64, {3}, {0.5, 0.5, 0.5});

  TensorMap in = randomInputs(g, 123);
  ASSERT_EQ(in.size(), 4u);
  for (const auto &[name, t] : in)
    EXPECT_EQ(t.type(), g.type(*g.findNamed(name))) << name;
  const Tensor &xs = in.at("x");
  for (int64_t i = 0; i < xs.numel(); ++i)
    ASSERT_TRUE(xs.real(i) >= -1 && xs.real(i) < 1) << i;
  const Tensor &ls = in.at("labels");
  for (int64_t i = 0; i < ls.numel(); ++i)
    ASSERT_TRUE(ls.real(i) >= 0 && ls.real(i) < 10) << i;
  const Tensor &ms = in.at("mask");
  int64_t ones = 0;
  for (int64_t i = 0; i < ms.numel(); ++i) {
    ASSERT_TRUE(ms.data<uint8_t>()[i] <= 1) << i;
    ones += ms.data<uint8_t>()[i];
  }
  EXPECT_GT(ones, 0);
  EXPECT_LT(ones, ms.numel());

  // Same seed, same inputs; another seed, other inputs.
  TensorMap again = randomInputs(g, 123);
  for (const auto &[name, t] : in)
    EXPECT_TRUE(again.at(name) == t) << name;
  TensorMap other = randomInputs(g, 124);
  EXPECT_FALSE(other.at("x") == in.at("x"));
  EXPECT_FALSE(other.at("seed") == in.at("seed"));

  // The whole graph runs on them.
  TensorMap out = interpret(g, in, params);
  EXPECT_EQ(out.size(), 5u);
}

} // namespace
