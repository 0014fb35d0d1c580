#include "driver.h"

#include "stepc/error.h"

#include <fmt/format.h>

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace stepc::cuda {
namespace {

// The first of `names` the library exports (newer ABIs carry a _v2 suffix).
template <class F>
void resolve(void *library, F &field, std::initializer_list<const char *> names,
             std::string &missing) {
  for (const char *name : names)
    if (void *symbol = dlsym(library, name)) {
      field = reinterpret_cast<F>(symbol);
      return;
    }
  missing += fmt::format("{}{}", missing.empty() ? "" : ", ", *names.begin());
}

struct Loaded {
  Driver driver{};
  std::string error; // non-empty: why there is no driver
};

Loaded load() {
  Loaded out;
  const char *override = std::getenv("STEPC_CUDA_DRIVER");
  std::string path = override && *override ? override : "libcuda.so.1";
  void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char *why = dlerror();
    out.error = fmt::format("no CUDA device: {} not found ({})", path, why ? why : "dlopen failed");
    return out;
  }
  // The library stays loaded for the life of the process.
  Driver &d = out.driver;
  std::string missing;
  resolve(library, d.init, {"cuInit"}, missing);
  resolve(library, d.driverGetVersion, {"cuDriverGetVersion"}, missing);
  resolve(library, d.deviceGetCount, {"cuDeviceGetCount"}, missing);
  resolve(library, d.deviceGet, {"cuDeviceGet"}, missing);
  resolve(library, d.deviceGetName, {"cuDeviceGetName"}, missing);
  resolve(library, d.deviceGetAttribute, {"cuDeviceGetAttribute"}, missing);
  resolve(library, d.devicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}, missing);
  resolve(library, d.devicePrimaryCtxRelease,
          {"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}, missing);
  resolve(library, d.ctxSetCurrent, {"cuCtxSetCurrent"}, missing);
  resolve(library, d.moduleLoadDataEx, {"cuModuleLoadDataEx"}, missing);
  resolve(library, d.moduleUnload, {"cuModuleUnload"}, missing);
  resolve(library, d.moduleGetFunction, {"cuModuleGetFunction"}, missing);
  resolve(library, d.memAlloc, {"cuMemAlloc_v2"}, missing);
  resolve(library, d.memFree, {"cuMemFree_v2"}, missing);
  resolve(library, d.memAllocHost, {"cuMemAllocHost_v2"}, missing);
  resolve(library, d.memFreeHost, {"cuMemFreeHost"}, missing);
  resolve(library, d.memcpyHtoDAsync, {"cuMemcpyHtoDAsync_v2"}, missing);
  resolve(library, d.memcpyDtoHAsync, {"cuMemcpyDtoHAsync_v2"}, missing);
  resolve(library, d.memcpyDtoDAsync, {"cuMemcpyDtoDAsync_v2"}, missing);
  resolve(library, d.memsetD8Async, {"cuMemsetD8Async"}, missing);
  resolve(library, d.launchKernel, {"cuLaunchKernel"}, missing);
  resolve(library, d.streamCreate, {"cuStreamCreate"}, missing);
  resolve(library, d.streamDestroy, {"cuStreamDestroy_v2", "cuStreamDestroy"}, missing);
  resolve(library, d.streamSynchronize, {"cuStreamSynchronize"}, missing);
  resolve(library, d.eventCreate, {"cuEventCreate"}, missing);
  resolve(library, d.eventDestroy, {"cuEventDestroy_v2", "cuEventDestroy"}, missing);
  resolve(library, d.eventRecord, {"cuEventRecord"}, missing);
  resolve(library, d.eventSynchronize, {"cuEventSynchronize"}, missing);
  resolve(library, d.eventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"}, missing);
  resolve(library, d.getErrorName, {"cuGetErrorName"}, missing);
  resolve(library, d.getErrorString, {"cuGetErrorString"}, missing);
  if (!missing.empty()) {
    out.error = fmt::format("no CUDA device: {} lacks driver functions ({}); the driver is "
                            "too old or this is not libcuda",
                            path, missing);
    return out;
  }
  if (CUresult r = d.init(0); r != CUDA_SUCCESS) {
    out.error = fmt::format("no CUDA device: cuInit failed: {}", d.describe(r));
    return out;
  }
  int count = 0;
  if (CUresult r = d.deviceGetCount(&count); r != CUDA_SUCCESS) {
    out.error = fmt::format("no CUDA device: cuDeviceGetCount failed: {}", d.describe(r));
    return out;
  }
  if (count == 0)
    out.error = "no CUDA device: the driver found no GPU";
  return out;
}

} // namespace

// Names of the results a driver that cannot describe itself (the toolkit's
// link-time stub answers every call with CUDA_ERROR_STUB_LIBRARY) may give.
static const char *knownResultName(CUresult result) {
  switch (result) {
  case 1: return "CUDA_ERROR_INVALID_VALUE";
  case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
  case 3: return "CUDA_ERROR_NOT_INITIALIZED";
  case 34: return "CUDA_ERROR_STUB_LIBRARY";
  case 35: return "CUDA_ERROR_INSUFFICIENT_DRIVER";
  case 100: return "CUDA_ERROR_NO_DEVICE";
  case 209: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
  case 218: return "CUDA_ERROR_INVALID_PTX";
  case 222: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
  case 700: return "CUDA_ERROR_ILLEGAL_ADDRESS";
  default: return "CUDA error";
  }
}

std::string Driver::describe(CUresult result) const {
  const char *name = nullptr, *text = nullptr;
  // A stub or broken driver may fail to describe its own errors.
  if (!getErrorName || getErrorName(result, &name) != CUDA_SUCCESS || !name)
    name = knownResultName(result);
  if (!getErrorString || getErrorString(result, &text) != CUDA_SUCCESS || !text)
    return fmt::format("{} ({})", name, result);
  return fmt::format("{} ({}): {}", name, result, text);
}

void Driver::check(CUresult result, const char *call, const std::string &what) const {
  if (result == CUDA_SUCCESS)
    return;
  throw Error(fmt::format("CUDA error in {}{}: {}", call,
                          what.empty() ? "" : fmt::format(" ({})", what), describe(result)));
}

const Driver &driver() {
  static std::once_flag once;
  static Loaded loaded;
  std::call_once(once, [] { loaded = load(); });
  if (!loaded.error.empty())
    throw Error(loaded.error);
  return loaded.driver;
}

} // namespace stepc::cuda
