"""Fusion: chains (trees) of elementwise ops become one kernel each, and a sum takes in
the elementwise kernel that feeds it.

A node joins its consumer's kernel when both are elementwise with a C expression in the
op table (GELU, a primitive for eager's sake, has one too), every reader of the producer is
in that kernel (one consumer, or several that all fuse there: a sigmoid that its gradient
reads three times) and the shapes agree (a producer that broadcasts is read by the kernel
instead). A producer that is also a graph output joins as well and is stored beside the
kernel's result (``Kernel.extra``): an optimizer's new moments and new weights come out of
one pass over its state. One cheap op of stored values (a bias add) read by several
kernels is computed again in each of them (``recomputed``) instead of stored by one and
loaded by the others. Everything else (matrix products, convolutions' unfold/fold,
reductions, indexing) runs as a library call."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fluxion.compiler.graph import Graph
from fluxion.compiler.passes.rewrite import is_ref, node_refs
from fluxion.ops.registry import OPS

# elementwise ops whose C expression does not match NumPy's semantics for every input
_NOT_IN_C = frozenset({"floor_divide", "remainder", "nan_to_num", "bitwise_and",
                       "bitwise_or", "bitwise_xor"})
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass
class Kernel:
    """A fused elementwise group: ``nodes`` in order, the last one is the output; or, with
    ``template``, one library op emitted as C (``codegen.templates``)."""

    name: str
    nodes: list[int]
    inputs: list[tuple] = field(default_factory=list)  # external values read
    template: bool = False
    # members that are graph outputs too, stored beside the root in the same pass (an
    # optimizer's new moment estimates beside the new weights)
    extra: list[int] = field(default_factory=list)

    @property
    def root(self) -> int:
        return self.nodes[-1]


def fusible(graph: Graph, i: int) -> bool:
    """Whether node ``i`` can be part of a generated C kernel."""
    n = graph.nodes[i]
    op = OPS[n.op]
    if op.c_expr is None or n.op in _NOT_IN_C:
        return False
    if n.op == "round" and n.attrs.get("decimals"):
        return False
    if n.dtype not in _FLOATS and n.dtype != np.dtype(bool):
        return False
    for a in n.args:
        if is_ref(a):
            _, d = graph.spec(a)
            if d not in _FLOATS and not (d == np.dtype(bool) and n.op in ("where", "cast")):
                return False
    if n.dtype == np.dtype(bool) and n.op == "cast":
        return True
    return n.dtype in _FLOATS or op.dtype_rule == "bool"


# one cheap operation: recomputed by every kernel that reads it rather than stored by one
_RECOMPUTED_OPS = frozenset({"add", "sub", "mul", "neg"})


def recomputed(graph: Graph, users: dict[int, list[int]], outputs: set[int]) -> set[int]:
    """Nodes each kernel that reads them computes again from their operands, so they never
    go to memory: one add, sub, mul or neg of stored values (graph inputs, library
    results) read by several kernels, each of its own shape or a sum of it (a bias add
    read by its activation and by the activation's gradient; attention's ``g * p`` read by
    the row sum and by the softmax gradient). Each extra reader saves the value's write
    and read, and at most reads the operands again.

    >>> from fluxion.compiler.graph import GNode
    >>> f32 = np.dtype(np.float32)
    >>> g = Graph([((4,), f32), ((4,), f32)], [
    ...     GNode("add", (("in", 0), ("in", 1)), {}, (4,), f32),
    ...     GNode("exp", (("n", 0),), {}, (4,), f32),
    ...     GNode("sum", (("n", 0),), {"dims": None, "keepdim": False}, (), f32)],
    ...     [("n", 1), ("n", 2)])
    >>> recomputed(g, g.users(), {1, 2})
    {0}
    """
    out: set[int] = set()
    for j, n in enumerate(graph.nodes):
        if n.op not in _RECOMPUTED_OPS or j in outputs or len(set(users[j])) < 2 \
                or not fusible(graph, j):
            continue
        # operands already in memory (not values some other kernel keeps to itself)
        if any(r[0] == "n" and fusible(graph, r[1]) for r in node_refs(n)):
            continue
        if all(_reads_whole(graph, u, j) for u in users[j]):
            out.add(j)
    return out


def _reads_whole(graph: Graph, u: int, j: int) -> bool:
    """Whether node ``u`` can take node ``j`` into its kernel: an elementwise node of
    ``j``'s shape, or a float sum of ``j`` alone."""
    n, m = graph.nodes[u], graph.nodes[j]
    if n.op == "sum":
        return n.args[0] == ("n", j) and n.dtype == m.dtype and n.dtype in _FLOATS \
            and len(node_refs(n)) == 1
    return n.shape == m.shape and fusible(graph, u)


