// The Attention kernel (FusionKind::Attention, matchAttention in compiler/passes/fusion_plan.h):
// softmax(q k^T [* scale] [causal]) v without storing the scores.
//
// The work is split into units of one batch entry's block of query rows
// (kAttentionQueryBlock, rounded up to the register tile's rows), which run
// in parallel: batch and heads collapse into one dimension with the query
// blocks, so a batch-1 multi-head attention uses every thread. A unit walks
// the keys in blocks of kAttentionKeyBlock: it packs the block of k^T into
// a stack panel (keys along the lanes, with tiled_matmul's packing, so a
// query row's scores for 16 keys are one FMA chain over D), then each tile
// of query rows (the register tile's row count) takes the block's keys 16
// at a time with an online softmax: each row keeps its running max m and
// sum l, and its output accumulator (acc, Dv floats) is rescaled by
// exp(m_old - m_new) whenever the max grows; after the last block acc / l
// is the row's output. m, l and acc stay on the stack between blocks, so
// the stack holds one key block and one query block whatever Tk is. A
// causal unit stops at the key block past its last row, a tile at the
// 16 keys past its last row. Rows past the end of the range are computed
// as copies of the last row (same values, same unit), which keeps the
// tile's loops free of row guards. Each output element is written by one
// unit, in the order a serial run writes it, so results do not depend on
// the thread count.
#include "kernel_emitter.h"
#include "vector_loops.h"

#include "tiled_matmul.h"

#include <fmt/format.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <stdexcept>

