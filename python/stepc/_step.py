"""Compiled step functions, the tracing JIT and the benchmark."""
from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _stepc
from ._graph import NUMPY_DTYPES, Error, Graph, GraphBuilder, Value, _dtype_name

BACKENDS = ("interp", "cpu", "cuda")


def _as_array(name: str, value: Any, dtype: Optional[str]) -> Any:
    """What the C++ side takes: a C-contiguous CPU array. DLPack producers
    (PyTorch, JAX) and NumPy arrays pass as they are, without a copy when
    contiguous; numbers and lists become arrays of the input's dtype."""
    if isinstance(value, np.ndarray):
        return value if value.flags.c_contiguous else np.ascontiguousarray(value)
    if hasattr(value, "__dlpack__"):
        return value
    # (not ascontiguousarray: it turns a 0-d array into a 1-d one)
    return np.asarray(value, dtype=NUMPY_DTYPES.get(dtype) if dtype else None, order="C")


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
        return {name: self._step.param(name) for name in self._step.param_names()}

    def param(self, name: str) -> np.ndarray:
        return self._step.param(name)

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
        return np.from_dlpack(a)
    array = np.asarray(a)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _signature_text(arrays: List[np.ndarray]) -> str:
    """Like "f32[4,3], f32[3,2]"."""
    return ", ".join(f"{_dtype_name(a.dtype)}[{','.join(map(str, a.shape))}]" for a in arrays)


class Jit:
    """A Python function of Values, compiled per shape signature (the dtypes
    and shapes of its arguments): the first call with a signature traces it
    (calls it once with fresh graph inputs named after its parameters) and
    compiles the graph; later calls run the compiled step."""

    def __init__(self, fn: Callable[..., Returned], backend: str = "cpu", fusion: bool = True):
        self.fn = fn
        self.backend = backend
        self.fusion = fusion
        self._steps: Dict[Tuple[Any, ...], Tuple[Step, str, List[str]]] = {}
        try:
            parameters = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            parameters = []
        self._names = parameters
        self._last: Optional[str] = None  # the last call's signature, for the recompile line
        functools.update_wrapper(self, fn)

    @property
    def traces(self) -> int:
        """Signatures traced so far."""
        return len(self._steps)

    def _trace(self, arrays: List[np.ndarray]) -> Tuple[Step, str, List[str]]:
        b = GraphBuilder(getattr(self.fn, "__name__", "jit"))
        names = [self._names[i] if i < len(self._names) else f"x{i}" for i in range(len(arrays))]
        values = [b.input(name, _dtype_name(a.dtype), a.shape) for name, a in zip(names, arrays)]
        result = self.fn(*values)
        if isinstance(result, Value):
            kind, outputs = "value", {"out0": result}
        elif isinstance(result, (tuple, list)):
            kind, outputs = "tuple", {f"out{i}": v for i, v in enumerate(result)}
        elif isinstance(result, dict):
            kind, outputs = "dict", dict(result)
        else:
            raise Error(f"stepc.jit: {getattr(self.fn, '__name__', 'the function')} must return a "
                        f"stepc.Value, a tuple or list of them, or a dict of them; got "
                        f"{type(result).__name__}")
        for name, value in outputs.items():
            b.output(name, value)
        graph = b.finish()
        return compile(graph, self.backend, fusion=self.fusion), kind, list(outputs)

    def __call__(self, *args: Any) -> Any:
        arrays = [_jit_argument(a) for a in args]
        signature = tuple((a.dtype.str, a.shape) for a in arrays)
        if signature not in self._steps:
            if self._last is not None:
                print(f"stepc.jit: recompiling {getattr(self.fn, '__name__', 'the function')} for "
                      f"{_signature_text(arrays)} (was {self._last})", file=sys.stderr)
            self._steps[signature] = self._trace(arrays)
        self._last = _signature_text(arrays)
        step, kind, names = self._steps[signature]
        out = step({name: a for name, a in zip(step.graph.inputs, arrays)})
        if kind == "value":
            return out["out0"]
        if kind == "tuple":
            return tuple(out[n] for n in names)
        return {n: out[n] for n in names}

    def graph(self, *args: Any) -> Graph:
        """The graph traced for these arguments' signature."""
        arrays = [_jit_argument(a) for a in args]
        signature = tuple((a.dtype.str, a.shape) for a in arrays)
        if signature not in self._steps:
            self._steps[signature] = self._trace(arrays)
        return self._steps[signature][0].graph


def jit(fn: Optional[Callable[..., Returned]] = None, *, backend: str = "cpu",
        fusion: bool = True) -> Any:
    """``@stepc.jit`` or ``@stepc.jit(backend="interp")``: see Jit."""
    if fn is None:
        return lambda f: Jit(f, backend, fusion)
    return Jit(fn, backend, fusion)


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
