// CudaExecutable (include/stepc/cuda.h): one PTX module, one stream, one
// device arena laid out by the buffer plan.
#include "stepc/cuda.h"

#include "driver.h"
#include "nccl.h"

#include "stepc/error.h"
#include "stepc/file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "../slots.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>

namespace stepc {
namespace {

using namespace cuda;

// Threads per block: a multiple of the warp size that every chip runs at
// full occupancy for these register-light kernels.
constexpr int64_t kBlock = 256;
// The grid-stride loop covers any extent; more blocks than this only add
// scheduling work.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// Every place the runtime will touch, checked before it touches anything
// (an AOT artifact may be paired with the wrong runtime or hand-edited).
void checkSpec(const CudaExecutableSpec &cuda) {
  const ExecutableSpec &spec = cuda.layout;
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
  for (auto [slots, role] : {std::pair{&spec.inputs, "input"}, std::pair{&spec.params, "param"},
                             std::pair{&spec.outputs, "output"}}) {
    std::set<std::string_view> seen;
    for (const TensorSlot &slot : *slots) {
      checkSlot(slot, role);
      if (!seen.insert(slot.name).second)
        throw Error(fmt::format("executable '{}': two {}s are named '{}'", name, role, slot.name));
    }
  }
  for (const auto &copy : spec.updateCopies) {
    auto inArena = [&](int64_t at) {
      return at >= 0 && copy.bytes >= 0 && at <= spec.arenaBytes &&
             copy.bytes <= spec.arenaBytes - at;
    };
    // Device-to-device copies must not overlap (the CPU's memmove may).
    bool overlap = copy.from < copy.to + copy.bytes && copy.to < copy.from + copy.bytes;
    if (!inArena(copy.from) || !inArena(copy.to) || (overlap && copy.bytes > 0))
      throw Error(fmt::format("executable '{}': update copy of {} bytes from {} to {} falls "
                              "outside the arena of {} bytes or overlaps itself",
                              name, copy.bytes, copy.from, copy.to, spec.arenaBytes));
  }
  if (cuda.launches.size() != spec.kernels.size())
    throw Error(fmt::format("executable '{}': {} kernels but launches for {}", name,
                            spec.kernels.size(), cuda.launches.size()));
  for (size_t k = 0; k < spec.kernels.size(); ++k) {
    for (const CudaLaunch &launch : cuda.launches[k])
      if (launch.function.empty() || launch.extent < 0)
        throw Error(fmt::format("executable '{}': kernel '{}' has a launch without a function "
                                "or with a negative extent",
                                name, spec.kernels[k].name));
    for (const TensorSlot &slot : spec.kernels[k].outputs)
      checkSlot(slot, fmt::format("output of kernel {}", spec.kernels[k].name));
  }
  checkFaultRecordSpec(spec);
  if (cuda.ptx.empty() && !spec.kernels.empty())
    throw Error(fmt::format("executable '{}': no PTX", name));
  for (const TensorSlot &slot : spec.params) {
    auto value = spec.initialParams.find(slot.name);
    if (value == spec.initialParams.end())
      throw Error(fmt::format("executable '{}': param '{}' ({}) has no initial value", name,
                              slot.name, typeString(slot.type)));
    if (value->second.type() != slot.type)
      throw Error(fmt::format("executable '{}': initial value of param '{}': expected {}, got {}",
                              name, slot.name, typeString(slot.type),
                              typeString(value->second.type())));
  }
}

// "sm_90" from the device's compute capability.
std::string deviceArch(const Driver &d, CUdevice device) {
  int major = 0, minor = 0;
  d.check(d.deviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
          "cuDeviceGetAttribute", "compute capability");
  d.check(d.deviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
          "cuDeviceGetAttribute", "compute capability");
  return fmt::format("sm_{}{}", major, minor);
}

} // namespace

std::string cudaUnavailableReason() {
  try {
    driver();
    return {};
  } catch (const Error &e) {
    return e.what();
  }
}

struct CudaExecutable::State {
  CudaExecutableSpec spec;
  RunOptions options;
  const Driver *d = nullptr;
  CUdevice device = 0;
  CUcontext context = nullptr;
  CUmodule module = nullptr;
  CUstream stream = nullptr;
  std::vector<std::vector<CUfunction>> functions; // per kernel, per launch
  CUdeviceptr arena = 0;
  CUdeviceptr snapshot = 0; // checkNumerics: the params before the step
  int64_t paramBytes = 0;
  std::byte *staging = nullptr; // pinned: inputs, then outputs, then the fault record
  int64_t inputBytes = 0, outputBytes = 0;
  // Index checks (see IndexCheck): which kernels hold them, which write
  // param bytes. A step reads the fault record before the first param write
  // that follows a checked kernel, and at its end.
  std::vector<bool> checked, writesParams;
  std::vector<CUevent> events; // profile: before and after each kernel
  std::vector<std::byte> scan; // checkNumerics: a kernel's outputs on the host
  std::string deviceName;
  int64_t steps = 0;
  std::vector<KernelTiming> timings;
  std::chrono::steady_clock::time_point created = std::chrono::steady_clock::now();
  std::unique_ptr<NcclComm> nccl; // a job of several ranks: the collective steps

