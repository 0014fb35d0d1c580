// `stepc bench`: times compiled steps. Figures are medians over repeated
// steps; fused and unfused builds alternate step by step so that noise from
// a shared machine hits both alike and the ratio stays meaningful.
#include "commands.h"

#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <thread>

namespace stepc::cli {
namespace {

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Timed {
  std::unique_ptr<Executable> exe;
  std::vector<double> stepMillis;
};

void runStep(Timed &t, const TensorMap &inputs) {
  auto start = std::chrono::steady_clock::now();
  t.exe->step(inputs);
  auto end = std::chrono::steady_clock::now();
  t.stepMillis.push_back(std::chrono::duration<double, std::milli>(end - start).count());
}

// Median time and work of each kernel over the measured steps.
void printKernels(const Executable &exe, int64_t firstStep, double peakGflops) {
  std::map<std::string, std::vector<double>> times;
  for (const KernelTiming &t : exe.profile())
    if (t.step >= firstStep)
      times[t.kernel].push_back(t.durationMicros);
  struct Row {
    std::string name;
    double micros, flops;
  };
  std::vector<Row> rows;
  double total = 0, matrixMicros = 0, matrixFlops = 0;
  for (const KernelSpec &k : exe.spec().kernels) {
    double m = median(times[k.name]);
    rows.push_back({k.name, m, k.flops});
    total += m;
    if (k.flops > 0) {
      matrixMicros += m;
      matrixFlops += k.flops;
    }
  }
  std::sort(rows.begin(), rows.end(), [](const Row &a, const Row &b) { return a.micros > b.micros; });
  fmt::print("  {:<44} {:>10} {:>7} {:>10}\n", "kernel", "median us", "share", "GFLOP/s");
  for (const Row &r : rows)
    fmt::print("  {:<44} {:>10.1f} {:>6.1f}% {:>10}\n", r.name.substr(0, 44), r.micros,
               total > 0 ? 100 * r.micros / total : 0,
               r.flops > 0 ? fmt::format("{:.1f}", r.flops / r.micros / 1e3) : "");
  if (matrixMicros > 0) {
    double gflops = matrixFlops / matrixMicros / 1e3;
    fmt::print("  matmul/conv kernels: {:.1f} GFLOP/s over {:.2f} GFLOP, {:.0f}% of the {:.0f} "
               "GFLOP/s fp32 FMA peak\n",
               gflops, matrixFlops / 1e9, 100 * gflops / peakGflops, peakGflops);
  }
}

// Each distinct matmul shape of the graph compiled alone and timed: kernel
// times of fused builds include their epilogues (an optimizer update can
// cost more than the product), so this is the figure for the products.
void printMatmuls(const Graph &graph, const BenchOptions &options) {
  std::map<std::string, std::array<int64_t, 4>> shapes; // batch, m, k, n
  for (const Node &n : graph.nodes) {
    if (n.op != OpKind::MatMul || n.type.dtype != DType::F32)
      continue;
    const Shape &a = graph.type(n.operands[0]).shape;
    int64_t batch = n.type.numel() / (n.type.shape[n.type.rank() - 2] * n.type.shape.back());
    int64_t m = a[a.size() - 2], k = a.back(), cols = n.type.shape.back();
    shapes[fmt::format("{}x{}x{}{}", m, k, cols, batch > 1 ? fmt::format(" (batch {})", batch) : "")] =
        {batch, m, k, cols};
  }
  if (shapes.empty())
    return;
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
      auto start = std::chrono::steady_clock::now();
      exe->step(in);
      double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
      if (i >= options.warmup)
        micros.push_back(us);
    }
    double us = median(micros);
    double flops = 2.0 * double(s[0] * s[1]) * double(s[2]) * double(s[3]);
    totalFlops += flops;
    totalMicros += us;
    fmt::print("  {:<28} {:>9.1f} us {:>8.1f} GFLOP/s {:>5.0f}% of peak\n", label, us,
               flops / us / 1e3, 100 * flops / us / 1e3 / options.peakGflops);
  }
  fmt::print("  all matmul shapes: {:.1f} GFLOP/s ({:.0f}% of the {:.0f} GFLOP/s peak)\n",
             totalFlops / totalMicros / 1e3, 100 * totalFlops / totalMicros / 1e3 / options.peakGflops,
             options.peakGflops);
}

} // namespace

int bench(const BenchOptions &options) {
  Graph graph = parseGraphFile(options.file);
  if (!options.optimizer.empty()) {
    Optimizer opt;
    opt.kind = parseOptimizerKind(options.optimizer);
    opt.lr = 1e-3;
    graph = stepc::trainStep(graph, options.loss, opt);
  }
  TensorMap inputs = randomInputs(graph, options.seed);

  RunOptions run;
  run.profile = options.perKernel;
  run.threads = options.threads;
  auto compileStart = std::chrono::steady_clock::now();
  Timed fused{compileJit(graph, {.fusion = true}, run), {}};
  double compileSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - compileStart).count();
  Timed unfused;
  if (options.compareUnfused)
    unfused.exe = compileJit(graph, {.fusion = false}, run);

  for (int i = 0; i < options.warmup; ++i) {
    fused.exe->step(inputs);
    if (unfused.exe)
      unfused.exe->step(inputs);
  }
  int64_t firstFused = fused.exe->stepsTaken();
  int64_t firstUnfused = unfused.exe ? unfused.exe->stepsTaken() : 0;
  for (int i = 0; i < options.steps; ++i) {
    runStep(fused, inputs);
    if (unfused.exe)
      runStep(unfused, inputs);
  }

  fmt::print("{}{}: {} kernels, compiled in {:.2f} s, {} threads\n", graph.name,
             options.optimizer.empty() ? "" : " (training step, " + options.optimizer + ")",
             fused.exe->spec().kernels.size(), compileSeconds,
             options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency()));
  double fusedMedian = median(fused.stepMillis);
  fmt::print("fused:   median step {:.3f} ms over {} steps\n", fusedMedian, options.steps);
  if (unfused.exe) {
    double unfusedMedian = median(unfused.stepMillis);
    fmt::print("unfused: median step {:.3f} ms over {} steps ({} kernels)\n", unfusedMedian,
               options.steps, unfused.exe->spec().kernels.size());
    fmt::print("speedup fused/unfused: {:.2f}x\n", unfusedMedian / fusedMedian);
  }
  if (options.perKernel) {
    fmt::print("per kernel, fused:\n");
    printKernels(*fused.exe, firstFused, options.peakGflops);
    if (unfused.exe && options.verbose) {
      fmt::print("per kernel, unfused:\n");
      printKernels(*unfused.exe, firstUnfused, options.peakGflops);
    }
    printMatmuls(graph, options);
  }
  return 0;
}

} // namespace stepc::cli
