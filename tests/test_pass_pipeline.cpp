// Every pass and the default pipeline keep the results of snippets, random
// graphs, every example and its training steps (testing.h).
#include "stepc/builder.h"
#include "stepc/passes.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include "testing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

using namespace stepc;
using namespace stepc::testing;

namespace {

// Snippets that the passes of the default pipeline rewrite together.
const bool registered =
    registerRewriteTests("Pipeline", defaultPipeline(false), "tests/snippets/pass_pipeline.sg");

// --- random graphs ------------------------------------------------------------

// A random graph over two float inputs, an integer input and constants that
// the rules look for (0, 1, -0, splats and data): every pass must keep its
// results. Ops whose result depends on the sign of a zero (div, rsqrt, pow)
// are left out, since x + 0 -> x may turn a -0 into +0 (see simplify.cpp).
Graph randomGraph(uint64_t seed, DType floatType) {
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  GraphBuilder b("random");
  std::vector<Value> pool = {b.input("x", floatType, {2, 3}), b.input("y", floatType, {3}),
                             b.input("n", DType::I32, {2, 3})};
  const std::vector<Shape> shapes = {{}, {3}, {2, 3}};
  auto addConstant = [&] {
    DType dtype = pick(3) == 0 ? DType::I32 : floatType;
    Shape shape = shapes[pick(shapes.size())];
    const double values[] = {0.0, 1.0, 2.0, -0.0, 0.5}; // the last two for floats
    double v = values[pick(dtype == DType::I32 ? 3 : 5)];
    if (pick(4) == 0) {
      std::vector<double> data(checkedNumel(shape), v);
      data[0] = pick(2) ? v : 3.0;
      return constantData(b, data, dtype, shape);
    }
    if (pick(6) == 0)
      return iota(b, dtype, {2, 3}, 1);
    return constant(b, v, dtype, shape);
  };
  struct Choice {
    OpKind op;
    int arity;
    Attrs attrs;
  };
  const std::vector<Choice> menu = {
      {OpKind::Neg, 1, {}},
      {OpKind::Abs, 1, {}},
      {OpKind::Exp, 1, {}},
      {OpKind::Tanh, 1, {}},
      {OpKind::Add, 2, {}},
      {OpKind::Sub, 2, {}},
      {OpKind::Mul, 2, {}},
      {OpKind::Maximum, 2, {}},
      {OpKind::Transpose, 1, {{"perm", std::vector<int64_t>{1, 0}}}},
      {OpKind::Reshape, 1, {{"shape", std::vector<int64_t>{3, 2}}}},
      {OpKind::Reshape, 1, {{"shape", std::vector<int64_t>{2, 3}}}},
      {OpKind::Reshape, 1, {{"shape", std::vector<int64_t>{-1}}}},
      {OpKind::BroadcastTo, 1, {{"shape", std::vector<int64_t>{2, 3}}}},
      {OpKind::BroadcastTo, 1, {{"shape", std::vector<int64_t>{2, 2, 3}}}},
      {OpKind::ReduceSum, 1, {{"axes", std::vector<int64_t>{0}}, {"keepdims", int64_t(0)}}},
      {OpKind::Cast, 1, {{"dtype", std::string(dtypeName(floatType))}}},
      {OpKind::Cast, 1, {{"dtype", std::string("i32")}}},
  };
  SourceLoc loc("random.sg", 1, 1);
  for (int added = 0, tries = 0; added < 30 && tries < 1000; ++tries) {
    if (pick(4) == 0) {
      pool.push_back(addConstant());
      continue;
    }
    const Choice &c = menu[pick(menu.size())];
    // Recent values more often, so chains (neg of neg, reshape of reshape)
    // form; sometimes the same value twice (x - x).
    auto operand = [&] {
      return pool[pool.size() - 1 - pick(std::min<size_t>(pool.size(), 6))];
    };
    std::vector<Value> operands;
    for (int i = 0; i < c.arity; ++i)
      operands.push_back(i == 1 && pick(4) == 0 ? operands[0] : operand());
    try {
      pool.push_back(b.op(c.op, operands, c.attrs, loc));
      ++added;
    } catch (const Error &) {
      // Shapes or dtypes that do not fit this op: draw again.
    }
  }
  // The last values and a few earlier ones are outputs; the rest may be dead.
  for (size_t i = 0; i < 4; ++i)
    b.output("out" + std::to_string(i),
             i < 2 ? pool[pool.size() - 1 - i] : pool[3 + pick(pool.size() - 3)]);
  return b.finish();
}

TEST(RandomGraphs, EveryPassKeepsTheResults) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (STEPC_TEST_SEED to replay)");
  std::vector<std::vector<std::string>> configs;
  for (std::string_view name : passNames())
    configs.push_back({std::string(name)});
  configs.push_back(defaultPipeline(false));
  std::map<std::string, int> changed; // graphs each pass changed, by pass
  for (uint64_t i = 0; i < 200; ++i) {
    Graph graph = randomGraph(seed + i, i % 2 ? DType::F32 : DType::F64);
    TensorMap inputs = inputsFor(graph, seed + i);
    Results expected = runGraph(graph, inputs, {});
    for (const std::vector<std::string> &passes : configs) {
      Graph after = graph;
      PassManager manager;
      for (const std::string &name : passes)
        manager.add(name);
      std::vector<PassStats> stats = manager.run(after);
      if (passes.size() == 1 && stats[0].changed)
        ++changed[passes[0]];
      SCOPED_TRACE(::testing::Message() << "graph " << i << ", passes " << passes[0] << "...\n"
                                        << printGraph(graph) << "after:\n"
                                        << printGraph(after));
      expectSameResults(runGraph(after, inputs, {}), expected);
      if (::testing::Test::HasFailure())
        return;
    }
  }
  // The rules do fire on these graphs.
  for (std::string_view name : passNames())
    EXPECT_GE(changed[std::string(name)], 20) << name;
}

