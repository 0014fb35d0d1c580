// Fusion: partitioning a graph into kernels (FusionGroups), and planning the
// memory those kernels use (compiler/passes). Codegen lowers one FusionGroup
// to one kernel; the runtime runs them in order over one arena.
//
// How a kernel computes its nodes (the contract codegen implements; the rules
// in fusion.cpp only form groups that fit it):
// - Loop / MultiOutput: one loop over the iteration space (the outputs' shape,
//   all outputs have its element count). Each computed node is evaluated once
//   per iteration point from its in-kernel operands at the same point.
// - Reduction: the reductions in the group all reduce the same axes of the
//   same shape. For each point of the kept axes ("row"), the kernel runs the
//   reductions in dependency order over the reduced axes, then computes the
//   row's reduced-shape nodes and its full-shape nodes (which may read the
//   row's reduced values broadcast back).
// - Epilogue: one matmul/conv (the hero) whose operands come from memory; the
//   elementwise nodes after it run on each result element it produces.
// - Attention: the nodes of one attention pattern (matchAttention below) and
//   strided views of its operands; the kernel computes only the output, tile
//   by tile with an online softmax, so the scores and probabilities it
//   computes along the way are never stored.
// - Views (broadcast_to, reshape, transpose, slice, pad, one_hot) of values in
//   memory are index maps: a node reads such a view by computing the index it
//   needs in the underlying buffer; the view is never materialized unless it
//   is itself an output. A matmul/conv takes only strided views (reshapes of
//   the buffer, then transposes, broadcasts, slices) as operands: this is how
//   a transpose feeding a matmul becomes the matmul's operand indexing.
// - Inside a kernel, a computed node reads another computed node only at its
//   own iteration point (same shape), or a row's reduced value broadcast back
//   over the row; anything else goes through memory between two kernels.
// - Uniform values: scalar nodes computed from scalars only (a learning-rate
//   correction); computed once per kernel, never an output of a bigger kernel.
// - Constants and iotas belong to no group: every kernel that reads one
//   computes it itself (FusionGroup::constants), so they need no buffer.
// Which nodes a kernel stores and in which loop nests is its KernelPlan
// (planKernel below), which codegen carries out.
#pragma once

#include "stepc/graph.h"

#include <functional>
#include <optional>
#include <map>
#include <string>
#include <vector>

