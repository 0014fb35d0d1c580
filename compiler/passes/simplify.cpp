// Algebraic simplification: local identities that remove a node or shorten a
// chain, each exact for every input (bit for bit, up to the sign of a zero:
// see x + 0). One forward sweep: operands are renamed to their replacements
// before a node is looked at, so chains (neg(neg(neg(neg(x))))) collapse in
// the same sweep; the sweep repeats until nothing changes.
//
// A node either becomes one of its operands (all its users are pointed there)
// or is rewritten in place into a cheaper node of the same type, so no node is
// ever inserted and the order stays topological.
//
// Not here, on purpose:
//  - x - x -> 0 for floats: inf - inf and nan - nan are nan, so it is only
//    done for integers.
//  - x * 0 -> 0: nan * 0 and inf * 0 are nan.
//  - transposes feeding matmul: matmul has no transpose flags; codegen folds
//    an operand's transpose into the kernel's indexing instead, which needs no
//    rewrite here (double transposes still collapse below).
#include "graph_passes.h"
#include "rewrite.h"

#include <optional>

namespace stepc::passes {
namespace {

// The value of every element of `id`, when it is a fill constant, possibly
// seen through reshapes and broadcasts (which do not change a fill).
std::optional<double> splatValue(const Graph &graph, ValueId id) {
  const Node *node = &graph.nodes[id];
  while (node->op == OpKind::Reshape || node->op == OpKind::BroadcastTo)
    node = &graph.nodes[node->operands[0]];
  if (node->op != OpKind::Constant)
    return std::nullopt;
  if (node->attrs.has("value"))
    return node->attrs.getReal("value");
  std::vector<double> data = node->attrs.getReals("data");
  if (data.empty())
    return std::nullopt;
  for (double d : data)
    if (!(d == data[0]))
      return std::nullopt;
  return data[0];
}

bool isIdentityPerm(const std::vector<int64_t> &perm) {
  for (size_t i = 0; i < perm.size(); ++i)
    if (perm[i] != static_cast<int64_t>(i))
      return false;
  return true;
}

class Simplifier {
public:
  explicit Simplifier(Graph &graph) : graph_(graph) {}

  bool sweep() {
    canonical_.resize(graph_.size());
    for (ValueId id = 0; id < graph_.size(); ++id)
      canonical_[id] = id;
    bool changed = false;
    for (ValueId id = 0; id < graph_.size(); ++id) {
      for (ValueId &operand : graph_.nodes[id].operands)
        operand = canonical_[operand];
      changed = simplify(id) || changed;
    }
    if (!changed)
      return false;
    applyReplacements(graph_, canonical_);
    eraseIfUnused(graph_, orphans_);
    orphans_.clear();
    return true;
  }

private:
  const Node &node(ValueId id) const { return graph_.nodes[id]; }
  const TensorType &type(ValueId id) const { return graph_.nodes[id].type; }
  bool isSplat(ValueId id, double value) const {
    std::optional<double> v = splatValue(graph_, id);
    return v && *v == value;
  }

  // `id` computes the same elements as `x`, broadcast to id's shape.
  bool becomes(ValueId id, ValueId x) {
    Node &n = graph_.nodes[id];
    orphans_.insert(orphans_.end(), n.operands.begin(), n.operands.end());
    if (type(x) == n.type) {
      canonical_[id] = x;
      orphans_.push_back(id);
      return true;
    }
    // An identity operand of a bigger shape broadcasts x; keep that part.
    n.op = OpKind::BroadcastTo;
    n.operands = {x};
    n.attrs = Attrs{{"shape", n.type.shape}};
    return true;
  }

  // x op e and e op x become x, for the identity e of a commutative op.
  bool dropsIdentity(ValueId id, double identity) {
    const Node &n = node(id);
    if (isSplat(n.operands[1], identity))
      return becomes(id, n.operands[0]);
    if (isSplat(n.operands[0], identity))
      return becomes(id, n.operands[1]);
    return false;
  }

