// The .sg parser and verifier: any text either parses into a verified graph
// that prints and parses back to the same graph, or throws stepc::Error.
#include "stepc/error.h"
#include "stepc/text.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <variant>

namespace {

// NaN attributes compare unequal to themselves, so such graphs are checked
// by their printed text only.
bool hasNaN(const stepc::Graph &graph) {
  for (const stepc::Node &node : graph.nodes)
    for (const auto &[name, value] : node.attrs.entries()) {
      if (auto *d = std::get_if<double>(&value); d && std::isnan(*d))
        return true;
      if (auto *l = std::get_if<std::vector<double>>(&value))
        for (double x : *l)
          if (std::isnan(x))
            return true;
    }
  return false;
}

[[noreturn]] void fail(const char *what, const std::string &printed) {
  std::fprintf(stderr, "fuzz_sg: %s\nprinted:\n%s\n", what, printed.c_str());
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  stepc::Graph graph;
  try {
    graph = stepc::parseGraph(text, "fuzz.sg");
  } catch (const stepc::Error &) {
    return 0;
  }
  std::string printed = stepc::printGraph(graph);
  stepc::Graph again;
  try {
    again = stepc::parseGraph(printed, "printed.sg");
  } catch (const stepc::Error &e) {
    fail(e.what(), printed);
  }
  if (!hasNaN(graph) && !(again == graph))
    fail("the round trip changed the graph", printed);
  if (stepc::printGraph(again) != printed)
    fail("printing is not stable", printed);
  return 0;
}
