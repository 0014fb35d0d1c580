// Import-time canonicalization: params that the graph reads only transposed
// are stored transposed.
#pragma once

#include "stepc/graph.h"
#include "stepc/tensor.h"

#include <string>
#include <vector>

namespace stepc::onnx_import {

// Each matrix param of `graph` whose every use is transpose(param,
// perm=[1,0]) (a Gemm with transB = 1 reading its weight, the commonest
// layout of exported linear layers) becomes a param of the transposed shape,
// named NAME.T (kTransposedParamSuffix, stepc/onnx.h: a file of ONNX's
// layout then misses it rather than loading a square weight transposed),
// whose value in `params` is transposed once, here, and its transposes are
// dropped: products then read the weight row-major instead of transposing
// or repacking it on every call. A param that is also read as it is, is a
// graph output, is updated by the graph, or whose NAME.T is taken keeps its
// layout, and so does one that a single product of one row reads (batch-1
// inference): dot products read it fastest in ONNX's layout. Returns the
// new names of the params it transposed.
std::vector<std::string> storeTransposedParams(Graph &graph, TensorMap &params);

} // namespace stepc::onnx_import
