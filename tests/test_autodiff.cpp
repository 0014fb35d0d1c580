// Structural properties of grad(): which nodes it adds, what it does with
// values the loss does not depend on, its errors, where gradient nodes say
// they come from, and the PyTorch conventions at kinks and ties. Values are
// checked in gradcheck's tests; here the inputs are exact small numbers.
#include "testing.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace stepc;
using namespace stepc::testing;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

namespace {

constexpr DType F64 = DType::F64;

Tensor f64(Shape shape, std::vector<double> values) {
  return Tensor::of<double>(std::move(shape), values);
}

// The nodes grad() appended to `before`.
std::vector<const Node *> addedNodes(const Graph &before, const Graph &after) {
  std::vector<const Node *> out;
  for (size_t i = before.size(); i < after.size(); ++i)
    out.push_back(&after.nodes[i]);
  return out;
}

bool isZeroConstant(const Node &node) {
  if (node.op != OpKind::Constant)
    return false;
  if (node.attrs.has("value"))
    return node.attrs.getReal("value") == 0;
  for (double v : node.attrs.getReals("data"))
    if (v != 0)
      return false;
  return true;
}

Graph parse(std::string_view text) { return parseGraph(text, "t.sg"); }

// --- Which nodes get gradients -----------------------------------------------

// loss = sum(x * c); with `branch`, x also feeds another output.
Graph branchGraph(bool branch) {
  return parse(branch ? R"(graph g {
    input %x : f64[2,3]
    %c = constant() {data=[1,2,3,4,5,6], dtype=f64, shape=[2,3]}
    %side = exp(%x)
    %side2 = tanh(%side)
    %xc = mul(%x, %c)
    %loss = reduce_sum(%xc) {axes=[0,1], keepdims=0}
    output side = %side2
    output loss = %loss
  })"
                      : R"(graph g {
    input %x : f64[2,3]
    %c = constant() {data=[1,2,3,4,5,6], dtype=f64, shape=[2,3]}
    %xc = mul(%x, %c)
    %loss = reduce_sum(%xc) {axes=[0,1], keepdims=0}
    output loss = %loss
  })");
}

TEST(GradStructure, BranchFeedingOnlyAnotherOutputAddsNothing) {
  Graph plain = branchGraph(false), branched = branchGraph(true);
  GradResult gp = grad(plain, "loss", {"x"}), gb = grad(branched, "loss", {"x"});
  EXPECT_EQ(gb.graph.size() - branched.size(), gp.graph.size() - plain.size());
  ValueId side = *branched.findNamed("side"), side2 = *branched.findNamed("side2");
  for (const Node *node : addedNodes(branched, gb.graph)) {
    EXPECT_NE(node->op, OpKind::Exp);
    for (ValueId operand : node->operands)
      EXPECT_TRUE(operand != side && operand != side2) << printGraph(gb.graph);
  }
  EXPECT_TRUE(gb.warnings.empty());
}

TEST(GradStructure, NoZeroTensorsAreMaterialized) {
  // A smooth graph: not a single zero constant; a graph with kinks: only the
  // scalar zeros its select-based rules compare against, never a zero tensor.
  Graph smooth = parse(R"(graph g {
    input %x : f64[2,3]
    input %w : f64[3,4]
    input %z : f64[4]
    %h = matmul(%x, %w)
    %t = tanh(%h)
    %u = add(%t, %z)
    %e = exp(%z)
    %s = mul(%u, %e)
    %m = reduce_mean(%s) {axes=[0,1], keepdims=0}
    output loss = %m
  })");
  GradResult gs = grad(smooth, "loss", {"x", "w", "z"});
  for (const Node *node : addedNodes(smooth, gs.graph))
    EXPECT_FALSE(isZeroConstant(*node)) << printGraph(gs.graph);

  Graph kinks = parse(R"(graph g {
    input %x : f64[2,3]
    input %y : f64[2,3]
    %r = relu(%x)
    %m = maximum(%r, %y)
    %m4 = reshape(%m) {shape=[1,1,2,3]}
    %p = max_pool2d(%m4) {kernel=[1,2], padding=[0,0], stride=[1,1]}
    %l = reduce_max(%p) {axes=[0,1,2,3], keepdims=0}
    output loss = %l
  })");
  GradResult gk = grad(kinks, "loss", {"x", "y"});
  for (const Node *node : addedNodes(kinks, gk.graph)) {
    if (isZeroConstant(*node))
      EXPECT_TRUE(node->type.shape.empty()) << printGraph(gk.graph);
  }
}

