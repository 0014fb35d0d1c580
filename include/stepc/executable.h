// The runtime's view of a compiled step function (runtime/, no LLVM or MLIR):
// kernels, one arena laid out by the buffer plan, and the schedule. JIT and
// AOT builds both produce an ExecutableSpec; an Executable runs it (the CPU's
// here, the GPU's in stepc/cuda.h).
#pragma once

#include "stepc/communicator.h"
#include "stepc/tensor.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stepc {

// The arena as an MLIR memref<?xi8> descriptor: kernels take a pointer to it
// (MLIR's C interface), plus the [begin, end) slice of their parallel
// dimension that this call computes.
struct ArenaDescriptor {
  std::byte *allocated;
  std::byte *aligned;
  int64_t offset;
  int64_t size;
  int64_t stride;
};
using KernelFn = void (*)(ArenaDescriptor *arena, int64_t begin, int64_t end);

// A named tensor at a fixed place in the arena.
struct TensorSlot {
  std::string name;
  TensorType type;
  int64_t offset = 0;
  int64_t bytes() const { return type.numel() * static_cast<int64_t>(dtypeSize(type.dtype)); }
};

struct KernelSpec {
  std::string name;         // "k3_matmul_add_relu"
  KernelFn fn = nullptr;
  // Calls split [0, parallelExtent) among threads; 1 means one call.
  int64_t parallelExtent = 1;
  // The slots it writes; --check-numerics scans the f32/f64 ones after each
  // call and names the first bad element. Names are the graph's ("%12").
  std::vector<TensorSlot> outputs;
  // The ops fused in it and where they come from, one per line:
  // "matmul at mlp.sg:14:3", "relu at mlp.sg:15:3 (gradient of relu)".
  std::vector<std::string> provenance;
  // Floating-point work of its matmuls and convolutions (for GFLOP/s).
  double flops = 0;
  // A collective step instead of a kernel (fn stays null): the executor
  // starts an all_reduce of `from` into outputs[0] through the communicator
  // and goes on with the next kernels while it runs.
  struct Collective {
    ReduceOp op = ReduceOp::Sum;
    TensorSlot from;
  };
  std::optional<Collective> collective;
  // Collective steps (indices in ExecutableSpec::kernels) whose results
  // this kernel reads: it waits for them before it runs.
  std::vector<size_t> waitFor;
};

// A range check compiled into a kernel: every index an op reads (gather,
// scatter_add, one_hot with checked=1) must lie in [0, bound). A kernel that
// reads one outside claims the arena's fault record and writes it there
// (reading an index in range instead, so it never touches memory out of
// bounds); the runtime turns the record into a stepc::Error after the
// kernel, worded as the interpreter reports the same index (indexOutOfRange).
struct IndexCheck {
  std::string kernel;   // the kernel that holds the check
  std::string op;       // "gather", "scatter_add (gradient of gather)"
  std::string location; // "t.sg:4:3", or "" when unknown
  std::string indices;  // the indices' type: "i32[4]"
  std::string range;    // what they index: "axis 0 of data f32[27,10]", "depth 3"
  int64_t bound = 0;
};

// "index 99 (element 2 of the indices i32[4]) is out of range for axis 0 of
// data f32[27,10]; valid indices are 0 to 26".
std::string indexOutOfRange(const IndexCheck &check, int64_t value, int64_t element);

// The fault record: kFaultRecordWords int64s at ExecutableSpec::faultOffset,
// zero until a kernel finds a bad index: [0] nonzero once claimed (an atomic
// or, so one writer fills the rest), [1] the check (index in
// ExecutableSpec::indexChecks), [2] the element of the indices (row-major),
// [3] the index's value.
constexpr int64_t kFaultRecordWords = 4;

struct ExecutableSpec {
  std::string name;
  int64_t arenaBytes = 0;
  std::vector<TensorSlot> inputs;
  std::vector<TensorSlot> params;  // resident between steps
  std::vector<TensorSlot> outputs;
  // After the kernels ran: copy bytes at `from` to the param slot at `to`
  // (updates the buffer plan could not do in place).
  struct Copy {
    int64_t from, to, bytes;
  };
  std::vector<Copy> updateCopies;
  std::vector<KernelSpec> kernels; // in execution order
  // Where the fault record lives in the arena (8-byte aligned), or -1 when no
  // kernel checks indices; indexChecks are the checks it can name.
  int64_t faultOffset = -1;
  std::vector<IndexCheck> indexChecks;
  // One value per param, of its exact type; copied into the arena when the
  // Executable is created.
  std::map<std::string, Tensor> initialParams;
  // Keeps the kernels' machine code loaded (a JIT module) while in use.
  std::shared_ptr<void> owner;
};

