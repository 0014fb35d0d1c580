// Initial parameter values from their initializers, and random graph inputs.
// Both are counter-based (element i draws with counter i), so every backend
// and thread count sees the same numbers for the same seed. Also the range
// checks of the ops that read indices.
#include "stepc/graph_values.h"
#include "stepc/random.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>

namespace stepc {
namespace {

struct Fans {
  double in = 1, out = 1;
};

// Fan-in/out as PyTorch computes them, with stepc's matmul(x, w) convention:
// a rank-2 weight is [in, out] (PyTorch's Linear stores [out, in]); a conv
// weight is [O, I, kh, kw, ...].
Fans fans(const Shape &shape) {
  switch (shape.size()) {
  case 0: return {1, 1};
  case 1: return {double(shape[0]), double(shape[0])};
  case 2: return {double(shape[0]), double(shape[1])};
  default: {
    double receptive = 1;
    for (size_t i = 2; i < shape.size(); ++i)
      receptive *= double(shape[i]);
    return {double(shape[1]) * receptive, double(shape[0]) * receptive};
  }
  }
}

// Fills `out` with draw(i) for element i, converted like a C++ cast
// (integers round toward zero; bool is x != 0).
template <class Draw> void fill(Tensor &out, Draw draw) {
  for (int64_t i = 0; i < out.numel(); ++i)
    out.setReal(i, draw(static_cast<uint64_t>(i)));
}

// Ops that pass integer values through unchanged, so that indices read
// through them are still the input's values.
bool passesValues(const Node &n) {
  return n.op == OpKind::Reshape || n.op == OpKind::Transpose || n.op == OpKind::BroadcastTo ||
         n.op == OpKind::Slice || n.op == OpKind::Concat ||
         (n.op == OpKind::Cast && isInteger(n.type.dtype));
}

// The smallest range [0, bound) that the values of `input` must lie in to
// be valid indices of every gather, one_hot and scatter_add that reads them
// (directly or through passesValues ops), or nullopt if none does.
std::optional<int64_t> indexBound(const Graph &graph, ValueId input) {
  std::vector<bool> carries(graph.size(), false);
  carries[input] = true;
  std::optional<int64_t> bound;
  auto tighten = [&](int64_t b) { bound = bound ? std::min(*bound, b) : b; };
  for (ValueId id = input + 1; id < graph.size(); ++id) {
    const Node &n = graph.node(id);
    for (size_t k = 0; k < n.operands.size(); ++k) {
      if (!carries[n.operands[k]])
        continue;
      if (passesValues(n))
        carries[id] = true;
      else if (n.op == OpKind::Gather && k == 1) {
        const Shape &data = graph.type(n.operands[0]).shape;
        tighten(data[static_cast<size_t>(n.attrs.getInt("axis"))]);
      } else if (n.op == OpKind::OneHot)
        tighten(n.attrs.getInt("depth"));
      else if (n.op == OpKind::ScatterAdd && k == 0)
        tighten(n.attrs.getInt("size"));
    }
  }
  return bound;
}

} // namespace

Tensor initialTensor(const Init &init, const TensorType &type) {
  Tensor out(type);
  uint64_t seed = static_cast<uint64_t>(init.seed);
  Fans f = fans(type.shape);
  auto uniform = [&](double low, double high) {
    fill(out, [&](uint64_t i) { return low + (high - low) * randomUniform(seed, i); });
  };
  auto normal = [&](double mean, double std) {
    fill(out, [&](uint64_t i) { return mean + std * randomNormal(seed, i); });
  };
  switch (init.kind) {
  case Init::Kind::Zeros: break; // Tensor starts zero-filled
  case Init::Kind::Ones: fill(out, [](uint64_t) { return 1.0; }); break;
  case Init::Kind::Constant: fill(out, [&](uint64_t) { return init.a; }); break;
  case Init::Kind::Normal: normal(init.a, init.b); break;
  case Init::Kind::Uniform: uniform(init.a, init.b); break;
  case Init::Kind::HeNormal: normal(0, std::sqrt(2.0 / f.in)); break;
  case Init::Kind::HeUniform: {
    double bound = std::sqrt(6.0 / f.in);
    uniform(-bound, bound);
    break;
  }
  case Init::Kind::XavierNormal: normal(0, std::sqrt(2.0 / (f.in + f.out))); break;
  case Init::Kind::XavierUniform: {
    double bound = std::sqrt(6.0 / (f.in + f.out));
    uniform(-bound, bound);
    break;
  }
  }
  return out;
}

TensorMap initialParams(const Graph &graph) {
  TensorMap params;
  for (ValueId id : graph.params()) {
    const Node &node = graph.node(id);
    try {
      params.emplace(node.name, initialTensor(Init::fromAttrs(node.attrs), node.type));
    } catch (const Error &e) {
      throw Error(locatedMessage(node.loc, fmt::format("param '{}': {}", node.name, e.what())));
    }
  }
  return params;
}

TensorMap randomInputs(const Graph &graph, uint64_t seed) {
  TensorMap inputs;
  std::vector<ValueId> ids = graph.inputs();
  for (size_t k = 0; k < ids.size(); ++k) {
    const Node &node = graph.node(ids[k]);
    // Each input draws from its own stream, so adding an input leaves the
    // values of the earlier ones unchanged.
    uint64_t stream = randomBits(seed, k);
    Tensor t;
    try {
      t = Tensor(node.type);
    } catch (const Error &e) {
      throw Error(locatedMessage(node.loc, fmt::format("input '{}': {}", node.name, e.what())));
    }
    // Integers are drawn in [0, 10), or as valid indices of what reads them
    // (an empty axis has none: those stay 0).
    DType dtype = node.type.dtype;
    std::optional<int64_t> bound;
    if (isInteger(dtype))
      bound = indexBound(graph, ids[k]);
    uint64_t range = bound ? static_cast<uint64_t>(std::max<int64_t>(*bound, 1)) : 10;
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint64_t counter = static_cast<uint64_t>(i);
      if (dtype == DType::Bool) {
        t.data<uint8_t>()[i] = static_cast<uint8_t>(randomBits(stream, counter) >> 63);
      } else if (isInteger(dtype)) {
        // An i64 scalar is a seed (dropout): any value will do, and a full
        // 64-bit one exercises the seed's whole range.
        bool seed = dtype == DType::I64 && node.type.rank() == 0 && !bound;
        uint64_t bits = randomBits(stream, counter);
        t.setInteger(i, static_cast<int64_t>(seed ? bits : bits % range));
      } else if (dtype == DType::F32) {
        // Rounding to float can carry a value just below 1 up to 1.0f.
        float v = static_cast<float>(-1.0 + 2.0 * randomUniform(stream, counter));
        t.data<float>()[i] = std::min(v, std::nextafter(1.0f, 0.0f));
      } else if (dtype == DType::F64) {
        t.data<double>()[i] = -1.0 + 2.0 * randomUniform(stream, counter);
      } else {
        // A half: rounding can carry a value just below 1 up to 1; keep it below.
        t.setReal(i, std::min(-1.0 + 2.0 * randomUniform(stream, counter), 0.99));
      }
    }
    inputs.emplace(node.name, std::move(t));
  }
  return inputs;
}

