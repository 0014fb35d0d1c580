// The JIT cache behind compileJit (see compile.h for what is cached and how
// an entry is checked). Internal to the compiler: its counters and key are
// read by the JIT tests and `stepc bench`.
#pragma once

#include "stepc/compile.h"

#include <memory>
#include <string>
#include <string_view>

namespace stepc {

// What the cache did since the process started or resetJitCacheStats().
struct JitCacheStats {
  int64_t memoryHits = 0;     // served from this process' memory
  int64_t diskHits = 0;       // loaded from the cache directory
  int64_t misses = 0;         // compiled through MLIR and LLVM
  int64_t badEntries = 0;     // disk entries found corrupt or stale, then rewritten
  int64_t writeFailures = 0;  // entries that could not be written (the compile succeeds)
  // Objects (kernel bodies, and each graph's entry points) compiled and
  // loaded from disk, over all misses and disk hits.
  int64_t kernelsCompiled = 0;
  int64_t kernelsFromDisk = 0;
};
JitCacheStats jitCacheStats();
void resetJitCacheStats();
// Forgets every in-memory entry (the disk cache stays).
void clearJitMemoryCache();
// The text the cache key hashes (for tests and `stepc bench`).
std::string jitCacheKeyText(const Graph &graph, const CompileOptions &options);

} // namespace stepc

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
