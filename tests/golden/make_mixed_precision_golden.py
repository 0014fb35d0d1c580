#!/usr/bin/env python3
# Regenerate: /work/main/.venv-peers/bin/python tests/golden/make_mixed_precision_golden.py
# (run from the repo root; needs torch + numpy; it rewrites tests/golden/mixed_precision/;
# `make test` never needs Python).
"""Golden values for stepc's bf16 mixed-precision training step
(tests/test_train_step_golden.cpp, TrainStepGolden.AdamMixedPrecisionBf16*).

PyTorch's own mixed precision on the CPU: the 784-512-512-10 ReLU MLP of
examples/mlp.sg as nn.Linear layers in f32 (the master weights), from the
starting point make_optimizer_golden.py saved in tests/golden/optimizer/,
its forward pass under torch.autocast("cpu", dtype=torch.bfloat16) (the
linears in bf16, cross_entropy in f32 as autocast's CPU policy has it), the
mean cross-entropy's backward pass and torch.optim.Adam (lr 1e-3, betas
(0.9, 0.999), eps 1e-8: the step the golden test builds) on the f32 params,
for STEPS steps.

Files (all under tests/golden/mixed_precision/):
  loss.npy f32[STEPS]: the loss at the start of each step, before its update.
  <param>.npy f32[SAMPLES]: <param> after the last step at the first SAMPLES
      of the flat indices in tests/golden/optimizer/indices/<param>.npy.

It also prints how far the same steps computed in f32 (no autocast) land
from the bf16 ones: the gap a test must be able to see.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

STEPS = 5
SAMPLES = 128
LR = 1e-3
HERE = os.path.dirname(os.path.abspath(__file__))
START = os.path.join(HERE, "optimizer")
OUT = os.path.join(HERE, "mixed_precision")
PARAMS = ["w1", "b1", "w2", "b2", "w3", "b3"]


def load(*parts):
    return np.load(os.path.join(START, *parts))


def train(autocast):
    """STEPS Adam steps from the starting point; the losses and the params
    in stepc's layout (weights [in, out])."""
    layers = [torch.nn.Linear(784, 512), torch.nn.Linear(512, 512), torch.nn.Linear(512, 10)]
    with torch.no_grad():
        for i, layer in enumerate(layers, 1):
            layer.weight.copy_(torch.from_numpy(load(f"w{i}.npy").T.copy()))
            layer.bias.copy_(torch.from_numpy(load(f"b{i}.npy")))
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    x = torch.from_numpy(load("x.npy"))
    y = torch.from_numpy(load("y.npy")).long()
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        assert loss.dtype == torch.float32
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    params = {}
    for i, layer in enumerate(layers, 1):
        assert layer.weight.dtype == torch.float32
        params[f"w{i}"] = layer.weight.detach().numpy().T
        params[f"b{i}"] = layer.bias.detach().numpy()
    return losses, params


def main():
    torch.set_num_threads(1)  # the same bits on every machine that runs oneDNN alike
    losses, params = train(autocast=True)
    f32_losses, f32_params = train(autocast=False)
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, "loss.npy"), np.array(losses, dtype=np.float32))
    print("bf16 loss", " ".join(f"{l:.7f}" for l in losses))
    print("f32  loss", " ".join(f"{l:.7f}" for l in f32_losses))
    for k in PARAMS:
        idx = load("indices", f"{k}.npy")[:SAMPLES]
        start = load(f"{k}.npy").reshape(-1)[idx]
        sample = params[k].reshape(-1)[idx].astype(np.float32)
        np.save(os.path.join(OUT, f"{k}.npy"), sample)
        update = sample - start
        gap = f32_params[k].reshape(-1)[idx] - sample
        print(f"{k}: rms update {np.sqrt(np.mean(update ** 2)):.3e}, f32 - bf16 params: "
              f"max {np.abs(gap).max():.3e}, rms {np.sqrt(np.mean(gap ** 2)):.3e}")


if __name__ == "__main__":
    main()