struct RunOptions {
  // After each kernel, check its float outputs for NaN/Inf; on the first hit
  // throw stepc::Error naming the kernel, its ops with their source
  // locations, and the step number (stepsTaken() before the failing call),
  // and leave params as they were before that step (see step()).
  bool checkNumerics = false;
  // Record each kernel's wall time (see profile()).
  bool profile = false;
  // Threads that run a kernel's parallel extent, counting the one that calls
  // step() (it takes a chunk too); 0: std::thread::hardware_concurrency.
  int threads = 0;
  // Called before each kernel of a step (not a collective step) with its
  // index in spec().kernels and the arena, which it may write: `stepc bench
  // --per-kernel` puts the unfused build's values where a fused kernel
  // reads its inputs, so that both builds' kernels read the same values.
  // Unset: no cost.
  std::function<void(size_t kernelIndex, const KernelSpec &, std::byte *arena)> beforeKernel =
      nullptr;
  // Called after each kernel of a step (after its profile entry, before
  // checkNumerics looks at it) with the kernel's index in spec().kernels and
  // the arena, whose KernelSpec::outputs slots then hold what it wrote
  // (not after a collective step, whose result arrives later).
  // `stepc bench --per-kernel` copies them to compare fused with unfused
  // kernels; later kernels may reuse those bytes. Unset: no cost.
  std::function<void(size_t kernelIndex, const KernelSpec &, const std::byte *arena)>
      afterKernel = nullptr;
  // The job's processes, for the spec's collective steps (data-parallel
  // training). Unset: one process, every collective is a copy. With more
  // than one rank the constructor checks that every rank built the same
  // executable (executableHash) and copies rank 0's initial params to all.
  std::shared_ptr<Communicator> communicator;
};

// What the collective steps did, summed over the steps taken.
struct CollectiveStats {
  int64_t calls = 0;
  int64_t bytes = 0;       // payload of every all_reduce
  // Of those, the bytes whose all_reduce had completed when the step came
  // to wait for it (Communicator::finished): the communication hidden
  // behind the kernels that ran meanwhile (all of it for a communicator
  // whose collectives are synchronous: one process, C callbacks).
  int64_t hiddenBytes = 0;
  double waitMicros = 0;   // blocked waiting for results: the exposed part
};

// A fingerprint of what every rank must agree on: slot names, types and
// offsets, kernels, their ops and collectives.
uint64_t executableHash(const ExecutableSpec &spec);

struct KernelTiming {
  std::string kernel;
  int64_t step; // stepsTaken() when the step ran: steps count from 0
  // Since the Executable was created (steady clock).
  double startMicros, durationMicros;
};

class ThreadPool;

// A compiled step function ready to run: the one interface of every compiled
// backend (stepc/backend.h names them). CpuExecutable runs it on the host,
// CudaExecutable (stepc/cuda.h) on an NVIDIA GPU; both lay the arena out by
// the same buffer plan. What they share is written here once: the checks of
// the spec and of step inputs, param names and types, checkpoints, profiles
// and traces. Not thread-safe: one thread at a time calls step() and the
// param methods.
class Executable {
public:
  virtual ~Executable();
  Executable(const Executable &) = delete;
  Executable &operator=(const Executable &) = delete;

  // Runs one step. Every input must be given with its exact name, dtype and
  // shape, or stepc::Error names the one that is wrong; on any error no
  // param changes. Params and optimizer state stay resident and are updated
  // in place.
  //
  // Inputs are checked before anything is touched. After that a step fails
  // when a kernel finds an index out of range (see IndexCheck; the error
  // names the op, its source location, the index and the valid range), when
  // --check-numerics finds a NaN/Inf, or when a (hand-written) kernel throws.
  // To roll such a step back, checkNumerics copies every param before the
  // kernels run (a debug mode, so the copy is affordable) and restores them
  // on failure. Without checkNumerics no copy is taken: the error says
  // whether a kernel had written params by then (a bad index in a training
  // step's forward or backward pass is found before any optimizer kernel
  // runs, so params are unchanged).
  std::map<std::string, Tensor> step(const std::map<std::string, Tensor, std::less<>> &inputs);

  std::vector<std::string> paramNames() const;
  Tensor param(const std::string &name) const;
  void setParam(const std::string &name, const Tensor &value); // checks type
  int64_t stepsTaken() const { return steps_; }
  const ExecutableSpec &spec() const { return spec_; }
  // Where it runs: empty for the host CPU, else the device,
  // "NVIDIA H100 80GB HBM3 (sm_90)".
  virtual std::string deviceName() const { return {}; }

  // Checkpoints in the safetensors format: written atomically (temporary
  // file, fsync, rename); a load checks every name, dtype and shape and says
  // what differs, changing nothing on error. In a job of several ranks only
  // rank 0 writes (every rank holds the same params).
  void saveParams(const std::string &path) const;
  void loadParams(const std::string &path);

