// The loop nests of a kernel's roots: elementwise bundles, reductions,
// argmax, convolution, pooling and the scatter-form gradient ops, and the
// rule that says when a kernel's roots may be split among threads by rows.
// Matmul roots: lowering_matmul.cpp.
#include "kernel_emitter.h"
#include "tiled_matmul.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <functional>
#include <tuple>
#include <utility>

namespace stepc::codegen {

// ---------------------------------------------------------------------------
// Roots

Index KernelEmitter::openLoops(const Shape &shape, bool parallel, size_t from) {
  if (parallel && target_.parallel == LoweringTarget::Parallel::ThreadPerElement) {
    // One GPU thread per element of the nest's parallel loops.
    if (flattened_ || from != 0)
      throw std::logic_error(fmt::format("kernel {}: a GPU loop nest has two parallel loops",
                                         group_.name));
    flattened_ = true;
    flatExtent_ = 1;
    for (int64_t d : shape)
      flatExtent_ *= d;
    openedLoops_.push_back({0, shape.size()});
    return delinearize(begin_, shape);
  }
  Index idx;
  for (size_t d = from; d < shape.size(); ++d) {
    bool outer = parallel && d == 0;
    idx.push_back(w_.beginFor(outer ? begin_ : w_.indexConstant(0),
                              outer ? end_ : w_.indexConstant(shape[d])));
  }
  openedLoops_.push_back({idx.size(), idx.size()});
  return idx;
}

void KernelEmitter::closeLoops(size_t count) {
  // The matching openLoops gave `count` indices; it opened as many loops,
  // or none where it flattened a nest into one thread per element.
  OpenedLoops opened = openedLoops_.back();
  openedLoops_.pop_back();
  if (opened.indices != count)
    throw std::logic_error("closeLoops: does not match openLoops");
  for (size_t i = 0; i < opened.loops; ++i)
    w_.endFor();
}

// Every root's value is computed before any is stored: the memory plan may
// give a root the buffer of a kernel input that a later root of the nest
// still reads at the same index (canOverwrite, one loop nest).
KernelEmitter::Accumulation KernelEmitter::openAccumulation(const std::vector<int64_t> &extents,
                                                           const std::string &init,
                                                           const std::string &type) {
  Accumulation loops{{}, {}, init, type};
  for (int64_t e : extents) {
    std::string iv = w_.fresh("r"), a = w_.fresh("acc"), res = w_.fresh();
    w_.line(fmt::format("{} = scf.for {} = {} to {} step {} iter_args({} = {}) -> ({}) {{", res, iv,
                        w_.indexConstant(0), w_.indexConstant(e), w_.indexConstant(1), a,
                        loops.acc, type));
    w_.indent();
    w_.pushScope();
    loops.ivs.push_back(iv);
    loops.results.push_back(res);
    loops.acc = a;
  }
  return loops;
}

std::string KernelEmitter::closeAccumulation(const Accumulation &loops, std::string next) {
  for (size_t k = loops.results.size(); k-- > 0;) {
    w_.line(fmt::format("scf.yield {} : {}", next, loops.type));
    w_.popScope();
    w_.dedent();
    w_.line("}");
    next = loops.results[k];
  }
  return next;
}

void KernelEmitter::emitElementwiseRoots(const std::vector<ValueId> &roots, bool parallel) {
  const Shape &shape = shapeOf(roots.front());
  Index idx = openLoops(shape, parallel);
  nestRoots_.insert(roots.begin(), roots.end());
  emitRootsAt(roots, idx);
  nestRoots_.clear();
  closeLoops(idx.size());
}

void KernelEmitter::emitRootsAt(const std::vector<ValueId> &roots, const Index &at) {
  std::vector<std::string> values;
  for (ValueId r : roots) {
    values.push_back(lowerElement(node(r), r, at));
    w_.cache(fmt::format("{}@{}", r, fmt::join(at, ",")), values.back());
  }
  for (size_t k = 0; k < roots.size(); ++k)
    store(roots[k], viewOf(roots[k]), at, values[k]);
}

// A root's loop nest follows from its class and flags (ops.def). Each
// nest emitter takes only the ops named here; anything else is an error,
// never another op's loop (test_codegen's completeness test lowers every op).
void KernelEmitter::emitRoot(ValueId id, bool parallel) {
  const Node &n = node(id);
  if (opInfo(n.op).is(kScatterForm))
    return emitScatterForm(id, parallel);
  switch (opInfo(n.op).opClass) {
  case OpClass::Constant:
  case OpClass::Elementwise:
  case OpClass::Random:
  case OpClass::View:
  case OpClass::Indexed: return emitElementwiseRoots({id}, parallel);
  case OpClass::Reduction:
    if (n.op == OpKind::ArgMax)
      return emitArgMax(id, parallel);
    if (n.op == OpKind::ReduceSum || n.op == OpKind::ReduceMean || n.op == OpKind::ReduceMax ||
        n.op == OpKind::ReduceMin)
      return emitReduction(id, parallel);
    break;
  case OpClass::Contraction:
    if (n.op == OpKind::MatMul)
      return emitMatMul(id, parallel);
    if (n.op == OpKind::Conv2d)
      return emitConv2d(id, parallel);
    break;
  case OpClass::Window:
    if (n.op == OpKind::MaxPool2d || n.op == OpKind::AvgPool2d)
      return emitPool(id, parallel);
    break;
  case OpClass::Scatter:    // always scatter-form (above)
  case OpClass::Source:     // the caller's buffers
  case OpClass::Collective: // a runtime call between kernels
    break;
  }
  throw std::logic_error(fmt::format("kernel {}: no loop nest for %{} ({})", group_.name, id,
                                     opInfo(n.op).name));
}

// The identities of max and min: infinities, or the integer limits of the
// width and signedness (integerConstant keeps the low bits: INT64_MAX is no
// double, and -1 is the largest unsigned value).
std::string KernelEmitter::reductionIdentity(const Node &n) {
  DType dt = n.type.dtype;
  uint64_t signBit = uint64_t(1) << (dtypeSize(dt) * 8 - 1);
  int64_t lowest = isUnsigned(dt) ? 0 : static_cast<int64_t>(signBit);
  int64_t highest = isUnsigned(dt) ? -1 : static_cast<int64_t>(signBit - 1);
  if (n.op == OpKind::ReduceMax)
    return isFloat(dt) ? w_.constant(-INFINITY, dt) : w_.integerConstant(lowest, dt);
  if (n.op == OpKind::ReduceMin)
    return isFloat(dt) ? w_.constant(INFINITY, dt) : w_.integerConstant(highest, dt);
  return w_.constant(0, dt); // sum and mean
}

void KernelEmitter::emitReduction(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &in = shapeOf(x);
  std::vector<bool> reduced(in.size(), false);
  for (int64_t a : n.attrs.getInts("axes"))
    reduced[a] = true;
  bool keep = n.attrs.getInt("keepdims") != 0;
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);

  // emitRoot sends only reduce_* here.
  std::string init = reductionIdentity(n);
  if (emitLeadingAxesReduction(id, parallel, init))
    return;
  Index out = openLoops(n.type.shape, parallel);
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
  std::vector<int64_t> extents;
  for (size_t d : loops)
    extents.push_back(in[d]);
  Accumulation sum = openAccumulation(extents, init, t);
  for (size_t k = 0; k < loops.size(); ++k)
    full[loops[k]] = sum.ivs[k];
  std::string v = valueAt(x, full);
  OpKind combine = n.op == OpKind::ReduceMax ? OpKind::Maximum
                   : n.op == OpKind::ReduceMin ? OpKind::Minimum
                                               : OpKind::Add;
  std::string next = closeAccumulation(sum, rules_.binary(combine, dt, sum.acc, v));
  if (n.op == OpKind::ReduceMean) {
    double count = 1;
    for (size_t d : loops)
      count *= static_cast<double>(in[d]);
    next = rules_.binary(OpKind::Div, dt, next, w_.constant(count, dt));
  }
  store(id, viewOf(id), out, next);
  closeLoops(out.size());
}

