// Rematerialization under a memory budget: trading recomputation for memory.
//
// In a training step the forward pass computes activations that the backward
// pass reads again much later; all of them are alive at once where the
// backward pass starts, which is usually the step's planned peak. Instead of
// keeping such a value, the pass copies the nodes that compute it next to its
// late users (the copy's own operands are params, inputs or values alive there
// anyway), so the original dies after its last early user.
//
// First, once: scalars computed from params and inputs alone (an optimizer's
// bias corrections) move next to their operands (hoistStepScalars).
//
// Choosing what to recompute (greedy, as Chen et al.'s "Training deep nets
// with sublinear memory cost" and XLA's HloRematerialization do it by hand):
// 1. Plan the graph as it will be compiled (planFusion, planBuffers) and find
//    the kernel where the most kernel-written bytes are alive: the peak.
// 2. Candidates are values alive at the peak with users in the peak kernel
//    or after it: a copy fused into the peak kernel recomputes a value there
//    from fewer, smaller operands, so a value the peak kernel reads last
//    (GELU's factors, read by the matmul epilogue computing d(up)) is then
//    not alive there at all. Each gets a copy set (the value, plus the
//    producers that are not alive at its first late user) and a score: bytes
//    freed at the peak (less the bytes of operands whose life the copy would
//    extend across it) per operation recomputed.
// 3. Apply the best-scoring candidate, re-plan, keep it when the plan got
//    smaller (peak arena, then the peak's live bytes), else try the next. Stop
//    when the planned peak is within the budget, or when nothing helps: the
//    budget cannot be met and the error names the smallest peak reached.
//
// Copies carry remat=N, N numbering the recomputations: CSE sees different
// nodes (it would otherwise merge a copy back into its original, or into the
// copy made for other users), and fusion keeps a copy out of kernels
// holding earlier ordinary nodes (fusion.cpp, rule "recomputation runs late"),
// so the copy runs next to its users, not in the forward pass.
#include "graph_passes.h"
#include "rewrite.h"
#include "fusion_plan.h"


#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <tuple>

namespace stepc {
namespace {

int64_t bytesOf(const Graph &graph, ValueId v) {
  const TensorType &t = graph.type(v);
  return t.numel() * static_cast<int64_t>(dtypeSize(t.dtype));
}

// Values every kernel can use without a buffer of the step's own: the graph's
// interface (alive the whole step) and what kernels compute inline.
bool isFree(OpKind op) {
  return op == OpKind::Input || op == OpKind::Parameter || op == OpKind::Constant ||
         op == OpKind::Iota;
}

// Operations to recompute one node: the cost model's price. The node's flops
// (nodeFlops), and at least one per result element (a view still writes its
// copy when it is materialized). Never for a collective: it talks to the
// other processes and runs once. Dropout's mask is a function of (seed,
// element index), so a copy draws exactly the original's mask.
std::optional<double> recomputeCost(const Graph &graph, ValueId v) {
  const Node &n = graph.node(v);
  if (isFree(n.op))
    return 0;
  if (opInfo(n.op).opClass == OpClass::Collective)
    return std::nullopt;
  return std::max(nodeFlops(graph, v).total(), static_cast<double>(n.type.numel()));
}

// The compiled plan of a graph, seen as kernel-written buffers and when each
// is alive (kernel indices), as planBuffers sees them before in-place reuse.
struct Liveness {
  FusionPlan fusion;
  int64_t arena = 0;
  std::vector<bool> buffer; // written by a kernel and read by another (or the caller)
  std::vector<bool> escapes; // a graph output or a param's new value
  std::vector<int> def, last;
  std::vector<std::vector<ValueId>> users;
  int peakKernel = 0;
  int64_t peakLive = 0, kernelsAtPeak = 0, liveSum = 0;

