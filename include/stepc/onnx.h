// Importing ONNX models (compiler/import), and the ONNX backend test suite as
// stepc's external conformance check.
//
//   stepc::OnnxModel m = stepc::importOnnx("model.onnx");
//   stepc::TensorMap out = stepc::interpret(m.graph, inputs, m.params);
//
// What an import produces:
// - ONNX graph inputs (those without an initializer) become graph inputs, in
//   ONNX order; names are made into stepc identifiers ("input.1" stays,
//   "onnx::Conv_3" becomes "onnx_Conv_3").
// - Floating-point initializers become params, so an imported model can be
//   differentiated and trained; their values are `params` (each param's own
//   Init is zeros(), a placeholder: the imported values are the truth).
//   `stepc import-onnx model.onnx -o model.sg` writes them next to the graph
//   as model.safetensors, where `stepc run`, `bench` and `train` find them.
//   Integer and bool initializers (shapes, axes, indices) are constants.
// - A matrix initializer read only transposed (a Gemm with transB = 1, how
//   PyTorch exports nn.Linear) is stored transposed, once, under its name
//   plus kTransposedParamSuffix ("fc1.weight" becomes "fc1.weight.T"), so
//   values in ONNX's layout (a PyTorch state dict) fail to load by name
//   rather than load a square weight transposed. One that a single product
//   of one row reads (batch-1 inference) keeps ONNX's layout and its name:
//   dot products read it fastest as it is.
// - Shapes are static: Shape and Size fold at import, and so does every node
//   whose operands are all constants. An operand that sets a shape (Reshape's
//   shape, Slice's starts, Pad's pads, OneHot's depth, ...) must be known at
//   import: a constant, an initializer, or a graph input whose value is given
//   in OnnxImportOptions::inputValues, which then becomes a constant.
#pragma once

#include "stepc/graph.h"
#include "stepc/interpreter.h"

#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

struct OnnxImportOptions {
  // Values for graph inputs (by ONNX name) that the model needs at import
  // time. Only inputs that are needed are used; they become constants.
  TensorMap inputValues;
};

struct OnnxModel {
  Graph graph;
  TensorMap params; // imported initializer values, by param name
  // For each ONNX graph input (initializers excluded), in ONNX order: its
  // stepc input name, or "" when it was bound to a constant from inputValues.
  std::vector<std::string> inputs;
  std::vector<std::string> onnxInputs; // the ONNX names, same order
  // The ONNX names of the graph outputs, in order; graph.outputs matches.
  std::vector<std::string> onnxOutputs;
  int64_t opset = 0; // of the default ONNX domain
  // Params stored transposed, by their names here (the ONNX name plus
  // kTransposedParamSuffix): their ONNX initializers are read only
  // transposed (Gemm's transB = 1 weights), so `params` holds each one
  // transposed once at import and the graph reads it row-major.
  std::vector<std::string> transposedParams;
};

// The suffix of a param stored transposed (OnnxModel::transposedParams).
inline constexpr std::string_view kTransposedParamSuffix = ".T";

// One reason a model cannot be imported.
struct OnnxProblem {
  enum class Kind {
    Operator,    // no mapping for this op type (or its domain)
    DType,       // an element type stepc does not have (f16, u8, string, ...)
    Feature,     // a supported op used with an unsupported attribute or mode
    StaticInput, // needs the value of graph input `input` at import time
    Invalid,     // a malformed model, or one stepc rejects (shapes, types)
  };
  Kind kind = Kind::Invalid;
  std::string opType;   // "" for problems outside a node
  std::string nodeName; // may be ""
  int nodeIndex = -1;   // position in the graph's node list
  std::string reason;
  std::string input;    // StaticInput: the graph input's ONNX name
  std::string typeName; // DType: the ONNX element type ("float16")
};

// Thrown by importOnnx when the model is unsupported or malformed: its
// message lists every problem, one line per node.
class OnnxImportError : public Error {
public:
  OnnxImportError(const std::string &what, std::vector<OnnxProblem> problems);
  const std::vector<OnnxProblem> &problems() const { return problems_; }

private:
  std::vector<OnnxProblem> problems_;
};

// Reads and converts an ONNX model file. Throws stepc::Error (an
// OnnxImportError for anything inside the model) and never crashes on
// malformed input.
OnnxModel importOnnx(const std::string &path, const OnnxImportOptions &options = {});
// As importOnnx, from the bytes of a model; `what` names it in messages.
OnnxModel importOnnxBytes(std::string_view bytes, const std::string &what,
                          const OnnxImportOptions &options = {});

// Reads a serialized onnx.TensorProto (a test's input_N.pb / output_N.pb).
// Throws OnnxImportError with a DType problem for element types stepc lacks.
Tensor readOnnxTensor(const std::string &path);
Tensor parseOnnxTensor(std::string_view bytes, const std::string &what);

// --- Conformance: the ONNX backend test data ---------------------------------

// Runs a graph on one backend: outputs by name.
using BackendRun =
    std::function<TensorMap(const Graph &graph, const TensorMap &inputs, const TensorMap &params)>;

struct ConformanceOptions {
  BackendRun run;
  // Test names (directory names, e.g. "test_resize_...") expected to fail,
  // with the reason; they count as xfail instead of failed.
  std::map<std::string, std::string, std::less<>> expectedFailures;
  double rtol = 1e-3, atol = 1e-7;
  bool verbose = false; // one line per test, not only failures
};

struct ConformanceResult {
  int passed = 0, failed = 0, skipped = 0, xfailed = 0, xpassed = 0;
  // Tests whose graph inputs set shapes (a Reshape target fed as an input),
  // run with those inputs bound to the test's values at import.
  int bound = 0;
};

// Walks `dir` recursively for directories holding model.onnx and runs each
// test; prints one line per failure, the skipped-operator summary and the
// closing line "N passed, N failed, N skipped" to `out`. Never throws for a
// single test's failure.
ConformanceResult runOnnxConformance(const std::string &dir, const ConformanceOptions &options,
                                     std::FILE *out);

// Reads a list of expected failures: "test_name  reason" per line, '#'
// comments and blank lines ignored.
std::map<std::string, std::string, std::less<>> readExpectedFailures(const std::string &path);

} // namespace stepc
