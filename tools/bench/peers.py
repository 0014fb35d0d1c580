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

Each framework runs in its own subprocess (so one's thread pool never spins
while another is timed), with 2 threads:
  PyTorch: torch.set_num_threads(2), torch.set_num_interop_threads(1).
  JAX:     XLA_FLAGS="--xla_cpu_multi_thread_eigen=true
           intra_op_parallelism_threads=2" and the process pinned to 2 CPUs
           (os.sched_setaffinity), since XLA:CPU sizes its thread pool by the
           CPUs it may run on.
Figures are the median ms per step over --steps steps after --warmup steps
(torch.compile and jax.jit compile during the warm-up). The whole set runs
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
WORKLOADS = ["mlp", "cnn", "gelu"]


def timed(step, sync, warmup, steps):
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        sync(step())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# --- PyTorch -----------------------------------------------------------------


def torch_workload(name, compiled, warmup, steps):
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

    if name == "mlp":
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

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
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
    if name == "mlp":
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
        logits = forward(p, x)
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


# --- driver --------------------------------------------------------------------


def worker(framework, workloads, warmup, steps):
    results = {}
    for name in workloads:
        try:
            if framework == "jax-jit":
                results[name] = jax_workload(name, warmup, steps)
            else:
                results[name] = torch_workload(name, framework == "torch-compile", warmup, steps)
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
               "--only", ",".join(args.only)]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            print(f"{framework}: worker exited with {proc.returncode}", file=sys.stderr)
            return {name: None for name in args.only}
        return json.load(open(out.name))


def run_stepc(stepc, args):
    """The same workloads with `stepc bench` (fused build, same thread count)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {}
    for name in args.only:
        with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
            cmd = [stepc, "bench"]
            if name == "gelu":
                cmd += ["--gelu", str(GELU_N)]
            else:
                cmd += [os.path.join(root, "examples", f"{name}.sg"), "--train-step", "adam"]
            cmd += ["--threads", str(THREADS), "--steps", str(args.steps), "--warmup",
                    str(args.warmup), "--json", out.name]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if proc.returncode != 0:
                results[name] = None
                continue
            figures = json.load(open(out.name))
            results[name] = (figures["gelu"]["kernel_ms"] if name == "gelu"
                             else figures["fused_ms_per_step"])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat the whole set; each cell is its lowest median")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated subset of " + ",".join(WORKLOADS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help="comma-separated subset of " + ",".join(FRAMEWORKS))
    parser.add_argument("--stepc", help="also time the workloads with this stepc binary")
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
        json.dump(worker(args.worker, args.only, args.warmup, args.steps), open(args.out, "w"))
        return

    frameworks = [f for f in args.frameworks.split(",") if f]
    for f in frameworks:
        if f not in FRAMEWORKS:
            parser.error(f"unknown framework '{f}'; the frameworks are: {', '.join(FRAMEWORKS)}")
    names = frameworks + (["stepc"] if args.stepc else [])
    rounds = {c: {w: [] for w in args.only} for c in names}
    for _ in range(args.rounds):
        for c in names:
            got = run_stepc(args.stepc, args) if c == "stepc" else run_worker(c, args)
            for w in args.only:
                if got.get(w) is not None:
                    rounds[c][w].append(got[w])
    columns = {c: {w: min(v) if v else None for w, v in rounds[c].items()} for c in names}

    load = os.getloadavg()
    labels = {"mlp": "mlp.sg Adam step, batch 128", "cnn": "cnn.sg Adam step, batch 32",
              "gelu": "tanh GELU, 4M floats"}
    print(f"median ms per step, {THREADS} threads, {args.steps} steps after {args.warmup} "
          f"warm-up, lowest of {args.rounds} rounds; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    header = f"| {'workload':<30} |" + "".join(f" {c:>13} |" for c in columns)
    print(header)
    print("|" + "-" * 32 + "|" + "".join("-" * 15 + "|" for _ in columns))
    for w in args.only:
        cells = "".join(
            f" {columns[c][w]:>13.3f} |" if columns[c].get(w) is not None else f" {'failed':>13} |"
            for c in columns)
        print(f"| {labels[w]:<30} |{cells}")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"threads": THREADS, "steps": args.steps, "warmup": args.warmup,
                       "rounds": args.rounds, "load_average": load, "ms_per_step": columns,
                       "ms_per_step_each_round": rounds}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
