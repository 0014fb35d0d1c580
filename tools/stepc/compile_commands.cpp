// `stepc compile`: ahead-of-time artifacts for the host CPU, and the IR of
// each lowering stage.
#include "commands.h"

#include "stepc/compile.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <filesystem>

namespace stepc::cli {

int compile(const CompileCliOptions &options) {
  if (options.target == "cuda")
    throw Error("--target cuda: the CUDA backend is not available yet; use --target cpu");
  if (options.target != "cpu")
    throw Error(fmt::format("unknown target '{}'; expected cpu (cuda is not available yet)",
                            options.target));
  if (!options.kernel.empty() && options.dump.empty())
    throw Error("--kernel chooses the kernel to dump: give --dump mlir|llvm-dialect|llvm|llvm-opt "
                "as well");
  if (options.dump.empty() && options.output.empty())
    throw Error("stepc compile: give -o DIR to write an artifact, or --dump "
                "mlir|llvm-dialect|llvm|llvm-opt to print IR");

  Graph graph = parseGraphFile(options.file);
  CompileOptions compileOptions;
  compileOptions.fusion = !options.noFusion;
  if (!options.dump.empty())
    fmt::print("{}", dumpKernelIR(graph, compileOptions, options.kernel, options.dump));
  if (options.output.empty())
    return 0;

  AotArtifact artifact = compileAot(graph, compileOptions, options.output, options.name);
  for (const std::string &file :
       {artifact.header, artifact.object, artifact.source, artifact.params})
    fmt::print("wrote {} ({} bytes)\n", file, std::filesystem::file_size(file));
  fmt::print("build: c++ -std=c++20 -I<stepc>/include -I{dir} {source} {object} your_main.c "
             "<build>/lib/libstepc_runtime.a -lfmt -pthread -lm\n",
             fmt::arg("dir", options.output), fmt::arg("source", artifact.source),
             fmt::arg("object", artifact.object));
  return 0;
}

} // namespace stepc::cli
