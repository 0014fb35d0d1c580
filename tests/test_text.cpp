// The .sg text format: round trips, canonical printing, composites, and every
// user-facing parse error with its exact location and message.
#include "sg_corpus.h"
#include "testing.h"

#include "lexer.h"
#include "stepc/builder.h"
#include "stepc/file.h"
#include "stepc/text.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

namespace stepc {
namespace {

using testing::corpusText;

// print -> parse gives an equal graph, and printing that gives the same bytes.
void expectRoundTrip(const Graph &graph) {
  std::string text = printGraph(graph);
  Graph again;
  try {
    again = parseGraph(text, "printed.sg");
  } catch (const Error &e) {
    FAIL() << "printed graph does not parse: " << e.what() << "\n" << text;
  }
  EXPECT_TRUE(again == graph) << "graph changed in the round trip:\n"
                              << text << "---\n"
                              << printGraph(again);
  EXPECT_EQ(printGraph(again), text);
}

std::string parseError(std::string_view text, std::string_view file = "t.sg") {
  try {
    parseGraph(text, file);
  } catch (const Error &e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TextRoundTrip, EveryOpAndInitializer) {
  Graph g = parseGraph(corpusText("every_op"), "every_op.sg");
  std::set<OpKind> used;
  for (const Node &node : g.nodes)
    used.insert(node.op);
  // A new op in ops.def must be added to tests/sg_corpus/every_op.sg.
  for (const OpInfo &info : allOps())
    EXPECT_TRUE(used.count(info.kind))
        << "tests/sg_corpus/every_op.sg does not use op " << info.name;
  std::set<std::string> inits;
  for (ValueId id : g.params())
    inits.insert(g.node(id).attrs.getString("init"));
  EXPECT_EQ(inits.size(), 9u);
  expectRoundTrip(g);
}

TEST(TextRoundTrip, Composites) { expectRoundTrip(parseGraph(corpusText("composites"))); }

TEST(TextRoundTrip, StepWithUpdates) {
  Graph g = parseGraph(testing::corpusText("step"));
  ASSERT_EQ(g.updates.size(), 2u);
  EXPECT_EQ(g.node(g.updates[0].param).name, "w");
  EXPECT_EQ(g.node(g.updates[0].value).name, "w2");
  expectRoundTrip(g);
}

TEST(TextRoundTrip, CanonicalTextPrintsItself) {
  Graph g = parseGraph(corpusText("canonical"));
  EXPECT_EQ(printGraph(g), corpusText("canonical"));
}

TEST(TextRoundTrip, Examples) {
  std::filesystem::path dir = STEPC_SOURCE_DIR "/examples";
  if (!std::filesystem::exists(dir))
    GTEST_SKIP() << "no examples/ directory";
  int count = 0;
  for (const auto &entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".sg")
      continue;
    SCOPED_TRACE(entry.path().string());
    ++count;
    try {
      expectRoundTrip(parseGraphFile(entry.path().string()));
    } catch (const Error &e) {
      ADD_FAILURE() << e.what();
    }
  }
  RecordProperty("examples", count);
}

TEST(TextRoundTrip, BuilderGraphs) {
  GraphBuilder b("built");
  Value x = b.input("x", DType::F32, {4, 8});
  Value labels = b.input("labels", DType::I64, {4});
  Value seed = b.input("seed", DType::I64, {});
  Value img = b.input("img", DType::F64, {2, 3, 8, 8});
  Value w = b.param("w", DType::F32, {8, 5}, Init::normal(0.0, 0.1, 42));
  Value bias = b.param("bias", DType::F32, {5}, Init::constant(1.0));
  Value u = b.param("u", DType::F32, {5}, Init::uniform(-0.25, 0.125, -7));
  Value k = b.param("k", DType::F64, {6, 1, 3, 3}, Init::heNormal(3));
  Value h = relu(linear(x, w, bias) * 2.0 + u) - 0.5;
  Value d = dropout(h, seed, 0.1);
  Value loss = crossEntropy(leakyRelu(d, 0.3), labels) + mse(h, h);
  Value c = conv2d(img, k, {.stride = {2, 1}, .padding = {1, 0}, .groups = 3});
  Value pooled = avgPool2d(
      c,
      {.kernel = {2, 2}, .stride = {1, 1}, .padding = {1, 1}, .countIncludePad = false});
  Value mp = maxPool2d(c);
  Value data = constantData(b, {0.1, 1.0, -0.0, 1e-5, 1e300, 5e-324}, DType::F64, {2, 3});
  Value ints = iota(b, DType::I64, {2, 3}, 1);
  Value mixed = select(gt(data, cast(ints, DType::F64)), data, abs(data));
  Value sl = slice(mixed, {0, 1}, {2, 3}, {1, 2});
  Value cat = concat({sl, sl, pad(sl, {0, 0}, {1, 0}, -2.5)}, 0);
  Value g = gather(transposeLast2(cat), oneHot(labels, 3, DType::I32), 0);
  Value norm = layerNorm(h, Value(), Value(), 1e-3);
  Value att = attention(reshape(h, {1, 4, 5}), reshape(h, {1, 4, 5}),
                        reshape(h, {1, 4, 5}), true);
  b.output("loss", loss);
  b.output("pooled", pooled);
  b.output("mp", mp);
  b.output("g", g);
  b.output("norm", norm);
  b.output("att", att);
  b.output("arg", argmax(softmax(logSoftmax(gelu(h))), 1, true));
  b.output("stats", max(min(sum(mean(h, {1}, true), Axes::all(), false), {}), {}));
  b.output("bcast", broadcastTo(iota(b, DType::I32, {5}, 0), {3, 5}));
  expectRoundTrip(b.finish());
}

TEST(TextRoundTrip, ParamUpdates) {
  GraphBuilder b("step");
  Value x = b.input("x", DType::F32, {3});
  Value w = b.param("w", DType::F32, {3}, Init::zeros());
  Value m = b.param("w.m", DType::F32, {3}, Init::zeros());
  Value count = b.param("step", DType::I64, {}, Init::zeros());
  Value next = w - x * 0.5;
  b.output("next", next);
  b.update(count, count + constant(b, 1, DType::I64));
  b.update(w, next);
  b.update(m, w);
  Graph g = b.finish();
  std::string text = printGraph(g);
  EXPECT_NE(text.find("  update %w = %"), std::string::npos) << text;
  EXPECT_NE(text.find("  update %w.m = %w\n}\n"), std::string::npos) << text;
  expectRoundTrip(g);
}

TEST(TextRoundTrip, NamedAndNumberedValues) {
  Graph g = parseGraph(R"(graph g {
    input %x : f32[2]
    %7 = relu(%x)
    %y = neg(%7)
    output out = %y
  })");
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g.node(1).name, "");
  EXPECT_EQ(g.node(2).name, "y");
  EXPECT_EQ(g.node(2).operands, std::vector<ValueId>{1});
  // Unnamed values print as their node index, not as the number written.
  EXPECT_NE(printGraph(g).find("%1 = relu(%x) : f32[2]"), std::string::npos);
  EXPECT_EQ(g.node(2).loc.str(), "<input>:4:5");
  EXPECT_EQ(g.node(0).loc.str(), "<input>:2:5");
}

