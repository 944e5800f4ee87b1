"""Composite primitives split into the ops the other passes know: ``linear(x, w, b)`` ->
``permute(w)``, ``matmul``, ``add``. Capture records a linear layer as one node (a third of
the recording work, and of the backward's walk); the passes, fusion and the runtime then
see the product and the bias exactly as if the model had written ``x @ w.T + b``."""

from __future__ import annotations

from fluxion.compiler.graph import GNode, Graph
from fluxion.compiler.passes.rewrite import renumbering


def decompose(graph: Graph) -> Graph:
    """Every ``linear`` node as its transpose, product and (with a bias) sum.

    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2, 3), f32), ((4, 3), f32), ((4,), f32)],
    ...           [GNode("linear", (("in", 0), ("in", 1), ("in", 2)), {}, (2, 4), f32)],
    ...           [("n", 0)])
    >>> out = decompose(g)
    >>> [n.op for n in out.nodes], out.outputs
    (['permute', 'matmul', 'add'], [('n', 2)])
    """
    if not any(n.op == "linear" for n in graph.nodes):
        return graph
    index: dict[int, int] = {}
    ren = renumbering(index)
    nodes: list[GNode] = []
    for i, n in enumerate(graph.nodes):
        if n.op != "linear":
            index[i] = len(nodes)
            nodes.append(GNode(n.op, ren(n.args), {k: ren(v) for k, v in n.attrs.items()},
                               n.shape, n.dtype, n.aux))
            continue
        x, w, b = ren(n.args)
        w_shape = graph.spec(n.args[1])[0]
        nodes.append(GNode("permute", (w,), {"dims": (1, 0)}, tuple(w_shape[::-1]), n.dtype))
        nodes.append(GNode("matmul", (x, ("n", len(nodes) - 1)), {}, n.shape, n.dtype))
        if b is not None:
            nodes.append(GNode("add", (("n", len(nodes) - 1), b), {}, n.shape, n.dtype))
        index[i] = len(nodes) - 1
    return Graph(inputs=list(graph.inputs), nodes=nodes,
                 outputs=[ren(r) for r in graph.outputs], consts=list(graph.consts))
