// Lowering of one FusionGroup to one MLIR function (text), the codegen
// stage's rule per op (DESIGN.md rule 1).
#pragma once

#include "stepc/fusion.h"

#include <functional>
#include <string>

namespace stepc::codegen {

struct KernelSource {
  std::string name;
  std::string globals;  // module-level ops (constant data), may be empty
  std::string function; // func.func @name(%arena: memref<?xi8>, %begin, %end)
  int64_t parallelExtent = 1;
};

// `arenaOffset(v)` gives the byte offset of every value the kernel reads
// from or writes to the arena (its inputs, outputs, params and graph inputs).
KernelSource lowerGroup(const Graph &graph, const FusionGroup &group,
                        const std::function<int64_t(ValueId)> &arenaOffset,
                        const std::vector<bool> &usedOutside);

} // namespace stepc::codegen
