"""C kernels for library ops that are not elementwise: convolution's ``unfold``/``fold``
(im2col/col2im), ``max_dim``/``min_dim`` (max-pooling's windows), ``scatter`` (their
gradient), ``gather``/``scatter_add`` (the loss picking each target's log-probability, and
its gradient), ``index_put`` accumulating rows (an embedding's gradient),
``softmax``/``log_softmax`` along the last axis (attention's, the loss's), ``nll_loss``
with its gradient, and ``layer_norm`` over the last axis with its gradient.
NumPy runs each of these as several passes with Python in between (fold adds one strided
slice per kernel tap); in C each is one pass over its output with the sizes and the
inputs' strides written in (or read at run time, for dynamic sizes), so the compiler
emits them instead of calling the op table's NumPy kernel. Most are bit-identical to
that kernel: the same additions in the same order, the same first extreme (NaN
included). The exceptions are within a few ulps of NumPy's: the softmaxes sum in vector
lanes and call ``fluxion_expf`` (within 1 ulp); ``nll_loss``'s reductions and the layer
norms sum in double (NumPy: the loss pairwise in the values' type, the layer norms in
double too), in another order; ``index_put`` sums each row's values in index order, where
NumPy's grouped sums (64 indices or more) go pairwise.

A template renders the body of ``int64_t fn(int64_t n, [sz,] const T* in0, ..., out0, ...)``
(``sz``: the sizes a dynamic kernel reads at run time):
``in_j`` are the node's array operands in ``Template.operands`` order, read through their
element strides; outputs are C-contiguous (the main value, then any aux outputs). The
function returns 0, or nonzero when an input is one the C does not handle (an index out
of range): the runtime then calls the NumPy kernel, which raises the user-facing error."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fluxion.compiler.graph import GNode, Ref
from fluxion.compiler.layout import c_strides
from fluxion.compiler.passes.rewrite import is_ref

if TYPE_CHECKING:
    from fluxion.compiler.codegen.c import Sizes

Layout = tuple[tuple[int, ...], tuple[int, ...]]  # (shape, element strides)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)


@dataclass(frozen=True)
class Template:
    """How to emit one op as a C function."""

    # the node's array operands, in the order the C receives them (None: not handled)
    operands: Callable[[GNode], list[Ref] | None]
    # (operand layouts, output shapes, C type of the values, Sizes, attrs) -> the body
    render: Callable[..., str]


def _parallel(work: str) -> str:
    from fluxion.compiler.codegen.c import PARALLEL_MIN  # c imports this module

    return f"#pragma omp parallel for if ({work} > {PARALLEL_MIN})"


def _walk(shape: tuple[int, ...], strides: tuple[int, ...], var: str, indent: str,
          sz: Sizes) -> tuple[list[str], list[str], str]:
    """Loops over ``shape`` (dims merged where the strides allow): the opening lines, the
    closing lines, and the C expression of the element offset they reach."""
    dims = [(e, s) for e, s in zip(shape, strides) if e != 1]
    merged: list[list[int]] = []
    for e, s in dims:
        if merged and merged[-1][1] == s * e:
            merged[-1] = [merged[-1][0] * e, s]
        else:
            merged.append([e, s])
    opens, closes, terms = [], [], []
    for d, (e, s) in enumerate(merged):
        opens.append(f"{indent}{'  ' * d}for (int64_t {var}{d} = 0; {var}{d} < {sz(e)}; "
                     f"{var}{d}++) {{")
        closes.insert(0, f"{indent}{'  ' * d}}}")
        if s:
            terms.append(f"{var}{d}" if s == 1 else f"{var}{d} * {sz(s)}")
    return opens, closes, " + ".join(terms) or "0"


# --- unfold / fold (im2col / col2im) ------------------------------------------------------
def _conv_geometry(h: int, w: int, kernel: tuple, stride: tuple,
                   dilation: tuple) -> tuple[int, int]:
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1


def _unfold(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, kernel: tuple,
            stride: tuple, dilation: tuple) -> str:
    ((n, c, h, w), (s0, s1, s2, s3)), = ins
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh, ow = _conv_geometry(h, w, kernel, stride, dilation)
    plane = oh * ow
    return f"""  {_parallel(sz(n * c * kh * kw * plane))}
  for (int64_t nc = 0; nc < {sz(n * c)}; nc++) {{
    const {ctype}* src = in0 + (nc / {sz(c)}) * {sz(s0)} + (nc % {sz(c)}) * {sz(s1)};
    {ctype}* dst = out0 + nc * {kh * kw} * {sz(plane)};
    for (int64_t i = 0; i < {kh}; i++)
      for (int64_t j = 0; j < {kw}; j++)
        for (int64_t p = 0; p < {sz(oh)}; p++) {{
          const {ctype}* row = src + (p * {sh} + i * {dh}) * {sz(s2)} + j * {dw} * {sz(s3)};
          {ctype}* o = dst + (i * {kw} + j) * {sz(plane)} + p * {sz(ow)};
          #pragma omp simd
          for (int64_t q = 0; q < {sz(ow)}; q++) o[q] = row[q * {sw} * {sz(s3)}];
        }}
  }}
  return 0;"""


def _fold(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, size: tuple,
          kernel: tuple, stride: tuple, dilation: tuple) -> str:
    ((n, _ckk, _l), (s0, s1, s2)), = ins
    (_, c, h, w), = outs
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh, ow = _conv_geometry(h, w, kernel, stride, dilation)
    # tiling windows (pooling's gradient): each column has its own place, so assign (as
    # the NumPy kernel does); overlapping ones add tap by tap in the NumPy kernel's order
    put = "=" if (sh, sw) == (kh, kw) and (dh, dw) == (1, 1) else "+="
    return f"""  {_parallel(sz(n * c * h * w))}
  for (int64_t nc = 0; nc < {sz(n * c)}; nc++) {{
    const {ctype}* src = in0 + (nc / {sz(c)}) * {sz(s0)} + (nc % {sz(c)}) * {kh * kw} * {sz(s1)};
    {ctype}* dst = out0 + nc * {sz(h * w)};
    for (int64_t e = 0; e < {sz(h * w)}; e++) dst[e] = 0;
    for (int64_t i = 0; i < {kh}; i++)
      for (int64_t j = 0; j < {kw}; j++)
        for (int64_t p = 0; p < {sz(oh)}; p++) {{
          const {ctype}* col = src + (i * {kw} + j) * {sz(s1)} + p * {sz(ow * s2)};
          {ctype}* o = dst + (p * {sh} + i * {dh}) * {sz(w)} + j * {dw};
          #pragma omp simd
          for (int64_t q = 0; q < {sz(ow)}; q++) o[q * {sw}] {put} col[q * {sz(s2)}];
        }}
  }}
  return 0;"""


def _conv_operands(node: GNode) -> list[Ref] | None:
    a = node.args[0]
    return [a] if len(node.args) == 1 and isinstance(a, tuple) else None


# --- max_dim / min_dim ----------------------------------------------------------------------
def _extreme(largest: bool) -> Callable[..., str]:
    # the first extreme wins; a NaN, once found, stays (NumPy's argmax/argmin): take v
    # when the best so far is a number and v is not "no better" (v beyond it, or NaN)
    worse = "<=" if largest else ">="

    def render(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, dim: int,
               keepdim: bool = False) -> str:
        (shape, strides), = ins
        d = dim % len(shape)
        k, sd = shape[d], strides[d]
        before = math.prod(shape[:d])
        after_shape, after_strides = shape[d + 1:], strides[d + 1:]
        n_after = math.prod(after_shape)
        opens, closes, off = _walk(after_shape, after_strides, "a", "      ", sz)
        b_off = offset_of("b", shape[:d], strides[:d], sz)
        # j = 0 starts each window; later slices take over where they are beyond
        flat = len(opens) <= 1  # one loop: the output position is its counter
        e = "a0" if flat else "e"

        def sweep(first: bool) -> list[str]:
            take = "" if first else \
                f"        const int take = vo[{e}] == vo[{e}] && !(v {worse} vo[{e}]);"
            update = [f"        vo[{e}] = v;", f"        io[{e}] = 0;"] if first else [
                f"        vo[{e}] = take ? v : vo[{e}];", f"        io[{e}] = take ? j : io[{e}];"]
            return [*([] if flat else ["      int64_t e = 0;"]),
                    *(["      #pragma omp simd"] if len(opens) == 1 else []),
                    *(opens or ["      { const int64_t a0 = 0;"]),
                    f"        const {ctype} v = s[{off}];", *([take] if take else []),
                    *update, *([] if flat else ["        e++;"]), *(closes or ["      }"])]

        lines = [
            f"  {_parallel(sz(before * k * n_after))}",
            f"  for (int64_t b = 0; b < {sz(before)}; b++) {{",
            f"    const {ctype}* src = in0 + {b_off};",
            f"    {ctype}* restrict vo = out0 + b * {sz(n_after)};",
            f"    int64_t* restrict io = out1 + b * {sz(n_after)};",
            "    {",
            f"      const {ctype}* s = src;",
            *sweep(True),
            "    }",
            f"    for (int64_t j = 1; j < {sz(k)}; j++) {{",
            f"      const {ctype}* s = src + j * {sz(sd)};",
            *sweep(False),
            "    }",
            "  }",
            "  return 0;",
        ]
        return "\n".join(lines)

    return render


def offset_of(var: str, shape: tuple[int, ...], strides: tuple[int, ...], sz: Sizes) -> str:
    """The element offset of flat index ``var`` over ``shape`` laid out with ``strides``.

    >>> from fluxion.compiler.codegen.c import Sizes
    >>> offset_of("r", (4, 3), (1, 4), Sizes())  # a transposed (4, 3)
    '(r / 3) * 1 + (r % 3) * 4'
    """
    terms, inner = [], 1
    for e, s in reversed(list(zip(shape, strides))):
        if e != 1 and s:
            idx = f"({var} / {sz(inner)})" if inner > 1 else var
            terms.append(f"({idx} % {sz(e)}) * {sz(s)}" if inner * e < math.prod(shape)
                         else f"{idx} * {sz(s)}")
        inner *= e
    return " + ".join(reversed(terms)) or "0"


def _reduce_operands(node: GNode) -> list[Ref] | None:
    a = node.args[0]
    return [a] if isinstance(a, tuple) else None


# --- scatter, scatter_add, gather ---------------------------------------------------------
def _along_index(index: str, ishape: tuple[int, ...], index_strides: tuple[int, ...],
                 size: int, sz: Sizes, inner: Callable[[Callable[..., str]], str]) -> list[str]:
    """Loops over every position of the index array ``index`` (shape ``ishape``): its
    value ``t`` read, wrapped when negative, out of ``[0, size)`` returning 1 (NumPy then
    raises); then the line ``inner`` writes, given ``off(strides, skip)``: the offset of
    the current position under ``strides``, dimension ``skip`` left out.

    >>> from fluxion.compiler.codegen.c import Sizes
    >>> lines = _along_index("in1", (2,), (1,), 5, Sizes(), lambda off: f"o[{off((1,))}] = t;")
    >>> lines[1].strip(), lines[-2].strip()
    ('int64_t t = in1[i0 * 1];', 'o[i0 * 1] = t;')
    """
    pos = [f"i{j}" for j in range(len(ishape))]
    pad = "  " * (len(ishape) + 1)

    def off(st: tuple[int, ...], skip: int | None = None) -> str:
        return " + ".join(f"{p} * {sz(s)}" for j, (p, s) in enumerate(zip(pos, st))
                          if j != skip and s) or "0"

    return [*(f"  {'  ' * j}for (int64_t i{j} = 0; i{j} < {sz(e)}; i{j}++) {{"
              for j, e in enumerate(ishape)),
            f"{pad}int64_t t = {index}[{off(index_strides)}];",
            f"{pad}if (t < 0) t += {sz(size)};",
            f"{pad}if (t < 0 || t >= {sz(size)}) return 1;",
            f"{pad}{inner(off)}",
            *(f"  {'  ' * j}}}" for j in reversed(range(len(ishape))))]


def _scatter(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, dim: int,
             add: bool = False, **_: Any) -> str:
    (shape, a_st), (ishape, s_st), (_, i_st) = ins
    d = dim % len(shape)
    out_st = c_strides(shape)
    opens, closes, a_off = _walk(shape, a_st, "c", "  ", sz)
    # copy the base, then write (add: add) each source element where its index says along
    # ``dim``, in the index's order (NumPy's ``add.at`` order: the same sums)
    copy = [*opens, f"  {'  ' * len(opens)}out0[e++] = in0[{a_off}];", *closes]
    body = _along_index("in2", ishape, i_st, shape[d], sz, lambda off: (
        f"out0[{off(out_st, d)} + t * {sz(out_st[d])}] {'+=' if add else '='} "
        f"in1[{off(s_st)}];"))
    return "\n".join(["  int64_t e = 0;", *copy, *body, "  return 0;"])


def _gather(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, dim: int,
            **_: Any) -> str:
    """``take_along_axis``: each output element is the input's at its own position, with
    the index's value along ``dim``; an index out of range is left to NumPy's error."""
    (shape, a_st), (ishape, i_st) = ins
    d = dim % len(shape)
    body = _along_index("in1", ishape, i_st, shape[d], sz, lambda off: (
        f"out0[e++] = in0[{off(a_st, d)} + t * {sz(a_st[d])}];"))
    return "\n".join(["  int64_t e = 0;", *body, "  return 0;"])


def _gather_operands(node: GNode) -> list[Ref] | None:
    a, index = node.args[0], node.attrs.get("index")
    return [a, index] if isinstance(a, tuple) and isinstance(index, tuple) else None


def _scatter_operands(node: GNode) -> list[Ref] | None:
    a, src = node.args[:2]
    index = node.attrs.get("index")
    if not (isinstance(a, tuple) and isinstance(src, tuple) and isinstance(index, tuple)):
        return None
    return [a, src, index]


# --- index_put with accumulate (an embedding's gradient) -----------------------------------
def _index_add(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, **_: Any) -> str:
    """``out = a; out[idx] += values`` over rows picked by one index array, grouped as
    ``ops.index.add_at`` groups them: from 64 indices on, each row's values summed (in
    index order; NumPy's sorted groups sum pairwise) and the sum added to the row; below,
    one value at a time into its row, as ``np.add.at`` (bit-identical). An index out of
    range returns 1 (NumPy raises)."""
    (shape, a_st), (vshape, v_st), (ishape, i_st) = ins
    rows, width = shape[0], math.prod(shape[1:])
    count = math.prod(ishape)
    opens, closes, a_off = _walk(shape, a_st, "c", "  ", sz)
    copy = ["  int64_t e = 0;", *opens, f"  {'  ' * len(opens)}out0[e++] = in0[{a_off}];",
            *closes]
    index = offset_of("k", ishape, i_st, sz)
    value = offset_of("f", vshape, v_st, sz)
    head = [f"    int64_t t = in2[{index}];", f"    if (t < 0) t += {sz(rows)};",
            f"    if (t < 0 || t >= {sz(rows)}) {{ free(sums); return 1; }}"]
    each = f"for (int64_t j = 0, f = k * {sz(width)}; j < {sz(width)}; j++, f++)"
    straight = [f"  for (int64_t k = 0; k < {sz(count)}; k++) {{", *head,
                f"    {each} out0[t * {sz(width)} + j] += in1[{value}];", "  }",
                "  return 0;"]
    if len(shape) < 2:  # np.add.at: straight into the rows
        return "\n".join([*copy, f"  {ctype}* sums = 0;", *straight])
    return "\n".join([
        *copy,
        f"  {ctype}* sums = 0;",
        f"  if ({sz(count)} < 64) {{", *("  " + x for x in straight), "  }",
        f"  sums = malloc(sizeof({ctype}) * {sz(rows * width)} + {sz(rows)});",
        "  if (!sums) return 1;",
        f"  unsigned char* seen = (unsigned char*)(sums + {sz(rows * width)});",
        f"  for (int64_t r = 0; r < {sz(rows)}; r++) seen[r] = 0;",
        f"  for (int64_t k = 0; k < {sz(count)}; k++) {{", *head,
        f"    {ctype}* s = sums + t * {sz(width)};",
        f"    if (seen[t]) {{ {each} s[j] += in1[{value}]; }}",
        f"    else {{ seen[t] = 1; {each} s[j] = in1[{value}]; }}",
        "  }",
        f"  for (int64_t r = 0; r < {sz(rows)}; r++)",
        f"    if (seen[r]) for (int64_t j = 0; j < {sz(width)}; j++) "
        f"out0[r * {sz(width)} + j] += sums[r * {sz(width)} + j];",
        "  free(sums);", "  return 0;"])


def _index_put_operands(node: GNode) -> list[Ref] | None:
    """Accumulating rows picked by one index array; other keys stay NumPy's."""
    a, values = node.args[:2]
    key = node.attrs.get("key")
    if not (node.attrs.get("accumulate") and isinstance(key, tuple) and len(key) == 1
            and is_ref(key[0]) and is_ref(a) and is_ref(values)):
        return None
    return [a, values, key[0]]


