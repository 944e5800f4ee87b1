"""Slices and their gradients: a slice that takes everything and the gradient of one are
the value itself; gradients of slices that together tile one dimension, added up (a fused
projection's split: ``q, k, v = qkv.split(d, -1)``), are one ``cat`` of the pieces instead
of three zero-filled arrays, two additions and three copies."""

from __future__ import annotations

from typing import Any

from fluxion.compiler.graph import GNode, Graph
from fluxion.compiler.passes.rewrite import is_ref, rebuild

Piece = tuple[int, int, Any]  # start, stop along the dimension, the value placed there


def _partial(key: Any, shape: tuple[int, ...]) -> list[tuple[int, int, int]] | None:
    """The dimensions a key of plain slices does not take whole, as (dim, start, stop);
    None for anything else (integers, steps, None, Ellipsis).

    >>> _partial((slice(None), slice(2, 5)), (3, 8))
    [(1, 2, 5)]
    >>> _partial((slice(0, 3),), (3, 8))
    []
    """
    if not isinstance(key, tuple) or len(key) > len(shape):
        return None
    out = []
    for d, (k, n) in enumerate(zip(key, shape)):
        if not isinstance(k, slice):
            return None
        start, stop, step = k.indices(n)
        if step != 1 or stop < start:
            return None
        if (start, stop) != (0, n):
            out.append((d, start, stop))
    return out


def fold_slices(graph: Graph) -> Graph:
    """Apply the rewrites above.

    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> sb = lambda r, lo, hi: GNode("slice_backward", (r,), {"shape": (2, 4),
    ...     "key": (slice(None), slice(lo, hi))}, (2, 4), f32)
    >>> g = Graph([((2, 1), f32), ((2, 3), f32)], [sb(("in", 0), 0, 1), sb(("in", 1), 1, 4),
    ...     GNode("add", (("n", 0), ("n", 1)), {}, (2, 4), f32)], [("n", 2)])
    >>> out = fold_slices(g).nodes[-1]  # the zero-filled pieces are left to dce
    >>> out.op, out.args, out.attrs
    ('cat', (('in', 0), ('in', 1)), {'dim': 1})
    """
    nodes = list(graph.nodes)
    keep = [True] * len(nodes)
    replace: dict[tuple, Any] = {}
    pieces: dict[int, tuple[int, list[Piece]]] = {}  # node -> (dim, pieces)

    def cur(r: Any) -> Any:
        while is_ref(r) and r in replace:
            r = replace[r]
        return r

    for i, n in enumerate(nodes):
        args = tuple(cur(a) for a in n.args)
        if n.op in ("slice", "slice_backward") and is_ref(args[0]):
            src_shape = graph.spec(args[0])[0]  # rewrites here never change a shape
            full = n.attrs["shape"] if n.op == "slice_backward" else src_shape
            partial = _partial(n.attrs["key"], tuple(full))
            if partial == [] and tuple(src_shape) == tuple(n.shape):  # the whole value
                keep[i] = False
                replace[("n", i)] = args[0]
                continue
            if n.op == "slice_backward" and partial is not None and len(partial) == 1:
                d, start, stop = partial[0]
                pieces[i] = (d, [(start, stop, args[0])])
        elif n.op == "add" and len(args) == 2 and all(
                is_ref(a) and a[0] == "n" and a[1] in pieces for a in args):
            (da, pa), (db, pb) = pieces[args[0][1]], pieces[args[1][1]]
            a_node, b_node = nodes[args[0][1]], nodes[args[1][1]]
            if da != db or not (a_node.shape == b_node.shape == n.shape) \
                    or not (a_node.dtype == b_node.dtype == n.dtype):
                continue
            merged = sorted(pa + pb, key=lambda p: p[0])
            if any(merged[j][1] > merged[j + 1][0] for j in range(len(merged) - 1)):
                continue  # overlapping pieces really add up
            covered = merged[0][0] == 0 and merged[-1][1] == n.shape[da] and all(
                merged[j][1] == merged[j + 1][0] for j in range(len(merged) - 1))
            if covered:
                nodes[i] = GNode("cat", tuple(p[2] for p in merged), {"dim": da}, n.shape,
                                 n.dtype)
            else:
                pieces[i] = (da, merged)
    return rebuild(Graph(graph.inputs, nodes, graph.outputs, graph.consts), keep, replace)
