"""Fusion, the code generators and the kernel cache: what the C looks like for small graphs
(signature, loop, broadcast index expressions, the fused expression), the C and NumPy
backends agree with each other and with eager on random inputs with NaN and infinities,
fusion groups what it should, a second process hits the on-disk cache, concurrent processes
share it safely, and without a C compiler the NumPy backend takes over with one warning."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import fluxion
from fluxion.compiler import cache, runtime
from fluxion.compiler.codegen import c as c_codegen
from fluxion.compiler.codegen import numpy as np_codegen
from fluxion.compiler.fusion import fuse
from fluxion.compiler.graph import GNode, Graph

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
I64 = np.dtype(np.int64)
BOOL = np.dtype(bool)
HAVE_CC = cache.toolchain(fluxion.compiler.config.cc) is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no working C compiler (CC)")


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    d = str(tmp_path / "kernels")
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", d)
    # products keep the orientation the graph gives (no timing decides their layout)
    monkeypatch.setattr(fluxion.compiler.config, "autotune", False)
    return d


def node(op: str, *args: Any, sh: tuple = (2, 3), dt: np.dtype = F32, **attrs: Any) -> GNode:
    return GNode(op, tuple(args), dict(attrs), tuple(sh), np.dtype(dt))


def n(i: int) -> tuple:
    return ("n", i)


X, Y, Z = ("in", 0), ("in", 1), ("in", 2)


def c_source(g: Graph) -> str:
    kernels, _ = fuse(g)
    return c_codegen.render(g, kernels)


def kernel_text(src: str, name: str = "fused_0") -> str:
    start = src.index(f"void {name}(")
    return src[start:src.index("\n}\n", start) + 3]


# --- golden C ---------------------------------------------------------------------------
def test_c_exp_mul_fused() -> None:
    g = Graph([((2, 3), F32), ((2, 3), F32)],
              [node("exp", X), node("mul", n(0), Y)], [n(1)])
    src = c_source(g)
    assert src.startswith("#include <stdint.h>\n#include <stdlib.h>\n#include <math.h>\n")
    assert "#pragma omp declare simd notinbranch\nfloat expf(float);" in src  # vector exp
    assert "#include <tgmath.h>\n" in src
    assert src.count("void fused_") == 1  # one kernel for the chain
    k = kernel_text(src)
    assert re.search(r"void fused_0\(int64_t n, const float\* restrict in0, "
                     r"const float\* restrict in1, float\*( restrict)? out\) \{", k), k
    # contiguous: flat loops to n; a large output's aligned middle is streamed in blocks
    assert "for (int64_t i0 = 0; i0 < lo; i0++) {" in k
    assert "for (int64_t i0 = hi; i0 < n; i0++) {" in k
    assert "if (n * (int64_t)sizeof(float) >= 8388608) {" in k
    assert "tmp[j] = t1;" in k and "fluxion_stream_ps(out + b, tmp, 256);" in k
    # the threshold limits the threads only: a bare ``if`` applies to ``simd`` as well
    # (OpenMP 5), and every kernel below the threshold ran unvectorised (8x slower)
    assert "#pragma omp parallel for simd if (parallel: lo > 262144)" in k
    assert not re.search(r"simd if \((?!parallel: )", k), k
    assert "const float x0 = in0[i0];" in k and "const float x1 = in1[i0];" in k
    # float32 exp is the inline polynomial (no libm call in the loop)
    assert re.search(r"const float t0 = .*fluxion_exp32\(\(x0\)\)", k), k
    assert re.search(r"const float t1 = .*\(t0\) \* \(x1\)", k), k
    assert "out[i0] = t1;" in k


@needs_cc
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_streamed_large_output_is_exact(dtype: np.dtype, offset: int) -> None:
    """Past 8 MiB the output's aligned middle is streamed: the head before the first
    64-byte boundary, the blocks and the tail all hold exactly NumPy's a * b + a, whatever
    the output's alignment (``offset`` elements into a buffer)."""
    size = (8 << 20) // dtype.itemsize + 1000 + 7  # over the threshold, a ragged tail
    g = Graph([((size,), dtype), ((size,), dtype)],
              [node("mul", X, Y, sh=(size,), dt=dtype), node("add", n(0), X, sh=(size,),
                                                            dt=dtype)], [n(1)])
    prog = runtime.build_program(g, "c")
    rng = np.random.default_rng(9)
    a, b = (rng.standard_normal(size).astype(dtype) for _ in range(2))
    buf = np.full(size + 8, -7.0, dtype)
    out = buf[offset:offset + size]
    (name,) = prog._fns
    prog._fns[name](size, a.ctypes.data, b.ctypes.data, out.ctypes.data)
    np.testing.assert_array_equal(out, a * b + a)
    assert np.all(buf[:offset] == -7.0) and np.all(buf[offset + size:] == -7.0)
    (got,) = prog.run([a, b])  # and through the runtime's own buffer
    np.testing.assert_array_equal(got, a * b + a)


# the exp's multiply-adds are fused where the CPU has FMA, and plain where it has not
# (x86 can be told it has not); both forms must hold
_FMA_FORMS = [[], ["-mno-fma"]] if platform.machine().lower() in ("x86_64", "amd64") else [[]]


