// Lowers one FusionGroup to one MLIR function on memrefs (arith, math, scf,
// memref). Elementwise and index-remapping ops are inlined into the loop of
// whatever consumes them ("loop fusion by substitution"); reductions,
// matmul, convolutions, pools and the gradient ops are roots with loop nests
// of their own. Values a later kernel needs are stored to the arena; other
// roots get scratch buffers freed at the end of the kernel.
#include "lowering.h"

#include "mlir_text.h"
#include "tiled_matmul.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>

namespace stepc::codegen {
namespace {

using Index = std::vector<std::string>;

// Whether an op's value at an index is a cheap function of its operands'
// values at computable indices, so it can be inlined into its consumer.
bool isInlinable(OpKind op) {
  switch (op) {
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
    return false;
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
  case OpKind::Add:
  case OpKind::Sub:
  case OpKind::Mul:
  case OpKind::Div:
  case OpKind::Pow:
  case OpKind::Maximum:
  case OpKind::Minimum:
  case OpKind::Eq:
  case OpKind::Ne:
  case OpKind::Lt:
  case OpKind::Le:
  case OpKind::Gt:
  case OpKind::Ge:
  case OpKind::Select:
  case OpKind::Transpose:
  case OpKind::Reshape:
  case OpKind::BroadcastTo:
  case OpKind::Slice:
  case OpKind::Concat:
  case OpKind::Pad:
  case OpKind::Gather:
  case OpKind::OneHot:
  case OpKind::Dropout:
    return true;
  }
  return false;
}

std::string sanitize(const std::string &name) {
  std::string out;
  for (char c : name)
    out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

class KernelEmitter {
public:
  KernelEmitter(const Graph &graph, const FusionGroup &group,
                const std::function<int64_t(ValueId)> &arenaOffset,
                const std::vector<bool> &usedOutside, const GpuTarget *gpu = nullptr)
      : g_(graph), group_(group), arenaOffset_(arenaOffset), usedOutside_(usedOutside),
        gpu_(gpu) {
    inGroup_.insert(group.nodes.begin(), group.nodes.end());
  }

  KernelSource emit();

private:
  KernelSource emitGpu(const std::vector<ValueId> &roots, const std::set<ValueId> &arenaValues);
  const Node &node(ValueId id) const { return g_.node(id); }
  DType dtypeOf(ValueId id) const { return g_.type(id).dtype; }
  const Shape &shapeOf(ValueId id) const { return g_.type(id).shape; }

  // --- storage ------------------------------------------------------------
  std::string arenaView(ValueId id);
  std::string load(ValueId id, const Index &idx);
  void store(ValueId id, const std::string &view, const Index &idx, const std::string &v);
  std::string viewOf(ValueId id);

  // --- values -------------------------------------------------------------
  std::string valueAt(ValueId id, const Index &idx);
  std::string lowerElement(const Node &n, ValueId id, const Index &idx);
  std::string unary(const Node &n, const std::string &x);
  std::string sinOrCosF32(const std::string &x, bool sine);
  std::string binary(OpKind op, DType dtype, const std::string &a, const std::string &b);
  std::string convert(const std::string &v, DType from, DType to);
  Index broadcastIndex(ValueId operand, const Shape &outShape, const Index &idx);
  std::string linearize(const Index &idx, const Shape &shape);
  Index delinearize(const std::string &flat, const Shape &shape);
  std::string indexValue(ValueId indices, const Index &idx, int64_t bound);
  std::string dropoutElement(const Node &n, ValueId id, const Index &idx);
  std::string padElement(const Node &n, const Index &idx);
  std::string concatElement(const Node &n, const Index &idx, size_t first);
  std::string constantElement(const Node &n, ValueId id, const Index &idx);

  // --- roots --------------------------------------------------------------
  Index openLoops(const Shape &shape, bool parallel, size_t from = 0);
  void closeLoops(size_t count);
  void emitElementwiseRoots(const std::vector<ValueId> &roots, bool parallel);
  void emitRoot(ValueId id, bool parallel);
  void emitReduction(ValueId id, bool parallel);
  void emitArgMax(ValueId id, bool parallel);
  void emitMatMul(ValueId id, bool parallel);
  void emitConv2d(ValueId id, bool parallel);
  void emitPool(ValueId id, bool parallel);
  void emitScatterForm(ValueId id, bool parallel);
  void zeroChunk(ValueId id, bool parallel);
  void accumulate(ValueId id, const Index &idx, const std::string &v);
  std::string inBounds(const std::string &v, int64_t size);
  std::string clampIndex(const std::string &v, int64_t size);
  std::string windowCoordinate(const std::string &out, const std::string &tap,
                               int64_t stride, int64_t padding, int64_t dilation);
  bool rowLocal(const std::vector<ValueId> &roots) const;

  const Graph &g_;
  const FusionGroup &group_;
  const std::function<int64_t(ValueId)> &arenaOffset_;
  const std::vector<bool> &usedOutside_;
  std::set<ValueId> inGroup_;
  std::map<ValueId, std::string> views_;  // materialized values
  std::vector<std::string> scratch_;      // "%view : type" to dealloc
  MlirWriter w_;
  std::string globals_;
  std::set<std::string> globalNames_;
  std::string begin_ = "%begin", end_ = "%end";
  // GPU: see GpuTarget. A nest's parallel openLoops call is flattened: no
  // loops, %begin is the thread's flat index into `flatExtent_` elements.
  const GpuTarget *gpu_ = nullptr;
  bool flattened_ = false;
  int64_t flatExtent_ = 1;
  std::vector<size_t> openedLoops_; // per openLoops call: the scf.for it opened
};

// ---------------------------------------------------------------------------
// Storage

std::string KernelEmitter::arenaView(ValueId id) {
  std::string offset = w_.indexConstant(arenaOffset_(id));
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
  if (dtypeOf(id) == DType::Bool)
    v = w_.assign(fmt::format("arith.cmpi ne, {}, {} : i8", v,
                              w_.assign("arith.constant 0 : i8")));
  return v;
}

void KernelEmitter::store(ValueId id, const std::string &view, const Index &idx,
                          const std::string &v) {
  std::string stored = v;
  if (dtypeOf(id) == DType::Bool)
    stored = w_.assign(fmt::format("arith.extui {} : i1 to i8", v));
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

// An integer index read from `indices`, clamped into [0, bound): compiled
// code never reads out of bounds (the interpreter reports such indices).
std::string KernelEmitter::indexValue(ValueId indices, const Index &idx, int64_t bound) {
  std::string v = valueAt(indices, idx);
  std::string asIndex =
      w_.assign(fmt::format("arith.index_cast {} : {} to index", v, scalarType(dtypeOf(indices))));
  return clampIndex(asIndex, bound);
}

// ---------------------------------------------------------------------------
// Values

std::string KernelEmitter::valueAt(ValueId id, const Index &idx) {
  std::string key = fmt::format("{}@{}", id, fmt::join(idx, ","));
  if (const std::string *hit = w_.cached(key))
    return *hit;
  const Node &n = node(id);
  std::string v;
  if (views_.count(id))
    v = load(id, idx);
  else if (n.op == OpKind::Constant || n.op == OpKind::Iota || isInlinable(n.op))
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
  if (isFloat(from))
    return w_.assign(fmt::format("arith.fptosi {} : {} to {}", v, f, t));
  if (isFloat(to))
    return w_.assign(fmt::format("arith.sitofp {} : {} to {}", v, f, t));
  return w_.assign(fmt::format("arith.{} {} : {} to {}", to == DType::I64 ? "extsi" : "trunci", v, f, t));
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
  case OpKind::Abs: return op1(fp ? "math.absf" : "math.absi");
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
    std::string negative = fp ? w_.assign(fmt::format("arith.cmpf olt, {}, {} : {}", x, w_.constant(0, dt), t))
                              : w_.assign(fmt::format("arith.cmpi slt, {}, {} : {}", x, w_.constant(0, dt), t));
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", negative, w_.constant(0, dt), x, t));
  }
  // On the GPU, libdevice's sinf/cosf are accurate (the CPU's reason for
  // sinOrCosF32 is MLIR's polynomial, which the GPU path does not use).
  case OpKind::Sin: return dt == DType::F32 && !gpu_ ? sinOrCosF32(x, true) : op1("math.sin");
  case OpKind::Cos: return dt == DType::F32 && !gpu_ ? sinOrCosF32(x, false) : op1("math.cos");
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
  default:
    throw std::logic_error("unary: not a unary op");
  }
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
  auto cmp = [&](const char *fpred, const char *ipred) {
    return w_.assign(fmt::format("arith.cmp{} {}, {}, {} : {}", fp ? "f" : "i", fp ? fpred : ipred, a, b, t));
  };
  switch (op) {
  case OpKind::Add: return op2(fp ? "arith.addf" : "arith.addi");
  case OpKind::Sub: return op2(fp ? "arith.subf" : "arith.subi");
  case OpKind::Mul: return op2(fp ? "arith.mulf" : "arith.muli");
  case OpKind::Div: {
    if (fp)
      return op2("arith.divf");
    // x / 0 = 0 and MIN / -1 = MIN, as the interpreter; never a trap.
    std::string zero = w_.constant(0, dt), one = w_.constant(1, dt), minusOne = w_.constant(-1, dt);
    std::string minimum = w_.integerConstant(dt == DType::I32 ? INT32_MIN : INT64_MIN, dt);
    std::string byZero = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, zero, t));
    std::string isMin = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", a, minimum, t));
    std::string isMinusOne = w_.assign(fmt::format("arith.cmpi eq, {}, {} : {}", b, minusOne, t));
    std::string overflow = w_.assign(fmt::format("arith.andi {}, {} : i1", isMin, isMinusOne));
    std::string unsafe = w_.assign(fmt::format("arith.ori {}, {} : i1", byZero, overflow));
    std::string safe = w_.assign(fmt::format("arith.select {}, {}, {} : {}", unsafe, one, b, t));
    std::string q = w_.assign(fmt::format("arith.divsi {}, {} : {}", a, safe, t));
    std::string q2 = w_.assign(fmt::format("arith.select {}, {}, {} : {}", overflow, minimum, q, t));
    return w_.assign(fmt::format("arith.select {}, {}, {} : {}", byZero, zero, q2, t));
  }
  case OpKind::Pow: return op2("math.powf");
  case OpKind::Maximum: return op2(fp ? "arith.maximumf" : "arith.maxsi");
  case OpKind::Minimum: return op2(fp ? "arith.minimumf" : "arith.minsi");
  case OpKind::Eq: return cmp("oeq", "eq");
  case OpKind::Ne: return cmp("une", "ne");
  case OpKind::Lt: return cmp("olt", "slt");
  case OpKind::Le: return cmp("ole", "sle");
  case OpKind::Gt: return cmp("ogt", "sgt");
  case OpKind::Ge: return cmp("oge", "sge");
  default:
    throw std::logic_error("binary: not a binary op");
  }
}

