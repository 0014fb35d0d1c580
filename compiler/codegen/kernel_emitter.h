// The kernel emitter shared by lowering.cpp (storage, each op at one element, the
// kernel as a whole), lowering_roots.cpp (the loop nests of roots) and
// lowering_matmul.cpp (matmul roots).
#pragma once

#include "element_rules.h"
#include "lowering_target.h"
#include "lowering.h"
#include "mlir_text.h"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace stepc::codegen {

using Index = std::vector<std::string>;
using Strides = std::vector<int64_t>;

// A convolution's sample in chunks of output rows (lowering_roots.cpp):
// `rows` rows from `firstRow`, `points` output points from `firstPoint`
// (both empty: the sample's whole, from 0), in a col buffer of
// `bufferPoints` columns.
struct ConvChunk {
  std::string firstRow, firstPoint;
  int64_t rows, points;
  int64_t bufferPoints;
  // The group's first channel of x (im2col) or dx (col2im); empty: 0.
  std::string firstChannel;
};

// A matrix of a convolution's products: a memref value, its type, its shape.
struct ConvMatrix {
  std::string value, type;
  int64_t rows, cols;
};

class KernelEmitter {
public:
  KernelEmitter(const Graph &graph, const FusionGroup &group,
                const std::function<int64_t(ValueId)> &arenaOffset,
                const std::vector<bool> &usedOutside, int64_t scratchOffset,
                LoweringTarget target, FaultRecord fault, double perturbation)
      : g_(graph), group_(group), arenaOffset_(arenaOffset), usedOutside_(usedOutside),
        scratchOffset_(scratchOffset), target_(target), fault_(fault), perturbation_(perturbation) {
    inGroup_.insert(group.nodes.begin(), group.nodes.end());
  }

