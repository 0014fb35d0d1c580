#include "tiled_matmul.h"

#include "llvm_backend.h"
#include "tiled_matmul_parts.h"

#include "stepc/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <string_view>
#include <stdexcept>
#include <vector>

namespace stepc::codegen {

// The helpers shared with tiled_dot.cpp and tiled_panels.cpp are declared in
// tiled_matmul_parts.h.
using namespace tiled;

namespace {

constexpr int64_t kBPrefetch = 16; // K steps ahead (see emitVectorTile)

std::string typeOf(const std::string &given, int64_t rows, int64_t cols, const std::string &elem) {
  return given.empty() ? memref(rows, cols, elem) : given;
}

std::string vectorOf(const std::string &elem, int lanes = kLanes) {
  return fmt::format("vector<{}x{}>", lanes, elem);
}

} // namespace

namespace tiled {

std::string memref(int64_t rows, int64_t cols, const std::string &elem) {
  return fmt::format("memref<{}x{}x{}>", rows, cols, elem);
}

std::string aType(const TiledMatMul &mm) {
  return mm.aTransposed ? typeOf(mm.aType, mm.k, mm.m, mm.aElem)
                        : typeOf(mm.aType, mm.m, mm.k, mm.aElem);
}
std::string bType(const TiledMatMul &mm) {
  return mm.bTransposed ? typeOf(mm.bType, mm.n, mm.k, mm.bElem)
                        : typeOf(mm.bType, mm.k, mm.n, mm.bElem);
}
std::string cType(const TiledMatMul &mm) { return typeOf(mm.cType, mm.m, mm.n, mm.cElem); }

std::string zeroVector(MlirWriter &w, const std::string &type) {
  return w.assign(fmt::format("arith.constant dense<0.0> : {}", type));
}

std::string widened(MlirWriter &w, const std::string &value, const std::string &elem,
                    bool vector) {
  if (elem == "f32")
    return value;
  return vector ? w.assign(fmt::format("arith.extf {} : {} to {}", value, vectorOf(elem), kVec))
                : w.assign(fmt::format("arith.extf {} : {} to f32", value, elem));
}

std::string loadLanes(MlirWriter &w, const std::string &mem, const std::string &type,
                      const std::string &elem, const std::string &i, const std::string &j,
                      const std::string &mask) {
  std::string vec = vectorOf(elem);
  if (mask.empty())
    return w.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", mem, i, j, type, vec));
  return w.assign(fmt::format("vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}",
                              mem, i, j, mask, zeroVector(w, vec), type, vec, vec));
}

std::string dotBf16Pairs(MlirWriter &w, const std::string &acc, const std::string &a,
                         const std::string &b) {
  return w.assign(fmt::format(
      "llvm.call_intrinsic \"llvm.x86.avx512bf16.dpbf16ps.512\"({}, {}, {}) : ({}, "
      "vector<32xbf16>, vector<32xbf16>) -> {}",
      acc, a, b, kVec, kVec));
}

std::string highHalves(MlirWriter &w, const std::string &lo, const std::string &hi,
                       bool interleave) {
  std::vector<int> lanes;
  for (int i = 0; i < kLanes; ++i)
    if (interleave) {
      lanes.push_back(2 * i + 1);
      lanes.push_back(2 * kLanes + 2 * i + 1);
    }
  for (int i = 0; !interleave && i < 2 * kLanes; ++i)
    lanes.push_back(2 * i + 1);
  auto words = [&](const std::string &v) {
    return w.assign(fmt::format("vector.bitcast {} : {} to vector<32xi16>", v, kVec));
  };
  std::string halves = w.assign(fmt::format("vector.shuffle {}, {} [{}] : vector<32xi16>, "
                                            "vector<32xi16>",
                                            words(lo), words(hi), fmt::join(lanes, ", ")));
  return w.assign(fmt::format("vector.bitcast {} : vector<32xi16> to vector<32xbf16>", halves));
}

VectorLoop openVectorLoop(MlirWriter &w, const std::string &lb, const std::string &ub,
                          const std::vector<std::string> &inits, int64_t step) {
  VectorLoop loop;
  loop.iv = w.fresh("k");
  std::string res = w.fresh("t");
  std::vector<std::string> args, types;
  for (size_t i = 0; i < inits.size(); ++i) {
    loop.accs.push_back(w.fresh("acc"));
    args.push_back(fmt::format("{} = {}", loop.accs.back(), inits[i]));
    types.push_back(kVec);
    loop.results.push_back(fmt::format("{}#{}", res, i));
  }
  w.line(fmt::format("{}:{} = scf.for {} = {} to {} step {} iter_args({}) -> ({}) {{", res,
                     inits.size(), loop.iv, lb, ub, w.indexConstant(step), fmt::join(args, ", "),
                     fmt::join(types, ", ")));
  w.indent();
  w.pushScope();
  return loop;
}

void closeVectorLoop(MlirWriter &w, const std::vector<std::string> &yields) {
  std::vector<std::string> types(yields.size(), kVec);
  w.line(fmt::format("scf.yield {} : {}", fmt::join(yields, ", "), fmt::join(types, ", ")));
  w.popScope();
  w.dedent();
  w.line("}");
}

std::string add(MlirWriter &w, const std::string &a, int64_t b) {
  return w.assign(fmt::format("arith.addi {}, {} : index", a, w.indexConstant(b)));
}

} // namespace tiled

namespace {

// lo + floor((hi - lo) / multiple) * multiple: where whole pieces of
// `multiple` rows or columns from lo end.
std::string wholePiecesEnd(MlirWriter &w, const IndexRange &range, int64_t multiple) {
  if (range.count >= 0)
    return add(w, range.lo, range.count / multiple * multiple);
  std::string span = w.assign(fmt::format("arith.subi {}, {} : index", range.hi, range.lo));
  std::string pieces =
      w.assign(fmt::format("arith.divui {}, {} : index", span, w.indexConstant(multiple)));
  std::string whole =
      w.assign(fmt::format("arith.muli {}, {} : index", pieces, w.indexConstant(multiple)));
  return w.assign(fmt::format("arith.addi {}, {} : index", range.lo, whole));
}

// body() where `condition` (an i1) holds.
void emitIf(MlirWriter &w, const std::string &condition, const std::function<void()> &body) {
  w.line(fmt::format("scf.if {} {{", condition));
  w.indent();
  w.pushScope();
  body();
  w.popScope();
  w.dedent();
  w.line("}");
}

// `count` units from `from` (`scale` indices a unit) taken in pieces of
// each power of two set in it, the widest first, from `largest` down to 1:
// body(at, piece) for each, the piece of p units starting at from + (count
// & -2p) * scale. `count` is an index value, or knownCount >= 0 when it is
// known when the kernel is compiled (the pieces then need no test).
void emitPowerOfTwoPieces(MlirWriter &w, const std::string &from, const std::string &count,
                          int64_t knownCount, int largest, int64_t scale,
                          const std::function<void(const std::string &, int)> &body) {
  for (int piece = largest; piece >= 1; piece /= 2) {
    if (knownCount >= 0) {
      if (knownCount & piece)
        body(add(w, from, (knownCount & -2 * piece) * scale), piece);
      continue;
    }
    std::string bit =
        w.assign(fmt::format("arith.andi {}, {} : index", count, w.indexConstant(piece)));
    std::string present =
        w.assign(fmt::format("arith.cmpi ne, {}, {} : index", bit, w.indexConstant(0)));
    std::string before =
        w.assign(fmt::format("arith.andi {}, {} : index", count, w.indexConstant(-2 * piece)));
    std::string at = w.assign(fmt::format(
        "arith.addi {}, {} : index", from,
        scale == 1 ? before
                   : w.assign(fmt::format("arith.muli {}, {} : index", before,
                                          w.indexConstant(scale)))));
    emitIf(w, present, [&] { body(at, piece); });
  }
}

// The largest power of two below `n` (0 where n <= 1).
int largestPowerOfTwoBelow(int n) {
  int p = 0;
  for (int q = 1; q < n; q *= 2)
    p = q;
  return p;
}

// tile(col, vectors, mask) over columns [lo, hi): tiles `vectors` vectors
// wide, then one narrower tile of each power-of-two width the rest needs
// (the widest first, as emitLeftoverRows takes rows), then one vector whose
// lanes past hi are masked off. A thread's share of a few rows' product
// keeps its wide tiles wherever its columns start.
void emitColumnPieces(
    MlirWriter &w, const IndexRange &cols, int vectors,
    const std::function<void(const std::string &, int, const std::string &)> &tile) {
  const int64_t wide = vectors * kLanes;
  std::string wideEnd = wholePiecesEnd(w, cols, wide);
  if (cols.count < 0 || cols.count >= wide) {
    std::string col = w.beginFor(cols.lo, wideEnd, wide);
    tile(col, vectors, "");
    w.endFor();
  }
  // The whole vectors past the wide tiles: fewer than `vectors`.
  int64_t knownLeft = cols.count >= 0 ? cols.count % wide / kLanes : -1;
  std::string left;
  if (knownLeft < 0 && vectors > 1)
    left =
        w.assign(fmt::format("arith.divui {}, {} : index",
                             w.assign(fmt::format("arith.subi {}, {} : index", cols.hi, wideEnd)),
                             w.indexConstant(kLanes)));
  emitPowerOfTwoPieces(w, wideEnd, left, knownLeft, largestPowerOfTwoBelow(vectors), kLanes,
                       [&](const std::string &at, int piece) { tile(at, piece, ""); });
  std::string vectorsEnd = wholePiecesEnd(w, cols, kLanes);
  if (cols.count >= 0) {
    if (cols.count % kLanes != 0)
      tile(vectorsEnd, 1,
           w.assign(fmt::format("vector.constant_mask [{}] : vector<16xi1>", cols.count % kLanes)));
    return;
  }
  std::string partial =
      w.assign(fmt::format("arith.cmpi ult, {}, {} : index", vectorsEnd, cols.hi));
  emitIf(w, partial, [&] {
    std::string lanes = w.assign(fmt::format("arith.subi {}, {} : index", cols.hi, vectorsEnd));
    tile(vectorsEnd, 1, w.assign(fmt::format("vector.create_mask {} : vector<16xi1>", lanes)));
  });
}

} // namespace

namespace tiled {

void emitFewRows(MlirWriter &w, const IndexRange &range, int largest,
                 const std::function<void(const std::string &, int)> &body) {
  if (range.count >= 0) {
    if (range.count > 0)
      body(range.lo, static_cast<int>(range.count));
    return;
  }
  std::string count = w.assign(fmt::format("arith.subi {}, {} : index", range.hi, range.lo));
  emitPowerOfTwoPieces(w, range.lo, count, -1, largest, 1, body);
}

WholePieces wholePiecesOfC(MlirWriter &w, const IndexRange &cols, int64_t n, int64_t wholeEnd) {
  if (cols.count >= 0)
    return {w.indexConstant(wholeEnd), "", n > wholeEnd};
  std::string end =
      w.assign(fmt::format("arith.minui {}, {} : index", cols.hi, w.indexConstant(wholeEnd)));
  std::string rest =
      w.assign(fmt::format("arith.cmpi ugt, {}, {} : index", cols.hi, w.indexConstant(wholeEnd)));
  return {end, rest, false};
}

void emitRestOfC(MlirWriter &w, const WholePieces &pieces, const std::function<void()> &body) {
  if (!pieces.takesRest.empty())
    emitIf(w, pieces.takesRest, body);
  else if (pieces.knownRest)
    body();
}

void storeTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
               const std::string &col, int vectors, const std::string &mask,
               const std::vector<std::string> &sums) {
  for (int r = 0; r < rows; ++r) {
    std::string row = r == 0 ? rowLo : add(w, rowLo, r);
    for (int v = 0; v < vectors; ++v) {
      std::string at = v == 0 ? col : add(w, col, v * kLanes), value = sums[r * vectors + v];
      if (mm.epilogue) {
        w.pushScope();
        mm.epilogue(row, at, value, mask);
        w.popScope();
        continue;
      }
      std::string vec = vectorOf(mm.cElem);
      if (mm.cElem != "f32")
        value = w.assign(fmt::format("arith.truncf {} : {} to {}", value, kVec, vec));
      if (!mask.empty())
        w.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", mm.c,
                           row, at, mask, value, cType(mm), vec));
      else
        w.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", value, mm.c, row, at,
                           cType(mm), vec));
    }
  }
}

} // namespace tiled

