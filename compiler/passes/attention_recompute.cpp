// Attention in a training step: the backward pass reads the forward's scores
// and probabilities ([..., Tq, Tk] each), which keeps the attention pattern
// from becoming one kernel (fusion claims it only where nothing else reads
// them) and keeps those values alive from the forward pass to the backward.
// This pass copies the chain scores .. probabilities next to its first
// backward reader, computed again from q, k^T and the row max and sum, and
// points the backward's reads at the copies: the forward pattern then runs
// as one attention kernel that stores only its output and the row
// statistics, and the backward recomputes the probabilities (as
// FlashAttention does) with the usual matmul and elementwise kernels.
#include "fusion_plan.h"
#include "stepc/passes.h"

#include <algorithm>
#include <limits>
#include <set>
#include <vector>

namespace stepc {

namespace {

// Copies `chain` (sorted) before node `place`; users at or after `place`
// read the copies. Copies carry remat=mark, so CSE keeps them apart.
void copyChainBefore(Graph &graph, const std::vector<ValueId> &chain, ValueId place,
                     int64_t mark) {
  constexpr ValueId kNone = std::numeric_limits<ValueId>::max();
  ValueId shift = static_cast<ValueId>(chain.size());
  auto moved = [&](ValueId v) { return v < place ? v : v + shift; };
  std::vector<ValueId> copyOf(graph.size(), kNone);
  std::vector<Node> nodes;
  nodes.reserve(graph.size() + shift);
  for (ValueId id = 0; id < graph.size(); ++id) {
    if (id == place) {
      for (ValueId x : chain) {
        Node copy = graph.node(x);
        copy.name.clear();
        copy.attrs.set("remat", mark);
        for (ValueId &o : copy.operands)
          o = copyOf[o] != kNone ? copyOf[o] : o;
        copyOf[x] = static_cast<ValueId>(nodes.size());
        nodes.push_back(std::move(copy));
      }
    }
    Node node = graph.node(id);
    for (ValueId &o : node.operands)
      o = id >= place && copyOf[o] != kNone ? copyOf[o] : moved(o);
    nodes.push_back(std::move(node));
  }
  graph.nodes = std::move(nodes);
  for (GraphOutput &o : graph.outputs)
    o.value = moved(o.value);
  for (ParamUpdate &u : graph.updates) {
    u.param = moved(u.param);
    u.value = moved(u.value);
  }
  graph.reindexNames();
}

} // namespace

bool recomputeAttentionProbabilities(Graph &graph) {
  int64_t mark = 1;
  for (const Node &node : graph.nodes)
    if (node.attrs.has("remat"))
      mark = std::max(mark, node.attrs.getInt("remat") + 1);
  bool changed = false;
  // One pattern at a time: a copy renumbers the nodes after it.
  for (ValueId v = 0; v < graph.size(); ++v) {
    std::optional<AttentionPattern> p = matchAttention(graph, v);
    if (!p)
      continue;
    std::set<ValueId> pattern(p->computed.begin(), p->computed.end());
    std::vector<ValueId> chain;
    for (ValueId u : p->computed)
      if (u != p->output && u != p->rowMax && u != p->rowSum)
        chain.push_back(u);
    std::set<ValueId> escaping;
    for (const GraphOutput &o : graph.outputs)
      escaping.insert(o.value);
    for (const ParamUpdate &u : graph.updates)
      escaping.insert(u.value);
    ValueId place = std::numeric_limits<ValueId>::max();
    bool escapes = false;
    for (ValueId user = 0; user < graph.size(); ++user) {
      if (pattern.count(user))
        continue;
      for (ValueId o : graph.node(user).operands)
        if (std::binary_search(chain.begin(), chain.end(), o))
          place = std::min(place, user);
    }
    for (ValueId x : chain)
      escapes = escapes || escaping.count(x);
    if (escapes || place == std::numeric_limits<ValueId>::max())
      continue;
    copyChainBefore(graph, chain, place, mark++);
    changed = true;
  }
  return changed;
}

} // namespace stepc
