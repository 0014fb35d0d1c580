// The JIT cache (memory and disk), the tracing API stepc::jit, and
// compileAot's files. Every test points STEPC_CACHE_DIR at a fresh directory
// and starts with an empty in-memory cache and zeroed statistics.
#include "testing.h"
#include "jit_cache.h"
#include "lowered_graph.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/interpreter.h"
#include "stepc/jit.h"
#include "stepc/text.h"
#include "stepc/train.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include <unistd.h>

using namespace stepc;
using stepc::testing::allClose;
using stepc::testing::freshSeed;
using stepc::testing::randomTensor;
using ::testing::HasSubstr;

namespace {

namespace fs = std::filesystem;

// examples/xor.sg: tests compile it, and edited copies of its text, from
// several file names.
std::string xorText() { return stepc::testing::readSourceFile("examples/xor.sg"); }

// `text` with `from` replaced by `to`; `from` must be there (an edit of the
// example must fail here, not throw from std::string::replace).
std::string edited(std::string text, const std::string &from, const std::string &to) {
  size_t at = text.find(from);
  if (at == std::string::npos)
    throw std::logic_error("examples/xor.sg no longer contains '" + from + "': update the test");
  return text.replace(at, from.size(), to);
}

Graph xorGraph(std::string_view file = "xor.sg") { return parseGraph(xorText(), file); }

// Each TEST gets its own cache directory and a clean in-memory cache.
class JitTest : public ::testing::Test {
protected:
  void SetUp() override {
    const char *saved = std::getenv("STEPC_CACHE_DIR");
    if (saved)
      savedDir_ = saved;
    dir_ = fs::temp_directory_path() /
           fmt::format("stepc-test-jit-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    ::setenv("STEPC_CACHE_DIR", dir_.c_str(), 1);
    clearJitMemoryCache();
    resetJitCacheStats();
  }
  void TearDown() override {
    fs::remove_all(dir_);
    if (savedDir_)
      ::setenv("STEPC_CACHE_DIR", savedDir_->c_str(), 1);
    else
      ::unsetenv("STEPC_CACHE_DIR");
  }

  // Files of one extension in the cache directory.
  std::vector<fs::path> entries(const std::string &ext) const {
    std::vector<fs::path> found;
    for (const auto &e : fs::directory_iterator(dir_))
      if (e.path().extension() == ext)
        found.push_back(e.path());
    return found;
  }

  // Compiles `graph`, runs it on fixed inputs and checks it against the
  // interpreter, so that every cache path is also checked for correctness.
  void compileAndCheck(const Graph &graph, const CompileOptions &options = {}) {
    auto exe = compileJit(graph, options);
    TensorMap inputs = randomInputs(graph, 11);
    TensorMap expected = interpret(graph, inputs, initialParams(graph));
    auto outputs = exe->step(inputs);
    for (const GraphOutput &out : graph.outputs)
      EXPECT_TRUE(allClose(outputs.at(out.name), expected.at(out.name), 1e-4, 1e-6)) << out.name;
  }

  // compileAndCheck as a new process sees the cache (nothing in memory), the
  // stats counted from zero: what it found.
  JitCacheStats compileAsANewProcess(const Graph &graph) {
    clearJitMemoryCache();
    resetJitCacheStats();
    compileAndCheck(graph);
    return jitCacheStats();
  }

  fs::path dir_;
  std::optional<std::string> savedDir_;
};

// --- The cache -------------------------------------------------------------

TEST_F(JitTest, MemoryHitSkipsMlirAndDisk) {
  compileAndCheck(xorGraph());
  JitCacheStats first = jitCacheStats();
  EXPECT_EQ(first.misses, 1);
  EXPECT_EQ(first.memoryHits, 0);
  ASSERT_EQ(entries(".o").size(), 1u);
  ASSERT_EQ(entries(".json").size(), 1u);

  // The disk entry is gone, so only memory can serve the hit.
  fs::remove_all(dir_);
  Graph graph = xorGraph(); // parsed again: an equal graph, not the same object
  auto exe = compileJit(graph);
  JitCacheStats second = jitCacheStats();
  EXPECT_EQ(second.misses, 1) << "a hit must not compile";
  EXPECT_EQ(second.memoryHits, 1);
  EXPECT_EQ(second.diskHits, 0);
  compileAndCheck(graph);
}

TEST_F(JitTest, DiskEntrySurvivesAClearedMemoryCache) {
  compileAndCheck(xorGraph());
  clearJitMemoryCache(); // what a new process sees
  compileAndCheck(xorGraph());
  JitCacheStats stats = jitCacheStats();
  EXPECT_EQ(stats.misses, 1);
  EXPECT_EQ(stats.diskHits, 1);
  EXPECT_EQ(stats.badEntries, 0);
  // The disk hit filled the memory cache.
  compileAndCheck(xorGraph());
  EXPECT_EQ(jitCacheStats().memoryHits, 1);
}

TEST_F(JitTest, TruncatedObjectIsIgnoredAndRewritten) {
  compileAndCheck(xorGraph());
  fs::path object = entries(".o").at(0);
  fs::resize_file(object, fs::file_size(object) / 2);
  clearJitMemoryCache();
  compileAndCheck(xorGraph());
  JitCacheStats stats = jitCacheStats();
  EXPECT_EQ(stats.badEntries, 1);
  EXPECT_EQ(stats.misses, 2);
  EXPECT_EQ(stats.diskHits, 0);
  // Overwritten with a good entry.
  clearJitMemoryCache();
  compileAndCheck(xorGraph());
  EXPECT_EQ(jitCacheStats().diskHits, 1);
}

TEST_F(JitTest, FlippedObjectByteIsCaughtByTheChecksum) {
  compileAndCheck(xorGraph());
  fs::path object = entries(".o").at(0);
  {
    std::fstream file(object, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(64);
    char c = 0;
    file.read(&c, 1);
    file.seekp(64);
    c = static_cast<char>(c ^ 0x5a);
    file.write(&c, 1);
  }
  clearJitMemoryCache();
  compileAndCheck(xorGraph());
  EXPECT_EQ(jitCacheStats().badEntries, 1);
  EXPECT_EQ(jitCacheStats().misses, 2);
}

TEST_F(JitTest, CorruptOrMissingMetadataIsIgnored) {
  compileAndCheck(xorGraph());
  fs::path meta = entries(".json").at(0);
  for (std::string garbage : {std::string("{\"format\": \"stepc-jit-cache 1\""), std::string(""),
                              std::string("[1, 2, 3]"), std::string("\x00\xff\x13", 3)}) {
    SCOPED_TRACE(garbage);
    std::ofstream(meta, std::ios::binary | std::ios::trunc) << garbage;
    JitCacheStats stats = compileAsANewProcess(xorGraph());
    EXPECT_EQ(stats.badEntries, 1);
    EXPECT_EQ(stats.misses, 1);
  }
  // Without its metadata, an object is not an entry: a plain miss.
  fs::remove(meta);
  JitCacheStats stats = compileAsANewProcess(xorGraph());
  EXPECT_EQ(stats.badEntries, 0);
  EXPECT_EQ(stats.misses, 1);
}

TEST_F(JitTest, KeyCoversOptionsShapesAndLocations) {
  compileAndCheck(xorGraph());
  CompileOptions unfused;
  unfused.fusion = false;
  compileAndCheck(xorGraph(), unfused);
  EXPECT_EQ(jitCacheStats().misses, 2) << "fusion changes the code";

  std::string text = xorText();
  for (std::string from : {"f32[4,2]", "f32[4,1]"}) // batch 4 -> 8
    text = edited(text, from, from.substr(0, 4) + "8" + from.substr(5));
  compileAndCheck(parseGraph(text, "xor.sg"));
  EXPECT_EQ(jitCacheStats().misses, 3) << "shapes change the code";

  // The same text from another file: the kernels' provenance names it.
  compileAndCheck(xorGraph("elsewhere.sg"));
  EXPECT_EQ(jitCacheStats().misses, 4);
  EXPECT_NE(jitCacheKeyText(xorGraph("a.sg"), {}), jitCacheKeyText(xorGraph("b.sg"), {}));

  // `cache` itself is not part of the key; with it off nothing is looked up.
  CompileOptions off;
  off.cache = false;
  EXPECT_EQ(jitCacheKeyText(xorGraph(), off), jitCacheKeyText(xorGraph(), {}));
  compileAndCheck(xorGraph(), off);
  EXPECT_EQ(jitCacheStats().misses, 4);
  EXPECT_EQ(jitCacheStats().memoryHits, 0);
}

// The in-memory lookup hashes and compares the graph without printing it:
// it must still tell apart everything the printed key does (an attribute, a
// node's name, a location's origin) and find an equal graph.
TEST_F(JitTest, MemoryKeySeesWhatThePrintedKeySees) {
  compileAndCheck(xorGraph());
  std::string seed = edited(xorText(), "seed=8", "seed=9");
  compileAndCheck(parseGraph(seed, "xor.sg"));
  EXPECT_EQ(jitCacheStats().misses, 2) << "an attribute changes the key";
  Graph renamed = xorGraph();
  renamed.nodes.back().name = "loss2";
  renamed.reindexNames();
  compileAndCheck(renamed);
  EXPECT_EQ(jitCacheStats().misses, 3) << "a name changes the key";
  Graph origin = xorGraph();
  origin.nodes.back().loc.origin = "gradient of something";
  EXPECT_NE(jitCacheKeyText(origin, {}), jitCacheKeyText(xorGraph(), {}));
  compileAndCheck(origin);
  EXPECT_EQ(jitCacheStats().misses, 4) << "a location changes the key";
  EXPECT_EQ(jitCacheStats().memoryHits, 0);
  compileAndCheck(parseGraph(seed, "xor.sg"));
  compileAndCheck(origin);
  EXPECT_EQ(jitCacheStats().misses, 4);
  EXPECT_EQ(jitCacheStats().memoryHits, 2);
}

TEST_F(JitTest, UnwritableCacheDirectoryDoesNotFailTheCompile) {
  fs::path file = dir_ / "a-file";
  std::ofstream(file) << "not a directory";
  ::setenv("STEPC_CACHE_DIR", (file / "cache").c_str(), 1);
  compileAndCheck(xorGraph());
  EXPECT_EQ(jitCacheStats().misses, 1);
  EXPECT_EQ(jitCacheStats().writeFailures, 1);
}

TEST_F(JitTest, CacheDirectoryFollowsTheEnvironment) {
  EXPECT_EQ(jitCacheDirectory(), dir_.string());
  ::unsetenv("STEPC_CACHE_DIR");
  const char *xdg = std::getenv("XDG_CACHE_HOME");
  std::optional<std::string> savedXdg = xdg ? std::optional<std::string>(xdg) : std::nullopt;
  ::setenv("XDG_CACHE_HOME", "/somewhere/cache", 1);
  EXPECT_EQ(jitCacheDirectory(), "/somewhere/cache/stepc");
  ::setenv("XDG_CACHE_HOME", "relative", 1); // invalid per the XDG spec: ignored
  ::setenv("HOME", "/home/someone", 1);
  EXPECT_EQ(jitCacheDirectory(), "/home/someone/.cache/stepc");
  if (savedXdg)
    ::setenv("XDG_CACHE_HOME", savedXdg->c_str(), 1);
  else
    ::unsetenv("XDG_CACHE_HOME");
}

// --- Tracing ---------------------------------------------------------------

TEST_F(JitTest, TracedFunctionMatchesTheInterpreter) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  auto f = stepc::jit([](Value x, Value w) { return sum(tanh(matmul(x, w)) * 2.0, {1}); });
  Tensor x = randomTensor(DType::F32, {16, 8}, seed);
  Tensor w = randomTensor(DType::F32, {8, 5}, seed + 1);
  Tensor out = f(x, w);
  ASSERT_EQ(out.shape(), (Shape{16}));
  TensorMap expected = interpret(f.graph(), {{"x0", x}, {"x1", w}}, {});
  EXPECT_TRUE(allClose(out, expected.at("out0"), 1e-4, 1e-6));
  // And against plain arithmetic, element 0.
  double row0 = 0;
  for (int j = 0; j < 5; ++j) {
    double dot = 0;
    for (int k = 0; k < 8; ++k)
      dot += x.real(k) * w.real(k * 5 + j);
    row0 += 2 * std::tanh(dot);
  }
  EXPECT_NEAR(out.real(0), row0, 1e-4 * (1 + std::abs(row0)));
}

TEST_F(JitTest, SameShapesReuseTheStepAndNewShapesRecompileAndSaySo) {
  int traced = 0;
  std::vector<std::string> log;
  JitOptions options;
  options.log = [&](const std::string &line) { log.push_back(line); };
  auto f = stepc::jit(
      [&](Value x, Value labels) {
        ++traced;
        return crossEntropy(x, labels);
      },
      options);
  Tensor x128 = randomTensor(DType::F32, {128, 10}, 1);
  Tensor y128 = randomTensor(DType::I32, {128}, 2, 0, 10);
  Tensor x64 = randomTensor(DType::F32, {64, 10}, 3);
  Tensor y64 = randomTensor(DType::I32, {64}, 4, 0, 10);

  Tensor a = f(x128, y128);
  Tensor b = f(x128, y128);
  EXPECT_EQ(a, b);
  EXPECT_EQ(traced, 1) << "same shapes: no tracing";
  EXPECT_EQ(jitCacheStats().misses, 1);
  EXPECT_TRUE(log.empty());

  f(x64, y64);
  EXPECT_EQ(traced, 2);
  EXPECT_EQ(f.traces(), 2);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0], "stepc::jit: recompiling for f32[64,10], i32[64] (was f32[128,10], i32[128])");

