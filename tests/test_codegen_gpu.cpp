// The CUDA backend. On every machine: every op (with every dtype it takes)
// and every model in examples/ (forward, and the Adam training step) lower
// to PTX, fused and unfused, and where ptxas is installed the PTX assembles
// for sm_90 and sm_80. Where a CUDA device can be used, the same graphs run
// on it and must match the CPU backend; elsewhere those tests skip, saying
// why. The runtime's errors without a driver are checked in child processes
// (the driver is loaded once per process).
#include "codegen_harness.h"
#include "half_cases.h"
#include "sg_corpus.h"

#include "gpu_backend.h"
#include "gpu_lowering.h"

#include "stepc/compile.h"
#include "stepc/cuda.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"
#include "stepc/train.h"
#include "testing.h"

#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>

using namespace stepc;
using stepc::testing::corpusText;
using stepc::testing::errorOf;
using ::testing::HasSubstr;
using stepc::testing::exampleNames;
using stepc::testing::loadExample;

// The kernels the fake driver (tests/fake_cuda_driver.cpp) runs on a launch,
// by function name: their CPU emulation. Exported (ENABLE_EXPORTS) for it.
static std::map<std::string, KernelFn> fakeKernels;
extern "C" void *stepc_fake_cuda_kernel(const char *name) {
  auto it = fakeKernels.find(name);
  return it == fakeKernels.end() ? nullptr : reinterpret_cast<void *>(it->second);
}

namespace {

// --- Graphs -------------------------------------------------------------------

// Every node that is not a source becomes an output, so that no pass removes
// it and every op is compiled.
Graph everyNodeAnOutput(Graph graph) {
  std::set<ValueId> outputs;
  for (const GraphOutput &out : graph.outputs)
    outputs.insert(out.value);
  for (ValueId id = 0; id < graph.size(); ++id) {
    OpKind op = graph.node(id).op;
    if (op != OpKind::Input && op != OpKind::Parameter && !outputs.count(id))
      graph.addOutput(fmt::format("v{}", id), id);
  }
  return graph;
}

struct GraphCase {
  std::string name;
  Graph graph;
  TensorMap indices; // inputs that must hold valid indices
  TensorMap inputs(uint64_t seed) const {
    TensorMap values = randomInputs(graph, seed);
    for (const auto &[name, value] : indices)
      values.at(name) = value;
    return values;
  }
};

std::vector<GraphCase> opCases() {
  std::vector<GraphCase> cases = {
      {"every_op",
       everyNodeAnOutput(parseGraph(corpusText("every_op"), "every_op.sg")),
       {{"i", Tensor::of<int32_t>({2}, {1, 0})}}},
      {"dtypes",
       everyNodeAnOutput(stepc::testing::snippetGraph("tests/snippets/codegen_gpu.sg", "dtypes")),
       {{"idx", Tensor::of<int64_t>({4}, {2, 0, 1, 2})}}},
      {"composites", parseGraph(corpusText("composites"), "composites.sg"), {}},
  };
  // f16/bf16: loads extend to f32, stores round (cvt.rn.f16.f32, cvt.rn.bf16.f32).
  for (const auto &c : stepc::testing::halfCases())
    for (DType half : {DType::F16, DType::BF16})
      cases.push_back({fmt::format("{}_{}", c.name, dtypeName(half)),
                       convertFloatType(parseGraph(c.f32Graph), DType::F32, half),
                       {}});
  return cases;
}

// --- ptxas ----------------------------------------------------------------------

std::string ptxasPath() {
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *root = std::getenv(variable)) {
      std::string path = std::string(root) + "/bin/ptxas";
      if (std::filesystem::exists(path))
        return path;
    }
  return std::filesystem::exists("/usr/local/cuda/bin/ptxas") ? "/usr/local/cuda/bin/ptxas" : "";
}

