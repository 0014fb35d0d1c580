// The reference interpreter: runs any verified graph op by op, naively, on
// the host. It is the oracle that every pass and backend is tested against.
#pragma once

#include "stepc/communicator.h"
#include "stepc/executable.h"
#include "stepc/graph.h"
#include "stepc/graph_values.h"
#include "stepc/tensor.h"

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace stepc {

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

// The interpreter behind the one Executable interface: params by name,
// their type checks and checkpoints are the compiled backends' (the base
// class's); a step runs interpretStep on the params it holds, so a failed
// step changes none. Verifies the graph first. RunOptions::communicator
// serves all_reduce; checkNumerics, profile, threads, beforeKernel and afterKernel
// do not apply (there are no kernels).
std::unique_ptr<Executable> makeInterpExecutable(const Graph &graph,
                                                 const RunOptions &options = {});

// As interpret(), but returns the value of every node (index = ValueId).
std::vector<Tensor> interpretAll(const Graph &graph, const TensorMap &inputs,
                                 const TensorMap &params,
                                 const InterpretOptions &options = {});

// The kernel of one op (one case per op; compiler/interp/kernels.cpp).
// `node.type` is the result type; operands match the node's operand types.
Tensor evaluateNode(const Node &node, std::span<const Tensor *const> operands);

} // namespace stepc
