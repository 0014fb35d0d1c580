// The graph IR: SSA nodes in topological order, one result per node.
#pragma once

#include "stepc/error.h"
#include "stepc/types.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace stepc {

// What kind of computation an op is; one per op in ops.def, which says
// what each means. Stages derive their treatment of an op from it.
enum class OpClass : uint8_t {
  Source,
  Constant,
  Elementwise,
  Random,
  View,
  Indexed,
  Reduction,
  Contraction,
  Window,
  Scatter,
  Collective,
};

enum OpFlags : uint32_t {
  kDifferentiable = 1u << 0,
  kScatterForm = 1u << 1,
};

enum class OpKind : uint16_t {
#define STEPC_OP(Enum, name, arity, opClass, flags) Enum,
#include "stepc/ops.def"
#undef STEPC_OP
};

inline constexpr int kNumOps = 0
#define STEPC_OP(Enum, name, arity, opClass, flags) +1
#include "stepc/ops.def"
#undef STEPC_OP
    ;

struct OpInfo {
  OpKind kind;
  std::string_view name;
  int arity; // -1: variadic (one or more operands)
  OpClass opClass;
  uint32_t flags;

  bool is(OpFlags flag) const { return (flags & flag) != 0; }
};

const OpInfo &opInfo(OpKind kind);
std::span<const OpInfo> allOps();
std::optional<OpKind> findOp(std::string_view name);

// An attribute value. Lists of integers and of reals are distinct types; the
// accessors below convert int to real where a real is asked for.
using AttrValue = std::variant<int64_t, double, std::vector<int64_t>,
                               std::vector<double>, std::string>;

// Named attributes, kept sorted by name so printing is canonical.
class Attrs {
public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<std::string, AttrValue>> entries);

  void set(std::string name, AttrValue value);
  bool has(std::string_view name) const;
  const AttrValue *find(std::string_view name) const;
  const std::vector<std::pair<std::string, AttrValue>> &entries() const {
    return entries_;
  }
  bool empty() const { return entries_.empty(); }

  // Typed getters: throw stepc::Error naming the attribute when it is missing
  // or of the wrong type.
  int64_t getInt(std::string_view name) const;
  double getReal(std::string_view name) const;
  const std::vector<int64_t> &getInts(std::string_view name) const;
  std::vector<double> getReals(std::string_view name) const;
  const std::string &getString(std::string_view name) const;
  DType getDType(std::string_view name) const;

  bool operator==(const Attrs &) const = default;

private:
  std::vector<std::pair<std::string, AttrValue>> entries_;
};

// "1", "0.5", "[1,2]", "he_uniform"
std::string attrValueString(const AttrValue &value);
// For messages: lists past 8 entries show the first 8 and their length,
// "[1,2,3,4,5,6,7,8,... (500000 entries)]", and long strings are cut, so a
// huge attribute cannot make a megabyte-long error.
std::string attrValueSummary(const AttrValue &value);

using ValueId = uint32_t;

struct Node {
  OpKind op = OpKind::Input;
  std::vector<ValueId> operands;
  Attrs attrs;
  TensorType type; // result type, filled by shape inference
  std::string name; // required for inputs and params; optional otherwise
  SourceLoc loc;    // not part of equality

  bool operator==(const Node &other) const {
    return op == other.op && operands == other.operands &&
           attrs == other.attrs && type == other.type && name == other.name;
  }
};

struct GraphOutput {
  std::string name;
  ValueId value;
  bool operator==(const GraphOutput &) const = default;
};

// After a step, `param` takes the value `value` (same type): how a training
// step keeps weights and optimizer state between calls.
struct ParamUpdate {
  ValueId param;
  ValueId value;
  bool operator==(const ParamUpdate &) const = default;
};

class Graph {
public:
  std::string name = "main";
  std::vector<Node> nodes; // topological: operands precede users
  std::vector<GraphOutput> outputs;
  std::vector<ParamUpdate> updates;

  // Infers the node's type, checks its operands and name, and appends it.
  // Throws stepc::Error "LOC: error: OP: message" on a bad node.
  ValueId add(Node node);
  void addOutput(std::string name, ValueId value);
  // Throws unless `param` is a parameter not yet updated and `value` has its type.
  void addUpdate(ValueId param, ValueId value);

  const Node &node(ValueId id) const { return nodes.at(id); }
  const TensorType &type(ValueId id) const { return nodes.at(id).type; }
  size_t size() const { return nodes.size(); }