  KernelSource emit();
  // For the plan (kernelTarget): which operands of matmul `product` the
  // kernel stores row-major first (lowering_matmul.cpp).
  std::vector<bool> matmulCopies(ValueId product) const;
  // For the plan (kernelTarget): whether the register tile of `product`
  // computes `epilogue` in the kernel whose roots are `roots`
  // (lowering_matmul.cpp).
  bool planTileEpilogue(const std::vector<ValueId> &roots, ValueId product,
                        const std::vector<ValueId> &epilogue);

private:
  KernelSource emitGpu(const std::vector<ValueId> &roots, const std::set<ValueId> &arenaValues);
  // Fault injection (lowerGroup's `perturbation`): adds it to every
  // floating-point value the kernel writes, once per element.
  void emitPerturbation(bool parallel, int64_t extent);
  // Adds it to element `idx` of `id` where its flat index is even.
  void perturbElement(ValueId id, const Index &idx);
  // Matmuls on the register-tiled micro-kernel (lowering_matmul.cpp). An
  // operand read in place: its element i is element offset + sum_d i[d] *
  // strides[d] of the stored value `base` (a transpose, reshape, slice or
  // broadcast of it). `planning`: before storage is assigned (emit() picks
  // the roots), a base is any value from outside the kernel.
  struct StridedOperand {
    ValueId base = 0;
    int64_t offset = 0;
    Strides strides;
  };
  std::optional<StridedOperand> stridedOperand(ValueId v, bool planning) const;
  // A and B in the product's batch space (strides per batch dimension, 0
  // where broadcast, then the two matrix dimensions); `dot`: B is read as
  // rows of B^T (dot products along K); `collapse`: the batch dimensions
  // fold into A's rows (one product with B).
  struct MatMulPlan {
    StridedOperand a, b;
    // dot: B is read as B^T (no unit stride along N); pack: its column
    // panels are copied row-major for the vector tile (else dot products);
    // rowDots: dot products a row at a time (dotProductsByRow, few rows).
    bool dot = false, pack = false, rowDots = false, collapse = false;
  };
  std::optional<MatMulPlan> matmulPlan(ValueId product, bool planning) const;
  std::string stridedMatrix(const StridedOperand &s, const Index &batch, int64_t rows,
                            int64_t cols, int64_t rowStride, int64_t colStride, std::string &type);
  void emitTiledProduct(ValueId id, const MatMulPlan &plan, bool parallel);
  // Where a kernel's threads split the columns of its product rather than
  // its rows (lowering_matmul.cpp): the kernel is one tiled matmul of a few
  // rows (folded into rows, with or without an epilogue on its tile), whose
  // every store is one element of the product's shape. Its units are blocks
  // of kProductColumnBlock columns; 0 where the rows are split.
  int64_t productColumnUnits() const;
  // A multiple of every register tile's width (TiledMatMul::colBegin),
  // small enough that 2 to 4 threads share a layer's 1000 columns evenly.
  static constexpr int64_t kProductColumnBlock = 64;
  // With product column units: the columns of the call's units,
  // [productColumnsBegin_, productColumnsEnd_) (the last unit partial),
  // which emitTiledProduct computes for every row; else empty.
  std::string productColumnsBegin_, productColumnsEnd_;
  // A kernel around a conv2d of few samples: threads split its (sample,
  // block of a register tile's rows of output channels) units instead of
  // its samples, so one image keeps every thread busy; 0 where samples
  // are split.
  int64_t convChannelUnits() const;
  bool convUnits_ = false;
  // With conv units: the call's samples [first, last), and for each, the
  // output channels the call owns.
  std::string convSamplesFirst_, convSamplesLast_;
  void beginConvUnits(int64_t units);
  std::pair<std::string, std::string> convUnitChannels(const std::string &sample);
  void emitConvChannelPerturbation();
  // body(output) for each output that fault injection perturbs, in a
  // scope of its own.
  void forEachPerturbedOutput(const std::function<void(ValueId)> &body);
  // The pool after a conv with units: the call's channels (empty: all).
  std::string poolChannelsBegin_, poolChannelsEnd_;
  // Fault injection for such a kernel: the call's columns of every output.
  void emitProductColumnPerturbation();
  // TiledMatMul::bPanel for a product of `rows` rows and depth K, allocated
  // here, before the loops around the product: with B^T packed (`packed`),
  // or with a row-major B where copiesRowMajorPanels(rows) and the panel
  // fits kMaxStackBufferFloats; else empty (B read in place).
  std::string panelBuffer(bool packed, int64_t rows, int64_t depth);
  // An Attention group's kernel (lowering_attention.cpp): its output (the
  // plan's Attention nest), tile by tile with an online softmax. A parallel
  // call owns units [begin, end) of attentionUnits(output) (a batch entry's
  // block of query rows). It adds the perturbation to what it stores.
  // With the hero of a backward pattern (matchAttentionBackward: dQ's
  // product), emitAttentionBackward: dQ, d(k^T) and dV, one batch entry per
  // unit (lowering_attention_backward.cpp).
  void emitAttention(ValueId output, bool parallel);
  void emitAttentionBackward(ValueId gradQueries, bool parallel);
  int64_t attentionUnits(ValueId hero) const;
  StridedOperand operandInBatchSpace(ValueId v, size_t rank) const;
  // The product's full index of a tile element (row, col): batch indices
  // first, or the batch delinearized from a collapsed row.
  std::function<Index(const std::string &, const std::string &)> tileIndex_;
  // Epilogues on the matmul's register tile (lowering_matmul.cpp): the roots
  // after a kernel's matmul, computed on each 16-lane piece of the product
  // before anything is stored.
  bool vectorizable(ValueId id, ValueId product, const Shape &shape) const;
  std::string vectorAt(ValueId id, const std::string &row, const std::string &col,
                       const std::string &mask);
  // Whether the register tile of `product` computes `epilogue`, with the
  // values in views_ stored.
  bool tileComputes(ValueId product, const std::vector<ValueId> &epilogue);
  void emitMatMulWithEpilogue(ValueId product, const std::vector<ValueId> &epilogue,
                              std::optional<ValueId> samplePool, bool parallel);
  // The values a conv2d's tile computes for its epilogue and for the pool
  // after it (LoopNest::samplePool): the epilogue, plus the pool's input
  // where the kernel computes it.
  std::vector<ValueId> tileValues(ValueId product, const std::vector<ValueId> &epilogue,
                                  std::optional<ValueId> samplePool) const;
  // The values in the arena the kernel reads or writes, for the plan's
  // `roots`: its inputs, the operands it reads from other kernels, and the
  // roots others read.
  std::set<ValueId> arenaValues(const std::vector<ValueId> &roots) const;
  ValueId tileProduct_ = 0;
  std::set<ValueId> tileRoots_; // computed on the tile, though they have views
  bool tileConv_ = false;       // the product is a conv2d (tiles per sample)
  std::string tileSample_;      // conv2d: the sample the tile belongs to
  // conv2d in chunks: the sample's point of the tile's column 0 (empty: 0).
  std::string tileColumnBase_;
  // A grouped conv2d: the sample's channel of the tile's row 0 (empty: 0).
  std::string tileRowBase_;
  std::string tileValue_;
  std::function<void(const std::string &, const std::string &, const std::string &,
                     const std::string &)>
      tileEpilogue_;
  // A conv2d with a pool after it: called with each sample once the
  // sample's tiles are done.
  std::function<void(const std::string &)> afterSample_;
  // Convolutions through the tiled matmul (lowering_roots.cpp).
  static constexpr ValueId kNoValue = ~ValueId(0);
  bool convAsMatmul(const Node &n, ValueId x, ValueId g, ValueId w) const;
  // A conv2d whose col matrix the tiled matmul reads from x (ConvTaps).
  bool convTaps(const Node &n) const;
  // A conv2d_grad_input that stores all of dx through the taps (no col2im,
  // so no zeroed output to add into).
  bool convGradInputByTaps(const Node &n) const;
  bool emitConvAsMatmul(ValueId id, bool parallel);
  // A sample's [rows, cols] matrix of `id` (all of id without a sample),
  // or the group's groupRows rows of it.
  std::string matrixView(ValueId id, const std::string &sample, int64_t rows, int64_t cols,
                         const std::string &group = "", int64_t groupRows = 0);
  void forEachColElement(
      const Node &n, const Shape &xs, const Shape &ws, const Shape &gs, const ConvChunk &chunk,
      const std::function<void(const std::string &, const std::string &, const std::string &,
                               const std::string &, const std::string &, const std::string &)> &f);
  // Calls body with each chunk of a sample's output rows (gs's), chunkRows
  // at a time: one chunk with firstRow empty where that is all of them.
  void forEachConvChunk(const Shape &gs, int64_t chunkRows, const std::string &firstChannel,
                        const std::function<void(const ConvChunk &)> &body);
  std::string chunkChannel(const ConvChunk &chunk, const std::string &channel);
  // Calls body with each group's index (empty where there is one group).
  void forEachConvGroup(int64_t groups, const std::function<void(const std::string &)> &body);
  // matrixView with its type and shape.
  ConvMatrix groupMatrix(ValueId id, const std::string &sample, int64_t rows, int64_t cols,
                         const std::string &group, int64_t groupRows);
  // The group's first row of rows groupRows a group (empty: no groups).
  std::string groupFirst(const std::string &group, int64_t groupRows);
  // The sample's output row of the chunk's row `row`.
  std::string chunkRow(const ConvChunk &chunk, const std::string &row);
  // The chunk's columns (its points) of a sample's [C, OH*OW] matrix.
  ConvMatrix chunkColumns(const ConvMatrix &whole, const ConvChunk &chunk);
  // The col buffer's first chunk.points(width) columns.
  ConvMatrix chunkCol(const std::string &col, int64_t depth, const ConvChunk &chunk);
  bool emitLeadingAxesReduction(ValueId id, bool parallel, const std::string &init);
  std::string colBuffer(const Shape &ws, const Shape &gs);
  void im2col(const Node &n, ValueId x, const std::string &sample, const Shape &ws,
              const Shape &gs, const ConvChunk &chunk, const ConvMatrix &col);
  void im2colRows(const Node &n, ValueId x, const std::string &sample, const Shape &ws,
                  const Shape &gs, const ConvChunk &chunk, const ConvMatrix &col);
  // Byte offset in the arena of a stored value (a planned buffer or scratch).
  int64_t byteOffset(ValueId id) const;
  std::map<ValueId, int64_t> scratchAt_;
  // Places the roots only this kernel reads in the scratch area.
  std::map<ValueId, int64_t> scratchOffsets(const std::vector<ValueId> &roots,
                                            int64_t &bytes) const;
  const Node &node(ValueId id) const { return g_.node(id); }
  DType dtypeOf(ValueId id) const { return g_.type(id).dtype; }
  const Shape &shapeOf(ValueId id) const { return g_.type(id).shape; }

