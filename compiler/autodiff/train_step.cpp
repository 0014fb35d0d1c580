// The training-step builder: loss, gradients and the optimizer update in one
// graph. Update formulas follow torch.optim so results are comparable.
#include "stepc/train.h"

#include "stepc/autodiff.h"
#include "stepc/builder.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include <numbers>
#include <algorithm>
#include <numeric>

namespace stepc {
namespace {

constexpr std::pair<Optimizer::Kind, std::string_view> kOptimizerNames[] = {
    {Optimizer::Kind::Sgd, "sgd"},         {Optimizer::Kind::Momentum, "momentum"},
    {Optimizer::Kind::Nesterov, "nesterov"}, {Optimizer::Kind::RmsProp, "rmsprop"},
    {Optimizer::Kind::Adam, "adam"},       {Optimizer::Kind::AdamW, "adamw"},
};

constexpr std::pair<Schedule::Kind, std::string_view> kScheduleNames[] = {
    {Schedule::Kind::Constant, "constant"},
    {Schedule::Kind::Step, "step"},
    {Schedule::Kind::Exponential, "exponential"},
    {Schedule::Kind::Cosine, "cosine"},
};

// The kind called `name` in a table of (kind, name) pairs, or stepc::Error
// "unknown optimizer 'adamx'; expected one of: sgd, ...".
template <class Kind, size_t N>
Kind kindNamed(const std::pair<Kind, std::string_view> (&names)[N], std::string_view name,
               std::string_view what) {
  std::string known;
  for (const auto &[k, n] : names) {
    if (n == name)
      return k;
    known += fmt::format("{}{}", known.empty() ? "" : ", ", n);
  }
  throw Error(fmt::format("unknown {} '{}'; expected one of: {}", what, name, known));
}

template <class Kind, size_t N>
std::vector<std::string_view> namesOf(const std::pair<Kind, std::string_view> (&names)[N]) {
  std::vector<std::string_view> out;
  for (const auto &[k, n] : names)
    out.push_back(n);
  return out;
}

Value asDType(Value v, DType dtype) { return v.dtype() == dtype ? v : cast(v, dtype); }

// The learning rate of this step, from the base rate and t = steps taken.
Value scheduledRate(Value lr, Value t, const Schedule &s) {
  switch (s.kind) {
  case Schedule::Kind::Constant:
    return lr;
  case Schedule::Kind::Step: {
    if (s.stepSize < 1)
      throw Error(fmt::format("step schedule: step size must be >= 1, got {}", s.stepSize));
    // floor(t / stepSize) in integers, then gamma^k.
    GraphBuilder &b = *t.builder();
    Value k = cast(div(cast(t, DType::I64), constant(b, double(s.stepSize), DType::I64)),
                   DType::F32);
    return lr * pow(scalarLike(lr, s.gamma), k);
  }
  case Schedule::Kind::Exponential:
    return lr * pow(scalarLike(lr, s.gamma), t);
  case Schedule::Kind::Cosine: {
    if (s.totalSteps < 1)
      throw Error(fmt::format("cosine schedule: total steps must be >= 1, got {}",
                              s.totalSteps));
    Value phase = cos(t * (std::numbers::pi / double(s.totalSteps)));
    return (lr - s.minLr) * (phase + 1.0) * 0.5 + s.minLr;
  }
  }
  throw std::logic_error("unknown schedule");
}

// Scales all gradients by min(1, maxNorm / (norm + 1e-6)), as
// torch.nn.utils.clip_grad_norm_.
void clipByGlobalNorm(std::vector<Value> &grads, double maxNorm) {
  if (!(maxNorm > 0) || grads.empty())
    return;
  Value total;
  for (const Value &g : grads) {
    Value part = asDType(sum(square(g)), DType::F32);
    total = total.valid() ? total + part : part;
  }
  Value norm = sqrt(total);
  Value coef = minimum(maxNorm / (norm + 1e-6), scalarLike(norm, 1.0));
  for (Value &g : grads)
    g = g * asDType(coef, g.dtype());
}

// Averages the gradients over the processes, one all_reduce per bucket of
// about `bucketBytes`. Buckets fill in the order the backward pass completes
// the gradients (their node ids), so the first bucket can travel while the
// rest of the backward pass runs; several gradients share a bucket as one
// flat concatenation, which the optimizer reads back through slices.
void averageOverProcesses(GraphBuilder &b, std::vector<Value> &grads,
                          const std::vector<Value> &params, int64_t bucketBytes) {
  if (bucketBytes < 1)
    throw Error(fmt::format("data-parallel bucket size must be at least 1 byte, got {}",
                            bucketBytes));
  std::vector<size_t> order(grads.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t c) { return grads[a].id() < grads[c].id(); });
  auto bytesOf = [&](size_t i) {
    return grads[i].type().numel() * static_cast<int64_t>(dtypeSize(grads[i].dtype()));
  };
  std::vector<std::vector<size_t>> buckets;
  int64_t filled = 0;
  for (size_t i : order) {
    bool fits = !buckets.empty() && filled + bytesOf(i) <= bucketBytes &&
                grads[buckets.back()[0]].dtype() == grads[i].dtype();
    if (!fits) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(i);
    filled += bytesOf(i);
  }
  for (size_t k = 0; k < buckets.size(); ++k) {
    const std::vector<size_t> &bucket = buckets[k];
    std::string names;
    for (size_t i : bucket)
      names += fmt::format("{}{}", names.empty() ? "" : ", ", b.graph().node(params[i].id()).name);
    SourceLoc loc("<train_step>", 0, 0);
    loc.origin = fmt::format("data-parallel bucket {} of {}: {}", k, buckets.size(), names);
    LocationScope scope(b, loc);
    if (bucket.size() == 1) {
      grads[bucket[0]] = allReduce(grads[bucket[0]], "mean");
      continue;
    }
    std::vector<Value> flat;
    for (size_t i : bucket)
      flat.push_back(reshape(grads[i], {grads[i].type().numel()}));
    Value reduced = allReduce(concat(flat, 0), "mean");
    int64_t at = 0;
    for (size_t i : bucket) {
      int64_t n = grads[i].type().numel();
      grads[i] = reshape(slice(reduced, {at}, {at + n}), grads[i].shape());
      at += n;
    }
  }
}

// A bool scalar: every element of every gradient is finite. NaN and inf
// both fail `|g| <= the largest f32`.
Value allFinite(const std::vector<Value> &grads) {
  Value smallest;
  for (const Value &g : grads) {
    Value finite = le(abs(g), scalarLike(g, std::numeric_limits<float>::max()));
    Value part = min(cast(finite, DType::F32));
    smallest = smallest.valid() ? minimum(smallest, part) : part;
  }
  return gt(smallest, scalarLike(smallest, 0.5));
}

} // namespace