  // Back to the first shapes: compiled already, silently reused.
  EXPECT_EQ(f(x128, y128), a);
  EXPECT_EQ(traced, 2);
  EXPECT_EQ(log.size(), 1u);

  // A second jit object of the same function traces again but hits the
  // compile cache.
  auto g = stepc::jit([](Value x, Value labels) { return crossEntropy(x, labels); }, options);
  int64_t misses = jitCacheStats().misses;
  g(x128, y128);
  EXPECT_EQ(jitCacheStats().misses, misses + 1)
      << "another lambda: other source locations, another key";
  auto h = stepc::jit(
      [&](Value x, Value labels) {
        ++traced;
        return crossEntropy(x, labels);
      },
      options);
  (void)h; // constructing traces nothing
  EXPECT_EQ(traced, 2);
}

TEST_F(JitTest, OutputsAsTupleVectorMapAndPair) {
  Tensor x = Tensor::of<float>({3}, {1, 2, 3});
  auto tuple = stepc::jit([](Value v) { return std::tuple{v * 2.0, sum(v)}; });
  auto [doubled, total] = tuple(x);
  EXPECT_EQ(doubled, Tensor::of<float>({3}, {2, 4, 6}));
  EXPECT_EQ(total.real(0), 6);

  auto vector = stepc::jit([](Value v) { return std::vector<Value>{v + 1.0, v - 1.0}; });
  std::vector<Tensor> vs = vector(x);
  ASSERT_EQ(vs.size(), 2u);
  EXPECT_EQ(vs[1], Tensor::of<float>({3}, {0, 1, 2}));

  auto named = stepc::jit([](Value v) {
    return std::map<std::string, Value>{{"square", square(v)}, {"max", max(v)}};
  });
  std::map<std::string, Tensor> m = named(x);
  EXPECT_EQ(m.at("square"), Tensor::of<float>({3}, {1, 4, 9}));
  EXPECT_EQ(m.at("max").real(0), 3);

  auto pair = stepc::jit([](Value a, Value b) { return std::pair{a * b, a + b}; });
  auto [product, plus] = pair(x, x);
  EXPECT_EQ(product, Tensor::of<float>({3}, {1, 4, 9}));
  EXPECT_EQ(plus, Tensor::of<float>({3}, {2, 4, 6}));
}

