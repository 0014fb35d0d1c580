// The reference interpreter's driver: binds inputs and parameters, runs each
// node's kernel in graph order, and frees values after their last use.
#include "stepc/interpreter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <optional>

namespace stepc {
namespace {

// Checks that `given` holds exactly the graph's sources of one kind (inputs
// or params): no unknown names, none missing, each with its exact type.
// Unknown names are reported first: a misspelt name also shows up as missing,
// and the list of valid names is the more useful message.
void checkBindings(const Graph &graph, OpKind kind, const TensorMap &given) {
  const char *what = kind == OpKind::Input ? "input" : "param";
  const char *otherWhat = kind == OpKind::Input ? "param" : "input";
  std::vector<ValueId> ids = kind == OpKind::Input ? graph.inputs() : graph.params();
  for (const auto &[name, tensor] : given) {
    bool known = std::any_of(ids.begin(), ids.end(), [&, &name = name](ValueId id) {
      return graph.node(id).name == name;
    });
    if (known)
      continue;
    std::string names;
    for (ValueId id : ids)
      names += fmt::format("{}{}", names.empty() ? "" : ", ", graph.node(id).name);
    std::optional<ValueId> named = graph.findNamed(name);
    std::string hint;
    if (named && graph.node(*named).op != kind &&
        (graph.node(*named).op == OpKind::Input ||
         graph.node(*named).op == OpKind::Parameter))
      hint = fmt::format(" ('{}' is a {}; pass it with the {}s)", name, otherWhat,
                         otherWhat);
    throw Error(fmt::format("unknown {} '{}'; the graph's {}s are: {}{}", what, name, what,
                            names.empty() ? "(none)" : names, hint));
  }
  for (ValueId id : ids) {
    const Node &node = graph.node(id);
    auto it = given.find(node.name);
    if (it == given.end())
      throw Error(fmt::format("missing {} '{}' ({})", what, node.name,
                              typeString(node.type)));
    if (it->second.type() != node.type)
      throw Error(fmt::format("{} '{}': expected {}, got {}", what, node.name,
                              typeString(node.type), typeString(it->second.type())));
  }
}

// Index of the last node that reads each value; graph outputs and param
// updates live to the end.
std::vector<size_t> lastUses(const Graph &graph) {
  std::vector<size_t> last(graph.size());
  for (size_t i = 0; i < graph.size(); ++i) {
    last[i] = i;
    for (ValueId operand : graph.nodes[i].operands)
      last[operand] = i;
  }
  for (const GraphOutput &out : graph.outputs)
    last[out.value] = graph.size();
  for (const ParamUpdate &update : graph.updates)
    last[update.value] = graph.size();
  return last;
}

void checkSize(const Node &node, const InterpretOptions &options) {
  const OpInfo &info = opInfo(node.op);
  int64_t numel;
  try {
    numel = checkedNumel(node.type.shape);
  } catch (const Error &e) {
    throw Error(locatedMessage(node.loc, fmt::format("{}: {}", info.name, e.what())));
  }
  size_t elem = dtypeSize(node.type.dtype);
  if (static_cast<uint64_t>(numel) > options.maxTensorBytes / elem)
    throw Error(locatedMessage(
        node.loc,
        fmt::format("{}: result {}{} has {} elements of {} bytes, more than the "
                    "interpreter's limit of {} bytes (InterpretOptions::maxTensorBytes)",
                    info.name, typeString(node.type),
                    node.name.empty() ? "" : fmt::format(" ('{}')", node.name), numel,
                    elem, options.maxTensorBytes)));
}

// Runs every node. With keepAll, every value is kept and returned; without
// it, a value is freed once its last reader has run, so peak memory follows
// the live set rather than the whole graph. Inputs and params are read in
// place from the caller's maps and copied only where a result must own them.
std::vector<Tensor> run(const Graph &graph, const TensorMap &inputs,
                        const TensorMap &params, const InterpretOptions &options,
                        bool keepAll) {
  checkBindings(graph, OpKind::Input, inputs);
  checkBindings(graph, OpKind::Parameter, params);

  std::vector<Tensor> owned(graph.size());
  std::vector<const Tensor *> values(graph.size(), nullptr);
  std::vector<size_t> last = lastUses(graph);
  std::vector<const Tensor *> operands;

  for (size_t i = 0; i < graph.size(); ++i) {
    const Node &node = graph.nodes[i];
    if (node.op == OpKind::Input || node.op == OpKind::Parameter) {
      const TensorMap &source = node.op == OpKind::Input ? inputs : params;
      values[i] = &source.find(node.name)->second;
      if (keepAll)
        values[i] = &(owned[i] = *values[i]);
      continue;
    }
    checkSize(node, options);
    operands.clear();
    for (ValueId operand : node.operands) {
      assert(operand < i && values[operand] && "operand freed or not yet computed");
      operands.push_back(values[operand]);
    }
    try {
      if (node.op == OpKind::AllReduce && options.communicator) {
        owned[i] = Tensor(node.type);
        options.communicator->allReduce(operands[0]->bytes(), owned[i].bytes(),
                                        node.type.numel(), node.type.dtype,
                                        *parseReduceOp(node.attrs.getString("reduction")));
      } else {
        owned[i] = evaluateNode(node, operands);
      }
    } catch (const Error &e) {
      throw Error(locatedMessage(node.loc, fmt::format("{}: {}", opLabel(node), e.what())));
    } catch (const std::logic_error &e) {
      // An interpreter bug; keep it an internal error, but say where.
      throw std::logic_error(
          locatedMessage(node.loc, fmt::format("{}: {}", opLabel(node), e.what())));
    }
    assert(owned[i].type() == node.type && "kernel result differs from the node type");
    values[i] = &owned[i];
    if (keepAll)
      continue;
    for (ValueId operand : node.operands)
      if (last[operand] == i) {
        owned[operand] = Tensor();
        values[operand] = nullptr;
      }
    if (last[i] == i) { // never read: dead code, or only computed for errors
      owned[i] = Tensor();
      values[i] = nullptr;
    }
  }

  if (!keepAll) {
    // Results that name an input or param still point into the caller's maps.
    auto own = [&](ValueId id) {
      if (values[id] != &owned[id]) {
        owned[id] = *values[id];
        values[id] = &owned[id];
      }
    };
    for (const GraphOutput &out : graph.outputs)
      own(out.value);
    for (const ParamUpdate &update : graph.updates)
      own(update.value);
  }
  return owned;
}

} // namespace

TensorMap interpret(const Graph &graph, const TensorMap &inputs, const TensorMap &params,
                    const InterpretOptions &options) {
  std::vector<Tensor> values = run(graph, inputs, params, options, /*keepAll=*/false);
  TensorMap outputs;
  // Two outputs may name one value, so copy rather than move.
  for (const GraphOutput &out : graph.outputs)
    outputs.emplace(out.name, values[out.value]);
  return outputs;
}

TensorMap interpretStep(const Graph &graph, const TensorMap &inputs, TensorMap &params,
                        const InterpretOptions &options) {
  std::vector<Tensor> values = run(graph, inputs, params, options, /*keepAll=*/false);
  TensorMap outputs;
  for (const GraphOutput &out : graph.outputs)
    outputs.emplace(out.name, values[out.value]);
  // Every value is computed before any param changes, so a failed step
  // leaves the params as they were.
  for (const ParamUpdate &update : graph.updates)
    params.at(graph.node(update.param).name) = values[update.value];
  return outputs;
}

std::vector<Tensor> interpretAll(const Graph &graph, const TensorMap &inputs,
                                 const TensorMap &params,
                                 const InterpretOptions &options) {
  return run(graph, inputs, params, options, /*keepAll=*/true);
}

} // namespace stepc
