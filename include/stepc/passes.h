// Graph-to-graph passes and the pass manager (compiler/passes). Every pass is
// semantics-preserving: its tests run the interpreter before and after it on
// random inputs and compare.
#pragma once

#include "stepc/graph.h"

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// A pass has a name, runs on a graph in place, and says whether it changed it.
class Pass {
public:
  virtual ~Pass() = default;
  virtual std::string_view name() const = 0;
  virtual bool run(Graph &graph) = 0;
};

// The passes by name: "dce", "cse", "fold" (constant folding), "simplify"
// (algebraic simplification). Throws stepc::Error listing the known names.
std::unique_ptr<Pass> createPass(std::string_view name);
std::vector<std::string_view> passNames();

struct PassStats {
  std::string pass;
  size_t nodesBefore = 0, nodesAfter = 0;
  double milliseconds = 0;
  bool changed = false;
};

class PassManager {
public:
  void add(std::unique_ptr<Pass> pass);
  void add(std::string_view name) { add(createPass(name)); }
  // Called after each pass with its name and the graph (--print-after-all).
  void setAfterEach(std::function<void(std::string_view, const Graph &)> hook) {
    afterEach_ = std::move(hook);
  }
  // Runs every pass once in order; verify() runs after each pass, so a pass
  // that breaks the graph is named in the error.
  std::vector<PassStats> run(Graph &graph);

private:
  std::vector<std::unique_ptr<Pass>> passes_;
  std::function<void(std::string_view, const Graph &)> afterEach_;
};

// The default pipelines: the pass names in order.
std::vector<std::string> defaultPipeline(bool trainingStep);

// Graph surgery shared by the passes (compiler/passes/rewrite.cpp).
// Points every use of `from` (operands, outputs, updates) at `to`; `to` must
// precede every user of `from`.
void replaceAllUses(Graph &graph, ValueId from, ValueId to);
// Drops the nodes for which keep[id] is false and renumbers the rest; inputs
// and params always stay, since they are the graph's interface.
void compact(Graph &graph, const std::vector<bool> &keep);

} // namespace stepc
