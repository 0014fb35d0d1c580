// The register-tiled f32 matmul micro-kernel (vector dialect): C = A x B for
// A [M,K], B [K,N], C [M,N], all stored in memory, row-major or strided.
#pragma once

#include "mlir_text.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace stepc::codegen {

// The most floats a kernel keeps in one stack buffer (256 KiB): a matmul's
// panel of B or block of A^T, a reduction's row of accumulators. A kernel
// runs on the caller's thread or a pool worker, whose stacks are a few MiB;
// larger shapes take paths without the buffer.
constexpr int64_t kMaxStackBufferFloats = 65536;

// B as a convolution's im2col matrix read from the input through the
// kernel's taps, with no copy: B[k, p] for k = (c, i, j) (channel, kernel
// row, kernel column) and p = (y, x) an output point is input[c, y + i *
// dilationH - padH, x + j * dilationW - padW], 0 outside the image. For
// stride 1 and an output as wide as the input only: each tap then reads
// the input's plane shifted by one offset, 16 points in one masked load.
struct ConvTaps {
  std::string input; // one sample's input, memref<C x (H*W) x f32>
  int64_t channels, height, width; // the input's C, H, W
  int64_t outHeight;                // the output's rows (as wide as the input's)
  int64_t kernelH, kernelW, padH, padW, dilationH, dilationW;
  // A is a convolution's weights [O, C*KH*KW] read for its input gradient
  // (a convolution of dY, the `input` here, with the kernel flipped): the
  // tile's row c, channel o, tap t read W[o, c, KH*KW - 1 - t].
  bool flipped = false;
};

// Whether a convolution's B can be read through its taps (ConvTaps): stride
// 1, output rows as wide as the input's, taps few enough to unroll, and
// planes small enough for the lanes' i32 point indices.
bool convReadsTaps(const std::vector<int64_t> &stride, int64_t height, int64_t width,
                   int64_t outHeight, int64_t outWidth, int64_t kernelH, int64_t kernelW);

struct TiledMatMul {
  std::string a, b, c; // memref SSA values
  int64_t m, k, n;
  // The row range this call computes; empty means all rows.
  std::string rowBegin, rowEnd;
  // The column range this call computes, [colBegin, colEnd) of C; empty
  // means all columns. colBegin is a multiple of the register tile's width
  // (its vectors x 16 columns), and so is colEnd unless it is n: the copied
  // panels and the dot products' tiles start there.
  std::string colBegin, colEnd;
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
  // The element types in memory ("f32", "bf16", "f16"). Half operands are
  // extended to f32 as they are loaded and run on the f32 kernel; a half C
  // is rounded (to nearest even) as it is stored. The accumulators are f32.
  std::string aElem = "f32", bElem = "f32", cElem = "f32";
  // A's and B's values are all bf16 numbers (bf16 in memory, or f32 widened
  // from bf16, which narrows back exactly): the K loop multiplies pairs
  // along K with vdpbf16ps (AVX512_BF16; see bf16DotProducts). Products are
  // exact in f32 and each pair's sum is added to the f32 accumulator with
  // one rounding, so only the order of the f32 sums differs from the FMA
  // kernel (and bf16 subnormals read as 0).
  bool bf16Dot = false;
  // Where A's rows are adjacent in memory and its K stride is long (a
  // transposed view, a weight gradient's X^T: each K step of a tile reads a
  // new line, often a new page, which the hardware prefetchers do not
  // follow), the f32 vector tile prefetches its rows of A this many K steps
  // ahead; 0: none.
  int64_t aPrefetch = 0;
  // With aTransposed, f32 and a unit stride along M: a buffer of
  // aBlockType(k) the caller allocated outside any loop. The rows are then
  // computed in blocks of aBlockRows(k): each block's columns of A^T are
  // copied into the buffer first (K contiguous rows of aBlockRows floats),
  // and the tiles read them there. In place, each K step of a tile reads a
  // line a whole row of A^T apart (4 KB at M = 1024): the lines of one
  // tile's columns fall into a few cache sets, so every column panel of B
  // read them again from L3.
  std::string aBlock;
  // Add the product to C instead of storing it (dot-product path only).
  bool accumulate = false;
  // With bTransposed: copy B^T's column panels into a row-major buffer on
  // the stack first and run the vector tile (the register-tiled path, with
  // epilogues) instead of dot products, whose partial sums are reduced per
  // output element at a fraction of the FMA rate.
  bool packB = false;
  // A memref of panelBufferType(k) that the caller allocated on the stack
  // outside any loop (an alloca in a loop would grow the stack): needed
  // with packB; with a row-major B, given where copiesRowMajorPanels(m),
  // B's column panels are copied into it before the row tiles read them.
  std::string bPanel;
  // With packB: B^T's K stride is 1 (its panels are then copied by
  // transposing 16x16 blocks in registers).
  bool bUnitK = false;
  // Instead of storing each 16-lane piece of C, hand it to the caller while
  // it is still in a register: epilogue(row, col, value, mask), mask empty
  // unless lanes past the edge are off. Not with bTransposed unless packB
  // or dotProductsByRow(m).
  std::function<void(const std::string &, const std::string &, const std::string &,
                     const std::string &)>
      epilogue = nullptr;
  // B is a convolution's taps (`b` unused): f32, row-major A, no bPanel.
  std::optional<ConvTaps> taps;
};

