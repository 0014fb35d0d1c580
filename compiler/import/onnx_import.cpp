// ONNX import: reads a ModelProto and builds a stepc Graph, one mapping
// function per ONNX op type (onnx_ops.cpp).
//
// Every ONNX value is a Symbol: a graph input, an initializer (a param, or a
// constant when it is an integer or bool tensor), a constant, or a node
// result. Values known at import (constants, and every node whose operands
// are all known) are folded by running the reference interpreter's kernels
// on them, so Shape -> Gather -> Concat -> Reshape chains become static
// shapes, as stepc requires. Constants and params enter the graph only when
// some node uses them as a runtime operand, and a final dead-code pass drops
// whatever only fed import-time computations.
//
// We handle per-opset differences in the mapping functions rather than
// running onnx::version_conversion first: the converter in ONNX 1.12 has no
// adapters for several ops in the test data and rewrites models we could
// otherwise read, and the differences we meet (axes as attribute or input,
// pre-13 Softmax coercion, Clip/Pad/Slice/Split arguments) are a few lines
// each.
#include "onnx_context.h"
#include "transposed_params.h"

#include "stepc/file.h"
#include "stepc/interpreter.h"
#include "stepc/npy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace stepc {

namespace {

std::string kindName(OnnxProblem::Kind kind) {
  switch (kind) {
  case OnnxProblem::Kind::Operator: return "unsupported operator";
  case OnnxProblem::Kind::DType: return "unsupported type";
  case OnnxProblem::Kind::Feature: return "unsupported";
  case OnnxProblem::Kind::StaticInput: return "needs a value at import";
  case OnnxProblem::Kind::Invalid: return "invalid";
  }
  return "invalid";
}

std::string problemLine(const OnnxProblem &p) {
  if (p.opType.empty())
    return fmt::format("  {}: {}", kindName(p.kind), p.reason);
  std::string node =
      p.nodeName.empty() ? fmt::format("#{}", p.nodeIndex) : fmt::format("'{}'", p.nodeName);
  return fmt::format("  {} node {}: {}: {}", p.opType, node, kindName(p.kind), p.reason);
}

} // namespace

OnnxImportError::OnnxImportError(const std::string &what, std::vector<OnnxProblem> problems)
    : Error(what), problems_(std::move(problems)) {}

namespace onnx_import {

std::optional<DType> dtypeFromOnnx(int32_t elemType) {
  switch (elemType) {
  case onnx::TensorProto::FLOAT: return DType::F32;
  case onnx::TensorProto::DOUBLE: return DType::F64;
  case onnx::TensorProto::INT32: return DType::I32;
  case onnx::TensorProto::INT64: return DType::I64;
  case onnx::TensorProto::BOOL: return DType::Bool;
  case onnx::TensorProto::FLOAT16: return DType::F16;
  case onnx::TensorProto::BFLOAT16: return DType::BF16;
  case onnx::TensorProto::INT8: return DType::I8;
  case onnx::TensorProto::UINT8: return DType::U8;
  case onnx::TensorProto::INT16: return DType::I16;
  case onnx::TensorProto::UINT16: return DType::U16;
  case onnx::TensorProto::UINT32: return DType::U32;
  case onnx::TensorProto::UINT64: return DType::U64;
  default: return std::nullopt;
  }
}

std::string onnxTypeName(int32_t elemType) {
  if (!onnx::TensorProto_DataType_IsValid(elemType))
    return fmt::format("{} (unknown to ONNX)", elemType);
  std::string name = onnx::TensorProto_DataType_Name(elemType);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name;
}

namespace {

std::string dtypeProblem(const std::string &what, int32_t elemType) {
  return fmt::format("{} has element type {}; stepc supports float, double, "
                     "float16, bfloat16, int8..int64, uint8..uint64 and bool",
                     what, onnxTypeName(elemType));
}

template <class T, class Field>
void copyTyped(Tensor &t, const Field &field, const std::string &what, const char *name) {
  if (static_cast<int64_t>(field.size()) != t.numel())
    throw Error(fmt::format("{}: {} holds {} values but the shape {} needs {}", what, name,
                            field.size(), shapeString(t.shape()), t.numel()));
  if constexpr (std::is_same_v<T, bool>) {
    for (int64_t i = 0; i < t.numel(); ++i)
      t.bytes()[i] = std::byte(field.Get(static_cast<int>(i)) != 0 ? 1 : 0);
  } else {
    T *out = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i)
      out[i] = static_cast<T>(field.Get(static_cast<int>(i)));
  }
}

// As copyTyped, for types kept in a wider field (int8..uint16 and the halves'
// bit patterns in int32_data, uint32 in uint64_data): a value outside T's
// range is a corrupt file, not something to wrap silently.
template <class T, class Field>
void copyNarrowed(Tensor &t, const Field &field, const std::string &what, const char *name) {
  for (int64_t i = 0; i < static_cast<int64_t>(field.size()); ++i)
    if (!std::in_range<T>(field.Get(static_cast<int>(i))))
      throw Error(fmt::format("{}: {}[{}] = {} is out of range for {}", what, name, i,
                              field.Get(static_cast<int>(i)), dtypeName(t.dtype())));
  copyTyped<T>(t, field, what, name);
}

} // namespace

