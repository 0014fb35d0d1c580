// Every matmul layout on the register-tiled micro-kernel (issue 11,
// compiler/codegen/lowering_matmul.cpp) against the interpreter, forward and
// through a training step's gradients: odd sizes that are no multiple of the
// 8x32 tile, rank-N x rank-2 products whose batch folds into the rows,
// batched products with broadcast batch dimensions, transposed operands,
// attention heads read through transpose(reshape(...)) views, slices, and
// the epilogues computed on the register tile. Each graph also runs at 1 and
// 2 threads, which must give the same bits, and with both register tiles
// (AVX-512's 8x32 and AVX2's 6x16, whichever the host has).
#include "codegen_harness.h"

#include "gradcheck.h"
#include "lowering.h"
#include "tiled_matmul.h"

#include "stepc/autodiff.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>
#include <string>
#include <vector>

using namespace stepc;

namespace {

// A data constant's text: `data` row-major, as the ONNX importer writes one.
std::string dataConstant(const std::string &name, const std::string &dtype, int64_t rows,
                         int64_t cols, double (*value)(int64_t, int64_t)) {
  std::string data;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      data += (data.empty() ? "" : ",") + fmt::format("{}", value(i, j));
  return fmt::format("  %{} = constant() {{data=[{}], dtype={}, shape=[{},{}]}}\n", name, data,
                     dtype, rows, cols);
}

// The layouts in tests/snippets/codegen_matmul.sg, and one whose data
// constants are written here. Each graph's `loss` is a sum of its products
// (and their epilogues), so the training step differentiates through every
// product.
std::vector<stepc::testing::SnippetCase> cases() {
  std::vector<stepc::testing::SnippetCase> cases =
      stepc::testing::readSnippetCases("tests/snippets/codegen_matmul.sg");
  // Attention scores masked as PyTorch's ONNX exporter writes it: a bool
  // data constant [T,S] selects a scalar where a key is hidden (loaded 16
  // columns at a time, 21 = 16 + a masked 5), an f32 data constant added,
  // and a bool [T,1] broadcast along the columns.
  cases.push_back({.name = "data_constant_masks", .text = R"(graph g {
  input %q : f32[2,3,19,29]
  param %kt : f32[3,29,21] = xavier_uniform(seed=1)
  %s = matmul(%q, %kt)
  %c = constant() {dtype=f32, shape=[], value=0.125}
  %scaled = mul(%s, %c)
  %hidden = constant() {dtype=f32, shape=[], value=-10000.0}
)" + dataConstant("future", "bool", 19, 21, [](int64_t i, int64_t j) { return double(j > i + 2); }) +
                                   R"(  %masked = select(%future, %hidden, %scaled)
)" + dataConstant("bias", "f32", 19, 21, [](int64_t i, int64_t j) { return 0.25 * double((i * 7 + j) % 5) - 0.5; }) +
                                   R"(  %biased = add(%masked, %bias)
)" + dataConstant("rows", "bool", 19, 1, [](int64_t i, int64_t) { return double(i % 3 == 0); }) +
                                   R"(  %m = select(%rows, %hidden, %biased)
  %loss = reduce_sum(%m) {axes=[0,1,2,3], keepdims=0}
  output m = %m
  output loss = %loss
})"});
  return cases;
}

class CodegenMatMul : public ::testing::TestWithParam<stepc::testing::SnippetCase> {};

TEST_P(CodegenMatMul, ForwardMatchesInterpreter) {
  Graph graph = parseGraph(GetParam().text);
  TensorMap inputs = randomInputs(graph, 11);
  for (int threads : {1, 2}) {
    stepc::testing::CompareOptions options;
    options.threads = threads;
    stepc::testing::expectMatchesInterpreter(graph, inputs, initialParams(graph), options);
  }
}

