// What `stepc demo` and `stepc train` share: a model rebatched for a
// data-parallel rank's slice, rows gathered into a batch, and the checks
// every rank of a job makes.
#pragma once

#include "stepc/executable.h"
#include "stepc/graph.h"
#include "stepc/tensor.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace stepc::cli {

using Clock = std::chrono::steady_clock;

inline double millisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The model with its batch (the leading axis of its inputs, and of shape
// attributes that carry it, such as a flattening reshape) changed from
// `from` to `to`: a data-parallel rank's slice of the global batch, or the
// batch a user asked for.
Graph withBatch(const Graph &model, int64_t from, int64_t to);

// Rows order[first .. first + count) of `rows` (axis 0), wrapping around the
// end of `order`, as one tensor of `count` rows.
Tensor gatherRows(const Tensor &rows, const std::vector<int64_t> &order, int64_t first,
                  int64_t count);

// FNV-1a, 64 bits, over tensors' bytes: start from kBytesHashStart and mix
// in each tensor in turn. Equal hashes mean equal bits (in practice).
constexpr uint64_t kBytesHashStart = 0xcbf29ce484222325ull;
inline void mixBytes(uint64_t &h, const Tensor &t) {
  for (size_t i = 0; i < t.nbytes(); ++i) {
    h ^= static_cast<uint64_t>(t.bytes()[i]);
    h *= 0x100000001b3ull;
  }
}

// A hash of every param's bytes, on any backend: every rank's params must
// agree after training.
uint64_t paramsHash(const Executable &executable);

// Saves the trained params and optimizer state of a demo to its --checkpoint,
// or to `fallback` without one (an empty --checkpoint saves nothing).
void saveDemoCheckpoint(Executable &trainer, const std::optional<std::string> &checkpoint,
                        const std::string &fallback);

// The character-level demos (makemore, gpt): shuffles the items (words,
// fortunes) and returns how many of them, 90%, to train on; the rest are
// held out, split by item so that no held-out item was seen in training.
size_t shuffleForHeldOut(std::vector<std::string> &items, std::mt19937_64 &rng);

// Draws the next symbol from softmax(logits / temperature) over `vocab`
// logits.
int32_t sampleSymbol(const float *logits, int64_t vocab, double temperature, std::mt19937 &rng);

// Gives `to` (an evaluator of the same model) the params `from` trained.
void copyParams(const Executable &from, Executable &to);

// Threads per rank: the machine's cores shared among the ranks on it, so two
// spinning pools do not stall each other.
int threadsPerRank(int ranks);

// Runs `train` on one process (a null communicator), or with `dataParallel`
// as one rank of the MPI job; an error on a rank ends the whole job, since the
// other ranks may be waiting inside a collective.
int onEveryRank(bool dataParallel, const std::function<int(std::shared_ptr<Communicator>)> &train);

} // namespace stepc::cli
