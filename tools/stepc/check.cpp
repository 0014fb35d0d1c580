#include "commands.h"

#include "stepc/text.h"

#include <fmt/format.h>

#include <map>

namespace stepc::cli {

int check(const std::string &file) {
  Graph graph = parseGraphFile(file);
  fmt::print("{}: graph '{}' is valid\n", file, graph.name);

  size_t width = 4;
  for (const Node &n : graph.nodes)
    if (n.op == OpKind::Input || n.op == OpKind::Parameter)
      width = std::max(width, n.name.size());

  fmt::print("inputs:\n");
  for (ValueId id : graph.inputs())
    fmt::print("  {:<{}}  {}\n", graph.node(id).name, width, typeString(graph.type(id)));

  int64_t paramElements = 0;
  std::string paramLines;
  for (ValueId id : graph.params()) {
    const Node &n = graph.node(id);
    Init init = Init::fromAttrs(n.attrs);
    int64_t count = n.type.numel();
    paramElements += count;
    paramLines += fmt::format("  {:<{}}  {:<16} {:>10}  {}\n", n.name, width,
                              typeString(n.type), count, initKindName(init.kind));
  }
  fmt::print("params: {} tensors, {} elements\n{}", graph.params().size(), paramElements,
             paramLines);

  fmt::print("outputs:\n");
  for (const GraphOutput &out : graph.outputs)
    fmt::print("  {:<{}}  {}\n", out.name, width, typeString(graph.type(out.value)));

  std::map<std::string_view, int> counts;
  size_t ops = 0;
  for (const Node &n : graph.nodes)
    if (opInfo(n.op).opClass != OpClass::Source) {
      ++counts[opInfo(n.op).name];
      ++ops;
    }
  std::string histogram;
  for (const auto &[name, count] : counts)
    histogram += fmt::format("{}{} {}", histogram.empty() ? "" : ", ", name, count);
  fmt::print("ops: {} ({})\n", ops, histogram);
  return 0;
}

int print(const std::string &file) {
  fmt::print("{}", printGraph(parseGraphFile(file)));
  return 0;
}

} // namespace stepc::cli
