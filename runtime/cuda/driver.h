// The CUDA driver API, opened with dlopen at run time (docs/design.md rule 3): the
// handful of types and functions stepc uses, declared here so that nothing
// in the build needs cuda.h, libcuda or a GPU. Internal to runtime/.
#pragma once

#include <cstddef>
#include <string>

namespace stepc::cuda {

// The driver's ABI (cuda.h, CUDA 12 and 13): handles are opaque pointers,
// device pointers 64-bit integers, results and enums ints.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUevent = struct CUevent_st *;

constexpr CUresult CUDA_SUCCESS = 0;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr int CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
constexpr unsigned CU_STREAM_NON_BLOCKING = 1;
constexpr unsigned CU_EVENT_DEFAULT = 0;

// The functions, resolved by their versioned names (cuMemAlloc_v2, ...).
struct Driver {
  CUresult (*init)(unsigned flags);
  CUresult (*driverGetVersion)(int *version);
  CUresult (*deviceGetCount)(int *count);
  CUresult (*deviceGet)(CUdevice *device, int ordinal);
  CUresult (*deviceGetName)(char *name, int length, CUdevice device);
  CUresult (*deviceGetAttribute)(int *value, int attribute, CUdevice device);
  CUresult (*devicePrimaryCtxRetain)(CUcontext *context, CUdevice device);
  CUresult (*devicePrimaryCtxRelease)(CUdevice device);
  CUresult (*ctxSetCurrent)(CUcontext context);
  CUresult (*moduleLoadDataEx)(CUmodule *module, const void *image, unsigned numOptions,
                               int *options, void **optionValues);
  CUresult (*moduleUnload)(CUmodule module);
  CUresult (*moduleGetFunction)(CUfunction *function, CUmodule module, const char *name);
  CUresult (*memAlloc)(CUdeviceptr *pointer, size_t bytes);
  CUresult (*memFree)(CUdeviceptr pointer);
  CUresult (*memAllocHost)(void **pointer, size_t bytes);
  CUresult (*memFreeHost)(void *pointer);
  CUresult (*memcpyHtoDAsync)(CUdeviceptr to, const void *from, size_t bytes, CUstream stream);
  CUresult (*memcpyDtoHAsync)(void *to, CUdeviceptr from, size_t bytes, CUstream stream);
  CUresult (*memcpyDtoDAsync)(CUdeviceptr to, CUdeviceptr from, size_t bytes, CUstream stream);
  CUresult (*memsetD8Async)(CUdeviceptr to, unsigned char value, size_t bytes, CUstream stream);
  CUresult (*launchKernel)(CUfunction function, unsigned gridX, unsigned gridY, unsigned gridZ,
                           unsigned blockX, unsigned blockY, unsigned blockZ, unsigned sharedBytes,
                           CUstream stream, void **params, void **extra);
  CUresult (*streamCreate)(CUstream *stream, unsigned flags);
  CUresult (*streamDestroy)(CUstream stream);
  CUresult (*streamSynchronize)(CUstream stream);
  CUresult (*eventCreate)(CUevent *event, unsigned flags);
  CUresult (*eventDestroy)(CUevent event);
  CUresult (*eventRecord)(CUevent event, CUstream stream);
  CUresult (*eventSynchronize)(CUevent event);
  CUresult (*eventElapsedTime)(float *milliseconds, CUevent start, CUevent end);
  CUresult (*getErrorName)(CUresult result, const char **name);
  CUresult (*getErrorString)(CUresult result, const char **text);

  // "CUDA_ERROR_OUT_OF_MEMORY (2): out of memory"
  std::string describe(CUresult result) const;
  // Throws stepc::Error "CUDA error in CALL[ (WHAT)]: DESCRIPTION" unless
  // `result` is CUDA_SUCCESS.
  void check(CUresult result, const char *call, const std::string &what = {}) const;
};

// The process's driver: loaded, resolved and cuInit'ed on first use (the
// library is $STEPC_CUDA_DRIVER if set, else libcuda.so.1). Throws
// stepc::Error("no CUDA device: ...") naming what failed, every time it is
// called, when that is impossible; a process without a GPU is never harmed
// by asking.
const Driver &driver();

} // namespace stepc::cuda