TEST_P(CodegenMatMul, GradientsMatchInterpreter) {
  Graph step = trainStep(parseGraph(GetParam().text), "loss", Optimizer::sgd());
  TensorMap inputs = randomInputs(step, 12);
  inputs.at("lr") = Tensor::scalar(DType::F32, 0.5);
  stepc::testing::CompareOptions options;
  options.steps = 2;
  options.unfused = false;
  options.threads = 2;
  stepc::testing::expectMatchesInterpreter(step, inputs, initialParams(step), options);
}

// A parallel call owns whole output rows or batch entries: the thread count
// never changes a bit.
void expectSameBitsAtOneAndTwoThreads(const std::string &text) {
  Graph step = trainStep(parseGraph(text), "loss", Optimizer::adam());
  TensorMap inputs = randomInputs(step, 13);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  std::vector<std::vector<Tensor>> runs;
  for (int threads : {1, 2}) {
    RunOptions run;
    run.threads = threads;
    auto exe = compileJit(step, CompileOptions{.cache = false}, run);
    std::vector<Tensor> results;
    for (int s = 0; s < 2; ++s)
      for (auto &[name, value] : exe->step(inputs))
        results.push_back(std::move(value));
    for (const std::string &name : exe->paramNames())
      results.push_back(exe->param(name));
    runs.push_back(std::move(results));
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) {
    ASSERT_EQ(runs[0][i].nbytes(), runs[1][i].nbytes());
    EXPECT_EQ(std::memcmp(runs[0][i].bytes(), runs[1][i].bytes(), runs[0][i].nbytes()), 0)
        << "result " << i << " differs between 1 and 2 threads";
  }
}

TEST_P(CodegenMatMul, SameBitsAtOneAndTwoThreads) { expectSameBitsAtOneAndTwoThreads(GetParam().text); }

// Both register tiles, whatever the host's: the same products, the edges at
// different places; each tile also gives the same bits at 1 and 2 threads.
TEST_P(CodegenMatMul, BothRegisterTilesMatchInterpreter) {
  Graph graph = parseGraph(GetParam().text);
  stepc::testing::expectMatchesInterpreterOnBothTiles(
      graph, randomInputs(graph, 11), initialParams(graph),
      [&] { expectSameBitsAtOneAndTwoThreads(GetParam().text); });
}

INSTANTIATE_TEST_SUITE_P(, CodegenMatMul, ::testing::ValuesIn(cases()),
                         [](const auto &info) { return info.param.name; });

// The plan with codegen's own targets (kernelTarget): what the CPU's and the
// GPU's kernels can do decides the plan, and lowering carries it out.
struct PlannedKernel {
  Graph graph;
  FusionPlan plan;
  std::string function; // the CPU kernel's MLIR
};
// The CPU kernel of `group` (one of `plan`'s, its kernel plan possibly edited).
std::string lowerPlanned(const Graph &graph, const FusionPlan &plan, const FusionGroup &group) {
  std::function<int64_t(ValueId)> offset = [](ValueId v) { return 4096 * int64_t(v + 1); };
  return codegen::lowerGroup(graph, group, offset, usedOutsideGroup(graph, plan), 1 << 20).function;
}
PlannedKernel planAndLower(const char *text, bool gpu) {
  PlannedKernel out{parseGraph(text), {}, {}};
  out.plan = planFusion(out.graph);
  EXPECT_EQ(out.plan.groups.size(), 1u);
  planKernels(out.graph, out.plan, codegen::kernelTarget(gpu));
  if (!gpu)
    out.function = lowerPlanned(out.graph, out.plan, out.plan.groups[0]);
  return out;
}

