// Column kernels (NestKind::Columns, compiler/codegen/lowering_columns.cpp):
// reductions over leading axes (bias and layer-norm parameter gradients)
// with the elementwise roots after them (an Adam update), against the
// interpreter on random inputs, at 1, 2 and 3 threads, with column counts
// that are and are not multiples of the 16 lanes, one row and many, ranks 2
// to 4, keepdims or not. Each output element is summed in the interpreter's
// order by one thread, so the bits must not depend on the thread count.
#include "codegen_harness.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <optional>

namespace stepc::testing {
namespace {

// The kernels of the compiled (fused) plan that are one Columns nest.
int columnKernels(const Graph &graph) {
  LoweredGraph lowered = lowerGraph(graph, {.cache = false});
  int count = 0;
  for (const FusionGroup &group : lowered.plan.groups)
    count += group.kernel.nests.size() == 1 && group.kernel.nests[0].kind == NestKind::Columns;
  return count;
}

// Every output of `steps` steps and every param after them, compiled fused
// and run at `threads` threads.
std::vector<Tensor> runCompiled(const Graph &graph, const TensorMap &inputs,
                                const TensorMap &params, int threads, int steps) {
  auto exe = compileJit(graph, {.cache = false}, RunOptions{.threads = threads});
  for (const std::string &name : exe->paramNames())
    exe->setParam(name, params.at(name));
  std::vector<Tensor> results;
  for (int s = 0; s < steps; ++s)
    for (auto &[name, value] : exe->step(inputs))
      results.push_back(std::move(value));
  for (const std::string &name : exe->paramNames())
    results.push_back(exe->param(name));
  return results;
}

// Matches the interpreter at 1, 2 and 3 threads (3 oversubscribes two cores
// on purpose), and 2 and 3 threads give the bits of 1.
void expectColumnsMatch(const Graph &graph, const TensorMap &inputs, const TensorMap &params,
                        int steps = 1) {
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(fmt::format("{} threads", threads));
    expectMatchesInterpreter(graph, inputs, params,
                             {.steps = steps, .unfused = false, .threads = threads});
  }
  std::vector<Tensor> one = runCompiled(graph, inputs, params, 1, steps);
  for (int threads : {2, 3}) {
    std::vector<Tensor> many = runCompiled(graph, inputs, params, threads, steps);
    ASSERT_EQ(many.size(), one.size());
    for (size_t k = 0; k < one.size(); ++k)
      EXPECT_EQ(std::memcmp(many[k].bytes(), one[k].bytes(), one[k].nbytes()), 0)
          << "result " << k << " at " << threads << " threads differs from 1 thread";
  }
}

TensorMap randomParams(const Graph &graph, uint64_t seed) {
  TensorMap params = initialParams(graph);
  for (auto &[name, value] : params)
    value = randomTensor(value.dtype(), value.shape(), ++seed, -2, 2);
  return params;
}

struct ReductionCase {
  Shape shape;
  std::vector<int64_t> axes; // leading
};

// Rows: 1, 7, 1023 and products of small ones; columns 1, 5, 17, 257, 1000
// and trailing blocks of several axes ([3,5], [5,17], [2,4,33]).
const std::vector<ReductionCase> kCases = {
    {{1, 5}, {0}},          {{7, 17}, {0}},         {{1023, 257}, {0}},
    {{7, 1000}, {0}},       {{1023, 1}, {0}},       {{3, 5, 17}, {0, 1}},
    {{2, 7, 257}, {0, 1}},  {{7, 3, 5}, {0}},       {{2, 3, 5, 17}, {0, 1}},
    {{3, 2, 4, 33}, {0}},   {{5, 2, 3, 7}, {0, 1, 2}},
};

// sum, mean, max or min over the leading axes, then elementwise roots of
// the reduced shape (y * 2 + tanh(y)) and of the full shape (x times y
// broadcast back), as a layer norm's parameter gradients and the gradient
// passed on are.
TEST(CodegenColumns, ReductionsWithEpiloguesMatchInterpreter) {
  for (size_t k = 0; k < kCases.size(); ++k)
    for (bool keepdims : {false, true}) {
      const ReductionCase &c = kCases[k];
      int kind = static_cast<int>(k + (keepdims ? 1 : 0)) % 4;
      SCOPED_TRACE(fmt::format("{} over {} of {}, keepdims {}", kind, fmt::join(c.axes, ","),
                               shapeString(c.shape), keepdims));
      GraphBuilder b("columns");
      Value x = b.input("x", DType::F32, c.shape);
      Value t = tanh(mul(x, x) + x);
      Axes axes(c.axes);
      Value y = kind == 0   ? sum(t, axes, keepdims)
                : kind == 1 ? mean(t, axes, keepdims)
                : kind == 2 ? max(t, axes, keepdims)
                            : min(t, axes, keepdims);
      b.output("reduced", y * 2.0 + tanh(y));
      b.output("scaled", mul(x, y));
      Graph graph = b.finish();
      EXPECT_GE(columnKernels(graph), 1);
      expectColumnsMatch(graph, {{"x", randomTensor(DType::F32, c.shape, 100 + k)}}, {});
    }
}

// Adam on a scale and a bias broadcast over the leading axes: their
// gradients are the reductions (over axis 0, axes 0 and 1, or 0 to 2) and
// the update runs on the reduced columns in the same kernel; two steps.
TEST(CodegenColumns, AdamOnScaleAndBiasMatchesInterpreter) {
  const std::vector<std::pair<Shape, Shape>> kShapes = {
      {{1023, 5}, {5}}, {{2, 7, 17}, {17}}, {{3, 5, 1000}, {1000}},
      {{2, 3, 4, 33}, {33}}, {{3, 2, 4, 33}, {4, 33}}, {{7, 257}, {257}}};
  for (size_t k = 0; k < kShapes.size(); ++k) {
    const auto &[shape, columns] = kShapes[k];
    SCOPED_TRACE(fmt::format("{} with parameters {}", shapeString(shape), shapeString(columns)));
    GraphBuilder b("columns_adam");
    Value x = b.input("x", DType::F32, shape);
    Value weights = b.input("weights", DType::F32, shape);
    Value scale = b.param("scale", DType::F32, columns, Init::ones());
    Value bias = b.param("bias", DType::F32, columns, Init::zeros());
    b.output("loss", sum(mul(tanh(mul(x, scale) + bias), weights)));
    Graph step = trainStep(b.finish(), "loss", Optimizer::adam());
    EXPECT_GE(columnKernels(step), 1);
    TensorMap inputs = {{"x", randomTensor(DType::F32, shape, 200 + k)},
                        {"weights", randomTensor(DType::F32, shape, 300 + k)},
                        {"lr", Tensor::scalar(DType::F32, 1e-2)}};
    expectColumnsMatch(step, inputs, randomParams(step, 400 + k), 2);
  }
}

// The gradient of a broadcast bias, compiled, against the interpreter's.
TEST(CodegenColumns, BiasGradientMatchesInterpreter) {
  GraphBuilder b("bias_gradient");
  Value x = b.input("x", DType::F32, {5, 9, 37});
  Value bias = b.param("bias", DType::F32, {37}, Init::zeros());
  Value y = tanh(x + bias);
  b.output("grad", gradients(sum(mul(y, y)), {bias})[0]);
  Graph graph = b.finish();
  EXPECT_GE(columnKernels(graph), 1);
  expectColumnsMatch(graph, {{"x", randomTensor(DType::F32, {5, 9, 37}, 17)}},
                     randomParams(graph, 18));
}

// Leading axes written as negative ones (axes=[-3,-2] of a rank-3 tensor,
// as hand-written graphs and ONNX's ReduceSum give them; the graph holds
// them normalized from Graph::add on, so the plan sees [0,1]), in any
// order, ranks 2 to 4, keepdims or not: still a column kernel.
TEST(CodegenColumns, NegativeLeadingAxesAreColumnKernels) {
  const std::vector<std::pair<Shape, std::string>> kNegative = {
      {{7, 33}, "[-2]"},          {{5, 9, 17}, "[-3,-2]"},     {{5, 9, 17}, "[-2,-3]"},
      {{3, 5, 7, 19}, "[-4]"},    {{3, 5, 7, 19}, "[-3,0,-2]"}, {{3, 5, 7, 19}, "[0,-3]"},
  };
  for (size_t k = 0; k < kNegative.size(); ++k)
    for (bool keepdims : {false, true}) {
      const auto &[shape, axes] = kNegative[k];
      std::string text = fmt::format(R"(graph g {{
  input %x : f32[{}]
  %t = tanh(%x)
  %s = {}(%t) {{axes={}, keepdims={}}}
  %y = mul(%s, %s)
  output y = %y
}})",
                                     fmt::join(shape, ","), k % 2 == 0 ? "reduce_sum" : "reduce_mean",
                                     axes, keepdims ? 1 : 0);
      SCOPED_TRACE(text);
      Graph graph = parseGraph(text);
      EXPECT_EQ(columnKernels(graph), 1);
      expectMatchesInterpreter(graph, {{"x", randomTensor(DType::F32, shape, 40 + k)}}, {},
                               {.unfused = false, .threads = 2});
    }
}

