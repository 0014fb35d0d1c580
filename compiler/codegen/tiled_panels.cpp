// The tiled matmul's packed panels (packB, or a row-major B with a
// bPanel): each column panel of B is copied row-major into the caller's
// buffer (from B^T by 16x16 blocks transposed in registers where its K
// stride is 1), and the vector tiles read it there.
#include "tiled_matmul_parts.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string>
#include <utility>
#include <vector>

namespace stepc::codegen {

// The helpers shared with tiled_matmul.cpp are declared in tiled_matmul_parts.h.
using namespace tiled;

namespace {

// Rows [k0, k0 + depth) of the panel's 16 columns from `group` on, from a
// 16x16 block of B^T (unit K stride) transposed in registers: four rounds
// of two-vector shuffles, each swapping the off-diagonal blocks of size s
// (8, 4, 2, 1) of every 2s x 2s block. Rows of B^T past `depth` load as 0.
void emitTransposedBlock(MlirWriter &w, const TiledMatMul &mm, const std::string &panel,
                         const std::string &panelType, const std::string &colLo, int64_t group,
                         const std::string &k0, int64_t depth) {
  std::string mask;
  if (depth < kLanes)
    mask = w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", depth));
  std::vector<std::string> rows;
  for (int i = 0; i < kLanes; ++i)
    rows.push_back(widened(
        w, loadLanes(w, mm.b, bType(mm), mm.bElem, add(w, colLo, group + i), k0, mask),
        mm.bElem, true));
  for (int size : {8, 4, 2, 1}) {
    // Row i keeps its lanes l with (l & size) == 0 and takes row i + size's
    // lanes l - size into the others; row i + size the converse.
    std::vector<int> upper, lower;
    for (int l = 0; l < kLanes; ++l) {
      upper.push_back((l & size) == 0 ? l : kLanes + l - size);
      lower.push_back((l & size) == 0 ? l + size : kLanes + l);
    }
    std::vector<std::string> next = rows;
    for (int i = 0; i < kLanes; ++i) {
      if (i & size)
        continue;
      for (auto [at, lanes] : {std::pair{i, &upper}, std::pair{i + size, &lower}})
        next[at] = w.assign(fmt::format("vector.shuffle {}, {} [{}] : {}, {}", rows[i],
                                        rows[i + size], fmt::join(*lanes, ", "), kVec, kVec));
    }
    rows = std::move(next);
  }
  for (int64_t j = 0; j < depth; ++j)
    w.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", rows[j], panel, add(w, k0, j),
                       w.indexConstant(group), panelType, kVec));
}

// panel[k, c] = B^T[colLo + c, k] for c in [0, cols): a column panel of B
// copied row-major from B^T, so the vector tile reads it like any B. With a
// unit K stride, 16x16 blocks are transposed in registers: element by
// element the copy cost as much as the product itself at K = 64 (batched
// attention scores, 44% of the FMA peak).
void emitPackPanel(MlirWriter &w, const TiledMatMul &mm, const std::string &panel,
                   const std::string &panelType, const std::string &colLo, int64_t cols) {
  if (!mm.bTransposed) {
    // B row-major: each row's `cols` columns copied as they are (lanes past
    // them read 0; the panel is a whole number of vectors wide).
    std::string k = w.beginFor(w.indexConstant(0), w.indexConstant(mm.k));
    for (int64_t c = 0; c < cols; c += kLanes) {
      std::string mask;
      if (cols - c < kLanes)
        mask = w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", cols - c));
      std::string value = widened(
          w, loadLanes(w, mm.b, bType(mm), mm.bElem, k, c == 0 ? colLo : add(w, colLo, c), mask),
          mm.bElem, true);
      w.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", value, panel, k,
                         w.indexConstant(c), panelType, kVec));
    }
    w.endFor();
    return;
  }
  if (mm.bUnitK && cols % kLanes == 0) {
    int64_t full = mm.k / kLanes * kLanes;
    if (full > 0) {
      std::string k0 = w.beginFor(w.indexConstant(0), w.indexConstant(full), kLanes);
      for (int64_t group = 0; group < cols; group += kLanes)
        emitTransposedBlock(w, mm, panel, panelType, colLo, group, k0, kLanes);
      w.endFor();
    }
    for (int64_t group = 0; mm.k > full && group < cols; group += kLanes)
      emitTransposedBlock(w, mm, panel, panelType, colLo, group, w.indexConstant(full),
                          mm.k - full);
    return;
  }
  std::string c = w.beginFor(w.indexConstant(0), w.indexConstant(cols));
  std::string col = w.assign(fmt::format("arith.addi {}, {} : index", colLo, c));
  std::string k = w.beginFor(w.indexConstant(0), w.indexConstant(mm.k));
  std::string value = w.assign(fmt::format("memref.load {}[{}, {}] : {}", mm.b, col, k, bType(mm)));
  w.line(fmt::format("memref.store {}, {}[{}, {}] : {}", widened(w, value, mm.bElem, false), panel,
                     k, c, panelType));
  w.endFor();
  w.endFor();
}

} // namespace

