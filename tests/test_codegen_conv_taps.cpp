// Stride-1 convolutions whose output is as wide as their input, the shapes
// a micro-kernel can read straight from the input with shifted, masked
// loads instead of an im2col buffer, and a few controls that keep im2col
// (tests/snippets/codegen_conv_taps.sg), compiled fused. Against the
// interpreter: forward on both register tiles at 1 and 2 threads, which
// must give the same bits; and the gradients with respect to the input,
// the weights, the bias and the residual. The conv with nothing on its tile
// is the cases without an epilogue.
#include "codegen_harness.h"

#include "stepc/autodiff.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace stepc;

namespace {

std::vector<stepc::testing::SnippetCase> cases() {
  return stepc::testing::readSnippetCases("tests/snippets/codegen_conv_taps.sg");
}

class CodegenConvTaps : public ::testing::TestWithParam<stepc::testing::SnippetCase> {};

// `graph` compiled fused, run once at `threads` threads: its outputs.
std::map<std::string, Tensor> runFused(const Graph &graph, const TensorMap &inputs,
                                       const TensorMap &params, int threads) {
  auto exe = compileJit(graph, CompileOptions{.cache = false}, RunOptions{.threads = threads});
  for (const std::string &name : exe->paramNames())
    exe->setParam(name, params.at(name));
  return exe->step(inputs);
}

// On each register tile (their tiles end at different columns), at 1 and 2
// threads: each call computes whole samples, so the thread count never
// changes a bit.
TEST_P(CodegenConvTaps, ForwardMatchesInterpreterWithTheSameBitsAtOneAndTwoThreads) {
  Graph graph = parseGraph(GetParam().text);
  TensorMap inputs = randomInputs(graph, 31);
  TensorMap params = initialParams(graph);
  TensorMap expected = interpret(graph, inputs, params);
  stepc::testing::forEachRegisterTile([&](const codegen::RegisterTile &) {
    std::vector<std::map<std::string, Tensor>> runs;
    for (int threads : {1, 2}) {
      runs.push_back(runFused(graph, inputs, params, threads));
      for (const GraphOutput &out : graph.outputs)
        EXPECT_TRUE(stepc::testing::matches(runs.back().at(out.name), expected.at(out.name),
                                            stepc::testing::toleranceFor(graph, out.value)))
            << "output " << out.name << " at " << threads << " threads";
    }
    for (const GraphOutput &out : graph.outputs) {
      const Tensor &one = runs[0].at(out.name), &two = runs[1].at(out.name);
      ASSERT_EQ(one.nbytes(), two.nbytes()) << out.name;
      EXPECT_EQ(std::memcmp(one.bytes(), two.bytes(), one.nbytes()), 0)
          << "output " << out.name << " differs between 1 and 2 threads";
    }
  });
}

// d loss / d every value the case feeds in but r (the loss's weights): the
// backward reads the forward's relu mask and pool choices, and dX and dW are
// products of their own (Conv2dGradInput, Conv2dGradWeight).
TEST_P(CodegenConvTaps, GradientsMatchInterpreter) {
  Graph forward = parseGraph(GetParam().text);
  std::vector<std::string> wrt;
  for (ValueId v : forward.inputs())
    if (forward.node(v).name != "r")
      wrt.push_back(forward.node(v).name);
  for (ValueId v : forward.params())
    wrt.push_back(forward.node(v).name);
  Graph g = grad(forward, "loss", wrt).graph;
  stepc::testing::CompareOptions options;
  options.unfused = false;
  options.threads = 2;
  stepc::testing::expectMatchesInterpreter(g, randomInputs(g, 32), initialParams(g), options);
}

// The text of function @name in the module.
std::string functionText(const std::string &mlir, const std::string &name) {
  size_t at = mlir.find("func.func @" + name + "(");
  if (at == std::string::npos)
    return "";
  size_t next = mlir.find("func.func @", at + 1);
  return mlir.substr(at, next == std::string::npos ? std::string::npos : next - at);
}

// Whether the body of a kernel whose name holds `kernel` takes each lane's
// image column, a vector<16xi32> remainder: only the taps do (ConvTaps,
// tiled_matmul.h). Kernels call their body, which same-shaped kernels share.
bool kernelReadsTaps(const std::string &mlir, const std::string &kernel) {
  for (size_t at = mlir.find("func.func @"); at != std::string::npos;
       at = mlir.find("func.func @", at + 1)) {
    std::string name = mlir.substr(at + 11, mlir.find('(', at) - at - 11);
    if (name.find(kernel) == std::string::npos)
      continue;
    std::string function = functionText(mlir, name);
    size_t call = function.find("call @");
    if (call == std::string::npos)
      continue;
    std::string body = functionText(mlir, function.substr(call + 6, function.find('(', call) - call - 6));
    std::istringstream lines(body);
    for (std::string line; std::getline(lines, line);)
      if (line.find("arith.remui") != std::string::npos &&
          line.find("vector<16xi32>") != std::string::npos)
        return true;
  }
  return false;
}

// The forward conv and its input gradient read their input (x, dY) in
// place unless the case is a control.
TEST_P(CodegenConvTaps, ReadsTheInputInPlaceUnlessAControl) {
  Graph forward = parseGraph(GetParam().text);
  bool taps = !GetParam().name.starts_with("control_");
  EXPECT_EQ(kernelReadsTaps(lowerGraph(forward, {.cache = false}).mlirModule, "conv2d"), taps);
  Graph backward = grad(forward, "loss", {"x"}).graph;
  EXPECT_EQ(kernelReadsTaps(lowerGraph(backward, {.cache = false}).mlirModule,
                            "conv2d_grad_input"),
            taps);
}

INSTANTIATE_TEST_SUITE_P(, CodegenConvTaps, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// A conv of 1-3 samples (bias, relu, pool after it): threads split its
// (sample, block of the register tile's rows of channels) units, whatever
// the register tile; each channel's values are the interpreter's and the
// same bits at any thread count, and a perturbed kernel shifts each even
// element once (`stepc bisect-fusion`).
std::string fewSamplesConv(int64_t samples) {
  return fmt::format(R"(graph g {{
  input %x : f32[{},5,13,11]
  param %k : f32[21,5,3,3] = he_uniform(seed=1)
  param %c : f32[21] = normal(mean=0.0, std=0.5, seed=2)
  %conv = conv2d(%x, %k) {{dilation=[1,1], groups=1, padding=[1,1], stride=[1,1]}}
  %bias = reshape(%c) {{shape=[21,1,1]}}
  %pre = add(%conv, %bias)
  %act = relu(%pre)
  %pool = max_pool2d(%act) {{kernel=[2,2], padding=[0,0], stride=[2,2]}}
  output y = %pool
  output z = %act
}})",
                     samples);
}