TEST(TextRoundTrip, CompositeExpansionMatchesBuilder) {
  Graph parsed = parseGraph(R"(graph c {
    input %x : f32[4,5]
    input %y : i32[4]
    %1 = softmax(%x)
    %2 = cross_entropy(%x, %y)
    %3 = layer_norm(%x) {eps=0.001}
    %4 = leaky_relu(%x) {slope=0.25}
    output s = %1
    output l = %2
    output n = %3
    output r = %4
  })");
  GraphBuilder b("c");
  Value x = b.input("x", DType::F32, {4, 5});
  Value y = b.input("y", DType::I32, {4});
  b.output("s", softmax(x));
  b.output("l", crossEntropy(x, y));
  b.output("n", layerNorm(x, Value(), Value(), 0.001));
  b.output("r", leakyRelu(x, 0.25));
  Graph built = b.finish();
  EXPECT_TRUE(parsed == built) << printGraph(parsed) << "---\n" << printGraph(built);

  // A named composite names its last node; the nodes carry the line's location.
  Graph named = parseGraph("graph n {\n input %x : f32[3]\n %s = softmax(%x)\n"
                           " output s = %s\n}\n",
                           "n.sg");
  EXPECT_EQ(named.nodes.back().name, "s");
  EXPECT_EQ(named.nodes.back().op, OpKind::Div);
  EXPECT_EQ(named.nodes.back().loc.str(), "n.sg:3:2");
  EXPECT_EQ(named.nodes[1].loc.str(), "n.sg:3:2");
}

