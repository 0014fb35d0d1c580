// `stepc bench --per-kernel`: each fused kernel against the one-op kernels of
// its ops, on the same inputs: time, bytes moved, and how far apart their
// outputs are.
//
// Same inputs means the values the kernel reads, not only the step's: each
// build left to itself drifts apart by rounding kernel after kernel (a
// flash attention kernel sums in another order than its ops unfused), and a
// kernel deep in a training step would show the drift of every kernel
// before it. So the fused build's kernels read the unfused build's values,
// and each difference is the kernel's own.
//
// The two builds share node ids because both run the same passes on the same
// graph before fusion partitions it; a value "%12" is then the same value in
// both, and the unfused kernel that computes it is the one holding node 12.
#include "bench.h"
#include "lowered_graph.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>

namespace stepc::cli::perf {
namespace {

// A value as a kernel left it, copied before a later kernel could reuse its
// place in the arena.
using Captured = std::map<ValueId, Tensor>;

// "%12" -> 12 (KernelSpec::outputs are named by value id).
std::optional<ValueId> slotValue(const TensorSlot &slot) {
  if (slot.name.size() < 2 || slot.name[0] != '%')
    return std::nullopt;
  ValueId id{};
  const char *end = slot.name.data() + slot.name.size();
  auto [at, error] = std::from_chars(slot.name.data() + 1, end, id);
  if (error != std::errc() || at != end)
    return std::nullopt;
  return id;
}

// Copies the outputs of every kernel (those in `wanted`, when given).
RunOptions capturing(int threads, Captured &into, const std::set<ValueId> *wanted) {
  RunOptions run;
  run.threads = threads;
  run.afterKernel = [&into, wanted](size_t, const KernelSpec &kernel, const std::byte *arena) {
    for (const TensorSlot &slot : kernel.outputs) {
      std::optional<ValueId> id = slotValue(slot);
      if (!id || (wanted && !wanted->count(*id)))
        continue;
      Tensor value(slot.type);
      std::memcpy(value.bytes(), arena + slot.offset, value.nbytes());
      into[*id] = std::move(value);
    }
  };
  return run;
}

// Before each fused kernel, puts the unfused build's values of its inputs
// where the kernel reads them. Params and step inputs are the same in both
// builds already.
void feedInputs(const LoweredGraph &fused, const Captured &unfusedValues, RunOptions &run) {
  std::map<ValueId, int64_t> offsets;
  for (const Buffer &buffer : fused.buffers.buffers)
    offsets[buffer.value] = buffer.offset;
  run.beforeKernel = [&fused, &unfusedValues, offsets](size_t index, const KernelSpec &,
                                                       std::byte *arena) {
    for (ValueId v : fused.plan.groups.at(index).inputs) {
      auto value = unfusedValues.find(v);
      if (value != unfusedValues.end())
        std::memcpy(arena + offsets.at(v), value->second.bytes(), value->second.nbytes());
    }
  };
}

// The largest |a - b| over the largest |b| (b: the unfused value), 0 when
// they are equal. Against the value's largest element rather than each
// element's own: a kernel's rounding is relative to the magnitudes it sums,
// and an element that cancels to nearly zero (an attention output, a
// gradient) would read any rounding as a large relative error.
double differenceOverLargest(const Tensor &a, const Tensor &b) {
  double largest = 0, diff = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.real(i), y = b.real(i);
    if ((std::isnan(x) && std::isnan(y)) || x == y)
      continue;
    if (!std::isfinite(x - y))
      return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(x - y));
  }
  if (diff == 0)
    return 0;
  for (int64_t i = 0; i < b.numel(); ++i)
    if (std::isfinite(b.real(i)))
      largest = std::max(largest, std::abs(b.real(i)));
  return largest > 0 ? diff / largest : std::numeric_limits<double>::infinity();
}

} // namespace

void accumulateDifference(const Tensor &a, const Tensor &b, Difference &d) {
  int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) {
    double x = a.real(i), y = b.real(i);
    if (std::isnan(x) && std::isnan(y))
      continue;
    if (x == y)
      continue;
    double diff = std::abs(x - y);
    if (!std::isfinite(diff)) {
      d.rel = d.abs = d.scaled = std::numeric_limits<double>::infinity();
      return;
    }
    d.abs = std::max(d.abs, diff);
    d.rel = std::max(d.rel, diff / std::max({std::abs(x), std::abs(y), 1e-6}));
    d.scaled = std::max(d.scaled, diff / std::max({std::abs(x), std::abs(y), 1.0}));
  }
}

