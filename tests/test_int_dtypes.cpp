// The narrow and unsigned integer dtypes (i8, u8, i16, u16, u32, u64) in the
// reference interpreter, and the stages around it: casts between every pair
// (integer to integer keeps the low bits, as numpy's astype), division and
// remainder signs, unsigned comparisons above the signed maximum, reductions,
// the .sg text, .npy and safetensors files, and autodiff's refusal. The CPU
// backend is checked against these kernels in test_codegen.cpp.
#include "testing.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/executable.h"
#include "stepc/interpreter.h"
#include "stepc/npy.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

using namespace stepc;
using stepc::testing::errorOf;
using ::testing::HasSubstr;

namespace {

const DType kNewInts[] = {DType::I8, DType::U8, DType::I16, DType::U16, DType::U32, DType::U64};
const DType kAllInts[] = {DType::I8,  DType::U8,  DType::I16, DType::U16,
                          DType::I32, DType::U32, DType::I64, DType::U64};

using Wide = __int128;

// The exact value of element i of an integer or bool tensor.
Wide exactAt(const Tensor &t, int64_t i) {
  int64_t bits = t.integer(i);
  if (t.dtype() == DType::U64)
    return static_cast<Wide>(static_cast<uint64_t>(bits));
  return bits;
}

// v reduced modulo 2^bits into `to`'s range: the value numpy's astype gives.
Wide wrapTo(Wide v, DType to) {
  if (to == DType::Bool)
    return v != 0;
  int bits = static_cast<int>(dtypeSize(to) * 8);
  Wide modulus = Wide(1) << bits;
  Wide m = ((v % modulus) + modulus) % modulus;
  if (!isUnsigned(to) && m >= modulus / 2)
    m -= modulus;
  return m;
}

// Edge values of `dtype` as exact values: its extremes, 0, +-1, small ones.
std::vector<Wide> edgeValues(DType dtype) {
  int bits = static_cast<int>(dtypeSize(dtype) * 8);
  Wide lowest = isUnsigned(dtype) ? 0 : -(Wide(1) << (bits - 1));
  Wide highest = isUnsigned(dtype) ? (Wide(1) << bits) - 1 : (Wide(1) << (bits - 1)) - 1;
  std::vector<Wide> v = {lowest, lowest + 1, highest, highest - 3, 0, 1, 7, 100};
  if (!isUnsigned(dtype)) {
    v.push_back(-1);
    v.push_back(-100);
  }
  return v;
}

Tensor tensorOf(DType dtype, const std::vector<Wide> &values) {
  Tensor t(dtype, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i)
    t.setInteger(static_cast<int64_t>(i), static_cast<int64_t>(values[i]));
  return t;
}

Tensor run(const std::vector<Tensor> &xs,
           const std::function<Value(std::vector<Value> &)> &build) {
  return stepc::testing::runOp(xs,
                              [&](GraphBuilder &, std::vector<Value> &v) { return build(v); });
}

Tensor run2(const Tensor &a, const Tensor &c, Value (*op)(Value, Value, Loc)) {
  return run({a, c}, [&](std::vector<Value> &v) { return op(v[0], v[1], Loc::current()); });
}

std::vector<Wide> exactValues(const Tensor &t) {
  std::vector<Wide> out;
  for (int64_t i = 0; i < t.numel(); ++i)
    out.push_back(exactAt(t, i));
  return out;
}

std::string str(Wide v) {
  bool negative = v < 0;
  unsigned __int128 u = negative ? -static_cast<unsigned __int128>(v) : v;
  std::string digits;
  do {
    digits.insert(digits.begin(), char('0' + int(u % 10)));
    u /= 10;
  } while (u != 0);
  return negative ? "-" + digits : digits;
}

void expectExact(const Tensor &got, DType dtype, const std::vector<Wide> &want) {
  ASSERT_EQ(got.dtype(), dtype);
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(str(exactAt(got, static_cast<int64_t>(i))), str(want[i])) << "element " << i;
}

TEST(IntDTypes, NamesSizesAndSignedness) {
  for (DType d : kNewInts) {
    EXPECT_EQ(parseDType(dtypeName(d)), d);
    EXPECT_TRUE(isInteger(d));
    EXPECT_FALSE(isFloat(d));
  }
  EXPECT_EQ(dtypeSize(DType::I8), 1u);
  EXPECT_EQ(dtypeSize(DType::U16), 2u);
  EXPECT_EQ(dtypeSize(DType::U32), 4u);
  EXPECT_EQ(dtypeSize(DType::U64), 8u);
  EXPECT_TRUE(isUnsigned(DType::U8));
  EXPECT_FALSE(isUnsigned(DType::I64));
  EXPECT_FALSE(isUnsigned(DType::Bool));
}

// Integer -> integer wraps modulo 2^bits (sign- or zero-extended by the
// source's signedness); anything -> bool is x != 0.
TEST(IntDTypes, CastBetweenEveryPairOfIntegersWraps) {
  std::vector<DType> all(std::begin(kAllInts), std::end(kAllInts));
  all.push_back(DType::Bool);
  for (DType from : all)
    for (DType to : all) {
      SCOPED_TRACE(fmt::format("{} -> {}", dtypeName(from), dtypeName(to)));
      std::vector<Wide> values = from == DType::Bool ? std::vector<Wide>{0, 1, 1, 0}
                                                     : edgeValues(from);
      Tensor x = tensorOf(from, values);
      std::vector<Wide> want;
      for (Wide v : values)
        want.push_back(wrapTo(v, to));
      expectExact(run({x}, [&](std::vector<Value> &v) { return cast(v[0], to); }), to, want);
    }
}

// Float -> integer truncates toward zero (in range; out of range is undefined
// in ONNX, LLVM and C++ alike). Integer -> float rounds to nearest.
TEST(IntDTypes, CastToAndFromFloats) {
  Tensor f = Tensor::of<float>({5}, {-7.9f, -0.5f, 0.5f, 99.99f, 126.0f});
  for (DType to : {DType::I8, DType::I16}) {
    expectExact(run({f}, [&](std::vector<Value> &v) { return cast(v[0], to); }), to,
                {-7, 0, 0, 99, 126});
  }
  Tensor g = Tensor::of<double>({4}, {0.5, 254.9, 65535.0, 4294967295.0});
  expectExact(run({g}, [&](std::vector<Value> &v) { return cast(v[0], DType::U32); }),
              DType::U32, {0, 254, 65535, 4294967295LL});
  expectExact(run({g}, [&](std::vector<Value> &v) { return cast(v[0], DType::U64); }),
              DType::U64, {0, 254, 65535, 4294967295LL});
  // Unsigned values above the signed maximum convert as themselves.
  Tensor u = tensorOf(DType::U64, {(Wide(1) << 64) - 1, Wide(1) << 63, 3});
  Tensor asDouble = run({u}, [&](std::vector<Value> &v) { return cast(v[0], DType::F64); });
  EXPECT_EQ(asDouble.data<double>()[0], 18446744073709551615.0);
  EXPECT_EQ(asDouble.data<double>()[1], 9223372036854775808.0);
  EXPECT_EQ(asDouble.data<double>()[2], 3.0);
  Tensor b = tensorOf(DType::U8, {255, 128, 0});
  Tensor asFloat = run({b}, [&](std::vector<Value> &v) { return cast(v[0], DType::F32); });
  EXPECT_EQ(asFloat.reals(), (std::vector<double>{255, 128, 0}));
  Tensor s = tensorOf(DType::I8, {-128, -1, 127});
  Tensor sFloat = run({s}, [&](std::vector<Value> &v) { return cast(v[0], DType::F32); });
  EXPECT_EQ(sFloat.reals(), (std::vector<double>{-128, -1, 127}));
}

// Division truncates toward zero, rem takes the dividend's sign (C's / and
// %); x / 0 = 0, x rem 0 = x, MIN / -1 = MIN and MIN rem -1 = 0: no traps.
TEST(IntDTypes, SignedDivisionAndRemainder) {
  for (DType dt : {DType::I8, DType::I16}) {
    SCOPED_TRACE(std::string(dtypeName(dt)));
    Wide lowest = dt == DType::I8 ? -128 : -32768;
    Tensor a = tensorOf(dt, {7, -7, 7, -7, 5, lowest, lowest});
    Tensor b = tensorOf(dt, {2, 2, -2, -2, 0, -1, 3});
    expectExact(run2(a, b, div), dt, {3, -3, -3, 3, 0, lowest, lowest / 3});
    expectExact(run2(a, b, rem), dt, {1, -1, 1, -1, 5, 0, lowest % 3});
    // Wraparound: MIN * -1 and MAX + 1.
    expectExact(run2(a, b, mul), dt, {14, -14, -14, 14, 0, lowest, wrapTo(lowest * 3, dt)});
  }
}

// Unsigned division and remainder work on the unsigned values, including
// those with the top bit set.
TEST(IntDTypes, UnsignedDivisionAndRemainder) {
  for (DType dt : {DType::U8, DType::U16, DType::U32, DType::U64}) {
    SCOPED_TRACE(std::string(dtypeName(dt)));
    Wide top = (Wide(1) << (dtypeSize(dt) * 8)) - 6; // top bit set
    Tensor a = tensorOf(dt, {250, top, top, 9, 0});
    Tensor b = tensorOf(dt, {7, 3, top, 0, 5});
    expectExact(run2(a, b, div), dt, {35, top / 3, 1, 0, 0});
    expectExact(run2(a, b, rem), dt, {5, top % 3, 0, 9, 0});
    // 0 - 1 wraps to the largest value.
    Tensor one = tensorOf(dt, {1});
    expectExact(run2(tensorOf(dt, {0}), one, sub), dt, {top + 5});
  }
}

TEST(IntDTypes, UnsignedComparisonsAboveSignedMaximum) {
  for (DType dt : {DType::U8, DType::U16, DType::U32, DType::U64}) {
    SCOPED_TRACE(std::string(dtypeName(dt)));
    Wide big = (Wide(1) << (dtypeSize(dt) * 8 - 1)) + 5; // negative if read signed
    Tensor a = tensorOf(dt, {big, 5, big});
    Tensor b = tensorOf(dt, {5, big, big});
    expectExact(run2(a, b, lt), DType::Bool, {0, 1, 0});
    expectExact(run2(a, b, ge), DType::Bool, {1, 0, 1});
    expectExact(run2(a, b, maximum), dt, {big, big, big});
    expectExact(run2(a, b, minimum), dt, {5, 5, big});
    Tensor reduced = run({a}, [](std::vector<Value> &v) { return stepc::max(v[0], {0}); });
    expectExact(reduced, dt, {big});
    Tensor smallest = run({a}, [](std::vector<Value> &v) { return stepc::min(v[0], {0}); });
    expectExact(smallest, dt, {5});
    // relu and abs leave unsigned values alone; sign is 0 or 1.
    expectExact(run({a}, [](std::vector<Value> &v) { return relu(v[0]); }), dt, {big, 5, big});
    expectExact(run({a}, [](std::vector<Value> &v) { return stepc::abs(v[0]); }), dt,
                {big, 5, big});
    expectExact(run({a}, [](std::vector<Value> &v) { return sign(v[0]); }), dt, {1, 1, 1});
  }
}

// Signed narrow ints wrap on overflow; sums reduce in their own width.
TEST(IntDTypes, NarrowSignedWrapAndReduce) {
  Tensor a = tensorOf(DType::I8, {127, 100, -128});
  Tensor one = tensorOf(DType::I8, {1});
  expectExact(run2(a, one, add), DType::I8, {-128, 101, -127});
  expectExact(run({a}, [](std::vector<Value> &v) { return neg(v[0]); }), DType::I8,
              {-127, -100, -128});
  expectExact(run({a}, [](std::vector<Value> &v) { return sum(v[0], {0}); }), DType::I8,
              {wrapTo(127 + 100 - 128, DType::I8)});
  expectExact(run({a}, [](std::vector<Value> &v) { return stepc::max(v[0], {0}); }), DType::I8,
              {127});
}

// Float rem is C's fmod: exact even where the quotient is far beyond 2^24.
TEST(IntDTypes, FloatRemIsExactFmod) {
  Tensor a = Tensor::of<float>({4}, {1e30f, -1e30f, 7.5f, -7.5f});
  Tensor b = Tensor::of<float>({4}, {3.0f, 3.0f, 2.0f, 2.0f});
  Tensor got = run2(a, b, rem);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ(got.data<float>()[i], std::fmod(a.data<float>()[i], b.data<float>()[i]));
  EXPECT_EQ(got.data<float>()[2], 1.5f);
  EXPECT_EQ(got.data<float>()[3], -1.5f);
}

TEST(IntDTypes, TextRoundTrip) {
  Graph g = parseGraph(R"sg(
graph g {
  input %a : u8[3]
  input %b : u8[3]
  %c = rem(%a, %b)
  %d = cast(%c) {dtype=i16} : i16[3]
  output y = %d
}
)sg");
  Tensor a = tensorOf(DType::U8, {250, 9, 200});
  Tensor b = tensorOf(DType::U8, {7, 0, 201});
  TensorMap out = interpret(g, {{"a", a}, {"b", b}}, {});
  expectExact(out.at("y"), DType::I16, {5, 9, 200});
  EXPECT_THAT(printGraph(g), HasSubstr("u8[3]"));
}

TEST(IntDTypes, NpyAndSafetensorsRoundTrip) {
  std::map<std::string, Tensor> tensors;
  for (DType d : kNewInts) {
    Tensor t = tensorOf(d, edgeValues(d));
    EXPECT_EQ(parseNpy(serializeNpy(t)), t) << dtypeName(d);
    tensors[std::string(dtypeName(d))] = t;
  }
  std::string path =
      (std::filesystem::path(::testing::TempDir()) / "ints17.safetensors").string();
  writeSafetensors(path, tensors);
  EXPECT_EQ(readSafetensors(path), tensors);
  std::filesystem::remove(path);
}

TEST(IntDTypes, GradientsRefuseIntegerValues) {
  GraphBuilder b("g");
  Value x = b.input("x", DType::U8, {3});
  Value loss = sum(cast(x, DType::F32), {0});
  EXPECT_THAT(errorOf([&] { gradients(loss, {x}); }),
              HasSubstr("cannot differentiate with respect to 'x' of type u8[3]"));
}

TEST(IntDTypes, IndicesMustBeI32OrI64) {
  GraphBuilder b("g");
  Value table = b.input("t", DType::F32, {4, 2});
  Value ids = b.input("ids", DType::U8, {3});
  EXPECT_THAT(errorOf([&] { gather(table, ids, 0); }),
              HasSubstr("expected integer indices (i32 or i64), found u8[3]"));
}

} // namespace
