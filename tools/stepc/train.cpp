// `stepc train`: trains a user's .sg model (or an imported ONNX model) on
// .npy arrays with a compiled backend: shuffled batches, a progress line,
// evaluation each epoch, an atomic checkpoint each epoch and resuming from one.
#include "commands.h"
#include "datasets.h"
#include "training.h"

#include "stepc/builder.h"
#include "stepc/communicator.h"
#include "stepc/backend.h"
#include "stepc/npy.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

namespace stepc::cli {
namespace {

// Arrays by input name, read from NAME=FILE.npy bindings; `binding` keeps
// how each was given, for messages.
struct DataSet {
  std::map<std::string, Tensor> arrays;
  std::map<std::string, std::string> binding;
  int64_t rows = 0;
};

DataSet readDataSet(const std::vector<std::string> &bindings, const std::string &flag) {
  DataSet set;
  for (const std::string &binding : bindings) {
    size_t eq = binding.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == binding.size())
      throw Error(fmt::format("{} '{}': expected NAME=FILE.npy", flag, binding));
    std::string name = binding.substr(0, eq);
    if (set.arrays.count(name))
      throw Error(fmt::format("{} {}: input '{}' is given twice (first as {} {})", flag, binding,
                              name, flag, set.binding[name]));
    Tensor array = readNpy(binding.substr(eq + 1));
    if (array.rank() == 0)
      throw Error(fmt::format("{} {}: a scalar has no rows to batch (axis 0)", flag, binding));
    set.binding[name] = binding;
    set.arrays.emplace(name, std::move(array));
  }
  for (const auto &[name, array] : set.arrays) {
    const auto &[firstName, first] = *set.arrays.begin();
    if (array.shape()[0] != first.shape()[0])
      throw Error(fmt::format("{}: the arrays disagree on their rows (axis 0): {} has {}, {} "
                              "has {}",
                              flag, set.binding[firstName], first.shape()[0], set.binding[name],
                              array.shape()[0]));
  }
  set.rows = set.arrays.empty() ? 0 : set.arrays.begin()->second.shape()[0];
  return set;
}

std::string names(const std::vector<std::string> &list) {
  std::string out;
  for (const std::string &name : list)
    out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "none" : out;
}

std::vector<std::string> inputNames(const Graph &graph) {
  std::vector<std::string> out;
  for (ValueId id : graph.inputs())
    out.push_back(graph.node(id).name);
  return out;
}

std::vector<std::string> outputNames(const Graph &graph) {
  std::vector<std::string> out;
  for (const GraphOutput &o : graph.outputs)
    out.push_back(o.name);
  return out;
}

// --loss NAME names a scalar output; --loss cross_entropy:OUT:LABELS and
// mse:OUT:TARGET add one named "loss" (or "loss_" when taken) on a value of the graph, and a new
// input for the labels when the graph has none (its dtype and row shape from
// the --data file). Returns the loss output's name.
std::string addLoss(Graph &graph, const std::string &spec, const DataSet &data) {
  size_t first = spec.find(':'), second = spec.find(':', first + 1);
  if (first == std::string::npos) {
    if (!graph.findOutput(spec))
      throw Error(fmt::format("--loss {}: graph '{}' has no output '{}' (outputs: {}); to add a "
                              "loss give --loss cross_entropy:OUT:LABELS or --loss mse:OUT:TARGET",
                              spec, graph.name, spec, names(outputNames(graph))));
    return spec;
  }
  std::string kind = spec.substr(0, first);
  std::string out = second == std::string::npos ? "" : spec.substr(first + 1, second - first - 1);
  std::string target = second == std::string::npos ? "" : spec.substr(second + 1);
  if ((kind != "cross_entropy" && kind != "mse") || out.empty() || target.empty())
    throw Error(fmt::format("--loss {}: expected NAME, cross_entropy:OUT:LABELS or "
                            "mse:OUT:TARGET",
                            spec));
  std::string lossName = "loss";
  while (graph.findOutput(lossName))
    lossName += "_";
  std::optional<ValueId> outId = graph.findOutput(out);
  if (!outId)
    outId = graph.findNamed(out);
  if (!outId)
    throw Error(fmt::format("--loss {}: graph '{}' has no output or value named '{}' "
                            "(outputs: {})",
                            spec, graph.name, out, names(outputNames(graph))));
  std::optional<ValueId> targetId = graph.findNamed(target);
  int64_t batch = graph.type(*outId).shape.empty() ? 1 : graph.type(*outId).shape[0];
  GraphBuilder b(std::move(graph));
  Value targetValue;
  if (targetId) {
    targetValue = b.value(*targetId);
  } else {
    auto it = data.arrays.find(target);
    if (it == data.arrays.end())
      throw Error(fmt::format("--loss {}: the graph has no value '{}'; give its values with "
                              "--data {}=FILE.npy",
                              spec, target, target));
    Shape shape = it->second.shape();
    shape[0] = batch;
    targetValue = b.input(target, it->second.dtype(), shape);
  }
  // Errors name the option: "--loss mse:out:y: error: sub: operand dtypes differ ...".
  Value lossValue = buildComposite(kind, b, {b.value(*outId), targetValue}, {},
                                   SourceLoc("--loss " + spec, 0, 0));
  b.output(lossName, lossValue);
  graph = b.finish();
  return lossName;
}

// A cross_entropy of logits [N,C] and integer labels [N] that are an input:
// the values accuracy is measured on. The composite expands to
// sum(log_softmax(logits) * one_hot(labels)) with log_softmax(x) =
// (x - max x) - log(sum(exp(x - max x))); this walks that pattern back.
struct Classifier {
  ValueId logits;
  std::string labels;
};

std::optional<Classifier> findClassifier(const Graph &graph) {
  for (ValueId id = 0; id < graph.size(); ++id) {
    const Node &oneHot = graph.node(id);
    if (oneHot.op != OpKind::OneHot)
      continue;
    const Node &labels = graph.node(oneHot.operands[0]);
    if (labels.op != OpKind::Input || !isInteger(labels.type.dtype) || labels.type.rank() != 1)
      continue;
    for (ValueId user = id + 1; user < graph.size(); ++user) {
      const Node &mul = graph.node(user);
      if (mul.op != OpKind::Mul || mul.operands[1] != id)
        continue;
      const Node &logProbs = graph.node(mul.operands[0]);
      if (logProbs.op != OpKind::Sub || graph.node(logProbs.operands[0]).op != OpKind::Sub)
        continue;
      ValueId logits = graph.node(logProbs.operands[0]).operands[0];
      if (graph.type(logits).rank() == 2 && graph.type(logits).shape[0] == labels.type.shape[0])
        return Classifier{logits, labels.name};
    }
  }
  return std::nullopt;
}

// The logits as an output of `graph` (reusing one that already is); returns its name.
std::string exposeOutput(Graph &graph, ValueId value, std::string name) {
  for (const GraphOutput &o : graph.outputs)
    if (o.value == value)
      return o.name;
  while (graph.findOutput(name))
    name += "_";
  graph.addOutput(name, value);
  return name;
}

// Every input of the graph has its array, of its dtype and row shape; every
// array feeds an input (a bf16 input's <u2 array is taken as its bits).
// Returns the graph's batch (the inputs' leading axis).
int64_t checkData(const Graph &graph, DataSet &data, const std::string &flag) {
  std::vector<std::string> missing;
  for (ValueId id : graph.inputs())
    if (!data.arrays.count(graph.node(id).name))
      missing.push_back(fmt::format("{} ({})", graph.node(id).name, typeString(graph.type(id))));
  if (!missing.empty())
    throw Error(fmt::format("{}: no data for input{} {} of graph '{}'; give {} NAME=FILE.npy", flag,
                            missing.size() == 1 ? "" : "s", names(missing), graph.name, flag));
  int64_t batch = -1;
  for (auto &[name, array] : data.arrays) {
    std::optional<ValueId> id = graph.findNamed(name);
    if (!id || graph.node(*id).op != OpKind::Input)
      throw Error(fmt::format("{} {}: graph '{}' has no input '{}' (inputs: {})", flag,
                              data.binding.at(name), graph.name, name, names(inputNames(graph))));
    const TensorType &type = graph.type(*id);
    array = bitsAs(std::move(array), type.dtype);
    Shape rowShape(array.shape().begin() + 1, array.shape().end());
    if (type.shape.empty() || type.dtype != array.dtype() ||
        Shape(type.shape.begin() + 1, type.shape.end()) != rowShape) {
      std::string rows =
          type.shape.size() <= 1
              ? fmt::format("{} scalars, one per row", dtypeName(type.dtype))
              : fmt::format("{} rows of [{}]", dtypeName(type.dtype),
                            fmt::join(type.shape.begin() + 1, type.shape.end(), ","));
      throw Error(fmt::format("{} {}: input '{}' is {}, so the file should hold {}; it holds {}",
                              flag, data.binding.at(name), name, typeString(type), rows,
                              typeString(array.type())));
    }
    if (batch >= 0 && type.shape[0] != batch)
      throw Error(fmt::format("graph '{}': its inputs disagree on the batch (axis 0): {} and {}",
                              graph.name, batch, type.shape[0]));
    batch = type.shape[0];
  }
  return batch;
}

// Rows whose largest logit is at their label.
int64_t countCorrect(const Tensor &logits, const Tensor &labels) {
  int64_t rows = logits.shape()[0], classes = logits.shape()[1], correct = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (logits.real(r * classes + c) > logits.real(r * classes + best))
        best = c;
    correct += best == static_cast<int64_t>(labels.real(r));
  }
  return correct;
}

