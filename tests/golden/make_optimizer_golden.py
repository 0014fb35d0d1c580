#!/usr/bin/env python3
# Regenerate: python3 -m venv /work/main/.venv && /work/main/.venv/bin/pip install numpy
#             /work/main/.venv/bin/python tests/golden/make_optimizer_golden.py
# (run from the repo root; it rewrites tests/golden/optimizer/; `make test` never needs Python).
# Cross-checked against real torch.optim / clip_grad_norm_ / lr_scheduler (f64) by
# tests/golden/check_goldens_with_torch.py: all configs agree to <= 3e-11 relative.
"""Golden values for stepc's training steps (tests/test_train_step_golden.cpp).

Computed independently of stepc: the 784-512-512-10 ReLU MLP of
examples/mlp.sg, its forward and backward pass written out by hand in numpy
float64, and the optimizers and learning-rate schedules written from the
algorithms that torch.optim documents:

  SGD       g += wd*p;  buf = momentum*buf + g  (buf = g on the first step,
            dampening 0);  nesterov: g = g + momentum*buf, else g = buf;
            p -= lr*g
  RMSprop   g += wd*p;  v = alpha*v + (1-alpha)*g^2;  p -= lr*g/(sqrt(v)+eps)
  Adam      g += wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
            p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps),  t = 1, 2, ...
  AdamW     p *= 1 - lr*wd first, then Adam without the L2 term
  clip_grad_norm_(max_norm): norm = ||all grads||_2,
            g *= min(1, max_norm/(norm+1e-6)), before the optimizer step
  StepLR    lr_t = lr * gamma^floor(t/step_size)
  ExponentialLR  lr_t = lr * gamma^t
  CosineAnnealingLR  lr_t = eta_min + (lr-eta_min)*(1+cos(pi*t/T_max))/2
            (t = steps taken before this one)

Files (all under tests/golden/optimizer/):
  x.npy f32[128,784], y.npy i32[128], w1.npy ... b3.npy f32: the starting
      point (numpy Generator seed SEED); the goldens are computed in float64
      from these f32 values.
  indices/<param>.npy int64[k]: flat row-major indices of the sampled elements
      of <param> (k <= 512, drawn among the elements whose starting gradient is
      not ill-conditioned in f32, see main()); its state tensors
      <param>.m/.v/.buf/.sq are sampled at the same indices.
  <config>/loss.npy f32[steps]: the loss computed at the start of each step
      (the step graph's `loss` output, before that step's update).
  <config>/<tensor>.npy f64[k]: sampled values of every parameter and every
      optimizer state tensor after the last step.
"""

import math
import os
import sys

import numpy as np

SEED = 20240616  # chosen so no ReLU input lies within 2e-6 of 0 (see Margins)
SAMPLES = 512
CONDITION = 1e-2  # sampled elements have |grad| >= CONDITION * rms(grad), or 0
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "optimizer")
PARAMS = ["w1", "b1", "w2", "b2", "w3", "b3"]
SHAPES = {"w1": (784, 512), "b1": (512,), "w2": (512, 512), "b2": (512,),
          "w3": (512, 10), "b3": (10,)}

# One entry per test; hyper-parameters follow torch.optim's names and defaults.
CONFIGS = {
    "sgd": dict(kind="sgd", lr=0.1),
    "sgd_weight_decay": dict(kind="sgd", lr=0.1, weight_decay=1e-2),
    "momentum": dict(kind="momentum", lr=0.05, momentum=0.9),
    "nesterov": dict(kind="nesterov", lr=0.05, momentum=0.9),
    "rmsprop": dict(kind="rmsprop", lr=1e-3, alpha=0.99, eps=1e-8),
    "adam": dict(kind="adam", lr=1e-3),
    "adam_weight_decay": dict(kind="adam", lr=1e-3, weight_decay=1e-2),
    "adamw": dict(kind="adamw", lr=1e-3, weight_decay=1e-2),
    "adam_clip": dict(kind="adam", lr=1e-3, clip_norm=1.0),
    "momentum_3steps": dict(kind="momentum", lr=0.05, momentum=0.9, steps=3),
    "adam_3steps": dict(kind="adam", lr=1e-3, steps=3),
    "sgd_step_lr": dict(kind="sgd", lr=0.1, steps=3,
                        schedule=dict(kind="step", step_size=2, gamma=0.5)),
    "sgd_exponential_lr": dict(kind="sgd", lr=0.1, steps=3,
                               schedule=dict(kind="exponential", gamma=0.9)),
    "sgd_cosine_lr": dict(kind="sgd", lr=0.1, steps=3,
                          schedule=dict(kind="cosine", t_max=4, eta_min=1e-4)),
}

