// The mixed-precision rewrite (train.h, MixedPrecision): a copy of the model
// whose f32 computations run in f16 or bf16, with casts where the dtypes meet.
#include "stepc/train.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace stepc {
namespace {

// Where an op computes in the rewritten graph, as autocast's op lists.
enum class Precision {
  Source,   // input or param: stays f32, cast to half where used
  Weak,     // constant or iota: stays f32, takes the dtype of what it meets
  Contract, // half operands, f32 accumulation, half result
  Wide,     // f32: ranges and sums where half loses too much (exp, log, sums)
  Follow,   // half, or f32 when an operand is f32
};

// By the op's class (ops.def): contractions take half operands and
// accumulate in f32; among the rest only the ops that leave half's range
// or sum many terms (exp, log, pow, sums and means) stay f32.
Precision precisionOf(OpKind op) {
  switch (opInfo(op).opClass) {
  case OpClass::Source: return Precision::Source;
  case OpClass::Constant: return Precision::Weak;
  case OpClass::Contraction: return Precision::Contract;
  case OpClass::Elementwise:
    return op == OpKind::Exp || op == OpKind::Log || op == OpKind::Pow ? Precision::Wide
                                                                        : Precision::Follow;
  case OpClass::Reduction:
    return op == OpKind::ReduceSum || op == OpKind::ReduceMean ? Precision::Wide
                                                               : Precision::Follow;
  case OpClass::Random:
  case OpClass::View:
  case OpClass::Indexed:
  case OpClass::Window:
  case OpClass::Scatter:
  case OpClass::Collective: return Precision::Follow;
  }
  throw std::logic_error("precisionOf: unknown op class");
}

class Rewriter {
public:
  Rewriter(const Graph &model, DType half) : model_(model), half_(half) {
    out_.name = model.name;
  }

  Graph run() {
    for (ValueId id = 0; id < model_.size(); ++id)
      rewrite(id);
    for (const GraphOutput &o : model_.outputs)
      out_.addOutput(o.name, as(o.value, model_.type(o.value).dtype, model_.node(o.value).loc));
    for (const ParamUpdate &u : model_.updates)
      out_.addUpdate(mapped_.at(u.param),
                     as(u.value, model_.type(u.param).dtype, model_.node(u.value).loc));
    verify(out_);
    return std::move(out_);
  }

private:
  // The model's value `id` in dtype `dtype`, cast once per (value, dtype).
  ValueId as(ValueId id, DType dtype, const SourceLoc &loc) {
    ValueId now = mapped_.at(id);
    if (out_.type(now).dtype == dtype)
      return now;
    auto [it, fresh] = casts_.try_emplace({id, dtype}, 0);
    if (fresh) {
      Node cast;
      cast.op = OpKind::Cast;
      cast.operands = {now};
      cast.attrs.set("dtype", std::string(dtypeName(dtype)));
      cast.loc = loc;
      it->second = out_.add(std::move(cast));
    }
    return it->second;
  }

  // f32 values of the model that are not computed from data: constants,
  // iotas, one-hots of integer inputs. They meet half values as half.
  bool weak(ValueId id) const { return weak_.at(id); }

  void rewrite(ValueId id) {
    const Node &node = model_.node(id);
    Precision precision = precisionOf(node.op);
    std::vector<ValueId> f32Operands;
    for (ValueId operand : node.operands)
      if (model_.type(operand).dtype == DType::F32)
        f32Operands.push_back(operand);
    bool producesF32 = node.type.dtype == DType::F32;
    bool allWeak = std::all_of(f32Operands.begin(), f32Operands.end(),
                               [&](ValueId v) { return weak(v); });
    weak_.push_back(producesF32 && precision != Precision::Source && allWeak);
    if (f32Operands.empty() || (allWeak && precision != Precision::Contract)) {
      // Sources and values computed from integers and constants alone stay
      // as they are (in f32).
      Node copy = node;
      for (ValueId &operand : copy.operands)
        operand = mapped_.at(operand);
      mapped_.push_back(out_.add(std::move(copy)));
      return;
    }
    if (addsABias(node)) {
      // A bias added to a product joins the product's f32 sum and the two
      // round to half once, as autocast's linear (addmm) does: the bias is
      // rounded to half first, then widened.
      Node copy = node;
      for (ValueId &operand : copy.operands)
        operand = products_.count(operand) ? products_.at(operand)
                                           : widen(as(operand, half_, node.loc), node.loc);
      ValueId sum = out_.add(std::move(copy));
      mapped_.push_back(castNode(sum, half_, node.loc));
      std::swap(out_.nodes[sum].name, out_.nodes[mapped_.back()].name);
      out_.reindexNames();
      return;
    }

    DType compute = half_;
    if (precision == Precision::Wide)
      compute = DType::F32;
    if (shiftsByMax(node))
      compute = DType::F32;
    if (precision == Precision::Follow)
      for (ValueId operand : f32Operands)
        if (!weak(operand) && out_.type(mapped_.at(operand)).dtype == DType::F32 &&
            precisionOf(model_.node(operand).op) != Precision::Source)
          compute = DType::F32;
    // An op whose result is not a float (a cast to an integer, a comparison,
    // argmax) reads f32 values as they are: in half, 257 would gather row
    // 256 and 70000 would compare as inf.
    if (!isFloat(node.type.dtype))
      compute = DType::F32;

    Node copy = node;
    for (ValueId &operand : copy.operands)
      if (model_.type(operand).dtype == DType::F32)
        operand = as(operand, compute, node.loc);
      else
        operand = mapped_.at(operand);
    // A dtype attribute of f32 (cast, one_hot) names the compute dtype now.
    if (const AttrValue *d = copy.attrs.find("dtype"))
      if (auto *name = std::get_if<std::string>(d); name && parseDType(*name) == DType::F32)
        copy.attrs.set("dtype", std::string(dtypeName(compute)));

    if (precision == Precision::Contract && node.op == OpKind::MatMul && producesF32 &&
        !readByBiasAdds(id)) {
      // The product of half operands, accumulated in f32 and rounded to half
      // once, is what a half matmul means (the interpreter and the kernels
      // accumulate half products in f32), so a product no bias joins is a
      // half matmul: the CPU kernel reads the halves themselves (bf16 pairs
      // on vdpbf16ps where the host has AVX512_BF16, else widened as they
      // are loaded), and so do its gradients' products, with no f32 copy of
      // any operand in memory.
      ValueId product = out_.add(std::move(copy));
      mapped_.push_back(product);
      return;
    }
    if (precision == Precision::Contract) {
      // A product a bias joins keeps its f32 sum for the bias (as autocast's
      // addmm), so it is written as an f32 product of the widened operands;
      // the CPU kernel still multiplies them as bf16 pairs where it can (the
      // widened values narrow back exactly). Convolutions, whose kernel
      // computes in f32, are written this way too.
      for (ValueId &operand : copy.operands)
        if (out_.type(operand).dtype == half_)
          operand = widen(operand, node.loc);
      ValueId product = out_.add(std::move(copy));
      mapped_.push_back(product);
      if (producesF32)
        products_[id] = product;
      // A product that only biases read needs no half copy.
      if (producesF32 && readOtherThanByBiasAdds(id)) {
        mapped_.back() = castNode(product, half_, node.loc);
        // Keep a name on the value the model's users read.
        std::swap(out_.nodes[product].name, out_.nodes[mapped_.back()].name);
        out_.reindexNames();
      }
      return;
    }
    mapped_.push_back(out_.add(std::move(copy)));
  }