// Assembles each `ptx[i]` for `archs[i]`, the ptxas runs side by side; the
// failure carries ptxas' messages.
::testing::AssertionResult assemble(const std::vector<std::string> &ptx,
                                    const std::vector<std::string> &archs,
                                    const std::string &what) {
  std::string ptxas = ptxasPath();
  if (ptxas.empty())
    return ::testing::AssertionSuccess(); // nothing to check with
  auto dir = std::filesystem::temp_directory_path();
  std::vector<std::string> bases;
  std::vector<FILE *> pipes;
  for (size_t i = 0; i < ptx.size(); ++i) {
    std::string base =
        fmt::format("{}/stepc_gpu_test_{}_{}_{}", dir.string(), ::getpid(), what, archs[i]);
    std::ofstream(base + ".ptx") << ptx[i];
    std::string command =
        fmt::format("'{}' -arch={} '{}.ptx' -o '{}.cubin' 2>&1", ptxas, archs[i], base, base);
    bases.push_back(base);
    pipes.push_back(popen(command.c_str(), "r"));
  }
  ::testing::AssertionResult result = ::testing::AssertionSuccess();
  for (size_t i = 0; i < ptx.size(); ++i) {
    if (!pipes[i]) {
      result = ::testing::AssertionFailure() << "cannot run " << ptxas;
      continue;
    }
    std::string output;
    char buffer[4096];
    while (size_t n = fread(buffer, 1, sizeof buffer, pipes[i]))
      output.append(buffer, n);
    int status = pclose(pipes[i]);
    std::filesystem::remove(bases[i] + ".cubin");
    if (status != 0) {
      result = ::testing::AssertionFailure() << "ptxas -arch=" << archs[i] << " failed on " << what
                                             << " (PTX kept in " << bases[i] << ".ptx):\n"
                                             << output;
      continue;
    }
    std::filesystem::remove(bases[i] + ".ptx");
  }
  return result;
}

// Lowers `graph` for the GPU once, takes it to PTX for sm_90 and sm_80, and
// assembles both. Returns the ops the kernels compiled.
std::set<std::string> expectPtx(const Graph &graph, bool fusion, const std::string &what) {
  SCOPED_TRACE(fmt::format("{} ({})", what, fusion ? "fused" : "unfused"));
  std::set<std::string> ops;
  CompileOptions options{.fusion = fusion, .cache = false, .target = Target::Cuda};
  LoweredGraph lowered;
  std::vector<std::string> ptx;
  try {
    lowered = lowerGraph(graph, options);
    ptx = codegen::compileToPtx(lowered.mlirModule, {"sm_90", "sm_80"});
  } catch (const std::exception &e) {
    ADD_FAILURE() << "compiling to PTX threw: " << e.what();
    if (const char *path = std::getenv("STEPC_TEST_DUMP_MLIR"))
      std::ofstream(path) << lowered.mlirModule;
    return ops;
  }
  EXPECT_EQ(lowered.launches.size(), lowered.spec.kernels.size());
  for (size_t k = 0; k < lowered.launches.size(); ++k) {
    // A collective step launches nothing: the runtime calls NCCL (or copies).
    EXPECT_EQ(lowered.launches[k].empty(), lowered.spec.kernels[k].collective.has_value())
        << lowered.spec.kernels[k].name;
    for (const CudaLaunch &launch : lowered.launches[k])
      for (const std::string &text : ptx)
        EXPECT_THAT(text, HasSubstr(fmt::format(".entry {}(", launch.function)));
    for (const std::string &line : lowered.spec.kernels[k].provenance)
      ops.insert(line.substr(0, line.find(' ')));
  }
  EXPECT_THAT(ptx[0], HasSubstr(".target sm_90"));
  EXPECT_THAT(ptx[1], HasSubstr(".target sm_80"));
  EXPECT_TRUE(
      assemble(ptx, {"sm_90", "sm_80"}, fmt::format("{}_{}", what, fusion ? "fused" : "unfused")));
  return ops;
}

// --- PTX for every op and every example ------------------------------------------

TEST(CudaPtx, EveryOpCompilesAndAssembles) {
  if (ptxasPath().empty())
    fmt::print("ptxas not found ($CUDA_HOME/bin, /usr/local/cuda/bin): PTX is generated but "
               "not assembled\n");
  std::set<std::string> compiled;
  for (const GraphCase &c : opCases())
    for (bool fusion : {true, false}) {
      std::set<std::string> ops = expectPtx(c.graph, fusion, c.name);
      compiled.insert(ops.begin(), ops.end());
    }
  // Every op but the graph's inputs and params reached a kernel.
  for (int k = 0; k < kNumOps; ++k) {
    OpKind op = static_cast<OpKind>(k);
    if (op == OpKind::Input || op == OpKind::Parameter)
      continue;
    EXPECT_TRUE(compiled.count(std::string(opInfo(op).name)))
        << "no kernel compiled op " << opInfo(op).name;
  }
}

class CudaPtxExamples : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaPtxExamples, Forward) {
  Graph model = loadExample(GetParam());
  for (bool fusion : {true, false})
    expectPtx(model, fusion, GetParam());
}

TEST_P(CudaPtxExamples, TrainStepAdam) {
  Graph step = trainStep(loadExample(GetParam()), "loss", Optimizer::adam());
  for (bool fusion : {true, false})
    expectPtx(step, fusion, GetParam() + "_adam");
}