std::string_view optimizerName(Optimizer::Kind kind) {
  for (const auto &[k, name] : kOptimizerNames)
    if (k == kind)
      return name;
  return "?";
}

Optimizer::Kind parseOptimizerKind(std::string_view name) {
  return kindNamed(kOptimizerNames, name, "optimizer");
}

Schedule::Kind parseScheduleKind(std::string_view name) {
  return kindNamed(kScheduleNames, name, "schedule");
}

std::vector<std::string_view> optimizerNames() { return namesOf(kOptimizerNames); }
std::vector<std::string_view> scheduleNames() { return namesOf(kScheduleNames); }

namespace {

// Hyper-parameters outside their range would build a step that silently
// diverges or does nothing sensible; each message names the field and the
// stepc train-step flag that sets it.
void checkHyperParameters(const Optimizer &opt) {
  auto check = [](double value, std::string_view field, std::string_view flag, bool ok,
                  std::string_view range) {
    if (!std::isfinite(value) || !ok)
      throw Error(fmt::format("train_step: {}{} must be {}, got {}", field,
                              flag.empty() ? "" : fmt::format(" ({})", flag), range, value));
  };
  if (opt.lr)
    check(*opt.lr, "lr", "--lr", *opt.lr >= 0, "a finite number >= 0");
  check(opt.momentum, "momentum", "--momentum", opt.momentum >= 0 && opt.momentum < 1,
        "in [0, 1)");
  check(opt.weightDecay, "weightDecay", "--weight-decay", opt.weightDecay >= 0,
        "a finite number >= 0");
  check(opt.clipNorm, "clipNorm", "--clip-norm", opt.clipNorm >= 0,
        "a finite number >= 0 (0: no clipping)");
  check(opt.alpha, "alpha", "", opt.alpha >= 0 && opt.alpha < 1, "in [0, 1)");
  check(opt.beta1, "beta1", "", opt.beta1 >= 0 && opt.beta1 < 1, "in [0, 1)");
  check(opt.beta2, "beta2", "", opt.beta2 >= 0 && opt.beta2 < 1, "in [0, 1)");
  check(opt.eps, "eps", "", opt.eps >= 0, "a finite number >= 0");
  check(opt.schedule.gamma, "schedule.gamma", "--gamma", opt.schedule.gamma > 0,
        "a finite number > 0");
  check(opt.schedule.minLr, "schedule.minLr", "--min-lr", opt.schedule.minLr >= 0,
        "a finite number >= 0");
}

// The f16 loss scale's range: normal f32 values; and growth intervals that
// an f64 constant holds exactly.
constexpr double kSmallestScale = std::numeric_limits<float>::min();
constexpr double kLargestScale = std::numeric_limits<float>::max();
constexpr int64_t kLongestGrowthInterval = int64_t(1) << 53;

} // namespace

