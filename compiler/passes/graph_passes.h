// The graph-to-graph passes (one file each): each rewrites the graph in place
// and says whether it changed anything. createPass() in pass_manager.cpp
// names them and wraps each in a Pass so that a pipeline can hold them.
#pragma once

#include "stepc/passes.h"

namespace stepc::passes {

// Removes the nodes that no output or param update needs (dce.cpp).
bool eliminateDeadCode(Graph &graph);

// Merges nodes with the same op, operands, attributes and type (cse.cpp).
bool eliminateCommonSubexpressions(Graph &graph);

// Evaluates nodes whose operands are all constants (fold.cpp).
bool foldConstants(Graph &graph);

// Local algebraic identities: x*1, x+0, neg(neg(x)), ... (simplify.cpp).
bool simplifyAlgebra(Graph &graph);

} // namespace stepc::passes