namespace {

// B's rows k0 and k1 (empty: a row of zeros, for an odd K's last row) at
// 16 columns, interleaved into the bf16 pairs vdpbf16ps reads:
// (B[k0, c], B[k1, c]) in lanes 2c and 2c + 1.
std::string bf16PairsOfB(MlirWriter &w, const TiledMatMul &mm, const std::string &k0,
                         const std::string &k1, const std::string &col, const std::string &mask) {
  auto row = [&](const std::string &k) {
    return k.empty() ? zeroVector(w, vectorOf(mm.bElem))
                     : loadLanes(w, mm.b, bType(mm), mm.bElem, k, col, mask);
  };
  std::string first = row(k0), second = row(k1);
  if (mm.bElem == "f32")
    return highHalves(w, first, second, true);
  std::vector<int> lanes;
  for (int i = 0; i < kLanes; ++i) {
    lanes.push_back(i);
    lanes.push_back(kLanes + i);
  }
  return w.assign(fmt::format("vector.shuffle {}, {} [{}] : vector<16xbf16>, vector<16xbf16>",
                              first, second, fmt::join(lanes, ", ")));
}

// (A[row, k0], A[row, k1]) (k1 empty: 0) as one bf16 pair in all 16 lanes.
std::string bf16PairOfA(MlirWriter &w, const TiledMatMul &mm, const std::string &row,
                        const std::string &k0, const std::string &k1) {
  bool f32 = mm.aElem == "f32";
  // The bits of A[row, k] in an i32: a bf16's in the low half, an f32's
  // (a bf16 number) in the high half.
  auto bits = [&](const std::string &k) {
    std::string value = w.assign(fmt::format("memref.load {}[{}, {}] : {}", mm.a,
                                             mm.aTransposed ? k : row, mm.aTransposed ? row : k,
                                             aType(mm)));
    if (f32)
      return w.assign(fmt::format("arith.bitcast {} : f32 to i32", value));
    std::string half = w.assign(fmt::format("arith.bitcast {} : bf16 to i16", value));
    return w.assign(fmt::format("arith.extui {} : i16 to i32", half));
  };
  std::string sixteen = w.assign("arith.constant 16 : i32");
  std::string pair = bits(k0);
  if (f32)
    pair = w.assign(fmt::format("arith.shrui {}, {} : i32", pair, sixteen));
  if (!k1.empty()) {
    std::string high = bits(k1);
    high = f32 ? w.assign(fmt::format("arith.andi {}, {} : i32", high,
                                      w.assign("arith.constant -65536 : i32")))
               : w.assign(fmt::format("arith.shli {}, {} : i32", high, sixteen));
    pair = w.assign(fmt::format("arith.ori {}, {} : i32", pair, high));
  }
  std::string splat = w.assign(fmt::format("vector.broadcast {} : i32 to vector<16xi32>", pair));
  return w.assign(fmt::format("vector.bitcast {} : vector<16xi32> to vector<32xbf16>", splat));
}

// emitVectorTile with vdpbf16ps: the K loop takes rows of B two at a time
// (an odd K's last row paired with zeros).
void emitBf16VectorTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
                        const std::string &col, int vectors, const std::string &mask,
                        const std::string &bc) {
  std::vector<std::string> sums(static_cast<size_t>(rows * vectors), zeroVector(w, kVec));
  auto step = [&](const std::string &k0, const std::string &k1,
                  const std::vector<std::string> &in) {
    std::vector<std::string> bv, next;
    for (int v = 0; v < vectors; ++v)
      bv.push_back(bf16PairsOfB(w, mm, k0, k1, v == 0 ? bc : add(w, bc, v * kLanes), mask));
    for (int r = 0; r < rows; ++r) {
      std::string a = bf16PairOfA(w, mm, r == 0 ? rowLo : add(w, rowLo, r), k0, k1);
      for (int v = 0; v < vectors; ++v)
        next.push_back(dotBf16Pairs(w, in[r * vectors + v], a, bv[v]));
    }
    return next;
  };
  if (mm.k >= 2) {
    VectorLoop loop = openVectorLoop(w, w.indexConstant(0), w.indexConstant(mm.k / 2), sums);
    std::string k0 = w.assign(fmt::format("arith.muli {}, {} : index", loop.iv, w.indexConstant(2)));
    closeVectorLoop(w, step(k0, add(w, k0, 1), loop.accs));
    sums = loop.results;
  }
  if (mm.k % 2 == 1)
    sums = step(w.indexConstant(mm.k - 1), "", sums);
  storeTile(w, mm, rowLo, rows, col, vectors, mask, sums);
}

