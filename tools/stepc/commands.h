// The stepc subcommands; main.cpp parses flags and calls one of these.
#pragma once

#include "stepc/interpreter.h"

#include <optional>
#include <string>
#include <vector>

namespace stepc::cli {

// `stepc check FILE.sg`
int check(const std::string &file);

struct RunOptions {
  std::string file;
  std::string backend = "interp";
  uint64_t seed = 0;
  std::vector<std::string> inputs; // NAME=FILE.npy
  std::string saveOutputs;         // directory, optional
};
// `stepc run FILE.sg ...`
int run(const RunOptions &options);

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
};
// `stepc train-step FILE.sg --loss NAME --optimizer adam --lr 1e-3 -o step.sg`
int trainStep(const TrainStepOptions &options);

struct GradcheckCliOptions {
  bool allOps = false;
  std::string file, loss;
  uint64_t seed = 0;
  int64_t samples = 8;
};
// `stepc gradcheck --all-ops` or `stepc gradcheck FILE.sg --loss NAME`
int gradcheck(const GradcheckCliOptions &options);

// `stepc demo`: trains the small examples on the reference interpreter.
int demo();

} // namespace stepc::cli
