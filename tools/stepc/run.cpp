#include "commands.h"

#include "stepc/backend.h"
#include "stepc/executable.h"
#include "stepc/npy.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>

namespace stepc::cli {
namespace {

// "x=path/to/x.npy" -> {"x", "path/to/x.npy"}
std::pair<std::string, std::string> splitBinding(const std::string &binding) {
  size_t eq = binding.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == binding.size())
    throw Error(fmt::format("--input '{}': expected NAME=FILE.npy", binding));
  return {binding.substr(0, eq), binding.substr(eq + 1)};
}

} // namespace

std::string summarize(const std::string &name, const Tensor &tensor) {
  std::string head;
  int64_t shown = std::min<int64_t>(tensor.numel(), 6);
  for (int64_t i = 0; i < shown; ++i)
    head += fmt::format("{}{:.6g}", i ? ", " : "", tensor.real(i));
  if (shown < tensor.numel())
    head += ", ...";
  std::string line = fmt::format("{}: {} [{}]", name, typeString(tensor.type()), head);
  if (tensor.numel() > 1) {
    double lo = tensor.real(0), hi = lo, total = 0;
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      double v = tensor.real(i);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      total += v;
    }
    line += fmt::format("  min {:.6g} mean {:.6g} max {:.6g}", lo,
                        total / static_cast<double>(tensor.numel()), hi);
  }
  return line;
}

int run(const RunCommandOptions &options) {
  const Backend &backend = findBackend(options.backend, "stepc run", options.kBackends);
  if (options.threads < 0)
    throw Error(fmt::format("--threads must be 0 (all cores) or more, got {}", options.threads));
  if (options.threads != 0 && backend.kind != BackendKind::Cpu)
    throw Error(fmt::format("--threads splits the kernels of --backend cpu; backend '{}' does "
                            "not take it",
                            options.backend));
  MemoryBudget budget = memoryBudgetOption(options.memoryBudget);
  // Before loading and compiling anything: is there a GPU to run on?
  requireRunnable(backend);
  // An .onnx model may need some inputs' values at import (stepc shapes are
  // static): offer it the --input files; those it takes become constants.
  std::map<std::string, std::string> givenAs; // name -> its --input
  for (const std::string &binding : options.inputs) {
    auto [name, path] = splitBinding(binding);
    if (auto [it, first] = givenAs.emplace(name, binding); !first)
      throw Error(fmt::format("--input {}: input '{}' is given twice (first as --input {})",
                              binding, name, it->second));
  }
  TensorMap given;
  for (const std::string &binding : options.inputs) {
    auto [name, path] = splitBinding(binding);
    given[name] = readNpy(path);
  }
  LoadedModel model = loadModel(options.file, given);
  Graph &graph = model.graph;

  TensorMap inputs = randomInputs(graph, options.seed);
  for (const std::string &binding : options.inputs) {
    auto [name, path] = splitBinding(binding);
    auto it = inputs.find(name);
    if (it == inputs.end() && model.bound.count(name))
      continue;
    if (it == inputs.end()) {
      std::string known;
      for (const auto &[n, t] : inputs)
        known += fmt::format("{}{}", known.empty() ? "" : ", ", n);
      throw Error(fmt::format("--input {}: the graph has no input '{}' (inputs: {})", binding,
                              name, known));
    }
    it->second = bitsAs(std::move(given.at(name)), it->second.dtype());
  }
  TensorMap params = std::move(model.params);
  loadModelParams(options.file, options.params, graph, params);
  TensorMap outputs;
  RunOptions runOptions;
  runOptions.checkNumerics = options.checkNumerics;
  runOptions.profile = !options.trace.empty();
  runOptions.threads = options.threads;
  if (!backend.compiled()) {
    if (options.checkNumerics || !options.trace.empty())
      throw Error("--check-numerics and --trace need a compiled backend (--backend cpu)");
    if (budget.given())
      throw Error("--memory-budget needs a compiled backend (--backend cpu or cuda)");
  }
  std::unique_ptr<Executable> executable = makeExecutable(
      backend, graph, {.gpuArch = options.gpuArch, .memoryBudget = budget}, runOptions);
  for (auto &[name, value] : params)
    executable->setParam(name, value);
  for (auto &[name, value] : executable->step(inputs))
    outputs.emplace(name, std::move(value));
  if (!options.trace.empty()) {
    executable->writeTrace(options.trace);
    fmt::print(stderr, "wrote a Chrome trace of {} kernels to {}\n",
               executable->profile().size(), options.trace);
  }

  if (!options.saveOutputs.empty()) {
    std::error_code error;
    std::filesystem::create_directories(options.saveOutputs, error);
    if (error)
      throw Error(fmt::format("--save-outputs {}: cannot create the directory: {}",
                              options.saveOutputs, error.message()));
  }
  for (const GraphOutput &out : graph.outputs) {
    const Tensor &value = outputs.at(out.name);
    fmt::print("{}\n", summarize(out.name, value));
    if (!options.saveOutputs.empty())
      writeNpy((std::filesystem::path(options.saveOutputs) / (out.name + ".npy")).string(),
               value);
  }
  return 0;
}

} // namespace stepc::cli
