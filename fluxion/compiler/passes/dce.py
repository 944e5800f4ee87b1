"""Dead-code elimination: drop nodes no output depends on."""

from __future__ import annotations

from fluxion.compiler.graph import Graph
from fluxion.compiler.passes.rewrite import node_refs, rebuild


def dce(graph: Graph) -> Graph:
    """Keep only the nodes that the outputs read, directly or not.

    >>> from fluxion.compiler.graph import GNode, Graph
    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2,), f32)], [GNode("exp", (("in", 0),), {}, (2,), f32),
    ...                          GNode("neg", (("in", 0),), {}, (2,), f32)], [("n", 1)])
    >>> [n.op for n in dce(g).nodes]
    ['neg']
    """
    live = [False] * len(graph.nodes)
    stack = [r for r in graph.outputs if isinstance(r, tuple) and r[0] in ("n", "aux")]
    while stack:
        r = stack.pop()
        i = r[1]
        if live[i]:
            continue
        live[i] = True
        stack.extend(x for x in node_refs(graph.nodes[i]) if x[0] in ("n", "aux"))
    return rebuild(graph, live, {})