INSTANTIATE_TEST_SUITE_P(, CudaPtxExamples, ::testing::ValuesIn(stepc::testing::exampleNames()),
                         [](const auto &info) { return info.param; });

// --- What the GPU code looks like ---------------------------------------------------

TEST(CudaLowering, ScratchLivesInTheArenaAndNothingIsAllocated) {
  CompileOptions options{.target = Target::Cuda};
  LoweredGraph lowered =
      lowerGraph(trainStep(loadExample("mlp"), "loss", Optimizer::adam()), options);
  EXPECT_THAT(lowered.mlirModule, HasSubstr("gpu.module @stepc_kernels"));
  EXPECT_THAT(lowered.mlirModule, ::testing::Not(HasSubstr("memref.alloc")));
  EXPECT_THAT(lowered.mlirModule, ::testing::Not(HasSubstr("func.func")));
  EXPECT_THAT(lowered.mlirModule, HasSubstr("gpu.func @"));
  EXPECT_GE(lowered.spec.arenaBytes, lowered.buffers.arenaBytes);
  // The nests of one thread: scalar results (the loss and its reductions).
  for (size_t k = 0; k < lowered.launches.size(); ++k)
    for (const CudaLaunch &launch : lowered.launches[k])
      if (launch.extent == 1)
        fmt::print("one thread: {} ({})\n", launch.function,
                   fmt::join(lowered.spec.kernels[k].provenance, "; "));
}

TEST(CudaLowering, CpuModuleIsUnchangedByTheGpuPath) {
  // The GPU options only switch the target: the CPU module stays a func.func
  // module with the C interface.
  LoweredGraph cpu = lowerGraph(loadExample("xor"));
  EXPECT_THAT(cpu.mlirModule, HasSubstr("func.func @k0_"));
  EXPECT_TRUE(cpu.launches.empty());
}

TEST(CudaLowering, DumpsPtxPerKernel) {
  Graph mlp = loadExample("mlp");
  CompileOptions options{.target = Target::Cuda, .gpuArch = "sm_80"};
  LoweredGraph lowered = lowerGraph(mlp, options);
  const std::string &first = lowered.spec.kernels.front().name;
  std::string ptx = dumpKernelIR(mlp, options, first, "ptx");
  EXPECT_THAT(ptx, HasSubstr(".target sm_80"));
  EXPECT_THAT(ptx, HasSubstr(fmt::format(".entry {}", lowered.launches.front().front().function)));
  EXPECT_THAT(ptx, HasSubstr("// stepc kernel " + first));
  EXPECT_THAT(ptx, HasSubstr("matmul at "));
  // Only that kernel.
  const std::string &last = lowered.launches.back().back().function;
  EXPECT_THAT(ptx, ::testing::Not(HasSubstr(fmt::format(".entry {}(", last))));
  EXPECT_THAT(dumpKernelIR(mlp, options, "", "nvvm"), HasSubstr("nvvm.read.ptx.sreg"));
  EXPECT_THAT(dumpKernelIR(mlp, options, first, "mlir"), HasSubstr("gpu.func @" + first));
}

TEST(CudaLowering, UserErrors) {
  Graph xor_ = loadExample("xor");
  try {
    compileCudaSpec(xor_, CompileOptions{.gpuArch = "sm90"});
    ADD_FAILURE() << "no error for a bad --gpu-arch";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown GPU architecture 'sm90'; expected one of: sm_90"));
  }
  try {
    dumpKernelIR(xor_, CompileOptions{.target = Target::Cuda}, "", "llvm-opt");
    ADD_FAILURE() << "no error for a CPU-only stage";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("expected mlir, nvvm or ptx"));
  }
  try {
    dumpKernelIR(xor_, CompileOptions{.target = Target::Cuda}, "nope", "ptx");
    ADD_FAILURE() << "no error for an unknown kernel";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("no kernel named 'nope'; the kernels are: k0_"));
  }
  try {
    compileJit(xor_, CompileOptions{.target = Target::Cuda});
    ADD_FAILURE() << "compileJit accepted Target::Cuda";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("compileCuda"));
  }
}

