"""The compiler's graph IR and passes on small hand-built graphs: dead-code elimination,
common-subexpression elimination (auxiliary outputs included), constant folding and every
algebraic identity of ``simplify`` (and the non-identities it must leave alone). Each pass
must preserve the function: the graph before and after is run through a plain reference
interpreter and through ``runtime.build_program(..., backend="numpy")``. Also: every
captured node's declared shape and dtype match what its kernel computes (the shape rules
the code generators trust)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from op_db import FLOATS, MIXED, OP_DB, OpEntry, Sample, build

import fluxion
from fluxion.compiler import cache, runtime
from fluxion.compiler.graph import GNode, Graph
from fluxion.compiler.passes import (
    PASSES,
    cse,
    dce,
    decompose,
    fold_constants,
    fold_slices,
    optimize,
    orient_products,
    simplify,
    transpose_products,
)
from fluxion.compiler.passes.rewrite import is_ref, map_refs
from fluxion.ops import OPS
from fluxion.ops.registry import run_kernel

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
I64 = np.dtype(np.int64)
BOOL = np.dtype(bool)
HAVE_CC = cache.toolchain(fluxion.compiler.config.cc) is not None


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", str(tmp_path / "kernels"))
    # products keep the orientation the graph gives (no timing decides their layout)
    monkeypatch.setattr(fluxion.compiler.config, "autotune", False)


# --- helpers ----------------------------------------------------------------------------
def interpret(graph: Graph, inputs: list[np.ndarray], check_specs: bool = False
              ) -> list[np.ndarray]:
    """Run a graph node by node with the op table's kernels (no passes, no fusion): the
    reference semantics of the IR. ``check_specs``: every value must have the shape and
    dtype its node declares."""
    env: dict[tuple, Any] = {("in", k): a for k, a in enumerate(inputs)}
    for k, c in enumerate(graph.consts):
        env[("const", k)] = c

    def get(r: tuple) -> Any:
        return env[r]

    for i, n in enumerate(graph.nodes):
        op = OPS[n.op]
        out = run_kernel(op.forward, np, *map_refs(n.args, get),
                         **{k: map_refs(v, get) for k, v in n.attrs.items()})
        outs = [np.asarray(o) for o in (out if op.n_aux else (out,))]
        env[("n", i)] = outs[0]
        for j, a in enumerate(outs[1:]):
            env[("aux", i, j)] = a
        if check_specs:
            declared = [(tuple(n.shape), np.dtype(n.dtype))] + [
                (tuple(s), np.dtype(d)) for s, d in n.aux]
            actual = [(o.shape, o.dtype) for o in outs]
            assert declared == actual, (
                f"node %{i} ({n.op}, attrs {n.attrs}) declares {declared} but its kernel "
                f"gives {actual}\n{graph}")
    return [env[r] if is_ref(r) else np.asarray(r) for r in graph.outputs]


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, x.dtype, y.shape, y.dtype)
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, equal_nan=True)
        else:
            np.testing.assert_array_equal(x, y)


def preserves(pass_fn: Any, graph: Graph, inputs: list[np.ndarray]) -> Graph:
    """Apply the pass; the result computes what the original does (interpreted, and
    through the whole NumPy pipeline). Returns the new graph."""
    before = interpret(graph, inputs)
    after_graph = pass_fn(graph)
    assert_same(interpret(after_graph, inputs), before)
    assert_same(runtime.build_program(after_graph, backend="numpy").run(inputs), before)
    assert_same(runtime.build_program(graph, backend="numpy").run(inputs), before)
    return after_graph


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def node(op: str, *args: Any, sh: tuple = (2, 3), dt: np.dtype = F32,
         aux: tuple = (), **attrs: Any) -> GNode:
    return GNode(op, tuple(args), dict(attrs), tuple(sh), np.dtype(dt), aux)


X = ("in", 0)
Y = ("in", 1)


def n(i: int) -> tuple:
    return ("n", i)


RNG = np.random.default_rng(0)
XV = RNG.standard_normal((2, 3)).astype(np.float32)
YV = RNG.standard_normal((2, 3)).astype(np.float32)


def graph(nodes: list[GNode], outputs: list, inputs: list | None = None,
          consts: list | None = None) -> Graph:
    return Graph(inputs=inputs or [((2, 3), F32), ((2, 3), F32)], nodes=nodes,
                 outputs=outputs, consts=consts or [])


# --- transposed products ----------------------------------------------------------------
def _weight_grad_graph(a_shape: tuple, b_shape: tuple, out: tuple) -> Graph:
    """``permute(matmul(permute(a), b))``, the shape of a Linear weight's gradient."""
    nd = len(out)
    swap = (*range(nd - 2), nd - 1, nd - 2)
    at = (*a_shape[:-2], a_shape[-1], a_shape[-2])
    mm = (*out[:-2], out[-1], out[-2])
    return graph([node("permute", X, sh=at, dims=(*range(len(a_shape) - 2),
                                                   len(a_shape) - 1, len(a_shape) - 2)),
                  node("matmul", n(0), Y, sh=mm),
                  node("permute", n(1), sh=out, dims=swap)], [n(2)],
                 inputs=[(a_shape, F32), (b_shape, F32)])


