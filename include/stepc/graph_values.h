// What a graph's values are before anything runs it, shared by the
// interpreter and the code generator (compiler/ir/graph_values.cpp): its
// params' initial values, random inputs, and the range checks of the ops
// that read indices. Needs no interpreter: compiled code is checked against
// the interpreter, so it must not be built from it.
#pragma once

#include "stepc/executable.h"
#include "stepc/graph.h"
#include "stepc/tensor.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace stepc {

// Initial values of every parameter, from their initializers.
TensorMap initialParams(const Graph &graph);
Tensor initialTensor(const Init &init, const TensorType &type);

// Random values for every input of the graph, drawn from `seed`: floats
// uniform in [-1, 1); integers in [0, 10), or in [0, bound) where they are
// indices (through reshapes, transposes, broadcasts, slices, concats and
// integer casts) of a gather (bound: the axis size), one_hot (its depth, so
// cross_entropy's labels are valid classes) or scatter_add (its size), the
// smallest such bound; bools 0/1; i64 scalars (dropout seeds) any value.
TensorMap randomInputs(const Graph &graph, uint64_t seed);

// How errors name a node's op: "gather", or "scatter_add (gradient of
// gather)" for one that grad() or a composite generated.
std::string opLabel(const Node &node);

// The range check of an op that reads indices (gather, scatter_add, and
// one_hot with checked=1) for a node with these operand types, as the
// interpreter applies it and compiled kernels report it (IndexCheck::kernel
// left empty); nullopt for every other op.
std::optional<IndexCheck> indexCheckFor(const Node &node, std::span<const TensorType> operands);

} // namespace stepc
