// The .sg parser and verifier: any text either parses into a verified graph
// that prints and parses back to the same graph, or throws stepc::Error.
#include "nan_attrs.h"

#include "stepc/error.h"
#include "stepc/text.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

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
  if (!stepc::testing::hasNaNAttr(graph) && !(again == graph))
    fail("the round trip changed the graph", printed);
  if (stepc::printGraph(again) != printed)
    fail("printing is not stable", printed);
  return 0;
}