STATE_NAMES = {"sgd": [], "momentum": ["buf"], "nesterov": ["buf"],
               "rmsprop": ["sq"], "adam": ["m", "v"], "adamw": ["m", "v"]}


def starting_point():
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.0, 1.0, size=(128, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=(128,)).astype(np.int32)
    params = {}
    for name in PARAMS:
        shape = SHAPES[name]
        if name.startswith("w"):
            bound = math.sqrt(6.0 / shape[0])  # He uniform, fan_in = rows
        else:
            bound = 0.05  # small but nonzero so the bias paths matter
        params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return x, y, params


class Margins:
    """Smallest |pre-activation| seen: a ReLU whose input is within f32
    rounding of 0 could switch sides in stepc's f32 run, and the goldens
    would then not be a fair reference."""
    smallest = math.inf


def loss_and_grads(x, y, p):
    """Mean cross-entropy of the MLP and its gradients, by hand, float64."""
    n = x.shape[0]
    z1 = x @ p["w1"] + p["b1"]
    h1 = np.maximum(z1, 0.0)
    z2 = h1 @ p["w2"] + p["b2"]
    h2 = np.maximum(z2, 0.0)
    logits = h2 @ p["w3"] + p["b3"]
    Margins.smallest = min(Margins.smallest, np.abs(z1).min(), np.abs(z2).min())

    shifted = logits - logits.max(axis=1, keepdims=True)
    logsumexp = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - logsumexp
    loss = -log_probs[np.arange(n), y].mean()

    # d loss / d logits = (softmax - onehot(y)) / n
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), y] -= 1.0
    dlogits /= n
    g = {}
    g["w3"] = h2.T @ dlogits
    g["b3"] = dlogits.sum(axis=0)
    dz2 = (dlogits @ p["w3"].T) * (z2 > 0)
    g["w2"] = h1.T @ dz2
    g["b2"] = dz2.sum(axis=0)
    dz1 = (dz2 @ p["w2"].T) * (z1 > 0)
    g["w1"] = x.T @ dz1
    g["b1"] = dz1.sum(axis=0)
    return loss, g


def scheduled_lr(cfg, t):
    lr = cfg["lr"]
    s = cfg.get("schedule")
    if s is None:
        return lr
    if s["kind"] == "step":
        return lr * s["gamma"] ** (t // s["step_size"])
    if s["kind"] == "exponential":
        return lr * s["gamma"] ** t
    if s["kind"] == "cosine":
        return s["eta_min"] + (lr - s["eta_min"]) * (1 + math.cos(math.pi * t / s["t_max"])) / 2
    raise ValueError(s["kind"])


def run(cfg, x, y, start):
    kind = cfg["kind"]
    wd = cfg.get("weight_decay", 0.0)
    momentum = cfg.get("momentum", 0.9)
    alpha, eps = cfg.get("alpha", 0.99), cfg.get("eps", 1e-8)
    beta1, beta2 = 0.9, 0.999
    p = {k: v.copy() for k, v in start.items()}
    state = {f"{k}.{s}": np.zeros_like(v) for k, v in p.items() for s in STATE_NAMES[kind]}
    losses, norms = [], []
    for t in range(cfg.get("steps", 1)):  # t = steps taken before this one
        loss, grads = loss_and_grads(x, y, p)
        losses.append(loss)
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        norms.append(norm)
        if cfg.get("clip_norm"):
            coef = min(1.0, cfg["clip_norm"] / (norm + 1e-6))
            grads = {k: g * coef for k, g in grads.items()}
        lr = scheduled_lr(cfg, t)
        for k in PARAMS:
            g = grads[k]
            if wd and kind != "adamw":
                g = g + wd * p[k]
            if kind == "sgd":
                p[k] = p[k] - lr * g
            elif kind in ("momentum", "nesterov"):
                buf = momentum * state[f"{k}.buf"] + g  # = g on the first step
                state[f"{k}.buf"] = buf
                direction = g + momentum * buf if kind == "nesterov" else buf
                p[k] = p[k] - lr * direction
            elif kind == "rmsprop":
                v = alpha * state[f"{k}.sq"] + (1 - alpha) * g * g
                state[f"{k}.sq"] = v
                p[k] = p[k] - lr * g / (np.sqrt(v) + eps)
            elif kind in ("adam", "adamw"):
                step = t + 1
                if kind == "adamw":
                    p[k] = p[k] * (1 - lr * wd)
                m = beta1 * state[f"{k}.m"] + (1 - beta1) * g
                v = beta2 * state[f"{k}.v"] + (1 - beta2) * g * g
                state[f"{k}.m"], state[f"{k}.v"] = m, v
                bc1 = 1 - beta1 ** step
                bc2 = 1 - beta2 ** step
                denom = np.sqrt(v) / math.sqrt(bc2) + eps
                p[k] = p[k] - (lr / bc1) * m / denom
            else:
                raise ValueError(kind)
    return losses, norms, p, state


def save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)