// emitVectorTile with B a convolution's taps (TiledMatMul::taps). The K
// loop runs over the input's channels with the taps unrolled inside, so
// each tap's shift and lane masks are the tile's constants: B's 16 lanes
// at tap (i, j) are one load of the channel's plane shifted by
// (i * dilationH - padH) rows and (j * dilationW - padW) columns, its
// lanes off where that point is outside the image (im2col's zeros) or past
// the tile's columns. Per sample, im2col had written K x points floats and
// the tiles read them back: the convnet's conv 8->16 (14x14, batch 32, bias,
// relu, pool) took 190 us a step on one thread with it, 172 without (conv
// 1->8 at 28x28: 75 and 71); and with no col buffer there is no 1 MiB
// bound: a 64->64 3x3 conv at 56x56 (batch 8) left the scalar loop nest
// for the tile, 370 ms to 9.0 ms (88% of the FMA peak, 2 threads).
void emitTapTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
                 const std::string &col, int vectors, const std::string &mask) {
  const ConvTaps &t = *mm.taps;
  std::string inputType = memref(t.channels, t.height * t.width);
  // Each i32 splat once (W and H * W recur per tap and vector).
  std::map<int64_t, std::string> splats;
  auto splat = [&](int64_t v) {
    auto [at, added] = splats.try_emplace(v);
    if (added)
      at->second = w.assign(fmt::format("arith.constant dense<{}> : vector<16xi32>", v));
    return at->second;
  };
  auto both = [&](const std::string &a, const std::string &b) {
    return a.empty() ? b : w.assign(fmt::format("arith.andi {}, {} : vector<16xi1>", a, b));
  };
  std::string lanes = w.assign(
      "arith.constant dense<[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]> : vector<16xi32>");
  // Each vector's first output point, and its lanes' points p and columns x.
  std::vector<std::string> firsts, points, columns;
  for (int v = 0; v < vectors; ++v) {
    firsts.push_back(v == 0 ? col : add(w, col, v * kLanes));
    std::string first = w.assign(fmt::format("arith.index_cast {} : index to i32", firsts.back()));
    points.push_back(w.assign(fmt::format(
        "arith.addi {}, {} : vector<16xi32>",
        w.assign(fmt::format("vector.broadcast {} : i32 to vector<16xi32>", first)), lanes)));
    columns.push_back(
        w.assign(fmt::format("arith.remui {}, {} : vector<16xi32>", points.back(), splat(t.width))));
  }
  // Per tap, its shift in the plane and each vector's lanes that read the
  // image (empty: all of them).
  std::vector<int64_t> shifts;
  std::vector<std::string> masks;
  for (int64_t i = 0; i < t.kernelH; ++i)
    for (int64_t j = 0; j < t.kernelW; ++j) {
      int64_t dy = i * t.dilationH - t.padH, dx = j * t.dilationW - t.padW;
      shifts.push_back(dy * t.width + dx);
      bool rowsInside = dy >= 0 && t.outHeight - 1 + dy < t.height;
      for (int v = 0; v < vectors; ++v) {
        std::string lanesOn = mask;
        // One unsigned comparison each: 0 <= y + dy < H is 0 <= p + dy * W
        // < H * W (x < W), and 0 <= x + dx < W.
        if (!rowsInside)
          lanesOn = both(lanesOn, w.assign(fmt::format(
                                      "arith.cmpi ult, {}, {} : vector<16xi32>",
                                      w.assign(fmt::format("arith.addi {}, {} : vector<16xi32>",
                                                           points[v], splat(dy * t.width))),
                                      splat(t.height * t.width))));
        if (dx != 0)
          lanesOn = both(lanesOn, w.assign(fmt::format(
                                      "arith.cmpi ult, {}, {} : vector<16xi32>",
                                      w.assign(fmt::format("arith.addi {}, {} : vector<16xi32>",
                                                           columns[v], splat(dx))),
                                      splat(t.width))));
        masks.push_back(lanesOn);
      }
    }
  int64_t taps = t.kernelH * t.kernelW;
  std::vector<std::string> inits(static_cast<size_t>(rows * vectors), zeroVector(w, kVec));
  VectorLoop loop = openVectorLoop(w, w.indexConstant(0), w.indexConstant(t.channels), inits);
  std::string firstK = w.assign(
      fmt::format("arith.muli {}, {} : index", loop.iv, w.indexConstant(taps)));
  // With flipped weights, each row's first element of A: row * taps.
  std::vector<std::string> rowTaps;
  for (int r = 0; t.flipped && r < rows; ++r)
    rowTaps.push_back(w.assign(fmt::format("arith.muli {}, {} : index",
                                           r == 0 ? rowLo : add(w, rowLo, r),
                                           w.indexConstant(taps))));
  std::vector<std::string> sums = loop.accs;
  for (int64_t tap = 0; tap < taps; ++tap) {
    std::vector<std::string> bv;
    for (int v = 0; v < vectors; ++v)
      bv.push_back(loadLanes(w, t.input, inputType, "f32", loop.iv,
                             add(w, firsts[v], shifts[tap]), masks[tap * vectors + v]));
    std::string k = tap == 0 ? firstK : add(w, firstK, tap);
    for (int r = 0; r < rows; ++r) {
      std::string a = w.assign(
          t.flipped ? fmt::format("memref.load {}[{}, {}] : {}", mm.a, loop.iv,
                                  add(w, rowTaps[r], taps - 1 - tap), aType(mm))
                    : fmt::format("memref.load {}[{}, {}] : {}", mm.a,
                                  r == 0 ? rowLo : add(w, rowLo, r), k, aType(mm)));
      std::string splatA = w.assign(fmt::format("vector.broadcast {} : f32 to {}", a, kVec));
      for (int v = 0; v < vectors; ++v) {
        std::string &sum = sums[r * vectors + v];
        sum = w.assign(fmt::format("vector.fma {}, {}, {} : {}", splatA, bv[v], sum, kVec));
      }
    }
  }
  closeVectorLoop(w, sums);
  storeTile(w, mm, rowLo, rows, col, vectors, mask, loop.results);
}

} // namespace

