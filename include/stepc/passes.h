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

// --- Memory budget: rematerialization (compiler/passes/remat.cpp) ----------
// A bound on the planned peak (BufferPlan::arenaBytes): bytes, or a
// percentage of the peak the graph plans without rematerialization.
struct MemoryBudget {
  int64_t bytes = 0;  // > 0: at most this many bytes
  double percent = 0; // > 0: at most this percentage (0 < p <= 100)
  bool given() const { return bytes > 0 || percent > 0; }
  // The bound in bytes for a graph whose unbudgeted planned peak is `peak`.
  int64_t boundFor(int64_t peak) const;
};
// "1000000", "64MB", "1.5GiB", "512KiB", "75%" (B, KB, MB, GB are powers of
// 1000; KiB, MiB, GiB of 1024; case does not matter). Throws stepc::Error
// saying what is expected for anything else: a negative or zero size, a
// percentage outside (0, 100], a word that is no size.
MemoryBudget parseMemoryBudget(std::string_view text);
// "1.20 MB (1200000 bytes)"
std::string bytesString(int64_t bytes);

// What rematerialization did: the planned peaks before and after, and what
// it recomputes.
struct RematReport {
  int64_t unbudgetedPeak = 0, budget = 0, peak = 0;
  int values = 0; // values recomputed for their late users
  int nodes = 0;  // nodes added (a value's copy and the copies it needs)
  std::string summary() const; // one line for stderr
};

// Rematerialization: in a training step, a value the forward pass computes
// and the backward pass reads again is recomputed next to its late users
// instead of being kept, until the planned peak (fusion as in `fusion`, then
// planBuffers) is within the budget. Copies carry remat=N (the Nth value
// recomputed), so CSE and fusion keep them apart from their originals. Throws stepc::Error naming the
// smallest peak it can reach when the budget cannot be met. Runs after the
// default pipeline (CSE would merge the copies back otherwise; the marker
// keeps a second pipeline from doing so).
class Rematerialization final : public Pass {
public:
  Rematerialization(MemoryBudget budget, bool fusion) : budget_(budget), fusion_(fusion) {}
  std::string_view name() const override { return "remat"; }
  bool run(Graph &graph) override;
  const RematReport &report() const { return report_; }

private:
  MemoryBudget budget_;
  bool fusion_;
  RematReport report_;
};

// In a graph with a backward pass (a training step, a gradient graph), each
// attention pattern (matchAttention, compiler/passes/fusion_plan.h) whose
// scores or probabilities the backward reads gets a copy of that chain
// (remat=N) computed again from q, k^T and the softmax's row max and sum
// next to the first such reader, which then reads the copies: the forward
// becomes one attention kernel and stores no score matrix for the backward
// (compiler/passes/attention_recompute.cpp). Runs after the default pipeline
// in fused compiles for the CPU target (the only one with an attention
// kernel). Returns whether it changed the graph.
bool recomputeAttentionProbabilities(Graph &graph);

// In a training step (a graph with outputs and param updates), each value a
// forward kernel stores only for backward kernels that is a short chain of
// elementwise ops from values kept anyway (tanh-GELU's tanh, 1+tanh and
// 1-tanh^2 from `up`) gets a copy of that chain (remat=N) before each such
// backward kernel, which reads the copies: the forward kernel stores fewer
// tensors (compiler/passes/activation_recompute.cpp has the rule). Runs
// after the default pipeline in fused compiles, planning fusion with
// `attentionKernels` as the compile does. Returns whether it changed the
// graph.
bool recomputeCheapActivations(Graph &graph, bool attentionKernels);

// The planned peak of `graph` as compiled: planBuffers over planFusion.
int64_t plannedPeak(const Graph &graph, bool fusion);

} // namespace stepc