Graph trainStep(const Graph &model, const std::string &loss, const Optimizer &opt,
                const DataParallel &dataParallel, const MixedPrecision &mixed) {
  checkHyperParameters(opt);
  auto lossId = model.findOutput(loss);
  if (!lossId)
    throw Error(fmt::format("train_step: graph '{}' has no output '{}'", model.name, loss));
  bool lossScaling = mixed.compute == DType::F16;
  // The scale is an f32 param: a value that rounds to 0 or inf there would
  // skip every step.
  if (lossScaling && !(mixed.initialScale >= kSmallestScale && mixed.initialScale <= kLargestScale))
    throw Error(fmt::format("train_step: the initial loss scale must be a number from {:g} to "
                            "{:g} (a normal f32 > 0), got {}",
                            kSmallestScale, kLargestScale, mixed.initialScale));
  if (lossScaling && (mixed.growthInterval < 1 || mixed.growthInterval > kLongestGrowthInterval))
    throw Error(fmt::format("train_step: the loss scale's growth interval must be from 1 to {} "
                            "steps, got {}",
                            kLongestGrowthInterval, mixed.growthInterval));
  std::vector<const char *> reserved = {"lr", "step"};
  if (lossScaling)
    reserved.insert(reserved.end(), {"loss_scale", "loss_scale.good_steps"});
  for (const char *name : reserved)
    if (model.findNamed(name))
      throw Error(fmt::format("train_step: the model already has a value named '{}', which "
                              "the training step needs for its own input or state",
                              name));

  GraphBuilder b(mixed.compute ? mixedPrecisionGraph(model, *mixed.compute) : model);
  lossId = b.graph().findOutput(loss);
  std::vector<Value> params;
  for (ValueId id : b.graph().params())
    if (isFloat(b.graph().type(id).dtype))
      params.push_back(b.value(id));
  if (params.empty())
    throw Error(fmt::format("train_step: graph '{}' has no floating-point parameters to train",
                            model.name));

  SourceLoc here("<train_step>", 0, 0);
  here.origin = fmt::format("{} optimizer", optimizerName(opt.kind));
  LocationScope scope(b, here);

  Value lr = opt.lr ? constant(b, *opt.lr, DType::F32) : b.input("lr", DType::F32, {});
  Value step = b.param("step", DType::I64, {}, Init::zeros());
  Value lossValue = b.value(*lossId);
  Value scale, goodSteps, finite;
  if (lossScaling) {
    scale = b.param("loss_scale", DType::F32, {}, Init::constant(mixed.initialScale));
    goodSteps = b.param("loss_scale.good_steps", DType::I64, {}, Init::zeros());
  }
  std::vector<Value> grads =
      gradients(lossScaling ? lossValue * asDType(scale, lossValue.dtype()) : lossValue, params);
  if (lossScaling)
    for (Value &g : grads)
      g = g * asDType(1.0 / scale, g.dtype());
  if (dataParallel.enabled)
    averageOverProcesses(b, grads, params, dataParallel.bucketBytes);
  // After the average, so that every rank sees an overflow on any rank and
  // all skip the same steps.
  if (lossScaling)
    finite = allFinite(grads);
  clipByGlobalNorm(grads, opt.clipNorm);
  // With loss scaling a step whose gradients overflowed keeps every
  // parameter and state tensor as it was, bit for bit.
  auto update = [&](Value param, Value next) {
    b.update(param, finite.valid() ? select(finite, next, param) : next);
  };

  Value t = cast(step, DType::F32);
  Value rate = scheduledRate(lr, t, opt.schedule);
  Value t1 = t + 1.0; // Adam's bias correction counts this step

  for (size_t i = 0; i < params.size(); ++i) {
    Value p = params[i];
    Value g = grads[i];
    // A copy: adding nodes (the weight-decay term, the state params) grows
    // the graph's node vector and would leave a reference dangling.
    const std::string name = b.graph().node(p.id()).name;
    DType dtype = p.dtype();
    Value lrP = asDType(rate, dtype);
    auto state = [&](const char *suffix) {
      return b.param(name + "." + suffix, dtype, p.shape(), Init::zeros());
    };
    if (opt.weightDecay != 0 && opt.kind != Optimizer::Kind::AdamW)
      g = g + p * opt.weightDecay;

    switch (opt.kind) {
    case Optimizer::Kind::Sgd:
      update(p, p - lrP * g);
      break;
    case Optimizer::Kind::Momentum:
    case Optimizer::Kind::Nesterov: {
      Value buf = state("buf");
      Value next = buf * opt.momentum + g;
      Value direction = opt.kind == Optimizer::Kind::Nesterov ? g + next * opt.momentum : next;
      update(buf, next);
      update(p, p - lrP * direction);
      break;
    }
    case Optimizer::Kind::RmsProp: {
      Value sq = state("sq");
      Value next = sq * opt.alpha + square(g) * (1.0 - opt.alpha);
      update(sq, next);
      update(p, p - lrP * g / (sqrt(next) + opt.eps));
      break;
    }
    case Optimizer::Kind::Adam:
    case Optimizer::Kind::AdamW: {
      Value m = state("m"), v = state("v");
      Value base = p;
      if (opt.kind == Optimizer::Kind::AdamW && opt.weightDecay != 0)
        base = p * (1.0 - lrP * opt.weightDecay);
      Value mNext = m * opt.beta1 + g * (1.0 - opt.beta1);
      Value vNext = v * opt.beta2 + square(g) * (1.0 - opt.beta2);
      Value correction1 = asDType(1.0 - pow(scalarLike(t1, opt.beta1), t1), dtype);
      Value correction2 = asDType(1.0 - pow(scalarLike(t1, opt.beta2), t1), dtype);
      Value denom = sqrt(vNext) / sqrt(correction2) + opt.eps;
      update(m, mNext);
      update(v, vNext);
      update(p, base - (lrP / correction1) * mNext / denom);
      break;
    }
    }
  }
  update(step, step + constant(b, 1.0, DType::I64));
  if (lossScaling) {
    // torch.amp.GradScaler's rule: halve on overflow; double after
    // growthInterval good steps in a row.
    Value good = goodSteps + constant(b, 1.0, DType::I64);
    Value grow = ge(good, constant(b, double(mixed.growthInterval), DType::I64));
    Value zero = constant(b, 0.0, DType::I64);
    // The scale stays a normal f32: doubling past the largest keeps it (as
    // GradScaler does), halving stops at the smallest (1 / scale stays finite).
    Value doubled = scale * 2.0;
    Value grown = select(le(doubled, scalarLike(scale, kLargestScale)), doubled, scale);
    Value halved = maximum(scale * 0.5, scalarLike(scale, kSmallestScale));
    b.update(scale, select(finite, select(grow, grown, scale), halved));
    b.update(goodSteps, select(finite, select(grow, zero, good), zero));
  }
  // Report the loss of the global batch, so rank 0 can print it.
  Value globalLoss = dataParallel.enabled ? allReduce(b.value(*lossId), "mean") : Value();
  Graph out = b.finish();
  for (GraphOutput &o : out.outputs)
    if (o.name == loss && globalLoss.valid())
      o.value = globalLoss.id();
  out.name = model.name + "_train_step";
  return out;
}

} // namespace stepc
