// The graph-to-graph passes (one file each), as classes so that a pipeline
// can hold them; createPass() in pass_manager.cpp maps names to them.
#pragma once

#include "stepc/passes.h"

namespace stepc::passes {

// Removes the nodes that no output or param update needs (dce.cpp).
class DeadCodeElimination final : public Pass {
public:
  std::string_view name() const override { return "dce"; }
  bool run(Graph &graph) override;
};

// Merges nodes with the same op, operands, attributes and type (cse.cpp).
class CommonSubexpressionElimination final : public Pass {
public:
  std::string_view name() const override { return "cse"; }
  bool run(Graph &graph) override;
};

// Evaluates nodes whose operands are all constants (fold.cpp).
class ConstantFolding final : public Pass {
public:
  std::string_view name() const override { return "fold"; }
  bool run(Graph &graph) override;
};

// Local algebraic identities: x*1, x+0, neg(neg(x)), ... (simplify.cpp).
class AlgebraicSimplification final : public Pass {
public:
  std::string_view name() const override { return "simplify"; }
  bool run(Graph &graph) override;
};

} // namespace stepc::passes
