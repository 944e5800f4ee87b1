"""Memory layouts: the element strides each value of a graph will have when it runs.

Generated kernels read their inputs in place, views included (a transposed gradient, an
expanded row, a slice of a fused projection), so they need each input's strides when the
C is written. Graph inputs, constants and the results of library ops are taken to be
C-contiguous; kernels write contiguous outputs; a view op's result follows from its
source's layout by applying the op to a memory-less probe. At run time the program checks
every kernel input against the layout its kernel was written for, and an input that
differs (a library op that returned another order, say) is never read wrongly: it is
copied to contiguous or the kernel runs its NumPy version (``runtime.Program``)."""

from __future__ import annotations

import numpy as np

from fluxion.compiler.graph import Graph, Ref
from fluxion.ops.registry import OPS


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous array of ``shape``.

    >>> c_strides((2, 3, 4))
    (12, 4, 1)
    """
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def probe(shape: tuple[int, ...], estrides: tuple[int, ...]) -> np.ndarray:
    """A memory-less stand-in with this layout (never read): for layout questions."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), shape, estrides)


def normalized(shape: tuple[int, ...], estrides: tuple[int, ...]) -> tuple[int, ...]:
    """Strides with those of length-1 dimensions zeroed (they never move the index, and
    NumPy gives them arbitrary values), so equal layouts compare equal.

    >>> normalized((2, 1, 3), (3, 99, 1))
    (3, 0, 1)
    """
    return tuple(0 if n == 1 else s for n, s in zip(shape, estrides))


def view_layout(op_name: str, shape: tuple[int, ...], estrides: tuple[int, ...],
                attrs: dict) -> tuple[tuple[int, ...], bool]:
    """Element strides of a view op's result on a source with this layout, and whether it
    is a view at all (a reshape that no view can express copies, as NumPy's does).

    >>> view_layout("permute", (2, 3), (3, 1), {"dims": (1, 0)})
    ((1, 3), True)
    >>> view_layout("reshape", (3, 2), (1, 3), {"shape": (6,)})  # a transpose, flattened
    ((1,), False)
    """
    if op_name == "permute":  # the hot cases by arithmetic, the rest on a probe
        return tuple(estrides[d] for d in attrs["dims"]), True
    if op_name == "reshape" and estrides == c_strides(shape) \
            and all(d >= 0 for d in attrs["shape"]):
        return c_strides(tuple(attrs["shape"])), True
    src = probe(shape, estrides)
    if op_name == "reshape":
        try:
            v = src.view()
            v.shape = attrs["shape"]
        except AttributeError:
            return c_strides(tuple(attrs["shape"])), False
        return v.strides, True
    return OPS[op_name].forward(np, src, **attrs).strides, True


def plan(graph: Graph) -> dict[Ref, tuple[int, ...]]:
    """The element strides of every node's result (graph inputs and constants are
    contiguous and not listed).

    >>> from fluxion.compiler.graph import GNode
    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2, 3), f32)], [GNode("permute", (("in", 0),), {"dims": (1, 0)},
    ...                                   (3, 2), f32)], [("n", 0)])
    >>> plan(g)
    {('n', 0): (1, 3)}
    """
    out: dict[Ref, tuple[int, ...]] = {}
    for i, n in enumerate(graph.nodes):
        op = OPS[n.op]
        src = n.args[0] if n.args else None
        if op.view and isinstance(src, tuple) and src[0] in ("n", "in", "const") \
                and not any(isinstance(v, tuple) and v and v[0] in ("n", "in", "aux")
                            for v in n.attrs.values()):
            shape, _ = graph.spec(src)
            strides = out.get(src, c_strides(shape))
            out[("n", i)] = view_layout(n.op, shape, strides, n.attrs)[0]
        else:
            out[("n", i)] = c_strides(n.shape)
    return out