namespace {

std::map<std::string, double> kernelMedians(const Executable &exe, int64_t firstStep) {
  std::map<std::string, std::vector<double>> times;
  for (const KernelTiming &t : exe.profile())
    if (t.step >= firstStep)
      times[t.kernel].push_back(t.durationMicros);
  std::map<std::string, double> medians;
  for (auto &[name, micros] : times)
    medians[name] = median(std::move(micros));
  return medians;
}

void requireMatchingKernels(const LoweredGraph &lowered, const Executable &exe,
                            std::string_view build) {
  const auto &expected = lowered.spec.kernels, &actual = exe.spec().kernels;
  bool same = expected.size() == actual.size() && expected.size() == lowered.plan.groups.size();
  for (size_t i = 0; same && i < expected.size(); ++i)
    same = expected[i].name == actual[i].name;
  if (!same)
    throw Error(fmt::format("bench --per-kernel: the {} executable's kernels differ from its "
                            "lowered plan ({} kernels against {} groups)",
                            build, actual.size(), lowered.plan.groups.size()));
  // feedInputs writes by the lowered plan's offsets into the executable's
  // arena: every value a kernel writes must sit in the same place in both.
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto &want = expected[i].outputs, &got = actual[i].outputs;
    bool sameSlots = want.size() == got.size();
    for (size_t j = 0; sameSlots && j < want.size(); ++j)
      sameSlots = want[j].offset == got[j].offset && want[j].type == got[j].type;
    if (!sameSlots)
      throw Error(fmt::format("bench --per-kernel: kernel {} of the {} executable writes its "
                              "outputs elsewhere in the arena than its lowered plan",
                              expected[i].name, build));
  }
}

} // namespace

