// Lowers one FusionGroup to one MLIR function on memrefs (arith, math, scf,
// memref). Elementwise and index-remapping ops are inlined into the loop of
// whatever consumes them ("loop fusion by substitution"); reductions,
// matmul, convolutions, pools and the gradient ops are roots with loop nests
// of their own (lowering_roots.cpp). Values a later kernel needs are stored
// to their planned arena buffers; other roots go to the kernel scratch area
// after them.
#include "kernel_emitter.h"
#include "tiled_matmul.h"

#include "stepc/graph_values.h"
#include "stepc/half.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>
#include <stdexcept>

namespace stepc::codegen {

namespace {

std::string sanitize(const std::string &name) {
  std::string out;
  for (char c : name)
    out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

} // namespace

// ---------------------------------------------------------------------------
// Storage

std::string KernelEmitter::arenaOffsetValue(int64_t bytes) {
  if (gpu_)
    return w_.indexConstant(bytes);
  offsets_.push_back(bytes);
  return fmt::format("%off{}", offsets_.size() - 1);
}

std::string KernelEmitter::arenaView(ValueId id) {
  std::string offset = arenaOffsetValue(arenaOffset_(id));
  return w_.assign(fmt::format("memref.view %arena[{}][] : memref<?xi8> to {}", offset,
                               memrefType(g_.type(id))));
}

std::string KernelEmitter::viewOf(ValueId id) {
  auto it = views_.find(id);
  if (it != views_.end())
    return it->second;
  // Graph inputs, params and values of earlier kernels live in the arena;
  // views are created at function entry so every loop sees them.
  throw std::logic_error(fmt::format("kernel {}: value %{} has no storage", group_.name, id));
}

std::string KernelEmitter::load(ValueId id, const Index &idx) {
  std::string view = viewOf(id);
  std::string v = w_.assign(fmt::format("memref.load {}[{}] : {}", view, fmt::join(idx, ", "),
                                        memrefType(g_.type(id))));
  return fromMemory(v, dtypeOf(id));
}

std::string KernelEmitter::fromMemory(const std::string &loaded, DType dt) {
  if (dt == DType::Bool)
    return w_.assign(fmt::format("arith.cmpi ne, {}, {} : i8", loaded,
                                 w_.assign("arith.constant 0 : i8")));
  if (isHalf(dt))
    return w_.assign(fmt::format("arith.extf {} : {} to f32", loaded, memoryElementType(dt)));
  return loaded;
}

void KernelEmitter::store(ValueId id, const std::string &view, const Index &idx,
                          const std::string &v) {
  std::string stored = v;
  if (dtypeOf(id) == DType::Bool)
    stored = w_.assign(fmt::format("arith.extui {} : i1 to i8", v));
  if (isHalf(dtypeOf(id)))
    stored = w_.assign(fmt::format("arith.truncf {} : f32 to {}", v,
                                   memoryElementType(dtypeOf(id))));
  w_.line(fmt::format("memref.store {}, {}[{}] : {}", stored, view, fmt::join(idx, ", "),
                      memrefType(g_.type(id))));
}

// ---------------------------------------------------------------------------
// Index arithmetic

Index KernelEmitter::broadcastIndex(ValueId operand, const Shape &outShape, const Index &idx) {
  const Shape &s = shapeOf(operand);
  size_t lead = outShape.size() - s.size();
  Index out;
  for (size_t j = 0; j < s.size(); ++j)
    out.push_back(s[j] == 1 && outShape[lead + j] != 1 ? w_.indexConstant(0) : idx[lead + j]);
  return out;
}

std::string KernelEmitter::linearize(const Index &idx, const Shape &shape) {
  std::string flat = w_.indexConstant(0);
  for (size_t d = 0; d < shape.size(); ++d) {
    std::string scaled =
        w_.assign(fmt::format("arith.muli {}, {} : index", flat, w_.indexConstant(shape[d])));
    flat = w_.assign(fmt::format("arith.addi {}, {} : index", scaled, idx[d]));
  }
  return flat;
}

Index KernelEmitter::delinearize(const std::string &flat, const Shape &shape) {
  Index out(shape.size());
  std::string rest = flat;
  for (size_t d = shape.size(); d-- > 0;) {
    std::string size = w_.indexConstant(shape[d]);
    out[d] = d == 0 ? rest : w_.assign(fmt::format("arith.remui {}, {} : index", rest, size));
    if (d > 0)
      rest = w_.assign(fmt::format("arith.divui {}, {} : index", rest, size));
  }
  return out;
}

std::string KernelEmitter::inBounds(const std::string &v, int64_t size) {
  // One unsigned comparison checks 0 <= v < size for a signed index.
  return w_.assign(fmt::format("arith.cmpi ult, {}, {} : index", v, w_.indexConstant(size)));
}

std::string KernelEmitter::clampIndex(const std::string &v, int64_t size) {
  std::string low = w_.assign(fmt::format("arith.maxsi {}, {} : index", v, w_.indexConstant(0)));
  return w_.assign(fmt::format("arith.minsi {}, {} : index", low, w_.indexConstant(size - 1)));
}

// out * stride - padding + tap * dilation
std::string KernelEmitter::windowCoordinate(const std::string &out, const std::string &tap,
                                            int64_t stride, int64_t padding, int64_t dilation) {
  std::string a = w_.assign(fmt::format("arith.muli {}, {} : index", out, w_.indexConstant(stride)));
  std::string b = w_.assign(fmt::format("arith.muli {}, {} : index", tap, w_.indexConstant(dilation)));
  std::string c = w_.assign(fmt::format("arith.addi {}, {} : index", a, b));
  return w_.assign(fmt::format("arith.subi {}, {} : index", c, w_.indexConstant(padding)));
}

// The operand that holds the indices a checked op reads.
namespace {
ValueId indicesOf(const Node &n) { return n.operands[n.op == OpKind::Gather ? 1 : 0]; }
} // namespace

// The index op `user` (gather, scatter_add) reads at `at` of its indices, in
// [0, bound): one outside was recorded (outOfRange, here or in the kernel's
// check nest) and 0 is read instead, so compiled code never reads out of
// bounds.
std::string KernelEmitter::indexValue(ValueId user, const Index &at) {
  ValueId indices = indicesOf(node(user));
  std::string v = valueAt(indices, at);
  std::string asIndex =
      w_.assign(fmt::format("arith.index_cast {} : {} to index", v, scalarType(dtypeOf(indices))));
  if (prechecked_.count(user))
    return clampIndex(asIndex, checks_[checkOf_.at(user)].bound);
  std::string bad = outOfRange(user, at, v, asIndex);
  return w_.assign(fmt::format("arith.select {}, {}, {} : index", bad, w_.indexConstant(0), asIndex));
}

// Whether `index` (the element of `user`'s indices at `at`, `value` in its
// own dtype) lies outside the op's range, as an i1. When it does, the first
// thread to claim the fault record (an atomic or on its first word) writes
// which check failed, where and with what value; the runtime reports it
// after the kernel.
std::string KernelEmitter::outOfRange(ValueId user, const Index &at, const std::string &value,
                                      const std::string &index) {
  if (fault_.offset < 0)
    throw std::logic_error(fmt::format("kernel {}: %{} checks indices, but the executable has "
                                       "no fault record",
                                       group_.name, user));
  const Node &n = node(user);
  ValueId indices = indicesOf(n);
  auto [entry, added] = checkOf_.try_emplace(user, static_cast<int64_t>(checks_.size()));
  if (added) {
    std::vector<TensorType> operands;
    for (ValueId operand : n.operands)
      operands.push_back(g_.type(operand));
    checks_.push_back(*indexCheckFor(n, operands));
  }
  // Negative indices are huge unsigned ones.
  std::string bad = w_.assign(fmt::format("arith.cmpi uge, {}, {} : index", index,
                                          w_.indexConstant(checks_[entry->second].bound)));
  w_.line(fmt::format("scf.if {} {{", bad));
  w_.indent();
  w_.pushScope();
  std::string record = w_.assign(fmt::format("memref.view %arena[{}][] : memref<?xi8> to memref<{}xi64>",
                                             arenaOffsetValue(fault_.offset), kFaultRecordWords));
  std::string old = w_.assign(fmt::format("memref.atomic_rmw ori {}, {}[{}] : (i64, memref<{}xi64>) -> i64",
                                          w_.integerConstant(1, DType::I64), record,
                                          w_.indexConstant(0), kFaultRecordWords));
  std::string first = w_.assign(fmt::format("arith.cmpi eq, {}, {} : i64", old,
                                            w_.integerConstant(0, DType::I64)));
  w_.line(fmt::format("scf.if {} {{", first));
  w_.indent();
  w_.pushScope();
  std::string element = w_.assign(fmt::format("arith.index_cast {} : index to i64",
                                              linearize(at, shapeOf(indices))));
  std::string wide = convert(value, dtypeOf(indices), DType::I64);
  auto put = [&](int64_t word, const std::string &v) {
    w_.line(fmt::format("memref.store {}, {}[{}] : memref<{}xi64>", v, record,
                        w_.indexConstant(word), kFaultRecordWords));
  };
  put(1, w_.integerConstant(fault_.firstCheck + entry->second, DType::I64));
  put(2, element);
  put(3, wide);
  for (int k = 0; k < 2; ++k) {
    w_.popScope();
    w_.dedent();
    w_.line("}");
  }
  return bad;
}

// A nest over every element of `user`'s indices that checks each one, in
// row-major order (so one thread records the first bad element, as the
// interpreter reports it). It costs one pass over the indices, which are
// small next to what they select, and keeps the checks out of the loops that
// read them: an inner loop over a one_hot row or a gathered row stays free
// of branches and vectorizes as before.
void KernelEmitter::emitIndexCheck(ValueId user) {
  ValueId indices = indicesOf(node(user));
  Index at = openLoops(shapeOf(indices), gpu_);
  std::string v = valueAt(indices, at);
  std::string asIndex =
      w_.assign(fmt::format("arith.index_cast {} : {} to index", v, scalarType(dtypeOf(indices))));
  outOfRange(user, at, v, asIndex);
  closeLoops(at.size());
}

// The checked ops whose indices can be read before any root of the kernel
// runs: the indices are in the arena, or inlined from values that are. The
// rest (indices computed by a root of this kernel) are checked where they
// are read.
std::vector<ValueId> KernelEmitter::precheckable(const std::vector<ValueId> &roots) const {
  std::set<ValueId> late(roots.begin(), roots.end());
  std::vector<ValueId> out;
  for (ValueId id : group_.nodes) {
    const Node &n = node(id);
    if (!late.count(id))
      for (ValueId operand : n.operands)
        if (late.count(operand)) {
          late.insert(id);
          break;
        }
    if (checksIndices(n) && !late.count(indicesOf(n)))
      out.push_back(id);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Values

std::string KernelEmitter::valueAt(ValueId id, const Index &idx) {
  std::string key = fmt::format("{}@{}", id, fmt::join(idx, ","));
  if (const std::string *hit = w_.cached(key))
    return *hit;
  const Node &n = node(id);
  std::string v;
  // A root of the current nest is read from memory only where the nest has
  // stored it; elsewhere (a transpose of it) it is not there yet, and
  // computing it again is what its own store would have held.
  if (views_.count(id) && !nestRoots_.count(id))
    v = load(id, idx);
  else if (isInlinable(n.op))
    v = lowerElement(n, id, idx);
  else
    throw std::logic_error(
        fmt::format("kernel {}: %{} ({}) is neither computed nor stored", group_.name, id,
                    opInfo(n.op).name));
  w_.cache(key, v);
  return v;
}

std::string KernelEmitter::convert(const std::string &v, DType from, DType to) {
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

std::string KernelEmitter::unary(const Node &n, const std::string &x) {
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  bool fp = isFloat(dt);
  auto op1 = [&](const char *name) { return w_.assign(fmt::format("{} {} : {}", name, x, t)); };
  switch (n.op) {
  case OpKind::Neg:
    return fp ? op1("arith.negf")
              : w_.assign(fmt::format("arith.subi {}, {} : {}", w_.constant(0, dt), x, t));
  case OpKind::Abs:
    if (isUnsigned(dt))
      return x;
    return op1(fp ? "math.absf" : "math.absi");
  case OpKind::Exp: return op1("math.exp");
  case OpKind::Log: return op1("math.log");
  case OpKind::Sqrt: return op1("math.sqrt");
  case OpKind::Rsqrt: return op1("math.rsqrt");
  case OpKind::Square: return binary(OpKind::Mul, dt, x, x);
  case OpKind::Tanh: return op1("math.tanh");
  case OpKind::Sigmoid: {
    std::string e = w_.assign(fmt::format("math.exp {} : {}", op1("arith.negf"), t));
    std::string d = w_.assign(fmt::format("arith.addf {}, {} : {}", w_.constant(1, dt), e, t));
    return w_.assign(fmt::format("arith.divf {}, {} : {}", w_.constant(1, dt), d, t));
  }
  case OpKind::Relu: {
    // x < 0 ? 0 : x lets NaN through, as the interpreter does.
    std::string negative = binary(OpKind::Lt, dt, x, w_.constant(0, dt));
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", negative, w_.constant(0, dt), x, t));
  }
  // On the GPU, libdevice's sinf/cosf are accurate (the CPU's reason for
  // sinOrCosF32 is MLIR's polynomial, which the GPU path does not use).
  case OpKind::Sin: return t == "f32" && !gpu_ ? sinOrCosF32(x, true) : op1("math.sin");
  case OpKind::Cos: return t == "f32" && !gpu_ ? sinOrCosF32(x, false) : op1("math.cos");
  case OpKind::Erf: return op1("math.erf");
  case OpKind::Sign: {
    std::string gt = binary(OpKind::Gt, dt, x, w_.constant(0, dt));
    std::string lt = binary(OpKind::Lt, dt, x, w_.constant(0, dt));
    std::string inner = w_.assign(fmt::format("arith.select {}, {}, {} : {}", lt, w_.constant(-1, dt), w_.constant(0, dt), t));
    std::string s = w_.assign(fmt::format("arith.select {}, {}, {} : {}", gt, w_.constant(1, dt), inner, t));
    if (!fp)
      return s;
    std::string nan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", x, x, t));
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", nan, x, s, t));
  }
  case OpKind::Input:
  case OpKind::Parameter:
  case OpKind::Constant:
  case OpKind::Iota:
  case OpKind::Cast:
  case OpKind::Add:
  case OpKind::Sub:
  case OpKind::Mul:
  case OpKind::Div:
  case OpKind::Pow:
  case OpKind::Maximum:
  case OpKind::Minimum:
  case OpKind::Rem:
  case OpKind::Eq:
  case OpKind::Ne:
  case OpKind::Lt:
  case OpKind::Le:
  case OpKind::Gt:
  case OpKind::Ge:
  case OpKind::Select:
  case OpKind::ReduceSum:
  case OpKind::ReduceMean:
  case OpKind::ReduceMax:
  case OpKind::ReduceMin:
  case OpKind::ArgMax:
  case OpKind::MatMul:
  case OpKind::Transpose:
  case OpKind::Reshape:
  case OpKind::BroadcastTo:
  case OpKind::Slice:
  case OpKind::Concat:
  case OpKind::Pad:
  case OpKind::Gather:
  case OpKind::OneHot:
  case OpKind::Conv2d:
  case OpKind::MaxPool2d:
  case OpKind::AvgPool2d:
  case OpKind::ScatterAdd:
  case OpKind::Conv2dGradInput:
  case OpKind::Conv2dGradWeight:
  case OpKind::MaxPool2dGrad:
  case OpKind::AvgPool2dGrad:
  case OpKind::Dropout:
  case OpKind::AllReduce:
    break;
  }
  throw std::logic_error("unary: not a unary op");
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
std::string KernelEmitter::sinOrCosF32(const std::string &x, bool sine) {
  const DType dt = DType::F32;
  auto c = [&](double v) { return w_.constant(v, dt); };
  auto op2 = [&](const char *name, const std::string &a, const std::string &b) {
    return w_.assign(fmt::format("{} {}, {} : f32", name, a, b));
  };
  auto fma = [&](const std::string &a, const std::string &b, const std::string &acc) {
    return w_.assign(fmt::format("math.fma {}, {}, {} : f32", a, b, acc));
  };
  auto eq = [&](const std::string &a, double b) {
    return w_.assign(fmt::format("arith.cmpf oeq, {}, {} : f32", a, c(b)));
  };
  std::string k = w_.assign(
      fmt::format("math.roundeven {} : f32", op2("arith.mulf", x, c(0.63661977236758134308))));
  std::string minusK = w_.assign(fmt::format("arith.negf {} : f32", k));
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
  std::string quarter = w_.assign(fmt::format("math.floor {} : f32", op2("arith.mulf", k, c(0.25))));
  std::string q = fma(quarter, c(-4), k);
  // sin x: q = 0: sin r, 1: cos r, 2: -sin r, 3: -cos r. cos x is sin(x + pi/2): q + 1.
  std::string odd = w_.assign(fmt::format("arith.ori {}, {} : i1", eq(q, 1), eq(q, 3)));
  std::string useCos =
      sine ? odd : w_.assign(fmt::format("arith.xori {}, {} : i1", odd, w_.constant(1, DType::Bool)));
  std::string negate = sine ? w_.assign(fmt::format("arith.cmpf oge, {}, {} : f32", q, c(2)))
                            : w_.assign(fmt::format("arith.ori {}, {} : i1", eq(q, 1), eq(q, 2)));
  std::string v = w_.assign(fmt::format("arith.select {}, {}, {} : f32", useCos, cosR, sinR));
  std::string negated = w_.assign(fmt::format("arith.negf {} : f32", v));
  return w_.assign(fmt::format("arith.select {}, {}, {} : f32", negate, negated, v));
}

std::string KernelEmitter::binary(OpKind op, DType dt, const std::string &a, const std::string &b) {
  std::string t = scalarType(dt);
  bool fp = isFloat(dt);
  auto op2 = [&](const std::string &name) {
    return w_.assign(fmt::format("{} {}, {} : {}", name, a, b, t));
  };
  // Ordering predicates and division come in signed and unsigned forms;
  // the dtype picks (MLIR integers are signless).
  bool u = isUnsigned(dt);
  auto cmp = [&](const char *fpred, const char *ipred) {
    std::string pred = fp ? fpred : ipred;
    if (u && pred[0] == 's')
      pred[0] = 'u';
    return w_.assign(fmt::format("arith.cmp{} {}, {}, {} : {}", fp ? "f" : "i", pred, a, b, t));
  };
  switch (op) {
  case OpKind::Add: return op2(fp ? "arith.addf" : "arith.addi");
  case OpKind::Sub: return op2(fp ? "arith.subf" : "arith.subi");
  case OpKind::Mul: return op2(fp ? "arith.mulf" : "arith.muli");
  case OpKind::Div: {
    if (fp)
      return op2("arith.divf");
    // x / 0 = 0 and MIN / -1 = MIN, as the interpreter; never a trap.
    std::string zero = w_.constant(0, dt), one = w_.constant(1, dt);
    std::string byZero = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, zero, t));
    if (u) {
      std::string safe = w_.assign(fmt::format("arith.select {}, {}, {} : {}", byZero, one, b, t));
      std::string q = w_.assign(fmt::format("arith.divui {}, {} : {}", a, safe, t));
      return w_.assign(fmt::format("arith.select {}, {}, {} : {}", byZero, zero, q, t));
    }
    std::string minusOne = w_.constant(-1, dt);
    // The signed minimum of the width: 1 << (bits - 1), printed in range.
    std::string minimum =
        w_.integerConstant(static_cast<int64_t>(uint64_t(1) << (dtypeSize(dt) * 8 - 1)), dt);
    std::string isMin = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", a, minimum, t));
    std::string isMinusOne = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, minusOne, t));
    std::string overflow = w_.assign(fmt::format("arith.andi {}, {} : i1", isMin, isMinusOne));
    std::string unsafe = w_.assign(fmt::format("arith.ori {}, {} : i1", byZero, overflow));
    std::string safe = w_.assign(fmt::format("arith.select {}, {}, {} : {}", unsafe, one, b, t));
    std::string q = w_.assign(fmt::format("arith.divsi {}, {} : {}", a, safe, t));
    std::string q2 = w_.assign(fmt::format("arith.select {}, {}, {} : {}", overflow, minimum, q, t));
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", byZero, zero, q2, t));
  }
  case OpKind::Rem: {
    if (fp)
      return op2("arith.remf");
    // x rem 0 = x and MIN rem -1 = 0, as the interpreter: a divisor of 0 or
    // (signed) -1 becomes 1, whose remainder is 0, and 0 then takes x.
    std::string zero = w_.constant(0, dt), one = w_.constant(1, dt);
    std::string byZero = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, zero, t));
    std::string unsafe = byZero;
    if (!u) {
      std::string minusOne = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, w_.constant(-1, dt), t));
      unsafe = w_.assign(fmt::format("arith.ori {}, {} : i1", byZero, minusOne));
    }
    std::string safe = w_.assign(fmt::format("arith.select {}, {}, {} : {}", unsafe, one, b, t));
    std::string r = w_.assign(fmt::format("arith.{} {}, {} : {}", u ? "remui" : "remsi", a, safe, t));
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", byZero, a, r, t));
  }
  case OpKind::Pow: return op2("math.powf");
  case OpKind::Maximum: return op2(fp ? "arith.maximumf" : u ? "arith.maxui" : "arith.maxsi");
  case OpKind::Minimum: return op2(fp ? "arith.minimumf" : u ? "arith.minui" : "arith.minsi");
  case OpKind::Eq: return cmp("oeq", "eq");
  case OpKind::Ne: return cmp("une", "ne");
  case OpKind::Lt: return cmp("olt", "slt");
  case OpKind::Le: return cmp("ole", "sle");
  case OpKind::Gt: return cmp("ogt", "sgt");
  case OpKind::Ge: return cmp("oge", "sge");
  case OpKind::Input:
  case OpKind::Parameter:
  case OpKind::Constant:
  case OpKind::Iota:
  case OpKind::Neg:
  case OpKind::Abs:
  case OpKind::Exp:
  case OpKind::Log:
  case OpKind::Sqrt:
  case OpKind::Rsqrt:
  case OpKind::Square:
  case OpKind::Tanh:
  case OpKind::Sigmoid:
  case OpKind::Relu:
  case OpKind::Sin:
  case OpKind::Cos:
  case OpKind::Sign:
  case OpKind::Erf:
  case OpKind::Cast:
  case OpKind::Select:
  case OpKind::ReduceSum:
  case OpKind::ReduceMean:
  case OpKind::ReduceMax:
  case OpKind::ReduceMin:
  case OpKind::ArgMax:
  case OpKind::MatMul:
  case OpKind::Transpose:
  case OpKind::Reshape:
  case OpKind::BroadcastTo:
  case OpKind::Slice:
  case OpKind::Concat:
  case OpKind::Pad:
  case OpKind::Gather:
  case OpKind::OneHot:
  case OpKind::Conv2d:
  case OpKind::MaxPool2d:
  case OpKind::AvgPool2d:
  case OpKind::ScatterAdd:
  case OpKind::Conv2dGradInput:
  case OpKind::Conv2dGradWeight:
  case OpKind::MaxPool2dGrad:
  case OpKind::AvgPool2dGrad:
  case OpKind::Dropout:
  case OpKind::AllReduce:
    break;
  }
  throw std::logic_error("binary: not a binary op");
}