Tensor tensorFromProto(const onnx::TensorProto &proto, const std::string &what) {
  if (proto.data_location() == onnx::TensorProto::EXTERNAL || proto.external_data_size() > 0)
    throw Unsupported{OnnxProblem::Kind::Feature,
                      fmt::format("{} keeps its data in an external file", what), ""};
  if (proto.has_segment())
    throw Unsupported{OnnxProblem::Kind::Feature, fmt::format("{} is segmented", what), ""};
  std::optional<DType> dtype = dtypeFromOnnx(proto.data_type());
  if (!dtype)
    throw Unsupported{OnnxProblem::Kind::DType, dtypeProblem(what, proto.data_type()), "",
                      onnxTypeName(proto.data_type())};
  Shape shape(proto.dims().begin(), proto.dims().end());
  for (int64_t d : shape)
    if (d < 0)
      throw Error(fmt::format("{}: negative dimension in {}", what, shapeString(shape)));
  int64_t numel = checkedNumel(shape);
  size_t elem = dtypeSize(*dtype);
  // Check the data's size before allocating: a corrupt file may claim a
  // shape of terabytes.
  if (proto.has_raw_data()) {
    const std::string &raw = proto.raw_data();
    if (numel > static_cast<int64_t>(raw.size()) || raw.size() != static_cast<size_t>(numel) * elem)
      throw Error(fmt::format("{}: raw_data has {} bytes but {} {} needs {}", what, raw.size(),
                              dtypeName(*dtype), shapeString(shape),
                              static_cast<uint64_t>(numel) * elem));
    Tensor t(*dtype, shape);
    if (!raw.empty())
      std::memcpy(t.bytes(), raw.data(), raw.size());
    if (*dtype == DType::Bool)
      for (int64_t i = 0; i < numel; ++i)
        t.bytes()[i] = std::byte(t.bytes()[i] != std::byte(0) ? 1 : 0);
    return t;
  }
  int64_t available = 0;
  switch (*dtype) {
  case DType::F32: available = proto.float_data_size(); break;
  case DType::F64: available = proto.double_data_size(); break;
  case DType::I32:
  case DType::Bool:
  // ONNX keeps f16/bf16 bit patterns and 8/16-bit integers in int32_data,
  // one per entry, and uint32/uint64 in uint64_data.
  case DType::F16:
  case DType::BF16:
  case DType::I8:
  case DType::U8:
  case DType::I16:
  case DType::U16: available = proto.int32_data_size(); break;
  case DType::I64: available = proto.int64_data_size(); break;
  case DType::U32:
  case DType::U64: available = proto.uint64_data_size(); break;
  }
  if (available != numel)
    throw Error(fmt::format("{}: holds {} values but {} {} needs {}", what, available,
                            dtypeName(*dtype), shapeString(shape), numel));
  Tensor t(*dtype, shape);
  switch (*dtype) {
  case DType::F32: copyTyped<float>(t, proto.float_data(), what, "float_data"); break;
  case DType::F64: copyTyped<double>(t, proto.double_data(), what, "double_data"); break;
  case DType::I32: copyTyped<int32_t>(t, proto.int32_data(), what, "int32_data"); break;
  case DType::Bool: copyTyped<bool>(t, proto.int32_data(), what, "int32_data"); break;
  case DType::I64: copyTyped<int64_t>(t, proto.int64_data(), what, "int64_data"); break;
  case DType::F16:
  case DType::BF16:
  case DType::U16: copyNarrowed<uint16_t>(t, proto.int32_data(), what, "int32_data"); break;
  case DType::I8: copyNarrowed<int8_t>(t, proto.int32_data(), what, "int32_data"); break;
  case DType::U8: copyNarrowed<uint8_t>(t, proto.int32_data(), what, "int32_data"); break;
  case DType::I16: copyNarrowed<int16_t>(t, proto.int32_data(), what, "int32_data"); break;
  case DType::U32: copyNarrowed<uint32_t>(t, proto.uint64_data(), what, "uint64_data"); break;
  case DType::U64: copyTyped<uint64_t>(t, proto.uint64_data(), what, "uint64_data"); break;
  }
  return t;
}

