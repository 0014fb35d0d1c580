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
         positions, a final layer norm, an untied output layer;
         `--gpt-tokens 128,256,512` runs it at each of those token counts
         instead, at batch 1024 // tokens (at least 1: the same 1024 rows
         through every projection, so only attention grows), as gpt,
         gpt-t256 and gpt-t512 (the name gpt-tN also works in --only)

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
import typing

from peers import TorchGpt

THREADS = 2
MODELS = ["mlp", "cnn", "gpt"]
MLP_BATCH = 256
GPT = dict(layers=4, width=256, heads=4, vocab=64)
GPT_TOKENS = 128
# Batch x tokens at every size of the gpt: the same rows through each
# projection (the same matmul FLOPs), so only attention grows with the tokens.
GPT_ROWS = 1024


class Sized(typing.NamedTuple):
    """A model that an option runs at several sizes: --mlp-batch runs mlp-bN."""
    option: str
    letter: str  # of the name's suffix: mlp-b32
    default: int  # the size of the plain name (mlp), its figures so far
    sizes: str  # what the option lists, for its messages


SIZED = {"mlp": Sized("--mlp-batch", "b", MLP_BATCH, "batches"),
         "gpt": Sized("--gpt-tokens", "t", GPT_TOKENS, "token counts")}


def sized_name(model, size):
    """The name of a sized model at a size: the plain name at its default size, else mlp-bN, gpt-tN."""
    sized = SIZED[model]
    return model if size == sized.default else f"{model}-{sized.letter}{size}"


def model_size(name):
    """(model, size) of a sized model's name (mlp, mlp-b32, gpt-t256), or None for another name."""
    for model, sized in SIZED.items():
        if name == model:
            return model, sized.default
        suffix = name.removeprefix(f"{model}-{sized.letter}")
        if suffix != name and suffix.isdigit() and int(suffix) > 0:
            return model, int(suffix)
    return None


def expand_sizes(parser, names, model, value, only):
    """names with the sized model replaced by its name at each size that its
    option's value (comma-separated) lists; names as they are without the option."""
    sized = SIZED[model]
    if value is None:
        return names
    try:
        sizes = [int(s) for s in value.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) <= 0:
        parser.error(f"{sized.option} {value}: expected positive integers, comma-separated")
    if model not in names:
        parser.error(f"{sized.option} {value} sets the {model}'s {sized.sizes}, but --only {only} "
                     f"has no {model}")
    expanded = []
    for n in names:
        expanded += [sized_name(model, s) for s in sizes] if n == model else [n]
    return list(dict.fromkeys(expanded))


def gpt_batch(tokens):
    return max(1, GPT_ROWS // tokens)


def label(name):
    if name == "cnn":
        return "convnet 2 conv3x3, b32"
    model, size = model_size(name)
    if model == "mlp":
        return f"MLP 784-1024-1024-10, b{size}"
    return f"GPT {GPT['layers']}x{GPT['width']}, {size} tok, b{gpt_batch(size)}"


def build_model(name):
    """(module, example input) for a model, weights from a fixed seed."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    if name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(784, 10))
        return model, torch.randn(32, 1, 28, 28)
    model, size = model_size(name)
    if model == "mlp":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                              nn.Linear(1024, 10))
        return model, torch.randn(size, 784)
    batch = gpt_batch(size)
    return (TorchGpt(**GPT, tokens=size, batch=batch, written_out=True),
            torch.randint(0, GPT["vocab"], (batch, size)))


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
    parser.add_argument("--gpt-tokens", help="comma-separated token counts at which to run the gpt "
                        f"model, each at batch {GPT_ROWS} // tokens (default {GPT_TOKENS})")
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
        if n not in MODELS and not model_size(n):
            parser.error(f"unknown model '{n}'; the models are: {', '.join(MODELS)} "
                         "(and mlp-bN, the mlp at batch N; gpt-tN, the gpt at N tokens)")
    names = expand_sizes(parser, names, "mlp", args.mlp_batch, args.only)
    names = expand_sizes(parser, names, "gpt", args.gpt_tokens, args.only)

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