# --- nll_loss and its gradient (the loss after log_softmax) --------------------------------
def _nll_rows(logp: Layout, target: tuple[str, Layout], sz: Sizes, ignore_index: int,
              body: list[str]) -> list[str]:
    """The loop over the targets (``target``: its C name and layout): ``t`` read, an
    ignored row skipped, one out of ``[0, C)`` returning 1 (NumPy then raises, or wraps a
    negative one, as eager does); then ``body``, given ``at``: the element offset of row
    ``i``'s target in ``logp``."""
    (n, c), (s0, s1) = logp
    name, (_, (st,)) = target
    return [f"  for (int64_t i = 0; i < {sz(n)}; i++) {{",
            f"    const int64_t t = {name}[i * {sz(st)}];",
            f"    if (t == {ignore_index}) continue;",
            f"    if (t < 0 || t >= {sz(c)}) return 1;",
            f"    const int64_t at = i * {sz(s0)} + t * {sz(s1)};",
            *body, "  }"]


def _nll_loss(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes,
              ignore_index: int, reduction: str, **_: Any) -> str:
    """One pass over the targets where NumPy makes ten over arrays of them: the sum of
    -logp[i, t] in double (NumPy sums pairwise in the values' type), divided by the
    number of targets not ignored for a mean, in the values' type as NumPy divides."""
    logp, target = ins
    if reduction == "none":
        return "\n".join([f"  for (int64_t i = 0; i < {sz(logp[0][0])}; i++) "
                           "out0[i] = 0;",
                           *_nll_rows(logp, ("in1", target), sz, ignore_index,
                                      ["    out0[i] = -in0[at];"]), "  return 0;"])
    total = ["  double s = 0;", "  int64_t count = 0;",
             *_nll_rows(logp, ("in1", target), sz, ignore_index,
                        ["    s -= (double)in0[at];", "    count++;"])]
    result = f"({ctype})s / ({ctype})count" if reduction == "mean" else f"({ctype})s"
    return "\n".join([*total, f"  out0[0] = {result};", "  return 0;"])


