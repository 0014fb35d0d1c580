#!/usr/bin/env python3
"""Inference of models exported from PyTorch to ONNX: ONNX Runtime against
stepc on the CPU, 2 threads each, in the same run (tools/bench/README.md).

Models (PyTorch, fixed seeds, exported with torch.onnx.export's TorchScript
exporter at opset 17, as a user of an older toolchain would get them):
  mlp    784-1024-1024-10 ReLU, batch 256 (Gemm with transposed weights);
         `--mlp-batch 1,32,256` runs it at each of those batches instead, as
         mlp-b1, mlp-b32 and mlp (the name mlp-bN also works in --only)
  cnn    conv3x3(1->8)+bias, relu, maxpool2, conv3x3(8->16)+bias, relu,
         maxpool2, linear 784->10; batch 32 of 1x28x28 (cnn.sg's shapes)
  gpt    4-layer GPT-style forward to the logits: width 256, 4 heads, 128
         tokens, batch 8, vocabulary 64; pre-norm blocks (nn.LayerNorm,
         causal attention written out as matmul, scale, masked fill, softmax,
         matmul), an erf GELU MLP of 4x the width (nn.GELU), learned
         positions, a final layer norm, an untied output layer

For each model and round: ONNX Runtime (intra_op_num_threads=2,
inter_op_num_threads=1, sequential execution, all graph optimizations) is
timed in a worker subprocess; each stepc binary imports the model once
(`stepc import-onnx`) and times the forward graph with `stepc bench --threads 2` (its
fused build's median step, which copies the inputs into its arena and the
outputs out; ORT's run allocates its outputs). Each cell is the median ms per
forward over --steps calls after --warmup; the whole set runs --rounds times,
the columns taking turns, and the table shows the lowest of the rounds'
medians (on a shared machine, the round that no one else's work slowed
down), as tools/bench/peers.py does; --json keeps every round's median.

Correctness: on one input (seed 0), stepc's output (`stepc run --backend
cpu`) against ONNX Runtime's: the largest |stepc - ort| / max|ort|.

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

from peers import TorchGpt

THREADS = 2
MODELS = ["mlp", "cnn", "gpt"]
LABELS = {"mlp": "MLP 784-1024-1024-10, b256", "cnn": "convnet 2 conv3x3, b32",
          "gpt": "GPT 4x256, 128 tok, b8"}
MLP_BATCH = 256


def mlp_name(batch):
    """The model name of the MLP at a batch: mlp at 256 (its figures so far), else mlp-bN."""
    return "mlp" if batch == MLP_BATCH else f"mlp-b{batch}"


def mlp_batch(name):
    """The batch of an MLP model name (mlp, mlp-b32), or None for another model."""
    if name == "mlp":
        return MLP_BATCH
    if name.startswith("mlp-b") and name[len("mlp-b"):].isdigit() and int(name[len("mlp-b"):]) > 0:
        return int(name[len("mlp-b"):])
    return None


def label(name):
    batch = mlp_batch(name)
    return f"MLP 784-1024-1024-10, b{batch}" if batch else LABELS[name]
GPT = dict(layers=4, width=256, heads=4, tokens=128, batch=8, vocab=64)


def build_model(name):
    """(module, example input) for a model, weights from a fixed seed."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    if mlp_batch(name):
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                              nn.Linear(1024, 10))
        return model, torch.randn(mlp_batch(name), 784)
    if name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(784, 10))
        return model, torch.randn(32, 1, 28, 28)
    return TorchGpt(**GPT, written_out=True), torch.randint(0, GPT["vocab"], (GPT["batch"], GPT["tokens"]))


def export(name, folder):
    """Writes folder/NAME.onnx and folder/NAME_x.npy (the check's input)."""
    import numpy as np
    import torch

    model, x = build_model(name)
    model.eval()
    path = os.path.join(folder, f"{name}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    np.save(os.path.join(folder, f"{name}_x.npy"), x.numpy())
    return path


def ort_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_worker(folder, names, warmup, steps):
    """Median ms per forward for each model, in this (worker) process."""
    import numpy as np

    results = {}
    for name in names:
        session = ort_session(os.path.join(folder, f"{name}.onnx"))
        feed = {"x": np.load(os.path.join(folder, f"{name}_x.npy"))}
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        results[name] = statistics.median(times)
    return results


def run_ort(folder, names, args):
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", folder, "--out", out.name,
               "--only", ",".join(names), "--warmup", str(args.warmup),
               "--steps", str(args.steps)]
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
        if subprocess.run(cmd, env=env).returncode != 0:
            print("onnxruntime: worker failed", file=sys.stderr)
            return {}
        return json.load(open(out.name))