@pytest.mark.parametrize("a_shape, b_shape, out", [
    ((128, 6), (128, 5), (5, 6)),           # (xᵀ g)ᵀ of a Linear layer
    ((3, 7, 4), (3, 7, 2), (3, 2, 4)),      # batched
    ((3, 7, 4), (7, 2), (3, 2, 4)),         # a 2-D operand broadcast over the batch
])
def test_transpose_of_product_becomes_product_of_transposes(a_shape: tuple, b_shape: tuple,
                                                            out: tuple) -> None:
    g = _weight_grad_graph(a_shape, b_shape, out)
    opt = optimize(g)
    assert ops(opt) == ["permute", "matmul"]  # aᵀᵀ cancelled; no transpose after the product
    assert opt.outputs == [n(1)] and opt.nodes[1].shape == out
    rng = np.random.default_rng(1)
    vals = [rng.standard_normal(s).astype(np.float32) for s in (a_shape, b_shape)]
    (got,), (want,) = interpret(opt, vals), interpret(g, vals)
    assert got.flags.c_contiguous  # the product itself, not a transposed view of one
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_transpose_of_product_left_alone_when_the_product_is_read_elsewhere() -> None:
    g = graph([node("matmul", X, Y, sh=(2, 2)), node("permute", n(0), sh=(2, 2), dims=(1, 0)),
               node("add", n(0), n(1), sh=(2, 2))], [n(2)],
              inputs=[((2, 3), F32), ((3, 2), F32)])
    assert ops(transpose_products(g)) == ["matmul", "permute", "add"]
    # a permute that is not the last-two-dims swap is not a transposed product either
    g = graph([node("matmul", X, Y, sh=(4, 2, 2)), node("permute", n(0), sh=(2, 4, 2),
                                                         dims=(1, 0, 2))], [n(1)],
              inputs=[((4, 2, 3), F32), ((4, 3, 2), F32)])
    assert ops(transpose_products(g)) == ["matmul", "permute"]


# --- product orientation ---------------------------------------------------------------
def _linear_graph(out_is_product: bool = False) -> Graph:
    """``relu(x @ Wᵀ + b)``: a linear layer's forward."""
    return graph([node("permute", Y, sh=(3, 4), dims=(1, 0)),
                  node("matmul", X, n(0), sh=(2, 4)),
                  node("add", n(1), ("in", 2), sh=(2, 4)),
                  node("relu", n(2), sh=(2, 4))], [n(1) if out_is_product else n(3)],
                 inputs=[((2, 3), F32), ((4, 3), F32), ((4,), F32)])


def _linear_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.standard_normal(s).astype(np.float32) for s in ((2, 3), (4, 3), (4,))]


def test_orient_turns_a_product_around_when_the_chooser_says_so() -> None:
    asked = []

    def always(a: tuple, b: tuple, dtype: np.dtype) -> bool:
        asked.append((a, b, dtype))
        return True

    g = _linear_graph()
    out = preserves(lambda gr: dce(orient_products(gr, always)), g, _linear_inputs())
    # (W @ xᵀ)ᵀ: W is read as it is (its transpose cancelled), x through a transposed view
    assert ops(out) == ["permute", "matmul", "permute", "add", "relu"]
    assert out.nodes[1].args == (Y, n(0)) and out.nodes[1].shape == (4, 2)
    assert out.nodes[0].args == (X,) and out.nodes[2].shape == (2, 4)
    # the chooser sees each operand's shape and the element strides it has at run time
    assert asked == [(((2, 3), (3, 1)), ((3, 4), (1, 3)), F32)]
    inputs = _linear_inputs()
    assert_same(runtime.build_program(out, backend="c" if HAVE_CC else "numpy").run(inputs),
                interpret(g, inputs))