@needs_cc
@pytest.mark.parametrize("extra_flags", _FMA_FORMS, ids=lambda f: " ".join(f) or "native")
def test_c_float32_exp_is_within_one_ulp_for_every_float(
        extra_flags: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline float32 exp against the correctly rounded one, over every 97th bit
    pattern from -110 to 95 (subnormal results, overflow to inf) and the special values:
    at most 1 ulp apart (NumPy's own float32 exp: 2), nan and +-inf exact."""
    monkeypatch.setattr(cache, "FLAGS", [*cache.FLAGS, *extra_flags])
    bits = np.arange(0, 2**32, 97, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (x > -110) & (x < 95)]
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 88.7228, 88.72284, -87.34,
                        -100.0, -103.9, -103.98, 1e30, -1e30], np.float32)
    x = np.concatenate([x, special])
    g = Graph([(x.shape, F32)], [node("exp", X, sh=x.shape)], [n(0)])
    (got,) = runtime.build_program(g, "c").run([x])
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32)
    finite = np.isfinite(want) & np.isfinite(got)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    ulps = np.abs(got[finite].view(np.int32).astype(np.int64)
                  - want[finite].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, x[finite][ulps.argmax()]
    assert np.count_nonzero((want > 0) & (want < np.finfo(np.float32).tiny)) > 1000
    assert got[-4] == want[-4] and got[-4] > 0  # exp(-103.9): the smallest subnormal


def test_c_broadcast_add_loop_nest() -> None:
    """A row and a column broadcast into a matrix: two loops, the inner one vectorised,
    each input indexed by its own strides (no division or modulo per element)."""
    g = Graph([((2, 3), F32), ((3,), F32), ((2, 1), F32), ((), F32)],
              [node("add", X, Y), node("add", n(0), Z), node("mul", n(1), ("in", 3))],
              [n(2)])
    k = kernel_text(c_source(g))
    assert "for (int64_t i0 = 0; i0 < 2; i0++) {" in k
    assert "#pragma omp simd\n    for (int64_t i1 = 0; i1 < 3; i1++) {" in k
    assert "in0[i0 * 3 + i1]" in k
    assert "in1[i1]" in k
    assert "in2[i0]" in k
    assert "in3[0]" in k
    assert "out[i0 * 3 + i1] = t2;" in k
    assert "/" not in k and "%" not in k


@pytest.mark.parametrize("in_shape, out_shape", [
    ((3,), (2, 3)), ((2, 1), (2, 3)), ((1, 3), (2, 3)), ((), (2, 3)), ((1,), (4,)),
    ((2, 1, 4), (2, 3, 4)), ((3, 1), (2, 3, 5)), ((5,), (2, 3, 5)), ((2, 3, 1), (2, 3, 4)),
    ((1, 1, 4), (2, 3, 4)), ((2, 3, 4), (2, 3, 4)), ((4, 1, 1), (4, 2, 3)),
])
def test_loop_nest_reads_what_broadcasting_puts_there(in_shape: tuple,
                                                      out_shape: tuple) -> None:
    """Walked in order, the collapsed loops and the input's strides in them visit the
    element that NumPy broadcasting puts at each output position, and the output's
    strides visit every position once, in order."""
    own = c_codegen.c_strides(in_shape)
    ext, (out_st, in_st) = c_codegen.loop_nest(
        out_shape, [c_codegen.c_strides(out_shape),
                    c_codegen.broadcast_strides(in_shape, own, out_shape)])
    src = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    want = np.broadcast_to(src, out_shape).ravel()
    idx = np.indices(ext).reshape(len(ext), -1).T if ext else np.zeros((1, 0), int)
    assert [int(i @ np.array(out_st, int)) for i in idx] == list(range(want.size))
    got = [int(src.ravel()[int(i @ np.array(in_st, int))]) for i in idx]
    assert got == want.tolist(), (ext, in_st)


def test_loop_nest_collapses_contiguous_and_keeps_real_broadcasts() -> None:
    c = c_codegen.c_strides
    assert c_codegen.loop_nest((2, 3, 4), [c((2, 3, 4)), c((2, 3, 4))])[0] == (24,)
    # a (.., 1) column broadcast along the last dim: rows merged, the last dim kept
    ext, _ = c_codegen.loop_nest((32, 4, 64, 64), [
        c((32, 4, 64, 64)), c_codegen.broadcast_strides((32, 4, 64, 1), c((32, 4, 64, 1)),
                                                        (32, 4, 64, 64))])
    assert ext == (8192, 64)


@needs_cc
def test_c_reads_transposed_and_expanded_views_in_place() -> None:
    """Views produced inside the graph (a transpose, an expand) feed the kernel through
    their strides: the C indexes them, no copy is made, results equal NumPy's."""
    g = Graph([((3, 4), F32), ((4, 3), F32), ((4, 1), F32)],
              [node("permute", X, sh=(4, 3), dims=(1, 0)),
               node("expand", Z, sh=(4, 3), shape=(4, 3)),
               node("mul", n(0), Y, sh=(4, 3)),
               node("add", n(2), n(1), sh=(4, 3))], [n(3)])
    prog = runtime.build_program(g, "c")
    assert prog.backend == "c"
    k = kernel_text(prog.source, "k_" + prog.source.split("void k_")[1].split("(")[0])
    assert "* 4" in k  # the transposed view: stride 4 along its rows
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4, 3), (4, 1)))
    (got,) = prog.run([a, b, c])
    np.testing.assert_allclose(got, a.T * b + c, rtol=1e-6)
    # the same program on inputs whose layout it was not written for: still right
    (got,) = prog.run([np.asfortranarray(a), b[::1], np.ascontiguousarray(c)])
    np.testing.assert_allclose(got, a.T * b + c, rtol=1e-6)


# a float32 transposed tile is copied in 8x8 register blocks where the CPU has AVX, and
# element by element elsewhere (x86 can be told it has not); both copies must hold
_AVX_FORMS = [[], ["-mno-avx"]] if platform.machine().lower() in ("x86_64", "amd64") else [[]]


