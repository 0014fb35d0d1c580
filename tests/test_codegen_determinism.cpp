// Bitwise determinism of the CPU backend (docs/design.md, "Determinism"):
// a training step gives the same bits whatever the thread count, because a
// kernel's parallel calls each own whole rows of its outputs and every
// element is computed by one call in an order fixed by the kernel, never by
// the split. Each example's training step, and a graph built so that a
// split would show (reductions over thousands of terms, a matmul with a
// large K, scatter_add with many colliding indices, a convolution's weight
// gradient), runs a few steps at 1, 2 and 3 threads (3 oversubscribes two
// cores on purpose), at all cores' threads where there are more, and twice
// at 3; gpt.sg's AdamW step too; outputs and params must compare equal
// with memcmp. Compiles whole training steps: ctest label e2e.
#include "codegen_harness.h"

#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace stepc;

namespace {

// Every output of every step, then every param after the last step, named
// "step 2: loss" and "param w1".
using StepResults = std::vector<std::pair<std::string, Tensor>>;

StepResults runSteps(const Graph &step, const TensorMap &inputs, int threads, int steps) {
  RunOptions run;
  run.threads = threads;
  auto exe = compileJit(step, {}, run);
  StepResults results;
  for (int s = 0; s < steps; ++s)
    for (auto &[name, value] : exe->step(inputs))
      results.emplace_back(fmt::format("step {}: {}", s, name), std::move(value));
  for (const std::string &name : exe->paramNames())
    results.emplace_back("param " + name, exe->param(name));
  return results;
}

// Equal bytes, or the count and first position of the elements that differ.
::testing::AssertionResult sameBits(const Tensor &a, const Tensor &b) {
  if (a.type() != b.type() || a.nbytes() != b.nbytes())
    return ::testing::AssertionFailure() << "different types";
  if (std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0)
    return ::testing::AssertionSuccess();
  size_t width = dtypeSize(a.type().dtype), differing = 0, first = 0;
  for (size_t i = a.nbytes() / width; i-- > 0;)
    if (std::memcmp(a.bytes() + i * width, b.bytes() + i * width, width) != 0) {
      ++differing;
      first = i;
    }
  return ::testing::AssertionFailure()
         << differing << " of " << a.numel() << " elements differ, the first at " << first
         << ": " << a.real(static_cast<int64_t>(first)) << " vs "
         << b.real(static_cast<int64_t>(first));
}

// Runs `steps` steps at 1, 2 and 3 threads, at all cores' threads where
// that is more, and once more at 3; every result must have the bits of the
// single-threaded run.
void expectSameBitsAtAnyThreadCount(const Graph &step, const TensorMap &inputs, int steps) {
  StepResults reference = runSteps(step, inputs, 1, steps);
  std::vector<int> threadCounts{2, 3, 3};
  if (int cores = static_cast<int>(std::thread::hardware_concurrency()); cores > 3)
    threadCounts.push_back(cores);
  for (int threads : threadCounts) {
    StepResults results = runSteps(step, inputs, threads, steps);
    ASSERT_EQ(results.size(), reference.size());
    for (size_t i = 0; i < results.size(); ++i) {
      ASSERT_EQ(results[i].first, reference[i].first);
      EXPECT_TRUE(sameBits(results[i].second, reference[i].second))
          << step.name << ", " << results[i].first << ": " << threads
          << " threads against 1";
    }
  }
}

class DeterminismExamples : public ::testing::TestWithParam<std::string> {};

// Adam, as `stepc train` uses by default: its update divides by the
// gradient's own size, so it would magnify any change of summation order.
TEST_P(DeterminismExamples, TrainStepAtOneTwoThreeThreads) {
  Graph model =
      parseGraphFile(std::string(STEPC_SOURCE_DIR) + "/examples/" + GetParam() + ".sg");
  Graph step = trainStep(model, "loss", Optimizer::adam());
  TensorMap inputs = randomInputs(step, 15);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-3);
  expectSameBitsAtAnyThreadCount(step, inputs, 3);
}

// gpt.sg, left out of exampleNames (its step takes seconds to compile):
// AdamW as `stepc demo gpt` trains it, two steps. The attention composite's
// softmax rows, the layer norms' row sums and the embeddings' scatter_add
// gradient are the reductions a split would show in.
TEST(DeterminismExampleGpt, TrainStepAtOneTwoThreeThreads) {
  Graph step = trainStep(stepc::testing::loadExample("gpt"), "loss", Optimizer::adamw());
  TensorMap inputs = randomInputs(step, 15);
  inputs.at("lr") = Tensor::scalar(DType::F32, 2e-3);
  expectSameBitsAtAnyThreadCount(step, inputs, 2);
}

INSTANTIATE_TEST_SUITE_P(, DeterminismExamples, ::testing::ValuesIn(stepc::testing::exampleNames()),
                         [](const auto &info) { return info.param; });

