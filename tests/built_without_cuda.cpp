// What a build configured with -DSTEPC_BUILD_CUDA=OFF does with the CUDA
// backend, checked without a second configure and build: this binary links
// the two stub files that build uses (runtime/cuda/no_cuda.cpp for the
// driver, compiler/codegen/no_gpu.cpp for the code generator) in place of
// the real ones (see tests/CMakeLists.txt). Each entry point of the cuda
// backend must fail with the one clear message; the CLI turns it into exit 1
// ("--backend cuda: stepc was built without CUDA ...").
#include "gpu_lowering.h"

#include "stepc/cuda.h"
#include "stepc/error.h"
#include "stepc/text.h"
#include "testing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace stepc {
using stepc::testing::errorOf;
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr const char *kBuiltWithoutCuda = "stepc was built without CUDA (STEPC_BUILD_CUDA=OFF)";

Graph tiny() {
  return parseGraph("graph tiny {\n"
                    "  input %x : f32[4]\n"
                    "  %y = relu(%x)\n"
                    "  output y = %y\n"
                    "}\n");
}

TEST(BuiltWithoutCuda, EveryCudaEntryPointSaysSo) {
  EXPECT_THAT(cudaUnavailableReason(), StartsWith(kBuiltWithoutCuda));
  Graph g = tiny();
  CompileOptions cuda{.target = Target::Cuda};
  EXPECT_THAT(errorOf([&] { compileCuda(g, cuda); }), StartsWith(kBuiltWithoutCuda));
  EXPECT_THAT(errorOf([&] { compileCudaSpec(g, cuda); }), StartsWith(kBuiltWithoutCuda));
  EXPECT_THAT(errorOf([&] { codegen::dumpGpuIR(g, cuda, "", "ptx"); }),
              StartsWith(kBuiltWithoutCuda));
  EXPECT_THAT(errorOf([&] { codegen::compileAotCuda(g, cuda, "/nonexistent", "tiny"); }),
              StartsWith(kBuiltWithoutCuda));
  // The runtime too: an AOT artifact's CudaExecutable built by another stepc.
  EXPECT_THAT(errorOf([] { CudaExecutable exe(CudaExecutableSpec{}); }),
              HasSubstr(kBuiltWithoutCuda));
}

} // namespace
} // namespace stepc
