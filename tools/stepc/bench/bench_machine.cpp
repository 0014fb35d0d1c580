// The machine's fp32 FMA peak and copy bandwidth, measured in the same run as
// the figures they are compared with: on a shared or throttled machine a
// datasheet peak would flatter or insult every percentage.
#include "bench.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

namespace stepc::cli::perf {
namespace {

// Independent accumulators: an FMA's latency (4 cycles) times the FMA ports
// (2) is 8 in flight per core; 16 (AVX-512, 32 registers) and 12 (AVX2, 16
// registers) keep both ports busy without spilling. acc = acc * a + b with
// a < 1 converges, so no lane ever becomes Inf or a denormal.
#define STEPC_FMA_16(F)                                                                            \
  F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)
#define STEPC_FMA_12(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)

constexpr int kAvx512Accumulators = 16, kAvx2Accumulators = 12;

__attribute__((target("avx512f,fma"))) float fmaLoopAvx512(int64_t iterations) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
#define DECLARE(i) __m512 acc##i = _mm512_set1_ps(1.0f + 0.01f * i);
  STEPC_FMA_16(DECLARE)
#undef DECLARE
  for (int64_t it = 0; it < iterations; ++it) {
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, a, b);
    STEPC_FMA_16(STEP)
#undef STEP
  }
  __m512 sum = _mm512_setzero_ps();
#define SUM(i) sum = _mm512_add_ps(sum, acc##i);
  STEPC_FMA_16(SUM)
#undef SUM
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  return total;
}

__attribute__((target("avx2,fma"))) float fmaLoopAvx2(int64_t iterations) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
#define DECLARE(i) __m256 acc##i = _mm256_set1_ps(1.0f + 0.01f * i);
  STEPC_FMA_12(DECLARE)
#undef DECLARE
  for (int64_t it = 0; it < iterations; ++it) {
#define STEP(i) acc##i = _mm256_fmadd_ps(acc##i, a, b);
    STEPC_FMA_12(STEP)
#undef STEP
  }
  __m256 sum = _mm256_setzero_ps();
#define SUM(i) sum = _mm256_add_ps(sum, acc##i);
  STEPC_FMA_12(SUM)
#undef SUM
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  return total;
}

#undef STEPC_FMA_16
#undef STEPC_FMA_12

// Runs work(thread) on `threads` threads released together; returns the
// seconds from the release to the last thread's end.
double timeOnThreads(int threads, const std::function<void(int)> &work) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::chrono::steady_clock::time_point> ends(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire))
        std::this_thread::yield();
      work(t);
      ends[static_cast<size_t>(t)] = std::chrono::steady_clock::now();
    });
  while (ready.load() < threads)
    std::this_thread::yield();
  auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (std::thread &w : workers)
    w.join();
  return std::chrono::duration<double>(*std::max_element(ends.begin(), ends.end()) - start).count();
}

std::atomic<float> fmaSink{0}; // keeps the loops' results alive

void measureFma(MachinePeak &peak) {
  float (*loop)(int64_t);
  int lanes, accumulators;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    loop = fmaLoopAvx512, lanes = 16, accumulators = kAvx512Accumulators, peak.isa = "avx512f";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    loop = fmaLoopAvx2, lanes = 8, accumulators = kAvx2Accumulators, peak.isa = "avx2";
  } else {
    peak.isa = "none";
    return;
  }
  // About 0.1 s per repetition: 3.5e8 cycles at 3.5 GHz, two FMAs a cycle.
  const int64_t iterations = int64_t{700'000'000} / accumulators;
  loop(iterations / 50); // wake the vector units (and their clock) up
  double best = 0;
  // Best of 5: on a shared machine, the repetition no one else ran during.
  for (int rep = 0; rep < 5; ++rep) {
    double seconds = timeOnThreads(peak.threads, [&](int) { fmaSink += loop(iterations); });
    double flops = 2.0 * lanes * accumulators * double(iterations) * peak.threads;
    best = std::max(best, flops / seconds / 1e9);
  }
  peak.gflops = best;
}

// A plain load/store loop rather than memcpy, left uninstrumented: under the
// sanitizers memcpy is intercepted and checks every byte's shadow, which
// halved the measured bandwidth while the compiled kernels (never
// instrumented) ran at full speed. Ordinary stores also pay the
// write-allocate traffic the kernels pay, where a large memcpy may use
// non-temporal stores. The xor with a zero the compiler cannot see keeps it
// from turning the loop back into memcpy.
std::atomic<uint64_t> copyKey{0};

__attribute__((no_sanitize("address", "undefined", "thread", "memory"))) void
copyWords(uint64_t *__restrict to, const uint64_t *__restrict from, size_t words) {
  const uint64_t key = copyKey.load(std::memory_order_relaxed);
  for (size_t i = 0; i < words; ++i)
    to[i] = from[i] ^ key;
}

void measureCopy(MachinePeak &peak) {
  constexpr size_t kBytes = size_t{256} << 20;
  auto release = [](std::byte *p) { std::free(p); };
  std::unique_ptr<std::byte, decltype(release)> from(
      static_cast<std::byte *>(std::aligned_alloc(4096, kBytes)), release);
  std::unique_ptr<std::byte, decltype(release)> to(
      static_cast<std::byte *>(std::aligned_alloc(4096, kBytes)), release);
  if (!from || !to)
    return;
  size_t chunk = kBytes / static_cast<size_t>(peak.threads) / 4096 * 4096;
  auto part = [&](int t) { return static_cast<size_t>(t) * chunk; };
  auto length = [&](int t) { return t == peak.threads - 1 ? kBytes - part(t) : chunk; };
  // Each thread first touches the pages it will copy (page faults are not bandwidth).
  timeOnThreads(peak.threads, [&](int t) {
    std::memset(from.get() + part(t), 1, length(t));
    std::memset(to.get() + part(t), 0, length(t));
  });
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    double seconds = timeOnThreads(peak.threads, [&](int t) {
      copyWords(reinterpret_cast<uint64_t *>(to.get() + part(t)),
                reinterpret_cast<const uint64_t *>(from.get() + part(t)), length(t) / 8);
    });
    best = std::max(best, 2.0 * double(kBytes) / seconds / 1e9);
  }
  peak.copyGBs = best;
}

} // namespace

double median(std::vector<double> values) {
  if (values.empty())
    return 0;
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

MachinePeak measureMachine(int threads) {
  MachinePeak peak;
  peak.threads =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  measureFma(peak);
  measureCopy(peak);
  return peak;
}

} // namespace stepc::cli::perf
