"""The graph IR: a list of SSA nodes (op, inputs, attributes, shape, dtype), printable.

A value is referred to by a ``Ref``: ``("in", k)`` is graph input k, ``("n", i)`` the
output of node i, ``("aux", i, j)`` extra output j of node i (indices of max/sort)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Ref = tuple


@dataclass
class GNode:
    """One operation of the graph."""

    op: str
    args: tuple  # Refs, or Python scalars inline
    attrs: dict[str, Any]
    shape: tuple[int, ...]
    dtype: np.dtype
    aux: tuple[tuple[tuple[int, ...], np.dtype], ...] = ()


@dataclass
class Graph:
    """Inputs (shape, dtype), nodes in execution order, outputs (Refs)."""

    inputs: list[tuple[tuple[int, ...], np.dtype]] = field(default_factory=list)
    nodes: list[GNode] = field(default_factory=list)
    outputs: list[Ref] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)  # ("const", k): folded values

    def spec(self, ref: Ref) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of a value."""
        if ref[0] == "in":
            return self.inputs[ref[1]]
        if ref[0] == "const":
            c = self.consts[ref[1]]
            return c.shape, c.dtype
        node = self.nodes[ref[1]]
        if ref[0] == "aux":
            return node.aux[ref[2]]
        return node.shape, node.dtype

    def users(self) -> dict[int, list[int]]:
        """For each node index, the indices of the nodes that read it."""
        out: dict[int, list[int]] = {i: [] for i in range(len(self.nodes))}
        for i, n in enumerate(self.nodes):
            for a in n.args:
                if isinstance(a, tuple) and a and a[0] in ("n", "aux"):
                    out[a[1]].append(i)
        return out

    def key(self) -> tuple:
        """A structural, hashable description: equal keys compute the same function."""
        return (
            tuple((s, d) for s, d in self.inputs),
            tuple((n.op, _freeze(n.args), _freeze(n.attrs), n.shape, n.dtype) for n in self.nodes),
            tuple(self.outputs),
            tuple(_freeze(c) for c in self.consts),
        )

    def __str__(self) -> str:
        params = ", ".join(f"%in{k}: {_ty(s, d)}" for k, (s, d) in enumerate(self.inputs))
        lines = [f"graph({params}):"]
        for i, n in enumerate(self.nodes):
            args = ", ".join(ref_str(a) for a in n.args)
            attrs = "".join(f", {k}={_attr_str(v)}" for k, v in n.attrs.items())
            lines.append(f"  %{i}: {_ty(n.shape, n.dtype)} = {n.op}({args}{attrs})")
        lines.append(f"  return {', '.join(ref_str(r) for r in self.outputs)}")
        return "\n".join(lines)


def _ty(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{np.dtype(dtype).name}[{', '.join(map(str, shape))}]"


def ref_str(a: Any) -> str:
    """A value as graphs print it (anything else as its repr).

    >>> ref_str(("in", 0)), ref_str(("n", 3)), ref_str(("aux", 2, 0)), ref_str(1.5)
    ('%in0', '%3', '%2.0', '1.5')
    """
    if isinstance(a, tuple) and a and a[0] == "in":
        return f"%in{a[1]}"
    if isinstance(a, tuple) and a and a[0] == "n":
        return f"%{a[1]}"
    if isinstance(a, tuple) and a and a[0] == "aux":
        return f"%{a[1]}.{a[2]}"
    if isinstance(a, tuple) and a and a[0] == "const":
        return f"%const{a[1]}"
    return repr(a)


def _attr_str(v: Any) -> str:
    if isinstance(v, tuple) and v and v[0] in ("in", "n", "aux", "const"):
        return ref_str(v)
    s = repr(v)
    return s if len(s) < 60 else s[:57] + "..."


_SCALAR_TAGS = {bool: "bool", int: "int", float: "float"}
_REF_TAGS = frozenset({"in", "n", "aux", "const"})


def _freeze(v: Any) -> Any:
    """Hashable form of attributes (slices, dtypes, nested tuples/lists/dicts). Python
    numbers carry their type (2, 2.0 and True are equal but not the same op); a value
    reference and a tuple of ints (dims, shapes), the common cases, take a short path."""
    t = type(v)
    tag = _SCALAR_TAGS.get(t)
    if tag is not None:
        return (tag, v)
    if t is tuple:
        if 2 <= len(v) <= 3 and type(v[0]) is str and v[0] in _REF_TAGS \
                and type(v[1]) is int:
            return v
        if all(type(x) is int for x in v):
            return ("ints", v)
        return ("tuple", tuple([_freeze(x) for x in v]))
    if t is dict:
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if t is list:
        return ("list", tuple([_freeze(x) for x in v]))
    if v is None or t is str:
        return v
    if isinstance(v, slice):
        return ("slice", v.start, v.stop, v.step)
    if isinstance(v, np.ndarray):
        return ("array", v.shape, str(v.dtype), v.tobytes())
    if isinstance(v, np.dtype):
        return ("dtype", str(v))
    if isinstance(v, (bool, int, float)):  # subclasses (numpy scalars are not)
        return (type(v).__name__, v)
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_freeze(x) for x in v))
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)