namespace stepc::codegen {

namespace {

// The kernel's units: a batch entry's block of query rows each (the
// register tile's rows times a whole number), batch entries outside.
struct Units {
  int64_t queryBlock, queryBlocks, count;
};
Units unitsOf(const Shape &out) {
  int64_t queryBlock = roundUp(kAttentionQueryBlock, registerTile().rows);
  int64_t queryBlocks = (out[out.size() - 2] + queryBlock - 1) / queryBlock;
  int64_t count = queryBlocks;
  for (size_t d = 0; d + 2 < out.size(); ++d)
    count *= out[d];
  return {queryBlock, queryBlocks, count};
}

// The backward kernel's units: one batch entry each (it owns that entry's
// rows of dQ, d(k^T) and dV).
int64_t backwardUnits(const Shape &gradQueries) {
  int64_t count = 1;
  for (size_t d = 0; d + 2 < gradQueries.size(); ++d)
    count *= gradQueries[d];
  return count;
}

} // namespace

int64_t KernelEmitter::attentionUnits(ValueId hero) const {
  if (!matchAttention(g_, hero))
    return backwardUnits(shapeOf(hero));
  return unitsOf(shapeOf(hero)).count;
}

// The operand as a strided view in a batch space of `rank` dimensions
// (stride 0 where it is broadcast), as matmulPlan does.
KernelEmitter::StridedOperand KernelEmitter::operandInBatchSpace(ValueId v, size_t rank) const {
  auto s = stridedOperand(v, false);
  if (!s)
    throw std::logic_error(
        fmt::format("kernel {}: attention operand %{} is not a strided view", group_.name, v));
  const Shape &shape = shapeOf(v);
  Strides strides(rank - shape.size(), 0);
  for (size_t d = 0; d < shape.size(); ++d)
    strides.push_back(shape[d] == 1 ? 0 : s->strides[d]);
  s->strides = strides;
  return *s;
}

void KernelEmitter::emitAttention(ValueId output, bool parallel) {
  std::optional<AttentionPattern> p = matchAttention(g_, output);
  if (!p) {
    emitAttentionBackward(output, parallel);
    return;
  }
  const Shape &out = shapeOf(p->output);
  size_t rank = out.size();
  int64_t tq = out[rank - 2], dv = out[rank - 1], depth = shapeOf(p->queries).back(),
          tk = shapeOf(p->scores).back();
  int64_t dvPadded = roundUp(dv, kLanes);
  int rows = registerTile().rows;
  // Keys per online-softmax step: as many 16-lane vectors per row as the
  // matmul's register tile has (its accumulators fit the registers), so
  // each step's reductions and rescaling serve more keys.
  int maxVectors = registerTile().vectors;
  int64_t maxStep = kLanes * maxVectors;
  // Key and row indices are compared as i32 lanes.
  if (std::max(tk, tq) > INT32_MAX - maxStep)
    throw std::invalid_argument(fmt::format(
        "kernel {}: attention over {} keys and {} queries, more than i32 lane indices hold",
        group_.name, tk, tq));
  if (kAttentionKeyBlock % maxStep != 0)
    throw std::logic_error(fmt::format("kernel {}: key block {} is no multiple of the step {}",
                                       group_.name, kAttentionKeyBlock, maxStep));
  Units units = unitsOf(out);
  int64_t keyBlock = kAttentionKeyBlock, queryBlock = units.queryBlock,
          queryBlocks = units.queryBlocks;
  Shape batchShape(out.begin(), out.end() - 2);

  auto inBatchSpace = [&](ValueId v) { return operandInBatchSpace(v, rank); };
  StridedOperand q = inBatchSpace(p->queries), kt = inBatchSpace(p->keysT),
                 v = inBatchSpace(p->values);
  // The output goes where the kernel stores it: itself, or the head merge
  // after it (attentionStore), with stride 1 along Dv.
  AttentionStore stored = attentionStore(g_, group_.nodes, p->output);
  StridedOperand o{stored.stored, 0, stored.strides};
  // v's rows are read in place with vector loads where they are contiguous,
  // else each key block of v is copied to a panel too.
  bool packValues = dv > 1 && v.strides[rank - 1] != 1;

  // Stack buffers, before any loop.
  auto stackBuffer = [&](const std::string &type) {
    return w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : {}", type));
  };
  std::string kPanelType = fmt::format("memref<{}x{}xf32>", depth, keyBlock),
              vPanelType = fmt::format("memref<{}x{}xf32>", keyBlock, dvPadded),
              accType = fmt::format("memref<{}x{}xf32>", queryBlock, dvPadded),
              statsType = fmt::format("memref<{}xf32>", queryBlock),
              sumsType = fmt::format("memref<{}x{}xf32>", queryBlock, kLanes),
              probsType = fmt::format("memref<{}x{}xf32>", rows, maxStep);
  std::string kPanel = stackBuffer(kPanelType), acc = stackBuffer(accType),
              maxes = stackBuffer(statsType), sums = stackBuffer(sumsType),
              probs = stackBuffer(probsType), vPanel;
  std::string zero = w_.constant(0, DType::F32);
  std::string zeros = w_.assign(fmt::format("arith.constant dense<0.0> : {}", kVec));
  std::string lowest = w_.constant(-FLT_MAX, DType::F32);
  // The panels start zeroed: a tail block leaves lanes past Tk as they were
  // (their scores are masked), and v's columns past Dv are read into acc
  // lanes that are never stored, but a zero probability times garbage could
  // still be a NaN in a lane that is.
  auto zeroPanel = [&](const std::string &panel, const std::string &type, int64_t panelRows,
                       int64_t panelCols) {
    std::string r = w_.beginFor(w_.indexConstant(0), w_.indexConstant(panelRows));
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(panelCols), kLanes);
    w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", zeros, panel, r, c, type, kVec));
    w_.endFor();
    w_.endFor();
  };
  zeroPanel(kPanel, kPanelType, depth, keyBlock);
  if (packValues) {
    vPanel = stackBuffer(vPanelType);
    zeroPanel(vPanel, vPanelType, keyBlock, dvPadded);
  }