namespace tiled {

void emitVectorTile(MlirWriter &w, const TiledMatMul &mm, const std::string &rowLo, int rows,
                    const std::string &col, int vectors, const std::string &mask,
                    const std::string &bCol) {
  if (mm.taps) {
    emitTapTile(w, mm, rowLo, rows, col, vectors, mask);
    return;
  }
  const std::string &bc = bCol.empty() ? col : bCol;
  if (mm.bf16Dot) {
    emitBf16VectorTile(w, mm, rowLo, rows, col, vectors, mask, bc);
    return;
  }
  std::vector<std::string> inits(static_cast<size_t>(rows * vectors), zeroVector(w, kVec));
  VectorLoop loop = openVectorLoop(w, w.indexConstant(0), w.indexConstant(mm.k), inits);
  std::vector<std::string> bv;
  for (int v = 0; v < vectors; ++v)
    bv.push_back(widened(w,
                         loadLanes(w, mm.b, bType(mm), mm.bElem, loop.iv,
                                   v == 0 ? bc : add(w, bc, v * kLanes), mask),
                         mm.bElem, true));
  // B read in place (not from a packed panel): each K step reads B's next
  // row, a row stride on, often a new page, which the hardware prefetchers
  // do not follow. A tile prefetches its lines of B kBPrefetch K steps
  // ahead: at batch 32 (a thread's 16 rows, two whole tiles) the MLP's
  // 784x1024 and 1024x1024 products ran 1.3 ms a forward with it, 2.0 ms
  // without (medians of 8 alternating runs on the shared machine). The
  // narrower tiles of a few rows, where a prefetch costs about as much as
  // the FMAs it serves, prefetch into L2 only: into L1 they ran slower
  // (batch 1: 0.123 against 0.106 ms); into L2 the MLP's forward (its
  // columns split between 2 threads, best of 5 alternating runs) took
  // 0.051 against 0.060 ms at batch 1, 0.072 against 0.075 at batch 4 and
  // 0.054 against 0.053 at batch 2.
  bool wholeTile = rows == registerTile().rows;
  if (!mm.packB && mm.k > kBPrefetch)
    for (int v = 0; v < vectors; ++v) {
      std::string ahead = w.assign(fmt::format("arith.minui {}, {} : index",
                                               add(w, loop.iv, kBPrefetch),
                                               w.indexConstant(mm.k - 1)));
      w.line(fmt::format("memref.prefetch {}[{}, {}], read, locality<{}>, data : {}", mm.b, ahead,
                         v == 0 ? bc : add(w, bc, v * kLanes), wholeTile ? 3 : 2, bType(mm)));
    }
  if (mm.aPrefetch > 0 && mm.k > mm.aPrefetch) {
    // The tile's rows of A aPrefetch K steps ahead (the last row where that
    // is past the end), one line: adjacent rows are adjacent in memory.
    std::string ahead = w.assign(fmt::format("arith.minui {}, {} : index",
                                             add(w, loop.iv, mm.aPrefetch),
                                             w.indexConstant(mm.k - 1)));
    w.line(fmt::format("memref.prefetch {}[{}, {}], read, locality<3>, data : {}", mm.a,
                       mm.aTransposed ? ahead : rowLo, mm.aTransposed ? rowLo : ahead, aType(mm)));
  }
  std::vector<std::string> next;
  for (int r = 0; r < rows; ++r) {
    std::string row = r == 0 ? rowLo : add(w, rowLo, r);
    std::string a = w.assign(mm.aTransposed
                                 ? fmt::format("memref.load {}[{}, {}] : {}", mm.a, loop.iv, row,
                                               aType(mm))
                                 : fmt::format("memref.load {}[{}, {}] : {}", mm.a, row, loop.iv,
                                               aType(mm)));
    std::string splat = w.assign(fmt::format("vector.broadcast {} : f32 to {}",
                                             widened(w, a, mm.aElem, false), kVec));
    for (int v = 0; v < vectors; ++v)
      next.push_back(w.assign(fmt::format("vector.fma {}, {}, {} : {}", splat, bv[v],
                                          loop.accs[r * vectors + v], kVec)));
  }
  closeVectorLoop(w, next);
  storeTile(w, mm, rowLo, rows, col, vectors, mask, loop.results);
}

} // namespace tiled

