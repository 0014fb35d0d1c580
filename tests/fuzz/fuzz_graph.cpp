// Random valid graphs against the oracle: the input bytes choose a small
// graph (shapes up to a few dozen elements per axis), its inputs' seed, and
// whether its gradient is taken; the CPU backend runs it fused and unfused,
// and every output must match interpret(). Both must also agree on
// rejecting a graph.
//
// Every op keeps values within about [-1, 1] (sums become means, matmul and
// conv2d are scaled by 1/K, add and sub by 1/2, division is by 1 + b^2), so
// that rounding differences between summation orders stay near 1e-6 and a
// mismatch above the tolerance is a bug, not conditioning. Discontinuous ops
// (comparisons, argmax) only see graph inputs, whose values both sides share
// exactly.
#include "stepc/autodiff.h"
#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/error.h"
#include "stepc/interpreter.h"
#include "stepc/text.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

namespace stepc {
namespace {

// Reads choices from the fuzz input; past its end every choice is 0.
class Choices {
public:
  Choices(const uint8_t *data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  int64_t below(int64_t n) { return n <= 1 ? 0 : byte() % n; }
  int64_t in(int64_t low, int64_t high) { return low + below(high - low + 1); }
  bool flag() { return byte() & 1; }
  bool done() const { return at_ >= size_; }

private:
  const uint8_t *data_;
  size_t size_;
  size_t at_ = 0;
};

class GraphMaker {
public:
  explicit GraphMaker(Choices &c) : c_(c), b_("fuzz") {}

  Graph make(bool &withGradient, std::vector<std::string> &inputNames) {
    int inputs = static_cast<int>(c_.in(1, 3));
    for (int i = 0; i < inputs; ++i)
      addInput(randomShape());
    int ops = static_cast<int>(c_.in(1, 12));
    for (int i = 0; i < ops && !c_.done(); ++i) {
      try {
        step();
      } catch (const Error &) {
        // An op the builder rejects (a shape that does not fit): skipped.
      }
    }
    withGradient = c_.flag();
    int named = 0;
    std::vector<Value> leaves;
    for (size_t i = 0; i < pool_.size(); ++i)
      if (!used_[i] && !isInput_[i])
        leaves.push_back(pool_[i]);
    if (leaves.empty())
      leaves.push_back(tanh(pool_.back()));
    for (const Value &v : leaves)
      b_.output("out" + std::to_string(named++), v);
    for (const Value &v : discrete_)
      b_.output("out" + std::to_string(named++), v);
    if (withGradient) {
      Value loss = mean(square(leaves[0]), allAxes(leaves[0]));
      for (size_t i = 1; i < leaves.size(); ++i)
        loss = loss + mean(square(leaves[i]), allAxes(leaves[i]));
      b_.output("loss", loss);
    }
    inputNames = names_;
    return b_.finish();
  }

private:
  Shape randomShape() {
    Shape shape(static_cast<size_t>(c_.in(1, 4)));
    for (int64_t &d : shape)
      d = c_.in(1, 7);
    return shape;
  }

  Value addInput(const Shape &shape) {
    std::string name = "x" + std::to_string(names_.size());
    names_.push_back(name);
    Value v = b_.input(name, DType::F32, shape);
    push(v, true);
    return v;
  }

  void push(Value v, bool input = false) {
    pool_.push_back(v);
    used_.push_back(false);
    isInput_.push_back(input);
  }