  // Units [lo, hi): (batch entry, query block) pairs.
  std::string unit = w_.beginFor(parallel ? begin_ : w_.indexConstant(0),
                                 parallel ? end_ : w_.indexConstant(units.count));
  std::string flatBatch = w_.assign(fmt::format("arith.divui {}, {} : index", unit,
                                                w_.indexConstant(queryBlocks)));
  Index batch = batchShape.empty() ? Index{} : delinearize(flatBatch, batchShape);
  std::string q0 = w_.assign(fmt::format(
      "arith.muli {}, {} : index",
      w_.assign(fmt::format("arith.remui {}, {} : index", unit, w_.indexConstant(queryBlocks))),
      w_.indexConstant(queryBlock)));
  std::string qEnd = w_.assign(fmt::format("arith.minsi {}, {} : index",
                                           addIndex(w_, q0, w_.indexConstant(queryBlock)),
                                           w_.indexConstant(tq)));
  std::string last = w_.assign(fmt::format("arith.subi {}, {} : index", qEnd, w_.indexConstant(1)));

  auto at = [&](const StridedOperand &s, size_t d) { return s.strides[d]; };
  // An index in all 16 lanes of an i32 vector.
  auto splatIndex32 = [&](const std::string &index) {
    std::string i = w_.assign(fmt::format("arith.index_cast {} : index to i32", index));
    return w_.assign(fmt::format("vector.broadcast {} : i32 to vector<16xi32>", i));
  };
  // The larger of two vectors. Scores that are NaN make the row's sum, and
  // so its output, NaN whichever max is taken, so the max need not
  // propagate them (maxnumf without NaN checks: one vmaxps).
  auto maxOf = [&](const std::string &a, const std::string &b, const std::string &type) {
    return w_.assign(fmt::format("arith.maxnumf {}, {} fastmath<nnan> : {}", a, b, type));
  };
  std::string qType, keysType, vType, oType;
  std::string qm = stridedMatrix(q, batch, tq, depth, at(q, rank - 2), at(q, rank - 1), qType);
  // k^T [D, Tk] read as k [Tk, D]: B^T of the scores' product, as packB reads it.
  std::string keys =
      stridedMatrix(kt, batch, tk, depth, at(kt, rank - 1), at(kt, rank - 2), keysType);
  std::string vm = stridedMatrix(v, batch, tk, dv, at(v, rank - 2), at(v, rank - 1), vType);
  std::string om = stridedMatrix(o, batch, tq, dv, at(o, rank - 2), at(o, rank - 1), oType);