TEST_F(JitTest, InputNamesAndErrors) {
  JitOptions options;
  options.inputNames = {"images"};
  auto f = stepc::jit([](Value a, Value b) { return a + b; }, options);
  Tensor x = Tensor::of<float>({2}, {1, 2});
  f(x, x);
  EXPECT_TRUE(f.graph().findNamed("images").has_value());
  EXPECT_TRUE(f.graph().findNamed("x1").has_value());

  GraphBuilder other("other");
  Value foreign = other.input("z", DType::F32, {2});
  auto bad = stepc::jit([&](Value a) { return foreign; });
  try {
    bad(x);
    FAIL() << "returning another graph's value must fail";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("output 'out0' is not a value of the traced graph"));
  }
  // Shape errors inside the function name the C++ call site.
  auto mismatched = stepc::jit([](Value a, Value b) { return matmul(a, b); });
  try {
    mismatched(x, x);
    FAIL() << "matmul of vectors must fail";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("test_jit.cpp"));
    EXPECT_THAT(e.what(), HasSubstr("matmul"));
  }
  auto none = stepc::jit([](Value a) { return std::vector<Value>{}; });
  EXPECT_THROW(none(x), Error);
  auto traced = stepc::jit([](Value a) { return a; });
  EXPECT_THROW(traced.graph(), Error) << "nothing traced before the first call";
}