std::string KernelEmitter::constantElement(const Node &n, ValueId id, const Index &idx) {
  DType dt = n.type.dtype;
  if (n.attrs.has("value"))
    return w_.constant(n.attrs.getReal("value"), dt);
  // Data constants become module globals in their memory layout.
  std::string name = fmt::format("@{}_cst{}", sanitize(group_.name), id);
  if (globalNames_.insert(name).second) {
    std::vector<double> data = n.attrs.getReals("data");
    // Integer lists are taken as they are, so i64 data above 2^53 stays
    // exact (as in the interpreter).
    const auto *ints = std::get_if<std::vector<int64_t>>(n.attrs.find("data"));
    std::string hex;
    for (size_t k = 0; k < data.size(); ++k) {
      double d = data[k];
      unsigned char bytes[8];
      size_t size = dtypeSize(dt);
      float f = static_cast<float>(d);
      int32_t i32 = ints ? static_cast<int32_t>((*ints)[k]) : static_cast<int32_t>(d);
      int64_t i64 = ints ? (*ints)[k] : static_cast<int64_t>(d);
      uint8_t b = d != 0;
      switch (dt) {
      case DType::F32: std::memcpy(bytes, &f, 4); break;
      case DType::F64: std::memcpy(bytes, &d, 8); break;
      case DType::I32: std::memcpy(bytes, &i32, 4); break;
      case DType::I64: std::memcpy(bytes, &i64, 8); break;
      case DType::Bool: bytes[0] = b; break;
      }
      for (size_t j = 0; j < size; ++j)
        hex += fmt::format("{:02X}", bytes[j]);
    }
    globals_ += fmt::format("  memref.global \"private\" constant {} : {} = dense<\"0x{}\">\n",
                            name, memrefType(n.type), hex);
  }
  // get_global at function entry scope is not guaranteed here, so emit it
  // where needed; MLIR's CSE and LLVM hoist it.
  std::string view = w_.assign(fmt::format("memref.get_global {} : {}", name, memrefType(n.type)));
  std::string v = w_.assign(fmt::format("memref.load {}[{}] : {}", view, fmt::join(idx, ", "),
                                        memrefType(n.type)));
  if (dt == DType::Bool)
    v = w_.assign(fmt::format("arith.cmpi ne, {}, {} : i8", v, w_.assign("arith.constant 0 : i8")));
  return v;
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
  int64_t rank = n.type.rank();
  int64_t axis = n.attrs.getInt("axis");
  if (axis < 0)
    axis += rank;
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

// The lowering rule of every op at one element (DESIGN.md rule 1). Ops that
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
    return load(id, idx);
  case OpKind::Constant: return constantElement(n, id, idx);
  case OpKind::Iota: {
    std::string i = w_.assign(fmt::format("arith.index_cast {} : index to i64", idx[n.attrs.getInt("axis") < 0 ? n.attrs.getInt("axis") + n.type.rank() : n.attrs.getInt("axis")]));
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
    if (axis < 0)
      axis += g_.type(data).rank();
    int64_t ir = g_.type(indices).rank();
    Index at(idx.begin() + axis, idx.begin() + axis + ir);
    Index src(idx.begin(), idx.begin() + axis);
    src.push_back(indexValue(indices, at, shapeOf(data)[axis]));
    src.insert(src.end(), idx.begin() + axis + ir, idx.end());
    return valueAt(data, src);
  }
  case OpKind::OneHot: {
    ValueId indices = n.operands[0];
    Index at(idx.begin(), idx.end() - 1);
    std::string k = w_.assign(fmt::format("arith.index_cast {} : {} to index", valueAt(indices, at),
                                          scalarType(dtypeOf(indices))));
    std::string hit = w_.assign(fmt::format("arith.cmpi eq, {}, {} : index", k, idx.back()));
    return convert(hit, DType::Bool, n.type.dtype);
  }
  case OpKind::Dropout: return dropoutElement(n, id, idx);
  }
  throw std::logic_error("lowerElement: unknown op");
}

