// `stepc bench`: times compiled steps. Figures are medians over repeated
// steps; fused and unfused builds alternate step by step so that noise from
// a shared machine hits both alike and the ratio stays meaningful. The
// machine's own peaks are measured in the same run, so every percentage is
// of what this machine does now, not of a datasheet.
#include "bench.h"
#include "commands.h"
#include "jit_cache.h"
#include "lowered_graph.h"

#include "stepc/backend.h"
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/error.h"
#include "stepc/file.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

namespace stepc::cli {
namespace {

using perf::median;
using Json = nlohmann::json;

template <class F> double millisecondsOf(F &&run) {
  auto start = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

Json optionalJson(const std::optional<double> &x) { return x ? Json(*x) : Json(); }

// The 1, 5 and 15 minute load averages: how busy the machine was.
std::array<double, 3> loadAverage() {
  std::array<double, 3> load{-1, -1, -1};
  std::ifstream in("/proc/loadavg");
  in >> load[0] >> load[1] >> load[2];
  return load;
}

// A reader sees the old JSON or the complete new one.
void writeJsonAtomically(const std::string &path, const Json &json) {
  writeFileAtomically(path, json.dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
}

// Points the JIT's disk cache at a fresh directory for the bench's lifetime,
// so that the first compile is a real compile whatever the user's cache holds.
class PrivateJitCache {
public:
  PrivateJitCache() {
    if (const char *old = std::getenv("STEPC_CACHE_DIR"))
      saved_ = old;
    std::string pattern = (std::filesystem::temp_directory_path() / "stepc-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()))
      dir_ = pattern;
    ::setenv("STEPC_CACHE_DIR", dir_.empty() ? "" : dir_.c_str(), 1);
  }
  ~PrivateJitCache() {
    if (saved_)
      ::setenv("STEPC_CACHE_DIR", saved_->c_str(), 1);
    else
      ::unsetenv("STEPC_CACHE_DIR");
    std::error_code ignored;
    if (!dir_.empty())
      std::filesystem::remove_all(dir_, ignored);
  }
  PrivateJitCache(const PrivateJitCache &) = delete;
  PrivateJitCache &operator=(const PrivateJitCache &) = delete;
  bool onDisk() const { return !dir_.empty(); }

private:
  std::string dir_;
  std::optional<std::string> saved_;
};

std::string megabytes(int64_t bytes) { return fmt::format("{:.2f} MB", double(bytes) / 1e6); }

// A kernel's roofline: its arithmetic intensity, the bound min(peak,
// intensity x bandwidth) and the fraction of it the kernel reached, taken as
// the bound's time over the measured time (max(flops / peak, bytes /
// bandwidth) / time), which also holds for kernels that compute nothing.
struct Roofline {
  double intensity = 0, boundGflops = 0, fraction = 0;
  bool memoryBound = true;
};

Roofline roofline(const perf::KernelTime &k, double peakGflops, double bandwidthGBs) {
  Roofline r;
  r.intensity = k.bytes > 0 ? k.allFlops / double(k.bytes) : 0;
  r.boundGflops = std::min(peakGflops, r.intensity * bandwidthGBs);
  r.memoryBound = r.intensity * bandwidthGBs < peakGflops;
  double computeMicros = k.allFlops / peakGflops / 1e3;
  double memoryMicros = bandwidthGBs > 0 ? double(k.bytes) / bandwidthGBs / 1e3 : 0;
  r.fraction = k.micros > 0 ? std::max(computeMicros, memoryMicros) / k.micros : 0;
  return r;
}

// The fused kernels' medians, longest first, with GFLOP/s for matmul/conv
// and each kernel's roofline.
Json printKernels(const std::vector<perf::KernelTime> &kernels, double peakGflops,
                  double bandwidthGBs) {
  std::vector<perf::KernelTime> rows = kernels;
  double total = 0, matrixMicros = 0, matrixFlops = 0;
  for (const perf::KernelTime &k : rows) {
    total += k.micros;
    if (k.flops > 0) {
      matrixMicros += k.micros;
      matrixFlops += k.flops;
    }
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto &a, const auto &b) { return a.micros > b.micros; });
  Json json = Json::array();
  fmt::print("per kernel, fused (median of profiled steps):\n");
  fmt::print("  {:<44} {:>10} {:>7} {:>10} {:>7} {:>8} {:>10} {:>8}\n", "kernel", "median us",
             "share", "GFLOP/s", "% peak", "FLOP/B", "roof GF/s", "% roof");
  for (const perf::KernelTime &r : rows) {
    double gflops = r.flops > 0 && r.micros > 0 ? r.flops / r.micros / 1e3 : 0;
    Roofline roof = roofline(r, peakGflops, bandwidthGBs);
    fmt::print("  {:<44} {:>10.1f} {:>6.1f}% {:>10} {:>7} {:>8.2f} {:>10.1f} {:>7.0f}%{}\n",
               r.name.substr(0, 44), r.micros, total > 0 ? 100 * r.micros / total : 0,
               gflops > 0 ? fmt::format("{:.1f}", gflops) : "",
               gflops > 0 ? fmt::format("{:.0f}%", 100 * gflops / peakGflops) : "", roof.intensity,
               roof.boundGflops, 100 * roof.fraction, roof.memoryBound ? " mem" : "");
    Json row = {{"kernel", r.name},
                {"median_us", r.micros},
                {"flops", r.allFlops},
                {"bytes", r.bytes},
                {"intensity", roof.intensity},
                {"roofline_gflops", roof.boundGflops},
                {"roofline_bound", roof.memoryBound ? "memory" : "compute"},
                {"roofline_fraction", roof.fraction}};
    if (gflops > 0)
      row["gflops"] = gflops;
    json.push_back(std::move(row));
  }
  fmt::print("  FLOP/B: flops (matmul/conv exact, one per element for other ops) per byte read + "
             "written; roof GF/s: min({:.0f} GFLOP/s peak, FLOP/B x {:.1f} GB/s copy bandwidth), "
             "'mem' where bandwidth bounds it; % roof: the bound's time over the measured time\n",
             peakGflops, bandwidthGBs);
  if (matrixMicros > 0) {
    double gflops = matrixFlops / matrixMicros / 1e3;
    fmt::print("  matmul/conv kernels (with their fused epilogues): {:.1f} GFLOP/s over "
               "{:.3f} GFLOP, {:.0f}% of the {:.0f} GFLOP/s peak\n",
               gflops, matrixFlops / 1e9, 100 * gflops / peakGflops, peakGflops);
  }
  return json;
}

Json printComparison(const perf::KernelReport &report, bool verbose) {
  fmt::print("fused vs unfused, per fused kernel (each reads the unfused build's values of its "
             "inputs; {}):\n",
             report.note);
  fmt::print("  {:<36} {:>4} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}\n", "fused kernel", "ops",
             "fused us", "unfused us", "saved us", "fused MB", "unfsd MB", "max diff");
  Json rows = Json::array();
  double fusedTotal = 0, unfusedTotal = 0;
  for (const perf::KernelComparison &r : report.rows) {
    fmt::print("  {:<36} {:>4} {:>10.1f} {:>10.1f} {:>9.1f} {:>9.2f} {:>9.2f} {:>9.1e}{}\n",
               r.kernel.substr(0, 36), r.ops, r.fusedMicros, r.unfusedMicros,
               r.unfusedMicros - r.fusedMicros, double(r.fusedBytes) / 1e6,
               double(r.unfusedBytes) / 1e6, r.maxDiff, r.note.empty() ? "" : "  " + r.note);
    if (verbose)
      fmt::print("    unfused: {}; {} output elements compared, max abs {:.1e}\n",
                 fmt::join(r.unfused, " + "), r.comparedElements, r.maxAbsDiff);
    fusedTotal += r.fusedMicros;
    unfusedTotal += r.unfusedMicros;
    rows.push_back(perf::toJson(r));
  }
  fmt::print("  total: {:.1f} us fused, {:.1f} us unfused ({} fused kernels); max diff = "
             "max |fused - unfused| / max |unfused| over each output, the largest over the "
             "kernel's outputs\n",
             fusedTotal, unfusedTotal, report.rows.size());
  return rows;
}

// Each distinct matmul shape of the graph compiled alone and timed: kernel
// times of fused builds include their epilogues (an optimizer update can
// cost more than the product), so this is the figure for the products.
Json printMatmuls(const Graph &graph, const BenchOptions &options, double peakGflops) {
  std::map<std::string, std::array<int64_t, 4>> shapes; // batch, m, k, n
  for (const Node &n : graph.nodes) {
    if (n.op != OpKind::MatMul || n.type.dtype != DType::F32)
      continue;
    const Shape &a = graph.type(n.operands[0]).shape;
    int64_t batch = n.type.numel() / (n.type.shape[n.type.rank() - 2] * n.type.shape.back());
    int64_t m = a[a.size() - 2], k = a.back(), cols = n.type.shape.back();
    shapes[fmt::format("{}x{}x{}{}", m, k, cols,
                       batch > 1 ? fmt::format(" (batch {})", batch) : "")] = {batch, m, k, cols};
  }
  Json json = Json::array();
  if (shapes.empty())
    return json;
  fmt::print("matmuls (m x k x n), each compiled alone:\n");
  double totalFlops = 0, totalMicros = 0;
  for (const auto &[label, s] : shapes) {
    GraphBuilder b("matmul");
    Value x = b.input("a", DType::F32, {s[0] * s[1], s[2]});
    Value y = b.input("b", DType::F32, {s[2], s[3]});
    b.output("c", matmul(x, y));
    Graph g = b.finish();
    auto exe = compileJit(g, {.fusion = true}, {.threads = options.threads});
    TensorMap in = randomInputs(g, options.seed);
    std::vector<double> micros;
    for (int i = 0; i < options.warmup + options.steps; ++i) {
      double us = 1e3 * millisecondsOf([&] { exe->step(in); });
      if (i >= options.warmup)
        micros.push_back(us);
    }
    double us = median(micros);
    double flops = 2.0 * double(s[0] * s[1]) * double(s[2]) * double(s[3]);
    totalFlops += flops;
    totalMicros += us;
    fmt::print("  {:<28} {:>9.1f} us {:>8.1f} GFLOP/s {:>5.0f}% of peak\n", label, us,
               flops / us / 1e3, 100 * flops / us / 1e3 / peakGflops);
    json.push_back({{"shape", label}, {"median_us", us}, {"gflops", flops / us / 1e3}});
  }
  fmt::print("  all matmul shapes: {:.1f} GFLOP/s ({:.0f}% of the {:.0f} GFLOP/s peak; step "
             "times include copying inputs in and the output out)\n",
             totalFlops / totalMicros / 1e3, 100 * totalFlops / totalMicros / 1e3 / peakGflops,
             peakGflops);
  return json;
}

// The compiled graph's figures: compile and cache-hit times, ms/step fused
// and unfused, peak arena, and with --per-kernel the kernel tables.
Json benchGraph(const BenchOptions &options, double peakGflops, double bandwidthGBs) {
  TensorMap params;
  MixedPrecision mixed;
  if (!options.mixedPrecision.empty()) {
    if (options.optimizer.empty())
      throw Error("bench: --mixed-precision applies to a training step (--train or --train-step)");
    mixed.compute = parseMixedPrecision(options.mixedPrecision, "--mixed-precision");
  }
  Graph graph = perf::loadBenchedGraph(options.file, options.params, options.optimizer,
                                       options.loss, params, mixed);
  TensorMap inputs = randomInputs(graph, options.seed);
  RunOptions run{.threads = options.threads};
  MemoryBudget budget = memoryBudgetOption(options.memoryBudget);
  CompileOptions fusedOptions{.fusion = true, .memoryBudget = budget},
      unfusedOptions{.fusion = false, .memoryBudget = budget};
  // The planned peak (what a budget bounds), before the minutes of timing: a
  // budget that cannot be met fails here.
  LoweredGraph planned = lowerGraph(graph, fusedOptions);
  // A kernel --inject-fault does not name fails here too, not after the timing.
  if (!options.injectFault.empty())
    perf::parseFault("bench", options.injectFault, planned);

  // A compile, a hit in this process' memory, and a hit on disk (what a
  // second process finds), each checked against the cache's own counters.
  PrivateJitCache cache;
  resetJitCacheStats();
  std::unique_ptr<Executable> fused;
  double compileMs = millisecondsOf([&] { fused = compileJit(graph, fusedOptions, run); });
  CompileTimes compileTimes = lastCompileTimes();
  std::optional<double> memoryHitMs, diskHitMs;
  std::string cacheNote;
  if (jitCacheStats().misses == 1) {
    double ms = millisecondsOf([&] { compileJit(graph, fusedOptions, run); });
    if (jitCacheStats().memoryHits == 1)
      memoryHitMs = ms;
    clearJitMemoryCache();
    ms = millisecondsOf([&] { compileJit(graph, fusedOptions, run); });
    if (jitCacheStats().diskHits == 1)
      diskHitMs = ms;
    else
      cacheNote = cache.onDisk() ? " (the disk cache could not be written)"
                                 : " (no temporary directory for the disk cache)";
  } else {
    cacheNote = " (the first compile did not go through the cache)";
  }

  std::unique_ptr<Executable> unfused;
  std::optional<double> unfusedCompileMs;
  if (options.compareUnfused || options.perKernel)
    unfusedCompileMs = millisecondsOf([&] { unfused = compileJit(graph, unfusedOptions, run); });

  for (auto &[name, value] : params) {
    fused->setParam(name, value);
    if (unfused)
      unfused->setParam(name, value);
  }
  for (int i = 0; i < options.warmup; ++i) {
    fused->step(inputs);
    if (unfused)
      unfused->step(inputs);
  }
  std::vector<double> fusedMs, unfusedMs;
  for (int i = 0; i < options.steps; ++i) {
    fusedMs.push_back(millisecondsOf([&] { fused->step(inputs); }));
    if (unfused)
      unfusedMs.push_back(millisecondsOf([&] { unfused->step(inputs); }));
  }

  int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  auto load = loadAverage();
  fmt::print("{}{}: {} kernels fused{}, {} threads, load average {:.2f} {:.2f} {:.2f}\n",
             graph.name,
             options.optimizer.empty()
                 ? ""
                 : fmt::format(" (training step, {}{})", options.optimizer,
                               mixed.compute ? ", mixed precision " + options.mixedPrecision : ""),
             fused->spec().kernels.size(),
             unfused ? fmt::format(", {} unfused", unfused->spec().kernels.size()) : "", threads,
             load[0], load[1], load[2]);
  fmt::print("compile: {:.1f} ms (passes, MLIR, LLVM, load){}\n", compileMs,
             unfusedCompileMs ? fmt::format("; unfused {:.1f} ms", *unfusedCompileMs) : "");
  const CompileTimes &t = compileTimes;
  fmt::print("compile time: passes {:.0f} ms, fusion {:.0f}, buffer plan {:.0f}, MLIR text {:.0f}; "
             "{} kernels, {} distinct bodies, {} objects compiled on {} threads in {:.0f} ms "
             "(CPU: MLIR parse {:.0f}, MLIR lowering {:.0f}, LLVM optimize {:.0f}, LLVM codegen "
             "{:.0f}); load {:.0f} ms\n",
             t.passes * 1e3, t.fusion * 1e3, t.bufferPlan * 1e3, t.emit * 1e3, t.kernels,
             t.bodies, t.compiledObjects, t.threads, t.objects * 1e3, t.mlirParse * 1e3,
             t.mlirLowering * 1e3, t.llvmOptimize * 1e3, t.llvmCodegen * 1e3, t.load * 1e3);
  fmt::print("cache hit: {} in memory, {} from disk{}\n",
             memoryHitMs ? fmt::format("{:.2f} ms", *memoryHitMs) : "n/a",
             diskHitMs ? fmt::format("{:.2f} ms", *diskHitMs) : "n/a", cacheNote);
  fmt::print("peak arena: {} bytes fused ({}){}\n", fused->spec().arenaBytes,
             megabytes(fused->spec().arenaBytes),
             unfused ? fmt::format(", {} bytes unfused ({})", unfused->spec().arenaBytes,
                                   megabytes(unfused->spec().arenaBytes))
                     : "");
  fmt::print("planned peak: {}{}\n", bytesString(planned.buffers.arenaBytes),
             budget.given() ? fmt::format(" with memory budget {} (unbudgeted {}; {} values "
                                          "recomputed)",
                                          bytesString(planned.remat.budget),
                                          bytesString(planned.remat.unbudgetedPeak),
                                          planned.remat.values)
                            : "");
  double fusedMedian = median(fusedMs);
  fmt::print("fused:   median step {:.3f} ms over {} steps\n", fusedMedian, options.steps);
  std::optional<double> unfusedMedian;
  if (unfused) {
    unfusedMedian = median(unfusedMs);
    fmt::print("unfused: median step {:.3f} ms over {} steps\n", *unfusedMedian, options.steps);
    fmt::print("speedup fused/unfused: {:.2f}x\n", *unfusedMedian / fusedMedian);
  }

  Json json = {
      {"graph", graph.name},
      {"file", options.file},
      {"training_step", options.optimizer.empty() ? Json() : Json(options.optimizer)},
      {"mixed_precision", mixed.compute ? Json(options.mixedPrecision) : Json()},
      {"threads", threads},
      {"steps", options.steps},
      {"warmup", options.warmup},
      {"load_average", load},
      {"compile_ms", compileMs},
      {"compile_breakdown_ms",
       {{"passes", t.passes * 1e3}, {"fusion", t.fusion * 1e3}, {"buffer_plan", t.bufferPlan * 1e3},
        {"mlir_text", t.emit * 1e3}, {"objects_wall", t.objects * 1e3},
        {"mlir_parse_cpu", t.mlirParse * 1e3}, {"mlir_lowering_cpu", t.mlirLowering * 1e3},
        {"llvm_optimize_cpu", t.llvmOptimize * 1e3}, {"llvm_codegen_cpu", t.llvmCodegen * 1e3},
        {"load", t.load * 1e3}, {"kernels", t.kernels}, {"bodies", t.bodies},
        {"objects_compiled", t.compiledObjects}, {"threads", t.threads}}},
      {"unfused_compile_ms", optionalJson(unfusedCompileMs)},
      {"cache_hit_ms", optionalJson(memoryHitMs)},
      {"cache_hit_disk_ms", optionalJson(diskHitMs)},
      {"fused_ms_per_step", fusedMedian},
      {"unfused_ms_per_step", optionalJson(unfusedMedian)},
      {"speedup", unfusedMedian ? Json(*unfusedMedian / fusedMedian) : Json()},
      {"peak_bytes", fused->spec().arenaBytes},
      {"planned_peak_bytes", planned.buffers.arenaBytes},
      {"memory_budget_bytes", budget.given() ? Json(planned.remat.budget) : Json()},
      {"unbudgeted_peak_bytes",
       budget.given() ? Json(planned.remat.unbudgetedPeak) : Json(planned.buffers.arenaBytes)},
      {"unfused_peak_bytes", unfused ? Json(unfused->spec().arenaBytes) : Json()},
      {"kernels_fused", fused->spec().kernels.size()},
      {"kernels_unfused", unfused ? Json(unfused->spec().kernels.size()) : Json()},
      {"per_kernel", Json()},
  };
  if (options.perKernel) {
    fused.reset();
    unfused.reset();
    perf::KernelReport report = perf::compareKernels(
        graph, inputs,
        {.steps = options.steps,
         .warmup = options.warmup,
         .threads = options.threads,
         .memoryBudget = budget,
         .injectFault = options.injectFault});
    json["kernels"] = printKernels(report.fused, peakGflops, bandwidthGBs);
    json["per_kernel"] = printComparison(report, options.verbose);
    json["per_kernel_note"] = report.note;
    json["matmuls"] = printMatmuls(graph, options, peakGflops);
  }
  return json;
}

// The tanh GELU over n floats, fused into one pass: how close an elementwise
// chain gets to the machine's copy bandwidth.
Json benchGelu(int64_t n, const BenchOptions &options, const perf::MachinePeak &machine) {
  GraphBuilder b("gelu");
  Value x = b.input("x", DType::F32, {n});
  b.output("y", gelu(x));
  Graph graph = b.finish();
  auto exe = compileJit(graph, {.fusion = true}, {.profile = true, .threads = options.threads});
  TensorMap inputs = randomInputs(graph, options.seed);
  for (int i = 0; i < options.warmup; ++i)
    exe->step(inputs);
  int64_t first = exe->stepsTaken();
  std::vector<double> stepMs;
  for (int i = 0; i < std::max(options.steps, 10); ++i)
    stepMs.push_back(millisecondsOf([&] { exe->step(inputs); }));
  // Kernel time per step: step() also copies x into the arena and y out.
  std::map<int64_t, double> kernelMs;
  for (const KernelTiming &t : exe->profile())
    if (t.step >= first)
      kernelMs[t.step] += t.durationMicros / 1e3;
  std::vector<double> perStep;
  for (const auto &[step, ms] : kernelMs)
    perStep.push_back(ms);
  double kernel = median(perStep), step = median(stepMs);
  double bytes = 2.0 * double(n) * sizeof(float); // x read once, y written once
  double gbs = bytes / (kernel / 1e3) / 1e9;
  double percent = machine.copyGBs > 0 ? 100 * gbs / machine.copyGBs : 0;
  fmt::print("gelu (tanh) over {} floats: {} kernel{}, {:.3f} ms = {:.1f} GB/s read+written, "
             "{:.0f}% of the measured copy bandwidth; step with copies in and out {:.3f} ms\n",
             n, exe->spec().kernels.size(), exe->spec().kernels.size() == 1 ? "" : "s", kernel, gbs,
             percent, step);
  return {{"n", n},
          {"kernels", exe->spec().kernels.size()},
          {"kernel_ms", kernel},
          {"step_ms", step},
          {"bytes", bytes},
          {"gb_per_s", gbs},
          {"percent_of_copy", percent}};
}

} // namespace

namespace perf {

Graph loadBenchedGraph(const std::string &file, const std::string &paramsOption,
                       const std::string &optimizer, const std::string &loss, TensorMap &params,
                       const MixedPrecision &mixed) {
  Graph graph = parseGraphFile(file);
  loadModelParams(file, paramsOption, graph, params);
  if (!optimizer.empty()) {
    Optimizer opt;
    opt.kind = parseOptimizerKind(optimizer);
    opt.lr = 1e-3;
    graph = stepc::trainStep(graph, loss, opt, {}, mixed);
  }
  return graph;
}

} // namespace perf

int bench(const BenchOptions &options) {
  findBackend(options.backend, "bench", options.kBackends);
  if (options.file.empty() && options.gelu <= 0)
    throw Error("bench: give a graph file (FILE.sg), --gelu N, or both");
  if (options.steps < 1 || options.warmup < 0)
    throw Error(fmt::format("bench: --steps must be at least 1 and --warmup at least 0 (got "
                            "{} and {})",
                            options.steps, options.warmup));
  if (options.threads < 0)
    throw Error(fmt::format("bench: --threads must be 0 (all cores) or more, got {}",
                            options.threads));
  if (!options.injectFault.empty() && (!options.perKernel || options.file.empty()))
    throw Error("bench: --inject-fault perturbs the per-kernel comparison of a graph; it goes "
                "with FILE.sg --per-kernel");
  if (options.checkDeterminism) {
    // A check, not a measurement: it times nothing, so the timing options
    // would silently do nothing.
    if (options.file.empty())
      throw Error("bench: --check-determinism needs a graph file (FILE.sg)");
    if (options.perKernel || options.compareUnfused || options.gelu > 0 || !options.json.empty())
      throw Error("bench: --check-determinism runs alone; drop --per-kernel, --compare-unfused, "
                  "--gelu and --json");
    return checkDeterminism(options);
  }

  memoryBudgetOption(options.memoryBudget); // a bad budget fails before measuring
  if (!options.json.empty()) {
    // Fail before the minutes of measuring, not after.
    std::filesystem::path dir = std::filesystem::path(options.json).parent_path();
    if (!dir.empty() && !std::filesystem::is_directory(dir))
      throw Error(fmt::format("bench: cannot write '{}': no directory '{}'", options.json,
                              dir.string()));
  }

  perf::MachinePeak machine = perf::measureMachine(options.threads);
  double peak = options.peakGflops > 0 ? options.peakGflops : machine.gflops;
  fmt::print("machine: {:.1f} GFLOP/s fp32 FMA ({}), {:.1f} GB/s copy (measured now, {} "
             "thread{}){}\n",
             machine.gflops, machine.isa, machine.copyGBs, machine.threads,
             machine.threads == 1 ? "" : "s",
             options.peakGflops > 0 ? fmt::format("; percentages of --peak-gflops {:.1f}", peak)
                                    : "");
  if (peak <= 0)
    peak = 1; // no FMA measured and none given: percentages are meaningless but finite

  Json json =
      options.file.empty() ? Json::object() : benchGraph(options, peak, machine.copyGBs);
  json["backend"] = options.backend;
  json["machine"] = {{"threads", machine.threads},
                     {"isa", machine.isa},
                     {"fma_gflops", machine.gflops},
                     {"copy_gb_per_s", machine.copyGBs},
                     {"peak_gflops_used", peak}};
  if (options.gelu > 0)
    json["gelu"] = benchGelu(options.gelu, options, machine);
  if (!options.json.empty()) {
    writeJsonAtomically(options.json, json);
    fmt::print("wrote {}\n", options.json);
  }
  return 0;
}

} // namespace stepc::cli
