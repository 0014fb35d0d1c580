#include "stepc/executable.h"

#include "atomic_file.h"
#include "slots.h"
#include "thread_pool.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

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
  for (const KernelSpec &kernel : spec.kernels) {
    if (!kernel.fn)
      throw Error(fmt::format("executable '{}': kernel '{}' has no function", name,
                              kernel.name));
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

} // namespace

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

void Executable::runKernels() {
  for (size_t index = 0; index < spec_.kernels.size(); ++index) {
    const KernelSpec &kernel = spec_.kernels[index];
    auto start = std::chrono::steady_clock::now();
    try {
      bool empty = kernel.parallelExtent == 0; // its outputs have no elements
      if (!empty && kernel.parallelExtent > 1 && pool_)
        pool_->parallelFor(kernel.parallelExtent, [&](int64_t begin, int64_t end) {
          kernel.fn(&descriptor_, begin, end);
        });
      else if (!empty)
        kernel.fn(&descriptor_, 0, kernel.parallelExtent);
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
    if (options_.afterKernel)
      options_.afterKernel(index, kernel, arena_);
    if (options_.checkNumerics)
      checkOutputs(kernel);
  }
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
  writeFileAtomically(path, {text});
}

} // namespace stepc