  size_t pickIndex() { return static_cast<size_t>(c_.below(static_cast<int64_t>(pool_.size()))); }
  Value pick() {
    size_t i = pickIndex();
    used_[i] = true;
    return pool_[i];
  }
  // A value of exactly `shape`: from the pool when one exists, else a new input.
  Value withShape(const Shape &shape) {
    std::vector<size_t> same;
    for (size_t i = 0; i < pool_.size(); ++i)
      if (pool_[i].shape() == shape)
        same.push_back(i);
    if (same.empty() || c_.below(4) == 0)
      return addInput(shape);
    size_t i = same[static_cast<size_t>(c_.below(static_cast<int64_t>(same.size())))];
    used_[i] = true;
    return pool_[i];
  }
  Value anInput() {
    std::vector<size_t> inputs;
    for (size_t i = 0; i < pool_.size(); ++i)
      if (isInput_[i])
        inputs.push_back(i);
    return pool_[inputs[static_cast<size_t>(c_.below(static_cast<int64_t>(inputs.size())))]];
  }
  static std::vector<int64_t> allAxes(Value v) {
    std::vector<int64_t> axes(static_cast<size_t>(v.rank()));
    std::iota(axes.begin(), axes.end(), 0);
    return axes;
  }
  std::vector<int64_t> someAxes(Value v) {
    std::vector<int64_t> axes;
    for (int64_t a = 0; a < v.rank(); ++a)
      if (c_.flag())
        axes.push_back(a);
    if (axes.empty())
      axes.push_back(c_.below(v.rank()));
    return axes;
  }
  static Value scaled(Value v, double factor) { return v * constant(*v.builder(), factor, DType::F32); }