// Codegen carries out the kernel plan (planKernels): the epilogue the plan
// puts on the product's register tile is computed there, on 16-lane vectors
// (relu as a select of vector<16xi1>); a plan without it gets the product
// stored and the relu in a loop of its own after it.
TEST(CodegenMatMulPlan, EpilogueRunsOnTheTileOnlyWhereThePlanSaysSo) {
  PlannedKernel k = planAndLower(R"(graph dense {
  input %x : f32[32,64]
  input %w : f32[64,48]
  %z = matmul(%x, %w)
  %h = relu(%z)
  output h = %h
})", false);
  FusionGroup group = k.plan.groups[0];
  ASSERT_EQ(group.kernel.nests.size(), 2u);
  ASSERT_EQ(group.kernel.nests[0].epilogue, std::vector<ValueId>{*k.graph.findNamed("h")});
  const std::string vectorRelu = ": vector<16xi1>, vector<16xf32>";
  EXPECT_NE(k.function.find(vectorRelu), std::string::npos) << k.function;
  group.kernel.nests[0].epilogue.clear();
  std::string after = lowerPlanned(k.graph, k.plan, group);
  EXPECT_EQ(after.find(vectorRelu), std::string::npos) << after;
}

const char *kDenseTransposed = R"(graph dense {
  input %x : f32[32,64]
  param %w : f32[48,64] = he_uniform(seed=1)
  param %b : f32[48] = zeros()
  %wt = transpose(%w) {perm=[1,0]}
  %z = matmul(%x, %wt)
  %zb = add(%z, %b)
  %h = relu(%zb)
  output h = %h
})";

// The CPU's tiled matmul reads w^T in place through strides; the GPU's reads
// row-major buffers only, so its kernel stores %wt first.
TEST(CodegenMatMulPlan, TransposedWeightIsStridedOnTheCpuAndCopiedOnTheGpu) {
  for (bool gpu : {false, true}) {
    SCOPED_TRACE(gpu ? "gpu" : "cpu");
    PlannedKernel k = planAndLower(kDenseTransposed, gpu);
    const Graph &g = k.graph;
    const KernelPlan &kernel = k.plan.groups[0].kernel;
    ValueId wt = *g.findNamed("wt"), z = *g.findNamed("z"), h = *g.findNamed("h");
    std::vector<ValueId> roots = gpu ? std::vector<ValueId>{wt, z, h} : std::vector<ValueId>{z, h};
    EXPECT_EQ(kernel.roots, roots);
    const LoopNest &product = kernel.nests[gpu ? 1 : 0];
    ASSERT_EQ(product.kind, NestKind::Contraction);
    EXPECT_EQ(product.stridedOperands, std::vector<bool>(2, !gpu));
  }
}

// matmul + bias + relu: the CPU computes the relu on the product's tile (a
// select of 16 lanes), the GPU, which has no tile, after it.
TEST(CodegenMatMulPlan, BiasReluIsAnEpilogueOnTheCpuTileOnly) {
  const std::string vectorRelu = ": vector<16xi1>, vector<16xf32>";
  PlannedKernel cpu = planAndLower(kDenseTransposed, false);
  ValueId h = *cpu.graph.findNamed("h");
  EXPECT_EQ(cpu.plan.groups[0].kernel.nests[0].epilogue, std::vector<ValueId>{h});
  EXPECT_NE(cpu.function.find(vectorRelu), std::string::npos) << cpu.function;
  PlannedKernel gpu = planAndLower(kDenseTransposed, true);
  for (const LoopNest &nest : gpu.plan.groups[0].kernel.nests)
    EXPECT_TRUE(nest.epilogue.empty());
}

// abs has no vector rule on the tile: the plan puts no epilogue on it, and
// the kernel computes abs in a scalar loop after the product is stored.
TEST(CodegenMatMulPlan, AbsIsNoEpilogueOnTheTile) {
  PlannedKernel cpu = planAndLower(R"(graph dense {
  input %x : f32[32,64]
  input %w : f32[64,48]
  %z = matmul(%x, %w)
  %h = abs(%z)
  output h = %h
})", false);
  const KernelPlan &kernel = cpu.plan.groups[0].kernel;
  ASSERT_EQ(kernel.nests.size(), 2u);
  EXPECT_TRUE(kernel.nests[0].epilogue.empty());
  EXPECT_EQ(kernel.nests[1].kind, NestKind::Elementwise);
  size_t abs = cpu.function.find("math.absf");
  ASSERT_NE(abs, std::string::npos) << cpu.function;
  std::string line = cpu.function.substr(abs, cpu.function.find('\n', abs) - abs);
  EXPECT_EQ(line.find("vector<"), std::string::npos) << line;
  stepc::testing::expectMatchesInterpreter(cpu.graph, randomInputs(cpu.graph, 14), initialParams(cpu.graph));
}