std::string KernelEmitter::constantElement(const Node &n, ValueId id, const Index &idx) {
  DType dt = n.type.dtype;
  if (n.attrs.has("value"))
    return w_.constant(n.attrs.getReal("value"), dt);
  std::string view = constantGlobal(n, id);
  std::string v = w_.assign(fmt::format("memref.load {}[{}] : {}", view, fmt::join(idx, ", "),
                                        memrefType(n.type)));
  return fromMemory(v, dt);
}

// Data constants become module globals in their memory layout.
std::string KernelEmitter::constantGlobal(const Node &n, ValueId id) {
  DType dt = n.type.dtype;
  std::string name = fmt::format("@{}_cst{}", sanitize(group_.name), id);
  if (globalNames_.insert(name).second) {
    std::vector<double> data = n.attrs.getReals("data");
    // Integer lists are taken as they are, so i64 data above 2^53 stays
    // exact (as in the interpreter).
    const auto *ints = std::get_if<std::vector<int64_t>>(n.attrs.find("data"));
    // A runtime tensor lays elements out as the memref does (bools as
    // bytes, halves as their bits).
    Tensor memory(n.type);
    for (size_t k = 0; k < data.size(); ++k) {
      if (ints && !isFloat(dt))
        memory.setInteger(static_cast<int64_t>(k), (*ints)[k]);
      else
        memory.setReal(static_cast<int64_t>(k), data[k]);
    }
    std::string hex;
    for (size_t j = 0; j < memory.nbytes(); ++j)
      hex += fmt::format("{:02X}", std::to_integer<unsigned>(memory.bytes()[j]));
    globals_ += fmt::format("  memref.global \"private\" constant {} : {} = dense<\"0x{}\">\n",
                            name, memrefType(n.type), hex);
  }
  // get_global at function entry scope is not guaranteed here, so emit it
  // where needed; MLIR's CSE and LLVM hoist it.
  return w_.assign(fmt::format("memref.get_global {} : {}", name, memrefType(n.type)));
}