// A reduction over leading axes that keeps long trailing ones (a bias
// gradient: [16,64,1024] summed over axes 0 and 1): one output element at a
// time would read a column, one element per page, so instead the reduced
// rows stream by in order into a row of accumulators on the stack. Each
// output element still combines its inputs in the same order (the reduced
// indices ascending), so the bits are those of the element-wise loops. The
// output is written after every read, as there.
bool KernelEmitter::emitLeadingAxesReduction(ValueId id, bool parallel, const std::string &init) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &in = shapeOf(x);
  std::vector<int64_t> axes = n.attrs.getInts("axes");
  std::sort(axes.begin(), axes.end());
  size_t leading = axes.size();
  bool prefix = leading >= 1 && leading < in.size();
  for (size_t k = 0; prefix && k < leading; ++k)
    prefix = axes[k] == static_cast<int64_t>(k);
  if (!target_.vectorPaths || !prefix || n.type.dtype != DType::F32 || (parallel && n.type.shape[0] != 1))
    return false;
  Shape rows(in.begin(), in.begin() + static_cast<ptrdiff_t>(leading));
  Shape row(in.begin() + static_cast<ptrdiff_t>(leading), in.end());
  int64_t width = 1;
  for (int64_t d : row)
    width *= d;
  if (width < 16 || width > kMaxStackBufferFloats)
    return false;
  bool keep = n.attrs.getInt("keepdims") != 0;
  std::string type = fmt::format("memref<{}xf32>", width);
  std::string acc =
      w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : {}", type));
  auto rowLoops = [&](const std::function<void(const Index &, const std::string &)> &body) {
    Index at = openLoops(row, false);
    body(at, linearize(at, row));
    closeLoops(at.size());
  };
  rowLoops([&](const Index &, const std::string &j) {
    w_.line(fmt::format("memref.store {}, {}[{}] : {}", init, acc, j, type));
  });
  OpKind combine = n.op == OpKind::ReduceMax ? OpKind::Maximum
                   : n.op == OpKind::ReduceMin ? OpKind::Minimum
                                               : OpKind::Add;
  Index r = openLoops(rows, false);
  rowLoops([&](const Index &at, const std::string &j) {
    Index full = r;
    full.insert(full.end(), at.begin(), at.end());
    std::string old = w_.assign(fmt::format("memref.load {}[{}] : {}", acc, j, type));
    w_.line(fmt::format("memref.store {}, {}[{}] : {}",
                        rules_.binary(combine, DType::F32, old, valueAt(x, full)), acc, j, type));
  });
  closeLoops(r.size());
  rowLoops([&](const Index &at, const std::string &j) {
    std::string v = w_.assign(fmt::format("memref.load {}[{}] : {}", acc, j, type));
    if (n.op == OpKind::ReduceMean) {
      double count = 1;
      for (int64_t d : rows)
        count *= static_cast<double>(d);
      v = rules_.binary(OpKind::Div, DType::F32, v, w_.constant(count, DType::F32));
    }
    Index out = keep ? Index(leading, w_.indexConstant(0)) : Index{};
    out.insert(out.end(), at.begin(), at.end());
    store(id, viewOf(id), out, v);
  });
  return true;
}

// Whether `v` replaces the running maximum `best` of a first-maximum scan
// (argmax, max_pool2d's gradient), as the interpreter's: strictly greater
// keeps the first of equal values, and a NaN replaces a number and stays.
std::string KernelEmitter::replacesMaximum(const std::string &v, const std::string &best, DType dt) {
  std::string greater = rules_.binary(OpKind::Gt, dt, v, best);
  if (!isFloat(dt))
    return greater;
  std::string t = scalarType(dt);
  std::string vNan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", v, v, t));
  std::string bestNan = w_.assign(fmt::format("arith.cmpf uno, {}, {} : {}", best, best, t));
  std::string bestNumber =
      w_.assign(fmt::format("arith.xori {}, {} : i1", bestNan, w_.constant(1, DType::Bool)));
  std::string nanWins = w_.assign(fmt::format("arith.andi {}, {} : i1", vNan, bestNumber));
  // (An ordered greater-than is false where `best` is NaN.)
  return w_.assign(fmt::format("arith.ori {}, {} : i1", greater, nanWins));
}