// A linear model trained by hand-written SGD updates: params persist in the
// jit object and follow it across shape changes.
TEST_F(JitTest, ParamsPersistBetweenCallsAndAcrossShapes) {
  auto step = stepc::jit([](GraphBuilder &b, Value x, Value y) {
    Value w = b.param("w", DType::F32, {3, 1}, Init::uniform(-1, 1, 5));
    Value loss = mse(matmul(x, w), y);
    Value grad = gradients(loss, {w}).at(0);
    b.update(w, w - 0.1 * grad);
    return loss;
  });
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Tensor x8 = randomTensor(DType::F32, {8, 3}, seed),
         y8 = randomTensor(DType::F32, {8, 1}, seed + 1);
  Tensor x5 = randomTensor(DType::F32, {5, 3}, seed + 2),
         y5 = randomTensor(DType::F32, {5, 1}, seed + 3);

  TensorMap params;
  Tensor first = step(x8, y8);
  params = initialParams(step.graph());
  TensorMap inputs8{{"x0", x8}, {"x1", y8}};
  TensorMap reference = interpretStep(step.graph(), inputs8, params);
  EXPECT_TRUE(allClose(first, reference.at("out0"), 1e-5, 1e-6));
  EXPECT_TRUE(allClose(step.param("w"), params.at("w"), 1e-5, 1e-6));

  Tensor second = step(x8, y8);
  interpretStep(step.graph(), inputs8, params);
  EXPECT_LT(second.real(0), first.real(0)) << "SGD lowers the loss";
  EXPECT_TRUE(allClose(step.param("w"), params.at("w"), 1e-5, 1e-6));

  // New shapes: the new step starts from the trained w, not its initializer.
  Tensor third = step(x5, y5);
  TensorMap inputs5{{"x0", x5}, {"x1", y5}};
  TensorMap out5 = interpretStep(step.graph(), inputs5, params);
  EXPECT_TRUE(allClose(third, out5.at("out0"), 1e-5, 1e-6));
  EXPECT_TRUE(allClose(step.param("w"), params.at("w"), 1e-5, 1e-6));
  // ... and back.
  step(x8, y8);
  interpretStep(step.graph(), inputs8, params);
  EXPECT_TRUE(allClose(step.param("w"), params.at("w"), 1e-5, 1e-6));

  // setParam goes to the live step.
  Tensor zeros(DType::F32, {3, 1});
  step.setParam("w", zeros);
  EXPECT_EQ(step.param("w"), zeros);
}

