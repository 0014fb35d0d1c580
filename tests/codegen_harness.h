// The CPU backend against the reference interpreter (docs/design.md rule 5): a
// graph is compiled fused and unfused, both get the same params and inputs,
// and every output and every updated param must match interpret() within a
// tolerance chosen by the value's dtype and by whether it accumulates.
// Shared by test_codegen.cpp (ops) and test_codegen_examples.cpp (models);
// header-only so that only these two tests link the backend (and LLVM).
#pragma once

#include "testing.h"
#include "lowered_graph.h"
#include "tiled_matmul.h"

#include "stepc/compile.h"
#include "stepc/interpreter.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace stepc::testing {

struct Tolerance {
  double rtol = 0, atol = 0; // both 0: exact (ints and bools)
};

// Whether `value` is computed through an accumulation: a reduction, matmul,
// convolution, average pool or one of their gradients, anywhere upstream.
inline bool accumulates(const Graph &graph, ValueId value);

// f32: 1e-5 relative for elementwise results, 1e-4 for accumulated ones
// (issue 5). The absolute terms cover results near zero, where a relative
// bound means nothing: an elementwise f32 result of O(1) operands (a
// difference, sin near pi, the polynomial exp/tanh/erf that codegen uses)
// carries an absolute rounding error of a few ulps of 1, ~1e-7, so 1e-6;
// a sum of n O(1) terms that cancels to near zero carries n * eps * max|term|
// from its summation order (tiled matmul, parallel chunks), ~1e-5 for the
// hundreds of terms in these tests. f64: the same reasoning with eps 1e-16.
inline Tolerance toleranceFor(const Graph &graph, ValueId value);

// Forces a register tile while it lives (the host's again after), whatever
// the host has: both tiles' edges get tested on one machine.
struct ForcedTile {
  explicit ForcedTile(const codegen::RegisterTile &tile) { codegen::forceRegisterTile(&tile); }
  ~ForcedTile() { codegen::forceRegisterTile(nullptr); }
  ForcedTile(const ForcedTile &) = delete;
  ForcedTile &operator=(const ForcedTile &) = delete;
};

struct CompareOptions {
  int steps = 1;
  // Compile and compare these modes (both by default).
  bool fused = true, unfused = true;
  // Updated params whose elements may, a few of them, miss the tolerance:
  // at most `fraction` of a param's elements (at least one) may differ by up
  // to `atol` (see test_codegen_examples.cpp for Adam's reason). 0: none.
  struct Outliers {
    double fraction = 0, atol = 0;
  } paramOutliers;
  // Threads that split each kernel's parallel dimension (0: one per core).
  int threads = 0;
  // Collects the op names of every kernel compiled (from provenance).
  std::set<std::string> *opsCompiled = nullptr;
};

// Compiles `graph` (fused and unfused), sets every param to `params`, runs
// `steps` steps on `inputs`, and compares every output and, for graphs with
// updates, every param after each step with interpret()/interpretStep().
// Reports failures through gtest.
inline void expectMatchesInterpreter(const Graph &graph, const TensorMap &inputs,
                                     const TensorMap &params,
                                     const CompareOptions &options = {});

// Checks two tensors: same type; exact for ints and bools, else allClose.
// With `outliers`, up to that many float elements may miss `tolerance` if
// each is within `outlierAtol`.
inline ::testing::AssertionResult matches(const Tensor &actual, const Tensor &expected,
                                          Tolerance tolerance, int64_t outliers = 0,
                                          double outlierAtol = 0);

// ---------------------------------------------------------------------------
// Implementation

// Whether the op combines many terms (sums, maxima, products summed), so a
// backend that takes them in another order than the interpreter may differ
// in the last bits (one case per op, docs/design.md rule 1).
inline bool combinesTerms(OpKind op) {
  switch (opInfo(op).opClass) {
  case OpClass::Reduction:
  case OpClass::Contraction:
  case OpClass::Scatter: return true;
  // An average pool (or its gradient) sums a window; a max pool picks one.
  case OpClass::Window: return op == OpKind::AvgPool2d || op == OpKind::AvgPool2dGrad;
  case OpClass::Source:
  case OpClass::Constant:
  case OpClass::Elementwise:
  case OpClass::Random:
  case OpClass::View:
  case OpClass::Indexed:
  case OpClass::Collective: return false;
  }
  return false;
}

