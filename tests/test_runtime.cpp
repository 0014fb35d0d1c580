// The runtime's Executable, thread pool and safetensors checkpoints, driven by
// hand-built ExecutableSpecs whose kernels are small C++ functions that read
// and write the arena at known offsets (what generated code does).
#include "../runtime/cuda/nccl.h"
#include "../runtime/thread_pool.h"

#include "stepc/error.h"
#include "stepc/executable.h"
#include "testing.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

#include <sys/resource.h>
#include <unistd.h>

namespace stepc {
using stepc::testing::errorOf;
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- helpers

template <class T> T *at(ArenaDescriptor *arena, int64_t offset) {
  return reinterpret_cast<T *>(arena->aligned + arena->offset + offset);
}

TensorSlot slot(std::string name, DType dtype, Shape shape, int64_t offset) {
  return TensorSlot{std::move(name), TensorType{dtype, std::move(shape)}, offset};
}

Tensor f32(Shape shape, std::vector<float> values) { return Tensor::of<float>(shape, values); }

#define EXPECT_CONTAINS(text, part)                                                        \
  EXPECT_NE(std::string(text).find(part), std::string::npos)                              \
      << "expected to find: " << (part) << "\nin: " << (text)

// A fresh directory per test, removed afterwards.
class TempDir {
public:
  TempDir() {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(::testing::TempDir()) /
            fmt_name(std::string("stepc_runtime_") + info->test_suite_name() + "_" +
                     info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path_, ignored);
  }
  std::string operator/(const std::string &name) const { return (path_ / name).string(); }
  const fs::path &path() const { return path_; }

private:
  static std::string fmt_name(std::string s) {
    std::replace(s.begin(), s.end(), '/', '_');
    return s;
  }
  fs::path path_;
};

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Temporaries an atomic write left behind in the folder of `path`.
std::vector<std::string> temporariesBeside(const std::string &path) {
  std::vector<std::string> found;
  for (const auto &entry : fs::directory_iterator(fs::path(path).parent_path()))
    if (entry.path().filename().string().find(".tmp") != std::string::npos)
      found.push_back(entry.path().filename().string());
  return found;
}

void writeBytes(const std::string &path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ------------------------------------------- spec 1: z = x + y + b (rows)

constexpr int64_t kRows = 5, kCols = 3;
constexpr int64_t kX = 0, kY = 64, kB = 128, kZ = 192, kAddArena = 256;

void addRowsKernel(ArenaDescriptor *arena, int64_t begin, int64_t end) {
  const float *x = at<float>(arena, kX), *y = at<float>(arena, kY), *b = at<float>(arena, kB);
  float *z = at<float>(arena, kZ);
  for (int64_t r = begin; r < end; ++r)
    for (int64_t c = 0; c < kCols; ++c)
      z[r * kCols + c] = x[r * kCols + c] + y[r * kCols + c] + b[c];
}

ExecutableSpec addSpec() {
  ExecutableSpec spec;
  spec.name = "add";
  spec.arenaBytes = kAddArena;
  spec.inputs = {slot("x", DType::F32, {kRows, kCols}, kX),
                 slot("y", DType::F32, {kRows, kCols}, kY)};
  spec.params = {slot("b", DType::F32, {kCols}, kB)};
  spec.outputs = {slot("z", DType::F32, {kRows, kCols}, kZ)};
  KernelSpec add;
  add.name = "k0_add_add";
  add.fn = addRowsKernel;
  add.parallelExtent = kRows;
  add.outputs = {slot("z", DType::F32, {kRows, kCols}, kZ)};
  add.provenance = {"add at add.sg:4:7", "add at add.sg:5:7"};
  spec.kernels = {add};
  spec.initialParams["b"] = f32({kCols}, {10, 20, 30});
  return spec;
}

std::vector<float> iota(int64_t n, float start) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[i] = start + static_cast<float>(i);
  return v;
}

std::map<std::string, Tensor, std::less<>> addInputs() {
  return {{"x", f32({kRows, kCols}, iota(kRows * kCols, 0))},
          {"y", f32({kRows, kCols}, iota(kRows * kCols, 100))}};
}

TEST(Executable, StepComputesOutputs) {
  for (int threads : {1, 2, 4}) {
    CpuExecutable exe(addSpec(), {.threads = threads});
    auto out = exe.step(addInputs());
    ASSERT_EQ(out.size(), 1u);
    const Tensor &z = out.at("z");
    ASSERT_EQ(z.type(), (TensorType{DType::F32, {kRows, kCols}}));
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < kCols; ++c) {
        float i = static_cast<float>(r * kCols + c);
        EXPECT_EQ(z.data<float>()[r * kCols + c], i + (100 + i) + 10 * (c + 1))
            << "threads " << threads << " at [" << r << "," << c << "]";
      }
    EXPECT_EQ(exe.stepsTaken(), 1);
    EXPECT_EQ(exe.paramNames(), std::vector<std::string>{"b"});
    EXPECT_EQ(exe.param("b"), f32({kCols}, {10, 20, 30}));
  }
}