std::string KernelEmitter::padElement(const Node &n, const Index &idx) {
  ValueId x = n.operands[0];
  const Shape &s = shapeOf(x);
  const auto &low = n.attrs.getInts("low");
  std::vector<int64_t> interior(s.size(), 0);
  if (n.attrs.has("interior"))
    interior = n.attrs.getInts("interior");
  std::string valid = w_.assign("arith.constant true");
  Index src;
  for (size_t d = 0; d < s.size(); ++d) {
    std::string shifted = w_.assign(fmt::format("arith.subi {}, {} : index", idx[d], w_.indexConstant(low[d])));
    std::string pos = shifted;
    if (interior[d] > 0) {
      std::string step = w_.indexConstant(interior[d] + 1);
      std::string rem = w_.assign(fmt::format("arith.remsi {}, {} : index", shifted, step));
      std::string onGrid = w_.assign(fmt::format("arith.cmpi eq, {}, {} : index", rem, w_.indexConstant(0)));
      valid = w_.assign(fmt::format("arith.andi {}, {} : i1", valid, onGrid));
      pos = w_.assign(fmt::format("arith.divsi {}, {} : index", shifted, step));
    }
    valid = w_.assign(fmt::format("arith.andi {}, {} : i1", valid, inBounds(pos, s[d])));
    src.push_back(clampIndex(pos, std::max<int64_t>(s[d], 1)));
  }
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  std::string result = w_.fresh();
  w_.line(fmt::format("{} = scf.if {} -> ({}) {{", result, valid, t));
  w_.indent();
  w_.pushScope();
  w_.line(fmt::format("scf.yield {} : {}", valueAt(x, src), t));
  w_.popScope();
  w_.dedent();
  w_.line("} else {");
  w_.indent();
  w_.pushScope();
  w_.line(fmt::format("scf.yield {} : {}", w_.constant(n.attrs.getReal("value"), dt), t));
  w_.popScope();
  w_.dedent();
  w_.line("}");
  return result;
}