  // One entry per kernel per successful step, when RunOptions::profile
  // (on a GPU timed with its events; startMicros counts from creation).
  const std::vector<KernelTiming> &profile() const { return timings_; }
  Communicator &communicator() const { return *comm_; }
  // Chrome trace JSON (chrome://tracing, Perfetto) of the recorded timings:
  // one complete ("X") event per entry, written atomically.
  void writeTrace(const std::string &path) const;

protected:
  // Checks every place of the spec that either backend will touch (slots,
  // update copies, the fault record, initial params); throws stepc::Error.
  // The spec is immutable once checked: executables made from one JIT cache
  // entry share it (and its initial params) instead of copying it.
  Executable(ExecutableSpec spec, RunOptions options);
  Executable(std::shared_ptr<const ExecutableSpec> spec, RunOptions options);

  // One step after its inputs were checked: copy them in, run the kernels,
  // fill `outputs` (allocated, of the output slots' types); stepsTaken() is
  // still the step's number. Times go to timings_ when options_.profile.
  virtual void runStep(const std::map<std::string, Tensor, std::less<>> &inputs,
                       std::map<std::string, Tensor> &outputs) = 0;
  // Copies a slot's bytes out of the arena to host memory, or in from it.
  virtual void readSlot(const TensorSlot &slot, std::byte *to) const = 0;
  virtual void writeSlot(const TensorSlot &slot, const std::byte *from) = 0;
  // For the constructors of the backends, once the arena exists: the
  // initial params. In one process they are written on first use (a step or
  // a param method), so that creating an executable, a JIT cache hit, does
  // not copy megabytes of weights it may never run with; in a job of several
  // ranks at once: it first checks that every rank built the same
  // executable, then gives every rank rank 0's values (collectives cannot
  // wait for a first use that ranks might reach in different orders).
  void writeInitialParams();
  // Writes the initial params if they are still pending; every method that
  // reads or writes param slots calls it first.
  void materializeParams();

  std::shared_ptr<const ExecutableSpec> specOwner_;
  const ExecutableSpec &spec_;
  RunOptions options_;
  std::shared_ptr<Communicator> comm_; // the options', or one process
  int64_t steps_ = 0;
  std::vector<KernelTiming> timings_;
  std::chrono::steady_clock::time_point created_;
  bool initialParamsPending_ = false;
};

// The host CPU: the kernels are machine code (JIT or AOT) that threads of a
// pool call on slices of their parallel extent.
class CpuExecutable final : public Executable {
public:
  // Allocates the arena (64-byte aligned, zero-filled); spec.initialParams
  // are written into it on first use (a step, setParam, loadParams), so
  // executables from one JIT cache entry share them until then. Throws
  // stepc::Error if a slot or copy falls outside the arena or a param has no
  // initial value of its exact type.
  explicit CpuExecutable(ExecutableSpec spec, RunOptions options = {});
  explicit CpuExecutable(std::shared_ptr<const ExecutableSpec> spec, RunOptions options = {});
  ~CpuExecutable() override;

  const CollectiveStats &collectiveStats() const { return collectiveStats_; }

private:
  std::byte *arena_ = nullptr;      // 64-byte aligned, inside arenaAllocation_
  void *arenaAllocation_ = nullptr; // what calloc returned: what free takes
  ArenaDescriptor descriptor_{};
  std::unique_ptr<ThreadPool> pool_;
  std::vector<std::byte> paramSnapshot_; // checkNumerics only: see step()
  std::vector<int64_t> inFlight_; // per kernel: the collective's handle, or -1
  CollectiveStats collectiveStats_;
  // Kernels [0, firstParamWriter_) write no param bytes.
  size_t firstParamWriter_ = 0;

  void runStep(const std::map<std::string, Tensor, std::less<>> &inputs,
               std::map<std::string, Tensor> &outputs) override;
  void readSlot(const TensorSlot &slot, std::byte *to) const override;
  void writeSlot(const TensorSlot &slot, const std::byte *from) override;
  void runKernels();
  void runCollective(size_t index, const KernelSpec &kernel);
  void waitFor(size_t index);
  void checkOutputs(const KernelSpec &kernel) const;
  void checkFault(size_t kernelIndex);
};

// safetensors files, shared by checkpoints and tools (the format other
// frameworks read: F32, F64, F16, BF16, I8-I64, U8-U64 and BOOL tensors). Writes are atomic
// like saveParams; `metadata` becomes the header's "__metadata__". Reads check
// the whole file (header length, JSON, dtypes, shapes against byte counts,
// offsets in range and back to back) and throw stepc::Error naming the file
// and the tensor.
void writeSafetensors(const std::string &path, const std::map<std::string, Tensor> &tensors,
                      const std::map<std::string, std::string> &metadata = {});
std::map<std::string, Tensor> readSafetensors(const std::string &path,
                                              std::map<std::string, std::string> *metadata = nullptr);

} // namespace stepc
