// The JIT cache behind compileJit (see compile.h for what is cached and how
// an entry is checked). Internal to compiler/codegen.
#pragma once

#include "stepc/compile.h"

#include <memory>
#include <string>
#include <string_view>

namespace stepc::codegen {

enum class CacheOutcome { Off, MemoryHit, DiskHit, Compiled };

// A complete spec for `graph`: kernels' function pointers set, `owner`
// keeping their code loaded. Shared, not copied, with the in-memory cache
// entry and every executable made from it (a hit copies no initial params).
// Throws what lowering and compiling throw.
std::shared_ptr<const ExecutableSpec> jitSpec(const Graph &graph, const CompileOptions &options,
                                              CacheOutcome *outcome = nullptr);

// FNV-1a, 64 bits: cache keys and checksums (not a defence against anyone
// who can write the cache directory; a hit also compares the whole key).
uint64_t fnv1a64(std::string_view bytes);


} // namespace stepc::codegen