TEST_F(JitTest, JitTrainStepMatchesTheTrainStepGraphOnTheInterpreter) {
  auto model = [](GraphBuilder &b, Value x, Value y) {
    Value w = b.param("w", DType::F32, {4, 3}, Init::xavierUniform(9));
    Value bias = b.param("b", DType::F32, {3}, Init::zeros());
    return crossEntropy(linear(x, w, bias), y);
  };
  Optimizer adam = Optimizer::adam();
  adam.lr = 0.01;
  auto train = stepc::jitTrainStep(model, adam);
  Tensor x = randomTensor(DType::F32, {6, 4}, 21);
  Tensor y = randomTensor(DType::I32, {6}, 22, 0, 3);

  // The reference: the same model built by hand, its trainStep graph, run
  // on the interpreter.
  GraphBuilder b("jit");
  Value x0 = b.input("x0", DType::F32, {6, 4});
  Value x1 = b.input("x1", DType::I32, {6});
  Value loss = model(b, x0, x1);
  b.output("out0", loss);
  Graph stepGraph = trainStep(b.finish(), "out0", adam);
  TensorMap params = initialParams(stepGraph);
  TensorMap inputs{{"x0", x}, {"x1", y}};
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    Tensor got = train(x, y);
    TensorMap expected = interpretStep(stepGraph, inputs, params);
    EXPECT_TRUE(allClose(got, expected.at("out0"), 1e-4, 1e-6));
    for (std::string name : {"w", "b", "w.m", "w.v"})
      EXPECT_TRUE(allClose(train.param(name), params.at(name), 1e-4, 1e-6)) << name;
  }

  EXPECT_THROW(stepc::jitTrainStep(model, Optimizer::sgd()), Error) << "no lr";

  // In bf16 mixed precision: the graph computes in bf16, the weights stay
  // f32, and the loss is the f32 one within a few bf16 ulps (2^-8) of itself.
  auto mixed = stepc::jitTrainStep(model, adam, {}, MixedPrecision{.compute = DType::BF16});
  Tensor f32Loss = interpret(stepGraph, inputs, initialParams(stepGraph)).at("out0");
  EXPECT_TRUE(allClose(mixed(x, y), f32Loss, 2e-2));
  EXPECT_EQ(mixed.param("w").dtype(), DType::F32);
  EXPECT_TRUE(std::any_of(mixed.graph().nodes.begin(), mixed.graph().nodes.end(),
                          [](const Node &n) { return n.type.dtype == DType::BF16; }));
}