// {axes=[]} reduces no axis and leaving axes out reduces every axis, in .sg
// and in the C++ API alike (issue 12: they meant opposite things).
TEST(TextRoundTrip, ReductionAxesMeanTheSameAsInTheBuilder) {
  Graph parsed = parseGraph(R"(graph r {
    input %x : f32[2,3]
    %1 = reduce_sum(%x) {keepdims=0}
    %2 = reduce_max(%x) {keepdims=1}
    %3 = reduce_mean(%x) {axes=[], keepdims=0}
    %4 = reduce_min(%x) {axes=[-1], keepdims=0}
    output all = %1
    output all_kept = %2
    output none = %3
    output last = %4
  })");
  auto typeOf = [&](size_t output) { return parsed.type(parsed.outputs[output].value); };
  EXPECT_EQ(typeOf(0).shape, Shape{});
  EXPECT_EQ(typeOf(1).shape, (Shape{1, 1}));
  EXPECT_EQ(typeOf(2).shape, (Shape{2, 3}));
  EXPECT_EQ(parsed.node(1).attrs.getInts("axes"), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(parsed.node(3).attrs.getInts("axes"), std::vector<int64_t>{});

  GraphBuilder b("r");
  Value x = b.input("x", DType::F32, {2, 3});
  b.output("all", sum(x));
  b.output("all_kept", max(x, Axes::all(), true));
  b.output("none", mean(x, {}));
  b.output("last", min(x, {-1}));
  Graph built = b.finish();
  EXPECT_TRUE(parsed == built) << printGraph(parsed) << "---\n" << printGraph(built);
}

TEST(TextRoundTrip, ParamsMatchBuilder) {
  // Integers written for real arguments are stored as reals, as the builder does.
  Graph parsed = parseGraph("graph p { param %w : f32[2] = normal(mean=0, std=1, seed=5)"
                            " param %c : f64[] = constant(value=3) output w = %w "
                            "output c = %c }");
  GraphBuilder b("p");
  b.output("w", b.param("w", DType::F32, {2}, Init::normal(0, 1, 5)));
  b.output("c", b.param("c", DType::F64, {}, Init::constant(3)));
  EXPECT_TRUE(parsed == b.finish());
  EXPECT_NE(printGraph(parsed).find("= normal(mean=0.0, std=1.0, seed=5)"),
            std::string::npos);
}

TEST(TextRoundTrip, AttributeValueKinds) {
  Graph g = parseGraph(R"(graph a {
    %i = constant() {dtype=f32, shape=[2], data=[1, 2]}
    %r = constant() {dtype=f32, shape=[2], data=[1, 2.0]}
    %s = constant() {dtype="f32", shape=[], value=-7}
    %n = constant() {dtype=f32, shape=[], value=nan}
    %e = constant() {dtype=f32, shape=[], value=1E+2}
    output i = %i
    output r = %r
    output s = %s
    output n = %n
    output e = %e
  })");
  EXPECT_TRUE(
      std::holds_alternative<std::vector<int64_t>>(*g.node(0).attrs.find("data")));
  EXPECT_EQ(g.node(1).attrs.getReals("data"), (std::vector<double>{1.0, 2.0}));
  EXPECT_TRUE(std::holds_alternative<std::vector<double>>(*g.node(1).attrs.find("data")));
  EXPECT_EQ(g.node(2).attrs.getString("dtype"), "f32");
  EXPECT_EQ(g.node(2).attrs.getInt("value"), -7);
  EXPECT_TRUE(std::isnan(g.node(3).attrs.getReal("value")));
  EXPECT_EQ(g.node(4).attrs.getReal("value"), 100.0);
  std::string text = printGraph(g);
  EXPECT_NE(text.find("{data=[1,2], dtype"), std::string::npos) << text;
  EXPECT_NE(text.find("{data=[1.0,2.0], dtype"), std::string::npos) << text;
  EXPECT_NE(text.find("value=nan}"), std::string::npos) << text;
  EXPECT_NE(text.find("value=100.0}"), std::string::npos) << text;
  // nan != nan, so compare the text only.
  EXPECT_EQ(printGraph(parseGraph(text)), text);
}

