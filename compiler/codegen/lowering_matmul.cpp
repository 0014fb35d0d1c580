// The loop nest of a matmul root: the register-tiled micro-kernel
// (tiled_matmul.h) for f32, bf16 and f16 products on the CPU, with the kernel's elementwise
// roots after the product computed on its register tile (the epilogue);
// otherwise one loop per output element (and on the GPU, one thread per
// output element).
#include "kernel_emitter.h"
#include "tiled_matmul.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace stepc::codegen {

// ---------------------------------------------------------------------------
// Operands read in place

namespace {

// Products the register-tiled kernel computes: f32, and the halves, whose
// operands it widens on load (or multiplies with vdpbf16ps) and whose f32
// sums it rounds on store.
bool tiledDType(DType dtype) { return dtype == DType::F32 || isHalf(dtype); }

// Whether a view broadcasts along one of its matrix dimensions (stride 0
// where the size is over 1, as broadcast_to of one row makes): MLIR's
// strided memrefs reject a zero stride, so such an operand is copied.
bool broadcastsMatrix(const Shape &shape, const Strides &strides) {
  for (size_t d = shape.size() < 2 ? 0 : shape.size() - 2; d < shape.size(); ++d)
    if (shape[d] > 1 && strides[d] == 0)
      return true;
  return false;
}

Strides rowMajor(const Shape &shape) {
  Strides strides(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;)
    strides[d - 1] = strides[d] * shape[d];
  return strides;
}

} // namespace

std::optional<KernelEmitter::StridedOperand> KernelEmitter::stridedOperand(ValueId v,
                                                                          bool planning) const {
  const Node &n = node(v);
  const Shape &shape = n.type.shape;
  bool stored = planning ? !inGroup_.count(v) && opInfo(n.op).opClass != OpClass::Constant
                         : views_.count(v) > 0;
  if (stored)
    return StridedOperand{v, 0, rowMajor(shape)};
  if (!inGroup_.count(v) || n.operands.empty())
    return std::nullopt;
  auto in = stridedOperand(n.operands[0], planning);
  if (!in)
    return std::nullopt;
  const Shape &from = shapeOf(n.operands[0]);
  StridedOperand out{in->base, in->offset, {}};
  switch (n.op) {
  case OpKind::Transpose:
    for (int64_t p : n.attrs.getInts("perm"))
      out.strides.push_back(in->strides[static_cast<size_t>(p)]);
    return out;
  case OpKind::Reshape:
    if (auto strides = reshapeStrides(from, in->strides, shape)) {
      out.strides = *strides;
      return out;
    }
    return std::nullopt;
  case OpKind::Slice: {
    const auto &starts = n.attrs.getInts("starts");
    const auto &steps = n.attrs.getInts("strides");
    for (size_t d = 0; d < shape.size(); ++d) {
      if (steps[d] <= 0)
        return std::nullopt;
      out.offset += starts[d] * in->strides[d];
      out.strides.push_back(in->strides[d] * steps[d]);
    }
    return out;
  }
  case OpKind::BroadcastTo: {
    size_t lead = shape.size() - from.size();
    out.strides.assign(lead, 0);
    for (size_t d = 0; d < from.size(); ++d)
      out.strides.push_back(from[d] == 1 && shape[lead + d] != 1 ? 0 : in->strides[d]);
    return out;
  }
  default: return std::nullopt;
  }
}

