// Reverse-mode differentiation as a graph transform (docs/design.md rule 4):
// gradients are ordinary nodes, so they print, optimize, lower and can be
// differentiated again.
#pragma once

#include "stepc/builder.h"

#include <string>
#include <vector>

namespace stepc {

// Appends to `loss`'s graph the nodes computing d loss / d each of `wrt` and
// returns them in order. `loss` must be a floating-point scalar. Only values
// on a path from a `wrt` value to the loss get gradient nodes; a `wrt` value
// the loss does not depend on gets zeros of its shape and a line in
// `warnings` (when given).
std::vector<Value> gradients(Value loss, const std::vector<Value> &wrt,
                             std::vector<std::string> *warnings = nullptr);

struct GradResult {
  Graph graph;
  std::vector<std::string> warnings;
};

// A copy of `graph` whose outputs are the original outputs plus
// "grad_<name>" = d loss / d <name> for every name in `wrt` (inputs, params or
// named values). An empty `wrt` means every floating-point parameter.
GradResult grad(const Graph &graph, const std::string &loss,
                std::vector<std::string> wrt = {});

} // namespace stepc
