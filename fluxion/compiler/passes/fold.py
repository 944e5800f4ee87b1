"""Constant folding: nodes whose inputs are all constants are computed once, at compile
time, and become constants of the graph."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.compiler.graph import Graph
from fluxion.compiler.passes.rewrite import is_ref, map_refs, node_refs, rebuild
from fluxion.ops.registry import OPS, run_kernel

_MAX_FOLD_ELEMENTS = 1 << 16  # larger results stay computed at run time (memory, cache)


def fold_constants(graph: Graph) -> Graph:
    """Evaluate constant subexpressions with the op table's kernels.

    >>> from fluxion.compiler.graph import GNode, Graph
    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2,), f32)], [GNode("exp", (("const", 0),), {}, (2,), f32),
    ...           GNode("add", (("in", 0), ("n", 0)), {}, (2,), f32)], [("n", 1)],
    ...           consts=[np.zeros(2, f32)])
    >>> f = fold_constants(g); [n.op for n in f.nodes], f.consts[-1]
    (['add'], array([1., 1.], dtype=float32))
    """
    consts = list(graph.consts)
    replace: dict[tuple, Any] = {}
    keep = [True] * len(graph.nodes)

    def value(r: tuple) -> Any:
        r = replace.get(r, r)
        return consts[r[1]] if is_ref(r) and r[0] == "const" else r

    for i, n in enumerate(graph.nodes):
        refs = [replace.get(r, r) for r in node_refs(n)]
        if not refs or any(r[0] != "const" for r in refs):
            continue
        if int(np.prod(n.shape)) > _MAX_FOLD_ELEMENTS:
            continue
        op = OPS[n.op]
        args = map_refs(n.args, value)
        attrs = {k: map_refs(v, value) for k, v in n.attrs.items()}
        out = run_kernel(op.forward, np, *args, **attrs)
        outs = out if op.n_aux else (out,)
        keep[i] = False
        for j, o in enumerate(outs):
            consts.append(np.asarray(o))
            replace[("n", i) if j == 0 else ("aux", i, j - 1)] = ("const", len(consts) - 1)
    folded = rebuild(graph, keep, replace)
    folded.consts = consts
    return folded
