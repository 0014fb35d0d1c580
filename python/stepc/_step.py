"""Compiled step functions, the tracing JIT and the benchmark."""
from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union, cast

import numpy as np

from . import _stepc
from ._graph import Error, Graph, GraphBuilder, Optimizer, Value, _dtype_name, numpy_dtype

# The backend names, from the one registry (include/stepc/backend.h).
BACKENDS: Tuple[str, ...] = tuple(_stepc.backends())


def _as_array(name: str, value: Any, dtype: Optional[str]) -> Any:
    """What the C++ side takes: a C-contiguous CPU array. DLPack producers
    (PyTorch, JAX) and NumPy arrays pass as they are, without a copy when
    contiguous; numbers and lists become arrays of the input's dtype."""
    if isinstance(value, np.ndarray):
        if not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        if value.dtype.name == "bfloat16":  # ml_dtypes': NumPy cannot export it by DLPack
            return _stepc.bfloat16_array(value.view(np.uint16))
        return value
    if hasattr(value, "__dlpack__"):
        return value
    # (not ascontiguousarray: it turns a 0-d array into a 1-d one)
    array = np.asarray(value, dtype=numpy_dtype(dtype) if dtype else None, order="C")
    return _as_array(name, array, dtype) if dtype == "bf16" else array


class Step:
    """A compiled step function: ``step(**inputs)`` runs one step and returns
    the outputs as a dict of NumPy arrays. Params (weights, optimizer state,
    the step counter) stay inside between calls."""

    def __init__(self, graph: Graph, backend: str, step: _stepc.Step):
        self.graph = graph
        self.backend = backend
        self._step = step
        self._input_dtypes = {name: dtype for name, (dtype, _) in graph.inputs.items()}

    def __call__(self, inputs: Optional[Mapping[str, Any]] = None, /, **named: Any) -> Dict[str, np.ndarray]:
        given = {**(inputs or {}), **named}
        arrays = {name: _as_array(name, value, self._input_dtypes.get(name))
                  for name, value in given.items()}
        return self._step(arrays)

    def params(self) -> Dict[str, np.ndarray]:
        """Copies of every param's current value, by name."""
        return {name: self.param(name) for name in self._step.param_names()}

    def param(self, name: str) -> np.ndarray:
        # (the module's stub says object: nanobind cannot name NumPy's type)
        return cast(np.ndarray, self._step.param(name))

    def set_params(self, params: Optional[Mapping[str, Any]] = None, /, **named: Any) -> None:
        """Sets the params given (by name; each must have the param's dtype and shape)."""
        for name, value in {**(params or {}), **named}.items():
            self._step.set_param(name, _as_array(name, value, None))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes every param to a safetensors file (atomically)."""
        self._step.save(os.fspath(path))

    def load(self, path: Union[str, os.PathLike]) -> None:
        """Reads params saved by save(); checks every name, dtype and shape first."""
        self._step.load(os.fspath(path))

    @property
    def steps_taken(self) -> int:
        return self._step.steps_taken

    @property
    def kernels(self) -> List[str]:
        """The compiled kernels in execution order (none on the interpreter)."""
        return self._step.kernels

    def profile(self) -> List[Tuple[str, int, float]]:
        """(kernel, step, microseconds) per kernel run, when compiled with profile=True."""
        return self._step.profile()

    def __repr__(self) -> str:
        return (f"stepc.Step({self.graph.name!r}, backend={self.backend!r}, "
                f"kernels={len(self.kernels)}, steps_taken={self.steps_taken})")


def compile(graph: Graph, backend: str = "cpu", *, fusion: bool = True, threads: int = 0,
            check_numerics: bool = False, profile: bool = False,
            memory_budget: Union[str, int, None] = None) -> Step:
    """Compiles ``graph`` for ``backend``: "interp" (the reference
    interpreter), "cpu" (native code, through the JIT cache) or "cuda".
    ``memory_budget`` bounds the planned peak, as ``--memory-budget``: bytes
    (an int, or "64MB", "1.5GiB") or "75%" of the unbudgeted peak;
    activations are recomputed to fit (docs/memory-budget.md)."""
    if not isinstance(graph, Graph):
        raise Error(f"compile: expected a stepc.Graph, got {type(graph).__name__}")
    budget = "" if memory_budget is None else str(memory_budget)
    step = Step(graph, backend,
                _stepc.Step(graph._g, backend, fusion, threads, check_numerics, profile,
                            budget))
    if graph.param_values:
        step.set_params(graph.param_values)
    return step


# --- The tracing JIT -------------------------------------------------------------

Returned = Union[Value, Tuple[Value, ...], List[Value], Dict[str, Value]]


def _jit_argument(a: Any) -> np.ndarray:
    """An array (DLPack producers without a copy); Python floats are f32."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__"):
        if str(getattr(a, "dtype", "")).endswith("bfloat16"):  # NumPy has no bfloat16 of its own
            return cast(np.ndarray, _stepc.bfloat16_bits(a)).view(numpy_dtype("bf16"))
        return np.from_dlpack(a)
    array = np.asarray(a)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _signature_key(arrays: List[np.ndarray]) -> Tuple[Any, ...]:
    return tuple((a.dtype.str, a.shape) for a in arrays)


