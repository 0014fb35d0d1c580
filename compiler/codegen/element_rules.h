// The arithmetic of the elementwise ops on one value held in registers: a
// scalar (f32, f64, an integer, i1; halves compute in f32) or a vector of
// 16 f32 lanes (the matmul epilogue's register tile). One rule per op serves
// both, so the scalar loops and the vector epilogue compute the same thing.
#pragma once

#include "mlir_text.h"

#include "stepc/graph.h"

#include <string>
#include <vector>

namespace stepc::codegen {

// What an element rule computes on: `dtype`'s register type, one value or
// `lanes` of them in a vector.
struct ElementType {
  DType dtype;
  int lanes = 1; // 1: a scalar

  // "f32", "vector<16xf32>".
  std::string text() const;
  // The type of a comparison's result: "i1", "vector<16xi1>".
  std::string boolText() const;
};

class ElementRules {
public:
  // `ownF32Polynomials`: f32 sin, cos and erf as sinOrCosF32's and erfF32's
  // arithmetic (the CPU, where MLIR's polynomial for math.sin/cos is
  // inaccurate and the one for math.erf slow); else math.sin/cos/erf (the
  // GPU's libdevice is accurate and fast).
  ElementRules(MlirWriter &w, bool ownF32Polynomials)
      : w_(w), ownF32Polynomials_(ownF32Polynomials) {}

  // The value of elementwise op `op` on `x`: operands of type `in` (a
  // select's condition is `in`'s bool type), a result of dtype `out` (bool
  // for comparisons, the target of a cast, else in's dtype).
  std::string apply(OpKind op, const ElementType &in, DType out, const std::vector<std::string> &x);
  // The scalar form of binary op `op` on operands of dtype `dtype`.
  std::string binary(OpKind op, DType dtype, const std::string &a, const std::string &b);
  // A scalar's conversion from one dtype to another, as the interpreter's.
  std::string convert(const std::string &v, DType from, DType to);
  // `value` in every lane of `type`.
  std::string constant(double value, const ElementType &type);
  std::string select(const std::string &cond, const std::string &a, const std::string &b,
                     const ElementType &type);

private:
  std::string sinOrCosF32(const std::string &x, const ElementType &type, bool sine);
  std::string erfF32(const std::string &x, const ElementType &type);

  MlirWriter &w_;
  bool ownF32Polynomials_;
};

} // namespace stepc::codegen
