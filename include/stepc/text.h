// The .sg text format.
//
//   # comments run from '#' to the end of the line
//   graph mlp {
//     input %x : f32[128,784]
//     input %y : i32[128]
//     param %w : f32[784,10] = he_uniform(seed=1)
//     param %b : f32[10] = zeros()
//     %t = matmul(%x, %w) : f32[128,10]
//     %logits = add(%t, %b)
//     %loss = cross_entropy(%logits, %y)
//     output loss = %loss
//   }
//
// A node line is `%name = op(%a, %b) {attr=value, ...} : type`; the attribute
// dictionary and the type are optional (a given type must equal the inferred
// one). Composite names (softmax, cross_entropy, ...) expand into primitive
// ops. A training step's `update %w = %w_next` gives a param's value after
// the step (Graph::updates). print(parse(text)) reproduces text that print()
// wrote exactly.
#pragma once

#include "stepc/graph.h"

#include <string>
#include <string_view>

namespace stepc {

// Parses and verifies a graph. Throws stepc::Error "FILE:LINE:COL: error: ...".
Graph parseGraph(std::string_view text, std::string_view filename = "<input>");
// Reads a file and parses it; a missing file is a stepc::Error naming it.
Graph parseGraphFile(const std::string &path);

std::string printGraph(const Graph &graph);

} // namespace stepc
