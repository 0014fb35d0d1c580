// `stepc opt`: runs graph passes over a .sg file and prints (or writes) the
// result, optionally with the graph after each pass and per-pass statistics.
#include "commands.h"

#include "stepc/passes.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace stepc::cli {
namespace {

// Writes through a temporary file and a rename, so a failed write never
// leaves a truncated graph where the old one was.
void writeAtomically(const std::string &path, const std::string &text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out)
      throw Error(fmt::format("cannot write '{}': {}", tmp, std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    std::remove(tmp.c_str());
    throw Error(fmt::format("cannot write '{}': {}", path, std::strerror(saved)));
  }
}

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

} // namespace

int opt(const OptOptions &options) {
  Graph graph = parseGraphFile(options.file);

  std::vector<std::string> pipeline;
  if (options.passesGiven) {
    for (const std::string &name : options.passes)
      if (!name.empty())
        pipeline.push_back(name);
  } else {
    // A graph with param updates is a training step.
    pipeline = defaultPipeline(!graph.updates.empty());
  }

  PassManager manager;
  for (const std::string &name : pipeline)
    manager.add(name); // an unknown name throws, listing the passes
  // Dumps and statistics go to stderr (as LLVM's -print-after-all and
  // -stats do), so stdout carries only the final graph and can be piped.
  if (options.printAfterAll)
    manager.setAfterEach([](std::string_view pass, const Graph &g) {
      fmt::print(stderr, "// after {}\n{}", pass, printGraph(g));
    });

  size_t nodesBefore = graph.size();
  std::vector<PassStats> stats = manager.run(graph);

  // Fusion and memory planning hook in here (their flags: --fusion-report,
  // --no-fusion, --why-not-fused, --dot FILE, --svg FILE) and run on the
  // optimized graph.

  std::string text = printGraph(graph);
  if (options.output.empty()) {
    fmt::print("{}", text);
  } else {
    writeAtomically(options.output, text);
    fmt::print(stderr, "wrote {} ({} nodes)\n", options.output, graph.size());
  }
  if (options.stats)
    fmt::print(stderr, "{}", statsTable(stats, nodesBefore, graph.size()));
  return 0;
}

} // namespace stepc::cli
