// The tiled matmul's dot-product paths (emitTiledMatMul with B^T read in
// place): A's rows times B^T's rows along K, 16-lane partial sums reduced
// per element of C, or with few rows, folded into one vector per row.
#include "tiled_matmul_parts.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace stepc::codegen::tiled {
namespace {

// 32 elements of a row of `mem` from [i, k] on (`count` of them where
// fewer are left, the rest 0) as the bf16 pairs vdpbf16ps reads: the
// elements in order, consecutive K being the pairs.
std::string bf16AlongK(MlirWriter &w, const std::string &mem, const std::string &type,
                       const std::string &elem, const std::string &i, const std::string &k,
                       int64_t count) {
  const int64_t pairLanes = 2 * kLanes;
  if (elem == "bf16") {
    if (count >= pairLanes)
      return w.assign(fmt::format("vector.load {}[{}, {}] : {}, vector<32xbf16>", mem, i, k, type));
    std::string mask = w.assign(fmt::format("vector.constant_mask [{}] : vector<32xi1>", count));
    return w.assign(fmt::format("vector.maskedload {}[{}, {}], {}, {} : {}, vector<32xi1>, "
                                "vector<32xbf16> into vector<32xbf16>",
                                mem, i, k, mask, zeroVector(w, "vector<32xbf16>"), type));
  }
  auto part = [&](const std::string &at, int64_t n) {
    if (n <= 0)
      return zeroVector(w, kVec);
    std::string mask = n >= kLanes ? std::string()
                                   : w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", n));
    return loadLanes(w, mem, type, "f32", i, at, mask);
  };
  return highHalves(w, part(k, count), part(add(w, k, kLanes), count - kLanes), false);
}

// dotSums with vdpbf16ps, 32 elements of K a step.
std::vector<std::string> bf16DotSums(MlirWriter &w, const TiledMatMul &mm,
                                     const std::vector<std::string> &rowIdx,
                                     const std::vector<std::string> &colIdx) {
  const int64_t pairLanes = 2 * kLanes;
  int64_t full = mm.k / pairLanes * pairLanes;
  size_t rows = rowIdx.size(), cols = colIdx.size();
  std::vector<std::string> acc(rows * cols, zeroVector(w, kVec));
  auto step = [&](const std::string &k, int64_t count, const std::vector<std::string> &in) {
    std::vector<std::string> av, bv, next;
    for (const std::string &row : rowIdx)
      av.push_back(bf16AlongK(w, mm.a, aType(mm), mm.aElem, row, k, count));
    for (const std::string &col : colIdx)
      bv.push_back(bf16AlongK(w, mm.b, bType(mm), mm.bElem, col, k, count));
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c)
        next.push_back(dotBf16Pairs(w, in[r * cols + c], av[r], bv[c]));
    return next;
  };
  if (full > 0) {
    VectorLoop loop = openVectorLoop(w, w.indexConstant(0), w.indexConstant(full), acc, pairLanes);
    closeVectorLoop(w, step(loop.iv, pairLanes, loop.accs));
    acc = loop.results;
  }
  if (mm.k > full)
    acc = step(w.indexConstant(full), mm.k - full, acc);
  return acc;
}

// The 16-lane partial sums along K of A's rows `rowIdx` with B^T's rows
// `colIdx`: one vector per (row, column), row-major.
std::vector<std::string> dotSums(MlirWriter &w, const TiledMatMul &mm,
                                 const std::vector<std::string> &rowIdx,
                                 const std::vector<std::string> &colIdx) {
  if (mm.bf16Dot)
    return bf16DotSums(w, mm, rowIdx, colIdx);
  size_t rows = rowIdx.size(), cols = colIdx.size();
  int64_t full = mm.k / kLanes * kLanes;
  std::vector<std::string> acc(rows * cols, zeroVector(w, kVec));
  auto step = [&](const std::string &k, const std::string &mask, const std::vector<std::string> &in) {
    auto load = [&](const std::string &mem, const std::string &i, const std::string &type,
                    const std::string &elem) {
      return widened(w, loadLanes(w, mem, type, elem, i, k, mask), elem, true);
    };
    std::vector<std::string> av, bv, next;
    for (const std::string &row : rowIdx)
      av.push_back(load(mm.a, row, aType(mm), mm.aElem));
    for (const std::string &col : colIdx)
      bv.push_back(load(mm.b, col, bType(mm), mm.bElem));
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c)
        next.push_back(w.assign(fmt::format("vector.fma {}, {}, {} : {}", av[r], bv[c],
                                            in[r * cols + c], kVec)));
    return next;
  };
  if (full > 0) {
    VectorLoop loop = openVectorLoop(w, w.indexConstant(0), w.indexConstant(full), acc, kLanes);
    closeVectorLoop(w, step(loop.iv, "", loop.accs));
    acc = loop.results;
  }
  if (mm.k > full) {
    std::string mask =
        w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", mm.k - full));
    acc = step(w.indexConstant(full), mask, acc);
  }
  return acc;
}

