"""Rebuilding a graph after a pass decided which nodes stay and which values replace
others (the shared mechanics of every pass)."""

from __future__ import annotations

from typing import Any

from fluxion.compiler.graph import GNode, Graph


def is_ref(a: Any) -> bool:
    """Whether an argument refers to a value (rather than being a literal)."""
    return isinstance(a, tuple) and len(a) >= 2 and a[0] in ("in", "n", "aux", "const")


def map_refs(v: Any, fn: Any) -> Any:
    """Apply ``fn`` to every reference inside an argument or attribute."""
    if is_ref(v):
        return fn(v)
    if isinstance(v, tuple):
        return tuple(map_refs(x, fn) for x in v)
    if isinstance(v, list):
        return [map_refs(x, fn) for x in v]
    return v


def renumbering(index: dict[int, int]) -> Any:
    """A function giving an argument or attribute with every node reference renumbered
    by ``index`` (old node -> new), for passes that build a graph node by node.

    >>> renumbering({0: 2})((("n", 0), ("aux", 0, 1), ("in", 0), 3))
    (('n', 2), ('aux', 2, 1), ('in', 0), 3)
    """

    def ren(r: tuple) -> tuple:
        if r[0] == "n":
            return ("n", index[r[1]])
        if r[0] == "aux":
            return ("aux", index[r[1]], r[2])
        return r

    return lambda v: map_refs(v, ren)


def node_refs(node: GNode) -> list[tuple]:
    """Every value a node reads (arguments and references inside attributes)."""
    found: list[tuple] = []
    map_refs(node.args, lambda r: found.append(r) or r)
    map_refs(tuple(node.attrs.values()), lambda r: found.append(r) or r)
    return found


def rebuild(graph: Graph, keep: list[bool], replace: dict[tuple, Any]) -> Graph:
    """A new graph with only the kept nodes (renumbered) and references replaced."""

    def resolve(r: tuple) -> Any:
        seen = 0
        while is_ref(r) and r in replace and seen < 1000:
            r = replace[r]
            seen += 1
        return r

    new_index: dict[int, int] = {}
    nodes: list[GNode] = []

    def renumber(r: tuple) -> Any:
        r = resolve(r)
        if not is_ref(r):
            return r
        if r[0] == "n":
            return ("n", new_index[r[1]])
        if r[0] == "aux":
            return ("aux", new_index[r[1]], r[2])
        return r

    for i, n in enumerate(graph.nodes):
        if not keep[i]:
            continue
        new_index[i] = len(nodes)
        nodes.append(GNode(n.op, map_refs(n.args, renumber),
                           {k: map_refs(v, renumber) for k, v in n.attrs.items()},
                           n.shape, n.dtype, n.aux))
    return Graph(inputs=list(graph.inputs), nodes=nodes,
                 outputs=[map_refs(r, renumber) for r in graph.outputs],
                 consts=list(graph.consts))
