// Column kernels (NestKind::Columns): a Reduction kernel whose reductions all
// reduce the leading axes R of one shape [R..., C...] (bias and layer-norm
// parameter gradients, [B, T, N] summed over B and T) and whose other roots
// end in C (the optimizer's update of that parameter). One output element
// per loop iteration would read a column, one element per cache line; here
// threads split the columns instead, in units of 16 consecutive columns
// along C's last axis, and a call streams the rows in order, each row's
// stretch of its columns contiguous in memory, adding each 16 lanes into the
// reduction's output, which is its accumulator. Then it computes the other
// roots on the same columns. Every output element is combined by one call in
// the order of the scalar loops (rows ascending), so the bits do not depend
// on the thread count and equal those of the interpreter's sequential sum.
#include "kernel_emitter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

namespace stepc::codegen {

namespace {

constexpr const char *kVector = "vector<16xf32>";
constexpr const char *kMask = "vector<16xi1>";
constexpr int64_t kLanes = 16;
// How far ahead a reduction prefetches the rows it streams (measured on the
// GPT step's [16, 64, 1024] bias gradients: 8 KiB read in 130-160 us where
// none took 200-220 us, and 32 KiB as long as none).
constexpr int64_t kPrefetchBytes = 8192;

} // namespace

Shape KernelEmitter::columnShape(const std::vector<ValueId> &roots) const {
  for (ValueId r : roots) {
    const Node &n = node(r);
    if (opInfo(n.op).opClass != OpClass::Reduction)
      continue;
    const Shape &full = shapeOf(n.operands[0]);
    size_t reduced = n.attrs.getInts("axes").size();
    return Shape(full.begin() + static_cast<ptrdiff_t>(reduced), full.end());
  }
  throw std::logic_error(fmt::format("kernel {}: a columns nest has no reduction", group_.name));
}

int64_t KernelEmitter::columnUnits(const std::vector<ValueId> &roots) const {
  Shape columns = columnShape(roots);
  int64_t units = (columns.back() + kLanes - 1) / kLanes;
  for (size_t d = 0; d + 1 < columns.size(); ++d)
    units *= columns[d];
  return units;
}

void KernelEmitter::forEachColumnBlock(
    const Shape &shape, const ColumnSweep &sweep,
    const std::function<void(const Index &, const std::string &)> &body) {
  const Shape &columns = sweep.columns;
  int64_t width = columns.back();
  Shape rows(shape.begin(), shape.end() - static_cast<ptrdiff_t>(columns.size()));
  Index at = openLoops(rows, false);
  std::string unit = w_.beginFor(sweep.first, sweep.last);
  Shape blocks(columns.begin(), columns.end() - 1);
  blocks.push_back((width + kLanes - 1) / kLanes);
  Index block = delinearize(unit, blocks);
  block.back() =
      w_.assign(fmt::format("arith.muli {}, {} : index", block.back(), w_.indexConstant(kLanes)));
  std::string mask;
  if (width % kLanes != 0)
    mask = w_.assign(fmt::format(
        "vector.create_mask {} : {}",
        w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(width), block.back())),
        kMask));
  at.insert(at.end(), block.begin(), block.end());
  body(at, mask);
  w_.endFor();
  closeLoops(rows.size());
}

void KernelEmitter::forEachBlockElement(const Index &block, int64_t width,
                                        const std::function<void(const Index &)> &body) {
  std::string first = block.back();
  std::string end = w_.assign(fmt::format(
      "arith.minui {}, {} : index",
      w_.assign(fmt::format("arith.addi {}, {} : index", first, w_.indexConstant(kLanes))),
      w_.indexConstant(width)));
  Index at = block;
  at.back() = w_.beginFor(first, end);
  body(at);
  w_.endFor();
}

std::string KernelEmitter::loadLanes(ValueId id, const Index &at, const std::string &mask) {
  std::string type = memrefType(g_.type(id));
  if (mask.empty())
    return w_.assign(fmt::format("vector.load {}[{}] : {}, {}", viewOf(id), fmt::join(at, ", "),
                                 type, kVector));
  std::string zero = w_.assign(fmt::format("arith.constant dense<0.0> : {}", kVector));
  return w_.assign(fmt::format("vector.maskedload {}[{}], {}, {} : {}, {}, {} into {}", viewOf(id),
                               fmt::join(at, ", "), mask, zero, type, kMask, kVector, kVector));
}