TEST(Executable, InputErrorsNameTheInputAndChangeNothing) {
  CpuExecutable exe(addSpec(), {.checkNumerics = true, .threads = 2});
  exe.step(addInputs());
  Tensor before = exe.param("b");

  auto wrongShape = addInputs();
  wrongShape["x"] = Tensor(DType::F32, {kRows, kCols + 1});
  EXPECT_EQ(errorOf([&] { exe.step(wrongShape); }),
            "input 'x': expected f32[5,3], got f32[5,4]");

  auto wrongDType = addInputs();
  wrongDType["y"] = Tensor(DType::F64, {kRows, kCols});
  EXPECT_EQ(errorOf([&] { exe.step(wrongDType); }),
            "input 'y': expected f32[5,3], got f64[5,3]");

  auto missing = addInputs();
  missing.erase("y");
  EXPECT_EQ(errorOf([&] { exe.step(missing); }), "missing input 'y' (f32[5,3])");

  auto unknown = addInputs();
  unknown["foo"] = Tensor(DType::F32, {1});
  EXPECT_EQ(errorOf([&] { exe.step(unknown); }),
            "unknown input 'foo'; the executable's inputs are: x, y");

  // A misspelling is reported as unknown, which lists the right name.
  auto misspelt = addInputs();
  misspelt["X"] = misspelt.at("x");
  misspelt.erase("x");
  EXPECT_CONTAINS(errorOf([&] { exe.step(misspelt); }), "unknown input 'X'");

  EXPECT_EQ(exe.param("b"), before);
  EXPECT_EQ(exe.stepsTaken(), 1);
  EXPECT_EQ(exe.step(addInputs()).at("z").data<float>()[0], 0 + 100 + 10);
  EXPECT_EQ(exe.stepsTaken(), 2);
}

TEST(Executable, ParamAccessChecksNamesAndTypes) {
  CpuExecutable exe(addSpec());
  EXPECT_EQ(errorOf([&] { exe.param("w"); }),
            "unknown param 'w'; the executable's params are: b");
  EXPECT_EQ(errorOf([&] { exe.setParam("b", Tensor(DType::F32, {4})); }),
            "param 'b': expected f32[3], got f32[4]");
  exe.setParam("b", f32({kCols}, {1, 2, 3}));
  EXPECT_EQ(exe.param("b"), f32({kCols}, {1, 2, 3}));
  EXPECT_EQ(exe.step(addInputs()).at("z").data<float>()[0], 0 + 100 + 1);
}

TEST(Executable, BadSpecsAreRejected) {
  auto noInit = addSpec();
  noInit.initialParams.clear();
  EXPECT_EQ(errorOf([&] { CpuExecutable exe(noInit); }),
            "executable 'add': param 'b' (f32[3]) has no initial value");

  auto wrongInit = addSpec();
  wrongInit.initialParams["b"] = Tensor(DType::F64, {kCols});
  EXPECT_EQ(errorOf([&] { CpuExecutable exe(wrongInit); }),
            "executable 'add': initial value of param 'b': expected f32[3], got f64[3]");

  auto extraInit = addSpec();
  extraInit.initialParams["c"] = Tensor(DType::F32, {1});
  EXPECT_CONTAINS(errorOf([&] { CpuExecutable exe(extraInit); }),
                  "initial value given for 'c', which is not a param");

  auto outside = addSpec();
  outside.arenaBytes = 200;
  EXPECT_CONTAINS(errorOf([&] { CpuExecutable exe(outside); }),
                  "output 'z' (f32[5,3], 60 bytes at offset 192) does not fit in the arena "
                  "of 200 bytes");

  auto badCopy = addSpec();
  badCopy.updateCopies = {{250, 0, 8}};
  EXPECT_CONTAINS(errorOf([&] { CpuExecutable exe(badCopy); }), "update copy of 8 bytes");

  auto noFn = addSpec();
  noFn.kernels[0].fn = nullptr;
  EXPECT_CONTAINS(errorOf([&] { CpuExecutable exe(noFn); }), "kernel 'k0_add_add' has no function");
}

// ------------------------------ spec 2: parallel coverage of a kernel's rows

std::mutex rangesMutex;
std::vector<std::pair<int64_t, int64_t>> ranges;

constexpr int64_t kCountRows = 37;

void countRowsKernel(ArenaDescriptor *arena, int64_t begin, int64_t end) {
  {
    std::lock_guard lock(rangesMutex);
    ranges.emplace_back(begin, end);
  }
  int32_t *counts = at<int32_t>(arena, 0);
  for (int64_t r = begin; r < end; ++r)
    counts[r] += 1;
}

