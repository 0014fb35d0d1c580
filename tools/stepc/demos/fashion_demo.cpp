// `stepc demo`: trains an examples/ model on Fashion-MNIST with the compiled
// CPU backend, shows progress, evaluates on the test set, saves a checkpoint
// and compares fused and unfused step times.
#include "bench.h"
#include "commands.h"
#include "datasets.h"
#include "training.h"

#include "stepc/communicator.h"
#include "stepc/compile.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <thread>

namespace stepc::cli {

// The demo on one process (comm null) or as one rank of a data-parallel job.
int fashionDemoOn(const DemoOptions &options, std::shared_ptr<Communicator> comm);

namespace {

// The floating-point params' bytes: what one step's gradients weigh.
int64_t gradientBytes(const Graph &model) {
  int64_t bytes = 0;
  for (ValueId id : model.params())
    if (isFloat(model.type(id).dtype))
      bytes += model.type(id).numel() * static_cast<int64_t>(dtypeSize(model.type(id).dtype));
  return bytes;
}

// Copies examples `order[first .. first + batch)` into the model's x and y.
TensorMap makeBatch(const ImageSet &data, const std::vector<int64_t> &order, int64_t first,
                    const TensorType &xType, const TensorType &yType) {
  int64_t batch = xType.shape[0];
  Tensor x(xType), y(yType);
  float *xs = x.data<float>();
  int32_t *ys = y.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    int64_t i = order[(first + b) % static_cast<int64_t>(order.size())];
    std::copy_n(data.images.data() + i * data.pixels, data.pixels, xs + b * data.pixels);
    ys[b] = data.labels[i];
  }
  TensorMap m;
  m.emplace("x", std::move(x));
  m.emplace("y", std::move(y));
  return m;
}

} // namespace

int fashionDemo(const DemoOptions &options) {
  return onEveryRank(options.dataParallel, [&](std::shared_ptr<Communicator> comm) {
    return fashionDemoOn(options, std::move(comm));
  });
}

