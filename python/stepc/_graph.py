"""Graphs: building them with operators, loading them, differentiating them."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _stepc

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class Error(Exception):
    """Anything a user can fix: a bad graph, input, file or option.

    ``message`` is the whole text ("mlp.py:9:5: error: matmul: inner
    dimensions differ: [128,784] x [512,10]"); ``file``, ``line`` and ``col``
    are where it points (None when the message names no place).
    """

    _LOCATED = re.compile(r"^(?P<file>[^\n]*?):(?P<line>\d+):(?P<col>\d+): error: ")

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        match = self._LOCATED.match(message)
        self.file: Optional[str] = match["file"] if match else None
        self.line: Optional[int] = int(match["line"]) if match else None
        self.col: Optional[int] = int(match["col"]) if match else None

    @property
    def location(self) -> Optional[str]:
        """"file:line:col", or None."""
        return f"{self.file}:{self.line}:{self.col}" if self.file is not None else None


Error.__module__ = "stepc"
_stepc._set_error_class(Error)  # type: ignore[attr-defined]  # private: not in _stepc.pyi


def _caller() -> Tuple[str, int, int]:
    """The user's line that is building a node: the first frame outside stepc."""
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame = frame.f_back
    if frame is None:
        return ("<python>", 0, 0)
    col = 0
    positions = getattr(frame.f_code, "co_positions", None)  # Python 3.11+
    if positions is not None:
        try:
            start = list(positions())[frame.f_lasti // 2]
            col = (start[2] or 0) + 1
        except (IndexError, TypeError):
            col = 0
    return (frame.f_code.co_filename, frame.f_lineno, col)


def _dtype_name(dtype: Any) -> str:
    """"f32" from "f32", "float32", np.float32, np.dtype(...); "bf16" from
    "bf16", "bfloat16" and ml_dtypes.bfloat16."""
    if isinstance(dtype, str) and (dtype in NUMPY_DTYPES or dtype == "bf16"):
        return dtype
    expected = ", ".join([*NUMPY_DTYPES, "bf16"])
    try:
        kind = np.dtype(dtype)
    except TypeError:
        if dtype == "bfloat16":
            return "bf16"
        raise Error(f"unknown dtype {dtype!r}; expected one of {expected}") from None
    if kind.name == "bfloat16":
        return "bf16"
    names = {np.dtype(numpy_type): name for name, numpy_type in NUMPY_DTYPES.items()}
    if kind not in names:
        raise Error(f"dtype {kind} is not supported; expected one of {expected}")
    return names[kind]


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a stepc dtype. NumPy has no bfloat16 of its own:
    bf16 arrays are ml_dtypes' bfloat16 (what JAX uses), the same bits."""
    if name != "bf16":
        return np.dtype(NUMPY_DTYPES[name])
    try:
        import ml_dtypes  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise Error("bf16 arrays need the ml_dtypes package (pip install ml_dtypes): "
                    "NumPy has no bfloat16 of its own") from None
    return np.dtype(ml_dtypes.bfloat16)


NUMPY_DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i32": np.int32,
                "i64": np.int64, "i8": np.int8, "u8": np.uint8, "i16": np.int16,
                "u16": np.uint16, "u32": np.uint32, "u64": np.uint64, "bool": np.bool_}


# --- Values and the builder ----------------------------------------------------

Operand = Union["Value", float, int]


class Value:
    """A value of a graph being built. Arithmetic operators build nodes:
    ``relu(x @ w + b).sum()``; a plain number becomes a constant of the
    other side's dtype."""

    __slots__ = ("_v", "_builder")

    def __init__(self, value: _stepc.Value, builder: "GraphBuilder"):
        self._v = value
        self._builder = builder  # keeps the C++ builder alive

    @property
    def dtype(self) -> str:
        return self._v.dtype

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._v.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"stepc.Value({self.dtype}{list(self.shape)})"

    def __add__(self, other: Operand) -> "Value": return add(self, other)
    def __radd__(self, other: Operand) -> "Value": return add(other, self)
    def __sub__(self, other: Operand) -> "Value": return sub(self, other)
    def __rsub__(self, other: Operand) -> "Value": return sub(other, self)
    def __mul__(self, other: Operand) -> "Value": return mul(self, other)
    def __rmul__(self, other: Operand) -> "Value": return mul(other, self)
    def __truediv__(self, other: Operand) -> "Value": return div(self, other)
    def __rtruediv__(self, other: Operand) -> "Value": return div(other, self)
    def __pow__(self, other: Operand) -> "Value": return pow(self, other)
    def __rpow__(self, other: Operand) -> "Value": return pow(other, self)
    def __matmul__(self, other: "Value") -> "Value": return matmul(self, other)
    def __rmatmul__(self, other: "Value") -> "Value": return matmul(other, self)
    def __neg__(self) -> "Value": return neg(self)
    def __abs__(self) -> "Value": return abs(self)
    def __lt__(self, other: Operand) -> "Value": return lt(self, other)
    def __le__(self, other: Operand) -> "Value": return le(self, other)
    def __gt__(self, other: Operand) -> "Value": return gt(self, other)
    def __ge__(self, other: Operand) -> "Value": return ge(self, other)
    # == and != stay Python's identity tests (Values are dict keys); use
    # stepc.eq / stepc.ne for the elementwise comparisons.
    __hash__ = object.__hash__

    def sum(self, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> "Value":
        return sum(self, axis, keepdims)

    def mean(self, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> "Value":
        return mean(self, axis, keepdims)

    def max(self, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> "Value":
        return max(self, axis, keepdims)

    def min(self, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> "Value":
        return min(self, axis, keepdims)

    def reshape(self, *shape: Any) -> "Value":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def astype(self, dtype: Any) -> "Value":
        return cast(self, dtype)

    @property
    def T(self) -> "Value":
        return transpose(self)


@dataclass(frozen=True)
class Init:
    """A param initializer; counter-based, so a seed gives the same values
    everywhere. ``kind``: zeros, ones, constant, normal, uniform, he_normal,
    he_uniform, xavier_normal, xavier_uniform."""

    kind: str = "zeros"
    a: float = 0.0  # value | mean | low
    b: float = 0.0  # std | high
    seed: int = 0

    @staticmethod
    def zeros() -> "Init": return Init("zeros")
    @staticmethod
    def ones() -> "Init": return Init("ones")
    @staticmethod
    def constant(value: float) -> "Init": return Init("constant", value)
    @staticmethod
    def normal(mean: float = 0.0, std: float = 1.0, seed: int = 0) -> "Init":
        return Init("normal", mean, std, seed)
    @staticmethod
    def uniform(low: float = 0.0, high: float = 1.0, seed: int = 0) -> "Init":
        return Init("uniform", low, high, seed)
    @staticmethod
    def he_normal(seed: int = 0) -> "Init": return Init("he_normal", seed=seed)
    @staticmethod
    def he_uniform(seed: int = 0) -> "Init": return Init("he_uniform", seed=seed)
    @staticmethod
    def xavier_normal(seed: int = 0) -> "Init": return Init("xavier_normal", seed=seed)
    @staticmethod
    def xavier_uniform(seed: int = 0) -> "Init": return Init("xavier_uniform", seed=seed)


class GraphBuilder:
    """Builds a graph node by node::

        b = stepc.GraphBuilder("mlp")
        x = b.input("x", "f32", (128, 784))
        w = b.param("w", "f32", (784, 10), stepc.Init.he_uniform(seed=1))
        b.output("loss", stepc.cross_entropy(x @ w, b.input("y", "i32", (128,))))
        g = b.finish()

    Every op checks shapes as it is built; a mistake raises stepc.Error naming
    the Python line that built it.
    """

    def __init__(self, name: str = "main"):
        self._b = _stepc.Builder(name)

    def _wrap(self, v: _stepc.Value) -> Value:
        return Value(v, self)

    def input(self, name: str, dtype: Any, shape: Sequence[int]) -> Value:
        return self._wrap(self._b.input(name, _dtype_name(dtype), list(shape), _caller()))

    def param(self, name: str, dtype: Any, shape: Sequence[int],
              init: Union[Init, str] = "zeros") -> Value:
        if isinstance(init, str):
            init = Init(init)
        return self._wrap(self._b.param(name, _dtype_name(dtype), list(shape), init.kind,
                                        init.a, init.b, init.seed, _caller()))

    def constant(self, value: Any, dtype: Any = None, shape: Optional[Sequence[int]] = None) -> Value:
        """A filled constant (a number and a shape) or one holding an array's values."""
        if np.ndim(value) == 0:
            name = _dtype_name(dtype if dtype is not None else np.float32)
            return self._wrap(self._b.constant(float(value), name, list(shape or ()), _caller()))
        array = np.asarray(value)
        name = _dtype_name(dtype if dtype is not None else array.dtype)
        return self._wrap(self._b.constant_data(array.astype(np.float64).ravel().tolist(), name,
                                                list(array.shape), _caller()))

    def iota(self, dtype: Any, shape: Sequence[int], axis: int) -> Value:
        return self._wrap(self._b.iota(_dtype_name(dtype), list(shape), axis, _caller()))

    def output(self, name: str, value: Value) -> None:
        self._b.output(name, _value(value))

    def update(self, param: Value, value: Value) -> None:
        """After each step, ``param`` takes ``value``."""
        self._b.update(_value(param), _value(value))

    def finish(self) -> "Graph":
        """Verifies and returns the graph; the builder is empty afterwards."""
        return Graph(self._b.finish())

    def __repr__(self) -> str:
        return self._b.text()


def _value(x: Any) -> _stepc.Value:
    if not isinstance(x, Value):
        raise Error(f"expected a stepc.Value, got {type(x).__name__}")
    return x._v


def _binary(fn: Any, a: Operand, b: Operand) -> Value:
    """Numbers become scalar constants of the other operand's dtype."""
    where = _caller()
    if isinstance(a, Value) and isinstance(b, Value):
        return Value(fn(a._v, b._v, where), a._builder)
    if isinstance(a, Value) and not isinstance(b, Value):
        return Value(fn(a._v, _stepc.scalar_like(a._v, float(b), where), where), a._builder)
    if isinstance(b, Value) and not isinstance(a, Value):
        return Value(fn(_stepc.scalar_like(b._v, float(a), where), b._v, where), b._builder)
    raise Error(f"expected a stepc.Value operand, got {type(a).__name__} and {type(b).__name__}")


def _unary(fn: Any, x: Value, *args: Any) -> Value:
    return Value(fn(_value(x), *args, _caller()), x._builder)


def _axes(axis: Union[int, Sequence[int], None]) -> Optional[List[int]]:
    """None means every axis; an empty sequence means none (as in .sg)."""
    if axis is None:
        return None
    return [axis] if isinstance(axis, int) else list(axis)


# --- Ops: the C++ builder's functions, one each --------------------------------

def neg(x: Value) -> Value: return _unary(_stepc.neg, x)
def abs(x: Value) -> Value: return _unary(_stepc.abs, x)
def exp(x: Value) -> Value: return _unary(_stepc.exp, x)
def log(x: Value) -> Value: return _unary(_stepc.log, x)
def sqrt(x: Value) -> Value: return _unary(_stepc.sqrt, x)
def rsqrt(x: Value) -> Value: return _unary(_stepc.rsqrt, x)
def square(x: Value) -> Value: return _unary(_stepc.square, x)
def tanh(x: Value) -> Value: return _unary(_stepc.tanh, x)
def sigmoid(x: Value) -> Value: return _unary(_stepc.sigmoid, x)
def relu(x: Value) -> Value: return _unary(_stepc.relu, x)
def sin(x: Value) -> Value: return _unary(_stepc.sin, x)
def cos(x: Value) -> Value: return _unary(_stepc.cos, x)
def sign(x: Value) -> Value: return _unary(_stepc.sign, x)
def erf(x: Value) -> Value: return _unary(_stepc.erf, x)
def gelu(x: Value) -> Value:
    """tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"""
    return _unary(_stepc.gelu, x)
def cast(x: Value, dtype: Any) -> Value: return _unary(_stepc.cast, x, _dtype_name(dtype))

def add(a: Operand, b: Operand) -> Value: return _binary(_stepc.add, a, b)
def sub(a: Operand, b: Operand) -> Value: return _binary(_stepc.sub, a, b)
def mul(a: Operand, b: Operand) -> Value: return _binary(_stepc.mul, a, b)
def div(a: Operand, b: Operand) -> Value: return _binary(_stepc.div, a, b)
def pow(a: Operand, b: Operand) -> Value: return _binary(_stepc.pow, a, b)
def maximum(a: Operand, b: Operand) -> Value: return _binary(_stepc.maximum, a, b)
def minimum(a: Operand, b: Operand) -> Value: return _binary(_stepc.minimum, a, b)
def eq(a: Operand, b: Operand) -> Value: return _binary(_stepc.eq, a, b)
def ne(a: Operand, b: Operand) -> Value: return _binary(_stepc.ne, a, b)
def lt(a: Operand, b: Operand) -> Value: return _binary(_stepc.lt, a, b)
def le(a: Operand, b: Operand) -> Value: return _binary(_stepc.le, a, b)
def gt(a: Operand, b: Operand) -> Value: return _binary(_stepc.gt, a, b)
def ge(a: Operand, b: Operand) -> Value: return _binary(_stepc.ge, a, b)
def matmul(a: Value, b: Value) -> Value: return _binary(_stepc.matmul, a, b)

def select(cond: Value, a: Value, b: Value) -> Value:
    return Value(_stepc.select(_value(cond), _value(a), _value(b), _caller()), cond._builder)

def sum(x: Value, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> Value:
    """Over ``axis`` (an int or several; None: all)."""
    return _unary(_stepc.sum, x, _axes(axis), keepdims)
def mean(x: Value, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> Value:
    return _unary(_stepc.mean, x, _axes(axis), keepdims)
def max(x: Value, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> Value:
    return _unary(_stepc.max, x, _axes(axis), keepdims)
def min(x: Value, axis: Union[int, Sequence[int], None] = None, keepdims: bool = False) -> Value:
    return _unary(_stepc.min, x, _axes(axis), keepdims)
def argmax(x: Value, axis: int = -1, keepdims: bool = False) -> Value:
    return _unary(_stepc.argmax, x, axis, keepdims)

def transpose(x: Value, perm: Optional[Sequence[int]] = None) -> Value:
    """``perm`` None swaps the last two axes."""
    if perm is None:
        return _unary(_stepc.transpose_last2, x)
    return _unary(_stepc.transpose, x, list(perm))
def reshape(x: Value, shape: Sequence[int]) -> Value: return _unary(_stepc.reshape, x, list(shape))
def broadcast_to(x: Value, shape: Sequence[int]) -> Value:
    return _unary(_stepc.broadcast_to, x, list(shape))
def slice(x: Value, starts: Sequence[int], limits: Sequence[int],
          strides: Optional[Sequence[int]] = None) -> Value:
    return _unary(_stepc.slice, x, list(starts), list(limits), list(strides or []))
def concat(xs: Sequence[Value], axis: int = 0) -> Value:
    if not xs:
        raise Error("concat: expected at least one operand, got none")
    return Value(_stepc.concat([_value(x) for x in xs], axis, _caller()), xs[0]._builder)
def pad(x: Value, low: Sequence[int], high: Sequence[int], value: float = 0.0) -> Value:
    return _unary(_stepc.pad, x, list(low), list(high), value)
def gather(data: Value, indices: Value, axis: int = 0) -> Value:
    return Value(_stepc.gather(_value(data), _value(indices), axis, _caller()), data._builder)
def one_hot(indices: Value, depth: int, dtype: Any = "f32") -> Value:
    return _unary(_stepc.one_hot, indices, depth, _dtype_name(dtype))

def conv2d(x: Value, w: Value, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
           dilation: Sequence[int] = (1, 1), groups: int = 1) -> Value:
    """NCHW input, OIHW weights."""
    return Value(_stepc.conv2d(_value(x), _value(w), list(stride), list(padding), list(dilation),
                               groups, _caller()), x._builder)
def max_pool2d(x: Value, kernel: Sequence[int] = (2, 2), stride: Sequence[int] = (2, 2),
               padding: Sequence[int] = (0, 0)) -> Value:
    return _unary(_stepc.max_pool2d, x, list(kernel), list(stride), list(padding))
def avg_pool2d(x: Value, kernel: Sequence[int] = (2, 2), stride: Sequence[int] = (2, 2),
               padding: Sequence[int] = (0, 0), count_include_pad: bool = True) -> Value:
    return _unary(_stepc.avg_pool2d, x, list(kernel), list(stride), list(padding),
                  count_include_pad)
def dropout(x: Value, seed: Value, rate: float) -> Value:
    """Zeroes each element with probability ``rate``; ``seed`` is an i64 scalar value."""
    return Value(_stepc.dropout(_value(x), _value(seed), rate, _caller()), x._builder)
def all_reduce(x: Value, reduction: str = "mean") -> Value:
    return _unary(_stepc.all_reduce, x, reduction)

# Composites: built from the ops above.
def linear(x: Value, w: Value, b: Optional[Value] = None) -> Value:
    return Value(_stepc.linear(_value(x), _value(w), None if b is None else _value(b), _caller()),
                 x._builder)
def leaky_relu(x: Value, slope: float = 0.01) -> Value: return _unary(_stepc.leaky_relu, x, slope)
def softmax(x: Value, axis: int = -1) -> Value: return _unary(_stepc.softmax, x, axis)
def log_softmax(x: Value, axis: int = -1) -> Value: return _unary(_stepc.log_softmax, x, axis)
def cross_entropy(logits: Value, labels: Value) -> Value:
    """Mean over the batch of -log softmax(logits)[label]; logits [N,C], labels integer [N]."""
    return _binary(_stepc.cross_entropy, logits, labels)
def mse(prediction: Value, target: Value) -> Value: return _binary(_stepc.mse, prediction, target)
def layer_norm(x: Value, gamma: Value, beta: Value, eps: float = 1e-5) -> Value:
    return Value(_stepc.layer_norm(_value(x), _value(gamma), _value(beta), eps, _caller()),
                 x._builder)
def attention(q: Value, k: Value, v: Value, causal: bool = False) -> Value:
    return Value(_stepc.attention(_value(q), _value(k), _value(v), causal, _caller()), q._builder)


# --- Optimizers and schedules --------------------------------------------------

# The names, from the C++ tables (include/stepc/train.h).
OPTIMIZERS: Tuple[str, ...] = tuple(_stepc.optimizers())
SCHEDULES: Tuple[str, ...] = tuple(_stepc.schedules())


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule (PyTorch's StepLR, ExponentialLR,
    CosineAnnealingLR); t counts the steps taken before this one."""

    kind: str = "constant"
    step_size: int = 1      # step: multiply by gamma every step_size steps
    gamma: float = 0.1      # step, exponential
    total_steps: int = 1    # cosine: T_max
    min_lr: float = 0.0     # cosine: eta_min


@dataclass(frozen=True)
class Optimizer:
    """An optimizer with torch.optim's hyper-parameters; unset ones keep
    their defaults (AdamW's weight decay is 0.01). ``lr`` None: the step
    takes the learning rate as the f32 input ``lr``."""

    kind: str = "sgd"
    lr: Optional[float] = None
    schedule: Union[Schedule, str] = "constant"
    hyper: Mapping[str, float] = field(default_factory=dict)


# --- Graphs ----------------------------------------------------------------------

Signature = List[Tuple[str, Tuple[str, Tuple[int, ...]]]]


class Graph:
    """A verified static graph: inputs, params, nodes and named outputs."""

    def __init__(self, graph: _stepc.Graph, params: Optional[Dict[str, np.ndarray]] = None):
        self._g = graph
        # Values for params that their initializers do not give (an imported
        # ONNX model's weights); compile() loads them.
        self.param_values: Dict[str, np.ndarray] = dict(params or {})

    @property
    def name(self) -> str:
        return self._g.name

    @property
    def inputs(self) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
        """name -> (dtype, shape)"""
        return dict(self._g.inputs)

    @property
    def params(self) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
        return dict(self._g.params)

    @property
    def outputs(self) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
        return dict(self._g.outputs)

    @property
    def text(self) -> str:
        """The canonical .sg text."""
        return self._g.text()

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return (f"stepc.Graph({self.name!r}, inputs={list(self.inputs)}, "
                f"params={len(self.params)}, outputs={list(self.outputs)})")

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the .sg text atomically (as stepc's C++ writers do)."""
        self._g.save(os.fspath(path))

    def initial_params(self) -> Dict[str, np.ndarray]:
        """Every param's value from its initializer (or param_values)."""
        values = self._g.initial_params()
        values.update(self.param_values)
        return values

    def random_inputs(self, seed: int = 0) -> Dict[str, np.ndarray]:
        """Seeded random values for every input (valid class indices for labels)."""
        return self._g.random_inputs(seed)

    def grad(self, loss: str, wrt: Optional[Iterable[str]] = None) -> "Graph":
        """A copy whose outputs add ``grad_<name>`` = d loss / d name for every
        name in ``wrt`` (default: every floating-point param)."""
        graph, warnings = _stepc.grad(self._g, loss, list(wrt or []))
        for warning in warnings:
            print(f"stepc: {warning}", file=sys.stderr)
        return Graph(graph, self.param_values)

    def train_step(self, loss: str = "loss", optimizer: Union[str, Optimizer] = "adam",
                   lr: Optional[float] = None, schedule: Union[Schedule, str, None] = None,
                   mixed_precision: Optional[str] = None, **hyper: float) -> "Graph":
        """The training step: loss, gradients and the optimizer's update of
        every floating-point param in one graph. ``optimizer``: one of
        OPTIMIZERS or an Optimizer; ``hyper``: momentum, alpha, beta1, beta2,
        eps, weight_decay, clip_norm. Without ``lr`` the step takes an f32
        input ``lr``. ``mixed_precision``: "bf16" or "f16" computes in half
        with f32 master weights and optimizer state (f16 with dynamic loss
        scaling: params ``loss_scale`` and ``loss_scale.good_steps``)."""
        if isinstance(optimizer, Optimizer):
            lr = optimizer.lr if lr is None else lr
            schedule = optimizer.schedule if schedule is None else schedule
            hyper = {**optimizer.hyper, **hyper}
            optimizer = optimizer.kind
        if schedule is None:
            schedule = Schedule()
        if isinstance(schedule, str):
            schedule = Schedule(schedule)
        graph = _stepc.train_step(self._g, loss, optimizer, lr, dict(hyper), schedule.kind,
                                  schedule.step_size, schedule.gamma, schedule.total_steps,
                                  schedule.min_lr, mixed_precision or "")
        return Graph(graph, self.param_values)


def load(path: Union[str, os.PathLike]) -> Graph:
    """Reads a .sg file (or an .onnx model, through import_onnx)."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        return import_onnx(path)
    return Graph(_stepc.load(path))


def parse(text: str, filename: str = "<string>") -> Graph:
    """Parses .sg text."""
    return Graph(_stepc.parse(text, filename))


def import_onnx(path: Union[str, os.PathLike], input_values: Optional[Mapping[str, Any]] = None) -> Graph:
    """Converts an ONNX model; its weights become params whose values are
    the graph's param_values. A weight read only transposed (Gemm's
    transB=1, as PyTorch exports nn.Linear) is stored transposed, named with
    ``.T`` appended (``fc1.weight.T``): values in ONNX's or PyTorch's layout
    do not load under it. ``input_values``: values for inputs that set a
    shape (they become constants)."""
    values = {name: np.ascontiguousarray(v) for name, v in (input_values or {}).items()}
    graph, params = _stepc.import_onnx(os.fspath(path), values)
    return Graph(graph, params)


def grad(target: Any, loss: Any = None, wrt: Any = None) -> Any:
    """Gradients, as graph nodes.

    ``stepc.grad(graph, "loss", wrt=["w"])``: a Graph with ``grad_w`` outputs
    (Graph.grad). ``stepc.grad(loss_value, [w, b])``: while building, the
    Values d loss / d w and d loss / d b.
    """
    if isinstance(target, Graph):
        return target.grad(loss if loss is not None else "loss", wrt)
    if isinstance(target, Value):
        wrt_values = loss if wrt is None else wrt
        single = isinstance(wrt_values, Value)
        values = [wrt_values] if single else list(wrt_values)
        grads, warnings = _stepc.gradients(target._v, [_value(v) for v in values])
        for warning in warnings:
            print(f"stepc: {warning}", file=sys.stderr)
        wrapped = [Value(g, target._builder) for g in grads]
        return wrapped[0] if single else wrapped
    raise Error(f"grad: expected a stepc.Graph or a stepc.Value, got {type(target).__name__}")