void KernelEmitter::emitArgMax(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &in = shapeOf(x);
  int64_t axis = n.attrs.getInt("axis");
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
  std::string better = replacesMaximum(v, best, dt);
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

namespace {

// The most floats of an im2col buffer (1 MiB, on the stack of the call).
constexpr int64_t kColFloats = int64_t(1) << 18;

// The output rows of one im2col chunk: all of a sample's where its col
// fits kColFloats, else as many as fit.
int64_t convChunkRows(int64_t depth, const Shape &gs) {
  return std::clamp<int64_t>(kColFloats / (depth * gs[3]), 1, gs[2]);
}

} // namespace

// Convolutions as matmuls, one sample at a time: im2col copies a sample's
// receptive fields into col [C*KH*KW, OH*OW] (a stack buffer of the call,
// allocated before the sample loop: an alloca inside the loop takes new
// stack on every iteration, as many buffers as samples), and the tiled
// matmul does the arithmetic:
//   conv2d:             out_n [O, OH*OW] = W [O, C*KH*KW] x col_n
//   conv2d_grad_weight: dW += g_n [O, OH*OW] x col_n^T       (all samples)
//   conv2d_grad_input:  dcol = W^T x g_n, added back into dx_n (col2im)
// out_n, g_n and dx_n are plain row-major slices of the NCHW tensors. A
// sample whose col is over 1 MiB goes a chunk of output rows at a time
// (forEachConvChunk): col then holds the chunk's points, and the products
// read and write the chunk's columns of out_n and g_n. A conv2d whose taps
// are shifts of the input's planes (convReadsTaps) reads col_n from x_n in
// place (ConvTaps). Grouped convolutions do this for each group's
// channels in turn. Used for f32, stored operands, and a col chunk of at
// least one output row within the bound.
bool KernelEmitter::convAsMatmul(const Node &n, ValueId x, ValueId g, ValueId w) const {
  const Shape &ws = shapeOf(w), &gs = shapeOf(g);
  int64_t depth = ws[1] * ws[2] * ws[3], points = gs[2] * gs[3];
  bool taps = convTaps(n);
  bool colFits = depth * gs[3] <= kColFloats || taps;
  // An input gradient through col2im with one output channel a group (a
  // strided depthwise conv's) multiplies by one weight a product, and its
  // dcol buffer costs more than the direct loop saves: 64 channels 56x56
  // to 28x28, batch 8, took 1.35 ms a step through it, 1.09 ms without.
  bool worthIt = taps || n.op != OpKind::Conv2dGradInput || ws[0] / n.attrs.getInt("groups") > 1;
  return target_.vectorPaths && n.type.dtype == DType::F32 &&
         (x == kNoValue || views_.count(x)) && views_.count(g) && views_.count(w) && colFits &&
         worthIt && points > 0 && depth > 0;
}

void KernelEmitter::forEachConvChunk(const Shape &gs, int64_t chunkRows,
                                     const std::string &firstChannel,
                                     const std::function<void(const ConvChunk &)> &body) {
  int64_t whole = gs[2] / chunkRows, rest = gs[2] % chunkRows, width = gs[3];
  if (whole == 1 && rest == 0) {
    body(ConvChunk{"", "", chunkRows, chunkRows * width, chunkRows * width, firstChannel});
    return;
  }
  auto chunkFrom = [&](const std::string &firstRow, int64_t rows) {
    std::string firstPoint = w_.assign(
        fmt::format("arith.muli {}, {} : index", firstRow, w_.indexConstant(width)));
    body(ConvChunk{firstRow, firstPoint, rows, rows * width, chunkRows * width, firstChannel});
  };
  if (whole > 0) {
    std::string chunk = w_.beginFor(w_.indexConstant(0), w_.indexConstant(whole));
    chunkFrom(w_.assign(fmt::format("arith.muli {}, {} : index", chunk,
                                    w_.indexConstant(chunkRows))),
              chunkRows);
    w_.endFor();
  }
  if (rest > 0)
    chunkFrom(w_.indexConstant(whole * chunkRows), rest);
}

std::string KernelEmitter::chunkChannel(const ConvChunk &chunk, const std::string &channel) {
  return chunk.firstChannel.empty()
             ? channel
             : w_.assign(fmt::format("arith.addi {}, {} : index", chunk.firstChannel, channel));
}

std::string KernelEmitter::chunkRow(const ConvChunk &chunk, const std::string &row) {
  return chunk.firstRow.empty()
             ? row
             : w_.assign(fmt::format("arith.addi {}, {} : index", chunk.firstRow, row));
}

ConvMatrix KernelEmitter::chunkColumns(const ConvMatrix &whole, const ConvChunk &chunk) {
  if (chunk.firstPoint.empty())
    return whole;
  ConvMatrix part{"", fmt::format("memref<{}x{}xf32, strided<[{}, 1], offset: ?>>", whole.rows,
                                  chunk.points, whole.cols),
                  whole.rows, chunk.points};
  part.value = w_.assign(fmt::format("memref.subview {}[0, {}] [{}, {}] [1, 1] : {} to {}",
                                     whole.value, chunk.firstPoint, part.rows, part.cols,
                                     whole.type, part.type));
  return part;
}

ConvMatrix KernelEmitter::chunkCol(const std::string &col, int64_t depth, const ConvChunk &chunk) {
  ConvMatrix full{col, fmt::format("memref<{}x{}xf32>", depth, chunk.bufferPoints), depth,
                  chunk.bufferPoints};
  int64_t points = chunk.points;
  if (points == chunk.bufferPoints)
    return full;
  ConvMatrix part{"", fmt::format("memref<{}x{}xf32, strided<[{}, 1]>>", depth, points,
                                  chunk.bufferPoints),
                  depth, points};
  part.value = w_.assign(fmt::format("memref.subview {}[0, 0] [{}, {}] [1, 1] : {} to {}", col,
                                     depth, points, full.type, part.type));
  return part;
}

bool KernelEmitter::convGradInputByTaps(const Node &n) const {
  return n.op == OpKind::Conv2dGradInput && convTaps(n) &&
         convAsMatmul(n, kNoValue, n.operands[0], n.operands[1]);
}

bool KernelEmitter::convTaps(const Node &n) const {
  // conv2d (x, w) -> y; conv2d_grad_input (dy, w) -> dx.
  bool forward = n.op == OpKind::Conv2d;
  if (!forward && n.op != OpKind::Conv2dGradInput)
    return false;
  const Shape &xs = forward ? shapeOf(n.operands[0]) : n.type.shape;
  const Shape &ys = forward ? n.type.shape : shapeOf(n.operands[0]);
  const Shape &ws = shapeOf(n.operands[1]);
  return convReadsTaps(n.attrs.getInts("stride"), xs[2], xs[3], ys[2], ys[3], ws[2], ws[3]);
}

std::string KernelEmitter::matrixView(ValueId id, const std::string &sample, int64_t rows,
                                      int64_t cols, const std::string &group, int64_t groupRows) {
  DType dt = dtypeOf(id);
  int64_t size = static_cast<int64_t>(dtypeSize(dt));
  std::string offset = arenaOffsetValue(byteOffset(id));
  auto shiftBy = [&](const std::string &index, int64_t bytes) {
    std::string shift = w_.assign(
        fmt::format("arith.muli {}, {} : index", index, w_.indexConstant(bytes)));
    offset = w_.assign(fmt::format("arith.addi {}, {} : index", shift, offset));
  };
  if (!sample.empty())
    shiftBy(sample, rows * cols * size);
  if (!group.empty()) {
    shiftBy(group, groupRows * cols * size);
    rows = groupRows;
  }
  return w_.assign(fmt::format("memref.view %arena[{}][] : memref<?xi8> to memref<{}x{}x{}>",
                               offset, rows, cols, memoryElementType(dt)));
}

ConvMatrix KernelEmitter::groupMatrix(ValueId id, const std::string &sample, int64_t rows,
                                      int64_t cols, const std::string &group, int64_t groupRows) {
  int64_t viewRows = group.empty() ? rows : groupRows;
  return ConvMatrix{matrixView(id, sample, rows, cols, group, groupRows),
                    fmt::format("memref<{}x{}xf32>", viewRows, cols), viewRows, cols};
}

void KernelEmitter::forEachConvGroup(int64_t groups,
                                     const std::function<void(const std::string &)> &body) {
  if (groups == 1) {
    body("");
    return;
  }
  body(w_.beginFor(w_.indexConstant(0), w_.indexConstant(groups)));
  w_.endFor();
}

std::string KernelEmitter::groupFirst(const std::string &group, int64_t groupRows) {
  return group.empty() ? ""
                       : w_.assign(fmt::format("arith.muli {}, {} : index", group,
                                               w_.indexConstant(groupRows)));
}

// Visits col's elements: f(row, point, y, x, valid) with the input position
// of tap `row` at output point `point`.
void KernelEmitter::forEachColElement(
    const Node &n, const Shape &xs, const Shape &ws, const Shape &gs, const ConvChunk &chunk,
    const std::function<void(const std::string &, const std::string &, const std::string &,
                             const std::string &, const std::string &, const std::string &)> &f) {
  auto stride = n.attrs.getInts("stride"), padding = n.attrs.getInts("padding"),
       dilation = n.attrs.getInts("dilation");
  Index tap = openLoops({ws[1], ws[2], ws[3]}, false);
  std::string row = linearize(tap, {ws[1], ws[2], ws[3]});
  Index at = openLoops({chunk.rows, gs[3]}, false);
  std::string y = windowCoordinate(chunkRow(chunk, at[0]), tap[1], stride[0], padding[0],
                                   dilation[0]);
  std::string xw = windowCoordinate(at[1], tap[2], stride[1], padding[1], dilation[1]);
  std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]),
                                            inBounds(xw, xs[3])));
  f(row, linearize(at, {chunk.rows, gs[3]}), chunkChannel(chunk, tap[0]), y, xw, valid);
  closeLoops(at.size());
  closeLoops(tap.size());
}

std::string KernelEmitter::colBuffer(const Shape &ws, const Shape &gs) {
  int64_t depth = ws[1] * ws[2] * ws[3];
  return w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : memref<{}x{}xf32>",
                               depth, convChunkRows(depth, gs) * gs[3]));
}

void KernelEmitter::im2col(const Node &n, ValueId x, const std::string &sample, const Shape &ws,
                           const Shape &gs, const ConvChunk &chunk, const ConvMatrix &col) {
  const Shape &xs = shapeOf(x);
  if (n.attrs.getInts("stride")[1] <= 2) {
    im2colRows(n, x, sample, ws, gs, chunk, col);
    return;
  }
  forEachColElement(n, xs, ws, gs, chunk,
                    [&](const std::string &row, const std::string &point, const std::string &c,
                        const std::string &y, const std::string &xw, const std::string &valid) {
                      std::string v = load(x, {sample, c, clampIndex(y, xs[2]), clampIndex(xw, xs[3])});
                      std::string masked = w_.assign(fmt::format(
                          "arith.select {}, {}, {} : f32", valid, v, w_.constant(0, DType::F32)));
                      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", masked, col.value,
                                          row, point, col.type));
                    });
}

