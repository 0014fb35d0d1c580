// Row kernels (NestKind::Rows): a Reduction kernel whose reductions all
// reduce the last axis of one shape [..., N] computes every root row by row.
// For each row, each reduction runs over the row with 16-lane accumulators,
// then the row's full-size roots are computed 16 columns at a time and
// stored, while the row is still in L1: one pass over memory, where one nest
// per root swept the whole tensor once per reduction. A row is computed by
// one thread in a fixed order, so the result does not depend on the thread
// count; the 16 lane sums are added in lane order at the end, which rounds
// differently from the interpreter's sequential sum (within the f32
// tolerance of accumulated values, 1e-4 relative).
#include "kernel_emitter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace stepc::codegen {

namespace {

constexpr const char *kVector = "vector<16xf32>";
constexpr const char *kMask = "vector<16xi1>";

// The f32 ops a row computes on 16 lanes: ElementRules has vector rules for
// them (comparisons give a mask, selects take one).
bool rowVectorOp(OpKind op) {
  static constexpr OpKind kOps[] = {
      OpKind::Add,     OpKind::Sub,   OpKind::Mul,    OpKind::Div,   OpKind::Maximum,
      OpKind::Minimum, OpKind::Neg,   OpKind::Sqrt,   OpKind::Rsqrt, OpKind::Square,
      OpKind::Relu,    OpKind::Exp,   OpKind::Log,    OpKind::Tanh,  OpKind::Erf,
      OpKind::Sigmoid, OpKind::Eq,    OpKind::Ne,     OpKind::Gt,    OpKind::Ge,
      OpKind::Lt,      OpKind::Le,    OpKind::Select};
  return std::ranges::find(kOps, op) != std::end(kOps);
}

bool isComparison(OpKind op) {
  return op == OpKind::Eq || op == OpKind::Ne || op == OpKind::Gt || op == OpKind::Ge ||
         op == OpKind::Lt || op == OpKind::Le;
}

} // namespace

bool KernelEmitter::alongRow(ValueId id, int64_t width) const {
  const Shape &s = shapeOf(id);
  return !s.empty() && s.back() == width;
}

bool KernelEmitter::rowVectorizable(ValueId id, int64_t width) const {
  const Node &n = node(id);
  DType dt = n.type.dtype;
  // A row's scalar (a reduced value, a scalar operand): computed once as a
  // scalar and broadcast to the lanes.
  if (!alongRow(id, width))
    return dt == DType::F32 || dt == DType::Bool;
  if (views_.count(id) && !nestRoots_.count(id))
    return dt == DType::F32;
  if (n.op == OpKind::Constant)
    return n.attrs.has("value") && dt == DType::F32;
  if (!inGroup_.count(id))
    return false;
  if (n.op == OpKind::BroadcastTo)
    return rowVectorizable(n.operands[0], width);
  // A reshape that keeps the last axis (a matmul's [B*T, N] result read as
  // [B, T, N], a keepdims reduction's [1, 1, N] read as [N]) reads the same
  // columns of one row of its operand.
  if (n.op == OpKind::Reshape)
    return alongRow(n.operands[0], width) && rowVectorizable(n.operands[0], width);
  // A one-hot row compares the row's index with the columns; its index
  // check ran before the nests (precheckable).
  if (n.op == OpKind::OneHot)
    return dt == DType::F32 && (!checksIndices(n) || prechecked_.count(id));
  if (n.op == OpKind::Cast)
    return dt == DType::F32 && dtypeOf(n.operands[0]) == DType::Bool &&
           rowVectorizable(n.operands[0], width);
  if (!rowVectorOp(n.op) || dt != (isComparison(n.op) ? DType::Bool : DType::F32))
    return false;
  for (size_t k = 0; k < n.operands.size(); ++k) {
    bool condition = n.op == OpKind::Select && k == 0;
    if (dtypeOf(n.operands[k]) != (condition ? DType::Bool : DType::F32) ||
        !rowVectorizable(n.operands[k], width))
      return false;
  }
  return true;
}