  ~State();
  void makeCurrent() const { d->check(d->ctxSetCurrent(context), "cuCtxSetCurrent"); }
  void synchronize(const std::string &what) const {
    d->check(d->streamSynchronize(stream), "cuStreamSynchronize", what);
  }
  void launch(size_t kernel);
  void checkOutputs(size_t kernel);
  // Bytes, not int64s: the staging area after the outputs need not be
  // 8-byte aligned, so the record is only ever memcpy'd from here.
  std::byte *faultStaging() const { return staging + inputBytes + outputBytes; }
  void copyFaultRecord();
  void throwIfFaulted(bool paramsKept);
  void restoreParams();
  const TensorSlot &paramSlot(const std::string &name) const;
};

CudaExecutable::State::~State() {
  if (!d)
    return;
  // Teardown errors are ignored: nothing useful can be done about them.
  if (context)
    d->ctxSetCurrent(context);
  if (stream)
    d->streamSynchronize(stream);
  nccl.reset();
  for (CUevent event : events)
    if (event)
      d->eventDestroy(event);
  if (staging)
    d->memFreeHost(staging);
  if (snapshot)
    d->memFree(snapshot);
  if (arena)
    d->memFree(arena);
  if (stream)
    d->streamDestroy(stream);
  if (module)
    d->moduleUnload(module);
  if (context)
    d->devicePrimaryCtxRelease(device);
}

CudaExecutable::CudaExecutable(CudaExecutableSpec spec, RunOptions options)
    : state_(std::make_unique<State>()) {
  checkSpec(spec);
  State &s = *state_;
  s.spec = std::move(spec);
  s.options = options;
  const ExecutableSpec &layout = s.spec.layout;
  const Driver &d = driver(); // "no CUDA device: ..." when there is none
  s.d = &d;

  // One GPU per rank: the rank's index among the ranks on its node.
  int ordinal = 0;
  if (options.communicator && options.communicator->size() > 1)
    if (const char *local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
      int count = 1;
      d.check(d.deviceGetCount(&count), "cuDeviceGetCount");
      ordinal = std::atoi(local) % std::max(count, 1);
    }
  d.check(d.deviceGet(&s.device, ordinal), "cuDeviceGet");
  char name[256] = {};
  d.check(d.deviceGetName(name, sizeof name - 1, s.device), "cuDeviceGetName");
  std::string arch = deviceArch(d, s.device);
  s.deviceName = fmt::format("{} ({})", name, arch);
  d.check(d.devicePrimaryCtxRetain(&s.context, s.device), "cuDevicePrimaryCtxRetain");
  s.makeCurrent();

  // The driver JIT-compiles the PTX for this device; it wants a NUL at the end.
  std::string image = s.spec.ptx + '\0';
  std::string log(8192, '\0');
  int jitOptions[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *jitValues[] = {log.data(), reinterpret_cast<void *>(log.size())};
  if (CUresult r = d.moduleLoadDataEx(&s.module, image.data(), 2, jitOptions, jitValues);
      r != CUDA_SUCCESS) {
    log.resize(std::strlen(log.c_str()));
    // PTX for a newer chip than the device's cannot be loaded: say which to use.
    auto number = [](const std::string &a) { return std::atoi(a.c_str() + 3); };
    std::string hint = number(s.spec.arch) > number(arch)
                           ? fmt::format("; recompile with --gpu-arch {}", arch)
                           : "";
    throw Error(fmt::format(
        "CUDA error in cuModuleLoadDataEx (the PTX of '{}', compiled for {}, on {}): {}{}{}{}",
        layout.name, s.spec.arch, s.deviceName, d.describe(r), hint, log.empty() ? "" : "\n", log));
  }
  for (size_t k = 0; k < layout.kernels.size(); ++k) {
    std::vector<CUfunction> functions;
    for (const CudaLaunch &launch : s.spec.launches[k]) {
      CUfunction f = nullptr;
      d.check(d.moduleGetFunction(&f, s.module, launch.function.c_str()), "cuModuleGetFunction",
              fmt::format("kernel {}, function {}", layout.kernels[k].name, launch.function));
      functions.push_back(f);
    }
    s.functions.push_back(std::move(functions));
  }
  d.check(d.streamCreate(&s.stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");

  auto bytes = [](int64_t n) { return static_cast<size_t>(std::max<int64_t>(n, 1)); };
  d.check(d.memAlloc(&s.arena, bytes(layout.arenaBytes)), "cuMemAlloc",
          fmt::format("the arena of '{}', {} bytes", layout.name, layout.arenaBytes));
  d.check(d.memsetD8Async(s.arena, 0, bytes(layout.arenaBytes), s.stream), "cuMemsetD8Async",
          "zeroing the arena");
  for (const TensorSlot &slot : layout.inputs)
    s.inputBytes += slot.bytes();
  for (const TensorSlot &slot : layout.outputs)
    s.outputBytes += slot.bytes();
  for (const TensorSlot &slot : layout.params)
    s.paramBytes += slot.bytes();
  void *staging = nullptr;
  // Outputs are copied as they come; the fault record after them stays
  // 8-byte aligned.
  s.outputBytes = (s.outputBytes + 7) / 8 * 8;
  int64_t faultBytes = kFaultRecordWords * static_cast<int64_t>(sizeof(int64_t));
  d.check(d.memAllocHost(&staging, bytes(s.inputBytes + s.outputBytes + faultBytes)),
          "cuMemAllocHost", "staging for inputs and outputs");
  s.staging = static_cast<std::byte *>(staging);
  if (options.checkNumerics)
    d.check(d.memAlloc(&s.snapshot, bytes(s.paramBytes)), "cuMemAlloc",
            "the checkNumerics copy of the params");
  if (options.profile) {
    s.events.resize(2 * layout.kernels.size());
    for (CUevent &event : s.events)
      d.check(d.eventCreate(&event, CU_EVENT_DEFAULT), "cuEventCreate");
  }
  for (const KernelSpec &kernel : layout.kernels) {
    s.checked.push_back(std::any_of(layout.indexChecks.begin(), layout.indexChecks.end(),
                                    [&](const IndexCheck &c) { return c.kernel == kernel.name; }));
    s.writesParams.push_back(writesParams(kernel, layout.params));
  }
  if (Communicator *comm = options.communicator.get(); comm && comm->size() > 1) {
    // As the CPU Executable: the same executable on every rank, rank 0's
    // initial params everywhere.
    checkSameOnEveryRank(*comm, executableHash(layout),
                         fmt::format("the compiled executable '{}'", layout.name));
    s.nccl = std::make_unique<NcclComm>(*comm);
    for (const TensorSlot &slot : layout.params) {
      Tensor value = layout.initialParams.at(slot.name);
      comm->broadcast(value.bytes(), static_cast<int64_t>(value.nbytes()), 0);
      setParam(slot.name, value);
    }
    return;
  }
  for (const TensorSlot &slot : layout.params)
    setParam(slot.name, layout.initialParams.at(slot.name));
}

CudaExecutable::~CudaExecutable() = default;

void CudaExecutable::State::launch(size_t k) {
  const KernelSpec &kernel = spec.layout.kernels[k];
  if (kernel.collective) {
    // On the kernels' stream, so ordered with them; one process: a copy.
    const KernelSpec::Collective &c = *kernel.collective;
    const TensorSlot &to = kernel.outputs[0];
    if (nccl)
      nccl->allReduce(arena + c.from.offset, arena + to.offset, to.type.numel(), to.type.dtype,
                      c.op, stream);
    else if (to.bytes() > 0 && to.offset != c.from.offset)
      d->check(d->memcpyDtoDAsync(arena + to.offset, arena + c.from.offset, to.bytes(), stream),
               "cuMemcpyDtoDAsync", fmt::format("collective step {}", kernel.name));
    return;
  }
  CUdeviceptr allocated = arena, aligned = arena;
  int64_t offset = 0, size = spec.layout.arenaBytes, stride = 1;
  for (size_t i = 0; i < functions[k].size(); ++i) {
    int64_t extent = spec.launches[k][i].extent;
    if (extent == 0)
      continue;
    // The kernel's arguments: the arena's memref descriptor, then the extent.
    void *params[] = {&allocated, &aligned, &offset, &size, &stride, &extent};
    int64_t blocks = std::min((extent + kBlock - 1) / kBlock, kMaxBlocks);
    int64_t threads = std::min(extent, kBlock);
    threads = (threads + 31) / 32 * 32;
    d->check(d->launchKernel(functions[k][i], static_cast<unsigned>(blocks), 1, 1,
                             static_cast<unsigned>(threads), 1, 1, 0, stream, params, nullptr),
             "cuLaunchKernel",
             fmt::format("kernel {}, function {}, step {}", kernel.name,
                         spec.launches[k][i].function, steps));
  }
}

void CudaExecutable::State::checkOutputs(size_t k) {
  const KernelSpec &kernel = spec.layout.kernels[k];
  synchronize(fmt::format("after kernel {}, step {}", kernel.name, steps));
  for (const TensorSlot &slot : kernel.outputs) {
    if (!isFloat(slot.type.dtype) || slot.bytes() == 0)
      continue;
    scan.resize(static_cast<size_t>(slot.bytes()));
    d->check(d->memcpyDtoHAsync(scan.data(), arena + slot.offset, scan.size(), stream),
             "cuMemcpyDtoHAsync",
             fmt::format("checking output {} of kernel {}", slot.name, kernel.name));
    synchronize(fmt::format("checking kernel {}", kernel.name));
    checkFinite(kernel, slot, scan.data(), steps);
  }
}

// Queues the fault record's copy to the host; read it after a synchronize.
void CudaExecutable::State::copyFaultRecord() {
  d->check(d->memcpyDtoHAsync(faultStaging(), arena + spec.layout.faultOffset,
                              kFaultRecordWords * sizeof(int64_t), stream),
           "cuMemcpyDtoHAsync", "reading the fault record");
}

// After copyFaultRecord and a synchronize: throws the fault, if any, with
// the device's record zeroed for the next step.
void CudaExecutable::State::throwIfFaulted(bool paramsKept) {
  int64_t record[kFaultRecordWords];
  std::memcpy(record, faultStaging(), sizeof record);
  if (record[0] == 0)
    return;
  d->check(d->memsetD8Async(arena + spec.layout.faultOffset, 0, sizeof record, stream),
           "cuMemsetD8Async", "clearing the fault record");
  synchronize("clearing the fault record");
  throwIndexFault(spec.layout, record, steps, paramsKept);
}

void CudaExecutable::State::restoreParams() {
  CUdeviceptr from = snapshot;
  for (const TensorSlot &slot : spec.layout.params) {
    if (slot.bytes() > 0)
      d->check(d->memcpyDtoDAsync(arena + slot.offset, from, slot.bytes(), stream),
               "cuMemcpyDtoDAsync", "restoring param " + slot.name);
    from += slot.bytes();
  }
  synchronize("restoring the params");
}

std::map<std::string, Tensor>
CudaExecutable::step(const std::map<std::string, Tensor, std::less<>> &inputs) {
  State &s = *state_;
  const ExecutableSpec &spec = s.spec.layout;
  // The same checks, in the same order, as Executable::step.
  checkStepInputs(spec.inputs, inputs);
  std::map<std::string, Tensor> outputs;
  for (const TensorSlot &slot : spec.outputs)
    outputs.emplace(slot.name, Tensor(slot.type));
  s.makeCurrent();
  const Driver &d = *s.d;

  if (s.options.checkNumerics) {
    CUdeviceptr to = s.snapshot;
    for (const TensorSlot &slot : spec.params) {
      if (slot.bytes() > 0)
        d.check(d.memcpyDtoDAsync(to, s.arena + slot.offset, slot.bytes(), s.stream),
                "cuMemcpyDtoDAsync", "saving param " + slot.name);
      to += slot.bytes();
    }
  }
  // The staging buffer is pinned, so these copies overlap the host's work.
  // The previous step ended with a synchronize, so it is free to reuse.
  std::byte *at = s.staging;
  for (const TensorSlot &slot : spec.inputs) {
    if (slot.bytes() == 0)
      continue;
    std::memcpy(at, inputs.find(slot.name)->second.bytes(), static_cast<size_t>(slot.bytes()));
    d.check(d.memcpyHtoDAsync(s.arena + slot.offset, at, slot.bytes(), s.stream),
            "cuMemcpyHtoDAsync", "input " + slot.name);
    at += slot.bytes();
  }

  auto start = std::chrono::steady_clock::now();
  // A checked kernel has run since the fault record was last read; a kernel
  // has written params in this step.
  bool pending = false, paramsWritten = false;
  auto resolve = [&](const std::string &where) {
    s.copyFaultRecord();
    s.synchronize(where);
    pending = false;
    s.throwIfFaulted(s.options.checkNumerics || !paramsWritten);
  };
  try {
    for (size_t k = 0; k < spec.kernels.size(); ++k) {
      if (pending && s.writesParams[k])
        resolve(fmt::format("checking indices before kernel {}, step {}", spec.kernels[k].name,
                            s.steps));
      if (!s.events.empty())
        d.check(d.eventRecord(s.events[2 * k], s.stream), "cuEventRecord");
      s.launch(k);
      pending = pending || s.checked[k];
      paramsWritten = paramsWritten || s.writesParams[k];
      if (!s.events.empty())
        d.check(d.eventRecord(s.events[2 * k + 1], s.stream), "cuEventRecord");
      if (s.options.checkNumerics) {
        if (pending)
          resolve(fmt::format("checking the indices of kernel {}, step {}", spec.kernels[k].name,
                              s.steps));
        s.checkOutputs(k);
      }
    }
    if (pending && !spec.updateCopies.empty())
      resolve(fmt::format("checking indices before the param updates of step {}", s.steps));
  } catch (...) {
    if (s.options.checkNumerics)
      s.restoreParams();
    throw;
  }
  for (const auto &copy : spec.updateCopies)
    if (copy.bytes > 0)
      d.check(d.memcpyDtoDAsync(s.arena + copy.to, s.arena + copy.from, copy.bytes, s.stream),
              "cuMemcpyDtoDAsync", "updating a param");
  std::byte *out = s.staging + s.inputBytes;
  for (const TensorSlot &slot : spec.outputs) {
    if (slot.bytes() > 0)
      d.check(d.memcpyDtoHAsync(out, s.arena + slot.offset, slot.bytes(), s.stream),
              "cuMemcpyDtoHAsync", "output " + slot.name);
    out += slot.bytes();
  }
  if (pending)
    s.copyFaultRecord();
  // A kernel that faults is reported here, asynchronously: name them all.
  std::vector<std::string_view> names;
  for (const KernelSpec &kernel : spec.kernels)
    names.push_back(kernel.name);
  s.synchronize(fmt::format("the end of step {} (kernels {}; with checkNumerics each kernel "
                            "is synchronized and named on its own); params may be partly "
                            "updated",
                            s.steps, fmt::join(names, ", ")));
  if (pending)
    s.throwIfFaulted(!paramsWritten);
  out = s.staging + s.inputBytes;
  for (const TensorSlot &slot : spec.outputs) {
    if (slot.bytes() > 0)
      std::memcpy(outputs.at(slot.name).bytes(), out, static_cast<size_t>(slot.bytes()));
    out += slot.bytes();
  }
  if (!s.events.empty()) {
    double base = micros(start - s.created);
    for (size_t k = 0; k < spec.kernels.size(); ++k) {
      float offset = 0, duration = 0;
      d.check(d.eventElapsedTime(&offset, s.events[0], s.events[2 * k]), "cuEventElapsedTime");
      d.check(d.eventElapsedTime(&duration, s.events[2 * k], s.events[2 * k + 1]),
              "cuEventElapsedTime");
      s.timings.push_back({spec.kernels[k].name, s.steps, base + 1e3 * offset, 1e3 * duration});
    }
  }
  ++s.steps;
  return outputs;
}

const TensorSlot &CudaExecutable::State::paramSlot(const std::string &name) const {
  return findParamSlot(spec.layout.params, name);
}

std::vector<std::string> CudaExecutable::paramNames() const {
  std::vector<std::string> names;
  for (const TensorSlot &slot : state_->spec.layout.params)
    names.push_back(slot.name);
  return names;
}

Tensor CudaExecutable::param(const std::string &name) const {
  const State &s = *state_;
  const TensorSlot &slot = s.paramSlot(name);
  Tensor value(slot.type);
  s.makeCurrent();
  if (slot.bytes() > 0)
    s.d->check(s.d->memcpyDtoHAsync(value.bytes(), s.arena + slot.offset, slot.bytes(), s.stream),
               "cuMemcpyDtoHAsync", "param " + name);
  s.synchronize("reading param " + name);
  return value;
}

void CudaExecutable::setParam(const std::string &name, const Tensor &value) {
  State &s = *state_;
  const TensorSlot &slot = s.paramSlot(name);
  if (value.type() != slot.type)
    throw Error(fmt::format("param '{}': expected {}, got {}", name, typeString(slot.type),
                            typeString(value.type())));
  s.makeCurrent();
  if (slot.bytes() > 0)
    s.d->check(s.d->memcpyHtoDAsync(s.arena + slot.offset, value.bytes(), slot.bytes(), s.stream),
               "cuMemcpyHtoDAsync", "param " + name);
  // `value` is the caller's: the copy must finish before it may change.
  s.synchronize("writing param " + name);
}

int64_t CudaExecutable::stepsTaken() const { return state_->steps; }
const ExecutableSpec &CudaExecutable::spec() const { return state_->spec.layout; }
const CudaExecutableSpec &CudaExecutable::cudaSpec() const { return state_->spec; }
std::string CudaExecutable::deviceName() const { return state_->deviceName; }
const std::vector<KernelTiming> &CudaExecutable::profile() const { return state_->timings; }

void CudaExecutable::saveParams(const std::string &path) const {
  if (state_->options.communicator && state_->options.communicator->rank() != 0)
    return; // rank 0 writes for the job: every rank holds the same params
  std::map<std::string, Tensor> tensors;
  for (const TensorSlot &slot : state_->spec.layout.params)
    tensors.emplace(slot.name, param(slot.name));
  std::map<std::string, std::string> metadata{{"producer", "stepc"}};
  if (!state_->spec.layout.name.empty())
    metadata["executable"] = state_->spec.layout.name;
  writeSafetensors(path, tensors, metadata);
}

void CudaExecutable::loadParams(const std::string &path) {
  const ExecutableSpec &spec = state_->spec.layout;
  std::map<std::string, Tensor> tensors = readSafetensors(path);
  checkCheckpoint(path, spec, tensors);
  for (const TensorSlot &slot : spec.params)
    setParam(slot.name, tensors.at(slot.name));
}

void CudaExecutable::writeTrace(const std::string &path) const {
  std::map<std::string_view, double> flops;
  for (const KernelSpec &kernel : state_->spec.layout.kernels)
    flops[kernel.name] = kernel.flops;
  nlohmann::json events = nlohmann::json::array();
  for (const KernelTiming &t : state_->timings) {
    nlohmann::json args = {{"step", t.step}, {"device", state_->deviceName}};
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
  writeFileAtomically(
      path, trace.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

} // namespace stepc