def _nll_loss_backward(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes,
                       ignore_index: int, reduction: str, **_: Any) -> str:
    """Zeros but at each target's place: -g (over the number of targets not ignored for a
    mean, divided in the values' type as NumPy does; ``g`` per row for ``'none'``)."""
    g, logp, target = ins
    (n, c), _ = logp
    lines = [f"  for (int64_t e = 0; e < {sz(n * c)}; e++) out0[e] = 0;"]
    if reduction == "mean":  # the count first: NumPy divides g by it before negating
        lines += ["  int64_t count = 0;",
                  f"  for (int64_t i = 0; i < {sz(n)}; i++) "
                  f"count += in2[i * {sz(target[1][0])}] != {ignore_index};",
                  f"  const {ctype} v = -(in0[0] / ({ctype})count);"]
    elif reduction == "sum":
        lines.append(f"  const {ctype} v = -in0[0];")
    value = f"-in0[i * {sz(g[1][0])}]" if reduction == "none" else "v"
    lines += _nll_rows(logp, ("in2", target), sz, ignore_index,
                       [f"    out0[i * {sz(c)} + t] = {value};"])
    return "\n".join([*lines, "  return 0;"])


def _nll_operands(node: GNode) -> list[Ref] | None:
    """The class-weighted losses stay NumPy's; the array operands otherwise."""
    *arrays, weight = node.args
    return arrays if weight is None and all(isinstance(a, tuple) for a in arrays) else None


