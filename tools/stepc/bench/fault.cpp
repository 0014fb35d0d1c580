// --inject-fault KERNEL=AMOUNT, shared by `stepc bench --per-kernel` and
// `stepc bisect-fusion` (a file of its own so that the Python module, which
// builds bench but not bisect-fusion, has it too).
#include "bench.h"
#include "lowered_graph.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace stepc::cli {

std::string perf::kernelShortName(size_t group) { return fmt::format("k{}", group); }

std::vector<size_t> perf::fusedGroups(const FusionPlan &plan) {
  std::vector<size_t> groups;
  for (size_t g = 0; g < plan.groups.size(); ++g)
    if (plan.groups[g].nodes.size() > 1)
      groups.push_back(g);
  return groups;
}

namespace {

std::string fusedKernelNames(const FusionPlan &plan, const std::vector<size_t> &candidates) {
  std::vector<std::string> names;
  for (size_t g : candidates)
    names.push_back(plan.groups[g].name);
  return fmt::format("{}", fmt::join(names, ", "));
}

} // namespace

CompileOptions::Perturbation perf::parseFault(std::string_view command, const std::string &text,
                                              const LoweredGraph &full) {
  const Graph &graph = full.graph;
  const FusionPlan &plan = full.plan;
  std::vector<size_t> candidates = perf::fusedGroups(plan);
  size_t eq = text.rfind('=');
  std::string kernel = text.substr(0, eq == std::string::npos ? text.size() : eq);
  std::string amountText = eq == std::string::npos ? "" : text.substr(eq + 1);
  char *end = nullptr;
  double amount = amountText.empty() ? NAN : std::strtod(amountText.c_str(), &end);
  if (std::isnan(amount) || !std::isfinite(amount) || *end != '\0')
    throw Error(fmt::format("{}: --inject-fault '{}': expected KERNEL=AMOUNT with a "
                            "finite number, e.g. k3=0.01",
                            command, text));
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    if (kernel != plan.groups[g].name && kernel != perf::kernelShortName(g))
      continue;
    if (!std::binary_search(candidates.begin(), candidates.end(), g))
      throw Error(fmt::format("{}: --inject-fault: kernel '{}' of graph '{}' is one "
                              "op, not a fused kernel; the fused kernels are: {}",
                              command, kernel, graph.name, fusedKernelNames(plan, candidates)));
    return {g, amount};
  }
  throw Error(fmt::format("{}: --inject-fault: graph '{}' has no kernel '{}'; the "
                          "fused kernels are: {}",
                          command, graph.name, kernel, fusedKernelNames(plan, candidates)));
}


} // namespace stepc::cli