namespace stepc {

enum class FusionKind {
  Single,    // one op alone (the unfused mode, or nothing to fuse with)
  Loop,      // elementwise/broadcast chain: one loop nest
  Reduction, // elementwise producers folded into the reduction reading them
  Epilogue,  // matmul/conv with elementwise ops applied to its result
  MultiOutput, // siblings sharing inputs, e.g. an optimizer's param/moments update
  Attention, // softmax(q k^T [* scale] [causal select]) v as one tiled kernel (matchAttention)
};
// "single", "loop", "reduction", "epilogue", "multi-output", "attention"
std::string_view fusionKindName(FusionKind kind);

// How a kernel computes its group (planKernel below): the nodes it stores
// (its roots) and the loop nests that compute them, one after another. Every
// other node of the group is inlined into the nests that read it: computed
// from its operands at the index the reader needs, never stored.
enum class NestKind {
  Elementwise, // roots of one shape that could be inlined (isInlinable: an
               // output, or a matmul operand stored row-major), in one loop
               // over it (an optimizer's parameter and moment updates: one
               // pass over memory)
  Reduction,   // one reduction or argmax
  Contraction, // one matmul or convolution (or a convolution's gradient)
  Window,      // one pooling or pooling gradient
  Scatter,     // one scatter_add
  Attention,   // an Attention group's output by the online softmax, which
               // also stores the row max and sum where others read them
  Collective,  // all_reduce: no code, a runtime call between kernels
  Rows,        // a Reduction kernel whose reductions all reduce the last
               // axis of one shape [..., N] (layer norm, softmax, cross-
               // entropy and their gradients): every root, row by row, the
               // reductions first over the row, then the row's other roots,
               // while the row is in cache (one pass over memory; rowKernel
               // in kernel_plan.cpp says when)
  Columns,     // a Reduction kernel whose reductions all reduce the leading
               // axes of one shape [R..., C...] (bias and layer-norm
               // parameter gradients) and whose other roots end in C (the
               // optimizer's update after them): threads split the columns
               // (blocks of 16 along C's last axis), each computing every
               // root on its own columns, the reductions first, streaming
               // the rows in order (columnKernel in kernel_plan.cpp says
               // when; lowering_columns.cpp)
};
// "elementwise", "reduction", "contraction", "window", "scatter",
// "attention", "collective", "rows", "columns"
std::string_view nestKindName(NestKind kind);

struct LoopNest {
  NestKind kind = NestKind::Elementwise;
  std::vector<ValueId> roots; // Elementwise: one or more of one shape; else one
  // Contraction of a matmul or conv2d: the roots of all the later nests,
  // when these are all Elementwise and of the product's shape, to compute
  // on each register tile of the product before it is stored, where the
  // target can
  // (KernelTarget::tileEpilogue: it has a register tile for these dtypes,
  // operand layouts and ops; the GPU has none): its epilogue. The kernel
  // then computes those roots there, and the later nests are not run on
  // their own. Empty: the later nests run after the product.
  std::vector<ValueId> epilogue;
  // Contraction of a matmul: per operand, whether the target's register-
  // tiled matmul reads it in place through strides (KernelTarget::
  // stridedOperands): the stored value itself, or a transpose, reshape,
  // slice or broadcast of one (the layout it is read in). False: the kernel
  // reads a row-major buffer, the operand's own where it is stored (the
  // GPU's matmul, an untiled product), else the copy an earlier nest of the
  // kernel stores (a root).
  std::vector<bool> stridedOperands;
  // Contraction of a conv2d whose kernel ends in a max_pool2d (fusion's
  // exception to rule "opaque"): that pool, when the target computes it
  // sample by sample right after each sample's tiles (KernelTarget::
  // tileEpilogue, asked with the pool's input among the epilogue values
  // when that input is computed in the kernel), reading its input while it
  // is in cache. `epilogue` then holds the later roots but the pool, and
  // the nest computes every later root as above.
  std::optional<ValueId> samplePool;
};

struct KernelPlan {
  // In the group's order; the nests' roots in this order, but for an
  // Attention kernel, whose nest stores the others it has among them.
  std::vector<ValueId> roots;
  std::vector<LoopNest> nests;
  // Threads split every nest by dimension 0 of the roots, each computing
  // its own rows: every root has that dimension 0, and a value computed in
  // the kernel is read only in the row it was written in (see rowLocal in
  // kernel_plan.cpp). Else the kernel runs on one thread. An Attention
  // kernel is always split, by its units instead (a batch entry's block of
  // query rows, each owning whole rows of the output, row max and sum;
  // lowering_attention.cpp), and so is a Columns kernel, by its blocks of
  // columns (lowering_columns.cpp).
  bool rowParallel = false;
};

// One kernel: a set of nodes computed together.
struct FusionGroup {
  std::string name;             // "k3_matmul_add_relu": index + main ops
  FusionKind kind = FusionKind::Single;
  std::vector<ValueId> nodes;   // topological order
  std::vector<ValueId> inputs;  // values the kernel reads from outside (buffers)
  std::vector<ValueId> outputs; // values it writes for later kernels or the caller
  // Constant and iota nodes the kernel reads; it computes them itself (they
  // are in no group's `nodes` and never in `inputs`).
  std::vector<ValueId> constants;
  // The matmul/conv of an Epilogue group, the first reduction of a Reduction
  // group, or -1.
  int64_t hero = -1;
  int64_t bytesRead = 0;        // inputs' sizes, plus constants stored as data
  int64_t bytesWritten = 0;     // sum of the output values' sizes
  // How the kernel computes the nodes: empty until planKernels.
  KernelPlan kernel;
};

// A fusion the rules refused, for --why-not-fused.
struct FusionRefusal {
  // An edge producer -> consumer, or for sibling fusion two nodes (one of
  // each group) that read a common value; the rule then starts "siblings".
  ValueId producer, consumer;
  // The rule that refused it: "%16 (reduce_max) reduces the result of %14
  // (matmul): a reduction needs the matmul's whole result"
  std::string rule;
};

struct FusionOptions {
  bool enabled = true;  // false: every op is its own kernel (--no-fusion)
  // Attention patterns (matchAttention) become one Attention kernel where
  // nothing outside reads the scores or probabilities. Only the CPU emitter
  // has that kernel: the CUDA target turns this off.
  bool attention = true;
  size_t maxInputs = 16; // bound on one kernel's distinct inputs
  // Fusion bisection (`stepc bisect-fusion`): when set, only these groups of
  // the full plan (their indices in planFusion's result without this field,
  // which is also their "kN" in the names) stay fused; every other group is
  // split back into one-op kernels. Splitting keeps the kernel graph acyclic:
  // a cycle through single ops would have been one through groups before.
  std::optional<std::vector<size_t>> fusedGroups = std::nullopt;
};

struct FusionPlan {
  std::vector<FusionGroup> groups; // in execution order
  std::vector<FusionRefusal> refusals;
  // For each value, the group computing it (-1 for inputs, params and
  // constants that no kernel computes).
  std::vector<int> groupOf;
};

// Attention written out as the `attention` composite expands it, or by hand:
//   output = matmul(div(e, reduce_sum(e)), values), e = exp(sub(x, reduce_max(x)))
//   x = [select(causal, ] scores [* scale | / scale] [, fill)]
//       or select(future, fill, scores [* scale | / scale]) (masked_fill in ONNX)
//   scores = matmul(queries, keysT)
// with the reductions over the last axis (keepdims), f32 throughout, the
// scale and fill scalar constants (the fill -inf or at most -1e9: the kernel
// skips key blocks past the diagonal, which is exact only where exp(fill -
// row max) is 0), `causal` the mask of key j <= query i
// (a bool constant, or le(iota axis 1, iota axis 0)) and `future` its
// negation (j > i: a bool constant, or gt(iota axis 1, iota axis 0)). An Attention kernel
// computes `output` tile by tile with an online softmax, so the scores and
// probabilities are never stored.
struct AttentionPattern {
  ValueId queries = 0, keysT = 0, values = 0; // the operands, [..., T, D] [..., D, Tk] [..., Tk, Dv]
  ValueId scores = 0, output = 0;             // the two matmuls
  // The softmax's reduce_max and reduce_sum ([..., Tq, 1]): the only nodes
  // besides the output that others may read (the kernel then stores them).
  ValueId rowMax = 0, rowSum = 0;
  enum class Scale { None, Mul, Div } scaleOp = Scale::None;
  double scale = 1;
  bool causal = false;
  ValueId mask = 0;              // with causal: the select's condition
  double fill = 0;               // the masked scores' value, with causal
  std::vector<ValueId> computed; // scores .. output, the nodes a kernel computes (sorted)
};
// The kernel walks the keys in blocks of kAttentionKeyBlock, packing each
// block of k^T (and of v where v's rows are not contiguous) on the stack,
// and the queries in blocks of kAttentionQueryBlock rows (rounded up to the
// register tile's), whose output accumulators stay on the stack: padded to
// 16 floats, (D + Dv) * key block + (query block + 16) * Dv floats at most
// kAttentionMaxStackFloats (192 KiB), or no match. Tk is not bounded.
constexpr int64_t kAttentionKeyBlock = 64;
constexpr int64_t kAttentionQueryBlock = 64;
constexpr int64_t kAttentionMaxStackFloats = 49152;
constexpr double kAttentionLargestFill = -1e9;
std::optional<AttentionPattern> matchAttention(const Graph &graph, ValueId output);

// The backward pass autodiff writes for an attention pattern whose
// probabilities the backward recomputes (recomputeAttentionProbabilities):
//   dP = matmul(dO, vT), dV = matmul(transpose(P), dO)
//   G = mul(add(div(dP, l), broadcast(reduce_sum(neg(div(mul(dP, P), l))))), E)
//   dX = add(G, M), M = max's share: div(mul(hit, broadcast(reduce_sum(neg(G)))),
//        broadcast(reduce_sum(hit))), hit = cast(eq(X, broadcast(m)))
//   dS = [select(causal, dX, 0)] [* scale | / scale]
//   dQ = matmul(dS, keys), dKT = matmul(queriesT, dS)
// with P = div(E, l), E = exp(sub(X, m)), X as in AttentionPattern computed
// again from queries and keysT, m and l the forward's row max and sum. M is
// 0 (rowsum(G) = rowsum(P dP) - rowsum(P) rowsum(P dP) and rowsum(P) = 1),
// so dS = P (dP - rowsum(P dP)) [scaled, masked]: an Attention kernel whose
// hero is dQ computes dQ, dKT and dV from the operands without storing any
// [Tq, Tk] matrix (lowering_attention_backward.cpp).
struct AttentionBackwardPattern {
  AttentionPattern recomputed; // queries, keysT, scale, causal, mask, fill of X
  ValueId rowMax = 0, rowSum = 0;
  ValueId gradOutput = 0; // dO [..., Tq, Dv]
  ValueId valuesT = 0;    // [..., Dv, Tk], dP's second operand
  ValueId keys = 0;       // [..., Tk, D], dQ's second operand
  ValueId queriesT = 0;   // [..., D, Tq], dKT's first operand
  ValueId gradQueries = 0, gradKeysT = 0, gradValues = 0; // the three products
  std::vector<ValueId> computed; // every node above but m, l and the operands (sorted)
};
// Tk bounded so that a tile of query rows keeps its rows of P and dP on the
// stack: 2 x (register tile rows) x Tk (padded to 64) floats at most
// kAttentionMaxStackFloats / 2.
std::optional<AttentionBackwardPattern> matchAttentionBackward(const Graph &graph,
                                                               ValueId gradQueries);

// The strides of a reshape of a strided view, where strides can express it
// (numpy's rule): each run of old dimensions that merges into new ones must
// be contiguous within itself. Dimensions of size 1 take any stride.
std::optional<std::vector<int64_t>> reshapeStrides(const Shape &from,
                                                   const std::vector<int64_t> &fromStrides,
                                                   const Shape &to);

// Where an Attention kernel stores one of its results (the pattern's
// output, or a backward pattern's dQ, d(k^T) or dV). The kernel also holds
// the transposes and reshapes that are the result's only readers, one after
// another (a head merge [B,H,T,D] -> [B,T,H,D] -> [B,T,H*D]: claimAttention
// takes them), and stores the last of them, `stored`, row-major: result
// element i is element sum_d i[d] * strides[d] of it. So no kernel copies
// the result into the layout its readers want. Without such views `stored`
// is the result itself.
struct AttentionStore {
  ValueId stored = 0;
  std::vector<int64_t> strides;
};
AttentionStore attentionStore(const Graph &graph, const std::vector<ValueId> &groupNodes,
                              ValueId result);

// Throws stepc::Error when options.fusedGroups names a group the full plan
// does not have.
FusionPlan planFusion(const Graph &graph, const FusionOptions &options = {});

// What the target's kernels can do, for the plan to decide with
// (codegen::kernelTarget gives the CPU's and the GPU's).
struct KernelTarget {
  // For matmul `product` of `group`: per operand, whether the target's
  // matmul reads it in place as a strided view (LoopNest::stridedOperands).
  std::function<std::vector<bool>(const Graph &, const FusionGroup &, ValueId product)>
      stridedOperands;
  // For the Contraction nest of `product` (a matmul or conv2d) of `group`,
  // whose kernel stores `roots`: whether the target computes `epilogue` (the
  // later roots, elementwise, of the product's shape, few enough) on the
  // product's register tile. Its answer is the plan's LoopNest::epilogue:
  // codegen carries it out and never refuses it.
  std::function<bool(const Graph &, const FusionGroup &, const std::vector<ValueId> &roots,
                     ValueId product, const std::vector<ValueId> &epilogue)>
      tileEpilogue;
  // Whether the target runs NestKind::Rows nests (the CPU; the GPU's
  // kernels run one nest per function, one thread per element).
  bool rowKernels = false;
  // Whether the target runs NestKind::Columns nests (the CPU).
  bool columnKernels = false;
};
// Whether a node of this op can be inlined into the nests that read it
// (its value at an index is a cheap function of its operands' values at
// indices computable there), from its class in ops.def; else it is a root.
bool isInlinable(OpKind op);
// For each value, whether a kernel other than its own (or the caller: graph
// outputs, parameter updates) reads it: such values are stored.
std::vector<bool> usedOutsideGroup(const Graph &graph, const FusionPlan &plan);
// How `group` is computed (compiler/passes/kernel_plan.cpp). Its roots are
// the nodes others read (usedOutside), the nodes of classes that cannot be
// inlined (ops.def: reductions, contractions, windows, scatters,
// collectives), and the matmul operands the target cannot read in place
// (stored row-major once); an Attention group's are its output and what
// others read of it.
KernelPlan planKernel(const Graph &graph, const FusionGroup &group,
                      const std::vector<bool> &usedOutside, const KernelTarget &target);
// planKernel for every group of the plan.
void planKernels(const Graph &graph, FusionPlan &plan, const KernelTarget &target);

// The smallest set of fused groups whose fusion explains a failure, by
// bisection (compiler/passes/fusion_bisect.cpp). `candidates` are group
// indices in plan order; `fails(set)` builds and runs the graph with only
// `set` fused (sorted, a subset of the candidates) and says whether the
// result is wrong. The caller has seen fails(candidates) and knows that
// fails({}) is false. Under the assumption that fusing more groups never
// hides a failure: the first failing prefix of the candidates is found by
// binary search, its last group is a culprit; then the same search runs
// over the groups before it with the culprits found so far always fused,
// until the culprits fail alone. One culprit takes at most
// ceil(log2(candidates)) + 1 probes; each further one (several faults that
// only together pass the tolerance, or independent ones) as many again. The
// result is 1-minimal: leaving out any one of its groups passes.
std::vector<size_t> bisectFusedGroups(
    const std::vector<size_t> &candidates,
    const std::function<bool(const std::vector<size_t> &)> &fails);

// One value's place in the arena.
struct Buffer {
  ValueId value;
  int64_t offset = 0;
  int64_t bytes = 0;
  // The value shares the buffer of this one (in-place reuse), or -1.
  int64_t reuses = -1;
};

// What the buffers alive at one kernel hold, by kind. Params the graph's
// outputs are computed from are `params`; the other params (Adam's moments,
// step counters) `optimizerState`. Kernel-written values: the kernel's own
// outputs are `written`; of the rest, those the outputs are computed from
// are `activations`, params' new values not written over their param are
// `newValues`, and everything else (the backward pass) `gradients`.
struct PeakBreakdown {
  int kernel = -1; // the kernel where the most bytes are alive; -1: no kernel
  int64_t params = 0, optimizerState = 0, inputs = 0;
  int64_t activations = 0, gradients = 0, newValues = 0, written = 0;
  std::vector<ValueId> held; // kernel-written values alive there, largest first
  int64_t live() const {
    return params + optimizerState + inputs + activations + gradients + newValues + written;
  }
};

struct BufferPlan {
  std::vector<Buffer> buffers; // every value a kernel reads or writes
  int64_t arenaBytes = 0;      // peak: the arena's size
  // Lower bound for comparison: params + optimizer state + one batch + the
  // largest set of activations alive at once (buffers shared in place count
  // once).
  int64_t liveLowerBound = 0;
  // The kernel where the most bytes are alive (liveLowerBound of them) and
  // what they are; the arena is that plus the gaps placement leaves.
  PeakBreakdown peak;
};

// Liveness over the kernel schedule; one arena with offsets; in-place reuse
// where legal (elementwise outputs over dead inputs, param updates over the
// param). Params and inputs live for the whole step. Codegen's side of the
// in-place contract: a loop nest reads element i of an overwritten input
// before it writes element i of any of its outputs, and when the kernel is more than one
// loop nest, it reads that input only while computing that output
// (memory_plan.cpp, canOverwrite).
BufferPlan planBuffers(const Graph &graph, const FusionPlan &plan);

// --- Seeing fusion (compiler/passes/fusion_report.cpp) ---------------------
// One row per kernel: name, kind, ops, bytes read and written, source
// locations of its ops (and, for gradient nodes, the forward op they
// differentiate); then, where the kernels are planned (planKernels), one
// "nests" line per kernel with its loop nests. The last line is exactly
//   total: K kernels, B bytes read+written, peak arena P bytes
// `sameCodeAs` (from codegen: LoweredGraph::sameCodeAs by kernel name) marks
// kernels that share the code of an earlier one: "k57 = k9".
std::string fusionReport(const Graph &graph, const FusionPlan &plan,
                         const BufferPlan &buffers,
                         const std::map<std::string, std::string> &sameCodeAs = {});
// Every refused fusion, one per line, with the rule that refused it.
std::string whyNotFused(const Graph &graph, const FusionPlan &plan);
// Graphviz DOT: one cluster per kernel, edges between values.
std::string fusionDot(const Graph &graph, const FusionPlan &plan);

// A kernel's arithmetic, for GFLOP/s and the roofline of `stepc bench
// --per-kernel`. `matrix`: 2 per multiply-add of its matmuls and
// convolutions (and their gradients). `other`: an estimate of one per
// element for every other op that computes (elementwise ops per output
// element, reductions per operand element, pooling and its gradient per
// window tap, scatters per update element); views and gathers move data
// and count nothing.
struct KernelFlops {
  double matrix = 0, other = 0;
  double total() const { return matrix + other; }
};
KernelFlops kernelFlops(const Graph &graph, const FusionGroup &group);
// The same for one node (rematerialization prices a recomputation with it).
KernelFlops nodeFlops(const Graph &graph, ValueId v);

} // namespace stepc