// A transposed A whose K rows are a line or more apart (a weight
// gradient's X^T) is prefetched ahead along K; a row-major A, which the
// hardware prefetchers follow, and a short K stride (rows within a line)
// are not.
TEST(CodegenMatMulPlan, OnlyATransposedALongStrideIsPrefetched) {
  auto lowered = [](const std::string &x, const std::string &a) {
    std::string text = fmt::format(R"(graph g {{
  input %x : f32[{}]
  input %w : f32[40,24]
  %xt = {}
  %z = matmul(%xt, %w)
  output z = %z
}})", x, a);
    return planAndLower(text.c_str(), false).function;
  };
  // Prefetches of A: of any memref but B's (the row tiles prefetch B,
  // read in place, in every case).
  auto prefetchesOfA = [](const std::string &function) {
    int count = 0;
    std::istringstream lines(function);
    for (std::string line; std::getline(lines, line);)
      count += line.find("memref.prefetch") != std::string::npos &&
               line.find(": memref<40x24xf32") == std::string::npos;
    return count;
  };
  std::string transposed = lowered("40,32", "transpose(%x) {perm=[1,0]}");
  EXPECT_GT(prefetchesOfA(transposed), 0) << transposed;
  std::string rowMajor = lowered("32,40", "reshape(%x) {shape=[32,40]}");
  EXPECT_EQ(prefetchesOfA(rowMajor), 0) << rowMajor;
  EXPECT_NE(rowMajor.find("memref.prefetch"), std::string::npos) << rowMajor;
  std::string shortStride = lowered("40,8", "transpose(%x) {perm=[1,0]}");
  EXPECT_EQ(prefetchesOfA(shortStride), 0) << shortStride;
}

// A transposed A read by several column panels of B is copied a block of
// rows at a time into a stack buffer (and not prefetched in place); with
// one panel's columns, or too few rows, it is read in place. The host's
// register tile sets the panel's width.
TEST(CodegenMatMulPlan, ATransposedIsCopiedInBlocksWhereSeveralPanelsReadIt) {
  auto lowered = [](int64_t rows, int64_t cols) {
    std::string text = fmt::format(R"(graph g {{
  input %x : f32[77,{}]
  input %w : f32[77,{}]
  %xt = transpose(%x) {{perm=[1,0]}}
  %z = matmul(%xt, %w)
  output z = %z
}})", rows, cols);
    return planAndLower(text.c_str(), false).function;
  };
  std::string block = "memref.alloca() {alignment = 64 : i64} : " + codegen::aBlockType(77);
  // Prefetches of A read in place: its view [rows, 77] has a unit stride
  // along the rows.
  auto prefetchesOfA = [](const std::string &function) {
    int count = 0;
    std::istringstream lines(function);
    for (std::string line; std::getline(lines, line);)
      count += line.find("memref.prefetch") != std::string::npos &&
               line.find("x77xf32, strided<[1, ") != std::string::npos;
    return count;
  };
  std::string blocks = lowered(150, 45);
  EXPECT_NE(blocks.find(block), std::string::npos) << blocks;
  EXPECT_EQ(prefetchesOfA(blocks), 0) << blocks;
  // One panel: the register tile's width (32 on AVX-512, 16 on AVX2).
  int64_t panel = codegen::registerTile().vectors * 16;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{150, panel}, {31, 45}}) {
    std::string inPlace = lowered(rows, cols);
    EXPECT_EQ(inPlace.find(block), std::string::npos) << inPlace;
    EXPECT_GT(prefetchesOfA(inPlace), 0) << inPlace;
  }
}