def _fuse_sums(graph: Graph, kernels: list[Kernel], users: dict[int, list[int]],
               outputs: set[int], again: set[int]) -> None:
    """A float sum whose operand is an elementwise kernel takes that kernel in: the C
    evaluates the expression inside the reduction's loops, and the summand never goes to
    memory (a bias gradient's ``(g * mask).sum((0, 2, 3))``) or, when later steps read it
    too (the gradient that also flows into a matrix product), is stored from the same
    pass (``Kernel.extra``: the kernel runs at the sum's place, so only readers after the
    sum may read it). Any other float sum is a reduction kernel of its own."""
    by_root = {k.root: k for k in kernels}
    readers: dict[tuple, list[int]] = {}  # attributes' references included
    for i, n in enumerate(graph.nodes):
        for r in node_refs(n):
            readers.setdefault(r, []).append(i)
    for i, n in enumerate(graph.nodes):
        if n.op != "sum" or n.dtype not in _FLOATS or not n.args or not is_ref(n.args[0]):
            continue
        r = n.args[0]
        if graph.spec(r)[1] != n.dtype:
            continue
        if r[0] == "n" and r[1] in again:  # its summand computed in the loops
            kernels.append(Kernel("k", [r[1], i]))
            by_root[i] = kernels[-1]
            continue
        k = by_root.get(r[1]) if r[0] == "n" else None
        later = readers[r][1:]
        if k is not None and not k.extra and graph.nodes[k.root].op != "sum" \
                and readers[r][0] == i and later and all(u > i for u in later):
            k.nodes.append(i)
            k.extra = [r[1]]
            del by_root[r[1]]
            by_root[i] = k
            continue
        if k is None or k.extra or r[1] in outputs or users[r[1]] != [i]:
            # no producer to take in: the sum alone, still one C pass (double accumulator)
            kernels.append(Kernel("k", [i]))
            by_root[i] = kernels[-1]
            continue
        k.nodes.append(i)
        del by_root[r[1]]
        by_root[i] = k


def is_reduction(graph: Graph, k: Kernel) -> bool:
    """Whether kernel ``k`` ends in a sum (its producers evaluated inside the loops)."""
    return not k.template and graph.nodes[k.root].op == "sum"