TEST(Executable, ParallelChunksCoverEveryRowOnce) {
  for (int64_t extent : {int64_t(1), int64_t(2), int64_t(3), kCountRows}) {
    for (int threads = 1; threads <= 4; ++threads) {
      SCOPED_TRACE(::testing::Message() << "extent " << extent << ", threads " << threads);
      ExecutableSpec spec;
      spec.name = "count";
      spec.arenaBytes = 4 * extent;
      spec.params = {slot("counts", DType::I32, {extent}, 0)};
      spec.initialParams["counts"] = Tensor(DType::I32, {extent});
      KernelSpec kernel;
      kernel.name = "k0_count";
      kernel.fn = countRowsKernel;
      kernel.parallelExtent = extent;
      spec.kernels = {kernel};
      CpuExecutable exe(spec, {.threads = threads});
      for (int step = 0; step < 3; ++step) {
        ranges.clear();
        exe.step({});
        // One call per thread, contiguous chunks differing by at most one row.
        std::sort(ranges.begin(), ranges.end());
        ASSERT_EQ(static_cast<int64_t>(ranges.size()), std::min<int64_t>(threads, extent));
        int64_t next = 0, shortest = extent, longest = 0;
        for (auto [begin, end] : ranges) {
          EXPECT_EQ(begin, next);
          next = end;
          shortest = std::min(shortest, end - begin);
          longest = std::max(longest, end - begin);
        }
        EXPECT_EQ(next, extent);
        EXPECT_LE(longest - shortest, 1);
      }
      Tensor counts = exe.param("counts");
      for (int64_t r = 0; r < extent; ++r)
        EXPECT_EQ(counts.data<int32_t>()[r], 3) << "row " << r;
    }
  }
}

// ------------- spec 3: a training step: SGD in place, a counter updated by
// an update copy, and log(w), which is NaN or -Inf once w goes <= 0.

constexpr int64_t kN = 4;
constexpr int64_t kW = 0, kG = 64, kLog = 128, kT = 192, kTNext = 200, kTrainArena = 256;
std::atomic<bool> boom{false};

void sgdKernel(ArenaDescriptor *arena, int64_t begin, int64_t end) {
  float *w = at<float>(arena, kW);
  const float *g = at<float>(arena, kG);
  for (int64_t i = begin; i < end; ++i)
    w[i] -= g[i];
  if (boom && end == kN)
    throw std::runtime_error("boom in the last chunk");
}

void logKernel(ArenaDescriptor *arena, int64_t begin, int64_t end) {
  const float *w = at<float>(arena, kW);
  float *out = at<float>(arena, kLog);
  for (int64_t i = begin; i < end; ++i)
    out[i] = std::log(w[i]);
}

void countKernel(ArenaDescriptor *arena, int64_t, int64_t) {
  *at<int64_t>(arena, kTNext) = *at<int64_t>(arena, kT) + 1;
}

ExecutableSpec trainSpec() {
  ExecutableSpec spec;
  spec.name = "train";
  spec.arenaBytes = kTrainArena;
  spec.inputs = {slot("g", DType::F32, {kN}, kG)};
  spec.params = {slot("w", DType::F32, {kN}, kW), slot("t", DType::I64, {}, kT)};
  spec.outputs = {slot("%7", DType::F32, {kN}, kLog), slot("t", DType::I64, {}, kTNext)};
  spec.updateCopies = {{kTNext, kT, 8}};
  KernelSpec sgd{"k0_sgd", sgdKernel, kN, {slot("w", DType::F32, {kN}, kW)},
                 {"sub at train.sg:6:9 (gradient of mul)"}};
  KernelSpec log{"k1_log", logKernel, kN, {slot("%7", DType::F32, {kN}, kLog)},
                 {"log at train.sg:7:9", "mul at train.sg:7:3"}};
  KernelSpec count{"k2_count", countKernel, 1, {slot("t", DType::I64, {}, kTNext)},
                   {"add at train.sg:8:5"}};
  spec.kernels = {sgd, log, count};
  spec.initialParams["w"] = f32({kN}, {1, 2, 3, 4});
  spec.initialParams["t"] = Tensor::scalar(DType::I64, 0);
  return spec;
}

std::map<std::string, Tensor, std::less<>> gradient(std::vector<float> g) {
  return {{"g", f32({kN}, std::move(g))}};
}

TEST(Executable, ParamsPersistAndUpdateInPlaceAndByCopy) {
  CpuExecutable exe(trainSpec(), {.threads = 2});
  for (int step = 1; step <= 3; ++step) {
    auto out = exe.step(gradient({0.25f, 0.25f, 0.25f, 0.25f}));
    EXPECT_EQ(out.at("t").real(0), step);
    EXPECT_FLOAT_EQ(out.at("%7").data<float>()[0], std::log(1 - 0.25f * step));
  }
  EXPECT_EQ(exe.param("w"), f32({kN}, {0.25f, 1.25f, 2.25f, 3.25f}));
  EXPECT_EQ(exe.param("t").real(0), 3);
  EXPECT_EQ(exe.stepsTaken(), 3);
}

