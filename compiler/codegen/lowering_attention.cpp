// The Attention kernel (FusionKind::Attention, matchAttention in compiler/passes/fusion_plan.h):
// softmax(q k^T [* scale] [causal]) v without storing the scores.
//
// Per batch entry, k^T and v are copied once into stack panels padded to
// whole vectors (keys along the lanes of k^T's panel, so a query row's
// scores for 16 keys are one FMA chain over D). Per tile of query rows
// (the register tile's row count), the keys are visited 16 at a time with
// an online softmax: each row keeps its running max m and sum l, and its
// output accumulator (acc, Dv floats) is rescaled by exp(m_old - m_new)
// whenever the max grows; at the end acc / l is the row's output. A causal
// tile stops at the key block past its last row. Rows past the end of the
// range are computed as copies of the last row (same values, same thread),
// which keeps the tile's loops free of row guards.
#include "kernel_emitter.h"

#include "tiled_matmul.h"

#include <fmt/format.h>

#include <cfloat>
#include <stdexcept>

namespace stepc::codegen {

namespace {

constexpr const char *kVec = "vector<16xf32>";
constexpr int64_t kLanes = 16;

int64_t roundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

std::string addIndex(MlirWriter &w, const std::string &a, const std::string &b) {
  return w.assign(fmt::format("arith.addi {}, {} : index", a, b));
}

std::string splat(MlirWriter &w, const std::string &scalar) {
  return w.assign(fmt::format("vector.broadcast {} : f32 to {}", scalar, kVec));
}

// Opens `scf.for iv = lb to ub step step` carrying `inits` of `types`;
// returns the iteration arguments' names, and the results' in `results`.
std::vector<std::string> openCarryingFor(MlirWriter &w, const std::string &iv,
                                         const std::string &lb, const std::string &ub,
                                         int64_t step, const std::vector<std::string> &inits,
                                         const std::vector<std::string> &types,
                                         std::vector<std::string> &results) {
  std::string res = w.fresh("t");
  std::vector<std::string> args, names;
  for (size_t i = 0; i < inits.size(); ++i) {
    names.push_back(w.fresh("c"));
    args.push_back(fmt::format("{} = {}", names.back(), inits[i]));
    results.push_back(fmt::format("{}#{}", res, i));
  }
  w.line(fmt::format("{}:{} = scf.for {} = {} to {} step {} iter_args({}) -> ({}) {{", res,
                     inits.size(), iv, lb, ub, w.indexConstant(step), fmt::join(args, ", "),
                     fmt::join(types, ", ")));
  w.indent();
  w.pushScope();
  return names;
}

void closeCarryingFor(MlirWriter &w, const std::vector<std::string> &yields,
                      const std::vector<std::string> &types) {
  w.line(fmt::format("scf.yield {} : {}", fmt::join(yields, ", "), fmt::join(types, ", ")));
  w.popScope();
  w.dedent();
  w.line("}");
}

// `scf.for iv = lb to ub step step` without results; close with w.endFor().
std::string openSteppedFor(MlirWriter &w, const std::string &lb, const std::string &ub,
                           int64_t step) {
  std::string iv = w.fresh("i");
  w.line(fmt::format("scf.for {} = {} to {} step {} {{", iv, lb, ub, w.indexConstant(step)));
  w.indent();
  w.pushScope();
  return iv;
}

} // namespace

void KernelEmitter::emitAttention(ValueId output, bool parallel) {
  std::optional<AttentionPattern> p = matchAttention(g_, output);
  if (!p)
    throw std::logic_error(fmt::format("kernel {}: not an attention pattern", group_.name));
  const Shape &out = shapeOf(p->output);
  size_t rank = out.size();
  int64_t tq = out[rank - 2], dv = out[rank - 1], depth = shapeOf(p->queries).back(),
          tk = shapeOf(p->scores).back();
  int64_t tkPadded = roundUp(tk, kLanes), dvPadded = roundUp(dv, kLanes);
  int rows = registerTile().rows;

  // The operands as strided views in the output's batch space (stride 0
  // where an operand is broadcast), as matmulPlan does.
  auto inBatchSpace = [&](ValueId v) {
    auto s = stridedOperand(v, false);
    if (!s)
      throw std::logic_error(fmt::format("kernel {}: attention operand %{} is not a strided view",
                                         group_.name, v));
    const Shape &shape = shapeOf(v);
    Strides strides(rank - shape.size(), 0);
    for (size_t d = 0; d < shape.size(); ++d)
      strides.push_back(shape[d] == 1 ? 0 : s->strides[d]);
    s->strides = strides;
    return *s;
  };
  StridedOperand q = inBatchSpace(p->queries), kt = inBatchSpace(p->keysT),
                 v = inBatchSpace(p->values);
  StridedOperand o{p->output, 0, {}};
  {
    int64_t stride = 1;
    o.strides.assign(rank, 0);
    for (size_t d = rank; d-- > 0;) {
      o.strides[d] = stride;
      stride *= out[d];
    }
  }

  // Stack buffers, before any loop.
  auto stackBuffer = [&](int64_t a, int64_t b) {
    return w_.assign(fmt::format("memref.alloca() {{alignment = 64 : i64}} : memref<{}x{}xf32>",
                                 a, b));
  };
  std::string kPanel = stackBuffer(depth, tkPadded), vPanel = stackBuffer(tkPadded, dvPadded),
              acc = stackBuffer(rows, dvPadded), probs = stackBuffer(rows, kLanes);
  std::string kPanelType = fmt::format("memref<{}x{}xf32>", depth, tkPadded),
              vPanelType = fmt::format("memref<{}x{}xf32>", tkPadded, dvPadded),
              accType = fmt::format("memref<{}x{}xf32>", rows, dvPadded),
              probsType = fmt::format("memref<{}x{}xf32>", rows, kLanes);
  std::string zero = w_.constant(0, DType::F32);
  std::string zeros = w_.assign(fmt::format("arith.constant dense<0.0> : {}", kVec));

  Index batch = openLoops(Shape(out.begin(), out.end() - 2), parallel);
  // A 2-D product splits its query rows among threads.
  std::string qlo = w_.indexConstant(0), qhi = w_.indexConstant(tq);
  if (parallel && rank == 2) {
    qlo = begin_;
    qhi = end_;
  }
  auto at = [&](const StridedOperand &s, size_t d) { return s.strides[d]; };
  std::string qType, ktType, vType, oType;
  std::string qm = stridedMatrix(q, batch, tq, depth, at(q, rank - 2), at(q, rank - 1), qType);
  std::string ktm = stridedMatrix(kt, batch, depth, tk, at(kt, rank - 2), at(kt, rank - 1), ktType);
  std::string vm = stridedMatrix(v, batch, tk, dv, at(v, rank - 2), at(v, rank - 1), vType);
  std::string om = stridedMatrix(o, batch, tq, dv, dv, 1, oType);

  // The panels: k^T [D, Tk] and v [Tk, Dv], zero past the edges (a zero
  // probability times garbage could be NaN).
  {
    std::string j = w_.beginFor(w_.indexConstant(0), w_.indexConstant(tk));
    std::string d = w_.beginFor(w_.indexConstant(0), w_.indexConstant(depth));
    std::string x = w_.assign(fmt::format("memref.load {}[{}, {}] : {}", ktm, d, j, ktType));
    w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", x, kPanel, d, j, kPanelType));
    w_.endFor();
    std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(dv));
    std::string y = w_.assign(fmt::format("memref.load {}[{}, {}] : {}", vm, j, c, vType));
    w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", y, vPanel, j, c, vPanelType));
    w_.endFor();
    if (dvPadded > dv) {
      std::string c2 = w_.beginFor(w_.indexConstant(dv), w_.indexConstant(dvPadded));
      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", zero, vPanel, j, c2, vPanelType));
      w_.endFor();
    }
    w_.endFor();
  }
  if (tkPadded > tk) {
    std::string j = w_.beginFor(w_.indexConstant(tk), w_.indexConstant(tkPadded));
    std::string d = w_.beginFor(w_.indexConstant(0), w_.indexConstant(depth));
    w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", zero, kPanel, d, j, kPanelType));
    w_.endFor();
    std::string c = w_.beginFor(w_.indexConstant(0), w_.indexConstant(dvPadded));
    w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", zero, vPanel, j, c, vPanelType));
    w_.endFor();
    w_.endFor();
  }

