// The backend registry (include/stepc/backend.h): the names, the one wording
// of its errors, and that every backend runs a graph through it the same way.
#include "stepc/backend.h"

#include "stepc/cuda.h"
#include "stepc/error.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

namespace stepc {
using stepc::testing::errorOf;
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Graph affine() {
  return parseGraph("graph affine {\n"
                    "  input %x : f32[2,3]\n"
                    "  param %w : f32[3,2] = normal(mean=0.0, std=1.0, seed=1)\n"
                    "  %y = matmul(%x, %w)\n"
                    "  %z = relu(%y)\n"
                    "  output z = %z\n"
                    "}\n");
}

TEST(Backend, NamesComeFromOneTable) {
  std::vector<std::string_view> names;
  for (const Backend &backend : allBackends())
    names.push_back(backend.name);
  EXPECT_EQ(names, (std::vector<std::string_view>{"interp", "cpu", "cuda"}));
  EXPECT_EQ(findBackend("interp", "t").kind, BackendKind::Interp);
  EXPECT_FALSE(findBackend("interp", "t").compiled());
  EXPECT_EQ(findBackend("cpu", "t").target, Target::Cpu);
  EXPECT_EQ(findBackend("cuda", "t").target, Target::Cuda);
}

TEST(Backend, UnknownAndUnofferedNamesHaveOneWording) {
  EXPECT_EQ(errorOf([] { findBackend("tpu", "stepc run"); }),
            "stepc run: unknown backend 'tpu'; available: interp, cpu, cuda");
  EXPECT_EQ(errorOf([] { findBackend("cuda", "bench", {BackendKind::Cpu}); }),
            "bench: backend 'cuda' is not available; available: cpu");
  EXPECT_EQ(errorOf([] { findBackend("", "stepc train", {BackendKind::Cpu, BackendKind::Cuda}); }),
            "stepc train: unknown backend ''; available: cpu, cuda");
}

TEST(Backend, ChoicesForHelpListTheOfferedNamesInTableOrder) {
  constexpr BackendKind every[] = {BackendKind::Cuda, BackendKind::Interp, BackendKind::Cpu};
  constexpr BackendKind compiled[] = {BackendKind::Cuda, BackendKind::Cpu};
  constexpr BackendKind cpu[] = {BackendKind::Cpu};
  EXPECT_EQ(backendChoices(every), "interp, cpu or cuda");
  EXPECT_EQ(backendChoices(compiled), "cpu or cuda");
  EXPECT_EQ(backendChoices(cpu), "cpu");
}

TEST(Backend, CudaThatCannotRunSaysWhyAndWhatRuns) {
  EXPECT_NO_THROW(requireRunnable(findBackend("interp", "t")));
  EXPECT_NO_THROW(requireRunnable(findBackend("cpu", "t")));
  std::string why = cudaUnavailableReason();
  if (why.empty())
    GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(errorOf([] { requireRunnable(findBackend("cuda", "t")); }),
            "--backend cuda: " + why + "; --backend cpu runs here");
  // Compiling for it says the driver's reason before compiling anything.
  EXPECT_EQ(errorOf([] { makeExecutable(findBackend("cuda", "t"), affine()); }), why);
}

TEST(Backend, InterpreterAndCpuRunTheGraphAlike) {
  Graph g = affine();
  TensorMap inputs = randomInputs(g, 7), params = initialParams(g);
  params.at("w") = Tensor::of<float>({3, 2}, {1, -2, 3, -4, 5, -6});
  TensorMap want = runOnBackend(findBackend("interp", "t"), g, inputs, params);
  TensorMap got = runOnBackend(findBackend("cpu", "t"), g, inputs, params,
                               CompileOptions{.cache = false});
  ASSERT_EQ(got.size(), 1u);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(got.at("z").real(i), want.at("z").real(i), 1e-5) << "element " << i;
  // The interpreter behind the Executable interface computes the same.
  std::unique_ptr<Executable> interp = makeExecutable(findBackend("interp", "t"), g);
  interp->setParam("w", params.at("w"));
  std::map<std::string, Tensor> stepped = interp->step(inputs);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ(stepped.at("z").real(i), want.at("z").real(i)) << "element " << i;
}

TEST(Backend, InterpreterAndCpuShareTheExecutableInterface) {
  for (std::string_view name : {"interp", "cpu"}) {
    SCOPED_TRACE(name);
    std::unique_ptr<Executable> exe =
        makeExecutable(findBackend(name, "t"), affine(), CompileOptions{.cache = false});
    EXPECT_EQ(exe->deviceName(), "");
    EXPECT_EQ(exe->paramNames(), std::vector<std::string>{"w"});
    EXPECT_THAT(errorOf([&] { exe->setParam("w", Tensor(DType::F64, {3, 2})); }),
                StartsWith("param 'w': expected f32[3,2], got f64[3,2]"));
    EXPECT_THAT(errorOf([&] { exe->param("v"); }), StartsWith("unknown param 'v'"));
    EXPECT_THAT(errorOf([&] { exe->step({}); }), HasSubstr("'x'"));
  }
}

TEST(Backend, InterpreterTrainsAndCheckpointsAsTheCpuDoes) {
  Graph step = parseGraph("graph counter {\n"
                          "  input %x : f32[3]\n"
                          "  param %c : f32[3] = normal(mean=0.0, std=1.0, seed=4)\n"
                          "  %s = add(%c, %x)\n"
                          "  output seen = %c\n"
                          "  update %c = %s\n"
                          "}\n");
  TensorMap inputs = randomInputs(step, 9);
  std::unique_ptr<Executable> interp = makeExecutable(findBackend("interp", "t"), step);
  std::unique_ptr<Executable> cpu =
      makeExecutable(findBackend("cpu", "t"), step, CompileOptions{.cache = false});
  for (int i = 0; i < 2; ++i) {
    interp->step(inputs);
    cpu->step(inputs);
  }
  EXPECT_EQ(interp->stepsTaken(), 2);
  Tensor want = cpu->param("c");
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_NEAR(interp->param("c").real(i), want.real(i), 1e-6) << "element " << i;
  // One checkpoint format: the interpreter's loads into the CPU's executable.
  std::string path = testing::scratchPath("interp_checkpoint.safetensors");
  interp->step(inputs);
  interp->saveParams(path);
  cpu->loadParams(path);
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_EQ(cpu->param("c").real(i), interp->param("c").real(i)) << "element " << i;
  std::remove(path.c_str());
}

} // namespace
} // namespace stepc
