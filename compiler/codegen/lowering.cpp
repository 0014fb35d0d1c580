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
  if (!target_.offsetArguments)
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
  std::string wide = rules_.convert(value, dtypeOf(indices), DType::I64);
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
  Index at = openLoops(shapeOf(indices),
                       target_.parallel == LoweringTarget::Parallel::ThreadPerElement);
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
  return ifElse(valid, scalarType(dt), [&] { return valueAt(x, src); },
                [&] { return w_.constant(n.attrs.getReal("value"), dt); });
}

std::string KernelEmitter::ifElse(const std::string &cond, const std::string &type,
                                  const std::function<std::string()> &then,
                                  const std::function<std::string()> &otherwise) {
  auto region = [&](const std::function<std::string()> &value) {
    w_.indent();
    w_.pushScope();
    w_.line(fmt::format("scf.yield {} : {}", value(), type));
    w_.popScope();
    w_.dedent();
  };
  std::string result = w_.fresh();
  w_.line(fmt::format("{} = scf.if {} -> ({}) {{", result, cond, type));
  region(then);
  w_.line("} else {");
  region(otherwise);
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
  return ifElse(inside, scalarType(n.type.dtype), [&] { return valueAt(x, local); },
                [&] { return concatElement(n, idx, first + 1); });
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
  std::string scaled = rules_.binary(OpKind::Mul, dt, x, w_.constant(1.0 / (1.0 - rate), dt));
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
    return rules_.convert(i, DType::I64, n.type.dtype);
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
  case OpKind::Select: {
    // Operands last first: the order kernels have always been emitted in
    // (LLVM's instruction order, and so its vectorization, follow it).
    std::vector<std::string> x(n.operands.size());
    for (size_t k = n.operands.size(); k-- > 0;)
      x[k] = operand(k);
    // The operands' type: a select's values (its condition is a bool).
    return rules_.apply(n.op, ElementType{dtypeOf(n.operands.back())}, n.type.dtype, x);
  }
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
    return rules_.convert(hit, DType::Bool, n.type.dtype);
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

std::set<ValueId> KernelEmitter::arenaValues(const std::vector<ValueId> &roots) const {
  std::set<ValueId> values(group_.inputs.begin(), group_.inputs.end());
  for (ValueId id : group_.nodes)
    for (ValueId operand : node(id).operands)
      if (!inGroup_.count(operand) && opInfo(node(operand).op).opClass != OpClass::Constant)
        values.insert(operand);
  for (ValueId id : roots)
    if (usedOutside_[id])
      values.insert(id);
  return values;
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
  std::set<ValueId> inArena = arenaValues(roots);
  if (target_.parallel == LoweringTarget::Parallel::ThreadPerElement)
    return emitGpu(roots, inArena);
  for (ValueId id : inArena)
    views_[id] = arenaView(id);
  // Parallel calls share the scratch safely: each writes and reads only the
  // rows of dimension 0 it owns (KernelPlan::rowParallel), or its columns
  // of a product (productColumnUnits).
  int64_t scratchBytes = 0;
  scratchAt_ = scratchOffsets(roots, scratchBytes);
  for (const auto &[id, offset] : scratchAt_)
    views_[id] = w_.assign(fmt::format("memref.view %arena[{}][] : memref<?xi8> to {}",
                                       arenaOffsetValue(offset), memrefType(g_.type(id))));

  // Scalars the kernel only reads are loaded once, up front: a load inside
  // the loops from the arena the loops also store to is a dependence LLVM
  // cannot rule out, and it would keep the loops from vectorizing.
  for (ValueId id : inArena)
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
  // An Attention kernel's threads split its units instead, a Columns
  // kernel's its blocks of columns.
  bool attention = group_.kind == FusionKind::Attention;
  if (attention)
    extent = attentionUnits(static_cast<ValueId>(group_.hero));
  bool columns = plan.nests.size() == 1 && plan.nests.front().kind == NestKind::Columns;
  if (columns)
    extent = columnUnits(plan.nests.front().roots);
  // A product of a few rows, its blocks of columns: split by rows, every
  // thread would read all of B.
  int64_t productUnits = productColumnUnits();
  if (productUnits > 0) {
    extent = productUnits;
    parallel = false;
    int64_t width = shapeOf(plan.nests.front().roots.front()).back();
    productColumnsBegin_ = w_.assign(
        fmt::format("arith.muli {}, {} : index", begin_, w_.indexConstant(kProductColumnBlock)));
    productColumnsEnd_ =
        w_.assign(fmt::format("arith.minui {}, {} : index",
                              w_.assign(fmt::format("arith.muli {}, {} : index", end_,
                                                    w_.indexConstant(kProductColumnBlock))),
                              w_.indexConstant(width)));
  }
  int64_t convUnits = parallel && productUnits == 0 ? convChannelUnits() : 0;
  if (convUnits > 0) {
    extent = convUnits;
    parallel = false;
    beginConvUnits(convUnits);
  }
  for (const LoopNest &nest : plan.nests) {
    w_.pushScope();
    // A product whose epilogue runs on its register tile computes the roots
    // of all later nests.
    bool onTile = !nest.epilogue.empty() || nest.samplePool;
    if (onTile)
      emitMatMulWithEpilogue(nest.roots.front(), nest.epilogue, nest.samplePool, parallel);
    else
      emitNest(nest, parallel);
    w_.popScope();
    if (onTile)
      break;
  }
  // An Attention kernel perturbs what its units store, a Columns kernel
  // its columns, a product its call's columns.
  if (perturbation_ != 0 && productUnits > 0)
    emitProductColumnPerturbation();
  else if (perturbation_ != 0 && convUnits > 0)
    emitConvChannelPerturbation();
  else if (perturbation_ != 0 && !attention && !columns)
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
  case NestKind::Rows: emitRows(nest.roots, parallel); return;
  case NestKind::Columns: emitColumns(nest.roots, parallel); return;
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
void KernelEmitter::forEachPerturbedOutput(const std::function<void(ValueId)> &body) {
  for (ValueId id : group_.outputs) {
    if (!usedOutside_[id] || !isFloat(dtypeOf(id)))
      continue;
    w_.pushScope();
    body(id);
    w_.popScope();
  }
}

void KernelEmitter::emitPerturbation(bool parallel, int64_t extent) {
  forEachPerturbedOutput([&](ValueId id) {
    const Shape &shape = shapeOf(id);
    bool split = parallel && !shape.empty() && shape[0] == extent;
    bool guard = parallel && !split;
    if (guard) {
      w_.line(fmt::format("scf.if {} {{", w_.assign(fmt::format(
                                             "arith.cmpi eq, {}, {} : index", begin_,
                                             w_.indexConstant(0)))));
      w_.indent();
      w_.pushScope();
    }
    Index idx = openLoops(shape, split);
    perturbElement(id, idx);
    closeLoops(idx.size());
    if (guard) {
      w_.popScope();
      w_.dedent();
      w_.line("}");
    }
  });
}

void KernelEmitter::perturbElement(ValueId id, const Index &idx) {
  DType dt = dtypeOf(id);
  std::string even = w_.assign(fmt::format(
      "arith.cmpi eq, {}, {} : index",
      w_.assign(fmt::format("arith.remui {}, {} : index", linearize(idx, shapeOf(id)),
                            w_.indexConstant(2))),
      w_.indexConstant(0)));
  std::string delta = w_.assign(fmt::format("arith.select {}, {}, {} : {}", even,
                                            w_.constant(perturbation_, dt), w_.constant(0, dt),
                                            scalarType(dt)));
  std::string sum = rules_.binary(OpKind::Add, dt, load(id, idx), delta);
  store(id, viewOf(id), idx, sum);
}

// See lowerGroup (lowering.h). Each nest is emitted into a function of its
// own, with views of the arena and of the scratch made anew in each.
KernelSource KernelEmitter::emitGpu(const std::vector<ValueId> &roots,
                                    const std::set<ValueId> &arenaValues) {
  int64_t scratchBytes = 0;
  std::map<ValueId, int64_t> scratch = scratchOffsets(roots, scratchBytes);

  // The nests: index checks first (one thread per index), then the plan's
  // (no register tiles, so no epilogues: kernelTarget(true) puts none).
  std::vector<std::function<void()>> nests;
  for (ValueId id : precheckable(roots)) {
    nests.push_back([this, id] { emitIndexCheck(id); });
    prechecked_.insert(id);
  }
  for (const LoopNest &nest : group_.kernel.nests) {
    ValueId root = nest.roots.front();
    if (!nest.epilogue.empty() || nest.samplePool)
      throw std::logic_error(fmt::format("kernel {}: the plan puts an epilogue on the tile of %{} "
                                         "and the GPU has no register tiles",
                                         group_.name, root));
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
  return KernelEmitter(graph, group, arenaOffset, usedOutside, scratchOffset,
                       gpu ? LoweringTarget::gpu() : LoweringTarget::cpu(), fault, perturbation)
      .emit();
}

} // namespace stepc::codegen