  // Query tiles.
  std::string i0 = openSteppedFor(w_, qlo, qhi, rows);
  std::string last = w_.assign(fmt::format("arith.subi {}, {} : index", qhi, w_.indexConstant(1)));
  std::vector<std::string> row;
  for (int r = 0; r < rows; ++r)
    row.push_back(w_.assign(fmt::format("arith.minsi {}, {} : index",
                                        r == 0 ? i0 : addIndex(w_, i0, w_.indexConstant(r)),
                                        last)));
  {
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(dvPadded), kLanes);
    for (int r = 0; r < rows; ++r)
      w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", zeros, acc,
                          w_.indexConstant(r), c, accType, kVec));
    w_.endFor();
  }
  // A causal tile needs the keys up to its last row only.
  std::string keyEnd = w_.indexConstant(tk);
  if (p->causal)
    keyEnd = w_.assign(fmt::format("arith.minsi {}, {} : index",
                                   addIndex(w_, i0, w_.indexConstant(rows)), keyEnd));
  std::string lowest = w_.constant(-FLT_MAX, DType::F32);
  std::vector<std::string> inits, types;
  for (int r = 0; r < rows; ++r) {
    inits.push_back(lowest);
    types.push_back("f32");
  }
  for (int r = 0; r < rows; ++r) {
    inits.push_back(zero);
    types.push_back("f32");
  }
  std::vector<std::string> state;
  std::string j0 = w_.fresh("j");
  std::vector<std::string> carried =
      openCarryingFor(w_, j0, w_.indexConstant(0), keyEnd, kLanes, inits, types, state);

  // Scores of the tile's rows for keys [j0, j0 + 16): one FMA chain over D.
  std::vector<std::string> scores;
  {
    std::vector<std::string> vinits(static_cast<size_t>(rows), zeros), vtypes(rows, kVec), res;
    std::string d = w_.fresh("d");
    std::vector<std::string> sums =
        openCarryingFor(w_, d, w_.indexConstant(0), w_.indexConstant(depth), 1, vinits, vtypes, res);
    std::string keys = w_.assign(
        fmt::format("vector.load {}[{}, {}] : {}, {}", kPanel, d, j0, kPanelType, kVec));
    std::vector<std::string> next;
    for (int r = 0; r < rows; ++r) {
      std::string a =
          w_.assign(fmt::format("memref.load {}[{}, {}] : {}", qm, row[r], d, qType));
      next.push_back(w_.assign(fmt::format("vector.fma {}, {}, {} : {}", splat(w_, a), keys,
                                           sums[r], kVec)));
    }
    closeCarryingFor(w_, next, vtypes);
    scores = res;
  }

  // Which lanes are keys (< Tk), and with causal, which a row sees (<= row).
  std::string lanes = "arith.constant dense<[0";
  for (int l = 1; l < kLanes; ++l)
    lanes += fmt::format(", {}", l);
  lanes += "]> : vector<16xi64>";
  auto indexVector = [&](const std::string &index) {
    std::string i = w_.assign(fmt::format("arith.index_cast {} : index to i64", index));
    return w_.assign(fmt::format("vector.broadcast {} : i64 to vector<16xi64>", i));
  };
  std::string keysAt = w_.assign(
      fmt::format("arith.addi {}, {} : vector<16xi64>", indexVector(j0), w_.assign(lanes)));
  std::string isKey = w_.assign(fmt::format("arith.cmpi slt, {}, {} : vector<16xi64>", keysAt,
                                            indexVector(w_.indexConstant(tk))));
  std::string scale = splat(w_, w_.constant(p->scale, DType::F32));
  std::string fill = splat(w_, w_.constant(p->fill, DType::F32));
  std::string lowestVec = splat(w_, lowest);
  std::vector<std::string> nextMax, nextSum, rescale;
  for (int r = 0; r < rows; ++r) {
    std::string s = scores[r];
    if (p->scaleOp == AttentionPattern::Scale::Mul)
      s = w_.assign(fmt::format("arith.mulf {}, {} : {}", s, scale, kVec));
    else if (p->scaleOp == AttentionPattern::Scale::Div)
      s = w_.assign(fmt::format("arith.divf {}, {} : {}", s, scale, kVec));
    if (p->causal) {
      std::string sees = w_.assign(fmt::format("arith.cmpi sle, {}, {} : vector<16xi64>", keysAt,
                                               indexVector(row[r])));
      s = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", sees, s, fill, kVec));
    }
    s = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", isKey, s, lowestVec, kVec));
    std::string blockMax =
        w_.assign(fmt::format("vector.reduction <maximumf>, {} : {} into f32", s, kVec));
    std::string m = w_.assign(fmt::format("arith.maximumf {}, {} : f32", carried[r], blockMax));
    std::string shifted = w_.assign(fmt::format("arith.subf {}, {} : {}", s, splat(w_, m), kVec));
    std::string e = w_.assign(fmt::format("math.exp {} : {}", shifted, kVec));
    e = w_.assign(fmt::format("arith.select {}, {}, {} : vector<16xi1>, {}", isKey, e, zeros, kVec));
    std::string correction = w_.assign(fmt::format(
        "math.exp {} : f32", w_.assign(fmt::format("arith.subf {}, {} : f32", carried[r], m))));
    std::string blockSum = w_.assign(fmt::format("vector.reduction <add>, {} : {} into f32", e, kVec));
    std::string l = w_.assign(fmt::format(
        "arith.addf {}, {} : f32",
        w_.assign(fmt::format("arith.mulf {}, {} : f32", carried[rows + r], correction)), blockSum));
    w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", e, probs, w_.indexConstant(r),
                        w_.indexConstant(0), probsType, kVec));
    nextMax.push_back(m);
    nextSum.push_back(l);
    rescale.push_back(splat(w_, correction));
  }

  // acc = acc * correction + probs x v[j0 .. j0 + 16).
  {
    std::string keysLeft = w_.assign(fmt::format(
        "arith.minsi {}, {} : index",
        w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(tk), j0)),
        w_.indexConstant(kLanes)));
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(dvPadded), kLanes);
    std::vector<std::string> vinits, vtypes(rows, kVec), res;
    for (int r = 0; r < rows; ++r) {
      std::string a = w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", acc,
                                            w_.indexConstant(r), c, accType, kVec));
      vinits.push_back(w_.assign(fmt::format("arith.mulf {}, {} : {}", a, rescale[r], kVec)));
    }
    std::string j = w_.fresh("j");
    std::vector<std::string> sums =
        openCarryingFor(w_, j, w_.indexConstant(0), keysLeft, 1, vinits, vtypes, res);
    std::string values = w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", vPanel,
                                               addIndex(w_, j0, j), c, vPanelType, kVec));
    std::vector<std::string> next;
    for (int r = 0; r < rows; ++r) {
      std::string pr = w_.assign(
          fmt::format("memref.load {}[{}, {}] : {}", probs, w_.indexConstant(r), j, probsType));
      next.push_back(w_.assign(
          fmt::format("vector.fma {}, {}, {} : {}", splat(w_, pr), values, sums[r], kVec)));
    }
    closeCarryingFor(w_, next, vtypes);
    for (int r = 0; r < rows; ++r)
      w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", res[r], acc,
                          w_.indexConstant(r), c, accType, kVec));
    w_.endFor();
  }
  std::vector<std::string> yields = nextMax;
  yields.insert(yields.end(), nextSum.begin(), nextSum.end());
  closeCarryingFor(w_, yields, types);

  // The row statistics where others read them (a training step's backward
  // pass recomputes the probabilities from them): max and sum of exp(x - max).
  for (auto [id, first] : {std::pair{p->rowMax, 0}, std::pair{p->rowSum, rows}}) {
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
    for (int r = 0; r < rows; ++r)
      w_.line(fmt::format("memref.store {}, {}[{}, {}] : {}", state[first + r], view, row[r],
                          w_.indexConstant(0), type));
  }

  // The rows' outputs: acc / l.
  {
    std::string one = w_.constant(1, DType::F32);
    std::vector<std::string> inverse;
    for (int r = 0; r < rows; ++r)
      inverse.push_back(splat(
          w_, w_.assign(fmt::format("arith.divf {}, {} : f32", one, state[rows + r]))));
    std::string c = openSteppedFor(w_, w_.indexConstant(0), w_.indexConstant(dvPadded), kLanes);
    std::string mask;
    if (dvPadded > dv)
      mask = w_.assign(fmt::format(
          "vector.create_mask {} : vector<16xi1>",
          w_.assign(fmt::format("arith.subi {}, {} : index", w_.indexConstant(dv), c))));
    for (int r = 0; r < rows; ++r) {
      std::string a = w_.assign(fmt::format("vector.load {}[{}, {}] : {}, {}", acc,
                                            w_.indexConstant(r), c, accType, kVec));
      std::string result = w_.assign(fmt::format("arith.mulf {}, {} : {}", a, inverse[r], kVec));
      if (mask.empty())
        w_.line(fmt::format("vector.store {}, {}[{}, {}] : {}, {}", result, om, row[r], c, oType,
                            kVec));
      else
        w_.line(fmt::format("vector.maskedstore {}[{}, {}], {}, {} : {}, vector<16xi1>, {}", om,
                            row[r], c, mask, result, oType, kVec));
    }
    w_.endFor();
  }
  w_.endFor(); // query tiles
  closeLoops(batch.size());
}

} // namespace stepc::codegen
