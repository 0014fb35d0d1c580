#include "stepc/graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <unordered_set>

namespace stepc {
namespace {

constexpr std::array<OpInfo, kNumOps> kOps = {{
#define STEPC_OP(Enum, name, arity, opClass, flags)                                       \
  {OpKind::Enum, name, arity, OpClass::opClass, flags},
#include "stepc/ops.def"
#undef STEPC_OP
}};

bool isIdentifier(std::string_view s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'))
      return false;
  return true;
}

} // namespace

const OpInfo &opInfo(OpKind kind) { return kOps[static_cast<size_t>(kind)]; }
std::span<const OpInfo> allOps() { return kOps; }

std::optional<OpKind> findOp(std::string_view name) {
  for (const OpInfo &info : kOps)
    if (info.name == name)
      return info.kind;
  return std::nullopt;
}

namespace {

// The checks add() and verify() share; returns the node's inferred type.
// `defined` are the nodes before it (its operands must be among them);
// `nameTaken` says whether its name is already used.
TensorType checkedType(const Node &node, std::span<const Node> defined, bool nameTaken,
                       std::string_view graphName) {
  const OpInfo &info = opInfo(node.op);
  auto fail = [&](const std::string &message) {
    throw Error(locatedMessage(node.loc, fmt::format("{}: {}", info.name, message)));
  };
  int given = static_cast<int>(node.operands.size());
  if (info.arity >= 0 && given != info.arity)
    fail(fmt::format("expected {} operand{}, got {}", info.arity,
                     info.arity == 1 ? "" : "s", given));
  if (info.arity < 0 && given == 0)
    fail("expected at least one operand, got none");
  std::vector<TensorType> operandTypes;
  operandTypes.reserve(node.operands.size());
  for (ValueId operand : node.operands) {
    if (operand >= defined.size())
      fail(fmt::format("operand %{} is not defined before this node", operand));
    operandTypes.push_back(defined[operand].type);
  }
  if (node.op == OpKind::Input || node.op == OpKind::Parameter) {
    const char *what = node.op == OpKind::Input ? "input" : "param";
    if (!isIdentifier(node.name))
      fail(fmt::format("{} name '{}' is not an identifier", what, node.name));
  } else if (!node.name.empty() && !isIdentifier(node.name)) {
    // Every name must survive a round trip through the text format.
    fail(fmt::format("value name '{}' is not an identifier", node.name));
  }
  if (nameTaken)
    fail(fmt::format("the name '{}' is already used in graph '{}'", node.name, graphName));
  try {
    return inferType(node.op, node.attrs, operandTypes);
  } catch (const Error &e) {
    throw Error(locatedMessage(node.loc, e.what()));
  }
}

// Negative axes count from the end in the text format and the builder; the
// graph holds only non-negative ones, so no later stage (interpreter, VJP
// rules, passes, codegen) normalizes them again. Graph::add rewrites a node's
// `axis` / `axes` once inferType has accepted them; verify() rejects a node
// that still has a negative one (one built around Graph::add).
//
// Every axis attribute counts the dimensions of the op's first operand
// (iota's, which has none, its result's); scatter_add's counts the updates'
// and its shape rule refuses a negative one, so it is never rewritten here.
int64_t axisRank(const Node &node, std::span<const Node> defined) {
  return node.operands.empty() ? node.type.rank() : defined[node.operands[0]].type.rank();
}

void normalizeAxes(Attrs &attrs, int64_t rank) {
  if (const AttrValue *value = attrs.find("axis"))
    if (const auto *axis = std::get_if<int64_t>(value); axis && *axis < 0)
      attrs.set("axis", *axis + rank);
  if (const AttrValue *value = attrs.find("axes"))
    if (const auto *axes = std::get_if<std::vector<int64_t>>(value)) {
      std::vector<int64_t> normalized = *axes;
      for (int64_t &axis : normalized)
        axis = axis < 0 ? axis + rank : axis;
      if (normalized != *axes)
        attrs.set("axes", std::move(normalized));
    }
}

bool hasNegativeAxis(const Attrs &attrs) {
  auto negative = [](int64_t axis) { return axis < 0; };
  if (const AttrValue *value = attrs.find("axis"))
    if (const auto *axis = std::get_if<int64_t>(value); axis && negative(*axis))
      return true;
  if (const AttrValue *value = attrs.find("axes"))
    if (const auto *axes = std::get_if<std::vector<int64_t>>(value))
      return std::any_of(axes->begin(), axes->end(), negative);
  return false;
}

} // namespace

ValueId Graph::add(Node node) {
  node.type = checkedType(node, nodes, !node.name.empty() && findNamed(node.name), name);
  normalizeAxes(node.attrs, axisRank(node, nodes));
  auto id = static_cast<ValueId>(nodes.size());
  if (!node.name.empty())
    nameIndex_.emplace(node.name, id);
  nodes.push_back(std::move(node));
  indexed_ = nodes.size();
  return id;
}

namespace {

void checkOutput(const Graph &graph, const std::string &outputName, ValueId value,
                 bool nameTaken) {
  if (value >= graph.size())
    throw Error(fmt::format("output '{}' refers to undefined value %{}", outputName, value));
  if (!isIdentifier(outputName))
    throw Error(fmt::format("output name '{}' is not an identifier", outputName));
  if (nameTaken)
    throw Error(
        fmt::format("graph '{}' already has an output named '{}'", graph.name, outputName));
}

void checkUpdate(const Graph &graph, ValueId param, ValueId value, bool updatedBefore) {
  if (param >= graph.size() || value >= graph.size())
    throw Error(fmt::format("update refers to an undefined value"));
  const Node &p = graph.nodes[param];
  if (p.op != OpKind::Parameter)
    throw Error(locatedMessage(p.loc, fmt::format("update target %{} is not a param", param)));
  const Node &v = graph.nodes[value];
  if (v.type != p.type)
    throw Error(locatedMessage(v.loc, fmt::format("update of param '{}' ({}) with a value "
                                                  "of type {}",
                                                  p.name, typeString(p.type),
                                                  typeString(v.type))));
  if (updatedBefore)
    throw Error(fmt::format("param '{}' is updated twice", p.name));
}

} // namespace

void Graph::addOutput(std::string outputName, ValueId value) {
  checkOutput(*this, outputName, value, findOutput(outputName).has_value());
  outputs.push_back({std::move(outputName), value});
}

void Graph::addUpdate(ValueId param, ValueId value) {
  bool updatedBefore = std::any_of(updates.begin(), updates.end(),
                                   [&](const ParamUpdate &u) { return u.param == param; });
  checkUpdate(*this, param, value, updatedBefore);
  updates.push_back({param, value});
}

std::vector<ValueId> Graph::inputs() const { return nodesOf(OpKind::Input); }
std::vector<ValueId> Graph::params() const { return nodesOf(OpKind::Parameter); }

std::vector<ValueId> Graph::nodesOf(OpKind op) const {
  std::vector<ValueId> ids;
  for (ValueId i = 0; i < nodes.size(); ++i)
    if (nodes[i].op == op)
      ids.push_back(i);
  return ids;
}

namespace {

// Marks what the marked values are computed from. Operands precede their
// users, so one sweep down from the last marked value finds them all.
void markBehind(const Graph &graph, std::vector<bool> &behind, ValueId last) {
  for (ValueId id = last + 1; id-- > 0;)
    if (behind[id])
      for (ValueId operand : graph.node(id).operands)
        behind[operand] = true;
}

} // namespace

std::vector<bool> valuesBehind(const Graph &graph, ValueId value) {
  std::vector<bool> behind(graph.size(), false);
  behind.at(value) = true;
  markBehind(graph, behind, value);
  return behind;
}

std::vector<bool> valuesBehindOutputs(const Graph &graph) {
  std::vector<bool> behind(graph.size(), false);
  ValueId last = 0;
  for (const GraphOutput &o : graph.outputs) {
    behind.at(o.value) = true;
    last = std::max(last, o.value);
  }
  if (!graph.outputs.empty())
    markBehind(graph, behind, last);
  return behind;
}

void Graph::replaceNodes(std::vector<Node> reordered, const std::vector<ValueId> &newId) {
  nodes = std::move(reordered);
  for (GraphOutput &o : outputs)
    o.value = newId[o.value];
  for (ParamUpdate &u : updates) {
    u.param = newId[u.param];
    u.value = newId[u.value];
  }
  reindexNames();
}

void Graph::reindexNames() {
  nameIndex_.clear();
  indexed_ = 0;
  syncNameIndex();
}

void Graph::syncNameIndex() const {
  if (indexed_ > nodes.size()) {
    nameIndex_.clear();
    indexed_ = 0;
  }
  // The first node of a name wins, as a scan in order would find it.
  for (; indexed_ < nodes.size(); ++indexed_)
    if (!nodes[indexed_].name.empty())
      nameIndex_.emplace(nodes[indexed_].name, static_cast<ValueId>(indexed_));
}

std::optional<ValueId> Graph::findNamed(std::string_view wanted) const {
  if (wanted.empty())
    return std::nullopt;
  syncNameIndex();
  auto it = nameIndex_.find(wanted);
  if (it == nameIndex_.end())
    return std::nullopt;
  return it->second;
}

std::optional<ValueId> Graph::findOutput(std::string_view wanted) const {
  for (const GraphOutput &out : outputs)
    if (out.name == wanted)
      return out.value;
  return std::nullopt;
}

// Checks the graph in place rather than rebuilding a copy with add(): a
// million-node graph is verified without a second copy of its nodes.
void verify(const Graph &graph) {
  std::unordered_set<std::string_view> names;
  names.reserve(graph.size());
  std::span<const Node> nodes = graph.nodes;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node &node = nodes[i];
    bool taken = !node.name.empty() && !names.insert(node.name).second;
    TensorType inferred = checkedType(node, nodes.first(i), taken, graph.name);
    if (inferred != node.type)
      throw Error(locatedMessage(
          node.loc, fmt::format("{}: recorded type {} differs from inferred type {}",
                                opInfo(node.op).name, typeString(node.type),
                                typeString(inferred))));
    if (hasNegativeAxis(node.attrs))
      throw Error(locatedMessage(
          node.loc, fmt::format("{}: a negative axis was not normalized when the node "
                                "was added (Graph::add does it)",
                                opInfo(node.op).name)));
  }
  std::unordered_set<std::string_view> outputNames;
  for (const GraphOutput &out : graph.outputs)
    checkOutput(graph, out.name, out.value, !outputNames.insert(out.name).second);
  std::unordered_set<ValueId> updated;
  for (const ParamUpdate &u : graph.updates)
    checkUpdate(graph, u.param, u.value, !updated.insert(u.param).second);
  if (graph.outputs.empty())
    throw Error(fmt::format("graph '{}' has no outputs", graph.name));
}

} // namespace stepc
