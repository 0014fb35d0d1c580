// Shared test helpers: seeds, random tensors, comparisons, the examples, and
// the checks every graph pass's test makes.
#pragma once

#include "stepc/builder.h"
#include "stepc/error.h"
#include "stepc/graph.h"
#include "stepc/interpreter.h"
#include "stepc/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace stepc::testing {

// The seed of a randomized test. Fixed by default, so that `make test` gives
// the same result every run; STEPC_TEST_SEED=<n> replays a given seed, and
// STEPC_FRESH_SEEDS=1 draws a fresh one per call (std::random_device) and
// prints it: the tests labelled `random` run that way. Tests also print the
// seed with SCOPED_TRACE so a failure can be replayed.
uint64_t freshSeed();

// Uniform in [low, high) for floats; integers in [low, high).
Tensor randomTensor(DType dtype, const Shape &shape, uint64_t seed, double low = -1,
                    double high = 1);

// Checks |a - b| <= atol + rtol * |b| elementwise, with matching types.
::testing::AssertionResult allClose(const Tensor &actual, const Tensor &expected,
                                    double rtol, double atol = 0);

std::string sourcePath(const std::string &relative); // under the repo root
// The bytes of the file `relative` names under the repo root; throws a
// stepc::Error naming it when it cannot be read.
std::string readSourceFile(const std::string &relative);

// The message of the stepc::Error that `f` throws. Throwing nothing, or
// another exception, fails the test (user errors must be stepc::Errors).
template <class F> std::string errorOf(F &&f) {
  try {
    f();
  } catch (const Error &e) {
    return e.what();
  } catch (const std::exception &e) {
    ADD_FAILURE() << "not a stepc::Error: " << e.what();
    return std::string("(not a stepc::Error) ") + e.what();
  }
  ADD_FAILURE() << "no stepc::Error was thrown";
  return "(no error)";
}

// Interprets a one-output graph whose inputs x0, x1, ... take `args`' types
// and values, the output being what `build` makes of them: its value.
Tensor runOp(const std::vector<Tensor> &args,
             const std::function<Value(GraphBuilder &, std::vector<Value> &)> &build);

// The models in examples/ by name ("cnn", "mlp", ...), sorted, that the
// suites sweeping every example (interpreter after every pass, fused and
// unfused builds, three thread counts) run; not gpt.sg, whose training step
// takes minutes through those sweeps: test_codegen_examples.cpp has a test
// of its own for it.
std::vector<std::string> exampleNames();
// examples/NAME.sg
Graph loadExample(const std::string &name);

// `stepc ARGUMENTS` as a user runs it, the tool being $STEPC_BIN (set by
// tests/CMakeLists.txt): its exit status (-1 when it did not exit) and its
// stdout and stderr together.
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult stepcCommand(const std::string &arguments);

// A path in the test temp folder named after `file` and the running test and
// process, so tests that CTest runs in parallel never share a file.
std::string scratchPath(std::string_view file);

// --- Graph passes (test_simplify, test_fold, test_cse, test_dce, ...) ---------
// Each pass is tested two ways: its structural effect on a small .sg snippet,
// with the input and the expected graph side by side; and semantic
// preservation: the reference interpreter runs the graph before and after on
// random inputs, and every output and param update must match. The passes
// only remove or reuse computations and fold with the interpreter's own
// kernels, so results must match bit for bit (allClose with zero tolerance,
// which still counts -0 == +0, see x + 0 in simplify.cpp, and NaN == NaN).

// A test's .sg snippet (messages name it test.sg).
Graph parseSnippet(std::string_view text);

// `graph` after the named passes, in order.
Graph optimized(Graph graph, const std::vector<std::string> &passes);

// One interpreted run: outputs, and params after the step's updates
// (unchanged without updates).
struct Results {
  TensorMap outputs;
  TensorMap params;
};

// Random inputs for `graph`; a training step's learning rate is a realistic
// 1e-3 rather than a random number in [-1, 1).
TensorMap inputsFor(const Graph &graph, uint64_t seed);
Results runGraph(const Graph &graph, const TensorMap &inputs, const TensorMap &params);
// Every output and param of `expected` is in `actual`, bit for bit.
void expectSameResults(const Results &actual, const Results &expected);
// Runs `before` and `after` on the same fresh random inputs and initial
// params and requires equal outputs and updated params.
void expectSameSemantics(const Graph &before, const Graph &after);
// The pass (or pipeline) `passes` turns `input` into exactly `expected` and
// keeps its meaning.
void expectRewrite(std::string_view input, const std::vector<std::string> &passes,
                   std::string_view expected);

// Cases kept as .sg text in a file of tests/snippets/ rather than in C++
// strings: a case starts at a line "# case NAME", then comes its snippet,
// then, where a test wants one, a line "# expected" and a second graph.
struct SnippetCase {
  std::string name;
  // Each padded with newlines to its place, so that a parse error gives the
  // line in the file.
  std::string text;
  std::string expected; // empty without "# expected"
  int line = 0;         // of "# case NAME"
};
// GoogleTest prints a parameterized test's case by this (not its bytes).
inline void PrintTo(const SnippetCase &c, std::ostream *out) { *out << c.name; }
// `casesFile` relative to the repo root; throws a stepc::Error naming the file
// when it cannot be read or has no cases.
std::vector<SnippetCase> readSnippetCases(const std::string &casesFile);

// The snippet of the case `name` in `casesFile`, for a test that checks one
// graph its own way; throws a stepc::Error naming both when there is no such
// case.
std::string snippetText(const std::string &casesFile, std::string_view name);
// That snippet parsed, errors naming `casesFile` and the line in it.
Graph snippetGraph(const std::string &casesFile, std::string_view name);

// A pass's rewrite cases: each becomes the test SUITE.NAME, expectRewrite
// of its snippet by `passes` into its expected graph, or into the snippet
// itself where it has none. Called to initialize a namespace-scope variable,
// so that the tests exist before main runs them; a file that cannot be read
// gives one failing test SUITE.CaseFile saying why.
bool registerRewriteTests(const char *suite, const std::vector<std::string> &passes,
                          const std::string &casesFile);

} // namespace stepc::testing