// ---------------------------------------------------------------------------
// The importer.

namespace {

bool identStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool identChar(char c) {
  return identStart(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '.';
}

// An ONNX name as a .sg identifier: other characters become '_'.
std::string identifier(std::string_view name) {
  std::string out;
  for (char c : name)
    out += identChar(c) ? c : '_';
  if (out.empty() || !identStart(out[0]))
    out = "v_" + out;
  return out;
}

bool isConstantLike(OpKind op) {
  return op != OpKind::Input && op != OpKind::Parameter && op != OpKind::Dropout;
}

// Folding runs the interpreter at import; bound the work it may do.
constexpr int64_t kMaxFoldElements = int64_t(1) << 20;

} // namespace

class Importer {
public:
  Importer(const onnx::ModelProto &model, std::string what, const std::set<std::string> &bound,
           const TensorMap &inputValues)
      : model_(model), what_(std::move(what)), bound_(bound), inputValues_(inputValues),
        b_(identifier(model.graph().name().empty() ? "main" : model.graph().name())) {}

  OnnxModel run();

  // --- for NodeContext ---
  struct Symbol {
    enum class Kind { Input, Param, Constant, Result, Poisoned };
    Kind kind = Kind::Poisoned;
    std::optional<ValueId> id;
    std::optional<Tensor> value; // Constant, folded Result, or a Param's initial value
    std::string name;            // Input, Param: the stepc name
    std::string onnxName;
  };
  const Symbol *find(const std::string &name) const {
    auto it = symbols_.find(name);
    return it == symbols_.end() ? nullptr : &it->second;
  }
  Symbol &symbol(const std::string &name) {
    auto it = symbols_.find(name);
    if (it == symbols_.end())
      throw Error(fmt::format("value '{}' is not defined before this node", name));
    return it->second;
  }
  Value valueOf(Symbol &s, const SourceLoc &loc);
  TensorType typeOf(const Symbol &s) const {
    return s.id ? b_.graph().type(*s.id) : s.value->type();
  }
  Value constantOf(const Tensor &value, const SourceLoc &loc);
  void define(const std::string &name, Symbol s) { symbols_[name] = std::move(s); }
  // The ONNX names of the graph inputs a node result depends on.
  std::vector<std::string> inputsBehind(ValueId id) const;

private:
  void importInputs(std::vector<std::string> &stepcNames, std::vector<std::string> &onnxNames);
  void importInitializers();
  void importNode(const onnx::NodeProto &node, int index);
  void fold(ValueId first);
  void problem(OnnxProblem::Kind kind, std::string reason, const onnx::NodeProto *node = nullptr,
               std::string input = {}, std::string typeName = {}) {
    problems_.push_back({kind, node ? node->op_type() : "", node ? node->name() : "",
                         node ? nodeIndex_ : -1, std::move(reason), std::move(input),
                         std::move(typeName)});
  }
  std::string uniqueName(std::string_view onnxName) {
    std::string base = identifier(onnxName), name = base;
    for (int n = 1; !used_.insert(name).second; ++n)
      name = fmt::format("{}_{}", base, n);
    return name;
  }
  Graph withoutDeadNodes(const Graph &g) const;

