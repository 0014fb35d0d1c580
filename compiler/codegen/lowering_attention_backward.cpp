// The backward Attention kernel (matchAttentionBackward in
// compiler/passes/fusion_plan.h): dQ, d(k^T) and dV of softmax(q k^T [*
// scale] [causal]) v from q, k^T, v, dO and the forward's row max m and
// sum l, without storing any [Tq, Tk] matrix.
//
// A unit is one batch entry: it owns that entry's dQ, d(k^T) and dV, so
// each output element has one writer and the sums run in one fixed order
// whatever the thread count (units of key blocks would share dQ's rows,
// units of query blocks dK's and dV's). A unit takes its query rows a
// register tile (`rows`) at a time:
// 1. for each key block (packed like the forward's: k^T's and v^T's
//    columns, keys along the lanes), P = exp(s - m) / l and dP = dO v^T for
//    the tile's rows, 16 keys per vector, kept in two [rows, Tk] stack
//    buffers (this bounds Tk; a causal tile stops past its last row);
// 2. D = rowsum(P dP) (= rowsum(dO O)), then dS = P (dP - D) [* scale |
//    / scale] in place of dP;
// 3. dQ = dS k over the key blocks (k's rows packed), stored once;
// 4. dV += P^T dO and d(k^T) += q^T dS into the outputs, which the unit
//    zeroed first (or dK += dS^T q, where the kernel stores d(k^T) through a
//    head merge that puts D, not Tk, at unit stride: attentionStore).
// Rows past Tq are computed as copies of the last row with P = dS = 0, so
// they add nothing, and their dQ is not stored.
#include "kernel_emitter.h"
#include "vector_loops.h"

#include "tiled_matmul.h"

#include <fmt/format.h>

#include <stdexcept>
#include <tuple>