// Printed reals and strings must lex back to exactly the same value.
TEST(TextPrinting, RealsAndStringsLexBackExactly) {
  const double reals[] = {0.0,
                          -0.0,
                          1.0,
                          -1.0,
                          0.1,
                          1e-5,
                          1e20,
                          123456789012345678.0,
                          5e-324,
                          std::numeric_limits<double>::max(),
                          std::numeric_limits<double>::lowest(),
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity(),
                          1.0 / 3.0};
  for (double d : reals) {
    std::string text = attrValueString(d);
    SCOPED_TRACE(text);
    sg::Lexer lexer(text, "r");
    sg::Token t = lexer.next();
    if (std::isinf(d) && d > 0) {
      EXPECT_TRUE(t.isIdent("inf"));
      continue;
    }
    ASSERT_EQ(t.kind, sg::TokenKind::Real);
    EXPECT_EQ(std::memcmp(&t.realValue, &d, sizeof d), 0);
    EXPECT_EQ(lexer.next().kind, sg::TokenKind::Eof);
  }
  EXPECT_EQ(attrValueString(std::numeric_limits<double>::quiet_NaN()), "nan");

  const std::string strings[] = {"f32",
                                 "a.b_c",
                                 "",
                                 "has space",
                                 "inf",
                                 "nan",
                                 "1x",
                                 "quote\"back\\slash",
                                 std::string("nul\0\x01\xff", 6),
                                 "%x",
                                 "line\nbreak"};
  for (const std::string &s : strings) {
    std::string text = attrValueString(s);
    SCOPED_TRACE(text);
    sg::Lexer lexer(text, "s");
    sg::Token t = lexer.next();
    if (t.kind == sg::TokenKind::Ident) {
      EXPECT_EQ(t.text, s);
      EXPECT_NE(s, "inf");
      EXPECT_NE(s, "nan");
    } else {
      ASSERT_EQ(t.kind, sg::TokenKind::String);
      EXPECT_EQ(t.stringValue, s);
    }
    EXPECT_EQ(lexer.next().kind, sg::TokenKind::Eof);
  }

  sg::Lexer escapes(R"("\n\t\r\x41\x7e\"\\")", "e");
  EXPECT_EQ(escapes.next().stringValue, "\n\t\rA~\"\\");
}

TEST(TextFile, ReadsFilesAndNamesThemInErrors) {
  std::string path = stepc::testing::scratchPath("text_test.sg");
  {
    std::ofstream out(path);
    out << "graph f {\n  input %x : f32[2]\n  %y = relu(%q)\n  output y = %y\n}\n";
  }
  try {
    parseGraphFile(path);
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(std::string(e.what()), path + ":3:13: error: use of undefined value '%q'");
  }
  {
    std::ofstream out(path);
    out << "graph f {\n  input %x : f32[2]\n  output x = %x\n}\n";
  }
  EXPECT_EQ(parseGraphFile(path).name, "f");
  std::remove(path.c_str());

  try {
    parseGraphFile("/nonexistent/dir/model.sg");
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot open '/nonexistent/dir/model.sg': No such file or directory");
  }
  try {
    parseGraphFile(::testing::TempDir());
    ADD_FAILURE() << "expected an error";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("cannot read"), std::string::npos) << e.what();
  }
}