TEST(GradStructure, InputsOutsideWrtGetNoGradientNodes) {
  // z reaches the loss, but only x is asked for: nothing is built for z's side
  // of the sub, concat or add (no neg of the incoming gradient, no slices).
  Graph graph = parse(R"(graph g {
    input %x : f64[2,3]
    input %z : f64[2,3]
    %ez = exp(%z)
    %d = sub(%x, %ez)
    %c = concat(%d, %ez) {axis=0}
    %z4 = reduce_sum(%z) {axes=[0], keepdims=0}
    %b = add(%c, %z4)
    %l = reduce_sum(%b) {axes=[0,1], keepdims=0}
    output loss = %l
  })");
  GradResult g = grad(graph, "loss", {"x"});
  std::vector<const Node *> added = addedNodes(graph, g.graph);
  for (const Node *node : added) {
    EXPECT_NE(node->op, OpKind::Neg) << printGraph(g.graph);
    EXPECT_NE(node->op, OpKind::Exp) << printGraph(g.graph);
  }
  // grad_x = slice of the broadcast seed: every added node is needed for it.
  TensorMap out = interpret(
      g.graph, {{"x", f64({2, 3}, {0, 0, 0, 0, 0, 0})}, {"z", f64({2, 3}, {0, 0, 0, 0, 0, 0})}},
      {});
  EXPECT_EQ(out.at("grad_x"), f64({2, 3}, {1, 1, 1, 1, 1, 1}));
}

TEST(GradStructure, WrtTheLossDoesNotDependOnIsZerosWithAWarning) {
  GraphBuilder b("g");
  Value x = b.input("x", F64, {3});
  b.input("unused", F64, {2, 3});
  Value side = b.input("side", F64, {4});
  b.output("other", exp(side));
  b.output("loss", sum(x * x));
  Graph graph = b.finish();
  GradResult g = grad(graph, "loss", {"x", "unused", "side"});
  ASSERT_EQ(g.warnings.size(), 2u);
  EXPECT_THAT(g.warnings[0], AllOf(HasSubstr("'unused'"), HasSubstr("zero")));
  EXPECT_THAT(g.warnings[1], HasSubstr("'side'"));
  const Node &zeros = g.graph.node(*g.graph.findOutput("grad_unused"));
  EXPECT_EQ(zeros.op, OpKind::Constant);
  EXPECT_EQ(zeros.type, (TensorType{F64, {2, 3}}));
  EXPECT_TRUE(isZeroConstant(zeros));
  TensorMap out = interpret(
      g.graph,
      {{"x", f64({3}, {1, 2, 3})}, {"unused", Tensor(F64, {2, 3})}, {"side", Tensor(F64, {4})}},
      {});
  EXPECT_EQ(out.at("grad_x"), f64({3}, {2, 4, 6}));
  EXPECT_EQ(out.at("grad_side"), Tensor(F64, {4}));
}

TEST(GradStructure, WrtDeclaredAfterTheLossIsZeros) {
  GraphBuilder b("g");
  Value x = b.input("x", F64, {2});
  Value loss = sum(x);
  Value late = b.input("late", F64, {3});
  std::vector<std::string> warnings;
  std::vector<Value> g = gradients(loss, {x, late}, &warnings);
  EXPECT_EQ(g[1].shape(), (Shape{3}));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("'late'"));
}

// --- Errors --------------------------------------------------------------------