// im2col with a column stride of 1 or 2: a tap's output row reads
// consecutive input columns (every other one), so it is copied 16 columns
// at a time with a masked load (two and a shuffle; columns in the padding,
// and a row in it, read as 0) and a masked store, instead of element by
// element with a select each.
void KernelEmitter::im2colRows(const Node &n, ValueId x, const std::string &sample, const Shape &ws,
                               const Shape &gs, const ConvChunk &chunk, const ConvMatrix &col) {
  const Shape &xs = shapeOf(x);
  auto stride = n.attrs.getInts("stride"), padding = n.attrs.getInts("padding"),
       dilation = n.attrs.getInts("dilation");
  const char *vec = "vector<16xf32>";
  auto i32Vector = [&](const std::string &index) {
    std::string i32 = w_.assign(fmt::format("arith.index_cast {} : index to i32", index));
    return w_.assign(fmt::format("vector.broadcast {} : i32 to vector<16xi32>", i32));
  };
  std::string zero = w_.assign(fmt::format("arith.constant dense<0.0> : {}", vec));
  std::string lanes = w_.assign(
      "arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]> : vector<16xi32>");
  std::string width = w_.assign(fmt::format("arith.constant dense<{}> : vector<16xi32>", xs[3]));
  Index tap = openLoops({ws[1], ws[2], ws[3]}, false);
  std::string row = linearize(tap, {ws[1], ws[2], ws[3]});
  // Input column of output column 0: kx * dilation - padding.
  std::string firstColumn = windowCoordinate(w_.indexConstant(0), tap[2], stride[1], padding[1],
                                             dilation[1]);
  Index outRow = openLoops({chunk.rows}, false);
  std::string y = windowCoordinate(chunkRow(chunk, outRow[0]), tap[1], stride[0], padding[0],
                                   dilation[0]);
  std::string rowInside =
      w_.assign(fmt::format("vector.broadcast {} : i1 to vector<16xi1>", inBounds(y, xs[2])));
  std::string yc = clampIndex(y, xs[2]);
  std::string rowStart = w_.assign(fmt::format("arith.muli {}, {} : index", outRow[0], w_.indexConstant(gs[3])));
  std::string piece = w_.beginFor(w_.indexConstant(0), w_.indexConstant((gs[3] + 15) / 16));
  std::string first = w_.assign(fmt::format("arith.muli {}, {} : index", piece, w_.indexConstant(16)));
  std::string left = w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(gs[3]), first));
  std::string lanesLeft = w_.assign(fmt::format("vector.create_mask {} : vector<16xi1>", left));
  // Input columns from firstColumn + first * stride on, 16 at a time; with
  // a stride of 2, two loads and every other lane of the 32 (a shuffle).
  std::string channel = chunkChannel(chunk, tap[0]);
  std::vector<std::string> parts;
  for (int64_t part = 0; part < stride[1]; ++part) {
    std::string from = w_.assign(fmt::format(
        "arith.addi {}, {} : index", firstColumn,
        w_.assign(fmt::format("arith.muli {}, {} : index", first, w_.indexConstant(stride[1])))));
    if (part > 0)
      from = w_.assign(fmt::format("arith.addi {}, {} : index", from, w_.indexConstant(16 * part)));
    std::string columns = w_.assign(fmt::format("arith.addi {}, {} : vector<16xi32>", i32Vector(from), lanes));
    // One unsigned comparison checks 0 <= column < width.
    std::string mask = w_.assign(fmt::format(
        "arith.andi {}, {} : vector<16xi1>",
        w_.assign(fmt::format("arith.cmpi ult, {}, {} : vector<16xi32>", columns, width)), rowInside));
    if (stride[1] == 1)
      mask = w_.assign(fmt::format("arith.andi {}, {} : vector<16xi1>", mask, lanesLeft));
    parts.push_back(w_.assign(fmt::format(
        "vector.maskedload {}[{}, {}, {}, {}], {}, {} : {}, vector<16xi1>, {} into {}", viewOf(x), sample,
        channel, yc, from, mask, zero, memrefType(node(x).type), vec, vec)));
  }
  std::string v = stride[1] == 1
                      ? parts[0]
                      : w_.assign(fmt::format("vector.shuffle {}, {} [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, "
                                              "20, 22, 24, 26, 28, 30] : {}, {}",
                                              parts[0], parts[1], vec, vec));
  std::string point = w_.assign(fmt::format("arith.addi {}, {} : index", rowStart, first));
  w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", col.value, row,
                      point, lanesLeft, v, col.type, vec));
  w_.endFor();
  closeLoops(outRow.size());
  closeLoops(tap.size());
}

namespace {
// Below this many samples a conv's threads split its output channels too
// (convChannelUnits): split by samples alone, threads past the batch size
// would idle (one image: all but one).
constexpr int64_t kConvUnitsBelowSamples = 4;
} // namespace

int64_t KernelEmitter::convChannelUnits() const {
  const KernelPlan &plan = group_.kernel;
  if (plan.nests.empty() || !plan.rowParallel)
    return 0;
  // Later nests run only as the conv's epilogue or pool (emit() stops
  // after it).
  const LoopNest &nest = plan.nests.front();
  if (nest.kind != NestKind::Contraction ||
      (plan.nests.size() > 1 && nest.epilogue.empty() && !nest.samplePool))
    return 0;
  ValueId conv = nest.roots.front();
  const Node &n = node(conv);
  if (n.op != OpKind::Conv2d || n.attrs.getInt("groups") != 1 ||
      !convAsMatmul(n, n.operands[0], conv, n.operands[1]))
    return 0;
  const Shape &out = n.type.shape;
  int64_t blocks = (out[1] + registerTile().rows - 1) / registerTile().rows;
  if (out[0] >= kConvUnitsBelowSamples || blocks < 2)
    return 0;
  // Every root is per (sample, channel): the conv, its epilogue, its pool.
  for (ValueId r : plan.roots) {
    const Shape &shape = shapeOf(r);
    if (shape.size() != 4 || shape[0] != out[0] || shape[1] != out[1])
      return 0;
  }
  return out[0] * blocks;
}

void KernelEmitter::beginConvUnits(int64_t units) {
  convUnits_ = true;
  int64_t blocks = units / shapeOf(group_.kernel.nests.front().roots.front())[0];
  convSamplesFirst_ = w_.assign(
      fmt::format("arith.divui {}, {} : index", begin_, w_.indexConstant(blocks)));
  convSamplesLast_ = w_.assign(fmt::format(
      "arith.divui {}, {} : index",
      w_.assign(fmt::format("arith.addi {}, {} : index", end_, w_.indexConstant(blocks - 1))),
      w_.indexConstant(blocks)));
}