// --- Ahead of time ---------------------------------------------------------

TEST_F(JitTest, CompileAotWritesTheArtifact) {
  fs::path out = dir_ / "aot";
  AotArtifact artifact = compileAot(xorGraph(), {}, out.string(), "my-xor");
  EXPECT_EQ(artifact.name, "my_xor");
  for (const std::string &file :
       {artifact.object, artifact.header, artifact.source, artifact.params})
    EXPECT_TRUE(fs::exists(file)) << file;
  std::ifstream headerFile(artifact.header);
  std::string header((std::istreambuf_iterator<char>(headerFile)), {});
  EXPECT_THAT(header, HasSubstr("stepc_my_xor *stepc_my_xor_create(const char *params_path);"));
  EXPECT_THAT(header, HasSubstr("int stepc_my_xor_step(stepc_my_xor *model,\n    const float *x,\n"
                                "    const float *y,\n    float *prob,\n    float *loss);"));
  EXPECT_THAT(header, HasSubstr("#define STEPC_MY_XOR_INPUT_X_NUMEL 8 /* f32[4,2] */"));
  std::ifstream sourceFile(artifact.source);
  std::string source((std::istreambuf_iterator<char>(sourceFile)), {});
  EXPECT_THAT(source, HasSubstr("_mlir_ciface_stepc_my_xor_k0_"));
  EXPECT_THAT(source, HasSubstr("xor.sg:"));
  // The params file holds the initializers' values.
  auto params = readSafetensors(artifact.params);
  TensorMap expected = initialParams(xorGraph());
  ASSERT_EQ(params.size(), expected.size());
  for (const auto &[name, value] : expected)
    EXPECT_EQ(params.at(name), value) << name;
}

} // namespace