// ---------------------------------------------------------------------------
// Roots

Index KernelEmitter::openLoops(const Shape &shape, bool parallel, size_t from) {
  if (gpu_ && parallel) {
    // One GPU thread per element of the nest's parallel loops.
    if (flattened_ || from != 0)
      throw std::logic_error(fmt::format("kernel {}: a GPU loop nest has two parallel loops",
                                         group_.name));
    flattened_ = true;
    flatExtent_ = 1;
    for (int64_t d : shape)
      flatExtent_ *= d;
    openedLoops_.push_back(0);
    return delinearize(begin_, shape);
  }
  Index idx;
  for (size_t d = from; d < shape.size(); ++d) {
    bool outer = parallel && d == 0;
    idx.push_back(w_.beginFor(outer ? begin_ : w_.indexConstant(0),
                              outer ? end_ : w_.indexConstant(shape[d])));
  }
  openedLoops_.push_back(idx.size());
  return idx;
}

void KernelEmitter::closeLoops(size_t count) {
  // What the matching openLoops opened: `count` loops on the CPU, fewer
  // where a GPU nest was flattened.
  size_t opened = openedLoops_.back();
  openedLoops_.pop_back();
  if (!gpu_ && opened != count)
    throw std::logic_error("closeLoops: does not match openLoops");
  for (size_t i = 0; i < opened; ++i)
    w_.endFor();
}

void KernelEmitter::emitElementwiseRoots(const std::vector<ValueId> &roots, bool parallel) {
  const Shape &shape = shapeOf(roots.front());
  Index idx = openLoops(shape, parallel);
  for (ValueId r : roots) {
    std::string v = lowerElement(node(r), r, idx);
    w_.cache(fmt::format("{}@{}", r, fmt::join(idx, ",")), v);
    store(r, viewOf(r), idx, v);
  }
  closeLoops(idx.size());
}

void KernelEmitter::emitRoot(ValueId id, bool parallel) {
  switch (node(id).op) {
  case OpKind::ReduceSum:
  case OpKind::ReduceMean:
  case OpKind::ReduceMax:
  case OpKind::ReduceMin: return emitReduction(id, parallel);
  case OpKind::ArgMax: return emitArgMax(id, parallel);
  case OpKind::MatMul: return emitMatMul(id, parallel);
  case OpKind::Conv2d: return emitConv2d(id, parallel);
  case OpKind::MaxPool2d:
  case OpKind::AvgPool2d: return emitPool(id, parallel);
  case OpKind::ScatterAdd:
  case OpKind::Conv2dGradInput:
  case OpKind::Conv2dGradWeight:
  case OpKind::MaxPool2dGrad:
  case OpKind::AvgPool2dGrad: return emitScatterForm(id, parallel);
  default: return emitElementwiseRoots({id}, parallel);
  }
}

// Nested scf.for loops over `extents` carrying accumulators; `body` gets the
// loop indices and the current accumulators and returns the new ones.
struct Accumulators {
  std::vector<std::string> values, types;
};