@needs_cc
@pytest.mark.parametrize("extra_flags", _AVX_FORMS, ids=lambda f: " ".join(f) or "native")
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("shape", [(45, 70), (3, 33, 64), (32, 32), (2, 64, 96)])
def test_c_reads_a_transposed_input_in_tiles(shape: tuple, dynamic: bool,
                                             extra_flags: list[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An input read across its rows is copied a tile at a time into a local array along
    its own rows (``c._tiled``), float32 tiles 8x8 blocks at a time (``fluxion_tr8``),
    and the loop reads the tile: every element lands where NumPy puts it, full and edge
    tiles and a batch dim included, at fixed and at run-time sizes, with and without
    the block copy."""
    monkeypatch.setattr(cache, "FLAGS", [*cache.FLAGS, *extra_flags])
    nd = len(shape)
    swap = (*range(nd - 2), nd - 1, nd - 2)
    src = (*shape[:-2], shape[-1], shape[-2])
    g = Graph([(src, F32), (shape[-1:], F32), (shape, F64)],
              [node("permute", X, sh=shape, dims=swap),
               node("add", n(0), Y, sh=shape),
               node("relu", n(1), sh=shape),
               node("permute", Z, sh=src, dims=swap, dt=F64),
               node("mul", n(3), 2.0, sh=src, dt=F64)], [n(2), n(4)])
    prog = runtime.build_program(g, "c", dynamic=dynamic)
    assert prog.source.count("tile0[32][32]") == 2
    assert "float tile0" in prog.source and "double tile0" in prog.source
    # the loads read the tiles (at run-time sizes too), only float32 copies by blocks
    assert prog.source.count("const float x0 = tile0[") == 1
    assert prog.source.count("const double x0 = tile0[") == 1
    assert prog.source.count("fluxion_tr8(&in0[") == 1
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(src).astype(np.float32), rng.standard_normal(shape[-1:])
    c = rng.standard_normal(shape)
    got, got2 = prog.run([a, b.astype(np.float32), c])
    np.testing.assert_array_equal(got, np.maximum(a.transpose(swap) + b.astype(np.float32), 0))
    np.testing.assert_array_equal(got2, c.transpose(swap) * 2.0)


def test_c_comparison_produces_bool() -> None:
    g = Graph([((2, 3), F32)], [node("gt", X, 0.5, dt=BOOL)], [n(0)])
    k = kernel_text(c_source(g))
    assert re.search(r"uint8_t\*( restrict)? out\)", k), k
    assert "const float* restrict in0" in k
    # held as an int in the loop (0 or 1), a byte only in memory: a uint8_t between float
    # steps makes GCC give up vectorising the loop
    assert re.search(r"const int t0 = .*\(x0\) > .*0\.5.* != 0\)", k), k


@needs_cc
def test_c_bool_between_float_steps_stays_in_an_int() -> None:
    # ReLU's backward: g * (x > 0) cast to float
    g = Graph([((2, 3), F32), ((2, 3), F32)],
              [node("gt", X, 0.0, dt=BOOL), node("cast", n(0), dtype=F32),
               node("mul", Y, n(1))], [n(2)])
    k = kernel_text(c_source(g))
    assert "uint8_t" not in k, k
    prog = runtime.build_program(g, "c")
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    (got,) = prog.run([x, y])
    np.testing.assert_array_equal(got, y * (x > 0))


def test_c_where_reads_a_bool_condition() -> None:
    g = Graph([((2, 3), BOOL), ((2, 3), F32), ((3,), F32)],
              [node("exp", Y), node("where", X, n(0), Z)], [n(1)])
    src = c_source(g)
    assert src.count("void fused_") == 1
    k = kernel_text(src)
    cond = re.search(r"const uint8_t\* restrict in(\d)", k)
    assert cond, k
    assert re.search(r"const float x\d = in\d\[i1\];", k), k  # the broadcast branch
    j = cond.group(1)
    assert re.search(rf"\(x{j}\) \? \(t0\) : \(x\d\)", k), k


def test_c_literals_nan_inf() -> None:
    g = Graph([((4,), F32)],
              [node("clamp", X, sh=(4,), min=-np.inf, max=np.nan),
               node("add", n(0), float("inf"), sh=(4,)),
               node("mul", n(1), float("-inf"), sh=(4,))], [n(2)])
    k = kernel_text(c_source(g))
    assert "INFINITY" in k and "-INFINITY" in k


def test_numpy_renderer_source() -> None:
    g = Graph([((2, 3), F32), ((2, 3), F32)],
              [node("exp", X), node("mul", n(0), Y)], [n(1)])
    kernels, _ = fuse(g)
    src = np_codegen.render(g, kernels)
    assert src.startswith("def fused_0(x0, x1):")
    assert "OPS['exp'].forward(np, x0)" in src and "OPS['mul'].forward(np, t0, x1)" in src
    fn = np_codegen.load(src)["fused_0"]
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    np.testing.assert_allclose(fn(a, b), np.exp(a) * b, rtol=1e-6)


# --- fusion -----------------------------------------------------------------------------
def groups(g: Graph) -> tuple[list[list[str]], list[int]]:
    kernels, schedule = fuse(g)
    return [[g.nodes[m].op for m in k.nodes] for k in kernels], schedule


def test_fusion_chain_is_one_kernel() -> None:
    g = Graph([((2, 3), F32)], [node("exp", X), node("mul", n(0), 2.0),
                                node("add", n(1), X), node("tanh", n(2))], [n(3)])
    ks, schedule = groups(g)
    assert ks == [["exp", "mul", "add", "tanh"]]
    assert schedule == [3]


def test_fusion_stops_at_library_ops_and_fan_out() -> None:
    g = Graph([((2, 3), F32)],
              [node("exp", X),                                      # 0 read twice
               node("mul", n(0), 2.0),                              # 1
               node("cumsum", n(1), dim=0),                         # 2 library
               node("neg", n(2)),                                   # 3
               node("add", n(0), n(3)),                             # 4
               node("sqrt", n(4))],                                 # 5
              [n(5)])
    ks, schedule = groups(g)
    assert ["exp"] in ks  # two users: computed once, not fused into either
    assert ["mul"] in ks and ["neg", "add", "sqrt"] in ks  # the library op splits them
    assert 2 in schedule
    kernels, _ = fuse(g)
    assert all(2 not in k.nodes for k in kernels)


def test_sum_takes_in_its_elementwise_producer() -> None:
    """mul -> sum is one kernel ending in the sum; what reads the sum is a kernel of its
    own; a producer that a later step reads too is stored by its sum's kernel in the same
    pass (computed once, never read back for the sum); one read before the sum stays
    apart and the sum is a kernel alone."""
    g = Graph([((4, 3), F32), ((4, 3), F32)],
              [node("mul", X, Y, sh=(4, 3)),                          # 0
               node("sum", n(0), sh=(3,), dims=(0,), keepdim=False),  # 1
               node("neg", n(1), sh=(3,)),                            # 2
               node("exp", X, sh=(4, 3)),                             # 3 read twice
               node("sum", n(3), sh=(4, 1), dims=(1,), keepdim=True),  # 4
               node("add", n(3), n(4), sh=(4, 3))],                   # 5
              [n(2), n(5)])
    ks, schedule = groups(g)
    assert ks == [["mul", "sum"], ["neg"], ["exp", "sum"], ["add"]]
    kernels, _ = fuse(g)
    assert kernels[2].extra == [3]  # exp, stored for the add
    assert 0 not in schedule and 3 not in schedule and 4 in schedule
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    y = np.linspace(2, 3, 12, dtype=np.float32).reshape(4, 3)
    e = np.exp(x)
    for backend in ("numpy", "c") if HAVE_CC else ("numpy",):
        got = runtime.build_program(g, backend).run([x, y])
        np.testing.assert_allclose(got[0], -(x * y).sum(axis=0), rtol=1e-6)
        np.testing.assert_allclose(got[1], e + e.sum(axis=1, keepdims=True), rtol=1e-6)
    if HAVE_CC:
        src = c_source(g)
        body = kernel_text(src)  # sum over rows: accumulators ride along the kept row
        assert "double acc[1024];" in body and "acc[j] += t0;" in body  # never stored
        body = kernel_text(src, "fused_2")  # sum along the row: one accumulator
        assert "double acc = 0;" in body and "#pragma omp simd reduction(+:acc)" in body
        assert "out1[i0 * 3 + r0] = t0;" in body and "acc += t0;" in body
    # the same exp read before its sum: stored by a kernel of its own, the sum alone
    g.nodes[4], g.nodes[5] = node("add", X, n(3), sh=(4, 3)), \
        node("sum", n(3), sh=(4, 1), dims=(1,), keepdim=True)
    g.outputs.append(n(4))
    ks, _ = groups(g)
    assert ["exp"] in ks and ["sum"] in ks


@needs_cc
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("dims,keepdim", [((0,), False), ((1,), True), ((0, 2, 3), True),
                                          (None, False), ((3,), False), ((1, 2), False),
                                          ((0, 1), False), ((0, 2), True)])
@pytest.mark.parametrize("order", [(3, 2, 1, 0), (0, 1, 2, 3)], ids=["transposed", "plain"])
def test_fused_sum_matches_numpy(dtype: np.dtype, dims: Any, keepdim: bool,
                                 order: tuple) -> None:
    """A fused (g * (m > 0)).sum(dims) in C against NumPy on the same inputs, with a
    transposed operand read in place or all contiguous (then a sum whose last kept
    dimension follows the reduced ones runs row-wise, accumulators along the row); float32
    sums accumulate in double (within one float32 step of the exact sum)."""
    shape = (5, 4, 6, 1100)  # a kept row longer than one block of accumulators
    rng = np.random.default_rng(5)
    a = rng.standard_normal(shape).astype(dtype)
    inv = np.argsort(order)
    m = rng.standard_normal(tuple(shape[inv[j]] for j in range(4))).astype(dtype)
    out_shape = np.sum(a, axis=dims, keepdims=keepdim).shape
    g = Graph([(shape, dtype), (m.shape, dtype)],
              [node("permute", Y, sh=shape, dt=dtype, dims=order),                 # 0
               node("gt", n(0), 0.0, sh=shape, dt=BOOL),                            # 1
               node("cast", n(1), sh=shape, dt=dtype, dtype=dtype),                 # 2
               node("mul", X, n(2), sh=shape, dt=dtype),                            # 3
               node("sum", n(3), sh=out_shape, dt=dtype, dims=dims, keepdim=keepdim)],
              [n(4)])
    prog = runtime.build_program(g, "c")
    assert any(prog.graph.nodes[k.root].op == "sum" and len(k.nodes) > 1
               for k in prog.kernels)
    row_wise = order == (0, 1, 2, 3) and dims in ((0,), (1,), (0, 1), (0, 2), (1, 2))
    assert ("double acc[1024];" in prog.source) == row_wise
    (got,) = prog.run([a, m])
    mask = m.transpose(order) > 0
    terms = a.astype(np.longdouble) * mask
    exact = np.sum(terms, axis=dims, keepdims=keepdim)
    want = np.sum(a * mask.astype(dtype), axis=dims, keepdims=keepdim)
    assert got.shape == want.shape and got.dtype == want.dtype
    err = np.abs(got.astype(np.longdouble) - exact)
    if dtype == F32:  # summed in double, rounded once: within one float32 step
        assert np.all(err <= np.spacing(np.abs(exact).astype(F32)))
    else:  # the classic bound of a running sum: (n - 1) eps sum|x|
        count = terms.size // max(exact.size, 1)
        bound = count * np.finfo(F64).eps * np.sum(np.abs(terms), axis=dims, keepdims=keepdim)
        assert np.all(err <= bound)


def test_fusion_takes_in_a_value_read_several_times_inside_one_kernel() -> None:
    """s = sigmoid(x) read three times by s + x*s*(1-s): all readers fuse, so s does too
    (one kernel, s never written to memory); the result equals the node-by-node one."""
    g = Graph([((2, 3), F32)],
              [node("sigmoid", X),           # 0: s
               node("sub", 1.0, n(0)),       # 1: 1 - s
               node("mul", X, n(0)),         # 2: x*s
               node("mul", n(2), n(1)),      # 3
               node("add", n(0), n(3))],     # 4: s + x*s*(1-s)
              [n(4)])
    ks, schedule = groups(g)
    assert ks == [["sigmoid", "sub", "mul", "mul", "add"]]
    assert schedule == [4]
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    s = 1 / (1 + np.exp(-x))
    for backend in ("numpy", "c") if HAVE_CC else ("numpy",):
        (got,) = runtime.build_program(g, backend).run([x])
        np.testing.assert_allclose(got, s + x * s * (1 - s), rtol=1e-5)


def test_a_cheap_value_read_by_several_kernels_is_computed_in_each() -> None:
    """A bias add read by its activation, by a kernel after a library op and by a sum is
    never stored: each of the three kernels computes it from x and the bias (its own
    kernel is gone); the values are the node-by-node ones on both backends. An exp read
    twice, an add of it, and a graph output are stored as before."""
    g = Graph([((4, 3), F32), ((3,), F32)],
              [node("add", X, Y, sh=(4, 3)),                          # 0: read 3 times
               node("tanh", n(0), sh=(4, 3)),                         # 1
               node("cumsum", n(1), dim=0, sh=(4, 3)),                # 2 library
               node("mul", n(2), n(0), sh=(4, 3)),                    # 3
               node("sum", n(0), sh=(3,), dims=(0,), keepdim=False)],  # 4
              [n(3), n(4)])
    ks, schedule = groups(g)
    assert ks == [["add", "tanh"], ["add", "mul"], ["add", "sum"]]
    assert 0 not in schedule
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(4, 3)
    b = np.array([0.5, -1.0, 2.0], np.float32)
    h = x + b
    for backend in ("numpy", "c") if HAVE_CC else ("numpy",):
        got = runtime.build_program(g, backend).run([x, b])
        np.testing.assert_allclose(got[0], np.cumsum(np.tanh(h), axis=0) * h, rtol=1e-6)
        np.testing.assert_allclose(got[1], h.sum(axis=0), rtol=1e-6)
    stored = Graph([((4, 3), F32), ((4, 3), F32)],
                   [node("exp", X, sh=(4, 3)),                        # 0: not cheap
                    node("add", n(0), Y, sh=(4, 3)),                  # 1: reads a kernel's value
                    node("neg", n(0), sh=(4, 3)),
                    node("cumsum", n(1), dim=0, sh=(4, 3)),
                    node("mul", n(3), n(1), sh=(4, 3)),
                    node("mul", X, Y, sh=(4, 3)),                     # 5: a graph output
                    node("cumsum", n(5), dim=0, sh=(4, 3)),
                    node("sub", n(6), n(5), sh=(4, 3))],
                   [n(2), n(4), n(5), n(7)])
    ks, _ = groups(stored)
    assert ["exp"] in ks and ["add"] in ks and ["mul"] in ks


def test_fusion_stores_a_graph_output_beside_the_root() -> None:
    """A producer that is also a graph output joins its consumer's kernel and is stored
    as an extra output of the same pass; one read elsewhere stays a kernel of its own."""
    g = Graph([((2, 3), F32)], [node("exp", X), node("mul", n(0), 2.0)], [n(1), n(0)])
    kernels, schedule = fuse(g)
    assert [[g.nodes[m].op for m in k.nodes] for k in kernels] == [["exp", "mul"]]
    assert kernels[0].extra == [0] and schedule == [1]
    g = Graph([((2, 3), F32)], [node("exp", X), node("mul", n(0), 2.0),
                                node("sum", n(0), sh=(), dims=None, keepdim=False)],
              [n(1), n(0), n(2)])
    ks, _ = groups(g)
    assert ks == [["exp"], ["mul"], ["sum"]]


def _momentum_graph(dt: np.dtype = F32) -> Graph:
    """SGD with momentum, as captured: buf' = 0.9 buf + g, p' = p - 0.1 buf' (both
    outputs, both to be written back in place)."""
    sh = (3, 5)
    return Graph([(sh, dt), (sh, dt), (sh, dt)],
                 [node("mul", X, 0.9, sh=sh, dt=dt), node("add", n(0), Y, sh=sh, dt=dt),
                  node("mul", n(1), -0.1, sh=sh, dt=dt), node("add", Z, n(2), sh=sh, dt=dt)],
                 [n(1), n(3)])


def test_c_multi_output_kernel() -> None:
    src = c_source(_momentum_graph())
    assert src.count("void fused_") == 1
    k = kernel_text(src)
    assert "float* out, float* out1)" in k  # the root, then the stored member
    assert "out1[i0] = t1;" in k and "out[i0] = t3;" in k


def test_explain_names_the_extra_outputs() -> None:
    def step(buf: Any, grad: Any, w: Any) -> Any:
        buf.mul_(0.9).add_(grad)
        w.add_(buf, alpha=-0.1)
        return w.sum()

    report = fluxion.explain(step, *(fluxion.randn(3, 4) for _ in range(3)))
    assert "fused_0: mul -> add -> addcmul (also stores %1)" in report.kernels[0]


@pytest.mark.parametrize("dt", [F32, F64])
def test_multi_output_kernel_in_place_both_backends(dt: np.dtype) -> None:
    """Both outputs of one kernel written straight into their targets (the buffer and the
    weights it updates), or into fresh memory when a target overlaps another output:
    the C and the NumPy kernels give NumPy's values either way."""
    g = _momentum_graph(dt)
    rng = np.random.default_rng(3)
    buf, grad, w = (rng.standard_normal((3, 5)).astype(dt) for _ in range(3))
    want_buf = buf * dt.type(0.9) + grad
    want_w = w + want_buf * dt.type(-0.1)
    backends = ["numpy", "c"] if HAVE_CC else ["numpy"]
    for backend in backends:
        prog = runtime.build_program(g, backend=backend)
        b2, w2 = buf.copy(), w.copy()
        got_buf, got_w = prog.run([b2, grad, w2], {0: b2, 1: w2})
        np.testing.assert_array_equal(got_buf, want_buf)
        np.testing.assert_array_equal(got_w, want_w)
        if backend == "c":  # written in place: no copies back needed
            assert got_buf is b2 and got_w is w2
        same = buf.copy()  # both targets one array: never both written there
        got_buf, got_w = prog.run([same, grad, w.copy()], {0: same, 1: same})
        np.testing.assert_array_equal(got_buf, want_buf)
        np.testing.assert_array_equal(got_w, w + want_buf * dt.type(-0.1))
        assert got_buf is not got_w


def test_fusion_leaves_integers_and_non_c_ops_to_the_library() -> None:
    g = Graph([((2, 3), I64), ((2, 3), F32)],
              [node("add", X, 1, dt=I64),
               node("remainder", Y, 1.5),
               node("floor_divide", Y, 2.0),
               node("round", Y, decimals=2),
               node("mul", n(1), n(2))],
              [n(0), n(3), n(4)])
    ks, schedule = groups(g)
    assert ks == [["mul"]]
    assert schedule[:4] == [0, 1, 2, 3]


def test_fusion_float64_and_bool_casts() -> None:
    g = Graph([((2, 3), F64)],
              [node("gt", X, 0.0, dt=BOOL), node("cast", n(0), dt=F64, dtype=fluxion.float64),
               node("mul", n(1), X, dt=F64)], [n(2)])
    ks, _ = groups(g)
    assert ks == [["gt", "cast", "mul"]]
    k = kernel_text(c_source(g))
    assert "const double* restrict in0" in k and "double" in k


# --- C and NumPy backends agree with eager, specials included -----------------------------
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 1e4, -1e-3, 0.25, 3.0,
                    -7.0], np.float64)