  // The unit's rows start with m = lowest, l = 0, acc = 0.
  {
    std::string r = w_.beginFor(w_.indexConstant(0), w_.indexConstant(queryBlock));
    w_.line(fmt::format("memref.store {}, {}[{}] : {}", lowest, maxes, r, statsType));
    w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", zeros, sums, r,
                        w_.indexConstant(0), sumsType, kVec));
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(dvPadded), kLanes);
    w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", zeros, acc, r, c, accType, kVec));
    w_.endFor();
    w_.endFor();
  }
  // A causal unit needs the keys up to its last row only.
  std::string keyEnd = w_.indexConstant(tk);
  if (p->causal)
    keyEnd = w_.assign(fmt::format("arith.minsi {}, {} : index", qEnd, keyEnd));

  // Row r of the tile at i0: its row of the output (clamped to the unit's
  // last) and of the unit's buffers.
  auto tileRows = [&](const std::string &i0, std::vector<std::string> &row,
                      std::vector<std::string> &local) {
    std::string first = w_.assign(fmt::format("arith.subi {}, {} : index", i0, q0));
    for (int r = 0; r < rows; ++r) {
      row.push_back(w_.assign(fmt::format("arith.minsi {}, {} : index",
                                          r == 0 ? i0 : addIndex(w_, i0, w_.indexConstant(r)),
                                          last)));
      local.push_back(r == 0 ? first : addIndex(w_, first, w_.indexConstant(r)));
    }
  };
  // Each row carries its max m (f32) and its sum l as 16 lane partial sums
  // (added up once, after the last block: no reduction per step).
  std::vector<std::string> types(rows, "f32");
  types.insert(types.end(), rows, kVec);
  // Lane indices as i32: one compare per 16 lanes (i64 lanes take two).
  auto laneIndices32 = [&](const std::string &base) {
    std::string lanes = "arith.constant dense<[0";
    for (int l = 1; l < kLanes; ++l)
      lanes += fmt::format(", {}", l);
    return w_.assign(fmt::format("arith.addi {}, {} : vector<16xi32>", splatIndex32(base),
                                 w_.assign(lanes + "]> : vector<16xi32>")));
  };

  // One key block [j0, j0 + count), packed, through every tile of the unit.
  auto keyBlockThroughTiles = [&](const std::string &j0, int64_t count) {
    emitPackColumns(w_, keys, keysType, depth, at(kt, rank - 2) == 1, kPanel, kPanelType, j0,
                    count);
    if (packValues) {
      std::string j = w_.beginFor(w_.indexConstant(0), w_.indexConstant(count));
      std::string key = addIndex(w_, j0, j);
      std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(dv));
      std::string y = w_.assign(fmt::format("memref.load {}[{}, {}] : {}", vm, key, c, vType));
      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", y, vPanel, j, c, vPanelType));
      w_.endFor();
      w_.endFor();
    }
    std::string blockEnd = addIndex(w_, j0, w_.indexConstant(count));
    std::string i0 = openSteppedFor(w_, q0, qEnd, rows);
    std::vector<std::string> row, local;
    tileRows(i0, row, local);
    // A causal tile needs the keys up to its last row only.
    std::string tileKeyEnd = blockEnd;
    if (p->causal)
      tileKeyEnd = w_.assign(fmt::format("arith.minsi {}, {} : index",
                                         addIndex(w_, i0, w_.indexConstant(rows)), blockEnd));
    std::vector<std::string> rowsAsLanes;
    if (p->causal)
      for (int r = 0; r < rows; ++r)
        rowsAsLanes.push_back(splatIndex32(row[r]));
    // The rows' m and l, from the unit's buffers and back.
    auto loadState = [&] {
      std::vector<std::string> state;
      for (int r = 0; r < rows; ++r)
        state.push_back(
            w_.assign(fmt::format("memref.load {}[{}] : {}", maxes, local[r], statsType)));
      for (int r = 0; r < rows; ++r)
        state.push_back(w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", sums, local[r],
                                              w_.indexConstant(0), sumsType, kVec)));
      return state;
    };
    auto storeState = [&](const std::vector<std::string> &state) {
      for (int r = 0; r < rows; ++r) {
        w_.line(fmt::format("memref.store {}, {}[{}] : {}", state[r], maxes, local[r], statsType));
        w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", state[rows + r], sums,
                            local[r], w_.indexConstant(0), sumsType, kVec));
      }
    };

    // One online-softmax step: keys [jj, jj + 16 * vectors) of the tile's
    // rows, from state `carried`; returns the next state.
    auto softmaxStep = [&](const std::string &jj, int vectors,
                           const std::vector<std::string> &carried) {
      int64_t step = kLanes * vectors;
      bool maskKeys = tk % step != 0;
      std::string panelColumn = w_.assign(fmt::format("arith.subi {}, {} : index", jj, j0));

      // Scores of the tile's rows for keys [jj, jj + step): `vectors` FMA
      // chains over D per row, as the matmul's register tile.
      std::vector<std::vector<std::string>> scores(rows);
      {
        std::vector<std::string> vinits(static_cast<size_t>(rows * vectors), zeros),
            vtypes(rows * vectors, kVec), res;
        std::string d = w_.fresh("d");
        std::vector<std::string> partial = openCarryingFor(
            w_, d, w_.indexConstant(0), w_.indexConstant(depth), 1, vinits, vtypes, res);
        std::vector<std::string> keyLanes;
        for (int g = 0; g < vectors; ++g)
          keyLanes.push_back(w_.assign(fmt::format(
              "vector.load {}[{}, {}] : {}, {}", kPanel, d,
              g == 0 ? panelColumn : addIndex(w_, panelColumn, w_.indexConstant(g * kLanes)),
              kPanelType, kVec)));
        std::vector<std::string> next;
        for (int r = 0; r < rows; ++r) {
          std::string a = splat(
              w_, w_.assign(fmt::format("memref.load {}[{}, {}] : {}", qm, row[r], d, qType)));
          for (int g = 0; g < vectors; ++g)
            next.push_back(w_.assign(fmt::format("vector.fma {}, {}, {} : {}", a, keyLanes[g],
                                                 partial[r * vectors + g], kVec)));
        }
        closeCarryingFor(w_, next, vtypes);
        for (int r = 0; r < rows; ++r)
          scores[r].assign(res.begin() + r * vectors, res.begin() + (r + 1) * vectors);
      }

      // Which lanes are keys (< Tk), and with causal, which a row sees (<= row).
      std::vector<std::string> keysAt, isKey;
      if (maskKeys || p->causal)
        for (int g = 0; g < vectors; ++g)
          keysAt.push_back(laneIndices32(
              g == 0 ? jj : addIndex(w_, jj, w_.indexConstant(g * kLanes))));
      if (maskKeys)
        for (int g = 0; g < vectors; ++g)
          isKey.push_back(w_.assign(fmt::format("arith.cmpi slt, {}, {} : vector<16xi32>",
                                                keysAt[g], splatIndex32(w_.indexConstant(tk)))));
      std::string scale = splat(w_, w_.constant(p->scale, DType::F32));
      std::string fill = splat(w_, w_.constant(p->fill, DType::F32));
      std::string lowestVec = splat(w_, lowest);
      // Each row's scores (scaled, masked) and new max.
      std::vector<std::vector<std::string>> rowScores;
      std::vector<std::string> nextMax;
      for (int r = 0; r < rows; ++r) {
        std::vector<std::string> s = scores[r];
        std::string rowMax;
        for (int g = 0; g < vectors; ++g) {
          if (p->scaleOp == AttentionPattern::Scale::Mul)
            s[g] = w_.assign(fmt::format("arith.mulf {}, {} : {}", s[g], scale, kVec));
          else if (p->scaleOp == AttentionPattern::Scale::Div)
            s[g] = w_.assign(fmt::format("arith.divf {}, {} : {}", s[g], scale, kVec));
          if (p->causal) {
            std::string sees = w_.assign(fmt::format("arith.cmpi sle, {}, {} : vector<16xi32>",
                                                     keysAt[g], rowsAsLanes[r]));
            s[g] = w_.assign(
                fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", sees, s[g], fill, kVec));
          }
          if (maskKeys)
            s[g] = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", isKey[g],
                                         s[g], lowestVec, kVec));
          rowMax = g == 0 ? s[g] : maxOf(rowMax, s[g], kVec);
        }
        // The max over the step's keys and the running max in one reduction.
        nextMax.push_back(w_.assign(fmt::format(
            "vector.reduction <maxnumf>, {} fastmath<nnan> : {} into f32",
            maxOf(rowMax, splat(w_, carried[r]), kVec), kVec)));
        rowScores.push_back(s);
      }
      // The rows' corrections exp(m_old - m_new), 16 rows per vector exp
      // (lanes past the rows take exp(0)).
      std::vector<std::string> rescale;
      for (int r0 = 0; r0 < rows; r0 += static_cast<int>(kLanes)) {
        std::string shifts = zeros;
        int count = std::min(static_cast<int>(kLanes), rows - r0);
        for (int r = 0; r < count; ++r)
          shifts = w_.assign(fmt::format(
              "vector.insert {}, {} [{}] : f32 into {}",
              w_.assign(fmt::format("arith.subf {}, {} : f32", carried[r0 + r], nextMax[r0 + r])),
              shifts, r, kVec));
        std::string corrections = w_.assign(fmt::format("math.exp {} : {}", shifts, kVec));
        for (int r = 0; r < count; ++r)
          rescale.push_back(splat(
              w_, w_.assign(fmt::format("vector.extract {}[{}] : f32 from {}", corrections, r,
                                        kVec))));
      }
      // Probabilities exp(s - m) to the probs buffer, and l = l * correction
      // + their sum.
      std::vector<std::string> nextSum;
      for (int r = 0; r < rows; ++r) {
        std::string mVec = splat(w_, nextMax[r]);
        std::string l =
            w_.assign(fmt::format("arith.mulf {}, {} : {}", carried[rows + r], rescale[r], kVec));
        for (int g = 0; g < vectors; ++g) {
          std::string e = w_.assign(fmt::format(
              "math.exp {} : {}",
              w_.assign(fmt::format("arith.subf {}, {} : {}", rowScores[r][g], mVec, kVec)),
              kVec));
          if (maskKeys)
            e = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", isKey[g], e,
                                      zeros, kVec));
          l = w_.assign(fmt::format("arith.addf {}, {} : {}", l, e, kVec));
          w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", e, probs, w_.indexConstant(r),
                              w_.indexConstant(g * kLanes), probsType, kVec));
        }
        nextSum.push_back(l);
      }

      // acc = acc * correction + probs x v[jj .. jj + step): `maxVectors` 16-lane
      // pieces of Dv at a time (the last group narrower where the pieces do
      // not divide), over the step's keys the tile sees (a causal tile's
      // later keys have probability 0). v's rows in place (the last piece
      // masked where Dv is not a multiple of 16, so no load reads past v's
      // buffer) or from the panel.
      std::string keysHere = w_.assign(fmt::format(
          "arith.minsi {}, {} : index",
          w_.assign(fmt::format("arith.subi {}, {} : index", tileKeyEnd, jj)),
          w_.indexConstant(step)));
      auto accumulateValues = [&](const std::string &c0, int width) {
        std::vector<std::string> columns, masks;
        for (int g = 0; g < width; ++g) {
          columns.push_back(g == 0 ? c0 : addIndex(w_, c0, w_.indexConstant(g * kLanes)));
          if (!packValues && dvPadded > dv)
            masks.push_back(w_.assign(fmt::format(
                "vector.create_mask {} : vector<16xi1>",
                w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(dv),
                                      columns[g])))));
        }
        std::vector<std::string> vinits, vtypes(rows * width, kVec), res;
        for (int r = 0; r < rows; ++r)
          for (int g = 0; g < width; ++g) {
            std::string a = w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", acc, local[r],
                                                  columns[g], accType, kVec));
            vinits.push_back(w_.assign(fmt::format("arith.mulf {}, {} : {}", a, rescale[r], kVec)));
          }
        std::string j = w_.fresh("j");
        std::vector<std::string> partial =
            openCarryingFor(w_, j, w_.indexConstant(0), keysHere, 1, vinits, vtypes, res);
        std::vector<std::string> values;
        for (int g = 0; g < width; ++g) {
          if (packValues)
            values.push_back(w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", vPanel,
                                                   addIndex(w_, panelColumn, j), columns[g],
                                                   vPanelType, kVec)));
          else if (masks.empty())
            values.push_back(w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", vm,
                                                   addIndex(w_, jj, j), columns[g], vType, kVec)));
          else
            values.push_back(w_.assign(fmt::format(
                "vector.maskedload {}[{}, {}], {}, {} : {}, vector<16xi1>, {} into {}", vm,
                addIndex(w_, jj, j), columns[g], masks[g], zeros, vType, kVec, kVec)));
        }
        std::vector<std::string> next;
        for (int r = 0; r < rows; ++r) {
          std::string pr = splat(w_, w_.assign(fmt::format(
                                         "memref.load {}[{}, {}] : {}", probs,
                                         w_.indexConstant(r), j, probsType)));
          for (int g = 0; g < width; ++g)
            next.push_back(w_.assign(fmt::format("vector.fma {}, {}, {} : {}", pr, values[g],
                                                 partial[r * width + g], kVec)));
        }
        closeCarryingFor(w_, next, vtypes);
        for (int r = 0; r < rows; ++r)
          for (int g = 0; g < width; ++g)
            w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", res[r * width + g], acc,
                                local[r], columns[g], accType, kVec));
      };
      forPieceGroups(w_, dvPadded / kLanes, maxVectors, accumulateValues);

      std::vector<std::string> next = nextMax;
      next.insert(next.end(), nextSum.begin(), nextSum.end());
      return next;
    };

    // Steps of registerTile().vectors x 16 keys; where 16 or fewer keys
    // are left after them (a causal tile's last keys, a short tail block),
    // one step of 16 rather than a wider one mostly masked.
    // The span is clamped at 0: a tile whose keys end before j0 (none with
    // today's blocks) takes no step rather than a wrapped count of them.
    std::string wideEnd = tileKeyEnd;
    if (maxVectors > 1) {
      std::string span = w_.assign(fmt::format(
          "arith.subi {}, {} : index",
          w_.assign(fmt::format("arith.maxui {}, {} : index", tileKeyEnd, j0)), j0));
      wideEnd = addIndex(
          w_, j0,
          w_.assign(fmt::format(
              "arith.muli {}, {} : index",
              w_.assign(fmt::format("arith.divui {}, {} : index",
                                    addIndex(w_, span, w_.indexConstant(kLanes - 1)),
                                    w_.indexConstant(maxStep))),
              w_.indexConstant(maxStep))));
    }
    std::vector<std::string> state;
    std::string jj = w_.fresh("j");
    std::vector<std::string> carried =
        openCarryingFor(w_, jj, j0, wideEnd, maxStep, loadState(), types, state);
    closeCarryingFor(w_, softmaxStep(jj, maxVectors, carried), types);
    storeState(state);
    if (maxVectors > 1) {
      w_.line(fmt::format("scf.if {} {{", w_.assign(fmt::format("arith.cmpi slt, {}, {} : index",
                                                               wideEnd, tileKeyEnd))));
      w_.indent();
      w_.pushScope();
      storeState(softmaxStep(wideEnd, 1, loadState()));
      w_.popScope();
      w_.dedent();
      w_.line("}");
    }
    w_.endFor(); // tiles
  };

  // Whole key blocks (up to the causal end), then the last, shorter block
  // of Tk where it is not a multiple of the block and the unit reaches it.
  int64_t wholeEnd = tk / keyBlock * keyBlock;
  if (wholeEnd > 0) {
    std::string blocksEnd = w_.assign(fmt::format("arith.minsi {}, {} : index", keyEnd,
                                                  w_.indexConstant(wholeEnd)));
    std::string j0 = openSteppedFor(w_, w_.indexConstant(0), blocksEnd, keyBlock);
    keyBlockThroughTiles(j0, keyBlock);
    w_.endFor();
  }
  if (tk > wholeEnd) {
    w_.line(fmt::format("scf.if {} {{",
                        w_.assign(fmt::format("arith.cmpi sgt, {}, {} : index", keyEnd,
                                              w_.indexConstant(wholeEnd)))));
    w_.indent();
    w_.pushScope();
    keyBlockThroughTiles(w_.indexConstant(wholeEnd), tk - wholeEnd);
    w_.popScope();
    w_.dedent();
    w_.line("}");
  }

  // Each row's output, acc / l, and its statistics where others read them
  // (a training step's backward pass recomputes the probabilities from
  // them): max and sum of exp(x - max). With fault injection (lowerGroup's
  // perturbation) the unit perturbs what it stores, so no other thread
  // touches its elements: those at even flat indices of the values stored
  // (through a head merge, the merged value's).
  std::string delta = w_.constant(perturbation_, DType::F32);
  auto perturbed = [&](const std::string &value, const std::string &flat) {
    std::string even = w_.assign(fmt::format(
        "arith.cmpi eq, {}, {} : index",
        w_.assign(fmt::format("arith.remui {}, {} : index", flat, w_.indexConstant(2))),
        w_.indexConstant(0)));
    return w_.assign(fmt::format(
        "arith.addf {}, {} : f32", value,
        w_.assign(fmt::format("arith.select {}, {}, {} : f32", even, delta, zero))));
  };
  std::string i0 = openSteppedFor(w_, q0, qEnd, rows);
  std::vector<std::string> row, local;
  tileRows(i0, row, local);
  std::vector<std::string> rowMax, rowSum;
  for (int r = 0; r < rows; ++r) {
    rowMax.push_back(w_.assign(fmt::format("memref.load {}[{}] : {}", maxes, local[r], statsType)));
    rowSum.push_back(w_.assign(fmt::format(
        "vector.reduction <add>, {} : {} into f32",
        w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", sums, local[r],
                              w_.indexConstant(0), sumsType, kVec)),
        kVec)));
  }
  for (auto [id, values] : {std::pair{p->rowMax, &rowMax}, std::pair{p->rowSum, &rowSum}}) {
    if (!usedOutside_[id])
      continue;
    StridedOperand stats{id, 0, {}};
    stats.strides.assign(rank, 1);
    int64_t stride = tq;
    for (size_t d = rank - 2; d-- > 0;) {
      stats.strides[d] = stride;
      stride *= out[d];
    }
    std::string type;
    std::string view = stridedMatrix(stats, batch, tq, 1, 1, 1, type);
    for (int r = 0; r < rows; ++r) {
      std::string value = (*values)[r];
      if (perturbation_ != 0)
        value = perturbed(value, flatIndexInValue(w_, view, type, row[r], w_.indexConstant(0)));
      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", value, view, row[r],
                          w_.indexConstant(0), type));
    }
  }
  {
    std::string one = w_.constant(1, DType::F32);
    std::vector<std::string> inverse;
    for (int r = 0; r < rows; ++r)
      inverse.push_back(
          splat(w_, w_.assign(fmt::format("arith.divf {}, {} : f32", one, rowSum[r]))));
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(dvPadded), kLanes);
    std::string mask;
    if (dvPadded > dv)
      mask = w_.assign(fmt::format(
          "vector.create_mask {} : vector<16xi1>",
          w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(dv), c))));
    for (int r = 0; r < rows; ++r) {
      std::string a = w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", acc, local[r], c,
                                            accType, kVec));
      std::string result = w_.assign(fmt::format("arith.mulf {}, {} : {}", a, inverse[r], kVec));
      if (perturbation_ != 0) {
        // Lane l is the element at flat index flat + l (Dv at unit stride).
        std::string flat = flatIndexInValue(w_, om, oType, row[r], c);
        std::string lanesParity = laneIndices(
            w_, w_.assign(fmt::format("arith.remui {}, {} : index", flat, w_.indexConstant(2))));
        std::string two = w_.assign("arith.constant dense<2> : vector<16xi64>");
        std::string odd = w_.assign(fmt::format("arith.remui {}, {} : vector<16xi64>",
                                                lanesParity, two));
        std::string even = w_.assign(fmt::format(
            "arith.cmpi eq, {}, {} : vector<16xi64>", odd,
            w_.assign("arith.constant dense<0> : vector<16xi64>")));
        result = w_.assign(fmt::format(
            "arith.addf {}, {} : {}", result,
            w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", even,
                                  splat(w_, delta), zeros, kVec)),
            kVec));
      }
      if (mask.empty())
        w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", result, om, row[r], c, oType,
                            kVec));
      else
        w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", om,
                            row[r], c, mask, result, oType, kVec));
    }
    w_.endFor();
  }
  w_.endFor(); // output tiles
  w_.endFor(); // units
}

} // namespace stepc::codegen
