// Seeing fusion: the per-kernel report, the refused fusions, and a Graphviz
// view with one cluster per kernel (stepc opt --fusion-report, --why-not-fused,
// --dot).
#include "fusion_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>

namespace stepc {
namespace {

std::string valueName(const Graph &graph, ValueId v) {
  const Node &node = graph.node(v);
  return node.name.empty() ? fmt::format("%{}", v) : "%" + node.name;
}

// Where a kernel's ops come from: each source file once with its lines (runs
// of lines as ranges), split by what generated the nodes there:
// "mlp.sg:13-14 (forward; gradient of relu)", "<train_step> (adam optimizer)".
std::string provenance(const Graph &graph, const std::vector<ValueId> &nodes) {
  struct Line {
    bool forward = false;
    std::vector<std::string> gradientOf, other;
  };
  std::map<std::pair<std::string, int>, Line> lines;
  std::vector<std::pair<std::string, int>> order;
  for (ValueId v : nodes) {
    const SourceLoc &loc = graph.node(v).loc;
    std::pair<std::string, int> key{loc.known() ? loc.file : "<unknown>", loc.line};
    if (!lines.count(key))
      order.push_back(key);
    Line &line = lines[key];
    constexpr std::string_view kGradient = "gradient of ";
    if (loc.origin.empty()) {
      line.forward = true;
    } else if (loc.origin.rfind(kGradient, 0) == 0) {
      std::string op = loc.origin.substr(kGradient.size());
      if (std::find(line.gradientOf.begin(), line.gradientOf.end(), op) == line.gradientOf.end())
        line.gradientOf.push_back(op);
    } else if (std::find(line.other.begin(), line.other.end(), loc.origin) ==
               line.other.end()) {
      line.other.push_back(loc.origin);
    }
  }
  // Lines with the same file and the same notes print together.
  std::vector<std::pair<std::string, std::string>> groups; // file, notes
  std::map<std::pair<std::string, std::string>, std::vector<int>> linesOf;
  for (const auto &key : order) {
    const Line &line = lines[key];
    std::vector<std::string> notes;
    bool generated = !line.gradientOf.empty() || !line.other.empty();
    if (line.forward && generated)
      notes.push_back("forward");
    if (!line.gradientOf.empty())
      notes.push_back(fmt::format("gradient of {}", fmt::join(line.gradientOf, "/")));
    notes.insert(notes.end(), line.other.begin(), line.other.end());
    std::pair<std::string, std::string> group{key.first, fmt::format("{}", fmt::join(notes, "; "))};
    if (!linesOf.count(group))
      groups.push_back(group);
    linesOf[group].push_back(key.second);
  }
  std::string out;
  for (const auto &group : groups) {
    std::vector<int> numbers = linesOf[group];
    std::sort(numbers.begin(), numbers.end());
    numbers.erase(std::remove(numbers.begin(), numbers.end(), 0), numbers.end());
    std::string ranges;
    for (size_t i = 0; i < numbers.size();) {
      size_t j = i;
      while (j + 1 < numbers.size() && numbers[j + 1] == numbers[j] + 1)
        ++j;
      ranges += fmt::format("{}{}", ranges.empty() ? "" : ",", numbers[i]);
      if (j > i)
        ranges += fmt::format("-{}", numbers[j]);
      i = j + 1;
    }
    if (!out.empty())
      out += ", ";
    out += group.first;
    if (!ranges.empty())
      out += ":" + ranges;
    if (!group.second.empty())
      out += fmt::format(" ({})", group.second);
  }
  return out;
}

// "matmul, add, relu" or "mul(3), add(2)": each op once, with its count.
std::string opList(const Graph &graph, const std::vector<ValueId> &nodes) {
  std::vector<std::string_view> order;
  std::map<std::string_view, int> count;
  for (ValueId v : nodes) {
    std::string_view name = opInfo(graph.node(v).op).name;
    if (count[name]++ == 0)
      order.push_back(name);
  }
  std::string out;
  for (std::string_view name : order) {
    if (!out.empty())
      out += ", ";
    out += count[name] == 1 ? std::string(name) : fmt::format("{}({})", name, count[name]);
  }
  return out;
}

std::string dotEscape(const std::string &text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  return out;
}

// 2 flops per multiply-add of a matmul or convolution (and its gradients).
double matrixFlops(const Graph &g, ValueId v) {
  const Node &n = g.node(v);
  if (opInfo(n.op).opClass != OpClass::Contraction)
    return 0;
  auto numel = [&](ValueId id) { return static_cast<double>(g.type(id).numel()); };
  if (n.op == OpKind::MatMul)
    return 2 * numel(v) * static_cast<double>(g.type(n.operands[0]).shape.back());
  // A convolution and its gradients: the same multiply-adds, one per (output
  // (gradient) element, weight tap in its group).
  bool gradInput = n.op == OpKind::Conv2dGradInput;
  const Shape &w = g.type(n.op == OpKind::Conv2dGradWeight ? v : n.operands[1]).shape;
  ValueId output = n.op == OpKind::Conv2d ? v : n.operands[gradInput ? 0 : 1];
  return 2 * numel(output) * static_cast<double>(w[1] * w[2] * w[3]);
}

// One line per value rematerialization recomputes (its copies carry
// remat=N): the copied ops, the kernels running them, where they come from.
std::string recomputedLines(const Graph &graph, const FusionPlan &plan) {
  std::map<int64_t, std::vector<ValueId>> copies;
  for (ValueId v = 0; v < graph.size(); ++v)
    if (graph.node(v).attrs.has("remat"))
      copies[graph.node(v).attrs.getInt("remat")].push_back(v);
  std::string out;
  for (const auto &[mark, nodes] : copies) {
    std::vector<std::string> kernels;
    for (ValueId v : nodes) {
      int g = plan.groupOf[v];
      std::string name = g < 0 ? "inline" : plan.groups[g].name;
      if (std::find(kernels.begin(), kernels.end(), name) == kernels.end())
        kernels.push_back(name);
    }
    ValueId value = nodes.back(); // the copy of the value; the rest feed it
    out += fmt::format("recomputed remat={}: {} ({}) from {} node{} ({}) in {}; {}\n", mark,
                       valueName(graph, value), opInfo(graph.node(value).op).name, nodes.size(),
                       nodes.size() == 1 ? "" : "s", opList(graph, nodes),
                       fmt::join(kernels, ", "), provenance(graph, nodes));
  }
  return out;
}

std::string megabytesOf(int64_t bytes) {
  return fmt::format("{:.2f} MB", static_cast<double>(bytes) / 1e6);
}

// What fills the planned peak (BufferPlan::peak), and its largest
// kernel-written values.
std::string peakLines(const Graph &graph, const FusionPlan &plan, const BufferPlan &buffers) {
  const PeakBreakdown &p = buffers.peak;
  if (p.kernel < 0)
    return "";
  constexpr size_t kLargest = 8;
  std::vector<std::string> largest;
  for (size_t i = 0; i < p.held.size() && i < kLargest; ++i) {
    const Node &node = graph.node(p.held[i]);
    largest.push_back(fmt::format("{} ({} {}{})", valueName(graph, p.held[i]),
                                  opInfo(node.op).name, megabytesOf(node.type.numel() *
                                  static_cast<int64_t>(dtypeSize(node.type.dtype))),
                                  node.loc.known() ? ", " + node.loc.str() : ""));
  }
  return fmt::format(
      "peak at {}: {} alive of the {} arena: params {}, optimizer state {}, inputs {}, "
      "activations {}, gradients {}, new param values {}, written by {} {}; placement gaps "
      "{}\nlargest values alive at the peak: {}\n",
      plan.groups[p.kernel].name, megabytesOf(p.live()), megabytesOf(buffers.arenaBytes),
      megabytesOf(p.params), megabytesOf(p.optimizerState), megabytesOf(p.inputs),
      megabytesOf(p.activations), megabytesOf(p.gradients), megabytesOf(p.newValues),
      plan.groups[p.kernel].name, megabytesOf(p.written),
      megabytesOf(buffers.arenaBytes - p.live()), fmt::join(largest, ", "));
}

// How each kernel runs, where the kernels are planned (planKernels): its
// nests in order, each with the roots it stores, one line per kernel (the
// nests an epilogue computes on the product's tile are listed too):
//   nests k0_matmul_add_relu: rows split; contraction %z1 (strided: a b)
//   with epilogue %h1 on its tile; elementwise %h1
//   nests k7_attention: rows split; attention %heads (stores %merged %m %l)
std::string kernelPlanLines(const Graph &graph, const FusionPlan &plan) {
  std::string out;
  for (const FusionGroup &group : plan.groups) {
    const KernelPlan &kernel = group.kernel;
    if (kernel.nests.empty())
      continue;
    std::vector<std::string> nests;
    for (const LoopNest &nest : kernel.nests) {
      std::vector<std::string> roots;
      for (ValueId v : nest.roots)
        roots.push_back(valueName(graph, v));
      std::string text = fmt::format("{} {}", nestKindName(nest.kind), fmt::join(roots, " "));
      std::vector<std::string> strided;
      for (size_t k = 0; k < nest.stridedOperands.size(); ++k)
        if (nest.stridedOperands[k])
          strided.push_back(k == 0 ? "a" : "b");
      if (!strided.empty())
        text += fmt::format(" (strided: {})", fmt::join(strided, " "));
      if (!nest.epilogue.empty()) {
        std::vector<std::string> epilogue;
        for (ValueId v : nest.epilogue)
          epilogue.push_back(valueName(graph, v));
        text += fmt::format(" with epilogue {} on its tile", fmt::join(epilogue, " "));
      }
      if (nest.samplePool)
        text += fmt::format(" then {} per sample", valueName(graph, *nest.samplePool));
      // What an attention kernel stores: its results, or the head merges
      // after them (attentionStore), and the row statistics others read.
      if (nest.kind == NestKind::Attention) {
        std::vector<std::string> stored;
        for (ValueId v : kernel.roots)
          stored.push_back(valueName(graph, v));
        text += fmt::format(" (stores {})", fmt::join(stored, " "));
      }
      nests.push_back(text);
    }
    // A Columns kernel's threads split its columns, every other's its rows.
    std::string split;
    if (kernel.rowParallel)
      split = kernel.nests.front().kind == NestKind::Columns ? "columns split; " : "rows split; ";
    out += fmt::format("nests {}: {}{}\n", group.name, split, fmt::join(nests, "; "));
  }
  return out;
}

} // namespace

std::string fusionReport(const Graph &graph, const FusionPlan &plan,
                         const BufferPlan &buffers,
                         const std::map<std::string, std::string> &sameCodeAs) {
  struct Row {
    std::string name, kind, ops, read, written, source;
  };
  std::vector<Row> rows;
  int64_t moved = 0;
  for (const FusionGroup &group : plan.groups) {
    auto shared = sameCodeAs.find(group.name);
    rows.push_back({shared == sameCodeAs.end() ? group.name
                                               : fmt::format("{} = {}", group.name, shared->second),
                    std::string(fusionKindName(group.kind)),
                    opList(graph, group.nodes), fmt::format("{}", group.bytesRead),
                    fmt::format("{}", group.bytesWritten), provenance(graph, group.nodes)});
    moved += group.bytesRead + group.bytesWritten;
  }
  Row header{"kernel", "kind", "ops", "read", "written", "source"};
  size_t wName = header.name.size(), wKind = header.kind.size(), wOps = header.ops.size(),
         wRead = header.read.size(), wWritten = header.written.size();
  // Long op lists wrap the table badly; past this width they run on and the
  // source column simply starts later on that row.
  constexpr size_t kOpsWidth = 40;
  for (const Row &r : rows) {
    wName = std::max(wName, r.name.size());
    wKind = std::max(wKind, r.kind.size());
    wOps = std::max(wOps, std::min(r.ops.size(), kOpsWidth));
    wRead = std::max(wRead, r.read.size());
    wWritten = std::max(wWritten, r.written.size());
  }
  std::string out;
  auto line = [&](const Row &r) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>{}}  {:>{}}  {}\n", r.name, wName, r.kind,
                       wKind, r.ops, wOps, r.read, wRead, r.written, wWritten, r.source);
  };
  line(header);
  for (const Row &r : rows)
    line(r);
  // Collectives (data-parallel gradient buckets): when each starts, and the
  // kernel that first waits for it; the kernels between overlap it.
  for (size_t k = 0; k < plan.groups.size(); ++k) {
    ValueId v = plan.groups[k].nodes[0];
    if (graph.node(v).op != OpKind::AllReduce)
      continue;
    size_t waiter = plan.groups.size();
    for (size_t j = k + 1; j < plan.groups.size() && waiter == plan.groups.size(); ++j)
      for (ValueId in : plan.groups[j].inputs)
        if (in == v)
          waiter = j;
    const SourceLoc &loc = graph.node(v).loc;
    out += fmt::format("collective {}: all_reduce {} of {} bytes{}, started after {}, waited "
                       "for by {} ({} kernels overlap it)\n",
                       plan.groups[k].name, graph.node(v).attrs.getString("reduction"),
                       plan.groups[k].bytesWritten,
                       loc.origin.empty() ? "" : fmt::format(" ({})", loc.origin),
                       k == 0 ? "the start" : plan.groups[k - 1].name,
                       waiter < plan.groups.size() ? plan.groups[waiter].name : "the step's end",
                       waiter - k - 1);
  }
  out += kernelPlanLines(graph, plan);
  out += recomputedLines(graph, plan);
  out += peakLines(graph, plan, buffers);
  out += fmt::format("total: {} kernels, {} bytes read+written, peak arena {} bytes\n",
                     plan.groups.size(), moved, buffers.arenaBytes);
  return out;
}