TEST(CudaAot, WritesPtxHeaderAndSource) {
  auto dir = std::filesystem::temp_directory_path() / fmt::format("stepc_cuda_aot_{}", ::getpid());
  AotArtifact artifact =
      compileAot(loadExample("xor"), CompileOptions{.target = Target::Cuda}, dir.string());
  for (const std::string &file :
       {artifact.object, artifact.header, artifact.source, artifact.params, artifact.ptx})
    EXPECT_TRUE(std::filesystem::exists(file)) << file;
  std::ifstream in(artifact.ptx);
  std::string ptx((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(ptx, HasSubstr(".target sm_90"));
  EXPECT_EQ(ptx.find('\0'), std::string::npos);
  EXPECT_TRUE(assemble({ptx}, {"sm_90"}, "aot_xor"));
  std::ifstream source(artifact.source);
  std::string text((std::istreambuf_iterator<char>(source)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("stepc::CudaExecutable executable;"));
  EXPECT_THAT(text, HasSubstr("cuda.arch = \"sm_90\";"));
  std::filesystem::remove_all(dir);
}

// --- The GPU lowering run on the CPU ---------------------------------------------------

// Whether `value` depends on an f32 sin or cos: the GPU lowering takes those
// to libdevice, which the CPU emulation replaces with MLIR's polynomial (see
// sinOrCosF32 in element_rules.cpp), good to ~1e-4 only.
bool usesF32SinCos(const Graph &graph, ValueId value) {
  std::vector<ValueId> stack{value};
  std::set<ValueId> seen;
  while (!stack.empty()) {
    ValueId v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second)
      continue;
    const Node &n = graph.node(v);
    if ((n.op == OpKind::Sin || n.op == OpKind::Cos) && n.type.dtype == DType::F32)
      return true;
    stack.insert(stack.end(), n.operands.begin(), n.operands.end());
  }
  return false;
}

// Runs the GPU kernels' code on the CPU (emulateCudaOnCpu: each nest's
// elements in reverse order) for `steps` steps and compares every output
// and updated param with the interpreter, as the CPU backend's tests do.
void expectEmulationMatchesInterpreter(const Graph &graph, const TensorMap &inputs,
                                       TensorMap params, int steps, bool fusion,
                                       double outlierFraction = 0) {
  SCOPED_TRACE(fusion ? "emulated fused" : "emulated unfused");
  std::unique_ptr<Executable> exe;
  try {
    exe = std::make_unique<CpuExecutable>(
        codegen::emulateCudaOnCpu(graph, CompileOptions{.fusion = fusion}),
        RunOptions{.threads = 1});
  } catch (const std::exception &e) {
    ADD_FAILURE() << "emulateCudaOnCpu threw: " << e.what();
    return;
  }
  for (const std::string &name : exe->paramNames())
    exe->setParam(name, params.at(name));
  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(fmt::format("step {}", step));
    TensorMap expected = graph.updates.empty() ? interpret(graph, inputs, params)
                                               : interpretStep(graph, inputs, params);
    std::map<std::string, Tensor> actual = exe->step(inputs);
    for (const GraphOutput &out : graph.outputs) {
      stepc::testing::Tolerance t = stepc::testing::toleranceFor(graph, out.value);
      if (usesF32SinCos(graph, out.value))
        t = {1e-3, 1e-4};
      EXPECT_TRUE(stepc::testing::matches(actual.at(out.name), expected.at(out.name), t))
          << "output " << out.name << " (" << opInfo(graph.node(out.value).op).name << " at "
          << graph.node(out.value).loc.str() << ")";
    }
    for (const ParamUpdate &u : graph.updates) {
      const std::string &name = graph.node(u.param).name;
      const Tensor &want = params.at(name);
      int64_t outliers = outlierFraction > 0
                             ? std::max<int64_t>(1, int64_t(outlierFraction * double(want.numel())))
                             : 0;
      EXPECT_TRUE(stepc::testing::matches(
          exe->param(name), want, stepc::testing::toleranceFor(graph, u.value), outliers, 1e-4))
          << "param " << name << " after the step";
    }
  }
}

TEST(CudaEmulated, EveryOpMatchesInterpreter) {
  for (const GraphCase &c : opCases()) {
    SCOPED_TRACE(c.name);
    TensorMap inputs = c.inputs(stepc::testing::freshSeed());
    // Two steps: the second finds the arena as the first left it (scatter
    // outputs must be zeroed again, scratch overwritten).
    for (bool fusion : {true, false})
      expectEmulationMatchesInterpreter(c.graph, inputs, initialParams(c.graph), 2, fusion);
  }
}

class CudaEmulatedExamples : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaEmulatedExamples, Forward) {
  Graph model = loadExample(GetParam());
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  for (bool fusion : {true, false})
    expectEmulationMatchesInterpreter(model, randomInputs(model, seed), initialParams(model), 1,
                                      fusion);
}

// Two Adam steps, fused: step 2 reads the params and moments step 1 left in
// the arena. Adam divides by sqrt(v) + eps, so a few elements of tiny
// gradients may differ more (as in test_codegen_examples.cpp).
TEST_P(CudaEmulatedExamples, TrainStepAdam) {
  Graph step = trainStep(loadExample(GetParam()), "loss", Optimizer::adam());
  uint64_t seed = stepc::testing::freshSeed();
  SCOPED_TRACE(fmt::format("seed {}", seed));
  TensorMap inputs = randomInputs(step, seed);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-3);
  expectEmulationMatchesInterpreter(step, inputs, initialParams(step), 2, true, 0.01);
}