// The value of `id` at index `at` (its own shape; where it spans the row, the
// last index is the first of 16 columns) in 16 lanes: f32 lanes, or a mask
// for bools. Lanes past the row's end (`mask`) hold anything.
std::string KernelEmitter::rowVector(ValueId id, const Index &at, int64_t width,
                                     const std::string &mask) {
  std::string key = fmt::format("row{}@{}", id, fmt::join(at, ","));
  if (const std::string *hit = w_.cached(key))
    return *hit;
  const Node &n = node(id);
  std::string v;
  if (!alongRow(id, width)) {
    bool isBool = n.type.dtype == DType::Bool;
    v = w_.assign(fmt::format("vector.broadcast {} : {} to {}", valueAt(id, at),
                              isBool ? "i1" : "f32", isBool ? kMask : kVector));
  } else if (views_.count(id) && !nestRoots_.count(id)) {
    std::string type = memrefType(n.type);
    if (mask.empty()) {
      v = w_.assign(fmt::format("vector.load {}[{}] : {}, {}", viewOf(id), fmt::join(at, ", "),
                                type, kVector));
    } else {
      std::string zero = w_.assign(fmt::format("arith.constant dense<0.0> : {}", kVector));
      v = w_.assign(fmt::format("vector.maskedload {}[{}], {}, {} : {}, {}, {} into {}",
                                viewOf(id), fmt::join(at, ", "), mask, zero, type, kMask,
                                kVector, kVector));
    }
  } else if (n.op == OpKind::Constant) {
    v = rules_.constant(n.attrs.getReal("value"), ElementType{DType::F32, 16});
  } else if (n.op == OpKind::BroadcastTo) {
    ValueId x = n.operands[0];
    v = rowVector(x, broadcastIndex(x, n.type.shape, at), width, mask);
  } else if (n.op == OpKind::Reshape) {
    // Row-major: the row's flat index among the leading axes is the same.
    ValueId x = n.operands[0];
    const Shape &xs = shapeOf(x);
    Index row(at.begin(), at.end() - 1);
    Index xAt = delinearize(linearize(row, Shape(n.type.shape.begin(), n.type.shape.end() - 1)),
                            Shape(xs.begin(), xs.end() - 1));
    xAt.push_back(at.back());
    v = rowVector(x, xAt, width, mask);
  } else if (n.op == OpKind::OneHot) {
    // 1 in the lane whose column is the row's index (none where it is out
    // of range), else 0.
    ValueId indices = n.operands[0];
    Index row(at.begin(), at.end() - 1);
    std::string index = rules_.convert(valueAt(indices, row), dtypeOf(indices), DType::I64);
    std::string columns = w_.assign(fmt::format(
        "arith.addi {}, {} : vector<16xi64>",
        w_.assign("arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]> : "
                  "vector<16xi64>"),
        w_.assign(fmt::format("vector.broadcast {} : i64 to vector<16xi64>",
                              w_.assign(fmt::format("arith.index_cast {} : index to i64", at.back()))))));
    std::string hit = w_.assign(fmt::format(
        "arith.cmpi eq, {}, {} : vector<16xi64>", columns,
        w_.assign(fmt::format("vector.broadcast {} : i64 to vector<16xi64>", index))));
    ElementType lanes{DType::F32, 16};
    v = rules_.select(hit, rules_.constant(1, lanes), rules_.constant(0, lanes), lanes);
  } else if (n.op == OpKind::Cast) {
    // bool to f32: 1 where set, else 0.
    ValueId x = n.operands[0];
    ElementType lanes{DType::F32, 16};
    v = rules_.select(rowVector(x, broadcastIndex(x, n.type.shape, at), width, mask),
                      rules_.constant(1, lanes), rules_.constant(0, lanes), lanes);
  } else {
    // Operands last first, as lowerElement.
    std::vector<std::string> x(n.operands.size());
    for (size_t k = n.operands.size(); k-- > 0;) {
      ValueId operand = n.operands[k];
      x[k] = rowVector(operand, broadcastIndex(operand, n.type.shape, at), width, mask);
    }
    v = rules_.apply(n.op, ElementType{DType::F32, 16}, n.type.dtype, x);
  }
  w_.cache(key, v);
  return v;
}