namespace {

// The figures `stepc bench` reports as cache_hit_ms, for the mlp training
// step, recorded for reading; the counters (not the clock) check that each
// hit compiled nothing.
TEST_F(JitTest, MlpTrainingStepHitsAreCheap) {
  Optimizer adam = Optimizer::adam();
  adam.lr = 1e-3;
  Graph step =
      trainStep(parseGraphFile(stepc::testing::sourcePath("examples/mlp.sg")), "loss", adam);
  auto time = [&] {
    auto start = std::chrono::steady_clock::now();
    auto exe = compileJit(step);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
  };
  double compile = time();
  double memory = time();
  clearJitMemoryCache();
  double disk = time();
  std::string key = jitCacheKeyText(step, {});
  auto start = std::chrono::steady_clock::now();
  key = jitCacheKeyText(step, {});
  double keyMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("compile_ms", std::to_string(compile));
  RecordProperty("memory_hit_ms", std::to_string(memory));
  RecordProperty("disk_hit_ms", std::to_string(disk));
  std::printf("mlp adam step: compile %.1f ms, memory hit %.2f ms (key %.2f ms, %zu bytes), "
              "disk hit %.1f ms\n",
              compile, memory, keyMs, key.size(), disk);
  EXPECT_EQ(jitCacheStats().misses, 1);
  EXPECT_EQ(jitCacheStats().memoryHits, 1);
  EXPECT_EQ(jitCacheStats().diskHits, 1);
}

// --- Kernels shared by structure, compiled in parallel, cached per kernel --

// Three layers of the same shapes: their kernels are the same code. `width3`
// changes the third layer alone.
Graph layersGraph(int width3 = 16) {
  return parseGraph(fmt::format(R"(graph layers {{
  input %x : f32[8,16]
  input %y : f32[8,{0}]
  param %w1 : f32[16,16] = xavier_uniform(seed=1)
  param %b1 : f32[16] = zeros()
  param %w2 : f32[16,16] = xavier_uniform(seed=2)
  param %b2 : f32[16] = zeros()
  param %w3 : f32[16,{0}] = xavier_uniform(seed=3)
  param %b3 : f32[{0}] = zeros()
  %z1 = linear(%x, %w1, %b1)
  %h1 = tanh(%z1)
  %z2 = linear(%h1, %w2, %b2)
  %h2 = tanh(%z2)
  %z3 = linear(%h2, %w3, %b3)
  %h3 = tanh(%z3)
  %loss = mse(%h3, %y)
  output loss = %loss
}}
)",
                                width3),
                    "layers.sg");
}

Graph layersStep(int width3 = 16) {
  Optimizer adam = Optimizer::adam();
  adam.lr = 1e-2;
  return trainStep(layersGraph(width3), "loss", adam);
}

TEST_F(JitTest, RepeatedLayersShareKernelsAndMatchTheInterpreter) {
  Graph step = layersStep();
  LoweredGraph lowered = lowerGraph(step);
  size_t shared = 0;
  for (size_t k = 0; k < lowered.sameCodeAs.size(); ++k)
    shared += lowered.sameCodeAs[k] != k;
  EXPECT_GE(shared, 4u) << "the layers' forward, backward and update kernels are the same code";
  EXPECT_EQ(lowered.bodies.size() + shared, lowered.spec.kernels.size());
  // The fusion report marks them (stepc opt --fusion-report).
  std::map<std::string, std::string> sameCode;
  std::string firstPair;
  for (size_t k = 0; k < lowered.sameCodeAs.size(); ++k)
    if (size_t first = lowered.sameCodeAs[k]; first != k) {
      sameCode[lowered.spec.kernels[k].name] = lowered.spec.kernels[first].name;
      if (firstPair.empty())
        firstPair = fmt::format("{} = {}", lowered.spec.kernels[k].name,
                                lowered.spec.kernels[first].name);
    }
  EXPECT_THAT(fusionReport(lowered.graph, lowered.plan, lowered.buffers, sameCode),
              HasSubstr(firstPair));
  compileAndCheck(step);
  // Shared code runs each kernel on its own values: several steps agree
  // with the interpreter's.
  auto exe = compileJit(step);
  TensorMap params = initialParams(step);
  TensorMap inputs = randomInputs(step, 5);
  for (int i = 0; i < 3; ++i) {
    auto outputs = exe->step(inputs);
    TensorMap expected = interpretStep(step, inputs, params);
    EXPECT_TRUE(allClose(outputs.at("loss"), expected.at("loss"), 1e-4, 1e-6)) << i;
    for (const ParamUpdate &u : step.updates) {
      const std::string &name = step.node(u.param).name;
      EXPECT_TRUE(allClose(exe->param(name), params.at(name), 1e-4, 1e-6)) << name << " step " << i;
    }
  }
}