// The threads of a kernel that is one product of fewer rows than a whole
// register tile split its columns, in units of 64 (the last partial); from
// a whole tile's rows on, or with one unit of columns, they split the rows
// (dimension 0 of the product). Both register tiles.
TEST(CodegenMatMulPlan, FewRowsSplitTheColumnsManyRowsTheRows) {
  auto extent = [](const std::string &x, int64_t n, const std::string &epilogue) {
    std::string text = fmt::format(R"(graph g {{
  input %x : f32[{}]
  input %w : f32[77,{}]
  input %b : f32[{}]
  %y = matmul(%x, %w)
  %z = {}
  output z = %z
}})",
                                   x, n, n, epilogue);
    PlannedKernel k = planAndLower(text.c_str(), false);
    std::function<int64_t(ValueId)> offset = [](ValueId v) { return 4096 * int64_t(v + 1); };
    return codegen::lowerGroup(k.graph, k.plan.groups[0], offset, usedOutsideGroup(k.graph, k.plan),
                               1 << 20)
        .parallelExtent;
  };
  const std::string biasRelu = "add(%y, %b)", tanh = "tanh(%y)";
  stepc::testing::forEachRegisterTile([&](const codegen::RegisterTile &tile) {
    int64_t few = tile.rows - 1, whole = tile.rows;
    EXPECT_EQ(extent("1,77", 1000, biasRelu), 16);
    EXPECT_EQ(extent(fmt::format("{},77", few), 1024, biasRelu), 16);
    EXPECT_EQ(extent(fmt::format("{},77", few), 130, tanh), 3);
    EXPECT_EQ(extent(fmt::format("{},77", whole), 1000, biasRelu), whole);
    EXPECT_EQ(extent("64,77", 1000, tanh), 64);
    // One unit of columns: the rows.
    EXPECT_EQ(extent("3,77", 64, biasRelu), 3);
    // A rank-3 input folded into 2 x 3 rows (fewer than AVX-512's 8: its
    // columns there), and into 2 x 4 rows (the rows on both tiles).
    EXPECT_EQ(extent("2,3,77", 200, tanh), 6 < tile.rows ? 4 : 2);
    EXPECT_EQ(extent("2,4,77", 200, tanh), 2);
  });
}

// `forward`'s gradients of `loss` with respect to `wrt` against central
// finite differences in f64 (a dozen elements of each), and the compiled
// gradient graph against the interpreter on both register tiles at 1 and 2
// threads.
void expectGradientsMatch(const Graph &forward, const std::vector<std::string> &wrt,
                          uint64_t seed) {
  GradcheckReport check = gradcheck(forward, "loss", randomInputs(forward, seed), {}, wrt,
                                    {.tolerance = 1e-5, .maxElementsPerTensor = 12});
  EXPECT_TRUE(check.passed) << check.worstWhere;
  EXPECT_GT(check.elementsChecked, 0);
  Graph g = grad(forward, "loss", wrt).graph;
  stepc::testing::expectMatchesInterpreterOnBothTiles(g, randomInputs(g, seed + 1), {});
}

// One row's gradients, whose products split their columns too (dR = dZ x
// W2^T and dX = dH x W^T, B^T packed), against central finite differences
// in f64, and the compiled gradients against the interpreter's on both
// register tiles at 1 and 2 threads.
TEST(CodegenMatMulColumns, OneRowGradientsMatchFiniteDifferencesAndTheInterpreter) {
  Graph forward = parseGraph(R"(graph g {
  input %x : f32[1,77]
  input %w : f32[77,130]
  input %b : f32[130]
  input %w2 : f32[130,70]
  %h = linear(%x, %w, %b)
  %r = tanh(%h)
  %z = matmul(%r, %w2)
  %sq = square(%z)
  %loss = reduce_sum(%sq) {axes=[0,1], keepdims=0}
  output loss = %loss
})");
  expectGradientsMatch(forward, {"x", "w", "b", "w2"}, 21);
}