TEST(Executable, CheckNumericsNamesKernelOpsAndStepAndRollsBack) {
  CpuExecutable exe(trainSpec(), {.checkNumerics = true, .threads = 2});
  exe.step(gradient({0.5f, 0.5f, 0.5f, 0.5f}));
  Tensor w = exe.param("w"), t = exe.param("t");

  // k0_sgd makes w[2] negative in place; k1_log then produces NaN.
  EXPECT_EQ(errorOf([&] { exe.step(gradient({0, 0, 3, 0})); }),
            "check-numerics: kernel k1_log (step 1) produced NaN in output %7 f32[4] at "
            "element 2 (index [2]); its ops:\n"
            "  log at train.sg:7:9\n"
            "  mul at train.sg:7:3\n"
            "params are left as they were before step 1");
  EXPECT_EQ(exe.param("w"), w);
  EXPECT_EQ(exe.param("t"), t);
  EXPECT_EQ(exe.stepsTaken(), 1);

  // log(0) = -Inf, and the next good step runs as if nothing happened.
  EXPECT_CONTAINS(errorOf([&] { exe.step(gradient({0, 0, 2.5f, 0})); }),
                  "kernel k1_log (step 1) produced -Inf in output %7 f32[4] at element 2");
  EXPECT_EQ(exe.param("w"), w);
  auto out = exe.step(gradient({0.25f, 0.25f, 0.25f, 0.25f}));
  EXPECT_EQ(out.at("t").real(0), 2);
  EXPECT_EQ(exe.param("w"), f32({kN}, {0.25f, 1.25f, 2.25f, 3.25f}));
  // The next failure names the next step.
  EXPECT_CONTAINS(errorOf([&] { exe.step(gradient({0.25f, 0, 0, 0})); }),
                  "kernel k1_log (step 2) produced -Inf in output %7 f32[4] at element 0");
}

TEST(Executable, WithoutCheckNumericsNaNsPassThrough) {
  CpuExecutable exe(trainSpec(), {.threads = 1});
  auto out = exe.step(gradient({2, 0, 0, 0}));
  EXPECT_TRUE(std::isnan(out.at("%7").data<float>()[0]));
  EXPECT_EQ(exe.stepsTaken(), 1);
}

TEST(Executable, ThrowingKernelIsReportedAndRolledBackWithCheckNumerics) {
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << "threads " << threads);
    CpuExecutable exe(trainSpec(), {.checkNumerics = true, .threads = threads});
    exe.step(gradient({0.5f, 0.5f, 0.5f, 0.5f}));
    Tensor w = exe.param("w");
    boom = true;
    std::string message = errorOf([&] { exe.step(gradient({0.1f, 0.1f, 0.1f, 0.1f})); });
    boom = false;
    EXPECT_EQ(message, "kernel k0_sgd (step 1) failed: boom in the last chunk; params are "
                       "left as they were before step 1");
    EXPECT_EQ(exe.param("w"), w);
    EXPECT_EQ(exe.stepsTaken(), 1);
  }
  CpuExecutable unchecked(trainSpec(), {.threads = 2});
  boom = true;
  std::string message = errorOf([&] { unchecked.step(gradient({0.1f, 0.1f, 0.1f, 0.1f})); });
  boom = false;
  EXPECT_CONTAINS(message, "kernel k0_sgd (step 0) failed: boom in the last chunk; params may "
                           "be partly updated");
  EXPECT_EQ(unchecked.stepsTaken(), 0);
}