namespace {

constexpr RegisterTile kAvx512Tile{"8x32", 8, 2, 4, 4, 16};
constexpr RegisterTile kAvx2Tile{"6x16", 6, 1, 2, 2, 4};
std::atomic<const RegisterTile *> forcedTile{nullptr};

} // namespace

const RegisterTile &avx512Tile() { return kAvx512Tile; }
const RegisterTile &avx2Tile() { return kAvx2Tile; }

const RegisterTile &registerTile() {
  if (const RegisterTile *forced = forcedTile.load())
    return *forced;
  static const RegisterTile &chosen = [] () -> const RegisterTile & {
    if (const char *env = std::getenv("STEPC_MATMUL_TILE")) {
      for (const RegisterTile *tile : {&kAvx512Tile, &kAvx2Tile})
        if (std::string_view(env) == tile->name)
          return *tile;
      throw Error(fmt::format("STEPC_MATMUL_TILE={}: expected {} or {}", env, kAvx512Tile.name,
                              kAvx2Tile.name));
    }
    // The same target machine compiles the kernels (llvm_backend.cpp).
    return hostVectorRegisterBits() >= 512 ? kAvx512Tile : kAvx2Tile;
  }();
  return chosen;
}

void forceRegisterTile(const RegisterTile *tile) { forcedTile.store(tile); }

