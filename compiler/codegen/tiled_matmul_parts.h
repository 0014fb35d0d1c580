// The pieces of the tiled matmul (tiled_matmul.h) shared by tiled_matmul.cpp,
// tiled_dot.cpp (the dot-product paths for B^T read in place) and
// tiled_panels.cpp (B's column panels packed into a buffer): MLIR text
// helpers, the row and column ranges a call computes, the vector tile and
// its store. Internal to those three files.
#pragma once

#include "tiled_matmul.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace stepc::codegen::tiled {

inline constexpr int kLanes = 16; // f32 lanes of every vector (two ymm registers on AVX2)
inline constexpr const char *kVec = "vector<16xf32>";

// memref<rows x cols x elem>, row-major.
std::string memref(int64_t rows, int64_t cols, const std::string &elem = "f32");

// The memref types of mm's A, B and C: the given ones, else row-major.
std::string aType(const TiledMatMul &mm);
std::string bType(const TiledMatMul &mm);
std::string cType(const TiledMatMul &mm);

std::string zeroVector(MlirWriter &w, const std::string &type);

// A value loaded as `elem` (a scalar, or 16 lanes), in f32.
std::string widened(MlirWriter &w, const std::string &value, const std::string &elem,
                    bool vector);

// 16 lanes of `mem` (elements `elem`) from [i, j] on, as stored; lanes off
// in `mask` read 0.
std::string loadLanes(MlirWriter &w, const std::string &mem, const std::string &type,
                      const std::string &elem, const std::string &i, const std::string &j,
                      const std::string &mask = "");

// acc + the pairwise dot products of a and b (vector<32xbf16>): vdpbf16ps.
std::string dotBf16Pairs(MlirWriter &w, const std::string &acc, const std::string &a,
                         const std::string &b);

// 16 f32 words that hold bf16 numbers, as the bf16 in their high halves
// (exact): the odd 16-bit lanes of x86's little-endian words.
std::string highHalves(MlirWriter &w, const std::string &lo, const std::string &hi,
                       bool interleave);

// Emits `scf.for` with vector accumulators; returns the result names.
struct VectorLoop {
  std::string iv;
  std::vector<std::string> accs, results;
};
VectorLoop openVectorLoop(MlirWriter &w, const std::string &lb, const std::string &ub,
                          const std::vector<std::string> &inits, int64_t step = 1);
void closeVectorLoop(MlirWriter &w, const std::vector<std::string> &yields);

// a + b, an index.
std::string add(MlirWriter &w, const std::string &a, int64_t b);

// The rows or columns [lo, hi) a call computes; `count` is hi - lo where it
// is known when the kernel is compiled (all of C's), else -1.
struct IndexRange {
  std::string lo, hi;
  int64_t count;
};

// body(rowLo, rows) over the rows of `range`, fewer than a register tile's:
// all of them at once where their count is known when the kernel is
// compiled (one pass over B), else pieces of each power of two in the
// count, from `largest` down.
void emitFewRows(MlirWriter &w, const IndexRange &range, int largest,
                 const std::function<void(const std::string &, int)> &body);

// Where the columns [lo, hi) stop being whole pieces of C's columns:
// min(hi, wholeEnd) (wholeEnd: the last whole piece's end in C), so a
// range whose lo is a multiple of the piece computes them from lo; and
// whether the range also takes C's columns past wholeEnd (an i1; empty:
// known to, or known not to, as `knownRest` says).
struct WholePieces {
  std::string end, takesRest;
  bool knownRest;
};
WholePieces wholePiecesOfC(MlirWriter &w, const IndexRange &cols, int64_t n, int64_t wholeEnd);

// body() for C's columns past the whole pieces where the range takes them.
void emitRestOfC(MlirWriter &w, const WholePieces &pieces, const std::function<void()> &body);

// The tile's f32 sums to C (rounded to a half C's type) or to the epilogue.
void storeTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
               const std::string &col, int vectors, const std::string &mask,
               const std::vector<std::string> &sums);

// Rows [rowLo, rowLo + rows) x columns [col, col + vectors * 16). With a
// mask, the tile is one vector whose lanes past the matrix edge are off.
// `bCol`, when given, is the column of B to read for C's column `col` (a
// packed panel of B starts at its own column 0).
void emitVectorTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
                    const std::string &col, int vectors, const std::string &mask = "",
                    const std::string &bCol = "");

// emitTiledMatMul's paths for B^T read in place (tiled_dot.cpp): with few
// rows (dotProductsByRow), each row's 16 columns in one vector; else tiles
// of dot products, rows [lo, tileEnd) whole tiles and [tileEnd, hi) one at
// a time.
void emitDotRows(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                 const IndexRange &cols, const IndexRange &rows);
void emitDotProducts(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                     const IndexRange &cols, const std::string &lo, const std::string &hi,
                     const std::string &tileEnd);

// emitTiledMatMul with packB, or a row-major B and a bPanel
// (tiled_panels.cpp): each column panel of B copied into bPanel, then the
// row tiles read it there, rows [lo, tileEnd) whole tiles and [tileEnd, hi)
// one at a time.
void emitPackedTiles(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                     const IndexRange &cols, const std::string &lo, const std::string &hi,
                     const std::string &tileEnd);

} // namespace stepc::codegen::tiled
