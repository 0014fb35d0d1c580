// What the importer (onnx_import.cpp) hands each per-op mapping function
// (onnx_ops.cpp): one ONNX node, its operands as stepc values or as values
// known at import, its attributes, and a place to put its results.
#pragma once

#include "stepc/builder.h"
#include "stepc/onnx.h"
#include "stepc/tensor.h"

#include <onnx/onnx_pb.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stepc::onnx_import {

class Importer;

// Thrown by a mapping function: the node cannot be imported, and why.
struct Unsupported {
  OnnxProblem::Kind kind;
  std::string reason;
  std::string input = {};    // StaticInput: the graph input's ONNX name
  std::string typeName = {}; // DType: the ONNX element type
};

// ONNX element types (onnx.TensorProto.DataType) as stepc dtypes; nullopt for
// the ones stepc lacks. onnxTypeName gives "float16", "uint8", ...
std::optional<DType> dtypeFromOnnx(int32_t elemType);
std::string onnxTypeName(int32_t elemType);

// An ONNX TensorProto as a host tensor; throws Unsupported (DType) for
// element types stepc lacks and stepc::Error for malformed data.
Tensor tensorFromProto(const onnx::TensorProto &proto, const std::string &what);

class NodeContext {
public:
  NodeContext(Importer &importer, const onnx::NodeProto &node, int64_t opset, GraphBuilder &builder,
              SourceLoc loc);

  const onnx::NodeProto &node;
  const int64_t opset; // of the default domain
  GraphBuilder &b;
  const SourceLoc loc;

  // --- Operands ---
  size_t numInputs() const { return static_cast<size_t>(node.input_size()); }
  // Present: listed and not "" (ONNX's way to leave an optional input out).
  bool has(size_t i) const;
  // The operand as a graph value (a value known at import becomes a constant).
  Value in(size_t i);
  TensorType type(size_t i) const;
  // The operand's value when it is a constant at import: a Constant, an
  // integer initializer, or a folded node (not a param).
  std::optional<Tensor> known(size_t i) const;
  // The operand's value, which sets a shape or an attribute, so it is needed
  // at import (a param's initializer counts); otherwise Unsupported naming
  // what it sets ("the target shape").
  Tensor require(size_t i, std::string_view what) const;
  std::vector<int64_t> requireInts(size_t i, std::string_view what) const;
  double requireScalar(size_t i, std::string_view what) const;

  // --- Attributes ---
  const onnx::AttributeProto *attr(std::string_view name) const;
  const onnx::AttributeProto *typedAttr(std::string_view name,
                                        onnx::AttributeProto::AttributeType expected) const;
  bool hasAttr(std::string_view name) const { return attr(name) != nullptr; }
  int64_t attrInt(std::string_view name, int64_t fallback) const;
  int64_t attrInt(std::string_view name) const; // required
  double attrFloat(std::string_view name, double fallback) const;
  std::vector<int64_t> attrInts(std::string_view name, std::vector<int64_t> fallback = {}) const;
  std::vector<double> attrFloats(std::string_view name) const;
  std::string attrString(std::string_view name, std::string fallback = {}) const;
  Tensor attrTensor(std::string_view name) const; // required

  // --- Results ---
  size_t numOutputs() const { return static_cast<size_t>(node.output_size()); }
  bool wants(size_t i) const; // listed and not ""
  void setOutput(size_t i, Value value);
  void setOutput(size_t i, Tensor value); // known at import

  // --- Helpers ---
  Value constantOf(const Tensor &value);
  Value scalar(double value, DType dtype);
  Value op(OpKind kind, std::vector<Value> operands, Attrs attrs = {});

  [[noreturn]] void unsupported(const std::string &reason) const;
  [[noreturn]] void unsupportedDType(const std::string &what, DType dtype) const;
  [[noreturn]] void unsupportedDType(const std::string &what, int32_t onnxType) const;
  [[noreturn]] void invalid(const std::string &reason) const;

private:
  Importer &importer_;
};

using MapFn = void (*)(NodeContext &);
// The mapping function of an ONNX op type of the default domain, or null.
MapFn findMapping(std::string_view opType);
// The same for domain ai.onnx.preview.training (the optimizers).
MapFn findTrainingMapping(std::string_view opType);

} // namespace stepc::onnx_import