TEST(GradErrors, LossMustBeAFloatScalar) {
  Graph graph = parse(R"(graph g {
    input %x : f64[3]
    input %i : i32[]
    %v = exp(%x)
    %s = reduce_sum(%x) {axes=[0], keepdims=0}
    output vec = %v
    output count = %i
    output loss = %s
  })");
  EXPECT_THAT(errorOf([&] { grad(graph, "vec", {"x"}); }),
              AllOf(HasSubstr("'v'"), HasSubstr("floating-point scalar"), HasSubstr("f64[3]")));
  EXPECT_THAT(errorOf([&] { grad(graph, "count", {"x"}); }),
              AllOf(HasSubstr("'i'"), HasSubstr("floating-point scalar"), HasSubstr("i32[]")));
  EXPECT_THAT(errorOf([&] { grad(graph, "nope", {"x"}); }),
              AllOf(HasSubstr("no output 'nope'"), HasSubstr("vec, count, loss")));
}

TEST(GradErrors, IntegerWrtIsAnError) {
  Graph graph = parse(R"(graph g {
    input %table : f64[5,2]
    input %ids : i32[4]
    %e = gather(%table, %ids) {axis=0}
    %l = reduce_sum(%e) {axes=[0,1], keepdims=0}
    output loss = %l
  })");
  EXPECT_THAT(errorOf([&] {
                grad(graph, "loss", {"table", "ids"});
              }),
              AllOf(HasSubstr("with respect to 'ids'"), HasSubstr("i32[4]")));
  EXPECT_THAT(errorOf([&] { grad(graph, "loss", {"tabel"}); }),
              HasSubstr("no value named 'tabel'"));
}

// --- Accumulation and broadcasting ---------------------------------------------

TEST(GradValues, FanOutContributionsAreSummed) {
  // x is used three times: x*a, exp(x), x*x.
  GraphBuilder b("g");
  Value x = b.input("x", F64, {3});
  Value a = constantData(b, {0.5, -1, 2}, F64, {3});
  b.output("loss", sum(x * a) + sum(exp(x)) + sum(x * x));
  GradResult g = grad(b.finish(), "loss", {"x"});
  std::vector<double> xs = {0.25, -0.5, 1};
  Tensor gx = interpret(g.graph, {{"x", f64({3}, xs)}}, {}).at("grad_x");
  std::vector<double> as = {0.5, -1, 2};
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_DOUBLE_EQ(gx.real(i), as[i] + std::exp(xs[i]) + 2 * xs[i]);
}

TEST(GradValues, BroadcastingIsUndone) {
  GraphBuilder b("g");
  Value x = b.input("x", F64, {3, 1});
  Value y = b.input("y", F64, {1, 4});
  Value z = b.input("z", F64, {4});
  Value s = b.input("s", F64, {});
  std::vector<double> w(12);
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = double(i) - 5.5;
  b.output("loss", sum((x * y + z + s) * constantData(b, w, F64, {3, 4})));
  GradResult g = grad(b.finish(), "loss", {"x", "y", "z", "s"});
  std::vector<double> xs = {1, 2, 3}, ys = {-1, 0.5, 2, 4};
  TensorMap out = interpret(g.graph,
                            {{"x", f64({3, 1}, xs)},
                             {"y", f64({1, 4}, ys)},
                             {"z", f64({4}, {0, 0, 0, 0})},
                             {"s", Tensor::scalar(F64, 0)}},
                            {});
  std::vector<double> gx(3, 0), gy(4, 0), gz(4, 0);
  double gs = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      double wij = w[i * 4 + j];
      gx[i] += wij * ys[j];
      gy[j] += wij * xs[i];
      gz[j] += wij;
      gs += wij;
    }
  EXPECT_EQ(out.at("grad_x"), f64({3, 1}, gx));
  EXPECT_EQ(out.at("grad_y"), f64({1, 4}, gy));
  EXPECT_EQ(out.at("grad_z"), f64({4}, gz));
  EXPECT_EQ(out.at("grad_s"), Tensor::scalar(F64, gs));
}

// --- Gradient graphs are ordinary graphs -----------------------------------------