INSTANTIATE_TEST_SUITE_P(, CudaEmulatedExamples, ::testing::ValuesIn(stepc::testing::exampleNames()),
                         [](const auto &info) { return info.param; });

TEST(CudaEmulated, IndexChecksReportLikeTheInterpreter) {
  Graph model = parseGraph(corpusText("embedding"), "emb.sg");
  Graph step = trainStep(model, "loss", Optimizer::adam());
  TensorMap good = randomInputs(step, 5);
  good.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  TensorMap badIndex = good, badLabel = good;
  badIndex.at("ctx").data<int32_t>()[7] = 27;
  badLabel.at("y").data<int32_t>()[9] = -2;
  for (bool fusion : {true, false}) {
    SCOPED_TRACE(fusion ? "fused" : "unfused");
    CpuExecutable exe(codegen::emulateCudaOnCpu(step, CompileOptions{.fusion = fusion}));
    TensorMap params = initialParams(step);
    for (const TensorMap &bad : {badIndex, badLabel}) {
      std::string interpreted = errorOf([&] { interpretStep(step, bad, params); });
      ASSERT_FALSE(interpreted.empty());
      std::string emulated = errorOf([&] { exe.step(bad); });
      EXPECT_THAT(emulated, ::testing::StartsWith(interpreted + "\n  in kernel k"));
      EXPECT_THAT(emulated, HasSubstr("params are left as they were before step 0"));
    }
    // The gradient's scatter_add checks too (the forward gather is not in
    // this graph).
    Graph scatter = parseGraph("graph s {\n  input %i : i32[3]\n  input %u : f32[3,4]\n"
                               "  %r = scatter_add(%i, %u) {axis=0, size=5}\n  output r = %r\n}\n",
                               "s.sg");
    TensorMap in = {{"i", Tensor::of<int32_t>({3}, {1, 5, 0})},
                    {"u", stepc::testing::randomTensor(DType::F32, {3, 4}, 3)}};
    CpuExecutable s(codegen::emulateCudaOnCpu(scatter, CompileOptions{.fusion = fusion}));
    EXPECT_THAT(errorOf([&] { s.step(in); }),
                ::testing::StartsWith("s.sg:4:3: error: scatter_add: index 5 (element 1 of the "
                                      "indices i32[3]) is out of range for axis 0 of the result "
                                      "f32[5,4]; valid indices are 0 to 4\n  in kernel k"));
    EXPECT_NO_THROW(exe.step(good));
  }
}

// --- The runtime without a GPU -------------------------------------------------------

// In a child process (a fresh driver load), with $STEPC_CUDA_DRIVER set.
void expectUnavailable(const std::string &driver, const std::string &pattern) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("STEPC_CUDA_DRIVER", driver.c_str(), 1);
        std::string why = cudaUnavailableReason();
        std::fprintf(stderr, "%s\n", why.c_str());
        std::exit(why.empty() ? 1 : 0);
      },
      ::testing::ExitedWithCode(0), pattern);
}

TEST(CudaRuntime, MissingDriverIsAClearError) {
  expectUnavailable("/nonexistent/libcuda.so.1",
                    "no CUDA device: /nonexistent/libcuda.so.1 not found \\(");
}

TEST(CudaRuntime, StubDriverIsAClearError) {
  // The toolkit's link-time stub exports every function but answers each
  // call with CUDA_ERROR_STUB_LIBRARY.
  const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
  if (!std::filesystem::exists(stub))
    GTEST_SKIP() << "no CUDA stub library at " << stub;
  expectUnavailable(stub, "no CUDA device: cuInit failed: CUDA_ERROR_STUB_LIBRARY");
}

TEST(CudaRuntime, ExecutableWithoutDeviceThrowsNoCudaDevice) {
  std::string why = cudaUnavailableReason();
  if (why.empty())
    GTEST_SKIP() << "a CUDA device is present";
  CudaExecutableSpec spec = compileCudaSpec(loadExample("xor"));
  try {
    CudaExecutable exe(spec);
    ADD_FAILURE() << "a CudaExecutable was created without a device";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), ::testing::StartsWith("no CUDA device: "));
  }
  try {
    compileCuda(loadExample("xor"));
    ADD_FAILURE() << "compileCuda succeeded without a device";
  } catch (const Error &e) {
    EXPECT_EQ(std::string(e.what()), why);
  }
  // The CPU backend is unaffected.
  EXPECT_NO_THROW(compileJit(loadExample("xor"), CompileOptions{.cache = false}));
}