TEST(Executable, ProfileWritesOneTraceEventPerKernelPerStep) {
  TempDir dir;
  auto spec = trainSpec();
  spec.kernels[0].flops = 4; // shown as a rate in the trace
  CpuExecutable exe(spec, {.checkNumerics = true, .profile = true, .threads = 2});
  for (int step = 0; step < 3; ++step)
    exe.step(gradient({0.1f, 0.1f, 0.1f, 0.1f}));
  // A failed step records nothing.
  EXPECT_CONTAINS(errorOf([&] { exe.step(gradient({10, 0, 0, 0})); }), "check-numerics");
  ASSERT_EQ(exe.profile().size(), 9u);

  std::string path = dir / "trace.json";
  exe.writeTrace(path);
  nlohmann::json trace = nlohmann::json::parse(readBytes(path));
  const auto &events = trace.at("traceEvents");
  ASSERT_TRUE(events.is_array());
  std::map<std::pair<std::string, int64_t>, int> seen;
  double lastTs = -1;
  for (const auto &event : events) {
    EXPECT_EQ(event.at("ph"), "X");
    EXPECT_EQ(event.at("pid"), 1);
    EXPECT_EQ(event.at("tid"), 1);
    double ts = event.at("ts").get<double>();
    EXPECT_GE(ts, lastTs);
    EXPECT_GE(event.at("dur").get<double>(), 0);
    lastTs = ts;
    bool hasRate = event.at("args").contains("gflops_per_s");
    EXPECT_EQ(hasRate, event.at("name") == "k0_sgd" && event.at("dur").get<double>() > 0);
    seen[{event.at("name").get<std::string>(), event.at("args").at("step").get<int64_t>()}]++;
  }
  EXPECT_EQ(events.size(), 9u);
  for (const char *kernel : {"k0_sgd", "k1_log", "k2_count"})
    for (int64_t step = 0; step < 3; ++step)
      EXPECT_EQ((seen[{kernel, step}]), 1) << kernel << " step " << step;
  EXPECT_TRUE(temporariesBeside(path).empty());
}

// The hook `stepc bench --per-kernel` reads kernel outputs through: once per
// kernel, in order, while the kernel's output slots hold what it wrote.
TEST(Executable, AfterKernelSeesEachKernelsOutputsInOrder) {
  struct Call {
    size_t index;
    std::string kernel;
    std::vector<std::byte> output;
  };
  std::vector<Call> calls;
  RunOptions run{.threads = 2};
  run.afterKernel = [&](size_t index, const KernelSpec &kernel, const std::byte *arena) {
    const TensorSlot &out = kernel.outputs.at(0);
    calls.push_back({index, kernel.name,
                     std::vector<std::byte>(arena + out.offset, arena + out.offset + out.bytes())});
  };
  CpuExecutable exe(trainSpec(), run);
  for (int step = 0; step < 2; ++step)
    exe.step(gradient({0.25f, 0.25f, 0.25f, 0.25f}));
  ASSERT_EQ(calls.size(), 6u);
  const char *names[] = {"k0_sgd", "k1_log", "k2_count"};
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].index, i % 3);
    EXPECT_EQ(calls[i].kernel, names[i % 3]);
  }
  auto floats = [](const std::vector<std::byte> &bytes) {
    std::vector<float> v(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
  };
  // Step 1: w = (1 2 3 4) - 2 * 0.25, then log(w), then t + 1 = 2.
  EXPECT_EQ(floats(calls[3].output), (std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f}));
  std::vector<float> logs = floats(calls[4].output);
  for (int i = 0; i < 4; ++i)
    EXPECT_FLOAT_EQ(logs[i], std::log(0.5f + i));
  int64_t t;
  std::memcpy(&t, calls[5].output.data(), sizeof t);
  EXPECT_EQ(t, 2);
}

// The hook `stepc bench --per-kernel` feeds fused kernels the unfused
// build's values through: once per kernel, in order, before it runs, and
// what it writes is what the kernel reads.
TEST(Executable, BeforeKernelWritesWhatTheKernelReads) {
  std::vector<size_t> indices;
  RunOptions run{.threads = 2};
  run.beforeKernel = [&](size_t index, const KernelSpec &, std::byte *arena) {
    indices.push_back(index);
    if (index == 1) { // k1_log reads w, which k0_sgd has just updated
      std::vector<float> w{1, std::exp(1.0f), 2, 0.5f};
      std::memcpy(arena + kW, w.data(), w.size() * sizeof(float));
    }
  };
  CpuExecutable exe(trainSpec(), run);
  auto out = exe.step(gradient({0.25f, 0.25f, 0.25f, 0.25f}));
  EXPECT_EQ(indices, (std::vector<size_t>{0, 1, 2}));
  const float *logs = out.at("%7").data<float>();
  EXPECT_FLOAT_EQ(logs[0], 0);
  EXPECT_FLOAT_EQ(logs[1], 1);
  EXPECT_FLOAT_EQ(logs[2], std::log(2.0f));
  EXPECT_FLOAT_EQ(logs[3], std::log(0.5f));
}

// ------------------------------------------------- checkpoints (safetensors)

// A spec with no kernels and one param of every dtype.
ExecutableSpec paramsSpec(const std::map<std::string, TensorType> &params) {
  ExecutableSpec spec;
  spec.name = "params";
  int64_t offset = 0;
  for (const auto &[name, type] : params) {
    spec.params.push_back(TensorSlot{name, type, offset});
    offset += (spec.params.back().bytes() + 63) / 64 * 64;
    spec.initialParams[name] = Tensor(type);
  }
  spec.arenaBytes = offset;
  return spec;
}