// Units u = sample * blocks + block, blocks of the register tile's rows:
// the call's units [begin, end) are its samples [first, last) and, in
// each, output channels [max(begin - sample * blocks, 0), min(end - sample
// * blocks, blocks)) blocks (the last block partial). The pool never makes
// an empty call, so every sample of a call has a channel.
std::pair<std::string, std::string> KernelEmitter::convUnitChannels(const std::string &sample) {
  const Shape &out = shapeOf(group_.kernel.nests.front().roots.front());
  int64_t rows = registerTile().rows, blocks = (out[1] + rows - 1) / rows;
  std::string first = w_.assign(
      fmt::format("arith.muli {}, {} : index", sample, w_.indexConstant(blocks)));
  auto unitsFrom = [&](const std::string &unit) {
    return w_.assign(fmt::format("arith.subi {}, {} : index", unit, first));
  };
  std::string lo = w_.assign(fmt::format("arith.maxsi {}, {} : index", unitsFrom(begin_),
                                         w_.indexConstant(0)));
  std::string hi = w_.assign(fmt::format("arith.minsi {}, {} : index", unitsFrom(end_),
                                         w_.indexConstant(blocks)));
  auto channel = [&](const std::string &block) {
    std::string c = w_.assign(
        fmt::format("arith.muli {}, {} : index", block, w_.indexConstant(rows)));
    return w_.assign(fmt::format("arith.minsi {}, {} : index", c, w_.indexConstant(out[1])));
  };
  return {channel(lo), channel(hi)};
}

void KernelEmitter::emitConvChannelPerturbation() {
  forEachPerturbedOutput([&](ValueId id) {
    std::string sample = w_.beginFor(convSamplesFirst_, convSamplesLast_);
    auto [lo, hi] = convUnitChannels(sample);
    Index idx{sample, w_.beginFor(lo, hi)};
    Index rest = openLoops(shapeOf(id), false, 2);
    idx.insert(idx.end(), rest.begin(), rest.end());
    perturbElement(id, idx);
    closeLoops(rest.size());
    w_.endFor();
    w_.endFor();
  });
}

bool KernelEmitter::emitConvAsMatmul(ValueId id, bool parallel) {
  const Node &n = node(id);
  int64_t groups = n.attrs.getInt("groups");
  if (n.op == OpKind::Conv2d) {
    ValueId x = n.operands[0], w = n.operands[1];
    if (!convAsMatmul(n, x, id, w))
      return false;
    const Shape &xs = shapeOf(x), &ws = shapeOf(w), &os = n.type.shape;
    int64_t depth = ws[1] * ws[2] * ws[3], points = os[2] * os[3], outGroup = os[1] / groups;
    bool taps = convTaps(n);
    std::string col = taps ? "" : colBuffer(ws, os);
    std::string panel = taps ? "" : panelBuffer(false, outGroup, depth);
    // The call's samples, and with conv units its channels of each.
    Index sample;
    std::string rowBegin, rowEnd;
    if (convUnits_) {
      sample.push_back(w_.beginFor(convSamplesFirst_, convSamplesLast_));
      std::tie(rowBegin, rowEnd) = convUnitChannels(sample[0]);
    } else {
      sample = openLoops({os[0]}, parallel);
    }
    tileSample_ = sample[0];
    forEachConvGroup(groups, [&](const std::string &group) {
      std::string weights = matrixView(w, "", ws[0], depth, group, outGroup);
      ConvMatrix out = groupMatrix(id, sample[0], os[1], points, group, outGroup);
      // The epilogue's rows are the sample's channels.
      tileRowBase_ = groupFirst(group, outGroup);
      if (taps) {
        auto padding = n.attrs.getInts("padding"), dilation = n.attrs.getInts("dilation");
        TiledMatMul mm{weights, "", out.value, outGroup, depth, points, rowBegin, rowEnd};
        mm.taps = ConvTaps{matrixView(x, sample[0], xs[1], xs[2] * xs[3], group, ws[1]),
                           ws[1], xs[2], xs[3], os[2], ws[2], ws[3], padding[0], padding[1],
                           dilation[0], dilation[1]};
        mm.epilogue = tileEpilogue_;
        emitTiledMatMul(w_, mm);
      } else {
        forEachConvChunk(os, convChunkRows(depth, os), groupFirst(group, ws[1]),
                         [&](const ConvChunk &chunk) {
          ConvMatrix b = chunkCol(col, depth, chunk), c = chunkColumns(out, chunk);
          im2col(n, x, sample[0], ws, os, chunk, b);
          TiledMatMul mm{weights, b.value, c.value, outGroup, depth, c.cols, rowBegin, rowEnd};
          mm.bType = b.type;
          mm.cType = c.type;
          mm.bPanel = panel;
          // The epilogue's columns are the sample's points.
          tileColumnBase_ = chunk.firstPoint;
          mm.epilogue = tileEpilogue_;
          emitTiledMatMul(w_, mm);
          tileColumnBase_.clear();
        });
      }
      tileRowBase_.clear();
    });
    if (afterSample_) {
      poolChannelsBegin_ = rowBegin;
      poolChannelsEnd_ = rowEnd;
      afterSample_(sample[0]);
      poolChannelsBegin_.clear();
      poolChannelsEnd_.clear();
    }
    tileSample_.clear();
    if (convUnits_)
      w_.endFor();
    else
      closeLoops(sample.size());
    return true;
  }
  if (n.op == OpKind::Conv2dGradWeight) { // operands (x, g); rows of dW split among calls
    ValueId x = n.operands[0], g = n.operands[1];
    if (!convAsMatmul(n, x, g, id))
      return false;
    const Shape &ws = n.type.shape, &gs = shapeOf(g);
    int64_t depth = ws[1] * ws[2] * ws[3], points = gs[2] * gs[3], outGroup = ws[0] / groups;
    std::string col = colBuffer(ws, gs);
    Index sample = openLoops({gs[0]}, false);
    forEachConvGroup(groups, [&](const std::string &group) {
      // The call's rows of dW within the group's: [rowBegin, rowEnd), maybe
      // none (then the group's im2col is skipped too).
      std::string rowBegin = parallel ? begin_ : "", rowEnd = parallel ? end_ : "";
      if (parallel && !group.empty()) {
        std::string first = groupFirst(group, outGroup);
        auto within = [&](const std::string &row, const std::string &low) {
          std::string shifted = w_.assign(fmt::format("arith.subi {}, {} : index", row, first));
          std::string bounded = w_.assign(fmt::format("arith.minsi {}, {} : index", shifted,
                                                      w_.indexConstant(outGroup)));
          return w_.assign(fmt::format("arith.maxsi {}, {} : index", bounded, low));
        };
        rowBegin = within(begin_, w_.indexConstant(0));
        rowEnd = within(end_, rowBegin);
        w_.line(fmt::format("scf.if {} {{", w_.assign(fmt::format(
                                                "arith.cmpi slt, {}, {} : index", rowBegin, rowEnd))));
        w_.indent();
        w_.pushScope();
      }
      std::string grad = matrixView(id, "", ws[0], depth, group, outGroup);
      ConvMatrix whole = groupMatrix(g, sample[0], gs[1], points, group, outGroup);
      forEachConvChunk(gs, convChunkRows(depth, gs), groupFirst(group, ws[1]),
                       [&](const ConvChunk &chunk) {
        ConvMatrix b = chunkCol(col, depth, chunk), a = chunkColumns(whole, chunk);
        im2col(n, x, sample[0], ws, gs, chunk, b);
        TiledMatMul mm{a.value, b.value, grad, outGroup, a.cols, depth, rowBegin, rowEnd};
        mm.aType = a.type;
        mm.bType = b.type;
        mm.bTransposed = true;
        mm.accumulate = true;
        emitTiledMatMul(w_, mm);
      });
      if (parallel && !group.empty()) {
        w_.popScope();
        w_.dedent();
        w_.line("}");
      }
    });
    closeLoops(sample.size());
    return true;
  }
  if (n.op == OpKind::Conv2dGradInput) { // operands (g, w); samples split among calls
    ValueId g = n.operands[0], w = n.operands[1];
    if (!convAsMatmul(n, kNoValue, g, w))
      return false;
    const Shape &ws = shapeOf(w), &gs = shapeOf(g), &xs = n.type.shape;
    int64_t depth = ws[1] * ws[2] * ws[3], points = gs[2] * gs[3], outGroup = ws[0] / groups;
    bool taps = convTaps(n);
    std::string col = taps ? "" : colBuffer(ws, gs);
    std::string panel = taps ? "" : panelBuffer(false, depth, outGroup);
    Index sample = openLoops({gs[0]}, parallel);
    forEachConvGroup(groups, [&](const std::string &group) {
      std::string weights = matrixView(w, "", ws[0], depth, group, outGroup);
      if (taps) {
        // dx = dy convolved with the flipped kernel: a stride-1 conv of the
        // same width, whose padding is the rest of the kernel's reach.
        auto padding = n.attrs.getInts("padding"), dilation = n.attrs.getInts("dilation");
        ConvMatrix dx = groupMatrix(id, sample[0], xs[1], xs[2] * xs[3], group, ws[1]);
        TiledMatMul mm{weights, "", dx.value, ws[1], outGroup * ws[2] * ws[3], dx.cols, "", ""};
        mm.aType = fmt::format("memref<{}x{}xf32>", outGroup, depth);
        mm.taps = ConvTaps{matrixView(g, sample[0], gs[1], points, group, outGroup), outGroup,
                           gs[2], gs[3], xs[2], ws[2], ws[3],
                           dilation[0] * (ws[2] - 1) - padding[0],
                           dilation[1] * (ws[3] - 1) - padding[1], dilation[0], dilation[1], true};
        emitTiledMatMul(w_, mm);
        return;
      }
      ConvMatrix whole = groupMatrix(g, sample[0], gs[1], points, group, outGroup);
      forEachConvChunk(gs, convChunkRows(depth, gs), groupFirst(group, ws[1]),
                       [&](const ConvChunk &chunk) {
        ConvMatrix dcol = chunkCol(col, depth, chunk), b = chunkColumns(whole, chunk);
        TiledMatMul mm{weights, b.value, dcol.value, depth, outGroup, b.cols, "", ""};
        mm.bType = b.type;
        mm.cType = dcol.type;
        mm.aTransposed = true;
        mm.bPanel = panel;
        emitTiledMatMul(w_, mm);
        forEachColElement(n, xs, ws, gs, chunk,
                          [&](const std::string &row, const std::string &point, const std::string &c,
                              const std::string &y, const std::string &xw, const std::string &valid) {
                            w_.line(fmt::format("scf.if {} {{", valid));
                            w_.indent();
                            w_.pushScope();
                            std::string v = w_.assign(fmt::format("memref.load {}[{}, {}] : {}",
                                                                  dcol.value, row, point, dcol.type));
                            accumulate(id, {sample[0], c, y, xw}, v);
                            w_.popScope();
                            w_.dedent();
                            w_.line("}");
                          });
      });
    });
    closeLoops(sample.size());
    return true;
  }
  // Other ops have no matmul form.
  return false;
}

