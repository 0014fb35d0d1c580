// `stepc compile`: ahead-of-time artifacts for the host CPU or a CUDA GPU,
// and the IR of each lowering stage.
#include "commands.h"

#include "stepc/backend.h"
#include "stepc/executable.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <filesystem>
#include <map>

namespace stepc::cli {

int compile(const CompileCliOptions &options) {
  const Backend &target = findBackend(options.target, "stepc compile --target", options.kTargets);
  bool cuda = target.kind == BackendKind::Cuda;
  std::string stages = cuda ? "mlir|nvvm|ptx" : "mlir|llvm-dialect|llvm|llvm-opt";
  if (!options.kernel.empty() && options.dump.empty())
    throw Error(fmt::format("--kernel chooses the kernel to dump: give --dump {} as well", stages));
  if (options.dump.empty() && options.output.empty())
    throw Error(fmt::format("stepc compile: give -o DIR to write an artifact, or --dump {} to "
                            "print IR",
                            stages));

  Graph graph = parseGraphFile(options.file);
  CompileOptions compileOptions;
  compileOptions.fusion = !options.noFusion;
  compileOptions.target = *target.target;
  compileOptions.gpuArch = options.gpuArch;
  compileOptions.memoryBudget = memoryBudgetOption(options.memoryBudget);
  if (!options.dump.empty())
    fmt::print("{}", dumpKernelIR(graph, compileOptions, options.kernel, options.dump));
  if (options.output.empty())
    return 0;

  AotArtifact artifact = compileAot(graph, compileOptions, options.output, options.name);
  // The object holds the initializers' values; NAME.params.safetensors, which
  // NAME_create loads, gets the model's weights when it has some elsewhere.
  TensorMap params;
  loadModelParams(options.file, options.params, graph, params);
  if (!params.empty()) {
    std::map<std::string, Tensor> all = readSafetensors(artifact.params);
    for (auto &[name, value] : params)
      all[name] = std::move(value);
    writeSafetensors(artifact.params, all, {{"graph", graph.name}});
  }
  std::vector<std::string> files = {artifact.header, artifact.object, artifact.source,
                                    artifact.params};
  if (cuda)
    files.push_back(artifact.ptx);
  for (const std::string &file : files)
    fmt::print("wrote {} ({} bytes)\n", file, std::filesystem::file_size(file));
  fmt::print("build: c++ -std=c++20 -I<stepc>/include -I{dir} {source} {object} your_main.c "
             "<build>/lib/libstepc_runtime.a -lfmt -pthread -lm{dl}\n",
             fmt::arg("dir", options.output), fmt::arg("source", artifact.source),
             fmt::arg("object", artifact.object), fmt::arg("dl", cuda ? " -ldl" : ""));
  if (cuda)
    fmt::print("runs on a CUDA GPU ({} or newer; the driver compiles the PTX), with no LLVM, "
               "MLIR or CUDA toolkit\n",
               options.gpuArch);
  return 0;
}

} // namespace stepc::cli