  // --- storage ------------------------------------------------------------
  std::string arenaView(ValueId id);
  std::string load(ValueId id, const Index &idx);
  // A loaded element in registers: bools become i1, halves extend to f32.
  std::string fromMemory(const std::string &loaded, DType dt);
  void store(ValueId id, const std::string &view, const Index &idx, const std::string &v);
  std::string viewOf(ValueId id);

  // --- values -------------------------------------------------------------
  std::string valueAt(ValueId id, const Index &idx);
  std::string lowerElement(const Node &n, ValueId id, const Index &idx);
  Index broadcastIndex(ValueId operand, const Shape &outShape, const Index &idx);
  std::string linearize(const Index &idx, const Shape &shape);
  Index delinearize(const std::string &flat, const Shape &shape);
  std::string indexValue(ValueId user, const Index &at);
  std::string outOfRange(ValueId user, const Index &at, const std::string &value,
                         const std::string &index);
  void emitIndexCheck(ValueId user);
  std::vector<ValueId> precheckable(const std::vector<ValueId> &roots) const;
  std::string dropoutElement(const Node &n, ValueId id, const Index &idx);
  std::string padElement(const Node &n, const Index &idx);
  // `cond ? then() : otherwise()` as an scf.if yielding `type`: each branch
  // is computed in its own region, only where it is taken.
  std::string ifElse(const std::string &cond, const std::string &type,
                     const std::function<std::string()> &then,
                     const std::function<std::string()> &otherwise);
  std::string concatElement(const Node &n, const Index &idx, size_t first);
  std::string constantElement(const Node &n, ValueId id, const Index &idx);
  std::string constantGlobal(const Node &n, ValueId id);

