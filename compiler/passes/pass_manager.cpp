// The pass registry, the pass manager and the default pipelines.
#include "graph_passes.h"

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>

namespace stepc {
namespace {

// A pass that is one function of the graph.
class FunctionPass final : public Pass {
public:
  FunctionPass(std::string_view name, bool (*rewrite)(Graph &)) : name_(name), rewrite_(rewrite) {}
  std::string_view name() const override { return name_; }
  bool run(Graph &graph) override { return rewrite_(graph); }

private:
  std::string_view name_;
  bool (*rewrite_)(Graph &);
};

struct PassEntry {
  std::string_view name;
  bool (*rewrite)(Graph &);
};

constexpr PassEntry kPasses[] = {
    {"dce", passes::eliminateDeadCode},
    {"cse", passes::eliminateCommonSubexpressions},
    {"fold", passes::foldConstants},
    {"simplify", passes::simplifyAlgebra},
};

} // namespace

std::unique_ptr<Pass> createPass(std::string_view name) {
  for (const PassEntry &entry : kPasses)
    if (entry.name == name)
      return std::make_unique<FunctionPass>(entry.name, entry.rewrite);
  std::string known;
  for (const PassEntry &entry : kPasses)
    known += fmt::format("{}{}", known.empty() ? "" : ", ", entry.name);
  throw Error(fmt::format("unknown pass '{}'; the passes are: {}", name, known));
}

std::vector<std::string_view> passNames() {
  std::vector<std::string_view> names;
  for (const PassEntry &entry : kPasses)
    names.push_back(entry.name);
  return names;
}

void PassManager::add(std::unique_ptr<Pass> pass) {
  if (!pass)
    throw std::logic_error("PassManager::add: null pass");
  passes_.push_back(std::move(pass));
}

std::vector<PassStats> PassManager::run(Graph &graph) {
  // Checked up front so that a bad input is not blamed on the first pass.
  verify(graph);
  std::vector<PassStats> stats;
  for (const std::unique_ptr<Pass> &pass : passes_) {
    PassStats s;
    s.pass = std::string(pass->name());
    s.nodesBefore = graph.size();
    auto start = std::chrono::steady_clock::now();
    try {
      s.changed = pass->run(graph);
    } catch (const Error &e) {
      throw Error(fmt::format("pass '{}' failed: {}", s.pass, e.what()));
    } catch (const std::exception &e) {
      throw std::logic_error(fmt::format("pass '{}' failed: {}", s.pass, e.what()));
    }
    s.milliseconds =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count();
    s.nodesAfter = graph.size();
    // The invariant check between passes (XLA's HloVerifier): a pass that
    // breaks the graph is named here rather than in a later stage's crash.
    try {
      verify(graph);
    } catch (const Error &e) {
      throw Error(fmt::format("pass '{}' produced an invalid graph: {}", s.pass, e.what()));
    }
    if (afterEach_)
      afterEach_(s.pass, graph);
    stats.push_back(std::move(s));
  }
  return stats;
}

std::vector<std::string> defaultPipeline(bool /*trainingStep*/) {
  // - simplify first: it collapses transpose/reshape/broadcast chains and
  //   drops identities, leaving fold and cse fewer, simpler nodes.
  // - fold next: grad() builds constant subgraphs (the seed gradient 1,
  //   negated, broadcast and scaled by 1/N), which become single constants.
  // - simplify again: folding can make an identity out of constants
  //   (x * (0.5 * 2)), which only this second look removes.
  // - cse after those: they turn different spellings of one value into
  //   identical nodes (two folded constants with the same elements), which
  //   only then merge. It reaches its own fixed point in one run.
  // - dce last: it sweeps what nothing reads, above all the gradient
  //   branches of a training step that no update consumes. The other passes
  //   erase what their own rewrites orphan, so one run at the end suffices.
  // Training steps get the same list: a second simplify + cse round after the
  // first cse changed nothing on any example's training step, and the
  // pipeline is a fixed point on all of them (tests/test_pass_pipeline.cpp). The flag
  // is where training-only passes (rematerialization, say) would go.
  return {"simplify", "fold", "simplify", "cse", "dce"};
}

} // namespace stepc