KernelReport compareKernels(const Graph &graph, const TensorMap &inputs,
                            const KernelComparisonOptions &options) {
  KernelReport report;
  CompileOptions fusedOptions{.fusion = true}, unfusedOptions{.fusion = false};
  Graph base = graph;
  if (options.memoryBudget.given()) {
    // Rematerialization plans with the fused kernels: the unfused build
    // runs the same recomputations, one op per kernel.
    base = lowerGraph(graph, {.fusion = true, .memoryBudget = options.memoryBudget}).graph;
    fusedOptions.passes = unfusedOptions.passes = false;
  }
  LoweredGraph fused = lowerGraph(base, fusedOptions);
  LoweredGraph unfused = lowerGraph(base, unfusedOptions);
  if (options.memoryBudget.given()) {
    report.note = "both builds ran the fused build's graph under the memory budget";
  } else if (fused.graph == unfused.graph) {
    report.note = "fused and unfused builds ran the same passes to the same graph";
  } else {
    // The passes run before fusion, so this should not happen; if a pass ever
    // looked at the fusion option, pin the graph after the fused build's
    // passes and build both from it with no further passes.
    base = fused.graph;
    fusedOptions.passes = unfusedOptions.passes = false;
    fused = lowerGraph(base, fusedOptions);
    unfused = lowerGraph(base, unfusedOptions);
    report.note = "the passes gave different graphs fused and unfused; both builds were made "
                  "from the fused build's optimized graph with passes off";
  }

  // One step each from the initial params, on the same step inputs, copying
  // what each kernel wrote. The unfused build keeps only the values a fused
  // kernel writes; the fused build's kernels then read those (feedInputs).
  std::set<ValueId> wanted;
  for (const KernelSpec &kernel : fused.spec.kernels)
    for (const TensorSlot &slot : kernel.outputs)
      if (std::optional<ValueId> id = slotValue(slot))
        wanted.insert(*id);
  Captured fusedValues, unfusedValues;
  compileJit(base, unfusedOptions, capturing(options.threads, unfusedValues, &wanted))
      ->step(inputs);
  CompileOptions comparedOptions = fusedOptions;
  if (!options.injectFault.empty())
    comparedOptions.perturbKernel = parseFault("bench", options.injectFault, fused);
  RunOptions fed = capturing(options.threads, fusedValues, nullptr);
  feedInputs(fused, unfusedValues, fed);
  auto compared = compileJit(base, comparedOptions, fed);
  requireMatchingKernels(fused, *compared, "fused");
  compared->step(inputs);

  // Timed steps, alternating builds so that noise hits both alike.
  RunOptions timed{.profile = true, .threads = options.threads};
  auto fusedExe = compileJit(base, fusedOptions, timed);
  auto unfusedExe = compileJit(base, unfusedOptions, timed);
  requireMatchingKernels(fused, *fusedExe, "fused");
  requireMatchingKernels(unfused, *unfusedExe, "unfused");
  for (int i = 0; i < options.warmup; ++i) {
    fusedExe->step(inputs);
    unfusedExe->step(inputs);
  }
  int64_t firstFused = fusedExe->stepsTaken(), firstUnfused = unfusedExe->stepsTaken();
  for (int i = 0; i < options.steps; ++i) {
    fusedExe->step(inputs);
    unfusedExe->step(inputs);
  }
  std::map<std::string, double> fusedMicros = kernelMedians(*fusedExe, firstFused);
  std::map<std::string, double> unfusedMicros = kernelMedians(*unfusedExe, firstUnfused);
  for (size_t g = 0; g < fused.spec.kernels.size(); ++g) {
    const KernelSpec &kernel = fused.spec.kernels[g];
    const FusionGroup &group = fused.plan.groups[g];
    report.fused.push_back({kernel.name, fusedMicros[kernel.name], kernel.flops,
                            kernelFlops(fused.graph, group).total(),
                            group.bytesRead + group.bytesWritten});
  }

  for (size_t g = 0; g < fused.plan.groups.size(); ++g) {
    const FusionGroup &group = fused.plan.groups[g];
    const KernelSpec &kernel = fused.spec.kernels[g];
    KernelComparison row;
    row.kernel = kernel.name;
    row.kind = fusionKindName(group.kind);
    row.ops = group.nodes.size();
    row.fusedMicros = fusedMicros[kernel.name];
    row.fusedBytes = group.bytesRead + group.bytesWritten;
    std::set<int> unfusedGroups;
    for (ValueId v : group.nodes)
      if (int u = unfused.plan.groupOf.at(v); u >= 0)
        unfusedGroups.insert(u);
    for (int u : unfusedGroups) {
      const KernelSpec &one = unfused.spec.kernels.at(static_cast<size_t>(u));
      row.unfused.push_back(one.name);
      row.unfusedMicros += unfusedMicros[one.name];
      const FusionGroup &single = unfused.plan.groups[static_cast<size_t>(u)];
      row.unfusedBytes += single.bytesRead + single.bytesWritten;
    }
    Difference d;
    std::vector<std::string> unmatched;
    size_t matched = 0;
    for (const TensorSlot &slot : kernel.outputs) {
      std::optional<ValueId> id = slotValue(slot);
      auto a = id ? fusedValues.find(*id) : fusedValues.end();
      auto b = id ? unfusedValues.find(*id) : unfusedValues.end();
      if (a == fusedValues.end() || b == unfusedValues.end() ||
          a->second.type() != b->second.type()) {
        unmatched.push_back(slot.name);
        continue;
      }
      accumulateDifference(a->second, b->second, d);
      row.maxDiff = std::max(row.maxDiff, differenceOverLargest(a->second, b->second));
      row.comparedElements += a->second.numel();
      ++matched;
    }
    if (!matched)
      row.maxDiff = std::numeric_limits<double>::quiet_NaN();
    row.maxAbsDiff = matched ? d.abs : std::numeric_limits<double>::quiet_NaN();
    if (!unmatched.empty())
      row.note = fmt::format("no unfused value to compare for {}", fmt::join(unmatched, ", "));
    // feedInputs could not give it these: it read its own build's values.
    std::vector<std::string> unfed;
    for (ValueId v : group.inputs)
      if (opInfo(fused.graph.node(v).op).opClass != OpClass::Source && !unfusedValues.count(v))
        unfed.push_back(fmt::format("%{}", v));
    if (!unfed.empty())
      row.note += fmt::format("{}read the fused build's {}", row.note.empty() ? "" : "; ",
                              fmt::join(unfed, ", "));
    report.rows.push_back(std::move(row));
  }
  std::stable_sort(report.rows.begin(), report.rows.end(),
                   [](const KernelComparison &a, const KernelComparison &b) {
                     return a.unfusedMicros - a.fusedMicros > b.unfusedMicros - b.fusedMicros;
                   });
  return report;
}

nlohmann::json toJson(const KernelComparison &row) {
  // JSON has no Inf or NaN: an infinite difference is "inf", none measured null.
  auto number = [](double x) {
    return std::isfinite(x) ? nlohmann::json(x)
           : std::isinf(x)  ? nlohmann::json("inf")
                            : nlohmann::json();
  };
  nlohmann::json j = {
      {"kernel", row.kernel},
      {"kind", row.kind},
      {"ops", row.ops},
      {"unfused_kernels", row.unfused},
      {"fused_us", row.fusedMicros},
      {"unfused_us", row.unfusedMicros},
      {"saved_us", row.unfusedMicros - row.fusedMicros},
      {"fused_bytes", row.fusedBytes},
      {"unfused_bytes", row.unfusedBytes},
      {"max_diff", number(row.maxDiff)},
      {"max_abs_diff", number(row.maxAbsDiff)},
      {"compared_elements", row.comparedElements},
  };
  if (!row.note.empty())
    j["note"] = row.note;
  return j;
}

} // namespace stepc::cli::perf