void KernelEmitter::emitConv2d(ValueId id, bool parallel) {
  if (emitConvAsMatmul(id, parallel))
    return;
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
  Accumulation sum = openAccumulation({cg, ws[2], ws[3]}, w_.constant(0, dt), t);
  const std::vector<std::string> &ivs = sum.ivs;
  std::string y = windowCoordinate(o[2], ivs[1], stride[0], padding[0], dilation[0]);
  std::string xw = windowCoordinate(o[3], ivs[2], stride[1], padding[1], dilation[1]);
  std::string valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
  std::string channel = w_.assign(fmt::format("arith.addi {}, {} : index", firstChannel, ivs[0]));
  std::string xv = valueAt(x, {o[0], channel, clampIndex(y, xs[2]), clampIndex(xw, xs[3])});
  std::string wv = valueAt(wt, {o[1], ivs[0], ivs[1], ivs[2]});
  std::string product = rules_.binary(OpKind::Mul, dt, xv, wv);
  std::string masked = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid, product, w_.constant(0, dt), t));
  std::string next = closeAccumulation(sum, rules_.binary(OpKind::Add, dt, sum.acc, masked));
  store(id, viewOf(id), o, next);
  closeLoops(o.size());
}

// Without padding, windows that end inside the input (a 2x2 pool of an
// even or odd size) need no bounds checks.
static bool windowsInside(const Node &pool, const Shape &in) {
  auto kernel = pool.attrs.getInts("kernel"), stride = pool.attrs.getInts("stride"),
       padding = pool.attrs.getInts("padding");
  const Shape &out = pool.type.shape;
  return padding[0] == 0 && padding[1] == 0 && (out[2] - 1) * stride[0] + kernel[0] <= in[2] &&
         (out[3] - 1) * stride[1] + kernel[1] <= in[3];
}

// An f32 pool whose windows stay inside a stored input (no padding, the
// last window ending within the input: a 2x2 pool of an even size), on the
// CPU: 16 output columns at a time, each tap one masked vector.gather of an
// input row (columns `stride` apart). The scalar loops' llvm.maximum calls
// stay scalar after LLVM unrolls a short row; this runs at memory speed.
// The taps combine in the scalar loops' order, from the same initial value,
// so the bits are those of the scalar loops.
bool KernelEmitter::emitVectorPool(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &xs = shapeOf(x), &os = n.type.shape;
  if (!target_.vectorPaths || !windowsInside(n, xs) || n.type.dtype != DType::F32 || inGroup_.count(x) ||
      !views_.count(x))
    return false;
  auto kernel = n.attrs.getInts("kernel"), stride = n.attrs.getInts("stride");
  bool isMax = n.op == OpKind::MaxPool2d;
  const char *vec = "vector<16xf32>";
  std::string xView = viewOf(x), xType = memrefType(node(x).type);
  std::string outView = viewOf(id), outType = memrefType(n.type);
  Index o = openLoops({os[0], os[1], os[2]}, parallel);
  int64_t chunks = (os[3] + 15) / 16;
  std::string chunk = w_.beginFor(w_.indexConstant(0), w_.indexConstant(chunks));
  std::string first = w_.assign(fmt::format("arith.muli {}, {} : index", chunk, w_.indexConstant(16)));
  std::string left = w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(os[3]), first));
  std::string mask = w_.assign(fmt::format("vector.create_mask {} : vector<16xi1>", left));
  std::string lanes = w_.assign(
      "arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]> : vector<16xi32>");
  // Column of tap 0 in each lane: (first + lane) * stride.
  std::string firstI32 = w_.assign(fmt::format("arith.index_cast {} : index to i32", first));
  std::string columns = w_.assign(fmt::format(
      "arith.muli {}, {} : vector<16xi32>",
      w_.assign(fmt::format("arith.addi {}, {} : vector<16xi32>", lanes,
                            w_.assign(fmt::format("vector.broadcast {} : i32 to vector<16xi32>", firstI32)))),
      w_.assign(fmt::format("arith.constant dense<{}> : vector<16xi32>", stride[1]))));
  std::string zero = w_.assign(fmt::format("arith.constant dense<0.0> : {}", vec));
  std::string acc = w_.assign(fmt::format("vector.broadcast {} : f32 to {}",
                                          w_.constant(isMax ? -INFINITY : 0, DType::F32), vec));
  for (int64_t ky = 0; ky < kernel[0]; ++ky) {
    std::string y = windowCoordinate(o[2], w_.indexConstant(ky), stride[0], 0, 1);
    for (int64_t kx = 0; kx < kernel[1]; ++kx) {
      std::string at = w_.assign(fmt::format("arith.addi {}, {} : vector<16xi32>", columns,
                                             w_.assign(fmt::format("arith.constant dense<{}> : vector<16xi32>", kx))));
      std::string v = w_.assign(fmt::format(
          "vector.gather {}[{}, {}, {}, {}][{}], {}, {} : {}, vector<16xi32>, vector<16xi1>, {} into {}",
          xView, o[0], o[1], y, w_.indexConstant(0), at, mask, zero, xType, vec, vec));
      acc = w_.assign(fmt::format("{} {}, {} : {}", isMax ? "arith.maximumf" : "arith.addf", acc, v, vec));
    }
  }
  if (!isMax)
    acc = w_.assign(fmt::format(
        "arith.divf {}, {} : {}", acc,
        w_.assign(fmt::format("vector.broadcast {} : f32 to {}",
                              w_.constant(static_cast<double>(kernel[0] * kernel[1]), DType::F32), vec)),
        vec));
  w_.line(fmt::format("vector.maskedstore {}[{}, {}, {}, {}], {}, {} : {}, vector<16xi1>, {}", outView, o[0],
                      o[1], o[2], first, mask, acc, outType, vec));
  w_.endFor();
  closeLoops(o.size());
  return true;
}

