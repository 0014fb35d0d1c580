#include "stepc/executable.h"

#include "slots.h"
#include "thread_pool.h"

#include "stepc/error.h"
#include "stepc/file.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>

namespace stepc {
namespace {

constexpr size_t kArenaAlignment = 64;

// memcpy, except that empty tensors may have null data pointers.
void copyBytes(std::byte *to, const std::byte *from, int64_t bytes) {
  if (bytes > 0)
    std::memcpy(to, from, static_cast<size_t>(bytes));
}

// The spec comes from our own codegen, but an AOT artifact may be paired
// with the wrong runtime or hand-edited: check every place the runtime will
// write before it writes anything.
void checkSpec(const ExecutableSpec &spec, const RunOptions &options) {
  std::string name = spec.name.empty() ? "<unnamed>" : spec.name;
  if (spec.arenaBytes < 0)
    throw Error(fmt::format("executable '{}': negative arena size {}", name, spec.arenaBytes));
  if (options.threads < 0)
    throw Error(fmt::format("executable '{}': thread count must be >= 0 (0: one per core), "
                            "got {}",
                            name, options.threads));
  auto checkSlot = [&](const TensorSlot &slot, std::string_view role) {
    int64_t bytes = slot.bytes();
    if (slot.offset < 0 || slot.offset > spec.arenaBytes || bytes > spec.arenaBytes - slot.offset)
      throw Error(fmt::format("executable '{}': {} '{}' ({}, {} bytes at offset {}) does not "
                              "fit in the arena of {} bytes",
                              name, role, slot.name, typeString(slot.type), bytes, slot.offset,
                              spec.arenaBytes));
  };
  auto checkSlots = [&](const std::vector<TensorSlot> &slots, std::string_view role) {
    std::set<std::string_view> seen;
    for (const TensorSlot &slot : slots) {
      checkSlot(slot, role);
      if (!seen.insert(slot.name).second)
        throw Error(fmt::format("executable '{}': two {}s are named '{}'", name, role,
                                slot.name));
    }
  };
  checkSlots(spec.inputs, "input");
  checkSlots(spec.params, "param");
  checkSlots(spec.outputs, "output");
  for (const auto &copy : spec.updateCopies) {
    auto inArena = [&](int64_t at) {
      return at >= 0 && copy.bytes >= 0 && at <= spec.arenaBytes &&
             copy.bytes <= spec.arenaBytes - at;
    };
    if (!inArena(copy.from) || !inArena(copy.to))
      throw Error(fmt::format("executable '{}': update copy of {} bytes from {} to {} falls "
                              "outside the arena of {} bytes",
                              name, copy.bytes, copy.from, copy.to, spec.arenaBytes));
  }
  for (size_t index = 0; index < spec.kernels.size(); ++index) {
    const KernelSpec &kernel = spec.kernels[index];
    if (kernel.collective) {
      if (kernel.outputs.size() != 1 || kernel.outputs[0].type != kernel.collective->from.type)
        throw Error(fmt::format("executable '{}': collective step '{}' needs one output of "
                                "the type of what it reduces ({})",
                                name, kernel.name, typeString(kernel.collective->from.type)));
      checkSlot(kernel.collective->from, fmt::format("input of collective {}", kernel.name));
    } else if (!kernel.fn) {
      throw Error(fmt::format("executable '{}': kernel '{}' has no function", name,
                              kernel.name));
    }
    for (size_t w : kernel.waitFor)
      if (w >= index || !spec.kernels[w].collective)
        throw Error(fmt::format("executable '{}': kernel '{}' waits for step {}, which is no "
                                "earlier collective step",
                                name, kernel.name, w));
    // Extent 0: the kernel's outputs are empty, so there is nothing to run.
    if (kernel.parallelExtent < 0)
      throw Error(fmt::format("executable '{}': kernel '{}' has parallel extent {}; it must "
                              "be at least 0",
                              name, kernel.name, kernel.parallelExtent));
    for (const TensorSlot &slot : kernel.outputs)
      checkSlot(slot, fmt::format("output of kernel {}", kernel.name));
  }
  checkFaultRecordSpec(spec);
  for (const TensorSlot &slot : spec.params) {
    auto value = spec.initialParams.find(slot.name);
    if (value == spec.initialParams.end())
      throw Error(fmt::format("executable '{}': param '{}' ({}) has no initial value", name,
                              slot.name, typeString(slot.type)));
    if (value->second.type() != slot.type)
      throw Error(fmt::format("executable '{}': initial value of param '{}': expected {}, "
                              "got {}",
                              name, slot.name, typeString(slot.type),
                              typeString(value->second.type())));
  }
  for (const auto &[paramName, value] : spec.initialParams)
    if (!findSlot(spec.params, paramName))
      throw Error(fmt::format("executable '{}': initial value given for '{}', which is not "
                              "a param; the params are: {}",
                              name, paramName, slotNames(spec.params)));
}

void mix(uint64_t &h, std::string_view bytes) {
  for (char c : bytes) { // FNV-1a
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  h ^= 0xff; // separates consecutive fields
  h *= 0x100000001b3ull;
}

void mixSlot(uint64_t &h, const TensorSlot &slot) {
  mix(h, fmt::format("{} {} {}", slot.name, typeString(slot.type), slot.offset));
}

} // namespace

uint64_t executableHash(const ExecutableSpec &spec) {
  uint64_t h = 0xcbf29ce484222325ull;
  mix(h, fmt::format("{} {}", spec.name, spec.arenaBytes));
  for (const auto *slots : {&spec.inputs, &spec.params, &spec.outputs})
    for (const TensorSlot &slot : *slots)
      mixSlot(h, slot);
  for (const KernelSpec &kernel : spec.kernels) {
    mix(h, fmt::format("{} {}", kernel.name, kernel.parallelExtent));
    for (const std::string &line : kernel.provenance)
      mix(h, line);
    for (const TensorSlot &slot : kernel.outputs)
      mixSlot(h, slot);
    if (kernel.collective) {
      mix(h, reduceOpName(kernel.collective->op));
      mixSlot(h, kernel.collective->from);
    }
  }
  return h;
}

Executable::Executable(ExecutableSpec spec, RunOptions options)
    : spec_(std::move(spec)), options_(options), created_(std::chrono::steady_clock::now()) {
  checkSpec(spec_, options_);
  firstParamWriter_ = firstParamWriter(spec_);

  size_t bytes = static_cast<size_t>(std::max<int64_t>(spec_.arenaBytes, 1));
  bytes = (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
  arena_ = static_cast<std::byte *>(std::aligned_alloc(kArenaAlignment, bytes));
  if (!arena_)
    throw Error(fmt::format("executable '{}': cannot allocate its arena of {} bytes",
                            spec_.name, spec_.arenaBytes));
  std::memset(arena_, 0, bytes);
  descriptor_ = {arena_, arena_, 0, spec_.arenaBytes, 1};

  try {
    for (const TensorSlot &slot : spec_.params) {
      const Tensor &value = spec_.initialParams.at(slot.name);
      copyBytes(arena_ + slot.offset, value.bytes(), slot.bytes());
    }
    if (options_.checkNumerics) {
      int64_t total = 0;
      for (const TensorSlot &slot : spec_.params)
        total += slot.bytes();
      paramSnapshot_.resize(static_cast<size_t>(total));
    }
    int threads = options_.threads > 0
                      ? options_.threads
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    bool parallel = std::any_of(spec_.kernels.begin(), spec_.kernels.end(),
                                [](const KernelSpec &k) { return k.parallelExtent > 1; });
    if (threads > 1 && parallel)
      pool_ = std::make_unique<ThreadPool>(threads);
    inFlight_.assign(spec_.kernels.size(), -1);
    comm_ = options_.communicator ? options_.communicator : std::make_shared<SingleProcess>();
    if (comm_->size() > 1) {
      // Every rank must run the same schedule, or their collectives would
      // pair up wrongly (and hang or corrupt); then all start from rank 0's
      // params, whatever their initializers drew.
      checkSameOnEveryRank(*comm_, executableHash(spec_),
                           fmt::format("the compiled executable '{}'", spec_.name));
      for (const TensorSlot &slot : spec_.params)
        comm_->broadcast(arena_ + slot.offset, slot.bytes(), 0);
    }
  } catch (...) {
    std::free(arena_);
    throw;
  }
}

Executable::~Executable() {
  pool_.reset(); // join the workers before the arena they might touch goes
  std::free(arena_);
}

void Executable::checkInputs(const std::map<std::string, Tensor, std::less<>> &inputs) const {
  checkStepInputs(spec_.inputs, inputs);
}

void Executable::checkOutputs(const KernelSpec &kernel) const {
  for (const TensorSlot &slot : kernel.outputs)
    checkFinite(kernel, slot, arena_ + slot.offset, steps_);
}

void Executable::checkFault(size_t kernelIndex) {
  int64_t *record = reinterpret_cast<int64_t *>(arena_ + spec_.faultOffset);
  if (record[0] == 0)
    return;
  int64_t copy[kFaultRecordWords];
  std::memcpy(copy, record, sizeof copy);
  std::memset(record, 0, sizeof copy); // ready for the next step
  throwIndexFault(spec_, copy, steps_, options_.checkNumerics || kernelIndex < firstParamWriter_);
}

void Executable::runCollective(size_t index, const KernelSpec &kernel) {
  const KernelSpec::Collective &c = *kernel.collective;
  const TensorSlot &to = kernel.outputs[0];
  inFlight_[index] = comm_->startAllReduce(arena_ + c.from.offset, arena_ + to.offset,
                                           to.type.numel(), to.type.dtype, c.op);
  ++collectiveStats_.calls;
  collectiveStats_.bytes += to.bytes();
}

void Executable::waitFor(size_t index) {
  if (inFlight_[index] < 0)
    return;
  if (comm_->finished(inFlight_[index]))
    collectiveStats_.hiddenBytes += spec_.kernels[index].outputs[0].bytes();
  auto start = std::chrono::steady_clock::now();
  comm_->wait(std::exchange(inFlight_[index], -1));
  collectiveStats_.waitMicros += micros(std::chrono::steady_clock::now() - start);
}

void Executable::runKernels() {
  for (size_t index = 0; index < spec_.kernels.size(); ++index) {
    const KernelSpec &kernel = spec_.kernels[index];
    for (size_t w : kernel.waitFor)
      waitFor(w);
    auto start = std::chrono::steady_clock::now();
    try {
      if (kernel.collective)
        runCollective(index, kernel);
      // Extent 0: its outputs have no elements.
      else if (kernel.parallelExtent > 1 && pool_)
        pool_->parallelFor(kernel.parallelExtent, [&](int64_t begin, int64_t end) {
          kernel.fn(&descriptor_, begin, end);
        });
      else if (kernel.parallelExtent > 0)
        kernel.fn(&descriptor_, 0, kernel.parallelExtent);
      comm_->progress();
    } catch (const std::exception &e) {
      throw Error(fmt::format(
          "kernel {} (step {}) failed: {}; {}", kernel.name, steps_, e.what(),
          options_.checkNumerics
              ? fmt::format("params are left as they were before step {}", steps_)
              : std::string("params may be partly updated (with checkNumerics on, a "
                            "failed step is rolled back)")));
    }
    if (options_.profile) {
      auto end = std::chrono::steady_clock::now();
      timings_.push_back({kernel.name, steps_, micros(start - created_), micros(end - start)});
    }
    if (spec_.faultOffset >= 0)
      checkFault(index);
    if (options_.afterKernel && !kernel.collective)
      options_.afterKernel(index, kernel, arena_);
    if (options_.checkNumerics && !kernel.collective)
      checkOutputs(kernel);
  }
  // Results a graph output or param update names are read after the kernels.
  for (size_t index = 0; index < spec_.kernels.size(); ++index)
    waitFor(index);
}

std::map<std::string, Tensor>
Executable::step(const std::map<std::string, Tensor, std::less<>> &inputs) {
  checkInputs(inputs);

  // Everything that allocates happens before the first write to the arena.
  std::map<std::string, Tensor> outputs;
  for (const TensorSlot &slot : spec_.outputs)
    outputs.emplace(slot.name, Tensor(slot.type));
  size_t timingsBefore = timings_.size();
  if (options_.profile && timings_.capacity() < timingsBefore + spec_.kernels.size())
    timings_.reserve(std::max(2 * timings_.capacity(), timingsBefore + spec_.kernels.size()));

  if (options_.checkNumerics) {
    std::byte *to = paramSnapshot_.data();
    for (const TensorSlot &slot : spec_.params) {
      copyBytes(to, arena_ + slot.offset, slot.bytes());
      to += slot.bytes();
    }
  }
  for (const TensorSlot &slot : spec_.inputs)
    copyBytes(arena_ + slot.offset, inputs.find(slot.name)->second.bytes(), slot.bytes());

  try {
    runKernels();
  } catch (...) {
    for (size_t index = 0; index < spec_.kernels.size(); ++index)
      waitFor(index); // no collective may still write into the arena
    timings_.erase(timings_.begin() + static_cast<ptrdiff_t>(timingsBefore), timings_.end());
    if (options_.checkNumerics) {
      const std::byte *from = paramSnapshot_.data();
      for (const TensorSlot &slot : spec_.params) {
        copyBytes(arena_ + slot.offset, from, slot.bytes());
        from += slot.bytes();
      }
    }
    throw;
  }

  for (const auto &copy : spec_.updateCopies)
    if (copy.bytes > 0)
      std::memmove(arena_ + copy.to, arena_ + copy.from, static_cast<size_t>(copy.bytes));
  ++steps_;
  for (const TensorSlot &slot : spec_.outputs)
    copyBytes(outputs.at(slot.name).bytes(), arena_ + slot.offset, slot.bytes());
  return outputs;
}

const TensorSlot &Executable::paramSlot(const std::string &name) const {
  return findParamSlot(spec_.params, name);
}

std::vector<std::string> Executable::paramNames() const {
  std::vector<std::string> names;
  for (const TensorSlot &slot : spec_.params)
    names.push_back(slot.name);
  return names;
}

Tensor Executable::param(const std::string &name) const {
  const TensorSlot &slot = paramSlot(name);
  Tensor value(slot.type);
  copyBytes(value.bytes(), arena_ + slot.offset, slot.bytes());
  return value;
}

void Executable::setParam(const std::string &name, const Tensor &value) {
  const TensorSlot &slot = paramSlot(name);
  if (value.type() != slot.type)
    throw Error(fmt::format("param '{}': expected {}, got {}", name, typeString(slot.type),
                            typeString(value.type())));
  copyBytes(arena_ + slot.offset, value.bytes(), slot.bytes());
}

void Executable::saveParams(const std::string &path) const {
  if (comm_->rank() != 0)
    return;
  std::map<std::string, Tensor> tensors;
  for (const TensorSlot &slot : spec_.params)
    tensors.emplace(slot.name, param(slot.name));
  std::map<std::string, std::string> metadata{{"producer", "stepc"}};
  if (!spec_.name.empty())
    metadata["executable"] = spec_.name;
  writeSafetensors(path, tensors, metadata);
}

void Executable::loadParams(const std::string &path) {
  std::map<std::string, Tensor> tensors = readSafetensors(path);
  checkCheckpoint(path, spec_, tensors);
  for (const TensorSlot &slot : spec_.params) {
    const Tensor &value = tensors.at(slot.name);
    copyBytes(arena_ + slot.offset, value.bytes(), slot.bytes());
  }
}

void Executable::writeTrace(const std::string &path) const {
  std::map<std::string_view, double> flops;
  for (const KernelSpec &kernel : spec_.kernels)
    flops[kernel.name] = kernel.flops;
  nlohmann::json events = nlohmann::json::array();
  for (const KernelTiming &t : timings_) {
    nlohmann::json args = {{"step", t.step}};
    if (double f = flops[t.kernel]; f > 0 && t.durationMicros > 0)
      args["gflops_per_s"] = f / t.durationMicros * 1e-3;
    events.push_back({{"name", t.kernel},
                      {"cat", "kernel"},
                      {"ph", "X"},
                      {"ts", t.startMicros},
                      {"dur", t.durationMicros},
                      {"pid", 1},
                      {"tid", 1},
                      {"args", std::move(args)}});
  }
  nlohmann::json trace = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  std::string text =
      trace.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  writeFileAtomically(path, text);
}

} // namespace stepc