def fuse(graph: Graph) -> tuple[list[Kernel], list[int]]:
    """Group the graph's nodes; returns the kernels and, in order, the schedule: each
    entry is a node index run as a library call or the root of a kernel."""
    users = graph.users()
    outputs = {r[1] for r in graph.outputs if is_ref(r) and r[0] == "n"}
    again = recomputed(graph, users, outputs)
    group_of: dict[int, int] = {}
    kernels: list[Kernel] = []
    for i, n in enumerate(graph.nodes):
        if not fusible(graph, i):
            continue
        members, extra = {i}, set()
        grew = True
        while grew:  # take in producer kernels all of whose readers are members by now
            grew = False
            for m in sorted(members, reverse=True):
                for r in node_refs(graph.nodes[m]):
                    j = r[1]
                    if r[0] != "n" or j in members or j not in group_of \
                            or graph.nodes[j].shape != n.shape:
                        continue
                    if j in again:  # a copy: its own kernel stays for the other readers
                        members.add(j)
                        grew = True
                        continue
                    if not all(u in members for u in users[j]):
                        continue
                    g = kernels[group_of[j]]
                    members.update(g.nodes)
                    extra.update(g.extra)
                    if g.root in outputs:  # stored as well: one pass reads the inputs once
                        extra.add(g.root)
                    g.nodes, g.extra = [], []
                    grew = True
        k = len(kernels)
        kernels.append(Kernel(f"k{k}", sorted(members), extra=sorted(extra)))
        for m in members:
            if m not in again or m == i:
                group_of[m] = k
    # a recomputed node's own kernel: every reader has a copy of it instead
    kernels = [k for k in kernels if k.nodes and not (k.nodes == [k.root] and k.root in again)]
    _fuse_sums(graph, kernels, users, outputs, again)
    kernels.sort(key=lambda k: k.root)
    for idx, k in enumerate(kernels):
        k.name = f"fused_{idx}"
        inside = set(k.nodes)
        seen: list[tuple] = []
        for m in k.nodes:
            for r in node_refs(graph.nodes[m]):
                if not (r[0] == "n" and r[1] in inside) and r not in seen:
                    seen.append(r)
        k.inputs = seen
    roots = {k.root: k for k in kernels}
    fused_members = {m for k in kernels for m in k.nodes if m != k.root}
    schedule = [i for i in range(len(graph.nodes)) if i not in fused_members]
    _ = roots
    return kernels, schedule


# row templates that take in the elementwise kernel feeding their first operand
ROW_TEMPLATES = ("softmax", "log_softmax", "layer_norm_backward")


def fuse_into_rows(graph: Graph, kernels: list[Kernel], schedule: list[int]) -> list[int]:
    """A softmax, log_softmax or layer norm gradient emitted from its C template takes in
    the elementwise kernel that feeds its first operand when nothing else reads that
    kernel's value (attention's scale and mask; the gradient times the layer norm's
    weight): the template computes each row of the producer into its output row and
    works there, so the values never go to memory and back. Returns the schedule without
    the absorbed kernels.

    >>> from fluxion.compiler.graph import GNode
    >>> f32 = np.dtype(np.float32)
    >>> g = Graph([((2, 4), f32)], [GNode("mul", (("in", 0), 0.5), {}, (2, 4), f32),
    ...           GNode("softmax", (("n", 0),), {"dim": -1}, (2, 4), f32)], [("n", 1)])
    >>> kernels, schedule = fuse(g)
    >>> kernels.append(Kernel("lib_1", [1], [("n", 0)], template=True))
    >>> fuse_into_rows(g, kernels, schedule), [(k.name, k.nodes) for k in kernels]
    ([1], [('lib_1', [0, 1])])
    """
    users = graph.users()
    outputs = {r[1] for r in graph.outputs if is_ref(r) and r[0] == "n"}
    producers = {k.root: k for k in kernels if not k.template}
    gone: set[int] = set()
    for k in kernels:
        n = graph.nodes[k.root]
        if not k.template or n.op not in ROW_TEMPLATES:
            continue
        r = n.args[0]
        p = producers.get(r[1]) if r[0] == "n" else None
        if p is None or p.extra or is_reduction(graph, p) or r[1] in outputs \
                or users[r[1]] != [k.root] or graph.nodes[r[1]].shape != n.shape:
            continue
        rest = [a for a in k.inputs[1:] if a not in p.inputs]  # the gradient's x
        k.nodes, k.inputs = p.nodes + k.nodes, [*p.inputs, *rest]
        gone.add(p.root)
    kernels[:] = [k for k in kernels if k.template or k.root not in gone]
    return [i for i in schedule if i not in gone]