// Operand `first` and after: the operand whose range along the axis holds the index.
std::string KernelEmitter::concatElement(const Node &n, const Index &idx, size_t first) {
  int64_t axis = n.attrs.getInt("axis");
  int64_t start = 0;
  for (size_t k = 0; k < first; ++k)
    start += shapeOf(n.operands[k])[axis];
  ValueId x = n.operands[first];
  Index local = idx;
  local[axis] = w_.assign(fmt::format("arith.subi {}, {} : index", idx[axis], w_.indexConstant(start)));
  if (first + 1 == n.operands.size())
    return valueAt(x, local);
  int64_t end = start + shapeOf(x)[axis];
  std::string inside = w_.assign(fmt::format("arith.cmpi slt, {}, {} : index", idx[axis], w_.indexConstant(end)));
  std::string t = scalarType(n.type.dtype);
  std::string result = w_.fresh();
  w_.line(fmt::format("{} = scf.if {} -> ({}) {{", result, inside, t));
  w_.indent();
  w_.pushScope();
  w_.line(fmt::format("scf.yield {} : {}", valueAt(x, local), t));
  w_.popScope();
  w_.dedent();
  w_.line("} else {");
  w_.indent();
  w_.pushScope();
  w_.line(fmt::format("scf.yield {} : {}", concatElement(n, idx, first + 1), t));
  w_.popScope();
  w_.dedent();
  w_.line("}");
  return result;
}

