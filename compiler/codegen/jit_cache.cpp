// The JIT cache: this process' memory, then the cache directory, then MLIR
// and LLVM. What a key covers and how an entry is checked: compile.h.
#include "jit_cache.h"

#include "llvm_backend.h"
#include "tiled_matmul.h"

#include "stepc/file.h"
#include "stepc/text.h"

// STEPC_CODEGEN_FINGERPRINT: a hash of compiler/codegen's sources, generated
// by the build, so editing the code generator never serves stale objects.
#include "codegen_fingerprint.h"

#include "llvm/Config/llvm-config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>


namespace stepc::codegen {
namespace {

// Bump when stepc changes what an entry means in a way neither the source
// fingerprint nor the entry's own checks can see (e.g. the entry layout).
constexpr std::string_view kCodegenVersion = "stepc-codegen 1";
constexpr std::string_view kEntryFormat = "stepc-jit-cache 1";

// In-memory entries kept, oldest dropped first: a process that compiles many
// graphs (the ONNX conformance run) must not keep every JIT alive. A dropped
// entry's code stays loaded while an Executable still uses it.
constexpr size_t kMemoryEntries = 64;

struct CacheState {
  std::mutex mutex;
  // Full key text -> a finished spec (its owner keeps the code loaded).
  std::unordered_map<std::string, std::shared_ptr<const ExecutableSpec>> entries;
  std::deque<std::string> insertionOrder;
  JitCacheStats stats;
};

// Never destroyed: tearing down JIT-loaded code during static destruction,
// after LLVM's own statics may be gone, is not worth the risk at exit.
CacheState &state() {
  static CacheState *s = new CacheState;
  return *s;
}

void count(int64_t JitCacheStats::*field) {
  std::lock_guard lock(state().mutex);
  ++(state().stats.*field);
}

const std::string &hostTarget() {
  static const std::string target = hostTargetDescription();
  return target;
}

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

std::string keyText(const Graph &graph, const CompileOptions &options) {
  std::string text = fmt::format(
      "{}\nfingerprint {}\nllvm {}\ntarget {}\nmatmul tile {}\nfusion {} passes {}\n",
      kCodegenVersion, STEPC_CODEGEN_FINGERPRINT, LLVM_VERSION_STRING, hostTarget(),
      registerTile().name, options.fusion, options.passes);
  if (options.memoryBudget.given())
    text += fmt::format("memory budget {} bytes {}%\n", options.memoryBudget.bytes,
                        options.memoryBudget.percent);
  // Fusion bisection's probes and fault injection change the kernels.
  if (options.fusedGroups)
    text += fmt::format("fused groups {}\n", fmt::join(*options.fusedGroups, ","));
  if (options.perturbKernel)
    text += fmt::format("perturb k{} by {}\n", options.perturbKernel->group,
                        options.perturbKernel->amount);
  text += printGraph(graph);
  // The printed graph has no locations, but the kernels' provenance (and so
  // every --check-numerics report) names them.
  text += "locations\n";
  for (const Node &node : graph.nodes) {
    text += node.loc.str();
    if (!node.loc.origin.empty())
      text += fmt::format(" ({})", node.loc.origin);
    text += '\n';
  }
  return text;
}

// DIR/<graph name>-<key hash>: readable names, no path tricks from the name.
std::string entryStem(const std::string &dir, const Graph &graph, const std::string &key) {
  std::string name;
  for (char c : graph.name.substr(0, 40))
    name += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') ? c : '_';
  if (name.empty())
    name = "graph";
  return fmt::format("{}/{}-{}", dir, name, hex64(fnv1a64(key)));
}

std::optional<std::string> readWholeFile(const std::string &path) {
  std::FILE *file = std::fopen(path.c_str(), "rb");
  if (!file)
    return std::nullopt;
  std::string bytes;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0)
    bytes.append(buffer, n);
  bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed)
    return std::nullopt;
  return bytes;
}

void bindKernels(ExecutableSpec &spec, const std::shared_ptr<LoadedObject> &object) {
  for (KernelSpec &kernel : spec.kernels)
    if (!kernel.collective)
      kernel.fn = reinterpret_cast<KernelFn>(object->symbol("_mlir_ciface_" + kernel.name));
  spec.owner = object;
}

std::vector<std::string> kernelNames(const ExecutableSpec &spec) {
  std::vector<std::string> names;
  for (const KernelSpec &kernel : spec.kernels)
    names.push_back(kernel.name);
  return names;
}

enum class DiskLookup { Absent, Bad, Hit };