const std::map<std::string, TensorType> kEveryDType = {
    {"a.f32", {DType::F32, {3, 5}}}, {"b.f64", {DType::F64, {7}}},
    {"c.i32", {DType::I32, {2, 2}}}, {"d.i64", {DType::I64, {}}},
    {"e.bool", {DType::Bool, {5}}},  {"f.empty", {DType::F32, {0, 4}}}};

Tensor randomBits(const TensorType &type, std::mt19937 &rng) {
  Tensor t(type);
  for (size_t i = 0; i < t.nbytes(); ++i)
    t.bytes()[i] = std::byte(rng() & 0xff);
  if (type.dtype == DType::Bool)
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<uint8_t>()[i] &= 1;
  return t;
}

TEST(Checkpoint, SaveLoadRoundTripIsBitwise) {
  TempDir dir;
  std::mt19937 rng(1234);
  CpuExecutable exe(paramsSpec(kEveryDType));
  std::map<std::string, Tensor> values;
  for (const auto &[name, type] : kEveryDType) {
    values[name] = randomBits(type, rng); // includes NaN payloads and denormals
    exe.setParam(name, values[name]);
  }
  std::string path = dir / "ckpt.safetensors";
  exe.saveParams(path);
  EXPECT_TRUE(temporariesBeside(path).empty());

  CpuExecutable other(paramsSpec(kEveryDType));
  other.loadParams(path);
  for (const auto &[name, value] : values)
    EXPECT_EQ(other.param(name), value) << name;

  std::map<std::string, std::string> metadata;
  auto read = readSafetensors(path, &metadata);
  EXPECT_EQ(read, values);
  EXPECT_EQ(metadata.at("producer"), "stepc");
  EXPECT_EQ(metadata.at("executable"), "params");
}

TEST(Checkpoint, LoadListsEveryDifferenceAndChangesNothing) {
  TempDir dir;
  std::string path = dir / "ckpt.safetensors";
  CpuExecutable saved(paramsSpec({{"w1", {DType::F32, {4, 3}}},
                               {"w2", {DType::F32, {3}}},
                               {"extra", {DType::I64, {2}}},
                               {"m", {DType::F64, {3}}}}));
  saved.saveParams(path);

  auto spec = paramsSpec({{"w1", {DType::F32, {3, 4}}},
                          {"w2", {DType::F32, {3}}},
                          {"m", {DType::F32, {3}}},
                          {"v", {DType::F32, {3}}}});
  spec.initialParams["w2"] = f32({3}, {7, 8, 9});
  CpuExecutable exe(spec);
  std::string message = errorOf([&] { exe.loadParams(path); });
  EXPECT_EQ(message, path + ": checkpoint does not match executable 'params' (4 differences):\n"
                            "  'm': expected f32[3], found f64[3]\n"
                            "  missing 'v' (f32[3])\n"
                            "  'w1': expected f32[3,4], found f32[4,3]\n"
                            "  unexpected 'extra' (i64[2])");
  // w2 matched, but nothing is loaded unless everything matches.
  EXPECT_EQ(exe.param("w2"), f32({3}, {7, 8, 9}));
}

TEST(Checkpoint, FailedSaveLeavesTheOldFileIntact) {
  TempDir dir;
  std::string path = dir / "ckpt.safetensors";
  CpuExecutable exe(paramsSpec(kEveryDType));
  exe.setParam("b.f64", Tensor::fromReals(DType::F64, {7}, {1, 2, 3, 4, 5, 6, 7}));
  exe.saveParams(path);
  std::string good = readBytes(path);

  exe.setParam("b.f64", Tensor(DType::F64, {7}));
  // The disk fills up mid-write: a file-size limit stands in for a full disk
  // (it binds root too).
  rlimit unlimited{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &unlimited), 0);
  rlimit small = unlimited;
  small.rlim_cur = 100;
  auto oldHandler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string error = errorOf([&] { exe.saveParams(path); });
  ::setrlimit(RLIMIT_FSIZE, &unlimited);
  std::signal(SIGXFSZ, oldHandler);
  EXPECT_CONTAINS(error, "cannot write '" + path + ".tmp.");
  EXPECT_CONTAINS(error, "File too large");
  EXPECT_EQ(readBytes(path), good);
  EXPECT_TRUE(temporariesBeside(path).empty());

  // The directory does not exist.
  EXPECT_CONTAINS(errorOf([&] { exe.saveParams(dir / "missing/ckpt.safetensors"); }),
                  "No such file or directory");

  // A read-only directory (only meaningful when not root).
  if (::geteuid() != 0) {
    fs::permissions(dir.path(), fs::perms::owner_write, fs::perm_options::remove);
    EXPECT_CONTAINS(errorOf([&] { exe.saveParams(path); }), "cannot write");
    fs::permissions(dir.path(), fs::perms::owner_write, fs::perm_options::add);
    EXPECT_EQ(readBytes(path), good);
  }

  CpuExecutable fresh(paramsSpec(kEveryDType));
  fresh.loadParams(path);
  EXPECT_EQ(fresh.param("b.f64").real(6), 7);
}