def _inputs(dtype: Any) -> tuple[Any, Any]:
    rng = np.random.default_rng(7)
    a = np.concatenate([SPECIAL, rng.standard_normal(12) * 3])
    b = np.concatenate([SPECIAL[::-1], rng.standard_normal(12) * 3])
    return (fluxion.from_numpy(a.astype(dtype).reshape(4, 6)),
            fluxion.from_numpy(b.astype(dtype).reshape(4, 6)))


NAN_OPS = {
    "relu": lambda x, y: x.relu(),
    "maximum": lambda x, y: fluxion.maximum(x, y),
    "minimum": lambda x, y: fluxion.minimum(x, y),
    "clamp": lambda x, y: x.clamp(-1.0, 2.0),
    "clamp_min": lambda x, y: x.clamp(min=0.5),
    "clamp_max": lambda x, y: x.clamp(max=-0.5),
    "sign": lambda x, y: x.sign(),
    "relu_then_max": lambda x, y: fluxion.maximum(x.relu() * 2, y.sign()),
    "where_gt": lambda x, y: fluxion.where(x > y, x, y * 2),
    "abs_neg": lambda x, y: (-x).abs(),
}


def _exactly_equal(a: Any, b: Any, what: str) -> None:
    a, b = a.numpy(), b.numpy()
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a, b, err_msg=what)  # NaN positions must agree too


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_semantics_c_numpy_eager(dtype: str) -> None:
    """relu/maximum/minimum/clamp/sign follow NumPy (and PyTorch): NaN propagates; all
    functions go into one compiled graph per backend (one C build)."""
    x, y = _inputs(dtype)

    def everything(x: Any, y: Any) -> tuple:
        return tuple(f(x, y) for f in NAN_OPS.values())

    eager = everything(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: this must be the C backend
        c_out = fluxion.compile(everything, backend="c")(x, y) if HAVE_CC else None
    np_out = fluxion.compile(everything, backend="numpy")(x, y)
    for name, e, nb in zip(NAN_OPS, eager, np_out):
        _exactly_equal(nb, e, f"numpy backend, {name}")
    if c_out is not None:
        for name, e, cb in zip(NAN_OPS, eager, c_out):
            _exactly_equal(cb, e, f"C backend, {name}")


ELEMENTWISE = {
    "exp": lambda x, y: x.exp(), "log": lambda x, y: x.abs().log(),
    "log1p": lambda x, y: x.abs().log1p(), "expm1": lambda x, y: x.expm1(),
    "sqrt": lambda x, y: x.abs().sqrt(), "rsqrt": lambda x, y: x.abs().rsqrt(),
    "reciprocal": lambda x, y: x.reciprocal(), "sin": lambda x, y: x.sin(),
    "cos": lambda x, y: x.cos(), "tan": lambda x, y: x.tan(), "tanh": lambda x, y: x.tanh(),
    "sigmoid": lambda x, y: x.sigmoid(), "erf": lambda x, y: x.erf(),
    "floor": lambda x, y: x.floor(), "ceil": lambda x, y: x.ceil(),
    "round": lambda x, y: x.round(), "trunc": lambda x, y: x.trunc(),
    "neg": lambda x, y: -x, "add": lambda x, y: x + y, "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y, "div": lambda x, y: x / y, "pow": lambda x, y: x.abs() ** y,
    "pow_scalar": lambda x, y: x ** 3, "atan2": lambda x, y: fluxion.atan2(x, y),
    "eq": lambda x, y: x == y, "ne": lambda x, y: x != y, "lt": lambda x, y: x < y,
    "le": lambda x, y: x <= y, "ge": lambda x, y: x >= y,
    "isnan": lambda x, y: x.isnan(), "isinf": lambda x, y: x.isinf(),
    "isfinite": lambda x, y: x.isfinite(),
    "logical": lambda x, y: (x > 0).logical_and(y < 0).logical_or((x > y).logical_not())
    .logical_xor(y > 1),
    "cast_bool": lambda x, y: (x > 0).to(x.dtype) * y,
    "cast_f64": lambda x, y: x.double() * 2,
    "gelu": lambda x, y: fluxion.nn.functional.gelu(x, approximate="tanh"),
    "gelu_erf": lambda x, y: fluxion.nn.functional.gelu(x),
    "silu": lambda x, y: fluxion.nn.functional.silu(x),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_c_numpy_eager(dtype: str) -> None:
    x, y = _inputs(dtype)

    def everything(x: Any, y: Any) -> tuple:
        return tuple(f(x, y) for f in ELEMENTWISE.values())

    with np.errstate(all="ignore"):
        eager = everything(x, y)
        outs = {"numpy": fluxion.compile(everything, backend="numpy")(x, y)}
        if HAVE_CC:
            outs["c"] = fluxion.compile(everything, backend="c")(x, y)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for backend, got in outs.items():
        for name, e, g in zip(ELEMENTWISE, eager, got):
            a, b = g.numpy(), e.numpy()
            what = f"{backend} backend, {name}"
            assert a.dtype == b.dtype and a.shape == b.shape, what
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, rtol=rtol, atol=0, equal_nan=True,
                                           err_msg=what)
            else:
                np.testing.assert_array_equal(a, b, err_msg=what)


def test_gelu_fuses_into_the_c_kernel() -> None:
    g = Graph([((2, 3), F32)], [node("gelu", X, approximate="tanh"), node("mul", n(0), X)],
              [n(1)])
    ks, _ = groups(g)
    assert ks == [["gelu", "mul"]]
    assert "exp(" in c_source(g) and "__typeof__" in c_source(g)  # float32 stays float32


@needs_cc
def test_outputs_reuse_memory_only_once_the_caller_dropped_them() -> None:
    """A large output's array comes back on the next call only when nothing holds the
    last one: results that are kept never change under the caller."""
    size = 1 << 15  # 128 KiB of float32: large enough to be recycled
    g = Graph([((size,), F32)], [node("mul", X, 2.0, sh=(size,))], [n(0)])
    prog = runtime.build_program(g, "c")
    x = np.arange(size, dtype=np.float32)
    (first,) = prog.run([x])
    (second,) = prog.run([x + 1])
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, x * 2)  # kept, so untouched by the second run
    address = second.ctypes.data
    del second
    (third,) = prog.run([x + 2])
    assert third.ctypes.data == address  # dropped: its memory is reused
    np.testing.assert_array_equal(third, (x + 2) * 2)
    view = third[::2]
    del third
    (fourth,) = prog.run([x])
    assert not np.shares_memory(fourth, view)  # a view keeps its base from being reused
    np.testing.assert_array_equal(view, ((x + 2) * 2)[::2])


