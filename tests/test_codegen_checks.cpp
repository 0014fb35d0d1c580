// Edge cases the interpreter rejects must be rejected by compiled code too,
// in the same words: an index out of range in gather, scatter_add or
// cross_entropy's labels (checked in the kernel, reported by the runtime
// with the op, its source location, the value and the valid range), and an
// argmax over an empty axis (rejected by its shape rule). Where the
// interpreter defines a value (reductions over nothing, one_hot's zero row)
// compiled code must give the same one. The CUDA path is checked in
// test_codegen_gpu.cpp (emulation and fake driver).
#include "codegen_harness.h"
#include "sg_corpus.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"
#include "testing.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace stepc;
using stepc::testing::corpusText;
using stepc::testing::errorOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace {

std::unique_ptr<Executable> compile(const Graph &graph, bool fusion, int threads = 0) {
  return compileJit(graph, CompileOptions{.fusion = fusion, .cache = false},
                    RunOptions{.threads = threads});
}

Tensor indices(DType dtype, const Shape &shape, const std::vector<int64_t> &values) {
  Tensor t(TensorType{dtype, shape});
  for (size_t i = 0; i < values.size(); ++i)
    t.setReal(static_cast<int64_t>(i), static_cast<double>(values[i]));
  return t;
}

bool sameBytes(const Tensor &a, const Tensor &b) {
  return a.type() == b.type() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

// Equal values, NaNs equal whatever their bits.
bool sameValues(const Tensor &a, const Tensor &b) {
  if (a.type() != b.type())
    return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.real(i) != b.real(i) && !(std::isnan(a.real(i)) && std::isnan(b.real(i))))
      return false;
  return true;
}

// The interpreter's message, then where the compiled step stopped.
void expectReportedLikeInterpreter(const std::string &interpreted, const std::string &compiled,
                                   int64_t step = 0) {
  EXPECT_THAT(compiled, StartsWith(interpreted + "\n  in kernel k"));
  EXPECT_THAT(compiled, HasSubstr(fmt::format(
                            ", step {}; params are left as they were before step {}", step,
                            step)));
}

// The interpreter's error for `in`, which the fused and the unfused
// compiled step must report likewise.
std::string errorReportedLikeInterpreter(const Graph &g, const TensorMap &in) {
  std::string interpreted = errorOf([&] { interpret(g, in, {}); });
  for (bool fusion : {true, false})
    expectReportedLikeInterpreter(interpreted, errorOf([&] { compile(g, fusion)->step(in); }));
  return interpreted;
}

constexpr std::string_view kGather = R"sg(
graph g {{
  input %i : {dtype}[2,3]
  param %t : f32[4,27,3] = normal(mean=0, std=1, seed=1)
  %e = gather(%t, %i) {{axis=1}}
  %s = tanh(%e)
  output out = %s
}}
)sg";

TEST(IndexChecks, GatherReportsTheIndexLikeTheInterpreter) {
  for (DType dtype : {DType::I32, DType::I64}) {
    Graph g = parseGraph(fmt::format(kGather, fmt::arg("dtype", dtypeName(dtype))), "g.sg");
    TensorMap params = initialParams(g);
    for (bool fusion : {true, false})
      for (int threads : {1, 2}) {
        auto exe = compile(g, fusion, threads);
        // Negative, one past the end, far out, the most negative i32; each
        // at a different element (the first bad one is reported).
        for (auto [bad, at] : std::vector<std::pair<int64_t, size_t>>{
                 {-1, 0}, {27, 5}, {99, 3}, {-2147483648, 2}}) {
          SCOPED_TRACE(fmt::format("{} fused={} threads={} index {} at {}", dtypeName(dtype),
                                   fusion, threads, bad, at));
          std::vector<int64_t> values = {3, 0, 26, 7, 11, 1};
          values[at] = bad;
          TensorMap in = {{"i", indices(dtype, {2, 3}, values)}};
          std::string interpreted = errorOf([&] { interpret(g, in, params); });
          EXPECT_EQ(interpreted, fmt::format("g.sg:5:3: error: gather: index {} (element {} of "
                                             "the indices {}[2,3]) is out of range for axis 1 "
                                             "of data f32[4,27,3]; valid indices are 0 to 26",
                                             bad, at, dtypeName(dtype)));
          expectReportedLikeInterpreter(interpreted, errorOf([&] { exe->step(in); }));
        }
        // The record is cleared: a good step runs and counts.
        TensorMap good = {{"i", indices(dtype, {2, 3}, {3, 0, 26, 7, 11, 1})}};
        EXPECT_TRUE(stepc::testing::matches(exe->step(good).at("out"),
                                     interpret(g, good, params).at("out"), {1e-5, 1e-6}));
        EXPECT_EQ(exe->stepsTaken(), 1);
      }
  }
}

