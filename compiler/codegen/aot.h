// Ahead-of-time artifacts (compileAot in compile.h writes them): the C
// header of a compiled graph's API and the C++ source that rebuilds its
// ExecutableSpec on libstepc_runtime. Internal to compiler/codegen.
#pragma once

#include "stepc/compile.h"
#include "stepc/cuda.h"
#include "stepc/executable.h"

#include <string>
#include <string_view>
#include <vector>

namespace stepc::codegen {

// A C identifier for `name`: other characters become '_', a leading digit
// gets a '_' before it, and an empty name becomes "model".
std::string cIdentifier(std::string_view name);

// The layout of the initial params embedded in the object: each param's
// bytes, in spec.params order, at a 64-byte aligned offset.
struct ParamBlob {
  std::string bytes;
  std::vector<int64_t> offsets;
};
ParamBlob packInitialParams(const ExecutableSpec &spec);

// What a CUDA artifact's source needs beyond the spec: the object holds
// the PTX (ptxBytes, no NUL) at ptxOffset of the params' symbol.
struct AotCudaCode {
  std::vector<std::vector<CudaLaunch>> launches;
  std::string arch;
  int64_t ptxOffset = 0, ptxBytes = 0;
};

// `spec` is the lowered spec (no function pointers); kernel K's symbol in
// the object is _mlir_ciface_stepc_<name>_<K>. With `cuda` (a CUDA
// artifact), the source builds a CudaExecutable instead.
std::string aotHeader(const ExecutableSpec &spec, const std::string &name, bool cuda = false);
std::string aotSpecSource(const ExecutableSpec &spec, const std::string &name,
                          const ParamBlob &blob, const AotCudaCode *cuda = nullptr);

// Creates `dir` and names the artifact's files in it (NAME.o, NAME.h,
// NAME_spec.cpp, NAME.params.safetensors); shared by the CPU and CUDA targets.
AotArtifact artifactFiles(const std::string &dir, const std::string &name);

} // namespace stepc::codegen