@needs_cc
def test_an_intermediate_read_through_a_view_is_pooled_after_the_view() -> None:
    """A kernel result that only a view reads goes back to the pool once the view's last
    reader has run (the next call's kernel writes into it: no fresh pages); one whose
    view escapes as an output never does."""
    size = 1 << 15
    rows = (128, size // 128)
    g = Graph([((size,), F32), ((rows[1], 4), F32)],
              [node("exp", X, sh=(size,)), node("reshape", n(0), sh=rows, shape=rows),
               node("matmul", n(1), Y, sh=(rows[0], 4))], [n(2)])
    prog = runtime.build_program(g, "c")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(size).astype(np.float32), np.ones((rows[1], 4), np.float32)
    (out,) = prog.run([x, y])
    pooled = prog._pool[((size,), F32)]
    assert len(pooled) == 1
    address = pooled[0].ctypes.data
    (again,) = prog.run([x * 0, y])
    assert [a.ctypes.data for a in prog._pool[((size,), F32)]] == [address]  # used, back
    np.testing.assert_allclose(out, np.exp(x).reshape(rows) @ y, rtol=1e-5)
    np.testing.assert_allclose(again, np.full((rows[0], 4), rows[1], np.float32))
    escaping = Graph(g.inputs, g.nodes, [n(2), n(1)])
    prog = runtime.build_program(escaping, "c")
    (_, view) = prog.run([x, y])
    assert not prog._pool.get(((size,), F32))
    prog.run([x * 0, y])
    np.testing.assert_allclose(view, np.exp(x).reshape(rows), rtol=1e-6)


@needs_cc
def test_products_write_into_pooled_arrays() -> None:
    """An intermediate matrix product is written into a pooled array (mapped memory, no
    page faults) and goes back to the pool after its last reader; batched and broadcast
    products alike, equal to NumPy's."""
    rng = np.random.default_rng(1)
    for a_shape, b_shape, out in [((64, 128), (128, 256), (64, 256)),
                                  ((4, 32, 128), (128, 256), (4, 32, 256)),
                                  ((64, 128), (3, 128, 256), (3, 64, 256))]:
        g = Graph([(a_shape, F32), (b_shape, F32)],
                  [node("matmul", X, Y, sh=out), node("exp", n(0), sh=out)], [n(1)])
        prog = runtime.build_program(g, "c")
        a = rng.standard_normal(a_shape).astype(np.float32) * 0.1
        b = rng.standard_normal(b_shape).astype(np.float32) * 0.1
        (first,) = prog.run([a, b])
        (address,) = [p.ctypes.data for p in prog._pool[(out, F32)]]
        (second,) = prog.run([a * 2, b])
        assert [p.ctypes.data for p in prog._pool[(out, F32)]] == [address]
        np.testing.assert_allclose(first, np.exp(a @ b), rtol=1e-5)
        np.testing.assert_allclose(second, np.exp((a * 2) @ b), rtol=1e-5)


@needs_cc
def test_a_copy_writes_into_a_pooled_array() -> None:
    """A contiguous copy of a transposed view (a gradient made contiguous for BLAS) is
    written into a pooled array too, equal to NumPy's copy."""
    shape = (128, 256)
    g = Graph([((256, 128), F32)],
              [node("permute", X, sh=shape, dims=(1, 0)), node("clone", n(0), sh=shape),
               node("matmul", n(1), Y, sh=(128, 4))], [n(2)])
    g.inputs.append(((256, 4), F32))
    prog = runtime.build_program(g, "c")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((256, 128)).astype(np.float32), np.ones((256, 4), np.float32)
    (first,) = prog.run([x, y])
    (address,) = [p.ctypes.data for p in prog._pool[(shape, F32)]]
    (second,) = prog.run([x * 2, y])
    assert [p.ctypes.data for p in prog._pool[(shape, F32)]] == [address]
    np.testing.assert_allclose(first, x.T @ y, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(second, (x * 2).T @ y, rtol=1e-5, atol=1e-4)


def _heads_merged(prog: Any, inputs: list, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Run ``prog``, counting the copies reshape and cat make."""
    from fluxion.ops import OPS

    copies = {"reshape": 0, "cat": 0}
    for name in copies:
        forward = OPS[name].forward

        def spy(xp: Any, *arrays: Any, _f: Any = forward, _name: str = name, **kw: Any) -> Any:
            got = _f(xp, *arrays, **kw)
            copies[_name] += not any(np.shares_memory(got, a) for a in arrays)
            return got

        monkeypatch.setattr(OPS[name], "forward", spy)
    return prog.run(inputs), copies


@needs_cc
def test_a_product_is_written_where_its_heads_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention's heads merged back, (b, h, t, d) -> (b, t, h*d): the product is written in
    the merged layout, so the reshape is a view (reshapes to (b*t, h*d) of the same heads
    too); the values are NumPy's, on a second call too."""
    b, h, t, d, k = 2, 3, 4, 5, 6
    merged, heads = (b, t, h * d), (b, t, h, d)
    g = Graph([((b, h, t, k), F32), ((b, h, k, d), F32)],
              [node("matmul", X, Y, sh=(b, h, t, d)),
               node("permute", n(0), sh=heads, dims=(0, 2, 1, 3)),
               node("reshape", n(1), sh=merged, shape=merged),
               node("reshape", n(1), sh=(b * t, h * d), shape=(b * t, h * d)),
               node("exp", n(2), sh=merged), node("exp", n(3), sh=(b * t, h * d))],
              [n(4), n(5)])
    prog = runtime.build_program(g, "c")
    assert len(prog._direct) == 1 and not prog._joins
    rng = np.random.default_rng(0)
    for scale in (1.0, 2.0):
        x = rng.standard_normal((b, h, t, k)).astype(np.float32) * scale
        y = rng.standard_normal((b, h, k, d)).astype(np.float32)
        (out, flat), copies = _heads_merged(prog, [x, y], monkeypatch)
        want = np.exp((x @ y).transpose(0, 2, 1, 3).reshape(merged))
        np.testing.assert_allclose(out, want, rtol=1e-5)
        np.testing.assert_allclose(flat, want.reshape(b * t, h * d), rtol=1e-5)
        assert copies["reshape"] == 0


@needs_cc
def test_joined_heads_are_written_into_the_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention's backward joins dq, dk and dv, each merged from heads: every product is
    written into its slice of the join's memory and the join copies nothing; a part
    that is no such product (an input here) leaves the join copying (the products still
    written in their merged layouts), values the same."""
    b, h, t, d = 2, 2, 3, 4
    merged = (b, t, h * d)

    def graph(parts: int) -> Graph:
        nodes, joined = [], []
        for j in range(parts):
            m = len(nodes)
            nodes += [node("matmul", X, ("in", 1 + j), sh=(b, h, t, d)),
                      node("permute", n(m), sh=(b, t, h, d), dims=(0, 2, 1, 3)),
                      node("reshape", n(m + 1), sh=merged, shape=merged)]
            joined.append(n(m + 2))
        if parts < 3:
            joined.append(("in", 4))
        nodes.append(node("cat", *joined, sh=(b, t, 3 * h * d), dim=-1))
        nodes.append(node("mul", n(len(nodes) - 1), 2.0, sh=(b, t, 3 * h * d)))
        return Graph([((b, h, t, t), F32)] + [((b, h, t, d), F32)] * 3 + [(merged, F32)],
                     nodes, [n(len(nodes) - 1)])

    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(s).astype(np.float32)
              for s in [(b, h, t, t)] + [(b, h, t, d)] * 3 + [merged]]
    heads = [(inputs[0] @ v).transpose(0, 2, 1, 3).reshape(merged) for v in inputs[1:4]]
    for parts, joins, cat_copies in ((3, 1, 0), (2, 0, 1)):
        prog = runtime.build_program(graph(parts), "c")
        assert len(prog._joins) == joins
        for _ in range(2):
            (out,), copies = _heads_merged(prog, inputs, monkeypatch)
            want = np.concatenate(heads[:parts] + ([inputs[4]] if parts < 3 else []), -1)
            np.testing.assert_allclose(out, 2 * want, rtol=1e-5)
            assert copies == {"reshape": 0, "cat": cat_copies}  # merged in place either way
            assert not prog._claimed  # the join took its memory


def _count_calls(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> dict:
    from fluxion.ops import OPS

    calls = dict.fromkeys(names, 0)
    for name in names:
        def spy(*a: Any, _f: Any = OPS[name].forward, _n: str = name, **kw: Any) -> Any:
            calls[_n] += 1
            return _f(*a, **kw)

        monkeypatch.setattr(OPS[name], "forward", spy)
    return calls


@needs_cc
def test_views_only_kernels_read_are_never_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reshapes, a permute and an expand read only by C kernels, a template and each other
    are not made at run time: the kernels get the viewed array's address and index it the
    view's way. Same values as NumPy's; on inputs laid out otherwise than recorded too;
    and in verify mode, which needs the views as arrays."""
    g = Graph([((2, 3, 4), F32), ((4, 6), F32), ((3,), F32)],
              [node("reshape", X, sh=(6, 4), shape=(6, 4)),
               node("permute", Y, sh=(6, 4), dims=(1, 0)),
               node("add", n(0), n(1), sh=(6, 4)),
               node("softmax", n(1), sh=(6, 4), dim=1),
               node("expand", Z, sh=(2, 3), shape=(2, 3)),
               node("exp", n(4), sh=(2, 3)),
               node("reshape", n(1), sh=(6, 2, 2), shape=(6, 2, 2)),  # a view of a view
               node("neg", n(6), sh=(6, 2, 2))],
              [n(2), n(3), n(5), n(7)])
    prog = runtime.build_program(g, "c")
    assert prog._elided == {n(0): X, n(1): Y, n(4): Z, n(6): Y}
    rng = np.random.default_rng(4)
    x, y, z = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4), (4, 6), (3,)))
    e = np.exp(y.T - y.T.max(1, keepdims=True))
    want = [x.reshape(6, 4) + y.T, e / e.sum(1, keepdims=True),
            np.exp(np.broadcast_to(z, (2, 3))), -y.T.reshape(6, 2, 2)]
    calls = _count_calls(monkeypatch, ("reshape", "permute", "expand"))
    for inputs in ([x, y, z], [x, np.asfortranarray(y), z]):
        for got, w in zip(prog.run(inputs), want):
            np.testing.assert_allclose(got, w, rtol=1e-5)
    assert calls == {"reshape": 0, "permute": 0, "expand": 0}
    monkeypatch.setattr(fluxion.compiler.config, "verify", True)
    for got, w in zip(prog.run([x, y, z]), want):
        np.testing.assert_allclose(got, w, rtol=1e-5)