  const onnx::ModelProto &model_;
  std::string what_;
  const std::set<std::string> &bound_;
  const TensorMap &inputValues_;
  GraphBuilder b_;
  int64_t opset_ = 1;
  std::map<std::string, Symbol> symbols_;
  std::vector<std::optional<Tensor>> folded_; // by ValueId
  std::set<std::string> used_;
  std::vector<OnnxProblem> problems_;
  int nodeIndex_ = -1; // of the node being imported
  TensorMap params_;
  SourceLoc graphLoc_;
};

Value Importer::valueOf(Symbol &s, const SourceLoc &loc) {
  if (s.id)
    return b_.value(*s.id);
  if (s.kind == Symbol::Kind::Param) {
    const Tensor &init = *s.value;
    Attrs attrs = Init::zeros().toAttrs();
    attrs.set("dtype", std::string(dtypeName(init.dtype())));
    attrs.set("shape", init.shape());
    s.id = b_.op(OpKind::Parameter, {}, std::move(attrs), loc, s.name).id();
    params_[s.name] = init;
  } else {
    s.id = constantOf(*s.value, loc).id();
  }
  return b_.value(*s.id);
}

Value Importer::constantOf(const Tensor &value, const SourceLoc &loc) {
  Attrs attrs{{"dtype", std::string(dtypeName(value.dtype()))}, {"shape", value.shape()}};
  bool uniform = value.numel() > 0;
  for (int64_t i = 1; uniform && i < value.numel(); ++i)
    uniform =
        value.real(i) == value.real(0) || (std::isnan(value.real(i)) && std::isnan(value.real(0)));
  // A fill is read back through a double: integers past 2^53 (u64 ones
  // above INT64_MAX included) go into `data` as their exact bits instead.
  bool exactFill = isFloat(value.dtype()) || value.numel() == 0 ||
                   (value.integer(0) >= 0 && value.integer(0) < (int64_t(1) << 53)) ||
                   (!isUnsigned(value.dtype()) && value.integer(0) > -(int64_t(1) << 53));
  if (uniform && exactFill) {
    attrs.set("value", value.real(0));
  } else if (isFloat(value.dtype())) {
    attrs.set("data", value.reals());
  } else {
    std::vector<int64_t> data(static_cast<size_t>(value.numel()));
    for (int64_t i = 0; i < value.numel(); ++i)
      data[i] = value.integer(i);
    attrs.set("data", std::move(data));
  }
  Value v = b_.op(OpKind::Constant, {}, std::move(attrs), loc);
  folded_.resize(b_.graph().size());
  folded_[v.id()] = value;
  return v;
}

std::vector<std::string> Importer::inputsBehind(ValueId id) const {
  const Graph &g = b_.graph();
  std::vector<bool> behind = valuesBehind(g, id);
  std::set<std::string> names;
  for (ValueId v : g.inputs())
    if (behind[v])
      names.insert(g.node(v).name);
  std::vector<std::string> out;
  for (const auto &[onnxName, s] : symbols_)
    if (s.kind == Symbol::Kind::Input && names.count(s.name))
      out.push_back(onnxName);
  return out;
}

void Importer::fold(ValueId first) {
  const Graph &g = b_.graph();
  folded_.resize(g.size());
  for (ValueId id = first; id < g.size(); ++id) {
    const Node &node = g.node(id);
    if (folded_[id] || !isConstantLike(node.op) || node.type.numel() > kMaxFoldElements)
      continue;
    std::vector<const Tensor *> operands;
    for (ValueId o : node.operands) {
      if (!folded_[o])
        break;
      operands.push_back(&*folded_[o]);
    }
    if (operands.size() == node.operands.size())
      folded_[id] = evaluateNode(node, operands);
  }
}

void Importer::importInputs(std::vector<std::string> &stepcNames,
                            std::vector<std::string> &onnxNames) {
  const onnx::GraphProto &graph = model_.graph();
  std::set<std::string> initializers;
  for (const auto &init : graph.initializer())
    initializers.insert(init.name());
  for (const onnx::ValueInfoProto &input : graph.input()) {
    const std::string &name = input.name();
    if (initializers.count(name))
      continue; // an initializer listed as an input (IR < 4): a param
    onnxNames.push_back(name);
    if (bound_.count(name)) {
      Tensor value = inputValues_.at(name);
      // NumPy has no bfloat16: a bf16 input's .npy holds its bits as u16.
      if (input.type().tensor_type().elem_type() == onnx::TensorProto::BFLOAT16)
        value = bitsAs(std::move(value), DType::BF16);
      Symbol s{Symbol::Kind::Constant, std::nullopt, std::move(value), "", name};
      define(name, std::move(s));
      stepcNames.push_back("");
      continue;
    }
    stepcNames.push_back("");
    define(name, Symbol{Symbol::Kind::Poisoned, {}, {}, "", name});
    std::string what = fmt::format("graph input '{}'", name);
    const onnx::TypeProto &type = input.type();
    if (!type.has_tensor_type()) {
      problem(OnnxProblem::Kind::Feature,
              fmt::format("{} is not a tensor (sequences, maps and optionals are not "
                          "supported)",
                          what));
      continue;
    }
    std::optional<DType> dtype = dtypeFromOnnx(type.tensor_type().elem_type());
    if (!dtype) {
      problem(OnnxProblem::Kind::DType, dtypeProblem(what, type.tensor_type().elem_type()), nullptr,
              {}, onnxTypeName(type.tensor_type().elem_type()));
      continue;
    }
    if (!type.tensor_type().has_shape()) {
      problem(OnnxProblem::Kind::Feature,
              fmt::format("{} has no shape; stepc shapes are static", what));
      continue;
    }
    Shape shape;
    std::string dynamic;
    for (const auto &dim : type.tensor_type().shape().dim()) {
      if (dim.has_dim_value() && dim.dim_value() >= 0)
        shape.push_back(dim.dim_value());
      else
        dynamic = dim.has_dim_param() ? "'" + dim.dim_param() + "'" : "?";
    }
    if (!dynamic.empty()) {
      problem(
          OnnxProblem::Kind::Feature,
          fmt::format("{} has the dynamic dimension {}; stepc shapes are static", what, dynamic));
      continue;
    }
    try {
      std::string stepcName = uniqueName(name);
      Value v = b_.input(stepcName, *dtype, shape);
      define(name, Symbol{Symbol::Kind::Input, v.id(), {}, stepcName, name});
      stepcNames.back() = stepcName;
    } catch (const Error &e) {
      problem(OnnxProblem::Kind::Invalid, fmt::format("{}: {}", what, e.what()));
    }
  }
}

void Importer::importInitializers() {
  const onnx::GraphProto &graph = model_.graph();
  for (const auto &sparse : graph.sparse_initializer())
    problem(OnnxProblem::Kind::Feature,
            fmt::format("sparse initializer '{}' is not supported", sparse.values().name()));
  for (const onnx::TensorProto &init : graph.initializer()) {
    std::string what = fmt::format("initializer '{}'", init.name());
    try {
      Tensor value = tensorFromProto(init, what);
      if (isFloat(value.dtype()))
        define(
            init.name(),
            Symbol{
                Symbol::Kind::Param, {}, std::move(value), uniqueName(init.name()), init.name()});
      else
        define(init.name(), Symbol{Symbol::Kind::Constant, {}, std::move(value), "", init.name()});
    } catch (const Unsupported &u) {
      problem(u.kind, u.reason, nullptr, {}, u.typeName);
      define(init.name(), Symbol{});
    } catch (const Error &e) {
      problem(OnnxProblem::Kind::Invalid, e.what());
      define(init.name(), Symbol{});
    }
  }
}

void Importer::importNode(const onnx::NodeProto &node, int index) {
  nodeIndex_ = index;
  auto poisonOutputs = [&] {
    for (const std::string &out : node.output())
      if (!out.empty())
        define(out, Symbol{});
  };
  bool defaultDomain = node.domain().empty() || node.domain() == "ai.onnx";
  MapFn map = defaultDomain ? findMapping(node.op_type())
               : node.domain() == "ai.onnx.preview.training" ? findTrainingMapping(node.op_type())
                                                             : nullptr;
  if (!map) {
    problem(OnnxProblem::Kind::Operator,
            defaultDomain ? fmt::format("no mapping for ONNX operator {}", node.op_type())
                          : fmt::format("operator {} of domain '{}' is not supported",
                                        node.op_type(), node.domain()),
            &node);
    poisonOutputs();
    return;
  }
  // A node after an unsupported one cannot be checked: its operands are
  // unknown. Its own problem, if any, shows once the first one is fixed.
  for (const std::string &in : node.input()) {
    const Symbol *s = find(in);
    if (!in.empty() && s && s->kind == Symbol::Kind::Poisoned) {
      poisonOutputs();
      return;
    }
  }
  std::string where = node.name().empty()
                          ? fmt::format("{} node #{}", node.op_type(), index)
                          : fmt::format("{} node '{}'", node.op_type(), node.name());
  SourceLoc loc(fmt::format("{}: {}", what_, where), 0, 0);
  ValueId first = static_cast<ValueId>(b_.graph().size());
  try {
    LocationScope scope(b_, loc);
    NodeContext ctx(*this, node, opset_, b_, loc);
    map(ctx);
    for (int i = 0; i < node.output_size(); ++i)
      if (!node.output(i).empty() && !find(node.output(i)))
        throw Unsupported{OnnxProblem::Kind::Feature,
                          fmt::format("output {} ('{}') is not supported", i, node.output(i)), ""};
  } catch (const Unsupported &u) {
    problem(u.kind, u.reason, &node, u.input, u.typeName);
    poisonOutputs();
    return;
  } catch (const Error &e) {
    problem(OnnxProblem::Kind::Invalid, e.what(), &node);
    poisonOutputs();
    return;
  } catch (const std::exception &e) {
    problem(OnnxProblem::Kind::Invalid, fmt::format("internal error: {}", e.what()), &node);
    poisonOutputs();
    return;
  }
  fold(first);
  for (const std::string &out : node.output()) {
    auto it = symbols_.find(out);
    if (!out.empty() && it != symbols_.end() && it->second.id && !it->second.value &&
        it->second.kind == Symbol::Kind::Result && folded_.at(*it->second.id))
      it->second.value = folded_[*it->second.id];
  }
}

Graph Importer::withoutDeadNodes(const Graph &g) const {
  std::vector<bool> live(g.size(), false);
  for (const GraphOutput &out : g.outputs)
    live[out.value] = true;
  for (size_t i = g.size(); i-- > 0;) {
    if (g.node(i).op == OpKind::Input)
      live[i] = true;
    if (live[i])
      for (ValueId o : g.node(i).operands)
        live[o] = true;
  }
  Graph out;
  out.name = g.name;
  std::vector<ValueId> remap(g.size(), 0);
  for (size_t i = 0; i < g.size(); ++i) {
    if (!live[i])
      continue;
    Node node = g.node(i);
    for (ValueId &o : node.operands)
      o = remap[o];
    remap[i] = out.add(std::move(node));
  }
  for (const GraphOutput &o : g.outputs)
    out.addOutput(o.name, remap[o.value]);
  return out;
}

OnnxModel Importer::run() {
  if (!model_.has_graph())
    throw OnnxImportError(fmt::format("{}: not an ONNX model (it has no graph)", what_), {});
  const onnx::GraphProto &graph = model_.graph();
  for (const auto &op : model_.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx")
      opset_ = op.version();

  OnnxModel result;
  result.opset = opset_;
  importInputs(result.inputs, result.onnxInputs);
  importInitializers();
  for (int i = 0; i < graph.node_size(); ++i)
    importNode(graph.node(i), i);

  std::set<std::string> outputNames;
  for (const onnx::ValueInfoProto &out : graph.output()) {
    const Symbol *s = find(out.name());
    if (!s) {
      problem(OnnxProblem::Kind::Invalid,
              fmt::format("graph output '{}' is not produced by any node", out.name()));
      continue;
    }
    if (s->kind == Symbol::Kind::Poisoned)
      continue;
    try {
      Value v = valueOf(symbol(out.name()), graphLoc_);
      std::string base = identifier(out.name()), name = base;
      for (int n = 1; !outputNames.insert(name).second; ++n)
        name = fmt::format("{}_{}", base, n);
      const onnx::TypeProto &declared = out.type();
      if (declared.has_tensor_type()) {
        const auto &tt = declared.tensor_type();
        std::optional<DType> dt = dtypeFromOnnx(tt.elem_type());
        if (tt.elem_type() != 0 && !dt) {
          problem(OnnxProblem::Kind::DType,
                  dtypeProblem(fmt::format("graph output '{}'", out.name()), tt.elem_type()),
                  nullptr, {}, onnxTypeName(tt.elem_type()));
          continue;
        }
        bool staticShape = tt.has_shape();
        Shape shape;
        for (const auto &d : tt.shape().dim()) {
          staticShape = staticShape && d.has_dim_value();
          shape.push_back(d.dim_value());
        }
        TensorType got = v.type();
        if ((dt && *dt != got.dtype) || (staticShape && shape != got.shape))
          problem(OnnxProblem::Kind::Invalid,
                  fmt::format("graph output '{}': stepc computes {} but the model declares "
                              "{}{}",
                              out.name(), typeString(got), onnxTypeName(tt.elem_type()),
                              staticShape ? shapeString(shape) : ""));
      }
      b_.output(name, v);
      result.onnxOutputs.push_back(out.name());
    } catch (const Error &e) {
      problem(OnnxProblem::Kind::Invalid,
              fmt::format("graph output '{}': {}", out.name(), e.what()));
    }
  }
  if (problems_.empty() && b_.graph().outputs.empty())
    problem(OnnxProblem::Kind::Invalid, "the graph has no outputs");

  if (!problems_.empty()) {
    std::string message =
        fmt::format("{}: cannot import this ONNX model (opset {}): {} "
                    "problem{}:",
                    what_, opset_, problems_.size(), problems_.size() == 1 ? "" : "s");
    for (const OnnxProblem &p : problems_)
      message += "\n" + problemLine(p);
    throw OnnxImportError(message, problems_);
  }

  result.graph = withoutDeadNodes(b_.graph());
  for (ValueId id : result.graph.params()) {
    const std::string &name = result.graph.node(id).name;
    result.params[name] = params_.at(name);
  }
  result.transposedParams = onnx_import::storeTransposedParams(result.graph, result.params);
  verify(result.graph);
  return result;
}

// ---------------------------------------------------------------------------
// NodeContext: the importer as one mapping function sees it.

NodeContext::NodeContext(Importer &importer, const onnx::NodeProto &node, int64_t opset,
                         GraphBuilder &builder, SourceLoc loc)
    : node(node), opset(opset), b(builder), loc(std::move(loc)), importer_(importer) {}

bool NodeContext::has(size_t i) const {
  return i < numInputs() && !node.input(static_cast<int>(i)).empty();
}

Value NodeContext::in(size_t i) {
  if (!has(i))
    invalid(fmt::format("input {} is missing", i));
  return importer_.valueOf(importer_.symbol(node.input(static_cast<int>(i))), loc);
}

TensorType NodeContext::type(size_t i) const {
  if (!has(i))
    invalid(fmt::format("input {} is missing", i));
  const auto *s = importer_.find(node.input(static_cast<int>(i)));
  if (!s)
    invalid(
        fmt::format("value '{}' is not defined before this node", node.input(static_cast<int>(i))));
  return importer_.typeOf(*s);
}

std::optional<Tensor> NodeContext::known(size_t i) const {
  if (!has(i))
    return std::nullopt;
  const auto *s = importer_.find(node.input(static_cast<int>(i)));
  // A param's value is only its initial one: it stays a graph value.
  if (!s || s->kind == Importer::Symbol::Kind::Param)
    return std::nullopt;
  return s->value;
}

Tensor NodeContext::require(size_t i, std::string_view what) const {
  if (!has(i))
    invalid(fmt::format("{} (input {}) is missing", what, i));
  const std::string &name = node.input(static_cast<int>(i));
  const auto *s = importer_.find(name);
  // Values that set shapes and attributes are read at import, also from a
  // floating-point initializer (a Pad value, a Range bound).
  if (s && s->value)
    return *s->value;
  std::vector<std::string> inputs;
  if (s && s->kind == Importer::Symbol::Kind::Input)
    inputs.push_back(name);
  else if (s && s->id)
    inputs = importer_.inputsBehind(*s->id);
  if (!inputs.empty())
    throw Unsupported{OnnxProblem::Kind::StaticInput,
                      fmt::format("{} ('{}') must be known at import, since stepc shapes are "
                                  "static, but it comes from graph input '{}'; give that "
                                  "input's value (stepc run --input {}=FILE.npy)",
                                  what, name, inputs[0], inputs[0]),
                      inputs[0]};
  throw Unsupported{OnnxProblem::Kind::Feature,
                    fmt::format("{} ('{}') must be known at import, since stepc shapes are "
                                "static",
                                what, name),
                    ""};
}

std::vector<int64_t> NodeContext::requireInts(size_t i, std::string_view what) const {
  Tensor t = require(i, what);
  if (!isInteger(t.dtype()))
    invalid(fmt::format("{} must be integers, found {}", what, typeString(t.type())));
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  for (int64_t k = 0; k < t.numel(); ++k)
    out[k] = t.integer(k);
  return out;
}

double NodeContext::requireScalar(size_t i, std::string_view what) const {
  Tensor t = require(i, what);
  if (t.numel() != 1)
    invalid(fmt::format("{} must hold one value, found {}", what, typeString(t.type())));
  return t.real(0);
}

const onnx::AttributeProto *NodeContext::attr(std::string_view name) const {
  for (const auto &a : node.attribute())
    if (a.name() == name)
      return &a;
  return nullptr;
}

// The attribute `name` when it is there, after checking its declared type:
// a STRING `axis` must not read as axis 0. Files from before attribute types
// were recorded leave them UNDEFINED; those are read as asked.
const onnx::AttributeProto *NodeContext::typedAttr(std::string_view name,
                                                   onnx::AttributeProto::AttributeType expected) const {
  const auto *a = attr(name);
  if (a && a->type() != onnx::AttributeProto::UNDEFINED && a->type() != expected)
    invalid(fmt::format("attribute '{}' must be {}, found {}", name,
                        onnx::AttributeProto::AttributeType_Name(expected),
                        onnx::AttributeProto::AttributeType_Name(a->type())));
  return a;
}

int64_t NodeContext::attrInt(std::string_view name, int64_t fallback) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::INT);
  return a ? a->i() : fallback;
}

