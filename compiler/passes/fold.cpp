// Constant folding: a node whose operands are all constants (constant or iota
// nodes) is evaluated once here, with the reference interpreter's kernel for
// its op, and becomes a constant node in place: same position, type, name and
// location, so nothing else in the graph changes. One forward sweep reaches
// the fixed point, since a folded node is a constant for the nodes after it.
//
// Size limits keep graphs printable and small: results up to kMaxDataElements
// become `data=` constants; bigger ones fold only when every element is equal
// (a `value=` fill, e.g. a broadcast scalar) and otherwise stay as they are.
#include "graph_passes.h"
#include "rewrite.h"

#include "stepc/interpreter.h"

#include <cstring>
#include <map>
#include <optional>

namespace stepc::passes {
namespace {

constexpr int64_t kMaxDataElements = 4096;
// Splat candidates are evaluated before we know they are splats; this bounds
// that work (and memory) for a huge broadcast.
constexpr int64_t kMaxEvaluatedElements = int64_t(1) << 24;
// Integers beyond this do not survive the trip through a double `value=`.
constexpr int64_t kMaxExactInteger = int64_t(1) << 53;

bool isConstantSource(const Node &node) {
  return node.op == OpKind::Constant || node.op == OpKind::Iota;
}

// Whether every element of a constant source is known equal without
// evaluating it.
bool isSplatSource(const Node &node) {
  if (node.op == OpKind::Iota) {
    return node.type.numel() <= 1 || node.type.shape[node.attrs.getInt("axis")] == 1;
  }
  if (node.attrs.has("value"))
    return true;
  const AttrValue &data = *node.attrs.find("data");
  return std::visit(
      [](const auto &v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::vector<int64_t>> ||
                      std::is_same_v<T, std::vector<double>>) {
          for (size_t i = 1; i < v.size(); ++i)
            if (std::memcmp(&v[i], &v[0], sizeof(v[0])) != 0)
              return false;
          return true;
        } else {
          return false;
        }
      },
      data);
}

// Whether every element of `t` has the same bits (so -0.0 and 0.0 differ and
// NaNs with equal payloads are equal).
bool allElementsEqual(const Tensor &t) {
  size_t size = dtypeSize(t.dtype());
  const std::byte *bytes = t.bytes();
  for (int64_t i = 1; i < t.numel(); ++i)
    if (std::memcmp(bytes + i * size, bytes, size) != 0)
      return false;
  return true;
}

// The attributes of a constant node holding `t`, or nothing when it is too
// big to store. Floats are stored as reals (f32 converts to double exactly),
// integers and bools as integers, so i64 values stay exact.
std::optional<Attrs> constantAttrs(const Tensor &t) {
  Attrs attrs{{"dtype", std::string(dtypeName(t.dtype()))}, {"shape", t.shape()}};
  bool floating = isFloat(t.dtype());
  if (t.numel() > 0 && allElementsEqual(t)) {
    if (floating) {
      attrs.set("value", t.real(0));
      return attrs;
    }
    int64_t v = t.integer(0);
    // The fill is read back through a double (Attrs::getReal); a u64 above
    // INT64_MAX reads as a negative v and goes to `data` below.
    if (v >= (isUnsigned(t.dtype()) ? 0 : -kMaxExactInteger) && v <= kMaxExactInteger) {
      attrs.set("value", v);
      return attrs;
    }
  }
  if (t.numel() > kMaxDataElements)
    return std::nullopt;
  if (floating) {
    attrs.set("data", t.reals());
  } else {
    std::vector<int64_t> data(t.numel());
    for (int64_t i = 0; i < t.numel(); ++i)
      data[i] = t.integer(i);
    attrs.set("data", std::move(data));
  }
  return attrs;
}

} // namespace

bool foldConstants(Graph &graph) {
  // Operand values evaluated so far, by node: a constant read by several
  // folded nodes is materialized once. A folded node is a constant node by
  // the time a later node reads it, so it is evaluated from its attributes.
  std::map<ValueId, Tensor> values;
  auto valueOf = [&](ValueId id) -> const Tensor & {
    auto it = values.find(id);
    if (it == values.end())
      it = values.emplace(id, evaluateNode(graph.nodes[id], {})).first;
    return it->second;
  };

  std::vector<ValueId> orphanCandidates;
  bool changed = false;
  for (ValueId id = 0; id < graph.size(); ++id) {
    Node &node = graph.nodes[id];
    // A collective's value depends on the other processes.
    OpClass c = opInfo(node.op).opClass;
    if (c == OpClass::Source || c == OpClass::Constant || c == OpClass::Collective)
      continue;
    bool allConstant = true, allSplat = true;
    for (ValueId operand : node.operands) {
      allConstant = allConstant && isConstantSource(graph.nodes[operand]);
      allSplat = allSplat && allConstant && isSplatSource(graph.nodes[operand]);
    }
    if (!allConstant)
      continue;
    int64_t numel = node.type.numel();
    // Too big for data=: only a result that may be a splat is worth evaluating.
    if (numel > kMaxDataElements && (!allSplat || numel > kMaxEvaluatedElements))
      continue;

    Tensor result;
    try {
      std::vector<const Tensor *> operands;
      for (ValueId operand : node.operands)
        operands.push_back(&valueOf(operand));
      result = evaluateNode(node, operands);
    } catch (const std::exception &) {
      // E.g. gather with an out-of-range constant index: left for the run
      // time, which reports it against the node with the user's inputs.
      continue;
    }
    std::optional<Attrs> attrs = constantAttrs(result);
    if (!attrs)
      continue;
    orphanCandidates.insert(orphanCandidates.end(), node.operands.begin(),
                            node.operands.end());
    node.op = OpKind::Constant;
    node.operands.clear();
    node.attrs = std::move(*attrs);
    changed = true;
  }
  eraseIfUnused(graph, orphanCandidates);
  return changed;
}

} // namespace stepc::passes