# --- softmax along the last axis ----------------------------------------------------------
def _softmax(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, dim: int,
             log: bool = False) -> str:
    """One pass per row where NumPy makes five over the whole array: the maximum, the
    shifted exponentials and their sum, the division (``log``: log_softmax, the shifted
    values less the log of the sum). A row whose
    maximum is finite (all of a model's, masked ones included) clamps the shifted value
    to the range of ``fluxion_expf`` and writes an exact 0 below it (where exp is under
    the smallest normal number); other rows (NaN, +-inf maximum) shift by 0 and call
    ``exp`` as the NumPy kernel does. The maximum and the sum run in vector-wide lanes
    (a float reduction does not vectorise without reassociation)."""
    (shape, strides), = ins
    row = offset_of("r", shape[:-1], strides[:-1], sz)
    return softmax_rows(shape, ctype, sz, [f"const {ctype}* x = in0 + {row};"],
                        strides[-1], log)


def softmax_rows(shape: tuple[int, ...], ctype: str, sz: Sizes, head: list[str],
                 step: int, log: bool) -> str:
    """The row loop of a (log_)softmax along the last axis of ``shape``: ``head`` points
    ``x`` at row ``r`` of the values (``step`` elements apart) and may fill the output
    row ``o`` first (a fused producer's values, read back from L1 as ``x``: a pointer
    based on the ``restrict`` one, which C allows; without ``restrict`` the row loops
    ran 40% slower).

    >>> from fluxion.compiler.codegen.c import Sizes
    >>> c = softmax_rows((8, 64), "float", Sizes(), ["const float* x = in0 + r * 64;"], 1,
    ...                  log=False)
    >>> "for (int64_t r = 0; r < 8; r++)" in c and "o[j] /= total;" in c
    True
    """
    length = shape[-1]
    rows = math.prod(shape[:-1])
    low, lanes, exp = ("-87.0f", 16, "fluxion_expf") if ctype == "float" else \
        ("-700.0", 8, "exp")
    n = sz(length)

    def at(index: str) -> str:  # element ``index`` of the row
        return f"x[({index}) * {sz(step)}]" if step != 1 else f"x[{index}]"

    x = at("j")
    lines = "\n".join(f"    {h}" for h in head)
    return f"""  {_parallel(sz(rows * length))}
  for (int64_t r = 0; r < {sz(rows)}; r++) {{
    {ctype}* restrict o = out0 + r * {n};
{lines}
    const int64_t full = {n} - {n} % {lanes};
    {ctype} lm[{lanes}], ls[{lanes}];
    int ln[{lanes}];
    for (int l = 0; l < {lanes}; l++) {{ lm[l] = -INFINITY; ls[l] = 0; ln[l] = 0; }}
    for (int64_t j = 0; j < full; j += {lanes})
      for (int l = 0; l < {lanes}; l++) {{
        const {ctype} v = {at("j + l")};
        lm[l] = v > lm[l] ? v : lm[l];
        ln[l] |= v != v;
      }}
    {ctype} m = -INFINITY, total = 0;
    int nan = 0;
    for (int64_t j = full; j < {n}; j++) {{
      const {ctype} v = {x};
      m = v > m ? v : m;
      nan |= v != v;
    }}
{_halving(lanes, "lm[l] = lm[l + {w}] > lm[l] ? lm[l + {w}] : lm[l]; ln[l] |= ln[l + {w}];")}
    m = lm[0] > m ? lm[0] : m;
    nan |= ln[0];
{_softmax_tail(ctype, lanes, n, x, exp, low, log)}
  }}
  return 0;"""


