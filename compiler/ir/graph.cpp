#include "stepc/graph.h"

#include <fmt/format.h>

#include <array>

namespace stepc {
namespace {

constexpr std::array<OpInfo, kNumOps> kOps = {{
#define STEPC_OP(Enum, name, arity, flags) {OpKind::Enum, name, arity, flags},
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

ValueId Graph::add(Node node) {
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
    if (operand >= nodes.size())
      fail(fmt::format("operand %{} is not defined before this node", operand));
    operandTypes.push_back(nodes[operand].type);
  }
  if (node.op == OpKind::Input || node.op == OpKind::Parameter) {
    const char *what = node.op == OpKind::Input ? "input" : "param";
    if (!isIdentifier(node.name))
      fail(fmt::format("{} name '{}' is not an identifier", what, node.name));
  } else if (!node.name.empty() && !isIdentifier(node.name)) {
    // Every name must survive a round trip through the text format.
    fail(fmt::format("value name '{}' is not an identifier", node.name));
  }
  if (!node.name.empty() && findNamed(node.name))
    fail(fmt::format("the name '{}' is already used in graph '{}'", node.name, name));
  try {
    node.type = inferType(node.op, node.attrs, operandTypes);
  } catch (const Error &e) {
    throw Error(locatedMessage(node.loc, e.what()));
  }
  nodes.push_back(std::move(node));
  return static_cast<ValueId>(nodes.size() - 1);
}

void Graph::addOutput(std::string outputName, ValueId value) {
  if (value >= nodes.size())
    throw Error(fmt::format("output '{}' refers to undefined value %{}", outputName, value));
  if (!isIdentifier(outputName))
    throw Error(fmt::format("output name '{}' is not an identifier", outputName));
  if (findOutput(outputName))
    throw Error(fmt::format("graph '{}' already has an output named '{}'", name, outputName));
  outputs.push_back({std::move(outputName), value});
}

void Graph::addUpdate(ValueId param, ValueId value) {
  if (param >= nodes.size() || value >= nodes.size())
    throw Error(fmt::format("update refers to an undefined value"));
  const Node &p = nodes[param];
  if (p.op != OpKind::Parameter)
    throw Error(locatedMessage(p.loc, fmt::format("update target %{} is not a param", param)));
  if (nodes[value].type != p.type)
    throw Error(locatedMessage(
        nodes[value].loc, fmt::format("update of param '{}' ({}) with a value of type {}",
                                      p.name, typeString(p.type),
                                      typeString(nodes[value].type))));
  for (const ParamUpdate &u : updates)
    if (u.param == param)
      throw Error(fmt::format("param '{}' is updated twice", p.name));
  updates.push_back({param, value});
}

std::vector<ValueId> Graph::inputs() const {
  std::vector<ValueId> ids;
  for (ValueId i = 0; i < nodes.size(); ++i)
    if (nodes[i].op == OpKind::Input)
      ids.push_back(i);
  return ids;
}

std::vector<ValueId> Graph::params() const {
  std::vector<ValueId> ids;
  for (ValueId i = 0; i < nodes.size(); ++i)
    if (nodes[i].op == OpKind::Parameter)
      ids.push_back(i);
  return ids;
}

std::optional<ValueId> Graph::findNamed(std::string_view wanted) const {
  for (ValueId i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == wanted)
      return i;
  return std::nullopt;
}

std::optional<ValueId> Graph::findOutput(std::string_view wanted) const {
  for (const GraphOutput &out : outputs)
    if (out.name == wanted)
      return out.value;
  return std::nullopt;
}

void verify(const Graph &graph) {
  Graph rebuilt;
  rebuilt.name = graph.name;
  for (const Node &node : graph.nodes) {
    ValueId id = rebuilt.add(node);
    if (rebuilt.nodes[id].type != node.type)
      throw Error(locatedMessage(
          node.loc, fmt::format("{}: recorded type {} differs from inferred type {}",
                                opInfo(node.op).name, typeString(node.type),
                                typeString(rebuilt.nodes[id].type))));
  }
  for (const GraphOutput &out : graph.outputs)
    rebuilt.addOutput(out.name, out.value);
  for (const ParamUpdate &u : graph.updates)
    rebuilt.addUpdate(u.param, u.value);
  if (graph.outputs.empty())
    throw Error(fmt::format("graph '{}' has no outputs", graph.name));
}

} // namespace stepc
