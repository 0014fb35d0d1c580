// Memory planning: one arena for a whole step, with an offset per buffer.
//
// 1. Liveness over the kernel schedule. Params (weights and optimizer state)
//    and inputs (the batch) belong to the caller: they live for the whole
//    step. A kernel's output lives from the kernel that writes it to the last
//    kernel that reads it, or to the end of the step when it is a graph output
//    or a param's new value.
// 2. In-place reuse, where legal (see canOverwrite):
//    - a param's new value is written over the param when nothing reads the
//      old value after the kernel computing the new one (fusion schedules the
//      readers first where it can);
//    - an elementwise output takes over an input of its shape that dies in
//      its kernel and is read there only element by element (never a param's
//      or a graph input's buffer: those belong to the caller).
//    Values sharing a buffer form one "slot" whose lifetime is the union.
// 3. Placement: whole-step slots first, then the rest by decreasing size, each
//    at the lowest 64-byte-aligned offset that overlaps no placed slot alive
//    at the same time (greedy by size, as TFLite's arena planner).
#include "fusion_plan.h"

#include <algorithm>
#include <numeric>

namespace stepc {
namespace {

constexpr int64_t kAlignment = 64;

int64_t alignUp(int64_t x) { return (x + kAlignment - 1) / kAlignment * kAlignment; }

int64_t bytesOf(const Graph &graph, ValueId v) {
  const TensorType &t = graph.type(v);
  return t.numel() * static_cast<int64_t>(dtypeSize(t.dtype));
}

// Whether the op writes element i right after reading its operands at i:
// the only ops that may take over an operand's buffer. Dropout's mask is a
// function of (seed, i), so it reads and writes like an elementwise op.
bool readsAtItsOwnIndex(OpKind op) {
  OpClass opClass = opInfo(op).opClass;
  return opClass == OpClass::Elementwise || opClass == OpClass::Random;
}

// Whether `group` may write `output` over `operand`'s buffer while it runs.
// `output` must be an elementwise node of `operand`'s shape and dtype size,
// so it writes element i right after reading element i. What else may read
// `operand` in the kernel depends on how the kernel runs:
// - One loop nest (no hero, every output of one shape): every element is
//   read and written in the same iteration, and codegen computes all the
//   nest's outputs at an index before it stores any, so any reader at the
//   element's own index (elementwise, same shape) is fine, even one that
//   feeds another output of the nest.
// - Otherwise codegen runs the kernel's roots (outputs, reductions, the
//   matmul) one loop nest after another, recomputing inlined nodes from
//   memory, and a later nest could read `operand` after `output`'s nest
//   overwrote it. Then every path from `operand` inside the kernel must run
//   through elementwise, same-shape nodes that feed only `output`: all reads
//   of `operand` happen while computing `output` (an Adam moment m' =
//   b1 m + (1-b1) g over m, p' = p - ... over p). Readers of `output` itself
//   read its new value, which is what the buffer then holds.
bool canOverwrite(const Graph &graph, const FusionPlan &plan, int group, ValueId operand,
                  ValueId output, const std::vector<std::vector<ValueId>> &users) {
  const Node &out = graph.node(output);
  const TensorType &in = graph.type(operand);
  if (plan.groupOf[output] != group || !readsAtItsOwnIndex(out.op) || out.type.shape != in.shape ||
      dtypeSize(out.type.dtype) != dtypeSize(in.dtype))
    return false;
  const FusionGroup &kernel = plan.groups[group];
  auto inKernel = [&](ValueId v) { return plan.groupOf[v] == group; };
  auto identityRead = [&](ValueId v) {
    return readsAtItsOwnIndex(graph.node(v).op) && graph.type(v).shape == in.shape;
  };

  bool oneLoopNest = kernel.hero < 0;
  for (ValueId o : kernel.outputs)
    oneLoopNest = oneLoopNest && graph.type(o).shape == out.type.shape;
  if (oneLoopNest) {
    for (ValueId u : users[operand])
      if (inKernel(u) && !identityRead(u))
        return false;
    return true;
  }

  std::vector<ValueId> stack;
  std::vector<bool> seen(graph.size(), false);
  for (ValueId u : users[operand])
    if (inKernel(u))
      stack.push_back(u);
  while (!stack.empty()) {
    ValueId v = stack.back();
    stack.pop_back();
    if (seen[v] || v == output)
      continue;
    seen[v] = true;
    bool isOutput =
        std::find(kernel.outputs.begin(), kernel.outputs.end(), v) != kernel.outputs.end();
    if (!identityRead(v) || isOutput)
      return false;
    for (ValueId u : users[v]) {
      if (!inKernel(u))
        return false;
      stack.push_back(u);
    }
  }
  return true;
}

// Phase 1's result: which values have buffers and when each is alive, as
// kernel indices (`end` = after the last kernel).
struct Lifetimes {
  int end = 0;
  std::vector<std::vector<ValueId>> users;
  std::vector<bool> needed, wholeStep, escapes;
  std::vector<int> def, last;
};

// Phase 2's result: values sharing a buffer form one slot.
struct Slot {
  ValueId root;
  int first, last;
  int64_t bytes;
  bool wholeStep;
  int64_t offset = -1;
};
struct Slots {
  std::vector<Slot> slots;
  std::vector<int> slotOf;      // per value, -1 without a buffer
  std::vector<int64_t> reuses;  // per value: the value whose buffer it takes, or -1
};

// 1. Liveness over the kernel schedule.
Lifetimes computeLifetimes(const Graph &graph, const FusionPlan &plan) {
  const size_t n = graph.size();
  Lifetimes l;
  l.end = static_cast<int>(plan.groups.size());
  l.users.assign(n, {});
  for (ValueId v = 0; v < n; ++v)
    for (ValueId o : graph.node(v).operands)
      if (l.users[o].empty() || l.users[o].back() != v)
        l.users[o].push_back(v);
  l.needed.assign(n, false);
  l.wholeStep.assign(n, false);
  l.escapes.assign(n, false);
  l.def.assign(n, l.end);
  l.last.assign(n, -1);
  for (ValueId v = 0; v < n; ++v) {
    OpKind op = graph.node(v).op;
    if (op == OpKind::Parameter || op == OpKind::Input) {
      l.needed[v] = l.wholeStep[v] = true;
      l.def[v] = 0;
      l.last[v] = l.end;
    }
  }
  for (const GraphOutput &o : graph.outputs)
    l.escapes[o.value] = true;
  for (const ParamUpdate &u : graph.updates)
    l.escapes[u.value] = true;
  for (int g = 0; g < l.end; ++g) {
    const FusionGroup &group = plan.groups[g];
    for (ValueId v : group.inputs) {
      l.needed[v] = true;
      l.last[v] = std::max(l.last[v], g);
    }
    for (ValueId v : group.outputs) {
      l.needed[v] = true;
      l.def[v] = g;
      l.last[v] = std::max(l.last[v], l.escapes[v] ? l.end : g);
    }
  }
  // A collective runs asynchronously from its step until the first kernel
  // that reads its result waits for it: the buffer it sends from stays
  // alive until then (at most as long as the result's own buffer).
  for (ValueId v = 0; v < n; ++v)
    if (graph.node(v).op == OpKind::AllReduce && l.needed[v])
      for (ValueId o : graph.node(v).operands)
        l.last[o] = std::max(l.last[o], l.last[v]);
  return l;
}

// 2. In-place reuse, then the slots: a value and every value written over it
// share one buffer, alive over the union of their lifetimes.
Slots shareBuffersInPlace(const Graph &graph, const FusionPlan &plan, const Lifetimes &l) {
  const size_t n = graph.size();
  Slots result;
  std::vector<int64_t> &reuses = result.reuses;
  reuses.assign(n, -1);
  std::vector<bool> taken(n, false); // buffer already handed to a new value
  for (const ParamUpdate &update : graph.updates) {
    ValueId p = update.param, u = update.value;
    int writer = u < n ? plan.groupOf[u] : -1;
    if (writer < 0 || reuses[u] >= 0 || taken[p])
      continue;
    bool laterReader = false;
    for (ValueId r : l.users[p])
      laterReader = laterReader || plan.groupOf[r] > writer;
    if (laterReader || !canOverwrite(graph, plan, writer, p, u, l.users))
      continue;
    reuses[u] = p;
    taken[p] = true;
  }
  for (int g = 0; g < l.end; ++g) {
    const FusionGroup &group = plan.groups[g];
    for (ValueId out : group.outputs) {
      if (reuses[out] >= 0)
        continue;
      for (ValueId in : group.inputs) {
        if (l.wholeStep[in] || taken[in] || l.escapes[in] || l.last[in] != g ||
            !canOverwrite(graph, plan, g, in, out, l.users))
          continue;
        reuses[out] = in;
        taken[in] = true;
        break;
      }
    }
  }

  std::vector<ValueId> root(n);
  std::iota(root.begin(), root.end(), ValueId(0));
  for (ValueId v = 0; v < n; ++v)
    while (reuses[root[v]] >= 0)
      root[v] = static_cast<ValueId>(reuses[root[v]]);
  result.slotOf.assign(n, -1);
  for (ValueId v = 0; v < n; ++v) {
    if (!l.needed[v])
      continue;
    ValueId r = root[v];
    if (result.slotOf[r] < 0) {
      result.slotOf[r] = static_cast<int>(result.slots.size());
      result.slots.push_back({r, l.def[r], l.last[r], bytesOf(graph, r), l.wholeStep[r]});
    }
    Slot &s = result.slots[result.slotOf[r]];
    result.slotOf[v] = result.slotOf[r];
    s.first = std::min(s.first, l.def[v]);
    s.last = std::max(s.last, l.last[v]);
    s.bytes = std::max(s.bytes, bytesOf(graph, v));
  }
  return result;
}

// 3. Placement: sets each slot's offset; returns the arena's size.
int64_t placeSlots(std::vector<Slot> &slots) {
  std::vector<size_t> order(slots.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (slots[a].wholeStep != slots[b].wholeStep)
      return slots[a].wholeStep;
    if (slots[a].wholeStep)
      return slots[a].root < slots[b].root;
    if (slots[a].bytes != slots[b].bytes)
      return slots[a].bytes > slots[b].bytes;
    return slots[a].first < slots[b].first;
  });
  std::vector<size_t> placed;
  int64_t arena = 0;
  for (size_t i : order) {
    Slot &s = slots[i];
    std::vector<std::pair<int64_t, int64_t>> busy; // [begin, end) of overlapping slots
    for (size_t j : placed)
      if (slots[j].first <= s.last && s.first <= slots[j].last)
        busy.push_back({slots[j].offset, slots[j].offset + slots[j].bytes});
    std::sort(busy.begin(), busy.end());
    int64_t offset = 0;
    for (auto [begin, stop] : busy) {
      if (offset + s.bytes <= begin)
        break;
      offset = std::max(offset, alignUp(stop));
    }
    s.offset = offset;
    placed.push_back(i);
    arena = std::max(arena, offset + s.bytes);
  }
  return arena;
}

// What the slots alive at `kernel` hold (PeakBreakdown). A slot shared in
// place counts as the value it holds there: the one written last by then.
PeakBreakdown breakdownAt(const Graph &graph, const Lifetimes &l, const Slots &shared,
                          int kernel) {
  const size_t n = graph.size();
  std::vector<bool> forward = valuesBehindOutputs(graph); // the graph's outputs are computed from it
  std::vector<bool> newValue(n, false);
  for (const ParamUpdate &u : graph.updates)
    newValue[u.value] = true;

  PeakBreakdown peak;
  peak.kernel = kernel;
  std::vector<ValueId> holder(shared.slots.size(), static_cast<ValueId>(n));
  for (ValueId v = 0; v < n; ++v) {
    int s = shared.slotOf[v];
    if (s < 0 || l.def[v] > kernel || (!l.wholeStep[v] && l.last[v] < kernel))
      continue;
    ValueId &h = holder[s];
    if (h == n || l.def[v] >= l.def[h])
      h = v;
  }
  for (size_t s = 0; s < shared.slots.size(); ++s) {
    const Slot &slot = shared.slots[s];
    ValueId v = holder[s];
    if (v == n || slot.first > kernel || slot.last < kernel)
      continue;
    OpKind op = graph.node(slot.root).op;
    int64_t &kind = op == OpKind::Input        ? peak.inputs
                    : op == OpKind::Parameter  ? (forward[slot.root] ? peak.params
                                                                     : peak.optimizerState)
                    : l.def[v] == kernel       ? peak.written
                    : forward[v]               ? peak.activations
                    : newValue[v]              ? peak.newValues
                                               : peak.gradients;
    kind += slot.bytes;
    if (!slot.wholeStep)
      peak.held.push_back(v);
  }
  std::stable_sort(peak.held.begin(), peak.held.end(), [&](ValueId a, ValueId b) {
    return bytesOf(graph, a) > bytesOf(graph, b);
  });
  return peak;
}

} // namespace

