// `stepc opt`: runs graph passes over a .sg file and prints (or writes) the
// result, optionally with the graph after each pass and per-pass statistics.
#include "commands.h"
#include "fusion_plan.h"
#include "lowered_graph.h"
#include "lowering.h"

#include "stepc/compile.h"
#include "stepc/file.h"
#include "stepc/passes.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <cstdlib>

namespace stepc::cli {
namespace {

std::string statsTable(const std::vector<PassStats> &stats, size_t nodesBefore,
                       size_t nodesAfter) {
  std::string out = fmt::format("{:<10} {:>12} {:>12} {:>10}  {}\n", "pass", "nodes before",
                                "nodes after", "time ms", "changed");
  double total = 0;
  for (const PassStats &s : stats) {
    out += fmt::format("{:<10} {:>12} {:>12} {:>10.3f}  {}\n", s.pass, s.nodesBefore,
                       s.nodesAfter, s.milliseconds, s.changed ? "yes" : "no");
    total += s.milliseconds;
  }
  out +=
      fmt::format("{:<10} {:>12} {:>12} {:>10.3f}\n", "total", nodesBefore, nodesAfter, total);
  return out;
}

// A path as one word for /bin/sh.
std::string shellQuoted(const std::string &text) {
  std::string out = "'";
  for (char c : text)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// --svg: Graphviz renders the DOT text; without it, a clear error.
void renderSvg(const std::string &dot, const std::string &svg, const std::string &dotFile) {
  if (std::system("command -v dot >/dev/null 2>&1") != 0)
    throw Error(fmt::format("--svg {}: Graphviz's 'dot' is not on PATH; install graphviz, "
                            "or write the graph with --dot FILE and render it elsewhere",
                            svg));
  std::string input = dotFile.empty() ? svg + ".dot.tmp" : dotFile;
  if (dotFile.empty())
    writeFileAtomically(input, dot);
  std::string command =
      fmt::format("dot -Tsvg {} -o {}", shellQuoted(input), shellQuoted(svg));
  int status = std::system(command.c_str());
  if (dotFile.empty())
    std::remove(input.c_str());
  if (status != 0)
    throw Error(fmt::format("--svg {}: '{}' failed (status {})", svg, command, status));
}

PassManager passManager(const std::vector<std::string> &pipeline) {
  PassManager manager;
  for (const std::string &name : pipeline)
    manager.add(name); // an unknown name throws, listing the passes
  return manager;
}

// The copies lowerGraph (compile.cpp) makes for the CPU target after the
// pipeline, so that the fusion report shows the kernels a compile makes and
// a memory budget's percentage is of the peak a compile without one plans.
void recomputeForFusion(Graph &graph) {
  recomputeAttentionProbabilities(graph);
  recomputeCheapActivations(graph, true);
}

// `parsed` after the passes, with every value named as `stepc print` names it
// in `parsed`: the passes renumber the values they keep, and an unnamed
// value prints as its number. So each unnamed value carries a stand-in name
// of its own through the passes (a name no value has), which afterwards
// becomes its number in `parsed`. Only for showing fusion: such names are no
// identifiers.
Graph optimizedWithPrintedNames(Graph graph, const std::vector<std::string> &pipeline,
                                const MemoryBudget &budget, bool fusion) {
  std::string prefix = "stepc_printed_";
  auto prefixTaken = [&] {
    for (const Node &node : graph.nodes)
      if (node.name.starts_with(prefix))
        return true;
    return false;
  };
  while (prefixTaken())
    prefix += "_";
  for (ValueId id = 0; id < graph.size(); ++id)
    if (graph.nodes[id].name.empty())
      graph.nodes[id].name = prefix + std::to_string(id);
  graph.reindexNames();
  passManager(pipeline).run(graph);
  if (fusion)
    recomputeForFusion(graph);
  if (budget.given())
    Rematerialization(budget, fusion).run(graph);
  for (Node &node : graph.nodes)
    if (node.name.starts_with(prefix))
      node.name = node.name.substr(prefix.size());
  graph.reindexNames();
  return graph;
}

// Kernels the CPU code generator compiles once for several (the same ops,
// shapes and attributes, as in repeated layers): "k57" -> "k9". Empty where
// the graph does not lower for the CPU.
std::map<std::string, std::string> sharedKernels(const Graph &graph, const OptOptions &options) {
  std::map<std::string, std::string> shared;
  try {
    LoweredGraph lowered = lowerGraph(graph, {.fusion = !options.noFusion, .passes = false});
    for (size_t k = 0; k < lowered.sameCodeAs.size(); ++k)
      if (lowered.sameCodeAs[k] != k)
        shared[lowered.spec.kernels[k].name] = lowered.spec.kernels[lowered.sameCodeAs[k]].name;
  } catch (const Error &) {
  }
  return shared;
}

void showFusion(const Graph &graph, const OptOptions &options) {
  FusionPlan plan = planFusion(graph, {.enabled = !options.noFusion});
  planKernels(graph, plan, codegen::kernelTarget(false));
  if (options.fusionReport)
    fmt::print("{}", fusionReport(graph, plan, planBuffers(graph, plan), sharedKernels(graph, options)));
  if (options.whyNotFused)
    fmt::print("{}", options.noFusion ? "fusion is off (--no-fusion): nothing was refused\n"
                                      : whyNotFused(graph, plan));
  if (!options.dot.empty() || !options.svg.empty()) {
    std::string dot = fusionDot(graph, plan);
    if (!options.dot.empty()) {
      writeFileAtomically(options.dot, dot);
      fmt::print(stderr, "wrote {} ({} kernels)\n", options.dot, plan.groups.size());
    }
    if (!options.svg.empty()) {
      renderSvg(dot, options.svg, options.dot);
      fmt::print(stderr, "wrote {} ({} kernels)\n", options.svg, plan.groups.size());
    }
  }
}

} // namespace

int opt(const OptOptions &options) {
  MemoryBudget budget = memoryBudgetOption(options.memoryBudget);
  Graph graph = parseGraphFile(options.file);
  const Graph parsed = graph;

  std::vector<std::string> pipeline;
  if (options.passesGiven) {
    for (const std::string &name : options.passes)
      if (!name.empty())
        pipeline.push_back(name);
  } else {
    // A graph with param updates is a training step.
    pipeline = defaultPipeline(!graph.updates.empty());
  }

  PassManager manager = passManager(pipeline);
  // Dumps and statistics go to stderr (as LLVM's -print-after-all and
  // -stats do), so stdout carries only the final graph and can be piped.
  if (options.printAfterAll)
    manager.setAfterEach([](std::string_view pass, const Graph &g) {
      fmt::print(stderr, "// after {}\n{}", pass, printGraph(g));
    });

  size_t nodesBefore = graph.size();
  std::vector<PassStats> stats = manager.run(graph);
  // After the pipeline: CSE would merge the copies back into the originals.
  // Its error (a budget that cannot be met) needs no "pass failed" prefix.
  if (budget.given()) {
    if (!options.noFusion)
      recomputeForFusion(graph);
    Rematerialization remat(budget, !options.noFusion);
    remat.run(graph);
    fmt::print(stderr, "{}\n", remat.report().summary());
  }

  // Fusion and memory planning run on the optimized graph, its values named
  // as `stepc print FILE` names them. The report and the refusals take
  // stdout's place of the graph.
  bool fusionOnStdout = options.fusionReport || options.whyNotFused;
  if (fusionOnStdout || !options.dot.empty() || !options.svg.empty())
    showFusion(optimizedWithPrintedNames(parsed, pipeline, budget, !options.noFusion), options);

  std::string text = printGraph(graph);
  if (options.output.empty()) {
    if (!fusionOnStdout)
      fmt::print("{}", text);
  } else {
    writeFileAtomically(options.output, text);
    fmt::print(stderr, "wrote {} ({} nodes)\n", options.output, graph.size());
  }
  if (options.stats)
    fmt::print(stderr, "{}", statsTable(stats, nodesBefore, graph.size()));
  return 0;
}

} // namespace stepc::cli