namespace stepc::codegen {

void KernelEmitter::emitAttentionBackward(ValueId gradQueries, bool parallel) {
  std::optional<AttentionBackwardPattern> b = matchAttentionBackward(g_, gradQueries);
  if (!b)
    throw std::logic_error(
        fmt::format("kernel {}: not an attention pattern or its backward", group_.name));
  const AttentionPattern &p = b->recomputed;
  const Shape &space = shapeOf(p.scores);
  size_t rank = space.size();
  int64_t tq = space[rank - 2], tk = space[rank - 1], depth = shapeOf(gradQueries).back(),
          dv = shapeOf(b->gradValues).back();
  int64_t depthPadded = roundUp(depth, kLanes), dvPadded = roundUp(dv, kLanes),
          keyBlock = kAttentionKeyBlock, tkPadded = roundUp(tk, kAttentionKeyBlock);
  int rows = registerTile().rows, vectors = registerTile().vectors;
  Shape batchShape(space.begin(), space.end() - 2);
  int64_t units = 1;
  for (int64_t d : batchShape)
    units *= d;

  auto in = [&](ValueId v) { return operandInBatchSpace(v, rank); };
  StridedOperand q = in(p.queries), kt = in(p.keysT), dO = in(b->gradOutput),
                 vt = in(b->valuesT), keys = in(b->keys), qt = in(b->queriesT),
                 rowMax = in(b->rowMax), rowSum = in(b->rowSum);
  // Each result goes where the kernel stores it: itself, or the head merge
  // after it (attentionStore), with stride 1 along D (dQ), Dv (dV), and for
  // d(k^T) along Tk or D: without unit stride along Tk the unit stores dK,
  // its transpose, with D along the lanes.
  auto storedAs = [&](ValueId result) {
    AttentionStore stored = attentionStore(g_, group_.nodes, result);
    return StridedOperand{stored.stored, 0, stored.strides};
  };
  StridedOperand dq = storedAs(b->gradQueries), dkt = storedAs(b->gradKeysT),
                 dvOut = storedAs(b->gradValues);
  auto at = [&](const StridedOperand &s, size_t d) { return s.strides[d]; };
  bool storeKeysAlongLanes = tk == 1 || at(dkt, rank - 1) == 1;

  auto stackBuffer = [&](const std::string &type) {
    return w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : {}", type));
  };
  // Where k^T's and v^T's panels for all of Tk fit beside the other
  // buffers, a unit packs them once for all its tiles; else each tile packs
  // one key block at a time.
  bool wholePanels = (depth + dv) * tkPadded + 2 * rows * tkPadded +
                         keyBlock * depthPadded + rows * (3 * depthPadded + dvPadded) <=
                     kAttentionMaxStackFloats;
  int64_t panelColumns = wholePanels ? tkPadded : keyBlock;
  // dQ reads k's rows in place where they are contiguous, else packs them.
  bool packKeyRows = depth > 1 && at(keys, rank - 1) != 1;
  std::string kPanelType = fmt::format("memref<{}x{}xf32>", depth, panelColumns),
              vPanelType = fmt::format("memref<{}x{}xf32>", dv, panelColumns),
              kRowsType = fmt::format("memref<{}x{}xf32>", keyBlock, depthPadded),
              rowsType = fmt::format("memref<{}x{}xf32>", rows, tkPadded),
              qTileType = fmt::format("memref<{}x{}xf32>", rows, depthPadded),
              dOTileType = fmt::format("memref<{}x{}xf32>", rows, dvPadded);
  std::string kPanel = stackBuffer(kPanelType), vPanel = stackBuffer(vPanelType),
              kRows = stackBuffer(kRowsType), probs = stackBuffer(rowsType),
              grads = stackBuffer(rowsType), qTile = stackBuffer(qTileType),
              qtTile = stackBuffer(qTileType), dOTile = stackBuffer(dOTileType),
              dqAcc = stackBuffer(qTileType);
  std::string zero = w_.constant(0, DType::F32), one = w_.constant(1, DType::F32);
  std::string zeros = w_.assign(fmt::format("arith.constant dense<0.0> : {}", kVec));
  // Everything starts zeroed: panels' lanes past a tail block's keys are
  // masked, and padding columns are read into lanes that are never stored,
  // but a zero times garbage could still be a NaN.
  auto zeroBuffer = [&](const std::string &buffer, const std::string &type, int64_t bufferRows,
                        int64_t cols) {
    std::string r = w_.beginFor(w_.indexConstant(0), w_.indexConstant(bufferRows));
    std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(cols));
    w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", zero, buffer, r, c, type));
    w_.endFor();
    w_.endFor();
  };
  zeroBuffer(kPanel, kPanelType, depth, panelColumns);
  zeroBuffer(vPanel, vPanelType, dv, panelColumns);
  zeroBuffer(kRows, kRowsType, keyBlock, depthPadded);
  zeroBuffer(probs, rowsType, rows, tkPadded);
  zeroBuffer(grads, rowsType, rows, tkPadded);
  zeroBuffer(qTile, qTileType, rows, depthPadded);
  zeroBuffer(qtTile, qTileType, rows, depthPadded);
  zeroBuffer(dOTile, dOTileType, rows, dvPadded);

  std::string unit = w_.beginFor(parallel ? begin_ : w_.indexConstant(0),
                                 parallel ? end_ : w_.indexConstant(units));
  Index batch = batchShape.empty() ? Index{} : delinearize(unit, batchShape);
  std::string qType, ktType, dOType, vType, keysType, qtType, maxType, sumType, dqType, dktType,
      dvType;
  std::string qm = stridedMatrix(q, batch, tq, depth, at(q, rank - 2), at(q, rank - 1), qType);
  // k^T [D, Tk] read as k [Tk, D], v^T [Dv, Tk] as v, q^T [D, Tq] as q.
  std::string ktm =
      stridedMatrix(kt, batch, tk, depth, at(kt, rank - 1), at(kt, rank - 2), ktType);
  std::string dOm = stridedMatrix(dO, batch, tq, dv, at(dO, rank - 2), at(dO, rank - 1), dOType);
  std::string vm = stridedMatrix(vt, batch, tk, dv, at(vt, rank - 1), at(vt, rank - 2), vType);
  std::string km =
      stridedMatrix(keys, batch, tk, depth, at(keys, rank - 2), at(keys, rank - 1), keysType);
  std::string qtm = stridedMatrix(qt, batch, tq, depth, at(qt, rank - 1), at(qt, rank - 2), qtType);
  std::string maxm = stridedMatrix(rowMax, batch, tq, 1, at(rowMax, rank - 2),
                                   at(rowMax, rank - 1), maxType);
  std::string summ = stridedMatrix(rowSum, batch, tq, 1, at(rowSum, rank - 2),
                                   at(rowSum, rank - 1), sumType);
  std::string dqm =
      stridedMatrix(dq, batch, tq, depth, at(dq, rank - 2), at(dq, rank - 1), dqType);
  // d(k^T) [D, Tk], or dK [Tk, D].
  int64_t dktRows = storeKeysAlongLanes ? depth : tk, dktCols = storeKeysAlongLanes ? tk : depth;
  std::string dktm =
      storeKeysAlongLanes
          ? stridedMatrix(dkt, batch, depth, tk, at(dkt, rank - 2), at(dkt, rank - 1), dktType)
          : stridedMatrix(dkt, batch, tk, depth, at(dkt, rank - 1), at(dkt, rank - 2), dktType);
  std::string dvm =
      stridedMatrix(dvOut, batch, tk, dv, at(dvOut, rank - 2), at(dvOut, rank - 1), dvType);

