// A max_pool2d in its conv2d's kernel (fusion's exception to rule "opaque",
// LoopNest::samplePool): the pool runs per sample on the conv + bias + relu
// result while it is in cache (compiler/codegen/lowering_roots.cpp,
// emitSamplePool). Against the interpreter, fused and unfused, forward and
// through a training step's gradients, at 1 and 2 threads with the same
// bits; and the plan: the CPU pools per sample, the GPU (no register tile)
// runs the pool as a nest of its own after the product.
#include "codegen_harness.h"

#include "fusion_plan.h"
#include "lowering.h"

#include "stepc/autodiff.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace stepc;

namespace {

std::vector<stepc::testing::SnippetCase> cases() {
  return stepc::testing::readSnippetCases("tests/snippets/codegen_conv_pool.sg");
}

class CodegenConvPool : public ::testing::TestWithParam<stepc::testing::SnippetCase> {};

TEST_P(CodegenConvPool, ForwardMatchesInterpreter) {
  Graph graph = parseGraph(GetParam().text);
  TensorMap inputs = randomInputs(graph, 21);
  for (int threads : {1, 2}) {
    stepc::testing::CompareOptions options;
    options.threads = threads;
    stepc::testing::expectMatchesInterpreter(graph, inputs, initialParams(graph), options);
  }
}

TEST_P(CodegenConvPool, GradientsMatchInterpreter) {
  Graph step = trainStep(parseGraph(GetParam().text), "loss", Optimizer::sgd());
  TensorMap inputs = randomInputs(step, 22);
  inputs.at("lr") = Tensor::scalar(DType::F32, 0.5);
  stepc::testing::CompareOptions options;
  options.steps = 2;
  options.threads = 2;
  stepc::testing::expectMatchesInterpreter(step, inputs, initialParams(step), options);
}

// Each call pools its own samples: the thread count never changes a bit.
TEST_P(CodegenConvPool, SameBitsAtOneAndTwoThreads) {
  Graph graph = parseGraph(GetParam().text);
  TensorMap inputs = randomInputs(graph, 23);
  std::vector<std::vector<Tensor>> runs;
  for (int threads : {1, 2}) {
    RunOptions run;
    run.threads = threads;
    auto exe = compileJit(graph, CompileOptions{.cache = false}, run);
    std::vector<Tensor> results;
    for (auto &[name, value] : exe->step(inputs))
      results.push_back(std::move(value));
    runs.push_back(std::move(results));
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) {
    ASSERT_EQ(runs[0][i].nbytes(), runs[1][i].nbytes());
    EXPECT_EQ(std::memcmp(runs[0][i].bytes(), runs[1][i].bytes(), runs[0][i].nbytes()), 0)
        << "result " << i << " differs between 1 and 2 threads";
  }
}

// Every case's kernel plan: one kernel, conv to pool; on the CPU the pool
// runs per sample after the conv's tiles (and the relu, where a case reads
// it, is stored on the tile); on the GPU the pool is a nest of its own.
TEST_P(CodegenConvPool, ThePoolRunsPerSampleOnTheCpuOnly) {
  Graph graph = parseGraph(GetParam().text);
  FusionPlan plan = planFusion(graph);
  ValueId pool = *graph.findNamed("pool");
  const FusionGroup &group = plan.groups[static_cast<size_t>(plan.groupOf[pool])];
  ASSERT_EQ(graph.node(group.nodes.front()).op, OpKind::Conv2d) << group.name;
  for (bool gpu : {false, true}) {
    SCOPED_TRACE(gpu ? "gpu" : "cpu");
    planKernels(graph, plan, codegen::kernelTarget(gpu));
    const LoopNest &product = group.kernel.nests.front();
    EXPECT_EQ(product.samplePool, gpu ? std::nullopt : std::optional<ValueId>(pool));
    EXPECT_EQ(group.kernel.nests.back().roots, std::vector<ValueId>{pool});
    EXPECT_TRUE(group.kernel.rowParallel);
  }
}

INSTANTIATE_TEST_SUITE_P(, CodegenConvPool, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// A second pool of the same activation, or an op after the pool, stays out
// of the conv's kernel: the pool must be the kernel's last word.
TEST(CodegenConvPoolPlan, OnlyOnePoolEndsTheKernel) {
  Graph graph = parseGraph(R"(graph g {
  input %x : f32[2,3,9,11]
  param %k : f32[4,3,3,3] = he_uniform(seed=1)
  %conv = conv2d(%x, %k) {dilation=[1,1], groups=1, padding=[1,1], stride=[1,1]}
  %act = relu(%conv)
  %pool = max_pool2d(%act) {kernel=[2,2], padding=[0,0], stride=[2,2]}
  %other = max_pool2d(%act) {kernel=[3,3], padding=[0,0], stride=[3,3]}
  %after = relu(%pool)
  output after = %after
  output other = %other
})");
  FusionPlan plan = planFusion(graph);
  auto groupOf = [&](const char *name) { return plan.groupOf[*graph.findNamed(name)]; };
  EXPECT_EQ(groupOf("conv"), groupOf("pool"));
  EXPECT_NE(groupOf("conv"), groupOf("other"));
  EXPECT_NE(groupOf("pool"), groupOf("after"));
  TensorMap inputs = randomInputs(graph, 24);
  stepc::testing::expectMatchesInterpreter(graph, inputs, initialParams(graph), {});
}

// A sample of the pool's input over 1 MiB (a 1x1 conv widening 8 channels
// to 512 at 64x64: 8 MiB) is not kept on the stack: the pool runs in a kernel
// of its own, and the results still match.
TEST(CodegenConvPoolPlan, AWideSampleKeepsItsPoolApart) {
  Graph graph = parseGraph(R"(graph g {
  input %x : f32[1,8,64,64]
  param %k : f32[512,8,1,1] = he_uniform(seed=1)
  %conv = conv2d(%x, %k) {dilation=[1,1], groups=1, padding=[0,0], stride=[1,1]}
  %act = relu(%conv)
  %pool = max_pool2d(%act) {kernel=[2,2], padding=[0,0], stride=[2,2]}
  output pool = %pool
})");
  FusionPlan plan = planFusion(graph);
  EXPECT_NE(plan.groupOf[*graph.findNamed("conv")], plan.groupOf[*graph.findNamed("pool")]);
  TensorMap inputs = randomInputs(graph, 25);
  stepc::testing::expectMatchesInterpreter(graph, inputs, initialParams(graph), {});
}

