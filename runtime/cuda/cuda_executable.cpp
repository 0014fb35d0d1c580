// CudaExecutable (include/stepc/cuda.h): one PTX module, one stream, one
// device arena laid out by the buffer plan.
#include "stepc/cuda.h"

#include "driver.h"
#include "nccl.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "../slots.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace stepc {
namespace {

using namespace cuda;

// Threads per block: a multiple of the warp size that every chip runs at
// full occupancy for these register-light kernels.
constexpr int64_t kBlock = 256;
// The grid-stride loop covers any extent; more blocks than this only add
// scheduling work.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// What only the GPU runs (the rest Executable checked): launches of PTX
// functions, and update copies that may not overlap.
void checkCudaSpec(const CudaExecutableSpec &cuda, const ExecutableSpec &spec) {
  std::string name = spec.name.empty() ? "<unnamed>" : spec.name;
  for (const auto &copy : spec.updateCopies) {
    // Device-to-device copies must not overlap (the CPU's memmove may).
    bool overlap = copy.from < copy.to + copy.bytes && copy.to < copy.from + copy.bytes;
    if (overlap && copy.bytes > 0)
      throw Error(fmt::format("executable '{}': update copy of {} bytes from {} to {} overlaps "
                              "itself",
                              name, copy.bytes, copy.from, copy.to));
  }
  if (cuda.launches.size() != spec.kernels.size())
    throw Error(fmt::format("executable '{}': {} kernels but launches for {}", name,
                            spec.kernels.size(), cuda.launches.size()));
  for (size_t k = 0; k < spec.kernels.size(); ++k)
    for (const CudaLaunch &launch : cuda.launches[k])
      if (launch.function.empty() || launch.extent < 0)
        throw Error(fmt::format("executable '{}': kernel '{}' has a launch without a function "
                                "or with a negative extent",
                                name, spec.kernels[k].name));
  if (cuda.ptx.empty() && !spec.kernels.empty())
    throw Error(fmt::format("executable '{}': no PTX", name));
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

// The driver's handles and the host buffers of one CudaExecutable.
struct CudaExecutable::State {
  std::vector<std::vector<CudaLaunch>> launches; // per kernel
  std::string ptx, arch;
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
  std::unique_ptr<NcclComm> nccl; // a job of several ranks: the collective steps

  ~State();
  void makeCurrent() const { d->check(d->ctxSetCurrent(context), "cuCtxSetCurrent"); }
  void synchronize(const std::string &what) const {
    d->check(d->streamSynchronize(stream), "cuStreamSynchronize", what);
  }
  // Bytes, not int64s: the staging area after the outputs need not be
  // 8-byte aligned, so the record is only ever memcpy'd from here.
  std::byte *faultStaging() const { return staging + inputBytes + outputBytes; }
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
    : Executable(std::move(spec.layout), std::move(options)), state_(std::make_unique<State>()) {
  checkCudaSpec(spec, spec_);
  State &s = *state_;
  s.launches = std::move(spec.launches);
  s.ptx = std::move(spec.ptx);
  s.arch = std::move(spec.arch);
  const ExecutableSpec &layout = spec_;
  const Driver &d = driver(); // "no CUDA device: ..." when there is none
  s.d = &d;

  // One GPU per rank: the rank's index among the ranks on its node.
  int ordinal = 0;
  if (comm_->size() > 1)
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
  std::string image = s.ptx + '\0';
  std::string log(8192, '\0');
  int jitOptions[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *jitValues[] = {log.data(), reinterpret_cast<void *>(log.size())};
  if (CUresult r = d.moduleLoadDataEx(&s.module, image.data(), 2, jitOptions, jitValues);
      r != CUDA_SUCCESS) {
    log.resize(std::strlen(log.c_str()));
    // PTX for a newer chip than the device's cannot be loaded: say which to use.
    auto number = [](const std::string &a) { return std::atoi(a.c_str() + 3); };
    std::string hint = number(s.arch) > number(arch)
                           ? fmt::format("; recompile with --gpu-arch {}", arch)
                           : "";
    throw Error(fmt::format(
        "CUDA error in cuModuleLoadDataEx (the PTX of '{}', compiled for {}, on {}): {}{}{}{}",
        layout.name, s.arch, s.deviceName, d.describe(r), hint, log.empty() ? "" : "\n", log));
  }
  for (size_t k = 0; k < layout.kernels.size(); ++k) {
    std::vector<CUfunction> functions;
    for (const CudaLaunch &launch : s.launches[k]) {
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
  if (options_.checkNumerics)
    d.check(d.memAlloc(&s.snapshot, bytes(s.paramBytes)), "cuMemAlloc",
            "the checkNumerics copy of the params");
  if (options_.profile) {
    s.events.resize(2 * layout.kernels.size());
    for (CUevent &event : s.events)
      d.check(d.eventCreate(&event, CU_EVENT_DEFAULT), "cuEventCreate");
  }
  for (const KernelSpec &kernel : layout.kernels) {
    s.checked.push_back(std::any_of(layout.indexChecks.begin(), layout.indexChecks.end(),
                                    [&](const IndexCheck &c) { return c.kernel == kernel.name; }));
    s.writesParams.push_back(writesParams(kernel, layout.params));
  }
  writeInitialParams();
  if (comm_->size() > 1)
    s.nccl = std::make_unique<NcclComm>(*comm_);
}

CudaExecutable::~CudaExecutable() = default;

void CudaExecutable::launch(size_t k) {
  State &s = *state_;
  const KernelSpec &kernel = spec_.kernels[k];
  if (kernel.collective) {
    // On the kernels' stream, so ordered with them; one process: a copy.
    const KernelSpec::Collective &c = *kernel.collective;
    const TensorSlot &to = kernel.outputs[0];
    if (s.nccl)
      s.nccl->allReduce(s.arena + c.from.offset, s.arena + to.offset, to.type.numel(), to.type.dtype,
                      c.op, s.stream);
    else if (to.bytes() > 0 && to.offset != c.from.offset)
      s.d->check(s.d->memcpyDtoDAsync(s.arena + to.offset, s.arena + c.from.offset, to.bytes(), s.stream),
               "cuMemcpyDtoDAsync", fmt::format("collective step {}", kernel.name));
    return;
  }
  CUdeviceptr allocated = s.arena, aligned = s.arena;
  int64_t offset = 0, size = spec_.arenaBytes, stride = 1;
  for (size_t i = 0; i < s.functions[k].size(); ++i) {
    int64_t extent = s.launches[k][i].extent;
    if (extent == 0)
      continue;
    // The kernel's arguments: the arena's memref descriptor, then the extent.
    void *params[] = {&allocated, &aligned, &offset, &size, &stride, &extent};
    int64_t blocks = std::min((extent + kBlock - 1) / kBlock, kMaxBlocks);
    int64_t threads = std::min(extent, kBlock);
    threads = (threads + 31) / 32 * 32;
    s.d->check(s.d->launchKernel(s.functions[k][i], static_cast<unsigned>(blocks), 1, 1,
                             static_cast<unsigned>(threads), 1, 1, 0, s.stream, params, nullptr),
             "cuLaunchKernel",
             fmt::format("kernel {}, function {}, step {}", kernel.name,
                         s.launches[k][i].function, steps_));
  }
}

void CudaExecutable::checkOutputs(size_t k) {
  State &s = *state_;
  const KernelSpec &kernel = spec_.kernels[k];
  s.synchronize(fmt::format("after kernel {}, step {}", kernel.name, steps_));
  for (const TensorSlot &slot : kernel.outputs) {
    if (!isFloat(slot.type.dtype) || slot.bytes() == 0)
      continue;
    s.scan.resize(static_cast<size_t>(slot.bytes()));
    s.d->check(s.d->memcpyDtoHAsync(s.scan.data(), s.arena + slot.offset, s.scan.size(), s.stream),
             "cuMemcpyDtoHAsync",
             fmt::format("checking output {} of kernel {}", slot.name, kernel.name));
    s.synchronize(fmt::format("checking kernel {}", kernel.name));
    checkFinite(kernel, slot, s.scan.data(), steps_);
  }
}

// Queues the fault record's copy to the host; read it after a synchronize.
void CudaExecutable::copyFaultRecord() {
  State &s = *state_;
  s.d->check(s.d->memcpyDtoHAsync(s.faultStaging(), s.arena + spec_.faultOffset,
                              kFaultRecordWords * sizeof(int64_t), s.stream),
           "cuMemcpyDtoHAsync", "reading the fault record");
}

// After copyFaultRecord and a synchronize: throws the fault, if any, with
// the device's record zeroed for the next step.
void CudaExecutable::throwIfFaulted(bool paramsKept) {
  State &s = *state_;
  int64_t record[kFaultRecordWords];
  std::memcpy(record, s.faultStaging(), sizeof record);
  if (record[0] == 0)
    return;
  s.d->check(s.d->memsetD8Async(s.arena + spec_.faultOffset, 0, sizeof record, s.stream),
           "cuMemsetD8Async", "clearing the fault record");
  s.synchronize("clearing the fault record");
  throwIndexFault(spec_, record, steps_, paramsKept);
}

void CudaExecutable::restoreParams() {
  State &s = *state_;
  CUdeviceptr from = s.snapshot;
  for (const TensorSlot &slot : spec_.params) {
    if (slot.bytes() > 0)
      s.d->check(s.d->memcpyDtoDAsync(s.arena + slot.offset, from, slot.bytes(), s.stream),
               "cuMemcpyDtoDAsync", "restoring param " + slot.name);
    from += slot.bytes();
  }
  s.synchronize("restoring the params");
}

void CudaExecutable::runStep(const std::map<std::string, Tensor, std::less<>> &inputs,
                             std::map<std::string, Tensor> &outputs) {
  State &s = *state_;
  const ExecutableSpec &spec = spec_;
  s.makeCurrent();
  const Driver &d = *s.d;

  if (options_.checkNumerics) {
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
    copyFaultRecord();
    s.synchronize(where);
    pending = false;
    throwIfFaulted(options_.checkNumerics || !paramsWritten);
  };
  try {
    for (size_t k = 0; k < spec.kernels.size(); ++k) {
      if (pending && s.writesParams[k])
        resolve(fmt::format("checking indices before kernel {}, step {}", spec.kernels[k].name,
                            steps_));
      if (!s.events.empty())
        d.check(d.eventRecord(s.events[2 * k], s.stream), "cuEventRecord");
      launch(k);
      pending = pending || s.checked[k];
      paramsWritten = paramsWritten || s.writesParams[k];
      if (!s.events.empty())
        d.check(d.eventRecord(s.events[2 * k + 1], s.stream), "cuEventRecord");
      if (options_.checkNumerics) {
        if (pending)
          resolve(fmt::format("checking the indices of kernel {}, step {}", spec.kernels[k].name,
                              steps_));
        checkOutputs(k);
      }
    }
    if (pending && !spec.updateCopies.empty())
      resolve(fmt::format("checking indices before the param updates of step {}", steps_));
  } catch (...) {
    if (options_.checkNumerics)
      restoreParams();
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
    copyFaultRecord();
  // A kernel that faults is reported here, asynchronously: name them all.
  std::vector<std::string_view> names;
  for (const KernelSpec &kernel : spec.kernels)
    names.push_back(kernel.name);
  s.synchronize(fmt::format("the end of step {} (kernels {}; with checkNumerics each kernel "
                            "is synchronized and named on its own); params may be partly "
                            "updated",
                            steps_, fmt::join(names, ", ")));
  if (pending)
    throwIfFaulted(!paramsWritten);
  out = s.staging + s.inputBytes;
  for (const TensorSlot &slot : spec.outputs) {
    if (slot.bytes() > 0)
      std::memcpy(outputs.at(slot.name).bytes(), out, static_cast<size_t>(slot.bytes()));
    out += slot.bytes();
  }
  if (!s.events.empty()) {
    double base = micros(start - created_);
    for (size_t k = 0; k < spec.kernels.size(); ++k) {
      float offset = 0, duration = 0;
      d.check(d.eventElapsedTime(&offset, s.events[0], s.events[2 * k]), "cuEventElapsedTime");
      d.check(d.eventElapsedTime(&duration, s.events[2 * k], s.events[2 * k + 1]),
              "cuEventElapsedTime");
      timings_.push_back({spec.kernels[k].name, steps_, base + 1e3 * offset, 1e3 * duration});
    }
  }
}

void CudaExecutable::readSlot(const TensorSlot &slot, std::byte *to) const {
  const State &s = *state_;
  s.makeCurrent();
  if (slot.bytes() > 0)
    s.d->check(s.d->memcpyDtoHAsync(to, s.arena + slot.offset, slot.bytes(), s.stream),
               "cuMemcpyDtoHAsync", "param " + slot.name);
  s.synchronize("reading param " + slot.name);
}

void CudaExecutable::writeSlot(const TensorSlot &slot, const std::byte *from) {
  State &s = *state_;
  s.makeCurrent();
  if (slot.bytes() > 0)
    s.d->check(s.d->memcpyHtoDAsync(s.arena + slot.offset, from, slot.bytes(), s.stream),
               "cuMemcpyHtoDAsync", "param " + slot.name);
  // `from` is the caller's: the copy must finish before it may change.
  s.synchronize("writing param " + slot.name);
}

std::string CudaExecutable::deviceName() const { return state_->deviceName; }

} // namespace stepc