def test_orient_leaves_outputs_transposed_reads_and_unchosen_products() -> None:
    def never_asked(a: tuple, b: tuple, dtype: np.dtype) -> bool:
        raise AssertionError("not a candidate")

    g = _linear_graph(out_is_product=True)  # the product is a graph output: its layout stays
    assert orient_products(g, never_asked) is g
    read_transposed = graph([node("matmul", X, Y, sh=(2, 2)),
                             node("permute", n(0), sh=(2, 2), dims=(1, 0)),
                             node("exp", n(1), sh=(2, 2))], [n(2)],
                            inputs=[((2, 3), F32), ((3, 2), F32)])
    assert orient_products(read_transposed, never_asked) is read_transposed
    # read by an elementwise op that a sum reads (one fused sum: it would stride), or
    # straight by another product
    g = graph([node("matmul", X, Y, sh=(2, 2)), node("exp", n(0), sh=(2, 2)),
               node("sum", n(1), sh=(), dims=None, keepdim=False)], [n(2)],
              inputs=[((2, 3), F32), ((3, 2), F32)])
    assert orient_products(g, never_asked) is g
    g = graph([node("matmul", X, Y, sh=(2, 2)), node("matmul", n(0), X, sh=(2, 3))], [n(1)],
              inputs=[((2, 3), F32), ((3, 2), F32)])
    assert orient_products(g, never_asked) is g
    g = _linear_graph()
    assert orient_products(g, lambda a, b, d: False) is g


def test_orient_is_off_without_autotuning(monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxion.compiler import autotune

    monkeypatch.setattr(fluxion.compiler.config, "autotune", False)
    monkeypatch.setattr(autotune, "product_flipped", lambda *a: 1 / 0)
    g = _linear_graph()
    assert orient_products(g) is g


def test_autotune_measures_once_and_remembers_on_disk(monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    from fluxion.compiler import autotune

    measured = []

    def measure(a: tuple, b: tuple, dtype: np.dtype) -> bool:
        measured.append(a)
        return True

    monkeypatch.setattr(autotune, "_measure", measure)
    monkeypatch.setattr(autotune, "_known", {})
    a, b = ((256, 128), (128, 1)), ((128, 512), (1, 128))
    assert autotune.product_flipped(a, b, F32) is True
    assert autotune.product_flipped(a, b, F32) is True  # this process: remembered
    monkeypatch.setattr(autotune, "_known", {})  # another process: read from the cache dir
    assert autotune.product_flipped(a, b, F32) is True
    assert measured == [a]
    assert autotune.product_flipped(a, b, F64) is True and len(measured) == 2  # own key
    # too small to be worth a measurement
    assert autotune.product_flipped(((8, 8), (8, 1)), ((8, 8), (8, 1)), F32) is False
    assert len(measured) == 2


def test_autotune_measurement_times_both_orientations() -> None:
    """The real measurement on operands laid out as given: a bool, either way round."""
    from fluxion.compiler import autotune

    got = autotune._measure(((128, 160), (1, 128)), ((160, 128), (128, 1)), F32)
    assert got in (True, False)
    x = autotune._operand((128, 160), (1, 128), F32, np.random.default_rng(0))
    assert x.shape == (128, 160) and x.strides == (4, 512)


# --- the IR -----------------------------------------------------------------------------
def test_graph_prints_and_keys() -> None:
    g = graph([node("exp", X), node("add", n(0), Y), node("max_dim", n(1), sh=(2,),
                                                          aux=(((2,), I64),), dim=1,
                                                          keepdim=False)],
              [n(1), ("aux", 2, 0)])
    text = str(g)
    assert text.splitlines()[0] == "graph(%in0: float32[2, 3], %in1: float32[2, 3]):"
    assert "  %1: float32[2, 3] = add(%0, %in1)" in text
    assert "max_dim(%1, dim=1, keepdim=False)" in text
    assert text.splitlines()[-1] == "  return %1, %2.0"
    assert g.spec(("aux", 2, 0)) == ((2,), I64)
    assert g.users() == {0: [1], 1: [2], 2: []}
    same = graph([node("exp", X), node("add", n(0), Y), node("max_dim", n(1), sh=(2,),
                                                             aux=(((2,), I64),), dim=1,
                                                             keepdim=False)],
                 [n(1), ("aux", 2, 0)])
    assert g.key() == same.key() and hash(g.key()) == hash(same.key())
    other = graph([node("exp", X), node("add", n(0), Y, dt=F32),
                   node("max_dim", n(1), sh=(2,), aux=(((2,), I64),), dim=0,
                        keepdim=False)], [n(1), ("aux", 2, 0)])
    assert g.key() != other.key()


def test_passes_run_in_order() -> None:
    assert [name for name, _ in PASSES] == ["decompose", "transpose_products", "simplify",
                                            "fold_slices", "fold_constants", "orient_products",
                                            "cse", "dce"]
    g = graph([node("mul", X, 1), node("exp", n(0)), node("exp", X), node("add", n(1), n(2)),
               node("neg", Y)], [n(3)])
    trace: list = []
    out = optimize(g, trace)
    assert [name for name, _ in trace] == ["decompose", "transpose_products", "simplify",
                                           "fold_slices", "fold_constants", "orient_products",
                                           "cse", "dce"]
    assert ops(out) == ["exp", "add"]
    assert out.nodes[1].args == (n(0), n(0))
    assert_same(interpret(out, [XV, YV]), interpret(g, [XV, YV]))


# --- decompose --------------------------------------------------------------------------
def test_decompose_splits_linear_into_transpose_product_and_sum() -> None:
    rng = np.random.default_rng(3)
    x3, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 3), (5, 3), (5,)))
    g = Graph(inputs=[((2, 4, 3), F32), ((5, 3), F32), ((5,), F32)],
              nodes=[node("linear", X, Y, ("in", 2), sh=(2, 4, 5)),
                     node("linear", X, Y, None, sh=(2, 4, 5)),
                     node("add", n(0), n(1), sh=(2, 4, 5))],
              outputs=[n(2), n(0)])
    out = preserves(decompose, g, [x3, w, b])
    assert ops(out) == ["permute", "matmul", "add", "permute", "matmul", "add"]
    assert out.nodes[0].attrs == {"dims": (1, 0)} and out.nodes[0].shape == (3, 5)
    assert out.outputs == [n(5), n(2)]  # the first layer's value is its sum
    plain = graph([node("exp", X)], [n(0)])
    assert decompose(plain) is plain  # nothing to split: the graph as it is


