// Tracing JIT: a C++ function of Values becomes a compiled step function.
//
//   auto step = stepc::jit([](stepc::Value x, stepc::Value y) {
//     return stepc::mse(x, y);
//   });
//   stepc::Tensor loss = step(xTensor, yTensor);
//
// The first call with a shape signature (the dtypes and shapes of its
// arguments) traces the function: it is called once with fresh graph inputs
// "x0", "x1", ... of those types, what it returns becomes the graph's
// outputs, and the graph is compiled through compileJit (and its cache).
// Later calls with the same signature run the compiled step without tracing.
// A new signature traces and compiles again and says so ("stepc::jit:
// recompiling for f32[64,784], i32[64] (was f32[128,784], i32[128])").
//
// The function may return a Value (the call returns a Tensor), a
// std::vector<Value> (std::vector<Tensor>), a std::tuple or std::pair of
// Values (a tuple of Tensors), or a std::map<std::string, Value> (named
// outputs; a std::map<std::string, Tensor>).
//
// State: a function that takes a GraphBuilder& before its Values may declare
// params (b.param(...)) and give them new values (b.update(param, next)).
// Params live in the jit object: their values persist between calls and move
// along when the signature changes (by name and type), so a smaller last
// batch trains the same weights. jitTrainStep builds the optimizer's updates
// for you.
#pragma once