TEST(IndexChecks, SeveralBadIndicesOnOneThreadReportTheFirst) {
  Graph g = parseGraph(fmt::format(kGather, fmt::arg("dtype", "i32")), "g.sg");
  TensorMap in = {{"i", indices(DType::I32, {2, 3}, {3, 40, 26, -5, 11, 30})}};
  std::string interpreted = errorOf([&] { interpret(g, in, initialParams(g)); });
  EXPECT_THAT(interpreted, HasSubstr("index 40 (element 1 of"));
  expectReportedLikeInterpreter(interpreted, errorOf([&] { compile(g, true, 1)->step(in); }));
}

TEST(IndexChecks, ScatterAddReportsTheIndexLikeTheInterpreter) {
  Graph g = parseGraph(R"sg(
graph s {
  input %i : i64[3]
  input %u : f32[2,3,4]
  %r = scatter_add(%i, %u) {axis=1, size=5}
  output out = %r
}
)sg",
                       "s.sg");
  TensorMap in = {{"i", indices(DType::I64, {3}, {4, 5, 0})},
                  {"u", stepc::testing::randomTensor(DType::F32, {2, 3, 4}, 7)}};
  EXPECT_EQ(errorReportedLikeInterpreter(g, in),
            "s.sg:5:3: error: scatter_add: index 5 (element 1 of the indices i64[3]) is out of "
            "range for axis 1 of the result f32[2,5,4]; valid indices are 0 to 4");
}

// An embedding model's training step (tests/sg_corpus/embedding.sg): a bad index (or
// label) is found in the forward pass, before any optimizer kernel, so params
// stay as they were.
TEST(IndexChecks, TrainingStepWithABadIndexLeavesParamsUnchanged) {
  Graph step = trainStep(parseGraph(corpusText("embedding"), "emb.sg"), "loss", Optimizer::adam());
  TensorMap good = randomInputs(step, 5);
  good.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  for (bool fusion : {true, false}) {
    SCOPED_TRACE(fusion ? "fused" : "unfused");
    auto exe = compile(step, fusion);
    exe->step(good); // step 0 moves the params away from their initial values
    std::map<std::string, Tensor> before;
    for (const std::string &name : exe->paramNames())
      before.emplace(name, exe->param(name));

    TensorMap badIndex = good;
    badIndex.at("ctx").data<int32_t>()[7] = 27;
    TensorMap badLabel = good;
    badLabel.at("y").data<int32_t>()[9] = -2;
    for (const TensorMap &bad : {badIndex, badLabel}) {
      TensorMap params(before.begin(), before.end());
      std::string interpreted = errorOf([&] { interpretStep(step, bad, params); });
      expectReportedLikeInterpreter(interpreted, errorOf([&] { exe->step(bad); }), 1);
      for (const auto &[name, value] : before)
        EXPECT_TRUE(sameBytes(exe->param(name), value)) << "param " << name << " changed";
      EXPECT_EQ(exe->stepsTaken(), 1);
    }
    EXPECT_THAT(errorOf([&] { exe->step(badIndex); }),
                HasSubstr("emb.sg:7:3: error: gather: index 27 (element 7 of the indices "
                          "i32[16,3])"));
    EXPECT_THAT(errorOf([&] { exe->step(badLabel); }),
                HasSubstr("emb.sg:10:3: error: one_hot (cross_entropy labels): index -2 "
                          "(element 9 of the indices i32[16]) is out of range for depth 27; valid indices are 0 to 26"));
    exe->step(good);
    EXPECT_EQ(exe->stepsTaken(), 2);
  }
}

