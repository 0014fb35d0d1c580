// The Communicator over MPI_COMM_WORLD (built when CMake finds MPI). MPI's
// default error handler stays in place: a failed collective (a peer that
// died) ends the whole job, which is what a data-parallel step wants instead
// of waiting forever.
#include "stepc/communicator.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define STEPC_LEAK_CHECKED 1
#endif
#endif

namespace stepc {
namespace {

MPI_Datatype mpiType(DType dtype) {
  switch (dtype) {
  case DType::F32: return MPI_FLOAT;
  case DType::F64: return MPI_DOUBLE;
  case DType::I32: return MPI_INT32_T;
  case DType::I64: return MPI_INT64_T;
  case DType::I8: return MPI_INT8_T;
  case DType::U8: return MPI_UINT8_T;
  case DType::I16: return MPI_INT16_T;
  case DType::U16: return MPI_UINT16_T;
  case DType::U32: return MPI_UINT32_T;
  case DType::U64: return MPI_UINT64_T;
  case DType::Bool:
  case DType::F16:  // MPI has no half types; reduce an f32 copy instead
  case DType::BF16: break;
  }
  throw Error(fmt::format("all_reduce: MPI cannot reduce {} values", dtypeName(dtype)));
}

template <class T> void scale(void *data, int64_t count, int size) {
  T *values = static_cast<T *>(data);
  for (int64_t i = 0; i < count; ++i)
    values[i] /= static_cast<T>(size);
}

// Whether the progress thread runs: on unless STEPC_MPI_PROGRESS=0.
bool progressThreadWanted() {
  const char *value = std::getenv("STEPC_MPI_PROGRESS");
  return !value || std::string_view(value) != "0";
}

class MpiCommunicator final : public Communicator {
public:
  MpiCommunicator() {
    int initialized = 0, provided = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // SERIALIZED: the progress thread and the thread that calls step()
      // both call MPI, never at once (mutex_); the kernels' workers never do.
#ifdef STEPC_LEAK_CHECKED
      // OpenMPI keeps what MPI_Init allocates until exit, some of it in
      // components it unloads again, where no suppression can name it.
      __lsan_disable();
#endif
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
#ifdef STEPC_LEAK_CHECKED
      __lsan_enable();
#endif
      owns_ = true;
    } else {
      MPI_Query_thread(&provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (size_ > 1 && provided >= MPI_THREAD_SERIALIZED && progressThreadWanted())
      progressThread_ = std::thread([this] { progressLoop(); });
  }
  ~MpiCommunicator() override {
    if (progressThread_.joinable()) {
      {
        std::lock_guard lock(mutex_);
        stopping_ = true;
      }
      wake_.notify_one();
      progressThread_.join();
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) {
#ifdef STEPC_LEAK_CHECKED
      // Likewise MPI_Finalize unloads the components, so the sanitized
      // build checks for leaks here, while OpenMPI's allocations are still
      // reachable or named (tests/lsan.supp); the check at exit is skipped.
      __lsan_do_leak_check();
#endif
      MPI_Finalize();
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override {
    return progressThread_.joinable() ? "MPI, progress thread" : "MPI";
  }

  int64_t startAllReduce(const void *in, void *out, int64_t count, DType dtype,
                         ReduceOp op) override {
    if (count > INT32_MAX)
      throw Error(fmt::format("all_reduce of {} elements: MPI counts stop at 2^31-1", count));
    Pending p{MPI_REQUEST_NULL, out, count, dtype, op, false};
    MPI_Datatype type = mpiType(dtype);
    int64_t handle;
    {
      std::lock_guard lock(mutex_);
      MPI_Iallreduce(in == out ? MPI_IN_PLACE : in, out, static_cast<int>(count), type, MPI_SUM,
                     MPI_COMM_WORLD, &p.request);
      handle = next_++;
      pending_.emplace(handle, p);
    }
    wake_.notify_one();
    return handle;
  }

  void progress() override {
    if (progressThread_.joinable())
      return; // the thread does it, without taking the mutex from it here
    std::lock_guard lock(mutex_);
    testPending();
  }

  bool finished(int64_t handle) const override {
    std::lock_guard lock(mutex_);
    auto it = pending_.find(handle);
    return it != pending_.end() && it->second.done;
  }

  void wait(int64_t handle) override {
    Pending p;
    {
      std::lock_guard lock(mutex_);
      auto it = pending_.find(handle);
      if (it == pending_.end())
        throw Error(fmt::format("MPI: no collective with handle {} is in flight", handle));
      p = it->second;
      pending_.erase(it);
      // Holding the mutex: MPI_Wait advances the collective itself, and the
      // progress thread has nothing else to do for it meanwhile.
      if (!p.done)
        MPI_Wait(&p.request, MPI_STATUS_IGNORE);
    }
    if (p.op == ReduceOp::Mean) {
      if (p.dtype == DType::F64)
        scale<double>(p.out, p.count, size_);
      else
        scale<float>(p.out, p.count, size_);
    }
  }

  void broadcast(void *data, int64_t bytes, int root) override {
    auto *at = static_cast<char *>(data);
    std::lock_guard lock(mutex_);
    // MPI counts are ints: send in pieces below 2^31 bytes.
    for (int64_t done = 0; done < bytes;) {
      int piece = static_cast<int>(std::min<int64_t>(bytes - done, int64_t(1) << 30));
      MPI_Bcast(at + done, piece, MPI_BYTE, root, MPI_COMM_WORLD);
      done += piece;
    }
  }

  std::vector<uint64_t> allGather(uint64_t value) override {
    std::vector<uint64_t> all(static_cast<size_t>(size_));
    std::lock_guard lock(mutex_);
    MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
    return all;
  }

  [[noreturn]] void abort(int code) override {
    // The progress thread holds mutex_ only for MPI_Test, which never
    // blocks; the calls that do (MPI_Wait, ...) come from this thread.
    std::lock_guard lock(mutex_);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

private:
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    void *out = nullptr;
    int64_t count = 0;
    DType dtype = DType::F32;
    ReduceOp op = ReduceOp::Sum;
    bool done = false; // MPI_Test saw it complete; request is then null
  };
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
  int64_t next_ = 1;
  mutable std::mutex mutex_; // every MPI call, pending_, stopping_
  std::condition_variable wake_;
  std::map<int64_t, Pending> pending_;
  bool stopping_ = false;
  std::thread progressThread_;

  // Called with mutex_ held.
  bool testPending() {
    bool open = false;
    for (auto &[handle, p] : pending_) {
      if (p.done)
        continue;
      int done = 0;
      MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
      p.done = done != 0;
      open = open || !p.done;
    }
    return open;
  }

  // While some all-reduce is unfinished: MPI_Test them all, then let go of
  // the mutex for ~50 us (the step's own MPI calls get in between). Sleeps
  // on wake_ otherwise, so an idle rank costs no CPU.
  void progressLoop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (!testPending()) {
        wake_.wait(lock);
        continue;
      }
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      lock.lock();
    }
  }
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
