// The Communicator over MPI_COMM_WORLD (built when CMake finds MPI). MPI's
// default error handler stays in place: a failed collective (a peer that
// died) ends the whole job, which is what a data-parallel step wants instead
// of waiting forever.
#include "stepc/communicator.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <mpi.h>

#include <map>
#include <mutex>

namespace stepc {
namespace {

MPI_Datatype mpiType(DType dtype) {
  switch (dtype) {
  case DType::F32: return MPI_FLOAT;
  case DType::F64: return MPI_DOUBLE;
  case DType::I32: return MPI_INT32_T;
  case DType::I64: return MPI_INT64_T;
  case DType::Bool: break;
  }
  throw Error(fmt::format("all_reduce: MPI cannot reduce {} values", dtypeName(dtype)));
}

template <class T> void scale(void *data, int64_t count, int size) {
  T *values = static_cast<T *>(data);
  for (int64_t i = 0; i < count; ++i)
    values[i] /= static_cast<T>(size);
}

class MpiCommunicator final : public Communicator {
public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Only the thread that calls step() talks to MPI; the kernels' worker
      // threads never do.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owns_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized)
      MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "MPI"; }

  int64_t startAllReduce(const void *in, void *out, int64_t count, DType dtype,
                         ReduceOp op) override {
    if (count > INT32_MAX)
      throw Error(fmt::format("all_reduce of {} elements: MPI counts stop at 2^31-1", count));
    Pending p{MPI_REQUEST_NULL, out, count, dtype, op};
    MPI_Iallreduce(in == out ? MPI_IN_PLACE : in, out, static_cast<int>(count), mpiType(dtype),
                   MPI_SUM, MPI_COMM_WORLD, &p.request);
    int64_t handle = next_++;
    pending_.emplace(handle, p);
    return handle;
  }

  void progress() override {
    for (auto &[handle, p] : pending_) {
      int done = 0;
      MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
    }
  }

  void wait(int64_t handle) override {
    auto it = pending_.find(handle);
    if (it == pending_.end())
      throw Error(fmt::format("MPI: no collective with handle {} is in flight", handle));
    Pending p = it->second;
    pending_.erase(it);
    MPI_Wait(&p.request, MPI_STATUS_IGNORE);
    if (p.op == ReduceOp::Mean) {
      if (p.dtype == DType::F64)
        scale<double>(p.out, p.count, size_);
      else
        scale<float>(p.out, p.count, size_);
    }
  }

  void broadcast(void *data, int64_t bytes, int root) override {
    auto *at = static_cast<char *>(data);
    // MPI counts are ints: send in pieces below 2^31 bytes.
    for (int64_t done = 0; done < bytes;) {
      int piece = static_cast<int>(std::min<int64_t>(bytes - done, int64_t(1) << 30));
      MPI_Bcast(at + done, piece, MPI_BYTE, root, MPI_COMM_WORLD);
      done += piece;
    }
  }

  std::vector<uint64_t> allGather(uint64_t value) override {
    std::vector<uint64_t> all(static_cast<size_t>(size_));
    MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
    return all;
  }

  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

private:
  struct Pending {
    MPI_Request request;
    void *out;
    int64_t count;
    DType dtype;
    ReduceOp op;
  };
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
  int64_t next_ = 1;
  std::map<int64_t, Pending> pending_;
};

} // namespace

bool hasMpi() { return true; }

std::shared_ptr<Communicator> mpiCommunicator() {
  // One per process: MPI is initialized once and finalized when the last
  // user lets go (at exit for the CLI).
  static std::mutex mutex;
  static std::weak_ptr<Communicator> current;
  std::lock_guard lock(mutex);
  std::shared_ptr<Communicator> comm = current.lock();
  if (!comm) {
    comm = std::make_shared<MpiCommunicator>();
    current = comm;
  }
  return comm;
}

} // namespace stepc
