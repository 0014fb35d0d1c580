#!/usr/bin/env python3
"""Write a GPT-style language model as a .sg graph.

Pre-norm transformer blocks (causal multi-head attention, GELU MLP of four
times the width), learned positions, a final layer norm and an untied output
layer; the loss is cross-entropy over next tokens. The benchmarks and the
compile-time figures use it to get transformers of any depth and width:

    tools/bench/make_gpt.py --layers 4 --width 256 --heads 4 --tokens 64 \
        --batch 16 --vocab 64 -o /tmp/gpt4.sg
    build/bin/stepc bench /tmp/gpt4.sg --train-step adam --per-kernel
"""
import argparse
import sys


def gpt(layers, width, heads, tokens, batch, vocab):
    if width % heads:
        sys.exit(f"make_gpt.py: --width {width} is not a multiple of --heads {heads}")
    d, t, b, h = width, tokens, batch, heads
    hd = d // h
    lines = [
        f"# GPT-style LM: {layers} layers, width {d}, {h} heads, {t} tokens,",
        f"# batch {b}, vocabulary {vocab} (tools/bench/make_gpt.py).",
        f"graph gpt{layers} {{",
        f"  input %tokens : i32[{b},{t}]",
        f"  input %targets : i32[{b * t}]",
        f"  param %embed : f32[{vocab},{d}] = normal(mean=0.0, std=0.02, seed=1)",
        f"  param %pos : f32[{t},{d}] = normal(mean=0.0, std=0.02, seed=2)",
    ]
    seed = 3
    body = [
        "  %tok = gather(%embed, %tokens) {axis=0}",
        "  %x0 = add(%tok, %pos)",
    ]
    for l in range(layers):
        p = f"l{l}_"
        for name, shape, init in [
            ("ln1_g", f"[{d}]", "ones()"), ("ln1_b", f"[{d}]", "zeros()"),
            ("wq", f"[{d},{d}]", None), ("wk", f"[{d},{d}]", None),
            ("wv", f"[{d},{d}]", None), ("wo", f"[{d},{d}]", None),
            ("ln2_g", f"[{d}]", "ones()"), ("ln2_b", f"[{d}]", "zeros()"),
            ("w_up", f"[{d},{4 * d}]", None), ("b_up", f"[{4 * d}]", "zeros()"),
            ("w_down", f"[{4 * d},{d}]", None), ("b_down", f"[{d}]", "zeros()"),
        ]:
            if init is None:
                init = f"xavier_uniform(seed={seed})"
                seed += 1
            lines.append(f"  param %{p}{name} : f32{shape} = {init}")
        x, nx = f"%x{l}", f"%x{l + 1}"
        body += [
            f"  %{p}n1 = layer_norm({x}, %{p}ln1_g, %{p}ln1_b) {{eps=1e-05}}",
        ]
        for m in "qkv":
            body += [
                f"  %{p}{m} = matmul(%{p}n1, %{p}w{m})",
                f"  %{p}{m}4 = reshape(%{p}{m}) {{shape=[{b},{t},{h},{hd}]}}",
                f"  %{p}{m}h = transpose(%{p}{m}4) {{perm=[0,2,1,3]}}",
            ]
        body += [
            f"  %{p}heads = attention(%{p}qh, %{p}kh, %{p}vh) {{causal=1}}",
            f"  %{p}merged4 = transpose(%{p}heads) {{perm=[0,2,1,3]}}",
            f"  %{p}merged = reshape(%{p}merged4) {{shape=[{b},{t},{d}]}}",
            f"  %{p}attn = matmul(%{p}merged, %{p}wo)",
            f"  %{p}h = add({x}, %{p}attn)",
            f"  %{p}n2 = layer_norm(%{p}h, %{p}ln2_g, %{p}ln2_b) {{eps=1e-05}}",
            f"  %{p}up = linear(%{p}n2, %{p}w_up, %{p}b_up)",
            f"  %{p}act = gelu(%{p}up)",
            f"  %{p}down = linear(%{p}act, %{p}w_down, %{p}b_down)",
            f"  {nx} = add(%{p}h, %{p}down)",
        ]
    lines += [
        f"  param %lnf_g : f32[{d}] = ones()",
        f"  param %lnf_b : f32[{d}] = zeros()",
        f"  param %w_out : f32[{d},{vocab}] = xavier_uniform(seed={seed})",
        "",
    ]
    body += [
        f"  %nf = layer_norm(%x{layers}, %lnf_g, %lnf_b) {{eps=1e-05}}",
        f"  %flat = reshape(%nf) {{shape=[{b * t},{d}]}}",
        "  %logits = matmul(%flat, %w_out)",
        "  %loss = cross_entropy(%logits, %targets)",
        "",
        "  output loss = %loss",
        "}",
    ]
    return "\n".join(lines + body) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args()
    text = gpt(a.layers, a.width, a.heads, a.tokens, a.batch, a.vocab)
    if a.output == "-":
        sys.stdout.write(text)
    else:
        with open(a.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