  // The plan's measure of size, smaller is better: the arena first; among
  // plans with the same arena, the bytes alive at the peak, then how many
  // kernels reach it, then the bytes alive summed over all kernels.
  std::tuple<int64_t, int64_t, int64_t, int64_t> key() const {
    return {arena, peakLive, kernelsAtPeak, liveSum};
  }
};

Liveness analyze(const Graph &graph, bool fusion) {
  Liveness l;
  l.fusion = planFusion(graph, {.enabled = fusion});
  l.arena = planBuffers(graph, l.fusion).arenaBytes;
  size_t n = graph.size();
  int end = static_cast<int>(l.fusion.groups.size());
  l.buffer.assign(n, false);
  l.escapes.assign(n, false);
  l.def.assign(n, end);
  l.last.assign(n, -1);
  l.users.assign(n, {});
  for (ValueId v = 0; v < n; ++v)
    for (ValueId o : graph.node(v).operands)
      if (l.users[o].empty() || l.users[o].back() != v)
        l.users[o].push_back(v);
  for (const GraphOutput &o : graph.outputs)
    l.escapes[o.value] = true;
  for (const ParamUpdate &u : graph.updates)
    l.escapes[u.value] = true;
  for (int g = 0; g < end; ++g) {
    for (ValueId v : l.fusion.groups[g].inputs)
      l.last[v] = std::max(l.last[v], g);
    for (ValueId v : l.fusion.groups[g].outputs) {
      l.buffer[v] = true;
      l.def[v] = g;
      l.last[v] = std::max(l.last[v], l.escapes[v] ? end : g);
    }
  }
  // Outputs and params' new values are left out: they live to the end of
  // the step whatever is recomputed (a new value mostly over its param).
  std::vector<int64_t> live(static_cast<size_t>(end) + 1, 0);
  for (ValueId v = 0; v < n; ++v)
    if (l.buffer[v] && !l.escapes[v])
      for (int k = l.def[v]; k <= std::min(l.last[v], end - 1); ++k)
        live[k] += bytesOf(graph, v);
  for (int k = 0; k < end; ++k) {
    l.liveSum += live[k];
    if (live[k] > l.peakLive) {
      l.peakLive = live[k];
      l.peakKernel = k;
      l.kernelsAtPeak = 0;
    }
    if (live[k] == l.peakLive)
      ++l.kernelsAtPeak;
  }
  return l;
}

// A value to recompute for its users after the peak, and what that takes.
struct Candidate {
  ValueId value;
  std::vector<ValueId> copies; // ascending: the value and the producers it needs
  std::vector<ValueId> lateUsers;
  int64_t saved = 0; // bytes fewer alive at the peak
  double cost = 0;   // operations recomputed
};

// Bound on one candidate's copy set: recomputing long chains costs more
// than it saves and makes the step hard to read.
constexpr size_t kMaxCopies = 8;

std::optional<Candidate> candidateFor(const Graph &graph, const Liveness &l, ValueId v) {
  const Node &node = graph.node(v);
  int p = l.peakKernel;
  if (!l.buffer[v] || l.escapes[v] || isFree(node.op) || l.def[v] >= p || l.last[v] < p ||
      !recomputeCost(graph, v))
    return std::nullopt;
  Candidate c{v, {}, {}};
  int firstLate = std::numeric_limits<int>::max();
  for (ValueId u : l.users[v]) {
    // A user in the peak kernel itself counts as late: a copy fused into
    // that kernel computes the value there from its (fewer, smaller)
    // operands instead of reading it, and a value the peak kernel reads
    // last is then not alive there (GELU's factors in the transformer
    // step: 9.43 MB smallest peak without this, 6.53 MB with it). Whether
    // the copy fuses, and so whether the peak falls, only re-planning
    // tells; run() keeps the choice only then.
    int k = l.fusion.groupOf[u];
    if (k >= p) {
      c.lateUsers.push_back(u);
      firstLate = std::min(firstLate, k);
    }
  }
  if (c.lateUsers.empty())
    return std::nullopt;

  // The copy set, from the value back to what is available at its first
  // late user: a free value, or a buffer alive there anyway.
  std::set<ValueId> copies{v}, extended;
  std::vector<ValueId> stack{v};
  while (!stack.empty()) {
    ValueId x = stack.back();
    stack.pop_back();
    for (ValueId o : graph.node(x).operands) {
      if (isFree(graph.node(o).op) || copies.count(o) || extended.count(o))
        continue;
      if (l.buffer[o] && l.last[o] >= firstLate)
        continue; // alive at the late users anyway
      // A buffer alive at the peak costs nothing more there when it lives on;
      // one dead by then, or a value only inside a kernel, is recomputed.
      bool aliveAtPeak = l.buffer[o] && l.last[o] >= p;
      if (aliveAtPeak || (l.buffer[o] && !recomputeCost(graph, o))) {
        extended.insert(o);
        if (!aliveAtPeak)
          c.saved -= bytesOf(graph, o);
        continue;
      }
      if (!recomputeCost(graph, o) || copies.size() == kMaxCopies)
        return std::nullopt;
      copies.insert(o);
      stack.push_back(o);
    }
  }
  c.saved += bytesOf(graph, v);
  if (c.saved <= 0)
    return std::nullopt;
  c.copies.assign(copies.begin(), copies.end());
  for (ValueId x : c.copies)
    c.cost += *recomputeCost(graph, x);
  return c;
}

// Where the copies go: before the first node of the kernel holding the first
// late user, so that fusion may put them into that kernel (rule
// "recomputation runs late" keeps them out of a kernel with an ordinary node
// before them), but after every operand they read and never after the first
// late user.
ValueId placeFor(const Graph &graph, const Liveness &l, const Candidate &c) {
  ValueId firstUser = *std::min_element(c.lateUsers.begin(), c.lateUsers.end());
  ValueId place = firstUser;
  for (ValueId v : l.fusion.groups[l.fusion.groupOf[firstUser]].nodes)
    place = std::min(place, v);
  for (ValueId x : c.copies)
    for (ValueId o : graph.node(x).operands)
      if (!std::binary_search(c.copies.begin(), c.copies.end(), o))
        place = std::max(place, o + 1);
  return std::min(place, firstUser);
}

// Inserts the candidate's copies (remat=mark) at placeFor and points the late
// users at the copy of the value.
void apply(Graph &graph, const Liveness &l, const Candidate &c, int64_t mark) {
  ValueId place = placeFor(graph, l, c);
  insertCopiesBefore(graph, c.copies, place, mark, [&](ValueId user, ValueId operand) {
    return operand == c.value &&
           std::find(c.lateUsers.begin(), c.lateUsers.end(), user) != c.lateUsers.end();
  });
  // A value that only the backward pass read is now computed there alone.
  passes::eraseIfUnused(graph, {c.value});
}

// Moves each scalar computed from params, inputs and constants alone (an
// optimizer's step count and bias corrections) to just after its operands.
// Training steps build those after the backward pass, and a gradient's
// reduction fused with its param's update has to wait for them: the
// gradient, and what the reduction reads, stay alive across the rest of the
// backward pass. The order of every other node is kept.
void hoistStepScalars(Graph &graph) {
  size_t n = graph.size();
  std::vector<bool> scalar(n, false);
  for (ValueId v = 0; v < n; ++v) {
    const Node &node = graph.node(v);
    bool interface = node.op == OpKind::Input || node.op == OpKind::Parameter;
    scalar[v] = !interface && node.type.numel() == 1 &&
                opInfo(node.op).opClass != OpClass::Collective &&
                std::all_of(node.operands.begin(), node.operands.end(), [&](ValueId o) {
                  OpKind op = graph.node(o).op;
                  return op == OpKind::Input || op == OpKind::Parameter || scalar[o];
                });
  }
  constexpr ValueId kPlaced = std::numeric_limits<ValueId>::max();
  std::vector<ValueId> order, waiting;
  std::vector<bool> placed(n, false);
  auto place = [&](ValueId v) {
    order.push_back(v);
    placed[v] = true;
  };
  auto placeReadyScalars = [&] {
    for (bool again = true; again;) {
      again = false;
      for (ValueId &w : waiting) {
        if (w == kPlaced)
          continue;
        const std::vector<ValueId> &ops = graph.node(w).operands;
        if (std::all_of(ops.begin(), ops.end(), [&](ValueId o) { return placed[o]; })) {
          place(w);
          w = kPlaced;
          again = true;
        }
      }
    }
  };
  for (ValueId v = 0; v < n; ++v)
    if (scalar[v])
      waiting.push_back(v);
  placeReadyScalars();
  for (ValueId v = 0; v < n; ++v) {
    if (scalar[v])
      continue;
    place(v);
    placeReadyScalars();
  }
  std::vector<ValueId> newId(n);
  for (size_t i = 0; i < n; ++i)
    newId[order[i]] = static_cast<ValueId>(i);
  std::vector<Node> nodes;
  nodes.reserve(n);
  for (ValueId v : order) {
    Node node = graph.node(v);
    for (ValueId &o : node.operands)
      o = newId[o];
    nodes.push_back(std::move(node));
  }
  graph.replaceNodes(std::move(nodes), newId);
}

// Bound on the greedy loop: plans tried per step, and steps.
constexpr size_t kTriesPerStep = 12;
constexpr int kMaxSteps = 400;

} // namespace

int64_t MemoryBudget::boundFor(int64_t peak) const {
  if (bytes > 0)
    return bytes;
  return static_cast<int64_t>(std::floor(static_cast<double>(peak) * percent / 100));
}

MemoryBudget parseMemoryBudget(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error(fmt::format("--memory-budget '{}': {}; expected a size in bytes (1000000, "
                             "64MB, 1.5GiB) or a percentage of the unbudgeted peak (75%)",
                             text, why));
  };
  std::string s(text);
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); }),
          s.end());
  double number = 0;
  auto [rest, ec] = std::from_chars(s.data(), s.data() + s.size(), number);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && !std::isfinite(number)))
    throw bad("out of range");
  if (ec != std::errc())
    throw bad("not a number");
  std::string unit(rest, static_cast<const char *>(s.data() + s.size()));
  for (char &ch : unit)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (unit == "%") {
    if (number <= 0 || number > 100)
      throw bad("a percentage must be above 0 and at most 100");
    return {.percent = number};
  }
  static const std::pair<std::string_view, double> kUnits[] = {
      {"", 1},         {"b", 1},           {"kb", 1e3},         {"mb", 1e6},
      {"gb", 1e9},     {"kib", 1024.0},    {"mib", 1048576.0},  {"gib", 1073741824.0},
  };
  for (const auto &[name, scale] : kUnits) {
    if (unit != name)
      continue;
    double bytes = number * scale;
    if (bytes < 1)
      throw bad("a size must be at least 1 byte");
    if (bytes > 9e18)
      throw bad("out of range");
    return {.bytes = static_cast<int64_t>(bytes)};
  }
  throw bad(fmt::format("unknown unit '{}' (B, KB, MB, GB, KiB, MiB, GiB or %)", unit));
}

