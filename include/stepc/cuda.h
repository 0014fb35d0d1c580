// Running a compiled step function on an NVIDIA GPU (runtime/cuda/, no LLVM
// or MLIR). The CUDA driver API is opened with dlopen at run time: nothing
// links against CUDA, so every build and every CPU run works without it, and
// creating a CudaExecutable where there is no driver or no GPU throws
// stepc::Error("no CUDA device: ..."). compileCuda (stepc/compile.h) builds
// the spec; an AOT artifact (`stepc compile --target cuda`) carries it.
#pragma once

#include "stepc/executable.h"

#include <memory>
#include <string>
#include <vector>

namespace stepc {

// One kernel launch: `extent` threads compute one element each of a loop
// nest (a grid-stride loop, so any grid covers it).
struct CudaLaunch {
  std::string function; // its .entry in the PTX
  int64_t extent = 1;   // 0: nothing to compute, not launched
};

struct CudaExecutableSpec {
  // Everything but the code, as for the CPU: arena size (the GPU's includes
  // scratch after the planned buffers), slots, update copies, initial params,
  // and per kernel its name, outputs, provenance and flops. KernelSpec::fn and
  // parallelExtent are unused.
  ExecutableSpec layout;
  // launches[i]: the functions kernel layout.kernels[i] runs, in order.
  std::vector<std::vector<CudaLaunch>> launches;
  std::string ptx;  // one module with every function; no NUL
  std::string arch; // the chip the PTX targets: "sm_90"
};

// Empty when a CUDA device can be used here; otherwise why not, starting
// with "no CUDA device: " (driver library missing, no GPU, driver error).
// The driver is libcuda.so.1, or the file named by $STEPC_CUDA_DRIVER.
std::string cudaUnavailableReason();

// The GPU's Executable: the PTX module is loaded once, the arena lives on
// the device (laid out by the same buffer plan), params and optimizer state
// stay resident there between steps, and a step copies its inputs in
// asynchronously, launches every kernel on one stream and copies the
// outputs out. Every driver call is checked; an error names the call, the
// kernel, and the driver's message.
//
// RunOptions: checkNumerics synchronizes after each kernel and scans its
// outputs (a debug mode; on a hit the params are restored from a device
// copy taken before the step); profile times each kernel with CUDA events;
// threads, beforeKernel and afterKernel do not apply.
class CudaExecutable final : public Executable {
public:
  explicit CudaExecutable(CudaExecutableSpec spec, RunOptions options = {});
  ~CudaExecutable() override;

  // "NVIDIA H100 80GB HBM3 (sm_90)"
  std::string deviceName() const override;

private:
  struct State;
  std::unique_ptr<State> state_;

  void runStep(const std::map<std::string, Tensor, std::less<>> &inputs,
               std::map<std::string, Tensor> &outputs) override;
  void readSlot(const TensorSlot &slot, std::byte *to) const override;
  void writeSlot(const TensorSlot &slot, const std::byte *from) override;
  void launch(size_t kernel);
  void checkOutputs(size_t kernel);
  // Queues the fault record's copy to the host; read it after a synchronize.
  void copyFaultRecord();
  // After copyFaultRecord and a synchronize: throws the fault, if any.
  void throwIfFaulted(bool paramsKept);
  void restoreParams();
};

} // namespace stepc
