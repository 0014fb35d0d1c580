// Reverse-mode differentiation: walk the nodes between the wrt values and
// the loss backwards, asking each op's VJP rule for its operands' gradients.
#include "stepc/autodiff.h"

#include "vjp_rules.h"

#include <fmt/format.h>

#include <stdexcept>

namespace stepc {

std::vector<Value> gradients(Value loss, const std::vector<Value> &wrt,
                             std::vector<std::string> *warnings) {
  if (!loss.valid())
    throw Error("gradients: the loss is an empty stepc::Value");
  GraphBuilder &b = *loss.builder();
  auto describe = [&](ValueId id) {
    const Node &node = b.graph().node(id);
    return node.name.empty() ? fmt::format("%{} ({})", id, opInfo(node.op).name)
                             : fmt::format("'{}'", node.name);
  };
  if (loss.rank() != 0 || !isFloat(loss.dtype()))
    throw Error(fmt::format("gradients: the loss {} must be a floating-point scalar, found {}",
                            describe(loss.id()), typeString(loss.type())));
  for (const Value &w : wrt) {
    if (w.builder() != &b)
      throw Error("gradients: a wrt value belongs to another graph");
    if (!isFloat(w.dtype()))
      throw Error(fmt::format("gradients: cannot differentiate with respect to {} of type {}; "
                              "only f32/f64 values have gradients",
                              describe(w.id()), typeString(w.type())));
  }

  // Only nodes on a path wrt -> loss through floating-point values get
  // gradient nodes; everything else is never materialized.
  const size_t n = loss.id() + 1;
  std::vector<bool> fromWrt(n, false), toLoss(n, false);
  for (const Value &w : wrt)
    if (w.id() < n)
      fromWrt[w.id()] = true;
  for (size_t i = 0; i < n; ++i) {
    const Node &node = b.graph().nodes[i];
    if (!isFloat(node.type.dtype))
      fromWrt[i] = false;
    else
      for (ValueId operand : node.operands)
        fromWrt[i] = fromWrt[i] || fromWrt[operand];
  }
  toLoss[loss.id()] = true;
  for (size_t i = n; i-- > 0;)
    if (toLoss[i])
      for (ValueId operand : b.graph().nodes[i].operands)
        toLoss[operand] = true;
  auto onPath = [&](ValueId id) { return fromWrt[id] && toLoss[id]; };

  std::vector<Value> grads(n);
  if (onPath(loss.id())) {
    LocationScope scope(b, b.graph().node(loss.id()).loc);
    grads[loss.id()] = scalarLike(loss, 1.0);
  }
  for (size_t i = n; i-- > 0;) {
    if (!grads[i].valid() || !onPath(static_cast<ValueId>(i)))
      continue;
    Node node = b.graph().nodes[i]; // a copy: the rules append to the graph
    std::vector<bool> needed;
    std::vector<Value> operands;
    bool any = false;
    for (ValueId operand : node.operands) {
      needed.push_back(onPath(operand));
      any = any || needed.back();
      operands.push_back(b.value(operand));
    }
    if (!any)
      continue;
    SourceLoc loc = node.loc;
    loc.origin = fmt::format("gradient of {}", opInfo(node.op).name);
    LocationScope scope(b, loc);
    std::vector<Value> contributions =
        autodiff::vjp(node, operands, b.value(static_cast<ValueId>(i)), grads[i], needed);
    for (size_t j = 0; j < contributions.size(); ++j) {
      if (!needed[j] || !contributions[j].valid())
        continue;
      ValueId target = node.operands[j];
      if (contributions[j].type() != b.graph().type(target))
        throw std::logic_error(fmt::format(
            "vjp of {} gave {} for an operand of type {}", opInfo(node.op).name,
            typeString(contributions[j].type()), typeString(b.graph().type(target))));
      // Fan-out: contributions from every user are summed.
      grads[target] = grads[target].valid() ? grads[target] + contributions[j] : contributions[j];
    }
  }

  std::vector<Value> out;
  for (const Value &w : wrt) {
    if (w.id() < n && grads[w.id()].valid()) {
      out.push_back(grads[w.id()]);
      continue;
    }
    if (warnings)
      warnings->push_back(fmt::format("the loss does not depend on {}; its gradient is zero",
                                      describe(w.id())));
    LocationScope scope(b, b.graph().node(w.id()).loc);
    out.push_back(constant(b, 0.0, w.dtype(), w.shape()));
  }
  return out;
}

GradResult grad(const Graph &graph, const std::string &loss, std::vector<std::string> wrt) {
  auto lossId = graph.findOutput(loss);
  if (!lossId) {
    std::string known;
    for (const GraphOutput &out : graph.outputs)
      known += fmt::format("{}{}", known.empty() ? "" : ", ", out.name);
    throw Error(fmt::format("grad: graph '{}' has no output '{}' (outputs: {})", graph.name,
                            loss, known));
  }
  if (wrt.empty())
    for (ValueId id : graph.params())
      if (isFloat(graph.type(id).dtype))
        wrt.push_back(graph.node(id).name);

  const TensorType &lossType = graph.type(*lossId);
  if (lossType.rank() != 0 || !isFloat(lossType.dtype))
    throw Error(fmt::format(
        "grad: the loss output '{}'{} must be a floating-point scalar, found {}", loss,
        graph.node(*lossId).name.empty() ? "" : fmt::format(" (value '{}')", graph.node(*lossId).name),
        typeString(lossType)));
  GraphBuilder b(graph);
  std::vector<Value> wrtValues;
  for (const std::string &name : wrt) {
    auto id = graph.findNamed(name);
    if (!id)
      throw Error(fmt::format("grad: graph '{}' has no value named '{}'", graph.name, name));
    wrtValues.push_back(b.value(*id));
  }
  GradResult result;
  std::vector<Value> gs = gradients(b.value(*lossId), wrtValues, &result.warnings);
  for (size_t i = 0; i < wrt.size(); ++i)
    b.output("grad_" + wrt[i], gs[i]);
  result.graph = b.finish();
  return result;
}

} // namespace stepc