# --- dce --------------------------------------------------------------------------------
def test_dce_removes_dead_nodes_and_renumbers() -> None:
    g = graph([node("exp", X), node("neg", Y), node("sin", n(0)), node("mul", n(1), 2.0),
               node("cos", n(2))], [n(3)])
    out = preserves(dce, g, [XV, YV])
    assert ops(out) == ["neg", "mul"]
    assert out.nodes[1].args == (n(0), 2.0)
    assert out.outputs == [n(1)]


def test_dce_keeps_what_outputs_read_through_aux_and_attrs() -> None:
    idx = RNG.integers(0, 3, (2, 1))
    g = graph([node("max_dim", X, sh=(2, 1), aux=(((2, 1), I64),), dim=1, keepdim=True),
               node("exp", Y),  # read only through gather's index attribute
               node("gather", n(1), sh=(2, 1), dim=1, index=("aux", 0, 0)),
               node("abs", X)],  # dead
              [n(2)])
    out = preserves(dce, g, [XV, YV])
    assert ops(out) == ["max_dim", "exp", "gather"]
    assert out.nodes[2].attrs["index"] == ("aux", 0, 0)
    del idx


def test_dce_keeps_input_and_literal_outputs() -> None:
    g = graph([node("exp", X)], [Y, 3.0])
    out = dce(g)
    assert out.nodes == [] and out.outputs == [Y, 3.0]
    assert_same(runtime.build_program(out, backend="numpy").run([XV, YV]),
                [YV, np.asarray(3.0)])


# --- cse --------------------------------------------------------------------------------
def test_cse_merges_duplicates() -> None:
    g = graph([node("exp", X), node("exp", X), node("add", n(0), n(1)), node("add", n(1), n(0)),
               node("mul", n(2), n(3))], [n(4)])
    out = preserves(cse, g, [XV, YV])
    # the second add reads the merged exp twice, so it merges with the first add too
    assert ops(out) == ["exp", "add", "mul"]
    assert out.nodes[1].args == (n(0), n(0)) and out.nodes[2].args == (n(1), n(1))


