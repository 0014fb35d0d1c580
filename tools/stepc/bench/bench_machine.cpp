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
#include <utility>

namespace stepc::cli::perf {
namespace {

// Independent accumulators: an FMA's latency (4 cycles) times the FMA ports
// (2) is 8 in flight per core; 16 (AVX-512, 32 registers) and 12 (AVX2, 16
// registers) keep both ports busy without spilling. acc = acc * a + b with
// a < 1 converges, so no lane ever becomes Inf or a denormal.
//
// The two instruction sets differ only in these few operations; fmaLoop is
// written once over them. Vectors go by reference: a vector passed by value
// between functions compiled for different targets would change the ABI.
struct Avx512 {
  using Vec = __m512;
  static constexpr int kLanes = 16, kAccumulators = 16;
  [[gnu::target("avx512f,fma")]] static void set(Vec &v, float x) { v = _mm512_set1_ps(x); }
  [[gnu::target("avx512f,fma")]] static void fma(Vec &acc, const Vec &a, const Vec &b) {
    acc = _mm512_fmadd_ps(acc, a, b);
  }
  [[gnu::target("avx512f,fma")]] static void add(Vec &sum, const Vec &v) {
    sum = _mm512_add_ps(sum, v);
  }
  [[gnu::target("avx512f,fma")]] static void store(float *to, const Vec &v) {
    _mm512_storeu_ps(to, v);
  }
};

struct Avx2 {
  using Vec = __m256;
  static constexpr int kLanes = 8, kAccumulators = 12;
  [[gnu::target("avx2,fma")]] static void set(Vec &v, float x) { v = _mm256_set1_ps(x); }
  [[gnu::target("avx2,fma")]] static void fma(Vec &acc, const Vec &a, const Vec &b) {
    acc = _mm256_fmadd_ps(acc, a, b);
  }
  [[gnu::target("avx2,fma")]] static void add(Vec &sum, const Vec &v) {
    sum = _mm256_add_ps(sum, v);
  }
  [[gnu::target("avx2,fma")]] static void store(float *to, const Vec &v) {
    _mm256_storeu_ps(to, v);
  }
};

// Only ever inlined into a caller compiled for Isa's target (flatten,
// below). The folds over I spell out one statement per accumulator, as
// unrolled code the optimizer cannot roll back into a loop over memory, so
// every accumulator stays in a register.
template <class Isa, size_t... I> float fmaLoop(int64_t iterations, std::index_sequence<I...>) {
  typename Isa::Vec a, b, acc[sizeof...(I)];
  Isa::set(a, 0.999999f);
  Isa::set(b, 1e-6f);
  (Isa::set(acc[I], 1.0f + 0.01f * float(I)), ...);
  for (int64_t it = 0; it < iterations; ++it)
    (Isa::fma(acc[I], a, b), ...);
  typename Isa::Vec sum;
  Isa::set(sum, 0.0f);
  (Isa::add(sum, acc[I]), ...);
  float lanes[Isa::kLanes];
  Isa::store(lanes, sum);
  float total = 0;
  for (float lane : lanes)
    total += lane;
  return total;
}

[[gnu::target("avx512f,fma"), gnu::flatten]] float fmaLoopAvx512(int64_t iterations) {
  return fmaLoop<Avx512>(iterations, std::make_index_sequence<Avx512::kAccumulators>());
}
[[gnu::target("avx2,fma"), gnu::flatten]] float fmaLoopAvx2(int64_t iterations) {
  return fmaLoop<Avx2>(iterations, std::make_index_sequence<Avx2::kAccumulators>());
}

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
    loop = fmaLoopAvx512, lanes = Avx512::kLanes, accumulators = Avx512::kAccumulators;
    peak.isa = "avx512f";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    loop = fmaLoopAvx2, lanes = Avx2::kLanes, accumulators = Avx2::kAccumulators;
    peak.isa = "avx2";
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
