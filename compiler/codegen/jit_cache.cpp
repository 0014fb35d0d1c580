// The JIT cache: this process' memory, then the cache directory, then MLIR
// and LLVM. What a key covers and how an entry is checked: compile.h.
#include "jit_cache.h"

#include "llvm_backend.h"
#include "lowered_graph.h"
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

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <exception>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <variant>


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

// An in-memory entry: what its key text would say, kept as the options'
// header and a copy of the graph, so that a lookup hashes and compares the
// graph without printing it (a hit must cost milliseconds whatever the
// graph's size; the printed key is only made on a miss, for the disk).
struct MemoryEntry {
  std::string header;
  Graph graph;
  std::shared_ptr<const ExecutableSpec> spec; // its owner keeps the code loaded
};

struct CacheState {
  std::mutex mutex;
  // Structural hash (memoryKeyHash) -> the entries with that hash.
  std::unordered_map<uint64_t, std::vector<std::shared_ptr<const MemoryEntry>>> entries;
  std::deque<std::pair<uint64_t, const MemoryEntry *>> insertionOrder;
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

// Everything in the key text but the graph: the codegen, target and options.
std::string keyHeader(const CompileOptions &options) {
  std::string text = fmt::format(
      "{}\nfingerprint {}\nllvm {}\ntarget {}\nmatmul tile {} bf16 dot {}\nfusion {} passes {}\n",
      kCodegenVersion, STEPC_CODEGEN_FINGERPRINT, LLVM_VERSION_STRING, hostTarget(),
      registerTile().name, bf16DotProducts(), options.fusion, options.passes);
  if (options.memoryBudget.given())
    text += fmt::format("memory budget {} bytes {}%\n", options.memoryBudget.bytes,
                        options.memoryBudget.percent);
  // Fusion bisection's probes and fault injection change the kernels.
  if (options.fusedGroups)
    text += fmt::format("fused groups {}\n", fmt::join(*options.fusedGroups, ","));
  if (options.perturbKernel)
    text += fmt::format("perturb k{} by {}\n", options.perturbKernel->group,
                        options.perturbKernel->amount);
  return text;
}

std::string keyText(const Graph &graph, const CompileOptions &options) {
  std::string text = keyHeader(options);
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

// A 64-bit hash of what the key text prints, mixed a word at a time.
class StructuralHash {
public:
  void word(uint64_t w) {
    hash_ ^= w + 0x9e3779b97f4a7c15ull + (hash_ << 6) + (hash_ >> 2);
    hash_ *= 0x100000001b3ull;
  }
  void bytes(std::string_view text) {
    word(text.size());
    uint64_t w;
    size_t i = 0;
    for (; i + 8 <= text.size(); i += 8) {
      std::memcpy(&w, text.data() + i, 8);
      word(w);
    }
    w = 0;
    std::memcpy(&w, text.data() + i, text.size() - i);
    word(w);
  }
  template <typename T> void words(const std::vector<T> &values) {
    word(values.size());
    for (const T &v : values) {
      uint64_t w = 0;
      std::memcpy(&w, &v, sizeof v);
      word(w);
    }
  }
  uint64_t value() const { return hash_; }

private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

uint64_t memoryKeyHash(const std::string &header, const Graph &graph) {
  StructuralHash h;
  h.bytes(header);
  h.bytes(graph.name);
  h.word(graph.nodes.size());
  for (const Node &node : graph.nodes) {
    h.word(static_cast<uint64_t>(node.op));
    h.words(node.operands);
    h.word(node.attrs.entries().size());
    for (const auto &[name, value] : node.attrs.entries()) {
      h.bytes(name);
      h.word(value.index());
      std::visit(
          [&](const auto &v) {
            using V = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<V, std::string>)
              h.bytes(v);
            else if constexpr (std::is_same_v<V, int64_t> || std::is_same_v<V, double>)
              h.words(std::vector<V>{v});
            else
              h.words(v);
          },
          value);
    }
    h.word(static_cast<uint64_t>(node.type.dtype));
    h.words(node.type.shape);
    h.bytes(node.name);
    h.bytes(node.loc.file);
    h.word(static_cast<uint64_t>(node.loc.line) << 32 | static_cast<uint32_t>(node.loc.col));
    h.bytes(node.loc.origin);
  }
  for (const GraphOutput &o : graph.outputs) {
    h.bytes(o.name);
    h.word(o.value);
  }
  for (const ParamUpdate &u : graph.updates)
    h.word(static_cast<uint64_t>(u.param) << 32 | u.value);
  return h.value();
}

// Graph equality plus the locations the key text also covers.
bool sameKeyGraph(const Graph &a, const Graph &b) {
  if (!(a == b))
    return false;
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const SourceLoc &x = a.nodes[i].loc, &y = b.nodes[i].loc;
    if (x.file != y.file || x.line != y.line || x.col != y.col || x.origin != y.origin)
      return false;
  }
  return true;
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

namespace {
struct ObjectJob;
bool storeObject(const ObjectJob &job, const std::optional<std::string> &graphKey,
                 const std::vector<std::string> &kernels);

// One object to have: the entry module or a kernel body, from the disk
// cache or compiled.
struct ObjectJob {
  const std::string *module = nullptr;
  std::string stem; // on disk: STEM.o and STEM.json; empty: no disk cache
  Optimization optimization = Optimization::Full;
  std::string object;
  bool fromDisk = false;
  ObjectTimes times;
};

// Compiles the jobs' modules, largest first, on `threads` threads. Each
// object depends on its module's text alone, so the results are the same
// bytes whatever the thread count and order.
void compileObjects(std::vector<ObjectJob *> jobs, int threads) {
  std::stable_sort(jobs.begin(), jobs.end(), [](const ObjectJob *a, const ObjectJob *b) {
    return a->module->size() > b->module->size();
  });
  std::atomic<size_t> next = 0;
  std::mutex failure;
  std::exception_ptr error;
  auto work = [&] {
    for (size_t k = next++; k < jobs.size(); k = next++) {
      try {
        jobs[k]->object =
            compileToObject(*jobs[k]->module, &jobs[k]->times, jobs[k]->optimization);
      } catch (...) {
        std::lock_guard lock(failure);
        if (!error)
          error = std::current_exception();
        next = jobs.size();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads && static_cast<size_t>(t) < jobs.size(); ++t)
    pool.emplace_back(work);
  work();
  for (std::thread &thread : pool)
    thread.join();
  if (error)
    std::rethrow_exception(error);
}

// What an object entry's metadata vouches for: the codegen, the target and
// the module's text (by checksum and size).
std::string objectKey(const std::string &module) {
  return fmt::format("{}\nfingerprint {}\nllvm {}\ntarget {}\nmlir {} bytes fnv1a64 {}\n",
                     kCodegenVersion, STEPC_CODEGEN_FINGERPRINT, LLVM_VERSION_STRING,
                     hostTarget(), module.size(), hex64(fnv1a64(module)));
}

DiskLookup lookUpObject(ObjectJob &job) {
  std::optional<std::string> metaText = readWholeFile(job.stem + ".json");
  if (!metaText)
    return DiskLookup::Absent;
  try {
    nlohmann::json meta = nlohmann::json::parse(*metaText);
    if (meta.at("format").get<std::string>() != kEntryFormat ||
        meta.at("key").get<std::string>() != objectKey(*job.module))
      return DiskLookup::Bad;
    std::optional<std::string> object = readWholeFile(job.stem + ".o");
    if (!object || object->size() != meta.at("object_bytes").get<size_t>() ||
        hex64(fnv1a64(*object)) != meta.at("object_fnv1a64").get<std::string>())
      return DiskLookup::Bad;
    job.object = std::move(*object);
    job.fromDisk = true;
    return DiskLookup::Hit;
  } catch (const std::exception &) {
    return DiskLookup::Bad;
  }
}

// The object first, then the metadata that vouches for it: a reader that
// sees new metadata with an old object fails the checksum and recompiles.
// The entry module's metadata also names the graph's key and kernels.
// False if it could not be written (counted once per compile by the caller).
bool storeObject(const ObjectJob &job, const std::optional<std::string> &graphKey,
                 const std::vector<std::string> &kernels) {
  try {
    std::filesystem::create_directories(std::filesystem::path(job.stem).parent_path());
    writeFileAtomically(job.stem + ".o", job.object);
    nlohmann::json meta = {
        {"format", kEntryFormat},
        {"key", objectKey(*job.module)},
        {"object_bytes", job.object.size()},
        {"object_fnv1a64", hex64(fnv1a64(job.object))},
    };
    if (graphKey) {
      meta["graph_key"] = *graphKey;
      meta["kernels"] = kernels;
    }
    writeFileAtomically(job.stem + ".json", meta.dump(1));
    return true;
  } catch (const std::exception &) {
    // A read-only or full cache directory must not fail the compile.
    return false;
  }
}

int compileThreads(const CompileOptions &options) {
  if (options.compileThreads > 0)
    return options.compileThreads;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

thread_local CompileTimes lastTimes;

} // namespace

std::shared_ptr<const ExecutableSpec> jitSpec(const Graph &graph, const CompileOptions &options,
                                              CacheOutcome *outcome) {
  auto report = [&](CacheOutcome how) {
    if (outcome)
      *outcome = how;
  };
  auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::string key, header;
  uint64_t memoryHash = 0;
  if (options.cache) {
    header = keyHeader(options);
    memoryHash = memoryKeyHash(header, graph);
    {
      std::lock_guard lock(state().mutex);
      auto it = state().entries.find(memoryHash);
      if (it != state().entries.end())
        for (const auto &entry : it->second)
          if (entry->header == header && sameKeyGraph(entry->graph, graph)) {
            ++state().stats.memoryHits;
            report(CacheOutcome::MemoryHit);
            lastTimes = {};
            lastTimes.total = elapsed();
            return entry->spec;
          }
    }
    // Printed outside the lock: other threads' hits need not wait for it.
    key = keyText(graph, options);
  }

  LoweredGraph lowered = lowerGraph(graph, options);
  CompileTimes times = lowered.times;
  std::string dir = options.cache ? jitCacheDirectory() : "";
  // The entry points under the graph's own entry, the bodies under
  // kernels/ by their text's hash, shared by every graph that has them.
  std::vector<ObjectJob> jobs(lowered.bodies.size() + 1);
  jobs[0].module = &lowered.entryModule;
  jobs[0].optimization = Optimization::None;
  std::vector<std::string> bodyModules;
  bodyModules.reserve(lowered.bodies.size());
  for (size_t b = 0; b < lowered.bodies.size(); ++b) {
    bodyModules.push_back(fmt::format("module {{\n{}}}\n", lowered.bodies[b].text));
    jobs[b + 1].module = &bodyModules.back();
    if (!dir.empty())
      jobs[b + 1].stem = fmt::format("{}/kernels/{}", dir, lowered.bodies[b].symbol);
  }
  if (!dir.empty())
    jobs[0].stem = entryStem(dir, graph, key);
  auto objectsStart = std::chrono::steady_clock::now();
  std::vector<ObjectJob *> toCompile;
  for (ObjectJob &job : jobs) {
    DiskLookup disk = job.stem.empty() ? DiskLookup::Absent : lookUpObject(job);
    if (disk == DiskLookup::Bad)
      count(&JitCacheStats::badEntries);
    if (disk != DiskLookup::Hit)
      toCompile.push_back(&job);
  }
  times.threads = compileThreads(options);
  compileObjects(toCompile, times.threads);
  times.objects = std::chrono::duration<double>(std::chrono::steady_clock::now() - objectsStart).count();
  for (const ObjectJob &job : jobs) {
    times.mlirParse += job.times.parse;
    times.mlirLowering += job.times.lowering;
    times.llvmOptimize += job.times.optimize;
    times.llvmCodegen += job.times.codegen;
    times.diskObjects += job.fromDisk;
  }
  times.compiledObjects = static_cast<int>(toCompile.size());
  {
    std::lock_guard lock(state().mutex);
    state().stats.kernelsCompiled += static_cast<int64_t>(toCompile.size());
    state().stats.kernelsFromDisk += times.diskObjects;
  }

  auto loadStart = std::chrono::steady_clock::now();
  std::vector<std::string> objects;
  for (const ObjectJob &job : jobs)
    objects.push_back(job.object);
  bindKernels(lowered.spec, LoadedObject::load(objects));
  times.load = std::chrono::duration<double>(std::chrono::steady_clock::now() - loadStart).count();
  // The bodies first, then the entry points that need them; the first
  // failure (a read-only or full directory) ends the writing.
  std::stable_partition(toCompile.begin(), toCompile.end(),
                        [&](const ObjectJob *job) { return job != &jobs[0]; });
  for (const ObjectJob *job : toCompile)
    if (!job->stem.empty() &&
        !storeObject(*job, job == &jobs[0] ? std::optional<std::string>(key) : std::nullopt,
                     kernelNames(lowered.spec))) {
      count(&JitCacheStats::writeFailures);
      break;
    }
  if (!options.cache) {
    report(CacheOutcome::Off);
  } else if (toCompile.empty()) {
    count(&JitCacheStats::diskHits);
    report(CacheOutcome::DiskHit);
  } else {
    count(&JitCacheStats::misses);
    report(CacheOutcome::Compiled);
  }
  times.total = elapsed();
  lastTimes = times;
  auto spec = std::make_shared<const ExecutableSpec>(std::move(lowered.spec));
  if (!options.cache)
    return spec;

  auto entry = std::make_shared<const MemoryEntry>(MemoryEntry{std::move(header), graph, spec});
  std::lock_guard lock(state().mutex);
  CacheState &cache = state();
  auto &bucket = cache.entries[memoryHash];
  bool present = std::any_of(bucket.begin(), bucket.end(), [&](const auto &e) {
    return e->header == entry->header && sameKeyGraph(e->graph, graph);
  });
  if (!present) {
    cache.insertionOrder.emplace_back(memoryHash, entry.get());
    bucket.push_back(std::move(entry));
    while (cache.insertionOrder.size() > kMemoryEntries) {
      auto [oldHash, oldEntry] = cache.insertionOrder.front();
      cache.insertionOrder.pop_front();
      auto &oldBucket = cache.entries[oldHash];
      std::erase_if(oldBucket, [&](const auto &e) { return e.get() == oldEntry; });
      if (oldBucket.empty())
        cache.entries.erase(oldHash);
    }
  }
  return spec;
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

CompileTimes lastCompileTimes() { return codegen::lastTimes; }

std::string jitCacheKeyText(const Graph &graph, const CompileOptions &options) {
  return codegen::keyText(graph, options);
}

} // namespace stepc