  // The unit's d(k^T) and dV start at 0.
  auto zeroMatrix = [&](const std::string &m, const std::string &type, int64_t mRows,
                        int64_t cols) {
    std::string r = w_.beginFor(w_.indexConstant(0), w_.indexConstant(mRows));
    std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(cols));
    w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", zero, m, r, c, type));
    w_.endFor();
    w_.endFor();
  };
  zeroMatrix(dktm, dktType, dktRows, dktCols);
  zeroMatrix(dvm, dvType, tk, dv);

  auto load = [&](const std::string &m, const std::string &type, const std::string &r,
                  const std::string &c) {
    return w_.assign(fmt::format("memref.load {}[{}, {}] : {}", m, r, c, type));
  };
  auto vload = [&](const std::string &m, const std::string &type, const std::string &r,
                   const std::string &c) {
    return w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", m, r, c, type, kVec));
  };
  auto vstore = [&](const std::string &value, const std::string &m, const std::string &type,
                    const std::string &r, const std::string &c) {
    w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", value, m, r, c, type, kVec));
  };
  auto fma = [&](const std::string &a, const std::string &x, const std::string &acc) {
    return w_.assign(fmt::format("vector.fma {}, {}, {} : {}", a, x, acc, kVec));
  };
  auto minIndex = [&](const std::string &a, const std::string &c) {
    return w_.assign(fmt::format("arith.minsi {}, {} : index", a, c));
  };
  auto subIndex = [&](const std::string &a, const std::string &c) {
    return w_.assign(fmt::format("arith.subi {}, {} : index", a, c));
  };
  // Lanes [0, n) of a 16-lane piece, n clamped by create_mask.
  auto maskBelow = [&](const std::string &n) {
    return w_.assign(fmt::format("vector.create_mask {} : vector<16xi1>", n));
  };
  std::vector<std::string> vectorTypes(static_cast<size_t>(rows), kVec);

  // Runs body(j0, count) for the whole key blocks up to `end`, then for the
  // last, shorter block where Tk is not a multiple of the block and `end`
  // reaches it.
  int64_t wholeEnd = tk / keyBlock * keyBlock;
  auto forKeyBlocks = [&](const std::string &end,
                          const std::function<void(const std::string &, int64_t)> &body) {
    if (wholeEnd > 0) {
      std::string j0 = openSteppedFor(w_, w_.indexConstant(0),
                                      minIndex(end, w_.indexConstant(wholeEnd)), keyBlock);
      body(j0, keyBlock);
      w_.endFor();
    }
    if (tk > wholeEnd) {
      w_.line(fmt::format("scf.if {} {{", w_.assign(fmt::format("arith.cmpi sgt, {}, {} : index",
                                                               end,
                                                               w_.indexConstant(wholeEnd)))));
      w_.indent();
      w_.pushScope();
      body(w_.indexConstant(wholeEnd), tk - wholeEnd);
      w_.popScope();
      w_.dedent();
      w_.line("}");
    }
  };
  // Packs k^T's and v^T's columns [j0, j0 + count) into the panels (at
  // their place in whole panels).
  auto packPanels = [&](const std::string &j0, int64_t count) {
    for (auto [matrix, type, inner, unitK, panel, panelType] :
         {std::tuple{ktm, ktType, depth, at(kt, rank - 2) == 1, kPanel, kPanelType},
          std::tuple{vm, vType, dv, at(vt, rank - 2) == 1, vPanel, vPanelType}}) {
      std::string target = panel, targetType = panelType;
      if (wholePanels) {
        targetType = fmt::format("memref<{}x{}xf32, strided<[{}, 1], offset: ?>>", inner,
                                 keyBlock, panelColumns);
        target = w_.assign(fmt::format("memref.subview {}[0, {}] [{}, {}] [1, 1] : {} to {}",
                                       panel, j0, inner, keyBlock, panelType, targetType));
      }
      emitPackColumns(w_, matrix, type, inner, unitK, target, targetType, j0, count);
    }
  };
  if (wholePanels)
    forKeyBlocks(w_.indexConstant(tk),
                 [&](const std::string &j0, int64_t count) { packPanels(j0, count); });

  std::string i0 = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(tq), rows);
  // Row r of the tile: its row (clamped to the last) and whether it is one.
  std::vector<std::string> row, valid, rowMaxes, inverseSums;
  std::string last = w_.indexConstant(tq - 1);
  for (int r = 0; r < rows; ++r) {
    std::string i = r == 0 ? i0 : addIndex(w_, i0, w_.indexConstant(r));
    row.push_back(minIndex(i, last));
    valid.push_back(w_.assign(
        fmt::format("arith.cmpi slt, {}, {} : index", i, w_.indexConstant(tq))));
    std::string ri = w_.indexConstant(r);
    // The tile's rows of q, q^T's and dO, packed: 16 columns per vector
    // where the row is contiguous (the last piece masked), else one by one.
    for (auto [m, type, unitStride, cols, tile, tileType] :
         {std::tuple{qm, qType, at(q, rank - 1) == 1, depth, qTile, qTileType},
          std::tuple{qtm, qtType, at(qt, rank - 2) == 1, depth, qtTile, qTileType},
          std::tuple{dOm, dOType, at(dO, rank - 1) == 1, dv, dOTile, dOTileType}}) {
      if (unitStride) {
        std::string c =
            openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(roundUp(cols, kLanes)), kLanes);
        std::string piece = w_.assign(fmt::format(
            "vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}", m, row[r], c,
            maskBelow(subIndex(w_.indexConstant(cols), c)), zeros, type, kVec, kVec));
        vstore(piece, tile, tileType, ri, c);
        w_.endFor();
      } else {
        std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(cols));
        w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", load(m, type, row[r], c), tile, ri,
                            c, tileType));
        w_.endFor();
      }
    }
    rowMaxes.push_back(splat(w_, load(maxm, maxType, row[r], w_.indexConstant(0))));
    inverseSums.push_back(splat(
        w_, w_.assign(fmt::format("arith.divf {}, {} : f32", one,
                                  load(summ, sumType, row[r], w_.indexConstant(0))))));
  }
  // A causal tile needs the keys up to its last row only.
  std::string keyEnd = w_.indexConstant(tk);
  if (p.causal)
    keyEnd = minIndex(addIndex(w_, i0, w_.indexConstant(rows)), keyEnd);

  // 1. P and dP of the tile's rows, 16 keys at a time.
  std::string scale = splat(w_, w_.constant(p.scale, DType::F32));
  forKeyBlocks(keyEnd, [&](const std::string &j0, int64_t count) {
    if (!wholePanels)
      packPanels(j0, count);
    std::string blockEnd = minIndex(addIndex(w_, j0, w_.indexConstant(count)), keyEnd);
    std::string jj = openSteppedFor(w_, j0, blockEnd, kLanes);
    std::string column = wholePanels ? jj : subIndex(jj, j0);
    // Products of the tile's rows with 16 columns of a panel: one FMA chain.
    auto products = [&](const std::string &tile, const std::string &tileType,
                        const std::string &panel, const std::string &panelType, int64_t inner) {
      std::vector<std::string> inits(static_cast<size_t>(rows), zeros), res;
      std::string k = w_.fresh("k");
      std::vector<std::string> partial = openCarryingFor(
          w_, k, w_.indexConstant(0), w_.indexConstant(inner), 1, inits, vectorTypes, res);
      std::string lanesOfPanel = vload(panel, panelType, k, column);
      std::vector<std::string> next;
      for (int r = 0; r < rows; ++r)
        next.push_back(
            fma(splat(w_, load(tile, tileType, w_.indexConstant(r), k)), lanesOfPanel, partial[r]));
      closeCarryingFor(w_, next, vectorTypes);
      return res;
    };
    std::vector<std::string> scores = products(qTile, qTileType, kPanel, kPanelType, depth);
    std::vector<std::string> dps = products(dOTile, dOTileType, vPanel, vPanelType, dv);
    std::string keysAt = laneIndices(w_, jj);
    std::string isKey = w_.assign(fmt::format("arith.cmpi slt, {}, {} : vector<16xi64>", keysAt,
                                              indexVector(w_, w_.indexConstant(tk))));
    for (int r = 0; r < rows; ++r) {
      std::string s = scores[r];
      if (p.scaleOp == AttentionPattern::Scale::Mul)
        s = w_.assign(fmt::format("arith.mulf {}, {} : {}", s, scale, kVec));
      else if (p.scaleOp == AttentionPattern::Scale::Div)
        s = w_.assign(fmt::format("arith.divf {}, {} : {}", s, scale, kVec));
      std::string e = w_.assign(fmt::format(
          "math.exp {} : {}",
          w_.assign(fmt::format("arith.subf {}, {} : {}", s, rowMaxes[r], kVec)), kVec));
      std::string pr = w_.assign(fmt::format("arith.mulf {}, {} : {}", e, inverseSums[r], kVec));
      std::string seen = isKey;
      if (p.causal)
        seen = w_.assign(fmt::format(
            "arith.andi {}, {} : vector<16xi1>", seen,
            w_.assign(fmt::format("arith.cmpi sle, {}, {} : vector<16xi64>", keysAt,
                                  indexVector(w_, row[r])))));
      pr = w_.assign(
          fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", seen, pr, zeros, kVec));
      pr = w_.assign(fmt::format("arith.select {}, {}, {} : {}", valid[r], pr, zeros, kVec));
      std::string ri = w_.indexConstant(r);
      vstore(pr, probs, rowsType, ri, jj);
      vstore(dps[r], grads, rowsType, ri, jj);
    }
    w_.endFor();
  });

  // 2. D = rowsum(P dP), then dS = P (dP - D) [scaled] in place of dP.
  {
    std::vector<std::string> inits(static_cast<size_t>(rows), zeros), res;
    std::string jj = w_.fresh("j");
    std::vector<std::string> partial =
        openCarryingFor(w_, jj, w_.indexConstant(0), keyEnd, kLanes, inits, vectorTypes, res);
    std::vector<std::string> next;
    for (int r = 0; r < rows; ++r) {
      std::string ri = w_.indexConstant(r);
      next.push_back(fma(vload(probs, rowsType, ri, jj), vload(grads, rowsType, ri, jj), partial[r]));
    }
    closeCarryingFor(w_, next, vectorTypes);
    std::vector<std::string> rowDots;
    for (int r = 0; r < rows; ++r)
      rowDots.push_back(splat(
          w_, w_.assign(fmt::format("vector.reduction <add>, {} : {} into f32", res[r], kVec))));
    std::string j = openSteppedFor(w_, w_.indexConstant(0), keyEnd, kLanes);
    for (int r = 0; r < rows; ++r) {
      std::string ri = w_.indexConstant(r);
      std::string centered = w_.assign(fmt::format(
          "arith.subf {}, {} : {}", vload(grads, rowsType, ri, j), rowDots[r], kVec));
      std::string ds = w_.assign(fmt::format("arith.mulf {}, {} : {}",
                                             vload(probs, rowsType, ri, j), centered, kVec));
      if (p.scaleOp == AttentionPattern::Scale::Mul)
        ds = w_.assign(fmt::format("arith.mulf {}, {} : {}", ds, scale, kVec));
      else if (p.scaleOp == AttentionPattern::Scale::Div)
        ds = w_.assign(fmt::format("arith.divf {}, {} : {}", ds, scale, kVec));
      vstore(ds, grads, rowsType, ri, j);
    }
    w_.endFor();
  }

  // 3. dQ = dS k, over the key blocks (k's rows packed), stored once.
  {
    std::string r0 = w_.beginFor(w_.indexConstant(0), w_.indexConstant(rows));
    std::string c0 = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(depthPadded), kLanes);
    vstore(zeros, dqAcc, qTileType, r0, c0);
    w_.endFor();
    w_.endFor();
  }
  forKeyBlocks(keyEnd, [&](const std::string &j0, int64_t count) {
    if (packKeyRows) {
      std::string j = w_.beginFor(w_.indexConstant(0), w_.indexConstant(count));
      std::string d = w_.beginFor(w_.indexConstant(0), w_.indexConstant(depth));
      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}",
                          load(km, keysType, addIndex(w_, j0, j), d), kRows, j, d, kRowsType));
      w_.endFor();
      w_.endFor();
    }
    std::string keysHere = minIndex(w_.indexConstant(count), subIndex(keyEnd, j0));
    // `vectors` 16-lane pieces of D at a time (the register tile's shape;
    // the last group narrower where the pieces do not divide). k's rows in
    // place: the last piece masked where D is not a multiple of 16, so no
    // load reads past k's buffer.
    auto accumulatePieces = [&](const std::string &c0, int width) {
      std::vector<std::string> columns, masks;
      for (int g = 0; g < width; ++g) {
        columns.push_back(g == 0 ? c0 : addIndex(w_, c0, w_.indexConstant(g * kLanes)));
        if (!packKeyRows && depthPadded > depth)
          masks.push_back(maskBelow(subIndex(w_.indexConstant(depth), columns[g])));
      }
      std::vector<std::string> inits, res, types(rows * width, kVec);
      for (int r = 0; r < rows; ++r)
        for (int g = 0; g < width; ++g)
          inits.push_back(vload(dqAcc, qTileType, w_.indexConstant(r), columns[g]));
      std::string jk = w_.fresh("j");
      std::vector<std::string> partial =
          openCarryingFor(w_, jk, w_.indexConstant(0), keysHere, 1, inits, types, res);
      std::string key = addIndex(w_, j0, jk);
      std::vector<std::string> keyRow;
      for (int g = 0; g < width; ++g) {
        if (packKeyRows)
          keyRow.push_back(vload(kRows, kRowsType, jk, columns[g]));
        else if (masks.empty())
          keyRow.push_back(vload(km, keysType, key, columns[g]));
        else
          keyRow.push_back(w_.assign(fmt::format(
              "vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}", km, key,
              columns[g], masks[g], zeros, keysType, kVec, kVec)));
      }
      std::vector<std::string> next;
      for (int r = 0; r < rows; ++r) {
        std::string ds = splat(w_, load(grads, rowsType, w_.indexConstant(r), key));
        for (int g = 0; g < width; ++g)
          next.push_back(fma(ds, keyRow[g], partial[r * width + g]));
      }
      closeCarryingFor(w_, next, types);
      for (int r = 0; r < rows; ++r)
        for (int g = 0; g < width; ++g)
          vstore(res[r * width + g], dqAcc, qTileType, w_.indexConstant(r), columns[g]);
    };
    forPieceGroups(w_, depthPadded / kLanes, vectors, accumulatePieces);
  });
  {
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(depthPadded), kLanes);
    std::string mask = maskBelow(subIndex(w_.indexConstant(depth), c));
    for (int r = 0; r < rows; ++r) {
      w_.line(fmt::format("scf.if {} {{", valid[r]));
      w_.indent();
      w_.pushScope();
      w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", dqm,
                          row[r], c, mask, vload(dqAcc, qTileType, w_.indexConstant(r), c), dqType,
                          kVec));
      w_.popScope();
      w_.dedent();
      w_.line("}");
    }
    w_.endFor();
  }

  // 4. dV += P^T dO (Dv along the lanes) and d(k^T) += q^T dS (keys along
  // the lanes), into the unit's outputs: out[o, l] += sum_r a[r, o] b[r, l]
  // for o < outerEnd and lanes l < laneEnd, each lane masked from laneLimit
  // on. `vectors` 16-lane pieces at a time (as the matmul's register tile):
  // the tile's rows of b for them stay in registers while o runs, so each
  // broadcast of a serves `vectors` FMAs and each o reads and writes only
  // its own output pieces.
  auto accumulateOuter = [&](const std::string &out, const std::string &outType,
                             const std::string &outerEnd, const std::string &laneEnd,
                             const std::string &laneLimit, const std::string &a,
                             const std::string &aType, const std::string &b,
                             const std::string &bType) {
    auto maskedLoad = [&](const std::string &m, const std::string &type, const std::string &r,
                          const std::string &c, const std::string &mask) {
      return w_.assign(
          fmt::format("vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}", m,
                      r, c, mask, zeros, type, kVec, kVec));
    };
    std::string l0 = openSteppedFor(w_, w_.indexConstant(0), laneEnd, kLanes * vectors);
    std::vector<std::string> ls, masks, bs;
    for (int g = 0; g < vectors; ++g) {
      ls.push_back(g == 0 ? l0 : addIndex(w_, l0, w_.indexConstant(g * kLanes)));
      masks.push_back(maskBelow(subIndex(laneLimit, ls[g])));
    }
    // Masked: the last group of pieces may start past b's columns.
    for (int r = 0; r < rows; ++r)
      for (int g = 0; g < vectors; ++g)
        bs.push_back(maskedLoad(b, bType, w_.indexConstant(r), ls[g], masks[g]));
    std::string o = w_.beginFor(w_.indexConstant(0), outerEnd);
    std::vector<std::string> accs;
    for (int g = 0; g < vectors; ++g)
      accs.push_back(maskedLoad(out, outType, o, ls[g], masks[g]));
    for (int r = 0; r < rows; ++r) {
      std::string ar = splat(w_, load(a, aType, w_.indexConstant(r), o));
      for (int g = 0; g < vectors; ++g)
        accs[g] = fma(ar, bs[r * vectors + g], accs[g]);
    }
    for (int g = 0; g < vectors; ++g)
      w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", out, o,
                          ls[g], masks[g], accs[g], outType, kVec));
    w_.endFor();
    w_.endFor();
  };
  accumulateOuter(dvm, dvType, keyEnd, w_.indexConstant(dvPadded), w_.indexConstant(dv), probs,
                  rowsType, dOTile, dOTileType);
  if (!storeKeysAlongLanes) // dK += dS^T q (D along the lanes), as dV
    accumulateOuter(dktm, dktType, keyEnd, w_.indexConstant(depthPadded), w_.indexConstant(depth),
                    grads, rowsType, qtTile, qTileType);
  else // keys past the causal end (keyEnd <= Tk) have dS = 0: masked off
    accumulateOuter(dktm, dktType, w_.indexConstant(depth), keyEnd, keyEnd, qtTile, qTileType,
                    grads, rowsType);
  w_.endFor(); // tiles

  // With fault injection (lowerGroup's perturbation) the unit perturbs the
  // elements it owns at even flat indices of the values stored (through a
  // head merge, the merged value's).
  if (perturbation_ != 0) {
    std::string delta = w_.constant(perturbation_, DType::F32);
    for (auto [m, type, mRows, cols] :
         {std::tuple{dqm, dqType, tq, depth}, std::tuple{dktm, dktType, dktRows, dktCols},
          std::tuple{dvm, dvType, tk, dv}}) {
      std::string r = w_.beginFor(w_.indexConstant(0), w_.indexConstant(mRows));
      std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(cols));
      std::string flat = flatIndexInValue(w_, m, type, r, c);
      std::string even = w_.assign(fmt::format(
          "arith.cmpi eq, {}, {} : index",
          w_.assign(fmt::format("arith.remui {}, {} : index", flat, w_.indexConstant(2))),
          w_.indexConstant(0)));
      std::string value = w_.assign(fmt::format(
          "arith.addf {}, {} : f32", load(m, type, r, c),
          w_.assign(fmt::format("arith.select {}, {}, {} : f32", even, delta, zero))));
      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", value, m, r, c, type));
      w_.endFor();
      w_.endFor();
    }
  }
  w_.endFor(); // units
}

} // namespace stepc::codegen