// Operands of matmul `product` as strided views in the product's batch space:
// strides for each of the product's batch dimensions (0 where the operand is
// broadcast) and the operand's two matrix dimensions.
std::optional<KernelEmitter::MatMulPlan> KernelEmitter::matmulPlan(ValueId product,
                                                                   bool planning) const {
  const Node &n = node(product);
  const Shape &out = n.type.shape;
  if (!target_.vectorPaths || !tiledDType(n.type.dtype) || n.type.numel() == 0 ||
      shapeOf(n.operands[0]).back() == 0)
    return std::nullopt;
  MatMulPlan plan;
  size_t rank = out.size();
  for (int k = 0; k < 2; ++k) {
    ValueId v = n.operands[static_cast<size_t>(k)];
    auto s = stridedOperand(v, planning);
    const Shape &shape = shapeOf(v);
    if (!s || broadcastsMatrix(shape, s->strides))
      return std::nullopt;
    size_t lead = rank - shape.size();
    Strides strides(lead, 0);
    for (size_t d = 0; d < shape.size(); ++d)
      strides.push_back(shape[d] == 1 ? 0 : s->strides[d]);
    s->strides = strides;
    (k == 0 ? plan.a : plan.b) = *s;
  }
  int64_t m = out[rank - 2], depth = shapeOf(n.operands[0]).back(), cols = out[rank - 1];
  auto unit = [](int64_t stride, int64_t size) { return stride == 1 || size == 1; };
  int64_t aK = plan.a.strides[rank - 1], bK = plan.b.strides[rank - 2], bN = plan.b.strides[rank - 1];
  // Batch dimensions fold into A's rows when B is the same for every batch
  // entry and A's rows follow each other at one stride over the batch.
  plan.collapse = rank > 2;
  int64_t rowStride = plan.a.strides[rank - 2], span = m;
  for (size_t d = rank - 2; d-- > 0;) {
    plan.collapse = plan.collapse && plan.b.strides[d] == 0 &&
                    (out[d] == 1 || plan.a.strides[d] == rowStride * span);
    span *= out[d];
  }
  if (m == 1 && rank > 2)
    plan.collapse = false; // A's row stride is arbitrary then
  // Without a unit stride along N, B is read as B^T: its column panels are
  // packed for the vector tile, unless dot products along a long,
  // unit-stride K fill the lanes better (N under one vector), or few rows
  // would read each packed panel (dotProductsByRow), or the panel would
  // not fit on the stack. Dot products need unit strides along K; without
  // them (and without a panel) the product takes plain loops.
  plan.dot = !unit(bN, cols);
  bool unitK = unit(aK, depth) && unit(bK, depth);
  plan.rowDots = plan.dot && unitK && dotProductsByRow(plan.collapse ? span : m);
  plan.pack = plan.dot && !plan.rowDots && !(unitK && depth >= 64 && cols < 16) &&
              panelBufferFloats(depth) <= kMaxStackBufferFloats;
  if (plan.dot && !plan.pack && !unitK)
    return std::nullopt;
  return plan;
}

// Which operands of matmul `product` the kernel stores row-major first (as
// roots): those the register-tiled path cannot read in place, and all of
// them where the product does not take that path.
std::vector<bool> KernelEmitter::matmulCopies(ValueId product) const {
  const Node &n = node(product);
  if (matmulPlan(product, true))
    return {false, false};
  if (!target_.vectorPaths || !tiledDType(n.type.dtype))
    return {true, true};
  // A is read in place if it is a strided view (not broadcast along its
  // rows or columns), B if it is one with a unit stride along N; copied
  // row-major, either makes a plan.
  ValueId a = n.operands[0], b = n.operands[1];
  auto view = [&](ValueId v) -> std::optional<StridedOperand> {
    auto s = stridedOperand(v, true);
    if (!s || broadcastsMatrix(shapeOf(v), s->strides))
      return std::nullopt;
    return s;
  };
  auto bView = view(b);
  bool bUnit = bView && (bView->strides.back() == 1 || shapeOf(b).back() == 1);
  return {!view(a), !bUnit};
}

