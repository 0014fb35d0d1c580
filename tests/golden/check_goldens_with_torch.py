#!/usr/bin/env python3
# Run: /work/main/.venv-peers/bin/python tests/golden/check_goldens_with_torch.py
# (from the repo root; needs torch + numpy; `make test` never needs it).
"""Cross-check the committed optimizer goldens against real torch.optim.

For every configuration of make_optimizer_golden.py, rebuild the same MLP with
nn.Linear (stepc's weights are [in, out], so weight = W.T), load the committed
starting point and batch, run torch's own optimizer / clip_grad_norm_ /
lr_scheduler in float64 for the same number of steps, and compare each step's
loss and every sampled element of every parameter and optimizer state tensor
with tests/golden/optimizer/<config>/*.npy. Exits non-zero if any sampled
element differs by more than TOL relative, or if a loss differs from the
golden (stored as f32) by more than f32 rounding.
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_optimizer_golden import CONFIGS, OUT, PARAMS, STATE_NAMES  # noqa: E402

TOL = 1e-9
TORCH_STATE = {"m": "exp_avg", "v": "exp_avg_sq", "buf": "momentum_buffer", "sq": "square_avg"}


def load(*parts):
    return np.load(os.path.join(OUT, *parts))


def build_model():
    lin = [torch.nn.Linear(784, 512), torch.nn.Linear(512, 512), torch.nn.Linear(512, 10)]
    model = torch.nn.Sequential(lin[0], torch.nn.ReLU(), lin[1], torch.nn.ReLU(), lin[2]).double()
    with torch.no_grad():
        for i, layer in enumerate(lin, 1):
            layer.weight.copy_(torch.from_numpy(load(f"w{i}.npy").astype(np.float64).T))
            layer.bias.copy_(torch.from_numpy(load(f"b{i}.npy").astype(np.float64)))
    # stepc name -> (torch parameter, transpose back to [in, out]?)
    params = {}
    for i, layer in enumerate(lin, 1):
        params[f"w{i}"] = (layer.weight, True)
        params[f"b{i}"] = (layer.bias, False)
    return model, params


def make_optimizer(cfg, plist):
    kind, lr, wd = cfg["kind"], cfg["lr"], cfg.get("weight_decay", 0.0)
    if kind == "sgd":
        return torch.optim.SGD(plist, lr=lr, weight_decay=wd)
    if kind in ("momentum", "nesterov"):
        return torch.optim.SGD(plist, lr=lr, momentum=cfg["momentum"], weight_decay=wd,
                               nesterov=kind == "nesterov")
    if kind == "rmsprop":
        return torch.optim.RMSprop(plist, lr=lr, alpha=cfg["alpha"], eps=cfg["eps"], weight_decay=wd)
    if kind == "adam":
        return torch.optim.Adam(plist, lr=lr, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(plist, lr=lr, weight_decay=wd)
    raise ValueError(kind)


def make_scheduler(cfg, opt):
    s = cfg.get("schedule")
    if s is None:
        return None
    if s["kind"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s["step_size"], gamma=s["gamma"])
    if s["kind"] == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=s["gamma"])
    if s["kind"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["t_max"], eta_min=s["eta_min"])
    raise ValueError(s["kind"])


def rel_diff(a, b):
    """max |a-b| / max(|a|,|b|), elementwise; 0 where both are 0."""
    scale = np.maximum(np.abs(a), np.abs(b))
    d = np.abs(a - b)
    return float(np.max(np.where(scale > 0, d / np.where(scale > 0, scale, 1), 0.0), initial=0.0))


def check(name, cfg, x, y):
    model, params = build_model()
    plist = [p for p, _ in params.values()]
    opt = make_optimizer(cfg, plist)
    sched = make_scheduler(cfg, opt)
    losses = []
    for _ in range(cfg.get("steps", 1)):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        if cfg.get("clip_norm"):
            torch.nn.utils.clip_grad_norm_(plist, cfg["clip_norm"])
        opt.step()
        if sched is not None:
            sched.step()

    golden_loss = load(name, "loss.npy")
    # loss.npy is f32: torch's f64 loss must round to the same f32 (or be within 1 ulp).
    loss_ulps = float(np.max(np.abs(np.array(losses, np.float32).view(np.int32).astype(np.int64)
                                    - golden_loss.view(np.int32).astype(np.int64))))
    worst, where = 0.0, ""
    for k in PARAMS:
        p, transposed = params[k]
        idx = load("indices", f"{k}.npy")
        tensors = {k: p.detach()}
        for s in STATE_NAMES[cfg["kind"]]:
            tensors[f"{k}.{s}"] = opt.state[p][TORCH_STATE[s]]
        for tname, t in tensors.items():
            arr = t.numpy()
            if transposed:
                arr = arr.T
            got = np.ascontiguousarray(arr).reshape(-1)[idx]
            r = rel_diff(got, load(name, f"{tname}.npy"))
            if r > worst or not where:
                worst, where = r, tname
    return losses, loss_ulps, worst, where


def main():
    torch.set_default_dtype(torch.float64)
    x = torch.from_numpy(load("x.npy").astype(np.float64))
    y = torch.from_numpy(load("y.npy").astype(np.int64))
    failed = []
    print(f"{'config':20s} {'steps':>5s} {'loss f32 ulps':>13s} {'max rel diff':>13s}  worst tensor")
    for name, cfg in CONFIGS.items():
        losses, ulps, worst, where = check(name, cfg, x, y)
        bad = ulps > 1 or not worst <= TOL
        print(f"{name:20s} {cfg.get('steps', 1):5d} {ulps:13.0f} {worst:13.3e}  {where}"
              + ("  FAIL" if bad else ""))
        if bad:
            failed.append(name)
    if failed:
        sys.exit(f"disagree with torch.optim: {', '.join(failed)}")
    print(f"all {len(CONFIGS)} configurations agree with torch.optim (rel tol {TOL:g})")


if __name__ == "__main__":
    main()
