"""The C renderer: one function per fused kernel, the output's shape walked by the fewest
loops its operands allow (a flat one when they are contiguous), the inner loop vectorised,
the outer one spread across cores by OpenMP for large sizes; broadcast and strided (view)
inputs are read in place through their strides."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from fluxion.compiler.codegen import templates
from fluxion.compiler.fusion import Kernel, is_reduction
from fluxion.compiler.graph import Graph
from fluxion.compiler.layout import c_strides
from fluxion.compiler.passes.rewrite import is_ref
from fluxion.ops.registry import OPS

CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
         np.dtype(bool): "uint8_t"}
# a value held in a register: bools as int, since a uint8_t between two float steps makes
# GCC size the simd loop for bytes and give up on it (a ReLU backward ran 7x slower)
VTYPE = {**CTYPE, np.dtype(bool): "int"}
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


STREAM_MIN_BYTES = 8 << 20  # outputs this large are far beyond the caches: stream them
# elements computed into an L1 buffer, then streamed out (256 ran the bandwidth chain
# 10-30 % faster than 1024 on the benchmark machine)
STREAM_BLOCK = 256


def _stream_helpers() -> str:
    """Non-temporal stores from a 64-byte aligned L1 buffer: a large output goes straight to
    memory instead of being read into the cache first (what makes ``memcpy`` fast). The
    compilers' builtins on 64-byte vectors (``immintrin.h`` would add 0.1 s to every
    compile); plain stores where neither applies."""
    lines = ["typedef float fluxion_vps __attribute__((vector_size(64)));",
             "typedef double fluxion_vpd __attribute__((vector_size(64)));"]
    for ctype, vec, width, gcc in (("float", "ps", 16, "movntps"), ("double", "pd", 8, "movntpd")):
        lines += [
            f"static inline void fluxion_stream_{vec}({ctype}* restrict dst, "
            f"const {ctype}* restrict src, int64_t m) {{",
            f"  for (int64_t i = 0; i < m; i += {width}) {{",
            f"    const fluxion_v{vec} v = *(const fluxion_v{vec}*)(src + i);",
            "#if defined(__clang__)",
            f"    __builtin_nontemporal_store(v, (fluxion_v{vec}*)(dst + i));",
            "#elif defined(__GNUC__) && defined(__AVX512F__)",
            f"    __builtin_ia32_{gcc}512(dst + i, v);",
            "#else",
            f"    *(fluxion_v{vec}*)(dst + i) = v;",
            "#endif",
            "  }",
            "}"]
    lines += ["static inline void fluxion_fence(void) {",
              "#if defined(__GNUC__) && (defined(__SSE__) || defined(__x86_64__))",
              "  __builtin_ia32_sfence();",
              "#endif", "}"]
    return "\n".join(lines) + "\n"


# exp for float32: x = n ln2 + r, a degree-6 polynomial for exp(r) (Cephes'
# coefficients), 2^n through the exponent bits; within 1 ulp of the correctly rounded
# value (NumPy's own float32 exp: 2). Inline, so fused loops vectorise with no call:
# libmvec's expf sends a whole vector to its scalar path when a lane needs care (softmax
# over masked -inf rows ran slower than NumPy), and the fused chain of the bandwidth
# benchmark ran 20 % faster with this one. Its multiply-adds are fused where the CPU has
# the instruction (FLUXION_FMA): C11 (-std=c11) contracts nothing on its own, rightly for
# the model's own a * b + c, which rounds twice as in eager, but here one rounding is
# faster (the chain 11.8 -> 9.9 ms) and no less accurate (both forms are tested).
# - fluxion_expf: only on [-87, 88] (templates clamp their inputs to it themselves);
# - fluxion_exp32: every float. The input is clamped to [-104, 89] (beyond, the result is
#   0 or inf anyway) and 2^n applied in two halves, so results under FLT_MIN round to
#   subnormals as the exact exp does and overflow gives inf; nan stays nan (r is nan).
_EXP_HELPER = """#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define FLUXION_FMA(a, b, c) __builtin_fmaf(a, b, c)
#else
#define FLUXION_FMA(a, b, c) ((a) * (b) + (c))
#endif
static inline float fluxion_exp_poly(float x, float n) {
  const float r = FLUXION_FMA(n, 2.12194440e-4f, FLUXION_FMA(n, -0.693359375f, x));
  float p = 1.9875691500e-4f;
  p = FLUXION_FMA(p, r, 1.3981999507e-3f);
  p = FLUXION_FMA(p, r, 8.3334519073e-3f);
  p = FLUXION_FMA(p, r, 4.1665795894e-2f);
  p = FLUXION_FMA(p, r, 1.6666665459e-1f);
  p = FLUXION_FMA(p, r, 5.0000001201e-1f);
  return FLUXION_FMA(p * r, r, r) + 1.0f;
}
static inline float fluxion_pow2(int32_t m) {
  const int32_t bits = (m + 127) << 23;
  float s;
  __builtin_memcpy(&s, &bits, 4);
  return s;
}
static inline float fluxion_expf(float x) {
  const float n = FLUXION_FMA(x, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
  return fluxion_exp_poly(x, n) * fluxion_pow2((int32_t)n);
}
static inline float fluxion_exp32(float x) {
  const float c = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  const float n = FLUXION_FMA(c, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
  const int32_t m = (int32_t)n, h = m >> 1;
  return fluxion_exp_poly(c, n) * fluxion_pow2(h) * fluxion_pow2(m - h);
}
"""

# An 8x8 float32 block transposed in registers: eight row loads, three rounds of lane
# shuffles, eight row stores (what an AVX transpose does with unpack/shuffle/permute, in
# the compilers' own vector types: no immintrin.h, see _stream_helpers). ``_tiled`` copies
# a transposed operand's tiles with it: 3x faster than element by element (the MLP's bias
# and ReLU over a flipped (512, 128) product: 49 -> 15 us). Only with AVX: lowered to SSE,
# the 8-wide shuffles ran 4x slower than the plain copy. dst[m * ds + k] = src[k * ss + m].
_TRANSPOSE_HELPER = """#if defined(__AVX__) && defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define FLUXION_TR8 1
typedef float fluxion_v8 __attribute__((vector_size(32)));
typedef float fluxion_v8u __attribute__((vector_size(32), aligned(4)));
#define FLUXION_LO(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 4, 12, 5, 13)
#define FLUXION_HI(a, b) __builtin_shufflevector(a, b, 2, 10, 3, 11, 6, 14, 7, 15)
#define FLUXION_LO2(a, b) __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13)
#define FLUXION_HI2(a, b) __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15)
#define FLUXION_LO4(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11)
#define FLUXION_HI4(a, b) __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15)
static inline void fluxion_tr8(const float* src, int64_t ss, float* dst, int64_t ds) {
  const fluxion_v8 r0 = *(const fluxion_v8u*)src, r1 = *(const fluxion_v8u*)(src + ss),
    r2 = *(const fluxion_v8u*)(src + 2 * ss), r3 = *(const fluxion_v8u*)(src + 3 * ss),
    r4 = *(const fluxion_v8u*)(src + 4 * ss), r5 = *(const fluxion_v8u*)(src + 5 * ss),
    r6 = *(const fluxion_v8u*)(src + 6 * ss), r7 = *(const fluxion_v8u*)(src + 7 * ss);
  const fluxion_v8 t0 = FLUXION_LO(r0, r1), t1 = FLUXION_HI(r0, r1), t2 = FLUXION_LO(r2, r3),
    t3 = FLUXION_HI(r2, r3), t4 = FLUXION_LO(r4, r5), t5 = FLUXION_HI(r4, r5),
    t6 = FLUXION_LO(r6, r7), t7 = FLUXION_HI(r6, r7);
  const fluxion_v8 u0 = FLUXION_LO2(t0, t2), u1 = FLUXION_HI2(t0, t2), u2 = FLUXION_LO2(t1, t3),
    u3 = FLUXION_HI2(t1, t3), u4 = FLUXION_LO2(t4, t6), u5 = FLUXION_HI2(t4, t6),
    u6 = FLUXION_LO2(t5, t7), u7 = FLUXION_HI2(t5, t7);
  *(fluxion_v8u*)dst = FLUXION_LO4(u0, u4);
  *(fluxion_v8u*)(dst + ds) = FLUXION_LO4(u1, u5);
  *(fluxion_v8u*)(dst + 2 * ds) = FLUXION_LO4(u2, u6);
  *(fluxion_v8u*)(dst + 3 * ds) = FLUXION_LO4(u3, u7);
  *(fluxion_v8u*)(dst + 4 * ds) = FLUXION_HI4(u0, u4);
  *(fluxion_v8u*)(dst + 5 * ds) = FLUXION_HI4(u1, u5);
  *(fluxion_v8u*)(dst + 6 * ds) = FLUXION_HI4(u2, u6);
  *(fluxion_v8u*)(dst + 7 * ds) = FLUXION_HI4(u3, u7);
}
#endif
#endif
"""

HEADER = "#include <stdint.h>\n#include <stdlib.h>\n#include <math.h>\n" + _simd_declarations() + \
    "#include <tgmath.h>\n" + _stream_helpers() + _EXP_HELPER + _TRANSPOSE_HELPER


def _literal(v: Any, ctype: str) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and math.isinf(v):
        return f"(({ctype})({'-' if v < 0 else ''}INFINITY))"
    if isinstance(v, float) and math.isnan(v):
        return f"(({ctype})NAN)"
    return f"(({ctype}){float(v)!r})"


def broadcast_strides(in_shape: tuple[int, ...], estrides: tuple[int, ...],
                      out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """An input's element strides in the output's index space (0 where it broadcasts).

    >>> broadcast_strides((3,), (1,), (2, 3))
    (0, 1)
    >>> broadcast_strides((2, 1), (1, 1), (2, 3))
    (1, 0)
    """
    lead = len(out_shape) - len(in_shape)
    return tuple(0 if d < lead or in_shape[d - lead] == 1 else estrides[d - lead]
                 for d in range(len(out_shape)))


def loop_nest(shape: tuple[int, ...], operands: list[tuple[int, ...]]
              ) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The fewest loops that walk ``shape``: length-1 dimensions dropped and neighbours
    merged wherever every operand (element strides per dimension) steps through them as
    through one, so contiguous and broadcast operands leave a flat inner loop.

    >>> loop_nest((2, 3, 4), [(12, 4, 1), (12, 4, 1)])  # contiguous: one loop
    ((24,), [(1,), (1,)])
    >>> loop_nest((2, 3, 4), [(12, 4, 1), (0, 0, 1)])  # a row broadcast: two
    ((6, 4), [(4, 1), (0, 1)])
    """
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    ext = [shape[d] for d in dims]
    st = [[s[d] for d in dims] for s in operands]
    d = len(ext) - 2
    while d >= 0:
        if all(s[d] == s[d + 1] * ext[d + 1] for s in st):
            ext[d] *= ext.pop(d + 1)
            for s in st:
                s[d] = s.pop(d + 1)
        d -= 1
    return tuple(ext), [tuple(s) for s in st]


class Sizes:
    """The shape-derived numbers of one kernel (extents, strides, their products).

    Static kernels have them written into the C. Dynamic ones (``fluxion.compile(...,
    dynamic=True)``, or once a function has seen its shapes change) read them from an
    ``int64_t`` array ``sz`` passed at run time, so a new batch size is the same C function
    (a kernel-cache hit, no compiler run). 0 and 1 stay literal either way: they decide the
    loops' structure (a broadcast, a contiguous inner loop that vectorises).

    >>> s = Sizes(dynamic=True)
    >>> s(64), s(1), s(10), s.values
    ('sz[0]', '1', 'sz[1]', [64, 10])
    >>> Sizes(dynamic=False)(64)
    '64'
    """

    def __init__(self, dynamic: bool = False) -> None:
        self.dynamic = dynamic
        self.values: list[int] = []

    def __call__(self, v: int) -> str:
        v = int(v)
        if not self.dynamic or v in (0, 1):
            return str(v)
        self.values.append(v)
        return f"sz[{len(self.values) - 1}]"

    def param(self) -> list[str]:
        """The parameter the body reads its sizes from (none when all are literal)."""
        return ["const int64_t* restrict sz"] if self.values else []


def _index(strides: tuple[int, ...], sizes: Sizes | None = None, var: str = "i") -> str:
    size = sizes or Sizes()
    terms = [f"{var}{d}" if s == 1 else f"{var}{d} * {size(s)}"
             for d, s in enumerate(strides) if s]
    return " + ".join(terms) if terms else "0"


_EXP_CALL = re.compile(r"\bexp\(")


def _expr(graph: Graph, i: int, names: dict[Any, str]) -> str:
    """C for node i, its operands already named."""
    n = graph.nodes[i]
    op = OPS[n.op]
    ctype = VTYPE[n.dtype]
    operand_types = [CTYPE[graph.spec(a)[1]] for a in n.args if is_ref(a)]
    lit_type = operand_types[0] if operand_types else ctype
    ops = []
    for a in n.args:
        ops.append(names[a] if is_ref(a) else _literal(a, lit_type))
    if n.op == "cast":
        return f"({ops[0]} != 0)" if n.dtype == bool else f"(({ctype}){ops[0]})"
    expr = (op.c_expr(**n.attrs) if callable(op.c_expr) else op.c_expr) or ""
    if n.op == "clamp":
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
        expr = expr.replace("lo", _literal(-math.inf if lo is None else lo, ctype))
        expr = expr.replace("hi", _literal(math.inf if hi is None else hi, ctype))
    for sym, val in zip("abcd", ops):
        expr = re.sub(rf"\b{sym}\b", f"({val})", expr)
    if ctype == "float":  # the inline exp (every float32 operand; see _EXP_HELPER)
        expr = _EXP_CALL.sub("fluxion_exp32(", expr)
    if n.dtype == bool:  # 0 or 1 whatever the C gives (isnan's nonzero)
        return f"(({expr}) != 0)"
    return f"(({ctype})({expr}))"


def render_kernel(graph: Graph, k: Kernel,
                  layouts: dict[Any, tuple[int, ...]] | None = None,
                  sizes: Sizes | None = None) -> str:
    """C source of one fused kernel: ``void name(int64_t n, inputs..., out)``.

    ``layouts`` gives the element strides of inputs that are not contiguous (views), which
    are read in place. The loops are the output's shape collapsed as far as every operand
    allows (``loop_nest``); a single loop runs to ``n``, so kernels that differ only in
    size share one function."""
    root = graph.nodes[k.root]
    params = ["int64_t n"]
    names: dict[Any, str] = {}
    operands = []
    for j, r in enumerate(k.inputs):
        shape, dtype = graph.spec(r)
        params.append(f"const {CTYPE[dtype]}* restrict in{j}")
        names[r] = f"x{j}"
        own = (layouts or {}).get(r) or c_strides(shape)
        operands.append(broadcast_strides(shape, own, root.shape))
    params.append(f"{CTYPE[root.dtype]}* out")  # may be an input's memory (in place)
    params += [f"{CTYPE[graph.nodes[e].dtype]}* out{j + 1}" for j, e in enumerate(k.extra)]
    ext, strides = loop_nest(root.shape, [c_strides(root.shape), *operands])
    if not ext:  # a single element
        ext, strides = (1,), [(0,)] * len(strides)
    size = sizes if sizes is not None else Sizes()
    if len(ext) > 1:  # a flat loop runs to n and has no sizes to pass
        ext = tuple(size(e) for e in ext)  # type: ignore[misc]
    # each input's element index, rendered once (at run-time sizes every rendering takes
    # new ``sz`` slots, so a second one would not be the same text)
    index = [_index(strides[j + 1], size) for j in range(len(k.inputs))]
    loads = [f"    const {CTYPE[graph.spec(r)[1]]} x{j} = in{j}[{index[j]}];"
             for j, r in enumerate(k.inputs)]
    body = []
    for pos, m in enumerate(k.nodes):  # named by position: a repeated layer's kernels
        nm = f"t{pos}"                   # are the same text, so one function
        body.append(f"    const {VTYPE[graph.nodes[m].dtype]} {nm} = {_expr(graph, m, names)};")
        names[("n", m)] = nm
    for j, e in enumerate(k.extra):  # outputs stored beside the root, same positions
        body.append(f"    out{j + 1}[{_index(strides[0], size)}] = t{k.nodes.index(e)};")
    body.append(f"    out[{_index(strides[0], size)}] = t{len(k.nodes) - 1};")
    inner = "\n".join(loads + body)
    params[1:1] = size.param()
    if len(ext) == 1:
        return _flat_kernel(k.name, params, loads, body, CTYPE[root.dtype])
    lines = [f"void {k.name}({', '.join(params)}) {{",
             f"  #pragma omp parallel for if (n > {PARALLEL_MIN})"]
    across = [j for j, r in enumerate(k.inputs) if strides[j + 1][-1] > 1]
    if across:
        return "\n".join(lines + _tiled(k, graph, ext, strides, index, across, inner, size)) + "\n"
    for d, e in enumerate(ext):
        if d == len(ext) - 1:
            lines.append("  " * (d + 1) + "#pragma omp simd")
        lines.append("  " * (d + 1) + f"for (int64_t i{d} = 0; i{d} < {e}; i{d}++) {{")
    lines.append(inner)
    lines += ["  " * (d + 1) + "}" for d in reversed(range(len(ext)))]
    return "\n".join([*lines, "}"]) + "\n"


TILE = 32  # elements a side of the blocks a transposed operand is read in


def _tiled(k: Kernel, graph: Graph, ext: tuple, strides: list, index: list[str],
           across: list[int], inner: str, size: Sizes) -> list[str]:
    """The loops of a kernel some of whose inputs are read across their rows (a
    transpose): the last two dims walk TILE x TILE blocks, and each such input's block is
    first copied into a local array along its own rows, then read from there along the
    output's. Read straight, every element of a row would be a new cache line (10 times
    slower than a contiguous read). A float32 input whose tile rows are its own rows is
    copied 8x8 blocks at a time (``fluxion_tr8``) where the helper exists; edge tiles,
    other dtypes and other layouts are copied element by element."""
    d = len(ext) - 2
    a, b = f"i{d}", f"i{d + 1}"
    lines = [f"  for (int64_t i{o} = 0; i{o} < {ext[o]}; i{o}++) {{" for o in range(d)]
    pad = "  " * (d + 1)
    lines += [f"{pad}for (int64_t {a}b = 0; {a}b < {ext[d]}; {a}b += {TILE}) {{",
              f"{pad}for (int64_t {b}b = 0; {b}b < {ext[d + 1]}; {b}b += {TILE}) {{",
              f"{pad}  const int64_t {a}e = {a}b + {TILE} < {ext[d]} ? {a}b + {TILE} : "
              f"{ext[d]};",
              f"{pad}  const int64_t {b}e = {b}b + {TILE} < {ext[d + 1]} ? {b}b + {TILE} : "
              f"{ext[d + 1]};"]
    for j in across:
        ctype = CTYPE[graph.spec(k.inputs[j])[1]]
        st = strides[j + 1]
        lines.append(f"{pad}  {ctype} tile{j}[{TILE}][{TILE}];")
        if ctype == "float" and st[d] == 1:  # rows along the tile's: 8x8 blocks at a time
            lines += ["#ifdef FLUXION_TR8",
                      f"{pad}  if ({a}e - {a}b == {TILE} && {b}e - {b}b == {TILE}) {{",
                      f"{pad}    for (int64_t {b} = {b}b; {b} < {b}e; {b} += 8)",
                      f"{pad}      for (int64_t {a} = {a}b; {a} < {a}e; {a} += 8)",
                      f"{pad}        fluxion_tr8(&in{j}[{index[j]}], {size(st[d + 1])}, "
                      f"&tile{j}[{a} - {a}b][{b} - {b}b], {TILE});",
                      f"{pad}  }} else", "#endif"]
        lines += [f"{pad}  for (int64_t {b} = {b}b; {b} < {b}e; {b}++)",
                  f"{pad}    for (int64_t {a} = {a}b; {a} < {a}e; {a}++)",
                  f"{pad}      tile{j}[{a} - {a}b][{b} - {b}b] = "
                  f"in{j}[{index[j]}];"]
    for j in across:  # the loads read the tile instead
        inner = inner.replace(f"in{j}[{index[j]}]",
                              f"tile{j}[{a} - {a}b][{b} - {b}b]")
    lines += [f"{pad}  for (int64_t {a} = {a}b; {a} < {a}e; {a}++) {{",
              f"{pad}    #pragma omp simd",
              f"{pad}    for (int64_t {b} = {b}b; {b} < {b}e; {b}++) {{",
              inner, f"{pad}    }}", f"{pad}  }}", f"{pad}}}", f"{pad}}}"]
    return lines + ["  " * (o + 1) + "}" for o in reversed(range(d))] + ["}"]


def _offset(parts: list[tuple[str, tuple[int, ...]]], sizes: Sizes) -> str:
    """The element offset ``sum(var_d * stride_d)`` over loop variables with prefixes."""
    terms = [t for v, st in parts if (t := _index(st, sizes, v)) != "0"]
    return " + ".join(terms) or "0"


def render_reduction(graph: Graph, k: Kernel,
                     layouts: dict[Any, tuple[int, ...]] | None = None,
                     sizes: Sizes | None = None) -> str:
    """C source of a kernel that ends in a sum: the kept dimensions are the outer loops,
    the reduced ones the inner loops, where the fused producers are evaluated and added
    up in a double accumulator (so float32 loses less than NumPy's pairwise float32)."""
    root = graph.nodes[k.root]
    src = root.args[0]
    shape = graph.spec(src)[0]
    dims = root.attrs.get("dims")
    reduced = set(range(len(shape))) if dims is None else {d % max(len(shape), 1)
                                                           for d in dims}
    kept_shape = tuple(e for d, e in enumerate(shape) if d not in reduced)
    out_c = dict(zip([d for d in range(len(shape)) if d not in reduced],
                     c_strides(kept_shape)))
    params = ["int64_t n"]
    operands = []
    for j, r in enumerate(k.inputs):
        ishape, dtype = graph.spec(r)
        params.append(f"const {CTYPE[dtype]}* restrict in{j}")
        own = (layouts or {}).get(r) or c_strides(ishape)
        operands.append(broadcast_strides(ishape, own, shape))
    params.append(f"{CTYPE[root.dtype]}* out")
    # the summand stored as well (read by later steps too), contiguous like the input
    params += [f"{CTYPE[graph.nodes[e].dtype]}* out{j + 1}" for j, e in enumerate(k.extra)]
    operands += [c_strides(shape)] * len(k.extra)
    kd = [d for d in range(len(shape)) if d not in reduced]
    rd = sorted(reduced)
    k_ext, k_st = loop_nest(tuple(shape[d] for d in kd),
                            [tuple(out_c[d] for d in kd), *[tuple(o[d] for d in kd)
                                                             for o in operands]])
    r_ext, r_st = loop_nest(tuple(shape[d] for d in rd),
                            [tuple(o[d] for d in rd) for o in operands])
    size = sizes if sizes is not None else Sizes()
    names: dict[Any, str] = {r: f"x{j}" for j, r in enumerate(k.inputs)}
    inner = [f"const {CTYPE[graph.spec(r)[1]]} x{j} = in{j}["
             f"{_offset([('i', k_st[j + 1]), ('r', r_st[j])], size)}];"
             for j, r in enumerate(k.inputs)]
    for pos, m in enumerate(k.nodes[:-1]):
        inner.append(f"const {VTYPE[graph.nodes[m].dtype]} t{pos} = "
                     f"{_expr(graph, m, names)};")
        names[("n", m)] = f"t{pos}"
    for j, e in enumerate(k.extra):
        at = len(k.inputs) + j
        inner.append(f"out{j + 1}[{_offset([('i', k_st[at + 1]), ('r', r_st[at])], size)}]"
                     f" = {names[('n', e)]};")
    if k_ext and r_ext and max(rd) < kd[-1] and all(
            st[-1] in (0, 1) for st in k_st):
        return _row_reduction(k.name, params, size, k_ext, k_st, r_ext, inner,
                              names[src], CTYPE[root.dtype], math.prod(shape))
    inner.append(f"acc += {names[src]};")
    head = []
    if k_ext:
        head.append(f"  #pragma omp parallel for if ({size(math.prod(shape))} > "
                    f"{PARALLEL_MIN})")
    pad = "  "
    for d, e in enumerate(k_ext):
        head.append(f"{pad}for (int64_t i{d} = 0; i{d} < {size(e)}; i{d}++) {{")
        pad += "  "
    head.append(f"{pad}double acc = 0;")
    closes = []
    for d, e in enumerate(r_ext):
        if d == len(r_ext) - 1:
            head.append(f"{pad}#pragma omp simd reduction(+:acc)")
        head.append(f"{pad}for (int64_t r{d} = 0; r{d} < {size(e)}; r{d}++) {{")
        closes.insert(0, f"{pad}}}")
        pad += "  "
    head += [pad + x for x in inner]
    head += closes
    pad = "  " * (len(k_ext) + 1)
    head.append(f"{pad}out[{_offset([('i', k_st[0])], size)}] = ({CTYPE[root.dtype]})acc;")
    params[1:1] = size.param()
    lines = [f"void {k.name}({', '.join(params)}) {{", *head]
    lines += ["  " * (d + 1) + "}" for d in reversed(range(len(k_ext)))]
    return "\n".join([*lines, "}"]) + "\n"


ROW_BLOCK = 1024  # doubles of a row reduction's accumulators (8 KB of stack)


def _row_reduction(name: str, params: list[str], size: Sizes, k_ext: tuple, k_st: list,
                   r_ext: tuple, inner: list[str], value: str, ctype: str,
                   total: int) -> str:
    """A sum whose innermost kept dimension is contiguous and comes after every reduced
    one (a layer norm's weight gradient, ``sum((0, 1))`` of (B, T, C)): the reduced loops
    go outside and a block of accumulators rides along the kept row, so the loads stay
    contiguous and vectorise (kept-outer order would stride through memory)."""
    last = len(k_ext) - 1
    lines = [f"void {name}({', '.join([*params[:1], *size.param(), *params[1:]])}) {{"]
    pad = "  "
    if last:
        lines.append(f"  #pragma omp parallel for if ({size(total)} > {PARALLEL_MIN})")
    for d in range(last):
        lines.append(f"{pad}for (int64_t i{d} = 0; i{d} < {size(k_ext[d])}; i{d}++) {{")
        pad += "  "
    row = size(k_ext[last])
    lines += [f"{pad}for (int64_t b = 0; b < {row}; b += {ROW_BLOCK}) {{",
              f"{pad}  const int64_t m = {row} - b < {ROW_BLOCK} ? {row} - b : {ROW_BLOCK};",
              f"{pad}  double acc[{ROW_BLOCK}];",
              f"{pad}  for (int64_t j = 0; j < m; j++) acc[j] = 0;"]
    rpad = pad + "  "
    for d, e in enumerate(r_ext):
        lines.append(f"{rpad}for (int64_t r{d} = 0; r{d} < {size(e)}; r{d}++) {{")
        rpad += "  "
    lines += [f"{rpad}#pragma omp simd", f"{rpad}for (int64_t j = 0; j < m; j++) {{",
              f"{rpad}  const int64_t i{last} = b + j;",
              *[f"{rpad}  {x}" for x in inner], f"{rpad}  acc[j] += {value};", f"{rpad}}}"]
    lines += [f"{pad}  {'  ' * d}}}" for d in reversed(range(len(r_ext)))]
    lines += [f"{pad}  for (int64_t j = 0; j < m; j++) {{",
              f"{pad}    const int64_t i{last} = b + j;",
              f"{pad}    out[{_offset([('i', k_st[0])], size)}] = ({ctype})acc[j];",
              f"{pad}  }}", f"{pad}}}"]
    lines += ["  " * (d + 1) + "}" for d in reversed(range(last))]
    return "\n".join([*lines, "}"]) + "\n"


def render_template(graph: Graph, k: Kernel,
                    layouts: dict[Any, tuple[int, ...]] | None = None,
                    sizes: Sizes | None = None) -> str:
    """C source of a library op's kernel (``templates``): ``int64_t name(int64_t n,
    inputs..., outputs...)``, returning nonzero for inputs the C leaves to NumPy."""
    node = graph.nodes[k.root]
    ctype = CTYPE[node.dtype]
    params = ["int64_t n"]
    ins = []
    for j, r in enumerate(k.inputs):
        shape, dtype = graph.spec(r)
        params.append(f"const {'int64_t' if dtype.kind == 'i' else CTYPE[dtype]}* restrict in{j}")
        ins.append((shape, (layouts or {}).get(r) or c_strides(shape)))
    params.append(f"{ctype}* restrict out0")
    params += [f"int64_t* restrict out{j + 1}" for j in range(len(node.aux))]
    size = sizes if sizes is not None else Sizes()
    body = templates.render(node, ins, ctype, size)
    params[1:1] = size.param()
    return f"int64_t {k.name}({', '.join(params)}) {{\n  (void)n;\n{body}\n}}\n"


def render_rows_fused(graph: Graph, k: Kernel,
                      layouts: dict[Any, tuple[int, ...]] | None = None,
                      sizes: Sizes | None = None) -> str:
    """A row template (softmax or log_softmax, layer norm's gradient) along the last axis
    that took in the elementwise producer of its first operand (attention's scale and
    mask; the gradient times the layer norm's weight): each row's values are computed
    into the output row and used there, never written to memory in between.

    >>> from fluxion.compiler.graph import GNode
    >>> f32 = np.dtype(np.float32)
    >>> g = Graph([((2, 4), f32)], [GNode("mul", (("in", 0), 0.5), {}, (2, 4), f32),
    ...           GNode("softmax", (("n", 0),), {"dim": -1}, (2, 4), f32)], [("n", 1)])
    >>> c = render_rows_fused(g, Kernel("k", [0, 1], [("in", 0)], template=True))
    >>> "o[j] = t0;" in c and "const float* x = o;" in c
    True
    """
    node = graph.nodes[k.root]
    ctype, shape = CTYPE[node.dtype], node.shape
    size = sizes if sizes is not None else Sizes()
    params, names, rows, loads, steps = ["int64_t n"], {}, [], [], {}
    for j, r in enumerate(k.inputs):
        ishape, dtype = graph.spec(r)
        params.append(f"const {CTYPE[dtype]}* restrict in{j}")
        own = (layouts or {}).get(r) or c_strides(ishape)
        st = broadcast_strides(ishape, own, shape)
        rows.append(f"const {CTYPE[dtype]}* p{j} = in{j} + "
                    f"{templates.offset_of('r', shape[:-1], st[:-1], size)};")
        col = {0: "0", 1: "j"}.get(st[-1]) or f"j * {size(st[-1])}"
        loads.append(f"  const {CTYPE[dtype]} x{j} = p{j}[{col}];")
        names[r] = f"x{j}"
        steps[r] = (j, st[-1])
    body = []
    for pos, m in enumerate(k.nodes[:-1]):
        body.append(f"  const {VTYPE[graph.nodes[m].dtype]} t{pos} = "
                    f"{_expr(graph, m, names)};")
        names[("n", m)] = f"t{pos}"
    head = [*rows, "#pragma omp simd", f"for (int64_t j = 0; j < {size(shape[-1])}; j++) {{",
            *loads, *body, f"  o[j] = {names[node.args[0]]};", "}"]
    params.append(f"{ctype}* out0")
    if node.op == "layer_norm_backward":  # the gradient from o, x through its own pointer
        j, step = steps[node.args[1]]

        def x(i: str) -> str:
            return f"p{j}[({i}) * {size(step)}]" if step != 1 else f"p{j}[{i}]"

        text = templates.layer_norm_backward_rows(shape, ctype, size, head,
                                                  lambda i: f"o[{i}]", x, node.attrs["eps"])
    else:
        text = templates.softmax_rows(shape, ctype, size, [*head, f"const {ctype}* x = o;"],
                                      1, node.op == "log_softmax")
    params[1:1] = size.param()
    return f"int64_t {k.name}({', '.join(params)}) {{\n  (void)n;\n{text}\n}}\n"


def render_function(graph: Graph, k: Kernel,
                    layouts: dict[Any, tuple[int, ...]] | None = None,
                    sizes: Sizes | None = None) -> str:
    """The C function of a kernel, fused or templated."""
    if k.template:
        fused = len(k.nodes) > 1  # a row template with its producer
        return (render_rows_fused if fused else render_template)(graph, k, layouts, sizes)
    render_fn = render_reduction if is_reduction(graph, k) else render_kernel
    return render_fn(graph, k, layouts, sizes)


def _flat_kernel(name: str, params: list[str], loads: list[str], body: list[str],
                 ctype: str) -> str:
    """A kernel whose operands all walk one flat loop to ``n``. Past STREAM_MIN_BYTES of
    output, the aligned middle is computed block by block into an L1 buffer and streamed
    to memory; the unaligned head and the tail take the plain loop."""
    inner = "\n".join(loads + body)

    def plain(lo: str, hi: str) -> list[str]:
        size = {("0", "n"): "n", ("0", "lo"): "lo"}.get((lo, hi), f"{hi} - {lo}")
        # ``parallel:`` limits the condition to the threads: a bare ``if`` also applies to
        # ``simd`` (OpenMP 5), and below the threshold the loop would run unvectorised
        return [f"  #pragma omp parallel for simd if (parallel: {size} > {PARALLEL_MIN})",
                f"  for (int64_t i0 = {lo}; i0 < {hi}; i0++) {{", inner, "  }"]

    if ctype not in ("float", "double"):
        return "\n".join([f"void {name}({', '.join(params)}) {{", *plain("0", "n"), "}"]) + "\n"
    vec = "ps" if ctype == "float" else "pd"
    blocked = ["    " + x.replace("out[i0]", "tmp[j]") for x in loads + body]
    return "\n".join([
        f"void {name}({', '.join(params)}) {{",
        "  int64_t lo = n, hi = n;",
        f"  if (n * (int64_t)sizeof({ctype}) >= {STREAM_MIN_BYTES}) {{",
        f"    lo = (int64_t)(((64 - ((uintptr_t)out & 63)) & 63) / sizeof({ctype}));",
        f"    hi = lo + (n - lo) / {STREAM_BLOCK} * {STREAM_BLOCK};",
        f"    #pragma omp parallel for if (n > {PARALLEL_MIN})",
        f"    for (int64_t b = lo; b < hi; b += {STREAM_BLOCK}) {{",
        f"      {ctype} tmp[{STREAM_BLOCK}] __attribute__((aligned(64)));",
        "      #pragma omp simd",
        f"      for (int64_t j = 0; j < {STREAM_BLOCK}; j++) {{",
        "        const int64_t i0 = b + j;",
        *blocked,
        "      }",
        f"      fluxion_stream_{vec}(out + b, tmp, {STREAM_BLOCK});",
        "    }",
        "    fluxion_fence();",
        "  }",
        *plain("0", "lo"), *plain("hi", "n"), "}"]) + "\n"


def render(graph: Graph, kernels: list[Kernel],
           layouts: dict[Any, tuple[int, ...]] | None = None) -> str:
    """The C source of all kernels of a graph, each under its kernel name."""
    return HEADER + "\n".join(render_function(graph, k, layouts) for k in kernels)


def render_bodies(graph: Graph, kernels: list[Kernel],
                  layouts: dict[Any, tuple[int, ...]] | None = None,
                  dynamic: bool = False) -> dict[str, tuple[str, list[int]]]:
    """Each kernel's function with ``@`` for its name, and the sizes it reads at run time
    (``Sizes``; none when static): equal bodies (a model's repeated layers, a dynamic
    kernel at another batch size) are one function, and the body is what the kernel cache
    is keyed by."""
    out = {}
    for k in kernels:
        sizes = Sizes(dynamic)
        body = render_function(graph, k, layouts, sizes).replace(f" {k.name}(", " @(", 1)
        out[k.name] = (body, sizes.values)
    return out
