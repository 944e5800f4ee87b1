"""Graph nodes (``grad_fn``): one per recorded operation, pointing at its inputs' nodes."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from fluxion.autograd.grad_mode import state
from fluxion.tensor import Tensor

if TYPE_CHECKING:
    from fluxion.ops.registry import Op


def _user_frame() -> traceback.FrameSummary | None:
    """The innermost stack frame outside the fluxion package: the user's source line."""
    import fluxion

    pkg = fluxion.__path__[0]
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(pkg):
            return frame
    return None


class Node:
    """The backward function of one recorded op (PyTorch's ``grad_fn``).

    ``next`` holds one edge per input: ``None`` (no gradient needed), another ``Node``,
    or a leaf ``Tensor`` whose ``.grad`` accumulates. Backward rules read ``inputs``,
    ``out``, ``attrs``, ``shapes`` and ``needs_input_grad`` from the node.
    """

    __slots__ = (
        "op", "next", "attrs", "shapes", "dtypes", "_inputs",
        "_saved_versions", "_out_data", "_out_version", "_out_saved_version", "_freed",
        "pre_hooks", "trace", "label", "aux", "owner", "__weakref__",
    )

    def __init__(self, op: Op, inputs: tuple, attrs: dict, out: Tensor) -> None:
        self.op = op
        self.attrs = attrs
        nxt: list = []
        shapes: list = []
        dtypes: list = []
        for t in inputs:
            if isinstance(t, Tensor):
                d = t._data
                shapes.append(d.shape)
                if t.requires_grad:
                    g = t.grad_fn
                    nxt.append(t if g is None else g)
                    dtypes.append(d.dtype)
                    continue
            else:
                shapes.append(None)
            dtypes.append(None)
            nxt.append(None)
        self.next = tuple(nxt)
        self.shapes = tuple(shapes)
        self.dtypes = tuple(dtypes)
        if op.save_inputs:
            saves = op.saves
            if saves is not None:
                keep = saves(tuple([e is not None for e in nxt]))
                inputs = tuple([t if k else None for t, k in zip(inputs, keep)])
            self._inputs = inputs
            self._saved_versions = tuple(
                t._vbox[0] if isinstance(t, Tensor) else None for t in inputs
            )
        else:
            self._inputs = None
        if op.save_output:
            self._out_data = out._data
            self._out_version = out._vbox
            self._out_saved_version = out._vbox[0]
        else:
            self._out_data = None
        self._freed = False
        self.pre_hooks: list | None = None
        self.trace = _user_frame() if state.anomaly else None
        self.label: str | None = None
        self.aux: tuple | None = None  # extra outputs (indices) a backward rule may reuse
        self.owner: Any = None  # the compiled function that recorded this node, if any

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        """Per input, whether it needs a gradient (PyTorch's ``ctx.needs_input_grad``)."""
        return tuple(e is not None for e in self.next)

    # --- what backward rules read -------------------------------------------------
    @property
    def inputs(self) -> tuple:
        if self._freed:
            self._raise_freed()
        return self._inputs  # type: ignore[return-value]

    @property
    def out(self) -> Tensor:
        """The op's output as a tensor whose ``grad_fn`` is this node (for 2nd order)."""
        if self._freed:
            self._raise_freed()
        t = Tensor._make(self._out_data)
        t.grad_fn = self
        t.requires_grad = True
        return t

    def name(self) -> str:
        """PyTorch-style name, e.g. ``MulBackward0``."""
        return self.label or self.op.node_name

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"

    @property
    def next_functions(self) -> tuple:
        """``((node_or_None, 0), ...)`` like PyTorch; leaves appear as ``AccumulateGrad``."""
        return tuple(
            (AccumulateGrad(e) if e is not None and not isinstance(e, Node) else e, 0)
            for e in self.next
        )

    def register_hook(self, fn: Any) -> None:
        """Not supported on nodes yet; register hooks on tensors instead."""
        raise RuntimeError("grad_fn.register_hook is not supported; use tensor.register_hook")

    # --- what the engine calls ----------------------------------------------------
    def _raise_freed(self) -> None:
        raise RuntimeError(
            f"Trying to backward through the graph a second time (or directly access saved "
            f"tensors after they have already been freed) in {self.name()}. Saved "
            "intermediate values of the graph are freed when you call .backward() or "
            "autograd.grad(). Specify retain_graph=True if you need to backward through "
            "the graph a second time or if you need to access saved tensors after calling "
            "backward."
        )

    def check_saved(self) -> None:
        """PyTorch's in-place safety check: saved tensors must be at their saved version."""
        if self._freed:
            self._raise_freed()
        if self._inputs is not None:
            for i, (t, v) in enumerate(zip(self._inputs, self._saved_versions)):
                if v is not None and t._vbox[0] != v:
                    self._raise_modified(t._data, f"input {i}", t._vbox[0], v)
        if self._out_data is not None and self._out_version[0] != self._out_saved_version:
            self._raise_modified(
                self._out_data, "output 0", self._out_version[0], self._out_saved_version
            )

    def _raise_modified(self, data: Any, which: str, now: int, expected: int) -> None:
        from fluxion._dtype import from_numpy_dtype

        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: [{from_numpy_dtype(data.dtype)} {list(data.shape)}], which "
            f"is {which} of {self.name()}, is at version {now}; expected version {expected} "
            "instead. Hint: make a .clone() before the in-place op, or do it out of place."
        )

    def release(self) -> None:
        """Free saved values after a backward without ``retain_graph``."""
        if self._inputs is not None or self._out_data is not None or self.aux is not None:
            self._inputs = None
            self._out_data = None
            self.aux = None
            self._freed = True


class AccumulateGrad:
    """How PyTorch shows a leaf in ``next_functions``; ``variable`` is the leaf."""

    __slots__ = ("variable",)

    def __init__(self, variable: Tensor) -> None:
        self.variable = variable

    def name(self) -> str:
        return "AccumulateGrad"

    def __repr__(self) -> str:
        return f"<AccumulateGrad object at {id(self):#x}>"
