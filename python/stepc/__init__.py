"""stepc: a static-graph compiler for machine-learning models.

    import numpy as np, stepc
    g = stepc.load("examples/mlp.sg")
    step = stepc.compile(g.train_step(loss="loss", optimizer="adam", lr=1e-3), backend="cpu")
    out = step(x=np.zeros((128, 784), np.float32), y=np.zeros(128, np.int32))

Graphs come from .sg files (load, parse), ONNX models (import_onnx), a
GraphBuilder, or a traced Python function (jit). Errors are stepc.Error with
the message and the place it points at (file, line, col).
"""
from ._graph import (
    OPTIMIZERS, SCHEDULES, Error, Graph, GraphBuilder, Init, Optimizer, Schedule, Value,
    abs, add, all_reduce, argmax, attention, avg_pool2d, broadcast_to, cast, concat, conv2d,
    cos, cross_entropy, div, dropout, eq, erf, exp, gather, ge, gelu, grad, gt, import_onnx,
    layer_norm, le, leaky_relu, linear, load, log, log_softmax, lt, matmul, max, max_pool2d,
    maximum, mean, min, minimum, mse, mul, ne, neg, one_hot, pad, parse, pow, relu, reshape,
    rsqrt, select, sigmoid, sign, sin, slice, softmax, sqrt, square, sub, sum, tanh, transpose,
)
from ._step import BACKENDS, Jit, Step, bench, compile, jit

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "BACKENDS", "Error", "Graph", "GraphBuilder", "Init", "Optimizer",
    "Schedule", "Value", "Step", "Jit", "load", "parse", "import_onnx", "compile", "jit", "grad",
    "bench",
    "abs", "add", "all_reduce", "argmax", "attention", "avg_pool2d", "broadcast_to", "cast",
    "concat", "conv2d", "cos", "cross_entropy", "div", "dropout", "eq", "erf", "exp", "gather",
    "ge", "gelu", "gt", "layer_norm", "le", "leaky_relu", "linear", "log", "log_softmax", "lt",
    "matmul", "max", "max_pool2d", "maximum", "mean", "min", "minimum", "mse", "mul", "ne", "neg",
    "one_hot", "pad", "pow", "relu", "reshape", "rsqrt", "select", "sigmoid", "sign", "sin",
    "slice", "softmax", "sqrt", "square", "sub", "sum", "tanh", "transpose",
]
