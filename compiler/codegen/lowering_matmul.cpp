// The loop nest of a matmul root: the register-tiled micro-kernel
// (tiled_matmul.h) for f32 products on the CPU, with the kernel's elementwise
// roots after the product computed on its register tile (the epilogue);
// otherwise one loop per output element (and on the GPU, one thread per
// output element).
#include "kernel_emitter.h"
#include "tiled_matmul.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace stepc::codegen {

void KernelEmitter::emitMatMul(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId a = n.operands[0], b = n.operands[1];
  const Shape &out = n.type.shape;
  size_t rank = out.size();
  // Plain 2-D f32 products of stored operands take the register-tiled path.
  // (Not on the GPU: one thread per output element there.)
  auto stored = [&](ValueId v) { return views_.count(v) || transposedView(v); };
  if (!gpu_ && rank == 2 && n.type.dtype == DType::F32 && stored(a) && stored(b)) {
    TiledMatMul tiled{views_.count(a) ? views_.at(a) : *transposedView(a),
                      views_.count(b) ? views_.at(b) : *transposedView(b),
                      viewOf(id), out[0], shapeOf(a)[1], out[1],
                      parallel ? begin_ : "", parallel ? end_ : ""};
    tiled.aTransposed = !views_.count(a);
    tiled.bTransposed = !views_.count(b);
    tiled.epilogue = tileEpilogue_;
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

bool KernelEmitter::vectorizable(ValueId id, ValueId product, const Shape &shape) const {
  if (id == product)
    return true;
  const Node &n = node(id);
  if (views_.count(id) && !tileRoots_.count(id)) {
    if (n.type.dtype != DType::F32)
      return false;
    if (!tileConv_ || n.type.shape == shape)
      return true;
    // A convolution's tile is (channel, pixel) of one sample: other operands
    // must be full-size or constant over the pixels (a bias [C,1,1]).
    const Shape &s = n.type.shape;
    size_t r = s.size();
    return (r < 1 || s[r - 1] == 1) && (r < 2 || s[r - 2] == 1);
  }
  if (n.op == OpKind::Constant)
    return n.type.dtype == DType::F32 && n.attrs.has("value");
  if (!inGroup_.count(id) || n.type.shape != shape)
    return false;
  switch (n.op) {
  case OpKind::Add:
  case OpKind::Sub:
  case OpKind::Mul:
  case OpKind::Div:
  case OpKind::Maximum:
  case OpKind::Minimum:
  case OpKind::Neg:
  case OpKind::Sqrt:
  case OpKind::Square:
  case OpKind::Relu:
  case OpKind::Exp:
  case OpKind::Tanh:
  case OpKind::Sigmoid:
    if (n.type.dtype != DType::F32)
      return false;
    break;
  case OpKind::Gt:
  case OpKind::Ge:
  case OpKind::Lt:
  case OpKind::Le:
    if (shapeOf(n.operands[0]) != shape && !views_.count(n.operands[0]) &&
        node(n.operands[0]).op != OpKind::Constant)
      return false;
    break;
  case OpKind::Select:
    break;
  case OpKind::Input:
  case OpKind::Parameter:
  case OpKind::Constant:
  case OpKind::Iota:
  case OpKind::Abs:
  case OpKind::Log:
  case OpKind::Rsqrt:
  case OpKind::Sin:
  case OpKind::Cos:
  case OpKind::Sign:
  case OpKind::Erf:
  case OpKind::Cast:
  case OpKind::Pow:
  case OpKind::Eq:
  case OpKind::Ne:
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
    return false;
  }
  for (size_t k = 0; k < n.operands.size(); ++k) {
    ValueId operand = n.operands[k];
    bool condition = n.op == OpKind::Select && k == 0;
    if (condition ? !(inGroup_.count(operand) && shapeOf(operand) == shape &&
                      vectorizable(operand, product, shape))
                  : (dtypeOf(operand) != DType::F32 || !vectorizable(operand, product, shape)))
      return false;
  }
  return true;
}

std::string KernelEmitter::vectorAt(ValueId id, const std::string &row, const std::string &col,
                                    const std::string &mask) {
  std::string key = fmt::format("vec{}@{},{}", id, row, col);
  if (const std::string *hit = w_.cached(key))
    return *hit;
  const Node &n = node(id);
  const char *vec = "vector<16xf32>";
  std::string v;
  auto splat = [&](const std::string &scalar) {
    return w_.assign(fmt::format("vector.broadcast {} : f32 to {}", scalar, vec));
  };
  if (id == tileProduct_) {
    v = tileValue_;
  } else if (views_.count(id) && !tileRoots_.count(id) && !tileSample_.empty()) {
    // Convolution tile: row = channel, col = pixel of sample tileSample_.
    const Shape &out = shapeOf(tileProduct_);
    if (n.type.shape == out) {
      std::string view = matrixView(id, tileSample_, out[1], out[2] * out[3]);
      std::string type = fmt::format("memref<{}x{}xf32>", out[1], out[2] * out[3]);
      if (mask.empty()) {
        v = w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", view, row, col, type, vec));
      } else {
        std::string zero = w_.assign(fmt::format("arith.constant dense<0.0> : {}", vec));
        v = w_.assign(fmt::format("vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}",
                                  view, row, col, mask, zero, type, vec, vec));
      }
    } else {
      Index zero{w_.indexConstant(0), w_.indexConstant(0)};
      v = splat(n.type.rank() == 0 ? valueAt(id, {})
                                   : load(id, broadcastIndex(id, out, {tileSample_, row, zero[0], zero[1]})));
    }
  } else if (views_.count(id) && !tileRoots_.count(id)) {
    // A stored operand: 16 consecutive columns where its last axis spans the
    // product's columns, else one element broadcast.
    const Shape &out = shapeOf(tileProduct_);
    Index at = broadcastIndex(id, out, {row, col});
    bool alongColumns = n.type.rank() >= 1 && n.type.shape.back() == out.back() && out.back() != 1;
    if (!alongColumns) {
      v = splat(n.type.rank() == 0 ? valueAt(id, {}) : load(id, at));
    } else if (mask.empty()) {
      v = w_.assign(fmt::format("vector.load {}[{}] : {}, {}", viewOf(id), fmt::join(at, ", "),
                                memrefType(n.type), vec));
    } else {
      std::string zero = w_.assign(fmt::format("arith.constant dense<0.0> : {}", vec));
      v = w_.assign(fmt::format("vector.maskedload {}[{}], {}, {} : {}, vector<16xi1>, {} into {}",
                                viewOf(id), fmt::join(at, ", "), mask, zero, memrefType(n.type),
                                vec, vec));
    }
  } else if (n.op == OpKind::Constant) {
    v = splat(w_.constant(n.attrs.getReal("value"), DType::F32));
  } else {
    auto x = [&](size_t k) { return vectorAt(n.operands[k], row, col, mask); };
    auto op2 = [&](const char *name) {
      return w_.assign(fmt::format("{} {}, {} : {}", name, x(0), x(1), vec));
    };
    auto op1 = [&](const char *name) { return w_.assign(fmt::format("{} {} : {}", name, x(0), vec)); };
    auto cmp = [&](const char *pred) {
      return w_.assign(fmt::format("arith.cmpf {}, {}, {} : {}", pred, x(0), x(1), vec));
    };
    std::string zero = splat(w_.constant(0, DType::F32));
    std::string one = splat(w_.constant(1, DType::F32));
    switch (n.op) {
    case OpKind::Add: v = op2("arith.addf"); break;
    case OpKind::Sub: v = op2("arith.subf"); break;
    case OpKind::Mul: v = op2("arith.mulf"); break;
    case OpKind::Div: v = op2("arith.divf"); break;
    case OpKind::Maximum: v = op2("arith.maximumf"); break;
    case OpKind::Minimum: v = op2("arith.minimumf"); break;
    case OpKind::Neg: v = op1("arith.negf"); break;
    case OpKind::Sqrt: v = op1("math.sqrt"); break;
    case OpKind::Exp: v = op1("math.exp"); break;
    case OpKind::Tanh: v = op1("math.tanh"); break;
    case OpKind::Square:
      v = w_.assign(fmt::format("arith.mulf {}, {} : {}", x(0), x(0), vec));
      break;
    case OpKind::Relu: {
      // x < 0 ? 0 : x, as the scalar rule (NaN passes through).
      std::string negative = w_.assign(fmt::format("arith.cmpf olt, {}, {} : {}", x(0), zero, vec));
      v = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", negative, zero, x(0), vec));
      break;
    }
    case OpKind::Sigmoid: {
      std::string e = w_.assign(fmt::format("math.exp {} : {}", op1("arith.negf"), vec));
      std::string d = w_.assign(fmt::format("arith.addf {}, {} : {}", one, e, vec));
      v = w_.assign(fmt::format("arith.divf {}, {} : {}", one, d, vec));
      break;
    }
    case OpKind::Gt: v = cmp("ogt"); break;
    case OpKind::Ge: v = cmp("oge"); break;
    case OpKind::Lt: v = cmp("olt"); break;
    case OpKind::Le: v = cmp("ole"); break;
    case OpKind::Select:
      v = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", x(0), x(1), x(2), vec));
      break;
    case OpKind::Input:
    case OpKind::Parameter:
    case OpKind::Constant:
    case OpKind::Iota:
    case OpKind::Abs:
    case OpKind::Log:
    case OpKind::Rsqrt:
    case OpKind::Sin:
    case OpKind::Cos:
    case OpKind::Sign:
    case OpKind::Erf:
    case OpKind::Cast:
    case OpKind::Pow:
    case OpKind::Eq:
    case OpKind::Ne:
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
      throw std::logic_error(fmt::format("vectorAt: {} is not vectorizable", opInfo(n.op).name));
    }
  }
  w_.cache(key, v);
  return v;
}

// The matmul with its epilogue roots computed on each 16-lane piece of the
// product while it is in a register: nothing is stored but the roots (and
// the product itself where a later kernel reads it).
bool KernelEmitter::emitMatMulWithEpilogue(ValueId product, const std::vector<ValueId> &epilogue,
                                           bool parallel) {
  const Node &m = node(product);
  const Shape &shape = m.type.shape;
  bool conv = m.op == OpKind::Conv2d;
  if (conv) {
    if (!convAsMatmul(m, m.operands[0], product, m.operands[1]))
      return false;
  } else {
    ValueId b = m.operands[1];
    if (gpu_ || shape.size() != 2 || m.type.dtype != DType::F32 || !views_.count(b) ||
        !(views_.count(m.operands[0]) || transposedView(m.operands[0])))
      return false;
  }
  tileConv_ = conv;
  // Heavy epilogues stay a row sweep after the product: a whole optimizer
  // update streams several full-size tensors, which the tile order (column
  // panels outside) would read in short strided pieces.
  std::set<ValueId> fullSize, seen;
  std::vector<ValueId> stack(epilogue.begin(), epilogue.end());
  while (!stack.empty()) {
    ValueId v = stack.back();
    stack.pop_back();
    if (v == product || !seen.insert(v).second)
      continue;
    if (!inGroup_.count(v)) {
      if (shapeOf(v) == shape)
        fullSize.insert(v);
      continue;
    }
    for (ValueId operand : node(v).operands)
      stack.push_back(operand);
  }
  if (fullSize.size() + epilogue.size() > 3) {
    tileConv_ = false;
    return false;
  }
  tileRoots_ = std::set<ValueId>(epilogue.begin(), epilogue.end());
  for (ValueId r : epilogue)
    if (shapeOf(r) != shape || !(dtypeOf(r) == DType::F32 || dtypeOf(r) == DType::Bool) ||
        !vectorizable(r, product, shape)) {
      tileRoots_.clear();
      tileConv_ = false;
      return false;
    }
  tileProduct_ = product;
  tileEpilogue_ = [&, product, epilogue](const std::string &row, const std::string &col,
                                         const std::string &value, const std::string &mask) {
    tileValue_ = value;
    auto storeVector = [&](ValueId id, std::string v) {
      std::string type = "vector<16xf32>";
      if (dtypeOf(id) == DType::Bool) {
        v = w_.assign(fmt::format("arith.extui {} : vector<16xi1> to vector<16xi8>", v));
        type = "vector<16xi8>";
      }
      // A convolution stores into the sample's [C, pixels] slice.
      std::string view = viewOf(id), memType = memrefType(g_.type(id));
      if (!tileSample_.empty()) {
        int64_t pixels = shape[2] * shape[3];
        view = matrixView(id, tileSample_, shape[1], pixels);
        memType = fmt::format("memref<{}x{}x{}>", shape[1], pixels, memoryElementType(dtypeOf(id)));
      }
      if (mask.empty())
        w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", v, view, row, col, memType, type));
      else
        w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", view,
                            row, col, mask, v, memType, type));
    };
    if (usedOutside_[product])
      storeVector(product, value);
    for (ValueId r : epilogue)
      storeVector(r, vectorAt(r, row, col, mask));
  };
  if (conv)
    emitConvAsMatmul(product, parallel);
  else
    emitMatMul(product, parallel);
  tileEpilogue_ = nullptr;
  tileRoots_.clear();
  tileConv_ = false;
  return true;
}

} // namespace stepc::codegen
