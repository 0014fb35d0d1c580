// Where a model's params come from: --params (a safetensors file or a folder
// of NAME.npy), else MODEL.safetensors beside MODEL.sg (what import-onnx
// writes). Shared by run, train, bench and compile, and by the Python module's
// bench.
#include "commands.h"

#include "stepc/executable.h"
#include "stepc/npy.h"
#include "stepc/onnx.h"

#include <fmt/format.h>

#include <filesystem>
#include <map>

namespace stepc::cli {

namespace fs = std::filesystem;

void loadParamsInto(const std::string &path, const Graph &graph, TensorMap &params) {
  std::map<std::string, Tensor> saved;
  std::error_code error;
  if (fs::is_directory(path, error)) {
    for (ValueId id : graph.params()) {
      fs::path file = fs::path(path) / (graph.node(id).name + ".npy");
      if (fs::exists(file, error))
        saved.emplace(graph.node(id).name,
                      bitsAs(readNpy(file.string()), graph.node(id).type.dtype));
    }
  } else {
    saved = readSafetensors(path);
  }
  std::string problems;
  for (ValueId id : graph.params()) {
    const Node &p = graph.node(id);
    auto it = saved.find(p.name);
    if (it == saved.end()) {
      problems += fmt::format("\n  missing param '{}' ({})", p.name, typeString(p.type));
      // import-onnx's NAME.T: the file may hold NAME in ONNX's layout.
      std::string_view name = p.name;
      if (name.ends_with(kTransposedParamSuffix)) {
        std::string onnxName(name.substr(0, name.size() - kTransposedParamSuffix.size()));
        if (saved.count(onnxName))
          problems += fmt::format(": '{}' has '{}', ONNX's layout of it (the graph stores it "
                                  "transposed; import-onnx writes its params that way)",
                                  path, onnxName);
      }
    } else if (it->second.type() != p.type)
      problems += fmt::format("\n  param '{}': expected {}, '{}' has {}", p.name,
                              typeString(p.type), path, typeString(it->second.type()));
    else
      params[p.name] = it->second;
  }
  if (!problems.empty())
    throw Error(fmt::format("params '{}' do not fit graph '{}':{}", path, graph.name, problems));
}

void loadModelParams(const std::string &modelFile, const std::string &paramsOption,
                     const Graph &graph, TensorMap &params) {
  if (!paramsOption.empty()) {
    loadParamsInto(paramsOption, graph, params);
    return;
  }
  if (fs::path(modelFile).extension() == ".onnx")
    return; // the weights came with the model
  fs::path beside = fs::path(modelFile).replace_extension(".safetensors");
  std::error_code error;
  if (graph.params().empty() || !fs::is_regular_file(beside, error))
    return;
  loadParamsInto(beside.string(), graph, params);
  fmt::print(stderr, "params from {} (found beside {})\n", beside.string(), modelFile);
}

} // namespace stepc::cli
