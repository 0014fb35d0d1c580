// The register-tiled f32 matmul micro-kernel (vector dialect): C = A x B for
// row-major A [M,K], B [K,N], C [M,N], all stored in memory.
#pragma once

#include "mlir_text.h"

#include <string>

namespace stepc::codegen {

struct TiledMatMul {
  std::string a, b, c; // memref SSA values
  int64_t m, k, n;
  // The row range this call computes; empty means all rows.
  std::string rowBegin, rowEnd;
};

// Blocks of 8 rows x 32 columns accumulate in 16 vector<16xf32> registers
// over the whole K loop (one broadcast of A and two loads of B feed 16
// FMAs); column blocks are the outer loop so a 32-column panel of B stays in
// L2 while the row blocks pass over it. Edges fall back to one-row vectors
// and scalar columns.
void emitTiledMatMul(MlirWriter &w, const TiledMatMul &mm);

} // namespace stepc::codegen
