// Recomputing cheap activations in the backward pass
// (compiler/passes/activation_recompute.cpp): the interpreter gives the same
// results bit for bit before and after the pass (GELU MLP, layer norm,
// tanh/sigmoid chains at odd shapes), CSE keeps the copies apart, graphs
// without a backward pass are left alone, the compiled step matches the
// interpreter, and the GELU forward matmul kernel stores only `up` and `act`
// with its epilogue on the register tile.
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/passes.h"
#include "stepc/train.h"

#include "lowered_graph.h"
#include "lowering.h"
#include "testing.h"

#include <gtest/gtest.h>

#include <string>

using namespace stepc;
using stepc::testing::allClose;

namespace {

Graph pipelined(Graph step) {
  PassManager pipeline;
  for (const std::string &name : defaultPipeline(true))
    pipeline.add(name);
  pipeline.run(step);
  return step;
}

// A GELU MLP at odd sizes: x [batch, tokens, width] -> up [.., hidden] ->
// gelu -> down [.., width], mean squared error; its Adam step.
Graph geluStep(int64_t batch, int64_t tokens, int64_t width, int64_t hidden) {
  GraphBuilder b("gelu_mlp");
  Value x = b.input("x", DType::F32, {batch, tokens, width});
  Value target = b.input("t", DType::F32, {batch, tokens, width});
  Value wUp = b.param("w_up", DType::F32, {width, hidden}, Init::xavierUniform(1));
  Value bUp = b.param("b_up", DType::F32, {hidden}, Init::xavierUniform(2));
  Value wDown = b.param("w_down", DType::F32, {hidden, width}, Init::xavierUniform(3));
  Value up = matmul(x, wUp) + bUp;
  Value down = matmul(gelu(up), wDown);
  b.output("loss", mean(square(down - target)));
  return pipelined(trainStep(b.finish(), "loss", Optimizer::adam()));
}

// A matmul, layer norm, a matmul and a tanh * sigmoid gate, a matmul:
// x [rows, width] -> [rows, 5].
Graph layerNormStep(int64_t rows, int64_t width) {
  GraphBuilder b("ln_gate");
  Value x = b.input("x", DType::F32, {rows, width});
  Value target = b.input("t", DType::F32, {rows, 5});
  Value w0 = b.param("w0", DType::F32, {width, width}, Init::xavierUniform(3));
  Value gamma = b.param("gamma", DType::F32, {width}, Init::xavierUniform(4));
  Value beta = b.param("beta", DType::F32, {width}, Init::xavierUniform(5));
  Value w = b.param("w", DType::F32, {width, width}, Init::xavierUniform(6));
  Value w2 = b.param("w2", DType::F32, {width, 5}, Init::xavierUniform(7));
  Value z = matmul(layerNorm(matmul(x, w0), gamma, beta), w);
  Value h = tanh(z) * sigmoid(z);
  b.output("loss", mean(square(matmul(h, w2) - target)));
  return pipelined(trainStep(b.finish(), "loss", Optimizer::sgd()));
}

// Three layers of tanh(sigmoid(z) * z) with a residual: chains of several
// elementwise ops between matmuls.
Graph chainStep(int64_t rows, int64_t width) {
  GraphBuilder b("chains");
  Value x = b.input("x", DType::F32, {rows, width});
  Value target = b.input("t", DType::F32, {rows, width});
  Value h = x;
  for (int i = 1; i <= 3; ++i) {
    Value w = b.param("w" + std::to_string(i), DType::F32, {width, width},
                      Init::xavierUniform(10 + i));
    Value z = matmul(h, w);
    h = h + tanh(sigmoid(z) * z);
  }
  b.output("loss", mean(square(h - target)));
  Optimizer momentum;
  momentum.kind = Optimizer::Kind::Momentum;
  return pipelined(trainStep(b.finish(), "loss", momentum));
}

int copiesIn(const Graph &graph) {
  int copies = 0;
  for (const Node &node : graph.nodes)
    copies += node.attrs.has("remat");
  return copies;
}

struct StepCase {
  const char *name;
  Graph (*make)();
};

const StepCase kSteps[] = {
    {"gelu_3x5x7_h13", [] { return geluStep(3, 5, 7, 13); }},
    {"gelu_2x9x16_h40", [] { return geluStep(2, 9, 16, 40); }},
    {"layer_norm_11x6", [] { return layerNormStep(11, 6); }},
    {"chains_7x19", [] { return chainStep(7, 19); }},
};

// GoogleTest prints a case by its name.
void PrintTo(const StepCase &c, std::ostream *out) { *out << c.name; }

class ActivationRecompute : public ::testing::TestWithParam<StepCase> {};

TEST_P(ActivationRecompute, SameResultsBitForBitAndCseKeepsTheCopies) {
  Graph step = GetParam().make();
  Graph after = step;
  ASSERT_TRUE(recomputeCheapActivations(after, true));
  verify(after);
  int copies = copiesIn(after);
  EXPECT_GT(copies, 0);
  stepc::testing::expectSameSemantics(step, after);
  // The remat marks keep CSE from merging the copies into the originals.
  Graph merged = stepc::testing::optimized(after, {"cse"});
  EXPECT_EQ(copiesIn(merged), copies);
  stepc::testing::expectSameSemantics(step, merged);
}

// Fewer bytes written by the kernels, and the planned peak no larger.
TEST_P(ActivationRecompute, StoresLessAndKeepsNoMoreAlive) {
  Graph step = GetParam().make();
  Graph after = step;
  ASSERT_TRUE(recomputeCheapActivations(after, true));
  auto written = [](const Graph &g) {
    int64_t bytes = 0;
    for (const FusionGroup &group : planFusion(g).groups)
      bytes += group.bytesWritten;
    return bytes;
  };
  EXPECT_LT(written(after), written(step));
  EXPECT_LE(plannedPeak(after, true), plannedPeak(step, true));
}

INSTANTIATE_TEST_SUITE_P(Steps, ActivationRecompute, ::testing::ValuesIn(kSteps),
                         [](const auto &info) { return std::string(info.param.name); });

// The model alone and its gradient graph have no backward pass to serve
// (every value the gradients read is an output's ancestor).
TEST(ActivationRecomputeRule, GraphsWithoutParamUpdatesAreLeftAlone) {
  GraphBuilder b("gelu");
  Value x = b.input("x", DType::F32, {3, 7});
  Value w = b.param("w", DType::F32, {7, 5}, Init::xavierUniform(1));
  b.output("y", gelu(matmul(x, w)));
  Graph model = b.finish();
  Graph after = model;
  EXPECT_FALSE(recomputeCheapActivations(after, true));
  EXPECT_EQ(after.size(), model.size());
}

// The compiled step (which runs the pass) against the interpreter.
TEST(ActivationRecomputeRule, CompiledStepMatchesTheInterpreter) {
  Graph step = geluStep(3, 5, 7, 13);
  TensorMap inputs = stepc::testing::inputsFor(step, 11);
  TensorMap params = initialParams(step);
  TensorMap expected = interpretStep(step, inputs, params);
  auto exe = compileJit(step, {.cache = false});
  std::map<std::string, Tensor> outputs = exe->step(inputs);
  for (const auto &[name, value] : expected)
    EXPECT_TRUE(allClose(outputs.at(name), value, 1e-5, 1e-6)) << name;
  for (const auto &[name, value] : params)
    EXPECT_TRUE(allClose(exe->param(name), value, 1e-5, 1e-6)) << "param " << name;
}

// The kernel computing the forward GELU (its original tanh) and the one
// computing the copy of it.
struct GeluKernels {
  const FusionGroup *forward = nullptr, *backward = nullptr;
};
GeluKernels geluKernels(const Graph &graph, const FusionPlan &plan) {
  GeluKernels k;
  for (ValueId v = 0; v < graph.size(); ++v) {
    if (graph.node(v).op != OpKind::Tanh || plan.groupOf[v] < 0)
      continue;
    const FusionGroup *group = &plan.groups[plan.groupOf[v]];
    (graph.node(v).attrs.has("remat") ? k.backward : k.forward) = group;
  }
  return k;
}

int fullSizeOutputs(const Graph &graph, const FusionGroup &group, const Shape &shape) {
  int n = 0;
  for (ValueId v : group.outputs)
    n += graph.type(v).shape == shape;
  return n;
}

bool epilogueOnTile(const FusionGroup &group) {
  for (const LoopNest &nest : group.kernel.nests)
    if (nest.kind == NestKind::Contraction)
      return !nest.epilogue.empty();
  return false;
}

// In the compile's plan, the GELU forward matmul kernel stores up and act
// (the next matmul and the weight gradient read act) and nothing else of
// full size, on the register tile; the backward matmul kernel rebuilds
// tanh from up in its own epilogue. Without the pass the forward stores
// five such tensors (on its tile too: kernel_plan.cpp's tileEpilogue).
TEST(ActivationRecomputeRule, GeluForwardKernelStoresUpAndActOnItsTile) {
  Graph step = geluStep(2, 9, 16, 40);
  Shape hidden{2, 9, 40};
  LoweredGraph lowered = lowerGraph(step, {.fusion = true});
  GeluKernels after = geluKernels(lowered.graph, lowered.plan);
  ASSERT_NE(after.forward, nullptr);
  ASSERT_NE(after.backward, nullptr);
  EXPECT_NE(after.forward->hero, -1) << after.forward->name;
  EXPECT_LE(fullSizeOutputs(lowered.graph, *after.forward, hidden), 2) << after.forward->name;
  EXPECT_TRUE(epilogueOnTile(*after.forward)) << after.forward->name;
  EXPECT_NE(after.backward->hero, -1) << after.backward->name;
  EXPECT_TRUE(epilogueOnTile(*after.backward)) << after.backward->name;

  Graph unchanged = pipelined(step);
  FusionPlan plan = planFusion(unchanged);
  planKernels(unchanged, plan, codegen::kernelTarget(false));
  GeluKernels without = geluKernels(unchanged, plan);
  ASSERT_NE(without.forward, nullptr);
  EXPECT_GT(fullSizeOutputs(unchanged, *without.forward, hidden), 3);
}

} // namespace