std::string whyNotFused(const Graph &graph, const FusionPlan &plan) {
  if (plan.refusals.empty())
    return "no fusion was refused\n";
  auto kernel = [&](ValueId v) {
    int g = plan.groupOf[v];
    return g < 0 ? std::string("-") : plan.groups[g].name;
  };
  auto value = [&](ValueId v) {
    const Node &node = graph.node(v);
    std::string where = node.loc.known() ? ", " + node.loc.str() : "";
    if (!node.loc.origin.empty())
      where += ", " + node.loc.origin;
    return fmt::format("{} ({}{})", valueName(graph, v), opInfo(node.op).name, where);
  };
  // A producer -> its consumer; siblings (two readers of one value) have no
  // direction: "and".
  std::string out;
  for (const FusionRefusal &r : plan.refusals) {
    const char *link = r.rule.starts_with("siblings") ? "and" : "->";
    out += fmt::format("{} {} {}: {} {} {}: {}\n", kernel(r.producer), link, kernel(r.consumer),
                       value(r.producer), link, value(r.consumer), r.rule);
  }
  return out;
}

std::string fusionDot(const Graph &graph, const FusionPlan &plan) {
  auto id = [](ValueId v) { return fmt::format("v{}", v); };
  auto label = [&](ValueId v) {
    const Node &node = graph.node(v);
    return dotEscape(fmt::format("{} {}", valueName(graph, v), opInfo(node.op).name)) +
           "\\n" + typeString(node.type);
  };
  std::string out = fmt::format("digraph \"{}\" {{\n", dotEscape(graph.name));
  out += "  rankdir=TB;\n  node [shape=box, fontsize=10];\n";
  // Inputs and params: outside every kernel. Constants and iotas are left
  // out: each kernel computes its own (FusionGroup::constants).
  for (ValueId v = 0; v < graph.size(); ++v) {
    OpKind op = graph.node(v).op;
    if (op == OpKind::Input || op == OpKind::Parameter)
      out += fmt::format("  {} [label=\"{}\", shape=ellipse{}];\n", id(v), label(v),
                         op == OpKind::Parameter ? ", style=dashed" : "");
  }
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    const FusionGroup &group = plan.groups[g];
    out += fmt::format("  subgraph cluster_{} {{\n    label=\"{} ({})\";\n", g,
                       dotEscape(group.name), fusionKindName(group.kind));
    out += "    style=filled; color=lightgrey;\n";
    for (ValueId v : group.nodes) {
      bool isOutput =
          std::find(group.outputs.begin(), group.outputs.end(), v) != group.outputs.end();
      out += fmt::format("    {} [label=\"{}\"{}];\n", id(v), label(v),
                         isOutput ? ", style=\"filled,bold\", fillcolor=white" : "");
    }
    out += "  }\n";
  }
  for (ValueId v = 0; v < graph.size(); ++v) {
    if (plan.groupOf[v] < 0)
      continue;
    std::set<ValueId> seen;
    for (ValueId o : graph.node(v).operands) {
      OpKind op = graph.node(o).op;
      if (op == OpKind::Constant || op == OpKind::Iota || !seen.insert(o).second)
        continue;
      // Edges that cross kernels go through memory: drawn bold.
      bool crosses = plan.groupOf[o] != plan.groupOf[v];
      out += fmt::format("  {} -> {}{};\n", id(o), id(v), crosses ? " [penwidth=2]" : "");
    }
  }
  for (const GraphOutput &o : graph.outputs) {
    out += fmt::format("  \"out_{}\" [label=\"output {}\", shape=ellipse];\n",
                       dotEscape(o.name), dotEscape(o.name));
    out += fmt::format("  {} -> \"out_{}\";\n", id(o.value), dotEscape(o.name));
  }
  out += "}\n";
  return out;
}

