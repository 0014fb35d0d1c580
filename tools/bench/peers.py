#!/usr/bin/env python3
"""The steps `stepc bench` times, measured in PyTorch eager, torch.compile and
JAX jit on the CPU, so anyone can reproduce the comparison (tools/bench/README.md).

Workloads, as in examples/*.sg (same shapes and ops; the init scheme differs,
which does not change the timing):
  mlp   the mlp.sg Adam training step: 784-512-512-10 ReLU, cross-entropy,
        batch 128, Adam lr 1e-3 (forward, backward, update in one step)
  cnn   the cnn.sg Adam training step: conv3x3(1->8)+bias, relu, maxpool2,
        conv3x3(8->16)+bias, relu, maxpool2, linear 784->10, cross-entropy,
        batch 32, Adam lr 1e-3
  gelu  the tanh GELU over 4M floats (y = gelu(x), x read once, y written once)
  gpt64, gpt128
        the Adam training step of a 4-layer GPT-style language model, as
        tools/bench/make_gpt.py writes it (stepc times that very graph):
        pre-norm blocks (layer norm, causal multi-head attention without
        biases, residual; layer norm, GELU MLP of 4x the width with biases,
        residual), learned positions, a final layer norm, an untied output
        layer, cross-entropy over next tokens; width 256, 4 heads, vocabulary
        64; gpt64: 64 tokens, batch 16; gpt128: 128 tokens, batch 8 (the same
        1024 tokens per step, attention over twice the length)

Each framework runs in its own subprocess (so one's thread pool never spins
while another is timed), with 2 threads:
  PyTorch: torch.set_num_threads(2), torch.set_num_interop_threads(1).
  JAX:     XLA_FLAGS="--xla_cpu_multi_thread_eigen=true
           intra_op_parallelism_threads=2" and the process pinned to 2 CPUs
           (os.sched_setaffinity), since XLA:CPU sizes its thread pool by the
           CPUs it may run on.
Figures are the median ms per step over --steps steps after --warmup steps
(--gpt-steps and --gpt-warmup for the transformers; torch.compile and
jax.jit compile during the warm-up, and the first call's time, compile
included, is reported beside: `stepc bench`'s compile_ms for stepc). The whole set runs
--rounds times, the columns taking turns, and each cell is the lowest of its
rounds' medians: on a shared machine, the round that no one else's work
slowed down. With --stepc, the same workloads are timed with `stepc bench` in
the same rounds (stepc column).

Never part of `make test`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

THREADS = 2
GELU_N = 4 * 1024 * 1024
FRAMEWORKS = ["torch-eager", "torch-compile", "jax-jit"]
# Asked for by name (--frameworks): PyTorch eager under CPU autocast to
# bfloat16, the peer of `stepc bench --mixed-precision bf16` (--stepc-bf16).
OPTIONAL_FRAMEWORKS = ["torch-eager-bf16"]
WORKLOADS = ["mlp", "cnn", "gelu", "gpt64", "gpt128"]
# make_gpt.py's arguments per transformer workload.
GPT = {
    "gpt64": dict(layers=4, width=256, heads=4, tokens=64, batch=16, vocab=64),
    "gpt128": dict(layers=4, width=256, heads=4, tokens=128, batch=8, vocab=64),
}


def timed(step, sync, warmup, steps):
    """The median ms per step, and the first call's ms (compile included)."""
    start = time.perf_counter()
    sync(step())
    first = (time.perf_counter() - start) * 1e3
    for _ in range(warmup - 1):
        sync(step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        sync(step())
        times.append((time.perf_counter() - start) * 1e3)
    return {"ms": statistics.median(times), "first_ms": first}


def steps_for(name, args):
    """(warmup, steps): the transformers take fewer, longer steps."""
    if name in GPT:
        return max(args.gpt_warmup, 1), args.gpt_steps
    return max(args.warmup, 1), args.steps


# --- PyTorch -----------------------------------------------------------------


def TorchGpt(layers, width, heads, tokens, batch, vocab, written_out=False):
    """make_gpt.py's model as a torch.nn.Module (built lazily: importing torch
    is the worker's business). written_out: causal attention as matmul, scale,
    masked fill, softmax and matmul, and nn.GELU's erf GELU, the model
    tools/bench/onnx_peers.py exports; otherwise scaled_dot_product_attention
    and make_gpt.py's tanh GELU."""
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(width, width, bias=False)
                                                  for _ in range(4))
            self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
            if written_out:
                self.gelu = nn.GELU()
                self.register_buffer("causal", torch.ones(tokens, tokens).tril().bool())

        def forward(self, x):
            b, t, d = x.shape
            n = self.ln1(x)
            q, k, v = (w(n).view(b, t, heads, d // heads).transpose(1, 2)
                       for w in (self.wq, self.wk, self.wv))
            if written_out:
                s = (q @ k.transpose(-2, -1)) / math.sqrt(d // heads)
                s = s.masked_fill(~self.causal, float("-inf"))
                a = torch.softmax(s, dim=-1) @ v
            else:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.wo(a.transpose(1, 2).reshape(b, t, d))
            h = self.up(self.ln2(x))
            return x + self.down(self.gelu(h) if written_out else F.gelu(h, approximate="tanh"))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.pos = nn.Parameter(torch.randn(tokens, width) * 0.02)
            self.blocks = nn.Sequential(*(Block() for _ in range(layers)))
            self.lnf = nn.LayerNorm(width)
            self.out = nn.Linear(width, vocab, bias=False)

        def forward(self, tokens_in):
            return self.out(self.lnf(self.blocks(self.embed(tokens_in) + self.pos)))

    return Gpt()


def torch_workload(name, compiled, warmup, steps, autocast_bf16=False):
    import contextlib
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)

    if name == "gelu":
        x = torch.randn(GELU_N)
        fn = lambda t: F.gelu(t, approximate="tanh")
        if compiled:
            fn = torch.compile(fn)
        return timed(lambda: fn(x), lambda _: None, warmup, steps)

    if name in GPT:
        c = GPT[name]
        model = TorchGpt(**c)
        x = torch.randint(0, c["vocab"], (c["batch"], c["tokens"]))
        y = torch.randint(0, c["vocab"], (c["batch"] * c["tokens"],))
    elif name == "mlp":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        x = torch.randn(128, 784)
        y = torch.randint(0, 10, (128,))
    else:
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(784, 10))
        x = torch.randn(32, 1, 28, 28)
        y = torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    # Mixed precision as torch.amp does it: f32 params and Adam state, the
    # forward pass's matmuls in bf16 (cross-entropy in f32), backward through
    # the casts; bf16 needs no GradScaler.
    def precision():
        if autocast_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with precision():
            loss = F.cross_entropy(model(x).reshape(y.shape[0], -1), y)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        # The whole step, optimizer included: forward and backward graphs via
        # AOTAutograd, the Adam update compiled too.
        step = torch.compile(step)
    return timed(step, lambda _: None, warmup, steps)


