// The .sg parser: one pass, one token of lookahead, no recursion, so no input
// can exhaust the stack; every size it allocates for is bounded (see limits).
#include "lexer.h"

#include "stepc/builder.h"
#include "stepc/file.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace stepc {
namespace {

using sg::clip;
using sg::Lexer;
using sg::Token;
using sg::TokenKind;

// Limits that keep hostile inputs from asking for absurd allocations. A tensor
// of 2^40 elements is already far past any machine this runs on.
constexpr int64_t kMaxElements = int64_t(1) << 40;
constexpr int64_t kMaxRank = 64;
constexpr size_t kMaxListLength = size_t(1) << 24;
constexpr size_t kMaxCompositeOperands = 16;

// A numbered value (%12): numbers are not node names, so the parser keeps
// them itself; named values are found through the graph's own name index.
struct Numbered {
  ValueId id;
  int line, col;
};

bool isNumericName(std::string_view name) {
  return !name.empty() && name[0] >= '0' && name[0] <= '9';
}

// Checks a type against the size limits; returns an empty string when it fits.
std::string sizeProblem(const TensorType &type) {
  if (type.rank() > kMaxRank)
    return fmt::format("shape too large: rank {} exceeds the limit of {}", type.rank(),
                       kMaxRank);
  for (int64_t d : type.shape)
    if (d > kMaxElements)
      return fmt::format("shape too large: dimension {} exceeds the limit of 2^40", d);
  try {
    if (checkedNumel(type.shape) > kMaxElements)
      return fmt::format("shape too large: {} has more than 2^40 elements",
                         typeString(type));
  } catch (const Error &e) {
    return fmt::format("shape too large: {}", e.what());
  }
  return {};
}

class Parser {
public:
  Parser(std::string_view text, std::string filename) : lex_(text, std::move(filename)) {}

  Graph parse();

private:
  void parseInput();
  void parseParam();
  // `input %x : TYPE` and `param %w : TYPE = ...` start alike.
  struct Declaration {
    Token keyword, var;
    TensorType type;
  };
  Declaration parseDeclaration(std::string_view keyword);
  void addDeclared(const Declaration &declared, OpKind op, Attrs attrs);
  void parseNode();
  void parseOutput();
  void parseUpdate();
  TensorType parseType();
  Attrs parseAttrList(char close, std::string_view what,
                      std::vector<Token> *names = nullptr);
  AttrValue parseAttrValue();
  ValueId parseOperand();
  ValueId addComposite(const Token &opToken, const std::vector<ValueId> &operands,
                       const Attrs &attrs, const SourceLoc &loc, std::string name);

  Token expectPunct(char c, std::string_view context);
  Token expectVar(std::string_view context);
  void checkUndefined(const Token &var);
  void define(const Token &var, ValueId id);
  void checkSize(const Node &node);