  bool simplify(ValueId id) {
    const Node &n = node(id);
    switch (n.op) {
    case OpKind::Mul: return dropsIdentity(id, 1); // x * 1, 1 * x
    case OpKind::Add:
      // x + 0, 0 + x. For floats the one difference is the sign of a zero
      // result: -0 + 0 is +0 where x is -0. The two compare equal, and XLA's
      // simplifier makes the same trade.
      return dropsIdentity(id, 0);
    case OpKind::Sub:
      if (isSplat(n.operands[1], 0)) // x - 0 (as x + 0 above for x - -0)
        return becomes(id, n.operands[0]);
      // x - x is 0 for integers only: for floats, inf - inf and nan - nan
      // are nan, so the rewrite would not be NaN-safe.
      if (n.operands[0] == n.operands[1] && isInteger(n.type.dtype)) {
        Node &m = graph_.nodes[id];
        orphans_.insert(orphans_.end(), m.operands.begin(), m.operands.end());
        m.op = OpKind::Constant;
        m.operands.clear();
        m.attrs = Attrs{{"dtype", std::string(dtypeName(m.type.dtype))},
                        {"shape", m.type.shape},
                        {"value", int64_t(0)}};
        return true;
      }
      return false;
    case OpKind::Div: // x / 1
      if (isSplat(n.operands[1], 1))
        return becomes(id, n.operands[0]);
      return false;
    case OpKind::Neg: // neg(neg(x)): exact, integer wrap-around included
      if (node(n.operands[0]).op == OpKind::Neg)
        return becomes(id, node(n.operands[0]).operands[0]);
      return false;
    case OpKind::Cast: // to its own dtype
      return type(n.operands[0]) == n.type && becomes(id, n.operands[0]);
    case OpKind::Transpose: {
      const std::vector<int64_t> &outer = n.attrs.getInts("perm");
      if (isIdentityPerm(outer))
        return becomes(id, n.operands[0]);
      const Node &inner = node(n.operands[0]);
      if (inner.op != OpKind::Transpose)
        return false;
      // transpose(transpose(x, p), q): result axis i is x's axis p[q[i]].
      const std::vector<int64_t> &p = inner.attrs.getInts("perm");
      std::vector<int64_t> composed(outer.size());
      for (size_t i = 0; i < outer.size(); ++i)
        composed[i] = p[outer[i]];
      ValueId x = inner.operands[0];
      if (isIdentityPerm(composed))
        return becomes(id, x);
      Node &m = graph_.nodes[id];
      orphans_.push_back(m.operands[0]);
      m.operands = {x};
      m.attrs.set("perm", std::move(composed));
      return true;
    }
    case OpKind::Reshape:
    case OpKind::BroadcastTo: {
      // Reshape to its own shape, or a broadcast that adds nothing.
      if (type(n.operands[0]) == n.type)
        return becomes(id, n.operands[0]);
      // reshape(reshape(x)) and broadcast_to(broadcast_to(x)): the outer
      // node reads x directly. A broadcast of a broadcast is one broadcast
      // to the outer shape: every axis of x that broadcasts to the middle
      // shape broadcasts to the outer one (it is 1 or equal all the way).
      const Node &inner = node(n.operands[0]);
      if (inner.op != n.op)
        return false;
      Node &m = graph_.nodes[id];
      orphans_.push_back(m.operands[0]);
      m.operands = {inner.operands[0]};
      if (m.op == OpKind::Reshape)
        m.attrs = Attrs{{"shape", m.type.shape}}; // resolves a -1 of the original
      if (type(m.operands[0]) == m.type)
        return becomes(id, m.operands[0]);
      return true;
    }
    // A pattern match, not a per-op rule: the ops without a peephole stay.
    default:
      return false;
    }
  }

  Graph &graph_;
  std::vector<ValueId> canonical_;
  std::vector<ValueId> orphans_;
};

} // namespace

bool simplifyAlgebra(Graph &graph) {
  Simplifier simplifier(graph);
  bool changed = false;
  // Each sweep removes at least one node or shortens a chain; the bound only
  // guards against a rule that undoes another.
  for (int round = 0; round < 16 && simplifier.sweep(); ++round)
    changed = true;
  return changed;
}

} // namespace stepc::passes