void KernelEmitter::storeLanes(ValueId id, const Index &at, const std::string &mask,
                               const std::string &v) {
  std::string type = memrefType(g_.type(id));
  if (mask.empty())
    w_.line(fmt::format("vector.store {}, {}[{}] : {}, {}", v, viewOf(id), fmt::join(at, ", "),
                        type, kVector));
  else
    w_.line(fmt::format("vector.maskedstore {}[{}], {}, {} : {}, {}, {}", viewOf(id),
                        fmt::join(at, ", "), mask, v, type, kMask, kVector));
}

void KernelEmitter::collectStreamed(ValueId id, int64_t elements, std::set<ValueId> &leaves) const {
  if (g_.type(id).numel() != elements || shapeOf(id).empty())
    return;
  if (views_.count(id) && !nestRoots_.count(id)) {
    if (dtypeOf(id) == DType::F32)
      leaves.insert(id);
    return;
  }
  const Node &n = node(id);
  bool sameElements = opInfo(n.op).opClass == OpClass::Elementwise || n.op == OpKind::Reshape ||
                      n.op == OpKind::BroadcastTo;
  if (!inGroup_.count(id) || !sameElements)
    return;
  for (ValueId operand : n.operands)
    collectStreamed(operand, elements, leaves);
}

// The reduction's output holds the running value of the call's columns:
// the identity first, then each row combined into it in order, then (for a
// mean) divided by the row count. 16 lanes at a time where the operand has
// a vector form (f32), else one element at a time.
void KernelEmitter::emitColumnReduction(ValueId id, const ColumnSweep &sweep) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &full = shapeOf(x);
  DType dt = n.type.dtype;
  int64_t width = sweep.columns.back();
  size_t reduced = full.size() - sweep.columns.size();
  bool keep = n.attrs.getInt("keepdims") != 0;
  // The output's index of an element of the operand (or of the columns).
  auto outputAt = [&](const Index &at) {
    Index out = keep ? Index(reduced, w_.indexConstant(0)) : Index{};
    out.insert(out.end(), at.end() - static_cast<ptrdiff_t>(sweep.columns.size()), at.end());
    return out;
  };
  OpKind combine = n.op == OpKind::ReduceMax   ? OpKind::Maximum
                   : n.op == OpKind::ReduceMin ? OpKind::Minimum
                                               : OpKind::Add;
  double rows = 1;
  for (size_t d = 0; d < reduced; ++d)
    rows *= static_cast<double>(full[d]);
  bool vector = target_.vectorPaths && dt == DType::F32 && dtypeOf(x) == DType::F32 &&
                rowVectorizable(x, width);
  if (vector) {
    ElementType lanes{DType::F32, kLanes};
    double identity = n.op == OpKind::ReduceMax   ? -INFINITY
                      : n.op == OpKind::ReduceMin ? INFINITY
                                                  : 0.0;
    forEachColumnBlock(sweep.columns, sweep, [&](const Index &at, const std::string &mask) {
      storeLanes(id, outputAt(at), mask, rules_.constant(identity, lanes));
    });
    // The stored values the operand's lanes read element for element,
    // prefetched kPrefetchBytes of rows ahead: a call reads only its
    // columns of each row, a stretch too short for the hardware's stream
    // prefetcher to get ahead.
    std::vector<std::string> streamed;
    std::set<ValueId> leaves;
    int64_t elements = g_.type(x).numel();
    collectStreamed(x, elements, leaves);
    for (ValueId leaf : leaves) {
      std::string view = viewOf(leaf), type = memrefType(g_.type(leaf));
      if (shapeOf(leaf).size() > 1) {
        std::vector<size_t> dims(shapeOf(leaf).size());
        std::iota(dims.begin(), dims.end(), 0);
        view = w_.assign(fmt::format("memref.collapse_shape {} [[{}]] : {} into memref<{}xf32>",
                                     view, fmt::join(dims, ", "), type, elements));
      }
      streamed.push_back(view);
    }
    int64_t rowElements = elements / static_cast<int64_t>(rows);
    int64_t ahead = std::max<int64_t>(1, kPrefetchBytes / (rowElements * 4)) * rowElements;
    forEachColumnBlock(full, sweep, [&](const Index &at, const std::string &mask) {
      Index out = outputAt(at);
      if (!streamed.empty()) {
        std::string target = w_.assign(fmt::format(
            "arith.minui {}, {} : index",
            w_.assign(fmt::format("arith.addi {}, {} : index", linearize(at, full),
                                  w_.indexConstant(ahead))),
            w_.indexConstant(elements - 1)));
        for (const std::string &view : streamed)
          w_.line(fmt::format("memref.prefetch {}[{}], read, locality<3>, data : memref<{}xf32>",
                              view, target, elements));
      }
      std::string next = rules_.apply(combine, lanes, DType::F32,
                                      {loadLanes(id, out, mask), rowVector(x, at, width, mask)});
      storeLanes(id, out, mask, next);
    });
    if (n.op == OpKind::ReduceMean)
      forEachColumnBlock(sweep.columns, sweep, [&](const Index &at, const std::string &mask) {
        Index out = outputAt(at);
        std::string mean = rules_.apply(OpKind::Div, lanes, DType::F32,
                                        {loadLanes(id, out, mask), rules_.constant(rows, lanes)});
        storeLanes(id, out, mask, mean);
      });
    return;
  }
  auto eachElement = [&](const Shape &shape, const std::function<void(const Index &)> &body) {
    forEachColumnBlock(shape, sweep, [&](const Index &at, const std::string &) {
      forEachBlockElement(at, width, body);
    });
  };
  std::string identity = reductionIdentity(n);
  eachElement(sweep.columns, [&](const Index &at) { store(id, viewOf(id), outputAt(at), identity); });
  eachElement(full, [&](const Index &at) {
    Index out = outputAt(at);
    store(id, viewOf(id), out, rules_.binary(combine, dt, load(id, out), valueAt(x, at)));
  });
  if (n.op == OpKind::ReduceMean)
    eachElement(sweep.columns, [&](const Index &at) {
      Index out = outputAt(at);
      store(id, viewOf(id), out, rules_.binary(OpKind::Div, dt, load(id, out), w_.constant(rows, dt)));
    });
}

