#include "testing.h"

#include "stepc/passes.h"
#include "stepc/random.h"
#include "stepc/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <sstream>
#include <string_view>
#include <sys/wait.h>
#include <unistd.h>

namespace stepc::testing {

uint64_t freshSeed() {
  if (const char *fixed = std::getenv("STEPC_TEST_SEED"))
    return std::strtoull(fixed, nullptr, 10);
  const char *fresh = std::getenv("STEPC_FRESH_SEEDS");
  if (!fresh || std::string_view(fresh) != "1")
    return 20261205;
  std::random_device device;
  uint64_t seed = (uint64_t(device()) << 32) | device();
  fmt::print(stderr, "fresh seed: replay with STEPC_TEST_SEED={}\n", seed);
  return seed;
}

Tensor randomTensor(DType dtype, const Shape &shape, uint64_t seed, double low,
                    double high) {
  Tensor t(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    double u = randomUniform(seed, static_cast<uint64_t>(i));
    double v = low + (high - low) * u;
    t.setReal(i, isFloat(dtype) ? v : std::floor(v));
  }
  return t;
}

::testing::AssertionResult allClose(const Tensor &actual, const Tensor &expected,
                                    double rtol, double atol) {
  if (actual.type() != expected.type())
    return ::testing::AssertionFailure()
           << "type " << typeString(actual.type()) << " != expected "
           << typeString(expected.type());
  int64_t bad = 0;
  std::string first;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double a = actual.real(i), e = expected.real(i);
    bool ok = (std::isnan(a) && std::isnan(e)) || a == e ||
              std::abs(a - e) <= atol + rtol * std::abs(e);
    if (!ok && bad++ == 0)
      first = fmt::format("element {}: {} vs expected {}", i, a, e);
  }
  if (bad == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.numel() << " elements differ; first " << first;
}

Tensor runOp(const std::vector<Tensor> &args,
             const std::function<Value(GraphBuilder &, std::vector<Value> &)> &build) {
  GraphBuilder b("op");
  std::vector<Value> xs;
  TensorMap inputs;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = "x" + std::to_string(i);
    xs.push_back(b.input(name, args[i].dtype(), args[i].shape()));
    inputs.emplace(name, args[i]);
  }
  b.output("y", build(b, xs));
  return interpret(b.finish(), inputs, {}).at("y");
}

std::string sourcePath(const std::string &relative) {
  return std::string(STEPC_TESTING_SOURCE_DIR) + "/" + relative;
}

std::string readSourceFile(const std::string &relative) {
  std::string path = sourcePath(relative);
  std::ifstream file(path, std::ios::binary);
  if (!file)
    throw Error(fmt::format("cannot read {}", path));
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::vector<std::string> exampleNames() {
  std::vector<std::string> names;
  for (const auto &entry : std::filesystem::directory_iterator(sourcePath("examples")))
    if (entry.path().extension() == ".sg" && entry.path().stem() != "gpt")
      names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

Graph loadExample(const std::string &name) {
  return parseGraphFile(sourcePath("examples/" + name + ".sg"));
}

CommandResult stepcCommand(const std::string &arguments) {
  const char *bin = std::getenv("STEPC_BIN");
  std::string command = fmt::format("{} {} 2>&1", bin ? bin : "", arguments);
  CommandResult result;
  FILE *pipe = popen(command.c_str(), "r");
  if (!pipe)
    return result;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe))
    result.output.append(buffer, n);
  int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string scratchPath(std::string_view file) {
  const ::testing::TestInfo *test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string owner = test ? fmt::format("{}.{}", test->test_suite_name(), test->name()) : "none";
  std::replace(owner.begin(), owner.end(), '/', '_');
  return (std::filesystem::path(::testing::TempDir()) /
          fmt::format("stepc_{}_{}_{}", owner, ::getpid(), file))
      .string();
}

Graph parseSnippet(std::string_view text) { return parseGraph(text, "test.sg"); }

Graph optimized(Graph graph, const std::vector<std::string> &passes) {
  PassManager manager;
  for (const std::string &name : passes)
    manager.add(name);
  manager.run(graph);
  return graph;
}

TensorMap inputsFor(const Graph &graph, uint64_t seed) {
  TensorMap inputs = randomInputs(graph, seed);
  if (auto lr = inputs.find("lr"); lr != inputs.end() && lr->second.numel() == 1)
    lr->second = Tensor::scalar(lr->second.dtype(), 1e-3);
  return inputs;
}

Results runGraph(const Graph &graph, const TensorMap &inputs, const TensorMap &params) {
  Results r;
  r.params = params;
  r.outputs = graph.updates.empty() ? interpret(graph, inputs, r.params)
                                    : interpretStep(graph, inputs, r.params);
  return r;
}

void expectSameResults(const Results &actual, const Results &expected) {
  for (const TensorMap *which : {&expected.outputs, &expected.params}) {
    const TensorMap &got = which == &expected.outputs ? actual.outputs : actual.params;
    for (const auto &[name, tensor] : *which) {
      auto it = got.find(name);
      ASSERT_NE(it, got.end()) << "missing " << name;
      EXPECT_TRUE(allClose(it->second, tensor, 0, 0)) << name;
    }
  }
}

void expectSameSemantics(const Graph &before, const Graph &after) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (STEPC_TEST_SEED to replay)");
  TensorMap inputs = inputsFor(before, seed);
  TensorMap params = initialParams(before);
  expectSameResults(runGraph(after, inputs, params), runGraph(before, inputs, params));
}

