#include "nccl.h"

#include "stepc/error.h"

#include <fmt/format.h>

#include <dlfcn.h>

#include <cstdlib>

namespace stepc::cuda {

// nccl.h's ABI (NCCL 2.x): results and enums are ints, a communicator an
// opaque pointer, the unique id 128 bytes.
struct NcclUniqueId {
  char internal[128];
};
constexpr int kNcclSuccess = 0;
constexpr int kNcclSum = 0, kNcclAvg = 4;
constexpr int kNcclInt32 = 2, kNcclInt64 = 4, kNcclFloat32 = 7, kNcclFloat64 = 8;
constexpr int kNcclFloat16 = 6, kNcclBfloat16 = 9;
constexpr int kNcclInt8 = 0, kNcclUint8 = 1, kNcclUint32 = 3, kNcclUint64 = 5;

struct NcclLibrary {
  int (*getUniqueId)(NcclUniqueId *id);
  int (*commInitRank)(void **comm, int ranks, NcclUniqueId id, int rank);
  int (*commDestroy)(void *comm);
  int (*allReduce)(const void *in, void *out, size_t count, int dtype, int op, void *comm,
                   CUstream stream);
  const char *(*getErrorString)(int result);
  std::string error; // why the library cannot be used, or empty

  void check(int result, const char *call) const {
    if (result != kNcclSuccess)
      throw Error(fmt::format("NCCL error in {}: {} ({})", call, getErrorString(result), result));
  }
};

namespace {

const NcclLibrary &library() {
  static const NcclLibrary lib = [] {
    NcclLibrary l{};
    const char *path = std::getenv("STEPC_NCCL");
    std::string name = path && *path ? path : "libnccl.so.2";
    void *handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char *why = dlerror();
      l.error = fmt::format("no NCCL: cannot open {} ({}); NCCL ships with the CUDA toolkit "
                            "(/usr/local/cuda/lib): add it to LD_LIBRARY_PATH or set STEPC_NCCL",
                            name, why ? why : "unknown error");
      return l;
    }
    auto resolve = [&](auto &fn, const char *symbol) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, symbol));
      if (!fn && l.error.empty())
        l.error = fmt::format("no NCCL: {} has no symbol {}", name, symbol);
    };
    resolve(l.getUniqueId, "ncclGetUniqueId");
    resolve(l.commInitRank, "ncclCommInitRank");
    resolve(l.commDestroy, "ncclCommDestroy");
    resolve(l.allReduce, "ncclAllReduce");
    resolve(l.getErrorString, "ncclGetErrorString");
    return l;
  }();
  return lib;
}

int ncclType(DType dtype) {
  switch (dtype) {
  case DType::F32: return kNcclFloat32;
  case DType::F64: return kNcclFloat64;
  case DType::I32: return kNcclInt32;
  case DType::I64: return kNcclInt64;
  case DType::F16: return kNcclFloat16;
  case DType::BF16: return kNcclBfloat16;
  case DType::U32: return kNcclUint32;
  case DType::U64: return kNcclUint64;
  case DType::I8: return kNcclInt8;
  case DType::U8: return kNcclUint8;
  case DType::I16: // NCCL has no 16-bit integers
  case DType::U16:
  case DType::Bool: break;
  }
  throw Error(fmt::format("all_reduce: NCCL cannot reduce {} values", dtypeName(dtype)));
}

} // namespace

std::string ncclUnavailableReason() { return library().error; }

NcclComm::NcclComm(Communicator &hosts) : lib_(&library()) {
  if (!lib_->error.empty())
    throw Error(lib_->error);
  NcclUniqueId id{};
  if (hosts.rank() == 0)
    lib_->check(lib_->getUniqueId(&id), "ncclGetUniqueId");
  hosts.broadcast(&id, sizeof id, 0);
  lib_->check(lib_->commInitRank(&comm_, hosts.size(), id, hosts.rank()), "ncclCommInitRank");
}

NcclComm::~NcclComm() {
  if (comm_)
    lib_->commDestroy(comm_);
}

void NcclComm::allReduce(CUdeviceptr in, CUdeviceptr out, int64_t count, DType dtype,
                         ReduceOp op, CUstream stream) {
  lib_->check(lib_->allReduce(reinterpret_cast<const void *>(in), reinterpret_cast<void *>(out),
                              static_cast<size_t>(count), ncclType(dtype),
                              op == ReduceOp::Mean ? kNcclAvg : kNcclSum, comm_, stream),
              "ncclAllReduce");
}

} // namespace stepc::cuda