// `body(column, mask)` for each 16 columns of a row of `width`: a loop over
// the whole chunks (no mask), then the last, partial chunk with a mask.
void KernelEmitter::forEachRowChunk(int64_t width,
                                    const std::function<void(const std::string &, const std::string &)> &body) {
  int64_t whole = width / 16 * 16;
  if (whole > 0) {
    std::string col = w_.fresh("col");
    w_.line(fmt::format("scf.for {} = {} to {} step {} {{", col, w_.indexConstant(0),
                        w_.indexConstant(whole), w_.indexConstant(16)));
    w_.indent();
    w_.pushScope();
    body(col, "");
    w_.popScope();
    w_.dedent();
    w_.line("}");
  }
  if (whole < width) {
    w_.pushScope();
    std::string mask = w_.assign(fmt::format("vector.constant_mask [{}] : {}", width - whole, kMask));
    body(w_.indexConstant(whole), mask);
    w_.popScope();
  }
}

// One reduction over the row `row`, with 16 lane accumulators where its
// operand has a vector form, else one scalar accumulator.
void KernelEmitter::emitRowReduction(ValueId id, const Index &row, int64_t width) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  OpKind combine = n.op == OpKind::ReduceMax   ? OpKind::Maximum
                   : n.op == OpKind::ReduceMin ? OpKind::Minimum
                                               : OpKind::Add;
  double identity = n.op == OpKind::ReduceMax   ? -INFINITY
                    : n.op == OpKind::ReduceMin ? INFINITY
                                                : 0.0;
  std::string total;
  if (rowVectorizable(x, width)) {
    ElementType lanes{DType::F32, 16};
    std::string none = rules_.constant(identity, lanes);
    std::string sum = none;
    int64_t whole = width / 16 * 16;
    if (whole > 0) {
      std::string col = w_.fresh("col"), acc = w_.fresh("acc"), res = w_.fresh();
      w_.line(fmt::format("{} = scf.for {} = {} to {} step {} iter_args({} = {}) -> ({}) {{", res,
                          col, w_.indexConstant(0), w_.indexConstant(whole), w_.indexConstant(16),
                          acc, sum, kVector));
      w_.indent();
      w_.pushScope();
      Index at = row;
      at.push_back(col);
      std::string next = rules_.apply(combine, lanes, DType::F32, {acc, rowVector(x, at, width, "")});
      w_.line(fmt::format("scf.yield {} : {}", next, kVector));
      w_.popScope();
      w_.dedent();
      w_.line("}");
      sum = res;
    }
    if (whole < width) {
      // The lanes past the row's end add the identity.
      w_.pushScope();
      std::string mask = w_.assign(fmt::format("vector.constant_mask [{}] : {}", width - whole, kMask));
      Index at = row;
      at.push_back(w_.indexConstant(whole));
      std::string tail = rules_.select(mask, rowVector(x, at, width, mask), none, lanes);
      sum = rules_.apply(combine, lanes, DType::F32, {sum, tail});
      w_.popScope();
    }
    const char *kind = combine == OpKind::Maximum   ? "maximumf"
                       : combine == OpKind::Minimum ? "minimumf"
                                                    : "add";
    total = w_.assign(fmt::format("vector.reduction <{}>, {} : {} into f32", kind, sum, kVector));
  } else {
    Accumulation loop = openAccumulation({width}, w_.constant(identity, DType::F32), "f32");
    Index at = row;
    at.push_back(loop.ivs[0]);
    total = closeAccumulation(loop, rules_.binary(combine, DType::F32, loop.acc, valueAt(x, at)));
  }
  if (n.op == OpKind::ReduceMean)
    total = rules_.binary(OpKind::Div, DType::F32, total,
                          w_.constant(static_cast<double>(width), DType::F32));
  Index out = row;
  if (n.attrs.getInt("keepdims") != 0)
    out.push_back(w_.indexConstant(0));
  store(id, viewOf(id), out, total);
}