// A max_pool2d after a conv2d in its kernel (LoopNest::samplePool), for
// one sample, from the sample's result in cache: 16 output columns at a
// time. With a column stride of 1 or 2, each tap reads 16 or 32 consecutive
// input columns with masked loads (and keeps every other one, a shuffle);
// else a masked vector.gather (which LLVM scalarizes on Zen 4). Taps
// outside the input (padding, a ragged edge) are masked off and read as
// -inf, which leaves the maximum as the pool alone has it: the maximum is
// exact in any order, so the bits are the unfused pool's.
void KernelEmitter::emitSamplePool(ValueId id, const std::string &sample, const std::string &input,
                                   const std::string &inputType) {
  const Node &n = node(id);
  const Shape &xs = shapeOf(n.operands[0]), &os = n.type.shape;
  auto kernel = n.attrs.getInts("kernel"), stride = n.attrs.getInts("stride"),
       padding = n.attrs.getInts("padding");
  bool inside = windowsInside(n, xs);
  bool contiguous = stride[1] <= 2;
  const char *vec = "vector<16xf32>";
  auto i32Splat = [&](int64_t v) {
    return w_.assign(fmt::format("arith.constant dense<{}> : vector<16xi32>", v));
  };
  auto i32Vector = [&](const std::string &index) {
    std::string i32 = w_.assign(fmt::format("arith.index_cast {} : index to i32", index));
    return w_.assign(fmt::format("vector.broadcast {} : i32 to vector<16xi32>", i32));
  };
  auto addIndex = [&](const std::string &a, int64_t b) {
    return w_.assign(fmt::format("arith.addi {}, {} : index", a, w_.indexConstant(b)));
  };
  // channel, output row: with conv units, the call's channels only.
  bool channelRange = !poolChannelsBegin_.empty();
  Index o;
  if (channelRange) {
    o.push_back(w_.beginFor(poolChannelsBegin_, poolChannelsEnd_));
    o.push_back(openLoops({os[2]}, false)[0]);
  } else {
    o = openLoops({os[1], os[2]}, false);
  }
  std::string chunk = w_.beginFor(w_.indexConstant(0), w_.indexConstant((os[3] + 15) / 16));
  std::string first = w_.assign(fmt::format("arith.muli {}, {} : index", chunk, w_.indexConstant(16)));
  std::string left = w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(os[3]), first));
  std::string lanesLeft = w_.assign(fmt::format("vector.create_mask {} : vector<16xi1>", left));
  std::string lanes = w_.assign(
      "arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]> : vector<16xi32>");
  // Input column of tap 0 for output column `first`: first * stride - padding.
  std::string firstColumn = w_.assign(fmt::format(
      "arith.subi {}, {} : index",
      w_.assign(fmt::format("arith.muli {}, {} : index", first, w_.indexConstant(stride[1]))),
      w_.indexConstant(padding[1])));
  // Gathers: the column of tap 0 in each lane, firstColumn + lane * stride.
  std::string columns = contiguous ? "" : w_.assign(fmt::format(
      "arith.addi {}, {} : vector<16xi32>", i32Vector(firstColumn),
      w_.assign(fmt::format("arith.muli {}, {} : vector<16xi32>", lanes, i32Splat(stride[1])))));
  std::string lowest = w_.assign(fmt::format("vector.broadcast {} : f32 to {}",
                                             w_.constant(-INFINITY, DType::F32), vec));
  std::string acc = lowest;
  for (int64_t ky = 0; ky < kernel[0]; ++ky) {
    std::string y = windowCoordinate(o[1], w_.indexConstant(ky), stride[0], padding[0], 1);
    std::string rowInside;
    if (!inside) {
      rowInside = w_.assign(fmt::format("vector.broadcast {} : i1 to vector<16xi1>", inBounds(y, xs[2])));
      y = clampIndex(y, xs[2]);
    }
    std::string rowStart = w_.assign(fmt::format("arith.muli {}, {} : index", y, w_.indexConstant(xs[3])));
    // Lanes whose column `at` is inside the input (one unsigned comparison
    // checks 0 <= column < width) and the row too.
    auto insideMask = [&](const std::string &at, std::string mask) {
      std::string columnInside =
          w_.assign(fmt::format("arith.cmpi ult, {}, {} : vector<16xi32>", at, i32Splat(xs[3])));
      mask = mask.empty() ? columnInside
                          : w_.assign(fmt::format("arith.andi {}, {} : vector<16xi1>", mask, columnInside));
      return rowInside.empty() ? mask
                               : w_.assign(fmt::format("arith.andi {}, {} : vector<16xi1>", mask, rowInside));
    };
    for (int64_t kx = 0; kx < kernel[1]; ++kx) {
      std::string v;
      if (contiguous) {
        // Input columns firstColumn + kx + [0, 16 * stride): one load per 16.
        std::vector<std::string> parts;
        for (int64_t part = 0; part < stride[1]; ++part) {
          std::string from = addIndex(firstColumn, kx + 16 * part);
          std::string at = w_.assign(fmt::format("arith.addi {}, {} : vector<16xi32>", i32Vector(from), lanes));
          std::string start = w_.assign(fmt::format("arith.addi {}, {} : index", rowStart, from));
          parts.push_back(w_.assign(fmt::format(
              "vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}", input, o[0], start,
              insideMask(at, ""), lowest, inputType, vec, vec)));
        }
        v = parts[0];
        if (stride[1] == 2)
          v = w_.assign(fmt::format("vector.shuffle {}, {} [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, "
                                    "28, 30] : {}, {}",
                                    parts[0], parts[1], vec, vec));
      } else {
        std::string at = w_.assign(fmt::format("arith.addi {}, {} : vector<16xi32>", columns, i32Splat(kx)));
        v = w_.assign(fmt::format(
            "vector.gather {}[{}, {}][{}], {}, {} : {}, vector<16xi32>, vector<16xi1>, {} into {}", input, o[0],
            rowStart, at, insideMask(at, lanesLeft), lowest, inputType, vec, vec));
      }
      acc = w_.assign(fmt::format("arith.maximumf {}, {} : {}", acc, v, vec));
    }
  }
  w_.line(fmt::format("vector.maskedstore {}[{}, {}, {}, {}], {}, {} : {}, vector<16xi1>, {}", viewOf(id), sample,
                      o[0], o[1], first, lanesLeft, acc, memrefType(n.type), vec));
  w_.endFor();
  closeLoops(channelRange ? 1 : o.size());
  if (channelRange)
    w_.endFor();
}

