// Graph surgery used by the passes (rewrite.cpp). Internal to the compiler.
#pragma once

#include "stepc/graph.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace stepc {

// Points every use of `from` (operands, outputs, updates) at `to`; `to` must
// precede every user of `from`.
void replaceAllUses(Graph &graph, ValueId from, ValueId to);
// Drops the nodes for which keep[id] is false and renumbers the rest; inputs
// and params always stay, since they are the graph's interface.
void compact(Graph &graph, const std::vector<bool> &keep);
// Inserts copies of the nodes `copies` (ascending ids, each reading earlier
// copies where it reads one of `copies`) just before node `place`, marked
// remat=mark so CSE keeps them apart from the originals, and renumbers the
// graph. An operand slot of an original node at or after `place` reads the
// copy where readsCopy(its old id, the operand's old id) says so.
void insertCopiesBefore(Graph &graph, const std::vector<ValueId> &copies, ValueId place,
                        int64_t mark,
                        const std::function<bool(ValueId user, ValueId operand)> &readsCopy);

} // namespace stepc

namespace stepc::passes {

// How many times each value is used: as an operand (once per operand slot),
// as a graph output, or as a param update's new value.
std::vector<uint32_t> useCounts(const Graph &graph);

// Erases the nodes in `candidates` that nothing uses any more, then the
// operands that become unused through that, transitively; inputs and params
// stay. Passes call it on what their rewrites orphaned, so each pass leaves
// no garbage of its own (dead code that was there before is DCE's job).
// Returns the number of nodes erased.
size_t eraseIfUnused(Graph &graph, const std::vector<ValueId> &candidates);

// Points every operand, output and update through `canonical` (a value's
// replacement, or the value itself; canonical[v] <= v): how a forward sweep
// that replaces many values applies them in one O(n) walk instead of one
// replaceAllUses (O(n) each) per value.
void applyReplacements(Graph &graph, const std::vector<ValueId> &canonical);

} // namespace stepc::passes