bool dotProductsByRow(int64_t rows) { return rows < registerTile().rows; }

namespace {
std::atomic<int> forcedBf16Dot{-1};
}

bool bf16DotProducts() {
  int forced = forcedBf16Dot.load();
  return forced >= 0 ? forced == 1 : hostHasAvx512Bf16();
}

void forceBf16DotProducts(int state) { forcedBf16Dot.store(state); }

namespace {

// Rows [rowLo, rowEnd) in tiles of `rows` rows (rowEnd empty: the one tile
// at rowLo) across the call's columns, B read in place: `vectors` vectors a
// tile, then the columns left (emitColumnPieces). Column tiles outside, row
// tiles inside, so a panel of B read from memory serves every row tile from
// the cache.
void emitRowTiles(MlirWriter &w, const TiledMatMul &mm, const IndexRange &cols,
                  const std::string &rowLo, const std::string &rowEnd, int rows, int vectors) {
  emitColumnPieces(w, cols, vectors,
                   [&](const std::string &col, int tileVectors, const std::string &mask) {
                     if (rowEnd.empty()) {
                       emitVectorTile(w, mm, rowLo, rows, col, tileVectors, mask);
                       return;
                     }
                     std::string row = w.beginFor(rowLo, rowEnd, rows);
                     emitVectorTile(w, mm, row, rows, col, tileVectors, mask);
                     w.endFor();
                   });
}

// `rows`, fewer than a whole tile's (a small batch, or a thread's share of
// one), B read in place, each row tile as wide as a whole tile's
// accumulators allow, so that a few rows read each line of B once, not
// once a row: all of them in one tile where their count is known (split
// 2 + 1, batch 3 of the MLP 784-1024-1024-10 streamed its weights twice:
// 0.12 ms against 0.07 for 4 rows), else tiles of 4, 2 and 1 rows
// (emitFewRows).
void emitLeftoverRows(MlirWriter &w, const TiledMatMul &mm, const RegisterTile &tile,
                      const IndexRange &cols, const IndexRange &rows) {
  if (tile.rows > 8)
    throw std::logic_error("tiled matmul: leftover rows are split into 4, 2 and 1 rows");
  emitFewRows(w, rows, std::min(4, largestPowerOfTwoBelow(tile.rows)),
              [&](const std::string &rowLo, int pieceRows) {
                emitRowTiles(w, mm, cols, rowLo, "", pieceRows,
                             std::max(1, tile.rows * tile.vectors / pieceRows));
              });
}

// Rows [lo, hi) in blocks of aBlockRows(K) rows: each block's columns of
// A^T copied into mm.aBlock (lanes past the block's last row as 0), then
// the block's rows computed as any rows are, reading A from the copy
// through a view shifted by the block's first row (its [k, row] is the
// copy's [k, row - first]), so the tiles index A as before.
void emitABlocks(MlirWriter &w, const TiledMatMul &mm, const std::string &lo,
                 const std::string &hi) {
  if (!mm.aTransposed || mm.aElem != "f32" || mm.bf16Dot || (mm.bTransposed && !mm.packB))
    throw std::logic_error("tiled matmul: an A block copies an f32 A^T for the vector tile");
  int64_t blockRows = aBlockRows(mm.k);
  if (blockRows == 0)
    throw std::logic_error("tiled matmul: K is too deep for an A block");
  std::string blockType = aBlockType(mm.k);
  std::string first = w.beginFor(lo, hi, blockRows);
  std::string last = w.assign(
      fmt::format("arith.minui {}, {} : index", add(w, first, blockRows), hi));
  std::string count = w.assign(fmt::format("arith.subi {}, {} : index", last, first));
  std::vector<std::string> masks;
  for (int64_t c = 0; c < blockRows; c += kLanes) {
    std::string left = c == 0 ? count
                              : w.assign(fmt::format("arith.subi {}, {} : index", count,
                                                     w.indexConstant(c)));
    masks.push_back(w.assign(fmt::format("vector.create_mask {} : vector<16xi1>", left)));
  }
  std::string k = w.beginFor(w.indexConstant(0), w.indexConstant(mm.k));
  for (int64_t c = 0; c < blockRows; c += kLanes) {
    std::string value = loadLanes(w, mm.a, aType(mm), "f32", k, c == 0 ? first : add(w, first, c),
                                  masks[static_cast<size_t>(c / kLanes)]);
    w.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", value, mm.aBlock, k,
                       w.indexConstant(c), blockType, kVec));
  }
  w.endFor();
  TiledMatMul blocked = mm;
  blocked.aBlock.clear();
  blocked.aPrefetch = 0;
  blocked.rowBegin = first;
  blocked.rowEnd = last;
  blocked.aType = fmt::format("memref<{}x{}xf32, strided<[{}, 1], offset: ?>>", mm.k, mm.m,
                              blockRows);
  std::string shift = w.assign(fmt::format("arith.subi {}, {} : index", w.indexConstant(0), first));
  blocked.a = w.assign(fmt::format(
      "memref.reinterpret_cast {} to offset: [{}], sizes: [{}, {}], strides: [{}, 1] : {} to {}",
      mm.aBlock, shift, mm.k, mm.m, blockRows, blockType, blocked.aType));
  emitTiledMatMul(w, blocked);
  w.endFor();
}

} // namespace