void KernelEmitter::emitReduction(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &in = shapeOf(x);
  std::vector<bool> reduced(in.size(), false);
  for (int64_t a : n.attrs.getInts("axes"))
    reduced[a < 0 ? a + static_cast<int64_t>(in.size()) : a] = true;
  bool keep = n.attrs.getInt("keepdims") != 0;
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);

  Index out = openLoops(n.type.shape, parallel);
  // The identities of max and min: infinities, or the integer limits
  // (integerConstant: INT64_MAX is no double).
  std::string init;
  switch (n.op) {
  case OpKind::ReduceMax:
    init = isFloat(dt) ? w_.constant(-INFINITY, dt)
                       : w_.integerConstant(dt == DType::I32 ? INT32_MIN : INT64_MIN, dt);
    break;
  case OpKind::ReduceMin:
    init = isFloat(dt) ? w_.constant(INFINITY, dt)
                       : w_.integerConstant(dt == DType::I32 ? INT32_MAX : INT64_MAX, dt);
    break;
  default: init = w_.constant(0, dt); break;
  }
  // Map output indices to input positions; reduced axes get loop indices.
  Index full(in.size());
  size_t o = 0;
  std::vector<size_t> loops;
  for (size_t d = 0; d < in.size(); ++d) {
    if (!reduced[d])
      full[d] = out[o++];
    else {
      loops.push_back(d);
      if (keep)
        ++o;
    }
  }
  std::string acc = init;
  std::vector<std::string> results;
  for (size_t d : loops) {
    std::string iv = w_.fresh("r"), a = w_.fresh("acc"), res = w_.fresh();
    w_.line(fmt::format("{} = scf.for {} = {} to {} step {} iter_args({} = {}) -> ({}) {{", res, iv,
                        w_.indexConstant(0), w_.indexConstant(in[d]), w_.indexConstant(1), a, acc, t));
    w_.indent();
    w_.pushScope();
    full[d] = iv;
    acc = a;
    results.push_back(res);
  }
  std::string v = valueAt(x, full);
  OpKind combine = n.op == OpKind::ReduceMax ? OpKind::Maximum
                   : n.op == OpKind::ReduceMin ? OpKind::Minimum
                                               : OpKind::Add;
  std::string next = binary(combine, dt, acc, v);
  for (size_t k = loops.size(); k-- > 0;) {
    w_.line(fmt::format("scf.yield {} : {}", next, t));
    w_.popScope();
    w_.dedent();
    w_.line("}");
    next = results[k];
  }
  if (n.op == OpKind::ReduceMean) {
    double count = 1;
    for (size_t d : loops)
      count *= static_cast<double>(in[d]);
    next = binary(OpKind::Div, dt, next, w_.constant(count, dt));
  }
  store(id, viewOf(id), out, next);
  closeLoops(out.size());
}

void KernelEmitter::emitArgMax(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &in = shapeOf(x);
  int64_t axis = n.attrs.getInt("axis");
  if (axis < 0)
    axis += static_cast<int64_t>(in.size());
  bool keep = n.attrs.getInt("keepdims") != 0;
  DType dt = dtypeOf(x);
  std::string t = scalarType(dt);
  Index out = openLoops(n.type.shape, parallel);
  Index full;
  size_t o = 0;
  for (size_t d = 0; d < in.size(); ++d) {
    if (static_cast<int64_t>(d) == axis) {
      full.push_back("");
      if (keep)
        ++o;
    } else {
      full.push_back(out[o++]);
    }
  }
  // Strictly greater keeps the first index on ties; the first NaN wins.
  Index first = full;
  first[axis] = w_.indexConstant(0);
  std::string initValue = valueAt(x, first);
  std::string iv = w_.fresh("r"), best = w_.fresh("best"), at = w_.fresh("at"), res = w_.fresh();
  w_.line(fmt::format("{}:2 = scf.for {} = {} to {} step {} iter_args({} = {}, {} = {}) -> ({}, index) {{",
                      res, iv, w_.indexConstant(1), w_.indexConstant(in[axis]), w_.indexConstant(1), best,
                      initValue, at, w_.indexConstant(0), t));
  w_.indent();
  w_.pushScope();
  full[axis] = iv;
  std::string v = valueAt(x, full);
  std::string better = binary(OpKind::Gt, dt, v, best);
  if (isFloat(dt)) {
    std::string vNan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", v, v, t));
    std::string bestNan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", best, best, t));
    std::string notBestNan = w_.assign(fmt::format("arith.xori {}, {} : i1", bestNan, w_.constant(1, DType::Bool)));
    std::string takeNan = w_.assign(fmt::format("arith.andi {}, {} : i1", vNan, notBestNan));
    better = w_.assign(fmt::format("arith.ori {}, {} : i1", better, takeNan));
    better = w_.assign(fmt::format("arith.andi {}, {} : i1", better, notBestNan));
  }
  std::string nb = w_.assign(fmt::format("arith.select {}, {}, {} : {}", better, v, best, t));
  std::string na = w_.assign(fmt::format("arith.select {}, {}, {} : index", better, iv, at));
  w_.line(fmt::format("scf.yield {}, {} : {}, index", nb, na, t));
  w_.popScope();
  w_.dedent();
  w_.line("}");
  std::string index = w_.assign(fmt::format("arith.index_cast {}#1 : index to i64", res));
  store(id, viewOf(id), out, index);
  closeLoops(out.size());
}

void KernelEmitter::emitMatMul(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId a = n.operands[0], b = n.operands[1];
  const Shape &out = n.type.shape;
  size_t rank = out.size();
  // Plain 2-D f32 products of stored operands take the register-tiled path.
  // (Not on the GPU: one thread per output element there.)
  if (!gpu_ && rank == 2 && n.type.dtype == DType::F32 && views_.count(a) && views_.count(b)) {
    TiledMatMul tiled{views_.at(a), views_.at(b), viewOf(id), out[0], shapeOf(a)[1], out[1],
                      parallel ? begin_ : "", parallel ? end_ : ""};
    emitTiledMatMul(w_, tiled);
    return;
  }
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  Index idx = openLoops(out, parallel);
  int64_t k = shapeOf(a).back();
  std::string iv = w_.fresh("r"), acc = w_.fresh("acc"), res = w_.fresh();
  w_.line(fmt::format("{} = scf.for {} = {} to {} step {} iter_args({} = {}) -> ({}) {{", res, iv,
                      w_.indexConstant(0), w_.indexConstant(k), w_.indexConstant(1), acc,
                      w_.constant(0, dt), t));
  w_.indent();
  w_.pushScope();
  auto batchIndex = [&](ValueId operand, const std::string &row, const std::string &col) {
    const Shape &s = shapeOf(operand);
    Index full;
    size_t lead = (rank - 2) - (s.size() - 2);
    for (size_t d = 0; d + 2 < s.size(); ++d)
      full.push_back(s[d] == 1 ? w_.indexConstant(0) : idx[lead + d]);
    full.push_back(row);
    full.push_back(col);
    return full;
  };
  std::string av = valueAt(a, batchIndex(a, idx[rank - 2], iv));
  std::string bv = valueAt(b, batchIndex(b, iv, idx[rank - 1]));
  std::string sum = binary(OpKind::Add, dt, acc, binary(OpKind::Mul, dt, av, bv));
  w_.line(fmt::format("scf.yield {} : {}", sum, t));
  w_.popScope();
  w_.dedent();
  w_.line("}");
  store(id, viewOf(id), idx, res);
  closeLoops(idx.size());
}