# --- JAX -----------------------------------------------------------------------


def jax_workload(name, warmup, steps):
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    sync = lambda out: jax.block_until_ready(out)

    if name == "gelu":
        x = jax.random.normal(key, (GELU_N,), jnp.float32)
        fn = jax.jit(lambda t: jax.nn.gelu(t, approximate=True))
        return timed(lambda: fn(x), sync, warmup, steps)

    def dense(key, fan_in, fan_out):
        bound = (6.0 / fan_in) ** 0.5
        return (jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -bound, bound),
                jnp.zeros((fan_out,), jnp.float32))

    keys = jax.random.split(key, 8)
    if name in GPT:
        c = GPT[name]
        params, forward = jax_gpt(keys[0], **c)
        x = jax.random.randint(keys[3], (c["batch"], c["tokens"]), 0, c["vocab"])
        y = jax.random.randint(keys[4], (c["batch"] * c["tokens"],), 0, c["vocab"])
    elif name == "mlp":
        params = [dense(keys[0], 784, 512), dense(keys[1], 512, 512), dense(keys[2], 512, 10)]
        x = jax.random.normal(keys[3], (128, 784), jnp.float32)
        y = jax.random.randint(keys[4], (128,), 0, 10)

        def forward(p, x):
            h = jax.nn.relu(x @ p[0][0] + p[0][1])
            h = jax.nn.relu(h @ p[1][0] + p[1][1])
            return h @ p[2][0] + p[2][1]
    else:
        def conv(key, cin, cout):
            bound = (6.0 / (cin * 9)) ** 0.5
            return (jax.random.uniform(key, (cout, cin, 3, 3), jnp.float32, -bound, bound),
                    jnp.zeros((cout, 1, 1), jnp.float32))

        params = [conv(keys[0], 1, 8), conv(keys[1], 8, 16), dense(keys[2], 784, 10)]
        x = jax.random.normal(keys[3], (32, 1, 28, 28), jnp.float32)
        y = jax.random.randint(keys[4], (32,), 0, 10)

        def conv_relu_pool(h, k, b):
            h = jax.lax.conv_general_dilated(h, k, (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            h = jax.nn.relu(h + b)
            return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2),
                                         "VALID")

        def forward(p, x):
            h = conv_relu_pool(x, *p[0])
            h = conv_relu_pool(h, *p[1])
            return h.reshape(h.shape[0], -1) @ p[2][0] + p[2][1]

    def loss_fn(p, x, y):
        logits = forward(p, x).reshape(y.shape[0], -1)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    # Adam as torch.optim.Adam / stepc's train_step: lr 1e-3, betas 0.9/0.999,
    # eps 1e-8, bias-corrected.
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8

    @jax.jit
    def step(state, x, y):
        p, m, v, t = state
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1**t, 1 - b2**t
        p = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps),
                                   p, m, v)
        return (p, m, v, t), loss

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = [(params, zeros, zeros, jnp.float32(0))]

    def run():
        state[0], loss = step(state[0], x, y)
        return loss

    return timed(run, sync, warmup, steps)


