// The canonical .sg text of a graph. The parser reads it back to an equal
// graph, and printing that graph again gives the same bytes, so printed
// graphs can be diffed, stored as test expectations, and fed back in.
#include "stepc/text.h"

#include <string>

namespace stepc {
namespace {

// Param nodes store their initializer as attributes (Init::toAttrs); they
// print as the initializer's arguments in this fixed order, each kind having
// only the ones it uses.
constexpr std::string_view kInitArguments[] = {"value", "mean", "std",
                                               "low",   "high", "seed"};

std::string valueRef(const Graph &graph, ValueId id) {
  // A dangling operand cannot come from a verified graph; print something
  // rather than crash while dumping a broken one.
  if (id >= graph.size() || graph.nodes[id].name.empty())
    return "%" + std::to_string(id);
  return "%" + graph.nodes[id].name;
}

void printParam(std::string &out, const Node &node) {
  const AttrValue *init = node.attrs.find("init");
  const std::string *kind = init ? std::get_if<std::string>(init) : nullptr;
  out += " = ";
  out += kind ? *kind : std::string("?");
  out += "(";
  bool first = true;
  for (std::string_view arg : kInitArguments) {
    const AttrValue *value = node.attrs.find(arg);
    if (!value)
      continue;
    out += first ? "" : ", ";
    out += arg;
    out += "=";
    out += attrValueString(*value);
    first = false;
  }
  out += ")";
}

void printOpNode(std::string &out, const Graph &graph, const Node &node) {
  out += opInfo(node.op).name;
  out += "(";
  for (size_t i = 0; i < node.operands.size(); ++i) {
    out += i ? ", " : "";
    out += valueRef(graph, node.operands[i]);
  }
  out += ")";
  if (!node.attrs.empty()) {
    out += " {";
    bool first = true;
    for (const auto &[name, value] : node.attrs.entries()) {
      out += first ? "" : ", ";
      out += name;
      out += "=";
      out += attrValueString(value);
      first = false;
    }
    out += "}";
  }
  out += " : ";
  out += typeString(node.type);
}

} // namespace

std::string printGraph(const Graph &graph) {
  std::string out = "graph " + graph.name + " {\n";
  for (ValueId id = 0; id < graph.size(); ++id) {
    const Node &node = graph.nodes[id];
    out += "  ";
    if (node.op == OpKind::Input) {
      out += "input " + valueRef(graph, id) + " : " + typeString(node.type);
    } else if (node.op == OpKind::Parameter) {
      out += "param " + valueRef(graph, id) + " : " + typeString(node.type);
      printParam(out, node);
    } else {
      out += valueRef(graph, id) + " = ";
      printOpNode(out, graph, node);
    }
    out += "\n";
  }
  for (const GraphOutput &output : graph.outputs)
    out += "  output " + output.name + " = " + valueRef(graph, output.value) + "\n";
  for (const ParamUpdate &update : graph.updates)
    out += "  update " + valueRef(graph, update.param) + " = " +
           valueRef(graph, update.value) + "\n";
  out += "}\n";
  return out;
}

} // namespace stepc
