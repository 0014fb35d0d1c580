// The stepc command-line tool.
#include "commands.h"

#include "stepc/error.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <exception>
#include <regex>

namespace {

std::string commandNames(const CLI::App &app) {
  std::string names;
  for (const CLI::App *sub : app.get_subcommands([](const CLI::App *) { return true; }))
    names += (names.empty() ? "" : ", ") + sub->get_name();
  return names;
}

// CLI11 says "Could not convert: --seed = abc"; say what was expected.
std::string conversionMessage(const CLI::App &command, const std::string &message) {
  static const std::regex pattern("Could not convert: (\\S+) = (.*)");
  std::smatch match;
  if (!std::regex_match(message, match, pattern))
    return message;
  std::string name = match[1], expected = "a number";
  if (const CLI::Option *option = command.get_option_no_throw(name)) {
    if (option->get_type_name() == "UINT")
      expected = "a non-negative integer";
    else if (option->get_type_name() == "INT")
      expected = "an integer";
  }
  return fmt::format("{}: expected {}, got '{}'", name, expected, std::string(match[2]));
}

// CLI11's "file is required" and "The following argument was not expected:
// --bogus", in the words of the rest of stepc.
std::string usageMessage(const std::string &message) {
  static const std::regex required("(\\S+) is required");
  static const std::regex extra("The following arguments? (?:was|were) not expected: (\\S+).*");
  std::smatch match;
  if (std::regex_match(message, match, required)) {
    std::string name = match[1];
    return name[0] == '-' ? fmt::format("missing option {}", name)
                          : fmt::format("missing the {} argument", name);
  }
  if (std::regex_match(message, match, extra)) {
    std::string word = match[1];
    return word[0] == '-' ? fmt::format("unknown option '{}'", word)
                          : fmt::format("unexpected argument '{}'", word);
  }
  return message;
}

// Parses the command line; returns the exit status when stepc should stop
// (help: 0, a mistake: 1 with a message), -1 to go on.
int parseCommandLine(CLI::App &app, int argc, char **argv) {
  std::string first = argc > 1 ? argv[1] : "";
  if (first.size() > 1 && first[0] == '-' && first != "-h" && first != "--help") {
    fmt::print(stderr, "stepc: unknown option '{}'; a command comes first: {}\n", first,
               commandNames(app));
    return 1;
  }
  if (first.empty() || first[0] != '-') {
    auto named = app.get_subcommands([&](const CLI::App *sub) { return sub->check_name(first); });
    if (named.empty()) {
      fmt::print(stderr, "stepc: {}; the commands are: {}\nRun 'stepc --help' for more.\n",
                 first.empty() ? std::string("no command given")
                               : fmt::format("unknown command '{}'", first),
                 commandNames(app));
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
      return app.exit(e); // --help
    std::vector<CLI::App *> parsed = app.get_subcommands();
    const CLI::App &command = parsed.empty() ? app : *parsed.back();
    std::string prefix = parsed.empty() ? "stepc" : "stepc " + command.get_name();
    std::string message = e.what();
    message = dynamic_cast<const CLI::ConversionError *>(&e)
                  ? conversionMessage(command, message)
                  : usageMessage(message);
    fmt::print(stderr, "{}: {}\nRun '{} --help' for the options.\n", prefix, message, prefix);
    return 1;
  }
}

// The optimizer, schedule and data-parallel flags `train-step` and `train` share.
void addOptimizerOptions(CLI::App *command, stepc::cli::TrainStepOptions &options) {
  command
      ->add_option("--optimizer", options.optimizer,
                   fmt::format("{}", fmt::join(stepc::optimizerNames(), ", ")))
      ->capture_default_str();
  command->add_option("--lr", options.lr,
                      "base learning rate (train: default 1e-3; train-step: default an input 'lr' "
                      "of the step graph)");
  command->add_option("--weight-decay", options.weightDecay)->capture_default_str();
  command->add_flag("--data-parallel", options.dataParallel,
                    "average the gradients over the job's ranks (all_reduce mean, in buckets)");
  command
      ->add_option("--bucket-mb", options.bucketMb,
                   "with --data-parallel: gradient bucket size in MB")
      ->capture_default_str();
  command->add_option("--momentum", options.momentum)->capture_default_str();
  command->add_option("--clip-norm", options.clipNorm, "0: no clipping")->capture_default_str();
  command->add_option("--mixed-precision", options.mixedPrecision,
                      "bf16 or f16: compute in half with f32 master weights and optimizer "
                      "state (f16 adds dynamic loss scaling)");
  command->add_option("--loss-scale", options.lossScale,
                      "with --mixed-precision f16: the initial loss scale (default 65536)");
  command->add_option("--growth-interval", options.growthInterval,
                      "with --mixed-precision f16: steps without overflow before the loss "
                      "scale doubles (default 2000)");
  command
      ->add_option("--schedule", options.schedule,
                   fmt::format("{}", fmt::join(stepc::scheduleNames(), ", ")))
      ->capture_default_str();
  command->add_option("--step-size", options.stepSize)->capture_default_str();
  command->add_option("--gamma", options.gamma)->capture_default_str();
  command->add_option("--total-steps", options.totalSteps, "cosine T_max")->capture_default_str();
  command->add_option("--min-lr", options.minLr, "cosine eta_min")->capture_default_str();
}

// --memory-budget, for every command that compiles a graph.
void addMemoryBudgetOption(CLI::App *command, std::string &budget) {
  command->add_option("--memory-budget", budget,
                      "bound the planned peak: BYTES (64MB, 1.5GiB) or N% of the unbudgeted "
                      "peak; activations are recomputed (rematerialization) to fit");
}

// --backend, offering the command's backends (its options' kBackends), and
// --gpu-arch for commands whose options name the GPU's chip.
template <class Options> void addBackendOptions(CLI::App *command, Options &options) {
  command->add_option("--backend", options.backend, stepc::backendChoices(options.kBackends))
      ->capture_default_str();
  if constexpr (requires { options.gpuArch; })
    command->add_option("--gpu-arch", options.gpuArch, "with --backend cuda: the GPU's chip")
        ->capture_default_str();
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"stepc: a static-graph compiler for machine-learning models"};
  app.require_subcommand(1);

  std::string file;
  auto *check = app.add_subcommand("check", "Verify a .sg graph and summarize it");
  check->add_option("file", file, "graph file (.sg)")->required();

  auto *print = app.add_subcommand("print", "Print a .sg graph in canonical form");
  print->add_option("file", file, "graph file (.sg)")->required();

  stepc::cli::RunCommandOptions runOptions;
  auto *run = app.add_subcommand("run", "Run a graph once and summarize its outputs");
  run->add_option("file", runOptions.file, "graph file (.sg) or ONNX model (.onnx)")->required();
  addBackendOptions(run, runOptions);
  run->add_option("--seed", runOptions.seed, "seed for random inputs")->capture_default_str();
  run->add_option("--input", runOptions.inputs, "NAME=FILE.npy (repeatable)");
  run->add_flag("--check-numerics", runOptions.checkNumerics,
               "after each kernel, stop at the first NaN/Inf and name its ops");
  run->add_option("--threads", runOptions.threads,
                  "with --backend cpu: threads that split each kernel (0: all cores); the "
                  "results are the same bits at any count")
      ->capture_default_str();
  run->add_option("--trace", runOptions.trace, "write a Chrome trace (JSON) of the kernels");
  run->add_option("--params", runOptions.params,
                  "params from a safetensors file (e.g. a checkpoint) or a folder of NAME.npy "
                  "(default: MODEL.safetensors beside MODEL.sg when present)");
  run->add_option("--save-outputs", runOptions.saveOutputs,
                  "write each output to DIR/NAME.npy");
  addMemoryBudgetOption(run, runOptions.memoryBudget);

  stepc::cli::GradOptions gradOptions;
  auto *grad = app.add_subcommand("grad", "Print the gradient graph of a loss");
  grad->add_option("file", gradOptions.file, "graph file (.sg)")->required();
  grad->add_option("--loss", gradOptions.loss, "name of the scalar loss output")->required();
  grad->add_option("--wrt", gradOptions.wrt, "values to differentiate for (default: params)")
      ->delimiter(',');
  grad->add_option("-o,--output", gradOptions.output, "write the graph here");

  stepc::cli::TrainStepOptions stepOptions;
  auto *trainStep = app.add_subcommand("train-step", "Build a training-step graph");
  trainStep->add_option("file", stepOptions.file, "graph file (.sg)")->required();
  trainStep->add_option("--loss", stepOptions.loss, "name of the scalar loss output")
      ->required();
  addOptimizerOptions(trainStep, stepOptions);
  trainStep->add_option("-o,--output", stepOptions.output, "write the graph here");

  stepc::cli::TrainCliOptions trainOptions;
  trainOptions.step.optimizer = "adam";
  trainOptions.step.loss.clear();
  auto *train = app.add_subcommand(
      "train", "Train a .sg model (or an imported ONNX model) on .npy arrays, compiled");
  train->add_option("file", trainOptions.step.file, "graph file (.sg) or ONNX model (.onnx)")
      ->required();
  train->add_option("--loss", trainOptions.step.loss,
                    "the scalar output to minimize, or cross_entropy:OUT:LABELS / "
                    "mse:OUT:TARGET to add one")
      ->required();
  train->add_option("--data", trainOptions.data, "NAME=FILE.npy for each input (repeatable)");
  train->add_option("--eval-data", trainOptions.evalData,
                    "NAME=FILE.npy: evaluated after each epoch (repeatable)");
  train->add_option("--batch", trainOptions.batch, "rows per step (default: the graph's batch)");
  train->add_option("--epochs", trainOptions.epochs)->capture_default_str();
  train->add_option("--checkpoint", trainOptions.checkpoint,
                    "save params, optimizer state and step here after each epoch (atomically)");
  train->add_option("--resume", trainOptions.resume, "continue from a --checkpoint file");
  train->add_option("--params", trainOptions.params,
                    "initial params: a safetensors file or a folder of NAME.npy (default: "
                    "MODEL.safetensors beside MODEL.sg when present)");
  addBackendOptions(train, trainOptions);
  train->add_option("--seed", trainOptions.seed, "shuffles each epoch by (seed, epoch)")
      ->capture_default_str();
  addOptimizerOptions(train, trainOptions.step);
  addMemoryBudgetOption(train, trainOptions.memoryBudget);

  stepc::cli::GradcheckCliOptions checkOptions;
  auto *gradcheck = app.add_subcommand(
      "gradcheck", "Check gradients against finite differences in f64");
  gradcheck->add_flag("--all-ops", checkOptions.allOps, "check every op and composite");
  gradcheck->add_option("file", checkOptions.file, "graph file (.sg)");
  gradcheck->add_option("--loss", checkOptions.loss, "name of the scalar loss output");
  gradcheck->add_option("--seed", checkOptions.seed, "seed for inputs")->capture_default_str();
  gradcheck->add_option("--samples", checkOptions.samples,
                        "elements checked per tensor of a whole model")
      ->capture_default_str();

  stepc::cli::DemoOptions demoOptions;
  auto *demo = app.add_subcommand(
      "demo",
      "Train examples/<model>.sg on Fashion-MNIST, compiled (or `demo makemore`, `demo gpt`, "
      "`demo small`)");
  std::string demoWhich;
  demo->add_option("which", demoWhich,
                   "'makemore': character-level language models on English words; "
                   "'gpt': a character-level transformer on fortunes; "
                   "'small': XOR and poly_sin on the interpreter");
  demo->add_option("--model", demoOptions.model,
                   "mlp (default) or cnn; with makemore: makemore (default) or bigram; "
                   "with gpt: gpt (default)");
  auto *demoEpochs =
      demo->add_option("--epochs", demoOptions.epochs,
                       "Fashion-MNIST epochs (gpt: held-out evaluations, default 5)")
          ->capture_default_str();
  demo->add_option("--steps", demoOptions.steps, "stop training after N steps (0: all)")
      ->capture_default_str();
  demo->add_option("--lr", demoOptions.lr, "Adam's learning rate (default: the model's)");
  demo->add_option("--seed", demoOptions.seed)->capture_default_str();
  demo->add_option("--examples", demoOptions.examples,
                   "folder with the .sg files (default: the installed share/stepc/examples, "
                   "or the source tree's examples/)");
  demo->add_option("--checkpoint", demoOptions.checkpoint,
                   "where to save the trained model (default: DATA_MODEL.safetensors here; "
                   "'': nowhere)");
  demo->add_option("--target-accuracy", demoOptions.targetAccuracy,
                   "Fashion-MNIST: exit 1 below this test accuracy (%)")
      ->capture_default_str();
  demo->add_flag("--data-parallel", demoOptions.dataParallel,
                 "Fashion-MNIST under `mpirun -np N`: split each batch across the ranks and "
                 "average the gradients over MPI");
  demo->add_option("--mixed-precision", demoOptions.mixedPrecision,
                   "Fashion-MNIST: bf16 or f16, half compute with f32 master weights");
  demo->add_option("--bucket-mb", demoOptions.bucketMb,
                   "with --data-parallel: gradient bucket size in MB")
      ->capture_default_str();

  stepc::cli::OptOptions optOptions;
  auto *opt = app.add_subcommand("opt", "Run graph passes and print the optimized graph");
  opt->add_option("file", optOptions.file, "graph file (.sg)")->required();
  auto *passesOption =
      opt->add_option("--passes", optOptions.passes,
                      "passes to run in order: dce, cse, fold, simplify "
                      "(default: the inference or training-step pipeline)")
          ->delimiter(',');
  opt->add_flag("--print-after-all", optOptions.printAfterAll,
                "print the graph after each pass (to stderr)");
  opt->add_flag("--stats", optOptions.stats,
                "per pass: nodes before/after and time taken (to stderr)");
  opt->add_option("-o,--output", optOptions.output, "write the graph here");
  // Fusion flags: they apply to the graph after the passes ran.
  opt->add_flag("--fusion-report", optOptions.fusionReport,
                "print one row per kernel and the totals instead of the graph");
  opt->add_flag("--no-fusion", optOptions.noFusion,
                "one kernel per op, for comparing with the fused plan");
  opt->add_flag("--why-not-fused", optOptions.whyNotFused,
                "list each fusion the rules refused, with the rule");
  opt->add_option("--dot", optOptions.dot, "write the kernels as a Graphviz graph here");
  opt->add_option("--svg", optOptions.svg, "render the kernels to SVG here (needs Graphviz)");
  addMemoryBudgetOption(opt, optOptions.memoryBudget);

  stepc::cli::ImportOnnxOptions importOptions;
  auto *importOnnx = app.add_subcommand(
      "import-onnx", "Convert an ONNX model to a .sg graph; weights go to OUT.safetensors");
  importOnnx->add_option("model", importOptions.file, "ONNX model (.onnx)")->required();
  importOnnx->add_option("-o,--output", importOptions.output, "write the graph here");
  importOnnx->add_option("--input", importOptions.inputs,
                         "NAME=FILE.npy: an input the model needs at import (repeatable)");

  stepc::cli::ConformanceCliOptions conformanceOptions;
  auto *conformance = app.add_subcommand(
      "onnx-conformance", "Run the ONNX backend test data (dirs holding model.onnx)");
  conformance->add_option("dir", conformanceOptions.dir, "test data directory")->required();
  addBackendOptions(conformance, conformanceOptions);
  conformance->add_option("--expected-failures", conformanceOptions.expectedFailures,
                          "file of 'TEST REASON' lines counted as xfail");
  conformance->add_flag("-v,--verbose", conformanceOptions.verbose, "one line per test");

  stepc::cli::BenchOptions benchOptions;
  auto *bench = app.add_subcommand(
      "bench", "Time compiled steps (medians): compile, cache hit, fused vs unfused, per kernel");
  bench->add_option("file", benchOptions.file, "graph file (.sg); optional with --gelu");
  bench->add_option("--train-step", benchOptions.optimizer,
                    "bench the training step with this optimizer (e.g. adam)");
  bool benchTrain = false;
  bench->add_flag("--train", benchTrain, "bench the training step (--optimizer, default adam)");
  std::string benchOptimizer;
  bench->add_option("--optimizer", benchOptimizer, "with --train: sgd, momentum, adam, ...");
  addBackendOptions(bench, benchOptions);
  bench->add_option("--loss", benchOptions.loss)->capture_default_str();
  bench->add_option("--steps", benchOptions.steps)->capture_default_str();
  bench->add_option("--warmup", benchOptions.warmup)->capture_default_str();
  bench->add_option("--threads", benchOptions.threads, "0: all cores")->capture_default_str();
  bench->add_option("--seed", benchOptions.seed)->capture_default_str();
  bench->add_flag("--per-kernel", benchOptions.perKernel,
                  "per kernel: GFLOP/s, and each fused kernel against its ops run unfused "
                  "(time, bytes, largest output difference)");
  bench->add_flag("--compare-unfused,--compare-fusion", benchOptions.compareUnfused,
                  "also run one op per kernel, alternating steps");
  bench->add_flag("--check-determinism", benchOptions.checkDeterminism,
                  "instead of timing: run --steps steps at 1, 2 and all cores' threads (twice "
                  "at the most), print a hash of the outputs and updated params per run; exit "
                  "1 if any differ");
  bench->add_option("--inject-fault", benchOptions.injectFault,
                    "KERNEL=AMOUNT: with --per-kernel, fused kernel KERNEL (name or kN) adds "
                    "AMOUNT to every other element it writes in the compared step, for testing");
  bench->add_flag("--verbose", benchOptions.verbose,
                  "with --per-kernel: list each fused kernel's unfused kernels");
  bench->add_option("--params", benchOptions.params,
                    "a safetensors file or a folder of NAME.npy (default: MODEL.safetensors "
                    "beside MODEL.sg when present)");
  bench->add_option("--json", benchOptions.json, "also write the figures to this JSON file");
  bench->add_option("--mixed-precision", benchOptions.mixedPrecision,
                    "with --train: bf16 or f16 training step (f32 master weights)");
  bench->add_option("--gelu", benchOptions.gelu,
                    "also time the fused tanh GELU over N floats (default 4194304) against "
                    "the copy bandwidth")
      ->expected(0, 1)
      ->default_str("4194304");
  bench->add_option("--peak-gflops", benchOptions.peakGflops,
                    "fp32 peak for the % of peak (default: measured in the run)");
  addMemoryBudgetOption(bench, benchOptions.memoryBudget);

  stepc::cli::BisectOptions bisectOptions;
  auto *bisect = app.add_subcommand(
      "bisect-fusion",
      "Find the fused kernels that make a step differ from (or run slower than) its ops unfused");
  bisect->add_option("file", bisectOptions.file, "graph file (.sg)")->required();
  bisect->add_option("--train-step", bisectOptions.optimizer,
                     "bisect the training step with this optimizer (e.g. adam)");
  bisect->add_option("--loss", bisectOptions.loss)->capture_default_str();
  bisect->add_option("--metric", bisectOptions.metric,
                     "diff: results against the unfused step; time: kernel times")
      ->required();
  bisect->add_option("--tolerance", bisectOptions.tolerance,
                     "diff: an element differs when |fused - unfused| > T * max(1, |value|)")
      ->capture_default_str();
  bisect->add_option("--steps", bisectOptions.steps,
                     "diff: steps run and compared (default 1); time: timed steps (default 20)");
  bisect->add_option("--inject-fault", bisectOptions.injectFault,
                     "KERNEL=AMOUNT: the fused kernel (kN or its name) adds AMOUNT to every other "
                     "element of its outputs (for testing)");
  addBackendOptions(bisect, bisectOptions);
  bisect->add_option("--seed", bisectOptions.seed, "seed for the inputs")->capture_default_str();
  bisect->add_option("--threads", bisectOptions.threads, "0: all cores")->capture_default_str();
  bisect->add_option("--params", bisectOptions.params,
                     "a safetensors file or a folder of NAME.npy (default: MODEL.safetensors "
                     "beside MODEL.sg when present)");

  stepc::cli::CompileCliOptions compileOptions;
  auto *compile = app.add_subcommand(
      "compile", "Compile ahead of time (object + C header + runtime glue), or dump the IR");
  compile->add_option("file", compileOptions.file, "graph file (.sg)")->required();
  compile->add_option("--target", compileOptions.target,
                      stepc::backendChoices(compileOptions.kTargets) + " (cuda: PTX)")
      ->capture_default_str();
  compile->add_option("--gpu-arch", compileOptions.gpuArch,
                      "with --target cuda: the chip (sm_90, sm_80, sm_86, sm_89, ...)")
      ->capture_default_str();
  compile->add_option("-o,--output", compileOptions.output,
                      "directory for NAME.o, NAME.h, NAME_spec.cpp, NAME.params.safetensors");
  compile->add_option("--name", compileOptions.name,
                      "the C name of the artifact (default: the graph's name)");
  compile->add_flag("--no-fusion", compileOptions.noFusion, "one kernel per op");
  compile->add_option("--params", compileOptions.params,
                      "NAME.params.safetensors from a safetensors file or a folder of NAME.npy "
                      "(default: MODEL.safetensors beside MODEL.sg when present)");
  compile->add_option("--dump", compileOptions.dump,
                      "print the IR at a stage: mlir, llvm-dialect, llvm, llvm-opt; with "
                      "--target cuda: mlir, nvvm, ptx");
  compile->add_option("--kernel", compileOptions.kernel, "with --dump: only this kernel");
  addMemoryBudgetOption(compile, compileOptions.memoryBudget);

  // CLI11's own exit codes (104-109) would break the rule that every user
  // error exits 1, so its parse errors are reported here.
  if (int status = parseCommandLine(app, argc, argv); status >= 0)
    return status;

  try {
    // An unknown --mixed-precision fails before any data is read or compiled.
    for (const std::string *precision :
         {&stepOptions.mixedPrecision, &trainOptions.step.mixedPrecision,
          &demoOptions.mixedPrecision, &benchOptions.mixedPrecision})
      if (!precision->empty())
        stepc::parseMixedPrecision(*precision, "--mixed-precision");
    if (*compile)
      return stepc::cli::compile(compileOptions);
    if (*check)
      return stepc::cli::check(file);
    if (*print)
      return stepc::cli::print(file);
    if (*run)
      return stepc::cli::run(runOptions);
    if (*grad)
      return stepc::cli::grad(gradOptions);
    if (*trainStep)
      return stepc::cli::trainStep(stepOptions);
    if (*train)
      return stepc::cli::train(trainOptions);
    if (*gradcheck)
      return stepc::cli::gradcheck(checkOptions);
    if (*demo) {
      if (!demoWhich.empty() && demoWhich != "small" && demoWhich != "makemore" &&
          demoWhich != "gpt")
        throw stepc::Error(fmt::format(
            "unknown demo '{}'; try `stepc demo`, `stepc demo makemore`, `stepc demo gpt` or "
            "`stepc demo small`",
            demoWhich));
      if (!demoWhich.empty() && !demoOptions.mixedPrecision.empty())
        throw stepc::Error(fmt::format(
            "--mixed-precision: the Fashion-MNIST demo (`stepc demo`) trains in mixed "
            "precision, not `stepc demo {}`",
            demoWhich));
      demoOptions.examples = stepc::cli::findExamples(demoOptions.examples);
      if (demoWhich == "small")
        return stepc::cli::demo(demoOptions.examples);
      if (demoWhich == "makemore")
        return stepc::cli::makemoreDemo(demoOptions);
      if (demoWhich == "gpt") {
        if (demoEpochs->count() == 0)
          demoOptions.epochs = stepc::cli::kGptDemoEpochs;
        return stepc::cli::gptDemo(demoOptions);
      }
      return stepc::cli::fashionDemo(demoOptions);
    }
    if (*bench) {
      // --train --optimizer OPT is the long spelling of --train-step OPT.
      if (!benchOptimizer.empty() && !benchOptions.optimizer.empty() &&
          benchOptimizer != benchOptions.optimizer)
        throw stepc::Error(fmt::format("bench: --train-step {} and --optimizer {} disagree",
                                       benchOptions.optimizer, benchOptimizer));
      if (!benchOptimizer.empty())
        benchOptions.optimizer = benchOptimizer;
      else if (benchTrain && benchOptions.optimizer.empty())
        benchOptions.optimizer = "adam";
      return stepc::cli::bench(benchOptions);
    }
    if (*bisect)
      return stepc::cli::bisectFusion(bisectOptions);
    if (*importOnnx)
      return stepc::cli::importOnnx(importOptions);
    if (*conformance)
      return stepc::cli::onnxConformance(conformanceOptions);
    if (*opt) {
      optOptions.passesGiven = passesOption->count() > 0;
      return stepc::cli::opt(optOptions);
    }
  } catch (const stepc::Error &e) {
    fmt::print(stderr, "{}\n", e.what());
    return 1;
  } catch (const std::bad_alloc &) {
    // Where the size is known (tensors, the arena) a stepc::Error says it;
    // anything else that runs out of memory still is not a stepc bug.
    fmt::print(stderr, "stepc: out of memory\n");
    return 1;
  } catch (const std::exception &e) {
    fmt::print(stderr, "stepc: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
