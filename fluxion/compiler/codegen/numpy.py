"""The NumPy renderer: the same fused kernels as Python source calling the op table's
NumPy kernels, so results are identical to eager. Used when no C compiler works."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.compiler.fusion import Kernel
from fluxion.compiler.graph import Graph
from fluxion.compiler.passes.rewrite import is_ref
from fluxion.ops.registry import OPS


def render_kernel(graph: Graph, k: Kernel) -> str:
    """Python source of one fused kernel."""
    params = [f"x{j}" for j in range(len(k.inputs))]
    names: dict[Any, str] = {r: f"x{j}" for j, r in enumerate(k.inputs)}
    lines = [f"def {k.name}({', '.join(params)}):"]
    for m in k.nodes:
        n = graph.nodes[m]
        args = ", ".join(names[a] if is_ref(a) else repr(a) for a in n.args)
        attrs = "".join(f", {key}={v!r}" for key, v in n.attrs.items())
        lines.append(f"    t{m} = OPS[{n.op!r}].forward(np, {args}{attrs})")
        names[("n", m)] = f"t{m}"
    outs = [f"np.asarray(t{m}, dtype=np.dtype({str(graph.nodes[m].dtype)!r}))"
            for m in (k.root, *k.extra)]
    lines.append(f"    return {', '.join(outs)}")  # a tuple with extra outputs
    return "\n".join(lines) + "\n"


def render(graph: Graph, kernels: list[Kernel]) -> str:
    """Python source of all kernels of a graph."""
    return "\n\n".join(render_kernel(graph, k) for k in kernels)


def load(source: str) -> dict[str, Any]:
    """Execute the rendered source; the kernels by name."""
    import fluxion  # dtype attributes print as fluxion.float32 and so on

    scope: dict[str, Any] = {"OPS": OPS, "np": np, "fluxion": fluxion}
    exec(compile(source, "<fluxion-numpy-kernels>", "exec"), scope)
    return scope
