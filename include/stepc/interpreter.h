// The reference interpreter: runs any verified graph op by op, naively, on
// the host. It is the oracle that every pass and backend is tested against.
#pragma once

#include "stepc/communicator.h"
#include "stepc/executable.h"
#include "stepc/graph.h"
#include "stepc/tensor.h"

#include <map>
#include <optional>
#include <span>
#include <string>

namespace stepc {

using TensorMap = std::map<std::string, Tensor, std::less<>>;

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

struct InterpretOptions {
  // Refuse to allocate any single value larger than this (bytes).
  size_t maxTensorBytes = size_t(8) << 30;
  // The job's processes for all_reduce; null: one process (the identity).
  Communicator *communicator = nullptr;
};

// Runs the graph. Every input and parameter must be given with its exact
// name, dtype and shape, or stepc::Error names the one that is wrong.
// Returns every graph output by name.
TensorMap interpret(const Graph &graph, const TensorMap &inputs,
                    const TensorMap &params, const InterpretOptions &options = {});

// Runs one step of a graph with updates (a training step): returns the
// outputs and then assigns each updated param its new value in `params`.
// On an error `params` is left unchanged.
TensorMap interpretStep(const Graph &graph, const TensorMap &inputs, TensorMap &params,
                        const InterpretOptions &options = {});

// As interpret(), but returns the value of every node (index = ValueId).
std::vector<Tensor> interpretAll(const Graph &graph, const TensorMap &inputs,
                                 const TensorMap &params,
                                 const InterpretOptions &options = {});

// How errors name a node's op: "gather", or "scatter_add (gradient of
// gather)" for one that grad() or a composite generated.
std::string opLabel(const Node &node);

// The range check of an op that reads indices (gather, scatter_add, and
// one_hot with checked=1) for a node with these operand types, as the
// interpreter applies it and compiled kernels report it (IndexCheck::kernel
// left empty); nullopt for every other op.
std::optional<IndexCheck> indexCheckFor(const Node &node, std::span<const TensorType> operands);

// The kernel of one op (one case per op; compiler/interp/kernels.cpp).
// `node.type` is the result type; operands match the node's operand types.
Tensor evaluateNode(const Node &node, std::span<const Tensor *const> operands);

} // namespace stepc