KernelTarget kernelTarget(bool gpu) {
  KernelTarget target;
  target.stridedOperands = [gpu](const Graph &graph, const FusionGroup &group, ValueId product) {
    std::function<int64_t(ValueId)> noOffsets;
    std::vector<bool> noUses;
    std::vector<bool> copies =
        KernelEmitter(graph, group, noOffsets, noUses, 0,
                      gpu ? LoweringTarget::gpu() : LoweringTarget::cpu(), {}, 0)
            .matmulCopies(product);
    return std::vector<bool>{!copies[0], !copies[1]};
  };
  target.tileEpilogue = [gpu](const Graph &graph, const FusionGroup &group,
                              const std::vector<ValueId> &roots, ValueId product,
                              const std::vector<ValueId> &epilogue) {
    std::function<int64_t(ValueId)> noOffsets;
    std::vector<bool> noUses;
    return KernelEmitter(graph, group, noOffsets, noUses, 0,
                         gpu ? LoweringTarget::gpu() : LoweringTarget::cpu(), {}, 0)
        .planTileEpilogue(roots, product, epilogue);
  };
  target.rowKernels = !gpu;
  target.columnKernels = !gpu;
  return target;
}

std::string KernelEmitter::stridedMatrix(const StridedOperand &s, const Index &batch,
                                         int64_t rows, int64_t cols, int64_t rowStride,
                                         int64_t colStride, std::string &type) {
  std::string offset = w_.indexConstant(s.offset);
  for (size_t d = 0; d < batch.size(); ++d)
    if (s.strides[d] != 0)
      offset = w_.assign(fmt::format(
          "arith.addi {}, {} : index", offset,
          w_.assign(fmt::format("arith.muli {}, {} : index", batch[d], w_.indexConstant(s.strides[d])))));
  // A dimension of size 1 takes any stride; 1 keeps vector loads legal.
  if (rows == 1)
    rowStride = 1;
  if (cols == 1)
    colStride = 1;
  type = fmt::format("memref<{}x{}x{}, strided<[{}, {}], offset: ?>>", rows, cols,
                     memoryElementType(g_.type(s.base).dtype), rowStride, colStride);
  return w_.assign(fmt::format(
      "memref.reinterpret_cast {} to offset: [{}], sizes: [{}, {}], strides: [{}, {}] : {} to {}",
      viewOf(s.base), offset, rows, cols, rowStride, colStride, memrefType(g_.type(s.base)), type));
}

std::string KernelEmitter::panelBuffer(bool packed, int64_t rows, int64_t depth) {
  bool copied = !packed && copiesRowMajorPanels(rows) &&
                panelBufferFloats(depth) <= kMaxStackBufferFloats;
  if (!packed && !copied)
    return "";
  return w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : {}",
                               panelBufferType(depth)));
}

int64_t KernelEmitter::productColumnUnits() const {
  const KernelPlan &plan = group_.kernel;
  if (plan.nests.empty())
    return 0;
  const LoopNest &nest = plan.nests.front();
  // Later nests run only as the product's epilogue (emit() stops after it).
  if (nest.kind != NestKind::Contraction || nest.samplePool ||
      (plan.nests.size() > 1 && nest.epilogue.empty()))
    return 0;
  ValueId product = nest.roots.front();
  const Node &n = node(product);
  if (n.op != OpKind::MatMul)
    return 0;
  auto matmul = matmulPlan(product, false);
  const Shape &out = n.type.shape;
  if (!matmul || (out.size() > 2 && !matmul->collapse))
    return 0;
  int64_t rows = n.type.numel() / out.back();
  int64_t units = (out.back() + kProductColumnBlock - 1) / kProductColumnBlock;
  // Fewer rows than a whole register tile's: streaming B from L3 is then
  // the whole cost, and split by rows every thread would stream all of it.
  // The MLP 784-1024-1024-10's forward at 2 threads (onnx_peers, best of 5
  // rounds), split by columns against by rows: 0.051 against 0.108 ms at
  // batch 1, 0.054 against 0.110 at batch 2, 0.072 against 0.103 at batch
  // 4. At batch 8 (one whole 8-row tile; 4 rows a thread split by rows)
  // the columns took 0.167 ms against 0.148.
  const RegisterTile &tile = registerTile();
  if (rows >= tile.rows || units < 2)
    return 0;
  // A call's columns start at a multiple of the block, where the wide
  // tiles, the packed panels and the dot tiles start too: no panel or tile
  // straddles two calls.
  if (kProductColumnBlock % (tile.vectors * 16) != 0 || kProductColumnBlock % tile.dotCols != 0)
    throw std::logic_error(fmt::format("column blocks of {} do not align with the {} tile",
                                       kProductColumnBlock, tile.name));
  // Every root is the product or on its tile: one element of its shape.
  for (ValueId r : plan.roots)
    if (shapeOf(r) != out)
      return 0;
  return units;
}