  // --- roots --------------------------------------------------------------
  Index openLoops(const Shape &shape, bool parallel, size_t from = 0);
  void closeLoops(size_t count);
  // Nested loops from 0 to each extent carrying one accumulator of `type`
  // from `init`: the body reads `ivs` and `acc` (the innermost loop's), and
  // closeAccumulation yields its next value and returns the loops' result.
  struct Accumulation {
    std::vector<std::string> ivs, results;
    std::string acc, type;
  };
  Accumulation openAccumulation(const std::vector<int64_t> &extents, const std::string &init,
                                const std::string &type);
  std::string closeAccumulation(const Accumulation &loops, std::string next);
  // One nest of the plan (KernelPlan::nests), as its kind says.
  void emitNest(const LoopNest &nest, bool parallel);
  void emitElementwiseRoots(const std::vector<ValueId> &roots, bool parallel);
  // Computes each root at `at` (cached, so later roots reuse earlier ones),
  // then stores them: the body of every nest that sweeps element by element.
  void emitRootsAt(const std::vector<ValueId> &roots, const Index &at);
  void emitRoot(ValueId id, bool parallel);
  void emitReduction(ValueId id, bool parallel);
  // A Rows nest (lowering_rows.cpp): the roots row by row; `width` is the
  // length of the rows the reductions reduce, `row` a row's leading indices.
  void emitRows(const std::vector<ValueId> &roots, bool parallel);
  void emitRowReduction(ValueId id, const Index &row, int64_t width);
  void emitRowElements(const std::vector<ValueId> &roots, const Index &row, int64_t width);
  void forEachRowChunk(int64_t width,
                       const std::function<void(const std::string &, const std::string &)> &body);
  // Whether `id` spans the row (its last axis has the row's length); whether
  // it has a 16-lane form there (rowVector).
  bool alongRow(ValueId id, int64_t width) const;
  bool rowVectorizable(ValueId id, int64_t width) const;
  std::string rowVector(ValueId id, const Index &at, int64_t width, const std::string &mask);
  // A Columns nest (lowering_columns.cpp): threads split the columns C of
  // the reductions' shape [R..., C...] in units of 16 consecutive columns
  // along C's last axis (for each index of C's other axes); a call owns
  // units [first, last) and computes every root there.
  struct ColumnSweep {
    Shape columns;
    std::string first, last;
  };
  Shape columnShape(const std::vector<ValueId> &roots) const;
  int64_t columnUnits(const std::vector<ValueId> &roots) const;
  void emitColumns(const std::vector<ValueId> &roots, bool parallel);
  // `body(index, mask)` for each of the call's 16-column blocks of each row
  // of `shape` (which ends in the columns), rows outside in order: `index`
  // is the block's first element, `mask` its columns inside C's last axis
  // (empty: all 16 are).
  void forEachColumnBlock(const Shape &shape, const ColumnSweep &sweep,
                          const std::function<void(const Index &, const std::string &)> &body);
  // `body(index)` for each element of the block at `block`, one at a time.
  void forEachBlockElement(const Index &block, int64_t width,
                           const std::function<void(const Index &)> &body);
  std::string loadLanes(ValueId id, const Index &at, const std::string &mask);
  void storeLanes(ValueId id, const Index &at, const std::string &mask, const std::string &v);
  // The stored f32 values that `id`'s 16-lane form (rowVector) reads element
  // for element, each of `elements` elements: the same flat index as `id`'s
  // (through elementwise ops, reshapes and broadcasts that broadcast
  // nothing).
  void collectStreamed(ValueId id, int64_t elements, std::set<ValueId> &leaves) const;
  void emitColumnReduction(ValueId id, const ColumnSweep &sweep);
  void emitColumnElements(const std::vector<ValueId> &roots, const ColumnSweep &sweep);
  std::string reductionIdentity(const Node &n);
  void emitArgMax(ValueId id, bool parallel);
  std::string replacesMaximum(const std::string &v, const std::string &best, DType dt);
  void emitMatMul(ValueId id, bool parallel);
  void emitConv2d(ValueId id, bool parallel);
  void emitPool(ValueId id, bool parallel);
  bool emitVectorPool(ValueId id, bool parallel);
  // max_pool2d `id` of one sample, whose input is `input`, the sample's
  // [C, H*W] (type `inputType`).
  void emitSamplePool(ValueId id, const std::string &sample, const std::string &input,
                      const std::string &inputType);
  void emitScatterForm(ValueId id, bool parallel);
  // Average pooling's divisor at output position `out` over input spatial
  // shape `xs`: shared by the forward pool and its scatter-form gradient.
  std::string avgPoolDivisor(const Node &n, const Index &out, const Shape &xs, DType dt);
  void zeroChunk(ValueId id, bool parallel);
  void accumulate(ValueId id, const Index &idx, const std::string &v);
  // An arena byte offset as an SSA value: an argument of the kernel's
  // function, or a constant (LoweringTarget::offsetArguments).
  std::string arenaOffsetValue(int64_t bytes);
  std::vector<int64_t> offsets_;
  std::string inBounds(const std::string &v, int64_t size);
  std::string clampIndex(const std::string &v, int64_t size);
  std::string windowCoordinate(const std::string &out, const std::string &tap,
                               int64_t stride, int64_t padding, int64_t dilation);