TEST(CodegenConvUnits, FewSamplesSplitTheirChannelsBetweenThreads) {
  stepc::testing::forEachRegisterTile([](const codegen::RegisterTile &tile) {
    for (int64_t samples : {1, 3, 4}) {
      SCOPED_TRACE(fmt::format("{} samples", samples));
      Graph graph = parseGraph(fewSamplesConv(samples));
      LoweredGraph lowered = lowerGraph(graph, {.cache = false});
      ASSERT_EQ(lowered.spec.kernels.size(), 1u);
      int64_t blocks = (21 + tile.rows - 1) / tile.rows;
      EXPECT_EQ(lowered.spec.kernels[0].parallelExtent, samples < 4 ? samples * blocks : samples);
      if (samples == 4)
        continue;
      TensorMap inputs = randomInputs(graph, 41);
      TensorMap params = initialParams(graph);
      TensorMap expected = interpret(graph, inputs, params);
      std::vector<std::map<std::string, Tensor>> runs;
      for (int threads : {1, 3}) {
        runs.push_back(runFused(graph, inputs, params, threads));
        for (const GraphOutput &out : graph.outputs) {
          EXPECT_TRUE(stepc::testing::matches(runs.back().at(out.name), expected.at(out.name),
                                              stepc::testing::toleranceFor(graph, out.value)))
              << out.name << " at " << threads << " threads";
          EXPECT_EQ(std::memcmp(runs.back().at(out.name).bytes(), runs[0].at(out.name).bytes(),
                                runs[0].at(out.name).nbytes()),
                    0)
              << out.name << " differs between 1 and " << threads << " threads";
        }
      }
    }
  });
}

TEST(CodegenConvUnits, PerturbedKernelShiftsEachEvenElementOnce) {
  Graph graph = parseGraph(fewSamplesConv(3));
  stepc::testing::expectPerturbationShiftsEachEvenElementOnce(graph, randomInputs(graph, 43), 0,
                                                              {"y", "z"});
}

} // namespace
