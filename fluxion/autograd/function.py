"""``fluxion.autograd.Function``: user-defined ops with their own backward."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.autograd.grad_mode import no_grad, state
from fluxion.autograd.node import Node
from fluxion.tensor import Tensor


class _FunctionOp:
    """What a Function looks like to the engine: the fields of a table ``Op`` it reads."""

    save_inputs = False
    save_output = False
    scatter_grad = None

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.name = cls.__name__
        self.node_name = f"{cls.__name__}Backward"

    def backward(self, node: FunctionCtx, g: Any) -> tuple:
        grads = list(g.grads) if isinstance(g, _GradTuple) else [g]
        if node._materialize:
            grads = [
                x if x is not None else Tensor._make(np.zeros(shape, dtype))
                for x, (shape, dtype) in zip(grads, node._out_meta)
            ]
        out = self.cls.backward(node, *grads)
        if not isinstance(out, tuple):
            out = (out,)
        n_in = len(node.next)
        if len(out) < n_in:
            raise RuntimeError(
                f"function {self.node_name} returned an incorrect number of gradients "
                f"(expected {n_in}, got {len(out)})"
            )
        return tuple(out[:n_in])


class _GradTuple:
    """Gradients for several outputs of one Function node, summed as they arrive."""

    def __init__(self, grads: list) -> None:
        self.grads = grads

    def __add__(self, other: _GradTuple) -> _GradTuple:
        return _GradTuple([
            b if a is None else a if b is None else a + b for a, b in zip(self.grads, other.grads)
        ])


class _OutputOp:
    """Routes the gradient of output ``i`` of a multi-output Function into its node."""

    save_inputs = False
    save_output = False
    scatter_grad = None
    name = "output_select"
    node_name = "OutputSelectBackward"

    def __init__(self, i: int, k: int) -> None:
        self.i, self.k = i, k

    def backward(self, node: Node, g: Tensor) -> tuple:
        grads: list = [None] * self.k
        grads[self.i] = g
        return (_GradTuple(grads),)


class FunctionCtx(Node):
    """The ``ctx`` of a Function: also its node in the graph (its ``grad_fn``)."""

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        return self._needs

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep tensors for backward; modifying them in place afterwards is an error."""
        self._saved = tuple(tensors)
        self._saved_v = tuple(t._vbox[0] if isinstance(t, Tensor) else None for t in tensors)

    @property
    def saved_tensors(self) -> tuple:
        if self._freed:
            self._raise_freed()
        for i, (t, v) in enumerate(zip(self._saved, self._saved_v)):
            if v is not None and t._vbox[0] != v:
                self._raise_modified(t._data, f"saved tensor {i}", t._vbox[0], v)
        return self._saved

    def mark_dirty(self, *tensors: Tensor) -> None:
        """Accepted for compatibility: Fluxion versions in-place writes itself."""

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        """Outputs that never carry gradients (e.g. indices)."""
        self._non_diff = {id(t) for t in tensors}

    def set_materialize_grads(self, value: bool) -> None:
        """Whether missing output gradients reach ``backward`` as zeros (default) or None."""
        self._materialize = value

    def release(self) -> None:
        if self._saved:
            self._saved = ()
            self._freed = True


class Function:
    """Base class for ops with a hand-written backward.

    >>> import fluxion
    >>> class Square(fluxion.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         (x,) = ctx.saved_tensors
    ...         return 2 * x * g
    >>> x = fluxion.tensor(3.0, requires_grad=True)
    >>> Square.apply(x).backward(); x.grad
    tensor(6.)
    """

    _op: _FunctionOp | None = None

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("subclasses of Function must implement forward")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs: Any) -> Any:
        raise NotImplementedError("subclasses of Function must implement backward")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        op = cls.__dict__.get("_op")
        if op is None:
            op = _FunctionOp(cls)
            cls._op = op
        record = state.enabled and any(
            isinstance(a, Tensor) and a.requires_grad for a in args
        )
        ctx = FunctionCtx.__new__(FunctionCtx)
        ctx._saved, ctx._saved_v, ctx._non_diff, ctx._materialize = (), (), set(), True
        ctx._needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        if not record:
            return out
        outs = out if isinstance(out, tuple) else (out,)
        dummy = Tensor._make(np.empty(0))
        Node.__init__(ctx, op, args, {}, dummy)  # type: ignore[arg-type]
        ctx._out_meta = [(o._data.shape, o._data.dtype) if isinstance(o, Tensor) else ((), None)
                         for o in outs]
        wrapped = []
        for i, o in enumerate(outs):
            if not isinstance(o, Tensor) or id(o) in ctx._non_diff or o._data.dtype.kind != "f":
                wrapped.append(o)
                continue
            if any(o is a for a in args):  # an input returned as is: a new tensor object
                o = Tensor._make(o._data)
            if len(outs) == 1:
                o.grad_fn = ctx
            else:
                sel = Node.__new__(Node)
                Node.__init__(sel, _OutputOp(i, len(outs)), (), {}, o)  # type: ignore[arg-type]
                sel.next, sel.shapes, sel.dtypes = (ctx,), (None,), (None,)
                o.grad_fn = sel
            o.requires_grad = True
            wrapped.append(o)
        return tuple(wrapped) if isinstance(out, tuple) else wrapped[0]
