// The element rules (element_rules.h): one switch over the ops, written
// once for scalars and vectors.
#include "element_rules.h"

#include <fmt/format.h>

#include <stdexcept>

namespace stepc::codegen {

std::string ElementType::text() const {
  if (lanes == 1)
    return scalarType(dtype);
  return fmt::format("vector<{}x{}>", lanes, scalarType(dtype));
}

std::string ElementType::boolText() const {
  return lanes == 1 ? "i1" : fmt::format("vector<{}xi1>", lanes);
}

namespace {

// A scalar in every lane of `type` (the scalar itself for a scalar type),
// broadcast once per region.
std::string splat(MlirWriter &w, const std::string &scalar, const ElementType &type) {
  if (type.lanes == 1)
    return scalar;
  std::string key = fmt::format("splat:{}:{}", scalar, type.text());
  if (const std::string *hit = w.cached(key))
    return *hit;
  std::string v = w.assign(
      fmt::format("vector.broadcast {} : {} to {}", scalar, scalarType(type.dtype), type.text()));
  w.cache(key, v);
  return v;
}

} // namespace

std::string ElementRules::constant(double value, const ElementType &type) {
  return splat(w_, w_.constant(value, type.dtype), type);
}

std::string ElementRules::select(const std::string &cond, const std::string &a,
                                 const std::string &b, const ElementType &type) {
  // A scalar select names only the value type; a vector one also the mask's.
  std::string types = type.lanes == 1 ? type.text() : fmt::format("{}, {}", type.boolText(), type.text());
  return w_.assign(fmt::format("arith.select {}, {}, {} : {}", cond, a, b, types));
}

std::string ElementRules::binary(OpKind op, DType dtype, const std::string &a, const std::string &b) {
  return apply(op, ElementType{dtype}, dtype, {a, b});
}

std::string ElementRules::apply(OpKind op, const ElementType &in, DType out,
                                const std::vector<std::string> &x) {
  DType dt = in.dtype;
  std::string t = in.text(), bt = in.boolText();
  bool fp = isFloat(dt);
  auto c = [&](double v) { return constant(v, in); };
  auto op1 = [&](const std::string &name) {
    return w_.assign(fmt::format("{} {} : {}", name, x[0], t));
  };
  auto op2 = [&](const std::string &name) {
    return w_.assign(fmt::format("{} {}, {} : {}", name, x[0], x[1], t));
  };
  // Ordering predicates and division come in signed and unsigned forms;
  // the dtype picks (MLIR integers are signless).
  bool u = isUnsigned(dt);
  auto cmp = [&](const char *fpred, const char *ipred, const std::string &a, const std::string &b) {
    std::string pred = fp ? fpred : ipred;
    if (u && pred[0] == 's')
      pred[0] = 'u';
    return w_.assign(fmt::format("arith.cmp{} {}, {}, {} : {}", fp ? "f" : "i", pred, a, b, t));
  };
  switch (op) {
  case OpKind::Neg:
    return fp ? op1("arith.negf") : w_.assign(fmt::format("arith.subi {}, {} : {}", c(0), x[0], t));
  case OpKind::Abs:
    if (u)
      return x[0];
    return op1(fp ? "math.absf" : "math.absi");
  case OpKind::Exp: return op1("math.exp");
  case OpKind::Log: return op1("math.log");
  case OpKind::Sqrt: return op1("math.sqrt");
  case OpKind::Rsqrt: return op1("math.rsqrt");
  case OpKind::Square: return apply(OpKind::Mul, in, out, {x[0], x[0]});
  case OpKind::Tanh: return op1("math.tanh");
  case OpKind::Sigmoid: {
    std::string e = w_.assign(fmt::format("math.exp {} : {}", op1("arith.negf"), t));
    std::string d = w_.assign(fmt::format("arith.addf {}, {} : {}", c(1), e, t));
    return w_.assign(fmt::format("arith.divf {}, {} : {}", c(1), d, t));
  }
  case OpKind::Relu:
    // x < 0 ? 0 : x lets NaN through, as the interpreter does.
    return select(cmp("olt", "slt", x[0], c(0)), c(0), x[0], in);
  // Halves compute in f32, so they take the f32 rule.
  case OpKind::Sin:
    return scalarType(dt) == "f32" && ownF32Polynomials_ ? sinOrCosF32(x[0], in, true) : op1("math.sin");
  case OpKind::Cos:
    return scalarType(dt) == "f32" && ownF32Polynomials_ ? sinOrCosF32(x[0], in, false) : op1("math.cos");
  case OpKind::Erf:
    return scalarType(dt) == "f32" && ownF32Polynomials_ ? erfF32(x[0], in) : op1("math.erf");
  case OpKind::Sign: {
    std::string gt = cmp("ogt", "sgt", x[0], c(0));
    std::string lt = cmp("olt", "slt", x[0], c(0));
    std::string s = select(gt, c(1), select(lt, c(-1), c(0), in), in);
    if (!fp)
      return s;
    std::string nan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", x[0], x[0], t));
    return select(nan, x[0], s, in);
  }
  case OpKind::Cast:
    if (in.lanes != 1)
      throw std::logic_error("cast: no vector rule");
    return convert(x[0], dt, out);
  case OpKind::Add: return op2(fp ? "arith.addf" : "arith.addi");
  case OpKind::Sub: return op2(fp ? "arith.subf" : "arith.subi");
  case OpKind::Mul: return op2(fp ? "arith.mulf" : "arith.muli");
  case OpKind::Div: {
    if (fp)
      return op2("arith.divf");
    // x / 0 = 0 and MIN / -1 = MIN, as the interpreter; never a trap.
    const std::string &a = x[0], &b = x[1];
    std::string zero = c(0), one = c(1);
    std::string byZero = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, zero, t));
    if (u) {
      std::string q = w_.assign(fmt::format("arith.divui {}, {} : {}", a, select(byZero, one, b, in), t));
      return select(byZero, zero, q, in);
    }
    std::string minusOne = c(-1);
    // The signed minimum of the width: 1 << (bits - 1), printed in range.
    std::string minimum = splat(
        w_, w_.integerConstant(static_cast<int64_t>(uint64_t(1) << (dtypeSize(dt) * 8 - 1)), dt), in);
    std::string isMin = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", a, minimum, t));
    std::string isMinusOne = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, minusOne, t));
    std::string overflow = w_.assign(fmt::format("arith.andi {}, {} : {}", isMin, isMinusOne, bt));
    std::string unsafe = w_.assign(fmt::format("arith.ori {}, {} : {}", byZero, overflow, bt));
    std::string q = w_.assign(fmt::format("arith.divsi {}, {} : {}", a, select(unsafe, one, b, in), t));
    return select(byZero, zero, select(overflow, minimum, q, in), in);
  }
  case OpKind::Rem: {
    if (fp)
      return op2("arith.remf");
    // x rem 0 = x and MIN rem -1 = 0, as the interpreter: a divisor of 0 or
    // (signed) -1 becomes 1, whose remainder is 0, and 0 then takes x.
    const std::string &a = x[0], &b = x[1];
    std::string byZero = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, c(0), t));
    std::string unsafe = byZero;
    if (!u) {
      std::string minusOne = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, c(-1), t));
      unsafe = w_.assign(fmt::format("arith.ori {}, {} : {}", byZero, minusOne, bt));
    }
    std::string safe = select(unsafe, c(1), b, in);
    std::string r = w_.assign(fmt::format("arith.{} {}, {} : {}", u ? "remui" : "remsi", a, safe, t));
    return select(byZero, a, r, in);
  }
  case OpKind::Pow: return op2("math.powf");
  case OpKind::Maximum: return op2(fp ? "arith.maximumf" : u ? "arith.maxui" : "arith.maxsi");
  case OpKind::Minimum: return op2(fp ? "arith.minimumf" : u ? "arith.minui" : "arith.minsi");
  case OpKind::Eq: return cmp("oeq", "eq", x[0], x[1]);
  case OpKind::Ne: return cmp("une", "ne", x[0], x[1]);
  case OpKind::Lt: return cmp("olt", "slt", x[0], x[1]);
  case OpKind::Le: return cmp("ole", "sle", x[0], x[1]);
  case OpKind::Gt: return cmp("ogt", "sgt", x[0], x[1]);
  case OpKind::Ge: return cmp("oge", "sge", x[0], x[1]);
  case OpKind::Select: return select(x[0], x[1], x[2], in);
  // Not elementwise (ops.def's class): no element rule. By class:
  case OpKind::Input:
  case OpKind::Parameter:
  case OpKind::Constant:
  case OpKind::Iota:
  case OpKind::Dropout:
  case OpKind::ReduceSum:
  case OpKind::ReduceMean:
  case OpKind::ReduceMax:
  case OpKind::ReduceMin:
  case OpKind::ArgMax:
  case OpKind::Transpose:
  case OpKind::Reshape:
  case OpKind::BroadcastTo:
  case OpKind::Slice:
  case OpKind::Pad:
  case OpKind::OneHot:
  case OpKind::Concat:
  case OpKind::Gather:
  case OpKind::MatMul:
  case OpKind::Conv2d:
  case OpKind::Conv2dGradInput:
  case OpKind::Conv2dGradWeight:
  case OpKind::MaxPool2d:
  case OpKind::AvgPool2d:
  case OpKind::MaxPool2dGrad:
  case OpKind::AvgPool2dGrad:
  case OpKind::ScatterAdd:
  case OpKind::AllReduce:
    break;
  }
  throw std::logic_error(fmt::format("element rules: {} is not elementwise", opInfo(op).name));
}