@needs_cc
def test_a_product_makes_the_view_it_reads_in_its_call(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """``x @ W.T`` (a linear layer): the transpose is not a step of its own, the product
    makes it in its call (one permute call a run); a transpose another library op reads
    stays a step. Values are NumPy's; explain's memory plan says so."""
    g = Graph([((4, 3), F32), ((5, 3), F32)],
              [node("permute", Y, sh=(3, 5), dims=(1, 0)),
               node("matmul", X, n(0), sh=(4, 5)),
               node("relu", n(1), sh=(4, 5)),
               node("permute", X, sh=(3, 4), dims=(1, 0)),
               node("cumsum", n(3), sh=(3, 4), dim=0)],
              [n(2), n(4)])
    prog = runtime.build_program(g, "c")
    assert prog._elided == {n(0): Y} and prog._viewing == {1}
    assert any("%0 (permute of %in1): no step of its own, made by the matrix product" in line
               for line in prog.memory_plan())
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 3)).astype(np.float32), \
        rng.standard_normal((5, 3)).astype(np.float32)
    calls = _count_calls(monkeypatch, ("permute",))
    relu, cum = prog.run([x, w])
    np.testing.assert_allclose(relu, np.maximum(x @ w.T, 0), rtol=1e-6)
    np.testing.assert_allclose(cum, np.cumsum(x.T, axis=0), rtol=1e-6)
    assert calls == {"permute": 2}  # the product's, and the cumsum's own step


