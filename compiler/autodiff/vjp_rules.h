// The VJP rule of every op (one case per op; vjp_rules.cpp).
#pragma once

#include "stepc/builder.h"

#include <vector>

namespace stepc::autodiff {

// Given the forward node, its operands and result as values of the builder,
// and the gradient `g` of the loss with respect to the result, returns the
// gradient contribution for each operand. `needed[i]` says whether operand i
// wants one; an invalid Value means "no gradient" (not needed, integer, or
// not differentiable).
std::vector<Value> vjp(const Node &node, const std::vector<Value> &operands,
                       Value result, Value g, const std::vector<bool> &needed);

// Sums `g` over the axes that broadcasting added or stretched so that it
// has `shape` again.
Value unbroadcast(Value g, const Shape &shape);

} // namespace stepc::autodiff