// C[rows x cols] at (rowLo, colLo) as dot products of A's rows with B^T's
// rows: 16-lane partial sums along K (dotSums), each reduced to its element.
void emitDotTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
                 const std::string &colLo, int cols) {
  std::vector<std::string> rowIdx, colIdx;
  for (int r = 0; r < rows; ++r)
    rowIdx.push_back(r == 0 ? rowLo : add(w, rowLo, r));
  for (int c = 0; c < cols; ++c)
    colIdx.push_back(c == 0 ? colLo : add(w, colLo, c));
  std::vector<std::string> acc = dotSums(w, mm, rowIdx, colIdx);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      std::string sum = w.assign(fmt::format("vector.reduction <add>, {} : {} into f32",
                                             acc[r * cols + c], kVec));
      if (mm.accumulate) {
        std::string old = w.assign(fmt::format("memref.load {}[{}, {}] : {}", mm.c, rowIdx[r],
                                               colIdx[c], cType(mm)));
        sum = w.assign(fmt::format("arith.addf {}, {} : f32", widened(w, old, mm.cElem, false), sum));
      }
      if (mm.cElem != "f32")
        sum = w.assign(fmt::format("arith.truncf {} : f32 to {}", sum, mm.cElem));
      w.line(fmt::format("memref.store {}, {}[{}, {}] : {}", sum, mm.c, rowIdx[r], colIdx[c],
                         cType(mm)));
    }
}

// Two vectors that each hold 16 / g columns' partial sums, g lanes a column
// (column s in lanes [s * g, (s + 1) * g)), added pairwise into one that
// holds a's columns, then b's, g / 2 lanes each.
std::string foldColumns(MlirWriter &w, const std::string &a, const std::string &b, int g) {
  std::vector<int> low, high;
  for (int from : {0, kLanes})
    for (int s = 0; s < kLanes / g; ++s)
      for (int l = 0; l < g / 2; ++l) {
        low.push_back(from + s * g + l);
        high.push_back(from + s * g + g / 2 + l);
      }
  auto shuffle = [&](const std::vector<int> &lanes) {
    return w.assign(fmt::format("vector.shuffle {}, {} [{}] : {}, {}", a, b, fmt::join(lanes, ", "),
                                kVec, kVec));
  };
  return w.assign(fmt::format("arith.addf {}, {} : {}", shuffle(low), shuffle(high), kVec));
}

// A power-of-two count of vectors, each 16 / g columns of g lanes, folded
// pairwise into one. Every column's lanes add up in the same tree however
// the columns were grouped (the same bits at any row piece).
std::string foldAllColumns(MlirWriter &w, std::vector<std::string> sets, int g) {
  if (sets.empty() || (sets.size() & (sets.size() - 1)) != 0 ||
      sets.size() > static_cast<size_t>(g))
    throw std::logic_error("tiled matmul: folds a power-of-two count of column sets, "
                           "at most 16 columns");
  for (; sets.size() > 1; g /= 2) {
    std::vector<std::string> folded;
    for (size_t i = 0; i < sets.size(); i += 2)
      folded.push_back(foldColumns(w, sets[i], sets[i + 1], g));
    sets = std::move(folded);
  }
  return sets.front();
}

// The columns one K loop of emitDotRow takes for `rows` rows: a power of
// two, as many as the tile's accumulators allow for all the rows, at most
// 4 rows of B^T streaming side by side. More streams ran slower: the MLP
// 784-1024-1024-10 with W^T at batch 1 (2 threads, Zen 4) took
// 0.044-0.054 ms with 4, 0.050-0.053 with 8; at batch 4, 0.073-0.088 with
// 4x4 against 0.100-0.119 with 2x8. (AVX2's 4 sums are untimed.)
int rowDotColumns(const RegisterTile &tile, int rows) {
  int columns = 1;
  while (columns < 4 && 2 * columns * rows <= tile.rowDotSums)
    columns *= 2;
  return columns;
}