// The register tile, sized so its accumulators, one broadcast of A and the
// loads of B fit the target's vector registers (a spill in the K loop costs
// a load and a store per FMA). Every vector is vector<16xf32>: one zmm
// register on AVX-512, two ymm on AVX2.
struct RegisterTile {
  const char *name;  // "8x32": rows x columns, part of the JIT cache key
  int rows;          // rows of a tile
  int vectors;       // vector<16xf32> per row
  int dotRows, dotCols; // the B^T path's tile of dot products
  // With few rows (dotProductsByRow): the accumulators of one K loop, one
  // for each row of A times each row of B^T it reads side by side.
  int rowDotSums;
};
// AVX-512 (32 zmm): 8 rows x 32 columns, 16 accumulators; B^T 4x4 (16
// sums with few rows).
const RegisterTile &avx512Tile();
// AVX2 (16 ymm): 6 rows x 16 columns, 12 ymm accumulators (BLIS's Haswell
// kernel shape); B^T 2x2, 8 ymm (4 sums with few rows).
const RegisterTile &avx2Tile();
// The tile for the target the kernels are compiled for: the host
// (hostVectorRegisterBits, llvm_backend.h; JIT and AOT both compile for it),
// unless the environment variable STEPC_MATMUL_TILE names one ("8x32" or
// "6x16": to compare them in one benchmark run).
const RegisterTile &registerTile();
// Tests only: every later emitTiledMatMul uses `tile` (nullptr: the host's
// again). The JIT cache key names registerTile(), so cached kernels stay
// right.
void forceRegisterTile(const RegisterTile *tile);

// Whether a product of `rows` rows (all of C's rows, however many threads
// split them) that reads B^T with a unit K stride takes dot
// products a row at a time (emitTiledMatMul), fewer rows than a register
// tile: B^T then streams from memory once, in its own order, instead of
// being packed into panels that a row or two would read; 16 columns' sums
// reach the epilogue as one vector.
bool dotProductsByRow(int64_t rows);

// Whether kernels multiply bf16 operands with vdpbf16ps: the target has
// AVX512_BF16 (hostHasAvx512Bf16, llvm_backend.h), unless a test forced it
// off or on. Part of the JIT cache key.
bool bf16DotProducts();
// Tests only: 0 off, 1 on, -1 the host's again.
void forceBf16DotProducts(int state);

// Blocks of registerTile() rows x columns accumulate in registers over the
// whole K loop (one broadcast of A and the loads of B feed a row's FMAs);
// column blocks are the outer loop so a 32-column panel of B stays in
// L2 while the row blocks pass over it. B read in place: the tiles
// prefetch their lines of B 16 K steps ahead (those of a few rows into L2),
// and the rows left after the whole tiles run as tiles of 4, 2 and 1 rows,
// each as wide as the accumulators allow; the columns past a row tile's
// wide tiles go in one narrower tile of each power-of-two width they need,
// then a masked vector. With packB, or a row-major B and a bPanel, each
// column panel is copied into bPanel first and the row tiles read it there
// (the leftover rows one at a time). With B^T and no packB, small tiles of
// dot products accumulate 16-lane partial sums along K and reduce them at
// the end (A must then be row-major); with few rows (dotProductsByRow),
// each row's sums for 16 columns are reduced into one vector, which takes
// the epilogue.
void emitTiledMatMul(MlirWriter &w, const TiledMatMul &mm);

// panel[k, c] = bT[colLo + c, k] for k < depth, c < cols: columns
// [colLo, colLo + cols) of B copied row-major from B^T (`bT`, [N, depth],
// f32, memref type `bTType`) into `panel` (memref type `panelType`, at
// least depth x cols), as packB packs B's column panels; 16x16 blocks are
// transposed in registers when B^T's K stride is 1 (`unitK`) and `cols` is
// a multiple of 16, else the copy goes element by element. Rows of B^T
// past colLo + cols are not read.
void emitPackColumns(MlirWriter &w, const std::string &bT, const std::string &bTType,
                     int64_t depth, bool unitK, const std::string &panel,
                     const std::string &panelType, const std::string &colLo, int64_t cols);

// The type of TiledMatMul::bPanel for a product of depth K: K rows of one
// column panel of the register tile, panelBufferFloats(K) floats.
std::string panelBufferType(int64_t depth);
int64_t panelBufferFloats(int64_t depth);

// The rows of a transposed-A block at depth K (TiledMatMul::aBlock): a
// multiple of 16, as many as fit kMaxStackBufferFloats floats up to 64; 0
// where K is too deep for a block of 16 rows.
int64_t aBlockRows(int64_t depth);
std::string aBlockType(int64_t depth);

// Whether a product of `rows` rows (all of C's, however many threads share
// them) copies a row-major B's column panels into a bPanel first: many row
// tiles then read each panel. The caller gives the buffer where it fits its
// stack bound.
bool copiesRowMajorPanels(int64_t rows);

} // namespace stepc::codegen
