#include "transposed_params.h"

#include "stepc/interpreter.h"
#include "stepc/onnx.h"

#include <array>

namespace stepc::onnx_import {

namespace {

bool isMatrixTranspose(const Node &node) {
  return node.op == OpKind::Transpose && node.attrs.getInts("perm") == std::vector<int64_t>{1, 0};
}

} // namespace

std::vector<std::string> storeTransposedParams(Graph &graph, TensorMap &params) {
  // Which params qualify: a matrix read by matrix transposes only (whose
  // new name no other param has).
  auto transposedName = [](const std::string &name) {
    return name + std::string(kTransposedParamSuffix);
  };
  std::vector<bool> onlyTransposed(graph.size(), false);
  for (ValueId id : graph.params())
    onlyTransposed[id] = graph.type(id).shape.size() == 2 &&
                         !params.count(transposedName(graph.node(id).name));
  for (const Node &node : graph.nodes)
    for (ValueId o : node.operands)
      if (!isMatrixTranspose(node))
        onlyTransposed[o] = false;
  for (const GraphOutput &out : graph.outputs)
    onlyTransposed[out.value] = false;
  for (const ParamUpdate &update : graph.updates)
    onlyTransposed[update.param] = onlyTransposed[update.value] = false;
  // Batch-1 inference: a param that one product with one row reads through
  // a transpose, and nothing else, keeps ONNX's layout. Dot products read it
  // fastest that way, each output from one contiguous row of the weight
  // (codegen's dotProductsByRow; the MLP 784-1024-1024-10 at batch 1 ran
  // 0.043-0.046 ms in ONNX's layout against 0.054 transposed, 2 threads).
  // Read by two products, the transpose would be copied by a kernel of its
  // own instead.
  std::vector<int> readers(graph.size(), 0);
  std::vector<bool> oneRowReader(graph.size(), false);
  for (const Node &node : graph.nodes)
    for (size_t k = 0; k < node.operands.size(); ++k) {
      const Node &operand = graph.node(node.operands[k]);
      if (!isMatrixTranspose(operand))
        continue;
      ValueId param = operand.operands[0];
      ++readers[param];
      oneRowReader[param] = node.op == OpKind::MatMul && k == 1 && !node.type.shape.empty() &&
                            node.type.numel() == node.type.shape.back();
    }
  for (ValueId id : graph.params())
    if (readers[id] == 1 && oneRowReader[id])
      onlyTransposed[id] = false;

  std::vector<std::string> transposed;
  std::vector<Node> nodes;
  std::vector<ValueId> newId(graph.size(), 0);
  for (ValueId id = 0; id < graph.size(); ++id) {
    Node node = graph.node(id);
    if (isMatrixTranspose(node) && onlyTransposed[node.operands[0]]) {
      newId[id] = newId[node.operands[0]]; // the stored param is the transpose
      continue;
    }
    for (ValueId &o : node.operands)
      o = newId[o];
    if (onlyTransposed[id]) {
      const Shape &shape = node.type.shape;
      Node transpose{OpKind::Transpose, {id}, {{"perm", std::vector<int64_t>{1, 0}}},
                     TensorType{node.type.dtype, {shape[1], shape[0]}}, "", node.loc};
      const Tensor &value = params.at(node.name);
      const std::array<const Tensor *, 1> operands{&value};
      Tensor stored = evaluateNode(transpose, operands);
      params.erase(node.name);
      node.name = transposedName(node.name);
      params[node.name] = std::move(stored);
      node.type = transpose.type;
      node.attrs.set("shape", node.type.shape);
      transposed.push_back(node.name);
    }
    newId[id] = static_cast<ValueId>(nodes.size());
    nodes.push_back(std::move(node));
  }
  if (!transposed.empty())
    graph.replaceNodes(std::move(nodes), newId);
  return transposed;
}

} // namespace stepc::onnx_import
