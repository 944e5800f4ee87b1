"""Product orientation: ``a @ b`` becomes ``(bᵀ @ aᵀ)ᵀ`` where that is measured faster.

The same numbers come out of BLAS either way (a transposed operand is a flag, not a copy),
only in transposed memory; the readers (a fused bias and activation) read them through
the transposed view. Whether it pays depends on the shape, the
operands' layouts and the BLAS, so ``autotune.product_flipped`` times both once per shape
(``config.autotune`` off: never flipped). Only products that elementwise kernels alone
read are candidates: graph outputs keep their own layout, a product already read through
a transpose is ``transpose_products``' business, and a fused sum would read it with a
stride."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fluxion.compiler import autotune, layout
from fluxion.compiler.config import config
from fluxion.compiler.graph import GNode, Graph, Ref
from fluxion.compiler.passes.rewrite import is_ref, renumbering
from fluxion.ops import OPS

_ELEMENTWISE = ("unary", "binary", "ternary")

Chooser = Callable[[tuple, tuple, np.dtype], bool]


def orient_products(graph: Graph, flipped: Chooser | None = None) -> Graph:
    """Flip each 2-D float product the chooser (default: measured) says is faster flipped.

    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2, 3), f32), ((3, 4), f32)],
    ...           [GNode("matmul", (("in", 0), ("in", 1)), {}, (2, 4), f32),
    ...            GNode("relu", (("n", 0),), {}, (2, 4), f32)], [("n", 1)])
    >>> [(n.op, n.shape) for n in orient_products(g, lambda a, b, d: True).nodes]
    [('permute', (4, 3)), ('permute', (3, 2)), ('matmul', (4, 2)), ('permute', (2, 4)), \
('relu', (2, 4))]
    """
    if flipped is None:
        if not config.autotune:
            return graph
        flipped = autotune.product_flipped
    users = graph.users()
    outputs = {r for r in graph.outputs if is_ref(r)}
    planned = layout.plan(graph)

    def strides(r: Ref) -> tuple[int, ...]:
        return planned.get(r) or layout.c_strides(graph.spec(r)[0])

    def elementwise_only(i: int) -> bool:
        """Read only by elementwise kernels that write their own arrays (the tiled,
        transposed read of ``codegen.c``), never inside a fused sum (which would walk the
        transposed product with a stride) nor by another product."""
        return all(OPS[graph.nodes[u].op].kind in _ELEMENTWISE
                   and not any(graph.nodes[w].op == "sum" for w in users[u])
                   for u in users[i])

    flip = set()
    for i, n in enumerate(graph.nodes):
        if n.op == "matmul" and ("n", i) not in outputs and n.dtype.kind == "f" \
                and len(n.shape) == 2 and all(is_ref(x) and len(graph.spec(x)[0]) == 2
                                              for x in n.args) and elementwise_only(i):
            a, b = n.args
            if flipped((graph.spec(a)[0], strides(a)), (graph.spec(b)[0], strides(b)),
                       n.dtype):
                flip.add(i)
    if not flip:
        return graph
    new: list[GNode] = []
    index: dict[int, int] = {}
    ren = renumbering(index)

    def transposed(x: Ref) -> Ref:
        """``xᵀ``: the array under x when x is itself a transpose, else a new view."""
        if x[0] == "n":
            src = graph.nodes[x[1]]
            if src.op == "permute" and tuple(src.attrs["dims"]) == (1, 0) \
                    and is_ref(src.args[0]):
                return ren(src.args[0])
        shape, dtype = graph.spec(x)
        new.append(GNode("permute", (ren(x),), {"dims": (1, 0)}, shape[::-1], dtype))
        return ("n", len(new) - 1)

    for i, n in enumerate(graph.nodes):
        if i in flip:
            a, b = n.args
            operands = (transposed(b), transposed(a))
            new.append(GNode("matmul", operands, {}, n.shape[::-1], n.dtype))
            index[i] = len(new)
            new.append(GNode("permute", (("n", len(new) - 1),), {"dims": (1, 0)}, n.shape,
                             n.dtype))
            continue
        index[i] = len(new)
        new.append(GNode(n.op, ren(n.args),
                         {k: ren(v) for k, v in n.attrs.items()},
                         n.shape, n.dtype, n.aux))
    return Graph(list(graph.inputs), new, [ren(r) for r in graph.outputs],
                 list(graph.consts))