TEST_F(JitTest, ChangingOneLayerRecompilesOnlyItsKernels) {
  compileAndCheck(layersStep());
  int64_t first = jitCacheStats().kernelsCompiled;
  JitCacheStats stats = compileAsANewProcess(layersStep(24));
  EXPECT_EQ(stats.misses, 1);
  // The third layer's forward, backward and update, the loss after it and
  // the entry points change; the first two layers' code comes from disk.
  EXPECT_GE(stats.kernelsFromDisk, 4) << "the first layers' kernels are on disk";
  EXPECT_LT(stats.kernelsCompiled, first) << "of " << first;
}

// The objects on disk (kernel bodies and entry points) by file name.
std::map<std::string, std::string> objectFiles(const fs::path &dir) {
  std::map<std::string, std::string> files;
  for (const auto &e : fs::recursive_directory_iterator(dir))
    if (e.path().extension() == ".o") {
      std::ifstream in(e.path(), std::ios::binary);
      files[fs::relative(e.path(), dir).string()] =
          std::string(std::istreambuf_iterator<char>(in), {});
    }
  return files;
}

TEST_F(JitTest, CompileThreadsDoNotChangeTheCode) {
  Graph step = layersStep();
  TensorMap inputs = randomInputs(step, 3);
  std::map<std::string, std::string> objects[2];
  std::map<std::string, Tensor> outputs[2];
  for (int threads : {1, 2}) {
    fs::path dir = dir_ / fmt::format("threads{}", threads);
    ::setenv("STEPC_CACHE_DIR", dir.c_str(), 1);
    clearJitMemoryCache();
    auto exe = compileJit(step, {.compileThreads = threads});
    EXPECT_EQ(lastCompileTimes().threads, threads);
    outputs[threads - 1] = exe->step(inputs);
    objects[threads - 1] = objectFiles(dir);
  }
  EXPECT_GT(objects[0].size(), 2u);
  EXPECT_TRUE(objects[0] == objects[1]) << "the same object files, byte for byte";
  for (const auto &[name, value] : outputs[0])
    EXPECT_TRUE(allClose(value, outputs[1].at(name), 0, 0)) << name;
}

TEST_F(JitTest, MemoryHitRunsNoPasses) {
  Graph step = layersStep();
  compileJit(step);
  CompileTimes compiled = lastCompileTimes();
  EXPECT_GT(compiled.kernels, 0);
  compileJit(step);
  EXPECT_EQ(jitCacheStats().memoryHits, 1);
  EXPECT_EQ(lastCompileTimes().kernels, 0) << "a hit lowers nothing";
}

// A hit shares the cache entry's spec and initial params instead of copying
// them; each executable still has params of its own: a step or setParam on
// one is invisible to the other, and both start from the initial values.
TEST_F(JitTest, ExecutablesFromOneEntryShareTheSpecButNotTheParams) {
  Graph step = layersStep();
  auto first = compileJit(step);
  auto second = compileJit(step);
  ASSERT_EQ(jitCacheStats().memoryHits, 1);
  EXPECT_EQ(&first->spec(), &second->spec()) << "a hit copies no spec";
  TensorMap initial = initialParams(step);
  TensorMap inputs = randomInputs(step, 5);

  first->step(inputs);
  first->step(inputs);
  for (const auto &[name, value] : initial) {
    EXPECT_TRUE(allClose(second->param(name), value, 0, 0)) << name << " before any step";
    EXPECT_TRUE(allClose(first->spec().initialParams.at(name), value, 0, 0)) << name;
  }
  TensorMap stepped = interpret(step, inputs, initial);
  auto secondOut = second->step(inputs);
  EXPECT_TRUE(allClose(secondOut.at("loss"), stepped.at("loss"), 1e-4, 1e-6))
      << "the second executable's first step starts from the initial params";

  Tensor w1 = randomTensor(DType::F32, {16, 16}, 9);
  second->setParam("w1", w1);
  EXPECT_FALSE(allClose(first->param("w1"), w1, 0, 0));
  auto third = compileJit(step);
  EXPECT_TRUE(allClose(third->param("w1"), initial.at("w1"), 0, 0));
  third->setParam("b1", randomTensor(DType::F32, {16}, 10)); // writes before any step
  EXPECT_TRUE(allClose(third->param("w1"), initial.at("w1"), 0, 0))
      << "setParam of one param leaves the others at their initial values";
  EXPECT_TRUE(allClose(second->param("w1"), w1, 0, 0));
}

} // namespace
