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
#include "rewrite.h"
#include "stepc/passes.h"

#include <algorithm>
#include <limits>
#include <set>
#include <vector>

namespace stepc {

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
    // Only readers after the whole pattern (the backward pass) are served:
    // a copy placed among the pattern's nodes would read values defined
    // after it, and one placed in the forward pass saves nothing.
    if (escapes || place == std::numeric_limits<ValueId>::max() || place <= p->output)
      continue;
    // Every reader from `place` on (the backward pass) reads the copies.
    insertCopiesBefore(graph, chain, place, mark++, [](ValueId, ValueId) { return true; });
    changed = true;
  }
  return changed;
}

} // namespace stepc