// The layout, byte by byte, as the format's README describes it.
std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[i] = static_cast<char>(n >> (8 * i) & 0xff);
  return s;
}

std::string handBuilt(std::string header, std::string_view data) {
  return le64(header.size()) + header + std::string(data);
}

TEST(Safetensors, ReadsAHandBuiltFile) {
  TempDir dir;
  std::string path = dir / "hand.safetensors";
  float a[2] = {1.5f, -2.0f};
  int64_t b = -7;
  std::string data(reinterpret_cast<const char *>(a), 8);
  data += std::string(reinterpret_cast<const char *>(&b), 8);
  data += std::string("\x01\x00\x01", 3);
  // Any order of entries, unpadded header, metadata anywhere.
  writeBytes(path, handBuilt(R"({"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},)"
                             R"("__metadata__":{"format":"pt"},)"
                             R"("a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},)"
                             R"("c":{"dtype":"BOOL","shape":[3],"data_offsets":[16,19]}})",
                             data));
  std::map<std::string, std::string> metadata;
  auto tensors = readSafetensors(path, &metadata);
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors.at("a"), f32({2, 1}, {1.5f, -2.0f}));
  EXPECT_EQ(tensors.at("b"), Tensor::scalar(DType::I64, -7));
  EXPECT_EQ(tensors.at("c"), Tensor::of<bool>({3}, {true, false, true}));
  EXPECT_EQ(metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
}

TEST(Safetensors, WritesTheDocumentedLayout) {
  TempDir dir;
  std::string path = dir / "out.safetensors";
  std::map<std::string, Tensor> tensors{
      {"a", Tensor::of<bool>({3}, {true, false, true})},
      {"b", f32({2}, {1.0f, 2.0f})},
      {"c", Tensor::fromReals(DType::F64, {1}, {3.0})},
      {"d", Tensor::of<int32_t>({1, 1}, {-4})}};
  writeSafetensors(path, tensors, {{"note", "hi"}});
  std::string bytes = readBytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = n << 8 | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u) << "header padded to a multiple of 8";
  ASSERT_LE(8 + n, bytes.size());
  std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' ') + 1, header.find_last_of('}') + 1)
      << "only spaces pad the header";
  // Widest dtype first, then by name: every tensor aligned to its element.
  auto json = nlohmann::json::parse(header);
  EXPECT_EQ(json, nlohmann::json::parse(R"({
      "c": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
      "d": {"dtype": "I32", "shape": [1, 1], "data_offsets": [16, 20]},
      "a": {"dtype": "BOOL", "shape": [3], "data_offsets": [20, 23]},
      "__metadata__": {"note": "hi"}})"));
  std::string data = bytes.substr(8 + n);
  ASSERT_EQ(data.size(), 23u);
  double c;
  std::memcpy(&c, data.data(), 8);
  EXPECT_EQ(c, 3.0);
  float b[2];
  std::memcpy(b, data.data() + 8, 8);
  EXPECT_EQ(b[1], 2.0f);
  EXPECT_EQ(data.substr(20), std::string("\x01\x00\x01", 3));
  EXPECT_EQ(readSafetensors(path), tensors);

  EXPECT_CONTAINS(errorOf([&] { writeSafetensors(path, {{"__metadata__", f32({1}, {0})}}); }),
                  "reserved");
}

TEST(Safetensors, EmptyFileHoldsNoTensors) {
  TempDir dir;
  std::string path = dir / "empty.safetensors";
  writeSafetensors(path, {});
  EXPECT_TRUE(readSafetensors(path).empty());
}

TEST(Safetensors, EveryTruncationFailsCleanly) {
  TempDir dir;
  std::string path = dir / "t.safetensors";
  writeSafetensors(path, {{"w", f32({2, 2}, {1, 2, 3, 4})}, {"v", f32({1}, {5})}});
  std::string good = readBytes(path);
  std::string cut = dir / "cut.safetensors";
  for (size_t length = 0; length < good.size(); ++length) {
    writeBytes(cut, good.substr(0, length));
    std::string message = errorOf([&] { readSafetensors(cut); });
    EXPECT_CONTAINS(message, cut);
    EXPECT_EQ(message.find("(no error)"), std::string::npos) << "length " << length;
  }
  // Cut inside the data: names the tensor (v comes first, then w).
  writeBytes(cut, good.substr(0, good.size() - 2));
  EXPECT_CONTAINS(errorOf([&] { readSafetensors(cut); }), "tensor 'w'");
}

