// Common-subexpression elimination by value numbering: a forward sweep keeps
// one node per (op, operands, attributes, result type) and points every later
// duplicate's users at it. Operands are renamed to their canonical node before
// a node is looked up, so duplicates of duplicates merge in the same sweep.
//
// Every stepc op is a pure function of its operands and attributes, so any two
// such nodes are equal. That holds for dropout too: it is counter-based, so
// the same input, seed operand and rate give the same mask. Inputs and params
// never merge: each is a distinct part of the graph's interface.
#include "graph_passes.h"
#include "rewrite.h"

#include <functional>
#include <unordered_map>

namespace stepc::passes {
namespace {

void combine(size_t &seed, size_t value) {
  seed ^= value + 0x9e3779b97f4a7c15ull + (seed << 6) + (seed >> 2);
}

size_t hashAttr(const AttrValue &value) {
  size_t h = value.index();
  std::visit(
      [&](const auto &v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          for (int64_t x : v)
            combine(h, std::hash<int64_t>{}(x));
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          for (double x : v)
            combine(h, std::hash<double>{}(x));
        } else {
          combine(h, std::hash<T>{}(v));
        }
      },
      value);
  return h;
}

// Operands in the order that identifies the node: commutative ops compare
// them as an unordered pair. Only ops whose kernels are bitwise symmetric
// qualify: add and mul (IEEE addition and multiplication commute, integer
// wrap-around too), eq and ne. maximum/minimum do not, since which operand a
// NaN or a signed zero comes from decides the result.
std::vector<ValueId> keyOperands(const Node &node) {
  std::vector<ValueId> operands = node.operands;
  switch (node.op) {
  case OpKind::Add:
  case OpKind::Mul:
  case OpKind::Eq:
  case OpKind::Ne:
    if (operands[1] < operands[0])
      std::swap(operands[0], operands[1]);
    break;
  // A pattern match, not a per-op rule: other operands keep their order.
  default:
    break;
  }
  return operands;
}

bool sameValue(const Node &a, const Node &b) {
  return a.op == b.op && keyOperands(a) == keyOperands(b) && a.type == b.type &&
         a.attrs == b.attrs;
}

size_t hashNode(const Node &node) {
  size_t h = static_cast<size_t>(node.op);
  for (ValueId operand : keyOperands(node))
    combine(h, operand);
  combine(h, static_cast<size_t>(node.type.dtype));
  for (int64_t d : node.type.shape)
    combine(h, std::hash<int64_t>{}(d));
  for (const auto &[name, value] : node.attrs.entries()) {
    combine(h, std::hash<std::string>{}(name));
    combine(h, hashAttr(value));
  }
  return h;
}

} // namespace

bool eliminateCommonSubexpressions(Graph &graph) {
  std::vector<ValueId> canonical(graph.size());
  std::unordered_multimap<size_t, ValueId> seen;
  std::vector<bool> keep(graph.size(), true);
  bool changed = false;
  for (ValueId id = 0; id < graph.size(); ++id) {
    canonical[id] = id;
    Node &node = graph.nodes[id];
    for (ValueId &operand : node.operands)
      operand = canonical[operand];
    if (node.op == OpKind::Input || node.op == OpKind::Parameter)
      continue;
    size_t h = hashNode(node);
    auto [first, last] = seen.equal_range(h);
    auto match = std::find_if(first, last, [&](const auto &entry) {
      return sameValue(graph.nodes[entry.second], node);
    });
    if (match == last) {
      seen.emplace(h, id);
      continue;
    }
    // The earlier node survives. If it has no name of its own it takes this
    // one's, so dumps keep the name the user wrote; when both are named the
    // later name is lost (the value lives on under the earlier name).
    Node &kept = graph.nodes[match->second];
    if (kept.name.empty())
      kept.name = std::move(node.name);
    node.name.clear();
    canonical[id] = match->second;
    keep[id] = false;
    changed = true;
  }
  if (!changed)
    return false;
  applyReplacements(graph, canonical);
  compact(graph, keep);
  return true;
}

} // namespace stepc::passes