// A convolution's weight gradient with few output channels: each sample's
// dW += G x col^T (lowering_roots.cpp, im2col) has Cout = 3 or 5 rows, under
// both register tiles' rows, so it takes dot products by row added into dW
// (accumulate), dW's rows split among threads. Odd spatial sizes: 9x11 at
// stride 1 (K = 99 points, N = 36 taps), 4x5 at stride 2 (K = 20, N = 45).
// G is the random input r (not ones), so each column of G sums differently.
TEST(CodegenConvWeightGradient, FewOutputChannelsMatchInterpreterOnBothTiles) {
  Graph forward = parseGraph(R"(graph g {
  input %x : f32[3,4,9,11]
  input %x5 : f32[2,5,9,11]
  input %k3 : f32[3,4,3,3]
  input %k5 : f32[5,5,3,3]
  input %r3 : f32[3,3,9,11]
  input %r5 : f32[2,5,4,5]
  %c3 = conv2d(%x, %k3) {dilation=[1,1], groups=1, padding=[1,1], stride=[1,1]}
  %c5 = conv2d(%x5, %k5) {dilation=[1,1], groups=1, padding=[0,0], stride=[2,2]}
  %p3 = mul(%c3, %r3)
  %p5 = mul(%c5, %r5)
  %l3 = reduce_sum(%p3) {axes=[0,1,2,3], keepdims=0}
  %l5 = reduce_sum(%p5) {axes=[0,1,2,3], keepdims=0}
  %loss = add(%l3, %l5)
  output loss = %loss
})");
  Graph g = grad(forward, "loss", {"k3", "k5"}).graph;
  stepc::testing::expectMatchesInterpreterOnBothTiles(g, randomInputs(g, 26), {});
}

} // namespace