  // An add of an f32 product (matmul, convolution) of the model and one of
  // its f32 params or inputs: a layer's bias.
  bool addsABias(const Node &add) const {
    if (add.op != OpKind::Add || add.operands[0] == add.operands[1])
      return false;
    for (int i = 0; i < 2; ++i) {
      ValueId product = add.operands[i], bias = add.operands[1 - i];
      if (model_.type(product).dtype == DType::F32 &&
          precisionOf(model_.node(product).op) == Precision::Contract &&
          model_.type(bias).dtype == DType::F32 &&
          precisionOf(model_.node(bias).op) == Precision::Source)
        return true;
    }
    return false;
  }

  // x - reduce_max(x): the shift that starts a softmax, log_softmax or
  // cross_entropy, which autocast computes in f32 from the f32-cast input
  // (rounding the shift to half would round the log-probabilities).
  bool shiftsByMax(const Node &node) const {
    if (node.op != OpKind::Sub)
      return false;
    const Node &max = model_.node(node.operands[1]);
    return max.op == OpKind::ReduceMax && max.operands[0] == node.operands[0];
  }

  // Whether a bias add reads the model's product `id`.
  bool readByBiasAdds(ValueId id) const {
    for (ValueId user = id + 1; user < model_.size(); ++user) {
      const Node &node = model_.node(user);
      if (std::count(node.operands.begin(), node.operands.end(), id) && addsABias(node))
        return true;
    }
    return false;
  }

  // Whether anything but bias adds (an output, an update, another op) reads
  // the model's value `id`.
  bool readOtherThanByBiasAdds(ValueId id) const {
    for (const GraphOutput &o : model_.outputs)
      if (o.value == id)
        return true;
    for (const ParamUpdate &u : model_.updates)
      if (u.value == id)
        return true;
    for (ValueId user = id + 1; user < model_.size(); ++user) {
      const Node &node = model_.node(user);
      if (std::count(node.operands.begin(), node.operands.end(), id) && !addsABias(node))
        return true;
    }
    return false;
  }

  ValueId castNode(ValueId value, DType dtype, const SourceLoc &loc) {
    Node cast;
    cast.op = OpKind::Cast;
    cast.operands = {value};
    cast.attrs.set("dtype", std::string(dtypeName(dtype)));
    cast.loc = loc;
    return out_.add(std::move(cast));
  }

  // A half value of the new graph in f32, cast once.
  ValueId widen(ValueId value, const SourceLoc &loc) {
    auto [it, fresh] = widened_.try_emplace(value, 0);
    if (fresh)
      it->second = castNode(value, DType::F32, loc);
    return it->second;
  }

  const Graph &model_;
  DType half_;
  Graph out_;
  std::vector<ValueId> mapped_; // model value -> its value in out_
  std::vector<bool> weak_;
  std::map<std::pair<ValueId, DType>, ValueId> casts_;
  std::map<ValueId, ValueId> widened_;
  std::map<ValueId, ValueId> products_; // model product -> its f32 sum in out_
};

} // namespace

DType parseMixedPrecision(std::string_view name, std::string_view what) {
  if (name == "bf16")
    return DType::BF16;
  if (name == "f16")
    return DType::F16;
  throw Error(fmt::format("{}: unknown precision '{}'; expected bf16 or f16", what, name));
}

Graph mixedPrecisionGraph(const Graph &model, DType compute) {
  if (!isHalf(compute))
    throw Error(fmt::format("mixed precision computes in f16 or bf16, not {}",
                            dtypeName(compute)));
  return Rewriter(model, compute).run();
}

} // namespace stepc
