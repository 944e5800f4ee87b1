"""The op table: every primitive defined once, and ``apply``, the one way to run one.

An entry holds the eager kernel (written against the array namespace ``xp`` so the NumPy
and CuPy backends share it), the backward rule (written with differentiable Fluxion ops,
so gradients of any order come for free), a shape rule, and for elementwise ops the C
expression the code generator will use. Eager autograd, tests, the compiler and the
exporters all read this table.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluxion.autograd.grad_mode import state
from fluxion.autograd.node import Node
from fluxion.tensor import Tensor

# IEEE results (inf, nan) are values, as in PyTorch, never NumPy RuntimeWarnings. Kernels
# run directly (np.errstate would cost ~1.7 us an op); the warnings they raise are silenced
# by this filter, and where a user's filter turns them into errors the kernel reruns quietly.
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"fluxion\.ops\..*")


def run_kernel(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a pure array kernel (one that only returns new arrays) without NumPy's
    floating-point warnings."""
    try:
        return fn(*args, **kwargs)
    except RuntimeWarning:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)


KINDS = ("unary", "binary", "ternary", "reduce", "movement", "index", "linalg", "nn")


@dataclass(eq=False, slots=True)
class Op:
    """One primitive. ``forward(xp, *arrays, **attrs)`` returns an array (or a tuple whose
    first item is the differentiable output and the rest non-differentiable extras, e.g.
    indices); ``backward(node, grad)`` returns one gradient (or None) per input."""

    name: str
    kind: str
    forward: Callable[..., Any]
    backward: Callable[..., tuple] | None = None
    # elementwise: C in terms of a, b, c (tgmath names), or a function of the attributes
    # giving it; an op with one is fused by the compiler
    c_expr: str | Callable[..., str] | None = None
    save_inputs: bool = True
    # which inputs the backward rule reads, given which inputs need a gradient (default:
    # all); unsaved inputs are neither kept alive nor version-checked
    saves: Callable[[tuple[bool, ...]], tuple[bool, ...]] | None = None
    save_output: bool = False
    # optional fast path for first-order backward: add the gradient of input 0 straight
    # into an accumulator array (slices add into their region instead of padding zeros)
    scatter_grad: Callable[[Any, Any, Any], None] | None = None
    view: bool = False  # the output shares memory with input 0
    # forward takes ``out=``: a C-contiguous array of the result's shape and dtype to
    # write a fresh result into (the compiler's pooled memory); it returns ``out`` or,
    # where the result is a view of an input, that view
    takes_out: bool = False
    differentiable: bool = True  # False: outputs never carry gradients (comparisons...)
    n_aux: int = 0  # how many non-differentiable extra outputs follow the main one
    dtype_rule: str = "same"  # elementwise: promote | float | bool | same
    shape_rule: Callable[..., tuple] | None = None  # (specs, attrs) -> (shape, np dtype)
    doc: str = ""
    node_name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        self.node_name = "".join(p.capitalize() for p in self.name.split("_")) + "Backward0"

    def defgrad(self, fn: Callable[..., tuple]) -> Callable[..., tuple]:
        """Decorator: attach ``fn(node, grad) -> grads`` as this op's backward rule."""
        self.backward = fn
        return fn

    def defshape(self, fn: Callable[..., tuple]) -> Callable[..., tuple]:
        """Decorator: attach ``fn(specs, **attrs) -> (shape, dtype)`` as the shape rule."""
        self.shape_rule = fn
        return fn

    def infer(self, *inputs: Any, **attrs: Any) -> tuple[tuple[int, ...], np.dtype]:
        """Output shape and dtype without computing: ``inputs`` are ``Spec``s (or anything
        with ``shape`` and ``dtype``, tensors included) and Python scalars.

        >>> from fluxion.ops import OPS, Spec
        >>> OPS["add"].infer(Spec((2, 1), "float32"), Spec((3,), "float32"))
        ((2, 3), dtype('float32'))
        """
        specs = [Spec.of(x) for x in inputs]
        if self.shape_rule is not None:
            return self.shape_rule(specs, **attrs)
        if self.kind in ("unary", "binary", "ternary"):
            return _elementwise_rule(self, specs)
        if self.name in _DIMS_REDUCTIONS:
            shape, dtype = _reduce_rule(specs, **attrs)
            if self.name in ("sum", "prod"):  # NumPy widens small ints and bools
                dtype = np.sum(np.zeros(1, dtype)).dtype
            return shape, dtype if self.name not in ("all", "any") or dtype == np.uint8 \
                else np.dtype(bool)
        return _abstract_eval(self, specs, attrs)

    def __repr__(self) -> str:
        return f"Op({self.name}, kind={self.kind})"