int fashionDemoOn(const DemoOptions &options, std::shared_ptr<Communicator> comm) {
  int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  bool lead = rank == 0;
  std::string modelName = options.model.empty() ? "mlp" : options.model;
  std::string modelPath = options.examples + "/" + modelName + ".sg";
  double lr = options.lr.value_or(1e-3);
  Graph model = parseGraphFile(modelPath);
  auto xId = model.findNamed("x"), yId = model.findNamed("y"), logitsId = model.findNamed("logits");
  if (!xId || !yId || !logitsId || model.type(*xId).numel() % model.type(*xId).shape[0] != 0)
    throw Error(fmt::format("{}: the demo needs inputs 'x' (images) and 'y' (labels) and a "
                            "value named 'logits'",
                            modelPath));
  TensorType xType = model.type(*xId), yType = model.type(*yId);
  int64_t batch = xType.shape[0];
  if (batch % ranks != 0)
    throw Error(fmt::format("{}: the global batch of {} does not split evenly across {} ranks",
                            modelPath, batch, ranks));
  int64_t shard = batch / ranks;
  Graph local = comm ? withBatch(model, batch, shard) : model;
  TensorType xShard = local.type(*xId), yShard = local.type(*yId);

  ImageSet train = readIdxImages(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz",
                                 std::string(kFashionMnistDir) + "/train-labels-idx1-ubyte.gz");
  ImageSet test = readIdxImages(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz",
                                std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz");
  if (xType.numel() / batch != train.pixels)
    throw Error(fmt::format("{}: input x has {} values per example, images have {}", modelPath,
                            xType.numel() / batch, train.pixels));
  MixedPrecision mixed;
  if (!options.mixedPrecision.empty())
    mixed.compute = parseMixedPrecision(options.mixedPrecision, "--mixed-precision");
  if (lead)
    fmt::print("Fashion-MNIST: {} training and {} test images; model {} (batch {}), Adam lr {}{}\n",
               train.count, test.count, modelPath, batch, lr,
               mixed.compute ? ", mixed precision " + options.mixedPrecision : "");

  Optimizer opt = Optimizer::adam();
  opt.lr = lr;
  DataParallel dp;
  dp.enabled = comm != nullptr;
  dp.bucketBytes = static_cast<int64_t>(options.bucketMb * (1 << 20));
  Graph step = trainStep(local, "loss", opt, dp, mixed);
  auto compileStart = Clock::now();
  RunOptions run;
  run.communicator = comm;
  if (comm)
    run.threads = threadsPerRank(ranks);
  auto trainer = compileJit(step, {}, run);
  if (lead)
    fmt::print("compiled the training step: {} kernels in {:.0f} ms\n",
               trainer->spec().kernels.size(), millisSince(compileStart));
  if (comm && lead)
    fmt::print("data-parallel over {} ranks ({}): each rank trains on {} of every {} examples, "
               "{} threads each; gradients averaged in {} all-reduce buckets\n",
               ranks, comm->engine(), shard, batch, run.threads,
               std::count_if(trainer->spec().kernels.begin(), trainer->spec().kernels.end(),
                             [](const KernelSpec &k) { return k.collective.has_value(); }) -
                   1);

  std::mt19937_64 rng(options.seed);
  std::vector<int64_t> order(static_cast<size_t>(train.count));
  std::iota(order.begin(), order.end(), 0);
  // --steps cuts training short (quick runs); the last epoch may be partial.
  int64_t stepsLeft = options.steps > 0 ? options.steps : options.epochs * (train.count / batch);
  std::vector<double> stepMillis;
  for (int epoch = 1; epoch <= options.epochs && stepsLeft > 0; ++epoch) {
    int64_t stepsPerEpoch = std::min(train.count / batch, stepsLeft);
    stepsLeft -= stepsPerEpoch;
    std::shuffle(order.begin(), order.end(), rng);
    std::optional<Progress> progress;
    if (lead)
      progress.emplace(fmt::format("epoch {}/{}", epoch, options.epochs), stepsPerEpoch);
    double lossSum = 0;
    auto epochStart = Clock::now();
    for (int64_t s = 0; s < stepsPerEpoch; ++s) {
      // This rank's slice of global batch s.
      TensorMap inputs = makeBatch(train, order, s * batch + rank * shard, xShard, yShard);
      auto start = Clock::now();
      double loss = trainer->step(inputs).at("loss").real(0);
      stepMillis.push_back(millisSince(start));
      lossSum += loss;
      double seconds = millisSince(epochStart) / 1e3;
      if (progress)
        progress->update(s + 1, fmt::format("loss {:.4f}  {:.0f} images/s",
                                            lossSum / double(s + 1),
                                            double((s + 1) * batch) / seconds));
    }
    if (progress)
      progress->finish(fmt::format("mean loss {:.4f}", lossSum / double(stepsPerEpoch)));
  }

  if (comm) {
    checkSameOnEveryRank(*comm, paramsHash(*trainer), "the trained params");
    const CollectiveStats &stats = trainer->collectiveStats();
    int64_t stepCount = std::max<int64_t>(trainer->stepsTaken(), 1);
    // The same bytes all-reduced alone, blocking: what the step would wait
    // for if nothing overlapped the communication.
    std::vector<double> blockingMs;
    std::vector<std::byte> buffer(static_cast<size_t>(stats.bytes / stepCount));
    for (int i = 0; i < 20; ++i) {
      auto a = Clock::now();
      comm->allReduce(buffer.data(), buffer.data(), static_cast<int64_t>(buffer.size() / 4),
                      DType::F32, ReduceOp::Sum);
      blockingMs.push_back(millisSince(a));
    }
    double exposedMs = stats.waitMicros / 1e3 / double(stepCount);
    int64_t bytesPerStep = stats.bytes / stepCount, gradients = gradientBytes(local);
    if (lead)
      fmt::print("per step: {:.2f} ms median; all-reduced {} bytes in {} calls (the gradients: "
                 "{} bytes, and {} for the loss); {:.0f}% of those bytes had arrived when the "
                 "step came to need them (hidden behind the backward pass); waited {:.3f} ms for "
                 "the rest, against {:.3f} ms for the same all-reduce alone, blocking\n",
                 perf::median(stepMillis), bytesPerStep, stats.calls / stepCount, gradients,
                 bytesPerStep - gradients,
                 100.0 * double(stats.hiddenBytes) / double(std::max<int64_t>(stats.bytes, 1)),
                 exposedMs, perf::median(blockingMs));
    if (lead)
      fmt::print("params identical on all {} ranks\n", ranks);
    if (!lead) {
      // Rank 0 evaluates and saves: every rank holds the same params.
      return 0;
    }
  }

  // Evaluate: the same model with its logits as an output, the trained weights.
  Graph eval = model;
  eval.addOutput("logits", *logitsId);
  auto evaluator = compileJit(eval);
  for (const std::string &name : evaluator->paramNames())
    evaluator->setParam(name, trainer->param(name));
  std::vector<int64_t> testOrder(static_cast<size_t>(test.count));
  std::iota(testOrder.begin(), testOrder.end(), 0);
  int64_t correct = 0;
  for (int64_t first = 0; first < test.count; first += batch) {
    TensorMap inputs = makeBatch(test, testOrder, first, xType, yType);
    Tensor logits = evaluator->step(inputs).at("logits");
    int64_t classes = logits.shape()[1];
    for (int64_t b = 0; b < batch && first + b < test.count; ++b) {
      const float *row = logits.data<float>() + b * classes;
      int64_t guess = std::max_element(row, row + classes) - row;
      correct += guess == test.labels[first + b];
    }
  }
  double accuracy = 100.0 * double(correct) / double(test.count);
  std::string trained =
      options.steps > 0 ? fmt::format("{} steps", trainer->stepsTaken())
                        : fmt::format("{} epoch{}", options.epochs, options.epochs == 1 ? "" : "s");
  bool reached = accuracy >= options.targetAccuracy;
  fmt::print("test accuracy after {}: {:.2f}% ({} of {}); target {}%: {}\n", trained, accuracy,
             correct, test.count, options.targetAccuracy, reached ? "reached" : "MISSED");

  std::string checkpoint =
      options.checkpoint.value_or(fmt::format("fashion_mnist_{}.safetensors", modelName));
  if (!checkpoint.empty()) {
    trainer->saveParams(checkpoint);
    fmt::print("saved the trained parameters and optimizer state to {} (evaluate with: stepc run "
               "{} --backend cpu --params {})\n",
               checkpoint, modelPath, checkpoint);
  }

  if (comm)
    return reached ? 0 : 1;
  // Fused against unfused on the same batches, alternating.
  auto unfused = compileJit(step, {.fusion = false});
  std::vector<double> fusedMs, unfusedMs;
  for (int i = 0; i < 20; ++i) {
    TensorMap inputs = makeBatch(train, order, int64_t(i) * batch, xType, yType);
    auto a = Clock::now();
    trainer->step(inputs);
    fusedMs.push_back(millisSince(a));
    auto b = Clock::now();
    unfused->step(inputs);
    unfusedMs.push_back(millisSince(b));
  }
  fmt::print("ms/step (median of 20): fused {:.2f} ({} kernels), unfused {:.2f} ({} kernels), "
             "{:.2f}x\n",
             perf::median(fusedMs), trainer->spec().kernels.size(), perf::median(unfusedMs),
             unfused->spec().kernels.size(), perf::median(unfusedMs) / perf::median(fusedMs));
  return reached ? 0 : 1;
}

} // namespace stepc::cli