TEST(CudaRuntime, BadSpecsAreRefusedBeforeTheDriverIsTouched) {
  CudaExecutableSpec spec = compileCudaSpec(loadExample("xor"));
  spec.launches.pop_back();
  try {
    CudaExecutable exe(spec);
    ADD_FAILURE() << "a spec without launches for every kernel was accepted";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("kernels but launches for"));
  }
}

// --- The runtime on a fake driver ------------------------------------------------------

// What differs between `actual` and `expected`, or "".
std::string mismatch(const std::string &what, const Tensor &actual, const Tensor &expected,
                     stepc::testing::Tolerance tolerance, int64_t outliers = 0) {
  ::testing::AssertionResult same =
      stepc::testing::matches(actual, expected, tolerance, outliers, 1e-4);
  return same ? "" : fmt::format("{}: {}\n", what, same.message());
}

// The whole CudaExecutable on the fake driver against the CPU backend: a
// training step (convolutions, pooling, atomics, update copies) for two
// steps, params and checkpoints, profiling, check-numerics and its rollback,
// and input errors. Returns what went wrong, or "".
std::string runtimeOnFakeDriver(bool fusion) {
  std::string failures;
  if (std::string why = cudaUnavailableReason(); !why.empty())
    return "the fake driver did not load: " + why;
  Graph step = trainStep(loadExample("cnn"), "loss", Optimizer::adam());
  CompileOptions options{.fusion = fusion, .cache = false};
  ExecutableSpec emulated = codegen::emulateCudaOnCpu(step, options);
  for (const KernelSpec &kernel : emulated.kernels)
    fakeKernels[kernel.name] = kernel.fn;

  TensorMap inputs = randomInputs(step, 11);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-3);
  TensorMap params = initialParams(step);
  auto cpu = compileJit(step, options);
  CudaExecutable gpu(compileCudaSpec(step, options), RunOptions{.profile = true});
  if (gpu.deviceName() != "stepc fake GPU (sm_90)")
    failures += "device name: " + gpu.deviceName() + "\n";
  for (const std::string &name : cpu->paramNames()) {
    cpu->setParam(name, params.at(name));
    gpu.setParam(name, params.at(name));
  }
  for (int s = 0; s < 2; ++s) {
    std::map<std::string, Tensor> want = cpu->step(inputs), got = gpu.step(inputs);
    failures +=
        mismatch(fmt::format("step {} loss", s), got.at("loss"), want.at("loss"), {1e-4, 1e-5});
    for (const std::string &name : cpu->paramNames()) {
      Tensor expected = cpu->param(name);
      failures += mismatch(fmt::format("step {} param {}", s, name), gpu.param(name), expected,
                           {1e-3, 1e-5}, std::max<int64_t>(1, expected.numel() / 100));
    }
  }
  if (gpu.stepsTaken() != 2 || gpu.profile().size() != 2 * gpu.spec().kernels.size())
    failures += fmt::format("{} steps, {} timings\n", gpu.stepsTaken(), gpu.profile().size());

  auto dir = std::filesystem::temp_directory_path() / fmt::format("stepc_fake_{}", ::getpid());
  std::filesystem::create_directories(dir);
  gpu.saveParams((dir / "p.safetensors").string());
  gpu.writeTrace((dir / "trace.json").string());
  CudaExecutable again(compileCudaSpec(step, options), RunOptions{.checkNumerics = true});
  again.loadParams((dir / "p.safetensors").string());
  for (const std::string &name : gpu.paramNames())
    failures += mismatch("loaded " + name, again.param(name), gpu.param(name), {});
  std::filesystem::remove_all(dir);

  // A NaN learning rate is caught after the first kernel that produces a NaN;
  // the params are restored.
  TensorMap bad = inputs;
  bad.at("lr") = Tensor::scalar(DType::F32, std::numeric_limits<double>::quiet_NaN());
  try {
    again.step(bad);
    failures += "a NaN step passed check-numerics\n";
  } catch (const Error &e) {
    if (!std::string(e.what()).starts_with("check-numerics: kernel "))
      failures += std::string("check-numerics: ") + e.what() + "\n";
  }
  for (const std::string &name : gpu.paramNames())
    failures += mismatch("restored " + name, again.param(name), gpu.param(name), {});
  if (again.stepsTaken() != 0)
    failures += "the failed step counted\n";

  try {
    gpu.step({{"x", inputs.at("x")}});
    failures += "a missing input was accepted\n";
  } catch (const Error &e) {
    if (std::string(e.what()).find("missing input 'y'") == std::string::npos)
      failures += std::string("missing input: ") + e.what() + "\n";
  }
  return failures;
}

