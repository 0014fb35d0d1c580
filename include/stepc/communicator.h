// The processes of a data-parallel job and the collectives between them
// (runtime/, no LLVM). stepc uses the engines clusters already run: MPI
// between host processes (runtime/mpi, built when CMake finds MPI) and NCCL
// between GPUs (runtime/cuda/nccl.h, opened with dlopen). One process alone
// needs neither: SingleProcess makes every collective a copy.
#pragma once

#include "stepc/types.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// How all_reduce combines the processes' values ("sum", "mean").
enum class ReduceOp { Sum, Mean };
std::string_view reduceOpName(ReduceOp op);
std::optional<ReduceOp> parseReduceOp(std::string_view name);

class Communicator {
public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "MPI", "one process"
  virtual std::string engine() const = 0;

  // Starts out[i] = sum (or mean) over all ranks of in[i], `count` elements
  // of `dtype` (in == out reduces in place). Neither buffer may be touched
  // until wait() returns for the handle this returns.
  virtual int64_t startAllReduce(const void *in, void *out, int64_t count, DType dtype,
                                 ReduceOp op) = 0;
  // Lets started collectives advance without blocking: MPI moves a
  // non-blocking collective forward only inside MPI calls, so the executor
  // calls this between kernels.
  virtual void progress() = 0;
  // Whether the collective `handle` is known to have completed (by
  // progress(), the MPI communicator's progress thread, or because it ran
  // synchronously), without calling into the engine. wait() must still be
  // called for it. The executor counts such bytes as hidden.
  virtual bool finished(int64_t handle) const = 0;
  virtual void wait(int64_t handle) = 0;
  void allReduce(const void *in, void *out, int64_t count, DType dtype, ReduceOp op) {
    wait(startAllReduce(in, out, count, dtype, op));
  }
  // Copies `bytes` at `data` on rank `root` to every rank's `data`.
  virtual void broadcast(void *data, int64_t bytes, int root) = 0;
  // Every rank's `value`, indexed by rank.
  virtual std::vector<uint64_t> allGather(uint64_t value) = 0;
  // Ends every process of the job with `code` (MPI_Abort): a rank that
  // failed must not leave the others waiting in a collective.
  [[noreturn]] virtual void abort(int code) = 0;
};

// One process: all_reduce copies, broadcast and allGather are trivial.
class SingleProcess final : public Communicator {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string engine() const override { return "one process"; }
  int64_t startAllReduce(const void *in, void *out, int64_t count, DType dtype,
                         ReduceOp op) override;
  void progress() override {}
  bool finished(int64_t) const override { return true; }
  void wait(int64_t) override {}
  void broadcast(void *, int64_t, int) override {}
  std::vector<uint64_t> allGather(uint64_t value) override { return {value}; }
  [[noreturn]] void abort(int code) override;
};

// The collectives as plain C callbacks: what an AOT artifact's
// stepc_<name>_create_distributed takes (its header declares the same
// fields as `stepc_communicator`), so a C program brings its own MPI, NCCL
// or anything else. Each callback returns 0 on success; anything else
// becomes a stepc::Error naming the callback and the value. All three are
// blocking: an all-reduce completes inside allReduce.
struct CommunicatorCallbacks {
  void *context = nullptr; // passed to every callback
  int rank = 0, size = 1;
  // out[i] = sum (op 0) or mean (op 1) over the ranks of in[i]; `count`
  // elements of `dtype` (0 f32, 1 f64, 2 i32, 3 i64: DType's values); in ==
  // out reduces in place.
  int (*allReduce)(void *context, const void *in, void *out, int64_t count, int dtype,
                   int op) = nullptr;
  // Copies `bytes` at `data` on rank `root` to every rank's `data`.
  int (*broadcast)(void *context, void *data, int64_t bytes, int root) = nullptr;
  // out (size * bytes) = every rank's `bytes` at `in`, in rank order.
  int (*allGather)(void *context, const void *in, void *out, int64_t bytes) = nullptr;
};
// Throws stepc::Error when a callback is NULL or rank/size are out of range.
std::shared_ptr<Communicator> callbackCommunicator(const CommunicatorCallbacks &callbacks);

// Throws stepc::Error unless every rank passed the same `hash`; the message
// names `what` and every rank whose hash differs from rank 0's. Collective:
// every rank must call it.
void checkSameOnEveryRank(Communicator &comm, uint64_t hash, std::string_view what);

// MPI_COMM_WORLD of this process; initializes MPI on first use (with
// MPI_THREAD_SERIALIZED) and finalizes it at exit. A progress thread calls
// MPI_Test on the all-reduces in flight every ~50 us (OpenMPI advances a
// non-blocking collective only inside MPI calls), so they complete while
// the kernels run; every MPI call holds one mutex. STEPC_MPI_PROGRESS=0
// turns the thread off (then only progress() between kernels advances them). Throws stepc::Error when
// stepc was built without MPI (hasMpi() is false).
std::shared_ptr<Communicator> mpiCommunicator();
bool hasMpi();

} // namespace stepc