constexpr std::string_view kSmallNet = R"(graph net {
  input %x : f64[2,1,4,4]
  input %ids : i32[3]
  input %y : i32[2]
  param %k : f64[2,1,3,3] = normal(mean=0.0, std=0.5, seed=1)
  param %table : f64[5,8] = normal(mean=0.0, std=0.5, seed=2)
  param %w : f64[8,3] = xavier_uniform(seed=3)
  %c = conv2d(%x, %k) {dilation=[1,1], groups=1, padding=[1,1], stride=[1,1]}
  %r = relu(%c)
  %p = max_pool2d(%r) {kernel=[2,2], padding=[0,0], stride=[2,2]}
  %a = avg_pool2d(%p) {count_include_pad=0, kernel=[2,2], padding=[1,1], stride=[2,2]}
  %f = reshape(%a) {shape=[2,8]}
  %e = gather(%table, %ids) {axis=0}
  %es = reduce_mean(%e) {axes=[0], keepdims=1}
  %h = add(%f, %es)
  %s = slice(%h) {limits=[2,8], starts=[0,1], strides=[1,2]}
  %q = pad(%s) {high=[0,1], low=[0,3], value=0.0}
  %n = layer_norm(%q)
  %logits = linear(%n, %w)
  %loss = cross_entropy(%logits, %y)
  output loss = %loss
})";

TEST(GradGraph, PrintsAndParsesBackEqual) {
  Graph graph = parse(kSmallNet);
  GradResult g = grad(graph, "loss");
  ASSERT_EQ(g.graph.outputs.size(), 4u);
  std::string text = printGraph(g.graph);
  Graph reparsed = parseGraph(text, "grad.sg");
  EXPECT_TRUE(reparsed == g.graph) << text;
  EXPECT_EQ(printGraph(reparsed), text);
  verify(g.graph);
}

TEST(GradGraph, NodesCarryTheForwardNodesLocation) {
  Graph graph = parse(kSmallNet);
  GradResult g = grad(graph, "loss");
  // Which forward ops sit on each line of the source.
  std::map<int, std::set<std::string, std::less<>>> opsOnLine;
  for (const Node &node : graph.nodes)
    opsOnLine[node.loc.line].insert(std::string(opInfo(node.op).name));
  const SourceLoc &lossLoc = graph.node(*graph.findOutput("loss")).loc;
  std::set<int> linesWithGradients;
  for (const Node *node : addedNodes(graph, g.graph)) {
    EXPECT_EQ(node->loc.file, "t.sg");
    if (node->loc.origin.empty()) {
      // Only the seed d loss / d loss = 1 carries the loss's plain location.
      EXPECT_EQ(node->op, OpKind::Constant);
      EXPECT_EQ(node->loc.line, lossLoc.line);
      continue;
    }
    ASSERT_THAT(node->loc.origin, HasSubstr("gradient of "));
    std::string op = node->loc.origin.substr(std::string("gradient of ").size());
    EXPECT_TRUE(opsOnLine[node->loc.line].contains(op))
        << "node " << opInfo(node->op).name << " says '" << node->loc.origin << "' at "
        << node->loc.str() << ", where no " << op << " is";
    linesWithGradients.insert(node->loc.line);
  }
  // Every forward line between a param and the loss produced gradient nodes.
  for (std::string_view name : {"c", "r", "p", "a", "e", "h", "s", "q", "n", "logits", "loss"})
    EXPECT_TRUE(linesWithGradients.contains(graph.node(*graph.findNamed(name)).loc.line)) << name;
  // Composites' primitives share the composite's line: "gradient of exp" sits
  // on the cross_entropy line.
  const SourceLoc &ce = graph.node(*graph.findNamed("loss")).loc;
  bool found = false;
  for (const Node *node : addedNodes(graph, g.graph))
    found = found || (node->loc.line == ce.line && node->loc.origin == "gradient of exp");
  EXPECT_TRUE(found);
}

// --- PyTorch's conventions at kinks and ties -----------------------------------

