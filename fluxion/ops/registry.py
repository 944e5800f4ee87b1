"""The op table: every primitive defined once, and ``apply``, the one way to run one.

An entry holds the eager kernel (written against the array namespace ``xp`` so the NumPy
and CuPy backends share it), the backward rule (written with differentiable Fluxion ops,
so gradients of any order come for free), a shape rule, and for elementwise ops the C
expression the code generator will use. Eager autograd, tests, the compiler and the
exporters all read this table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluxion.autograd.grad_mode import state
from fluxion.autograd.node import Node
from fluxion.tensor import Tensor

# IEEE results (inf, nan) are values, as in PyTorch: no NumPy RuntimeWarnings from kernels
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"fluxion\.ops\..*")

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
    c_expr: str | None = None  # elementwise: C in terms of a, b, c (tgmath names)
    save_inputs: bool = True
    save_output: bool = False
    view: bool = False  # the output shares memory with input 0
    differentiable: bool = True  # False: outputs never carry gradients (comparisons...)
    n_aux: int = 0  # how many non-differentiable extra outputs follow the main one
    dtype_rule: str = "same"  # elementwise: promote | float | bool | same
    doc: str = ""
    node_name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        self.node_name = "".join(p.capitalize() for p in self.name.split("_")) + "Backward0"

    def defgrad(self, fn: Callable[..., tuple]) -> Callable[..., tuple]:
        """Decorator: attach ``fn(node, grad) -> grads`` as this op's backward rule."""
        self.backward = fn
        return fn

    def __repr__(self) -> str:
        return f"Op({self.name}, kind={self.kind})"


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
        f"{list(x._data.shape)} {x.dtype.name}" if isinstance(x, Tensor) else repr(x)
        for x in inputs
    )


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
    arrays = []
    needs_grad = False
    for x in inputs:
        if isinstance(x, Tensor):
            arrays.append(x._data)
            if x.requires_grad:
                needs_grad = True
        else:
            arrays.append(x)
    try:
        out = op.forward(np, *arrays, **attrs)
    except IndexError as e:
        raise IndexError(f"{op.name}: {e} (inputs: {_describe(inputs)})") from None
    except _NUMPY_ERRORS as e:
        raise RuntimeError(f"{op.name}: {e} (inputs: {_describe(inputs)})") from None
    if op.n_aux:
        out, *aux = out
    if type(out) is not _ndarray:
        out = np.asarray(out)
    result = Tensor._make(out)
    if op.view and np.may_share_memory(out, arrays[0]):
        src = inputs[0]
        result._vbox = src._vbox
        result._base = src if src._base is None else src._base
        result._view = (src, op, attrs)
    if needs_grad and state.enabled and op.differentiable and out.dtype.kind == "f":
        result.grad_fn = Node(op, inputs, attrs, result)
        result.requires_grad = True
    if op.n_aux:
        return (result, *(Tensor._make(np.asarray(a)) for a in aux))
    return result