// Few-row products at 3 threads, whose calls own uneven numbers of column
// blocks (N = 1000: 6, 5 and 5 blocks of 64, the last 40 wide), so a call
// that is not the last ends at a block that is no multiple of the wide
// tile's columns: against the interpreter, and the same bits as 1 thread.
TEST(CodegenMatMulColumns, ThreeThreadsSplitUnevenBlocksWithTheSameBits) {
  Graph graph = parseGraph(R"(graph g {
  input %x : f32[5,77]
  input %w : f32[77,1000]
  input %b : f32[1000]
  input %w2 : f32[1000,330]
  %h = linear(%x, %w, %b)
  %r = relu(%h)
  %z = matmul(%r, %w2)
  output h = %h
  output z = %z
})");
  TensorMap inputs = randomInputs(graph, 24);
  stepc::testing::forEachRegisterTile([&](const codegen::RegisterTile &) {
    stepc::testing::CompareOptions options;
    options.threads = 3;
    options.unfused = false;
    stepc::testing::expectMatchesInterpreter(graph, inputs, {}, options);
    CompileOptions compile{.cache = false};
    auto one = compileJit(graph, compile, {.threads = 1})->step(inputs);
    auto three = compileJit(graph, compile, {.threads = 3})->step(inputs);
    for (const char *name : {"h", "z"})
      for (int64_t i = 0; i < one.at(name).numel(); ++i)
        ASSERT_EQ(one.at(name).real(i), three.at(name).real(i)) << name << "[" << i << "]";
  });
}

// Fault injection (`stepc bisect-fusion`): a perturbed product split by
// columns adds the amount to the elements at even flat indices of each
// output (the product and its epilogue's result) once, whichever thread
// owns their columns.
TEST(CodegenMatMulColumns, PerturbedKernelShiftsEachEvenElementOnce) {
  Graph graph = parseGraph(R"(graph g {
  input %x : f32[3,77]
  input %w : f32[77,130]
  input %b : f32[130]
  %y = matmul(%x, %w)
  %z = add(%y, %b)
  output y = %y
  output z = %z
})");
  LoweredGraph lowered = lowerGraph(graph, {.cache = false});
  ASSERT_EQ(lowered.plan.groups.size(), 1u);
  TensorMap inputs = randomInputs(graph, 23);
  stepc::testing::expectPerturbationShiftsEachEvenElementOnce(graph, inputs, 0, {"y", "z"});
}

// The last fold of dot products by row (emitDotRow): two vectors of 8
// columns' pairs of lanes added into one of 16 columns, as both register
// tiles end it. A packed panel's transposed blocks shuffle other lanes.
constexpr const char *kRowDotsFold =
    "[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]";

// x w^T with w [37,45] at M rows, bias and relu after it.
std::string rowDotsLayer(int64_t m) {
  return fmt::format(R"(graph g {{
  input %x : f32[{},45]
  input %w : f32[37,45]
  input %b : f32[37]
  %wt = transpose(%w) {{perm=[1,0]}}
  %y = linear(%x, %wt, %b)
  %r = relu(%y)
  output r = %r
}})",
                     m);
}

// Fewer rows than the register tile take dot products by row, their sums
// folded into vectors; a whole tile's rows do not. Both register tiles.
TEST(CodegenMatMulRowDots, FewRowsOfBTransposedFoldTheirSumsIntoVectors) {
  stepc::testing::forEachRegisterTile([](const codegen::RegisterTile &tile) {
    for (int m : {1, 2, 3, 5, tile.rows}) {
      SCOPED_TRACE(fmt::format("M = {}", m));
      std::string module = lowerGraph(parseGraph(rowDotsLayer(m)), {.cache = false}).mlirModule;
      EXPECT_EQ(module.find(kRowDotsFold) != std::string::npos, m < tile.rows);
    }
  });
}

