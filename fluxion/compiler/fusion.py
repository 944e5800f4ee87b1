"""Fusion: chains (trees) of elementwise ops become one kernel each.

A node joins its consumer's kernel when both are elementwise with a C expression in the
op table (GELU, a primitive for eager's sake, has one too), every reader of the producer is
in that kernel (one consumer, or several that all fuse there: a sigmoid that its gradient
reads three times), it is not a graph output, and the shapes agree (a producer that
broadcasts is read by the kernel instead). Everything else (matrix
products, convolutions' unfold/fold, reductions, indexing) runs as a library call."""

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


def fuse(graph: Graph) -> tuple[list[Kernel], list[int]]:
    """Group the graph's nodes; returns the kernels and, in order, the schedule: each
    entry is a node index run as a library call or the root of a kernel."""
    users = graph.users()
    outputs = {r[1] for r in graph.outputs if is_ref(r) and r[0] == "n"}
    group_of: dict[int, int] = {}
    kernels: list[Kernel] = []
    for i, n in enumerate(graph.nodes):
        if not fusible(graph, i):
            continue
        members = {i}
        grew = True
        while grew:  # take in producer kernels all of whose readers are members by now
            grew = False
            for m in sorted(members, reverse=True):
                for r in node_refs(graph.nodes[m]):
                    j = r[1]
                    if r[0] != "n" or j in members or j not in group_of or j in outputs \
                            or graph.nodes[j].shape != n.shape \
                            or not all(u in members for u in users[j]):
                        continue
                    g = kernels[group_of[j]]
                    members.update(g.nodes)
                    g.nodes = []
                    grew = True
        k = len(kernels)
        kernels.append(Kernel(f"k{k}", sorted(members)))
        for m in members:
            group_of[m] = k
    kernels = [k for k in kernels if k.nodes]
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