TEST(IndexChecks, CrossEntropyLabelsOutOfRange) {
  // The issue's case: [0, 1, 7, -2] for 3 classes gave a wrong loss.
  Graph g = parseGraph(R"sg(
graph ce {
  input %x : f32[4,3]
  input %y : i32[4]
  %loss = cross_entropy(%x, %y)
  output loss = %loss
}
)sg",
                       "ce.sg");
  TensorMap in = {{"x", stepc::testing::randomTensor(DType::F32, {4, 3}, 3)},
                  {"y", indices(DType::I32, {4}, {0, 1, 7, -2})}};
  // The one_hot inside the composite says what it is for.
  EXPECT_EQ(errorReportedLikeInterpreter(g, in),
            "ce.sg:5:3: error: one_hot (cross_entropy labels): index 7 (element 2 of the indices "
            "i32[4]) is out of range for depth 3; valid indices are 0 to 2");

  // Built in C++, the same.
  GraphBuilder b("ce");
  Value x = b.input("x", DType::F32, {4, 3});
  b.output("loss", crossEntropy(x, b.input("y", DType::I32, {4})));
  Graph built = b.finish();
  EXPECT_THAT(errorOf([&] { interpret(built, in, {}); }),
              HasSubstr(": error: one_hot (cross_entropy labels): index 7 (element 2"));
  EXPECT_THAT(errorOf([&] { compile(built, true)->step(in); }),
              HasSubstr(": error: one_hot (cross_entropy labels): index 7 (element 2"));

  // Random labels are drawn from the classes, so a seeded run succeeds.
  TensorMap random = randomInputs(g, 11);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_LT(random.at("y").data<int32_t>()[i], 3);
  EXPECT_NO_THROW(interpret(g, random, {}));
}

TEST(IndexChecks, RandomIndicesFitWhatReadsThem) {
  Graph g = parseGraph(R"sg(
graph r {
  input %a : i32[64]
  input %b : i64[8,8]
  input %c : i32[64]
  param %t : f32[5,4] = zeros()
  %ab = reshape(%b) {shape=[64]}
  %g1 = gather(%t, %a) {axis=0}
  %g2 = gather(%t, %ab) {axis=1}
  %h = one_hot(%c) {depth=40, dtype=f32}
  output g1 = %g1
  output g2 = %g2
  output h = %h
}
)sg");
  TensorMap in = randomInputs(g, 2);
  int64_t maxA = 0, maxB = 0, maxC = 0;
  for (int64_t i = 0; i < 64; ++i) {
    maxA = std::max<int64_t>(maxA, in.at("a").data<int32_t>()[i]);
    maxB = std::max<int64_t>(maxB, in.at("b").data<int64_t>()[i]);
    maxC = std::max<int64_t>(maxC, in.at("c").data<int32_t>()[i]);
  }
  EXPECT_EQ(maxA, 4);  // [0, 5): the axis gathered from
  EXPECT_EQ(maxB, 3);  // [0, 4), through the reshape
  EXPECT_GE(maxC, 10); // [0, 40): not the old [0, 10)
  EXPECT_LT(maxC, 40);
  stepc::testing::expectMatchesInterpreter(g, in, initialParams(g), {});
}