TEST(Safetensors, GarbageFailsCleanly) {
  TempDir dir;
  std::string path = dir / "g.safetensors";
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(static_cast<size_t>(rng() % 64), '\0');
    for (char &c : bytes)
      c = static_cast<char>(rng());
    if (trial % 2 && bytes.size() > 8) // a plausible length, garbage JSON
      bytes.replace(0, 8, le64(bytes.size() - 8 - rng() % 4));
    writeBytes(path, bytes);
    std::string message = errorOf([&] { readSafetensors(path); });
    EXPECT_EQ(message.rfind("(not", 0), std::string::npos) << message;
    EXPECT_CONTAINS(message, path);
  }
  EXPECT_CONTAINS(errorOf([&] { readSafetensors(dir / "nope.safetensors"); }),
                  "cannot open '" + dir / "nope.safetensors" + "'");
}

TEST(Safetensors, MalformedHeadersAreNamed) {
  TempDir dir;
  std::string path = dir / "m.safetensors";
  auto error = [&](std::string header, std::string_view data) {
    writeBytes(path, handBuilt(std::move(header), data));
    return errorOf([&] { readSafetensors(path); });
  };
  std::string eight(8, '\0');
  EXPECT_CONTAINS(error("{\"a\": ", eight), "not valid JSON");
  EXPECT_CONTAINS(error("[1, 2]", ""), "must be a JSON object");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight),
                  "tensor 'a' has unsupported dtype F8_E4M3");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", eight),
                  "tensor 'a' has unknown dtype Q4");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
                  "tensor 'a' is f32[3] (3 elements of 4 bytes) but its data_offsets [0, 8] "
                  "hold 8 bytes");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
                  "tensor 'a': shape must hold non-negative integers");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[2]}})", eight),
                  "tensor 'a' has no 'data_offsets'");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight),
                  "end before they begin");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        eight),
                  "tensors 'a' and 'b' overlap");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
                  "bytes [0, 4) of the data belong to no tensor");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
                  "4 bytes after the last tensor");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight),
                  "tensor 'a': data_offsets [0, 16] run past the end of the data (8 bytes)");
  EXPECT_CONTAINS(error(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],)"
                        R"("data_offsets":[0,8]}})",
                        eight),
                  "tensor 'a'");
  EXPECT_CONTAINS(error(R"({"__metadata__":{"n":1}})", ""), "entry 'n' must be a string");
  writeBytes(path, le64(uint64_t(1) << 62) + "{}");
  EXPECT_CONTAINS(errorOf([&] { readSafetensors(path); }), "truncated");
}

// ---------------------------------------------------------- the thread pool

TEST(ThreadPool, CoversTheRangeAndPropagatesExceptions) {
  for (int threads = 1; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t extent : {0, 1, 2, 5, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(extent));
      pool.parallelFor(extent, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          hits[i]++;
      });
      for (int64_t i = 0; i < extent; ++i)
        ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " extent " << extent;
    }
    // A throw in any chunk (the caller's or a worker's) reaches the caller,
    // after every chunk has finished; the pool stays usable.
    for (int64_t thrower : {int64_t(0), int64_t(99)}) {
      std::atomic<int> done{0};
      EXPECT_THROW(pool.parallelFor(100,
                                    [&](int64_t begin, int64_t end) {
                                      if (begin <= thrower && thrower < end)
                                        throw std::logic_error("chunk failed");
                                      done++;
                                    }),
                   std::logic_error);
      EXPECT_EQ(done.load(), std::min(threads, 100) - 1);
    }
    // Nested calls run serially instead of deadlocking.
    std::atomic<int64_t> sum{0};
    pool.parallelFor(8, [&](int64_t begin, int64_t end) {
      pool.parallelFor(10, [&](int64_t b, int64_t e) { sum += e - b; });
      (void)begin, (void)end;
    });
    EXPECT_EQ(sum.load(), 10 * std::min(threads, 8));
  }
}

TEST(ThreadPool, ManyShortJobsInARow) {
  ThreadPool pool(3);
  int64_t total = 0;
  std::vector<int64_t> partial(3);
  for (int job = 0; job < 2000; ++job) {
    std::fill(partial.begin(), partial.end(), 0);
    pool.parallelFor(3, [&](int64_t begin, int64_t end) { partial[begin] = end - begin; });
    total += partial[0] + partial[1] + partial[2];
  }
  EXPECT_EQ(total, 3 * 2000);
}

} // namespace
} // namespace stepc

// NCCL is opened at run time like the CUDA driver: where it cannot be, the
// reason says what was tried and how to point stepc at it.
TEST(Nccl, MissingLibraryIsExplained) {
  ::setenv("STEPC_NCCL", "/nonexistent/libnccl.so.2", 1);
  std::string why = stepc::cuda::ncclUnavailableReason();
  EXPECT_NE(why.find("no NCCL: cannot open /nonexistent/libnccl.so.2"), std::string::npos) << why;
  EXPECT_NE(why.find("STEPC_NCCL"), std::string::npos) << why;
}
