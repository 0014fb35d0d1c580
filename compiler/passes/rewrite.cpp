// Graph surgery shared by the passes: replacing a value's uses, and dropping
// nodes while renumbering the rest.
#include "rewrite.h"

#include <fmt/format.h>

#include <limits>
#include <stdexcept>

namespace stepc {
namespace {

std::string describe(const Graph &graph, ValueId id) {
  const Node &node = graph.node(id);
  return node.name.empty() ? fmt::format("%{} ({})", id, opInfo(node.op).name)
                           : fmt::format("%{} ({})", node.name, opInfo(node.op).name);
}

bool isInterface(const Node &node) {
  return node.op == OpKind::Input || node.op == OpKind::Parameter;
}

} // namespace

void replaceAllUses(Graph &graph, ValueId from, ValueId to) {
  if (from >= graph.size() || to >= graph.size())
    throw std::logic_error(fmt::format("replaceAllUses: %{} -> %{} in a graph of {} nodes",
                                       from, to, graph.size()));
  if (from == to)
    return;
  // A different type would break every user's shape rule; callers that
  // change a shape rewrite the node in place instead.
  if (graph.type(from) != graph.type(to))
    throw std::logic_error(fmt::format("replaceAllUses: {} is {} but {} is {}",
                                       describe(graph, from), typeString(graph.type(from)),
                                       describe(graph, to), typeString(graph.type(to))));
  // Check every user before touching any, so a refused call changes nothing.
  for (ValueId user = 0; user < graph.size(); ++user)
    for (ValueId operand : graph.nodes[user].operands)
      if (operand == from && to >= user)
        throw std::logic_error(
            fmt::format("replaceAllUses: {} does not precede {}, a user of {}",
                        describe(graph, to), describe(graph, user), describe(graph, from)));
  for (Node &node : graph.nodes)
    for (ValueId &operand : node.operands)
      if (operand == from)
        operand = to;
  for (GraphOutput &out : graph.outputs)
    if (out.value == from)
      out.value = to;
  for (ParamUpdate &update : graph.updates)
    if (update.value == from)
      update.value = to;
}

void compact(Graph &graph, const std::vector<bool> &keep) {
  if (keep.size() != graph.size())
    throw std::logic_error(
        fmt::format("compact: {} flags for a graph of {} nodes", keep.size(), graph.size()));
  constexpr ValueId kDropped = std::numeric_limits<ValueId>::max();
  std::vector<ValueId> newId(graph.size(), kDropped);
  ValueId next = 0;
  for (ValueId id = 0; id < graph.size(); ++id)
    if (keep[id] || isInterface(graph.nodes[id]))
      newId[id] = next++;

  // Validate first: a refused call leaves the graph as it was.
  auto renumbered = [&](ValueId id, const std::string &user) {
    if (newId[id] == kDropped)
      throw std::logic_error(fmt::format("compact: {} is dropped but {} still uses it",
                                         describe(graph, id), user));
    return newId[id];
  };
  for (ValueId id = 0; id < graph.size(); ++id)
    if (newId[id] != kDropped)
      for (ValueId operand : graph.nodes[id].operands)
        renumbered(operand, describe(graph, id));
  for (const GraphOutput &out : graph.outputs)
    renumbered(out.value, fmt::format("output '{}'", out.name));
  for (const ParamUpdate &update : graph.updates)
    renumbered(update.value, fmt::format("the update of '{}'", graph.node(update.param).name));

  if (next == graph.size())
    return;
  // Relative order is kept, so operands still precede their users.
  std::vector<Node> kept;
  kept.reserve(next);
  for (ValueId id = 0; id < graph.size(); ++id) {
    if (newId[id] == kDropped)
      continue;
    Node &node = graph.nodes[id];
    for (ValueId &operand : node.operands)
      operand = newId[operand];
    kept.push_back(std::move(node));
  }
  graph.nodes = std::move(kept);
  graph.reindexNames();
  for (GraphOutput &out : graph.outputs)
    out.value = newId[out.value];
  for (ParamUpdate &update : graph.updates) {
    update.param = newId[update.param];
    update.value = newId[update.value];
  }
}

void insertCopiesBefore(Graph &graph, const std::vector<ValueId> &copies, ValueId place,
                        int64_t mark,
                        const std::function<bool(ValueId user, ValueId operand)> &readsCopy) {
  constexpr ValueId kNone = std::numeric_limits<ValueId>::max();
  ValueId shift = static_cast<ValueId>(copies.size());
  auto moved = [&](ValueId v) { return v < place ? v : v + shift; };
  std::vector<ValueId> copyOf(graph.size(), kNone);
  std::vector<Node> nodes;
  nodes.reserve(graph.size() + shift);
  for (ValueId id = 0; id < graph.size(); ++id) {
    if (id == place) {
      for (ValueId x : copies) {
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
      o = copyOf[o] != kNone && readsCopy(id, o) ? copyOf[o] : moved(o);
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

namespace passes {

std::vector<uint32_t> useCounts(const Graph &graph) {
  std::vector<uint32_t> uses(graph.size(), 0);
  for (const Node &node : graph.nodes)
    for (ValueId operand : node.operands)
      ++uses[operand];
  for (const GraphOutput &out : graph.outputs)
    ++uses[out.value];
  for (const ParamUpdate &update : graph.updates)
    ++uses[update.value];
  return uses;
}

size_t eraseIfUnused(Graph &graph, const std::vector<ValueId> &candidates) {
  std::vector<uint32_t> uses = useCounts(graph);
  std::vector<bool> keep(graph.size(), true);
  std::vector<ValueId> work(candidates.begin(), candidates.end());
  size_t erased = 0;
  while (!work.empty()) {
    ValueId id = work.back();
    work.pop_back();
    const Node &node = graph.nodes[id];
    if (!keep[id] || uses[id] != 0 || isInterface(node))
      continue;
    keep[id] = false;
    ++erased;
    for (ValueId operand : node.operands)
      if (--uses[operand] == 0)
        work.push_back(operand);
  }
  if (erased != 0)
    compact(graph, keep);
  return erased;
}

void applyReplacements(Graph &graph, const std::vector<ValueId> &canonical) {
  for (Node &node : graph.nodes)
    for (ValueId &operand : node.operands)
      operand = canonical[operand];
  for (GraphOutput &out : graph.outputs)
    out.value = canonical[out.value];
  for (ParamUpdate &update : graph.updates)
    update.value = canonical[update.value];
}

} // namespace passes
} // namespace stepc