std::string ElementRules::convert(const std::string &v, DType from, DType to) {
  if (from == to)
    return v;
  // A half in a register may be an unrounded f32 (a kernel computes half
  // ops in f32 and rounds on store), so leaving the half type rounds it
  // first: the cast sees the interpreter's half value (also on to the other
  // half type), and an f32 widened from bf16 holds bf16 numbers, as the
  // vdpbf16ps products assume.
  if (isHalf(from))
    return convert(convert(v, DType::F32, from), DType::F32, to);
  // Halves are f32 in registers: a conversion to one rounds to the half type
  // and widens back, so later ops in the kernel see the rounded value.
  if (isHalf(to)) {
    // f64 -> bf16 goes through f32 (which can round twice, unlike the
    // interpreter): the bf16 expansion in llvm_backend.cpp handles f32 only.
    bool direct = from == DType::F64 && to == DType::F16;
    std::string wide = direct ? v : convert(v, from, DType::F32);
    std::string narrow = w_.assign(fmt::format("arith.truncf {} : {} to {}", wide,
                                               direct ? "f64" : "f32", memoryElementType(to)));
    return w_.assign(fmt::format("arith.extf {} : {} to f32", narrow, memoryElementType(to)));
  }
  std::string f = scalarType(from), t = scalarType(to);
  if (to == DType::Bool) {
    if (isFloat(from))
      return w_.assign(fmt::format("arith.cmpf une, {}, {} : {}", v, w_.constant(0, from), f));
    return w_.assign(fmt::format("arith.cmpi ne, {}, {} : {}", v, w_.constant(0, from), f));
  }
  if (from == DType::Bool)
    return w_.assign(fmt::format("arith.{} {} : i1 to {}", isFloat(to) ? "uitofp" : "extui", v, t));
  if (isFloat(from) && isFloat(to))
    return w_.assign(fmt::format("arith.{} {} : {} to {}", to == DType::F64 ? "extf" : "truncf", v, f, t));
  if (isFloat(from)) {
    // integerBitsOf's rule, as the interpreter: truncate to an int64's bits
    // (a u64's from 2^63 up), keep the target's low bytes, and 0 for NaN and
    // values outside (-2^63, 2^64). fptosi/fptoui alone give poison out of
    // the target's range (-3.7 as u32 became all ones).
    constexpr double kTwo63 = 9223372036854775808.0;
    std::string low = w_.assign(fmt::format("arith.fptosi {} : {} to i64", v, f));
    std::string high = w_.assign(fmt::format("arith.fptoui {} : {} to i64", v, f));
    std::string big = w_.assign(
        fmt::format("arith.cmpf oge, {}, {} : {}", v, w_.constant(kTwo63, from), f));
    std::string bits = w_.assign(fmt::format("arith.select {}, {}, {} : i64", big, high, low));
    std::string aboveMin = w_.assign(
        fmt::format("arith.cmpf oge, {}, {} : {}", v, w_.constant(-kTwo63, from), f));
    std::string belowMax = w_.assign(
        fmt::format("arith.cmpf olt, {}, {} : {}", v, w_.constant(2 * kTwo63, from), f));
    std::string inRange = w_.assign(fmt::format("arith.andi {}, {} : i1", aboveMin, belowMax));
    std::string value = w_.assign(fmt::format("arith.select {}, {}, {} : i64", inRange, bits,
                                              w_.constant(0, DType::I64)));
    return convert(value, DType::I64, to);
  }
  // The source's signedness picks sign or zero extension and the int -> float
  // op.
  if (isFloat(to))
    return w_.assign(fmt::format("arith.{} {} : {} to {}", isUnsigned(from) ? "uitofp" : "sitofp", v, f, t));
  if (f == t)
    return v; // i32 <-> u32 and the like: the same bits
  if (dtypeSize(to) < dtypeSize(from))
    return w_.assign(fmt::format("arith.trunci {} : {} to {}", v, f, t));
  return w_.assign(fmt::format("arith.{} {} : {} to {}", isUnsigned(from) ? "extui" : "extsi", v, f, t));
}


