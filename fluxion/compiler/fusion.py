"""Fusion: chains (trees) of elementwise ops become one kernel each.

A node joins its consumer's kernel when both are elementwise with a C expression in the
op table, the producer has that one consumer and is not a graph output, and the shapes
agree (or the producer broadcasts into the consumer's loop). Everything else (matrix
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
    """A fused elementwise group: ``nodes`` in order, the last one is the output."""

    name: str
    nodes: list[int]
    inputs: list[tuple] = field(default_factory=list)  # external values read

    @property
    def root(self) -> int:
        return self.nodes[-1]


def fusible(graph: Graph, i: int) -> bool:
    """Whether node ``i`` can be part of a generated C kernel."""
    n = graph.nodes[i]
    op = OPS[n.op]
    if op.kind not in ("unary", "binary", "ternary") or op.c_expr is None or n.op in _NOT_IN_C:
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
        members = [i]
        for r in node_refs(n):
            if r[0] != "n":
                continue
            j = r[1]
            if j in group_of and len(users[j]) == 1 and j not in outputs \
                    and graph.nodes[j].shape == n.shape:
                members = kernels[group_of[j]].nodes + members
                kernels[group_of[j]].nodes = []
        k = len(kernels)
        kernels.append(Kernel(f"k{k}", sorted(set(members))))
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