def jax_gpt(key, layers, width, heads, tokens, batch, vocab):
    """make_gpt.py's model: (params, forward(params, tokens))."""
    import jax
    import jax.numpy as jnp

    d, hd = width, width // heads
    keys = iter(jax.random.split(key, 8 * layers + 4))

    def weight(fan_in, fan_out):
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        return jax.random.uniform(next(keys), (fan_in, fan_out), jnp.float32, -bound, bound)

    def norm():
        return (jnp.ones((d,), jnp.float32), jnp.zeros((d,), jnp.float32))

    params = {
        "embed": 0.02 * jax.random.normal(next(keys), (vocab, d), jnp.float32),
        "pos": 0.02 * jax.random.normal(next(keys), (tokens, d), jnp.float32),
        "blocks": [dict(ln1=norm(), wq=weight(d, d), wk=weight(d, d), wv=weight(d, d),
                        wo=weight(d, d), ln2=norm(), w_up=weight(d, 4 * d),
                        b_up=jnp.zeros((4 * d,), jnp.float32), w_down=weight(4 * d, d),
                        b_down=jnp.zeros((d,), jnp.float32)) for _ in range(layers)],
        "lnf": norm(),
        "w_out": weight(d, vocab),
    }

    def layer_norm(x, gb):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5) * gb[0] + gb[1]

    causal = jnp.tril(jnp.ones((tokens, tokens), bool))

    def forward(p, tok):
        b = tok.shape[0]
        x = p["embed"][tok] + p["pos"]
        for blk in p["blocks"]:
            n = layer_norm(x, blk["ln1"])
            q, k, v = ((n @ blk[w]).reshape(b, tokens, heads, hd).transpose(0, 2, 1, 3)
                       for w in ("wq", "wk", "wv"))
            s = jnp.where(causal, q @ k.transpose(0, 1, 3, 2) / hd**0.5, -jnp.inf)
            a = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, tokens, d)
            x = x + a @ blk["wo"]
            h = jax.nn.gelu(layer_norm(x, blk["ln2"]) @ blk["w_up"] + blk["b_up"],
                            approximate=True)
            x = x + h @ blk["w_down"] + blk["b_down"]
        return layer_norm(x, p["lnf"]) @ p["w_out"]

    return params, forward


# --- driver --------------------------------------------------------------------


def worker(framework, workloads, args):
    results = {}
    for name in workloads:
        warmup, steps = steps_for(name, args)
        try:
            if framework == "jax-jit":
                results[name] = jax_workload(name, warmup, steps)
            else:
                results[name] = torch_workload(name, framework == "torch-compile", warmup, steps,
                                               autocast_bf16=framework == "torch-eager-bf16")
        except Exception as e:  # one failing workload must not hide the rest
            results[name] = None
            print(f"{framework} {name}: {type(e).__name__}: {e}", file=sys.stderr)
    return results


def run_worker(framework, args):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(THREADS)
    if framework == "jax-jit":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true "
                            f"intra_op_parallelism_threads={THREADS}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--out", out.name,
               "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--gpt-warmup", str(args.gpt_warmup), "--gpt-steps", str(args.gpt_steps),
               "--only", ",".join(args.only)]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            print(f"{framework}: worker exited with {proc.returncode}", file=sys.stderr)
            return {name: None for name in args.only}
        return json.load(open(out.name))


