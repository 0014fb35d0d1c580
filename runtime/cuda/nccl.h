// NCCL, opened with dlopen at run time like the CUDA driver (docs/design.md rule
// 3): the collectives between the GPUs of a data-parallel job. Internal to
// runtime/; the CudaExecutable creates one when RunOptions::communicator
// spans several ranks, bootstrapped through that host communicator.
#pragma once

#include "driver.h"

#include "stepc/communicator.h"

#include <memory>

namespace stepc::cuda {

struct NcclLibrary; // the resolved functions (nccl.cpp)

class NcclComm {
public:
  // One rank of a clique over `hosts`' ranks, on the current CUDA context's
  // device: rank 0 draws the unique id and `hosts` broadcasts it. Throws
  // stepc::Error naming what failed (no libnccl.so.2, an NCCL error).
  explicit NcclComm(Communicator &hosts);
  ~NcclComm();
  NcclComm(const NcclComm &) = delete;
  NcclComm &operator=(const NcclComm &) = delete;

  // Enqueued on `stream`: ordered with the kernels around it.
  void allReduce(CUdeviceptr in, CUdeviceptr out, int64_t count, DType dtype, ReduceOp op,
                 CUstream stream);

private:
  const NcclLibrary *lib_;
  void *comm_ = nullptr;
};

// Empty when NCCL can be opened here; otherwise why not. The library is
// $STEPC_NCCL if set, else libnccl.so.2.
std::string ncclUnavailableReason();

} // namespace stepc::cuda