inline bool accumulates(const Graph &graph, ValueId value) {
  std::vector<bool> behind = valuesBehind(graph, value);
  for (ValueId v = 0; v < graph.size(); ++v)
    if (behind[v] && combinesTerms(graph.node(v).op))
      return true;
  return false;
}

inline Tolerance toleranceFor(const Graph &graph, ValueId value) {
  DType dtype = graph.type(value).dtype;
  if (!isFloat(dtype))
    return {}; // integers and bools compare exactly
  bool acc = accumulates(graph, value);
  if (dtype == DType::F32)
    return acc ? Tolerance{1e-4, 1e-5} : Tolerance{1e-5, 1e-6};
  if (dtype == DType::F64)
    return acc ? Tolerance{1e-11, 1e-13} : Tolerance{1e-13, 1e-15};
  // The interpreter rounds every op's result to half, a fused kernel only
  // what it stores: a few half ulps apart (2^-11 for f16, 2^-8 for bf16).
  if (dtype == DType::F16)
    return acc ? Tolerance{1e-2, 1e-2} : Tolerance{4e-3, 1e-3};
  return acc ? Tolerance{6e-2, 4e-2} : Tolerance{3e-2, 8e-3}; // bf16
}

inline ::testing::AssertionResult matches(const Tensor &actual, const Tensor &expected,
                                          Tolerance tolerance, int64_t outliers,
                                          double outlierAtol) {
  if (actual.type() != expected.type())
    return ::testing::AssertionFailure() << "type " << typeString(actual.type())
                                         << " != expected " << typeString(expected.type());
  if (!isFloat(expected.dtype())) {
    // Bytes, so that i64 values above 2^53 compare exactly too.
    if (actual == expected)
      return ::testing::AssertionSuccess();
    int64_t bad = 0;
    std::string first;
    for (int64_t i = 0; i < actual.numel(); ++i) {
      bool same = expected.dtype() == DType::I64
                      ? actual.data<int64_t>()[i] == expected.data<int64_t>()[i]
                      : actual.real(i) == expected.real(i);
      if (!same && bad++ == 0)
        first = expected.dtype() == DType::I64
                    ? fmt::format("element {}: {} vs expected {}", i,
                                  actual.data<int64_t>()[i], expected.data<int64_t>()[i])
                    : fmt::format("element {}: {} vs expected {}", i, actual.real(i),
                                  expected.real(i));
    }
    return ::testing::AssertionFailure()
           << bad << " of " << actual.numel() << " elements differ; first " << first;
  }
  ::testing::AssertionResult close = allClose(actual, expected, tolerance.rtol, tolerance.atol);
  if (close || outliers == 0)
    return close;
  int64_t missed = 0;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double a = actual.real(i), e = expected.real(i);
    if ((std::isnan(a) && std::isnan(e)) || a == e ||
        std::abs(a - e) <= tolerance.atol + tolerance.rtol * std::abs(e))
      continue;
    if (!(std::abs(a - e) <= outlierAtol))
      return close;
    ++missed;
  }
  if (missed <= outliers)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << missed << " elements miss the tolerance, more than the "
                                       << outliers << " allowed; " << close.message();
}

namespace detail {

inline std::unique_ptr<Executable> compileOrFail(const Graph &graph, bool fusion,
                                                 const RunOptions &run) {
  try {
    // No cache: every run compiles, and tests leave the user's cache alone.
    return compileJit(graph, CompileOptions{.fusion = fusion, .cache = false}, run);
  } catch (const std::exception &e) {
    ADD_FAILURE() << "compileJit (" << (fusion ? "fused" : "unfused")
                  << ") threw: " << e.what();
    // STEPC_TEST_DUMP_MLIR=FILE writes the module that failed, for debugging.
    if (const char *path = std::getenv("STEPC_TEST_DUMP_MLIR")) {
      std::ofstream out(path);
      out << lowerGraph(graph, CompileOptions{.fusion = fusion, .cache = false}).mlirModule;
    }
    return nullptr;
  }
}

} // namespace detail

