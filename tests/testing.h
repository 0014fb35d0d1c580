// Shared test helpers: seeds, random tensors, comparisons.
#pragma once

#include "stepc/interpreter.h"
#include "stepc/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace stepc::testing {

// The seed of a randomized test. Fixed by default, so that `make test` gives
// the same result every run; STEPC_TEST_SEED=<n> replays a given seed, and
// STEPC_FRESH_SEEDS=1 draws a fresh one per call (std::random_device) and
// prints it: the tests labelled `random` run that way. Tests also print the
// seed with SCOPED_TRACE so a failure can be replayed.
uint64_t freshSeed();

// Uniform in [low, high) for floats; integers in [low, high).
Tensor randomTensor(DType dtype, const Shape &shape, uint64_t seed, double low = -1,
                    double high = 1);

// Checks |a - b| <= atol + rtol * |b| elementwise, with matching types.
::testing::AssertionResult allClose(const Tensor &actual, const Tensor &expected,
                                    double rtol, double atol = 0);

std::string sourcePath(const std::string &relative); // under the repo root

// The models in examples/ by name ("cnn", "mlp", ...), sorted, that the
// suites sweeping every example (interpreter after every pass, fused and
// unfused builds, three thread counts) run; not gpt.sg, whose training step
// takes minutes through those sweeps: test_codegen_examples.cpp has a test
// of its own for it.
std::vector<std::string> exampleNames();

// `stepc ARGUMENTS` as a user runs it, the tool being $STEPC_BIN (set by
// tests/CMakeLists.txt): its exit status (-1 when it did not exit) and its
// stdout and stderr together.
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult stepcCommand(const std::string &arguments);

} // namespace stepc::testing
