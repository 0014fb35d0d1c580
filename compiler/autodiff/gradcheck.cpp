#include "gradcheck.h"

#include "stepc/autodiff.h"

#include <fmt/format.h>

#include <cmath>

namespace stepc {
namespace {

TensorMap toF64(const TensorMap &tensors) {
  TensorMap out;
  for (const auto &[name, t] : tensors)
    out.emplace(name, t.dtype() == DType::F32 ? castTensor(t, DType::F64) : t);
  return out;
}

} // namespace

GradcheckReport gradcheck(const Graph &graph, const std::string &loss, const TensorMap &inputs,
                          const TensorMap &params, std::vector<std::string> wrt,
                          const GradcheckOptions &options) {
  Graph g64 = convertFloatType(graph, DType::F32, DType::F64);
  TensorMap in = toF64(inputs), ps = toF64(params);
  if (wrt.empty())
    for (const Node &node : g64.nodes)
      if ((node.op == OpKind::Input || node.op == OpKind::Parameter) &&
          isFloat(node.type.dtype))
        wrt.push_back(node.name);

  GradResult gradGraph = grad(g64, loss, wrt);
  TensorMap analytic = interpret(gradGraph.graph, in, ps);

  auto lossAt = [&]() { return interpret(g64, in, ps).at(loss).real(0); };
  GradcheckReport report;
  for (const std::string &name : wrt) {
    TensorMap &owner = in.count(name) ? in : ps;
    auto it = owner.find(name);
    if (it == owner.end())
      throw Error(fmt::format("gradcheck: '{}' is not an input or param of the graph", name));
    Tensor &value = it->second;
    const Tensor &expected = analytic.at("grad_" + name);
    int64_t n = value.numel();
    int64_t stride = 1;
    if (options.maxElementsPerTensor > 0 && n > options.maxElementsPerTensor)
      stride = n / options.maxElementsPerTensor;
    for (int64_t k = 0; k < n; k += stride) {
      double original = value.real(k);
      value.setReal(k, original + options.step);
      double plus = lossAt();
      value.setReal(k, original - options.step);
      double minus = lossAt();
      value.setReal(k, original);
      double numeric = (plus - minus) / (2 * options.step);
      double a = expected.real(k);
      double error = std::abs(a - numeric) / std::max(1.0, std::abs(numeric));
      if (!(error <= options.tolerance))
        report.passed = false;
      if (!(error <= report.worstError)) {
        report.worstError = error;
        report.worstWhere =
            fmt::format("{}[{}]: analytic {:.10g}, numeric {:.10g}", name, k, a, numeric);
      }
      ++report.elementsChecked;
    }
  }
  return report;
}

} // namespace stepc
