#include "training.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace stepc::cli {

uint64_t paramsHash(const Executable &executable) {
  uint64_t h = kBytesHashStart;
  for (const std::string &name : executable.paramNames())
    mixBytes(h, executable.param(name));
  return h;
}

Graph withBatch(const Graph &model, int64_t from, int64_t to) {
  Graph out;
  out.name = model.name;
  for (Node node : model.nodes) {
    const auto *shape = node.attrs.find("shape");
    if (shape && std::holds_alternative<std::vector<int64_t>>(*shape)) {
      std::vector<int64_t> dims = std::get<std::vector<int64_t>>(*shape);
      if (!dims.empty() && dims[0] == from && !node.type.shape.empty() &&
          node.type.shape[0] == from && node.op != OpKind::Parameter) {
        dims[0] = to;
        node.attrs.set("shape", dims);
      }
    }
    out.add(std::move(node));
  }
  for (const GraphOutput &o : model.outputs)
    out.addOutput(o.name, o.value);
  return out;
}

Tensor gatherRows(const Tensor &rows, const std::vector<int64_t> &order, int64_t first,
                  int64_t count) {
  Shape shape = rows.shape();
  shape[0] = count;
  Tensor batch(rows.dtype(), shape);
  size_t rowBytes = rows.nbytes() / static_cast<size_t>(rows.shape()[0]);
  for (int64_t b = 0; b < count; ++b) {
    int64_t i = order[static_cast<size_t>((first + b) % static_cast<int64_t>(order.size()))];
    std::memcpy(batch.bytes() + b * rowBytes, rows.bytes() + i * rowBytes, rowBytes);
  }
  return batch;
}

void saveDemoCheckpoint(Executable &trainer, const std::optional<std::string> &checkpoint,
                        const std::string &fallback) {
  std::string path = checkpoint.value_or(fallback);
  if (path.empty())
    return;
  trainer.saveParams(path);
  fmt::print("saved the trained parameters and optimizer state to {}\n", path);
}

size_t shuffleForHeldOut(std::vector<std::string> &items, std::mt19937_64 &rng) {
  std::shuffle(items.begin(), items.end(), rng);
  return items.size() * 9 / 10;
}

int32_t sampleSymbol(const float *logits, int64_t vocab, double temperature, std::mt19937 &rng) {
  float top = *std::max_element(logits, logits + vocab);
  std::vector<double> weights(static_cast<size_t>(vocab));
  for (int64_t v = 0; v < vocab; ++v)
    weights[static_cast<size_t>(v)] = std::exp((double(logits[v]) - double(top)) / temperature);
  return std::discrete_distribution<int32_t>(weights.begin(), weights.end())(rng);
}

void copyParams(const Executable &from, Executable &to) {
  for (const std::string &name : to.paramNames())
    to.setParam(name, from.param(name));
}

int threadsPerRank(int ranks) {
  int local = ranks;
  if (const char *s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"))
    local = std::max(1, std::atoi(s));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local);
}

int onEveryRank(bool dataParallel, const std::function<int(std::shared_ptr<Communicator>)> &train) {
  if (!dataParallel)
    return train(nullptr);
  std::shared_ptr<Communicator> comm = mpiCommunicator();
  try {
    return train(comm);
  } catch (const std::exception &e) {
    fmt::print(stderr, "stepc: rank {} of {}: error: {}\n", comm->rank(), comm->size(), e.what());
    std::fflush(stderr);
    comm->abort(1);
  }
  return 1; // not reached: abort() ends the process
}

} // namespace stepc::cli