std::string bytesString(int64_t bytes) {
  return fmt::format("{:.2f} MB ({} bytes)", static_cast<double>(bytes) / 1e6, bytes);
}

std::string RematReport::summary() const {
  return fmt::format("memory budget {}: planned peak {} -> {}, {} value{} recomputed ({} "
                     "node{} added)",
                     bytesString(budget), bytesString(unbudgetedPeak), bytesString(peak),
                     values, values == 1 ? "" : "s", nodes, nodes == 1 ? "" : "s");
}

int64_t plannedPeak(const Graph &graph, bool fusion) {
  return planBuffers(graph, planFusion(graph, {.enabled = fusion})).arenaBytes;
}

bool Rematerialization::run(Graph &graph) {
  Liveness current = analyze(graph, fusion_);
  report_ = {};
  report_.unbudgetedPeak = report_.peak = current.arena;
  report_.budget = budget_.boundFor(current.arena);
  int64_t nextMark = 1; // past the copies of an earlier run
  for (const Node &node : graph.nodes)
    if (node.attrs.has("remat"))
      nextMark = std::max(nextMark, node.attrs.getInt("remat") + 1);
  if (current.arena > report_.budget) {
    Graph hoisted = graph;
    hoistStepScalars(hoisted);
    if (Liveness next = analyze(hoisted, fusion_); next.key() < current.key()) {
      graph = std::move(hoisted);
      current = std::move(next);
    }
  }
  for (int step = 0; step < kMaxSteps && current.arena > report_.budget; ++step) {
    std::vector<Candidate> candidates;
    for (ValueId v = 0; v < graph.size(); ++v)
      if (std::optional<Candidate> c = candidateFor(graph, current, v))
        candidates.push_back(std::move(*c));
    // Most bytes saved per operation first; ties: more bytes, then program order.
    std::stable_sort(candidates.begin(), candidates.end(), [](const auto &a, const auto &b) {
      double sa = double(a.saved) / (a.cost + 1), sb = double(b.saved) / (b.cost + 1);
      return sa != sb ? sa > sb : a.saved > b.saved;
    });
    bool improved = false;
    for (size_t i = 0; i < candidates.size() && i < kTriesPerStep && !improved; ++i) {
      Graph trial = graph;
      apply(trial, current, candidates[i], nextMark);
      Liveness next = analyze(trial, fusion_);
      if (next.key() < current.key()) {
        graph = std::move(trial);
        current = std::move(next);
        report_.values += 1;
        ++nextMark;
        report_.nodes += static_cast<int>(candidates[i].copies.size());
        improved = true;
      }
    }
    if (!improved)
      break;
  }
  report_.peak = current.arena;
  if (current.arena > report_.budget)
    throw Error(fmt::format("memory budget {} cannot be met: the smallest planned peak with "
                            "rematerialization is {} (unbudgeted {})",
                            bytesString(report_.budget), bytesString(current.arena),
                            bytesString(report_.unbudgetedPeak)));
  return report_.values > 0;
}

} // namespace stepc
