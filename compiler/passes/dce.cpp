// Dead-code elimination: a node lives when an output or a param update needs
// it, directly or through its users. Everything else goes, including the
// gradient branches of a grad() or trainStep() graph whose results nobody
// reads. Inputs and params always stay: they are the graph's interface.
#include "graph_passes.h"
#include "rewrite.h"

namespace stepc::passes {

bool eliminateDeadCode(Graph &graph) {
  std::vector<bool> live(graph.size(), false);
  for (const GraphOutput &out : graph.outputs)
    live[out.value] = true;
  for (const ParamUpdate &update : graph.updates)
    live[update.value] = true;
  // Users come after their operands, so one backward sweep reaches the fixed
  // point.
  for (size_t id = graph.size(); id-- > 0;)
    if (live[id])
      for (ValueId operand : graph.nodes[id].operands)
        live[operand] = true;
  size_t before = graph.size();
  compact(graph, live);
  return graph.size() != before;
}

} // namespace stepc::passes