  void step() {
    switch (c_.below(16)) {
    case 0: { // unary, bounded on [-1, 1]
      Value x = pick();
      switch (c_.below(10)) {
      case 0: push(neg(x)); break;
      case 1: push(abs(x)); break;
      case 2: push(tanh(x)); break;
      case 3: push(sigmoid(x)); break;
      case 4: push(relu(x)); break;
      case 5: push(sin(x)); break;
      case 6: push(cos(x)); break;
      case 7: push(square(x)); break;
      case 8: push(scaled(exp(x), 1 / std::exp(1.0))); break;
      case 9: push(erf(x)); break;
      }
      break;
    }
    case 1: { // binary, same shape or broadcast from a suffix
      Value a = pick();
      Shape shape = a.shape();
      if (c_.flag() && !shape.empty())
        shape.erase(shape.begin(), shape.begin() + c_.in(1, static_cast<int64_t>(shape.size())));
      Value bv = withShape(shape);
      if (c_.flag())
        std::swap(a, bv);
      switch (c_.below(6)) {
      case 0: push(scaled(a + bv, 0.5)); break;
      case 1: push(scaled(a - bv, 0.5)); break;
      case 2: push(a * bv); break;
      case 3: push(maximum(a, bv)); break;
      case 4: push(minimum(a, bv)); break;
      case 5: push(a / (square(bv) + constant(b_, 1, DType::F32))); break;
      }
      break;
    }
    case 2: { // reductions over some axes
      Value x = pick();
      std::vector<int64_t> axes = someAxes(x);
      bool keep = c_.flag();
      int64_t count = 1;
      for (int64_t a : axes)
        count *= x.dim(a);
      switch (c_.below(4)) {
      case 0: push(mean(x, axes, keep)); break;
      case 1: push(scaled(sum(x, axes, keep), 1.0 / static_cast<double>(count))); break;
      case 2: push(max(x, axes, keep)); break;
      case 3: push(min(x, axes, keep)); break;
      }
      break;
    }
    case 3: { // matmul [.., m, k] x [k, n] or batched [.., k, n]
      Value a = pick();
      if (a.rank() < 2)
        a = reshape(a, {1, a.rank() == 0 ? 1 : a.dim(0)});
      int64_t k = a.dim(-1), n = c_.in(1, 9);
      Shape shape = c_.flag() ? Shape{k, n} : a.shape();
      shape.back() = n;
      shape[shape.size() - 2] = k;
      push(scaled(matmul(a, withShape(shape)), 1.0 / static_cast<double>(k)));
      break;
    }
    case 4: { // transpose
      Value x = pick();
      std::vector<int64_t> perm = allAxes(x);
      for (size_t i = perm.size(); i > 1; --i)
        std::swap(perm[i - 1], perm[static_cast<size_t>(c_.below(static_cast<int64_t>(i)))]);
      push(transpose(x, perm));
      break;
    }
    case 5: { // reshape to [d, numel / d] or flat
      Value x = pick();
      int64_t numel = 1;
      for (int64_t d : x.shape())
        numel *= d;
      int64_t d = c_.in(1, numel);
      push(numel % d == 0 ? reshape(x, {d, numel / d}) : reshape(x, {numel}));
      break;
    }
    case 6: { // slice one axis, maybe strided
      Value x = pick();
      if (x.rank() == 0)
        return;
      int64_t axis = c_.below(x.rank());
      std::vector<int64_t> starts(static_cast<size_t>(x.rank()), 0), limits = x.shape(),
          strides(static_cast<size_t>(x.rank()), 1);
      int64_t n = x.dim(axis);
      starts[static_cast<size_t>(axis)] = c_.below(n);
      limits[static_cast<size_t>(axis)] = c_.in(starts[static_cast<size_t>(axis)] + 1, n);
      strides[static_cast<size_t>(axis)] = c_.in(1, 2);
      push(slice(x, starts, limits, strides));
      break;
    }
    case 7: { // concat along an axis with a value that differs only there
      Value x = pick();
      if (x.rank() == 0)
        return;
      int64_t axis = c_.below(x.rank());
      Shape shape = x.shape();
      shape[static_cast<size_t>(axis)] = c_.in(1, 5);
      push(concat({x, withShape(shape)}, axis));
      break;
    }
    case 8: { // pad
      Value x = pick();
      std::vector<int64_t> low(static_cast<size_t>(x.rank())), high(low.size());
      for (size_t i = 0; i < low.size(); ++i) {
        low[i] = c_.below(3);
        high[i] = c_.below(3);
      }
      push(pad(x, low, high, c_.flag() ? 0.5 : 0));
      break;
    }
    case 9: { // broadcast to a new leading axis
      Value x = pick();
      Shape shape = x.shape();
      shape.insert(shape.begin(), c_.in(1, 4));
      push(broadcastTo(x, shape));
      break;
    }
    case 10: { // gather with constant in-range indices
      Value x = pick();
      if (x.rank() == 0)
        return;
      int64_t axis = c_.below(x.rank());
      int64_t count = c_.in(1, 6);
      std::vector<double> indices(static_cast<size_t>(count));
      for (double &i : indices)
        i = static_cast<double>(c_.below(x.dim(axis)));
      push(gather(x, constantData(b_, indices, c_.flag() ? DType::I64 : DType::I32, {count}), axis));
      break;
    }
    case 11: { // conv2d on [N, C, H, W]
      Value x = pick();
      if (x.rank() != 4)
        x = reshape(x, {1, 1, 1, numel(x)});
      int64_t c = x.dim(1);
      std::vector<int64_t> divisors;
      for (int64_t g = 1; g <= c; ++g)
        if (c % g == 0)
          divisors.push_back(g);
      Conv2dOptions o;
      o.groups = divisors[static_cast<size_t>(c_.below(static_cast<int64_t>(divisors.size())))];
      o.stride = {c_.in(1, 2), c_.in(1, 2)};
      o.padding = {c_.below(2), c_.below(2)};
      o.dilation = {c_.in(1, 2), c_.in(1, 2)};
      int64_t kh = c_.in(1, 3), kw = c_.in(1, 3), out = o.groups * c_.in(1, 3);
      Value w = withShape({out, c / o.groups, kh, kw});
      push(scaled(conv2d(x, w, o), 1.0 / static_cast<double>(c / o.groups * kh * kw)));
      break;
    }
    case 12: { // pools
      Value x = pick();
      if (x.rank() != 4)
        return;
      Pool2dOptions o;
      o.kernel = {c_.in(1, 3), c_.in(1, 3)};
      o.stride = {c_.in(1, 2), c_.in(1, 2)};
      o.padding = {c_.below(o.kernel[0] / 2 + 1), c_.below(o.kernel[1] / 2 + 1)};
      o.countIncludePad = c_.flag();
      push(c_.flag() ? maxPool2d(x, o) : avgPool2d(x, o));
      break;
    }
    case 13: { // softmax, log_softmax (scaled back into range)
      Value x = pick();
      if (x.rank() == 0)
        return;
      int64_t axis = c_.below(x.rank());
      push(c_.flag() ? softmax(x, axis)
                     : scaled(logSoftmax(x, axis), 1.0 / (1.0 + std::log(static_cast<double>(x.dim(axis))))));
      break;
    }
    case 14: { // select on a comparison of a graph input
      Value in = anInput();
      Value cond = c_.flag() ? gt(in, constant(b_, 0, DType::F32)) : le(in, constant(b_, 0.25, DType::F32));
      push(select(cond, withShape(in.shape()), withShape(in.shape())));
      break;
    }
    case 15: { // argmax of a graph input: exact on both sides, an output only
      Value in = anInput();
      if (in.rank() == 0)
        return;
      discrete_.push_back(argmax(in, c_.below(in.rank()), c_.flag()));
      break;
    }
    }
  }

