// The backends a graph runs on, by the names users give them (`--backend`,
// `stepc compile --target`, `stepc.compile(backend=...)`): the one table
// that maps a name to how a graph is run or compiled there, and the one
// wording of the errors for a name that is unknown or a backend that cannot
// run here (compiler/backend/backend.cpp).
#pragma once

#include "stepc/compile.h"
#include "stepc/executable.h"
#include "stepc/graph.h"
#include "stepc/tensor.h"

#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace stepc {

enum class BackendKind {
  Interp, // the reference interpreter, op by op (nothing is compiled)
  Cpu,    // native code for the host, through the JIT cache (CpuExecutable)
  Cuda,   // PTX on the first NVIDIA GPU (CudaExecutable)
};

struct Backend {
  BackendKind kind;
  std::string_view name; // "interp", "cpu", "cuda"
  // What the code generator compiles for; nullopt for the interpreter.
  std::optional<Target> target;
  bool compiled() const { return target.has_value(); }
};

// Every backend, in the order messages list them.
std::span<const Backend> allBackends();

// The backend called `name`, among those that `command` runs on
// (`offered`). Otherwise stepc::Error, worded the same for every caller:
// "stepc run: unknown backend 'tpu'; available: interp, cpu, cuda" for a
// name that is no backend, "bench: backend 'cuda' is not available;
// available: cpu" for one the command does not run.
const Backend &findBackend(std::string_view name, std::string_view command,
                           std::span<const BackendKind> offered);
inline const Backend &findBackend(std::string_view name, std::string_view command,
                                  std::initializer_list<BackendKind> offered) {
  return findBackend(name, command, std::span(offered.begin(), offered.size()));
}
// Among every backend.
const Backend &findBackend(std::string_view name, std::string_view command);

// The names of `offered` for a command's help: "interp, cpu or cuda".
std::string backendChoices(std::span<const BackendKind> offered);

// Throws stepc::Error "--backend cuda: no CUDA device: ...; --backend cpu
// runs here" (or "... stepc was built without CUDA ...") where `backend`
// cannot run on this machine. Commands call it before loading or compiling
// anything. Every other backend runs everywhere.
void requireRunnable(const Backend &backend);

// The executable of `graph` on `backend`: makeInterpExecutable for interp
// (`options` do not apply), or compiled (options.target set from the
// backend): compileJit for cpu, compileCuda for cuda (which throws "no CUDA
// device: ..." before compiling where there is none).
std::unique_ptr<Executable> makeExecutable(const Backend &backend, const Graph &graph,
                                           CompileOptions options = {},
                                           const RunOptions &run = {});

// One run of `graph` on `backend` with these params: the interpreter, or
// makeExecutable, the params set, and one step.
TensorMap runOnBackend(const Backend &backend, const Graph &graph, const TensorMap &inputs,
                       const TensorMap &params, const CompileOptions &options = {},
                       const RunOptions &run = {});

} // namespace stepc
