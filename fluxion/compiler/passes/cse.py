"""Common-subexpression elimination: one node per distinct (op, inputs, attributes)."""

from __future__ import annotations

from typing import Any

from fluxion.compiler.graph import Graph, _freeze
from fluxion.compiler.passes.rewrite import map_refs, rebuild


def cse(graph: Graph) -> Graph:
    """Replace a node computing the same thing as an earlier one by that one.

    >>> from fluxion.compiler.graph import GNode, Graph
    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> e = GNode("exp", (("in", 0),), {}, (2,), f32)
    >>> g = Graph([((2,), f32)], [e, GNode("exp", (("in", 0),), {}, (2,), f32),
    ...           GNode("add", (("n", 0), ("n", 1)), {}, (2,), f32)], [("n", 2)])
    >>> str(cse(g)).splitlines()[1:]
    ['  %0: float32[2] = exp(%in0)', '  %1: float32[2] = add(%0, %0)', '  return %1']
    """
    seen: dict[Any, int] = {}
    replace: dict[tuple, Any] = {}
    keep = [True] * len(graph.nodes)

    def canon(r: tuple) -> Any:
        return replace.get(r, r)

    for i, n in enumerate(graph.nodes):
        key = (n.op, _freeze(map_refs(n.args, canon)),
               _freeze({k: map_refs(v, canon) for k, v in n.attrs.items()}), n.shape, n.dtype)
        j = seen.get(key)
        if j is None:
            seen[key] = i
            continue
        keep[i] = False
        replace[("n", i)] = ("n", j)
        for a in range(len(n.aux)):
            replace[("aux", i, a)] = ("aux", j, a)
    return rebuild(graph, keep, replace)
