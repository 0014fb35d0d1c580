#include "stepc/backend.h"

#include "stepc/cuda.h"
#include "stepc/error.h"
#include "stepc/interpreter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <vector>

namespace stepc {
namespace {

constexpr std::array<Backend, 3> kBackends = {{
    {BackendKind::Interp, "interp", std::nullopt},
    {BackendKind::Cpu, "cpu", Target::Cpu},
    {BackendKind::Cuda, "cuda", Target::Cuda},
}};

} // namespace

std::span<const Backend> allBackends() { return kBackends; }

const Backend &findBackend(std::string_view name, std::string_view command,
                           std::span<const BackendKind> offered) {
  std::vector<std::string_view> available;
  const Backend *found = nullptr;
  for (const Backend &backend : kBackends) {
    bool isOffered = std::find(offered.begin(), offered.end(), backend.kind) != offered.end();
    if (isOffered)
      available.push_back(backend.name);
    if (backend.name == name) {
      if (isOffered)
        return backend;
      found = &backend;
    }
  }
  throw Error(fmt::format("{}: {} '{}'{}; available: {}", command,
                          found ? "backend" : "unknown backend", name,
                          found ? " is not available" : "", fmt::join(available, ", ")));
}

const Backend &findBackend(std::string_view name, std::string_view command) {
  std::vector<BackendKind> every;
  for (const Backend &backend : kBackends)
    every.push_back(backend.kind);
  return findBackend(name, command, every);
}

std::string backendChoices(std::span<const BackendKind> offered) {
  std::vector<std::string_view> names;
  for (const Backend &backend : kBackends)
    if (std::find(offered.begin(), offered.end(), backend.kind) != offered.end())
      names.push_back(backend.name);
  if (names.size() < 2)
    return fmt::format("{}", fmt::join(names, ""));
  return fmt::format("{} or {}", fmt::join(names.begin(), names.end() - 1, ", "), names.back());
}

void requireRunnable(const Backend &backend) {
  if (backend.kind != BackendKind::Cuda)
    return;
  if (std::string why = cudaUnavailableReason(); !why.empty())
    throw Error(fmt::format("--backend cuda: {}; --backend cpu runs here", why));
}

std::unique_ptr<Executable> makeExecutable(const Backend &backend, const Graph &graph,
                                           CompileOptions options, const RunOptions &run) {
  switch (backend.kind) {
  case BackendKind::Interp:
    return makeInterpExecutable(graph, run);
  case BackendKind::Cpu:
    options.target = Target::Cpu;
    return compileJit(graph, options, run);
  case BackendKind::Cuda:
    options.target = Target::Cuda;
    return compileCuda(graph, options, run);
  }
  throw Error("unreachable: unknown backend kind");
}

TensorMap runOnBackend(const Backend &backend, const Graph &graph, const TensorMap &inputs,
                       const TensorMap &params, const CompileOptions &options,
                       const RunOptions &run) {
  if (!backend.compiled())
    return interpret(graph, inputs, params);
  std::unique_ptr<Executable> executable = makeExecutable(backend, graph, options, run);
  for (const auto &[name, value] : params)
    executable->setParam(name, value);
  TensorMap outputs;
  for (auto &[name, value] : executable->step(inputs))
    outputs.emplace(name, std::move(value));
  return outputs;
}

} // namespace stepc
