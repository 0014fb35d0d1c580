// The stepc command-line tool.
#include "commands.h"

#include "stepc/error.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <exception>

int main(int argc, char **argv) {
  CLI::App app{"stepc: a static-graph compiler for machine-learning models"};
  app.require_subcommand(1);

  std::string file;
  auto *check = app.add_subcommand("check", "Verify a .sg graph and summarize it");
  check->add_option("file", file, "graph file (.sg)")->required();

  auto *print = app.add_subcommand("print", "Print a .sg graph in canonical form");
  print->add_option("file", file, "graph file (.sg)")->required();

  stepc::cli::RunOptions runOptions;
  auto *run = app.add_subcommand("run", "Run a graph once and summarize its outputs");
  run->add_option("file", runOptions.file, "graph file (.sg)")->required();
  run->add_option("--backend", runOptions.backend, "interp")->capture_default_str();
  run->add_option("--seed", runOptions.seed, "seed for random inputs")->capture_default_str();
  run->add_option("--input", runOptions.inputs, "NAME=FILE.npy (repeatable)");
  run->add_option("--save-outputs", runOptions.saveOutputs,
                  "write each output to DIR/NAME.npy");

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
  trainStep->add_option("--optimizer", stepOptions.optimizer,
                        "sgd, momentum, nesterov, rmsprop, adam, adamw")
      ->capture_default_str();
  trainStep->add_option("--lr", stepOptions.lr,
                        "base learning rate (default: an input 'lr' of the step graph)");
  trainStep->add_option("--weight-decay", stepOptions.weightDecay)->capture_default_str();
  trainStep->add_option("--momentum", stepOptions.momentum)->capture_default_str();
  trainStep->add_option("--clip-norm", stepOptions.clipNorm, "0: no clipping")
      ->capture_default_str();
  trainStep->add_option("--schedule", stepOptions.schedule,
                        "constant, step, exponential, cosine")
      ->capture_default_str();
  trainStep->add_option("--step-size", stepOptions.stepSize)->capture_default_str();
  trainStep->add_option("--gamma", stepOptions.gamma)->capture_default_str();
  trainStep->add_option("--total-steps", stepOptions.totalSteps, "cosine T_max")
      ->capture_default_str();
  trainStep->add_option("--min-lr", stepOptions.minLr, "cosine eta_min")->capture_default_str();
  trainStep->add_option("-o,--output", stepOptions.output, "write the graph here");

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

  auto *demo = app.add_subcommand("demo", "Train the XOR and poly_sin examples");

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
  // Fusion flags: --fusion-report, --no-fusion, --why-not-fused, --dot, --svg.

  CLI11_PARSE(app, argc, argv);

  try {
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
    if (*gradcheck)
      return stepc::cli::gradcheck(checkOptions);
    if (*demo)
      return stepc::cli::demo();
    if (*opt) {
      optOptions.passesGiven = passesOption->count() > 0;
      return stepc::cli::opt(optOptions);
    }
  } catch (const stepc::Error &e) {
    fmt::print(stderr, "{}\n", e.what());
    return 1;
  } catch (const std::exception &e) {
    fmt::print(stderr, "stepc: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
