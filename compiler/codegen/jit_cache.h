// The JIT cache behind compileJit (see compile.h for what is cached and how
// an entry is checked). Internal to compiler/codegen.
#pragma once

#include "stepc/compile.h"

#include <string>
#include <string_view>

namespace stepc::codegen {

enum class CacheOutcome { Off, MemoryHit, DiskHit, Compiled };

// A complete spec for `graph`: kernels' function pointers set, `owner`
// keeping their code loaded. Throws what lowering and compiling throw.
ExecutableSpec jitSpec(const Graph &graph, const CompileOptions &options,
                       CacheOutcome *outcome = nullptr);

// FNV-1a, 64 bits: cache keys and checksums (not a defence against anyone
// who can write the cache directory; a hit also compares the whole key).
uint64_t fnv1a64(std::string_view bytes);


} // namespace stepc::codegen
