// Gradients against finite differences: every differentiable op and composite
// (the cases in compiler/autodiff/gradcheck_cases.cpp), second derivatives
// (grad of grad), and whole example models. Seeds are fresh per run and
// printed on failure; set STEPC_TEST_SEED to replay one.
#include "gradcheck.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/random.h"
#include "stepc/text.h"

#include "testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

using namespace stepc;

namespace stepc {
// gtest prints a failing parameter with this instead of its bytes.
void PrintTo(const GradcheckCase &c, std::ostream *os) { *os << c.name << " (" << c.op << ")"; }
} // namespace stepc

namespace {

constexpr DType F64 = DType::F64;

std::string seedNote(uint64_t seed) {
  return fmt::format("seed {} (replay with STEPC_TEST_SEED={})", seed, seed);
}

::testing::AssertionResult passed(const GradcheckReport &report) {
  if (report.passed && report.elementsChecked > 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "checked " << report.elementsChecked << " elements; worst scaled error "
         << report.worstError << " at " << report.worstWhere;
}

// --- Coverage: the op list decides what must be checked -------------------

TEST(GradcheckCoverage, EveryDifferentiableOpHasACaseOrAnExclusion) {
  std::set<std::string, std::less<>> covered;
  for (const GradcheckCase &c : gradcheckCases())
    covered.insert(c.op);
  for (const OpInfo &op : allOps()) {
    if (!op.is(kDifferentiable))
      continue;
    auto excluded = std::ranges::find(gradcheckExclusions(), op.name, &GradcheckExclusion::op);
    if (excluded != gradcheckExclusions().end())
      continue;
    EXPECT_TRUE(covered.contains(op.name))
        << "differentiable op '" << op.name
        << "' has no case in gradcheck_cases.cpp (add one, or an exclusion with its reason)";
  }
}

TEST(GradcheckCoverage, ExclusionsNameDifferentiableOpsAndSayWhy) {
  for (const GradcheckExclusion &e : gradcheckExclusions()) {
    auto op = findOp(e.op);
    ASSERT_TRUE(op.has_value()) << "excluded op '" << e.op << "' is not in ops.def";
    EXPECT_TRUE(opInfo(*op).is(kDifferentiable))
        << "'" << e.op << "' is not differentiable; drop its exclusion";
    EXPECT_FALSE(e.reason.empty()) << e.op;
  }
}

TEST(GradcheckCoverage, EveryCompositeHasACase) {
  std::set<std::string, std::less<>> covered;
  for (const GradcheckCase &c : gradcheckCases())
    covered.insert(c.op);
  for (std::string_view composite : {"softmax", "log_softmax", "cross_entropy", "layer_norm",
                                     "attention", "gelu", "leaky_relu", "mse", "linear"}) {
    EXPECT_TRUE(isComposite(composite)) << composite;
    EXPECT_TRUE(covered.contains(composite)) << "composite '" << composite << "' has no case";
  }
}

TEST(GradcheckCoverage, CasesAreWellFormed) {
  std::set<std::string> names;
  for (const GradcheckCase &c : gradcheckCases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate case name";
    EXPECT_TRUE(findOp(c.op) || isComposite(c.op)) << "unknown op '" << c.op << "'";
    Graph g = c.build();
    auto loss = g.findOutput("loss");
    ASSERT_TRUE(loss.has_value());
    EXPECT_EQ(g.type(*loss), (TensorType{F64, {}}));
    EXPECT_TRUE(g.params().empty());
    for (ValueId id : g.inputs())
      EXPECT_LE(g.type(id).numel(), 128) << g.node(id).name;
    // The point covers exactly the inputs, with their types, reproducibly.
    TensorMap point = c.point(g, 7);
    EXPECT_EQ(point.size(), g.inputs().size());
    for (ValueId id : g.inputs())
      EXPECT_EQ(point.at(g.node(id).name).type(), g.type(id)) << g.node(id).name;
    EXPECT_TRUE(point == c.point(g, 7)) << "the point is not a function of the seed";
  }
}

// --- Every case against finite differences --------------------------------

class OpGradcheck : public ::testing::TestWithParam<GradcheckCase> {};

TEST_P(OpGradcheck, MatchesFiniteDifferences) {
  const GradcheckCase &c = GetParam();
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  Graph graph = c.build();
  EXPECT_TRUE(passed(gradcheck(graph, "loss", c.point(graph, seed), {})));
}

std::string caseName(const ::testing::TestParamInfo<GradcheckCase> &info) {
  std::string name = info.param.name;
  std::ranges::replace_if(
      name, [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(Cases, OpGradcheck, ::testing::ValuesIn(gradcheckCases()), caseName);

// --- Second order: grad of grad ---------------------------------------------

// p(x) = x^3 - 2x^2 + x: p' = 3x^2 - 4x + 1, p'' = 6x - 4, p''' = 6.
TEST(SecondOrder, PolynomialDerivativesAreExact) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  GraphBuilder b("poly");
  Value x = b.input("x", F64, {});
  Value p = x * x * x - 2.0 * x * x + x;
  Value d1 = gradients(p, {x})[0];
  Value d2 = gradients(d1, {x})[0];
  Value d3 = gradients(d2, {x})[0];
  b.output("p", p);
  b.output("d1", d1);
  b.output("d2", d2);
  b.output("d3", d3);
  Graph graph = b.finish();
  for (uint64_t k = 0; k < 5; ++k) {
    double v = -2 + 4 * randomUniform(seed, k);
    TensorMap out = interpret(graph, {{"x", Tensor::scalar(F64, v)}}, {});
    EXPECT_NEAR(out.at("d1").real(0), 3 * v * v - 4 * v + 1, 1e-12) << "x = " << v;
    EXPECT_NEAR(out.at("d2").real(0), 6 * v - 4, 1e-12) << "x = " << v;
    EXPECT_NEAR(out.at("d3").real(0), 6, 1e-12) << "x = " << v;
  }
}

TEST(SecondOrder, PolynomialGradientGraphPassesGradcheck) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  for (int order : {1, 2}) {
    GraphBuilder b("poly");
    Value x = b.input("x", F64, {});
    Value d = x * x * x - 2.0 * x * x + x;
    for (int i = 0; i < order; ++i)
      d = gradients(d, {x})[0];
    b.output("loss", d); // gradcheck differentiates the derivative once more
    Graph graph = b.finish();
    TensorMap point{{"x", Tensor::scalar(F64, -2 + 4 * randomUniform(seed, order))}};
    EXPECT_TRUE(passed(gradcheck(graph, "loss", point, {}))) << "order " << order;
  }
}

// tanh'' = -2 tanh (1 - tanh^2), through sum(v * d/dx sum(w * tanh(x))).
TEST(SecondOrder, Tanh) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  Tensor xs = stepc::testing::randomTensor(F64, {6}, seed, -2, 2);
  Tensor ws = stepc::testing::randomTensor(F64, {6}, seed + 1);
  Tensor vs = stepc::testing::randomTensor(F64, {6}, seed + 2);
  GraphBuilder b("tanh2");
  Value x = b.input("x", F64, {6});
  Value w = constantData(b, ws.reals(), F64, {6});
  Value v = constantData(b, vs.reals(), F64, {6});
  Value gx = gradients(sum(tanh(x) * w), {x})[0];
  Value loss = sum(gx * v);
  Value hx = gradients(loss, {x})[0];
  b.output("loss", loss);
  b.output("hx", hx);
  Graph graph = b.finish();

  TensorMap out = interpret(graph, {{"x", xs}}, {});
  for (int64_t i = 0; i < 6; ++i) {
    double t = std::tanh(xs.real(i));
    EXPECT_NEAR(out.at("hx").real(i), -2 * t * (1 - t * t) * ws.real(i) * vs.real(i), 1e-12);
  }
  EXPECT_TRUE(passed(gradcheck(graph, "loss", {{"x", xs}}, {})));
}

// A tiny tanh MLP f(w); Hv = d/dw (g(w) . v) against (g(w + e v) - g(w - e v)) / 2e.
TEST(SecondOrder, MlpHessianVectorProduct) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  const std::vector<std::pair<std::string, Shape>> weights = {
      {"w1", {3, 4}}, {"b1", {4}}, {"w2", {4, 2}}};
  GraphBuilder b("mlp_hvp");
  std::vector<Value> ws, vs;
  for (const auto &[name, shape] : weights)
    ws.push_back(b.input(name, F64, shape));
  for (const auto &[name, shape] : weights)
    vs.push_back(b.input("v_" + name, F64, shape));
  Value x = constantData(b, stepc::testing::randomTensor(F64, {5, 3}, seed).reals(), F64, {5, 3});
  Value y =
      constantData(b, stepc::testing::randomTensor(F64, {5, 2}, seed + 1).reals(), F64, {5, 2});
  Value f = mse(linear(tanh(linear(x, ws[0], ws[1])), ws[2], Value()), y);
  std::vector<Value> g = gradients(f, ws);
  Value gv = sum(g[0] * vs[0]) + sum(g[1] * vs[1]) + sum(g[2] * vs[2]);
  std::vector<Value> hv = gradients(gv, ws);
  for (size_t i = 0; i < weights.size(); ++i) {
    b.output("g_" + weights[i].first, g[i]);
    b.output("hv_" + weights[i].first, hv[i]);
  }
  b.output("loss", gv);
  Graph graph = b.finish();

  TensorMap point;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto &[name, shape] = weights[i];
    point[name] = stepc::testing::randomTensor(F64, shape, seed + 10 + i);
    point["v_" + name] = stepc::testing::randomTensor(F64, shape, seed + 20 + i);
  }
  const double eps = 1e-5;
  auto shifted = [&](double sign) {
    TensorMap p = point;
    for (const auto &[name, shape] : weights)
      for (int64_t k = 0; k < p[name].numel(); ++k)
        p[name].setReal(k, p[name].real(k) + sign * eps * point["v_" + name].real(k));
    return interpret(graph, p, {});
  };
  TensorMap at = interpret(graph, point, {}), plus = shifted(1), minus = shifted(-1);
  for (const auto &[name, shape] : weights) {
    const Tensor &hv = at.at("hv_" + name);
    for (int64_t k = 0; k < hv.numel(); ++k) {
      double fd = (plus.at("g_" + name).real(k) - minus.at("g_" + name).real(k)) / (2 * eps);
      EXPECT_NEAR(hv.real(k), fd, 1e-7 * std::max(1.0, std::abs(fd))) << name << "[" << k << "]";
    }
  }
  // And Hv itself, as the gradient of g . v, against finite differences.
  std::vector<std::string> wrt;
  for (const auto &[name, shape] : weights)
    wrt.push_back(name);
  EXPECT_TRUE(passed(gradcheck(graph, "loss", point, {}, wrt)));
}

