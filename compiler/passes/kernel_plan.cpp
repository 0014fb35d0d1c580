// How each kernel computes its group (fusion_plan.h, KernelPlan): which
// nodes it stores, the loop nests that compute them, which nests run on a
// matmul's register tile, and whether threads split it by rows. Codegen
// carries the plan out (compiler/codegen/lowering.cpp, KernelEmitter::emit).
#include "fusion_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

namespace stepc {

std::string_view nestKindName(NestKind kind) {
  switch (kind) {
  case NestKind::Elementwise: return "elementwise";
  case NestKind::Reduction: return "reduction";
  case NestKind::Contraction: return "contraction";
  case NestKind::Window: return "window";
  case NestKind::Scatter: return "scatter";
  case NestKind::Attention: return "attention";
  case NestKind::Collective: return "collective";
  case NestKind::Rows: return "rows";
  case NestKind::Columns: return "columns";
  }
  return "?";
}

bool isInlinable(OpKind op) {
  switch (opInfo(op).opClass) {
  case OpClass::Constant:
  case OpClass::Elementwise:
  case OpClass::Random:
  case OpClass::View:
  case OpClass::Indexed: return true;
  case OpClass::Source:
  case OpClass::Reduction:
  case OpClass::Contraction:
  case OpClass::Window:
  case OpClass::Scatter:
  case OpClass::Collective: return false;
  }
  return false;
}

std::vector<bool> usedOutsideGroup(const Graph &graph, const FusionPlan &plan) {
  std::vector<bool> used(graph.size(), false);
  for (size_t id = 0; id < graph.size(); ++id)
    for (ValueId operand : graph.nodes[id].operands)
      if (plan.groupOf[operand] != plan.groupOf[id])
        used[operand] = true;
  for (const GraphOutput &out : graph.outputs)
    used[out.value] = true;
  for (const ParamUpdate &u : graph.updates)
    used[u.value] = true;
  return used;
}

namespace {

// The nest of a root that is not inlinable, by its class.
NestKind rootNestKind(const Node &n) {
  switch (opInfo(n.op).opClass) {
  case OpClass::Constant:
  case OpClass::Elementwise:
  case OpClass::Random:
  case OpClass::View:
  case OpClass::Indexed: return NestKind::Elementwise;
  case OpClass::Reduction: return NestKind::Reduction;
  case OpClass::Contraction: return NestKind::Contraction;
  case OpClass::Window: return NestKind::Window;
  case OpClass::Scatter: return NestKind::Scatter;
  case OpClass::Collective: return NestKind::Collective;
  case OpClass::Source: break;
  }
  throw std::logic_error(
      fmt::format("planKernel: {} belongs to no kernel", opInfo(n.op).name));
}

// Splitting a kernel's roots by their dimension 0 among threads is safe when
// every root has the same dimension 0 and each value computed in the kernel
// is read only at the same dimension-0 index it was written at: then one
// call's rows never need another call's. Elementwise ops over operands of
// the same rank and dimension 0, reductions that keep axis 0, and a matmul's
// left operand read row by row; anything else reads across rows.
// It is also why results do not depend on the thread count (docs/design.md,
// "Determinism"): a call computes whole output elements, each in the order
// the kernel fixes, and no partial sums are combined across calls. A split
// of a reduction (over dimension 0, a scatter along axis 0, a matmul's K)
// would have to use fixed-size chunks combined in chunk order to keep that.
bool rowLocal(const Graph &g, const FusionGroup &group, const std::vector<ValueId> &roots) {
  auto shapeOf = [&](ValueId v) -> const Shape & { return g.type(v).shape; };
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
  for (ValueId id : group.nodes) {
    bool c = false;
    for (ValueId operand : g.node(id).operands)
      c = c || carries.count(operand);
    if (c || rootSet.count(id))
      carries.insert(id);
  }
  for (ValueId id : group.nodes) {
    const Node &n = g.node(id);
    for (size_t k = 0; k < n.operands.size(); ++k) {
      ValueId operand = n.operands[k];
      if (!carries.count(operand))
        continue;
      const Shape &in = shapeOf(operand);
      bool sameRow = !in.empty() && in.size() == n.type.shape.size() && in[0] == n.type.shape[0];
      bool ok = false;
      switch (opInfo(n.op).opClass) {
      // Dropout's mask hashes the element's index in the whole tensor, which
      // a call over some rows computes as the whole loop would.
      case OpClass::Elementwise:
      case OpClass::Random: ok = sameRow; break;
      case OpClass::Reduction: {
        bool keepsAxis0 = true;
        if (n.op == OpKind::ArgMax)
          keepsAxis0 = n.attrs.getInt("axis") != 0;
        else
          for (int64_t a : n.attrs.getInts("axes"))
            keepsAxis0 = keepsAxis0 && a != 0;
        ok = keepsAxis0 && !in.empty() && !n.type.shape.empty() && in[0] == n.type.shape[0];
        break;
      }
      case OpClass::Contraction: ok = n.op == OpKind::MatMul && k == 0 && in.size() == 2 && sameRow; break;
      // A row-major reshape that keeps dimension 0 keeps each row's
      // elements in that row (a matmul's [16,64,256] result as [16,64,4,64]);
      // a broadcast of the same rank that keeps dimension 0 reads each row's
      // values in that row (a layer norm's row sums back over the row).
      case OpClass::View:
        ok = (n.op == OpKind::Reshape || (n.op == OpKind::BroadcastTo && sameRow)) && !in.empty() &&
             !n.type.shape.empty() && in[0] == n.type.shape[0];
        break;
      // A pool reads its own sample's (and channel's) window.
      case OpClass::Window:
        ok = (n.op == OpKind::MaxPool2d || n.op == OpKind::AvgPool2d) && sameRow;
        break;
      case OpClass::Source:
      case OpClass::Constant:
      case OpClass::Indexed:
      case OpClass::Scatter:
      case OpClass::Collective: break;
      }
      if (!ok)
        return false;
    }
  }
  // A scatter along axis 0 writes rows it does not own.
  for (ValueId r : roots)
    if (g.node(r).op == OpKind::ScatterAdd && g.node(r).attrs.getInt("axis") == 0)
      return false;
  return true;
}

// The epilogue of the product `product` (a matmul or conv2d): `later`, the
// roots of the nests after it, when they can all run on its register tile:
// elementwise and of the product's shape (whether the target's tile can
// compute them is KernelTarget::tileEpilogue). However many full-size tensors
// the epilogue streams (an optimizer update reads the gradient's m, v and
// parameter and writes them back), the tile reads each element once, as a row
// sweep after the product would, without storing the product and reading it
// back: on the GPT step's weight gradients with Adam, the sweep after cost
// 8-10% of the kernel, and mlp.sg's Adam step ran 1.4x slower.
std::vector<ValueId> tileEpilogue(const Graph &g, ValueId product, const std::vector<ValueId> &later) {
  const Shape &shape = g.type(product).shape;
  for (ValueId r : later)
    if (!isInlinable(g.node(r).op) || g.type(r).shape != shape)
      return {};
  return later;
}

// Whether `keeps` holds for every node of the group, other than reductions,
// that is a root or reads (through the group) a value that is: what the row
// and column kernels compute in their sweep. `keeps` gets the node and the
// values carried so far (its operands among them are the ones computed in
// the sweep).
bool carriedValuesAll(
    const Graph &g, const FusionGroup &group, const std::vector<ValueId> &roots,
    const std::function<bool(const Node &, const std::set<ValueId> &carries)> &keeps) {
  std::set<ValueId> rootSet(roots.begin(), roots.end());
  std::set<ValueId> carries;
  for (ValueId id : group.nodes) {
    const Node &n = g.node(id);
    bool c = rootSet.count(id) > 0;
    for (ValueId operand : n.operands)
      c = c || carries.count(operand);
    if (!c)
      continue;
    carries.insert(id);
    if (opInfo(n.op).opClass != OpClass::Reduction && !keeps(n, carries))
      return false;
  }
  return true;
}

// Whether a Reduction group computes its roots row by row (NestKind::Rows):
// every reduction is a sum, mean, max or min over the last axis of operands
// of one shape [..., N]; every other root has that shape or the row shape
// ([..., 1] or [...]); and every value computed in the kernel is read only
// in its own row: elementwise ops and broadcasts of the same rank that keep
// all leading dimensions (a row's reduced value broadcast over the row), and
// the reductions themselves. A row's roots then need only that row's values
// of the others, computed just before.
bool rowKernel(const Graph &g, const FusionGroup &group, const std::vector<ValueId> &roots) {
  if (group.kind != FusionKind::Reduction || group.hero < 0)
    return false;
  const Shape full = g.type(g.node(static_cast<ValueId>(group.hero)).operands[0]).shape;
  if (full.empty() || full.back() < 1)
    return false;
  Shape keptRow(full.begin(), full.end() - 1), row = keptRow;
  keptRow.push_back(1);
  int rank = static_cast<int>(full.size());
  for (ValueId r : roots) {
    const Node &n = g.node(r);
    if (opInfo(n.op).opClass == OpClass::Reduction) {
      bool sumOrExtreme = n.op == OpKind::ReduceSum || n.op == OpKind::ReduceMean ||
                          n.op == OpKind::ReduceMax || n.op == OpKind::ReduceMin;
      if (!sumOrExtreme || g.type(n.operands[0]).shape != full ||
          n.attrs.getInts("axes") != std::vector<int64_t>{rank - 1})
        return false;
    } else if (!isInlinable(n.op) ||
               (n.type.shape != full && n.type.shape != keptRow && n.type.shape != row)) {
      return false;
    }
  }
  return carriedValuesAll(g, group, roots, [&](const Node &n, const std::set<ValueId> &carries) {
    bool inRow = opInfo(n.op).opClass == OpClass::Elementwise || n.op == OpKind::BroadcastTo;
    for (ValueId operand : n.operands) {
      if (!carries.count(operand))
        continue;
      const Shape &in = g.type(operand).shape;
      inRow = inRow && in.size() == n.type.shape.size() && !in.empty() &&
              std::equal(in.begin(), in.end() - 1, n.type.shape.begin());
    }
    return inRow;
  });
}

// Whether `shape` ends in the dimensions `columns`.
bool endsWith(const Shape &shape, const Shape &columns) {
  return shape.size() >= columns.size() &&
         std::equal(columns.begin(), columns.end(), shape.end() - columns.size());
}

// Whether a Reduction group computes its roots column by column
// (NestKind::Columns): every reduction is a sum, mean, max or min of one
// shape [R..., C...] over its leading axes R (a bias gradient: [B, T, N]
// over B and T), not of a half type (the kernel accumulates in the output's
// own buffer); every other root is inlinable with a shape ending in C (the
// optimizer's update of that parameter, a full-size gradient); and every
// value computed in the kernel is read only at its own column (its index
// into C): by elementwise ops, broadcasts and reshapes whose operands and
// results end in C (trailing dimensions that match are never broadcast, and
// a row-major reshape between two shapes ending in C keeps every element's
// index into C), and by the
// reductions. Threads can then split the columns: each sums its columns over
// all rows in order, so the result does not depend on the thread count.
// A reduction alone (the unfused mode's kernel) is one too.
bool columnKernel(const Graph &g, const FusionGroup &group, const std::vector<ValueId> &roots) {
  if (group.kind != FusionKind::Reduction && group.kind != FusionKind::Single)
    return false;
  auto sumOrExtreme = [](OpKind op) {
    return op == OpKind::ReduceSum || op == OpKind::ReduceMean || op == OpKind::ReduceMax ||
           op == OpKind::ReduceMin;
  };
  auto first = std::ranges::find_if(roots, [&](ValueId r) { return sumOrExtreme(g.node(r).op); });
  if (first == roots.end())
    return false;
  const Node &reduction = g.node(*first);
  const Shape full = g.type(reduction.operands[0]).shape;
  std::vector<int64_t> axes = reduction.attrs.getInts("axes");
  std::sort(axes.begin(), axes.end());
  if (axes.empty() || axes.size() >= full.size() ||
      std::ranges::any_of(full, [](int64_t d) { return d < 1; }))
    return false;
  for (size_t k = 0; k < axes.size(); ++k)
    if (axes[k] != static_cast<int64_t>(k))
      return false;
  const Shape columns(full.begin() + static_cast<ptrdiff_t>(axes.size()), full.end());
  for (ValueId r : roots) {
    const Node &n = g.node(r);
    if (opInfo(n.op).opClass == OpClass::Reduction) {
      std::vector<int64_t> a = sumOrExtreme(n.op) ? n.attrs.getInts("axes") : std::vector<int64_t>{};
      std::sort(a.begin(), a.end());
      if (a != axes || g.type(n.operands[0]).shape != full || isHalf(n.type.dtype))
        return false;
    } else if (!isInlinable(n.op) || !endsWith(n.type.shape, columns)) {
      return false;
    }
  }
  return carriedValuesAll(g, group, roots, [&](const Node &n, const std::set<ValueId> &carries) {
    OpClass opClass = opInfo(n.op).opClass;
    bool atColumn = (opClass == OpClass::Elementwise || opClass == OpClass::Random ||
                     n.op == OpKind::BroadcastTo || n.op == OpKind::Reshape) &&
                    endsWith(n.type.shape, columns);
    for (ValueId operand : n.operands)
      atColumn = atColumn && (!carries.count(operand) || endsWith(g.type(operand).shape, columns));
    return atColumn;
  });
}

// The max_pool2d that ends a conv2d's kernel (fusion's exception to rule
// "opaque"): the last of the roots after the conv, reading a value of the
// conv's shape.
std::optional<ValueId> poolAfterConv(const Graph &g, ValueId product,
                                     const std::vector<ValueId> &later) {
  if (g.node(product).op != OpKind::Conv2d || later.empty())
    return std::nullopt;
  const Node &pool = g.node(later.back());
  if (pool.op != OpKind::MaxPool2d || g.type(pool.operands[0]).shape != g.type(product).shape)
    return std::nullopt;
  return later.back();
}

} // namespace

KernelPlan planKernel(const Graph &graph, const FusionGroup &group,
                      const std::vector<bool> &usedOutside, const KernelTarget &target) {
  KernelPlan plan;
  // An Attention kernel computes its output with the online softmax and
  // stores the row max and sum where others read them
  // (lowering_attention.cpp): one nest, whose threads split its units (a
  // batch entry's block of query rows) rather than dimension 0. Its results
  // are stored as the views after them that others read (attentionStore).
  if (group.kind == FusionKind::Attention) {
    for (ValueId id : group.nodes)
      if (usedOutside[id])
        plan.roots.push_back(id);
    plan.nests.push_back({NestKind::Attention, {static_cast<ValueId>(group.hero)}, {}, {}, {}});
    plan.rowParallel = true;
    return plan;
  }
  // Matmul operands the target reads only row-major: a computed one is
  // stored so once (a constant the target computes where it reads it).
  std::set<ValueId> inGroup(group.nodes.begin(), group.nodes.end());
  std::map<ValueId, std::vector<bool>> strided;
  std::set<ValueId> copied;
  for (ValueId id : group.nodes) {
    const Node &n = graph.node(id);
    if (n.op != OpKind::MatMul)
      continue;
    strided[id] = target.stridedOperands(graph, group, id);
    for (size_t k = 0; k < n.operands.size(); ++k)
      if (!strided[id][k] && inGroup.count(n.operands[k]) &&
          opInfo(graph.node(n.operands[k]).op).opClass != OpClass::Constant)
        copied.insert(n.operands[k]);
  }
  for (ValueId id : group.nodes)
    if (usedOutside[id] || !isInlinable(graph.node(id).op) || copied.count(id))
      plan.roots.push_back(id);

  const std::vector<ValueId> &roots = plan.roots;
  if (target.rowKernels && rowKernel(graph, group, roots)) {
    plan.nests.push_back({NestKind::Rows, roots, {}, {}, {}});
    plan.rowParallel = rowLocal(graph, group, roots);
    return plan;
  }
  if (target.columnKernels && columnKernel(graph, group, roots)) {
    plan.nests.push_back({NestKind::Columns, roots, {}, {}, {}});
    plan.rowParallel = true;
    return plan;
  }
  // Consecutive inlinable roots of one shape share a loop nest; every other
  // root has one of its own.
  for (size_t i = 0; i < roots.size();) {
    const Node &n = graph.node(roots[i]);
    if (isInlinable(n.op)) {
      size_t j = i + 1;
      while (j < roots.size() && isInlinable(graph.node(roots[j]).op) &&
             graph.type(roots[j]).shape == n.type.shape)
        ++j;
      plan.nests.push_back(
          {NestKind::Elementwise, std::vector<ValueId>(roots.begin() + i, roots.begin() + j), {}, {}, {}});
      i = j;
      continue;
    }
    LoopNest nest{rootNestKind(n), {roots[i]}, {}, {}, {}};
    if (auto it = strided.find(roots[i]); it != strided.end())
      nest.stridedOperands = it->second;
    // A matmul or conv2d (not a scatter-form gradient) may compute the roots
    // after it on its register tile, where the target can.
    if (nest.kind == NestKind::Contraction && !opInfo(n.op).is(kScatterForm) && i + 1 < roots.size()) {
      std::vector<ValueId> later(roots.begin() + i + 1, roots.end());
      if (std::optional<ValueId> pool = poolAfterConv(graph, roots[i], later)) {
        // The tile computes the later roots but the pool, and the pool's
        // input where the kernel computes it.
        later.pop_back();
        std::vector<ValueId> onTile = later;
        ValueId input = graph.node(*pool).operands[0];
        if (input != roots[i] && std::ranges::find(onTile, input) == onTile.end())
          onTile.push_back(input);
        if ((onTile.empty() || tileEpilogue(graph, roots[i], onTile) == onTile) &&
            target.tileEpilogue(graph, group, roots, roots[i], onTile)) {
          nest.epilogue = later;
          nest.samplePool = pool;
        }
      } else {
        nest.epilogue = tileEpilogue(graph, roots[i], later);
        if (!nest.epilogue.empty() &&
            !target.tileEpilogue(graph, group, roots, roots[i], nest.epilogue))
          nest.epilogue.clear();
      }
    }
    plan.nests.push_back(std::move(nest));
    ++i;
  }
  plan.rowParallel = !roots.empty() && rowLocal(graph, group, roots);
  return plan;
}

void planKernels(const Graph &graph, FusionPlan &plan, const KernelTarget &target) {
  std::vector<bool> usedOutside = usedOutsideGroup(graph, plan);
  for (FusionGroup &group : plan.groups)
    group.kernel = planKernel(graph, group, usedOutside, target);
}

} // namespace stepc