void expectRewrite(std::string_view input, const std::vector<std::string> &passes,
                   std::string_view expected) {
  Graph before = parseSnippet(input);
  Graph after = optimized(before, passes);
  EXPECT_EQ(printGraph(after), printGraph(parseSnippet(expected)));
  expectSameSemantics(before, after);
}

std::vector<SnippetCase> readSnippetCases(const std::string &casesFile) {
  std::string path = sourcePath(casesFile);
  std::ifstream file(path);
  if (!file)
    throw Error(fmt::format("cannot read the snippet cases {}", path));
  std::vector<SnippetCase> cases;
  std::string *text = nullptr; // what the current line belongs to
  std::string line;
  for (int number = 1; std::getline(file, line); ++number) {
    if (line.starts_with("# case ")) {
      cases.push_back({line.substr(7), std::string(number, '\n'), "", number});
      text = &cases.back().text;
    } else if (line == "# expected" && text && text == &cases.back().text) {
      text = &cases.back().expected;
      *text = std::string(number, '\n');
    } else if (text) {
      *text += line + "\n";
    } else if (!line.empty() && !line.starts_with("#")) {
      throw Error(fmt::format("{}:{}: expected '# case NAME' before the first snippet, got '{}'",
                              path, number, line));
    }
  }
  if (cases.empty())
    throw Error(fmt::format("{}: no '# case NAME' line", path));
  return cases;
}

std::string snippetText(const std::string &casesFile, std::string_view name) {
  for (SnippetCase &c : readSnippetCases(casesFile))
    if (c.name == name)
      return std::move(c.text);
  throw Error(fmt::format("{}: no '# case {}'", sourcePath(casesFile), name));
}

Graph snippetGraph(const std::string &casesFile, std::string_view name) {
  return parseGraph(snippetText(casesFile, name), casesFile);
}

namespace {

class RewriteTest : public ::testing::Test {
public:
  RewriteTest(std::vector<std::string> passes, SnippetCase c)
      : passes_(std::move(passes)), case_(std::move(c)) {}
  void TestBody() override {
    expectRewrite(case_.text, passes_, case_.expected.empty() ? case_.text : case_.expected);
  }

private:
  std::vector<std::string> passes_;
  SnippetCase case_;
};

class FailingTest : public ::testing::Test {
public:
  explicit FailingTest(std::string message) : message_(std::move(message)) {}
  void TestBody() override { FAIL() << message_; }

private:
  std::string message_;
};

} // namespace

bool registerRewriteTests(const char *suite, const std::vector<std::string> &passes,
                          const std::string &casesFile) {
  std::string path = sourcePath(casesFile);
  try {
    for (const SnippetCase &c : readSnippetCases(casesFile))
      ::testing::RegisterTest(suite, c.name.c_str(), nullptr, nullptr, path.c_str(), c.line,
                              [=]() -> ::testing::Test * { return new RewriteTest(passes, c); });
  } catch (const Error &e) {
    std::string message = e.what();
    ::testing::RegisterTest(suite, "CaseFile", nullptr, nullptr, path.c_str(), 1,
                            [=]() -> ::testing::Test * { return new FailingTest(message); });
  }
  return true;
}

} // namespace stepc::testing