// Reads are bounded: a device never ends and a huge file is refused by its
// size before anything is read (the file is sparse: it takes no disk).
TEST(TextFile, RefusesDevicesAndFilesOverTheLimit) {
  auto messageOf = [](const std::string &path) {
    try {
      parseGraphFile(path);
    } catch (const Error &e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(messageOf("/dev/zero"), "cannot read '/dev/zero': it is a character device, and "
                                    "a .sg graph is read only from a regular file");
  std::string path = stepc::testing::scratchPath("too_big.sg");
  std::filesystem::resize_file(
      (std::ofstream(path), std::filesystem::path(path)), kMaxGraphFileBytes + 1);
  EXPECT_EQ(messageOf(path),
            fmt::format("cannot read '{}': {} bytes, more than the limit of {} bytes for a .sg "
                        "graph (a million-node graph is about 35 MB)",
                        path, kMaxGraphFileBytes + 1, kMaxGraphFileBytes));
  std::filesystem::remove(path);
}

// An error about a huge attribute quotes its first entries and its length,
// not a megabyte of numbers.
TEST(TextErrors, HugeAttributesAreShortenedInMessages) {
  std::string perm = "0";
  for (int i = 1; i < 500000; ++i)
    perm += "," + std::to_string(i);
  std::string text = "graph g {\n  input %x : f32[2,3]\n  %y = transpose(%x) {perm=[" +
                     perm + "]}\n  output y = %y\n}\n";
  try {
    parseGraph(text, "t.sg");
    FAIL() << "expected an error";
  } catch (const Error &e) {
    std::string message = e.what();
    EXPECT_LT(message.size(), 200u) << message.substr(0, 300);
    EXPECT_NE(message.find("[0,1,2,3,4,5,6,7,... (500000 entries)]"), std::string::npos)
        << message.substr(0, 300);
  }
}

// A graph wrapper for one-line error cases: the body starts on line 2.
std::string inGraph(std::string_view body) {
  return "graph g {\n" + std::string(body) + "\n  output out = %x\n}\n";
}
const char *kX = "  input %x : f32[2,3]\n";

struct ErrorCase {
  std::string what;
  std::string text;
  std::string message; // the whole message, or its start when `prefix`
  bool prefix = false;
};

// The cases written here are those a snippet file cannot hold (bytes that
// are not printable, computed text, no final newline) or that check only a
// message's start; the rest are in tests/snippets/text_errors.sg.
TEST(TextErrors, LocationsAndMessages) {
  std::string x = kX;
  std::vector<ErrorCase> cases = {
      {"empty file", "",
       "t.sg:1:1: error: expected 'graph' at the start of the file, "
       "found end of file"},
      {"no graph name", "graph {",
       "t.sg:1:7: error: expected a graph name after "
       "'graph', found '{'"},
      {"missing open brace", "graph g\ninput %x : f32[]",
       "t.sg:2:1: error: expected '{' after the graph name, found 'input'"},
      {"missing close brace", "graph g {\n  input %x : f32[2]\n",
       "t.sg:3:1: error: expected '}' to close graph 'g' (opened at 1:9), found end of "
       "file"},
      {"text after the graph", "graph g {\n  input %x : f32[2]\n  output x = %x\n}\nmore",
       "t.sg:5:1: error: expected end of file after the graph's closing '}', found "
       "'more'"},
      {"no outputs", "graph g {\n  input %x : f32[2]\n}",
       "t.sg:3:1: error: graph 'g' has no outputs; add 'output name = %value'"},
      {"undefined output value", "graph g {\n  output y = %nope\n}",
       "t.sg:2:14: error: use of undefined value '%nope'"},
      {"unknown attribute", inGraph(x + "  %r = relu(%x) {alpha=1}"),
       "t.sg:3:3: error: relu: unknown attribute 'alpha'", true},
      {"bad initializer value",
       inGraph("  param %w : f32[2] = normal(mean=0, std=-1, "
               "seed=1)"),
       "t.sg:2:23: error: initializer 'normal' needs std >= 0, got -1", true},
      {"control byte", "graph g {\x01}",
       "t.sg:1:10: error: unexpected character '\\x01'"},
      {"NUL byte", std::string("graph g {\n\0", 11),
       "t.sg:2:1: error: unexpected character '\\x00'"},
      {"non-ASCII byte", "graph g\xc3\xa9 {}",
       "t.sg:1:8: error: unexpected character "
       "'\\xc3'"},
      {"long token is shortened",
       inGraph("  input %x : " + std::string(100, 'f') + "[1]"),
       "t.sg:2:14: error: expected a dtype (f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool), found "
       "'ffffffffffffffffffffffffffffffffffffffff...'"},
      {"composite error",
       "graph g {\n  input %x : i32[2]\n  %s = softmax(%x)\n"
       "  output s = %s\n}",
       "t.sg:3:3: error: softmax: expected a floating-point operand, found i32[2]"},
      {"composite attribute type", inGraph(x + "  %s = softmax(%x) {axis=1.5}"),
       "t.sg:3:3: error: softmax: attribute 'axis' must be an integer", true},
  };
  for (const testing::SnippetCase &c : testing::readSnippetCases("tests/snippets/text_errors.sg")) {
    // Without the newlines that put the snippets at their lines in the file.
    size_t start = c.expected.find_first_not_of('\n');
    ASSERT_NE(start, std::string::npos) << c.name << " has no '# expected' message";
    std::string message = c.expected.substr(start);
    cases.push_back({c.name, c.text.substr(c.line), message.substr(0, message.find('\n'))});
  }
  for (const ErrorCase &c : cases) {
    SCOPED_TRACE(c.what);
    std::string message = parseError(c.text);
    if (c.prefix)
      EXPECT_EQ(message.substr(0, c.message.size()), c.message) << message;
    else
      EXPECT_EQ(message, c.message);
  }
}

TEST(TextErrors, HugeListsAndRanksAreRejected) {
  std::string list = "[";
  for (size_t i = 0; i <= (size_t(1) << 24); ++i)
    list += "0,";
  list += "0]";
  std::string message =
      parseError(inGraph("  %c = constant() {dtype=f32, shape=[1], data=" + list + "}"));
  EXPECT_NE(message.find("error: list too long: more than 16777216 elements"),
            std::string::npos)
      << message.substr(0, 200);

  std::string shape = "f32[1";
  for (int i = 0; i < 64; ++i)
    shape += ",1";
  EXPECT_EQ(parseError(inGraph("  input %x : " + shape + "]")),
            "t.sg:2:146: error: shape too large: more than 64 dimensions");
}

TEST(TextErrors, PathologicalInputsFailFast) {
  std::string longName(1 << 20, 'n');
  std::string message = parseError("graph " + longName + " {\n}");
  EXPECT_EQ(message, "t.sg:2:1: error: graph '" + std::string(40, 'n') +
                         "...' has no outputs; add 'output name = %value'");
  EXPECT_EQ(parseError("graph g {" + std::string(1 << 20, '[')),
            "t.sg:1:10: error: expected a statement (input, param, output, update or "
            "%name = op(...)), found '['");
  EXPECT_EQ(parseError(std::string(1 << 20, '\0')),
            "t.sg:1:1: error: unexpected character '\\x00'");
  std::string comment = "# " + std::string(1 << 20, '\xff') + "\n";
  EXPECT_EQ(parseGraph(comment + corpusText("canonical")),
            parseGraph(corpusText("canonical")));
  std::string manyOperands = "graph g {\n  input %x : f32[1]\n  %c = concat(%x";
  for (int i = 0; i < 100000; ++i)
    manyOperands += ", %x";
  manyOperands += ") {axis=0}\n  output c = %c\n}\n";
  EXPECT_EQ(parseGraph(manyOperands).nodes.back().type,
            (TensorType{DType::F32, {100001}}));
  std::string manySoftmax = "graph g {\n  input %x : f32[1]\n  %s = softmax(%x";
  for (int i = 0; i < 100000; ++i)
    manySoftmax += ", %x";
  manySoftmax += ")\n  output s = %s\n}\n";
  EXPECT_EQ(parseError(manySoftmax),
            "t.sg:3:3: error: softmax: too many operands (100001)");
}

// An empty list of reals (constantData with no elements) prints as "[]",
// which the grammar reads as an empty list of integers, so the graphs differ.
// Disabled until Attrs stores empty real lists as empty integer lists (see
// the report on the text format); every other attribute round-trips.
// Named values are looked up through a name index, and verify() checks the
// graph in place: parsing is linear in the number of values. A million named
// nodes parse and verify in a few seconds (the CTest timeout catches a
// quadratic step: it took 6 s for 40 thousand before).
TEST(TextScale, AMillionNamedValues) {
  constexpr int kValues = 1'000'000;
  std::string text = "graph big {\n  input %x : f32[2,3]\n";
  text.reserve(size_t(kValues) * 32);
  std::string previous = "x";
  for (int i = 0; i < kValues; ++i) {
    std::string name = "v" + std::to_string(i);
    text += "  %" + name + (i % 2 ? " = relu(%" : " = add(%x, %") + previous + ")\n";
    previous = std::move(name);
  }
  text += "  output y = %" + previous + "\n}\n";
  Graph g = parseGraph(text, "big.sg");
  ASSERT_EQ(g.size(), size_t(kValues) + 1);
  EXPECT_EQ(g.findNamed("v999999"), ValueId(kValues));
  EXPECT_EQ(g.findNamed("v0"), ValueId(1));
  EXPECT_EQ(g.findOutput("y"), ValueId(kValues));
}

TEST(TextRoundTrip, EmptyRealList) {
  GraphBuilder b("e");
  b.output("c", constantData(b, {}, DType::F32, {0}));
  expectRoundTrip(b.finish());
}

} // namespace
} // namespace stepc