void KernelEmitter::emitConv2d(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0], wt = n.operands[1];
  const Shape &xs = shapeOf(x), &ws = shapeOf(wt);
  auto pair = [&](const char *name) { return n.attrs.getInts(name); };
  auto stride = pair("stride"), padding = pair("padding"), dilation = pair("dilation");
  int64_t groups = n.attrs.getInt("groups");
  int64_t perGroup = ws[0] / groups, cg = ws[1];
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  Index o = openLoops(n.type.shape, parallel); // n, f, i, j
  std::string group = w_.assign(fmt::format("arith.divui {}, {} : index", o[1], w_.indexConstant(perGroup)));
  std::string firstChannel = w_.assign(fmt::format("arith.muli {}, {} : index", group, w_.indexConstant(cg)));
  std::vector<int64_t> extents = {cg, ws[2], ws[3]};
  std::vector<std::string> ivs, results;
  std::string acc = w_.constant(0, dt);
  for (int64_t e : extents) {
    std::string iv = w_.fresh("r"), a = w_.fresh("acc"), res = w_.fresh();
    w_.line(fmt::format("{} = scf.for {} = {} to {} step {} iter_args({} = {}) -> ({}) {{", res, iv,
                        w_.indexConstant(0), w_.indexConstant(e), w_.indexConstant(1), a, acc, t));
    w_.indent();
    w_.pushScope();
    ivs.push_back(iv);
    results.push_back(res);
    acc = a;
  }
  std::string y = windowCoordinate(o[2], ivs[1], stride[0], padding[0], dilation[0]);
  std::string xw = windowCoordinate(o[3], ivs[2], stride[1], padding[1], dilation[1]);
  std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
  std::string channel = w_.assign(fmt::format("arith.addi {}, {} : index", firstChannel, ivs[0]));
  std::string xv = valueAt(x, {o[0], channel, clampIndex(y, xs[2]), clampIndex(xw, xs[3])});
  std::string wv = valueAt(wt, {o[1], ivs[0], ivs[1], ivs[2]});
  std::string product = binary(OpKind::Mul, dt, xv, wv);
  std::string masked = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid, product, w_.constant(0, dt), t));
  std::string next = binary(OpKind::Add, dt, acc, masked);
  for (size_t k = extents.size(); k-- > 0;) {
    w_.line(fmt::format("scf.yield {} : {}", next, t));
    w_.popScope();
    w_.dedent();
    w_.line("}");
    next = results[k];
  }
  store(id, viewOf(id), o, next);
  closeLoops(o.size());
}

void KernelEmitter::emitPool(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &xs = shapeOf(x);
  auto kernel = n.attrs.getInts("kernel"), stride = n.attrs.getInts("stride"),
       padding = n.attrs.getInts("padding");
  bool isMax = n.op == OpKind::MaxPool2d;
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  Index o = openLoops(n.type.shape, parallel);
  std::string acc = w_.constant(isMax ? -INFINITY : 0, dt);
  std::vector<std::string> ivs, results;
  for (int64_t e : {kernel[0], kernel[1]}) {
    std::string iv = w_.fresh("r"), a = w_.fresh("acc"), res = w_.fresh();
    w_.line(fmt::format("{} = scf.for {} = {} to {} step {} iter_args({} = {}) -> ({}) {{", res, iv,
                        w_.indexConstant(0), w_.indexConstant(e), w_.indexConstant(1), a, acc, t));
    w_.indent();
    w_.pushScope();
    ivs.push_back(iv);
    results.push_back(res);
    acc = a;
  }
  std::string y = windowCoordinate(o[2], ivs[0], stride[0], padding[0], 1);
  std::string xw = windowCoordinate(o[3], ivs[1], stride[1], padding[1], 1);
  std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
  std::string v = valueAt(x, {o[0], o[1], clampIndex(y, xs[2]), clampIndex(xw, xs[3])});
  std::string next;
  if (isMax) {
    std::string candidate = binary(OpKind::Maximum, dt, acc, v);
    next = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid, candidate, acc, t));
  } else {
    std::string masked = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid, v, w_.constant(0, dt), t));
    next = binary(OpKind::Add, dt, acc, masked);
  }
  for (size_t k = 2; k-- > 0;) {
    w_.line(fmt::format("scf.yield {} : {}", next, t));
    w_.popScope();
    w_.dedent();
    w_.line("}");
    next = results[k];
  }
  if (!isMax) {
    std::string divisor;
    if (n.attrs.getInt("count_include_pad") != 0) {
      divisor = w_.constant(static_cast<double>(kernel[0] * kernel[1]), dt);
    } else {
      // In-bounds taps per axis: min(start + k, size) - max(start, 0).
      auto span = [&](const std::string &out, int64_t k, int64_t s, int64_t p, int64_t size) {
        std::string start = windowCoordinate(out, w_.indexConstant(0), s, p, 1);
        std::string end = w_.assign(fmt::format("arith.addi {}, {} : index", start, w_.indexConstant(k)));
        std::string hi = w_.assign(fmt::format("arith.minsi {}, {} : index", end, w_.indexConstant(size)));
        std::string lo = w_.assign(fmt::format("arith.maxsi {}, {} : index", start, w_.indexConstant(0)));
        return w_.assign(fmt::format("arith.subi {}, {} : index", hi, lo));
      };
      std::string count = w_.assign(fmt::format("arith.muli {}, {} : index",
                                                span(o[2], kernel[0], stride[0], padding[0], xs[2]),
                                                span(o[3], kernel[1], stride[1], padding[1], xs[3])));
      std::string asInt = w_.assign(fmt::format("arith.index_cast {} : index to i64", count));
      divisor = convert(asInt, DType::I64, dt);
    }
    next = binary(OpKind::Div, dt, next, divisor);
  }
  store(id, viewOf(id), o, next);
  closeLoops(o.size());
}

