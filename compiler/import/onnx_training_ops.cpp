// The optimizers of ONNX's ai.onnx.preview.training domain as compositions:
// Adagrad, Momentum (standard and Nesterov) and Adam. Each takes a learning
// rate R and an update count T, then n tensors X, n gradients G and its n
// (or 2n) states, and returns the new X and states, elementwise. They
// compute in X's dtype (R and T cast to it).
#include "onnx_ops.h"

#include <fmt/format.h>

namespace stepc::onnx_import {
namespace {

// The n tensors of each group after R and T: inputs 2 + k n + i.
struct OptimizerInputs {
  Value rate, count; // R and T, cast to X's dtype
  int64_t n = 0;
  std::vector<std::vector<Value>> groups; // X, G, then the states
};

OptimizerInputs optimizerInputs(NodeContext &c, int groups) {
  size_t tensors = c.numInputs() - 2;
  if (c.numInputs() < 2 || tensors % size_t(groups) != 0 || tensors == 0)
    c.invalid(fmt::format("expected R, T and {} groups of equally many tensors, found {} inputs",
                          groups, c.numInputs()));
  OptimizerInputs in;
  in.n = static_cast<int64_t>(tensors / size_t(groups));
  for (int k = 0; k < groups; ++k) {
    in.groups.emplace_back();
    for (int64_t i = 0; i < in.n; ++i)
      in.groups.back().push_back(c.in(2 + size_t(k * in.n + i)));
  }
  DType dtype = in.groups[0][0].dtype();
  if (!isFloat(dtype))
    c.unsupportedDType("tensor X", dtype);
  for (const auto &group : in.groups)
    for (const Value &v : group)
      if (v.dtype() != dtype)
        c.invalid(fmt::format("every X, G and state must be {}, found {}", dtypeName(dtype),
                              typeString(v.type())));
  Value r = c.in(0), t = c.in(1);
  if (checkedNumel(r.shape()) != 1 || checkedNumel(t.shape()) != 1)
    c.invalid(fmt::format("R and T must be scalars, found {} and {}", typeString(r.type()),
                          typeString(t.type())));
  in.rate = cast(reshape(r, {}), dtype);
  in.count = cast(reshape(t, {}), dtype);
  return in;
}

} // namespace

// r = R / (1 + T decay); g = norm X + G; H' = H + g^2;
// X' = X - r g / (sqrt(H') + epsilon). Outputs X'..., H'....
void mapAdagrad(NodeContext &c) {
  OptimizerInputs in = optimizerInputs(c, 3);
  const Value &x0 = in.groups[0][0];
  auto k = [&](double v) { return scalarOf(c, x0, v); };
  double decay = c.attrFloat("decay_factor", 0), epsilon = c.attrFloat("epsilon", 1e-6);
  double norm = c.attrFloat("norm_coefficient", 0);
  Value r = div(in.rate, add(k(1), mul(in.count, k(decay))));
  for (int64_t i = 0; i < in.n; ++i) {
    Value x = in.groups[0][i], g = in.groups[1][i], h = in.groups[2][i];
    Value regularized = add(mul(k(norm), x), g);
    Value hNew = add(h, square(regularized));
    Value xNew = sub(x, div(mul(r, regularized), add(sqrt(hNew), k(epsilon))));
    c.setOutput(size_t(i), xNew);
    c.setOutput(size_t(in.n + i), hNew);
  }
}

// g = norm X + G; V' = alpha V + beta' g with beta' = beta once T > 0 (1 on
// the first update); standard: X' = X - R V'; nesterov: X' = X - R (g +
// alpha V'). Outputs X'..., V'....
void mapMomentum(NodeContext &c) {
  OptimizerInputs in = optimizerInputs(c, 3);
  const Value &x0 = in.groups[0][0];
  auto k = [&](double v) { return scalarOf(c, x0, v); };
  for (const char *required : {"alpha", "beta", "mode", "norm_coefficient"})
    if (!c.hasAttr(required))
      c.invalid(fmt::format("Momentum needs the attribute '{}'", required));
  double alpha = c.attrFloat("alpha", 0), beta = c.attrFloat("beta", 0);
  double norm = c.attrFloat("norm_coefficient", 0);
  std::string mode = c.attrString("mode");
  if (mode != "standard" && mode != "nesterov")
    c.invalid(fmt::format("attribute 'mode' must be standard or nesterov, found '{}'", mode));
  Value betaAdjusted = select(gt(in.count, k(0)), k(beta), k(1));
  for (int64_t i = 0; i < in.n; ++i) {
    Value x = in.groups[0][i], g = in.groups[1][i], v = in.groups[2][i];
    Value regularized = add(mul(k(norm), x), g);
    Value vNew = add(mul(k(alpha), v), mul(betaAdjusted, regularized));
    Value step = mode == "standard" ? vNew : add(regularized, mul(k(alpha), vNew));
    c.setOutput(size_t(i), sub(x, mul(in.rate, step)));
    c.setOutput(size_t(in.n + i), vNew);
  }
}

// g = norm X + G; V' = alpha V + (1 - alpha) g; H' = beta H + (1 - beta) g^2;
// R' = R sqrt(1 - beta^T) / (1 - alpha^T) once T > 0 (R at T = 0);
// X' = (1 - norm_post) (X - R' V' / (sqrt(H') + epsilon)).
// Outputs X'..., V'..., H'....
void mapAdam(NodeContext &c) {
  OptimizerInputs in = optimizerInputs(c, 4);
  const Value &x0 = in.groups[0][0];
  auto k = [&](double v) { return scalarOf(c, x0, v); };
  double alpha = c.attrFloat("alpha", 0.9), beta = c.attrFloat("beta", 0.999);
  double epsilon = c.attrFloat("epsilon", 1e-6), norm = c.attrFloat("norm_coefficient", 0);
  double normPost = c.attrFloat("norm_coefficient_post", 0);
  Value corrected = div(mul(in.rate, sqrt(sub(k(1), pow(k(beta), in.count)))),
                        sub(k(1), pow(k(alpha), in.count)));
  Value rate = select(gt(in.count, k(0)), corrected, in.rate);
  for (int64_t i = 0; i < in.n; ++i) {
    Value x = in.groups[0][i], g = in.groups[1][i];
    Value v = in.groups[2][i], h = in.groups[3][i];
    Value regularized = add(mul(k(norm), x), g);
    Value vNew = add(mul(k(alpha), v), mul(k(1 - alpha), regularized));
    Value hNew = add(mul(k(beta), h), mul(k(1 - beta), square(regularized)));
    Value xNew = sub(x, mul(rate, div(vNew, add(sqrt(hNew), k(epsilon)))));
    c.setOutput(size_t(i), mul(k(1 - normPost), xNew));
    c.setOutput(size_t(in.n + i), vNew);
    c.setOutput(size_t(2 * in.n + i), hNew);
  }
}

} // namespace stepc::onnx_import
