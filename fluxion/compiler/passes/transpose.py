"""Transposed products: ``permute(matmul(a, b))`` that swaps the last two dimensions
becomes ``matmul(bᵀ, aᵀ)``.

Backward graphs are full of these (a weight's gradient is ``(xᵀ g)ᵀ``). Read through the
transposed view, the consumer (the optimizer's update, a fused kernel) walks memory with
a large stride; as the product of swapped, transposed operands the same numbers come out
contiguous from BLAS, which takes transposed operands at no cost. Runs before ``simplify``,
which folds the operands' new permutes into any they already had."""

from __future__ import annotations

from fluxion.compiler.graph import GNode, Graph
from fluxion.compiler.passes.rewrite import is_ref, renumbering


def _swap(ndim: int) -> tuple[int, ...]:
    return (*range(ndim - 2), ndim - 1, ndim - 2)


def transpose_products(graph: Graph) -> Graph:
    """Rewrite every last-two-dims transpose of a product only that transpose reads.

    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2, 3), f32), ((3, 4), f32)],
    ...           [GNode("matmul", (("in", 0), ("in", 1)), {}, (2, 4), f32),
    ...            GNode("permute", (("n", 0),), {"dims": (1, 0)}, (4, 2), f32)], [("n", 1)])
    >>> [(n.op, n.shape) for n in transpose_products(g).nodes][1:]
    [('permute', (4, 3)), ('permute', (3, 2)), ('matmul', (4, 2))]
    """
    users = graph.users()
    outputs = {r for r in graph.outputs if is_ref(r)}
    new: list[GNode] = []
    index: dict[int, int] = {}
    renum = renumbering(index)
    for i, n in enumerate(graph.nodes):
        src = n.args[0] if n.args else None
        if n.op == "permute" and is_ref(src) and src[0] == "n" and len(n.shape) >= 2 \
                and tuple(n.attrs["dims"]) == _swap(len(n.shape)):
            m = graph.nodes[src[1]]
            if m.op == "matmul" and users[src[1]] == [i] and src not in outputs \
                    and all(is_ref(x) and len(graph.spec(x)[0]) >= 2 for x in m.args):
                a, b = m.args
                operands = []
                for x in (b, a):
                    shape, dtype = graph.spec(x)
                    t_shape = (*shape[:-2], shape[-1], shape[-2])
                    new.append(GNode("permute", (renum(x),), {"dims": _swap(len(shape))},
                                     t_shape, dtype))
                    operands.append(("n", len(new) - 1))
                index[i] = len(new)
                new.append(GNode("matmul", tuple(operands), {}, n.shape, n.dtype))
                continue
        index[i] = len(new)
        new.append(GNode(n.op, renum(n.args), {k: renum(v) for k, v in n.attrs.items()},
                         n.shape, n.dtype, n.aux))
    return Graph(list(graph.inputs), new, [renum(r) for r in graph.outputs],
                 list(graph.consts))
