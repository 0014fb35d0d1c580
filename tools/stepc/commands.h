// The stepc subcommands; main.cpp parses flags and calls one of these.
#pragma once

#include "stepc/backend.h"
#include "stepc/interpreter.h"
#include "stepc/passes.h"
#include "stepc/onnx.h"
#include "stepc/train.h"

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace stepc::cli {

// `stepc check FILE.sg`
int check(const std::string &file);

// Each command's options name the backends it runs on (kBackends): its
// --backend help (main.cpp) and its findBackend check both read them.

struct RunCommandOptions {
  static constexpr BackendKind kBackends[] = {BackendKind::Interp, BackendKind::Cpu,
                                              BackendKind::Cuda};
  std::string file;
  std::string backend = "interp";
  std::string gpuArch = "sm_90";   // --backend cuda
  uint64_t seed = 0;
  std::vector<std::string> inputs; // NAME=FILE.npy
  std::string saveOutputs;         // directory, optional
  std::string params;              // safetensors file or folder of NAME.npy, optional
  bool checkNumerics = false;      // stop at the first kernel producing NaN/Inf
  int threads = 0;                 // --backend cpu: threads per kernel, 0: all cores
  std::string trace;               // Chrome trace JSON of the kernels, optional
  std::string memoryBudget;        // --memory-budget BYTES|N%, compiled backends
};
// `stepc run FILE.sg ...`
int run(const RunCommandOptions &options);

// --memory-budget's text as a budget; empty: none. Throws stepc::Error.
inline MemoryBudget memoryBudgetOption(const std::string &text) {
  return text.empty() ? MemoryBudget{} : parseMemoryBudget(text);
}

// `stepc print FILE.sg`: the canonical text of a graph.
int print(const std::string &file);

// Values summarized for a terminal: shape, dtype, a few values, min/mean/max.
std::string summarize(const std::string &name, const Tensor &tensor);

} // namespace stepc::cli