  Lexer lex_;
  Graph graph_;
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Looked up by the token's text without building a string each time.
  std::unordered_map<std::string, Numbered, NameHash, std::equal_to<>> numbered_;
  std::unordered_map<std::string, SourceLoc> outputs_;
  std::unordered_map<ValueId, SourceLoc> updated_; // param -> its update statement
};

Token Parser::expectPunct(char c, std::string_view context) {
  Token t = lex_.next();
  if (!t.isPunct(c))
    lex_.fail(t, fmt::format("expected '{}' {}, found {}", c, context, describe(t)));
  return t;
}

Token Parser::expectVar(std::string_view context) {
  Token t = lex_.next();
  if (t.kind != TokenKind::Var)
    lex_.fail(t, fmt::format("expected a value name like %x {}, found {}", context,
                             describe(t)));
  return t;
}

void Parser::checkUndefined(const Token &var) {
  std::string first;
  if (!isNumericName(var.text)) {
    if (std::optional<ValueId> id = graph_.findNamed(var.text))
      first = graph_.nodes[*id].loc.str();
  } else if (auto it = numbered_.find(var.text); it != numbered_.end()) {
    first = SourceLoc(lex_.filename(), it->second.line, it->second.col).str();
  }
  if (!first.empty())
    lex_.fail(var, fmt::format("redefinition of '%{}' (first defined at {})", clip(var.text),
                               first));
}

void Parser::define(const Token &var, ValueId id) {
  if (isNumericName(var.text))
    numbered_.emplace(std::string(var.text), Numbered{id, var.line, var.col});
}

// Shape rules accept anything that fits in int64; the parser is stricter, so a
// reshape or constant in a file cannot declare a tensor nothing could hold.
void Parser::checkSize(const Node &node) {
  if (std::string problem = sizeProblem(node.type); !problem.empty())
    throw Error(locatedMessage(
        node.loc, fmt::format("{}: result {}", opInfo(node.op).name, problem)));
}

Graph Parser::parse() {
  Token kw = lex_.next();
  if (!kw.isIdent("graph"))
    lex_.fail(kw, fmt::format("expected 'graph' at the start of the file, found {}",
                              describe(kw)));
  Token name = lex_.next();
  if (name.kind != TokenKind::Ident)
    lex_.fail(name, fmt::format("expected a graph name after 'graph', found {}",
                                describe(name)));
  graph_.name = std::string(name.text);
  Token open = expectPunct('{', "after the graph name");
  while (true) {
    const Token &t = lex_.peek();
    if (t.isPunct('}')) {
      // verify() says this too, but without a place to point at.
      if (graph_.outputs.empty())
        lex_.fail(t, fmt::format("graph '{}' has no outputs; add 'output name = %value'",
                                 clip(graph_.name)));
      lex_.next();
      break;
    }
    if (t.isIdent("input"))
      parseInput();
    else if (t.isIdent("param"))
      parseParam();
    else if (t.isIdent("output"))
      parseOutput();
    else if (t.isIdent("update"))
      parseUpdate();
    else if (t.kind == TokenKind::Var)
      parseNode();
    else if (t.kind == TokenKind::Eof)
      lex_.fail(t, fmt::format("expected '}}' to close graph '{}' (opened at {}:{}), "
                               "found end of file",
                               clip(graph_.name), open.line, open.col));
    else
      lex_.fail(t, fmt::format("expected a statement (input, param, output, update or "
                               "%name = op(...)), found {}",
                               describe(t)));
  }
  Token end = lex_.next();
  if (end.kind != TokenKind::Eof)
    lex_.fail(end, fmt::format("expected end of file after the graph's closing '}}', "
                               "found {}",
                               describe(end)));
  verify(graph_);
  return std::move(graph_);
}

Parser::Declaration Parser::parseDeclaration(std::string_view keyword) {
  Token kw = lex_.next();
  Token var = expectVar(fmt::format("after '{}'", keyword));
  if (isNumericName(var.text))
    lex_.fail(var, fmt::format("{} '%{}' needs a name, not a number", keyword, clip(var.text)));
  checkUndefined(var);
  expectPunct(':', fmt::format("after {} '%{}'", keyword, clip(var.text)));
  TensorType type = parseType();
  return {kw, var, std::move(type)};
}

void Parser::addDeclared(const Declaration &declared, OpKind op, Attrs attrs) {
  Node node;
  node.op = op;
  node.attrs = std::move(attrs);
  node.attrs.set("dtype", std::string(dtypeName(declared.type.dtype)));
  node.attrs.set("shape", declared.type.shape);
  node.name = std::string(declared.var.text);
  node.loc = lex_.locOf(declared.keyword);
  define(declared.var, graph_.add(std::move(node)));
}

// input %x : f32[128,784]
void Parser::parseInput() { addDeclared(parseDeclaration("input"), OpKind::Input, {}); }

// param %w : f32[784,512] = he_uniform(seed=1)
void Parser::parseParam() {
  Declaration declared = parseDeclaration("param");
  expectPunct('=', "and an initializer such as zeros() after the param's type");
  Token initName = lex_.next();
  if (initName.kind != TokenKind::Ident)
    lex_.fail(initName, fmt::format("expected an initializer such as zeros() or "
                                    "he_uniform(seed=1), found {}",
                                    describe(initName)));
  expectPunct('(', fmt::format("after initializer '{}'", clip(initName.text)));
  std::vector<Token> argNames;
  Attrs args = parseAttrList(')', "argument", &argNames);
  // These three name the param's own attributes, not initializer arguments.
  for (const Token &arg : argNames)
    if (arg.text == "init" || arg.text == "dtype" || arg.text == "shape")
      lex_.fail(arg, fmt::format("initializer '{}' takes no argument '{}'",
                                 clip(initName.text), clip(arg.text)));
  args.set("init", std::string(initName.text));
  Init init;
  try {
    init = Init::fromAttrs(args);
  } catch (const Error &e) {
    // Some of fromAttrs' messages name the initializer; the others need it.
    std::string message = e.what();
    if (message.find(fmt::format("initializer '{}'", initName.text)) != std::string::npos)
      lex_.fail(initName, message);
    lex_.fail(initName,
              fmt::format("initializer '{}': {}", clip(initName.text), e.what()));
  }
  // Stored in canonical form (reals as reals) so text and builder graphs agree.
  addDeclared(declared, OpKind::Parameter, init.toAttrs());
}

// %h = relu(%x) {attrs} : f32[2,3]
void Parser::parseNode() {
  Token var = lex_.next();
  checkUndefined(var);
  SourceLoc loc = lex_.locOf(var);
  expectPunct('=', fmt::format("after '%{}'", clip(var.text)));
  Token opToken = lex_.next();
  if (opToken.kind != TokenKind::Ident)
    lex_.fail(opToken, fmt::format("expected an op name after '%{} =', found {}",
                                   clip(var.text), describe(opToken)));
  std::optional<OpKind> op = findOp(opToken.text);
  if (op == OpKind::Input)
    lex_.fail(opToken, "'input' is not an op here: declare inputs with "
                       "'input %x : f32[...]'");
  if (op == OpKind::Parameter)
    lex_.fail(opToken, "'param' is not an op here: declare params with "
                       "'param %w : f32[...] = zeros()'");
  if (!op && !isComposite(opToken.text))
    lex_.fail(opToken, fmt::format("unknown op '{}'", clip(opToken.text)));

  expectPunct('(', fmt::format("after op name '{}'", clip(opToken.text)));
  std::vector<ValueId> operands;
  if (lex_.peek().isPunct(')')) {
    lex_.next();
  } else {
    while (true) {
      operands.push_back(parseOperand());
      Token sep = lex_.next();
      if (sep.isPunct(')'))
        break;
      if (!sep.isPunct(','))
        lex_.fail(sep, fmt::format("expected ',' or ')' after an operand, found {}",
                                   describe(sep)));
    }
  }
  Attrs attrs;
  if (lex_.peek().isPunct('{')) {
    lex_.next();
    attrs = parseAttrList('}', "attribute");
  }
  std::optional<TensorType> declared;
  Token typeStart;
  if (lex_.peek().isPunct(':')) {
    lex_.next();
    typeStart = lex_.peek();
    declared = parseType();
  }

  std::string name = isNumericName(var.text) ? std::string() : std::string(var.text);
  // A reduction without `axes` reduces every axis ({axes=[]} reduces none),
  // as sum(x) in the C++ API; the graph holds the list.
  bool reduction = op == OpKind::ReduceSum || op == OpKind::ReduceMean ||
                   op == OpKind::ReduceMax || op == OpKind::ReduceMin;
  if (reduction && !attrs.has("axes") && operands.size() == 1) {
    std::vector<int64_t> all(graph_.type(operands[0]).shape.size());
    std::iota(all.begin(), all.end(), int64_t(0));
    attrs.set("axes", all);
  }
  ValueId id;
  if (op) {
    Node node;
    node.op = *op;
    node.operands = std::move(operands);
    node.attrs = std::move(attrs);
    node.name = std::move(name);
    node.loc = loc;
    id = graph_.add(std::move(node));
    checkSize(graph_.nodes[id]);
  } else {
    id = addComposite(opToken, operands, attrs, loc, std::move(name));
  }
  if (declared && *declared != graph_.type(id))
    lex_.fail(typeStart, fmt::format("{}: declared type {} but inferred {}", opToken.text,
                                     typeString(*declared), typeString(graph_.type(id))));
  define(var, id);
}

// update %w = %w_next: after a step, the param takes the value (training steps).
void Parser::parseUpdate() {
  Token kw = lex_.next();
  Token target = lex_.peek();
  ValueId param = parseOperand();
  if (graph_.nodes[param].op != OpKind::Parameter)
    lex_.fail(target,
              fmt::format("update target '%{}' is not a param", clip(target.text)));
  auto [it, inserted] = updated_.emplace(param, lex_.locOf(kw));
  if (!inserted)
    lex_.fail(target, fmt::format("param '%{}' is updated twice (first at {})",
                                  clip(target.text), it->second.str()));
  expectPunct('=', fmt::format("after update target '%{}'", clip(target.text)));
  Token valueToken = lex_.peek();
  ValueId value = parseOperand();
  if (graph_.type(value) != graph_.type(param))
    lex_.fail(valueToken,
              fmt::format("update of param '%{}' ({}) with '%{}' of type {}",
                          clip(target.text), typeString(graph_.type(param)),
                          clip(valueToken.text), typeString(graph_.type(value))));
  // Checked above (and by verify() at the end); Graph::addUpdate would also
  // scan every earlier update, quadratic in a file with many.
  graph_.updates.push_back({param, value});
}

ValueId Parser::parseOperand() {
  Token t = lex_.next();
  if (t.kind != TokenKind::Var)
    lex_.fail(t, fmt::format("expected an operand like %x, found {}", describe(t)));
  if (!isNumericName(t.text)) {
    if (std::optional<ValueId> id = graph_.findNamed(t.text))
      return *id;
  } else if (auto it = numbered_.find(t.text); it != numbered_.end()) {
    return it->second.id;
  }
  lex_.fail(t, fmt::format("use of undefined value '%{}'", clip(t.text)));
}

// Composites are built by the builder into a scratch graph whose inputs stand
// for the operands, then copied over. Building in place would need a
// GraphBuilder owning graph_, which cannot also append inputs and params with
// .sg locations; copying costs only the composite's own nodes.
ValueId Parser::addComposite(const Token &opToken, const std::vector<ValueId> &operands,
                             const Attrs &attrs, const SourceLoc &loc, std::string name) {
  // Each placeholder costs a scan of the scratch graph's names; composites take
  // at most a few operands, so refuse absurd counts before building any.
  if (operands.size() > kMaxCompositeOperands)
    throw Error(locatedMessage(
        loc, fmt::format("{}: too many operands ({})", opToken.text, operands.size())));
  GraphBuilder scratch(graph_.name);
  std::vector<Value> args;
  for (size_t i = 0; i < operands.size(); ++i) {
    const TensorType &t = graph_.type(operands[i]);
    args.push_back(scratch.input(fmt::format("operand{}", i), t.dtype, t.shape));
  }
  Value result;
  try {
    result = buildComposite(opToken.text, scratch, args, attrs, loc);
  } catch (const Error &e) {
    // Some composite errors (a mistyped attribute) come without a location.
    std::string message = e.what();
    if (message.rfind(loc.str() + ":", 0) == 0)
      throw;
    throw Error(locatedMessage(loc, fmt::format("{}: {}", opToken.text, message)));
  }
  const Graph &built = scratch.graph();
  // The result's node carries the statement's name, so it must be a new node.
  if (result.id() < operands.size())
    throw std::logic_error(fmt::format("composite {} returned its operand", opToken.text));
  std::vector<ValueId> ids(operands);
  ids.resize(built.size());
  for (ValueId i = static_cast<ValueId>(operands.size()); i < built.size(); ++i) {
    Node node = built.nodes[i];
    for (ValueId &operand : node.operands)
      operand = ids[operand];
    if (i == result.id())
      node.name = name;
    // The statement's place; what the node is for in the composite stays
    // ("cross_entropy labels"), so errors say "one_hot (cross_entropy labels)".
    std::string origin = std::move(node.loc.origin);
    node.loc = loc;
    node.loc.origin = std::move(origin);
    ids[i] = graph_.add(std::move(node));
    checkSize(graph_.nodes[ids[i]]);
  }
  return ids[result.id()];
}

// f32[128,784]; f32[] is a scalar.
TensorType Parser::parseType() {
  Token dtypeToken = lex_.next();
  std::optional<DType> dtype;
  if (dtypeToken.kind == TokenKind::Ident)
    dtype = parseDType(dtypeToken.text);
  if (!dtype)
    lex_.fail(dtypeToken, fmt::format("expected a dtype (f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool), "
                                      "found {}",
                                      describe(dtypeToken)));
  expectPunct('[', fmt::format("after dtype '{}'", clip(dtypeToken.text)));
  TensorType type{*dtype, {}};
  if (lex_.peek().isPunct(']')) {
    lex_.next();
    return type;
  }
  while (true) {
    Token dim = lex_.next();
    if (dim.kind != TokenKind::Int)
      lex_.fail(dim,
                fmt::format("expected a dimension (a non-negative integer), found {}",
                            describe(dim)));
    if (dim.intValue < 0)
      lex_.fail(dim, fmt::format("negative dimension {} in shape", dim.intValue));
    if (dim.intValue > kMaxElements)
      lex_.fail(dim,
                fmt::format("shape too large: dimension {} exceeds the limit of 2^40",
                            dim.intValue));
    if (type.rank() == kMaxRank)
      lex_.fail(dim, fmt::format("shape too large: more than {} dimensions", kMaxRank));
    type.shape.push_back(dim.intValue);
    Token sep = lex_.next();
    if (sep.isPunct(']'))
      break;
    if (!sep.isPunct(','))
      lex_.fail(sep, fmt::format("expected ']' after shape, found {}", describe(sep)));
  }
  if (std::string problem = sizeProblem(type); !problem.empty())
    lex_.fail(dtypeToken, problem);
  return type;
}

// `name=value, ...` up to `close`; the opening bracket is already consumed.
Attrs Parser::parseAttrList(char close, std::string_view what,
                            std::vector<Token> *names) {
  // Collected first and sorted once: Attrs::set keeps its entries sorted, which
  // would cost quadratic time on a hostile list of many attributes.
  std::vector<std::pair<std::string, AttrValue>> entries;
  std::unordered_set<std::string_view> seen;
  if (lex_.peek().isPunct(close)) {
    lex_.next();
    return {};
  }
  while (true) {
    Token name = lex_.next();
    if (name.kind != TokenKind::Ident)
      lex_.fail(name, fmt::format("expected {} name, found {}",
                                  what == "argument" ? "an argument" : "an attribute",
                                  describe(name)));
    if (!seen.insert(name.text).second)
      lex_.fail(name, fmt::format("duplicate {} '{}'", what, clip(name.text)));
    expectPunct('=', fmt::format("after {} name '{}'", what, clip(name.text)));
    entries.emplace_back(std::string(name.text), parseAttrValue());
    if (names)
      names->push_back(name);
    Token sep = lex_.next();
    if (sep.isPunct(close))
      break;
    if (!sep.isPunct(','))
      lex_.fail(sep, fmt::format("expected ',' or '{}' after {} '{}', found {}", close,
                                 what, clip(name.text), describe(sep)));
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto &a, const auto &b) { return a.first < b.first; });
  Attrs attrs;
  for (auto &[key, value] : entries)
    attrs.set(std::move(key), std::move(value));
  return attrs;
}