def _halving(lanes: int, body: str, indent: str = "") -> str:
    """Lane ``l`` combined with lane ``l + w`` for w = lanes/2 ... 1: a tree whose steps
    vectorise, where a loop over the lanes into one scalar is a chain of dependent
    scalar operations (and the row's slowest part on 64-wide attention rows).

    >>> print(_halving(4, "ls[l] += ls[l + {w}];"))
        for (int l = 0; l < 2; l++) { ls[l] += ls[l + 2]; }
        for (int l = 0; l < 1; l++) { ls[l] += ls[l + 1]; }
    """
    steps, w = [], lanes // 2
    while w:
        steps.append(f"{indent}    for (int l = 0; l < {w}; l++) {{ {body.format(w=w)} }}")
        w //= 2
    return "\n".join(steps)


def _softmax_tail(ctype: str, lanes: int, n: str, x: str, exp: str, low: str,
                  log: bool) -> str:
    """After the row's maximum ``m``: softmax keeps the exponentials in the output and
    divides them by their sum; log_softmax keeps the shifted values and subtracts the
    log of the sum."""
    kept = f"{exp}(d > {low} ? d : {low})"
    if log:
        return f"""    if (!nan && isfinite(m)) {{
      #pragma omp simd
      for (int64_t j = 0; j < {n}; j++) o[j] = {x} - m;
      for (int64_t j = 0; j < full; j += {lanes})
        for (int l = 0; l < {lanes}; l++) {{
          const {ctype} d = o[j + l];
          ls[l] += d > {low} ? {kept} : 0;
        }}
      for (int64_t j = full; j < {n}; j++) {{
        const {ctype} d = o[j];
        total += d > {low} ? {kept} : 0;
      }}
{_halving(lanes, "ls[l] += ls[l + {w}];", "  ")}
      total += ls[0];
    }} else {{
      for (int64_t j = 0; j < {n}; j++) {{ o[j] = {x}; total += exp(o[j]); }}
    }}
    const {ctype} lse = log(total);
    #pragma omp simd
    for (int64_t j = 0; j < {n}; j++) o[j] -= lse;"""
    return f"""    if (!nan && isfinite(m)) {{
      #pragma omp simd
      for (int64_t j = 0; j < {n}; j++) {{
        const {ctype} d = {x} - m;
        const {ctype} e = {kept};
        o[j] = d > {low} ? e : 0;
      }}
    }} else {{
      for (int64_t j = 0; j < {n}; j++) o[j] = exp({x});
    }}
    for (int64_t j = 0; j < full; j += {lanes})
      for (int l = 0; l < {lanes}; l++) ls[l] += o[j + l];
    for (int64_t j = full; j < {n}; j++) total += o[j];
{_halving(lanes, "ls[l] += ls[l + {w}];")}
    total += ls[0];
    #pragma omp simd
    for (int64_t j = 0; j < {n}; j++) o[j] /= total;"""