void emitTiledMatMul(MlirWriter &w, const TiledMatMul &mm) {
  if (mm.accumulate && !mm.bTransposed)
    throw std::logic_error("tiled matmul: accumulate needs the dot-product path");
  if (mm.epilogue && mm.bTransposed && !mm.packB && !dotProductsByRow(mm.m))
    throw std::logic_error("tiled matmul: an epilogue needs the vector path or dot rows");
  if (mm.packB && (!mm.bTransposed || mm.accumulate))
    throw std::logic_error("tiled matmul: packB reads B^T and stores C");
  if (mm.bf16Dot && (mm.aElem == "f16" || mm.bElem == "f16"))
    throw std::logic_error("tiled matmul: bf16Dot reads bf16 numbers");
  if (mm.epilogue && mm.cElem != "f32")
    throw std::logic_error("tiled matmul: an epilogue takes f32 sums, not a half C");
  if (mm.colBegin.empty() != mm.colEnd.empty())
    throw std::logic_error("tiled matmul: a column range needs both ends");
  if (mm.taps && (mm.aTransposed || mm.bTransposed || mm.aElem != "f32" || mm.bf16Dot ||
                  !mm.bPanel.empty() || !mm.aBlock.empty()))
    throw std::logic_error("tiled matmul: a convolution's taps take the f32 vector tile");
  const RegisterTile &tile = registerTile();
  std::string lo = mm.rowBegin.empty() ? w.indexConstant(0) : mm.rowBegin;
  std::string hi = mm.rowEnd.empty() ? w.indexConstant(mm.m) : mm.rowEnd;
  const IndexRange rowRange{lo, hi, mm.rowBegin.empty() ? mm.m : -1};
  IndexRange cols = mm.colBegin.empty()
                        ? IndexRange{w.indexConstant(0), w.indexConstant(mm.n), mm.n}
                        : IndexRange{mm.colBegin, mm.colEnd, -1};
  // Where the whole row tiles end.
  auto wholeTilesEnd = [&](int tileRows) {
    return wholePiecesEnd(w, rowRange, tileRows);
  };
  if (!mm.aBlock.empty()) {
    emitABlocks(w, mm, lo, hi);
    return;
  }
  if (mm.bTransposed && !mm.packB) {
    if (dotProductsByRow(mm.m))
      emitDotRows(w, mm, tile, cols, rowRange);
    else
      emitDotProducts(w, mm, tile, cols, lo, hi, wholeTilesEnd(tile.dotRows));
    return;
  }
  const int rows = tile.rows, vectors = tile.vectors;
  std::string tileEnd = wholeTilesEnd(rows);
  if (mm.packB) {
    emitPackedTiles(w, mm, tile, cols, lo, hi, tileEnd);
    return;
  }
  if (!mm.bPanel.empty()) {
    // B row-major, its column panels copied into the caller's buffer
    // (copiesRowMajorPanels), as packB copies B^T's.
    TiledMatMul copied = mm;
    copied.packB = true;
    emitPackedTiles(w, copied, tile, cols, lo, hi, tileEnd);
    return;
  }
  // With fewer rows than a tile's (a product split by columns, a small
  // batch) no call has a whole tile.
  if (mm.m >= rows)
    emitRowTiles(w, mm, cols, lo, tileEnd, rows, vectors);
  emitLeftoverRows(w, mm, tile, cols,
                   {tileEnd, hi, rowRange.count >= 0 ? rowRange.count % rows : -1});
}