void KernelEmitter::zeroChunk(ValueId id, bool parallel) {
  Index idx = openLoops(shapeOf(id), parallel);
  store(id, viewOf(id), idx, w_.constant(0, dtypeOf(id)));
  closeLoops(idx.size());
}

void KernelEmitter::accumulate(ValueId id, const Index &idx, const std::string &v) {
  if (gpu_) {
    // GPU threads of a scatter-form nest add into shared elements.
    DType dt = dtypeOf(id);
    if (dt == DType::Bool)
      throw std::logic_error("accumulate: no atomic add of bools");
    w_.assign(fmt::format("memref.atomic_rmw {} {}, {}[{}] : ({}, {}) -> {}",
                          isFloat(dt) ? "addf" : "addi", v, viewOf(id), fmt::join(idx, ", "),
                          scalarType(dt), memrefType(g_.type(id)), scalarType(dt)));
    return;
  }
  std::string old = load(id, idx);
  store(id, viewOf(id), idx, binary(OpKind::Add, dtypeOf(id), old, v));
}

// Gradient ops in scatter form: zero this call's slice of the output (its
// dimension 0 range), then add every contribution that lands in it. Each
// loop nest starts at output dimension 0, so parallel calls never write the
// same element.
void KernelEmitter::emitScatterForm(ValueId id, bool parallel) {
  const Node &n = node(id);
  // (The GPU zeroes the output in a nest of its own first: see emitGpu.)
  if (!gpu_)
    zeroChunk(id, parallel);
  DType dt = n.type.dtype;
  auto ifValid = [&](const std::string &cond, const std::function<void()> &body) {
    w_.line(fmt::format("scf.if {} {{", cond));
    w_.indent();
    w_.pushScope();
    body();
    w_.popScope();
    w_.dedent();
    w_.line("}");
  };
  switch (n.op) {
  case OpKind::ScatterAdd: {
    ValueId indices = n.operands[0], updates = n.operands[1];
    int64_t axis = n.attrs.getInt("axis"), ir = g_.type(indices).rank();
    Index u = openLoops(shapeOf(updates), parallel && (axis > 0 || gpu_));
    Index at(u.begin() + axis, u.begin() + axis + ir);
    Index dst(u.begin(), u.begin() + axis);
    dst.push_back(indexValue(indices, at, n.type.shape[axis]));
    dst.insert(dst.end(), u.begin() + axis + ir, u.end());
    accumulate(id, dst, valueAt(updates, u));
    closeLoops(u.size());
    return;
  }
  case OpKind::Conv2dGradInput:
  case OpKind::Conv2dGradWeight: {
    bool input = n.op == OpKind::Conv2dGradInput;
    ValueId g = input ? n.operands[0] : n.operands[1];
    ValueId other = input ? n.operands[1] : n.operands[0];
    const Shape &gs = shapeOf(g);
    Shape xs = input ? n.type.shape : shapeOf(other);
    Shape ws = input ? shapeOf(other) : n.type.shape;
    auto stride = n.attrs.getInts("stride"), padding = n.attrs.getInts("padding"),
         dilation = n.attrs.getInts("dilation");
    int64_t perGroup = ws[0] / n.attrs.getInt("groups");
    // Loop order: the output's dimension 0 first (batch for dx, filter for dw).
    // A GPU thread takes one element of g and adds its taps atomically.
    Shape outer = input ? Shape{gs[0], gs[1]} : Shape{gs[1], gs[0]};
    Shape inner = {gs[2], gs[3], ws[1], ws[2], ws[3]};
    if (gpu_) {
      outer.insert(outer.end(), {gs[2], gs[3]});
      inner.erase(inner.begin(), inner.begin() + 2);
    }
    Index nf = openLoops(outer, parallel);
    std::string batch = input ? nf[0] : nf[1], filter = input ? nf[1] : nf[0];
    Index rest = openLoops(inner, false);
    if (gpu_)
      rest.insert(rest.begin(), {nf[2], nf[3]});
    std::string group = w_.assign(fmt::format("arith.divui {}, {} : index", filter, w_.indexConstant(perGroup)));
    std::string first = w_.assign(fmt::format("arith.muli {}, {} : index", group, w_.indexConstant(ws[1])));
    std::string channel = w_.assign(fmt::format("arith.addi {}, {} : index", first, rest[2]));
    std::string y = windowCoordinate(rest[0], rest[3], stride[0], padding[0], dilation[0]);
    std::string xw = windowCoordinate(rest[1], rest[4], stride[1], padding[1], dilation[1]);
    std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
    ifValid(valid, [&] {
      std::string gv = valueAt(g, {batch, filter, rest[0], rest[1]});
      if (input) {
        std::string wv = valueAt(other, {filter, rest[2], rest[3], rest[4]});
        accumulate(id, {batch, channel, y, xw}, binary(OpKind::Mul, dt, gv, wv));
      } else {
        std::string xv = valueAt(other, {batch, channel, y, xw});
        accumulate(id, {filter, rest[2], rest[3], rest[4]}, binary(OpKind::Mul, dt, gv, xv));
      }
    });
    closeLoops(rest.size());
    closeLoops(nf.size());
    return;
  }
  case OpKind::MaxPool2dGrad:
  case OpKind::AvgPool2dGrad: {
    bool isMax = n.op == OpKind::MaxPool2dGrad;
    ValueId g = isMax ? n.operands[1] : n.operands[0];
    const Shape &gs = shapeOf(g), &xs = n.type.shape;
    auto kernel = n.attrs.getInts("kernel"), stride = n.attrs.getInts("stride"),
         padding = n.attrs.getInts("padding");
    Index o = openLoops(gs, parallel);
    std::string gv = valueAt(g, o);
    if (isMax) {
      // The first maximum of the window (row-major) receives the gradient.
      ValueId x = n.operands[0];
      std::string t = scalarType(dt);
      std::string best = w_.constant(-INFINITY, dt), at = w_.indexConstant(-1);
      // One flat loop over the window's taps carries (best value, position).
      std::string iv = w_.fresh("r"), bv = w_.fresh("best"), av = w_.fresh("at"), res = w_.fresh();
      w_.line(fmt::format("{}:2 = scf.for {} = {} to {} step {} iter_args({} = {}, {} = {}) -> ({}, index) {{",
                          res, iv, w_.indexConstant(0), w_.indexConstant(kernel[0] * kernel[1]),
                          w_.indexConstant(1), bv, best, av, at, t));
      w_.indent();
      w_.pushScope();
      std::string a = w_.assign(fmt::format("arith.divui {}, {} : index", iv, w_.indexConstant(kernel[1])));
      std::string b = w_.assign(fmt::format("arith.remui {}, {} : index", iv, w_.indexConstant(kernel[1])));
      std::string y = windowCoordinate(o[2], a, stride[0], padding[0], 1);
      std::string xw = windowCoordinate(o[3], b, stride[1], padding[1], 1);
      std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
      std::string v = valueAt(x, {o[0], o[1], clampIndex(y, xs[2]), clampIndex(xw, xs[3])});
      std::string none = w_.assign(fmt::format("arith.cmpi slt, {}, {} : index", av, w_.indexConstant(0)));
      std::string greater = binary(OpKind::Gt, dt, v, bv);
      std::string vNan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", v, v, t));
      std::string bNan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", bv, bv, t));
      std::string bNotNan = w_.assign(fmt::format("arith.xori {}, {} : i1", bNan, w_.constant(1, DType::Bool)));
      std::string nanWins = w_.assign(fmt::format("arith.andi {}, {} : i1", vNan, bNotNan));
      std::string take = w_.assign(fmt::format("arith.ori {}, {} : i1", none, greater));
      take = w_.assign(fmt::format("arith.ori {}, {} : i1", take, nanWins));
      take = w_.assign(fmt::format("arith.andi {}, {} : i1", take, valid));
      std::string position = linearize({y, xw}, {xs[2], xs[3]});
      std::string nb = w_.assign(fmt::format("arith.select {}, {}, {} : {}", take, v, bv, t));
      std::string na = w_.assign(fmt::format("arith.select {}, {}, {} : index", take, position, av));
      w_.line(fmt::format("scf.yield {}, {} : {}, index", nb, na, t));
      w_.popScope();
      w_.dedent();
      w_.line("}");
      Index yx = delinearize(fmt::format("{}#1", res), {xs[2], xs[3]});
      accumulate(id, {o[0], o[1], yx[0], yx[1]}, gv);
    } else {
      Index taps = openLoops({kernel[0], kernel[1]}, false);
      std::string y = windowCoordinate(o[2], taps[0], stride[0], padding[0], 1);
      std::string xw = windowCoordinate(o[3], taps[1], stride[1], padding[1], 1);
      std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
      std::string divisor;
      if (n.attrs.getInt("count_include_pad") != 0) {
        divisor = w_.constant(static_cast<double>(kernel[0] * kernel[1]), dt);
      } else {
        auto span = [&](const std::string &out, int64_t k, int64_t s, int64_t p, int64_t size) {
          std::string start = windowCoordinate(out, w_.indexConstant(0), s, p, 1);
          std::string end = w_.assign(fmt::format("arith.addi {}, {} : index", start, w_.indexConstant(k)));
          std::string hi = w_.assign(fmt::format("arith.minsi {}, {} : index", end, w_.indexConstant(size)));
          std::string lo = w_.assign(fmt::format("arith.maxsi {}, {} : index", start, w_.indexConstant(0)));
          return w_.assign(fmt::format("arith.subi {}, {} : index", hi, lo));
        };
        std::string count = w_.assign(fmt::format("arith.muli {}, {} : index",
                                                  span(o[2], kernel[0], stride[0], padding[0], xs[2]),
                                                  span(o[3], kernel[1], stride[1], padding[1], xs[3])));
        divisor = convert(w_.assign(fmt::format("arith.index_cast {} : index to i64", count)), DType::I64, dt);
      }
      std::string share = binary(OpKind::Div, dt, gv, divisor);
      ifValid(valid, [&] { accumulate(id, {o[0], o[1], y, xw}, share); });
      closeLoops(taps.size());
    }
    closeLoops(o.size());
    return;
  }
  default:
    throw std::logic_error("emitScatterForm: not a scatter-form op");
  }
}

