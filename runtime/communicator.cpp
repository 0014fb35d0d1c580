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
