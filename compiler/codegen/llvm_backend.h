// MLIR text -> LLVM dialect -> LLVM IR -> host machine code. The only place
// besides mlir_jit.cpp that includes MLIR or LLVM headers (docs/design.md rule 2).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace stepc::codegen {

// The lowering stages `stepc compile --dump` can show.
enum class Stage { Mlir, LlvmDialect, LlvmIr, OptimizedLlvmIr };

// Lowers a module of kernels to the given stage and prints it.
std::string lowerToStage(const std::string &mlirModule, Stage stage);

// Seconds per stage of one compileToObject.
struct ObjectTimes {
  double parse = 0, lowering = 0, optimize = 0, codegen = 0;
};

// How hard compileToObject works on a module's code.
enum class Optimization {
  // Kernel bodies: LLVM's O3 pipeline, aggressive instruction selection.
  Full,
  // Entry points that only call a body with constant offsets, once per
  // kernel per step: no IR passes and fast instruction selection. Most of a
  // cold compile's codegen time was spent on these wrappers.
  None,
};

// Compiles a module of kernels to a relocatable object for the host CPU
// (its native vector width: AVX-512 here). Thread-safe: each call has its
// own MLIR and LLVM contexts (MLIR's own threading is off; callers compile
// modules in parallel), and the object depends on the text alone.
std::string compileToObject(const std::string &mlirModule, ObjectTimes *times = nullptr,
                            Optimization optimization = Optimization::Full);
// As above, plus a read-only, 64-byte aligned byte array named `dataSymbol`
// holding `data`: how AOT artifacts carry their initial params.
std::string compileToObject(const std::string &mlirModule, const std::string &dataSymbol,
                            std::string_view data);

// The host target, as "x86_64-pc-linux-gnu znver4 +avx512f,...": part of
// every cache key, since objects are built for it.
std::string hostTargetDescription();

// The width of the host's vector registers the kernels may use: 512 with
// AVX-512, else 256 (AVX2). The matmul register tile is sized from it.
int hostVectorRegisterBits();

// Whether the host has AVX512_BF16 (vdpbf16ps: bf16 pairs multiplied
// exactly and summed into f32). Read from the same target machine that
// compiles the kernels, JIT and AOT alike, so an object never holds an
// instruction its target lacks.
bool hostHasAvx512Bf16();

// Machine code loaded in memory (LLVM ORC). Symbols stay valid while it lives.
class LoadedObject {
public:
  static std::shared_ptr<LoadedObject> load(const std::string &objectBytes);
  // Several objects linked together (an entry module and the bodies it calls).
  static std::shared_ptr<LoadedObject> load(const std::vector<std::string> &objects);
  virtual ~LoadedObject() = default;
  // The address of a symbol; throws stepc::Error if it is missing.
  virtual void *symbol(const std::string &name) = 0;
};

} // namespace stepc::codegen