int64_t NodeContext::attrInt(std::string_view name) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::INT);
  if (!a)
    invalid(fmt::format("attribute '{}' is required", name));
  return a->i();
}

double NodeContext::attrFloat(std::string_view name, double fallback) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::FLOAT);
  return a ? a->f() : fallback;
}

std::vector<int64_t> NodeContext::attrInts(std::string_view name,
                                           std::vector<int64_t> fallback) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::INTS);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : fallback;
}

std::vector<double> NodeContext::attrFloats(std::string_view name) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::FLOATS);
  return a ? std::vector<double>(a->floats().begin(), a->floats().end()) : std::vector<double>{};
}

std::string NodeContext::attrString(std::string_view name, std::string fallback) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::STRING);
  return a ? a->s() : fallback;
}

Tensor NodeContext::attrTensor(std::string_view name) const {
  const auto *a = typedAttr(name, onnx::AttributeProto::TENSOR);
  if (!a || !a->has_t())
    invalid(fmt::format("tensor attribute '{}' is required", name));
  return tensorFromProto(a->t(), fmt::format("attribute '{}'", name));
}

bool NodeContext::wants(size_t i) const {
  return i < numOutputs() && !node.output(static_cast<int>(i)).empty();
}

void NodeContext::setOutput(size_t i, Value value) {
  if (!wants(i))
    return;
  using Kind = Importer::Symbol::Kind;
  importer_.define(node.output(static_cast<int>(i)),
                   Importer::Symbol{Kind::Result, value.id(), {}, "", ""});
}

