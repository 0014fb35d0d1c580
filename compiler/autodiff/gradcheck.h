// Gradient checking: grad() against central finite differences in f64 on
// the reference interpreter, and the registry of cases that covers every
// differentiable op. Internal (library stepc_gradcheck): `stepc gradcheck`
// and the tests use it; it is not part of the installed API.
#pragma once

#include "stepc/interpreter.h"

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

struct GradcheckOptions {
  double step = 1e-6;     // finite-difference step h
  double tolerance = 1e-6; // |analytic - numeric| <= tolerance * max(1, |numeric|)
  // Check at most this many elements per tensor, spread evenly (0 = all):
  // whole models have too many parameters to perturb one by one.
  int64_t maxElementsPerTensor = 0;
};

struct GradcheckReport {
  bool passed = true;
  int64_t elementsChecked = 0;
  double worstError = 0;  // the largest scaled error seen
  std::string worstWhere; // "w1[3]: analytic 0.25, numeric 0.2500001"
};

// Converts the graph to f64 (every f32 type and dtype attribute), then
// checks d loss / d each value in `wrt` (input or param names; empty = every
// floating-point input and param) element by element at the given point.
GradcheckReport gradcheck(const Graph &graph, const std::string &loss,
                          const TensorMap &inputs, const TensorMap &params,
                          std::vector<std::string> wrt = {},
                          const GradcheckOptions &options = {});

// One gradient check of an op or composite: a small f64 graph with output
// "loss" and a point to check it at. `op` names the op it covers (for
// composites, its name such as "softmax").
struct GradcheckCase {
  std::string name;
  std::string op;
  std::function<Graph()> build;
  // Inputs chosen away from kinks (relu at 0, abs at 0, ties in max).
  std::function<TensorMap(const Graph &, uint64_t seed)> point;
};

// Every op and composite case (compiler/autodiff/gradcheck_cases.cpp).
const std::vector<GradcheckCase> &gradcheckCases();

// Differentiable ops deliberately left without a case, each with the reason
// (the one list; the coverage test in tests/test_gradcheck.cpp reads it).
struct GradcheckExclusion {
  std::string_view op;
  std::string_view reason;
};
std::span<const GradcheckExclusion> gradcheckExclusions();

} // namespace stepc
