// The register-tiled f32 matmul micro-kernel (vector dialect): C = A x B for
// A [M,K], B [K,N], C [M,N], all stored in memory, row-major or strided.
#pragma once

#include "mlir_text.h"

#include <functional>
#include <string>

namespace stepc::codegen {

struct TiledMatMul {
  std::string a, b, c; // memref SSA values
  int64_t m, k, n;
  // The row range this call computes; empty means all rows.
  std::string rowBegin, rowEnd;
  // Operands stored transposed: `a` is A^T [K,M] (its elements are loaded
  // one at a time, so the stride costs little); `b` is B^T [N,K], which
  // turns the product into dot products of rows, vectorized along K.
  bool aTransposed = false, bTransposed = false;
  // The memref types of a, b and c where they are not plain row-major
  // (memref<MxKxf32> and so on): strided views, e.g.
  // memref<64x256xf32, strided<[256, 1], offset: ?>>. Vector loads and
  // stores need a unit stride along their 16 lanes: B's (or B^T's) and C's
  // last dimension, and A's last with bTransposed.
  std::string aType = "", bType = "", cType = "";
  // Add the product to C instead of storing it (dot-product path only).
  bool accumulate = false;
  // Instead of storing each 16-lane piece of C, hand it to the caller while
  // it is still in a register: epilogue(row, col, value, mask), mask empty
  // unless lanes past the edge are off. Not with bTransposed.
  std::function<void(const std::string &, const std::string &, const std::string &,
                     const std::string &)>
      epilogue = nullptr;
};

// Blocks of 8 rows x 32 columns accumulate in 16 vector<16xf32> registers
// over the whole K loop (one broadcast of A and two loads of B feed 16
// FMAs); column blocks are the outer loop so a 32-column panel of B stays in
// L2 while the row blocks pass over it. Edges use one-row tiles and masked
// vectors. With B^T, 4x4 tiles of dot products accumulate 16-lane partial
// sums along K and reduce them at the end (A must then be row-major).
void emitTiledMatMul(MlirWriter &w, const TiledMatMul &mm);

} // namespace stepc::codegen
