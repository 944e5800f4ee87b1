"""Algebraic simplification and view folding: identities that remove work.

x*1, 1*x, x+0, 0+x, x-0, x/1, x**1 -> x;  x**2 -> x*x;  neg(neg(x)) -> x;
cast/reshape/permute/expand to what x already is -> x;  reshape(reshape(x)) -> reshape(x);
permute(permute(x)) -> one permute (none if they cancel);
reshape(sum(x, d, keepdim=True)) dropping the kept dims -> sum(x, d) (a bias's gradient:
the reshape, a graph output, would be a step of its own at run time);
argmax(x, d) after max(x, d) -> its indices."""

from __future__ import annotations

from typing import Any

from fluxion.compiler.graph import GNode, Graph
from fluxion.compiler.passes.rewrite import is_ref, node_refs, rebuild


def _is(v: Any, number: float) -> bool:
    return not is_ref(v) and isinstance(v, (int, float)) and not isinstance(v, bool) \
        and v == number


def simplify(graph: Graph) -> Graph:
    """Apply the identities above (only where shape and dtype stay the same).

    >>> from fluxion.compiler.graph import GNode, Graph
    >>> import numpy as np
    >>> f32 = np.dtype("float32")
    >>> g = Graph([((2,), f32)], [GNode("mul", (("in", 0), 1), {}, (2,), f32),
    ...           GNode("neg", (("n", 0),), {}, (2,), f32),
    ...           GNode("neg", (("n", 1),), {}, (2,), f32)], [("n", 2)])
    >>> simplify(g).outputs
    [('in', 0)]
    """
    replace: dict[tuple, Any] = {}
    keep = [True] * len(graph.nodes)
    nodes = list(graph.nodes)

    def cur(r: Any) -> Any:
        while is_ref(r) and r in replace:
            r = replace[r]
        return r

    def same_spec(r: Any, n: GNode) -> bool:
        if not is_ref(r):
            return False
        s, d = graph.spec(r)
        return tuple(s) == tuple(n.shape) and d == n.dtype

    uses: dict[Any, int] = {}  # readers of each value (attributes too) and the outputs
    for r in [*(r for n in nodes for r in node_refs(n)), *filter(is_ref, graph.outputs)]:
        uses[r] = uses.get(r, 0) + 1
    max_nodes: dict[tuple, int] = {}  # (input, dim, op) -> max_dim/min_dim node
    for i, n in enumerate(nodes):
        args = tuple(cur(a) for a in n.args)
        if n.op in ("max_dim", "min_dim"):
            max_nodes[(args[0], n.attrs["dim"], n.op)] = i
        elif n.op in ("argmax", "argmin") and n.attrs.get("dim") is not None:
            j = max_nodes.get((args[0], n.attrs["dim"], "max_dim" if n.op == "argmax"
                               else "min_dim"))
            if j is not None:  # the indices max(dim) already computed (max-pool backward)
                nodes[i] = GNode("reshape", (("aux", j, 0),), {"shape": n.shape}, n.shape,
                                 n.dtype)
                continue
        target = None
        if n.op == "mul":
            a, b = args
            target = a if _is(b, 1) else b if _is(a, 1) else None
        elif n.op == "add":
            a, b = args
            target = a if _is(b, 0) else b if _is(a, 0) else None
        elif n.op == "sub":
            target = args[0] if _is(args[1], 0) else None
        elif n.op == "div":
            target = args[0] if _is(args[1], 1) else None
        elif n.op == "pow" and _is(args[1], 1):
            target = args[0]
        elif n.op == "neg" and is_ref(args[0]) and args[0][0] == "n" \
                and nodes[args[0][1]].op == "neg":
            target = cur(nodes[args[0][1]].args[0])
        elif n.op in ("cast", "reshape", "expand") or (
                n.op == "permute" and tuple(n.attrs["dims"]) == tuple(range(len(n.shape)))):
            target = args[0]
        if target is not None and same_spec(target, n):
            keep[i] = False
            replace[("n", i)] = target
            continue
        if n.op == "pow" and _is(args[1], 2):  # square as a product: cheaper, fusible
            nodes[i] = GNode("mul", (args[0], args[0]), {}, n.shape, n.dtype)
        elif n.op == "reshape" and is_ref(args[0]) and args[0][0] == "n" \
                and nodes[args[0][1]].op == "reshape":
            inner = nodes[args[0][1]]
            nodes[i] = GNode("reshape", (cur(inner.args[0]),), dict(n.attrs), n.shape, n.dtype)
        elif n.op == "reshape" and uses.get(n.args[0]) == 1 \
                and (dropped := _kept_dims_dropped(graph, nodes, args[0], n.shape)):
            nodes[i] = dropped
        elif n.op == "permute" and is_ref(args[0]) and args[0][0] == "n" \
                and nodes[args[0][1]].op == "permute":
            inner = nodes[args[0][1]]
            dims = tuple(inner.attrs["dims"][d] for d in n.attrs["dims"])
            src = cur(inner.args[0])
            if dims == tuple(range(len(dims))) and same_spec(src, n):  # they cancel
                keep[i] = False
                replace[("n", i)] = src
                continue
            nodes[i] = GNode("permute", (src,), {"dims": dims}, n.shape, n.dtype)
    return rebuild(Graph(graph.inputs, nodes, graph.outputs, graph.consts), keep, replace)


def _kept_dims_dropped(graph: Graph, nodes: list[GNode], r: Any,
                       shape: tuple[int, ...]) -> GNode | None:
    """``sum(x, d)`` if ``r`` is ``sum(x, d, keepdim=True)`` and ``shape`` is its shape
    without the kept dims, else None."""
    if not (is_ref(r) and r[0] == "n") or nodes[r[1]].op != "sum":
        return None
    s = nodes[r[1]]
    dims = s.attrs.get("dims")
    if not s.attrs.get("keepdim") or dims is None:
        return None
    nd = len(s.shape)
    kept = {d % nd for d in dims}
    if tuple(shape) != tuple(e for j, e in enumerate(s.shape) if j not in kept):
        return None
    return GNode("sum", s.args, {**s.attrs, "keepdim": False}, tuple(shape), s.dtype)