# --- layer norm along the last axis -------------------------------------------------------
_SUM_LANES = 16  # double accumulators per sum: two vectors' worth of independent additions


def _lane_sums(n: str, sums: dict[str, str], head: Callable[[str], list[str]]) -> str:
    """Per row, each of ``sums`` (name -> the C of element ``k``'s term, after ``head(k)``'s
    lines) added up in double over ``_SUM_LANES`` lanes combined by halving: one
    accumulator would make every addition wait for the previous one."""
    lanes = _SUM_LANES
    zero = " ".join(f"{a}[l] = 0;" for a in sums)

    def body(lane: str, pad: str) -> str:
        return "\n".join([*(pad + h for h in head("k")),
                          *(f"{pad}{a}[{lane}] += {t};" for a, t in sums.items())])

    combine = _halving(lanes, " ".join(f"{a}[l] += {a}[l + {{w}}];" for a in sums))
    return f"""    double {", ".join(f"{a}[{lanes}]" for a in sums)};
    for (int l = 0; l < {lanes}; l++) {{ {zero} }}
    for (int64_t j = 0; j < {n} - {n} % {lanes}; j += {lanes})
      for (int l = 0; l < {lanes}; l++) {{
        const int64_t k = j + l;
{body("l", "        ")}
      }}
    for (int64_t k = {n} - {n} % {lanes}; k < {n}; k++) {{
{body("0", "      ")}
    }}
{combine}"""