void KernelEmitter::emitProductColumnPerturbation() {
  forEachPerturbedOutput([&](ValueId id) {
    const Shape &shape = shapeOf(id);
    Index idx = openLoops(Shape(shape.begin(), shape.end() - 1), false);
    idx.push_back(w_.beginFor(productColumnsBegin_, productColumnsEnd_));
    perturbElement(id, idx);
    w_.endFor();
    closeLoops(idx.size() - 1);
  });
}

// The register-tiled product, batch entry by batch entry (or all batch
// entries as the rows of one product when they fold into A's rows). A
// parallel call owns output rows [begin, end) of dimension 0: batch
// entries, or rows of a 2-D product. With product column units, a call
// computes all rows at its columns instead.
void KernelEmitter::emitTiledProduct(ValueId id, const MatMulPlan &plan, bool parallel) {
  const Shape &out = shapeOf(id);
  size_t rank = out.size();
  int64_t m = out[rank - 2], depth = shapeOf(node(id).operands[0]).back(), cols = out[rank - 1];
  const Strides &as = plan.a.strides, &bs = plan.b.strides;
  int64_t aM = as[rank - 2], aK = as[rank - 1], bK = bs[rank - 2], bN = bs[rank - 1];
  bool rowsFold = rank == 2 || plan.collapse;
  int64_t foldedRows = 1;
  for (size_t d = 0; d + 1 < rank; ++d)
    foldedRows *= out[d];
  // Operands that hold bf16 numbers (bf16 buffers, or f32 ones a cast
  // widened from bf16, as mixed precision's products read) run on
  // vdpbf16ps where the target has it.
  auto bf16Numbers = [&](ValueId base) {
    const Node &stored = node(base);
    return stored.type.dtype == DType::BF16 ||
           (stored.type.dtype == DType::F32 && stored.op == OpKind::Cast &&
            dtypeOf(stored.operands[0]) == DType::BF16);
  };
  bool bf16Dot = bf16DotProducts() && bf16Numbers(plan.a.base) && bf16Numbers(plan.b.base);
  // A transposed view of A (unit stride along M, K rows a line or more
  // apart) is copied a block of rows at a time (TiledMatMul::aBlock) where
  // several column panels (the register tile's width) of a row-major B read
  // each block. B is then read
  // in place: copied, its panels would be copied again for every block (and
  // a B^T's packed again: B^T takes the old path). The GPT
  // step's weight gradients, X^T x dY at M = K = 1024, N = 256, ran 2.84
  // ms with B in place, 3.09-3.39 ms with copied panels).
  bool aColumns = aM == 1 && aK >= 16;
  bool aBlocks = aColumns && !bf16Dot && dtypeOf(plan.a.base) == DType::F32 && !plan.dot &&
                 aBlockRows(depth) > 0 && cols > registerTile().vectors * 16 &&
                 (rowsFold ? foldedRows : m) >= 32;
  std::string aBlock = aBlocks ? w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : {}",
                                                       aBlockType(depth)))
                               : "";
  std::string panel = panelBuffer(plan.pack, aBlocks ? 0 : rowsFold ? foldedRows : m, depth);
  auto product = [&](const Index &batch, int64_t rows, const std::string &lo,
                     const std::string &hi) {
    TiledMatMul mm;
    mm.aElem = memoryElementType(dtypeOf(plan.a.base));
    mm.bElem = memoryElementType(dtypeOf(plan.b.base));
    mm.cElem = memoryElementType(dtypeOf(id));
    mm.bf16Dot = bf16Dot;
    mm.m = rows;
    mm.k = depth;
    mm.n = cols;
    mm.rowBegin = lo;
    mm.rowEnd = hi;
    mm.colBegin = productColumnsBegin_;
    mm.colEnd = productColumnsEnd_;
    mm.aTransposed = aBlocks;
    mm.aBlock = aBlock;
    mm.a = aBlocks ? stridedMatrix(plan.a, batch, depth, rows, aK, aM, mm.aType)
                   : stridedMatrix(plan.a, batch, rows, depth, aM, aK, mm.aType);
    mm.bTransposed = plan.dot;
    mm.packB = plan.pack;
    mm.bPanel = panel;
    // A dimension of size 1 takes stride 1 in its view (stridedMatrix).
    mm.bUnitK = plan.pack && (bK == 1 || depth == 1);
    mm.b = plan.dot ? stridedMatrix(plan.b, batch, cols, depth, bN, bK, mm.bType)
                    : stridedMatrix(plan.b, batch, depth, cols, bK, bN, mm.bType);
    StridedOperand c{id, 0, rowMajor(out)};
    mm.c = stridedMatrix(c, batch, rows, cols, cols, 1, mm.cType);
    mm.epilogue = tileEpilogue_;
    // Read in place, 16 K steps ahead measured 4-8% faster on the GPT
    // step's X^T x dY with M = K = 1024 (lda 1024); 8, 24, 32 and 64 were
    // slower.
    if (aColumns && !aBlocks)
      mm.aPrefetch = 16;
    emitTiledMatMul(w_, mm);
  };
  if (rowsFold) {
    int64_t rows = foldedRows;
    Shape lead(out.begin(), out.end() - 1);
    tileIndex_ = [this, lead](const std::string &row, const std::string &col) {
      Index idx = lead.size() == 1 ? Index{row} : delinearize(row, lead);
      idx.push_back(col);
      return idx;
    };
    std::string lo, hi;
    if (parallel) {
      std::string perRow = w_.indexConstant(rows / out[0]);
      lo = w_.assign(fmt::format("arith.muli {}, {} : index", begin_, perRow));
      hi = w_.assign(fmt::format("arith.muli {}, {} : index", end_, perRow));
    }
    product(Index(rank - 2, w_.indexConstant(0)), rows, lo, hi);
  } else {
    Index batch = openLoops(Shape(out.begin(), out.end() - 2), parallel);
    tileIndex_ = [batch](const std::string &row, const std::string &col) {
      Index idx = batch;
      idx.push_back(row);
      idx.push_back(col);
      return idx;
    };
    product(batch, m, "", "");
    closeLoops(batch.size());
  }
  tileIndex_ = nullptr;
}