// On a hit, binds `lowered.spec` to the entry's object. Anything unexpected
// (a missing field, a wrong size, a checksum, a symbol LLVM cannot find)
// makes the entry Bad; the checksums run before LLVM sees the bytes, so a
// truncated or damaged object is never loaded.
DiskLookup lookUpDisk(const std::string &stem, const std::string &key, LoweredGraph &lowered) {
  std::optional<std::string> metaText = readWholeFile(stem + ".json");
  if (!metaText)
    return DiskLookup::Absent;
  try {
    nlohmann::json meta = nlohmann::json::parse(*metaText);
    if (meta.at("format").get<std::string>() != kEntryFormat ||
        meta.at("key").get<std::string>() != key ||
        meta.at("mlir_fnv1a64").get<std::string>() != hex64(fnv1a64(lowered.mlirModule)) ||
        meta.at("kernels").get<std::vector<std::string>>() != kernelNames(lowered.spec))
      return DiskLookup::Bad;
    std::optional<std::string> object = readWholeFile(stem + ".o");
    if (!object || object->size() != meta.at("object_bytes").get<size_t>() ||
        hex64(fnv1a64(*object)) != meta.at("object_fnv1a64").get<std::string>())
      return DiskLookup::Bad;
    bindKernels(lowered.spec, LoadedObject::load(*object));
    return DiskLookup::Hit;
  } catch (const std::exception &) {
    return DiskLookup::Bad;
  }
}

// The object first, then the metadata that vouches for it: a reader that
// sees new metadata with an old object fails the checksum and recompiles.
void storeOnDisk(const std::string &dir, const std::string &stem, const std::string &key,
                 const LoweredGraph &lowered, const std::string &object) {
  try {
    std::filesystem::create_directories(dir);
    writeFileAtomically(stem + ".o", object);
    nlohmann::json meta = {
        {"format", kEntryFormat},
        {"key_fnv1a64", hex64(fnv1a64(key))},
        {"mlir_fnv1a64", hex64(fnv1a64(lowered.mlirModule))},
        {"object_bytes", object.size()},
        {"object_fnv1a64", hex64(fnv1a64(object))},
        {"kernels", kernelNames(lowered.spec)},
        {"key", key},
    };
    writeFileAtomically(stem + ".json", meta.dump(1));
  } catch (const std::exception &) {
    // A read-only or full cache directory must not fail the compile.
    count(&JitCacheStats::writeFailures);
  }
}

} // namespace

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

ExecutableSpec jitSpec(const Graph &graph, const CompileOptions &options, CacheOutcome *outcome) {
  auto report = [&](CacheOutcome how) {
    if (outcome)
      *outcome = how;
  };
  if (!options.cache) {
    LoweredGraph lowered = lowerGraph(graph, options);
    bindKernels(lowered.spec, LoadedObject::load(compileToObject(lowered.mlirModule)));
    report(CacheOutcome::Off);
    return std::move(lowered.spec);
  }

  std::string key = keyText(graph, options);
  {
    std::lock_guard lock(state().mutex);
    auto it = state().entries.find(key);
    if (it != state().entries.end()) {
      ++state().stats.memoryHits;
      report(CacheOutcome::MemoryHit);
      return *it->second;
    }
  }

  LoweredGraph lowered = lowerGraph(graph, options);
  std::string dir = jitCacheDirectory();
  std::string stem = dir.empty() ? "" : entryStem(dir, graph, key);
  DiskLookup disk = stem.empty() ? DiskLookup::Absent : lookUpDisk(stem, key, lowered);
  if (disk == DiskLookup::Hit) {
    count(&JitCacheStats::diskHits);
    report(CacheOutcome::DiskHit);
  } else {
    if (disk == DiskLookup::Bad)
      count(&JitCacheStats::badEntries);
    std::string object = compileToObject(lowered.mlirModule);
    count(&JitCacheStats::misses);
    bindKernels(lowered.spec, LoadedObject::load(object));
    if (!stem.empty())
      storeOnDisk(dir, stem, key, lowered, object);
    report(CacheOutcome::Compiled);
  }

  auto entry = std::make_shared<const ExecutableSpec>(lowered.spec);
  std::lock_guard lock(state().mutex);
  CacheState &cache = state();
  if (cache.entries.emplace(key, std::move(entry)).second) {
    cache.insertionOrder.push_back(std::move(key));
    while (cache.insertionOrder.size() > kMemoryEntries) {
      cache.entries.erase(cache.insertionOrder.front());
      cache.insertionOrder.pop_front();
    }
  }
  return std::move(lowered.spec);
}

} // namespace stepc::codegen

namespace stepc {

JitCacheStats jitCacheStats() {
  std::lock_guard lock(codegen::state().mutex);
  return codegen::state().stats;
}

void resetJitCacheStats() {
  std::lock_guard lock(codegen::state().mutex);
  codegen::state().stats = {};
}

void clearJitMemoryCache() {
  std::lock_guard lock(codegen::state().mutex);
  codegen::state().entries.clear();
  codegen::state().insertionOrder.clear();
}

std::string jitCacheDirectory() {
  auto env = [](const char *name) -> std::string {
    const char *value = std::getenv(name);
    return value ? value : "";
  };
  if (std::string dir = env("STEPC_CACHE_DIR"); !dir.empty())
    return dir;
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and to be ignored.
  if (std::string dir = env("XDG_CACHE_HOME"); !dir.empty() && dir[0] == '/')
    return dir + "/stepc";
  if (std::string home = env("HOME"); !home.empty())
    return home + "/.cache/stepc";
  return "";
}

std::string jitCacheKeyText(const Graph &graph, const CompileOptions &options) {
  return codegen::keyText(graph, options);
}

} // namespace stepc
