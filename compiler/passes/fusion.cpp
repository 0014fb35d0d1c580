// Fusion: partitions a graph into kernels (FusionGroups).
//
// Every node that is no source (input, param) and no inlined constant
// (constant, iota) starts as a kernel of its own; groups then merge greedily:
//   1. producer -> consumer, over every edge in program order, until nothing
//      changes: loop fusion (elementwise chains), reduction input fusion
//      (elementwise producers into the reduction reading them), reduction
//      epilogues (what only needs the reduced value, broadcast back or not),
//      and matmul/conv epilogues (bias, activation, scale, an optimizer's
//      update of the weight whose gradient the matmul computes);
//   2. siblings: groups that read a common value and iterate over the same
//      space become one multi-output kernel (a parameter and its moments);
//   3. producer -> consumer once more, for what step 2 made possible.
// A merge happens only when ShouldFuse() says yes. It checks that the merged
// node set is still one kernel that codegen can emit (the contract is in
// compiler/passes/fusion_plan.h) and that the kernel graph stays acyclic. Every "no"
// carries the rule that said it, which --why-not-fused prints.
//
// Nothing is ever duplicated: each node is in exactly one group. A producer
// that also feeds other kernels can still join its consumer; it then becomes
// one more output of the merged kernel, so it is written once and never
// recomputed. (XLA duplicates cheap producers into several consumers instead;
// we keep "one node, one kernel" because the report, the buffer plan and the
// oracle test all rely on it.)
#include "fusion_plan.h"

#include "stepc/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <stdexcept>
#include <tuple>