// Reads a number token as a real: "inf" and "nan" are identifiers to the lexer.
std::optional<double> realOf(const Token &t) {
  if (t.kind == TokenKind::Real)
    return t.realValue;
  if (t.isIdent("inf"))
    return std::numeric_limits<double>::infinity();
  if (t.isIdent("nan"))
    return std::numeric_limits<double>::quiet_NaN();
  return std::nullopt;
}

AttrValue Parser::parseAttrValue() {
  Token t = lex_.next();
  if (t.kind == TokenKind::Int)
    return t.intValue;
  if (std::optional<double> real = realOf(t))
    return *real;
  if (t.kind == TokenKind::Ident)
    return std::string(t.text);
  if (t.kind == TokenKind::String)
    return std::move(t.stringValue);
  if (!t.isPunct('['))
    lex_.fail(t, fmt::format("expected an attribute value (a number, name, string or "
                             "[list]), found {}",
                             describe(t)));
  // A list stays integer until its first real; then everything becomes real.
  std::vector<int64_t> ints;
  std::vector<double> reals;
  bool isReal = false;
  if (lex_.peek().isPunct(']')) {
    lex_.next();
    return ints;
  }
  while (true) {
    Token element = lex_.next();
    if (ints.size() + reals.size() >= kMaxListLength)
      lex_.fail(element,
                fmt::format("list too long: more than {} elements", kMaxListLength));
    if (element.kind == TokenKind::Int) {
      if (isReal)
        reals.push_back(static_cast<double>(element.intValue));
      else
        ints.push_back(element.intValue);
    } else if (std::optional<double> real = realOf(element)) {
      if (!isReal) {
        reals.assign(ints.begin(), ints.end());
        ints = {};
        isReal = true;
      }
      reals.push_back(*real);
    } else {
      lex_.fail(element, fmt::format("expected a number in the list, found {}",
                                     describe(element)));
    }
    Token sep = lex_.next();
    if (sep.isPunct(']'))
      break;
    if (!sep.isPunct(','))
      lex_.fail(sep,
                fmt::format("expected ',' or ']' in the list, found {}", describe(sep)));
  }
  if (isReal)
    return reals;
  return ints;
}

// output loss = %h
void Parser::parseOutput() {
  lex_.next();
  Token name = lex_.next();
  if (name.kind != TokenKind::Ident)
    lex_.fail(name, fmt::format("expected an output name after 'output', found {}",
                                describe(name)));
  auto [it, inserted] = outputs_.emplace(std::string(name.text), lex_.locOf(name));
  if (!inserted)
    lex_.fail(name, fmt::format("duplicate output '{}' (first defined at {})",
                                clip(name.text), it->second.str()));
  expectPunct('=', fmt::format("after output name '{}'", clip(name.text)));
  ValueId value = parseOperand();
  // Checked above (and by verify()); Graph::addOutput would scan every
  // earlier output, quadratic in a file with many.
  graph_.outputs.push_back({std::string(name.text), value});
}

} // namespace

Graph parseGraph(std::string_view text, std::string_view filename) {
  return Parser(text, std::string(filename)).parse();
}

Graph parseGraphFile(const std::string &path) {
  return parseGraph(readFileBounded(path, kMaxGraphFileBytes, "a .sg graph",
                                    "a million-node graph is about 35 MB"),
                    path);
}

} // namespace stepc