// f32 sin and cos as vectorizable arithmetic. MLIR's polynomial
// approximation of math.sin/cos (which llvm_backend.cpp applies to f32)
// reduces x - floor(x * 2/pi) * pi/2 with one f32 constant into [0, pi/2):
// its absolute error grows as |x| * 4e-8, and near every zero of the result
// (x slightly below k pi) it subtracts nearly equal numbers, so relative
// errors reach 1e-4 at |x| < 4 and 1e-2 at |x| ~ 100. Here: round to the
// nearest quadrant, reduce with pi/2 split in three parts (Cody-Waite, with
// fma) into [-pi/4, pi/4], where sin is odd and cos even, and evaluate
// Cephes' sinf/cosf polynomials, accurate to about an ulp there.
std::string ElementRules::sinOrCosF32(const std::string &x, const ElementType &operand, bool sine) {
  // Halves compute in f32 registers; the constants must stay f32 too (pi/2's
  // low parts rounded to f16 would cost tens of ulps at |x| ~ 1000).
  ElementType type{DType::F32, operand.lanes};
  std::string t = type.text(), bt = type.boolText();
  auto c = [&](double v) { return constant(v, type); };
  auto op2 = [&](const char *name, const std::string &a, const std::string &b) {
    return w_.assign(fmt::format("{} {}, {} : {}", name, a, b, t));
  };
  auto fma = [&](const std::string &a, const std::string &b, const std::string &acc) {
    return w_.assign(fmt::format("math.fma {}, {}, {} : {}", a, b, acc, t));
  };
  auto eq = [&](const std::string &a, double b) {
    return w_.assign(fmt::format("arith.cmpf oeq, {}, {} : {}", a, c(b), t));
  };
  auto orBits = [&](const std::string &a, const std::string &b) {
    return w_.assign(fmt::format("arith.ori {}, {} : {}", a, b, bt));
  };
  std::string k = w_.assign(
      fmt::format("math.roundeven {} : {}", op2("arith.mulf", x, c(0.63661977236758134308)), t));
  std::string minusK = w_.assign(fmt::format("arith.negf {} : {}", k, t));
  std::string r = fma(minusK, c(1.5703125), x);
  r = fma(minusK, c(4.837512969970703125e-4), r);
  r = fma(minusK, c(7.54978995489188216e-8), r);
  std::string z = op2("arith.mulf", r, r);
  // sin r = r + r z (s1 + z (s2 + z s3)); cos r = 1 - z/2 + z^2 (c1 + z (c2 + z c3)).
  std::string ps = fma(z, c(-1.9515295891e-4), c(8.3321608736e-3));
  ps = fma(z, ps, c(-1.6666654611e-1));
  std::string sinR = fma(op2("arith.mulf", r, z), ps, r);
  std::string pc = fma(z, c(2.443315711809948e-5), c(-1.388731625493765e-3));
  pc = fma(z, pc, c(4.166664568298827e-2));
  std::string cosR = fma(op2("arith.mulf", z, z), pc, fma(z, c(-0.5), c(1)));
  // The quadrant q = k mod 4 in [0, 4), exact while |k| < 2^24.
  std::string quarter = w_.assign(fmt::format("math.floor {} : {}", op2("arith.mulf", k, c(0.25)), t));
  std::string q = fma(quarter, c(-4), k);
  // sin x: q = 0: sin r, 1: cos r, 2: -sin r, 3: -cos r. cos x is sin(x + pi/2): q + 1.
  std::string odd = orBits(eq(q, 1), eq(q, 3));
  std::string useCos =
      sine ? odd
           : w_.assign(fmt::format("arith.xori {}, {} : {}", odd,
                                   splat(w_, w_.constant(1, DType::Bool), ElementType{DType::Bool, type.lanes}), bt));
  std::string negate = sine ? w_.assign(fmt::format("arith.cmpf oge, {}, {} : {}", q, c(2), t))
                            : orBits(eq(q, 1), eq(q, 2));
  std::string v = select(useCos, cosR, sinR, type);
  std::string negated = w_.assign(fmt::format("arith.negf {} : {}", v, t));
  return select(negate, negated, v, type);
}

