// Cheap activations in a training step: recomputed in the backward pass
// instead of stored by the forward (what PyTorch's min-cut partitioner does).
//
// A forward kernel stores every value a later kernel reads. For tanh-GELU the
// backward reads up, 0.5*up, tanh(...), 1+tanh and 1-tanh^2 (fusion pulls
// that last one, which needs forward values only, into the forward kernel),
// so the forward matmul kernel writes six [B,T,4W] tensors, too many for its
// register tile (kernel_plan.cpp, tileEpilogue), and the backward reads them
// all back. Each of them is a few elementwise ops of `up`, which the backward
// reads anyway.
//
// The rule, over the fused plan (planFusion) of a graph with outputs and a
// backward pass:
// - The forward pass is what the graph's outputs (the loss) need; the rest is
//   the backward pass (and the optimizer).
// - A forward kernel G is a group holding a forward node. A value v that G
//   stores (a kernel outside G reads it) is recomputed for those readers when
//   * v is elementwise or a view, and none of its outside readers is in a
//     kernel holding a forward node (the forward keeps what it reads itself)
//     nor needs it in memory (a matmul operand, a gather's table: only
//     elementwise ops, views and reductions compute it where they read it);
//   * its chain in G (v and the values of G it is computed from, back to
//     leaves) has at most kMaxChain elementwise/view ops (constants are
//     copied too) and at most kMaxLeaves leaves besides graph inputs and
//     params; a leaf is a value another kernel stored or one G stores and
//     keeps; the walk fails at a matmul, reduction or other op G computes
//     and does not store (GELU's `up` is a leaf because the backward reads
//     it too; where it did not, nothing would be recomputed);
//   * each leaf that is not an input or param is alive at every kernel
//     reading v anyway (read there or later), so no tensor lives longer.
//   G's values are decided in order: one that fails is kept, and is a leaf
//   for those after it.
// - Each backward kernel H reading recomputed values of G gets one copy of
//   their chains (remat=N), placed before H's first node so that fusion puts
//   it into H (rule "recomputation runs late"), and its reads point at the
//   copies. The originals nothing reads any more are erased.
// The copies compute the same ops on the same operands as the originals (in
// the interpreter bit-identical; compiled, a copy in another kernel may be
// vectorized differently, so equal up to rounding); the remat mark keeps CSE from merging them
// back (this runs after the pipeline, as attention_recompute.cpp does).
// The number of values the step keeps in memory only falls: G stores fewer,
// the leaves were alive at H anyway, and the copies live inside H.
#include "fusion_plan.h"
#include "rewrite.h"
#include "stepc/passes.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <vector>