namespace stepc::cli {

struct GradOptions {
  std::string file, loss, output;
  std::vector<std::string> wrt;
};
// `stepc grad FILE.sg --loss NAME [--wrt a,b] [-o OUT.sg]`
int grad(const GradOptions &options);

struct TrainStepOptions {
  std::string file, loss, output;
  std::string optimizer = "sgd";
  std::optional<double> lr;
  double weightDecay = 0, clipNorm = 0, momentum = 0.9;
  std::string schedule = "constant";
  int64_t stepSize = 1, totalSteps = 1;
  double gamma = 0.1, minLr = 0;
  bool dataParallel = false; // average gradients over the job's ranks
  double bucketMb = 2;
  // "bf16" or "f16": mixed-precision training (MixedPrecision); empty: off.
  std::string mixedPrecision;
  std::optional<double> lossScale;      // f16: the initial loss scale
  std::optional<int64_t> growthInterval; // f16: good steps before the scale doubles
};
// `stepc train-step FILE.sg --loss NAME --optimizer adam --lr 1e-3 -o step.sg`
int trainStep(const TrainStepOptions &options);
// The optimizer, schedule and learning rate the options describe.
Optimizer optimizerFrom(const TrainStepOptions &options);
// --mixed-precision and its loss-scale flags; throws naming the flag.
MixedPrecision mixedPrecisionFrom(const TrainStepOptions &options);

struct TrainCliOptions {
  // file, the loss, the optimizer and its schedule; `loss` may also be
  // "cross_entropy:OUT:LABELS" or "mse:OUT:TARGET" to add a loss output.
  TrainStepOptions step;
  std::vector<std::string> data, evalData; // NAME=FILE.npy
  int64_t batch = 0; // 0: the graph's batch
  int epochs = 1;
  std::string checkpoint, resume, params;
  static constexpr BackendKind kBackends[] = {BackendKind::Cpu, BackendKind::Cuda};
  std::string backend = "cpu";
  std::string gpuArch = "sm_90";
  uint64_t seed = 0;
  std::string memoryBudget; // --memory-budget BYTES|N% for the compiled step
};
// `stepc train FILE.sg --loss NAME --data NAME=FILE.npy ... --batch N --epochs E`
// (tools/stepc/train.cpp)
int train(const TrainCliOptions &options);

struct GradcheckCliOptions {
  bool allOps = false;
  std::string file, loss;
  uint64_t seed = 0;
  int64_t samples = 8;
};
// `stepc gradcheck --all-ops` or `stepc gradcheck FILE.sg --loss NAME`
int gradcheck(const GradcheckCliOptions &options);

// `stepc demo small`: trains XOR and poly_sin on the reference interpreter
// (EXAMPLES: the folder of the .sg files).
int demo(const std::string &examples);
// The demos' examples folder: GIVEN (--examples) when not empty, else the
// first that exists of BINARY/../share/stepc/examples (an installed stepc)
// and the source tree's examples/ (a build tree), so that `stepc demo` works
// from any directory. Throws stepc::Error naming the places it looked.
std::string findExamples(const std::string &given);

struct DemoOptions {
  // examples/<model>.sg; empty: mlp (Fashion-MNIST), makemore (demo makemore),
  // gpt (demo gpt).
  std::string model;
  std::string examples; // where the .sg files are; empty: findExamples()
  int epochs = 1;
  int64_t steps = 0; // > 0: stop training after this many steps (quick runs)
  std::optional<double> lr; // default: the model's (1e-3 on Fashion-MNIST)
  uint64_t seed = 1;
  // Default: <data set>_<model>.safetensors in the current directory;
  // empty: save nothing.
  std::optional<std::string> checkpoint;
  double targetAccuracy = 83.5; // Fashion-MNIST: exit 1 below it
  // Under mpirun: each rank trains on its slice of every global batch,
  // gradients averaged over MPI (docs/distributed.md).
  bool dataParallel = false;
  double bucketMb = 2;
  // Fashion-MNIST: "bf16" or "f16" trains in mixed precision (MixedPrecision).
  std::string mixedPrecision;
};
// `stepc demo [--model mlp|cnn]`: trains on Fashion-MNIST, compiled.
int fashionDemo(const DemoOptions &options);
// `stepc demo makemore [--model bigram|makemore]`: character-level language
// models on Debian's wamerican words, compiled; prints samples.
int makemoreDemo(const DemoOptions &options);
// `stepc demo gpt`: a character-level GPT on Debian's fortunes, compiled,
// trained with AdamW; held-out loss beside the unigram baseline, samples.
// Its epochs are shares of the run (gpt_demo.cpp): kGptDemoEpochs unless
// --epochs is given.
int gptDemo(const DemoOptions &options);
constexpr int kGptDemoEpochs = 5;

struct OptOptions {
  std::string file, output;
  // The passes to run in order; without --passes, defaultPipeline().
  std::vector<std::string> passes;
  bool passesGiven = false;
  bool printAfterAll = false, stats = false;
  // Fusion (compiler/passes/fusion.cpp), planned on the optimized graph:
  // --fusion-report and --why-not-fused print instead of the graph; --dot and
  // --svg write files; --no-fusion plans one kernel per op.
  bool fusionReport = false, noFusion = false, whyNotFused = false;
  std::string dot, svg;
  // --memory-budget BYTES|N%: rematerialization after the passes.
  std::string memoryBudget;
};
// `stepc opt FILE.sg [--passes a,b,c] [--print-after-all] [--stats] [-o OUT.sg]
//   [--fusion-report] [--why-not-fused] [--no-fusion] [--dot OUT.dot] [--svg OUT.svg]`
int opt(const OptOptions &options);

// --- ONNX (onnx_commands.cpp) ---

// A .sg file (params from their initializers) or an .onnx file (imported
// weights); `inputValues` are offered to an ONNX model that needs input
// values at import, and the inputs it took become constants (`bound`).
struct LoadedModel {
  Graph graph;
  TensorMap params;
  std::set<std::string> bound;
};
LoadedModel loadModel(const std::string &file, const TensorMap &inputValues = {});

// Replaces the graph's params with those in `path`: a safetensors file (a
// model's, or a training checkpoint whose optimizer state is ignored) or a
// folder of NAME.npy files. A missing or mistyped param is an error naming it.
void loadParamsInto(const std::string &path, const Graph &graph, TensorMap &params);
// The params `stepc run|train|bench|compile MODEL.sg` use: from --params
// when given, else from MODEL.safetensors beside MODEL.sg when there is one
// (said on stderr: what import-onnx writes), else the graph's initializers.
void loadModelParams(const std::string &modelFile, const std::string &paramsOption,
                     const Graph &graph, TensorMap &params);

struct ImportOnnxOptions {
  std::string file, output;
  std::vector<std::string> inputs; // NAME=FILE.npy for inputs needed at import
};
// `stepc import-onnx MODEL.onnx -o MODEL.sg`: also writes the weights to
// MODEL.safetensors, where the commands that take MODEL.sg find them.
int importOnnx(const ImportOnnxOptions &options);

struct ConformanceCliOptions {
  static constexpr BackendKind kBackends[] = {BackendKind::Interp, BackendKind::Cpu,
                                              BackendKind::Cuda};
  std::string dir, backend = "interp", expectedFailures;
  bool verbose = false;
};
// `stepc onnx-conformance DIR [--backend interp|cpu|cuda] [--expected-failures FILE]`
int onnxConformance(const ConformanceCliOptions &options);

} // namespace stepc::cli