def run_stepc(stepc, folder, names, args):
    """Median ms per forward for each model, of the .sg that `stepc` imported into `folder`."""
    results = {}
    for name in names:
        with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
            cmd = [stepc, "bench", os.path.join(folder, f"{name}.sg"), "--threads", str(THREADS),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", out.name]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                print(f"stepc {name}: {' '.join(cmd)} failed:\n{proc.stderr}", file=sys.stderr)
                continue
            results[name] = json.load(open(out.name))["fused_ms_per_step"]
    return results


def check(stepc, folder, imported, name):
    """Largest |stepc - ort| relative to max|ort| on the export's input."""
    import numpy as np

    x = os.path.join(folder, f"{name}_x.npy")
    expected = ort_session(os.path.join(folder, f"{name}.onnx")).run(None, {"x": np.load(x)})[0]
    outputs = os.path.join(folder, f"{name}_out")
    subprocess.run([stepc, "run", os.path.join(imported, f"{name}.sg"), "--backend", "cpu",
                    "--threads", str(THREADS), "--input", f"x={x}", "--save-outputs", outputs],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = np.load(os.path.join(outputs, "y.npy"))
    if got.shape != expected.shape:
        raise RuntimeError(f"{name}: stepc's output is {got.shape}, ORT's {expected.shape}")
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stepc", default="build/bin/stepc", help="the stepc binary")
    parser.add_argument("--max-rel-err", type=float, default=1e-4,
                        help="exit 1 when stepc's output differs from ORT's by more (a fast wrong "
                        "answer is no figure)")
    parser.add_argument("--stepc-base", help="another stepc binary (say, before a change), "
                        "timed in the same rounds as a column of its own")
    parser.add_argument("--only", default=",".join(MODELS),
                        help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--mlp-batch", help="comma-separated batches at which to run the mlp "
                        f"model (default {MLP_BATCH})")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="export the models into this folder and keep them, "
                        "each stepc's imports in FOLDER/stepc and FOLDER/stepc-base (for `stepc "
                        "bench --per-kernel` and `--fusion-report`)")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in MODELS and not mlp_batch(n):
            parser.error(f"unknown model '{n}'; the models are: {', '.join(MODELS)} "
                         "(and mlp-bN, the mlp at batch N)")
    if args.mlp_batch:
        try:
            batches = [int(b) for b in args.mlp_batch.split(",")]
        except ValueError:
            batches = [0]
        if not batches or min(batches) <= 0:
            parser.error(f"--mlp-batch {args.mlp_batch}: expected positive integers, comma-separated")
        if "mlp" not in names:
            parser.error(f"--mlp-batch {args.mlp_batch} sets the mlp's batches, but --only "
                         f"{args.only} has no mlp")
        expanded = []
        for n in names:
            expanded += [mlp_name(b) for b in batches] if n == "mlp" else [n]
        names = list(dict.fromkeys(expanded))

    if args.worker:
        json.dump(ort_worker(args.worker, names, args.warmup, args.steps), open(args.out, "w"))
        return

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        stepcs = {"stepc": args.stepc}
        if args.stepc_base:
            stepcs["stepc-base"] = args.stepc_base
        # Each stepc imports the models itself (into a folder of its own):
        # how it imports is part of what is compared.
        imported = {column: os.path.join(folder, column) for column in stepcs}
        for name in names:
            path = export(name, folder)
            for column, binary in stepcs.items():
                os.makedirs(imported[column], exist_ok=True)
                subprocess.run([binary, "import-onnx", path, "-o",
                                os.path.join(imported[column], f"{name}.sg")], check=True)
        errors = {name: check(args.stepc, folder, imported["stepc"], name) for name in names}
        rounds = {c: {n: [] for n in names} for c in ["onnxruntime", *stepcs]}
        for _ in range(args.rounds):
            for n, ms in run_ort(folder, names, args).items():
                rounds["onnxruntime"][n].append(ms)
            for column, binary in stepcs.items():
                for n, ms in run_stepc(binary, imported[column], names, args).items():
                    rounds[column][n].append(ms)

    best = {c: {n: min(v) if v else None for n, v in r.items()} for c, r in rounds.items()}
    load = os.getloadavg()
    print(f"median ms per forward, {THREADS} threads, {args.steps} calls after {args.warmup} "
          f"warm-up, lowest of {args.rounds} rounds; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    columns = [c for c in best if c != "onnxruntime"]
    print(f"| {'model':<28} | {'onnxruntime':>11} |" +
          "".join(f" {c:>10} | {c + '/ort':>14} |" for c in columns) + f" {'max rel err':>11} |")
    print("|" + "-" * 30 + "|" + "-" * 13 + "|" + "-" * 12 + "|" + "-" * 16 + "|" +
          ("-" * 12 + "|" + "-" * 16 + "|") * (len(columns) - 1) + "-" * 13 + "|")
    for n in names:
        o = best["onnxruntime"][n]
        cell = lambda v: f"{v:.3f}" if v is not None else "failed"
        ratio = lambda v: f"{v / o:.2f}x" if o and v else "-"
        print(f"| {label(n):<28} | {cell(o):>11} |" +
              "".join(f" {cell(best[c][n]):>10} | {ratio(best[c][n]):>14} |" for c in columns) +
              f" {errors[n]:>11.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": THREADS, "steps": args.steps, "warmup": args.warmup,
                       "rounds": args.rounds, "load_average": load, "ms_per_forward": best,
                       "ms_per_forward_each_round": rounds, "max_rel_error": errors}, f, indent=2)
    wrong = [n for n in names if errors[n] > args.max_rel_err]
    if wrong:
        sys.exit(f"stepc's output differs from ONNX Runtime's by more than {args.max_rel_err:g} "
                 f"(relative) for: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