  std::vector<ValueId> inputs() const;
  std::vector<ValueId> params() const;
  // The nodes of one op, in graph order.
  std::vector<ValueId> nodesOf(OpKind op) const;
  // Through a name index, so adding n named nodes costs O(n), not O(n^2).
  // add() keeps the index current; code that renames nodes or replaces
  // `nodes` wholesale calls reindexNames() afterwards. Nodes appended to
  // `nodes` directly, and a shrunk `nodes`, are picked up on the next lookup.
  std::optional<ValueId> findNamed(std::string_view name) const;
  std::optional<ValueId> findOutput(std::string_view name) const;
  void reindexNames();
  // Replaces `nodes` with a reordered or extended list, `newId` giving each
  // old value's id in it, and moves the outputs and param updates along.
  void replaceNodes(std::vector<Node> reordered, const std::vector<ValueId> &newId);

  bool operator==(const Graph &other) const {
    return name == other.name && nodes == other.nodes && outputs == other.outputs &&
           updates == other.updates;
  }

private:
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // name -> node, for the nodes [0, indexed_); mutable: a const lookup may
  // catch the index up with nodes appended directly.
  mutable std::unordered_map<std::string, ValueId, NameHash, std::equal_to<>> nameIndex_;
  mutable size_t indexed_ = 0;
  void syncNameIndex() const;
};

// Which values `value` is computed from, itself included (indexed by ValueId).
std::vector<bool> valuesBehind(const Graph &graph, ValueId value);
// Which values the graph's outputs are computed from (a training step's
// forward pass), indexed by ValueId.
std::vector<bool> valuesBehindOutputs(const Graph &graph);

// Shape and dtype rule of one op (one case per op; compiler/ir/shape_rules.cpp).
// Throws stepc::Error with a message that starts with the op name but carries
// no location; Graph::add and verify() prefix the node's location.
TensorType inferType(OpKind op, const Attrs &attrs,
                     std::span<const TensorType> operands);

// Re-runs shape inference over the whole graph and checks its structure
// (operand order, unique names, outputs). Throws the first error found.
void verify(const Graph &graph);

// A copy of `graph` with dtype `from` replaced by `to` in every type and
// dtype attribute (used to run a model in f64 for gradient checks).
Graph convertFloatType(const Graph &graph, DType from, DType to);

// Parameter initializers, stored as attributes of a param node.
struct Init {
  enum class Kind {
    Zeros,
    Ones,
    Constant,      // value
    Normal,        // mean, std
    Uniform,       // low, high
    HeNormal,      // std = sqrt(2 / fan_in)
    HeUniform,     // bound = sqrt(6 / fan_in)
    XavierNormal,  // std = sqrt(2 / (fan_in + fan_out))
    XavierUniform, // bound = sqrt(6 / (fan_in + fan_out))
  };
  Kind kind = Kind::Zeros;
  double a = 0; // value | mean | low
  double b = 0; // std | high
  int64_t seed = 0;

  static Init zeros() { return {Kind::Zeros}; }
  static Init ones() { return {Kind::Ones}; }
  static Init constant(double v) { return {Kind::Constant, v}; }
  static Init normal(double mean, double std, int64_t seed) {
    return {Kind::Normal, mean, std, seed};
  }
  static Init uniform(double low, double high, int64_t seed) {
    return {Kind::Uniform, low, high, seed};
  }
  static Init heNormal(int64_t seed) { return {Kind::HeNormal, 0, 0, seed}; }
  static Init heUniform(int64_t seed) { return {Kind::HeUniform, 0, 0, seed}; }
  static Init xavierNormal(int64_t seed) {
    return {Kind::XavierNormal, 0, 0, seed};
  }
  static Init xavierUniform(int64_t seed) {
    return {Kind::XavierUniform, 0, 0, seed};
  }

  // Attribute form: init=<name> plus the numbers that kind uses. A param
  // node's attrs are these plus dtype and shape, which fromAttrs ignores.
  Attrs toAttrs() const;
  static Init fromAttrs(const Attrs &attrs); // throws stepc::Error
};

std::string_view initKindName(Init::Kind kind);
// "zeros", "ones", ..., "xavier_uniform"; throws stepc::Error listing them on
// others.
Init::Kind parseInitKind(std::string_view name);

} // namespace stepc