// Same counter-based mask as the interpreter: keep iff uniform(seed, i) >= rate.
std::string KernelEmitter::dropoutElement(const Node &n, ValueId id, const Index &idx) {
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  std::string x = valueAt(n.operands[0], idx);
  double rate = n.attrs.getReal("rate");
  if (rate == 0)
    return x;
  std::string seed = valueAt(n.operands[1], {});
  std::string flat = w_.assign(fmt::format("arith.index_cast {} : index to i64", linearize(idx, n.type.shape)));
  auto c64 = [&](uint64_t v) { return w_.assign(fmt::format("arith.constant {} : i64", static_cast<int64_t>(v))); };
  auto op = [&](const char *name, const std::string &a, const std::string &b) {
    return w_.assign(fmt::format("{} {}, {} : i64", name, a, b));
  };
  std::string z = op("arith.muli", seed, c64(0x9E3779B97F4A7C15ull));
  z = op("arith.addi", z, flat);
  z = op("arith.addi", z, c64(0x632BE59BD9B4E019ull));
  z = op("arith.muli", op("arith.xori", z, op("arith.shrui", z, c64(30))), c64(0xBF58476D1CE4E5B9ull));
  z = op("arith.muli", op("arith.xori", z, op("arith.shrui", z, c64(27))), c64(0x94D049BB133111EBull));
  z = op("arith.xori", z, op("arith.shrui", z, c64(31)));
  std::string top = op("arith.shrui", z, c64(11));
  std::string real = w_.assign(fmt::format("arith.uitofp {} : i64 to f64", top));
  std::string u = w_.assign(fmt::format("arith.mulf {}, {} : f64", real, w_.constant(0x1.0p-53, DType::F64)));
  std::string keep = w_.assign(fmt::format("arith.cmpf oge, {}, {} : f64", u, w_.constant(rate, DType::F64)));
  std::string scaled = binary(OpKind::Mul, dt, x, w_.constant(1.0 / (1.0 - rate), dt));
  return w_.assign(fmt::format("arith.select {}, {}, {} : {}", keep, scaled, w_.constant(0, dt), t));
}

