"""The C renderer: one function per fused kernel, a flat loop over the output with
OpenMP across cores for large sizes; broadcast inputs index by coordinates."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from fluxion.compiler.fusion import Kernel
from fluxion.compiler.graph import Graph
from fluxion.compiler.passes.rewrite import is_ref
from fluxion.ops.registry import OPS

CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
         np.dtype(bool): "uint8_t"}
PARALLEL_MIN = 1 << 18  # below this, threads cost more than they save

_SIMD_MATH = ("exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "erf")
_SIMD_MATH2 = ("pow", "atan2")


def _simd_declarations() -> str:
    """Vector variants of libm functions (glibc's libmvec): the loops vectorise instead of
    calling expf one element at a time. Used when the toolchain links them."""
    lines = ["#ifdef FLUXION_SIMD_MATH"]
    for f in _SIMD_MATH:
        lines += ["#pragma omp declare simd notinbranch", f"float {f}f(float);",
                  "#pragma omp declare simd notinbranch", f"double {f}(double);"]
    for f in _SIMD_MATH2:
        lines += ["#pragma omp declare simd notinbranch", f"float {f}f(float, float);",
                  "#pragma omp declare simd notinbranch", f"double {f}(double, double);"]
    return "\n".join([*lines, "#endif"]) + "\n"


HEADER = "#include <stdint.h>\n#include <math.h>\n" + _simd_declarations() + \
    "#include <tgmath.h>\n"


def _literal(v: Any, ctype: str) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and math.isinf(v):
        return f"(({ctype})({'-' if v < 0 else ''}INFINITY))"
    if isinstance(v, float) and math.isnan(v):
        return f"(({ctype})NAN)"
    return f"(({ctype}){float(v)!r})"


def _index_expr(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str:
    """The element offset of a (contiguous, broadcast) input at output flat index i."""
    if tuple(in_shape) == tuple(out_shape):
        return "i"
    if int(np.prod(in_shape)) == 1:
        return "0"
    nd = len(out_shape)
    shape = (1,) * (nd - len(in_shape)) + tuple(in_shape)
    terms = []
    stride = 1
    for d in reversed(range(nd)):
        if shape[d] != 1:
            inner = int(np.prod(out_shape[d + 1:])) if d + 1 < nd else 1
            coord = f"((i / {inner}) % {out_shape[d]})" if inner > 1 else f"(i % {out_shape[d]})"
            terms.append(f"{coord} * {stride}" if stride != 1 else coord)
        stride *= shape[d]
    return " + ".join(terms) if terms else "0"


def _expr(graph: Graph, i: int, names: dict[Any, str]) -> str:
    """C for node i, its operands already named."""
    n = graph.nodes[i]
    op = OPS[n.op]
    ctype = CTYPE[n.dtype]
    operand_types = [CTYPE[graph.spec(a)[1]] for a in n.args if is_ref(a)]
    lit_type = operand_types[0] if operand_types else ctype
    ops = []
    for a in n.args:
        ops.append(names[a] if is_ref(a) else _literal(a, lit_type))
    if n.op == "cast":
        return f"({ops[0]} != 0)" if ctype == "uint8_t" else f"(({ctype}){ops[0]})"
    expr = op.c_expr or ""
    if n.op == "clamp":
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
        expr = expr.replace("lo", _literal(-math.inf if lo is None else lo, ctype))
        expr = expr.replace("hi", _literal(math.inf if hi is None else hi, ctype))
    for sym, val in zip("abc", ops):
        expr = re.sub(rf"\b{sym}\b", f"({val})", expr)
    return f"(({ctype})({expr}))"


def render_kernel(graph: Graph, k: Kernel) -> str:
    """C source of one fused kernel: ``void name(int64_t n, inputs..., out)``."""
    root = graph.nodes[k.root]
    params = ["int64_t n"]
    names: dict[Any, str] = {}
    loads = []
    for j, r in enumerate(k.inputs):
        shape, dtype = graph.spec(r)
        ct = CTYPE[dtype]
        params.append(f"const {ct}* restrict in{j}")
        names[r] = f"x{j}"
        loads.append(f"    const {ct} x{j} = in{j}[{_index_expr(shape, root.shape)}];")
    params.append(f"{CTYPE[root.dtype]}* out")  # may be an input's memory (in place)
    body = []
    for m in k.nodes:
        nm = f"t{m}"
        body.append(f"    const {CTYPE[graph.nodes[m].dtype]} {nm} = {_expr(graph, m, names)};")
        names[("n", m)] = nm
    body.append(f"    out[i] = t{k.root};")
    return (
        f"void {k.name}({', '.join(params)}) {{\n"
        f"  #pragma omp parallel for simd if (n > {PARALLEL_MIN})\n"
        f"  for (int64_t i = 0; i < n; i++) {{\n" + "\n".join(loads + body) + "\n  }\n}\n"
    )


def render(graph: Graph, kernels: list[Kernel]) -> str:
    """The C source of all kernels of a graph, each under its kernel name."""
    return HEADER + "\n".join(render_kernel(graph, k) for k in kernels)


def render_bodies(graph: Graph, kernels: list[Kernel]) -> dict[str, str]:
    """Each kernel's function with ``@`` for its name: equal bodies (a model's repeated
    layers) are one function, and the body is what the kernel cache is keyed by."""
    return {k.name: render_kernel(graph, k).replace(f"void {k.name}(", "void @(", 1)
            for k in kernels}