namespace stepc::cli {

struct BenchOptions {
  std::string file, loss = "loss"; // file may be empty with gelu > 0
  std::string optimizer; // non-empty: bench the training step with it
  static constexpr BackendKind kBackends[] = {BackendKind::Cpu};
  std::string backend = "cpu";
  std::string json;            // non-empty: write the figures here too
  std::string params;          // see loadModelParams
  uint64_t seed = 0;
  int steps = 50, warmup = 5, threads = 0; // medians over `steps` after `warmup`
  // perKernel: the fused-vs-unfused A/B per fusion group (implies
  // compareUnfused); verbose also lists each group's unfused kernels.
  bool perKernel = false, compareUnfused = false, verbose = false;
  // Instead of timing: the step at several thread counts, compared bit for
  // bit (checkDeterminism in bench.h).
  bool checkDeterminism = false;
  double peakGflops = 0; // fp32 FMA peak for percentages; 0: measured now
  int64_t gelu = 0;      // > 0: also the tanh GELU over this many floats
  std::string memoryBudget; // --memory-budget BYTES|N% for the compiled graph
  std::string mixedPrecision; // with a training step: "bf16" or "f16"
  std::string injectFault;    // with perKernel: KernelComparisonOptions::injectFault
};
// `stepc bench FILE.sg [--train-step adam] [--compare-unfused] [--per-kernel]
//   [--json OUT.json] [--gelu [N]] [--threads N] [--check-determinism]`
//   (tools/stepc/bench/bench*.cpp)
int bench(const BenchOptions &options);

struct BisectOptions {
  std::string file, loss = "loss", optimizer, params;
  std::string metric;          // "diff" or "time"
  static constexpr BackendKind kBackends[] = {BackendKind::Cpu};
  std::string backend = "cpu";
  double tolerance = 1e-4;     // diff: see bisectFusion
  std::optional<int> steps;    // diff: steps compared (1); time: timed steps (20)
  uint64_t seed = 0;
  int threads = 0;
  std::string injectFault;     // KERNEL=AMOUNT: CompileOptions::perturbKernel
};
// `stepc bisect-fusion FILE.sg [--train-step OPT] --metric diff|time
//   [--tolerance T] [--steps N] [--inject-fault KERNEL=AMOUNT]` (bench/bisect.cpp)
int bisectFusion(const BisectOptions &options);

} // namespace stepc::cli

namespace stepc::cli {

// --- Ahead of time (compile_commands.cpp) ---

struct CompileCliOptions {
  static constexpr BackendKind kTargets[] = {BackendKind::Cpu, BackendKind::Cuda};
  std::string file, output, target = "cpu", dump, kernel, name;
  std::string gpuArch = "sm_90"; // --target cuda
  std::string params;            // see loadModelParams
  bool noFusion = false;
  std::string memoryBudget; // --memory-budget BYTES|N%
};
// `stepc compile FILE.sg --target cpu|cuda -o DIR [--no-fusion] [--name NAME]
//   [--gpu-arch sm_90]`
// `stepc compile FILE.sg --dump mlir|llvm-dialect|llvm|llvm-opt [--kernel NAME]`
// `stepc compile FILE.sg --target cuda --dump mlir|nvvm|ptx [--kernel NAME]`
int compile(const CompileCliOptions &options);

} // namespace stepc::cli