def _row_moments(ctype: str, n: str, at: Callable[[str], str], eps: float) -> str:
    """The row's mean ``mean`` and 1 / sqrt(biased variance + eps) ``rs``, the sums in
    double as the op table's NumPy kernel does, the rest in the values' type."""
    return f"""{_lane_sums(n, {"ls": at("k")}, lambda k: [])}
    const {ctype} mean = ({ctype})(ls[0] / {n});
{_lane_sums(n, {"lq": "d * d"}, lambda k: [f"const {ctype} d = {at(k)} - mean;"])}
    const {ctype} rs = 1 / sqrt(({ctype})(lq[0] / {n}) + ({ctype}){float(eps)!r});"""


def _rows(ins: list[Layout], sz: Sizes, names: tuple[str, ...]
          ) -> tuple[str, str, list[str], list[Callable[[str], str]]]:
    """The row loop's count and length, each operand's row pointer and element reader."""
    shape = ins[0][0]
    heads, readers = [], []
    for j, ((_, strides), name) in enumerate(zip(ins, names)):
        heads.append(f"const {{T}}* {name} = in{j} + "
                     f"{offset_of('r', shape[:-1], strides[:-1], sz)};")
        step = strides[-1]
        readers.append(lambda i, name=name, step=step:
                       f"{name}[({i}) * {sz(step)}]" if step != 1 else f"{name}[{i}]")
    return sz(math.prod(shape[:-1])), sz(shape[-1]), heads, readers


def _layer_norm(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes, nd: int,
                eps: float) -> str:
    """Per row, two passes for the moments and one writing (x - mean) * rs, where NumPy
    makes a pass per operation over the whole array."""
    rows, n, heads, (x,) = _rows(ins, sz, ("x",))
    return f"""  {_parallel(sz(math.prod(outs[0])))}
  for (int64_t r = 0; r < {rows}; r++) {{
    {ctype}* restrict o = out0 + r * {n};
    {heads[0].format(T=ctype)}
{_row_moments(ctype, n, x, eps)}
    #pragma omp simd
    for (int64_t j = 0; j < {n}; j++) o[j] = ({x("j")} - mean) * rs;
  }}
  return 0;"""


def _layer_norm_backward(ins: list[Layout], outs: list[tuple], ctype: str, sz: Sizes,
                         nd: int, eps: float) -> str:
    """Per row: the moments of x again, the sums of g and g * y, then
    rs * (g - mean(g) - y * mean(g * y)) (y = (x - mean) * rs)."""
    _, _, heads, (g, x) = _rows(ins, sz, ("g", "x"))
    return layer_norm_backward_rows(ins[0][0], ctype, sz, [h.format(T=ctype) for h in heads],
                                    g, x, eps)


def layer_norm_backward_rows(shape: tuple[int, ...], ctype: str, sz: Sizes, head: list[str],
                             g: Callable[[str], str], x: Callable[[str], str],
                             eps: float) -> str:
    """The row loop of ``layer_norm_backward`` over the last axis of ``shape``: ``head``
    points the readers ``g`` and ``x`` at row ``r`` (and may fill the output row ``o``
    with a fused producer's gradient, which ``g`` then reads back).

    >>> from fluxion.compiler.codegen.c import Sizes
    >>> c = layer_norm_backward_rows((4, 8), "float", Sizes(), ["const float* x = in1;"],
    ...                              lambda k: f"o[{k}]", lambda k: f"x[{k}]", 1e-5)
    >>> "o[j] = rs * (o[j] - mg - y * mgy);" in c
    True
    """
    rows, n = sz(math.prod(shape[:-1])), sz(shape[-1])
    lines = "\n".join(f"    {h}" for h in head)
    sums = _lane_sums(n, {"lg": g("k"), "lgy": f"{g('k')} * y"},
                      lambda k: [f"const {ctype} y = ({x(k)} - mean) * rs;"])
    return f"""  {_parallel(sz(math.prod(shape)))}
  for (int64_t r = 0; r < {rows}; r++) {{
    {ctype}* restrict o = out0 + r * {n};
{lines}
{_row_moments(ctype, n, x, eps)}
{sums}
    const {ctype} mg = ({ctype})(lg[0] / {n}), mgy = ({ctype})(lgy[0] / {n});
    #pragma omp simd
    for (int64_t j = 0; j < {n}; j++) {{
      const {ctype} y = ({x("j")} - mean) * rs;
      o[j] = rs * ({g("j")} - mg - y * mgy);
    }}
  }}
  return 0;"""


def _layer_norm_operands(node: GNode) -> list[Ref] | None:
    refs = [a for a in node.args if isinstance(a, tuple)]
    return refs if len(refs) == len(node.args) and node.attrs["nd"] == 1 else None