namespace stepc {
namespace {

// Bounds on one value's chain: recomputing long chains, or from many
// tensors, costs the backward kernel more than the forward saves.
constexpr size_t kMaxChain = 12;
constexpr size_t kMaxLeaves = 3;

bool isSource(const Graph &graph, ValueId v) {
  return opInfo(graph.node(v).op).opClass == OpClass::Source;
}

// Ops a copy may consist of: each computes an element from its operands'
// elements at that index (or a view of one), so fusion inlines it where it
// is read. Constants and iota are copied with the chain.
bool isCopyable(const Graph &graph, ValueId v) {
  switch (opInfo(graph.node(v).op).opClass) {
  case OpClass::Elementwise:
  case OpClass::View:
  case OpClass::Constant: return true;
  default: return false;
  }
}

// Readers that compute an operand inline where they read it.
bool readsInline(const Graph &graph, ValueId reader) {
  switch (opInfo(graph.node(reader).op).opClass) {
  case OpClass::Elementwise:
  case OpClass::View:
  case OpClass::Reduction: return true;
  default: return false;
  }
}

// A copy set for one backward kernel, in the graph's numbering before the
// rewrite.
struct Insertion {
  ValueId place = 0;           // the copies go just before this node
  std::set<ValueId> copies;    // the chains, ascending
  std::set<ValueId> readers;   // nodes of the backward kernel that read copies
  std::map<ValueId, ValueId> copyOf; // original -> copy id, filled by the rewrite
};

// Inserts every insertion's copies (remat=mark, mark+1, ...) and points their
// readers' operands at the copies, renumbering the graph in one sweep.
void insertAll(Graph &graph, std::vector<Insertion> &insertions, int64_t mark) {
  std::stable_sort(insertions.begin(), insertions.end(),
                   [](const Insertion &a, const Insertion &b) { return a.place < b.place; });
  std::vector<ValueId> newId(graph.size());
  std::map<ValueId, std::vector<size_t>> readerOf;
  for (size_t i = 0; i < insertions.size(); ++i)
    for (ValueId r : insertions[i].readers)
      readerOf[r].push_back(i);
  std::vector<Node> nodes;
  size_t next = 0;
  for (ValueId id = 0; id < graph.size(); ++id) {
    for (; next < insertions.size() && insertions[next].place == id; ++next) {
      Insertion &ins = insertions[next];
      for (ValueId x : ins.copies) {
        Node copy = graph.node(x);
        copy.name.clear();
        copy.attrs.set("remat", mark + static_cast<int64_t>(next));
        for (ValueId &o : copy.operands)
          o = ins.copies.count(o) ? ins.copyOf.at(o) : newId[o];
        ins.copyOf[x] = static_cast<ValueId>(nodes.size());
        nodes.push_back(std::move(copy));
      }
    }
    Node node = graph.node(id);
    auto readers = readerOf.find(id);
    for (ValueId &o : node.operands) {
      ValueId to = newId[o];
      if (readers != readerOf.end())
        for (size_t i : readers->second)
          if (auto it = insertions[i].copyOf.find(o); it != insertions[i].copyOf.end())
            to = it->second;
      o = to;
    }
    newId[id] = static_cast<ValueId>(nodes.size());
    nodes.push_back(std::move(node));
  }
  graph.replaceNodes(std::move(nodes), newId);
}

} // namespace

bool recomputeCheapActivations(Graph &graph, bool attentionKernels) {
  if (graph.outputs.empty() || graph.updates.empty())
    return false;
  size_t n = graph.size();
  // The forward pass: what the outputs need.
  std::vector<bool> forward = valuesBehindOutputs(graph);

  FusionPlan plan = planFusion(graph, {.enabled = true, .attention = attentionKernels});
  const std::vector<int> &groupOf = plan.groupOf;
  int end = static_cast<int>(plan.groups.size());
  std::vector<bool> forwardGroup(plan.groups.size(), false);
  for (ValueId v = 0; v < n; ++v)
    if (forward[v] && groupOf[v] >= 0)
      forwardGroup[groupOf[v]] = true;
  // Readers in other kernels, and the last kernel reading each value.
  std::vector<std::vector<ValueId>> outsideReaders(n);
  std::vector<int> lastGroup(n, -1);
  for (ValueId u = 0; u < n; ++u)
    for (ValueId o : graph.node(u).operands) {
      lastGroup[o] = std::max(lastGroup[o], groupOf[u]);
      if (groupOf[u] != groupOf[o] &&
          (outsideReaders[o].empty() || outsideReaders[o].back() != u))
        outsideReaders[o].push_back(u);
    }
  std::vector<bool> escapes(n, false);
  for (const GraphOutput &o : graph.outputs)
    escapes[o.value] = true;
  for (const ParamUpdate &u : graph.updates)
    escapes[u.value] = true;
  for (ValueId v = 0; v < n; ++v)
    if (escapes[v])
      lastGroup[v] = end;

  // Decided in order: chain[v] is v's chain when v is recomputed.
  std::vector<bool> recomputed(n, false);
  std::map<ValueId, std::set<ValueId>> chainOf;
  for (ValueId v = 0; v < n; ++v) {
    int g = groupOf[v];
    if (g < 0 || !forwardGroup[g] || outsideReaders[v].empty() || escapes[v] ||
        !isCopyable(graph, v))
      continue;
    bool ok = true;
    int lastReaderGroup = -1;
    for (ValueId u : outsideReaders[v]) {
      ok = ok && !forwardGroup[groupOf[u]] && readsInline(graph, u);
      lastReaderGroup = std::max(lastReaderGroup, groupOf[u]);
    }
    std::set<ValueId> chain{v}, leaves;
    std::vector<ValueId> stack{v};
    while (ok && !stack.empty()) {
      ValueId x = stack.back();
      stack.pop_back();
      for (ValueId o : graph.node(x).operands) {
        if (chain.count(o) || leaves.count(o) || isSource(graph, o))
          continue;
        if (groupOf[o] < 0) { // a constant or iota: every kernel computes its own
          chain.insert(o);
          continue;
        }
        bool inG = groupOf[o] == g;
        bool storedAndKept = (!outsideReaders[o].empty() || escapes[o]) && !recomputed[o];
        if (!inG || storedAndKept) {
          // A leaf: read from memory, which must be there at v's readers.
          ok = lastGroup[o] >= lastReaderGroup && leaves.size() < kMaxLeaves;
          leaves.insert(o);
        } else if (isCopyable(graph, o)) {
          chain.insert(o);
          stack.push_back(o);
        } else {
          ok = false; // a matmul, reduction, ... computed in G and not stored
        }
        if (!ok)
          break;
      }
      size_t ops = std::count_if(chain.begin(), chain.end(), [&](ValueId c) {
        return opInfo(graph.node(c).op).opClass != OpClass::Constant;
      });
      ok = ok && ops <= kMaxChain;
    }
    if (!ok)
      continue;
    recomputed[v] = true;
    chainOf[v] = std::move(chain);
  }

  // One insertion per (forward kernel, backward kernel) pair.
  std::map<std::pair<int, int>, Insertion> byPair;
  for (const auto &[v, chain] : chainOf)
    for (ValueId u : outsideReaders[v]) {
      Insertion &ins = byPair[{groupOf[v], groupOf[u]}];
      ins.copies.insert(chain.begin(), chain.end());
      ins.readers.insert(u);
    }
  if (byPair.empty())
    return false;
  std::vector<Insertion> insertions;
  std::vector<ValueId> originals;
  for (auto &[pair, ins] : byPair) {
    // Before the backward kernel's first node, after every operand the
    // copies read, never after the first reader.
    ValueId place = plan.groups[pair.second].nodes.front();
    for (ValueId x : ins.copies)
      for (ValueId o : graph.node(x).operands)
        if (!ins.copies.count(o))
          place = std::max(place, o + 1);
    place = std::min(place, *ins.readers.begin());
    ins.place = place;
    insertions.push_back(std::move(ins));
  }
  for (const auto &[v, chain] : chainOf)
    originals.push_back(v);

  int64_t mark = 1;
  for (const Node &node : graph.nodes)
    if (node.attrs.has("remat"))
      mark = std::max(mark, node.attrs.getInt("remat") + 1);
  // The originals' ids once the copies before them are in.
  std::vector<size_t> shiftBefore(n + 1, 0);
  for (const Insertion &ins : insertions)
    shiftBefore[ins.place] += ins.copies.size();
  for (size_t k = 1; k <= n; ++k)
    shiftBefore[k] += shiftBefore[k - 1];
  insertAll(graph, insertions, mark);
  std::vector<ValueId> moved;
  for (ValueId v : originals)
    moved.push_back(static_cast<ValueId>(v + shiftBefore[v]));
  passes::eraseIfUnused(graph, moved);
  return true;
}

} // namespace stepc