def test_cse_merges_aux_outputs() -> None:
    aux = (((2,), I64),)
    g = graph([node("max_dim", X, sh=(2,), aux=aux, dim=1, keepdim=False),
               node("max_dim", X, sh=(2,), aux=aux, dim=1, keepdim=False),
               node("add", n(0), n(1), sh=(2,))],
              [n(2), ("aux", 1, 0), ("aux", 0, 0)])
    out = preserves(lambda gr: dce(cse(gr)), g, [XV, YV])
    assert ops(out) == ["max_dim", "add"]
    assert out.outputs == [n(1), ("aux", 0, 0), ("aux", 0, 0)]


def test_cse_keeps_distinct_computations() -> None:
    g = graph([node("sum", X, sh=(3,), dims=(0,), keepdim=False),
               node("sum", X, sh=(2,), dims=(1,), keepdim=False),  # other attrs
               node("exp", Y), node("exp", X),  # other input
               node("mul", X, 2.0), node("mul", X, 3.0),  # other literal
               node("sub", X, Y), node("sub", Y, X)],  # argument order
              [n(i) for i in range(8)])
    out = preserves(cse, g, [XV, YV])
    assert len(out.nodes) == 8


def test_cse_does_not_merge_results_of_different_dtypes() -> None:
    """Equal Python literals of different types (2 and 2.0, 1 and True) still give
    different results when the node's dtype differs: the key must tell them apart."""
    ints = (RNG.integers(-3, 3, (2, 3))).astype(np.int64)
    g = Graph(inputs=[((2, 3), I64)],
              nodes=[node("mul", X, 2, dt=I64), node("div", X, 2, dt=F64),
                     node("div", X, 2.0, dt=F64), node("mul", X, 2.0, dt=F64)],
              outputs=[n(0), n(1), n(2), n(3)])
    before = interpret(g, [ints])
    assert before[3].dtype == F64
    out = cse(g)
    assert_same(interpret(out, [ints]), before)


# --- constant folding -------------------------------------------------------------------
def test_fold_evaluates_constant_subgraphs() -> None:
    c0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = graph([node("exp", ("const", 0)), node("mul", n(0), 2.0), node("add", X, n(1)),
               node("sum", ("const", 0), sh=(), dims=None, keepdim=False),
               node("mul", n(2), n(3))], [n(4)], consts=[c0])
    out = preserves(lambda gr: dce(fold_constants(gr)), g, [XV, YV])
    assert ops(out) == ["add", "mul"]
    used = {r for m in out.nodes for r in m.args if is_ref(r) and r[0] == "const"}
    values = [out.consts[r[1]] for r in sorted(used)]
    assert any(v.shape == (2, 3) and np.allclose(v, np.exp(c0) * 2, rtol=1e-6)
               for v in values)
    assert any(v.shape == () and float(v) == 15.0 for v in values)


def test_fold_leaves_input_dependent_and_large_nodes() -> None:
    big = np.ones((300, 300), np.float32)
    g = Graph(inputs=[((2, 3), F32)],
              nodes=[node("exp", X), node("exp", ("const", 0), sh=(300, 300)),
                     node("sum", n(1), sh=(), dims=None, keepdim=False),
                     node("add", n(0), n(2))],
              outputs=[n(3)], consts=[big])
    out = preserves(fold_constants, g, [XV])
    assert ops(out)[:2] == ["exp", "exp"]  # 90000 elements: computed at run time


def test_fold_aux_outputs() -> None:
    c0 = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], np.float32)
    aux = (((2,), I64),)
    g = graph([node("max_dim", ("const", 0), sh=(2,), aux=aux, dim=1, keepdim=False),
               node("add", ("aux", 0, 0), 1, sh=(2,), dt=I64)],
              [n(0), n(1)], consts=[c0])
    out = preserves(fold_constants, g, [XV, YV])
    assert out.nodes == []
    assert_same(interpret(out, [XV, YV]), [np.array([5.0, 7.0], np.float32),
                                           np.array([2, 1], np.int64)])