std::string opLabel(const Node &node) {
  std::string_view name = opInfo(node.op).name;
  return node.loc.origin.empty() ? std::string(name)
                                 : fmt::format("{} ({})", name, node.loc.origin);
}

std::optional<IndexCheck> indexCheckFor(const Node &node, std::span<const TensorType> operands) {
  IndexCheck check;
  check.op = opLabel(node);
  check.location = node.loc.known() ? node.loc.str() : "";
  if (node.op == OpKind::Gather) {
    const TensorType &data = operands[0];
    int64_t axis = node.attrs.getInt("axis");
    check.indices = typeString(operands[1]);
    check.range = fmt::format("axis {} of data {}", axis, typeString(data));
    check.bound = data.shape[static_cast<size_t>(axis)];
    return check;
  }
  if (node.op == OpKind::ScatterAdd) {
    check.indices = typeString(operands[0]);
    check.range = fmt::format("axis {} of the result {}", node.attrs.getInt("axis"),
                              typeString(node.type));
    check.bound = node.attrs.getInt("size");
    return check;
  }
  if (node.op == OpKind::OneHot && node.attrs.has("checked") &&
      node.attrs.getInt("checked") != 0) {
    check.indices = typeString(operands[0]);
    check.bound = node.attrs.getInt("depth");
    check.range = fmt::format("depth {}", check.bound);
    return check;
  }
  return std::nullopt;
}

} // namespace stepc