std::string duration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  return s >= 60 ? fmt::format("{}m{:02}s", s / 60, s % 60) : fmt::format("{}s", s);
}

// What train() prepares from the options before any rank compiles: the
// model with its loss (and logits as an output where there is accuracy to
// measure), rebatched to --batch, its data and its starting params.
struct TrainingRun {
  Graph model;
  std::string loss;
  std::optional<std::string> logits; // the output accuracy is measured on
  std::optional<Classifier> classifier;
  DataSet train, eval;
  int64_t batch = 0;
  TensorMap params;
};

// The training loop on one rank, on either compiled backend.
int trainWith(
    const TrainCliOptions &options, std::shared_ptr<Communicator> comm, const TrainingRun &job,
    const std::function<std::unique_ptr<Executable>(const Graph &, const RunOptions &)> &compile) {
  const Graph &model = job.model;
  const std::string &loss = job.loss;
  const DataSet &train = job.train, &eval = job.eval;
  int64_t batch = job.batch;
  int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  bool lead = rank == 0;
  if (batch % ranks != 0)
    throw Error(fmt::format("--batch {} does not split evenly across {} ranks", batch, ranks));
  int64_t shard = batch / ranks;
  Graph local = comm ? withBatch(model, batch, shard) : model;

  TrainStepOptions stepOptions = options.step;
  if (!stepOptions.lr)
    stepOptions.lr = 1e-3;
  Optimizer optimizer = optimizerFrom(stepOptions);
  DataParallel dp{.enabled = comm != nullptr,
                  .bucketBytes = static_cast<int64_t>(options.step.bucketMb * (1 << 20))};
  // The step runs on every rank; evaluation on rank 0 alone, so its
  // executable takes no communicator (creating one with it is collective).
  RunOptions run, evalRun;
  run.communicator = comm;
  if (comm)
    run.threads = evalRun.threads = threadsPerRank(ranks);
  auto compileStart = Clock::now();
  std::unique_ptr<Executable> trainer = compile(trainStep(local, loss, optimizer, dp, mixedPrecisionFrom(stepOptions)), run);
  for (const auto &[name, value] : job.params)
    trainer->setParam(name, value);
  int64_t stepsPerEpoch = train.rows / batch;
  if (lead) {
    fmt::print("training {} on {} rows ({}), batch {}, {} steps per epoch; {} lr {} on {}; "
               "compiled in {:.0f} ms\n",
               options.step.file, train.rows, names([&] {
                 std::vector<std::string> b;
                 for (const auto &[name, binding] : train.binding)
                   b.push_back(binding);
                 return b;
               }()),
               batch, stepsPerEpoch, options.step.optimizer, *stepOptions.lr, options.backend,
               millisSince(compileStart));
    if (comm)
      fmt::print("data-parallel over {} ranks ({}): each rank trains on {} of every {} rows\n",
                 ranks, comm->engine(), shard, batch);
    if (int64_t dropped = train.rows % batch)
      fmt::print("each epoch leaves out {} row{} (the shuffle decides which): too few for "
                 "another batch of {}\n",
                 dropped, dropped == 1 ? "" : "s", batch);
  }

  int startEpoch = 0;
  if (!options.resume.empty()) {
    trainer->loadParams(options.resume);
    auto stepsDone = static_cast<int64_t>(trainer->param("step").real(0));
    if (stepsDone % stepsPerEpoch != 0)
      throw Error(fmt::format("--resume {}: the checkpoint is at step {}, not at the end of an "
                              "epoch of {} steps (were the data or --batch different?)",
                              options.resume, stepsDone, stepsPerEpoch));
    startEpoch = static_cast<int>(stepsDone / stepsPerEpoch);
    if (lead)
      fmt::print("resumed from {}: {} epoch{} ({} steps) done\n", options.resume, startEpoch,
                 startEpoch == 1 ? "" : "s", stepsDone);
  }

  // Evaluation on rank 0: the model with the trained params, full batches.
  std::unique_ptr<Executable> evaluator;
  int64_t evalBatches = eval.rows / batch;
  if (lead && !eval.arrays.empty()) {
    evaluator = compile(model, evalRun);
    if (eval.rows % batch != 0)
      fmt::print("evaluation uses {} of {} rows (whole batches of {})\n", evalBatches * batch,
                 eval.rows, batch);
  }

  auto stepsLeftAt = [&](int epoch, int64_t step) {
    return int64_t(options.epochs - epoch) * stepsPerEpoch - step;
  };
  double secondsPerStep = 0;
  auto runStart = Clock::now();
  int64_t stepsRun = 0;
  for (int epoch = startEpoch; epoch < options.epochs; ++epoch) {
    // The order depends on (seed, epoch) only, so a resumed run sees the
    // batches an uninterrupted one would.
    std::seed_seq seeds{uint32_t(options.seed), uint32_t(options.seed >> 32), uint32_t(epoch)};
    std::mt19937_64 rng(seeds);
    std::vector<int64_t> order(static_cast<size_t>(train.rows));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);

    std::optional<Progress> progress;
    if (lead)
      progress.emplace(fmt::format("epoch {}/{}", epoch + 1, options.epochs), stepsPerEpoch);
    double lossSum = 0;
    int64_t correct = 0;
    auto epochStart = Clock::now();
    for (int64_t s = 0; s < stepsPerEpoch; ++s) {
      TensorMap inputs;
      for (const auto &[name, array] : train.arrays)
        inputs.emplace(name, gatherRows(array, order, s * batch + rank * shard, shard));
      std::map<std::string, Tensor> outputs = trainer->step(inputs);
      lossSum += outputs.at(loss).real(0);
      if (job.classifier)
        correct += countCorrect(outputs.at(*job.logits), inputs.at(job.classifier->labels));
      ++stepsRun;
      secondsPerStep = millisSince(runStart) / 1e3 / double(stepsRun);
      if (progress)
        progress->update(s + 1,
                         fmt::format("loss {:.4f}  {:.0f} rows/s  ETA {}", lossSum / double(s + 1),
                                     double((s + 1) * batch) / (millisSince(epochStart) / 1e3),
                                     duration(secondsPerStep * double(stepsLeftAt(epoch, s + 1)))));
    }
    std::string summary = fmt::format("loss {:.4f}", lossSum / double(stepsPerEpoch));
    if (job.classifier)
      summary += fmt::format("  accuracy {:.2f}%",
                             100.0 * double(correct) / double(stepsPerEpoch * shard));
    if (progress)
      progress->finish(summary + fmt::format("  {:.1f} s", millisSince(epochStart) / 1e3));

    if (evaluator) {
      for (const std::string &name : evaluator->paramNames())
        evaluator->setParam(name, trainer->param(name));
      std::vector<int64_t> inOrder(static_cast<size_t>(eval.rows));
      std::iota(inOrder.begin(), inOrder.end(), 0);
      double evalLoss = 0;
      int64_t evalCorrect = 0;
      for (int64_t s = 0; s < evalBatches; ++s) {
        TensorMap inputs;
        for (const auto &[name, array] : eval.arrays)
          inputs.emplace(name, gatherRows(array, inOrder, s * batch, batch));
        std::map<std::string, Tensor> outputs = evaluator->step(inputs);
        evalLoss += outputs.at(loss).real(0);
        if (job.classifier)
          evalCorrect += countCorrect(outputs.at(*job.logits), inputs.at(job.classifier->labels));
      }
      std::string line = fmt::format("eval loss {:.4f}", evalLoss / double(evalBatches));
      if (job.classifier)
        line += fmt::format("  accuracy {:.2f}% ({} of {})",
                            100.0 * double(evalCorrect) / double(evalBatches * batch), evalCorrect,
                            evalBatches * batch);
      fmt::print("epoch {}/{}: {}\n", epoch + 1, options.epochs, line);
    }
    if (!options.checkpoint.empty()) {
      trainer->saveParams(options.checkpoint); // atomic; rank 0 only
      if (lead)
        fmt::print("saved {} (params, optimizer state, step {})\n", options.checkpoint,
                   static_cast<int64_t>(trainer->param("step").real(0)));
    }
  }
  if (comm) {
    checkSameOnEveryRank(*comm, paramsHash(*trainer), "the trained params");
    if (lead)
      fmt::print("params identical on all {} ranks\n", ranks);
  }
  if (lead)
    fmt::print("trained {} steps in {}\n", stepsRun, duration(millisSince(runStart) / 1e3));
  return 0;
}

} // namespace