@needs_cc
def test_a_product_output_is_reused_only_once_dropped() -> None:
    """A matrix product that leaves the graph (a weight's gradient) is written into last
    call's array when the caller has dropped it (``zero_grad``), never into one it holds."""
    g = Graph([((64, 128), F32), ((128, 256), F32)], [node("matmul", X, Y, sh=(64, 256))],
              [n(0)])
    prog = runtime.build_program(g, "c")
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((64, 128)).astype(np.float32), np.eye(128, 256, dtype=np.float32)
    (first,) = prog.run([a, b])
    address = first.ctypes.data
    del first
    (second,) = prog.run([a * 2, b])
    assert second.ctypes.data == address and prog._recycle[0] is second  # kept for reuse
    (third,) = prog.run([a * 3, b])  # ``second`` is still held
    assert third.ctypes.data != address and prog._recycle[0] is third
    np.testing.assert_array_equal(second, (a * 2) @ b)
    np.testing.assert_array_equal(third, (a * 3) @ b)


def test_program_backends_directly() -> None:
    """``build_program`` on the same graph with each backend: same outputs."""
    g = Graph([((3, 4), F32), ((4,), F32)],
              [node("mul", X, Y, sh=(3, 4)), node("exp", n(0), sh=(3, 4)),
               node("sum", n(1), sh=(3,), dims=(1,), keepdim=False),
               node("maximum", n(1), 1.0, sh=(3, 4))], [n(2), n(3)])
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((3, 4)).astype(np.float32),
              rng.standard_normal(4).astype(np.float32)]
    p_np = runtime.build_program(g, backend="numpy")
    assert p_np.backend == "numpy"
    want = p_np.run(inputs)
    np.testing.assert_allclose(want[0], np.exp(inputs[0] * inputs[1]).sum(1), rtol=1e-6)
    if HAVE_CC:
        p_c = runtime.build_program(g, backend="c")
        assert p_c.backend == "c" and p_c.library.endswith(".so")
        for a, b in zip(p_c.run(inputs), want):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        # runs again on new inputs (no state left from the first run)
        inputs2 = [x * 0.5 for x in inputs]
        for a, b in zip(p_c.run(inputs2), p_np.run(inputs2)):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_big_kernel_runs_parallel_branch() -> None:
    """Above PARALLEL_MIN elements the OpenMP branch runs: still exact."""
    size = c_codegen.PARALLEL_MIN + 1000
    x = fluxion.from_numpy(np.linspace(-3, 3, size).astype(np.float32))
    f = fluxion.compile(lambda x: (x * 2).exp().relu() + 1)
    np.testing.assert_allclose(f(x).numpy(), ((x * 2).exp().relu() + 1).numpy(), rtol=1e-6)