// The lowering rule of every op at one element (docs/design.md rule 1). Ops that
// are not inlinable are materialized by emitRoot and only loaded here.
std::string KernelEmitter::lowerElement(const Node &n, ValueId id, const Index &idx) {
  auto operand = [&](size_t k) { return valueAt(n.operands[k], broadcastIndex(n.operands[k], n.type.shape, idx)); };
  switch (n.op) {
  case OpKind::Input:
  case OpKind::Parameter:
  case OpKind::ReduceSum:
  case OpKind::ReduceMean:
  case OpKind::ReduceMax:
  case OpKind::ReduceMin:
  case OpKind::ArgMax:
  case OpKind::MatMul:
  case OpKind::Conv2d:
  case OpKind::MaxPool2d:
  case OpKind::AvgPool2d:
  case OpKind::ScatterAdd:
  case OpKind::Conv2dGradInput:
  case OpKind::Conv2dGradWeight:
  case OpKind::MaxPool2dGrad:
  case OpKind::AvgPool2dGrad:
  case OpKind::AllReduce: // the runtime's collective step wrote it
    return load(id, idx);
  case OpKind::Constant: return constantElement(n, id, idx);
  case OpKind::Iota: {
    std::string i = w_.assign(fmt::format("arith.index_cast {} : index to i64", idx[n.attrs.getInt("axis")]));
    return convert(i, DType::I64, n.type.dtype);
  }
  case OpKind::Neg:
  case OpKind::Abs:
  case OpKind::Exp:
  case OpKind::Log:
  case OpKind::Sqrt:
  case OpKind::Rsqrt:
  case OpKind::Square:
  case OpKind::Tanh:
  case OpKind::Sigmoid:
  case OpKind::Relu:
  case OpKind::Sin:
  case OpKind::Cos:
  case OpKind::Sign:
  case OpKind::Erf:
    return unary(n, operand(0));
  case OpKind::Cast: return convert(operand(0), dtypeOf(n.operands[0]), n.type.dtype);
  case OpKind::Add:
  case OpKind::Sub:
  case OpKind::Mul:
  case OpKind::Div:
  case OpKind::Pow:
  case OpKind::Maximum:
  case OpKind::Minimum:
  case OpKind::Rem:
    return binary(n.op, n.type.dtype, operand(0), operand(1));
  case OpKind::Eq:
  case OpKind::Ne:
  case OpKind::Lt:
  case OpKind::Le:
  case OpKind::Gt:
  case OpKind::Ge:
    return binary(n.op, dtypeOf(n.operands[0]), operand(0), operand(1));
  case OpKind::Select:
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", operand(0), operand(1), operand(2),
                                 scalarType(n.type.dtype)));
  case OpKind::Transpose: {
    const auto &perm = n.attrs.getInts("perm");
    Index src(perm.size());
    for (size_t i = 0; i < perm.size(); ++i)
      src[perm[i]] = idx[i];
    return valueAt(n.operands[0], src);
  }
  case OpKind::Reshape:
    return valueAt(n.operands[0], delinearize(linearize(idx, n.type.shape), shapeOf(n.operands[0])));
  case OpKind::BroadcastTo: return operand(0);
  case OpKind::Slice: {
    const auto &starts = n.attrs.getInts("starts");
    const auto &strides = n.attrs.getInts("strides");
    Index src;
    for (size_t d = 0; d < idx.size(); ++d) {
      std::string scaled = w_.assign(fmt::format("arith.muli {}, {} : index", idx[d], w_.indexConstant(strides[d])));
      src.push_back(w_.assign(fmt::format("arith.addi {}, {} : index", scaled, w_.indexConstant(starts[d]))));
    }
    return valueAt(n.operands[0], src);
  }
  case OpKind::Concat: return concatElement(n, idx, 0);
  case OpKind::Pad: return padElement(n, idx);
  case OpKind::Gather: {
    ValueId data = n.operands[0], indices = n.operands[1];
    int64_t axis = n.attrs.getInt("axis");
    int64_t ir = g_.type(indices).rank();
    Index at(idx.begin() + axis, idx.begin() + axis + ir);
    Index src(idx.begin(), idx.begin() + axis);
    src.push_back(indexValue(id, at));
    src.insert(src.end(), idx.begin() + axis + ir, idx.end());
    return valueAt(data, src);
  }
  case OpKind::OneHot: {
    ValueId indices = n.operands[0];
    Index at(idx.begin(), idx.end() - 1);
    std::string v = valueAt(indices, at);
    std::string k = w_.assign(fmt::format("arith.index_cast {} : {} to index", v,
                                          scalarType(dtypeOf(indices))));
    // An index out of range matches no column: an all-zero row (an error
    // too when checked).
    if (checksIndices(n) && !prechecked_.count(id))
      outOfRange(id, at, v, k);
    std::string hit = w_.assign(fmt::format("arith.cmpi eq, {}, {} : index", k, idx.back()));
    return convert(hit, DType::Bool, n.type.dtype);
  }
  case OpKind::Dropout: return dropoutElement(n, id, idx);
  }
  throw std::logic_error("lowerElement: unknown op");
}