// d loss / d each input of a graph with output "loss", at exact values.
TensorMap gradAt(const Graph &graph, const TensorMap &inputs) {
  std::vector<std::string> wrt;
  for (ValueId id : graph.inputs())
    if (isFloat(graph.type(id).dtype))
      wrt.push_back(graph.node(id).name);
  return interpret(grad(graph, "loss", wrt).graph, inputs, {});
}

std::vector<double> gradOf(const TensorMap &out, const std::string &name) {
  return out.at("grad_" + name).reals();
}

TEST(TieConventions, ReluAndAbsHaveZeroDerivativeAtZero) {
  GraphBuilder b("g");
  Value x = b.input("x", F64, {3});
  b.output("loss", sum(relu(x)) + 2.0 * sum(abs(x)) + 4.0 * sum(leakyRelu(x, 0.125)));
  TensorMap out = gradAt(b.finish(), {{"x", f64({3}, {-1, 0, 2})}});
  // relu: 0 0 1; 2 * abs: -2 0 2; 4 * leaky_relu: 0.5 0.5 4 (slope at 0, as PyTorch).
  EXPECT_THAT(gradOf(out, "x"), ElementsAre(-1.5, 0.5, 7));
}

TEST(TieConventions, MaximumAndMinimumSplitTiesEvenly) {
  GraphBuilder b("g");
  Value a = b.input("a", F64, {3});
  Value c = b.input("c", F64, {3});
  Value s = b.input("s", F64, {});
  b.output("loss", sum(maximum(a, c)) + 10.0 * sum(minimum(a, c)) + 100.0 * sum(maximum(a, s)));
  TensorMap out = gradAt(
      b.finish(),
      {{"a", f64({3}, {1, 2, 3})}, {"c", f64({3}, {1, 0, 5})}, {"s", Tensor::scalar(F64, 2)}});
  // max(a, c): a 0.5 1 0, c 0.5 0 1; 10 min(a, c): a 5 0 10, c 5 10 0;
  // 100 max(a, s=2): a 0 50 100, s 100 + 50.
  EXPECT_THAT(gradOf(out, "a"), ElementsAre(5.5, 51, 110));
  EXPECT_THAT(gradOf(out, "c"), ElementsAre(5.5, 10, 1));
  EXPECT_THAT(gradOf(out, "s"), ElementsAre(150));
}

TEST(TieConventions, ReduceMaxAndMinShareTiesEvenly) {
  GraphBuilder b("g");
  Value x = b.input("x", F64, {2, 3});
  Value y = b.input("y", F64, {2, 2});
  b.output("loss", sum(max(x, {1})) + max(y) + 10.0 * min(y));
  TensorMap out = gradAt(
      b.finish(), {{"x", f64({2, 3}, {1, 3, 3, 2, 0, -1})}, {"y", f64({2, 2}, {3, -1, 3, 3})}});
  EXPECT_THAT(gradOf(out, "x"), ElementsAre(0, 0.5, 0.5, 1, 0, 0));
  EXPECT_THAT(gradOf(out, "y"), ElementsAreArray({1.0 / 3, 10.0, 1.0 / 3, 1.0 / 3}));
}

TEST(TieConventions, MaxPoolSendsTiesToTheFirstMaximum) {
  GraphBuilder b("g");
  Value x = b.input("x", F64, {1, 1, 2, 4});
  Value z = b.input("z", F64, {1, 1, 1, 3});
  b.output("loss",
           sum(maxPool2d(x)) + 10.0 * sum(maxPool2d(z, {.kernel = {1, 2}, .stride = {1, 1}})));
  TensorMap out = gradAt(b.finish(), {{"x", f64({1, 1, 2, 4}, {1, 1, 0, 0, 1, 1, 0, -1})},
                                      {"z", f64({1, 1, 1, 3}, {2, 2, 2})}});
  // Row-major first maximum of each window.
  EXPECT_THAT(gradOf(out, "x"), ElementsAre(1, 0, 1, 0, 0, 0, 0, 0));
  // Overlapping windows [0,1] and [1,2] of equal values: elements 0 and 1.
  EXPECT_THAT(gradOf(out, "z"), ElementsAre(10, 10, 0));
}

} // namespace