// A CudaExecutable on the fake driver finds a bad index before any param is
// written (a training step) or at the end of the step (forward only), and
// names it as the interpreter does. Returns what went wrong, or "".
std::string indexChecksOnFakeDriver() {
  std::string failures;
  if (std::string why = cudaUnavailableReason(); !why.empty())
    return "the fake driver did not load: " + why;
  Graph model = parseGraph(corpusText("embedding"), "emb.sg");
  Graph step = trainStep(model, "loss", Optimizer::adam());
  TensorMap good = randomInputs(step, 5);
  good.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  TensorMap bad = good;
  bad.at("ctx").data<int32_t>()[7] = 27;
  for (const Graph *graph : {&step, &model}) {
    TensorMap inputs = graph == &step ? good : TensorMap{{"ctx", good.at("ctx")}, {"y", good.at("y")}};
    TensorMap badInputs = inputs;
    badInputs.at("ctx") = bad.at("ctx");
    // The spec keeps the emulated kernels' code loaded.
    ExecutableSpec emulated = codegen::emulateCudaOnCpu(*graph, {.cache = false});
    for (const KernelSpec &kernel : emulated.kernels)
      fakeKernels[kernel.name] = kernel.fn;
    CudaExecutable gpu(compileCudaSpec(*graph, {.cache = false}));
    gpu.step(inputs);
    std::map<std::string, Tensor> before;
    for (const std::string &name : gpu.paramNames())
      before.emplace(name, gpu.param(name));
    TensorMap params(before.begin(), before.end());
    std::string interpreted = errorOf([&] { interpretStep(*graph, badInputs, params); });
    std::string message = errorOf([&] { gpu.step(badInputs); });
    if (interpreted.empty() || message.rfind(interpreted + "\n  in kernel k", 0) != 0 ||
        message.find("params are left as they were before step 1") == std::string::npos)
      failures += fmt::format("{}: interpreter said\n{}\nthe GPU runtime said\n{}\n",
                              graph->name, interpreted, message);
    for (const auto &[name, value] : before)
      if (std::memcmp(gpu.param(name).bytes(), value.bytes(), value.nbytes()) != 0)
        failures += fmt::format("{}: param {} changed in the failed step\n", graph->name, name);
    try {
      gpu.step(inputs);
    } catch (const std::exception &e) {
      failures += fmt::format("{}: the step after the fault failed: {}\n", graph->name, e.what());
    }
    if (gpu.stepsTaken() != 2)
      failures += fmt::format("{}: {} steps taken\n", graph->name, gpu.stepsTaken());
  }
  return failures;
}

// In a child process (a fresh driver load) whose driver is the fake one:
// `check` must report no failures.
void expectNoFailuresOnFakeDriver(const std::function<std::string()> &check) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("STEPC_CUDA_DRIVER", STEPC_FAKE_CUDA, 1);
        std::string failures = check();
        std::fprintf(stderr, "%s", failures.empty() ? "fake runtime OK\n" : failures.c_str());
        std::exit(failures.empty() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "fake runtime OK");
}

TEST(CudaRuntimeOnFakeDriver, IndexChecks) {
  expectNoFailuresOnFakeDriver(indexChecksOnFakeDriver);
}

TEST(CudaRuntimeOnFakeDriver, MatchesCpuFused) {
  expectNoFailuresOnFakeDriver([] { return runtimeOnFakeDriver(true); });
}

TEST(CudaRuntimeOnFakeDriver, MatchesCpuUnfused) {
  expectNoFailuresOnFakeDriver([] { return runtimeOnFakeDriver(false); });
}

// --- On a GPU: the same results as the CPU backend --------------------------------

