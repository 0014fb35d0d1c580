#include "stepc/graph.h"

namespace stepc {

Graph convertFloatType(const Graph &graph, DType from, DType to) {
  Graph out = graph;
  for (Node &node : out.nodes) {
    if (node.type.dtype == from)
      node.type.dtype = to;
    if (const AttrValue *d = node.attrs.find("dtype"))
      if (auto *name = std::get_if<std::string>(d); name && parseDType(*name) == from)
        node.attrs.set("dtype", std::string(dtypeName(to)));
  }
  verify(out);
  return out;
}

} // namespace stepc