// ---------------------------------------------------------------------------

// What this backend cannot compile although the shape rules accept it, as a
// stepc::Error naming the op and where it comes from. Everything else the
// shape rules allow has a lowering (tests/test_codegen.cpp covers every op
// with every dtype it takes).
void checkSupported(const Node &n) {
  // scatter_add's shape rule lets bool updates through; a sum of bools has no
  // bool result (the interpreter refuses them too).
  if (n.op == OpKind::ScatterAdd && n.type.dtype == DType::Bool)
    throw Error(locatedMessage(
        n.loc, "scatter_add: bool updates are not supported by the CPU backend; cast them "
               "to i32 first"));
}

int64_t KernelEmitter::byteOffset(ValueId id) const {
  auto it = scratchAt_.find(id);
  return it != scratchAt_.end() ? it->second : arenaOffset_(id);
}

std::map<ValueId, int64_t> KernelEmitter::scratchOffsets(const std::vector<ValueId> &roots,
                                                         int64_t &bytes) const {
  std::map<ValueId, int64_t> offsets;
  for (ValueId id : roots)
    if (!usedOutside_[id]) {
      const TensorType &type = g_.type(id);
      offsets[id] = scratchOffset_ + bytes;
      bytes += (type.numel() * static_cast<int64_t>(dtypeSize(type.dtype)) + 63) / 64 * 64;
    }
  return offsets;
}

KernelSource KernelEmitter::emit() {
  for (ValueId id : group_.nodes)
    checkSupported(node(id));
  // The roots and their nests come from the fusion plan (planKernel).
  const KernelPlan &plan = group_.kernel;
  const std::vector<ValueId> &roots = plan.roots;
  for (ValueId id : group_.nodes)
    if (usedOutside_[id] && roots.empty())
      throw std::logic_error(fmt::format("kernel {} has no plan (planKernels)", group_.name));

  // Views of everything in the arena this kernel touches.
  std::set<ValueId> arenaValues(group_.inputs.begin(), group_.inputs.end());
  for (ValueId id : group_.nodes)
    for (ValueId operand : node(id).operands)
      if (!inGroup_.count(operand) && opInfo(node(operand).op).opClass != OpClass::Constant)
        arenaValues.insert(operand);
  for (ValueId id : roots)
    if (usedOutside_[id])
      arenaValues.insert(id);
  if (gpu_)
    return emitGpu(roots, arenaValues);
  for (ValueId id : arenaValues)
    views_[id] = arenaView(id);
  // Parallel calls share the scratch safely: each writes and reads only the
  // rows of dimension 0 it owns (KernelPlan::rowParallel).
  int64_t scratchBytes = 0;
  scratchAt_ = scratchOffsets(roots, scratchBytes);
  for (const auto &[id, offset] : scratchAt_)
    views_[id] = w_.assign(fmt::format("memref.view %arena[{}][] : memref<?xi8> to {}",
                                       arenaOffsetValue(offset), memrefType(g_.type(id))));

  // Scalars the kernel only reads are loaded once, up front: a load inside
  // the loops from the arena the loops also store to is a dependence LLVM
  // cannot rule out, and it would keep the loops from vectorizing.
  for (ValueId id : arenaValues)
    if (g_.type(id).rank() == 0 && !inGroup_.count(id))
      w_.cache(fmt::format("{}@", id), load(id, {}));

  // Index checks first; each call checks all of them (they are few), so any
  // split of the roots among threads is still checked whole.
  for (ValueId id : precheckable(roots)) {
    w_.pushScope();
    emitIndexCheck(id);
    w_.popScope();
    prechecked_.insert(id);
  }

  // The nests run one after another, split among threads by dimension 0
  // of the roots where the plan says that is safe, else on one thread.
  int64_t extent = 1;
  bool parallel = plan.rowParallel;
  if (parallel)
    extent = shapeOf(roots.front())[0];
  for (const LoopNest &nest : plan.nests) {
    w_.pushScope();
    // A product whose epilogue runs on its register tile computes the roots
    // of all later nests; where it cannot, they follow it.
    bool onTile = !nest.epilogue.empty() &&
                  emitMatMulWithEpilogue(nest.roots.front(), nest.epilogue, parallel);
    if (!onTile)
      emitNest(nest, parallel);
    w_.popScope();
    if (onTile)
      break;
  }
  if (perturbation_ != 0)
    emitPerturbation(parallel, extent);
  w_.line("return");

  KernelSource out;
  out.name = sanitize(group_.name);
  out.scratchBytes = scratchBytes;
  out.indexChecks = kernelChecks(out.name);
  out.globals = globals_;
  out.parallelExtent = extent;
  out.offsets = offsets_;
  std::string offsetArgs;
  for (size_t k = 0; k < offsets_.size(); ++k)
    offsetArgs += fmt::format(", %off{}: index", k);
  out.function = fmt::format(
      "  func.func @{}(%arena: memref<?xi8>, %begin: index, %end: index{}) {{\n{}  }}\n",
      out.name, offsetArgs, w_.text());
  return out;
}

void KernelEmitter::emitNest(const LoopNest &nest, bool parallel) {
  switch (nest.kind) {
  case NestKind::Elementwise: emitElementwiseRoots(nest.roots, parallel); return;
  case NestKind::Attention: emitAttention(nest.roots.front(), parallel); return;
  case NestKind::Reduction:
  case NestKind::Contraction:
  case NestKind::Window:
  case NestKind::Scatter: emitRoot(nest.roots.front(), parallel); return;
  case NestKind::Collective: break;
  }
  throw std::logic_error(fmt::format("kernel {}: a {} nest has no code", group_.name,
                                     nestKindName(nest.kind)));
}