int train(const TrainCliOptions &options) {
  const Backend &backend =
      findBackend(options.backend, "stepc train", options.kBackends);
  MemoryBudget budget = memoryBudgetOption(options.memoryBudget);
  if (backend.kind == BackendKind::Cuda && options.step.dataParallel)
    throw Error("--data-parallel trains on --backend cpu");
  requireRunnable(backend);
  if (options.epochs < 1)
    throw Error(fmt::format("--epochs must be at least 1, got {}", options.epochs));
  if (options.batch < 0)
    throw Error(fmt::format("--batch must be positive, got {}", options.batch));
  if (options.step.loss.empty())
    throw Error("missing option --loss: the scalar output to minimize (or "
                "cross_entropy:OUT:LABELS, mse:OUT:TARGET to add one)");
  TrainingRun job;
  DataSet &train = job.train, &eval = job.eval;
  train = readDataSet(options.data, "--data");
  if (train.arrays.empty())
    throw Error("missing option --data: give NAME=FILE.npy for each input of the graph");
  eval = readDataSet(options.evalData, "--eval-data");

  LoadedModel loaded = loadModel(options.step.file);
  Graph &model = job.model;
  model = std::move(loaded.graph);
  job.params = std::move(loaded.params);
  loadModelParams(options.step.file, options.params, model, job.params);
  job.loss = addLoss(model, options.step.loss, train);

  int64_t graphBatch = checkData(model, train, "--data");
  int64_t batch = job.batch = options.batch > 0 ? options.batch : graphBatch;
  if (batch != graphBatch) {
    try {
      model = withBatch(model, graphBatch, batch);
    } catch (const Error &e) {
      throw Error(fmt::format("--batch {}: graph '{}' does not take a batch of {} (its own is "
                              "{}): {}",
                              batch, model.name, batch, graphBatch, e.what()));
    }
  }
  if (batch > train.rows)
    throw Error(fmt::format("--batch {} is larger than the data: {} rows", batch, train.rows));
  if (!eval.arrays.empty()) {
    checkData(model, eval, "--eval-data");
    if (batch > eval.rows)
      throw Error(
          fmt::format("--batch {} is larger than the evaluation data: {} rows", batch, eval.rows));
  }
  // Accuracy needs the logits as an output of the step.
  job.classifier = findClassifier(model);
  if (job.classifier)
    job.logits = exposeOutput(model, job.classifier->logits, "logits");

  return onEveryRank(options.step.dataParallel, [&](std::shared_ptr<Communicator> comm) {
    return trainWith(options, comm, job, [&](const Graph &g, const RunOptions &run) {
      return makeExecutable(backend, g,
                            {.gpuArch = options.gpuArch, .memoryBudget = budget}, run);
    });
  });
}

} // namespace stepc::cli