// --- Whole models ------------------------------------------------------------

// An example model with its batch dimension cut down: the same layers and
// initializers, but each of the ~60 interpreter runs of a check is faster
// (the MLP at batch 128 takes ~9 s here), and fewer elements sit near a kink.
Graph exampleWithBatch(const std::string &file, int64_t batch, int64_t smaller) {
  std::ifstream in(stepc::testing::sourcePath("examples/" + file));
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  int replaced = 0;
  for (std::string suffix : {",", "]"}) {
    std::string from = fmt::format("[{}{}", batch, suffix),
                to = fmt::format("[{}{}", smaller, suffix);
    for (size_t at; (at = text.find(from)) != std::string::npos; ++replaced)
      text.replace(at, from.size(), to);
  }
  if (replaced < 2)
    throw std::runtime_error(fmt::format("examples/{} no longer has batch {}", file, batch));
  return parseGraph(text, file);
}

// Every input and parameter, `samples` elements of each, in f64. A kink
// (relu at 0, two max-pool candidates within the step) inside the step of
// the point spoils finite differences at random points, rarely but really
// for ReLU nets; a wrong gradient is wrong at every step, so a failure is
// checked again with a 100x smaller step before it counts.
GradcheckReport checkModel(const Graph &graph, uint64_t seed, int64_t samples) {
  TensorMap inputs = randomInputs(graph, seed), params = initialParams(graph);
  GradcheckReport report =
      gradcheck(graph, "loss", inputs, params, {}, {.maxElementsPerTensor = samples});
  if (report.passed)
    return report;
  GradcheckReport again =
      gradcheck(graph, "loss", inputs, params, {}, {.step = 1e-8, .maxElementsPerTensor = samples});
  if (!again.passed)
    again.worstWhere += fmt::format(" (with step 1e-6: {})", report.worstWhere);
  return again;
}

TEST(ModelGradcheck, Mlp) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  EXPECT_TRUE(passed(checkModel(exampleWithBatch("mlp.sg", 128, 16), seed, 4)));
}

TEST(ModelGradcheck, Cnn) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  EXPECT_TRUE(passed(checkModel(exampleWithBatch("cnn.sg", 32, 8), seed, 6)));
}

TEST(ModelGradcheck, Attention) {
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(seedNote(seed));
  Graph graph = parseGraphFile(stepc::testing::sourcePath("examples/attention.sg"));
  EXPECT_TRUE(passed(checkModel(graph, seed, 8)));
}

} // namespace