// f64 has no 16-lane form: the same columns, one element at a time.
TEST(CodegenColumns, F64MatchesInterpreter) {
  for (bool keepdims : {false, true}) {
    GraphBuilder b("columns_f64");
    Value x = b.input("x", DType::F64, {3, 7, 19});
    Value y = sum(square(x), {0, 1}, keepdims);
    b.output("y", sqrt(y) + y);
    b.output("m", mean(x, {0}, keepdims));
    Graph graph = b.finish();
    EXPECT_GE(columnKernels(graph), 1);
    expectColumnsMatch(graph, {{"x", randomTensor(DType::F64, {3, 7, 19}, 21)}}, {});
  }
}

// Fault injection (`stepc bisect-fusion`): a perturbed column kernel adds
// the amount to the elements at even flat indices of each output once,
// whichever thread owns their columns.
TEST(CodegenColumns, PerturbedKernelShiftsEachEvenElementOnce) {
  GraphBuilder b("columns_perturbed");
  Value x = b.input("x", DType::F32, {9, 5, 37});
  Value y = sum(tanh(x), {0, 1});
  b.output("y", y * 3.0);
  b.output("z", x * y);
  Graph graph = b.finish();
  LoweredGraph lowered = lowerGraph(graph, {.cache = false});
  std::optional<size_t> columns;
  for (size_t k = 0; k < lowered.plan.groups.size(); ++k)
    if (lowered.plan.groups[k].kernel.nests.front().kind == NestKind::Columns)
      columns = k;
  ASSERT_TRUE(columns.has_value());
  TensorMap inputs = {{"x", randomTensor(DType::F32, {9, 5, 37}, 3)}};
  expectPerturbationShiftsEachEvenElementOnce(graph, inputs, *columns, {"y", "z"});
}

} // namespace
} // namespace stepc::testing