TEMPLATES: dict[str, Template] = {
    "unfold": Template(_conv_operands, _unfold),
    "fold": Template(_conv_operands, _fold),
    "max_dim": Template(_reduce_operands, _extreme(True)),
    "min_dim": Template(_reduce_operands, _extreme(False)),
    "scatter": Template(_scatter_operands, _scatter),
    "scatter_add": Template(_scatter_operands, functools.partial(_scatter, add=True)),
    "gather": Template(_gather_operands, _gather),
    "softmax": Template(_reduce_operands, _softmax),
    "layer_norm": Template(_layer_norm_operands, _layer_norm),
    "layer_norm_backward": Template(_layer_norm_operands, _layer_norm_backward),
    "log_softmax": Template(_reduce_operands, functools.partial(_softmax, log=True)),
    "index_put": Template(_index_put_operands, _index_add),
    "nll_loss": Template(_nll_operands, _nll_loss),
    "nll_loss_backward": Template(_nll_operands, _nll_loss_backward),
}


def template_for(graph: Any, i: int) -> list[Ref] | None:
    """The operands of node ``i`` if it is emitted from a template, else None: float32 or
    float64 values (int64 indices), shapes the template handles.

    >>> from fluxion.compiler.graph import Graph
    >>> f32, i64 = np.dtype("float32"), np.dtype("int64")
    >>> pool = GNode("max_dim", (("in", 0),), {"dim": 2}, (2, 3, 5), f32, (((2, 3, 5), i64),))
    >>> template_for(Graph([((2, 3, 4, 5), f32)], [pool], [("n", 0)]), 0)
    [('in', 0)]
    """
    n = graph.nodes[i]
    t = TEMPLATES.get(n.op)
    if t is None or n.dtype not in _FLOATS:
        return None
    refs = t.operands(n)
    if refs is None:
        return None
    specs = [graph.spec(r) for r in refs]
    if any(0 in s for s, _ in specs):
        return None
    if n.op == "gather":  # an index of the input's rank, its size off ``dim``
        (shape, d), (ishape, idt) = specs
        dim = n.attrs["dim"]
        ok = d == n.dtype and idt == _INT64 and len(ishape) == len(shape) >= 1 \
            and -len(shape) <= dim < len(shape) \
            and all(a == b for j, (a, b) in enumerate(zip(ishape, shape)) if j != dim % len(shape))
        return refs if ok else None
    if n.op == "index_put":  # values: one row of ``a`` per index
        (shape, d), (vshape, vd), (ishape, idt) = specs
        ok = d == vd == n.dtype and idt == _INT64 and len(shape) >= 1 \
            and vshape == ishape + shape[1:]
        return refs if ok else None
    if n.op in ("nll_loss", "nll_loss_backward"):  # (N, C) values, (N,) int64 targets
        *grad, (shape, d), (tshape, tdt) = specs
        ok = d == n.dtype and tdt == _INT64 and len(shape) == 2 and tshape == shape[:1]
        if grad:  # the loss's gradient: a number, or one per row for 'none'
            want = shape[:1] if n.attrs["reduction"] == "none" else ()
            ok = ok and grad[0] == (want, n.dtype)
        return refs if ok else None
    if any(d != n.dtype for _, d in specs[:2]):
        return None
    if n.op in ("scatter", "scatter_add") and (
            specs[2][1] != _INT64 or specs[1][0] != specs[2][0]
            or len(specs[0][0]) != len(specs[2][0])
            # positions off ``dim`` come from the index's shape: past the base's, NumPy
            # raises, and the C would write out of bounds
            or any(i > a for i, a in zip(specs[2][0], specs[0][0]))
            or not -len(n.shape) <= n.attrs["dim"] < len(n.shape)):
        return None
    if n.op in ("unfold", "fold") and len(specs[0][0]) != (4 if n.op == "unfold" else 3):
        return None
    if n.op == "fold":  # the columns must be what the geometry says (NumPy's reshape checks)
        (kh, kw), (_, c, h, w) = n.attrs["kernel"], n.shape
        oh, ow = _conv_geometry(h, w, n.attrs["kernel"], n.attrs["stride"],
                                n.attrs["dilation"])
        if len(n.shape) != 4 or specs[0][0][1:] != (c * kh * kw, oh * ow) or oh <= 0 \
                or ow <= 0:
            return None
    if n.op in ("max_dim", "min_dim") and not specs[0][0]:
        return None
    if n.op in ("softmax", "log_softmax") and (
            not n.shape or n.attrs["dim"] % len(n.shape) != len(n.shape) - 1):
        return None  # the last axis only
    if n.op == "layer_norm_backward" and specs[0][0] != specs[1][0]:
        return None
    return refs


def render(node: GNode, layouts: list[Layout], ctype: str, sizes: Sizes) -> str:
    """The body of node's C function (see the module docstring); ``sizes`` writes the
    shape-derived numbers in or collects them for run time (``c.Sizes``)."""
    outs = [node.shape, *(s for s, _ in node.aux)]
    return TEMPLATES[node.op].render(layouts, outs, ctype, sizes, **node.attrs)