KernelFlops nodeFlops(const Graph &graph, ValueId v) {
  const Node &node = graph.node(v);
  const OpInfo &info = opInfo(node.op);
  auto numel = [&](ValueId id) { return static_cast<double>(graph.type(id).numel()); };
  auto taps = [&] {
    double n = 1;
    for (int64_t d : node.attrs.getInts("kernel"))
      n *= static_cast<double>(d);
    return n;
  };
  KernelFlops flops{.matrix = matrixFlops(graph, v)};
  switch (info.opClass) {
  case OpClass::Source:
  case OpClass::Constant:
  case OpClass::View:
  case OpClass::Indexed:
  case OpClass::Collective:
  case OpClass::Contraction: // counted exactly by matrixFlops
    break;
  case OpClass::Elementwise:
  case OpClass::Random:
    flops.other = numel(v);
    break;
  case OpClass::Scatter: // one add per update element
    flops.other = numel(node.operands[1]);
    break;
  case OpClass::Reduction:
    flops.other = numel(node.operands[0]);
    break;
  case OpClass::Window:
    // Per output element of a pool, per gradient element of its gradient.
    flops.other = numel(info.is(kScatterForm) ? node.operands.back() : v) * taps();
    break;
  }
  return flops;
}

KernelFlops kernelFlops(const Graph &graph, const FusionGroup &group) {
  KernelFlops flops;
  for (ValueId v : group.nodes) {
    KernelFlops node = nodeFlops(graph, v);
    flops.matrix += node.matrix;
    flops.other += node.other;
  }
  return flops;
}

} // namespace stepc
