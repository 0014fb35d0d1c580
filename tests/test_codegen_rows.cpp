// Row kernels (NestKind::Rows, compiler/codegen/lowering_rows.cpp): layer
// norm, softmax, log_softmax and cross-entropy, forward and gradient, each
// against the interpreter on random inputs, with rows of lengths that are
// and are not multiples of the 16 lanes, one row and many, ranks 2 to 4.
// The sums run in 16 lanes, so they round differently from the
// interpreter's sequential sums: the harness's tolerance for accumulated
// f32 values (1e-4 relative, 1e-5 absolute) bounds the difference.
#include "codegen_harness.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace stepc::testing {
namespace {

// Row lengths: 1, under one vector, a vector and a tail, whole vectors, and
// long rows with tails.
const std::vector<int64_t> kWidths = {1, 7, 17, 33, 64, 100, 257};

// Shape of rank 2, 3 or 4 (by `k`) ending in `width`, with 1 or many rows.
Shape rowsShape(size_t k, int64_t width, bool oneRow) {
  if (oneRow)
    return k % 2 ? Shape{1, width} : Shape{1, 1, width};
  switch (k % 3) {
  case 0: return {9, width};
  case 1: return {3, 5, width};
  default: return {2, 3, 2, width};
  }
}

// Every kernel of the compiled (fused) plan that reduces over the last axis
// of rows longer than 1 is one row nest (a layer norm's forward and
// backward, alone in a graph, are one kernel); with `some`, there is one.
// (Reductions over rows of length 1 are folded away by simplify.)
void expectRowKernels(const Graph &graph, bool some) {
  LoweredGraph lowered = lowerGraph(graph, {.cache = false});
  int rowKernels = 0;
  for (const FusionGroup &group : lowered.plan.groups) {
    bool lastAxis = false;
    for (ValueId v : group.nodes) {
      const Node &n = lowered.graph.node(v);
      if (n.op != OpKind::ReduceSum && n.op != OpKind::ReduceMax && n.op != OpKind::ReduceMean)
        continue;
      const Shape &in = lowered.graph.type(n.operands[0]).shape;
      int64_t last = static_cast<int64_t>(in.size()) - 1;
      lastAxis = lastAxis || (in.size() >= 2 && in.back() > 1 &&
                              n.attrs.getInts("axes") == std::vector<int64_t>{last});
    }
    if (!lastAxis)
      continue;
    ++rowKernels;
    ASSERT_EQ(group.kernel.nests.size(), 1u) << group.name;
    EXPECT_EQ(group.kernel.nests[0].kind, NestKind::Rows) << group.name;
  }
  if (some)
    EXPECT_GE(rowKernels, 1);
}

// The graph's outputs: `y` and the gradients of sum(y * weights) (random
// weights, so no gradient is zero by symmetry) with respect to `wrt`.
void outputWithGradients(GraphBuilder &b, Value y, const std::vector<Value> &wrt) {
  Value weights = b.input("weights", DType::F32, y.type().shape);
  b.output("y", y);
  std::vector<Value> grads = gradients(sum(mul(y, weights)), wrt);
  for (size_t k = 0; k < grads.size(); ++k)
    b.output(fmt::format("grad{}", k), grads[k]);
}

// Every input of the (float) graph, uniform in [-1, 1). The gradient of a
// row max (softmax's shift) is a sum over the row that cancels to near 0, so
// it carries the rounding of its summation order, about n * eps * the
// largest term: small weights keep that within the harness's 1e-5.
TensorMap randomInputsOf(const Graph &graph, uint64_t seed) {
  TensorMap inputs;
  for (ValueId id = 0; id < graph.size(); ++id)
    if (graph.node(id).op == OpKind::Input)
      inputs[graph.node(id).name] = randomTensor(DType::F32, graph.type(id).shape, seed + id);
  return inputs;
}

// `rows`: the graph has rows longer than 1 to reduce.
void expectRowsMatch(const Graph &graph, const TensorMap &inputs, bool rows = true) {
  expectRowKernels(graph, rows);
  TensorMap params = initialParams(graph);
  uint64_t seed = 7;
  for (auto &[name, value] : params)
    value = randomTensor(value.dtype(), value.shape(), ++seed, -2, 2);
  expectMatchesInterpreter(graph, inputs, params, {.unfused = false, .threads = 3});
}

TEST(CodegenRows, LayerNormForwardAndGradient) {
  for (size_t k = 0; k < kWidths.size(); ++k)
    for (bool oneRow : {false, true})
      for (bool affine : {true, false}) {
        int64_t width = kWidths[k];
        Shape shape = rowsShape(k, width, oneRow);
        SCOPED_TRACE(fmt::format("shape {}, affine {}", shapeString(shape), affine));
        GraphBuilder b("layer_norm_rows");
        Value x = b.input("x", DType::F32, shape);
        Value gamma, beta;
        if (affine) {
          gamma = b.param("gamma", DType::F32, {width}, Init::ones());
          beta = b.param("beta", DType::F32, {width}, Init::zeros());
        }
        std::vector<Value> wrt = {x};
        if (affine)
          wrt.insert(wrt.end(), {gamma, beta});
        outputWithGradients(b, layerNorm(x, gamma, beta), wrt);
        Graph graph = b.finish();
        expectRowsMatch(graph, randomInputsOf(graph, 100 + k), width > 1);
      }
}

TEST(CodegenRows, SoftmaxAndLogSoftmaxForwardAndGradient) {
  for (size_t k = 0; k < kWidths.size(); ++k)
    for (bool logarithm : {false, true}) {
      Shape shape = rowsShape(k, kWidths[k], k % 4 == 3);
      SCOPED_TRACE(fmt::format("shape {}, log {}", shapeString(shape), logarithm));
      GraphBuilder b("softmax_rows");
      Value x = b.input("x", DType::F32, shape);
      outputWithGradients(b, logarithm ? logSoftmax(x) : softmax(x), {x});
      Graph graph = b.finish();
      expectRowsMatch(graph, randomInputsOf(graph, 200 + k), kWidths[k] > 1);
    }
}

TEST(CodegenRows, CrossEntropyForwardAndGradient) {
  for (size_t k = 0; k < kWidths.size(); ++k)
    for (int64_t rows : {1, 23}) {
      int64_t width = kWidths[k];
      SCOPED_TRACE(fmt::format("{} rows of {}", rows, width));
      GraphBuilder b("cross_entropy_rows");
      Value logits = b.input("logits", DType::F32, {rows, width});
      Value labels = b.input("labels", DType::I64, {rows});
      Value loss = crossEntropy(logits, labels);
      b.output("loss", loss);
      b.output("grad", gradients(loss, {logits})[0]);
      Graph graph = b.finish();
      TensorMap inputs = {{"logits", randomTensor(DType::F32, {rows, width}, 300 + k, -3, 3)},
                          {"labels", randomTensor(DType::I64, {rows}, 400 + k, 0,
                                                  static_cast<double>(width))}};
      expectRowsMatch(graph, inputs, width > 1);
    }
}

// As in a transformer block: a matmul before the layer norm and one after,
// so its forward and its backward are kernels of their own, each one row
// nest.
TEST(CodegenRows, LayerNormBetweenMatmuls) {
  GraphBuilder b("layer_norm_matmuls");
  Value x = b.input("x", DType::F32, {2, 12, 40});
  Value w1 = b.param("w1", DType::F32, {40, 48}, Init::ones());
  Value gamma = b.param("gamma", DType::F32, {48}, Init::ones());
  Value beta = b.param("beta", DType::F32, {48}, Init::zeros());
  Value w2 = b.param("w2", DType::F32, {48, 24}, Init::ones());
  Value h = layerNorm(matmul(x, w1), gamma, beta);
  outputWithGradients(b, matmul(h, w2), {w1, gamma, beta, w2});
  Graph graph = b.finish();
  LoweredGraph lowered = lowerGraph(graph, {.cache = false});
  int rowKernels = 0;
  for (const FusionGroup &group : lowered.plan.groups)
    rowKernels += group.kernel.nests.size() == 1 && group.kernel.nests[0].kind == NestKind::Rows;
  EXPECT_EQ(rowKernels, 2);
  expectRowsMatch(graph, randomInputsOf(graph, 500));
}

// f64 rows: the plan's row nest, emitted as one nest per root (the vector
// paths are f32).
TEST(CodegenRows, LayerNormF64) {
  GraphBuilder b("layer_norm_f64");
  Value x = b.input("x", DType::F64, {6, 19});
  Value gamma = b.param("gamma", DType::F64, {19}, Init::ones());
  Value y = layerNorm(x, gamma, Value());
  b.output("y", y);
  b.output("grad", gradients(sum(mul(y, y)), {x})[0]);
  Graph graph = b.finish();
  expectRowsMatch(graph, {{"x", randomTensor(DType::F64, {6, 19}, 13)}});
}

// Rows of large values: the row pass subtracts the max before exp, else exp
// overflows.
TEST(CodegenRows, SoftmaxOfLargeLogits) {
  GraphBuilder b("softmax_large");
  Value x = b.input("x", DType::F32, {5, 37});
  b.output("y", softmax(x));
  Graph graph = b.finish();
  expectRowsMatch(graph, {{"x", randomTensor(DType::F32, {5, 37}, 11, 80, 120)}});
}

} // namespace
} // namespace stepc::testing
