// The CPU thread pool that runs a kernel's parallel dimension (runtime only).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace stepc {

// A non-owning reference to a callable `void(int64_t begin, int64_t end)`:
// parallelFor is called once per kernel per step, so it must not allocate.
class RangeFnRef {
public:
  template <class F>
  RangeFnRef(F &fn) // NOLINT: implicit on purpose, like std::function_ref
      : object_(const_cast<void *>(static_cast<const void *>(&fn))),
        call_([](void *object, int64_t begin, int64_t end) {
          (*static_cast<F *>(object))(begin, end);
        }) {}
  void operator()(int64_t begin, int64_t end) const { call_(object_, begin, end); }

private:
  void *object_;
  void (*call_)(void *, int64_t, int64_t);
};

// `threads` participants: threads - 1 workers plus the thread that calls
// parallelFor, which takes the first chunk itself (so with 2 cores and
// threads = 2 there are exactly 2 busy threads, not 3).
//
// Idle workers spin for a few microseconds (kernels of one step follow each
// other closely) and then sleep on a condition variable: a pool that spun
// forever would stall any other pool or process sharing the cores.
//
// parallelFor is not reentrant across threads: one caller at a time (an
// Executable is used from one thread). A parallelFor called from inside a
// chunk runs serially on that thread.
class ThreadPool {
public:
  explicit ThreadPool(int threads); // <= 0: std::thread::hardware_concurrency
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return participants_; }

  // Splits [0, extent) into min(size(), extent) contiguous chunks whose
  // lengths differ by at most one, calls fn(begin, end) once per chunk, one
  // chunk per thread, and returns when all are done. The chunks depend on
  // the thread count, so a kernel's result must not depend on its chunk
  // (docs/design.md, "Determinism"). The first exception a
  // chunk throws is rethrown here (after every chunk finished).
  template <class F> void parallelFor(int64_t extent, F &&fn) {
    run(extent, RangeFnRef(fn));
  }

private:
  void run(int64_t extent, RangeFnRef fn);
  void workerLoop(int index);
  void runChunk(int index) noexcept;
  void recordError(std::exception_ptr error) noexcept;

  int participants_ = 1;
  std::vector<std::thread> workers_;

  std::mutex mutex_;
  std::condition_variable wake_; // workers: a new job or stop
  std::condition_variable done_; // caller: the last worker finished
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0}; // workers yet to finish this job
  bool stop_ = false;           // guarded by mutex_

  // The current job; written by the caller before generation_ is bumped.
  const RangeFnRef *job_ = nullptr;
  int64_t extent_ = 0;
  int chunks_ = 0;

  std::mutex errorMutex_;
  std::exception_ptr error_;
};

} // namespace stepc