// f32 erf as vectorizable arithmetic, within 1.5 ulp of the exact erf, with
// no division and no table: MLIR's math.erf approximation selects one of
// three rational functions per element (about 20 selects and a division),
// which made the matmul epilogue of an erf GELU cost a fifth of its matmul.
// Both halves below are computed for every element and one is selected:
// - |x| < 1: erf x = x + x P(x^2), P of degree 6 (a minimax fit of
//   erf(x)/x - 1, so the leading 2/sqrt(pi) adds no rounding error);
// - |x| >= 1: erf |x| = 1 - 2^Q(|x|), Q of degree 6 fitted to log2 erfc on
//   [1, 3.95] weighted by erfc (the error that reaches erf), and 2^Q split
//   into 2^round(Q) (built in the exponent bits) times a degree-5 polynomial
//   of the exact remainder in [-1/2, 1/2]. Beyond 3.95 erf rounds to 1 in
//   f32, so |x| is clamped there (keeping Q's argument in its fitted range).
// The coefficients were fitted for this code (Lawson's iteratively
// reweighted least squares) and the result checked against f64 erf over a
// dense sweep (test_codegen_erf.cpp). NaN stays NaN: the clamp keeps it and
// every comparison with it is false.
std::string ElementRules::erfF32(const std::string &x, const ElementType &operand) {
  ElementType type{DType::F32, operand.lanes};
  std::string t = type.text();
  ElementType intType{DType::I32, operand.lanes};
  std::string it = intType.text();
  auto c = [&](double v) { return constant(v, type); };
  auto op1 = [&](const char *name, const std::string &a) {
    return w_.assign(fmt::format("{} {} : {}", name, a, t));
  };
  auto op2 = [&](const char *name, const std::string &a, const std::string &b) {
    return w_.assign(fmt::format("{} {}, {} : {}", name, a, b, t));
  };
  auto fma = [&](const std::string &a, const std::string &b, const std::string &acc) {
    return w_.assign(fmt::format("math.fma {}, {}, {} : {}", a, b, acc, t));
  };
  // Horner's rule: coefficients from the constant term up.
  auto polynomial = [&](const std::string &v, const std::vector<double> &coefficients) {
    std::string acc = c(coefficients.back());
    for (size_t k = coefficients.size() - 1; k-- > 0;)
      acc = fma(acc, v, c(coefficients[k]));
    return acc;
  };
  std::string magnitude = op1("math.absf", x);
  std::string small = fma(x,
                          polynomial(op2("arith.mulf", x, x),
                                     {1.28379166e-1, -3.76126260e-1, 1.12836003e-1, -2.68544480e-2,
                                      5.18954173e-3, -8.02089344e-4, 7.88927937e-5}),
                          x);
  // |x| > 3.95 ? 3.95 : |x| keeps NaN (one vmaxps/vminps on x86).
  std::string beyond =
      w_.assign(fmt::format("arith.cmpf ogt, {}, {} : {}", magnitude, c(3.95), t));
  std::string clamped = select(beyond, c(3.95), magnitude, type);
  std::string log2Erfc = polynomial(clamped, {-5.10289916e-4, -1.62597513, -9.20764863e-1,
                                              -1.48651615e-1, 3.14584821e-2, -4.24097152e-3,
                                              2.67728203e-4});
  std::string whole = op1("math.roundeven", log2Erfc);
  std::string fraction = op2("arith.subf", log2Erfc, whole);
  std::string mantissa = polynomial(fraction, {1, 6.93146944e-1, 2.40221202e-1, 5.55071346e-2,
                                               9.67554189e-3, 1.32764666e-3});
  // 2^whole * mantissa: add whole to the exponent field. Q >= -27 on the
  // clamped range, so the result stays a normal number.
  std::string exponent = w_.assign(fmt::format("arith.fptosi {} : {} to {}", whole, t, it));
  std::string shifted = w_.assign(fmt::format("arith.shli {}, {} : {}", exponent,
                                              splat(w_, w_.integerConstant(23, DType::I32), intType), it));
  std::string bits = w_.assign(fmt::format("arith.bitcast {} : {} to {}", mantissa, t, it));
  std::string scaledBits = w_.assign(fmt::format("arith.addi {}, {} : {}", bits, shifted, it));
  std::string erfc = w_.assign(fmt::format("arith.bitcast {} : {} to {}", scaledBits, it, t));
  std::string large = op2("math.copysign", op2("arith.subf", c(1), erfc), x);
  std::string isSmall = w_.assign(fmt::format("arith.cmpf olt, {}, {} : {}", magnitude, c(1), t));
  return select(isSmall, small, large, type);
}

} // namespace stepc::codegen
