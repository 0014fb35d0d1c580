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
namespace {

bool isStridedView(OpKind op) {
  return op == OpKind::Transpose || op == OpKind::Reshape || op == OpKind::BroadcastTo;
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
    // The views q and k^T are read through (a head split: reshape, then
    // transpose) are copied too, down to the value in memory, while the
    // forward reads them only in the pattern: shared by the forward and the
    // recomputed scores they would be read by two kernels, so neither
    // attention kernel could read them in place (fusion claims a view only
    // with all its readers) and a copy kernel would materialize them.
    // Copies of views cost nothing.
    std::set<ValueId> views;
    for (ValueId operand : {p->queries, p->keysT})
      for (ValueId x = operand; isStridedView(graph.node(x).op) && !escaping.count(x);
           x = graph.node(x).operands[0]) {
        bool readInPattern = true;
        for (ValueId user = 0; user < graph.size(); ++user)
          if (user <= p->output && !pattern.count(user) && !views.count(user) &&
              std::count(graph.node(user).operands.begin(), graph.node(user).operands.end(), x))
            readInPattern = false;
        if (!readInPattern)
          break;
        views.insert(x);
      }
    chain.insert(chain.end(), views.begin(), views.end());
    std::sort(chain.begin(), chain.end());
    ValueId place = std::numeric_limits<ValueId>::max();
    bool escapes = false;
    for (ValueId user = 0; user < graph.size(); ++user) {
      if (pattern.count(user) || views.count(user))
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