// A two-layer graph whose loss is sum(z * r) for a fixed random r: the
// first product reads w [37,45] transposed (by row in the forward), the
// gradient dT = dZ x w2^T reads w2 transposed (by row in the backward).
// Central finite differences in f64 at M = 1 and 3, and the compiled
// gradients against the interpreter's on both register tiles at 1 and 2
// threads.
TEST(CodegenMatMulRowDots, GradientsMatchFiniteDifferencesAndTheInterpreter) {
  for (int64_t m : {1, 3}) {
    SCOPED_TRACE(fmt::format("M = {}", m));
    Graph forward = parseGraph(fmt::format(R"(graph g {{
  input %x : f32[{0},45]
  input %w : f32[37,45]
  input %b : f32[37]
  input %w2 : f32[37,21]
  input %r : f32[{0},21]
  %wt = transpose(%w) {{perm=[1,0]}}
  %h = linear(%x, %wt, %b)
  %t = tanh(%h)
  %z = matmul(%t, %w2)
  %p = mul(%z, %r)
  %loss = reduce_sum(%p) {{axes=[0,1], keepdims=0}}
  output loss = %loss
}})",
                                           m));
    expectGradientsMatch(forward, {"x", "w", "b", "w2"}, 31);
  }
}

} // namespace

// Adam's update of a weight (m, v and the weight read and written in place)
// runs on the register tile of the weight's gradient, with odd sizes that
// leave partial tiles and masked columns, through a tanh GELU: the plan puts
// each weight's update there, and two steps match the interpreter (at 1 and
// 2 threads, which give the same bits).
TEST(CodegenMatMulPlan, AdamUpdateRunsOnTheWeightGradientsTile) {
  const char *text = R"(graph mlp {
  input %x : f32[3,13,37]
  input %y : f32[3,13,21]
  param %w1 : f32[37,45] = xavier_uniform(seed=1)
  param %b1 : f32[45] = zeros()
  param %w2 : f32[45,21] = xavier_uniform(seed=2)
  %h = linear(%x, %w1, %b1)
  %a = gelu(%h)
  %z = matmul(%a, %w2)
  %d = sub(%z, %y)
  %sq = square(%d)
  %loss = reduce_mean(%sq) {axes=[0,1,2], keepdims=0}
  output loss = %loss
})";
  Graph step = trainStep(parseGraph(text), "loss", Optimizer::adam());
  FusionPlan plan = planFusion(step);
  planKernels(step, plan, codegen::kernelTarget(false));
  for (const char *weight : {"w1", "w2"}) {
    SCOPED_TRACE(weight);
    ValueId param = *step.findNamed(weight);
    auto update = std::ranges::find_if(step.updates, [&](const ParamUpdate &u) { return u.param == param; });
    ASSERT_NE(update, step.updates.end());
    bool onTile = false;
    for (const FusionGroup &group : plan.groups)
      for (const LoopNest &nest : group.kernel.nests)
        onTile = onTile || (nest.kind == NestKind::Contraction &&
                            std::ranges::find(nest.epilogue, update->value) != nest.epilogue.end());
    EXPECT_TRUE(onTile) << fusionReport(step, plan, planBuffers(step, plan));
  }
  TensorMap inputs = randomInputs(step, 15);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  stepc::testing::CompareOptions options;
  options.steps = 2;
  options.unfused = false;
  options.paramOutliers = {.fraction = 5e-2, .atol = 2e-2};
  for (int threads : {1, 2}) {
    options.threads = threads;
    stepc::testing::expectMatchesInterpreter(step, inputs, initialParams(step), options);
  }
  expectSameBitsAtOneAndTwoThreads(text);
}
