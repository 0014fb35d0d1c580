// The tracing JIT's untyped core (include/stepc/jit.h): traces per shape
// signature, compiles through compileJit and its cache, and keeps the params.
#include "stepc/jit.h"

#include "stepc/error.h"
#include "stepc/graph_values.h"
#include "stepc/train.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace stepc::detail {

namespace {

// One traced and compiled signature.
struct Compiled {
  Graph graph;
  std::vector<std::string> inputNames, outputNames;
  std::unique_ptr<CpuExecutable> executable;
};

// "f32[64,784], i32[64]"
std::string signatureOf(const std::vector<const Tensor *> &args) {
  std::string text;
  for (const Tensor *arg : args)
    text += fmt::format("{}{}", text.empty() ? "" : ", ", typeString(arg->type()));
  return text.empty() ? "()" : text;
}

} // namespace

struct JitCore::State {
  JitOptions options;
  GraphTransform transform;
  std::map<std::string, Compiled> bySignature;
  Compiled *current = nullptr; // the last call's; its params are the live ones
  std::string currentSignature;
  std::map<std::string, Tensor> pendingParams; // setParam before the first call

  Compiled trace(const std::vector<const Tensor *> &args, const TraceFn &fn) const;
  void log(const std::string &line) const;
};

Compiled JitCore::State::trace(const std::vector<const Tensor *> &args, const TraceFn &fn) const {
  Compiled out;
  GraphBuilder b(options.name);
  std::vector<Value> xs;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name =
        i < options.inputNames.size() ? options.inputNames[i] : fmt::format("x{}", i);
    xs.push_back(b.input(name, args[i]->dtype(), args[i]->shape()));
    out.inputNames.push_back(std::move(name));
  }
  NamedValues results = fn(b, xs);
  if (results.empty())
    throw Error(
        fmt::format("stepc::jit '{}': the traced function returned no values", options.name));
  for (const auto &[name, value] : results) {
    if (value.builder() != &b)
      throw Error(fmt::format("stepc::jit '{}': output '{}' is not a value of the traced graph "
                              "(made by another GraphBuilder, or default-constructed)",
                              options.name, name));
    b.output(name, value);
    out.outputNames.push_back(name);
  }
  out.graph = b.finish();
  if (transform)
    out.graph = transform(out.graph);
  out.executable = compileJit(out.graph, options.compile, options.run);
  return out;
}

void JitCore::State::log(const std::string &line) const {
  if (options.log)
    options.log(line);
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

JitCore::JitCore(JitOptions options, GraphTransform transform) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  state_->transform = std::move(transform);
}
JitCore::~JitCore() = default;
JitCore::JitCore(JitCore &&) noexcept = default;
JitCore &JitCore::operator=(JitCore &&) noexcept = default;

std::vector<Tensor> JitCore::call(const std::vector<const Tensor *> &args, const TraceFn &trace) {
  State &s = *state_;
  std::string signature = signatureOf(args);
  auto it = s.bySignature.find(signature);
  if (it == s.bySignature.end()) {
    if (s.current)
      s.log(fmt::format("stepc::jit: recompiling for {} (was {})", signature, s.currentSignature));
    it = s.bySignature.emplace(signature, s.trace(args, trace)).first;
  }
  Compiled &target = it->second;
  Executable &exe = *target.executable;

  if (!s.current) {
    for (const auto &[name, value] : s.pendingParams)
      exe.setParam(name, value);
    s.pendingParams.clear();
  } else if (s.current != &target) {
    // Params belong to the jit object, not to one signature: the values the
    // last signature left are carried over by name and type.
    const Executable &from = *s.current->executable;
    std::vector<std::string> have = from.paramNames();
    for (const std::string &name : exe.paramNames())
      if (std::find(have.begin(), have.end(), name) != have.end()) {
        Tensor value = from.param(name);
        if (value.type() == exe.param(name).type())
          exe.setParam(name, value);
      }
  }
  s.current = &target;
  s.currentSignature = signature;

  TensorMap inputs;
  for (size_t i = 0; i < args.size(); ++i)
    inputs.emplace(target.inputNames[i], *args[i]);
  std::map<std::string, Tensor> outputs = exe.step(inputs);
  std::vector<Tensor> ordered;
  for (const std::string &name : target.outputNames)
    ordered.push_back(std::move(outputs.at(name)));
  return ordered;
}

std::vector<std::string> JitCore::paramNames() const {
  if (!state_->current) {
    std::vector<std::string> names;
    for (const auto &[name, value] : state_->pendingParams)
      names.push_back(name);
    return names;
  }
  return state_->current->executable->paramNames();
}

Tensor JitCore::param(const std::string &name) const {
  if (state_->current)
    return state_->current->executable->param(name);
  auto it = state_->pendingParams.find(name);
  if (it == state_->pendingParams.end())
    throw Error(fmt::format("stepc::jit '{}': no param '{}' yet: params exist once the first "
                            "call has traced the function",
                            state_->options.name, name));
  return it->second;
}

void JitCore::setParam(const std::string &name, const Tensor &value) {
  if (state_->current)
    state_->current->executable->setParam(name, value);
  else
    state_->pendingParams[name] = value;
}

void JitCore::saveParams(const std::string &path) const {
  graph(); // throws before the first call
  state_->current->executable->saveParams(path);
}

void JitCore::loadParams(const std::string &path) { executable().loadParams(path); }

const Graph &JitCore::graph() const {
  if (!state_->current)
    throw Error(fmt::format("stepc::jit '{}': nothing is traced before the first call",
                            state_->options.name));
  return state_->current->graph;
}

CpuExecutable &JitCore::executable() {
  graph(); // throws before the first call
  return *state_->current->executable;
}

int64_t JitCore::traces() const { return static_cast<int64_t>(state_->bySignature.size()); }

GraphTransform trainStepTransform(const Optimizer &optimizer, bool dataParallel,
                                  const MixedPrecision &mixedPrecision) {
  if (!optimizer.lr)
    throw Error("stepc::jitTrainStep: set the optimizer's learning rate (Optimizer::lr); a "
                "traced training step has no 'lr' input");
  return [optimizer, dataParallel, mixedPrecision](const Graph &model) {
    if (model.outputs.size() != 1)
      throw Error(fmt::format("stepc::jitTrainStep: the model function must return its scalar "
                              "loss alone; it returned {} values",
                              model.outputs.size()));
    DataParallel parallel;
    parallel.enabled = dataParallel;
    return trainStep(model, model.outputs[0].name, optimizer, parallel, mixedPrecision);
  };
}

} // namespace stepc::detail