namespace tiled {

// With packB, each column panel of B is first copied (from B^T, or from a
// row-major B) into bPanel (L1/L2-sized: 64 KB at K = 512 on AVX-512),
// which the vector tiles then read row-major; every call packs the panels
// it uses into its own buffer, so parallel calls share nothing.
void emitPackedTiles(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                     const IndexRange &cols, const std::string &lo, const std::string &hi,
                     const std::string &tileEnd) {
  const int rows = tile.rows, vectors = tile.vectors;
  int64_t wideCols = (mm.n / (vectors * kLanes)) * vectors * kLanes;
  int64_t narrowCols = (mm.n / kLanes) * kLanes;
  std::string panelType = panelBufferType(mm.k);
  TiledMatMul fromPanel = mm;
  fromPanel.b = mm.bPanel;
  fromPanel.bType = panelType;
  fromPanel.bTransposed = false;
  fromPanel.bElem = "f32"; // the panel holds B widened

  // Column panels outside, row tiles inside. The range's wide panels start
  // at its first column (a multiple of their width); the columns past C's
  // last wide panel go to the range that ends past them.
  WholePieces panels = wholePiecesOfC(w, cols, mm.n, wideCols);
  if (wideCols > 0) {
    std::string col = w.beginFor(cols.lo, panels.end, vectors * kLanes);
    emitPackPanel(w, mm, mm.bPanel, panelType, col, vectors * kLanes);
    std::string row = w.beginFor(lo, tileEnd, rows);
    emitVectorTile(w, fromPanel, row, rows, col, vectors, "", w.indexConstant(0));
    w.endFor();
    // Leftover rows of this panel, one at a time.
    std::string r = w.beginFor(tileEnd, hi);
    emitVectorTile(w, fromPanel, r, 1, col, vectors, "", w.indexConstant(0));
    w.endFor();
    w.endFor();
  }
  emitRestOfC(w, panels, [&] {
    // The columns past the wide panels share one more panel.
    emitPackPanel(w, mm, mm.bPanel, panelType, w.indexConstant(wideCols), mm.n - wideCols);
    if (narrowCols > wideCols) {
      std::string r = w.beginFor(lo, hi);
      emitVectorTile(w, fromPanel, r, 1, w.indexConstant(wideCols), 1, "", w.indexConstant(0));
      w.endFor();
    }
    if (mm.n > narrowCols) {
      // The last columns: one masked vector per row, a tile's rows at a time.
      std::string mask =
          w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", mm.n - narrowCols));
      std::string col = w.indexConstant(narrowCols);
      std::string bCol = w.indexConstant(narrowCols - wideCols);
      std::string row = w.beginFor(lo, tileEnd, rows);
      emitVectorTile(w, fromPanel, row, rows, col, 1, mask, bCol);
      w.endFor();
      std::string r = w.beginFor(tileEnd, hi);
      emitVectorTile(w, fromPanel, r, 1, col, 1, mask, bCol);
      w.endFor();
    }
  });
}

} // namespace tiled

void emitPackColumns(MlirWriter &w, const std::string &bT, const std::string &bTType,
                     int64_t depth, bool unitK, const std::string &panel,
                     const std::string &panelType, const std::string &colLo, int64_t cols) {
  TiledMatMul mm{};
  mm.b = bT;
  mm.bType = bTType;
  mm.k = depth;
  mm.bTransposed = true;
  mm.bUnitK = unitK;
  emitPackPanel(w, mm, panel, panelType, colLo, cols);
}

std::string panelBufferType(int64_t depth) {
  return memref(depth, registerTile().vectors * kLanes);
}

int64_t panelBufferFloats(int64_t depth) { return depth * registerTile().vectors * kLanes; }

} // namespace stepc::codegen
