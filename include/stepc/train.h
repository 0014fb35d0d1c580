// Training steps: one graph computes the loss, the gradients and the
// optimizer's update of every parameter and its state.
#pragma once

#include "stepc/graph.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stepc {

// Learning-rate schedules, as PyTorch's StepLR, ExponentialLR and
// CosineAnnealingLR with t = the number of steps taken before this one.
struct Schedule {
  enum class Kind { Constant, Step, Exponential, Cosine };
  Kind kind = Kind::Constant;
  int64_t stepSize = 1;   // Step: multiply by gamma every stepSize steps
  double gamma = 0.1;     // Step, Exponential
  int64_t totalSteps = 1; // Cosine: T_max
  double minLr = 0;       // Cosine: eta_min
};

// Hyper-parameters follow torch.optim's definitions and defaults.
struct Optimizer {
  enum class Kind { Sgd, Momentum, Nesterov, RmsProp, Adam, AdamW };
  Kind kind = Kind::Sgd;
  double momentum = 0.9; // Momentum, Nesterov
  double alpha = 0.99;   // RmsProp smoothing
  double beta1 = 0.9;    // Adam, AdamW
  double beta2 = 0.999;  // Adam, AdamW
  double eps = 1e-8;     // RmsProp, Adam, AdamW
  // L2 penalty added to the gradient (Sgd, Momentum, Nesterov, RmsProp,
  // Adam); decoupled decay for AdamW (PyTorch's default there is 0.01).
  double weightDecay = 0;
  double clipNorm = 0; // > 0: clip the gradients' global L2 norm (clip_grad_norm_)
  Schedule schedule;
  // The base learning rate baked in as a constant; when unset the step graph
  // takes it as the input `lr` (f32[]) so it can change between steps.
  std::optional<double> lr;

  static Optimizer sgd() { return {}; }
  static Optimizer adam() { return withKind(Kind::Adam, 0); }
  static Optimizer adamw() { return withKind(Kind::AdamW, 0.01); }

private:
  static Optimizer withKind(Kind kind, double weightDecay) {
    Optimizer o;
    o.kind = kind;
    o.weightDecay = weightDecay;
    return o;
  }
};

std::string_view optimizerName(Optimizer::Kind kind);
// "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"; throws on others.
Optimizer::Kind parseOptimizerKind(std::string_view name);
// "constant", "step", "exponential", "cosine"; throws on others.
Schedule::Kind parseScheduleKind(std::string_view name);
// Every optimizer's and every schedule's name, in the order above (what the
// CLI's and the Python module's choices list).
std::vector<std::string_view> optimizerNames();
std::vector<std::string_view> scheduleNames();

// Data-parallel training (the way PyTorch's DDP and XLA do it): every
// process runs the step on its own slice of the global batch, and the
// gradients are averaged over the processes (all_reduce mean) between the
// backward pass and the optimizer, so every process applies the same update.
// The gradients are packed into buckets of about bucketBytes, in the order
// the backward pass completes them; fusion schedules each bucket's
// all_reduce right after the kernel that completes it, so the communication
// overlaps the rest of the backward pass. The loss output becomes the mean
// over the processes too. With one process every all_reduce is the identity.
struct DataParallel {
  bool enabled = false;
  int64_t bucketBytes = int64_t(2) << 20;
};

// Mixed-precision training, as PyTorch's autocast plus GradScaler: the
// forward and backward passes compute in `compute` (f16 or bf16) while the
// parameters and the optimizer state stay f32 (master weights), so small
// updates are not lost to half rounding. Each f32 parameter and input is cast
// to half where it is used; matmuls and convolutions read half operands and
// accumulate in f32; exp, log, pow, sums and means (softmax, the loss,
// normalizations) run in f32, and ops that mix f32 and half compute in f32.
// The gradients reach the optimizer in f32.
//
// f16 (5 exponent bits) underflows small gradients, so it adds dynamic loss
// scaling: the step keeps the params "loss_scale" (f32[]) and
// "loss_scale.good_steps" (i64[]); the gradients are taken of loss *
// loss_scale and divided by it; when any gradient is inf or NaN the step
// leaves every parameter, optimizer state and the step counter bit for bit
// as they were and halves the scale; after growthInterval steps in a row
// without overflow the scale doubles. bf16 has f32's exponent range and
// needs no scaling.
struct MixedPrecision {
  std::optional<DType> compute; // f16 or bf16; unset: the model's own dtypes
  double initialScale = 65536;  // f16: torch.amp.GradScaler's 2^16
  int64_t growthInterval = 2000;
};

// "bf16" or "f16"; throws naming `what` (e.g. the flag) and those two.
DType parseMixedPrecision(std::string_view name, std::string_view what);

// The model with every f32 computation moved to `compute` (f16 or bf16) by
// MixedPrecision's rules: params, inputs and outputs keep their f32 types.
Graph mixedPrecisionGraph(const Graph &model, DType compute);

// Builds the training step of `model`: inputs are the model's inputs plus
// `lr` (f32[], the base learning rate) unless Optimizer::lr is set; parameters are the model's plus the
// optimizer state ("<param>.m", "<param>.v", "<param>.buf", "<param>.sq")
// and the step counter "step" (i64[]); outputs are the model's outputs; the
// graph's updates assign every parameter, state tensor and the counter
// their new values. Every floating-point parameter is trained. With
// mixedPrecision.compute set, the model computes in that half type and f16
// adds the loss-scale params (see MixedPrecision).
Graph trainStep(const Graph &model, const std::string &loss, const Optimizer &optimizer,
                const DataParallel &dataParallel = {},
                const MixedPrecision &mixedPrecision = {});

} // namespace stepc