void NodeContext::setOutput(size_t i, Tensor value) {
  if (!wants(i))
    return;
  using Kind = Importer::Symbol::Kind;
  importer_.define(node.output(static_cast<int>(i)),
                   Importer::Symbol{Kind::Constant, {}, std::move(value), "", ""});
}

Value NodeContext::constantOf(const Tensor &value) { return importer_.constantOf(value, loc); }

Value NodeContext::scalar(double value, DType dtype) {
  return constantOf(Tensor::scalar(dtype, value));
}

Value NodeContext::op(OpKind kind, std::vector<Value> operands, Attrs attrs) {
  return b.op(kind, std::move(operands), std::move(attrs), loc);
}

void NodeContext::unsupported(const std::string &reason) const {
  throw Unsupported{OnnxProblem::Kind::Feature, reason, ""};
}

void NodeContext::unsupportedDType(const std::string &what, DType dtype) const {
  throw Unsupported{OnnxProblem::Kind::DType,
                    fmt::format("{} of type {} is not supported", what, dtypeName(dtype)), "",
                    std::string(dtypeName(dtype))};
}

void NodeContext::unsupportedDType(const std::string &what, int32_t onnxType) const {
  throw Unsupported{OnnxProblem::Kind::DType, dtypeProblem(what, onnxType), "",
                    onnxTypeName(onnxType)};
}

