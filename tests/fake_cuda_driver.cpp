// A stand-in for libcuda.so.1 that runs on the host, so that the CUDA
// runtime (runtime/cuda/) can be tested where there is no GPU: device memory
// is host memory, streams and events are immediate, and cuLaunchKernel runs
// the CPU emulation of the kernel (see emulateCudaOnCpu) that the loading
// process registers under the function's name: the fake finds it through
// stepc_fake_cuda_kernel(name), which the process exports. Loaded through
// $STEPC_CUDA_DRIVER by tests/test_codegen_gpu.cpp. Only the functions and
// behaviour runtime/cuda/driver.h uses are here.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <string>
#include <vector>

namespace {

using CUresult = int;
using CUdeviceptr = unsigned long long;
constexpr CUresult kSuccess = 0, kInvalidValue = 1, kNotFound = 500, kInvalidPtx = 218;

struct Descriptor {
  void *allocated, *aligned;
  int64_t offset, size, stride;
};
using KernelFn = void (*)(Descriptor *, int64_t, int64_t);

struct Function {
  std::string name;
};

// Owns the functions looked up in it, as a real module does: they are freed
// with it (LeakSanitizer checks the runtime unloads what it loads).
struct Module {
  std::vector<std::unique_ptr<Function>> functions;
};

double now() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int dummy;

} // namespace

extern "C" {

CUresult cuInit(unsigned) { return kSuccess; }
CUresult cuDriverGetVersion(int *v) { return *v = 13000, kSuccess; }
CUresult cuDeviceGetCount(int *n) { return *n = 1, kSuccess; }
CUresult cuDeviceGet(int *d, int ordinal) {
  return *d = ordinal, ordinal == 0 ? kSuccess : kInvalidValue;
}
CUresult cuDeviceGetName(char *name, int length, int) {
  std::strncpy(name, "stepc fake GPU", static_cast<size_t>(length));
  return kSuccess;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, int) {
  *value = attribute == 75 ? 9 : 0; // compute capability 9.0
  return kSuccess;
}
CUresult cuDevicePrimaryCtxRetain(void **context, int) { return *context = &dummy, kSuccess; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return kSuccess; }
CUresult cuCtxSetCurrent(void *) { return kSuccess; }

CUresult cuModuleLoadDataEx(void **module, const void *image, unsigned, int *, void **) {
  // The runtime must hand over NUL-terminated PTX text.
  const char *text = static_cast<const char *>(image);
  if (!std::strstr(text, ".version") || !std::strstr(text, ".entry"))
    return kInvalidPtx;
  *module = new Module;
  return kSuccess;
}
CUresult cuModuleUnload(void *module) {
  delete static_cast<Module *>(module);
  return kSuccess;
}
CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
  auto &functions = static_cast<Module *>(module)->functions;
  functions.push_back(std::make_unique<Function>(Function{name}));
  *function = functions.back().get();
  return kSuccess;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  void *memory = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!memory)
    return 2;
  // Not zeroed, like a real allocation: the runtime must zero the arena.
  std::memset(memory, 0xA5, bytes);
  *p = reinterpret_cast<CUdeviceptr>(memory);
  return kSuccess;
}
CUresult cuMemFree_v2(CUdeviceptr p) { return std::free(reinterpret_cast<void *>(p)), kSuccess; }
CUresult cuMemAllocHost_v2(void **p, size_t bytes) {
  *p = std::malloc(bytes);
  return *p ? kSuccess : 2;
}
CUresult cuMemFreeHost(void *p) { return std::free(p), kSuccess; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr to, const void *from, size_t bytes, void *) {
  std::memcpy(reinterpret_cast<void *>(to), from, bytes);
  return kSuccess;
}
CUresult cuMemcpyDtoHAsync_v2(void *to, CUdeviceptr from, size_t bytes, void *) {
  std::memcpy(to, reinterpret_cast<const void *>(from), bytes);
  return kSuccess;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr to, CUdeviceptr from, size_t bytes, void *) {
  std::memcpy(reinterpret_cast<void *>(to), reinterpret_cast<const void *>(from), bytes);
  return kSuccess;
}
CUresult cuMemsetD8Async(CUdeviceptr to, unsigned char value, size_t bytes, void *) {
  std::memset(reinterpret_cast<void *>(to), value, bytes);
  return kSuccess;
}

// The arguments are the arena's memref descriptor (5 values) and the extent.
CUresult cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned, void *, void **params, void **) {
  using Lookup = void *(*)(const char *);
  auto lookup = reinterpret_cast<Lookup>(dlsym(RTLD_DEFAULT, "stepc_fake_cuda_kernel"));
  const std::string &name = static_cast<Function *>(function)->name;
  auto kernel = lookup ? reinterpret_cast<KernelFn>(lookup(name.c_str())) : nullptr;
  if (!kernel)
    return kNotFound;
  Descriptor arena{*static_cast<void **>(params[0]), *static_cast<void **>(params[1]),
                   *static_cast<int64_t *>(params[2]), *static_cast<int64_t *>(params[3]),
                   *static_cast<int64_t *>(params[4])};
  int64_t extent = *static_cast<int64_t *>(params[5]);
  // The grid must have a thread for every element (or a grid-stride loop
  // covers the rest: at least one full block).
  int64_t threads = int64_t(gx) * gy * gz * bx * by * bz;
  if (extent <= 0 || threads <= 0 || bx % 32 != 0 || (threads < extent && gx < 65536))
    return kInvalidValue;
  kernel(&arena, 0, extent);
  return kSuccess;
}

CUresult cuStreamCreate(void **stream, unsigned) { return *stream = &dummy, kSuccess; }
CUresult cuStreamDestroy_v2(void *) { return kSuccess; }
CUresult cuStreamSynchronize(void *) { return kSuccess; }
CUresult cuEventCreate(void **event, unsigned) { return *event = new double(0), kSuccess; }
CUresult cuEventDestroy_v2(void *event) { return delete static_cast<double *>(event), kSuccess; }
CUresult cuEventRecord(void *event, void *) {
  return *static_cast<double *>(event) = now(), kSuccess;
}
CUresult cuEventSynchronize(void *) { return kSuccess; }
CUresult cuEventElapsedTime_v2(float *ms, void *start, void *end) {
  *ms = static_cast<float>(*static_cast<double *>(end) - *static_cast<double *>(start));
  return kSuccess;
}
CUresult cuGetErrorName(CUresult result, const char **name) {
  *name = result == kNotFound ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_FAKE";
  return kSuccess;
}
CUresult cuGetErrorString(CUresult, const char **text) {
  *text = "reported by the fake driver";
  return kSuccess;
}

} // extern "C"
