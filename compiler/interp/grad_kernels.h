// Kernels of the gradient ops (ops.def, "Gradient ops"), kept apart from
// kernels.cpp so each file stays one readable size.
#pragma once

#include "stepc/graph.h"
#include "stepc/tensor.h"

namespace stepc::interp {

Tensor scatterAdd(const Node &node, const Tensor &indices, const Tensor &updates);
Tensor conv2dGradInput(const Node &node, const Tensor &g, const Tensor &w);
Tensor conv2dGradWeight(const Node &node, const Tensor &x, const Tensor &g);
Tensor maxPool2dGrad(const Node &node, const Tensor &x, const Tensor &g);
Tensor avgPool2dGrad(const Node &node, const Tensor &g);

} // namespace stepc::interp