namespace stepc {

std::string_view fusionKindName(FusionKind kind) {
  switch (kind) {
  case FusionKind::Single: return "single";
  case FusionKind::Loop: return "loop";
  case FusionKind::Reduction: return "reduction";
  case FusionKind::Epilogue: return "epilogue";
  case FusionKind::MultiOutput: return "multi-output";
  case FusionKind::Attention: return "attention";
  }
  return "?";
}

namespace {

// A scalar f32 constant's value.
std::optional<double> scalarConstant(const Graph &g, ValueId v) {
  const Node &n = g.node(v);
  if (n.op != OpKind::Constant || !n.attrs.has("value") || n.type.numel() != 1 ||
      n.type.dtype != DType::F32)
    return std::nullopt;
  return n.attrs.getReal("value");
}

// Whether bool `mask` [Tq, Tk] is true exactly where key j <= query i (the
// keys each query sees) or, with `hidden`, exactly where j > i (the keys it
// must not see: PyTorch's masked_fill(~tril, -inf) exports as that mask).
bool isCausalMask(const Graph &g, ValueId mask, bool hidden) {
  const Node &n = g.node(mask);
  if (n.type.dtype != DType::Bool || n.type.rank() != 2)
    return false;
  int64_t rows = n.type.shape[0], cols = n.type.shape[1];
  if (n.op == OpKind::Constant) {
    if (n.attrs.has("value")) // all visible or all hidden: only causal when 1x1 and true
      return rows == 1 && cols == 1 && (n.attrs.getReal("value") != 0) != hidden;
    // (a list of integers from text, of reals from the builder's constantData)
    std::vector<double> data = n.attrs.getReals("data");
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        if ((data[static_cast<size_t>(i * cols + j)] != 0) != ((j <= i) != hidden))
          return false;
    return true;
  }
  auto iotaAxis = [&](ValueId v) -> int64_t {
    const Node &iota = g.node(v);
    // An integer iota: a narrower or float one wraps or rounds past its
    // range, and the comparison is no longer j <= i.
    if (iota.op != OpKind::Iota || iota.type.shape != n.type.shape ||
        (iota.type.dtype != DType::I32 && iota.type.dtype != DType::I64))
      return -1;
    return iota.attrs.getInt("axis");
  };
  if (n.operands.size() != 2)
    return false;
  int64_t a = iotaAxis(n.operands[0]), b = iotaAxis(n.operands[1]);
  bool keyFirst = a == 1 && b == 0, queryFirst = a == 0 && b == 1;
  if (hidden) // j > i
    return (n.op == OpKind::Gt && keyFirst) || (n.op == OpKind::Lt && queryFirst);
  return (n.op == OpKind::Le && keyFirst) || (n.op == OpKind::Ge && queryFirst); // j <= i
}

// Whether `v` reduces the last axis of `of` with keepdims.
bool reducesLastAxis(const Graph &g, ValueId v, OpKind op, ValueId of) {
  const Node &n = g.node(v);
  if (n.op != op || n.operands[0] != of)
    return false;
  const std::vector<int64_t> &axes = n.attrs.getInts("axes");
  int64_t rank = g.type(of).rank();
  return axes.size() == 1 && (axes[0] == rank - 1 || axes[0] == -1) &&
         n.attrs.getInt("keepdims") == 1;
}

// X of an attention pattern ([select(causal, ] scores [* scale | / scale]
// [, fill)], AttentionPattern): fills p's scores, operands, scale and mask
// and adds the select, scale and scores to p.computed.
bool matchScores(const Graph &g, ValueId x, AttentionPattern &p) {
  const Shape &space = g.type(x).shape;
  ValueId y = x;
  if (const Node &sel = g.node(x); sel.op == OpKind::Select) {
    // select(sees, scores, fill), or select(hides, fill, scores) as exported
    // from masked_fill.
    ValueId mask = sel.operands[0];
    auto fill = scalarConstant(g, sel.operands[2]);
    y = sel.operands[1];
    bool causal = fill && isCausalMask(g, mask, false);
    if (!causal) {
      fill = scalarConstant(g, sel.operands[1]);
      y = sel.operands[2];
      causal = fill && isCausalMask(g, mask, true);
    }
    // Masked scores must vanish in the softmax (fusion_plan.h): a fill such as
    // 0 is a different function, which the split kernels compute.
    if (!causal || *fill > kAttentionLargestFill ||
        g.type(mask).shape != Shape(space.end() - 2, space.end()))
      return false;
    p.causal = true;
    p.fill = *fill;
    p.computed.push_back(y);
    p.mask = mask;
  }
  ValueId scores = y;
  if (const Node &scale = g.node(y); scale.op == OpKind::Mul || scale.op == OpKind::Div) {
    size_t other = 0; // the scores' operand
    std::optional<double> c = scalarConstant(g, scale.operands[1]);
    if (!c && scale.op == OpKind::Mul) {
      c = scalarConstant(g, scale.operands[0]);
      other = 1;
    }
    if (!c)
      return false;
    p.scaleOp = scale.op == OpKind::Mul ? AttentionPattern::Scale::Mul : AttentionPattern::Scale::Div;
    p.scale = *c;
    scores = scale.operands[other];
  }
  const Node &mm = g.node(scores);
  if (mm.op != OpKind::MatMul || mm.type.shape != space || mm.type.dtype != DType::F32)
    return false;
  p.scores = scores;
  p.computed.push_back(scores);
  p.queries = mm.operands[0];
  p.keysT = mm.operands[1];
  return true;
}

} // namespace

std::optional<AttentionPattern> matchAttention(const Graph &g, ValueId output) {
  const Node &out = g.node(output);
  if (out.op != OpKind::MatMul || out.type.dtype != DType::F32 || out.type.rank() < 2)
    return std::nullopt;
  AttentionPattern p;
  p.output = output;
  p.values = out.operands[1];
  ValueId probs = out.operands[0];
  const Node &div = g.node(probs);
  if (div.op != OpKind::Div)
    return std::nullopt;
  ValueId e = div.operands[0], sum = div.operands[1];
  if (!reducesLastAxis(g, sum, OpKind::ReduceSum, e) || g.node(e).op != OpKind::Exp)
    return std::nullopt;
  ValueId shifted = g.node(e).operands[0];
  const Node &sub = g.node(shifted);
  if (sub.op != OpKind::Sub)
    return std::nullopt;
  ValueId x = sub.operands[0], max = sub.operands[1];
  if (!reducesLastAxis(g, max, OpKind::ReduceMax, x))
    return std::nullopt;
  p.computed = {output, probs, sum, e, shifted, max, x};
  p.rowMax = max;
  p.rowSum = sum;
  // The shapes: x is [..., Tq, Tk] and every elementwise node keeps it.
  const Shape &space = g.type(x).shape;
  if (g.type(probs).shape != space || g.type(e).shape != space || g.type(shifted).shape != space ||
      g.type(x).dtype != DType::F32)
    return std::nullopt;
  if (!matchScores(g, x, p))
    return std::nullopt;
  // The output's batch dimensions are the scores' (values broadcast into them).
  const Shape &o = out.type.shape;
  // No keys: the softmax divides 0 by 0 where the product over no keys is 0.
  if (o.size() != space.size() || !std::equal(o.begin(), o.end() - 1, space.begin()) ||
      g.type(p.values).rank() > out.type.rank() || space.back() == 0)
    return std::nullopt;
  // The kernel's stack buffers: a key block of k^T and v, a query block's
  // accumulators (fusion_plan.h).
  auto padded = [](int64_t n) { return (n + 15) / 16 * 16; };
  int64_t depth = padded(g.type(p.queries).shape.back()), dv = padded(o.back());
  if ((depth + dv) * kAttentionKeyBlock + (kAttentionQueryBlock + 16) * dv >
      kAttentionMaxStackFloats)
    return std::nullopt;
  std::sort(p.computed.begin(), p.computed.end());
  p.computed.erase(std::unique(p.computed.begin(), p.computed.end()), p.computed.end());
  return p;
}


namespace {

// Whether a and b compute the same values: the same op, attributes (but the
// "remat" mark of a recomputed copy) and type, over operands that are the
// same nodes or compute the same values.
bool sameComputation(const Graph &g, ValueId a, ValueId b) {
  if (a == b)
    return true;
  const Node &x = g.node(a), &y = g.node(b);
  if (x.op != y.op || x.type != y.type || x.operands.size() != y.operands.size() ||
      opInfo(x.op).opClass == OpClass::Source || opInfo(x.op).opClass == OpClass::Random)
    return false;
  auto withoutMark = [](Attrs attrs) {
    Attrs out;
    for (const auto &[name, value] : attrs.entries())
      if (name != "remat")
        out.set(name, value);
    return out;
  };
  if (withoutMark(x.attrs) != withoutMark(y.attrs))
    return false;
  for (size_t i = 0; i < x.operands.size(); ++i)
    if (!sameComputation(g, x.operands[i], y.operands[i]))
      return false;
  return true;
}

// Whether `v` is op(a, b) or op(b, a) for a commutative op; sets the
// operands so that `first` holds the one `isFirst` accepts.
bool commutedPair(const Graph &g, ValueId v, OpKind op, const std::function<bool(ValueId)> &isFirst,
                  ValueId &first, ValueId &second) {
  const Node &n = g.node(v);
  if (n.op != op || n.operands.size() != 2)
    return false;
  for (int i = 0; i < 2; ++i)
    if (isFirst(n.operands[i])) {
      first = n.operands[i];
      second = n.operands[1 - i];
      return true;
    }
  return false;
}

// Whether `v` is broadcast_to(of) to `shape`.
bool broadcastOf(const Graph &g, ValueId v, ValueId of, const Shape &shape) {
  const Node &n = g.node(v);
  return n.op == OpKind::BroadcastTo && n.operands[0] == of && n.type.shape == shape;
}

// Whether `v` is a transpose of `of` swapping its last two axes.
bool transposeLast2Of(const Graph &g, ValueId v, ValueId of) {
  const Node &n = g.node(v);
  if (n.op != OpKind::Transpose || n.operands[0] != of)
    return false;
  const std::vector<int64_t> &perm = n.attrs.getInts("perm");
  int64_t rank = static_cast<int64_t>(perm.size());
  for (int64_t d = 0; d < rank; ++d)
    if (perm[d] != (d < rank - 2 ? d : d == rank - 2 ? rank - 1 : rank - 2))
      return false;
  return rank >= 2;
}

} // namespace

std::optional<AttentionBackwardPattern> matchAttentionBackward(const Graph &g,
                                                               ValueId gradQueries) {
  AttentionBackwardPattern b;
  const Node &dq = g.node(gradQueries);
  if (dq.op != OpKind::MatMul || dq.type.dtype != DType::F32 || dq.type.rank() < 2)
    return std::nullopt;
  b.gradQueries = gradQueries;
  ValueId ds = dq.operands[0];
  b.keys = dq.operands[1];
  const Shape &space = g.type(ds).shape;
  if (space.size() != dq.type.shape.size() || space.back() == 0)
    return std::nullopt;
  std::vector<ValueId> computed = {gradQueries, ds};
  // dS = [select(mask, dX, 0)] [* c | / c]
  ValueId y = ds;
  AttentionPattern::Scale scaleOp = AttentionPattern::Scale::None;
  double scale = 1;
  if (const Node &n = g.node(y); n.op == OpKind::Mul || n.op == OpKind::Div) {
    std::optional<double> c = scalarConstant(g, n.operands[1]);
    if (!c)
      return std::nullopt;
    scaleOp = n.op == OpKind::Mul ? AttentionPattern::Scale::Mul : AttentionPattern::Scale::Div;
    scale = *c;
    y = n.operands[0];
    computed.push_back(y);
  }
  // select(sees, dX, 0), or select(hides, 0, dX) after masked_fill's
  // select(hides, fill, scores): dX where the forward's scores are.
  std::optional<ValueId> mask;
  size_t gradAt = 0;
  if (const Node &n = g.node(y); n.op == OpKind::Select) {
    std::optional<double> zero = scalarConstant(g, n.operands[2]);
    gradAt = zero && *zero == 0 ? 1 : 2;
    zero = scalarConstant(g, n.operands[3 - gradAt]);
    if (!zero || *zero != 0)
      return std::nullopt;
    mask = n.operands[0];
    y = n.operands[gradAt];
    computed.push_back(y);
  }
  // dX = add(G, M), G = mul(dE, E), E = exp(sub(X, m)).
  ValueId grad = 0, maxShare = 0, dE = 0, e = 0;
  auto isExpGrad = [&](ValueId v) {
    return commutedPair(
        g, v, OpKind::Mul, [&](ValueId u) { return g.node(u).op == OpKind::Exp; }, e, dE);
  };
  if (!commutedPair(g, y, OpKind::Add, isExpGrad, grad, maxShare))
    return std::nullopt;
  const Node &shifted = g.node(g.node(e).operands[0]);
  if (shifted.op != OpKind::Sub)
    return std::nullopt;
  ValueId x = shifted.operands[0], m = shifted.operands[1];
  b.rowMax = m;
  computed.insert(computed.end(), {grad, maxShare, dE, e, g.node(e).operands[0], x});
  // dE = add(div(dP, l), broadcast(reduce_sum(neg(div(mul(dP, P), l))))),
  // P = div(E, l).
  ValueId direct = 0, fromSum = 0;
  if (!commutedPair(
          g, dE, OpKind::Add, [&](ValueId u) { return g.node(u).op == OpKind::Div; }, direct,
          fromSum))
    return std::nullopt;
  ValueId dp = g.node(direct).operands[0], l = g.node(direct).operands[1];
  b.rowSum = l;
  const Node &sumOfL = g.node(fromSum);
  if (sumOfL.op != OpKind::BroadcastTo || sumOfL.type.shape != space)
    return std::nullopt;
  ValueId dl = sumOfL.operands[0];
  if (!reducesLastAxis(g, dl, OpKind::ReduceSum, g.node(dl).operands[0]))
    return std::nullopt;
  const Node &negL = g.node(g.node(dl).operands[0]);
  if (negL.op != OpKind::Neg || g.node(negL.operands[0]).op != OpKind::Div ||
      g.node(negL.operands[0]).operands[1] != l)
    return std::nullopt;
  ValueId dpTimesP = g.node(negL.operands[0]).operands[0], probs = 0, dpAgain = 0;
  if (!commutedPair(
          g, dpTimesP, OpKind::Mul,
          [&](ValueId u) {
            const Node &n = g.node(u);
            return n.op == OpKind::Div && n.operands[0] == e && n.operands[1] == l;
          },
          probs, dpAgain) ||
      dpAgain != dp)
    return std::nullopt;
  computed.insert(computed.end(), {direct, fromSum, dl, g.node(dl).operands[0],
                                   negL.operands[0], dpTimesP, probs});
  // M = div(mul(hit, broadcast(reduce_sum(neg(G)))), broadcast(reduce_sum(hit))),
  // hit = cast(eq(X, broadcast(m))).
  {
    const Node &share = g.node(maxShare);
    if (share.op != OpKind::Div)
      return std::nullopt;
    ValueId product = share.operands[0], ties = share.operands[1], hit = 0, spread = 0;
    if (!commutedPair(
            g, product, OpKind::Mul,
            [&](ValueId u) { return g.node(u).op == OpKind::Cast; }, hit, spread))
      return std::nullopt;
    const Node &eq = g.node(g.node(hit).operands[0]);
    if (eq.op != OpKind::Eq || eq.operands[0] != x || !broadcastOf(g, eq.operands[1], m, space) ||
        g.type(hit).dtype != DType::F32)
      return std::nullopt;
    const Node &tiesNode = g.node(ties);
    if (tiesNode.op != OpKind::BroadcastTo ||
        !reducesLastAxis(g, tiesNode.operands[0], OpKind::ReduceSum, hit))
      return std::nullopt;
    const Node &spreadNode = g.node(spread);
    if (spreadNode.op != OpKind::BroadcastTo)
      return std::nullopt;
    ValueId dm = spreadNode.operands[0];
    if (!reducesLastAxis(g, dm, OpKind::ReduceSum, g.node(dm).operands[0]))
      return std::nullopt;
    const Node &negG = g.node(g.node(dm).operands[0]);
    if (negG.op != OpKind::Neg || negG.operands[0] != grad)
      return std::nullopt;
    computed.insert(computed.end(), {product, ties, hit, g.node(hit).operands[0], eq.operands[1],
                                     tiesNode.operands[0], spread, dm,
                                     g.node(dm).operands[0]});
  }
  // X as the forward computes it, m and l its row max and sum of E.
  AttentionPattern &r = b.recomputed;
  if (!matchScores(g, x, r) || r.causal != mask.has_value() || (mask && *mask != r.mask) ||
      (mask && scalarConstant(g, g.node(x).operands[gradAt])) || r.scaleOp != scaleOp ||
      r.scale != scale)
    return std::nullopt;
  computed.insert(computed.end(), r.computed.begin(), r.computed.end());
  {
    const Node &maxNode = g.node(m), &sumNode = g.node(l);
    if (maxNode.op != OpKind::ReduceMax || sumNode.op != OpKind::ReduceSum ||
        !reducesLastAxis(g, m, OpKind::ReduceMax, maxNode.operands[0]) ||
        !reducesLastAxis(g, l, OpKind::ReduceSum, sumNode.operands[0]) ||
        !sameComputation(g, maxNode.operands[0], x) || !sameComputation(g, sumNode.operands[0], e))
      return std::nullopt;
  }
  // dP = matmul(dO, vT); dV = matmul(transpose(P), dO); dKT = matmul(qT, dS).
  const Node &dpNode = g.node(dp);
  if (dpNode.op != OpKind::MatMul || dpNode.type.shape != space)
    return std::nullopt;
  b.gradOutput = dpNode.operands[0];
  b.valuesT = dpNode.operands[1];
  computed.push_back(dp);
  auto usersOf = [&](ValueId v) {
    std::vector<ValueId> users;
    for (ValueId u = v + 1; u < g.size(); ++u)
      if (std::count(g.node(u).operands.begin(), g.node(u).operands.end(), v))
        users.push_back(u);
    return users;
  };
  bool found = false;
  for (ValueId t : usersOf(probs)) {
    if (!transposeLast2Of(g, t, probs))
      continue;
    for (ValueId u : usersOf(t)) {
      const Node &n = g.node(u);
      if (n.op == OpKind::MatMul && n.operands[0] == t && n.operands[1] == b.gradOutput && !found) {
        b.gradValues = u;
        computed.insert(computed.end(), {t, u});
        found = true;
      }
    }
  }
  if (!found)
    return std::nullopt;
  found = false;
  for (ValueId u : usersOf(ds)) {
    const Node &n = g.node(u);
    if (n.op == OpKind::MatMul && n.operands[1] == ds && n.operands[0] != ds && !found) {
      b.gradKeysT = u;
      b.queriesT = n.operands[0];
      computed.push_back(u);
      found = true;
    }
  }
  if (!found)
    return std::nullopt;
  // The products in the scores' batch space (no broadcast operand folded
  // into rows), f32.
  Shape batch(space.begin(), space.end() - 2);
  for (ValueId v : {b.gradQueries, b.gradKeysT, b.gradValues}) {
    const Shape &s = g.type(v).shape;
    if (s.size() != space.size() || !std::equal(batch.begin(), batch.end(), s.begin()) ||
        g.type(v).dtype != DType::F32)
      return std::nullopt;
  }
  int64_t tq = space[space.size() - 2], tk = space.back();
  if (g.type(b.gradKeysT).shape.back() != tk || g.type(b.gradValues).shape[space.size() - 2] != tk ||
      dq.type.shape[space.size() - 2] != tq)
    return std::nullopt;
  // The kernel's stack buffers (lowering_attention_backward.cpp).
  auto padded = [](int64_t n, int64_t to) { return (n + to - 1) / to * to; };
  int64_t depth = padded(dq.type.shape.back(), 16), dv = padded(g.type(b.gradValues).shape.back(), 16);
  // (8: the largest register tile's rows; q, q^T and dQ tiles of depth.)
  if (2 * 8 * padded(tk, kAttentionKeyBlock) + (2 * depth + dv) * kAttentionKeyBlock +
          8 * (3 * depth + dv) > kAttentionMaxStackFloats)
    return std::nullopt;
  std::sort(computed.begin(), computed.end());
  computed.erase(std::unique(computed.begin(), computed.end()), computed.end());
  b.computed = std::move(computed);
  return b;
}

std::optional<std::vector<int64_t>> reshapeStrides(const Shape &from,
                                                   const std::vector<int64_t> &fromStrides,
                                                   const Shape &to) {
  Shape oldDims;
  std::vector<int64_t> oldStrides;
  for (size_t d = 0; d < from.size(); ++d)
    if (from[d] != 1) {
      oldDims.push_back(from[d]);
      oldStrides.push_back(fromStrides[d]);
    }
  std::vector<int64_t> strides(to.size(), 1);
  size_t oi = 0, oj = 1, ni = 0, nj = 1;
  while (ni < to.size() && oi < oldDims.size()) {
    int64_t np = to[ni], op = oldDims[oi];
    while (np != op) {
      if (np < op) {
        if (nj >= to.size())
          return std::nullopt;
        np *= to[nj++];
      } else {
        if (oj >= oldDims.size())
          return std::nullopt;
        op *= oldDims[oj++];
      }
    }
    for (size_t ok = oi; ok + 1 < oj; ++ok)
      if (oldStrides[ok] != oldDims[ok + 1] * oldStrides[ok + 1])
        return std::nullopt;
    strides[nj - 1] = oldStrides[oj - 1];
    for (size_t nk = nj - 1; nk > ni; --nk)
      strides[nk - 1] = strides[nk] * to[nk];
    ni = nj++;
    oi = oj++;
  }
  return strides;
}

namespace {

// The strides of chain[0] in the row-major buffer of chain.back(), where
// each later node of the chain is a transpose or reshape of the one before:
// the views undone from the stored end back to the first value. None where
// a reshape cannot be undone by strides.
std::optional<std::vector<int64_t>> stridesUnderViews(const Graph &g,
                                                      const std::vector<ValueId> &chain) {
  const Shape &end = g.type(chain.back()).shape;
  std::vector<int64_t> strides(end.size(), 1);
  for (size_t d = end.size(); d-- > 1;)
    strides[d - 1] = strides[d] * end[d];
  for (size_t i = chain.size() - 1; i > 0; --i) {
    const Node &view = g.node(chain[i]);
    const Shape &from = g.type(chain[i - 1]).shape;
    if (view.op == OpKind::Transpose) {
      // view's dimension k is its operand's dimension perm[k].
      const std::vector<int64_t> &perm = view.attrs.getInts("perm");
      std::vector<int64_t> operandStrides(strides.size());
      for (size_t k = 0; k < perm.size(); ++k)
        operandStrides[static_cast<size_t>(perm[k])] = strides[k];
      strides = std::move(operandStrides);
    } else {
      std::optional<std::vector<int64_t>> undone = reshapeStrides(view.type.shape, strides, from);
      if (!undone)
        return std::nullopt;
      strides = std::move(*undone);
    }
  }
  return strides;
}

bool isHeadView(OpKind op) { return op == OpKind::Transpose || op == OpKind::Reshape; }

} // namespace

AttentionStore attentionStore(const Graph &g, const std::vector<ValueId> &groupNodes,
                              ValueId result) {
  std::vector<ValueId> chain{result};
  for (bool longer = true; longer;) {
    longer = false;
    for (ValueId v : groupNodes)
      if (isHeadView(g.node(v).op) && g.node(v).operands[0] == chain.back()) {
        chain.push_back(v);
        longer = true;
        break;
      }
  }
  std::optional<std::vector<int64_t>> strides = stridesUnderViews(g, chain);
  if (!strides)
    throw std::logic_error(fmt::format("attention result %{} is stored through views that "
                                       "strides cannot undo (claimAttention takes none such)",
                                       result));
  return {chain.back(), *strides};
}

namespace {

// How fusion sees each class of op (ops.def).
enum class FusionClass {
  Source,      // input, param: buffers the caller owns
  Inlined,     // constant, iota: computed by every kernel that reads them
  Elementwise, // out[i] from operands at i (after NumPy broadcasting)
  View,        // an index map over its operand: read by index, never computed
  Reduction,   // reduces axes of its first operand
  Contraction, // matmul, conv and conv gradients: the hero of an Epilogue kernel
  Opaque,      // runs alone, see opaqueReason()
};

FusionClass fusionClass(OpKind op) {
  switch (opInfo(op).opClass) {
  case OpClass::Source: return FusionClass::Source;
  case OpClass::Constant: return FusionClass::Inlined;
  case OpClass::Elementwise: return FusionClass::Elementwise;
  // The mask is a function of (seed, the element's flat index), so dropout is
  // elementwise for fusion: any kernel that visits the element can compute it.
  case OpClass::Random: return FusionClass::Elementwise;
  // Reading one costs index math, so a kernel folds views into its reads
  // instead of materializing them; a transpose feeding a matmul becomes the
  // matmul's operand indexing.
  case OpClass::View: return FusionClass::View;
  case OpClass::Reduction: return FusionClass::Reduction;
  case OpClass::Contraction: return FusionClass::Contraction;
  case OpClass::Indexed:
  case OpClass::Window:
  case OpClass::Scatter:
  case OpClass::Collective: return FusionClass::Opaque;
  }
  return FusionClass::Opaque;
}

// Why an opaque op runs alone (rule "opaque").
std::string_view opaqueReason(OpKind op) {
  switch (opInfo(op).opClass) {
  case OpClass::Indexed:
    return op == OpKind::Gather ? "it reads rows chosen by run-time indices"
                                : "it reads a different operand per range of its output";
  case OpClass::Scatter: return "it accumulates into rows chosen by run-time indices";
  case OpClass::Window:
    return op == OpKind::MaxPool2dGrad || op == OpKind::AvgPool2dGrad
               ? "each input element scatters into several windows"
               : "each output reads a window of its input";
  case OpClass::Collective:
    return "it is a collective: a runtime call between kernels, not a loop";
  case OpClass::Source:
  case OpClass::Constant:
  case OpClass::Elementwise:
  case OpClass::Random:
  case OpClass::View:
  case OpClass::Reduction:
  case OpClass::Contraction: break; // not opaque (fusionClass)
  }
  return "it has no fusible form";
}

// Where a node of a kernel lives in the kernel's iteration (fusion_plan.h).
enum class Role : uint8_t {
  External, // not in the kernel: read from memory (or an inlined constant)
  Full,     // one value per iteration point
  Reduced,  // one value per row of a Reduction kernel
  Uniform,  // one scalar for the whole kernel
  View,     // an index map over memory (or over a uniform value)
};

// How a View reads memory: what a matmul/conv can take as an operand.
enum class Layout : uint8_t {
  Contiguous, // row-major over a buffer (a reshape of one)
  Strided,    // a strided view of a buffer: transpose, broadcast, slice
  Indexed,    // anything else: computed index per element (pad, one_hot, ...)
};

Layout viewLayout(OpKind op, Layout operand) {
  if (opInfo(op).opClass != OpClass::View)
    return Layout::Indexed; // not a view (fusionClass)
  if (op == OpKind::Reshape)
    return operand == Layout::Contiguous ? operand : Layout::Indexed;
  // A transpose, broadcast or slice of a strided buffer is strided; pad and
  // one_hot compute an index per element.
  bool strided = op == OpKind::Transpose || op == OpKind::BroadcastTo || op == OpKind::Slice;
  return strided && operand != Layout::Indexed ? Layout::Strided : Layout::Indexed;
}

struct FusionDecision {
  bool fuse = true;
  std::string rule; // why not, when !fuse
  static FusionDecision yes() { return {}; }
  static FusionDecision no(std::string rule) { return {false, std::move(rule)}; }
};

// What kind of loop a set of nodes forms, when it forms one.
struct KernelShape {
  enum class Mode { Loop, Reduction, Epilogue } mode = Mode::Loop;
  Shape space;              // Loop/Epilogue: iteration shape; Reduction: reduced operand
  std::vector<bool> axes;   // Reduction: which axes of `space` are reduced
  int64_t hero = -1;        // contraction, or first reduction
  bool opaque = false;      // a single opaque op
};

std::vector<bool> reducedAxes(const Node &node, int64_t rank) {
  std::vector<bool> axes(static_cast<size_t>(rank), false);
  auto mark = [&](int64_t axis) { axes[static_cast<size_t>(axis)] = true; };
  if (node.op == OpKind::ArgMax)
    mark(node.attrs.getInt("axis"));
  else
    for (int64_t axis : node.attrs.getInts("axes"))
      mark(axis);
  return axes;
}

// "[1]" for the axes marked true.
std::string axesString(const std::vector<bool> &axes) {
  std::vector<int64_t> list;
  for (size_t i = 0; i < axes.size(); ++i)
    if (axes[i])
      list.push_back(static_cast<int64_t>(i));
  return shapeString(list);
}

Shape squeezed(const Shape &shape) {
  Shape out;
  for (int64_t d : shape)
    if (d != 1)
      out.push_back(d);
  return out;
}

int64_t numelOf(const Shape &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

// Why a candidate cannot be one kernel (what --why-not-fused prints), or
// none when the rule asked allows it.
using Refusal = std::optional<std::string>;

// A candidate kernel while analyze() checks it: its nodes (sorted) and the
// loop it would form.
struct Candidate {
  const std::vector<ValueId> &nodes;
  KernelShape k;
  int64_t spaceNumel = 0;
  Shape reducedKeep;     // Reduction: the reduced shape with keepdims
  Shape reducedSqueezed; // ... without its 1s
  bool broadcastsBack(const Shape &s) const;
};

class Fuser {
public:
  Fuser(const Graph &graph, const FusionOptions &options)
      : g_(graph), options_(options), n_(graph.size()), users_(n_), escapes_(n_, false),
        groupOf_(n_, -1), mark_(n_, 0), role_(n_, Role::External),
        layout_(n_, Layout::Indexed) {
    for (ValueId v = 0; v < n_; ++v)
      for (ValueId o : g_.node(v).operands)
        if (users_[o].empty() || users_[o].back() != v)
          users_[o].push_back(v);
    for (const GraphOutput &out : g_.outputs)
      escapes_[out.value] = true;
    for (const ParamUpdate &u : g_.updates)
      escapes_[u.value] = true;
    for (ValueId v = 0; v < n_; ++v) {
      FusionClass c = fusionClass(g_.node(v).op);
      if (c == FusionClass::Source || c == FusionClass::Inlined)
        continue;
      groupOf_[v] = static_cast<int>(members_.size());
      members_.push_back({v});
      minId_.push_back(v);
    }
  }

  FusionPlan run();

private:
  bool computed(ValueId v) const { return groupOf_[v] >= 0; }
  const Shape &shape(ValueId v) const { return g_.type(v).shape; }
  std::string show(ValueId v) const {
    const Node &node = g_.node(v);
    return node.name.empty() ? fmt::format("%{}", v) : "%" + node.name;
  }
  std::string describe(ValueId v) const {
    return fmt::format("{} ({})", show(v), opInfo(g_.node(v).op).name);
  }

  bool inside(ValueId v) const { return mark_[v] == stamp_; }
  Role roleOf(ValueId v) const { return inside(v) ? role_[v] : Role::External; }
  bool isKernelOutput(ValueId v) const;

  // analyze() and its rules, in the order it asks them (fusion.cpp says
  // what each rule is for where it is defined).
  FusionDecision analyze(const std::vector<ValueId> &nodes, KernelShape *out);
  Refusal copyRunsEarly(const std::vector<ValueId> &nodes) const;
  Refusal opaqueNotAlone(const std::vector<ValueId> &nodes) const;
  bool poolsConv(const std::vector<ValueId> &nodes, ValueId pool) const;
  Refusal secondContraction(const std::vector<ValueId> &nodes) const;
  Refusal reductionWithContraction(const std::vector<ValueId> &nodes) const;
  KernelShape kernelShape(const std::vector<ValueId> &nodes) const;
  Refusal reductionSpacesDiffer(const Candidate &c) const;
  Refusal place(ValueId v, const Candidate &c);
  Refusal placeView(ValueId v, const Candidate &c);
  Refusal placeElementwise(ValueId v, const Candidate &c);
  Refusal misaligned(ValueId v, ValueId operand, std::string_view why) const;
  Refusal operandNotInMemory(ValueId v) const;
  Refusal outputOffTheSpace(const Candidate &c) const;
  Refusal tooManyInputs(const Candidate &c) const;
  FusionDecision shouldFuse(int a, int b, bool siblings);
  bool reaches(int from, int to) const;
  void merge(int into, int from);
  std::vector<ValueId> united(int a, int b) const;
  bool producerConsumerSweep();
  bool siblingSweep();
  void keepOnly(const std::vector<size_t> &fusedGroups);
  void claimAttention();
  FusionPlan finish();

  const Graph &g_;
  FusionOptions options_;
  size_t n_;
  std::vector<std::vector<ValueId>> users_; // distinct, in order
  std::vector<bool> escapes_;               // graph output or param update
  std::vector<int> groupOf_;
  std::vector<std::vector<ValueId>> members_; // sorted; empty once merged away
  std::vector<ValueId> minId_;
  std::map<std::pair<ValueId, ValueId>, std::string> refusals_;
  // Scratch for analyze(): mark_[v] == stamp_ means v is in the candidate.
  std::vector<uint32_t> mark_;
  uint32_t stamp_ = 0;
  std::vector<Role> role_;
  std::vector<Layout> layout_; // for Role::View nodes
  std::set<int> attention_;    // groups that are Attention kernels (claimAttention)
};

// Whether `nodes` (sorted) form one kernel, and of which shape. Each rule is
// one function below returning its refusal (what --why-not-fused prints), or
// none; they run in this order, so a candidate breaking several gets the
// first one's reason.
FusionDecision Fuser::analyze(const std::vector<ValueId> &nodes, KernelShape *out) {
  ++stamp_;
  for (ValueId v : nodes)
    mark_[v] = stamp_;
  for (auto rule : {&Fuser::copyRunsEarly, &Fuser::opaqueNotAlone, &Fuser::secondContraction,
                    &Fuser::reductionWithContraction})
    if (Refusal why = (this->*rule)(nodes))
      return FusionDecision::no(std::move(*why));
  Candidate c{nodes, kernelShape(nodes), 0, {}, {}};
  if (nodes.size() > 1) {
    if (Refusal why = reductionSpacesDiffer(c))
      return FusionDecision::no(std::move(*why));
    c.spaceNumel = numelOf(c.k.space);
    if (c.k.mode == KernelShape::Mode::Reduction) {
      c.reducedKeep = c.k.space;
      for (size_t i = 0; i < c.k.axes.size(); ++i)
        if (c.k.axes[i])
          c.reducedKeep[i] = 1;
      c.reducedSqueezed = squeezed(c.reducedKeep);
    }
    for (ValueId v : nodes)
      if (Refusal why = place(v, c))
        return FusionDecision::no(std::move(*why));
    for (auto rule : {&Fuser::outputOffTheSpace, &Fuser::tooManyInputs})
      if (Refusal why = (this->*rule)(c))
        return FusionDecision::no(std::move(*why));
  }
  if (out)
    *out = c.k;
  return FusionDecision::yes();
}

bool Fuser::isKernelOutput(ValueId v) const {
  if (escapes_[v])
    return true;
  return std::any_of(users_[v].begin(), users_[v].end(),
                     [&](ValueId u) { return !inside(u); });
}

// Rule "recomputation runs late": a copy made by rematerialization (remat=N,
// compiler/passes/remat.cpp) may join its users' kernels, never one with an
// ordinary node placed before it (the original, its producers, a sibling in
// the forward pass): the kernel would run early and the value would be kept
// alive again. Kernels run in the order of their first node.
Refusal Fuser::copyRunsEarly(const std::vector<ValueId> &nodes) const {
  auto isCopy = [&](ValueId v) { return g_.node(v).attrs.has("remat"); };
  if (nodes.empty() || isCopy(nodes.front()))
    return std::nullopt;
  for (ValueId v : nodes)
    if (isCopy(v))
      return fmt::format("{} is recomputed for later users (remat) and {} comes before it: "
                         "the copy would run early and keep its value alive",
                         describe(v), describe(nodes.front()));
  return std::nullopt;
}

// Rule "opaque": gather, scatter_add, concat, pooling and pooling gradients
// run alone; their loops are not an elementwise loop nest (see opaqueReason),
// so nothing shares one with them. One exception, a pool after a conv
// (poolsConv).
Refusal Fuser::opaqueNotAlone(const std::vector<ValueId> &nodes) const {
  if (nodes.size() > 1)
    for (ValueId v : nodes)
      if (OpKind op = g_.node(v).op;
          fusionClass(op) == FusionClass::Opaque && !poolsConv(nodes, v))
        return fmt::format("{} runs alone: {}", describe(v), opaqueReason(op));
  return std::nullopt;
}

// A max_pool2d may end a conv2d's kernel: it reads the conv's result (or a
// value of its epilogue, bias and relu) per sample, while that sample's
// result is still in cache, and the full-size value is stored only where
// another kernel reads it (a training step's backward). It must be the
// kernel's last word: one pool, after the conv, of a value of the conv's
// shape computed in the kernel, and read by nothing in the kernel (its
// output is not the kernel's iteration space). Max only: it is exact in any
// order, so the fused pool gives the bits of the pool alone.
bool Fuser::poolsConv(const std::vector<ValueId> &nodes, ValueId pool) const {
  const Node &p = g_.node(pool);
  if (p.op != OpKind::MaxPool2d || p.type.dtype != DType::F32)
    return false;
  ValueId input = p.operands[0];
  std::optional<ValueId> conv;
  for (ValueId v : nodes) {
    OpKind op = g_.node(v).op;
    if (op == OpKind::Conv2d)
      conv = v;
    else if (v != pool && fusionClass(op) == FusionClass::Opaque)
      return false;
  }
  if (!conv || *conv > pool || !inside(input) || shape(input) != shape(*conv))
    return false;
  // Where the pool's input is not stored, codegen keeps one sample of it on
  // the stack: at most 1 MiB (as the conv's im2col buffer), so a wide 1x1
  // conv's pool runs in a kernel of its own.
  const Shape &out = shape(*conv);
  constexpr int64_t kSampleFloats = 1 << 18;
  if (out.size() != 4 || out[1] * out[2] * out[3] > kSampleFloats)
    return false;
  return std::none_of(users_[pool].begin(), users_[pool].end(),
                      [&](ValueId u) { return inside(u); });
}

// Rule "one contraction": a kernel is built around one matmul/conv's tiling;
// a second one (a matmul reading another's result) would need the first's
// whole result, so that result goes through memory.
Refusal Fuser::secondContraction(const std::vector<ValueId> &nodes) const {
  std::optional<ValueId> first;
  for (ValueId v : nodes) {
    if (fusionClass(g_.node(v).op) != FusionClass::Contraction)
      continue;
    if (first)
      return fmt::format("one matmul/conv per kernel: {} and {}", describe(*first),
                         describe(v));
    first = v;
  }
  return std::nullopt;
}

// Rule "no reduction after a contraction": reducing a matmul's result (a bias
// gradient's column sum, a softmax over scores) needs every tile of it, so the
// reduction would have to run across the matmul's tiles. Named the right way
// round: a reduction after the matmul reduces its result; one before it would
// have to finish before the matmul starts.
Refusal Fuser::reductionWithContraction(const std::vector<ValueId> &nodes) const {
  auto firstOf = [&](FusionClass wanted) -> std::optional<ValueId> {
    for (ValueId v : nodes)
      if (fusionClass(g_.node(v).op) == wanted)
        return v;
    return std::nullopt;
  };
  std::optional<ValueId> contraction = firstOf(FusionClass::Contraction);
  std::optional<ValueId> reduction = firstOf(FusionClass::Reduction);
  if (!contraction || !reduction)
    return std::nullopt;
  for (ValueId v : nodes)
    if (v > *contraction && fusionClass(g_.node(v).op) == FusionClass::Reduction)
      return fmt::format(
          "{} reduces the result of {}: a reduction needs the matmul's whole result",
          describe(v), describe(*contraction));
  return fmt::format("{} comes after {}: a kernel is built around one matmul/conv or one "
                     "reduction, not both",
                     describe(*contraction), describe(*reduction));
}

// The loop a candidate forms around its hero (the contraction, else the first
// reduction); with neither, a loop over its biggest output (every output must
// have that many elements: outputOffTheSpace).
KernelShape Fuser::kernelShape(const std::vector<ValueId> &nodes) const {
  KernelShape k;
  for (ValueId v : nodes) {
    FusionClass c = fusionClass(g_.node(v).op);
    k.opaque = k.opaque || c == FusionClass::Opaque;
    if (c == FusionClass::Contraction) {
      k.mode = KernelShape::Mode::Epilogue;
      k.space = shape(v);
      k.hero = v;
    } else if (c == FusionClass::Reduction && k.hero < 0) {
      k.mode = KernelShape::Mode::Reduction;
      const Node &r0 = g_.node(v);
      k.space = shape(r0.operands[0]);
      k.axes = reducedAxes(r0, static_cast<int64_t>(k.space.size()));
      k.hero = v;
    }
  }
  if (k.hero >= 0)
    return k;
  k.mode = KernelShape::Mode::Loop;
  int64_t best = -1;
  for (ValueId v : nodes)
    if (isKernelOutput(v) && g_.type(v).numel() > best) {
      best = g_.type(v).numel();
      k.space = shape(v);
    }
  if (best < 0 || nodes.size() == 1)
    k.space = shape(nodes.back());
  return k;
}

// Rule "one reduction space": all reductions of a kernel walk the same rows
// (same operand shape, same axes), so one loop over the kept axes holds them
// all; softmax's max and sum, layer_norm's two means.
Refusal Fuser::reductionSpacesDiffer(const Candidate &c) const {
  if (c.k.mode != KernelShape::Mode::Reduction)
    return std::nullopt;
  for (ValueId v : c.nodes) {
    const Node &node = g_.node(v);
    if (fusionClass(node.op) != FusionClass::Reduction || v == ValueId(c.k.hero))
      continue;
    const Shape &s = shape(node.operands[0]);
    std::vector<bool> axes = reducedAxes(node, static_cast<int64_t>(s.size()));
    if (s != c.k.space || axes != c.k.axes)
      return fmt::format("reductions over different spaces: {} reduces {} over axes {} and "
                         "{} reduces {} over axes {}",
                         describe(ValueId(c.k.hero)), shapeString(c.k.space),
                         axesString(c.k.axes), describe(v), shapeString(s), axesString(axes));
  }
  return std::nullopt;
}

// A reduced value read by a full-shape node must broadcast back along the
// reduced axes only: its shape, padded with leading 1s, is the keepdims shape
// of the reduction.
bool Candidate::broadcastsBack(const Shape &s) const {
  if (s.size() > reducedKeep.size())
    return false;
  Shape padded(reducedKeep.size() - s.size(), 1);
  padded.insert(padded.end(), s.begin(), s.end());
  return padded == reducedKeep;
}

// Rule "aligned reads": inside a kernel a computed value exists only at the
// iteration point that computed it, so another node may read it only at that
// point (or a row's reduced value broadcast back over the row).
Refusal Fuser::misaligned(ValueId v, ValueId operand, std::string_view why) const {
  return fmt::format("{} would read {} {}: values computed in a kernel are read at their "
                     "own iteration point only",
                     describe(v), describe(operand), why);
}

// Gives `v` its role in the candidate (where in the loop its value exists),
// or the rule its reads break.
Refusal Fuser::place(ValueId v, const Candidate &c) {
  switch (fusionClass(g_.node(v).op)) {
  case FusionClass::View: return placeView(v, c);
  case FusionClass::Elementwise: return placeElementwise(v, c);
  case FusionClass::Reduction: {
    ValueId operand = g_.node(v).operands[0];
    Role r = roleOf(operand);
    if (r == Role::Reduced || r == Role::Uniform)
      return misaligned(v, operand, "as a reduction operand");
    role_[v] = Role::Reduced;
    return std::nullopt;
  }
  case FusionClass::Contraction:
    if (Refusal why = operandNotInMemory(v))
      return why;
    role_[v] = Role::Full;
    return std::nullopt;
  case FusionClass::Opaque:
  case FusionClass::Source:
  case FusionClass::Inlined: role_[v] = Role::Full; return std::nullopt;
  }
  return std::nullopt;
}

Refusal Fuser::placeView(ValueId v, const Candidate &c) {
  const Node &node = g_.node(v);
  const Shape &s = node.type.shape;
  ValueId operand = node.operands[0];
  Role r = roleOf(operand);
  bool reduction = c.k.mode == KernelShape::Mode::Reduction;
  if (r == Role::External || r == Role::View || r == Role::Uniform) {
    role_[v] = node.type.numel() == 1 && r == Role::Uniform ? Role::Uniform : Role::View;
    Layout base = r == Role::External ? Layout::Contiguous
                  : r == Role::View   ? layout_[operand]
                                      : Layout::Indexed;
    layout_[v] = viewLayout(node.op, base);
  } else if (r == Role::Full && node.op == OpKind::Reshape && !reduction) {
    // A reshape keeps the row-major order: in a flat loop it is a no-op.
    // Rule "rows stay rows": in a matmul's kernel, one that changes
    // dimension 0 ([16,64,1024] as [1024,1024]) would be a copy that keeps
    // the kernel from splitting its rows among threads; read as a view by
    // its users instead, it costs nothing.
    const Shape &from = shape(operand);
    if (c.k.mode == KernelShape::Mode::Epilogue &&
        (s.empty() || from.empty() || s[0] != from[0]))
      return fmt::format("{} reshapes {} across dimension 0: the matmul kernel could not "
                         "split its rows among threads",
                         describe(v), describe(operand));
    role_[v] = Role::Full;
  } else if (r == Role::Reduced && node.op == OpKind::Reshape &&
             squeezed(s) == c.reducedSqueezed) {
    role_[v] = Role::Reduced; // [128,1] <-> [128]: same row order
  } else if (r == Role::Reduced && node.op == OpKind::BroadcastTo && s == c.k.space &&
             c.broadcastsBack(shape(operand))) {
    role_[v] = Role::Full;
  } else {
    return misaligned(v, operand, "through an index map");
  }
  return std::nullopt;
}

// Places the node by its shape, then checks each in-kernel operand.
Refusal Fuser::placeElementwise(ValueId v, const Candidate &c) {
  const Node &node = g_.node(v);
  const Shape &s = node.type.shape;
  bool reduction = c.k.mode == KernelShape::Mode::Reduction;
  Role mine;
  if (reduction ? s == c.k.space : node.type.numel() == c.spaceNumel)
    mine = Role::Full;
  else if (reduction && squeezed(s) == c.reducedSqueezed)
    mine = Role::Reduced;
  else if (node.type.numel() == 1)
    mine = Role::Uniform;
  else
    // Rule "one iteration space": an elementwise node of another size would
    // need a loop of its own.
    return fmt::format("{} of shape {} is outside the kernel's iteration space {}",
                       describe(v), shapeString(s), shapeString(c.k.space));
  for (ValueId operand : node.operands) {
    const Shape &os = shape(operand);
    bool ok = true;
    switch (roleOf(operand)) {
    case Role::External:
    case Role::View: break; // read by index from memory
    case Role::Uniform: break;
    case Role::Full: ok = mine == Role::Full && os == s; break;
    case Role::Reduced:
      ok = (mine == Role::Reduced && (os == s || g_.type(operand).numel() == 1)) ||
           (mine == Role::Full && s == c.k.space && c.broadcastsBack(os));
      break;
    }
    if (!ok)
      return misaligned(v, operand, "broadcast to another shape");
  }
  role_[v] = mine;
  return std::nullopt;
}

// Rule "no prologue": a matmul/conv reads its operands tile by tile, many
// times each; a computed producer fused in would be recomputed per read, so
// operands come from memory. Views of memory (a transpose of a weight) are
// folded into the operand's indexing, but only a view that is a strided
// layout of a buffer (a transpose, a broadcast, a slice, after any reshapes
// of the contiguous buffer); a pad or one_hot, or a reshape of a transposed
// view, would need a gather per read.
Refusal Fuser::operandNotInMemory(ValueId v) const {
  for (ValueId operand : g_.node(v).operands) {
    Role r = roleOf(operand);
    if (r != Role::External && r != Role::View)
      return fmt::format("{} would be computed inside {}'s operand reads: a matmul/conv "
                         "reads operands from memory (only views such as transposes fold in)",
                         describe(operand), describe(v));
    if (r == Role::View && layout_[operand] == Layout::Indexed)
      return fmt::format("{} is no strided view of a buffer, so {} cannot read it as an "
                         "operand",
                         describe(operand), describe(v));
  }
  return std::nullopt;
}

// Rule "outputs cover the space": outputs are written at the kernel's
// iteration points, so a scalar or a view used by another kernel would be
// written by a loop that does not iterate over it.
Refusal Fuser::outputOffTheSpace(const Candidate &c) const {
  for (ValueId v : c.nodes) {
    if (!isKernelOutput(v))
      continue;
    Role r = role_[v];
    if (r == Role::Full || r == Role::Reduced)
      continue;
    if (r == Role::View && c.k.mode == KernelShape::Mode::Loop &&
        g_.type(v).numel() == c.spaceNumel)
      continue; // a copy kernel materializing the view
    if (c.spaceNumel == 1)
      continue;
    return fmt::format("{} is used by another kernel but would be computed as a {} inside "
                       "a kernel over {}",
                       describe(v), r == Role::View ? "view" : "uniform scalar",
                       shapeString(c.k.space));
  }
  return std::nullopt;
}

// Rule "bounded inputs": each input is a pointer argument and a stream of
// reads; past options.maxInputs a kernel spills registers and thrashes the
// cache, so it is better split.
Refusal Fuser::tooManyInputs(const Candidate &c) const {
  std::set<ValueId> inputs;
  for (ValueId v : c.nodes)
    for (ValueId o : g_.node(v).operands)
      if (!inside(o) && fusionClass(g_.node(o).op) != FusionClass::Inlined)
        inputs.insert(o);
  if (inputs.size() > options_.maxInputs)
    return fmt::format("the kernel would read {} inputs (limit {})", inputs.size(),
                       options_.maxInputs);
  return std::nullopt;
}

std::vector<ValueId> Fuser::united(int a, int b) const {
  std::vector<ValueId> nodes;
  std::merge(members_[a].begin(), members_[a].end(), members_[b].begin(),
             members_[b].end(), std::back_inserter(nodes));
  return nodes;
}

// Whether a path of kernels leads from `from` to `to` through some other
// kernel. The search cannot stop at kernels whose nodes all come after `to`'s
// (node ids are topological): once kernels are merged, such a kernel may feed
// one that also holds an early node feeding `to` (tests/fuzz/findings/).
bool Fuser::reaches(int from, int to) const {
  std::vector<int> stack;
  std::set<int> seen;
  auto push = [&](int g) {
    if (g != to && seen.insert(g).second)
      stack.push_back(g);
  };
  auto pushSuccessors = [&](int g, bool &hit) {
    for (ValueId v : members_[g])
      for (ValueId u : users_[v]) {
        int s = groupOf_[u];
        if (s == g)
          continue;
        if (s == to && g != from)
          hit = true;
        push(s);
      }
  };
  bool hit = false;
  pushSuccessors(from, hit);
  while (!stack.empty() && !hit) {
    int g = stack.back();
    stack.pop_back();
    pushSuccessors(g, hit);
  }
  return hit;
}

// ShouldFuse(a, b): may kernel a join kernel b? With siblings, a and b read
// a common value and have no edge between them (sibling fusion: one
// multi-output kernel that reads the value once); otherwise a produces for b.
// The merged set must be one kernel (analyze) and the kernel graph must stay
// acyclic.
FusionDecision Fuser::shouldFuse(int a, int b, bool siblings) {
  std::string_view prefix = siblings ? "siblings: " : "";
  if (attention_.count(a) || attention_.count(b))
    return FusionDecision::no(
        fmt::format("{}a fused attention kernel computes only its own pattern", prefix));
  FusionDecision d = analyze(united(a, b), nullptr);
  if (!d.fuse)
    return d;
  // Rule "no cycles": if the producer also reaches the consumer through a
  // third kernel (softmax's max between a matmul and the subtraction), the
  // merged kernel would both feed and wait for that third kernel. Siblings
  // may depend on each other either way.
  if (siblings && (reaches(a, b) || reaches(b, a)))
    return FusionDecision::no("siblings: one depends on the other through another kernel; "
                              "fusing would create a cycle");
  if (!siblings && reaches(a, b))
    return FusionDecision::no(
        "another kernel lies on a path between them: fusing would create a cycle");
  return FusionDecision::yes();
}

void Fuser::merge(int into, int from) {
  for (ValueId v : members_[from])
    groupOf_[v] = into;
  members_[into] = united(into, from);
  members_[from].clear();
  minId_[into] = std::min(minId_[into], minId_[from]);
}

bool Fuser::producerConsumerSweep() {
  bool any = false;
  for (bool changed = true; changed;) {
    changed = false;
    for (ValueId c = 0; c < n_; ++c) {
      if (!computed(c))
        continue;
      for (ValueId p : g_.node(c).operands) {
        if (!computed(p) || groupOf_[p] == groupOf_[c])
          continue;
        FusionDecision d = shouldFuse(groupOf_[p], groupOf_[c], false);
        if (d.fuse) {
          merge(groupOf_[c], groupOf_[p]);
          changed = any = true;
        } else {
          refusals_[{p, c}] = std::move(d.rule);
        }
      }
    }
  }
  return any;
}

bool Fuser::siblingSweep() {
  bool any = false;
  // A kernel's "space signature": what must match for two kernels to share
  // a loop. Kernels around a matmul/conv or an opaque op have no siblings.
  auto signature = [&](int grp, KernelShape &k) {
    if (attention_.count(grp))
      return false;
    if (!analyze(members_[grp], &k).fuse || k.opaque ||
        k.mode == KernelShape::Mode::Epilogue)
      return false;
    return true;
  };
  for (ValueId v = 0; v < n_; ++v) {
    if (fusionClass(g_.node(v).op) == FusionClass::Inlined)
      continue;
    // One node per reading kernel; kernels are looked up again at each pair,
    // since earlier pairs may have merged them.
    std::vector<ValueId> readers;
    for (ValueId u : users_[v]) {
      bool known = groupOf_[u] == groupOf_[v];
      for (ValueId r : readers)
        known = known || groupOf_[r] == groupOf_[u];
      if (!known)
        readers.push_back(u);
    }
    for (size_t i = 0; i < readers.size(); ++i) {
      for (size_t j = i + 1; j < readers.size(); ++j) {
        int a = groupOf_[readers[i]], b = groupOf_[readers[j]];
        if (a == b)
          continue;
        KernelShape ka, kb;
        if (!signature(a, ka) || !signature(b, kb))
          continue;
        bool scalarPair = numelOf(ka.space) == 1 && numelOf(kb.space) == 1 &&
                          ka.mode == KernelShape::Mode::Loop &&
                          kb.mode == KernelShape::Mode::Loop;
        // Sharing a scalar (a learning rate) saves nothing worth a merge, so
        // siblings must share a tensor, unless both are tiny scalar kernels.
        if (g_.type(v).numel() == 1 && !scalarPair)
          continue;
        bool sameSpace =
            (ka.mode == kb.mode && ka.space == kb.space && ka.axes == kb.axes) ||
            (ka.mode == KernelShape::Mode::Loop && kb.mode == KernelShape::Mode::Loop &&
             numelOf(ka.space) == numelOf(kb.space)) ||
            (ka.mode != kb.mode && ka.space == kb.space);
        if (!sameSpace)
          continue; // not siblings: different loops
        FusionDecision d = shouldFuse(a, b, true);
        ValueId na = members_[a].back(), nb = members_[b].back();
        if (d.fuse) {
          merge(a, b);
          refusals_.erase({std::min(na, nb), std::max(na, nb)});
          any = true;
        } else {
          if (d.rule.rfind("siblings", 0) != 0)
            d.rule = fmt::format("siblings reading {}: {}", show(v), d.rule);
          refusals_[{std::min(na, nb), std::max(na, nb)}] = std::move(d.rule);
        }
      }
    }
  }
  return any;
}

// Each attention pattern (matchAttention) whose scores and probabilities
// nothing outside reads becomes one kernel, before the sweeps: they would
// otherwise split it at the reductions. Strided views feeding its operands
// (a head split's reshape and transpose) join it when it is their only
// reader, so the kernel reads q, k and v in place.
void Fuser::claimAttention() {
  for (ValueId v = 0; v < n_; ++v) {
    if (g_.node(v).op != OpKind::MatMul || !computed(v) || attention_.count(groupOf_[v]))
      continue;
    // A forward pattern (its output, row max and sum may be read outside),
    // or a backward one (its three products may).
    // `results`: what the kernel stores by attentionStore.
    std::vector<ValueId> computedNodes, readOutside, operands, results;
    std::optional<ValueId> mask;
    std::optional<ValueId> gradKeysT; // a backward pattern's d(k^T)
    if (std::optional<AttentionPattern> p = matchAttention(g_, v)) {
      computedNodes = p->computed;
      readOutside = {v, p->rowMax, p->rowSum};
      results = {v};
      operands = {p->queries, p->keysT, p->values};
      if (p->causal)
        mask = p->mask;
    } else if (std::optional<AttentionBackwardPattern> b = matchAttentionBackward(g_, v)) {
      computedNodes = b->computed;
      readOutside = {b->gradQueries, b->gradKeysT, b->gradValues};
      results = readOutside;
      gradKeysT = b->gradKeysT;
      operands = {b->recomputed.queries, b->recomputed.keysT, b->gradOutput,
                  b->valuesT,           b->keys,              b->queriesT};
      if (b->recomputed.causal)
        mask = b->recomputed.mask;
    } else {
      continue;
    }
    std::set<ValueId> nodes(computedNodes.begin(), computedNodes.end());
    bool private_ = true;
    for (ValueId u : computedNodes) {
      private_ = private_ && computed(u) && members_[groupOf_[u]].size() == 1;
      if (std::count(readOutside.begin(), readOutside.end(), u))
        continue;
      private_ = private_ && !escapes_[u];
      for (ValueId user : users_[u])
        private_ = private_ && nodes.count(user);
    }
    if (!private_)
      continue;
    // The kernel computes the causal mask from indices: a mask computed by
    // le(iota, iota) joins it where nothing else reads it (else its own
    // kernel computes it for the others, and this one ignores it).
    if (mask && computed(*mask) && !escapes_[*mask] && members_[groupOf_[*mask]].size() == 1 &&
        std::all_of(users_[*mask].begin(), users_[*mask].end(),
                    [&](ValueId u) { return nodes.count(u) > 0; }))
      nodes.insert(*mask);
    // Views whose every reader is in the kernel; a reshape only of a value
    // in memory, so each view stays a stride pattern over a buffer.
    bool inMemory = true;
    std::vector<ValueId> views;
    for (ValueId operand : operands) {
      ValueId x = operand;
      // The dimensions of x that are the operand's rows and columns, while
      // known: a broadcast along one of them has no strided form (MLIR's
      // strided memrefs reject a zero stride), so that view stays outside.
      int64_t rank = static_cast<int64_t>(g_.type(operand).shape.size());
      std::vector<int64_t> matrixDims{rank - 2, rank - 1};
      bool matrixKnown = rank >= 2;
      while (computed(x) && !escapes_[x] && members_[groupOf_[x]].size() == 1 &&
             !nodes.count(x)) {
        OpKind op = g_.node(x).op;
        ValueId from = g_.node(x).operands.empty() ? x : g_.node(x).operands[0];
        bool strided = op == OpKind::Transpose || op == OpKind::BroadcastTo ||
                       (op == OpKind::Reshape && fusionClass(g_.node(from).op) != FusionClass::View);
        if (op == OpKind::Transpose) {
          const std::vector<int64_t> &perm = g_.node(x).attrs.getInts("perm");
          for (int64_t &d : matrixDims)
            d = perm[static_cast<size_t>(d)];
        } else if (op == OpKind::Reshape) {
          matrixKnown = false;
        } else if (op == OpKind::BroadcastTo) {
          const Shape &in = g_.type(from).shape, &out = g_.type(x).shape;
          int64_t lead = static_cast<int64_t>(out.size() - in.size());
          for (int64_t &d : matrixDims) {
            bool broadcast = out[static_cast<size_t>(d)] > 1 &&
                             (d < lead || in[static_cast<size_t>(d - lead)] == 1);
            strided = strided && matrixKnown && !broadcast;
            matrixKnown = matrixKnown && d >= lead;
            d -= lead;
          }
        }
        bool onlyInside = std::all_of(users_[x].begin(), users_[x].end(), [&](ValueId u) {
          return nodes.count(u) > 0 || std::count(views.begin(), views.end(), u) > 0;
        });
        if (!strided || !onlyInside)
          break;
        if (!std::count(views.begin(), views.end(), x))
          views.push_back(x);
        x = from;
      }
      // The kernel reads its operands from memory (a constant has none).
      inMemory = inMemory && fusionClass(g_.node(x).op) != FusionClass::Inlined;
    }
    if (!inMemory)
      continue;
    nodes.insert(views.begin(), views.end());
    // The transposes and reshapes that are a result's only readers, one
    // after another (a head merge), join too: the kernel stores the last of
    // them (attentionStore) instead of a copy kernel rearranging the result.
    // Only while strides undo them with stride 1 along the dimension whose
    // 16-lane pieces the kernel stores: the last (a row of the output, dQ or
    // dV), or for d(k^T) either of the last two (it then stores dK's rows).
    for (ValueId result : results) {
      auto storable = [&](const std::vector<int64_t> &strides) {
        const Shape &s = g_.type(result).shape;
        size_t last = s.size() - 1;
        auto unit = [&](size_t d) { return strides[d] == 1 || s[d] == 1; };
        return unit(last) || (result == gradKeysT && unit(last - 1));
      };
      std::vector<ValueId> chain{result};
      while (!escapes_[chain.back()] && users_[chain.back()].size() == 1) {
        ValueId u = users_[chain.back()].front();
        if (!isHeadView(g_.node(u).op) || !computed(u) || members_[groupOf_[u]].size() != 1 ||
            nodes.count(u))
          break;
        chain.push_back(u);
        std::optional<std::vector<int64_t>> strides = stridesUnderViews(g_, chain);
        if (!strides || !storable(*strides)) {
          chain.pop_back();
          break;
        }
      }
      nodes.insert(chain.begin() + 1, chain.end());
    }
    int into = groupOf_[v];
    for (ValueId u : nodes)
      if (groupOf_[u] != into)
        merge(into, groupOf_[u]);
    attention_.insert(into);
  }
}

FusionPlan Fuser::run() {
  if (options_.enabled && options_.attention)
    claimAttention();
  if (options_.enabled) {
    producerConsumerSweep();
    if (siblingSweep())
      producerConsumerSweep();
  }
  if (options_.fusedGroups)
    keepOnly(*options_.fusedGroups);
  return finish();
}

// Splits every group of the full plan but `fusedGroups` (indices in the
// plan finish() makes) into one-op groups.
void Fuser::keepOnly(const std::vector<size_t> &fusedGroups) {
  FusionPlan full = finish();
  std::vector<bool> keep(full.groups.size(), false);
  for (size_t g : fusedGroups) {
    if (g >= full.groups.size())
      throw Error(fmt::format("fusion: group {} is not in the plan of graph '{}' ({} groups)", g,
                              g_.name, full.groups.size()));
    keep[g] = true;
  }
  members_.clear();
  minId_.clear();
  attention_.clear();
  auto add = [&](std::vector<ValueId> nodes) {
    for (ValueId v : nodes)
      groupOf_[v] = static_cast<int>(members_.size());
    minId_.push_back(nodes.front());
    members_.push_back(std::move(nodes));
  };
  for (size_t g = 0; g < full.groups.size(); ++g) {
    if (keep[g]) {
      if (full.groups[g].kind == FusionKind::Attention)
        attention_.insert(static_cast<int>(members_.size()));
      add(full.groups[g].nodes);
    } else
      for (ValueId v : full.groups[g].nodes)
        add({v});
  }
}

// Orders the kernels, then fills in each one's inputs, outputs and bytes.
FusionPlan Fuser::finish() {
  std::vector<int> live;
  for (int grp = 0; grp < static_cast<int>(members_.size()); ++grp)
    if (!members_[grp].empty())
      live.push_back(grp);
  std::map<int, int> index; // group id -> position in `live`
  for (size_t i = 0; i < live.size(); ++i)
    index[live[i]] = static_cast<int>(i);
  size_t count = live.size();
  std::vector<std::set<int>> succ(count);
  for (size_t i = 0; i < count; ++i)
    for (ValueId v : members_[live[i]])
      for (ValueId u : users_[v])
        if (groupOf_[u] != live[i])
          succ[i].insert(index[groupOf_[u]]);

  // Scheduling hint for in-place updates: a kernel reading a parameter's old
  // value should run before the kernel computing its new value, so the update
  // can overwrite the parameter (planBuffers). Added only where it leaves the
  // kernel graph acyclic.
  auto reachable = [&](int from, int to) {
    std::vector<int> stack{from};
    std::vector<bool> seen(count, false);
    while (!stack.empty()) {
      int x = stack.back();
      stack.pop_back();
      if (x == to)
        return true;
      for (int s : succ[x])
        if (!seen[s]) {
          seen[s] = true;
          stack.push_back(s);
        }
    }
    return false;
  };
  for (const ParamUpdate &update : g_.updates) {
    if (!computed(update.value))
      continue;
    int writer = index[groupOf_[update.value]];
    for (ValueId u : users_[update.param]) {
      int reader = index[groupOf_[u]];
      if (reader != writer && !succ[reader].count(writer) && !reachable(writer, reader))
        succ[reader].insert(writer);
    }
  }

  // Collectives, and the kernels that only pack values for one, run as
  // soon as they are ready: a gradient bucket's all_reduce then starts right
  // after the kernel that completes the bucket and overlaps the rest of the
  // backward pass, instead of waiting for its place in program order.
  auto urgent = [&](int i) {
    bool feedsCollective = false;
    for (ValueId v : members_[live[i]]) {
      if (g_.node(v).op == OpKind::AllReduce)
        return true;
      if (escapes_[v])
        return false;
      for (ValueId u : users_[v]) {
        bool collective = g_.node(u).op == OpKind::AllReduce;
        if (!collective && groupOf_[u] != live[i])
          return false;
        feedsCollective = feedsCollective || collective;
      }
    }
    return feedsCollective;
  };
  // Kahn's algorithm; among ready kernels, urgent ones first, then the one
  // with the earliest node, which follows the program's own order.
  std::vector<int> indegree(count, 0);
  for (size_t i = 0; i < count; ++i)
    for (int s : succ[i])
      ++indegree[s];
  using Entry = std::tuple<bool, ValueId, int>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> ready;
  auto push = [&](int i) { ready.push({!urgent(i), minId_[live[i]], i}); };
  for (size_t i = 0; i < count; ++i)
    if (indegree[i] == 0)
      push(static_cast<int>(i));
  std::vector<int> order;
  while (!ready.empty()) {
    int i = std::get<2>(ready.top());
    ready.pop();
    order.push_back(i);
    for (int s : succ[i])
      if (--indegree[s] == 0)
        push(s);
  }
  assert(order.size() == count && "fusion produced a cyclic kernel graph");

  FusionPlan plan;
  plan.groupOf.assign(n_, -1);
  for (size_t pos = 0; pos < order.size(); ++pos)
    for (ValueId v : members_[live[order[pos]]])
      plan.groupOf[v] = static_cast<int>(pos);

  for (size_t pos = 0; pos < order.size(); ++pos) {
    FusionGroup group;
    group.nodes = members_[live[order[pos]]];
    bool attention = attention_.count(live[order[pos]]) > 0;
    KernelShape k;
    if (attention) {
      // The output matmul; in a backward pattern, dQ's product. (Not the
      // last node: views of the results may follow it.)
      for (ValueId v : group.nodes)
        if (g_.node(v).op == OpKind::MatMul &&
            (matchAttention(g_, v) || matchAttentionBackward(g_, v))) {
          k.hero = static_cast<int64_t>(v);
          break;
        }
    } else {
      [[maybe_unused]] FusionDecision ok = analyze(group.nodes, &k);
      assert(ok.fuse);
    }
    group.hero = k.hero;
    std::set<ValueId> inputs, constants;
    for (ValueId v : group.nodes) {
      for (ValueId o : g_.node(v).operands) {
        if (plan.groupOf[o] == static_cast<int>(pos))
          continue;
        if (fusionClass(g_.node(o).op) == FusionClass::Inlined)
          constants.insert(o);
        else
          inputs.insert(o);
      }
      bool isOut = escapes_[v];
      for (ValueId u : users_[v])
        isOut = isOut || plan.groupOf[u] != static_cast<int>(pos);
      if (isOut)
        group.outputs.push_back(v);
    }
    group.inputs.assign(inputs.begin(), inputs.end());
    group.constants.assign(constants.begin(), constants.end());
    auto bytes = [&](ValueId v) {
      return g_.type(v).numel() * static_cast<int64_t>(dtypeSize(g_.type(v).dtype));
    };
    for (ValueId v : group.inputs)
      group.bytesRead += bytes(v);
    // A constant stored element by element is read from memory too; fills
    // and iotas are computed from the index.
    for (ValueId v : group.constants)
      if (g_.node(v).attrs.has("data") && g_.type(v).numel() > 1)
        group.bytesRead += bytes(v);
    for (ValueId v : group.outputs)
      group.bytesWritten += bytes(v);

    if (attention)
      group.kind = FusionKind::Attention;
    else if (group.nodes.size() == 1)
      group.kind = FusionKind::Single;
    else if (k.mode == KernelShape::Mode::Epilogue)
      group.kind = FusionKind::Epilogue;
    else if (k.mode == KernelShape::Mode::Reduction)
      group.kind = FusionKind::Reduction;
    else
      group.kind = group.outputs.size() > 1 ? FusionKind::MultiOutput : FusionKind::Loop;

    // Name: index, then the hero and the other distinct ops in order (views
    // only when there is nothing else), at most four.
    std::vector<std::string_view> ops;
    auto addOp = [&](ValueId v) {
      std::string_view name = opInfo(g_.node(v).op).name;
      if (std::find(ops.begin(), ops.end(), name) == ops.end())
        ops.push_back(name);
    };
    if (group.hero >= 0)
      addOp(static_cast<ValueId>(group.hero));
    for (ValueId v : group.nodes)
      if (fusionClass(g_.node(v).op) != FusionClass::View)
        addOp(v);
    if (ops.empty())
      for (ValueId v : group.nodes)
        addOp(v);
    group.name = fmt::format("k{}", pos);
    if (attention)
      ops = {"attention"};
    if (attention && !matchAttention(g_, static_cast<ValueId>(group.hero)))
      ops = {"attention", "backward"};
    for (size_t i = 0; i < ops.size() && i < 4; ++i)
      group.name += fmt::format("_{}", ops[i]);
    if (ops.size() > 4)
      group.name += "_etc";
    plan.groups.push_back(std::move(group));
  }

  for (auto &[edge, rule] : refusals_)
    if (plan.groupOf[edge.first] != plan.groupOf[edge.second])
      plan.refusals.push_back({edge.first, edge.second, rule});
  return plan;
}

} // namespace

FusionPlan planFusion(const Graph &graph, const FusionOptions &options) {
  return Fuser(graph, options).run();
}

} // namespace stepc