// Runs `graph` on the CPU backend and on the GPU (fused and unfused) from the
// same params and inputs for `steps` steps; outputs and updated params must
// agree within twice the CPU-vs-interpreter tolerance (both are that close
// to the interpreter), times `scale`.
void expectGpuMatchesCpu(const Graph &graph, const TensorMap &inputs, const TensorMap &params,
                         int steps, double scale) {
  if (std::string why = cudaUnavailableReason(); !why.empty())
    GTEST_SKIP() << why;
  auto cpu = compileJit(graph, CompileOptions{.cache = false});
  for (const std::string &name : cpu->paramNames())
    cpu->setParam(name, params.at(name));
  std::vector<std::map<std::string, Tensor>> expected;
  std::vector<std::map<std::string, Tensor>> expectedParams;
  for (int s = 0; s < steps; ++s) {
    expected.push_back(cpu->step(inputs));
    std::map<std::string, Tensor> now;
    for (const std::string &name : cpu->paramNames())
      now.emplace(name, cpu->param(name));
    expectedParams.push_back(std::move(now));
  }
  auto tolerance = [&](ValueId v) {
    stepc::testing::Tolerance t = stepc::testing::toleranceFor(graph, v);
    return stepc::testing::Tolerance{2 * scale * t.rtol, 2 * scale * t.atol};
  };
  for (bool fusion : {true, false}) {
    SCOPED_TRACE(fusion ? "cuda fused" : "cuda unfused");
    auto gpu = compileCuda(graph, CompileOptions{.fusion = fusion});
    for (const std::string &name : gpu->paramNames())
      gpu->setParam(name, params.at(name));
    for (int s = 0; s < steps; ++s) {
      SCOPED_TRACE(fmt::format("step {}", s));
      std::map<std::string, Tensor> actual = gpu->step(inputs);
      for (const GraphOutput &out : graph.outputs)
        EXPECT_TRUE(stepc::testing::matches(actual.at(out.name), expected[s].at(out.name),
                                            tolerance(out.value)))
            << "output " << out.name;
      for (const ParamUpdate &u : graph.updates) {
        const std::string &name = graph.node(u.param).name;
        const Tensor &want = expectedParams[s].at(name);
        // Adam divides by sqrt(v) + eps: a few elements of tiny gradients
        // amplify the last-bit differences of two backends (as on the CPU).
        EXPECT_TRUE(stepc::testing::matches(gpu->param(name), want, tolerance(u.value),
                                            std::max<int64_t>(1, want.numel() / 100), 1e-2))
            << "param " << name;
      }
    }
  }
}

TEST(CudaExecution, EveryOpMatchesCpu) {
  if (std::string why = cudaUnavailableReason(); !why.empty())
    GTEST_SKIP() << why;
  for (const GraphCase &c : opCases()) {
    SCOPED_TRACE(c.name);
    expectGpuMatchesCpu(c.graph, c.inputs(7), initialParams(c.graph), 1, 1);
  }
}

class CudaExecutionExamples : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaExecutionExamples, Forward) {
  Graph model = loadExample(GetParam());
  expectGpuMatchesCpu(model, randomInputs(model, 3), initialParams(model), 1, 1);
}

TEST_P(CudaExecutionExamples, TrainStepAdam) {
  Graph step = trainStep(loadExample(GetParam()), "loss", Optimizer::adam());
  TensorMap inputs = randomInputs(step, 5);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-3);
  expectGpuMatchesCpu(step, inputs, initialParams(step), 2, 10);
}

INSTANTIATE_TEST_SUITE_P(, CudaExecutionExamples, ::testing::ValuesIn(stepc::testing::exampleNames()),
                         [](const auto &info) { return info.param; });

TEST(CudaExecution, ProfileCheckpointAndNumerics) {
  if (std::string why = cudaUnavailableReason(); !why.empty())
    GTEST_SKIP() << why;
  Graph step = trainStep(loadExample("xor"), "loss", Optimizer::adam());
  TensorMap inputs = randomInputs(step, 1);
  inputs.at("lr") = Tensor::scalar(DType::F32, 1e-2);
  auto exe = compileCuda(step, {}, RunOptions{.checkNumerics = true, .profile = true});
  exe->step(inputs);
  EXPECT_EQ(exe->profile().size(), exe->spec().kernels.size());
  auto dir = std::filesystem::temp_directory_path() / fmt::format("stepc_cuda_{}", ::getpid());
  std::filesystem::create_directories(dir);
  exe->saveParams((dir / "params.safetensors").string());
  exe->writeTrace((dir / "trace.json").string());
  auto again = compileCuda(step);
  again->loadParams((dir / "params.safetensors").string());
  for (const std::string &name : exe->paramNames())
    EXPECT_TRUE(stepc::testing::matches(again->param(name), exe->param(name), {}));
  std::filesystem::remove_all(dir);

  // A NaN input is caught after the kernel that produced it; params stay.
  TensorMap bad = inputs;
  bad.at("lr") = Tensor::scalar(DType::F32, std::numeric_limits<double>::quiet_NaN());
  std::map<std::string, Tensor> before;
  for (const std::string &name : exe->paramNames())
    before.emplace(name, exe->param(name));
  try {
    exe->step(bad);
    ADD_FAILURE() << "a NaN step passed check-numerics";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(), HasSubstr("check-numerics: kernel "));
  }
  for (const std::string &name : exe->paramNames())
    EXPECT_TRUE(stepc::testing::matches(exe->param(name), before.at(name), {}));
}

} // namespace
