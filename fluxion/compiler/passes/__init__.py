"""Graph passes: each takes a ``Graph`` and returns an optimised ``Graph``.

Run in order by ``optimize``: composite primitives split (``linear``), transposed products
as products of transposes, algebraic
simplification (with view folding), slices (whole ones dropped, gradients of a split
joined by one ``cat``), constant folding, products turned
around where measured faster, common-subexpression elimination, dead-code
elimination."""

from __future__ import annotations

from collections.abc import Callable

from fluxion.compiler.graph import Graph
from fluxion.compiler.passes.cse import cse
from fluxion.compiler.passes.dce import dce
from fluxion.compiler.passes.decompose import decompose
from fluxion.compiler.passes.fold import fold_constants
from fluxion.compiler.passes.orient import orient_products
from fluxion.compiler.passes.simplify import simplify
from fluxion.compiler.passes.slices import fold_slices
from fluxion.compiler.passes.transpose import transpose_products

PASSES: list[tuple[str, Callable[[Graph], Graph]]] = [
    ("decompose", decompose),
    ("transpose_products", transpose_products),
    ("simplify", simplify),
    ("fold_slices", fold_slices),
    ("fold_constants", fold_constants),
    ("orient_products", orient_products),
    ("cse", cse),
    ("dce", dce),
]


def optimize(graph: Graph, trace: list[tuple[str, Graph]] | None = None) -> Graph:
    """All passes in order; ``trace`` collects the graph after each one."""
    for name, fn in PASSES:
        graph = fn(graph)
        if trace is not None:
            trace.append((name, graph))
    return graph


__all__ = ["PASSES", "cse", "dce", "decompose", "fold_constants", "fold_slices", "optimize",
           "orient_products", "simplify", "transpose_products"]
