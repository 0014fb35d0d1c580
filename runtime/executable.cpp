// What every backend's Executable shares (include/stepc/executable.h): the
// checks of a spec, param access by name, checkpoints and traces. The CPU's
// kernels run in cpu_executable.cpp, the GPU's in cuda/cuda_executable.cpp.
#include "stepc/executable.h"

#include "slots.h"

#include "stepc/error.h"
#include "stepc/file.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <set>
#include <utility>

namespace stepc {
namespace {

// The spec comes from our own codegen, but an AOT artifact may be paired
// with the wrong runtime or hand-edited: check every place a backend will
// write before it writes anything.
void checkSpec(const ExecutableSpec &spec) {
  std::string name = spec.name.empty() ? "<unnamed>" : spec.name;
  if (spec.arenaBytes < 0)
    throw Error(fmt::format("executable '{}': negative arena size {}", name, spec.arenaBytes));
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
    if (kernel.collective)
      checkSlot(kernel.collective->from, fmt::format("input of collective {}", kernel.name));
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
    : Executable(std::make_shared<const ExecutableSpec>(std::move(spec)), std::move(options)) {}

Executable::Executable(std::shared_ptr<const ExecutableSpec> spec, RunOptions options)
    : specOwner_(std::move(spec)), spec_(*specOwner_), options_(std::move(options)),
      created_(std::chrono::steady_clock::now()) {
  checkSpec(spec_);
  comm_ = options_.communicator ? options_.communicator : std::make_shared<SingleProcess>();
}

Executable::~Executable() = default;

void Executable::writeInitialParams() {
  if (comm_->size() == 1) {
    initialParamsPending_ = true;
    return;
  }
  // Every rank must run the same schedule, or their collectives would pair
  // up wrongly (and hang or corrupt); then all start from rank 0's params,
  // whatever their initializers drew.
  checkSameOnEveryRank(*comm_, executableHash(spec_),
                       fmt::format("the compiled executable '{}'", spec_.name));
  for (const TensorSlot &slot : spec_.params) {
    Tensor value = spec_.initialParams.at(slot.name);
    comm_->broadcast(value.bytes(), slot.bytes(), 0);
    writeSlot(slot, value.bytes());
  }
}

void Executable::materializeParams() {
  if (!initialParamsPending_)
    return;
  for (const TensorSlot &slot : spec_.params)
    writeSlot(slot, spec_.initialParams.at(slot.name).bytes());
  initialParamsPending_ = false;
}

std::map<std::string, Tensor>
Executable::step(const std::map<std::string, Tensor, std::less<>> &inputs) {
  checkStepInputs(spec_.inputs, inputs);
  materializeParams();
  // Everything that allocates happens before the first write to the arena.
  std::map<std::string, Tensor> outputs;
  for (const TensorSlot &slot : spec_.outputs)
    outputs.emplace(slot.name, Tensor(slot.type));
  runStep(inputs, outputs);
  ++steps_;
  return outputs;
}

std::vector<std::string> Executable::paramNames() const {
  std::vector<std::string> names;
  for (const TensorSlot &slot : spec_.params)
    names.push_back(slot.name);
  return names;
}

Tensor Executable::param(const std::string &name) const {
  const TensorSlot &slot = findParamSlot(spec_.params, name);
  if (initialParamsPending_)
    return spec_.initialParams.at(name);
  Tensor value(slot.type);
  readSlot(slot, value.bytes());
  return value;
}

void Executable::setParam(const std::string &name, const Tensor &value) {
  const TensorSlot &slot = findParamSlot(spec_.params, name);
  if (value.type() != slot.type)
    throw Error(fmt::format("param '{}': expected {}, got {}", name, typeString(slot.type),
                            typeString(value.type())));
  materializeParams();
  writeSlot(slot, value.bytes());
}

void Executable::saveParams(const std::string &path) const {
  if (comm_->rank() != 0)
    return; // rank 0 writes for the job: every rank holds the same params
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
  materializeParams();
  for (const TensorSlot &slot : spec_.params)
    writeSlot(slot, tensors.at(slot.name).bytes());
}

void Executable::writeTrace(const std::string &path) const {
  std::map<std::string_view, double> flops;
  for (const KernelSpec &kernel : spec_.kernels)
    flops[kernel.name] = kernel.flops;
  std::string device = deviceName();
  nlohmann::json events = nlohmann::json::array();
  for (const KernelTiming &t : timings_) {
    nlohmann::json args = {{"step", t.step}};
    if (!device.empty())
      args["device"] = device;
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