void KernelEmitter::emitMatMul(ValueId id, bool parallel) {
  const Node &n = node(id);
  ValueId a = n.operands[0], b = n.operands[1];
  const Shape &out = n.type.shape;
  size_t rank = out.size();
  // f32 products whose operands are strided views of memory take the
  // register-tiled path. (Not on the GPU: one thread per output element
  // there.)
  if (auto plan = matmulPlan(id, false)) {
    emitTiledProduct(id, *plan, parallel);
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
  std::string sum = rules_.binary(OpKind::Add, dt, acc, rules_.binary(OpKind::Mul, dt, av, bv));
  w_.line(fmt::format("scf.yield {} : {}", sum, t));
  w_.popScope();
  w_.dedent();
  w_.line("}");
  store(id, viewOf(id), idx, res);
  closeLoops(idx.size());
}

// Whether a value of this shape, broadcast to a convolution's [N, C, H, W],
// is the same at every pixel.
static bool constantOverPixels(const Shape &s) {
  size_t r = s.size();
  return (r < 1 || s[r - 1] == 1) && (r < 2 || s[r - 2] == 1);
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
    return constantOverPixels(n.type.shape);
  }
  // A convolution's bias reshaped in the kernel ([C] as [C,1,1], as ONNX
  // models have it): one element per channel, read through the view.
  if (tileConv_ && inGroup_.count(id) && opInfo(n.op).opClass == OpClass::View)
    return n.type.dtype == DType::F32 && constantOverPixels(n.type.shape);
  if (n.op == OpKind::Constant) {
    // Data constants (a causal mask as PyTorch's ONNX exporter writes it:
    // bool [T,T]) are read from their module global, not on a convolution's
    // tile.
    if (n.attrs.has("value"))
      return n.type.dtype == DType::F32;
    return (n.type.dtype == DType::F32 || n.type.dtype == DType::Bool) && !tileConv_;
  }
  if (!inGroup_.count(id) || n.type.shape != shape)
    return false;
  // The f32 arithmetic the epilogue computes on vectors (the rest stays a
  // row sweep after the product), comparisons of a stored operand or one on
  // the tile, and selects.
  static constexpr OpKind kVectorArithmetic[] = {
      OpKind::Add,  OpKind::Sub,  OpKind::Mul, OpKind::Div,    OpKind::Maximum,
      OpKind::Minimum, OpKind::Neg, OpKind::Sqrt, OpKind::Square, OpKind::Relu,
      OpKind::Exp,  OpKind::Tanh, OpKind::Erf, OpKind::Sigmoid};
  static constexpr OpKind kVectorComparisons[] = {OpKind::Gt, OpKind::Ge, OpKind::Lt, OpKind::Le};
  if (std::ranges::find(kVectorArithmetic, n.op) != std::end(kVectorArithmetic)) {
    if (n.type.dtype != DType::F32)
      return false;
  } else if (std::ranges::find(kVectorComparisons, n.op) != std::end(kVectorComparisons)) {
    if (shapeOf(n.operands[0]) != shape && !views_.count(n.operands[0]) &&
        node(n.operands[0]).op != OpKind::Constant)
      return false;
  } else if (n.op != OpKind::Select) {
    return false;
  }
  for (size_t k = 0; k < n.operands.size(); ++k) {
    ValueId operand = n.operands[k];
    bool condition = n.op == OpKind::Select && k == 0;
    bool dataConstant = node(operand).op == OpKind::Constant && !node(operand).attrs.has("value");
    if (condition ? !(((inGroup_.count(operand) && shapeOf(operand) == shape) ||
                       (dataConstant && dtypeOf(operand) == DType::Bool)) &&
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
    Index at = broadcastIndex(id, out, tileIndex_(row, col));
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
  } else if (!tileSample_.empty() && inGroup_.count(id) && opInfo(n.op).opClass == OpClass::View) {
    // A view constant over the convolution tile's pixels (vectorizable).
    const Shape &out = shapeOf(tileProduct_);
    std::string zero = w_.indexConstant(0);
    v = splat(n.type.rank() == 0 ? valueAt(id, {})
                                 : valueAt(id, broadcastIndex(id, out, {tileSample_, row, zero, zero})));
  } else if (n.op == OpKind::Constant && n.attrs.has("value")) {
    v = splat(w_.constant(n.attrs.getReal("value"), DType::F32));
  } else if (n.op == OpKind::Constant) {
    // A data constant, f32 or a bool condition: 16 consecutive columns of
    // its module global where its last axis spans the product's columns,
    // else one element broadcast.
    const Shape &out = shapeOf(tileProduct_);
    Index at = broadcastIndex(id, out, tileIndex_(row, col));
    bool alongColumns = n.type.rank() >= 1 && n.type.shape.back() == out.back() && out.back() != 1;
    bool isBool = n.type.dtype == DType::Bool;
    if (!alongColumns) {
      std::string scalar = constantElement(n, id, at);
      v = isBool ? w_.assign(fmt::format("vector.broadcast {} : i1 to vector<16xi1>", scalar)) : splat(scalar);
    } else {
      std::string global = constantGlobal(n, id);
      const char *lanes = isBool ? "vector<16xi8>" : vec;
      std::string loaded;
      if (mask.empty()) {
        loaded = w_.assign(fmt::format("vector.load {}[{}] : {}, {}", global, fmt::join(at, ", "),
                                       memrefType(n.type), lanes));
      } else {
        std::string zero = w_.assign(fmt::format("arith.constant dense<{}> : {}", isBool ? "0" : "0.0", lanes));
        loaded = w_.assign(fmt::format("vector.maskedload {}[{}], {}, {} : {}, vector<16xi1>, {} into {}",
                                       global, fmt::join(at, ", "), mask, zero, memrefType(n.type),
                                       lanes, lanes));
      }
      v = loaded;
      if (isBool) {
        std::string zero = w_.assign("arith.constant dense<0> : vector<16xi8>");
        v = w_.assign(fmt::format("arith.cmpi ne, {}, {} : vector<16xi8>", loaded, zero));
      }
    }
  } else {
    // Operands last first, as lowerElement.
    std::vector<std::string> x(n.operands.size());
    for (size_t k = n.operands.size(); k-- > 0;)
      x[k] = vectorAt(n.operands[k], row, col, mask);
    // The operands' type: f32 lanes (a select's condition is their mask).
    v = rules_.apply(n.op, ElementType{DType::F32, 16}, n.type.dtype, x);
  }
  w_.cache(key, v);
  return v;
}

// Whether the register tile of `product` computes `epilogue`: the product
// takes the tile with its sums in f32 (a half product is rounded first) and
// the vector tile or dot products by row (not dot tiles), or is a
// convolution through it; the epilogue's results are f32 or bool, of ops
// vectorAt knows.
bool KernelEmitter::tileComputes(ValueId product, const std::vector<ValueId> &epilogue) {
  const Node &m = node(product);
  bool conv = m.op == OpKind::Conv2d;
  if (conv) {
    if (!convAsMatmul(m, m.operands[0], product, m.operands[1]))
      return false;
  } else {
    auto plan = matmulPlan(product, false);
    if (!plan || (plan->dot && !plan->pack && !plan->rowDots) || m.type.dtype != DType::F32)
      return false;
  }
  tileConv_ = conv;
  tileRoots_ = std::set<ValueId>(epilogue.begin(), epilogue.end());
  bool computes = std::ranges::all_of(epilogue, [&](ValueId r) {
    return (dtypeOf(r) == DType::F32 || dtypeOf(r) == DType::Bool) &&
           vectorizable(r, product, m.type.shape);
  });
  tileRoots_.clear();
  tileConv_ = false;
  return computes;
}

bool KernelEmitter::planTileEpilogue(const std::vector<ValueId> &roots, ValueId product,
                                     const std::vector<ValueId> &epilogue) {
  // The values emit() gives views (only which ones matters here): those in
  // the arena and every root (in the arena or in scratch).
  for (ValueId id : arenaValues({}))
    views_[id];
  for (ValueId id : roots)
    views_[id];
  return tileComputes(product, epilogue);
}

// The matmul with its epilogue roots (LoopNest::epilogue) computed on each
// 16-lane piece of the product while it is in a register: nothing is stored
// but the roots (and the product itself where a later kernel reads it).
std::vector<ValueId> KernelEmitter::tileValues(ValueId product, const std::vector<ValueId> &epilogue,
                                               std::optional<ValueId> samplePool) const {
  std::vector<ValueId> values = epilogue;
  if (samplePool) {
    ValueId input = node(*samplePool).operands[0];
    if (input != product && std::ranges::find(values, input) == values.end())
      values.push_back(input);
  }
  return values;
}

void KernelEmitter::emitMatMulWithEpilogue(ValueId product, const std::vector<ValueId> &epilogue,
                                           std::optional<ValueId> samplePool, bool parallel) {
  // The plan asked the target (kernelTarget's tileEpilogue, planTileEpilogue
  // above) with the same views and values (kernel_plan.cpp).
  std::vector<ValueId> values = tileValues(product, epilogue, samplePool);
  if (!tileComputes(product, values))
    throw std::logic_error(fmt::format("kernel {}: the plan puts an epilogue on the tile of %{} "
                                       "({}) that the tile cannot compute",
                                       group_.name, product, opInfo(node(product).op).name));
  const Shape &shape = shapeOf(product);
  bool conv = node(product).op == OpKind::Conv2d;
  tileConv_ = conv;
  tileRoots_ = std::set<ValueId>(values.begin(), values.end());
  tileProduct_ = product;
  // The pool's input, per sample: read back from where the kernel stores
  // it for others (the product, or a root of its epilogue), else kept in a
  // buffer of one sample [C, H*W] on the stack (allocated outside the
  // sample loop, as the col buffer).
  std::optional<ValueId> poolInput;
  bool poolInputStored = false;
  std::string sampleBuffer, sampleType;
  if (samplePool) {
    sampleType = fmt::format("memref<{}x{}xf32>", shape[1], shape[2] * shape[3]);
    poolInput = node(*samplePool).operands[0];
    poolInputStored = *poolInput == product ? usedOutside_[product] != 0
                                            : std::ranges::find(epilogue, *poolInput) != epilogue.end();
    if (!poolInputStored)
      sampleBuffer = w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : {}", sampleType));
    afterSample_ = [&, poolInput, poolInputStored, sampleBuffer, sampleType](const std::string &sample) {
      w_.pushScope();
      if (poolInputStored)
        emitSamplePool(*samplePool, sample, matrixView(*poolInput, sample, shape[1], shape[2] * shape[3]),
                       sampleType);
      else
        emitSamplePool(*samplePool, sample, sampleBuffer, sampleType);
      w_.popScope();
    };
  }
  tileEpilogue_ = [&, product, epilogue](const std::string &tileRow, const std::string &tileCol,
                                         const std::string &value, const std::string &mask) {
    tileValue_ = value;
    std::string row = tileRowBase_.empty()
                          ? tileRow
                          : w_.assign(fmt::format("arith.addi {}, {} : index", tileRow,
                                                  tileRowBase_));
    std::string col = tileColumnBase_.empty()
                          ? tileCol
                          : w_.assign(fmt::format("arith.addi {}, {} : index", tileCol,
                                                  tileColumnBase_));
    auto storeVector = [&](ValueId id, std::string v) {
      std::string type = "vector<16xf32>";
      if (dtypeOf(id) == DType::Bool) {
        v = w_.assign(fmt::format("arith.extui {} : vector<16xi1> to vector<16xi8>", v));
        type = "vector<16xi8>";
      }
      // A convolution stores into the sample's [C, pixels] slice.
      std::string view = viewOf(id), memType = memrefType(g_.type(id));
      Index at{row, col};
      if (!tileSample_.empty()) {
        int64_t pixels = shape[2] * shape[3];
        view = matrixView(id, tileSample_, shape[1], pixels);
        memType = fmt::format("memref<{}x{}x{}>", shape[1], pixels, memoryElementType(dtypeOf(id)));
      } else {
        at = tileIndex_(row, col);
      }
      if (mask.empty())
        w_.line(fmt::format("vector.store {}, {}[{}] : {}, {}", v, view, fmt::join(at, ", "),
                            memType, type));
      else
        w_.line(fmt::format("vector.maskedstore {}[{}], {}, {} : {}, vector<16xi1>, {}", view,
                            fmt::join(at, ", "), mask, v, memType, type));
    };
    if (usedOutside_[product])
      storeVector(product, value);
    for (ValueId r : epilogue)
      storeVector(r, vectorAt(r, row, col, mask));
    if (poolInput && !poolInputStored) {
      std::string v = *poolInput == product ? value : vectorAt(*poolInput, row, col, mask);
      if (mask.empty())
        w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, vector<16xf32>", v, sampleBuffer, row, col,
                            sampleType));
      else
        w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, vector<16xf32>",
                            sampleBuffer, row, col, mask, v, sampleType));
    }
  };
  if (conv)
    emitConvAsMatmul(product, parallel);
  else
    emitMatMul(product, parallel);
  afterSample_ = nullptr;
  tileEpilogue_ = nullptr;
  tileRoots_.clear();
  tileConv_ = false;
}

} // namespace stepc::codegen