#include "stepc/builder.h"
#include "stepc/compile.h"
#include "stepc/train.h"

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace stepc {

struct JitOptions {
  CompileOptions compile;
  // run.communicator: the processes of a data-parallel job; the traced
  // function's all_reduce ops (and jitTrainStep's gradients) go through it.
  RunOptions run;
  std::string name = "jit"; // the traced graph's name
  // Input names in argument order; missing ones are "x<i>".
  std::vector<std::string> inputNames;
  // Receives each "stepc::jit: recompiling ..." line; unset: stderr.
  std::function<void(const std::string &)> log;
};

namespace detail {

using NamedValues = std::vector<std::pair<std::string, Value>>;
using TraceFn = std::function<NamedValues(GraphBuilder &, const std::vector<Value> &)>;
using GraphTransform = std::function<Graph(const Graph &)>;

// The untyped machinery behind Jit<F>: one compiled Executable per shape
// signature, and the param values they share.
class JitCore {
public:
  JitCore(JitOptions options, GraphTransform transform);
  ~JitCore();
  JitCore(JitCore &&) noexcept;
  JitCore &operator=(JitCore &&) noexcept;

  // Runs the step for these arguments, tracing with `trace` if their
  // signature is new; returns the outputs in the order traced.
  std::vector<Tensor> call(const std::vector<const Tensor *> &args, const TraceFn &trace);

  std::vector<std::string> paramNames() const;
  Tensor param(const std::string &name) const;
  void setParam(const std::string &name, const Tensor &value);
  void saveParams(const std::string &path) const;
  void loadParams(const std::string &path);
  // The graph compiled for the last call's signature, and its Executable.
  const Graph &graph() const;
  CpuExecutable &executable();
  // Signatures traced so far (each one traced and compiled once).
  int64_t traces() const;

private:
  struct State;
  std::unique_ptr<State> state_;
};

// Outputs named out0, out1, ... in the order returned.
inline NamedValues nameOutputs(Value v) { return {{"out0", v}}; }
inline NamedValues nameOutputs(const std::vector<Value> &vs) {
  NamedValues named;
  for (size_t i = 0; i < vs.size(); ++i)
    named.emplace_back("out" + std::to_string(i), vs[i]);
  return named;
}
inline NamedValues nameOutputs(const std::map<std::string, Value> &vs) {
  return NamedValues(vs.begin(), vs.end());
}
template <class... Vs> NamedValues nameOutputs(const std::tuple<Vs...> &vs) {
  static_assert((std::is_same_v<Vs, Value> && ...), "stepc::jit: return Values");
  return std::apply([](const auto &...v) { return nameOutputs(std::vector<Value>{v...}); }, vs);
}
template <class A, class B> NamedValues nameOutputs(const std::pair<A, B> &vs) {
  return nameOutputs(std::tuple<A, B>(vs.first, vs.second));
}

// The call's result for a traced function returning R.
template <class R> struct Unpack;
template <> struct Unpack<Value> {
  static Tensor from(std::vector<Tensor> outs) { return std::move(outs.at(0)); }
};
template <> struct Unpack<std::vector<Value>> {
  static std::vector<Tensor> from(std::vector<Tensor> outs) { return outs; }
};
template <class... Vs> struct Unpack<std::tuple<Vs...>> {
  static auto from(std::vector<Tensor> outs) {
    return [&]<size_t... I>(std::index_sequence<I...>) {
      return std::tuple{(static_cast<void>(I), std::move(outs.at(I)))...};
    }(std::index_sequence_for<Vs...>{});
  }
};
template <class A, class B> struct Unpack<std::pair<A, B>> {
  static auto from(std::vector<Tensor> outs) {
    return std::pair{std::move(outs.at(0)), std::move(outs.at(1))};
  }
};

template <size_t I> using ValueAt = Value;

// Calls fn(xs...) or, if it only takes the builder first, fn(b, xs...).
template <class F, size_t... I>
decltype(auto) invokeTraced(F &fn, GraphBuilder &b, const std::vector<Value> &xs,
                            std::index_sequence<I...>) {
  if constexpr (std::is_invocable_v<F &, ValueAt<I>...>)
    return fn(xs[I]...);
  else
    return fn(b, xs[I]...);
}

template <class F, size_t N>
using TracedResult =
    std::remove_cvref_t<decltype(invokeTraced(std::declval<F &>(), std::declval<GraphBuilder &>(),
                                              std::declval<const std::vector<Value> &>(),
                                              std::make_index_sequence<N>{}))>;

// With `dataParallel` (a communicator of several ranks) the gradients are
// averaged over the ranks, as trainStep(..., DataParallel{true}) does.
GraphTransform trainStepTransform(const Optimizer &optimizer, bool dataParallel,
                                  const MixedPrecision &mixedPrecision);

} // namespace detail

template <class F> class Jit {
public:
  Jit(F fn, JitOptions options, detail::GraphTransform transform = {})
      : fn_(std::move(fn)), core_(std::move(options), std::move(transform)) {}

  template <class... Ts>
    requires(std::is_same_v<std::remove_cvref_t<Ts>, Tensor> && ...)
  auto operator()(const Ts &...args) {
    constexpr size_t n = sizeof...(Ts);
    using R = detail::TracedResult<F, n>;
    detail::TraceFn trace = [this](GraphBuilder &b, const std::vector<Value> &xs) {
      return detail::nameOutputs(detail::invokeTraced(fn_, b, xs, std::make_index_sequence<n>{}));
    };
    std::vector<Tensor> outs = core_.call({&args...}, trace);
    if constexpr (std::is_same_v<R, std::map<std::string, Value>>) {
      // The traced order is the map's order; recover the names from it.
      std::map<std::string, Tensor> named;
      size_t i = 0;
      for (const GraphOutput &out : core_.graph().outputs)
        named.emplace(out.name, std::move(outs.at(i++)));
      return named;
    } else {
      return detail::Unpack<R>::from(std::move(outs));
    }
  }

  std::vector<std::string> paramNames() const { return core_.paramNames(); }
  // Before the first call, setParam keeps the value for the first compile.
  Tensor param(const std::string &name) const { return core_.param(name); }
  void setParam(const std::string &name, const Tensor &value) { core_.setParam(name, value); }
  void saveParams(const std::string &path) const { core_.saveParams(path); }
  void loadParams(const std::string &path) { core_.loadParams(path); }
  const Graph &graph() const { return core_.graph(); }
  CpuExecutable &executable() { return core_.executable(); }
  int64_t traces() const { return core_.traces(); }

private:
  F fn_;
  detail::JitCore core_;
};

template <class F> Jit<F> jit(F fn, JitOptions options = {}) {
  return Jit<F>(std::move(fn), std::move(options));
}

// A training step traced from a model function that returns its scalar loss:
// each call computes the loss (returned), the gradients of every
// floating-point param, and the optimizer's update of the params and its
// state, all in one compiled step. The optimizer's lr must be set (else
// stepc::Error). `mixedPrecision` trains in bf16 or f16 as trainStep does.
//
// Data-parallel: with options.run.communicator spanning several ranks (e.g.
// mpiCommunicator() under mpirun), each rank calls the step with its slice
// of the batch; the gradients are averaged over the ranks before the update
// (trainStep's DataParallel), the returned loss is the mean over the ranks,
// and every rank starts from rank 0's params and keeps the same ones.
template <class F>
Jit<F> jitTrainStep(F model, const Optimizer &optimizer, JitOptions options = {},
                    const MixedPrecision &mixedPrecision = {}) {
  bool dataParallel = options.run.communicator && options.run.communicator->size() > 1;
  return Jit<F>(std::move(model), std::move(options),
                detail::trainStepTransform(optimizer, dataParallel, mixedPrecision));
}

} // namespace stepc