inline void expectMatchesInterpreter(const Graph &graph, const TensorMap &inputs,
                                     const TensorMap &params, const CompareOptions &options) {
  std::vector<bool> modes;
  if (options.fused)
    modes.push_back(true);
  if (options.unfused)
    modes.push_back(false);
  for (bool fusion : modes) {
    SCOPED_TRACE(fusion ? "compiled fused" : "compiled unfused");
    std::unique_ptr<Executable> exe =
        detail::compileOrFail(graph, fusion, RunOptions{.threads = options.threads});
    if (!exe)
      continue;
    if (options.opsCompiled)
      for (const KernelSpec &kernel : exe->spec().kernels)
        for (const std::string &line : kernel.provenance)
          options.opsCompiled->insert(line.substr(0, line.find(' ')));
    for (const std::string &name : exe->paramNames())
      exe->setParam(name, params.at(name));

    TensorMap expectedParams = params;
    for (int step = 0; step < options.steps; ++step) {
      SCOPED_TRACE(fmt::format("step {}", step));
      TensorMap expected = graph.updates.empty()
                               ? interpret(graph, inputs, expectedParams)
                               : interpretStep(graph, inputs, expectedParams);
      std::map<std::string, Tensor> actual;
      try {
        actual = exe->step(inputs);
      } catch (const std::exception &e) {
        ADD_FAILURE() << "step threw: " << e.what();
        break;
      }
      EXPECT_EQ(actual.size(), expected.size());
      for (const GraphOutput &out : graph.outputs) {
        auto it = actual.find(out.name);
        if (it == actual.end()) {
          ADD_FAILURE() << "no output '" << out.name << "'";
          continue;
        }
        EXPECT_TRUE(matches(it->second, expected.at(out.name), toleranceFor(graph, out.value)))
            << "output '" << out.name << "' (" << opInfo(graph.node(out.value).op).name
            << " at " << graph.node(out.value).loc.str() << ")";
      }
      for (const ParamUpdate &u : graph.updates) {
        const std::string &name = graph.node(u.param).name;
        const Tensor &want = expectedParams.at(name);
        int64_t outliers =
            options.paramOutliers.fraction > 0
                ? std::max<int64_t>(1, int64_t(options.paramOutliers.fraction * double(want.numel())))
                : 0;
        EXPECT_TRUE(matches(exe->param(name), want, toleranceFor(graph, u.value), outliers,
                            options.paramOutliers.atol))
            << "param '" << name << "' after the step";
      }
    }
  }
}

// body(tile) with each register tile forced in turn (AVX2's 6x16, then
// AVX-512's 8x32, whatever the host has), its name in the failures' trace.
inline void forEachRegisterTile(const std::function<void(const codegen::RegisterTile &)> &body) {
  for (const codegen::RegisterTile *tile : {&codegen::avx2Tile(), &codegen::avx512Tile()}) {
    SCOPED_TRACE(tile->name);
    ForcedTile forced(*tile);
    body(*tile);
  }
}

// Compiled fused with each register tile forced (AVX2's 6x16 and AVX-512's
// 8x32, whatever the host has), at 1 and 2 threads, against the interpreter:
// a product's edges (rows past the last whole tile, masked columns) fall at
// different places. `alsoOnEachTile` runs while each tile is forced.
inline void expectMatchesInterpreterOnBothTiles(const Graph &graph, const TensorMap &inputs,
                                                const TensorMap &params,
                                                const std::function<void()> &alsoOnEachTile = {}) {
  forEachRegisterTile([&](const codegen::RegisterTile &) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(fmt::format("{} threads", threads));
      CompareOptions options;
      options.threads = threads;
      options.unfused = false;
      expectMatchesInterpreter(graph, inputs, params, options);
    }
    if (alsoOnEachTile)
      alsoOnEachTile();
  });
}

// Fault injection (`stepc bisect-fusion`): with kernel `kernel` perturbed
// by 0.25, each named output's elements at even flat indices move by 0.25
// and the others not at all, at 1, 2 and 3 threads (each element once,
// whichever call owns it).
inline void expectPerturbationShiftsEachEvenElementOnce(const Graph &graph,
                                                       const TensorMap &inputs, size_t kernel,
                                                       const std::vector<std::string> &names) {
  for (int threads : {1, 2, 3}) {
    CompileOptions options{.cache = false};
    auto plain = compileJit(graph, options, {.threads = threads})->step(inputs);
    options.perturbKernel = CompileOptions::Perturbation{kernel, 0.25};
    auto perturbed = compileJit(graph, options, {.threads = threads})->step(inputs);
    for (const std::string &name : names)
      for (int64_t i = 0; i < plain.at(name).numel(); ++i)
        ASSERT_NEAR(perturbed.at(name).real(i), plain.at(name).real(i) + (i % 2 == 0 ? 0.25 : 0),
                    1e-5)
            << name << "[" << i << "] at " << threads << " threads";
  }
}

} // namespace stepc::testing
