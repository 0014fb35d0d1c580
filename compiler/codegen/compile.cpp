// The compile driver: passes -> fusion -> buffer plan -> one MLIR function
// per FusionGroup -> machine code -> ExecutableSpec.
#include "stepc/compile.h"

#include "gpu_lowering.h"
#include "jit_cache.h"
#include "llvm_backend.h"
#include "lowering.h"

#include "stepc/graph_values.h"
#include "stepc/passes.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <unordered_map>

namespace stepc {
namespace {

std::string provenanceLine(const Node &node) {
  std::string line = fmt::format("{} at {}", opInfo(node.op).name, node.loc.str());
  if (!node.loc.origin.empty())
    line += fmt::format(" ({})", node.loc.origin);
  return line;
}

// Graph outputs and updates that are constants or iotas no kernel computes
// get a kernel of their own, so every result lives in the arena.
void giveSourcesKernels(const Graph &graph, FusionPlan &plan) {
  std::vector<ValueId> needed;
  for (const GraphOutput &out : graph.outputs)
    needed.push_back(out.value);
  for (const ParamUpdate &u : graph.updates)
    needed.push_back(u.value);
  for (ValueId v : needed) {
    OpKind op = graph.node(v).op;
    if (opInfo(op).opClass != OpClass::Constant || plan.groupOf[v] >= 0)
      continue;
    FusionGroup group;
    group.name = fmt::format("k{}_{}", plan.groups.size(), opInfo(op).name);
    group.nodes = {v};
    group.outputs = {v};
    group.bytesWritten =
        graph.type(v).numel() * static_cast<int64_t>(dtypeSize(graph.type(v).dtype));
    // It reads nothing, so it may run last.
    plan.groupOf[v] = static_cast<int>(plan.groups.size());
    plan.groups.push_back(group);
  }
}

std::vector<bool> usedOutsideGroup(const Graph &graph, const FusionPlan &plan) {
  std::vector<bool> used(graph.size(), false);
  for (size_t id = 0; id < graph.size(); ++id)
    for (ValueId operand : graph.nodes[id].operands)
      if (plan.groupOf[operand] != plan.groupOf[id])
        used[operand] = true;
  for (const GraphOutput &out : graph.outputs)
    used[out.value] = true;
  for (const ParamUpdate &u : graph.updates)
    used[u.value] = true;
  return used;
}

} // namespace

LoweredGraph lowerGraph(const Graph &input, const CompileOptions &options) {
  LoweredGraph out;
  out.graph = input;
  verify(out.graph);
  if (options.passes) {
    PassManager pm;
    for (const std::string &name : defaultPipeline(!out.graph.updates.empty()))
      pm.add(name);
    pm.run(out.graph);
  }
  // After the pipeline: CSE would merge the copies back into the originals.
  if (options.memoryBudget.given()) {
    Rematerialization remat(options.memoryBudget, options.fusion);
    remat.run(out.graph);
    out.remat = remat.report();
  }
  const Graph &g = out.graph;
  FusionOptions fusion;
  fusion.enabled = options.fusion;
  fusion.fusedGroups = options.fusedGroups;
  out.plan = planFusion(g, fusion);
  // The kernel to perturb: the full plan's group, where it is still whole.
  std::vector<ValueId> perturbed;
  if (options.perturbKernel) {
    if (options.target == Target::Cuda)
      throw Error("fault injection (perturbKernel) is for the CPU target only");
    FusionPlan full = planFusion(g, {.enabled = options.fusion});
    if (options.perturbKernel->group >= full.groups.size())
      throw Error(fmt::format("perturbKernel: graph '{}' has no kernel k{} ({} kernels)", g.name,
                              options.perturbKernel->group, full.groups.size()));
    perturbed = full.groups[options.perturbKernel->group].nodes;
  }
  giveSourcesKernels(g, out.plan);
  out.buffers = planBuffers(g, out.plan);

  std::unordered_map<ValueId, int64_t> offsets;
  for (const Buffer &b : out.buffers.buffers)
    offsets[b.value] = b.offset;
  auto offsetOf = [&](ValueId v) -> int64_t {
    auto it = offsets.find(v);
    if (it == offsets.end())
      throw std::logic_error(fmt::format("buffer plan has no place for %{} ({})", v,
                                         opInfo(g.node(v).op).name));
    return it->second;
  };

  std::vector<bool> usedOutside = usedOutsideGroup(g, out.plan);
  std::string globals, functions;
  ExecutableSpec &spec = out.spec;
  spec.name = g.name;
  spec.arenaBytes = out.buffers.arenaBytes;
  // Kernels keep values only they read in a scratch area after the planned
  // buffers; one area serves all, since kernels run one at a time. Kernels
  // that read indices report a bad one in the fault record before it.
  bool cuda = options.target == Target::Cuda;
  int64_t scratchOffset = (out.buffers.arenaBytes + 63) / 64 * 64;
  if (std::any_of(g.nodes.begin(), g.nodes.end(), codegen::checksIndices)) {
    spec.faultOffset = scratchOffset;
    scratchOffset += (kFaultRecordWords * 8 + 63) / 64 * 64;
    spec.arenaBytes = scratchOffset;
  }
  int64_t scratchBytes = 0;
  for (const FusionGroup &group : out.plan.groups) {
    // The lowering rule of all_reduce: no code, a collective step that the
    // runtime runs through its communicator (MPI, NCCL).
    if (ValueId v = group.nodes[0]; g.node(v).op == OpKind::AllReduce) {
      KernelSpec step;
      step.name = group.name;
      step.provenance.push_back(provenanceLine(g.node(v)));
      step.outputs.push_back({fmt::format("%{}", v), g.type(v), offsetOf(v)});
      ValueId from = g.node(v).operands[0];
      step.collective = KernelSpec::Collective{
          *parseReduceOp(g.node(v).attrs.getString("reduction")),
          {fmt::format("%{}", from), g.type(from), offsetOf(from)}};
      spec.kernels.push_back(std::move(step));
      if (cuda)
        out.launches.emplace_back();
      continue;
    }
    codegen::FaultRecord fault{spec.faultOffset, static_cast<int64_t>(spec.indexChecks.size())};
    double perturbation =
        !perturbed.empty() && group.nodes == perturbed ? options.perturbKernel->amount : 0;
    codegen::KernelSource source = codegen::lowerGroup(g, group, offsetOf, usedOutside,
                                                       scratchOffset, cuda, fault, perturbation);
    spec.indexChecks.insert(spec.indexChecks.end(), source.indexChecks.begin(),
                            source.indexChecks.end());
    scratchBytes = std::max(scratchBytes, source.scratchBytes);
    globals += source.globals;
    functions += source.function;
    if (cuda) {
      std::vector<CudaLaunch> launches;
      for (const codegen::GpuFunction &f : source.gpuFunctions) {
        functions += f.function;
        launches.push_back({f.name, f.extent});
      }
      out.launches.push_back(std::move(launches));
    }
    KernelSpec kernel;
    kernel.name = source.name;
    kernel.parallelExtent = source.parallelExtent;
    for (ValueId v : group.nodes)
      kernel.provenance.push_back(provenanceLine(g.node(v)));
    kernel.flops = kernelFlops(g, group).matrix;
    for (ValueId v : group.outputs)
      if (usedOutside[v])
        kernel.outputs.push_back({fmt::format("%{}", v), g.type(v), offsetOf(v)});
    spec.kernels.push_back(std::move(kernel));
  }
  if (scratchBytes > 0)
    spec.arenaBytes = scratchOffset + scratchBytes;
  // A kernel waits for the collectives whose results it reads, as late as
  // that: the kernels in between overlap the communication.
  for (size_t k = 0; k < out.plan.groups.size(); ++k) {
    std::set<size_t> waits;
    for (ValueId v : out.plan.groups[k].inputs)
      if (int producer = out.plan.groupOf[v];
          producer >= 0 && spec.kernels[static_cast<size_t>(producer)].collective)
        waits.insert(static_cast<size_t>(producer));
    spec.kernels[k].waitFor.assign(waits.begin(), waits.end());
  }
  if (cuda) {
    out.mlirModule = codegen::gpuModuleText(globals, functions);
  } else {
    out.mlirModule = fmt::format("module {{\n{}{}}}\n", globals, functions);
  }

  for (ValueId id = 0; id < g.size(); ++id) {
    const Node &n = g.node(id);
    if (n.op == OpKind::Input)
      spec.inputs.push_back({n.name, n.type, offsetOf(id)});
    else if (n.op == OpKind::Parameter)
      spec.params.push_back({n.name, n.type, offsetOf(id)});
  }
  for (const GraphOutput &o : g.outputs)
    spec.outputs.push_back({o.name, g.type(o.value), offsetOf(o.value)});
  for (const ParamUpdate &u : g.updates) {
    int64_t from = offsetOf(u.value), to = offsetOf(u.param);
    if (from != to)
      spec.updateCopies.push_back(
          {from, to, g.type(u.param).numel() * static_cast<int64_t>(dtypeSize(g.type(u.param).dtype))});
  }
  for (auto &[name, tensor] : initialParams(g))
    spec.initialParams.emplace(name, std::move(tensor));
  return out;
}

std::unique_ptr<CpuExecutable> compileJit(const Graph &graph, const CompileOptions &options,
                                       const RunOptions &run) {
  if (options.target != Target::Cpu)
    throw Error("compileJit builds CPU executables; for Target::Cuda use compileCuda");
  return std::make_unique<CpuExecutable>(codegen::jitSpec(graph, options), run);
}

std::string dumpKernelIR(const Graph &graph, const CompileOptions &options,
                         const std::string &kernel, const std::string &stage) {
  if (options.target == Target::Cuda)
    return codegen::dumpGpuIR(graph, options, kernel, stage);
  LoweredGraph lowered = lowerGraph(graph, options);
  codegen::Stage s;
  if (stage == "mlir")
    s = codegen::Stage::Mlir;
  else if (stage == "llvm-dialect")
    s = codegen::Stage::LlvmDialect;
  else if (stage == "llvm")
    s = codegen::Stage::LlvmIr;
  else if (stage == "llvm-opt")
    s = codegen::Stage::OptimizedLlvmIr;
  else
    throw Error(fmt::format("unknown IR stage '{}'; expected mlir, llvm-dialect, llvm or llvm-opt",
                            stage));
  std::string module = lowered.mlirModule;
  if (!kernel.empty()) {
    // Keep only the chosen kernel (and the module's globals).
    size_t at = module.find(fmt::format("func.func @{}(", kernel));
    if (at == std::string::npos) {
      std::string names;
      for (const KernelSpec &k : lowered.spec.kernels)
        names += fmt::format("{}{}", names.empty() ? "" : ", ", k.name);
      throw Error(fmt::format("no kernel named '{}'; the kernels are: {}", kernel, names));
    }
    size_t start = module.rfind("\n  func.func", at);
    size_t end = module.find("\n  func.func", at);
    size_t firstFunc = module.find("  func.func");
    std::string header = module.substr(0, firstFunc);
    std::string body = module.substr(start + 1, (end == std::string::npos ? module.rfind('}') : end + 1) - start - 1);
    module = header + body + "}\n";
  }
  return codegen::lowerToStage(module, s);
}

} // namespace stepc