  static int64_t numel(Value v) {
    int64_t n = 1;
    for (int64_t d : v.shape())
      n *= d;
    return n;
  }

  Choices &c_;
  GraphBuilder b_;
  std::vector<Value> pool_;
  std::vector<bool> used_, isInput_;
  std::vector<Value> discrete_;
  std::vector<std::string> names_;
};

[[noreturn]] void fail(const Graph &graph, const std::string &what) {
  std::fprintf(stderr, "fuzz_graph: %s\ngraph:\n%s\n", what.c_str(), printGraph(graph).c_str());
  std::abort();
}

void compare(const Graph &graph, const TensorMap &expected, const TensorMap &actual,
             const char *mode) {
  for (const auto &[name, want] : expected) {
    auto found = actual.find(name);
    if (found == actual.end())
      fail(graph, std::string(mode) + ": no output " + name);
    const Tensor &got = found->second;
    if (!(got.type() == want.type()))
      fail(graph, std::string(mode) + ": output " + name + " has type " + typeString(got.type()) +
                      ", expected " + typeString(want.type()));
    double scale = 1;
    for (int64_t i = 0; i < want.numel(); ++i)
      scale = std::max(scale, std::abs(want.real(i)));
    for (int64_t i = 0; i < want.numel(); ++i) {
      double a = got.real(i), e = want.real(i);
      bool ok = isFloat(want.dtype()) ? (std::isnan(a) && std::isnan(e)) ||
                                            std::abs(a - e) <= 1e-4 * scale + 1e-3 * std::abs(e)
                                      : a == e;
      if (!ok)
        fail(graph, std::string(mode) + ": output " + name + " element " + std::to_string(i) +
                        " is " + std::to_string(a) + ", the interpreter says " + std::to_string(e));
    }
  }
}

} // namespace
} // namespace stepc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace stepc;
  Choices choices(data, size);
  bool withGradient = false;
  std::vector<std::string> inputs;
  Graph graph = GraphMaker(choices).make(withGradient, inputs);
  if (withGradient)
    graph = grad(graph, "loss", inputs).graph;
  // STEPC_FUZZ_VERBOSE=1: print each graph (to see what a corpus covers).
  static const bool verbose = std::getenv("STEPC_FUZZ_VERBOSE") != nullptr;
  if (verbose)
    std::fprintf(stderr, "%s\n", printGraph(graph).c_str());
  uint64_t seed = choices.byte();
  TensorMap values = randomInputs(graph, seed);

  TensorMap expected;
  std::string interpError;
  try {
    expected = interpret(graph, values, {});
  } catch (const Error &e) {
    interpError = e.what();
  }
  for (bool fusion : {true, false}) {
    const char *mode = fusion ? "fused" : "unfused";
    CompileOptions options;
    options.fusion = fusion;
    options.cache = false;
    RunOptions run;
    run.threads = 2;
    TensorMap actual;
    try {
      std::unique_ptr<Executable> exe = compileJit(graph, options, run);
      for (auto &[name, tensor] : exe->step(values))
        actual.emplace(name, std::move(tensor));
    } catch (const Error &e) {
      if (interpError.empty())
        fail(graph, std::string(mode) + ": the CPU backend fails where the interpreter runs: " +
                        e.what());
      continue;
    }
    if (!interpError.empty())
      fail(graph, std::string(mode) + ": the CPU backend runs where the interpreter fails: " +
                      interpError);
    compare(graph, expected, actual, mode);
  }
  return 0;
}