def _signature_text(arrays: List[np.ndarray]) -> str:
    """Like "f32[4,3], f32[3,2]"."""
    return ", ".join(f"{_dtype_name(a.dtype)}[{','.join(map(str, a.shape))}]" for a in arrays)


@dataclass
class _Traced:
    """One shape signature's compiled step and how to call it."""
    step: Step
    kind: str                # "value", "tuple" or "dict": what the function returned
    input_names: List[str]   # in argument order
    output_names: List[str]  # in the order returned


class Jit:
    """A Python function of Values, compiled per shape signature (the dtypes
    and shapes of its arguments): the first call with a signature traces it
    (calls it once with fresh graph inputs named after its parameters) and
    compiles the graph; later calls run the compiled step.

    State, as in stepc::jit: a function that takes a GraphBuilder before its
    Values (``def f(b, x)``) may declare params (``b.param(...)``) and give
    them new values (``b.update(param, next)``). With ``optimizer`` (a name
    from OPTIMIZERS, with ``lr=``, or an Optimizer) the function returns its
    loss (a Value, or a dict with a "loss" entry) and each signature
    compiles the training step of every floating-point param. Params belong
    to the Jit, not to one signature: their values (the optimizer's state
    and step counter too) carry over by name, dtype and shape when the
    signature changes, so a smaller last batch trains the same weights.
    """

    def __init__(self, fn: Callable[..., Returned], backend: str = "cpu", fusion: bool = True,
                 optimizer: Union[str, Optimizer, None] = None, lr: Optional[float] = None):
        self.fn = fn
        self.backend = backend
        self.fusion = fusion
        self.optimizer = optimizer
        self.lr = lr
        self._steps: Dict[Tuple[Any, ...], _Traced] = {}
        try:
            self._parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            self._parameters = []
        self._current: Optional[Step] = None  # the last call's; its params are the live ones
        self._pending: Dict[str, Any] = {}    # set_params before the first call
        self._last: Optional[str] = None      # the last call's signature, for the recompile line
        functools.update_wrapper(self, fn)

    @property
    def traces(self) -> int:
        """Signatures traced so far."""
        return len(self._steps)

    def _takes_builder(self, arguments: int) -> bool:
        """Whether fn takes a GraphBuilder before its ``arguments`` Values."""
        positional = [p for p in self._parameters
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        variadic = any(p.kind == p.VAR_POSITIONAL for p in self._parameters)
        return not variadic and len(positional) == arguments + 1

    def _trace(self, arrays: List[np.ndarray]) -> _Traced:
        fn_name = getattr(self.fn, "__name__", "jit")
        b = GraphBuilder(fn_name)
        takes_builder = self._takes_builder(len(arrays))
        parameter_names = [p.name for p in self._parameters][1 if takes_builder else 0:]
        names = [parameter_names[i] if i < len(parameter_names) else f"x{i}"
                 for i in range(len(arrays))]
        values = [b.input(name, _dtype_name(a.dtype), a.shape) for name, a in zip(names, arrays)]
        result = self.fn(b, *values) if takes_builder else self.fn(*values)
        if isinstance(result, Value):
            kind, outputs = "value", {"out0": result}
        elif isinstance(result, (tuple, list)):
            kind, outputs = "tuple", {f"out{i}": v for i, v in enumerate(result)}
        elif isinstance(result, dict):
            kind, outputs = "dict", dict(result)
        else:
            raise Error(f"stepc.jit: {fn_name} must return a stepc.Value, a tuple or list of them, "
                        f"or a dict of them; got {type(result).__name__}")
        for name, value in outputs.items():
            b.output(name, value)
        graph = b.finish()
        if self.optimizer is not None:
            loss = {"value": "out0", "dict": "loss"}.get(kind)
            if loss not in outputs:
                raise Error(f"stepc.jit: with an optimizer, {fn_name} must return its loss: a "
                            f"stepc.Value or a dict with a \"loss\" entry")
            graph = graph.train_step(loss, self.optimizer, lr=self.lr)
            if "lr" in graph.inputs and "lr" not in names:
                raise Error("stepc.jit: the optimizer needs a learning rate: "
                            "stepc.jit(..., optimizer=\"sgd\", lr=0.1)")
        step = compile(graph, self.backend, fusion=self.fusion)
        return _Traced(step, kind, names, list(outputs))

    def _make_current(self, step: Step) -> None:
        """Runs ``step`` next: the live param values move into it."""
        if self._current is None:
            step.set_params(self._pending)
            self._pending = {}
        elif self._current is not step:
            have = self._current.graph.params
            for name, kind in step.graph.params.items():
                if have.get(name) == kind:
                    step.set_params({name: self._current.param(name)})
        self._current = step

    def _traced(self, arrays: List[np.ndarray]) -> _Traced:
        signature = _signature_key(arrays)
        if signature not in self._steps:
            self._steps[signature] = self._trace(arrays)
        return self._steps[signature]

    def __call__(self, *args: Any) -> Any:
        arrays = [_jit_argument(a) for a in args]
        text = _signature_text(arrays)
        if self._last is not None and _signature_key(arrays) not in self._steps:
            print(f"stepc.jit: recompiling {getattr(self.fn, '__name__', 'the function')} for "
                  f"{text} (was {self._last})", file=sys.stderr)
        traced = self._traced(arrays)
        self._last = text
        self._make_current(traced.step)
        out = traced.step(dict(zip(traced.input_names, arrays)))
        if traced.kind == "value":
            return out["out0"]
        if traced.kind == "tuple":
            return tuple(out[n] for n in traced.output_names)
        return {n: out[n] for n in traced.output_names}

    def graph(self, *args: Any) -> Graph:
        """The graph traced for these arguments' signature."""
        return self._traced([_jit_argument(a) for a in args]).step.graph

    # Params: those of the last call's signature (set_params before the first
    # call keeps the values for it).

    def _live(self, what: str) -> Step:
        if self._current is None:
            raise Error(f"stepc.jit: {getattr(self.fn, '__name__', 'the function')} has no "
                        f"params to {what} before its first call has traced it")
        return self._current

    def params(self) -> Dict[str, np.ndarray]:
        """Copies of every param's current value, by name."""
        if self._current is None:
            return dict(self._pending)
        return self._current.params()

    def param(self, name: str) -> np.ndarray:
        if self._current is None and name in self._pending:
            return self._pending[name]
        return self._live("read").param(name)

    def set_params(self, params: Optional[Mapping[str, Any]] = None, /, **named: Any) -> None:
        given = {**(params or {}), **named}
        if self._current is None:
            self._pending.update({name: np.array(value) for name, value in given.items()})
        else:
            self._current.set_params(given)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes every param to a safetensors file (atomically)."""
        self._live("save").save(path)

    def load(self, path: Union[str, os.PathLike]) -> None:
        """Reads params saved by save(); checks every name, dtype and shape first."""
        self._live("load").load(path)


def jit(fn: Optional[Callable[..., Returned]] = None, *, backend: str = "cpu",
        fusion: bool = True, optimizer: Union[str, Optimizer, None] = None,
        lr: Optional[float] = None) -> Any:
    """``@stepc.jit``, ``@stepc.jit(backend="interp")`` or
    ``@stepc.jit(optimizer="sgd", lr=0.1)``: see Jit."""
    if fn is None:
        return lambda f: Jit(f, backend, fusion, optimizer, lr)
    return Jit(fn, backend, fusion, optimizer, lr)


# --- The benchmark -----------------------------------------------------------------

def bench(graph: Graph, *, compare_unfused: bool = False, per_kernel: bool = False,
          steps: int = 50, warmup: int = 5, threads: int = 0) -> Dict[str, Any]:
    """``stepc bench`` on this graph (CPU): compile and cache-hit times,
    median ms/step fused (and unfused), peak arena, and with per_kernel each
    fused kernel against its ops unfused. Prints its tables and returns the
    figures as a dict (the keys of ``stepc bench --json``)."""
    with tempfile.TemporaryDirectory(prefix="stepc-bench-") as tmp:
        source = os.path.join(tmp, f"{graph.name}.sg")
        report = os.path.join(tmp, "bench.json")
        graph.save(source)
        sys.stdout.flush()
        _stepc.bench(source, report, steps, warmup, threads, compare_unfused, per_kernel)
        with open(report) as f:
            return json.load(f)