TEST(IndexChecks, UncheckedOneHotKeepsItsZeroRow) {
  Graph g = parseGraph(R"sg(
graph oh {
  input %i : i32[6]
  %h = one_hot(%i) {depth=4, dtype=f32}
  output h = %h
}
)sg");
  TensorMap in = {{"i", indices(DType::I32, {6}, {0, 4, 3, -1, 2, 100})}};
  Tensor want = interpret(g, in, {}).at("h");
  EXPECT_EQ(want.reals(), (std::vector<double>{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                               0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}));
  for (bool fusion : {true, false})
    EXPECT_TRUE(sameBytes(compile(g, fusion)->step(in).at("h"), want));
}

// Reductions over an axis of size 0 have the interpreter's values on the CPU
// backend: sum 0, mean NaN, max -inf / INT_MIN, min +inf / INT_MAX.
TEST(EmptyAxes, ReductionsAgreeWithTheInterpreter) {
  for (std::string_view dtype : {"f32", "i32"}) {
    SCOPED_TRACE(dtype);
    std::string mean = dtype == "f32" ? "%m = reduce_mean(%x) {axes=[1], keepdims=0}\n  "
                                        "output mean = %m"
                                      : "";
    Graph g = parseGraph(fmt::format(R"sg(
graph e {{
  input %x : {0}[3,0,2]
  %s = reduce_sum(%x) {{axes=[1], keepdims=0}}
  %hi = reduce_max(%x) {{axes=[1], keepdims=1}}
  %lo = reduce_min(%x) {{axes=[1,2], keepdims=0}}
  output sum = %s
  output max = %hi
  output min = %lo
  {1}
}}
)sg",
                                     dtype, mean));
    TensorMap in = {{"x", Tensor(TensorType{*parseDType(dtype), {3, 0, 2}})}};
    TensorMap want = interpret(g, in, {});
    EXPECT_EQ(want.at("max").real(0), dtype == "f32" ? -INFINITY : double(INT32_MIN));
    for (bool fusion : {true, false}) {
      std::map<std::string, Tensor> got = compile(g, fusion)->step(in);
      for (const auto &[name, value] : want)
        EXPECT_TRUE(sameValues(got.at(name), value)) << name << " fused=" << fusion;
    }
  }
}

TEST(EmptyAxes, ArgMaxOverAnEmptyAxisIsRejectedBeforeAnyBackendRuns) {
  std::string message = errorOf([] {
    parseGraph("graph a {\n  input %x : f32[3,0]\n  %m = argmax(%x) {axis=1, keepdims=0}\n"
               "  output m = %m\n}\n",
               "a.sg");
  });
  EXPECT_EQ(message, "a.sg:3:3: error: argmax: axis 1 of f32[3,0] is empty, so it has no "
                     "maximum");
  // Nothing to answer: an empty result is fine.
  Graph empty = parseGraph("graph a {\n  input %x : f32[0,0]\n  %m = argmax(%x) {axis=1, "
                           "keepdims=0}\n  output m = %m\n}\n");
  TensorMap in = {{"x", Tensor(TensorType{DType::F32, {0, 0}})}};
  EXPECT_EQ(interpret(empty, in, {}).at("m").numel(), 0);
  EXPECT_EQ(compile(empty, true)->step(in).at("m").numel(), 0);
}

TEST(IndexChecks, AotSpecCarriesTheChecks) {
  auto dir = std::filesystem::temp_directory_path() / fmt::format("stepc_checks_{}", ::getpid());
  Graph g = parseGraph(fmt::format(kGather, fmt::arg("dtype", "i32")), "g.sg");
  AotArtifact artifact = compileAot(g, CompileOptions{.cache = false}, dir.string(), "g");
  std::ifstream in(artifact.source);
  std::string source((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LoweredGraph lowered = lowerGraph(g);
  ASSERT_EQ(lowered.spec.indexChecks.size(), 1u);
  EXPECT_THAT(source, HasSubstr(fmt::format("spec.faultOffset = {};", lowered.spec.faultOffset)));
  EXPECT_THAT(source, HasSubstr("\"gather\", \"g.sg:5:3\", \"i32[2,3]\", \"axis 1 of data "
                                "f32[4,27,3]\", 27}"));
  std::filesystem::remove_all(dir);
}

} // namespace