void NodeContext::invalid(const std::string &reason) const { throw Error(reason); }

} // namespace onnx_import

// ---------------------------------------------------------------------------
// Public entry points.

namespace {

std::string readFile(const std::string &path) {
  return readFileBounded(path, kMaxOnnxFileBytes, "an ONNX file",
                         "protobuf parses messages of at most 2 GiB");
}

} // namespace

OnnxModel importOnnxBytes(std::string_view bytes, const std::string &what,
                          const OnnxImportOptions &options) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw OnnxImportError(
        fmt::format("{}: not a valid ONNX model (the protobuf data is malformed or "
                    "truncated)",
                    what),
        {});
  // Graph inputs whose values the model needs at import are bound one round
  // at a time: which ones are needed shows only while importing.
  std::set<std::string> bound;
  for (;;) {
    try {
      onnx_import::Importer importer(model, what, bound, options.inputValues);
      return importer.run();
    } catch (const OnnxImportError &e) {
      bool progress = false;
      for (const OnnxProblem &p : e.problems())
        if (p.kind == OnnxProblem::Kind::StaticInput && !bound.count(p.input) &&
            options.inputValues.count(p.input))
          progress = bound.insert(p.input).second || progress;
      if (!progress)
        throw;
    }
  }
}

OnnxModel importOnnx(const std::string &path, const OnnxImportOptions &options) {
  return importOnnxBytes(readFile(path), path, options);
}

Tensor parseOnnxTensor(std::string_view bytes, const std::string &what) {
  onnx::TensorProto proto;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw Error(fmt::format("{}: not a valid ONNX TensorProto", what));
  try {
    return onnx_import::tensorFromProto(proto, what);
  } catch (const onnx_import::Unsupported &u) {
    throw OnnxImportError(u.reason, {{u.kind, "", "", -1, u.reason, "", u.typeName}});
  }
}

Tensor readOnnxTensor(const std::string &path) { return parseOnnxTensor(readFile(path), path); }

} // namespace stepc