// Consecutive roots of one shape, computed together on each block: 16
// lanes where all have a vector form, else one element at a time. As in
// emitElementwiseRoots, all are computed before any is stored.
void KernelEmitter::emitColumnElements(const std::vector<ValueId> &roots,
                                       const ColumnSweep &sweep) {
  int64_t width = sweep.columns.back();
  nestRoots_.insert(roots.begin(), roots.end());
  bool vector = target_.vectorPaths && std::ranges::all_of(roots, [&](ValueId r) {
                  return dtypeOf(r) == DType::F32 && rowVectorizable(r, width);
                });
  forEachColumnBlock(shapeOf(roots.front()), sweep, [&](const Index &at, const std::string &mask) {
    if (vector) {
      std::vector<std::string> values;
      for (ValueId r : roots)
        values.push_back(rowVector(r, at, width, mask));
      for (size_t k = 0; k < roots.size(); ++k)
        storeLanes(roots[k], at, mask, values[k]);
      return;
    }
    forEachBlockElement(at, width, [&](const Index &element) { emitRootsAt(roots, element); });
  });
  nestRoots_.clear();
}

void KernelEmitter::emitColumns(const std::vector<ValueId> &roots, bool parallel) {
  ColumnSweep sweep{columnShape(roots), parallel ? begin_ : w_.indexConstant(0),
                    parallel ? end_ : w_.indexConstant(columnUnits(roots))};
  // Scalars the kernel computes (an optimizer's bias corrections) once, up
  // front, rather than in every block.
  for (ValueId id : group_.nodes)
    if (shapeOf(id).empty() && isInlinable(node(id).op))
      valueAt(id, {});
  for (size_t i = 0; i < roots.size();) {
    w_.pushScope();
    if (opInfo(node(roots[i]).op).opClass == OpClass::Reduction) {
      emitColumnReduction(roots[i], sweep);
      ++i;
    } else {
      size_t j = i + 1;
      while (j < roots.size() && opInfo(node(roots[j]).op).opClass != OpClass::Reduction &&
             shapeOf(roots[j]) == shapeOf(roots[i]))
        ++j;
      emitColumnElements(std::vector<ValueId>(roots.begin() + i, roots.begin() + j), sweep);
      i = j;
    }
    w_.popScope();
  }
  // Fault injection (lowerGroup's perturbation): the call's columns of
  // every output.
  if (perturbation_ != 0)
    for (ValueId id : group_.outputs) {
      if (!usedOutside_[id] || !isFloat(dtypeOf(id)))
        continue;
      w_.pushScope();
      forEachColumnBlock(shapeOf(id), sweep, [&](const Index &at, const std::string &) {
        forEachBlockElement(at, sweep.columns.back(),
                            [&](const Index &element) { perturbElement(id, element); });
      });
      w_.popScope();
    }
}

} // namespace stepc::codegen