// Sizes chosen to be awkward for any split: odd row counts, rows that end
// mid-vector, 3001-term sums (x's column sums, the first layer's K), 2680
// gathered rows added into 50 (scatter_add in the backward), and a
// convolution whose weight gradient sums over 9 images of 17x17.
constexpr const char *kSplitStress = R"(
graph split_stress {
  input %x : f32[67,3001]
  input %ids : i32[67,40]
  input %img : f32[9,3,19,19]
  input %y : i32[67]
  param %w : f32[3001,37] = xavier_uniform(seed=1)
  param %b : f32[37] = zeros()
  param %embed : f32[50,16] = normal(mean=0.0, std=1.0, seed=2)
  param %k : f32[6,3,3,3] = he_uniform(seed=3)
  %h = linear(%x, %w, %b)
  %t = tanh(%h)
  %e = gather(%embed, %ids) {axis=0}
  %es = reduce_sum(%e) {axes=[1], keepdims=0}
  %logits = concat(%t, %es) {axis=1}
  %ce = cross_entropy(%logits, %y)
  %c = conv2d(%img, %k) {dilation=[1,1], groups=1, padding=[0,0], stride=[1,1]}
  %ct = tanh(%c)
  %cm = reduce_mean(%ct) {axes=[0,1,2,3], keepdims=0}
  %xs = reduce_sum(%x) {axes=[0], keepdims=0}
  %xm = reduce_mean(%xs) {axes=[0], keepdims=0}
  %l1 = add(%ce, %cm)
  %loss = add(%l1, %xm)
  output loss = %loss
  output column_sums = %xs
}
)";

// The SGD training step of `text` (loss `loss`) and random inputs from
// `seed`, at learning rate 1e-2.
struct SgdStep {
  Graph step;
  TensorMap inputs;
};
SgdStep sgdStep(const char *text, uint64_t seed) {
  Graph step = trainStep(parseGraph(text), "loss", Optimizer::sgd());
  TensorMap inputs = randomInputs(step, seed);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  return {std::move(step), std::move(inputs)};
}

TEST(DeterminismSplitStress, TrainStepAtOneTwoThreeThreads) {
  auto [step, inputs] = sgdStep(kSplitStress, 15);
  // The kernels that would show a split: they must be split among threads
  // (else the thread count could not matter) or sum on one thread.
  auto probe = compileJit(step);
  std::set<std::string> split;
  for (const KernelSpec &kernel : probe->spec().kernels)
    if (kernel.parallelExtent > 3)
      split.insert(kernel.name);
  EXPECT_GE(split.size(), 5u) << "kernels split among threads: " << fmt::format("{}", fmt::join(split, ", "));
  expectSameBitsAtAnyThreadCount(step, inputs, 2);
}

// Dot products by row (few rows of B^T: x w^T, and dH = dZ x w2^T in the
// backward), whose threads split the columns in blocks of 64: N = 1000 at
// M = 5 (6, 5 and 5 blocks at 3 threads, the last 40 wide), N = 130 at
// M = 1, a [2,3] batch folded into 6 rows (N = 45). Each product reads its
// own weight (a transpose read by several is copied first). Each call's rows
// and columns are its own, so both register tiles give the bits of 1 thread
// at 2 and 3.
constexpr const char *kRowDots = R"(
graph row_dots {
  input %x : f32[5,77]
  input %x1 : f32[1,77]
  input %x6 : f32[2,3,77]
  param %w : f32[1000,77] = xavier_uniform(seed=1)
  param %b : f32[1000] = normal(mean=0.0, std=0.5, seed=2)
  param %w2 : f32[1000,21] = xavier_uniform(seed=3)
  param %v1 : f32[130,77] = xavier_uniform(seed=4)
  param %v6 : f32[45,77] = xavier_uniform(seed=5)
  %wt = transpose(%w) {perm=[1,0]}
  %h = linear(%x, %wt, %b)
  %t = tanh(%h)
  %z = matmul(%t, %w2)
  %zs = reduce_sum(%z) {axes=[0,1], keepdims=0}
  %vt1 = transpose(%v1) {perm=[1,0]}
  %y1 = matmul(%x1, %vt1)
  %r1 = relu(%y1)
  %s1 = reduce_sum(%r1) {axes=[0,1], keepdims=0}
  %vt6 = transpose(%v6) {perm=[1,0]}
  %y6 = matmul(%x6, %vt6)
  %s6 = reduce_mean(%y6) {axes=[0,1,2], keepdims=0}
  %l = add(%zs, %s1)
  %loss = add(%l, %s6)
  output loss = %loss
  output h = %h
  output y1 = %y1
  output y6 = %y6
}
)";

// The same bits at 1, 2 and 3 threads are also the right numbers: at 3
// threads (uneven column blocks) the interpreter agrees. Both register
// tiles.
TEST(DeterminismRowDots, TrainStepAtOneTwoThreeThreadsOnBothTiles) {
  SgdStep sgd = sgdStep(kRowDots, 16);
  stepc::testing::forEachRegisterTile([&](const codegen::RegisterTile &) {
    expectSameBitsAtAnyThreadCount(sgd.step, sgd.inputs, 2);
    stepc::testing::CompareOptions options;
    options.steps = 2;
    options.unfused = false;
    options.threads = 3;
    stepc::testing::expectMatchesInterpreter(sgd.step, sgd.inputs, initialParams(sgd.step),
                                             options);
  });
}

// The same bits are also the right numbers: the interpreter agrees within
// the usual tolerances, single-threaded and split among 3 threads.
TEST(DeterminismSplitStress, MatchesInterpreter) {
  auto [step, inputs] = sgdStep(kSplitStress, 15);
  for (int threads : {1, 3}) {
    stepc::testing::CompareOptions options;
    options.steps = 2;
    options.unfused = false;
    options.threads = threads;
    stepc::testing::expectMatchesInterpreter(step, inputs, initialParams(step), options);
  }
}

} // namespace