// Splitting a kernel's roots by their dimension 0 among threads is safe when
// every root has the same dimension 0 and each value computed in the kernel
// is read only at the same dimension-0 index it was written at: then one
// call's rows never need another call's. Elementwise ops over operands of
// the same rank and dimension 0, reductions that keep axis 0, and a matmul's
// left operand read row by row; anything else reads across rows.
bool KernelEmitter::rowLocal(const std::vector<ValueId> &roots) const {
  const Shape &first = shapeOf(roots.front());
  // No dimension 0, or an empty one: nothing to split (and a parallel extent
  // of 0 would be no valid kernel).
  if (first.empty() || first[0] == 0)
    return false;
  for (ValueId r : roots)
    if (shapeOf(r).empty() || shapeOf(r)[0] != first[0])
      return false;
  // Only reads of data a root of this kernel wrote (directly, or through
  // inlined ops) can cross rows; reads of the arena were written earlier.
  std::set<ValueId> rootSet(roots.begin(), roots.end());
  std::set<ValueId> carries;
  for (ValueId id : group_.nodes) {
    bool c = false;
    for (ValueId operand : node(id).operands)
      c = c || carries.count(operand);
    if (c || rootSet.count(id))
      carries.insert(id);
  }
  for (ValueId id : group_.nodes) {
    const Node &n = node(id);
    for (size_t k = 0; k < n.operands.size(); ++k) {
      ValueId operand = n.operands[k];
      if (!carries.count(operand))
        continue;
      const Shape &in = shapeOf(operand);
      bool sameRow = !in.empty() && in.size() == n.type.shape.size() && in[0] == n.type.shape[0];
      bool ok = false;
      if (opInfo(n.op).is(kElementwise))
        ok = sameRow;
      else if (opInfo(n.op).is(kReduction)) {
        bool keepsAxis0 = true;
        if (n.op == OpKind::ArgMax)
          keepsAxis0 = n.attrs.getInt("axis") != 0 && n.attrs.getInt("axis") != -static_cast<int64_t>(in.size());
        else
          for (int64_t a : n.attrs.getInts("axes"))
            keepsAxis0 = keepsAxis0 && a != 0 && a != -static_cast<int64_t>(in.size());
        ok = keepsAxis0 && !in.empty() && !n.type.shape.empty() && in[0] == n.type.shape[0];
      } else if (n.op == OpKind::MatMul)
        ok = k == 0 && in.size() == 2 && sameRow;
      if (!ok)
        return false;
    }
  }
  // A scatter along axis 0 writes rows it does not own.
  for (ValueId r : roots)
    if (node(r).op == OpKind::ScatterAdd && node(r).attrs.getInt("axis") == 0)
      return false;
  return true;
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

KernelSource KernelEmitter::emit() {
  for (ValueId id : group_.nodes)
    checkSupported(node(id));
  // Roots: nodes other kernels (or the caller) read, nodes that cannot be
  // inlined into a consumer, and matmul operands (the tiled matmul reads
  // them from memory, so a fused transpose is materialized once).
  std::set<ValueId> matmulOperands;
  for (ValueId id : group_.nodes)
    if (node(id).op == OpKind::MatMul)
      matmulOperands.insert(node(id).operands.begin(), node(id).operands.end());
  std::vector<ValueId> roots;
  for (ValueId id : group_.nodes) {
    OpKind op = node(id).op;
    bool source = op == OpKind::Constant || op == OpKind::Iota;
    if (usedOutside_[id] || !isInlinable(op) || (matmulOperands.count(id) && !source))
      roots.push_back(id);
  }

  // Views of everything in the arena this kernel touches.
  std::set<ValueId> arenaValues(group_.inputs.begin(), group_.inputs.end());
  for (ValueId id : group_.nodes)
    for (ValueId operand : node(id).operands)
      if (!inGroup_.count(operand) && node(operand).op != OpKind::Constant &&
          node(operand).op != OpKind::Iota)
        arenaValues.insert(operand);
  for (ValueId id : roots)
    if (usedOutside_[id])
      arenaValues.insert(id);
  if (gpu_)
    return emitGpu(roots, arenaValues);
  for (ValueId id : arenaValues)
    views_[id] = arenaView(id);
  for (ValueId id : roots)
    if (!usedOutside_[id]) {
      std::string type = memrefType(g_.type(id));
      views_[id] = w_.assign(fmt::format("memref.alloc() {{alignment = 64 : i64}} : {}", type));
      scratch_.push_back(fmt::format("{} : {}", views_[id], type));
    }

  // The roots run one after another, split among threads by their dimension
  // 0 when that is safe (see rowLocal), else on one thread.
  int64_t extent = 1;
  bool parallel = !roots.empty() && rowLocal(roots);
  if (parallel)
    extent = shapeOf(roots.front())[0];

  // Consecutive elementwise roots of one shape share a loop nest (an
  // optimizer's parameter and moment updates: one pass over memory).
  for (size_t i = 0; i < roots.size();) {
    w_.pushScope();
    if (isInlinable(node(roots[i]).op)) {
      size_t j = i + 1;
      while (j < roots.size() && isInlinable(node(roots[j]).op) &&
             shapeOf(roots[j]) == shapeOf(roots[i]))
        ++j;
      emitElementwiseRoots(std::vector<ValueId>(roots.begin() + i, roots.begin() + j), parallel);
      i = j;
    } else {
      emitRoot(roots[i], parallel);
      ++i;
    }
    w_.popScope();
  }
  for (const std::string &s : scratch_)
    w_.line(fmt::format("memref.dealloc {}", s));
  w_.line("return");

  KernelSource out;
  out.name = sanitize(group_.name);
  out.globals = globals_;
  out.parallelExtent = extent;
  out.function = fmt::format(
      "  func.func @{}(%arena: memref<?xi8>, %begin: index, %end: index) attributes "
      "{{llvm.emit_c_interface}} {{\n{}  }}\n",
      out.name, w_.text());
  return out;
}

bool isScatterForm(OpKind op) {
  return op == OpKind::ScatterAdd || op == OpKind::Conv2dGradInput ||
         op == OpKind::Conv2dGradWeight || op == OpKind::MaxPool2dGrad ||
         op == OpKind::AvgPool2dGrad;
}

// See GpuTarget (lowering.h). Each nest is emitted into a function of its
// own, with views of the arena and of the scratch made anew in each.
KernelSource KernelEmitter::emitGpu(const std::vector<ValueId> &roots,
                                    const std::set<ValueId> &arenaValues) {
  std::map<ValueId, int64_t> scratch;
  int64_t scratchBytes = 0;
  for (ValueId id : roots)
    if (!usedOutside_[id]) {
      const TensorType &type = g_.type(id);
      scratch[id] = gpu_->scratchOffset + scratchBytes;
      int64_t bytes = type.numel() * static_cast<int64_t>(dtypeSize(type.dtype));
      scratchBytes += (bytes + 63) / 64 * 64;
    }

  // The nests, in the CPU's order (consecutive same-shape elementwise roots
  // share one).
  std::vector<std::function<void()>> nests;
  for (size_t i = 0; i < roots.size();) {
    if (isInlinable(node(roots[i]).op)) {
      size_t j = i + 1;
      while (j < roots.size() && isInlinable(node(roots[j]).op) &&
             shapeOf(roots[j]) == shapeOf(roots[i]))
        ++j;
      std::vector<ValueId> run(roots.begin() + i, roots.begin() + j);
      nests.push_back([this, run] { emitElementwiseRoots(run, true); });
      i = j;
    } else {
      ValueId root = roots[i];
      if (isScatterForm(node(root).op))
        nests.push_back([this, root] { zeroChunk(root, true); });
      nests.push_back([this, root] { emitRoot(root, true); });
      ++i;
    }
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
  return out;
}

} // namespace

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

KernelSource lowerGroup(const Graph &graph, const FusionGroup &group,
                        const std::function<int64_t(ValueId)> &arenaOffset,
                        const std::vector<bool> &usedOutside, const GpuTarget *gpu) {
  return KernelEmitter(graph, group, arenaOffset, usedOutside, gpu).emit();
}

} // namespace stepc::codegen