_DIMS_REDUCTIONS = frozenset({"sum", "prod", "amax", "amin", "all", "any", "norm2"})


class Spec:
    """An input's shape and dtype: what shape rules and the compiler reason about."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    @staticmethod
    def of(x: Any) -> Any:
        if isinstance(x, Spec) or x is None or isinstance(x, (bool, int, float)):
            return x
        if isinstance(x, Tensor):
            return Spec(x._data.shape, x._data.dtype)
        return Spec(np.shape(x), np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype)

    def __repr__(self) -> str:
        return f"Spec({self.shape}, {self.dtype})"


def _elementwise_rule(op: Op, specs: list) -> tuple[tuple[int, ...], np.dtype]:
    arrays = [s for s in specs if isinstance(s, Spec)]
    shape = np.broadcast_shapes(*(s.shape for s in arrays))
    if op.dtype_rule == "bool":
        return shape, np.dtype(bool)
    # what the NumPy kernel gives: array dtypes promote, Python scalars are weak;
    # where's condition is the bool operand that does not count
    operands = specs[1:] if op.name == "where" else specs
    dts = [s.dtype if isinstance(s, Spec) else s for s in operands if s is not None]
    return shape, np.result_type(*dts)


def _reduce_rule(specs: list, dims: tuple[int, ...] | None = None,
                 keepdim: bool = False) -> tuple[tuple[int, ...], np.dtype]:
    x = specs[0]
    axes = range(len(x.shape)) if dims is None else dims
    if keepdim:
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    else:
        shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
    return shape, x.dtype


def _abstract_eval(op: Op, specs: list, attrs: dict) -> tuple[tuple[int, ...], np.dtype]:
    """The fallback rule: run the kernel on zero-strided dummies (exact by construction;
    ops whose kernels copy pay an allocation, so hot ops get explicit rules)."""
    dummies = [
        np.lib.stride_tricks.as_strided(np.zeros(1, s.dtype), s.shape, (0,) * len(s.shape))
        if isinstance(s, Spec) else s for s in specs
    ]
    out = op.forward(np, *dummies, **attrs)
    if op.n_aux:
        out = out[0]
    out = np.asarray(out)
    return out.shape, out.dtype


OPS: dict[str, Op] = {}


def defop(name: str, kind: str, **kw: Any) -> Callable[[Callable[..., Any]], Op]:
    """Decorator that registers a forward kernel as the primitive ``name``."""

    def register(fwd: Callable[..., Any]) -> Op:
        if name in OPS:
            raise ValueError(f"op {name!r} is defined twice")
        op = Op(name, kind, fwd, doc=(fwd.__doc__ or "").strip(), **kw)
        OPS[name] = op
        return op

    return register


def _describe(inputs: tuple) -> str:
    return ", ".join(
        f"{list(x._data.shape)} {x.dtype.name}" if isinstance(x, Tensor)
        else f"{list(x.shape)} {x.dtype.name}" if isinstance(x, np.ndarray) else repr(x)
        for x in inputs
    )


def run_op(op: Op, *arrays: Any, **attrs: Any) -> Any:
    """``op``'s NumPy kernel on arrays, NumPy's errors as the op's own (named, with the
    inputs' shapes and dtypes): what eager raises, for callers that hold arrays (the
    compiler's library calls).

    >>> import numpy as np
    >>> run_op(OPS["add"], np.ones(2), 1.0)
    array([2., 2.])
    >>> run_op(OPS["matmul"], np.ones((2, 3)), np.ones((2, 3)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    RuntimeError: matmul: ... (inputs: [2, 3] float64, [2, 3] float64)
    """
    try:
        return run_kernel(op.forward, np, *arrays, **attrs)
    except IndexError as e:
        raise IndexError(f"{op.name}: {e} (inputs: {_describe(arrays)})") from None
    except _NUMPY_ERRORS as e:
        raise RuntimeError(f"{op.name}: {e} (inputs: {_describe(arrays)})") from None


def label(t: Tensor, name: str) -> Tensor:
    """Name ``t``'s graph node as PyTorch would (e.g. ``MeanBackward1`` for the division
    that ends the ``mean`` composite); only ``grad_fn``'s name changes."""
    node = t.grad_fn
    if node is not None and type(node) is Node:
        node.label = name
    return t


class _Capture(threading.local):
    """Where ``apply`` sends ops while a compiled call is recording (``None``: run them);
    per thread, so other threads keep running eagerly."""

    segment: Any = None


capture = _Capture()
recording = 0  # compiled calls in progress in any thread: eager ops skip the per-thread lookup


def recording_segment() -> Any:
    """The segment this thread's compiled call is recording into, or None (eager).

    >>> recording_segment() is None
    True
    """
    return capture.segment if recording else None

_ndarray = np.ndarray
_NUMPY_ERRORS = (ValueError, TypeError, np.exceptions.AxisError)


def apply(op: Op, *inputs: Any, **attrs: Any) -> Any:
    """Run ``op`` eagerly on tensors (Python scalars pass through) and record it for
    autograd when grad mode is on and an input requires grad. Every op goes through here
    (the compiler's capture hooks in at this point too).

    >>> import fluxion
    >>> from fluxion.ops import OPS, apply
    >>> apply(OPS["mul"], fluxion.tensor([1.0, 2.0]), 3.0)
    tensor([3., 6.])
    """
    seg = capture.segment if recording else None  # (recording_segment(), inlined: hot)
    arrays = []
    needs_grad = False
    for x in inputs:
        if isinstance(x, Tensor):
            if x._view is not None and x._view[3] != x._vbox[0] and (
                    state.enabled or seg is not None):
                x._refresh_view()
            arrays.append(x._data)
            if x.requires_grad:
                needs_grad = True
        else:
            arrays.append(x)
    if seg is not None:  # a compiled call is recording: no computation now
        out = seg.record(op, arrays, attrs)
    else:
        out = run_op(op, *arrays, **attrs)
    if op.n_aux:
        out, *aux = out
    if type(out) is not _ndarray and seg is None:
        out = np.asarray(out)
    result = Tensor._make(out)
    if op.view and (np.may_share_memory(out, arrays[0]) if seg is None else out.is_view):
        src = inputs[0]
        result._vbox = src._vbox
        result._base = src if src._base is None else src._base
        result._view = (src, op, attrs, src._vbox[0])
    if needs_grad and state.enabled and op.differentiable and out.dtype.kind == "f":
        result.grad_fn = Node(op, inputs, attrs, result)
        result.requires_grad = True
        if seg is not None:
            result.grad_fn.owner = seg.owner  # its backward will run compiled too
            if op.save_output or op.n_aux:
                seg.track_node(result.grad_fn)
    if seg is not None:
        seg.track(result)
    if op.n_aux:
        extras = tuple(Tensor._make(a if seg is not None else np.asarray(a)) for a in aux)
        if result.grad_fn is not None:
            result.grad_fn.aux = tuple(e._data for e in extras)
        if seg is not None:
            for e in extras:
                seg.track(e)
        return (result, *extras)
    return result
