// `stepc import-onnx`, `stepc onnx-conformance`, and the model loading that
// `stepc run` shares with them.
#include "commands.h"

#include "stepc/backend.h"
#include "stepc/executable.h"
#include "stepc/file.h"
#include "stepc/npy.h"
#include "stepc/onnx.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <map>

namespace stepc::cli {
namespace {

namespace fs = std::filesystem;

bool isOnnxFile(const std::string &path) { return fs::path(path).extension() == ".onnx"; }

// "x=path/to/x.npy" bindings as tensors, by name.
TensorMap readBindings(const std::vector<std::string> &bindings) {
  TensorMap values;
  for (const std::string &binding : bindings) {
    size_t eq = binding.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == binding.size())
      throw Error(fmt::format("--input '{}': expected NAME=FILE.npy", binding));
    values[binding.substr(0, eq)] = readNpy(binding.substr(eq + 1));
  }
  return values;
}

} // namespace

LoadedModel loadModel(const std::string &file, const TensorMap &inputValues) {
  LoadedModel loaded;
  if (!isOnnxFile(file)) {
    loaded.graph = parseGraphFile(file);
    loaded.params = initialParams(loaded.graph);
    return loaded;
  }
  OnnxModel model = stepc::importOnnx(file, {inputValues});
  for (size_t i = 0; i < model.inputs.size(); ++i)
    if (model.inputs[i].empty())
      loaded.bound.insert(model.onnxInputs[i]);
  loaded.graph = std::move(model.graph);
  loaded.params = std::move(model.params);
  return loaded;
}

int importOnnx(const ImportOnnxOptions &options) {
  OnnxModel model = stepc::importOnnx(options.file, {readBindings(options.inputs)});
  std::string text =
      fmt::format("# Imported from {} (ONNX opset {}).\n", options.file, model.opset);
  fs::path weights;
  if (!model.params.empty()) {
    weights = options.output.empty() ? fs::path(options.file) : fs::path(options.output);
    weights.replace_extension(".safetensors");
    text += fmt::format("# Param values (the init below is a placeholder): {}, which stepc "
                        "run|train|bench|compile load from beside this file\n",
                        weights.filename().string());
    if (!model.transposedParams.empty())
      text += fmt::format("# Stored transposed, as ONNX's NAME plus {} (the model reads them "
                          "only transposed): {}\n",
                          kTransposedParamSuffix,
                          fmt::join(model.transposedParams, ", "));
  }
  text += printGraph(model.graph);
  if (options.output.empty()) {
    fmt::print("{}", text);
  } else {
    writeFileAtomically(options.output, text);
  }
  if (!weights.empty()) {
    writeSafetensors(weights.string(),
                     std::map<std::string, Tensor>(model.params.begin(), model.params.end()),
                     {{"producer", "stepc import-onnx"}, {"source", options.file}});
    fmt::print(stderr, "wrote {} param{} to {}\n", model.params.size(),
               model.params.size() == 1 ? "" : "s", weights.string());
  }
  return 0;
}

int onnxConformance(const ConformanceCliOptions &options) {
  ConformanceOptions conformance;
  const Backend &backend = findBackend(options.backend, "onnx-conformance", options.kBackends);
  requireRunnable(backend); // now, not once per test, where there is no GPU
  conformance.run = [&backend](const Graph &graph, const TensorMap &inputs,
                               const TensorMap &params) {
    return runOnBackend(backend, graph, inputs, params);
  };
  conformance.verbose = options.verbose;
  if (!options.expectedFailures.empty())
    conformance.expectedFailures = readExpectedFailures(options.expectedFailures);
  ConformanceResult result = runOnnxConformance(options.dir, conformance, stdout);
  return result.failed == 0 ? 0 : 1;
}

} // namespace stepc::cli
