// A small writer for MLIR's textual form: fresh SSA names, indentation,
// constants, and the scoped value cache the kernel emitter needs. Kernels
// are emitted as text, parsed by MLIR, and lowered from there; the text is
// also what `stepc compile --dump mlir` shows.
#pragma once

#include "stepc/types.h"

#include <map>
#include <string>
#include <vector>

namespace stepc::codegen {

// "f32", "f64", "i32", "i64", and "i1" for bool in registers; f16 and bf16
// values are f32 in registers.
std::string scalarType(DType dtype);
// Bool tensors are bytes in memory; f16/bf16 are "f16"/"bf16".
std::string memoryElementType(DType dtype);
// "memref<128x784xf32>", "memref<f32>" for scalars.
std::string memrefType(const TensorType &type);

// `text` with every occurrence of `from` replaced by `to` (symbol renames in
// module text).
std::string replaceAll(std::string text, const std::string &from, const std::string &to);

class MlirWriter {
public:
  // Appends one line at the current indentation.
  void line(const std::string &text);
  // Emits `%name = <rhs>` and returns %name.
  std::string assign(const std::string &rhs);
  std::string fresh(const std::string &hint = "v");

  std::string indexConstant(int64_t value);
  std::string constant(double value, DType dtype);
  // Exact for every int64 (a double holds only 53 bits: INT64_MAX does not
  // survive constant()); `dtype` is i32, i64 or bool.
  std::string integerConstant(int64_t value, DType dtype);

  void indent() { depth_ += 1; }
  void dedent() { depth_ -= 1; }

  // Opens `scf.for %iv = lb to ub step step`; close with `endFor`. Index
  // constants are cached per region, so the cache scope is pushed too.
  std::string beginFor(const std::string &lb, const std::string &ub, int64_t step = 1);
  void endFor();

  // Values computed in an enclosing region are visible in nested ones; a
  // scope is pushed on entering a region and popped on leaving it.
  void pushScope() { scopes_.emplace_back(); }
  void popScope() { scopes_.pop_back(); }
  const std::string *cached(const std::string &key) const;
  void cache(const std::string &key, const std::string &value);

  const std::string &text() const { return out_; }

private:
  std::string literalConstant(const std::string &literal, DType dtype);

  std::string out_;
  int depth_ = 0;
  int counter_ = 0;
  std::vector<std::map<std::string, std::string>> scopes_{1};
};

} // namespace stepc::codegen