def run_stepc(stepc, args, mixed_precision=None):
    """The same workloads with `stepc bench` (fused build, same thread count),
    the training steps in `mixed_precision` (bf16) when given."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {}
    for name in args.only:
        warmup, steps = steps_for(name, args)
        with tempfile.NamedTemporaryFile("r", suffix=".json") as out, \
                tempfile.NamedTemporaryFile("w", suffix=".sg") as graph:
            cmd = [stepc, "bench"]
            if name == "gelu":
                cmd += ["--gelu", str(GELU_N)]
            elif name in GPT:
                flags = [f"--{k}={v}" for k, v in GPT[name].items()]
                subprocess.run([sys.executable, os.path.join(root, "tools", "bench", "make_gpt.py"),
                                *flags, "-o", graph.name], check=True)
                cmd += [graph.name, "--train-step", "adam"]
            else:
                cmd += [os.path.join(root, "examples", f"{name}.sg"), "--train-step", "adam"]
            if mixed_precision and name != "gelu":
                cmd += ["--mixed-precision", mixed_precision]
            cmd += ["--threads", str(THREADS), "--steps", str(steps), "--warmup", str(warmup),
                    "--json", out.name]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if proc.returncode != 0:
                results[name] = None
                continue
            figures = json.load(open(out.name))
            if name == "gelu":
                results[name] = {"ms": figures["gelu"]["kernel_ms"], "first_ms": None}
            else:
                results[name] = {"ms": figures["fused_ms_per_step"],
                                 "first_ms": figures["compile_ms"]}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--gpt-warmup", type=int, default=2)
    parser.add_argument("--gpt-steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat the whole set; each cell is its lowest median")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated subset of " + ",".join(WORKLOADS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated subset of " +
                        ",".join(FRAMEWORKS + OPTIONAL_FRAMEWORKS))
    parser.add_argument("--stepc", help="also time the workloads with this stepc binary")
    parser.add_argument("--stepc-bf16", action="store_true",
                        help="with --stepc: a stepc-bf16 column too, the training steps in "
                             "mixed precision (stepc bench --mixed-precision bf16)")
    parser.add_argument("--json", help="write the table here too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.only = [w for w in args.only.split(",") if w]
    for w in args.only:
        if w not in WORKLOADS:
            parser.error(f"unknown workload '{w}'; the workloads are: {', '.join(WORKLOADS)}")

    if args.worker:
        if args.worker == "jax-jit":
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:THREADS])
        json.dump(worker(args.worker, args.only, args), open(args.out, "w"))
        return

    frameworks = [f for f in args.frameworks.split(",") if f]
    for f in frameworks:
        if f not in FRAMEWORKS + OPTIONAL_FRAMEWORKS:
            parser.error(f"unknown framework '{f}'; the frameworks are: "
                         f"{', '.join(FRAMEWORKS + OPTIONAL_FRAMEWORKS)}")
    if args.stepc_bf16 and not args.stepc:
        parser.error("--stepc-bf16 needs --stepc STEPC")
    names = (frameworks + (["stepc"] if args.stepc else []) +
             (["stepc-bf16"] if args.stepc_bf16 else []))
    rounds = {c: {w: [] for w in args.only} for c in names}
    for _ in range(args.rounds):
        for c in names:
            if c.startswith("stepc"):
                got = run_stepc(args.stepc, args, "bf16" if c == "stepc-bf16" else None)
            else:
                got = run_worker(c, args)
            for w in args.only:
                if got.get(w) is not None:
                    rounds[c][w].append(got[w])
    columns = {c: {w: min(r["ms"] for r in v) if v else None for w, v in rounds[c].items()}
               for c in names}
    # The first call's time (compile included) of the first round: later
    # rounds may hit a compile cache (torch.compile's, stepc's on disk).
    first_calls = {c: {w: v[0]["first_ms"] if v else None for w, v in rounds[c].items()}
                   for c in names}

    load = os.getloadavg()
    labels = {"mlp": "mlp.sg Adam step, batch 128", "cnn": "cnn.sg Adam step, batch 32",
              "gelu": "tanh GELU, 4M floats", "gpt64": "GPT 4x256, 64 tok, b16, Adam",
              "gpt128": "GPT 4x256, 128 tok, b8, Adam"}
    print(f"median ms per step, {THREADS} threads, {args.steps} steps after {args.warmup} "
          f"warm-up ({args.gpt_steps} after {args.gpt_warmup} for the transformers), lowest of "
          f"{args.rounds} rounds; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    header = f"| {'workload':<30} |" + "".join(f" {c:>13} |" for c in columns)
    print(header)
    print("|" + "-" * 32 + "|" + "".join("-" * 15 + "|" for _ in columns))
    for w in args.only:
        cells = "".join(
            f" {columns[c][w]:>13.3f} |" if columns[c].get(w) is not None else f" {'failed':>13} |"
            for c in columns)
        print(f"| {labels[w]:<30} |{cells}")
    print(f"\nfirst call, compile included (stepc: compile_ms), ms, first round")
    print(header)
    print("|" + "-" * 32 + "|" + "".join("-" * 15 + "|" for _ in columns))
    for w in args.only:
        cells = "".join(
            f" {first_calls[c][w]:>13.0f} |" if first_calls[c].get(w) is not None
            else f" {'-':>13} |" for c in columns)
        print(f"| {labels[w]:<30} |{cells}")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"threads": THREADS, "steps": args.steps, "warmup": args.warmup,
                       "rounds": args.rounds, "load_average": load, "ms_per_step": columns,
                       "first_call_ms": first_calls,
                       "ms_per_step_each_round": rounds}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