# --- the cache --------------------------------------------------------------------------
SCRIPT = r"""
import json, os, sys
import fluxion
def f(x, y):
    return ((x * y).exp() + 1).tanh() - y
cf = fluxion.compile(f)
x = fluxion.arange(12.0).reshape(3, 4) / 10
y = fluxion.ones(4) / 3
out = cf(x, y)
ok = bool(((out - f(x, y)).abs().max() < 1e-6).item())
print(json.dumps({"ok": ok, "cache_hits": cf.stats.cache_hits, "graphs": cf.stats.graphs,
                  "backend": [p.backend for p in cf.programs.values()]}))
"""


def _run_script(cache_dir: str) -> dict:
    env = dict(os.environ, FLUXION_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _so_files(d: str) -> set[str]:
    return {f for f in os.listdir(d) if f.endswith(".so")} if os.path.isdir(d) else set()


@needs_cc
def test_second_process_hits_the_cache(_hermetic_cache: str) -> None:
    first = _run_script(_hermetic_cache)
    assert first == {"ok": True, "cache_hits": 0, "graphs": 1, "backend": ["c"]}
    built = _so_files(_hermetic_cache)
    assert len(built) == 1
    mtimes = {f: os.path.getmtime(os.path.join(_hermetic_cache, f)) for f in built}
    second = _run_script(_hermetic_cache)
    assert second["ok"] and second["cache_hits"] >= 1
    assert _so_files(_hermetic_cache) == built  # nothing new was compiled
    assert {f: os.path.getmtime(os.path.join(_hermetic_cache, f)) for f in built} == mtimes


@needs_cc
def test_concurrent_processes_share_the_cache(_hermetic_cache: str) -> None:
    env = dict(os.environ, FLUXION_CACHE_DIR=_hermetic_cache)
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["ok"] and r["backend"] == ["c"] for r in results)
    assert len(_so_files(_hermetic_cache)) == 1
    leftovers = [f for f in os.listdir(_hermetic_cache)
                 if not re.fullmatch(r"[0-9a-f]+\.(so|c)|k_[0-9a-f]+\.idx", f)]
    assert leftovers == []  # no half-written temporaries
    assert _run_script(_hermetic_cache)["cache_hits"] >= 1


@needs_cc
def test_same_process_new_function_loads_from_cache(_hermetic_cache: str) -> None:
    def f(x: Any) -> Any:
        return (x * 3).sin()

    x = fluxion.ones(5)
    a = fluxion.compile(f)
    a(x)
    assert a.stats.cache_hits == 0
    b = fluxion.compile(f)
    np.testing.assert_array_equal(b(x).numpy(), f(x).numpy())
    assert b.stats.cache_hits == 1
    (prog,) = b.programs.values()
    assert prog.cache_hit and "load" in prog.times
    assert os.path.dirname(prog.library) == _hermetic_cache
    # the source is kept beside the library
    assert os.path.exists(prog.library[:-3] + ".c")


@needs_cc
def test_cache_key_depends_on_source_and_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    k1 = cache.key_for("void f(void) {}")
    assert k1 == cache.key_for("void f(void) {}")
    assert k1 != cache.key_for("void g(void) {}")
    monkeypatch.setattr(cache, "FLAGS", [*cache.FLAGS, "-DFLUXION_TEST"])
    assert k1 != cache.key_for("void f(void) {}")


def test_no_compiler_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "cc", str(tmp_path / "no-such-cc"))
    cache.toolchain.cache_clear()
    monkeypatch.setattr(cache, "_warned", set())
    try:
        def f(x: Any) -> Any:
            return (x.exp() * 2 + 1).relu()

        x = fluxion.tensor([-1.0, 0.5, 2.0])
        with pytest.warns(RuntimeWarning, match="no working C compiler") as record:
            cf = fluxion.compile(f)
            np.testing.assert_allclose(cf(x).numpy(), f(x).numpy(), rtol=1e-6)
        assert len(record) == 1
        assert all(p.backend == "numpy" for p in cf.programs.values())
        assert "def fused_0(" in cf.show_source()
        with warnings.catch_warnings():  # warned once: later compiles stay quiet
            warnings.simplefilter("error")
            g = fluxion.compile(lambda x: (x * x).sigmoid().double())
            np.testing.assert_allclose(g(x).numpy(), (x * x).sigmoid().double().numpy(),
                                       rtol=1e-12)
            cf(fluxion.tensor([3.0, -2.0]))
        assert not os.path.exists(fluxion.compiler.config.cache_dir) or not _so_files(
            fluxion.compiler.config.cache_dir)
    finally:
        cache.toolchain.cache_clear()


def test_c_compile_error_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A C compiler that runs but fails: an error naming the compiler's message."""
    if not HAVE_CC:
        pytest.skip("no working C compiler (CC)")
    with pytest.raises(RuntimeError, match="C compiler failed"):
        cache.build_functions({"k_broken": "this is not C;"})