void KernelEmitter::emitPool(ValueId id, bool parallel) {
  if (emitVectorPool(id, parallel))
    return;
  const Node &n = node(id);
  ValueId x = n.operands[0];
  const Shape &xs = shapeOf(x);
  auto kernel = n.attrs.getInts("kernel"), stride = n.attrs.getInts("stride"),
       padding = n.attrs.getInts("padding");
  bool isMax = n.op == OpKind::MaxPool2d;
  DType dt = n.type.dtype;
  std::string t = scalarType(dt);
  Index o = openLoops(n.type.shape, parallel);
  Accumulation window = openAccumulation({kernel[0], kernel[1]}, w_.constant(isMax ? -INFINITY : 0, dt), t);
  const std::vector<std::string> &ivs = window.ivs;
  const std::string &acc = window.acc;
  std::string y = windowCoordinate(o[2], ivs[0], stride[0], padding[0], 1);
  std::string xw = windowCoordinate(o[3], ivs[1], stride[1], padding[1], 1);
  bool inside = windowsInside(n, xs);
  std::string v, valid;
  if (inside) {
    v = valueAt(x, {o[0], o[1], y, xw});
  } else {
    valid = w_.assign(fmt::format("arith.andi {}, {} : i1", inBounds(y, xs[2]), inBounds(xw, xs[3])));
    v = valueAt(x, {o[0], o[1], clampIndex(y, xs[2]), clampIndex(xw, xs[3])});
  }
  std::string next;
  if (isMax) {
    next = rules_.binary(OpKind::Maximum, dt, acc, v);
    if (!inside)
      next = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid, next, acc, t));
  } else {
    if (!inside)
      v = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid, v, w_.constant(0, dt), t));
    next = rules_.binary(OpKind::Add, dt, acc, v);
  }
  next = closeAccumulation(window, next);
  if (!isMax)
    next = rules_.binary(OpKind::Div, dt, next, avgPoolDivisor(n, o, xs, dt));
  store(id, viewOf(id), o, next);
  closeLoops(o.size());
}

std::string KernelEmitter::avgPoolDivisor(const Node &n, const Index &out, const Shape &xs, DType dt) {
  auto kernel = n.attrs.getInts("kernel"), stride = n.attrs.getInts("stride"),
       padding = n.attrs.getInts("padding");
  if (n.attrs.getInt("count_include_pad") != 0)
    return w_.constant(static_cast<double>(kernel[0] * kernel[1]), dt);
  // In-bounds taps per axis: min(start + k, size) - max(start, 0).
  auto span = [&](const std::string &o, int64_t k, int64_t s, int64_t p, int64_t size) {
    std::string start = windowCoordinate(o, w_.indexConstant(0), s, p, 1);
    std::string end = w_.assign(fmt::format("arith.addi {}, {} : index", start, w_.indexConstant(k)));
    std::string hi = w_.assign(fmt::format("arith.minsi {}, {} : index", end, w_.indexConstant(size)));
    std::string lo = w_.assign(fmt::format("arith.maxsi {}, {} : index", start, w_.indexConstant(0)));
    return w_.assign(fmt::format("arith.subi {}, {} : index", hi, lo));
  };
  // Both spans inside one call, as before: the SSA names they get depend on
  // the compiler's argument order, and the generated MLIR must not change.
  std::string count = w_.assign(fmt::format("arith.muli {}, {} : index",
                                            span(out[2], kernel[0], stride[0], padding[0], xs[2]),
                                            span(out[3], kernel[1], stride[1], padding[1], xs[3])));
  std::string asInt = w_.assign(fmt::format("arith.index_cast {} : index to i64", count));
  return rules_.convert(asInt, DType::I64, dt);
}

void KernelEmitter::zeroChunk(ValueId id, bool parallel) {
  Index idx = openLoops(shapeOf(id), parallel);
  store(id, viewOf(id), idx, w_.constant(0, dtypeOf(id)));
  closeLoops(idx.size());
}

void KernelEmitter::accumulate(ValueId id, const Index &idx, const std::string &v) {
  if (target_.atomicAccumulate) {
    // Threads of a scatter-form nest add into shared elements.
    DType dt = dtypeOf(id);
    if (dt == DType::Bool)
      throw std::logic_error("accumulate: no atomic add of bools");
    w_.assign(fmt::format("memref.atomic_rmw {} {}, {}[{}] : ({}, {}) -> {}",
                          isFloat(dt) ? "addf" : "addi", v, viewOf(id), fmt::join(idx, ", "),
                          scalarType(dt), memrefType(g_.type(id)), scalarType(dt)));
    return;
  }
  std::string old = load(id, idx);
  store(id, viewOf(id), idx, rules_.binary(OpKind::Add, dtypeOf(id), old, v));
}

// Gradient ops in scatter form: zero this call's slice of the output (its
// dimension 0 range), then add every contribution that lands in it. Each
// loop nest starts at output dimension 0, so parallel calls never write the
// same element.
void KernelEmitter::emitScatterForm(ValueId id, bool parallel) {
  const Node &n = node(id);
  // (Atomic accumulation zeroes the output in a nest of its own first: see
  // emitGpu.)
  // (An input gradient through the taps stores every element.)
  if (!target_.atomicAccumulate && !convGradInputByTaps(n))
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
  // The ops flagged kScatterForm in ops.def, each with its rule; anything
  // else is an error (test_codegen's completeness test lowers every op).
  if (n.op == OpKind::ScatterAdd) {
    ValueId indices = n.operands[0], updates = n.operands[1];
    int64_t axis = n.attrs.getInt("axis"), ir = g_.type(indices).rank();
    Index u = openLoops(shapeOf(updates), parallel && (axis > 0 || target_.atomicAccumulate));
    Index at(u.begin() + axis, u.begin() + axis + ir);
    Index dst(u.begin(), u.begin() + axis);
    dst.push_back(indexValue(id, at));
    dst.insert(dst.end(), u.begin() + axis + ir, u.end());
    accumulate(id, dst, valueAt(updates, u));
    closeLoops(u.size());
    return;
  }
  if (n.op == OpKind::Conv2dGradInput || n.op == OpKind::Conv2dGradWeight) {
    if (emitConvAsMatmul(id, parallel))
      return;
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
    // With atomic adds a thread takes one element of g and adds its taps.
    Shape outer = input ? Shape{gs[0], gs[1]} : Shape{gs[1], gs[0]};
    Shape inner = {gs[2], gs[3], ws[1], ws[2], ws[3]};
    if (target_.atomicAccumulate) {
      outer.insert(outer.end(), {gs[2], gs[3]});
      inner.erase(inner.begin(), inner.begin() + 2);
    }
    Index nf = openLoops(outer, parallel);
    std::string batch = input ? nf[0] : nf[1], filter = input ? nf[1] : nf[0];
    Index taps = openLoops(inner, false);
    // (g's row and column, then the filter's taps.)
    Index rest = taps;
    if (target_.atomicAccumulate)
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
        accumulate(id, {batch, channel, y, xw}, rules_.binary(OpKind::Mul, dt, gv, wv));
      } else {
        std::string xv = valueAt(other, {batch, channel, y, xw});
        accumulate(id, {filter, rest[2], rest[3], rest[4]}, rules_.binary(OpKind::Mul, dt, gv, xv));
      }
    });
    closeLoops(taps.size());
    closeLoops(nf.size());
    return;
  }
  if (n.op == OpKind::MaxPool2dGrad || n.op == OpKind::AvgPool2dGrad) {
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
      std::string take = w_.assign(fmt::format("arith.ori {}, {} : i1", none, replacesMaximum(v, bv, dt)));
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
      std::string share = rules_.binary(OpKind::Div, dt, gv, avgPoolDivisor(n, o, xs, dt));
      ifValid(valid, [&] { accumulate(id, {o[0], o[1], y, xw}, share); });
      closeLoops(taps.size());
    }
    closeLoops(o.size());
    return;
  }
  throw std::logic_error("emitScatterForm: not a scatter-form op");
}

} // namespace stepc::codegen
