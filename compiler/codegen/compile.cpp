// The compile driver: passes -> fusion -> buffer plan -> one MLIR function
// per FusionGroup -> machine code -> ExecutableSpec.
#include "stepc/compile.h"

#include "gpu_lowering.h"
#include "jit_cache.h"
#include "llvm_backend.h"
#include "lowered_graph.h"
#include "lowering.h"
#include "mlir_text.h"

#include "stepc/graph_values.h"
#include "stepc/passes.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
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

// The kernel's text with its own name taken out: the function is
// @__body and its constants @__body_cst0, 1, ... in order of appearance
// (their names carry value ids). Kernels with the same canonical text are
// the same code.
std::string canonicalBody(const codegen::KernelSource &source) {
  std::string text = source.globals + source.function;
  std::string name = "@" + source.name;
  std::string out;
  std::map<std::string, size_t> constants;
  size_t pos = 0;
  for (size_t at = text.find(name); at != std::string::npos; at = text.find(name, pos)) {
    out.append(text, pos, at - pos);
    pos = at + name.size();
    if (text.compare(pos, 4, "_cst") == 0) {
      size_t end = pos + 4;
      while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end])))
        ++end;
      auto it = constants.emplace(text.substr(pos + 4, end - pos - 4), constants.size()).first;
      out += fmt::format("@__body_cst{}", it->second);
      pos = end;
    } else {
      out += "@__body";
    }
  }
  out.append(text, pos);
  return out;
}

std::string bodyArguments(size_t offsets) {
  std::string types = "memref<?xi8>, index, index";
  for (size_t k = 0; k < offsets; ++k)
    types += ", index";
  return types;
}

// The kernel's C interface: calls its body with its arena offsets.
std::string entryPoint(const std::string &name, const std::string &body,
                       const std::vector<int64_t> &offsets) {
  std::string text = fmt::format("  func.func @{}(%arena: memref<?xi8>, %begin: index, %end: "
                                 "index) attributes {{llvm.emit_c_interface}} {{\n",
                                 name);
  std::string args = "%arena, %begin, %end";
  for (size_t k = 0; k < offsets.size(); ++k) {
    text += fmt::format("    %off{} = arith.constant {} : index\n", k, offsets[k]);
    args += fmt::format(", %off{}", k);
  }
  text += fmt::format("    func.call @{}({}) : ({}) -> ()\n    return\n  }}\n", body, args,
                      bodyArguments(offsets.size()));
  return text;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

} // namespace

LoweredGraph lowerGraph(const Graph &input, const CompileOptions &options) {
  LoweredGraph out;
  auto start = std::chrono::steady_clock::now();
  out.graph = input;
  verify(out.graph);
  if (options.passes) {
    PassManager pm;
    for (const std::string &name : defaultPipeline(!out.graph.updates.empty()))
      pm.add(name);
    pm.run(out.graph);
  }
  // After the pipeline: CSE would merge the copies back into the originals.
  // Any graph whose backward reads attention probabilities (a training step,
  // a gradient graph) gains a fused forward; without fusion the copies would
  // only add work.
  if (options.target != Target::Cuda && options.fusion)
    recomputeAttentionProbabilities(out.graph);
  // After it: the attention kernel then stores what its backward reads.
  if (options.fusion)
    recomputeCheapActivations(out.graph, options.target != Target::Cuda);
  if (options.memoryBudget.given()) {
    Rematerialization remat(options.memoryBudget, options.fusion);
    remat.run(out.graph);
    out.remat = remat.report();
  }
  out.times.passes = secondsSince(start);
  start = std::chrono::steady_clock::now();
  const Graph &g = out.graph;
  FusionOptions fusion;
  fusion.enabled = options.fusion;
  fusion.fusedGroups = options.fusedGroups;
  fusion.attention = options.target != Target::Cuda;
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
  planKernels(g, out.plan, codegen::kernelTarget(options.target == Target::Cuda));
  out.times.fusion = secondsSince(start);
  start = std::chrono::steady_clock::now();
  out.buffers = planBuffers(g, out.plan);
  out.times.bufferPlan = secondsSince(start);
  start = std::chrono::steady_clock::now();

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
  std::unordered_map<std::string, size_t> bodyOf; // canonical text -> index in out.bodies
  std::set<std::string> bodySymbols;
  std::string declarations;
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
      out.sameCodeAs.push_back(spec.kernels.size());
      out.entryPoints.emplace_back();
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
    size_t kernelIndex = spec.kernels.size();
    if (!cuda) {
      std::string canonical = canonicalBody(source);
      auto [it, fresh] = bodyOf.emplace(canonical, out.bodies.size());
      if (fresh) {
        KernelBody body;
        body.symbol = fmt::format("body_{:016x}", codegen::fnv1a64(canonical));
        // A hash collision between different texts: keep the symbols apart.
        while (!bodySymbols.insert(body.symbol).second)
          body.symbol += "_";
        body.text = codegen::replaceAll(canonical, "@__body", "@" + body.symbol);
        declarations += fmt::format("  func.func private @{}({})\n", body.symbol,
                                    bodyArguments(source.offsets.size()));
        out.bodies.push_back(std::move(body));
      }
      KernelBody &body = out.bodies[it->second];
      out.sameCodeAs.push_back(body.kernels.empty() ? kernelIndex : body.kernels[0]);
      body.kernels.push_back(kernelIndex);
      out.entryPoints.push_back(entryPoint(source.name, body.symbol, source.offsets));
    } else {
      out.sameCodeAs.push_back(kernelIndex);
      out.entryPoints.emplace_back();
      globals += source.globals;
      functions += source.function;
    }
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
    std::string entries;
    for (const std::string &entry : out.entryPoints)
      entries += entry;
    for (const KernelBody &body : out.bodies)
      functions += body.text;
    out.mlirModule = fmt::format("module {{\n{}{}}}\n", functions, entries);
    out.entryModule = fmt::format("module {{\n{}{}}}\n", declarations, entries);
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
  out.times.emit = secondsSince(start);
  out.times.kernels = static_cast<int>(spec.kernels.size());
  out.times.bodies = static_cast<int>(out.bodies.size());
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
    // The chosen kernel alone: its entry point and its body.
    std::string names;
    for (const KernelBody &body : lowered.bodies)
      for (size_t k : body.kernels) {
        if (lowered.spec.kernels[k].name == kernel)
          return codegen::lowerToStage(
              fmt::format("module {{\n{}{}}}\n", body.text, lowered.entryPoints[k]), s);
      }
    for (const KernelSpec &k : lowered.spec.kernels)
      names += fmt::format("{}{}", names.empty() ? "" : ", ", k.name);
    throw Error(fmt::format("no kernel named '{}'; the kernels are: {}", kernel, names));
  }
  return codegen::lowerToStage(module, s);
}

} // namespace stepc