int64_t aBlockRows(int64_t depth) {
  int64_t rows = std::min<int64_t>(64, kMaxStackBufferFloats / std::max<int64_t>(depth, 1) / kLanes * kLanes);
  return rows >= kLanes ? rows : 0;
}

std::string aBlockType(int64_t depth) { return memref(depth, std::max<int64_t>(aBlockRows(depth), kLanes)); }

bool convReadsTaps(const std::vector<int64_t> &stride, int64_t height, int64_t width,
                   int64_t outHeight, int64_t outWidth, int64_t kernelH, int64_t kernelW) {
  // Up to 7x7: every tap's FMAs are unrolled in the channel loop. A lane's
  // point p, and p shifted by a tap's rows, must fit an i32 (the masks'
  // unsigned comparisons): a generous bound on both planes.
  bool unitStride = stride.size() == 2 && stride[0] == 1 && stride[1] == 1;
  return unitStride && outWidth == width && kernelH * kernelW <= 49 &&
         (height + outHeight) * width < (int64_t(1) << 30);
}

bool copiesRowMajorPanels(int64_t rows) {
  // Read in place, each K step of each row tile reads B's next row, a new
  // page (an L2 hit, a TLB miss), while a copied panel is contiguous. The
  // MLP's products at batch 256 on one thread took 9.65 ms a forward in
  // place against 9.02 ms from copied panels, while at batch 32 and 64 (4
  // and 8 row tiles) in place was as fast or faster (1.20 against 1.30 ms,
  // 2.31 against 2.34 ms). The count is the whole product's, not a
  // thread's share: the kernel is compiled once for any number of threads
  // (the pool splits its rows at run time), and choosing at run time would
  // emit the product twice; a share of 64 to 128 rows (batch 256 on 2 to 4
  // threads) is where the two paths measured within 1.3% of each other.
  return rows >= 128;
}

} // namespace stepc::codegen