// Full-size roots of the row, consecutive in the plan: computed together 16
// columns at a time where all have a vector form, else one column at a time.
// As in emitElementwiseRoots, all are computed before any is stored.
void KernelEmitter::emitRowElements(const std::vector<ValueId> &roots, const Index &row,
                                    int64_t width) {
  nestRoots_.insert(roots.begin(), roots.end());
  bool vector = std::ranges::all_of(roots, [&](ValueId r) {
    return dtypeOf(r) == DType::F32 && rowVectorizable(r, width);
  });
  if (vector) {
    forEachRowChunk(width, [&](const std::string &col, const std::string &mask) {
      Index at = row;
      at.push_back(col);
      std::vector<std::string> values;
      for (ValueId r : roots)
        values.push_back(rowVector(r, at, width, mask));
      for (size_t k = 0; k < roots.size(); ++k) {
        std::string type = memrefType(g_.type(roots[k]));
        if (mask.empty())
          w_.line(fmt::format("vector.store {}, {}[{}] : {}, {}", values[k], viewOf(roots[k]),
                              fmt::join(at, ", "), type, kVector));
        else
          w_.line(fmt::format("vector.maskedstore {}[{}], {}, {} : {}, {}, {}", viewOf(roots[k]),
                              fmt::join(at, ", "), mask, values[k], type, kMask, kVector));
      }
    });
  } else {
    std::string col = w_.beginFor(w_.indexConstant(0), w_.indexConstant(width));
    Index at = row;
    at.push_back(col);
    emitRootsAt(roots, at);
    w_.endFor();
  }
  nestRoots_.clear();
}

void KernelEmitter::emitRows(const std::vector<ValueId> &roots, bool parallel) {
  const Shape &full = shapeOf(node(static_cast<ValueId>(group_.hero)).operands[0]);
  bool f32 = std::ranges::all_of(roots, [&](ValueId r) {
    return opInfo(node(r).op).opClass != OpClass::Reduction || dtypeOf(r) == DType::F32;
  });
  if (!target_.vectorPaths || !f32) {
    // One nest per root as the plan would have them (other dtypes' reductions
    // keep the scalar loops of emitReduction); consecutive elementwise roots
    // of one shape share one.
    for (size_t i = 0; i < roots.size();) {
      size_t j = i + 1;
      if (isInlinable(node(roots[i]).op)) {
        while (j < roots.size() && isInlinable(node(roots[j]).op) &&
               shapeOf(roots[j]) == shapeOf(roots[i]))
          ++j;
        emitElementwiseRoots(std::vector<ValueId>(roots.begin() + i, roots.begin() + j), parallel);
      } else {
        emitRoot(roots[i], parallel);
      }
      i = j;
    }
    return;
  }
  Shape rows(full.begin(), full.end() - 1);
  int64_t width = full.back();
  Index row = openLoops(rows, parallel && !rows.empty());
  for (size_t i = 0; i < roots.size();) {
    ValueId r = roots[i];
    w_.pushScope();
    if (opInfo(node(r).op).opClass == OpClass::Reduction) {
      emitRowReduction(r, row, width);
      ++i;
    } else if (shapeOf(r) == full) {
      size_t j = i + 1;
      while (j < roots.size() && shapeOf(roots[j]) == full &&
             opInfo(node(roots[j]).op).opClass != OpClass::Reduction)
        ++j;
      emitRowElements(std::vector<ValueId>(roots.begin() + i, roots.begin() + j), row, width);
      i = j;
    } else {
      // A row's value ([..., 1] or [...]).
      Index at = row;
      if (shapeOf(r).size() == full.size())
        at.push_back(w_.indexConstant(0));
      nestRoots_.insert(r);
      std::string v = valueAt(r, at);
      nestRoots_.clear();
      store(r, viewOf(r), at, v);
      ++i;
    }
    w_.popScope();
  }
  closeLoops(row.size());
}

} // namespace stepc::codegen