# --- slices -----------------------------------------------------------------------------
def _split_grad_graph(order: tuple[int, ...], bounds: tuple[int, ...]) -> Graph:
    """Gradients of slices of a (2, 9) value along dim 1 at ``bounds``, added in
    ``order``: the backward of ``a, b, c = x.split(...)``."""
    spans = list(zip((0, *bounds), (*bounds, 9)))
    inputs = [((2, hi - lo), F32) for lo, hi in spans]
    nodes = [node("slice_backward", ("in", j), sh=(2, 9), shape=(2, 9),
                  key=(slice(None), slice(lo, hi))) for j, (lo, hi) in enumerate(spans)]
    total = n(order[0])
    for j in order[1:]:
        nodes.append(node("add", total, n(j), sh=(2, 9)))
        total = n(len(nodes) - 1)
    return Graph(inputs=inputs, nodes=nodes, outputs=[total])


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_fold_slices_joins_a_split_gradient(order: tuple) -> None:
    g = _split_grad_graph(order, (2, 5))
    vals = [RNG.standard_normal(s).astype(np.float32) for s, _ in g.inputs]
    out = preserves(lambda gr: dce(fold_slices(gr)), g, vals)
    assert ops(out) == ["cat"] and out.nodes[0].args == (("in", 0), ("in", 1), ("in", 2))
    assert out.nodes[0].attrs == {"dim": 1}


def test_fold_slices_keeps_gaps_and_overlaps() -> None:
    # two of three pieces: a gap stays zero-filled, so nothing to join
    g = _split_grad_graph((0, 1, 2), (2, 5))
    g.nodes = g.nodes[:4]
    g.outputs = [n(3)]
    vals = [RNG.standard_normal(s).astype(np.float32) for s, _ in g.inputs]
    out = preserves(lambda gr: dce(fold_slices(gr)), g, vals)
    assert "cat" not in ops(out)
    # overlapping pieces really add up
    g = Graph(inputs=[((2, 4), F32), ((2, 4), F32)], nodes=[
        node("slice_backward", X, sh=(2, 6), shape=(2, 6), key=(slice(None), slice(0, 4))),
        node("slice_backward", Y, sh=(2, 6), shape=(2, 6), key=(slice(None), slice(2, 6))),
        node("add", n(0), n(1), sh=(2, 6))], outputs=[n(2)])
    vals = [RNG.standard_normal((2, 4)).astype(np.float32) for _ in range(2)]
    out = preserves(fold_slices, g, vals)
    assert "cat" not in ops(out)


def test_fold_slices_drops_whole_slices() -> None:
    g = graph([node("slice", X, key=(slice(0, 2), slice(None))),
               node("slice_backward", n(0), shape=(2, 3), key=(slice(None, None, 1),)),
               node("slice", n(1), sh=(2, 2), key=(slice(None), slice(0, 2))),
               node("exp", n(2), sh=(2, 2))], [n(3)])
    out = preserves(lambda gr: dce(fold_slices(gr)), g, [XV, YV])
    assert ops(out) == ["slice", "exp"] and out.nodes[0].args == (X,)  # a real one stays


# --- simplify ---------------------------------------------------------------------------
IDENTITIES = {
    "x*1": [node("mul", X, 1)],
    "1*x": [node("mul", 1.0, X)],
    "x+0": [node("add", X, 0)],
    "0+x": [node("add", 0.0, X)],
    "x-0": [node("sub", X, 0)],
    "x/1": [node("div", X, 1)],
    "x**1": [node("pow", X, 1)],
    "neg(neg(x))": [node("neg", X), node("neg", n(0))],
    "reshape_same": [node("reshape", X, shape=(2, 3))],
    "expand_same": [node("expand", X, shape=(2, 3))],
    "cast_same": [node("cast", X, dtype=fluxion.float32)],
    "permute_identity": [node("permute", X, dims=(0, 1))],
}


@pytest.mark.parametrize("name", list(IDENTITIES))
def test_simplify_identity(name: str) -> None:
    nodes = IDENTITIES[name]
    g = graph([*nodes, node("exp", n(len(nodes) - 1))], [n(len(nodes))])
    out = preserves(lambda gr: dce(simplify(gr)), g, [XV, YV])
    assert ops(out) == ["exp"], str(out)
    assert out.nodes[0].args == (X,)


def test_simplify_identity_as_output() -> None:
    g = graph([node("mul", X, 1), node("add", n(0), 0)], [n(1), n(0)])
    out = preserves(lambda gr: dce(simplify(gr)), g, [XV, YV])
    assert out.nodes == [] and out.outputs == [X, X]


def test_simplify_square_becomes_product() -> None:
    g = graph([node("pow", X, 2)], [n(0)])
    out = preserves(simplify, g, [XV, YV])
    assert ops(out) == ["mul"] and out.nodes[0].args == (X, X)