// The amount goes to the elements at even flat indices: a shift of every
// element alike is what softmax and normalizations cancel, and the fault
// must show. A thread of a parallel kernel owns rows [%begin, %end) of dimension 0 of
// the kernel's extent: it perturbs its rows of outputs of that many rows;
// other outputs are perturbed by the thread that owns row 0 only.
void KernelEmitter::emitPerturbation(bool parallel, int64_t extent) {
  for (ValueId id : group_.outputs) {
    if (!usedOutside_[id] || !isFloat(dtypeOf(id)))
      continue;
    const Shape &shape = shapeOf(id);
    bool split = parallel && !shape.empty() && shape[0] == extent;
    w_.pushScope();
    bool guard = parallel && !split;
    if (guard) {
      w_.line(fmt::format("scf.if {} {{", w_.assign(fmt::format(
                                             "arith.cmpi eq, {}, {} : index", begin_,
                                             w_.indexConstant(0)))));
      w_.indent();
      w_.pushScope();
    }
    Index idx = openLoops(shape, split);
    DType dt = dtypeOf(id);
    std::string even = w_.assign(fmt::format(
        "arith.cmpi eq, {}, {} : index",
        w_.assign(fmt::format("arith.remui {}, {} : index", linearize(idx, shape),
                              w_.indexConstant(2))),
        w_.indexConstant(0)));
    std::string delta = w_.assign(fmt::format("arith.select {}, {}, {} : {}", even,
                                              w_.constant(perturbation_, dt), w_.constant(0, dt),
                                              scalarType(dt)));
    std::string sum = binary(OpKind::Add, dt, load(id, idx), delta);
    store(id, viewOf(id), idx, sum);
    closeLoops(idx.size());
    if (guard) {
      w_.popScope();
      w_.dedent();
      w_.line("}");
    }
    w_.popScope();
  }
}

// See lowerGroup (lowering.h). Each nest is emitted into a function of its
// own, with views of the arena and of the scratch made anew in each.
KernelSource KernelEmitter::emitGpu(const std::vector<ValueId> &roots,
                                    const std::set<ValueId> &arenaValues) {
  int64_t scratchBytes = 0;
  std::map<ValueId, int64_t> scratch = scratchOffsets(roots, scratchBytes);

  // The nests: index checks first (one thread per index), then the plan's
  // (no register tiles: a matmul's epilogue nests follow it).
  std::vector<std::function<void()>> nests;
  for (ValueId id : precheckable(roots)) {
    nests.push_back([this, id] { emitIndexCheck(id); });
    prechecked_.insert(id);
  }
  for (const LoopNest &nest : group_.kernel.nests) {
    ValueId root = nest.roots.front();
    if (nest.kind != NestKind::Elementwise && opInfo(node(root).op).is(kScatterForm))
      nests.push_back([this, root] { zeroChunk(root, true); });
    nests.push_back([this, &nest] { emitNest(nest, true); });
  }

  KernelSource out;
  out.name = sanitize(group_.name);
  for (size_t k = 0; k < nests.size(); ++k) {
    w_ = MlirWriter();
    w_.indent(); // inside the gpu.func's grid-stride loop
    w_.indent();
    views_.clear();
    flattened_ = false;
    flatExtent_ = 1;
    for (ValueId id : arenaValues)
      views_[id] = arenaView(id);
    for (const auto &[id, offset] : scratch)
      views_[id] = w_.assign(fmt::format("memref.view %arena[{}][] : memref<?xi8> to {}",
                                         w_.indexConstant(offset), memrefType(g_.type(id))));
    w_.pushScope();
    nests[k]();
    w_.popScope();
    if (!openedLoops_.empty())
      throw std::logic_error(fmt::format("kernel {}: unclosed loops", group_.name));
    GpuFunction f;
    f.name = nests.size() == 1 ? out.name : fmt::format("{}_{}", out.name, k);
    f.extent = flatExtent_;
    f.function = gpuFunctionHead(f.name) + w_.text() + "      }\n      gpu.return\n    }\n";
    out.gpuFunctions.push_back(std::move(f));
  }
  out.globals = globals_;
  out.scratchBytes = scratchBytes;
  out.indexChecks = kernelChecks(out.name);
  return out;
}


std::string gpuFunctionHead(const std::string &name) {
  // A grid-stride loop: thread t computes elements t, t + threads, ...
  return fmt::format("    gpu.func @{}(%arena: memref<?xi8>, %extent: index) kernel {{\n"
                     "      %gpu_block = gpu.block_id x\n"
                     "      %gpu_width = gpu.block_dim x\n"
                     "      %gpu_lane = gpu.thread_id x\n"
                     "      %gpu_base = arith.muli %gpu_block, %gpu_width : index\n"
                     "      %gpu_first = arith.addi %gpu_base, %gpu_lane : index\n"
                     "      %gpu_blocks = gpu.grid_dim x\n"
                     "      %gpu_stride = arith.muli %gpu_blocks, %gpu_width : index\n"
                     "      scf.for %begin = %gpu_first to %extent step %gpu_stride {{\n",
                     name);
}

std::vector<IndexCheck> KernelEmitter::kernelChecks(const std::string &kernel) const {
  std::vector<IndexCheck> checks = checks_;
  for (IndexCheck &check : checks)
    check.kernel = kernel;
  return checks;
}

bool checksIndices(const Node &node) {
  return node.op == OpKind::Gather || node.op == OpKind::ScatterAdd ||
         (node.op == OpKind::OneHot && node.attrs.has("checked") &&
          node.attrs.getInt("checked") != 0);
}

KernelSource lowerGroup(const Graph &graph, const FusionGroup &group,
                        const std::function<int64_t(ValueId)> &arenaOffset,
                        const std::vector<bool> &usedOutside, int64_t scratchOffset,
                        bool gpu, FaultRecord fault, double perturbation) {
  return KernelEmitter(graph, group, arenaOffset, usedOutside, scratchOffset, gpu, fault,
                       perturbation)
      .emit();
}

} // namespace stepc::codegen