BufferPlan planBuffers(const Graph &graph, const FusionPlan &plan) {
  Lifetimes lifetimes = computeLifetimes(graph, plan);
  Slots shared = shareBuffersInPlace(graph, plan, lifetimes);
  std::vector<Slot> &slots = shared.slots;
  BufferPlan result;
  result.arenaBytes = placeSlots(slots);
  for (ValueId v = 0; v < graph.size(); ++v)
    if (lifetimes.needed[v])
      result.buffers.push_back(
          {v, slots[shared.slotOf[v]].offset, bytesOf(graph, v), shared.reuses[v]});

  // The bound: every whole-step slot, plus the most bytes of other slots
  // alive at any one kernel.
  int64_t resident = 0, peak = 0;
  for (const Slot &s : slots)
    if (s.wholeStep)
      resident += s.bytes;
  int peakKernel = -1;
  for (int g = 0; g < lifetimes.end; ++g) {
    int64_t alive = 0;
    for (const Slot &s : slots)
      if (!s.wholeStep && s.first <= g && g <= s.last)
        alive += s.bytes;
    if (peakKernel < 0 || alive > peak) {
      peak = alive;
      peakKernel = g;
    }
  }
  result.liveLowerBound = resident + peak;
  result.peak = breakdownAt(graph, lifetimes, shared, peakKernel);
  return result;
}

} // namespace stepc
