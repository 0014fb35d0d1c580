#include "testing.h"

#include "stepc/random.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <string_view>
#include <sys/wait.h>

namespace stepc::testing {

uint64_t freshSeed() {
  if (const char *fixed = std::getenv("STEPC_TEST_SEED"))
    return std::strtoull(fixed, nullptr, 10);
  const char *fresh = std::getenv("STEPC_FRESH_SEEDS");
  if (!fresh || std::string_view(fresh) != "1")
    return 20261205;
  std::random_device device;
  uint64_t seed = (uint64_t(device()) << 32) | device();
  fmt::print(stderr, "fresh seed: replay with STEPC_TEST_SEED={}\n", seed);
  return seed;
}

Tensor randomTensor(DType dtype, const Shape &shape, uint64_t seed, double low,
                    double high) {
  Tensor t(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    double u = randomUniform(seed, static_cast<uint64_t>(i));
    double v = low + (high - low) * u;
    t.setReal(i, isFloat(dtype) ? v : std::floor(v));
  }
  return t;
}

::testing::AssertionResult allClose(const Tensor &actual, const Tensor &expected,
                                    double rtol, double atol) {
  if (actual.type() != expected.type())
    return ::testing::AssertionFailure()
           << "type " << typeString(actual.type()) << " != expected "
           << typeString(expected.type());
  int64_t bad = 0;
  std::string first;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double a = actual.real(i), e = expected.real(i);
    bool ok = (std::isnan(a) && std::isnan(e)) || a == e ||
              std::abs(a - e) <= atol + rtol * std::abs(e);
    if (!ok && bad++ == 0)
      first = fmt::format("element {}: {} vs expected {}", i, a, e);
  }
  if (bad == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.numel() << " elements differ; first " << first;
}

std::string sourcePath(const std::string &relative) {
  return std::string(STEPC_TESTING_SOURCE_DIR) + "/" + relative;
}

std::vector<std::string> exampleNames() {
  std::vector<std::string> names;
  for (const auto &entry : std::filesystem::directory_iterator(sourcePath("examples")))
    if (entry.path().extension() == ".sg" && entry.path().stem() != "gpt")
      names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

CommandResult stepcCommand(const std::string &arguments) {
  const char *bin = std::getenv("STEPC_BIN");
  std::string command = fmt::format("{} {} 2>&1", bin ? bin : "", arguments);
  CommandResult result;
  FILE *pipe = popen(command.c_str(), "r");
  if (!pipe)
    return result;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe))
    result.output.append(buffer, n);
  int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

} // namespace stepc::testing
