#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace stepc {
namespace {

// How long an idle thread spins before it sleeps. Long enough to bridge the
// gap between two kernels of one step, short enough that a sleeping pool
// costs nothing to anyone else.
constexpr auto kSpin = std::chrono::microseconds(50);

// Set on pool workers, and on the caller while it runs its chunk: a nested
// parallelFor runs serially instead of waiting on threads that are busy.
thread_local bool insideParallelFor = false;

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or kSpin passed; returns done().
template <class Done> bool spinUntil(Done done) {
  auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done())
        return true;
      cpuRelax();
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return done();
    // Let a thread waiting for this core run: with more threads than cores
    // the one we wait for may be it.
    std::this_thread::yield();
  }
}

} // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0)
    threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  participants_ = threads;
  workers_.reserve(static_cast<size_t>(threads - 1));
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread &worker : workers_)
    worker.join();
}

void ThreadPool::recordError(std::exception_ptr error) noexcept {
  std::lock_guard lock(errorMutex_);
  if (!error_)
    error_ = std::move(error);
}

void ThreadPool::runChunk(int index) noexcept {
  if (index >= chunks_)
    return;
  // Balanced split without overflow: the first `extra` chunks get one more.
  int64_t base = extent_ / chunks_, extra = extent_ % chunks_;
  int64_t begin = index * base + std::min<int64_t>(index, extra);
  int64_t end = begin + base + (index < extra ? 1 : 0);
  try {
    (*job_)(begin, end);
  } catch (...) {
    recordError(std::current_exception());
  }
}

void ThreadPool::workerLoop(int index) {
  insideParallelFor = true;
  uint64_t seen = 0;
  for (;;) {
    auto changed = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    if (!spinUntil(changed)) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || changed(); });
      if (stop_)
        return;
    }
    seen = generation_.load(std::memory_order_acquire);
    runChunk(index);
    // Every worker acknowledges every job, so none can still be reading
    // job_ when the caller starts the next one.
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::run(int64_t extent, RangeFnRef fn) {
  if (extent <= 0)
    return;
  int chunks = static_cast<int>(std::min<int64_t>(participants_, extent));
  if (chunks == 1 || insideParallelFor) {
    fn(0, extent);
    return;
  }
  job_ = &fn;
  extent_ = extent;
  chunks_ = chunks;
  error_ = nullptr;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();

  insideParallelFor = true;
  runChunk(0);
  insideParallelFor = false;

  auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spinUntil(finished)) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, finished);
  }
  job_ = nullptr;
  if (error_) {
    std::exception_ptr error = std::exchange(error_, nullptr);
    std::rethrow_exception(error);
  }
}

} // namespace stepc
