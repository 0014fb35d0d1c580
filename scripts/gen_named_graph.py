#!/usr/bin/env python3
"""Writes a .sg graph with N named values (a chain of unary and binary ops),
for timing `stepc check` on large files: gen_named_graph.py N > big.sg"""
import sys

n = int(sys.argv[1])
out = sys.stdout
out.write("graph big {\n  input %x : f32[4,8]\n  param %w : f32[4,8] = zeros()\n")
prev = "x"
for i in range(n):
    name = f"v{i}"
    if i % 3 == 0:
        out.write(f"  %{name} = add(%{prev}, %w)\n")
    elif i % 3 == 1:
        out.write(f"  %{name} = relu(%{prev})\n")
    else:
        out.write(f"  %{name} = mul(%{prev}, %x) : f32[4,8]\n")
    prev = name
out.write(f"  output y = %{prev}\n}}\n")