  const Graph &g_;
  const FusionGroup &group_;
  const std::function<int64_t(ValueId)> &arenaOffset_;
  const std::vector<bool> &usedOutside_;
  std::set<ValueId> inGroup_;
  std::map<ValueId, std::string> views_;  // materialized values
  // The roots of the elementwise nest being emitted: in memory only once the
  // nest has ended, so a read of one at another index computes it (valueAt).
  std::set<ValueId> nestRoots_;
  MlirWriter w_;
  std::string globals_;
  std::set<std::string> globalNames_;
  std::string begin_ = "%begin", end_ = "%end";
  // Where roots only this kernel reads live (KernelSource::scratchBytes).
  int64_t scratchOffset_ = 0;
  LoweringTarget target_;
  // The arithmetic of elementwise ops, scalar and vector (element_rules.h).
  ElementRules rules_{w_, target_.ownF32Polynomials};
  // One thread per element (LoweringTarget::Parallel): a nest's parallel
  // openLoops call is flattened: no loops, %begin is the thread's flat index
  // into `flatExtent_` elements.
  bool flattened_ = false;
  int64_t flatExtent_ = 1;
  // Per openLoops call: the indices it gave and the scf.for loops it opened.
  struct OpenedLoops {
    size_t loops, indices;
  };
  std::vector<OpenedLoops> openedLoops_;
  // Index checks: the record, this kernel's checks by the node they guard,
  // and the nodes whose indices are checked in a nest of their own before
  // the roots (see precheckable).
  FaultRecord fault_;
  double perturbation_ = 0;
  std::vector<IndexCheck> checks_;
  std::map<ValueId, int64_t> checkOf_;
  std::set<ValueId> prechecked_;
  std::vector<IndexCheck> kernelChecks(const std::string &kernel) const;
};


} // namespace stepc::codegen
