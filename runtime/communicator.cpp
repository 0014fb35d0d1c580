#include "stepc/communicator.h"

#include "stepc/error.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>

namespace stepc {

std::string_view reduceOpName(ReduceOp op) {
  switch (op) {
  case ReduceOp::Sum: return "sum";
  case ReduceOp::Mean: return "mean";
  }
  return "?";
}

std::optional<ReduceOp> parseReduceOp(std::string_view name) {
  if (name == "sum")
    return ReduceOp::Sum;
  if (name == "mean")
    return ReduceOp::Mean;
  return std::nullopt;
}

int64_t SingleProcess::startAllReduce(const void *in, void *out, int64_t count, DType dtype,
                                      ReduceOp) {
  if (in != out && count > 0)
    std::memmove(out, in, static_cast<size_t>(count) * dtypeSize(dtype));
  return 0;
}

void SingleProcess::abort(int code) { std::_Exit(code); }

namespace {

// The C callbacks of an AOT artifact's stepc_communicator, as a
// Communicator. Every collective is blocking, so startAllReduce completes it.
class CallbackCommunicator final : public Communicator {
public:
  explicit CallbackCommunicator(const CommunicatorCallbacks &c) : c_(c) {}
  int rank() const override { return c_.rank; }
  int size() const override { return c_.size; }
  std::string engine() const override { return "C callbacks"; }
  int64_t startAllReduce(const void *in, void *out, int64_t count, DType dtype,
                         ReduceOp op) override {
    check("all_reduce", c_.allReduce(c_.context, in, out, count, static_cast<int>(dtype),
                                     op == ReduceOp::Sum ? 0 : 1));
    return 0;
  }
  void progress() override {}
  bool finished(int64_t) const override { return true; }
  void wait(int64_t) override {}
  void broadcast(void *data, int64_t bytes, int root) override {
    check("broadcast", c_.broadcast(c_.context, data, bytes, root));
  }
  std::vector<uint64_t> allGather(uint64_t value) override {
    std::vector<uint64_t> all(static_cast<size_t>(c_.size));
    check("all_gather", c_.allGather(c_.context, &value, all.data(), sizeof value));
    return all;
  }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }

private:
  CommunicatorCallbacks c_;
  static void check(std::string_view callback, int result) {
    if (result != 0)
      throw Error(fmt::format("the communicator's {} callback failed (returned {})", callback,
                              result));
  }
};

} // namespace

std::shared_ptr<Communicator> callbackCommunicator(const CommunicatorCallbacks &callbacks) {
  if (callbacks.size < 1 || callbacks.rank < 0 || callbacks.rank >= callbacks.size)
    throw Error(fmt::format("communicator: rank {} of size {}; the size must be at least 1 and "
                            "the rank in [0, size)",
                            callbacks.rank, callbacks.size));
  for (auto [name, missing] : {std::pair{"all_reduce", !callbacks.allReduce},
                               std::pair{"broadcast", !callbacks.broadcast},
                               std::pair{"all_gather", !callbacks.allGather}})
    if (missing)
      throw Error(fmt::format("communicator: the {} callback is NULL", name));
  return std::make_shared<CallbackCommunicator>(callbacks);
}

void checkSameOnEveryRank(Communicator &comm, uint64_t hash, std::string_view what) {
  std::vector<uint64_t> hashes = comm.allGather(hash);
  std::string differ;
  for (size_t r = 1; r < hashes.size(); ++r)
    if (hashes[r] != hashes[0])
      differ += fmt::format("{}rank {} ({:016x})", differ.empty() ? "" : ", ", r, hashes[r]);
  if (!differ.empty())
    throw Error(fmt::format("{} differs between the ranks of the job: rank 0 has {:016x}, "
                            "but {}; every rank must compile the same graph",
                            what, hashes[0], differ));
}

} // namespace stepc