def main():
    x, y, start32 = starting_point()
    save(os.path.join(OUT, "x.npy"), x)
    save(os.path.join(OUT, "y.npy"), y)
    for k, v in start32.items():
        save(os.path.join(OUT, f"{k}.npy"), v)

    x64 = x.astype(np.float64)
    start = {k: v.astype(np.float64) for k, v in start32.items()}

    # The sample avoids elements whose first update is ill-conditioned in
    # f32: Adam and RMSprop move an element by ~lr*g/|g| whatever its size,
    # so where g (or g + wd*p, for the L2 configurations) nearly cancels to
    # zero, f32 rounding of g -- which is relative to the terms summed, not to
    # the result -- changes that update by a large fraction of lr. Exact zeros
    # (units dead on the whole batch) are exact in f32 as well and are kept.
    _, grads0 = loss_and_grads(x64, y, start)
    pick = np.random.default_rng(SEED + 1)
    indices = {}
    for k in PARAMS:
        g = grads0[k].reshape(-1)
        ok = g == 0
        well = np.ones_like(ok)
        for h in (g, g + 1e-2 * start[k].reshape(-1)):
            well &= np.abs(h) >= CONDITION * np.sqrt(np.mean(h * h))
        ok |= well
        candidates = np.flatnonzero(ok)
        if candidates.size <= SAMPLES:
            idx = candidates.astype(np.int64)
        else:
            idx = np.sort(pick.choice(candidates, size=SAMPLES, replace=False)).astype(np.int64)
        print(f"{k}: sampling {idx.size} of {candidates.size} well-conditioned elements "
              f"({g.size} in all, {int((g == 0).sum())} with zero gradient)")
        indices[k] = idx
        save(os.path.join(OUT, "indices", f"{k}.npy"), idx)
    for name, cfg in CONFIGS.items():
        losses, norms, p, state = run(cfg, x64, y, start)
        d = os.path.join(OUT, name)
        save(os.path.join(d, "loss.npy"), np.array(losses, dtype=np.float32))
        for k, v in list(p.items()) + list(state.items()):
            base = k.split(".")[0]
            save(os.path.join(d, f"{k}.npy"), v.reshape(-1)[indices[base]].astype(np.float64))
        print(f"{name:20s} loss {' '.join(f'{l:.9f}' for l in losses)}  "
              f"grad norm {' '.join(f'{n:.6f}' for n in norms)}")
        if cfg.get("clip_norm") and not norms[0] > cfg["clip_norm"]:
            sys.exit(f"{name}: gradient norm {norms[0]} does not exceed the clip "
                     f"norm {cfg['clip_norm']}: clipping would not be tested")
    print(f"smallest |pre-activation| over all forward passes: {Margins.smallest:.3e}")
    if Margins.smallest < 2e-6:
        sys.exit("a ReLU input lies within f32 rounding of 0; pick another SEED")


if __name__ == "__main__":
    main()
