// For the parser's round-trip checks (tests/test_parser_fuzz.cpp and the
// libFuzzer target tests/fuzz/fuzz_sg.cpp): a graph with a NaN attribute
// compares unequal to itself, so such graphs are checked by their printed
// text only.
#pragma once

#include "stepc/graph.h"

#include <cmath>
#include <variant>
#include <vector>

namespace stepc::testing {

inline bool hasNaNAttr(const Graph &graph) {
  for (const Node &node : graph.nodes)
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

} // namespace stepc::testing