// --- every example and its training step -----------------------------------------

Graph adamStep(const Graph &model) {
  return trainStep(model, "loss", Optimizer::adam()); // lr is an input
}

// Each pass alone and the default pipeline, against one run of the original.
void checkEveryPass(const Graph &graph) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (STEPC_TEST_SEED to replay)");
  TensorMap inputs = inputsFor(graph, seed);
  TensorMap params = initialParams(graph);
  Results expected = runGraph(graph, inputs, params);

  std::vector<std::pair<std::string, std::vector<std::string>>> configs;
  for (std::string_view name : passNames())
    configs.push_back({std::string(name), {std::string(name)}});
  configs.push_back({"default pipeline", defaultPipeline(!graph.updates.empty())});
  for (const auto &[label, passes] : configs) {
    SCOPED_TRACE(label);
    Graph after = optimized(graph, passes);
    EXPECT_LE(after.size(), graph.size());
    // The result is a valid .sg file that reads back as itself.
    EXPECT_EQ(printGraph(parseSnippet(printGraph(after))), printGraph(after));
    // An unchanged graph needs no second run (this keeps mlp's step fast).
    if (!(after == graph))
      expectSameResults(runGraph(after, inputs, params), expected);
  }
}

class ExampleGraph : public ::testing::TestWithParam<std::string> {};

// The slowest, mlp's training step, runs the interpreter 4 times (simplify
// and dce leave it unchanged): about 1 s in a Release build on an idle
// machine, 0.25 s a run.
TEST_P(ExampleGraph, ModelKeepsItsResults) { checkEveryPass(loadExample(GetParam())); }

TEST_P(ExampleGraph, TrainingStepKeepsItsResults) {
  checkEveryPass(adamStep(loadExample(GetParam())));
}

TEST_P(ExampleGraph, PipelineReachesAFixedPoint) {
  // Running the pipeline on its own output changes nothing, and it shrinks
  // every training step (it has constants to fold and duplicates to merge).
  for (bool training : {false, true}) {
    Graph model = loadExample(GetParam());
    Graph graph = training ? adamStep(model) : model;
    Graph once = optimized(graph, defaultPipeline(training));
    PassManager again;
    for (const std::string &name : defaultPipeline(training))
      again.add(name);
    Graph twice = once;
    for (const PassStats &s : again.run(twice))
      EXPECT_FALSE(s.changed) << s.pass << (training ? " on the training step" : "");
    EXPECT_EQ(printGraph(twice), printGraph(once));
    if (training)
      EXPECT_LT(once.size(), graph.size());
  }
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleGraph, ::testing::ValuesIn(exampleNames()),
                         [](const auto &info) { return info.param; });

TEST(Examples, OtherOptimizersToo) {
  // SGD with momentum and clipping, AdamW with a schedule: different update
  // graphs, same guarantee.
  Graph model = loadExample("xor");
  Optimizer momentum{.kind = Optimizer::Kind::Momentum, .clipNorm = 1.0};
  Optimizer adamw = Optimizer::adamw();
  adamw.schedule.kind = Schedule::Kind::Cosine;
  adamw.schedule.totalSteps = 10;
  for (const Optimizer &opt : {momentum, adamw}) {
    SCOPED_TRACE(optimizerName(opt.kind));
    Graph step = trainStep(model, "loss", opt);
    Graph after = optimized(step, defaultPipeline(true));
    EXPECT_LT(after.size(), step.size());
    expectSameSemantics(step, after);
  }
}

} // namespace
