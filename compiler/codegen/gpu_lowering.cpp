// The CUDA target: graph -> gpu.module -> PTX -> CudaExecutableSpec, and the
// AOT artifact and IR dumps built from them.
#include "gpu_lowering.h"

#include "aot.h"
#include "gpu_backend.h"
#include "jit_cache.h"
#include "llvm_backend.h"
#include "lowered_graph.h"
#include "lowering.h"

#include "stepc/file.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

namespace stepc::codegen {
namespace {

LoweredGraph lowerForGpu(const Graph &graph, const CompileOptions &options) {
  checkGpuArch(options.gpuArch);
  CompileOptions gpu = options;
  gpu.target = Target::Cuda;
  return lowerGraph(graph, gpu);
}

size_t kernelIndex(const LoweredGraph &lowered, const std::string &kernel) {
  std::string names;
  for (size_t k = 0; k < lowered.spec.kernels.size(); ++k) {
    if (lowered.spec.kernels[k].name == kernel)
      return k;
    names += fmt::format("{}{}", names.empty() ? "" : ", ", lowered.spec.kernels[k].name);
  }
  throw Error(fmt::format("no kernel named '{}'; the kernels are: {}", kernel, names));
}

// The module with only `kernel`'s functions (and every global).
std::string onlyKernel(const LoweredGraph &lowered, const std::string &kernel) {
  const std::string &module = lowered.mlirModule;
  std::string globals, functions;
  for (size_t at = module.find("  memref.global"); at != std::string::npos;
       at = module.find("  memref.global", at + 1))
    globals += module.substr(at, module.find('\n', at) + 1 - at);
  for (const CudaLaunch &launch : lowered.launches[kernelIndex(lowered, kernel)]) {
    // Function bodies are indented deeper than their closing "    }".
    size_t start = module.find(fmt::format("    gpu.func @{}(", launch.function));
    size_t end = module.find("\n    }\n", start);
    if (start == std::string::npos || end == std::string::npos)
      throw std::logic_error(fmt::format("GPU module lacks function {}", launch.function));
    functions += module.substr(start, end + 7 - start);
  }
  return gpuModuleText(globals, functions);
}

// Before each function's .entry: which kernel it belongs to, its place among
// the kernel's loop nests, its threads, and the kernel's ops.
std::string annotatePtx(std::string ptx, const LoweredGraph &lowered) {
  for (size_t k = 0; k < lowered.launches.size(); ++k) {
    const KernelSpec &kernel = lowered.spec.kernels[k];
    const std::vector<CudaLaunch> &launches = lowered.launches[k];
    for (size_t i = 0; i < launches.size(); ++i) {
      size_t entry = ptx.find(fmt::format(".entry {}(", launches[i].function));
      if (entry == std::string::npos)
        continue;
      size_t line = ptx.rfind('\n', entry) + 1;
      std::string note = fmt::format("// stepc kernel {}", kernel.name);
      if (launches.size() > 1)
        note += fmt::format(", loop nest {} of {}", i + 1, launches.size());
      note +=
          fmt::format(": {} thread{}\n", launches[i].extent, launches[i].extent == 1 ? "" : "s");
      for (std::string op : kernel.provenance) {
        std::replace(op.begin(), op.end(), '\n', ' ');
        note += fmt::format("//   {}\n", op);
      }
      ptx.insert(line, note);
    }
  }
  return ptx;
}

} // namespace

std::string gpuModuleText(const std::string &globals, const std::string &functions) {
  return fmt::format("module attributes {{gpu.container_module}} {{\n"
                     "  gpu.module @stepc_kernels {{\n{}{}  }}\n}}\n",
                     globals, functions);
}

std::string dumpGpuIR(const Graph &graph, const CompileOptions &options, const std::string &kernel,
                      const std::string &stage) {
  GpuStage s;
  if (stage == "mlir")
    s = GpuStage::Mlir;
  else if (stage == "nvvm")
    s = GpuStage::Nvvm;
  else if (stage == "ptx")
    s = GpuStage::Ptx;
  else
    throw Error(fmt::format("unknown IR stage '{}' for the cuda target; expected mlir, nvvm or "
                            "ptx",
                            stage));
  LoweredGraph lowered = lowerForGpu(graph, options);
  std::string module = kernel.empty() ? lowered.mlirModule : onlyKernel(lowered, kernel);
  std::string text = lowerGpuToStage(module, s, options.gpuArch);
  return s == GpuStage::Ptx ? annotatePtx(std::move(text), lowered) : text;
}

ExecutableSpec emulateCudaOnCpu(const Graph &graph, const CompileOptions &options) {
  LoweredGraph lowered = lowerForGpu(graph, options);
  std::string module = lowered.mlirModule;
  std::string head = gpuModuleText("", "");
  std::string open = head.substr(0, head.find("  }\n}\n"));
  if (module.rfind(open, 0) != 0)
    throw std::logic_error("emulateCudaOnCpu: unexpected module text");
  module = "module {\n" + module.substr(open.size(), module.size() - head.size()) + "}\n";
  auto replaceAll = [&](const std::string &from, const std::string &to) {
    for (size_t at = module.find(from); at != std::string::npos;
         at = module.find(from, at + to.size()))
      module.replace(at, from.size(), to);
  };
  for (const std::vector<CudaLaunch> &launches : lowered.launches)
    for (const CudaLaunch &launch : launches)
      replaceAll(gpuFunctionHead(launch.function),
                 fmt::format("    func.func @{}(%arena: memref<?xi8>, %gpu_lo: index, %gpu_hi: "
                             "index) attributes {{llvm.emit_c_interface}} {{\n"
                             "      %gpu_one = arith.constant 1 : index\n"
                             "      %gpu_sum = arith.addi %gpu_lo, %gpu_hi : index\n"
                             "      %gpu_top = arith.subi %gpu_sum, %gpu_one : index\n"
                             "      scf.for %gpu_i = %gpu_lo to %gpu_hi step %gpu_one {{\n"
                             "        %begin = arith.subi %gpu_top, %gpu_i : index\n",
                             launch.function));
  replaceAll("      gpu.return\n", "      return\n");

  std::shared_ptr<LoadedObject> code = LoadedObject::load(compileToObject(module));
  ExecutableSpec spec = lowered.spec;
  spec.kernels.clear();
  // Collective steps stay as they are; their indices move with the launches.
  std::vector<size_t> newIndex(lowered.launches.size());
  for (size_t k = 0; k < lowered.launches.size(); ++k) {
    const KernelSpec &kernel = lowered.spec.kernels[k];
    newIndex[k] = spec.kernels.size();
    if (kernel.collective) {
      spec.kernels.push_back(kernel);
      continue;
    }
    for (size_t i = 0; i < lowered.launches[k].size(); ++i) {
      const CudaLaunch &launch = lowered.launches[k][i];
      KernelSpec emulated;
      emulated.name = launch.function;
      emulated.fn = reinterpret_cast<KernelFn>(code->symbol("_mlir_ciface_" + launch.function));
      emulated.parallelExtent = launch.extent;
      emulated.provenance = kernel.provenance;
      if (i + 1 == lowered.launches[k].size()) {
        emulated.outputs = kernel.outputs;
        // Checks are named by the kernel's last nest, the one with its outputs.
        for (IndexCheck &check : spec.indexChecks)
          if (check.kernel == kernel.name)
            check.kernel = launch.function;
      }
      if (i == 0)
        for (size_t w : kernel.waitFor)
          emulated.waitFor.push_back(newIndex[w]);
      spec.kernels.push_back(std::move(emulated));
    }
  }
  spec.owner = code;
  return spec;
}

AotArtifact compileAotCuda(const Graph &graph, const CompileOptions &options,
                           const std::string &dir, const std::string &requestedName) {
  std::string name = cIdentifier(requestedName.empty() ? graph.name : requestedName);
  CudaExecutableSpec cuda = compileCudaSpec(graph, options);

  // The object carries the params and, after them, the PTX. Function names
  // need no prefix: each artifact's PTX is a module of its own.
  ParamBlob blob = packInitialParams(cuda.layout);
  AotCudaCode code;
  code.launches = cuda.launches;
  code.arch = cuda.arch;
  code.ptxOffset = static_cast<int64_t>((blob.bytes.size() + 63) / 64 * 64);
  code.ptxBytes = static_cast<int64_t>(cuda.ptx.size());
  std::string data = blob.bytes;
  data.resize(static_cast<size_t>(code.ptxOffset), '\0');
  data += cuda.ptx;
  std::string object =
      compileToObject("module {\n}\n", fmt::format("stepc_{}_initial_params", name), data);

  AotArtifact artifact = artifactFiles(dir, name);
  artifact.ptx = (std::filesystem::path(dir) / (name + ".ptx")).string();
  writeFileAtomically(artifact.object, object);
  writeFileAtomically(artifact.ptx, cuda.ptx);
  writeFileAtomically(artifact.header, aotHeader(cuda.layout, name, /*cuda=*/true));
  writeFileAtomically(artifact.source, aotSpecSource(cuda.layout, name, blob, &code));
  writeSafetensors(artifact.params, cuda.layout.initialParams, {{"graph", cuda.layout.name}});
  return artifact;
}

} // namespace stepc::codegen

namespace stepc {

CudaExecutableSpec compileCudaSpec(const Graph &graph, const CompileOptions &options) {
  LoweredGraph lowered = codegen::lowerForGpu(graph, options);
  CudaExecutableSpec cuda;
  cuda.ptx = codegen::annotatePtx(
      codegen::compileToPtx(lowered.mlirModule, {options.gpuArch}).front(), lowered);
  cuda.layout = std::move(lowered.spec);
  cuda.launches = std::move(lowered.launches);
  cuda.arch = options.gpuArch;
  return cuda;
}

std::unique_ptr<CudaExecutable> compileCuda(const Graph &graph, const CompileOptions &options,
                                            const RunOptions &run) {
  // Fail before the compile (which takes a while) when there is no GPU.
  if (std::string why = cudaUnavailableReason(); !why.empty())
    throw Error(why);
  return std::make_unique<CudaExecutable>(compileCudaSpec(graph, options), run);
}

} // namespace stepc