def test_simplify_reshape_of_reshape() -> None:
    g = graph([node("reshape", X, sh=(3, 2), shape=(3, 2)),
               node("reshape", n(0), sh=(6,), shape=(6,))], [n(1)])
    out = preserves(lambda gr: dce(simplify(gr)), g, [XV, YV])
    assert ops(out) == ["reshape"]
    assert out.nodes[0].args == (X,) and tuple(out.nodes[0].attrs["shape"]) == (6,)


def test_simplify_reshape_back_to_the_input_shape() -> None:
    g = graph([node("reshape", X, sh=(6,), shape=(6,)),
               node("reshape", n(0), shape=(2, 3))], [n(1)])
    out = preserves(optimize, g, [XV, YV])
    assert ops(out) in ([], ["reshape"])  # at most one reshape is left (x itself, ideally)


def test_simplify_reshape_of_kept_sum_drops_the_kept_dims() -> None:
    # a bias's gradient: sum(g, 0, keepdim=True) reshaped to (3,) is sum(g, 0)
    g = graph([node("sum", X, sh=(1, 3), dims=(0,), keepdim=True),
               node("reshape", n(0), sh=(3,), shape=(3,))], [n(1)])
    out = preserves(lambda gr: dce(simplify(gr)), g, [XV, YV])
    assert ops(out) == ["sum"] and out.nodes[0].shape == (3,)
    assert out.nodes[0].attrs == {"dims": (0,), "keepdim": False}
    # negative dims too; the kept sum read elsewhere as well, or a reshape to another
    # shape, stay as they are
    g = graph([node("sum", X, sh=(2, 1), dims=(-1,), keepdim=True),
               node("reshape", n(0), sh=(2,), shape=(2,))], [n(1)])
    out = preserves(lambda gr: dce(simplify(gr)), g, [XV, YV])
    assert ops(out) == ["sum"] and out.nodes[0].attrs["keepdim"] is False
    for outputs, shape in (([n(1), n(0)], (3,)), ([n(1)], (3, 1))):
        g = graph([node("sum", X, sh=(1, 3), dims=(0,), keepdim=True),
                   node("reshape", n(0), sh=shape, shape=shape)], outputs)
        out = preserves(lambda gr: dce(simplify(gr)), g, [XV, YV])
        assert ops(out) == ["sum", "reshape"], str(out)


def test_simplify_permute_of_permute() -> None:
    x3 = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    g = Graph(inputs=[((2, 3, 4), F32)],
              nodes=[node("permute", X, sh=(3, 4, 2), dims=(1, 2, 0)),
                     node("permute", n(0), sh=(4, 3, 2), dims=(1, 0, 2))],
              outputs=[n(1)])
    out = preserves(lambda gr: dce(simplify(gr)), g, [x3])
    assert ops(out) == ["permute"]
    assert out.nodes[0].args == (X,) and tuple(out.nodes[0].attrs["dims"]) == (2, 1, 0)
    # inverse permutations cancel
    g = Graph(inputs=[((2, 3, 4), F32)],
              nodes=[node("permute", X, sh=(3, 4, 2), dims=(1, 2, 0)),
                     node("permute", n(0), sh=(2, 3, 4), dims=(2, 0, 1)),
                     node("exp", n(1), sh=(2, 3, 4))],
              outputs=[n(2)])
    out = preserves(optimize, g, [x3])
    assert ops(out) in (["exp"], ["permute", "exp"])  # one permute at most (ideally none)
    if ops(out) == ["permute", "exp"]:
        assert tuple(out.nodes[0].attrs["dims"]) == (0, 1, 2)


NON_IDENTITIES = {
    "x*2": [node("mul", X, 2)],
    "x*-1": [node("mul", X, -1)],
    "x+1": [node("add", X, 1)],
    "0-x": [node("sub", 0, X)],
    "1/x": [node("div", 1, X)],
    "x/2": [node("div", X, 2)],
    "x**3": [node("pow", X, 3)],
    "x**0": [node("pow", X, 0)],
    "1**x": [node("pow", 1.0, X)],
    "single_neg": [node("neg", X)],
    "neg_abs": [node("abs", X), node("neg", n(0))],
    "x*y": [node("mul", X, Y)],
    "x+y_ones": [node("add", X, Y)],
    "reshape_other": [node("reshape", X, sh=(3, 2), shape=(3, 2))],
    "expand_broadcast": [node("expand", ("in", 2), shape=(2, 3))],
    "cast_other": [node("cast", X, dt=F64, dtype=fluxion.float64)],
    "permute_swap": [node("permute", X, sh=(3, 2), dims=(1, 0))],
    "int_times_float_one": [node("mul", ("in", 3), 1.0, dt=F64)],
    "int_div_one": [node("div", ("in", 3), 1, dt=F64)],
    "x*1_broadcast": [node("mul", ("in", 2), ("in", 4))],
}