// C[row .. row + rows, col .. col + count) (count <= 16; lanes past it
// masked off), one vector a row: B^T's rows are read rowDotColumns at a
// time (that many streams along K, each row of A times each into its own
// accumulator); each group's partial sums fold into one vector per row
// when its K loop ends, and those fold into the row's 16 sums, which reach
// the epilogue as one vector, as the vector tile's do.
void emitDotRow(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                const std::string &row, int rows, const std::string &col, int64_t count) {
  const int group = rowDotColumns(tile, rows);
  std::vector<std::string> rowIdx;
  for (int r = 0; r < rows; ++r)
    rowIdx.push_back(r == 0 ? row : add(w, row, r));
  std::vector<std::vector<std::string>> groups(static_cast<size_t>(rows));
  std::string zero = zeroVector(w, kVec);
  for (int first = 0; first < kLanes; first += group) {
    std::vector<std::string> colIdx;
    for (int c = first; c < first + group && c < count; ++c)
      colIdx.push_back(c == 0 ? col : add(w, col, c));
    std::vector<std::string> sums;
    if (!colIdx.empty())
      sums = dotSums(w, mm, rowIdx, colIdx);
    for (size_t r = 0; r < groups.size(); ++r) {
      std::vector<std::string> ofRow(static_cast<size_t>(group), zero);
      for (size_t c = 0; c < colIdx.size(); ++c)
        ofRow[c] = sums[r * colIdx.size() + c];
      groups[r].push_back(foldAllColumns(w, ofRow, kLanes));
    }
  }
  std::string mask;
  if (count < kLanes)
    mask = w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", count));
  std::vector<std::string> sums;
  for (size_t r = 0; r < groups.size(); ++r) {
    std::string sum = foldAllColumns(w, groups[r], kLanes / group);
    if (mm.accumulate) {
      std::string old = loadLanes(w, mm.c, cType(mm), mm.cElem, rowIdx[r], col, mask);
      sum = w.assign(fmt::format("arith.addf {}, {} : {}", sum,
                                 widened(w, old, mm.cElem, true), kVec));
    }
    sums.push_back(sum);
  }
  storeTile(w, mm, row, rows, col, 1, mask, sums);
}

} // namespace

// Rows [lo, hi) of A x B^T with few rows (dotProductsByRow): 16 columns
// at a time, each row's in one vector (emitDotRow). All the rows share
// each K loop where their count is known (B^T streams from memory once, in
// its own order: a second piece of rows would re-read the columns' rows of
// B^T from L2, which at batch 3 cost the MLP above a third); a call's row
// range (rows split between threads) goes in pieces of 4, 2 and 1.
void emitDotRows(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                 const IndexRange &cols, const IndexRange &rows) {
  if (tile.rows > 8)
    throw std::logic_error("tiled matmul: dot products by row take at most 7 rows");
  auto rowsAt = [&](const std::string &col, int64_t columns) {
    emitFewRows(w, rows, 4, [&](const std::string &row, int pieceRows) {
      emitDotRow(w, mm, tile, row, pieceRows, col, columns);
    });
  };
  int64_t whole = mm.n / kLanes * kLanes;
  WholePieces pieces = wholePiecesOfC(w, cols, mm.n, whole);
  if (whole > 0) {
    std::string col = w.beginFor(cols.lo, pieces.end, kLanes);
    rowsAt(col, kLanes);
    w.endFor();
  }
  emitRestOfC(w, pieces, [&] { rowsAt(w.indexConstant(whole), mm.n - whole); });
}

// Rows [lo, hi) of A x B^T: 4x4 tiles, then the leftover rows and columns
// one at a time.
void emitDotProducts(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                     const IndexRange &cols, const std::string &lo, const std::string &hi,
                     const std::string &tileEnd) {
  int64_t colTiles = mm.n / tile.dotCols * tile.dotCols;
  auto columns = [&](const std::string &row, int rows) {
    WholePieces tiles = wholePiecesOfC(w, cols, mm.n, colTiles);
    if (colTiles > 0) {
      std::string col = w.beginFor(cols.lo, tiles.end, tile.dotCols);
      emitDotTile(w, mm, row, rows, col, tile.dotCols);
      w.endFor();
    }
    emitRestOfC(w, tiles, [&] {
      std::string col = w.beginFor(w.indexConstant(colTiles), w.indexConstant(mm.n));
      emitDotTile(w, mm, row, rows, col, 1);
      w.endFor();
    });
  };
  std::string row = w.beginFor(lo, tileEnd, tile.dotRows);
  columns(row, tile.dotRows);
  w.endFor();
  std::string r = w.beginFor(tileEnd, hi);
  columns(r, 1);
  w.endFor();
}
} // namespace stepc::codegen::tiled