@pytest.mark.parametrize("name", list(NON_IDENTITIES))
def test_simplify_leaves_non_identities(name: str) -> None:
    nodes = NON_IDENTITIES[name]
    inputs = [((2, 3), F32), ((2, 3), F32), ((1, 3), F32), ((2, 3), I64), ((2, 3), F32)]
    values = [XV, np.abs(YV) + 0.5, XV[:1], RNG.integers(-3, 3, (2, 3)),
              np.ones((2, 3), np.float32)]
    g = Graph(inputs=inputs, nodes=nodes, outputs=[n(len(nodes) - 1)])
    before = [(m.op, m.args, m.attrs) for m in g.nodes]
    out = preserves(simplify, g, values)
    assert [(m.op, m.args, m.attrs) for m in out.nodes] == before


def test_simplify_keeps_bool_literals() -> None:
    """``True`` is not the number 1 for these rules (x * True is a cast in PyTorch)."""
    g = graph([node("mul", X, True), node("add", X, False)], [n(0), n(1)])
    out = preserves(simplify, g, [XV, YV])
    assert ops(out) == ["mul", "add"]


# --- shape rules: what capture declares is what kernels compute --------------------------
def _spec_cases() -> list:
    out = []
    for e in OP_DB:
        dts = [d for d in e.dtypes if d == "float32"] or [d for d in e.dtypes if d in FLOATS]
        dts = dts[:1] + [d for d in e.dtypes if d not in FLOATS][:1]
        if MIXED in e.dtypes and MIXED not in dts:
            dts.append(MIXED)
        for dt in dts:
            s = e.sample_list(dt)[0]
            out.append(pytest.param(e, s, id=f"{e.name}-{dt}-{s.name}"))
    return out


@pytest.mark.parametrize("e, s", _spec_cases())
def test_captured_specs_match_kernels(e: OpEntry, s: Sample,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Capture the entry (forward and, for floats, backward); every node of every captured
    graph declares the shape and dtype that its kernel really produces. The C code
    generator types its buffers from these declarations."""
    seen: list[tuple[Graph, list]] = []
    real_run = runtime.Program.run

    def spy(self: Any, inputs: list, *rest: Any, **kw: Any) -> Any:
        seen.append((self.captured, list(inputs)))
        return real_run(self, inputs, *rest, **kw)

    monkeypatch.setattr(runtime.Program, "run", spy)

    def f(*args: Any, **kwargs: Any) -> Any:
        out = e.op(*args, **kwargs)
        if e.grad:
            outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,))
                    if isinstance(o, fluxion.Tensor) and o.requires_grad]
            if outs:
                sum(o.sum() for o in outs).backward()
        return out

    args, kwargs, _ = build(fluxion, s, e.grad)
    fluxion.compile(f)(*args, **kwargs)
    for g, inputs in seen:
        interpret(g, inputs, check_specs=True)


def test_passes_never_change_the_nodes_they_are_given() -> None:
    """Capture hands the same node objects to every call that records the same ops (and to
    every recompile), so the passes and the pipeline must build new nodes, never edit
    these: the captured graphs of two training steps come out of ``optimize`` and
    ``build_program`` unchanged."""
    import copy

    from fluxion.train.models import GPT, MNISTNet

    fluxion.manual_seed(0)
    rng = np.random.default_rng(0)
    cases = [(MNISTNet(), fluxion.tensor(rng.random((4, 1, 28, 28), dtype=np.float32)),
              fluxion.tensor(rng.integers(0, 10, 4)), fluxion.nn.functional.nll_loss),
             (GPT(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16),
              fluxion.tensor(rng.integers(0, 11, (2, 8))),
              fluxion.tensor(rng.integers(0, 11, (2, 8))),
              lambda out, y: fluxion.nn.functional.cross_entropy(out.reshape(-1, 11),
                                                                 y.reshape(-1)))]
    for model, x, y, loss_fn in cases:
        opt = fluxion.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> Any:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss

        compiled = fluxion.compile(step, backend="numpy")
        compiled()
        captured = compiled.last_programs[0].captured
        before = copy.deepcopy(captured.nodes)
        optimize(captured)
        runtime.build_program(captured, "numpy")
        assert captured.nodes == before
