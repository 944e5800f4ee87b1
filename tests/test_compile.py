"""``fluxion.compile`` against eager Fluxion: every op of the op table (through op_db's
public callables) gives eager's values and gradients when compiled; control flow on tensor
values, graph breaks and their source lines, ``fullgraph=True``, Python scalars, globals
mutated between calls, ``requires_grad`` and train/eval flips, recompiles and the
recompile-limit warning; and ``fluxion.explain``'s report."""

from __future__ import annotations

import ctypes
import sys
import warnings
from typing import Any

import numpy as np
import pytest
from op_db import (
    FLOATS,
    MIXED,
    OP_DB,
    OpEntry,
    Sample,
    assert_same_outputs,
    build,
    flat,
    is_float,
)

import fluxion
from fluxion import nn
from fluxion.compiler import GraphBreakError

# compiled replay against eager: the same kernels or the same math in C (libm may differ
# from NumPy's SIMD routines by an ulp or so)
TOL = {"float16": (1e-3, 1e-3), "float32": (1e-5, 1e-6), "float64": (1e-10, 1e-12)}
HERE = __file__


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test compiles into its own, empty kernel cache."""
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", str(tmp_path / "kernels"))


def lineno(marker: str) -> int:
    """The line of this file that contains ``marker`` (for break locations)."""
    with open(HERE) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "lineno(" not in line:
                return i
    raise AssertionError(marker)


# --- 1. every op: compiled equals eager --------------------------------------------------
def _float_dtype(e: OpEntry) -> str | None:
    if "float32" in e.dtypes:
        return "float32"
    return next((d for d in e.dtypes if d in FLOATS), None)


# besides each entry's first sample: broadcasting (values and gradients), and for values
# only NaN/inf, non-contiguous and expanded operands, empty tensors and 0-d operands
BOTH = ("bcast_3x1_1x4", "bcast3")
FORWARD_ONLY = ("special", "strided", "expanded", "0size", "0d_lhs")


def _pick(e: OpEntry) -> tuple[list, list]:
    """A few samples per entry: (forward cases, gradient cases)."""
    fwd, grad = [], []
    fdt = _float_dtype(e)
    if fdt is not None:
        samples = e.sample_list(fdt)
        chosen = [samples[0]] + [s for s in samples[1:] if s.name in FORWARD_ONLY + BOTH]
        for s in chosen:
            fwd.append(pytest.param(e, s, id=f"{e.name}-{fdt}-{s.name}"))
            if e.grad and s.ref_grad and s.name not in FORWARD_ONLY and any(
                    is_float(a) and a.grad for a in s.tensors()):
                grad.append(pytest.param(e, s, id=f"{e.name}-{fdt}-{s.name}"))
    other = next((d for d in e.dtypes if d not in FLOATS and d != MIXED), None)
    if other is not None:
        s = e.sample_list(other)[0]
        fwd.append(pytest.param(e, s, id=f"{e.name}-{other}-{s.name}"))
    if MIXED in e.dtypes:
        s = e.sample_list(MIXED)[0]
        fwd.append(pytest.param(e, s, id=f"{e.name}-mixed-{s.name}"))
    return fwd, grad


FORWARD: list = []
GRAD: list = []
for _e in OP_DB:
    _f, _g = _pick(_e)
    FORWARD += _f
    GRAD += _g


@pytest.mark.parametrize("e, s", FORWARD)
def test_op_forward_compiled_equals_eager(e: OpEntry, s: Sample) -> None:
    args, kwargs, _ = build(fluxion, s, e.force_grad)
    expected = e.op(*args, **kwargs)
    args, kwargs, _ = build(fluxion, s, e.force_grad)
    compiled = fluxion.compile(lambda *a, **k: e.op(*a, **k))
    actual = compiled(*args, **kwargs)
    assert_same_outputs(actual, expected, TOL)
    assert compiled.stats.calls == 1


@pytest.mark.parametrize("dynamic", [None, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("e, s", GRAD)
def test_op_backward_compiled_equals_eager(e: OpEntry, s: Sample, dynamic: bool | None) -> None:
    """``(fn(x) * w).sum().backward()`` inside the compiled function: the leaves' .grad
    equal eager's, with sizes written into the kernels and read at run time."""
    _, _, probe_leaves = build(fluxion, s, True)
    rng = np.random.default_rng(0)

    def loss(leaves: list, weights: list | None) -> Any:
        args, kwargs, _ = build(fluxion, s, False, leaves=leaves)
        outs = [o for o in flat(e.op(*args, **kwargs))
                if isinstance(o, fluxion.Tensor) and o.requires_grad]
        if weights is None:
            return outs
        total = sum((o * w).sum() for o, w in zip(outs, weights))
        total.backward()
        return total

    outs = loss(probe_leaves, None)
    if not outs:
        pytest.skip("no differentiable output for this sample")
    weights = [fluxion.from_numpy(
        rng.standard_normal(tuple(o.shape)).astype(o.detach().numpy().dtype)) for o in outs]

    def fresh() -> list:
        _, _, leaves = build(fluxion, s, True)
        return leaves

    eager_leaves = fresh()
    eager_total = loss(eager_leaves, weights)
    comp_leaves = fresh()
    compiled = fluxion.compile(loss, dynamic=dynamic)
    comp_total = compiled(comp_leaves, weights)
    # the total adds up every output's weighted sum: it is as exact as the least precise
    # of them (a float32 output's sum, rounded in another order, inside a float64 total)
    least = max((str(o.dtype).removeprefix("fluxion.") for o in outs),
                key=lambda d: TOL[d][0] if d in TOL else 0.0, default="float64")
    total_tol = {d: max(t, TOL.get(least, t)) for d, t in TOL.items()}
    assert_same_outputs(comp_total, eager_total, total_tol)
    for i, (c, g) in enumerate(zip(comp_leaves, eager_leaves)):
        if g.grad is None:
            assert c.grad is None, f"leaf {i}: compiled has a gradient, eager has none"
            continue
        assert c.grad is not None, f"leaf {i}: no gradient when compiled"
        assert_same_outputs(c.grad, g.grad, TOL)
    # a second call on new leaves: the backward is replayed from the first call's
    # recording (compiler.replay) where nothing it depends on differs
    again = fresh()
    compiled(again, weights)
    for c, g in zip(again, eager_leaves):
        assert (c.grad is None) == (g.grad is None)
        if g.grad is not None:
            assert_same_outputs(c.grad, g.grad, TOL)
    REPLAYS.append((e.name, compiled.stats.backward_replays))


REPLAYS: list[tuple[str, int]] = []


def test_sweep_captures_every_primitive(monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples above, captured (forward and backward): every primitive of the op table
    appears in some compiled graph, so the sweep really exercises the compiler on it."""
    from fluxion.compiler import runtime
    from fluxion.ops import OPS

    seen: set[str] = set()
    real_run = runtime.Program.run

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(node.op for node in self.captured.nodes)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(runtime.Program, "run", spy)
    for p in FORWARD + GRAD:
        e, s = p.values
        args, kwargs, _ = build(fluxion, s, e.grad)

        def f(*a: Any, **k: Any) -> Any:
            outs = [o for o in flat(e.op(*a, **k))
                    if isinstance(o, fluxion.Tensor) and o.requires_grad]
            if outs:
                sum(o.sum() for o in outs).backward()

        fluxion.compile(f, backend="numpy")(*args, **kwargs)
    missing = sorted(set(OPS) - seen)
    assert not missing, f"never captured: {missing}"


# --- 3. control flow, graph breaks, guards ----------------------------------------------
def branchy(x: Any) -> Any:
    y = x * 2 + 1
    if y.sum() > 0:  # BREAK: branch
        return y.exp()
    return -y


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["then", "else"])
def test_branch_on_tensor_value_matches_eager(sign: float) -> None:
    compiled = fluxion.compile(branchy)
    for s in (sign, -sign, sign):  # both ways through the same compiled function
        x = fluxion.tensor([0.5, 1.5, 2.0]) * s
        assert_same_outputs(compiled(x), branchy(x), TOL)
    assert len(compiled.stats.breaks) == 3


def test_explain_names_the_break_line() -> None:
    report = fluxion.explain(branchy, fluxion.ones(3))
    assert report.graph_break_count >= 1
    assert report.graph_count == report.graph_break_count + 1
    b = report.break_reasons[0]
    assert b.location == f"{HERE}:{lineno('# BREAK: branch')}"
    assert "bool" in b.reason


def test_fullgraph_raises_with_the_line() -> None:
    compiled = fluxion.compile(branchy, fullgraph=True)
    with pytest.raises(GraphBreakError) as info:
        compiled(fluxion.ones(3))
    assert f"{HERE}:{lineno('# BREAK: branch')}" in str(info.value)
    # the failed call left no capture behind: eager ops run normally afterwards
    assert (fluxion.ones(2) + 1).tolist() == [2.0, 2.0]
    # a function without breaks is fine with fullgraph=True
    ok = fluxion.compile(lambda x: (x * 2).exp().sum(), fullgraph=True)
    assert_same_outputs(ok(fluxion.ones(3)), (fluxion.ones(3) * 2).exp().sum(), TOL)


READS = {
    "item": lambda y: y.sum().item(),
    "float": lambda y: float(y.sum()),
    "tolist": lambda y: y.tolist(),
    "numpy": lambda y: y.numpy(),
    "print": lambda y: print(y),
    "bool": lambda y: bool(y.sum() > 0),
}


@pytest.mark.parametrize("kind", list(READS))
def test_reading_data_is_a_break(kind: str, capsys: pytest.CaptureFixture) -> None:
    read = READS[kind]

    def f(x: Any) -> Any:
        y = x.exp() * 3
        got = read(y)
        return y + 1, got

    x = fluxion.tensor([0.5, -1.0, 2.0])
    compiled = fluxion.compile(f)
    out, got = compiled(x)
    ref, want = f(x)
    assert_same_outputs(out, ref, TOL)
    if want is not None:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    assert len(compiled.stats.breaks) == 1
    # the innermost frame outside fluxion: the lambda in READS
    assert compiled.stats.breaks[0].location == f"{HERE}:{read.__code__.co_firstlineno}"
    capsys.readouterr()


def test_python_scalar_arguments_change_between_calls() -> None:
    def f(x: Any, scale: float, shift: int, flag: bool) -> Any:
        y = x * scale + shift
        return y.relu() if flag else y.abs()

    compiled = fluxion.compile(f)
    x = fluxion.tensor([-1.0, 0.5, 2.0])
    for scale, shift, flag in [(2.0, 1, True), (-3.0, 1, True), (2.0, 5, False),
                               (0.5, -2, True), (2.0, 1, True)]:
        assert_same_outputs(compiled(x, scale, shift, flag), f(x, scale, shift, flag), TOL)
    assert compiled.stats.calls == 5


def test_equal_python_numbers_share_one_input_and_signed_zeros_do_not() -> None:
    """Python floats become graph inputs (dynamic=True): one per value, not one per use
    (the learning rate each parameter's update reads); 0.0 and -0.0 stay apart."""
    def f(x: Any, a: float, b: float, c: float) -> Any:
        return x * a + x * b + 1 / (x * c) + 1 / (x * 0.0)

    compiled = fluxion.compile(f, dynamic=True)
    x = fluxion.tensor([1.0, 2.0])
    for a, b, c in [(0.5, 0.5, -0.0), (0.5, 0.25, 0.0), (0.5, 0.5, -0.0)]:
        with np.errstate(all="ignore"):
            assert_same_outputs(compiled(x, a, b, c), f(x, a, b, c), TOL)
        (prog,) = compiled.last_programs
        # x, the numerator 1 (an int), then one input per distinct value (and sign of
        # zero) among a, b, c and 0.0
        distinct = {(v, np.copysign(1.0, v)) for v in (a, b, c, 0.0)}
        assert len(prog.captured.inputs) == 2 + len(distinct)


M = fluxion.tensor([True, False, True, False])
SCALAR_USES = {
    "int_ge_float": (lambda x, s: x.long() >= s, [0.5, 1.5, 1.5, 2.5]),
    "where_scalar": (lambda x, s: fluxion.where(M, x, s), [0.5, 0.7, 0.25]),
    "int8_add": (lambda x, s: x.to(fluxion.int8) + s, [1, 2, 100]),
    "int_mul_then_float": (lambda x, s: x.long() * s, [2, 3, 2.5, 4]),
    "uint8_sub": (lambda x, s: x.to(fluxion.uint8) - s, [1, 2, 3]),
    "eq": (lambda x, s: x == s, [1, 2, 2.5]),
    "masked_fill": (lambda x, s: x.masked_fill(M, s), [0.5, 0.7, 0.25]),
    "int_div": (lambda x, s: x.long() / s, [2, 3, 4]),
    "pow": (lambda x, s: x ** s, [2, 3, 0.5, 1, 2]),
    "rsub": (lambda x, s: s - x.long(), [1, 2, 3.5]),
    "times_one_then_two": (lambda x, s: (x * s).exp(), [1, 1.0, 2, 0, 1]),
    "lerp": (lambda x, s: x.lerp(x * 2 + 1, s), [0.1, 0.2, 0.3]),
    "clamp": (lambda x, s: x.clamp(min=s), [1, 2, 1.5]),
}


@pytest.mark.parametrize("name", list(SCALAR_USES))
def test_changing_python_scalars(name: str) -> None:
    """A number that changes between calls becomes an input after the first change
    (automatic dynamic): its type and value still decide the result as in eager."""
    f, values = SCALAR_USES[name]
    compiled = fluxion.compile(f, backend="numpy")
    x = fluxion.tensor([0.0, 1.0, 2.0, 3.0])
    for v in values:
        assert_same_outputs(compiled(x, v), f(x, v), TOL)


def test_capture_reuses_shapes_only_for_the_same_operands(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that records what the last one did reuses its shapes and layouts (no shape
    rule runs); a new layout, dtype, size, number type or index changes the answer."""
    from fluxion.ops.registry import Op

    def f(x: Any, idx: Any, s: Any) -> Any:
        y = x.t().exp() * s           # a view: its layout depends on x's strides
        return y.gather(0, idx) + y.sum(0), idx * s  # int or float: as s is

    compiled = fluxion.compile(f, backend="numpy", dynamic=False)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 4))
    idx = fluxion.tensor([[0, 1, 2], [3, 3, 0]])
    calls = [
        (fluxion.tensor(base), idx, 2),
        (fluxion.tensor(base), idx, 2),  # the same: memoised
        (fluxion.tensor(base.T.copy()).t(), idx, 2),  # same shape, transposed strides
        (fluxion.tensor(base, dtype=fluxion.float32), idx, 2),  # another dtype
        (fluxion.tensor(base), idx, 2.0),  # a float equal to the int that was there
        (fluxion.tensor(base), fluxion.tensor([[1, 1, 1]]), 2),  # a smaller index
        (fluxion.tensor(base[:, :2]), fluxion.tensor([[1, 0, 1]]), 2),  # fewer columns
    ]
    inferred = []
    real_infer = Op.infer

    def counting(self: Op, *a: Any, **k: Any) -> Any:
        inferred[-1] += 1
        return real_infer(self, *a, **k)

    monkeypatch.setattr(Op, "infer", counting)
    for x, i, s in calls:
        inferred.append(0)
        got, want = compiled(x, i, s), f(x, i, s)
        assert [g.dtype for g in got] == [w.dtype for w in want]
        assert_same_outputs(got, want, TOL)
    assert inferred[1] == 0 and inferred[0] > 0
    assert all(n > 0 for n in inferred[2:])


@pytest.mark.parametrize("dynamic, graphs", [(True, 1), (False, 5), (None, 1)])
def test_dynamic_flag(dynamic: bool | None, graphs: int) -> None:
    """True: scalars are inputs from the start; False: one graph per value; None (the
    default): Python floats are inputs from the start (ints once they change)."""
    compiled = fluxion.compile(lambda x, s: (x * s).exp(), dynamic=dynamic, backend="numpy")
    x = fluxion.ones(2)
    for s in (1.5, 2.5, 3.5, 4.5, 5.5):
        assert_same_outputs(compiled(x, s), (x * s).exp(), TOL)
    assert compiled.stats.graphs == graphs


def test_random_values_are_drawn_each_call() -> None:
    from fluxion.nn import functional as F

    x = fluxion.ones(64)
    for f in (lambda x: F.dropout(x, 0.5, training=True), lambda x: x * fluxion.randn(64),
              lambda x: x * fluxion.rand_like(x)):
        compiled = fluxion.compile(f, backend="numpy")
        assert not bool((compiled(x) == compiled(x)).all())  # not frozen into the graph
        fluxion.manual_seed(7)
        a = compiled(x)
        fluxion.manual_seed(7)
        assert_same_outputs(a, f(x), TOL)


def test_tensors_created_inside() -> None:
    def f() -> Any:
        return (fluxion.ones(3) * 2 + fluxion.arange(3.0)).exp() @ fluxion.eye(3)

    assert_same_outputs(fluxion.compile(f)(), f(), TOL)


G = fluxion.tensor([1.0, 2.0, 3.0])


def reads_global(x: Any) -> Any:
    return (x * G).exp()


def test_global_tensor_modified_between_calls_is_seen() -> None:
    global G
    saved = G.clone()
    try:
        compiled = fluxion.compile(reads_global)
        x = fluxion.tensor([0.1, 0.2, 0.3])
        assert_same_outputs(compiled(x), reads_global(x), TOL)
        G.add_(1.0)  # in place, outside the compiled function
        assert_same_outputs(compiled(x), reads_global(x), TOL)
        G[1] = -4.0  # through indexing
        assert_same_outputs(compiled(x), reads_global(x), TOL)
        G.data = fluxion.tensor([0.0, 0.0, 1.0])  # new memory
        assert_same_outputs(compiled(x), reads_global(x), TOL)
        G = fluxion.tensor([5.0, 6.0, 7.0])  # rebinding the name
        assert_same_outputs(compiled(x), reads_global(x), TOL)
    finally:
        G = saved


def test_in_place_writes_inside_are_written_back() -> None:
    """Functionalised in-place writes land in the tensors' own memory, seen by views."""

    def f(state: Any, x: Any) -> Any:
        state.mul_(2).add_(x)
        state[0] = -1.0
        return state.sum() + 0

    se, sc = fluxion.tensor([1.0, 2.0, 3.0, 4.0]), fluxion.tensor([1.0, 2.0, 3.0, 4.0])
    view = sc[1:3]
    ptr = sc.data_ptr()
    compiled = fluxion.compile(f)
    x = fluxion.tensor([0.5, 0.5, 0.5, 0.5])
    for _ in range(3):
        assert_same_outputs(compiled(sc, x), f(se, x), TOL)
        assert_same_outputs(sc, se, TOL)
    assert sc.data_ptr() == ptr
    assert view.tolist() == se[1:3].tolist()


ALIASED_WRITES = {
    "mul_by_own_row": lambda x: x.mul_(x[0]),
    "mul_by_own_row_kept": lambda x: x.mul_(x[:1]),
    "add_own_column": lambda x: x.add_(x[:, 1:2]),
    "shifted_views": lambda x: x.view(-1)[1:].add_(x.view(-1)[:-1]),
    "add_own_transpose": lambda x: x.add_(x.t()),
    "add_own_flip": lambda x: x.add_(x.flip(1)),
    "copy_own_row": lambda x: x.copy_(x[1].exp()),
    "sub_own_scalar_element": lambda x: x.sub_(x[1, 1]),
}


@pytest.mark.parametrize("name", list(ALIASED_WRITES))
def test_in_place_write_reading_its_own_memory(name: str) -> None:
    """An in-place write whose operand views the written tensor: the operand is read as
    it was before the write (eager semantics), whatever the kernel's loop order."""
    write = ALIASED_WRITES[name]

    def f(x: Any) -> Any:
        write(x)
        return x

    xe = fluxion.arange(1.0, 10.0).reshape(3, 3) / 4
    xc = xe.clone()
    assert_same_outputs(fluxion.compile(f)(xc), f(xe), TOL)
    assert_same_outputs(xc, xe, TOL)


def test_in_place_writes_across_a_break() -> None:
    def f(x: Any) -> Any:
        x.add_(1)
        if x.sum() > 0:  # a break between two in-place writes
            x.mul_(2)
        else:
            x.sub_(5)
        return x * 1

    for start in (1.0, -3.0):
        xe, xc = fluxion.full((3,), start), fluxion.full((3,), start)
        assert_same_outputs(fluxion.compile(f)(xc), f(xe), TOL)
        assert_same_outputs(xc, xe, TOL)


def _two_views() -> tuple:
    x = fluxion.arange(6.0).reshape(2, 3)
    return x, x[0]


def _transposed() -> tuple:
    x = fluxion.arange(6.0).reshape(2, 3)
    return x, x.t()


def _overlapping() -> tuple:
    x = fluxion.arange(6.0)
    return x[:4], x[2:]


def _read_before_and_after(x: Any, v: Any) -> Any:
    y = v * 2
    x.add_(1)
    return y, v * 3


def _view_made_inside(x: Any, _: Any) -> Any:
    v = x[1]
    x.mul_(2)
    return v + 0


def _write_through_view(x: Any, _: Any) -> Any:
    x[1].add_(100)
    x.t()[0].mul_(-1)
    x[:, 0] = -1
    x.view(-1)[::2].add_(5)
    return x * 1


def _shifted() -> tuple:
    # two tensors on one memory that no view relation links (from_numpy of two slices):
    # nothing but the kernel's own read of b overlaps the write of a
    x = np.arange(40.0, dtype=np.float32)
    return fluxion.from_numpy(x[2:]), fluxion.from_numpy(x[:38])


def _add_shifted(a: Any, b: Any) -> Any:
    a.add_(b)  # element i of b is element i - 2 of a: not written in place
    return a


def _overlapping_writes(a: Any, b: Any) -> Any:
    a.add_(b)
    b.mul_(2)
    return a + b


def _fused_read_after_write(x: Any, _: Any) -> Any:
    y = x * 2      # fuses into the exp below, so the kernel that reads x runs after...
    x.add_(1)      # ...this write, which must then not land in x's memory in place
    return y.exp()


VIEW_PROGRAMS = {
    "input_view_sees_base_write": (lambda x, v: (x.add_(1), v * 2)[1], _two_views),
    "base_sees_input_view_write": (lambda x, v: (v.mul_(10), x * 1)[1], _two_views),
    "transposed_input_view": (lambda x, v: (x.add_(1), v * 2)[1], _transposed),
    "read_before_and_after": (_read_before_and_after, _two_views),
    "view_made_inside": (_view_made_inside, _two_views),
    "write_through_views": (_write_through_view, _two_views),
    "overlapping_inputs": (_overlapping_writes, _overlapping),
    "read_overlapping_only_by_the_write": (_add_shifted, _shifted),
    "fused_read_after_in_place_write": (_fused_read_after_write, _two_views),
}


@pytest.mark.parametrize("name", list(VIEW_PROGRAMS))
def test_views_and_in_place_writes(name: str) -> None:
    """Views share memory with their base inside a compiled call as in eager: a write
    through one is seen through the other, inputs included."""
    f, make = VIEW_PROGRAMS[name]
    eager_args, compiled_args = make(), make()
    assert_same_outputs(fluxion.compile(f)(*compiled_args), f(*eager_args), TOL)
    for c, e in zip(compiled_args, eager_args):
        assert_same_outputs(c, e, TOL)


METADATA = {
    "shape": lambda y: tuple(y.shape), "size": lambda y: y.size(1), "numel": lambda y: y.numel(),
    "dim": lambda y: y.dim(), "len": lambda y: len(y), "dtype": lambda y: y.dtype,
    "is_contiguous": lambda y: (y.is_contiguous(), y.t().is_contiguous()),
    "stride": lambda y: (y.stride(), y.t().stride(), y[:, 1:].stride()),
    "requires_grad": lambda y: y.requires_grad,
    "is_floating_point": lambda y: y.dtype.is_floating_point,
}


@pytest.mark.parametrize("name", list(METADATA))
def test_metadata_reads_do_not_break(name: str) -> None:
    read = METADATA[name]

    def f(x: Any) -> Any:
        y = x * 2
        return y + 1, read(y)

    x = fluxion.arange(6.0).reshape(2, 3)
    out, meta = fluxion.compile(f, fullgraph=True)(x)
    want_out, want_meta = f(x)
    assert_same_outputs(out, want_out, TOL)
    assert meta == want_meta


LATER_CALLS = {
    "elementwise": lambda x: (x * 2).exp() + 1,
    "reshape": lambda x: (x * 2).exp().reshape(-1),
    "transpose": lambda x: (x * 2).exp().t(),
    "row": lambda x: (x * 2).exp()[1],
    "split": lambda x: (x * 2).exp().split(1, 0)[1],
    "flip": lambda x: (x * 2).exp().flip(0),
    "einsum_transpose": lambda x: fluxion.einsum("ij->ji", (x * 2).exp()),
    "einsum_diagonal": lambda x: fluxion.einsum("ii->i", (x * 2).exp()),
    "unfold": lambda x: fluxion.nn.functional.unfold((x * 2).exp().reshape(1, 1, 2, 2), 1),
    "sum_rows": lambda x: (x * 2).exp().sum(0),
    "max_dim": lambda x: (x * 2).exp().max(dim=0).values,
    "matmul": lambda x: (x * 2).exp() @ x,
}


@pytest.mark.parametrize("name", list(LATER_CALLS))
def test_results_survive_later_calls(name: str) -> None:
    """What a call returned is not overwritten by the next call (buffer reuse must not
    reach memory that a returned value shares)."""
    f = LATER_CALLS[name]
    compiled = fluxion.compile(f)
    x1 = fluxion.tensor([[0.1, 0.2], [0.3, 0.4]])
    first = compiled(x1)
    kept = first.clone()
    second = compiled(fluxion.tensor([[-1.0, 0.5], [2.0, 0.0]]))
    assert_same_outputs(first, kept, TOL)
    assert_same_outputs(second, f(fluxion.tensor([[-1.0, 0.5], [2.0, 0.0]])), TOL)


VIEWS_OF_INPUTS = {
    "identity": lambda x: x,
    "transpose": lambda x: x.t(),
    "row": lambda x: x[0],
    "view": lambda x: x.view(-1),
    "reshape": lambda x: x.reshape(4),
    "detach": lambda x: x.detach(),
}


@pytest.mark.parametrize("name", list(VIEWS_OF_INPUTS))
def test_returned_views_alias_as_in_eager(name: str) -> None:
    f = VIEWS_OF_INPUTS[name]
    xe, xc = fluxion.arange(4.0).reshape(2, 2), fluxion.arange(4.0).reshape(2, 2)
    f(xe).add_(100.0)
    fluxion.compile(f)(xc).add_(100.0)
    assert_same_outputs(xc, xe, TOL)


def test_requires_grad_flip() -> None:
    def f(x: Any, w: Any) -> Any:
        return ((x * w).tanh() * 3).sum()

    compiled = fluxion.compile(f)
    w = fluxion.tensor([0.3, -0.2, 0.1])
    for rg in (False, True, False, True):
        xe = fluxion.tensor([1.0, 2.0, -1.0], requires_grad=rg)
        xc = fluxion.tensor([1.0, 2.0, -1.0], requires_grad=rg)
        ye, yc = f(xe, w), compiled(xc, w)
        assert yc.requires_grad == ye.requires_grad == rg
        assert_same_outputs(yc, ye, TOL)
        if rg:  # backward after the compiled call
            ye.backward()
            yc.backward()
            assert_same_outputs(xc.grad, xe.grad, TOL)
    with fluxion.no_grad():
        assert not compiled(fluxion.tensor([1.0, 2.0, -1.0], requires_grad=True), w).requires_grad


def test_backward_inside_and_grad_accumulation() -> None:
    def f(x: Any) -> Any:
        loss = (x.sin() * x).sum()
        loss.backward()
        return loss

    xe = fluxion.tensor([0.5, -1.0, 2.0], requires_grad=True)
    xc = fluxion.tensor([0.5, -1.0, 2.0], requires_grad=True)
    compiled = fluxion.compile(f)
    for _ in range(3):  # .grad accumulates across calls, as in eager
        assert_same_outputs(compiled(xc), f(xe), TOL)
        assert_same_outputs(xc.grad, xe.grad, TOL)


class _Square(fluxion.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        (x,) = ctx.saved_tensors
        return g * 2 * x


def _double_backward(x: Any) -> Any:
    (g,) = fluxion.autograd.grad((x ** 3).sum(), x, create_graph=True)
    (g * g.sin()).sum().backward()
    return g


def _hook(x: Any) -> Any:
    y = x.exp()
    y.register_hook(lambda g: g * 2)
    y.sum().backward()
    return y


def _retain_grad(x: Any) -> Any:
    y = x.exp()
    y.retain_grad()
    (y * y).sum().backward()
    return y.grad


def _retain_graph(x: Any) -> Any:
    y = (x.sin() * 3).sum()
    y.backward(retain_graph=True)
    y.backward()
    return y


def _grad_argument(x: Any) -> Any:
    y = x.exp() * 2
    y.backward(fluxion.tensor([1.0, 0.5, -1.0]))
    return y


def _custom_function(x: Any) -> Any:
    y = _Square.apply(x.tanh()).sum()
    y.backward()
    return y


def _clip(x: Any) -> Any:
    y = (x * 10).pow(2).sum()
    y.backward()
    nn.utils.clip_grad_norm_([x], 1.0)
    return y


def _setitem(x: Any) -> Any:
    y = x * 1
    y[1] = 5.0
    (y * y).sum().backward()
    return y


AUTOGRAD = {f.__name__.strip("_"): f for f in (
    _double_backward, _hook, _retain_grad, _retain_graph, _grad_argument, _custom_function,
    _clip, _setitem)}


@pytest.mark.parametrize("name", list(AUTOGRAD))
def test_autograd_features_inside(name: str) -> None:
    f = AUTOGRAD[name]
    xe = fluxion.tensor([0.5, -1.0, 2.0], requires_grad=True)
    xc = fluxion.tensor([0.5, -1.0, 2.0], requires_grad=True)
    assert_same_outputs(fluxion.compile(f)(xc), f(xe), TOL)
    assert_same_outputs(xc.grad, xe.grad, TOL)


def _bn_net() -> Any:
    fluxion.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.ReLU())


def test_train_eval_flip() -> None:
    me, mc = _bn_net(), _bn_net()
    compiled = fluxion.compile(mc)
    x = fluxion.randn(5, 4)
    for mode in ("train", "eval", "train", "eval", "train"):
        getattr(me, mode)()
        getattr(compiled, mode)()
        assert mc.training == (mode == "train")
        fluxion.manual_seed(1)
        ye = me(x)
        fluxion.manual_seed(1)
        yc = compiled(x)
        assert_same_outputs(yc, ye, TOL)
    bn_e, bn_c = me[1], mc[1]
    assert_same_outputs(bn_c.running_mean, bn_e.running_mean, TOL)
    assert_same_outputs(bn_c.running_var, bn_e.running_var, TOL)
    assert bn_c.num_batches_tracked.item() == bn_e.num_batches_tracked.item() == 3


def test_recompiles_are_counted_with_reasons() -> None:
    compiled = fluxion.compile(lambda x: (x * 2).exp())
    compiled(fluxion.ones(2, 3))
    assert compiled.stats.recompiles == []
    compiled(fluxion.ones(4, 3))
    assert len(compiled.stats.recompiles) == 1
    assert "[2, 3]" in compiled.stats.recompiles[0].reason
    assert "[4, 3]" in compiled.stats.recompiles[0].reason
    compiled(fluxion.ones(2, 3))  # seen before: no recompile
    compiled(fluxion.ones(4, 3))
    assert len(compiled.stats.recompiles) == 1
    compiled(fluxion.ones(4, 3, dtype=fluxion.float64))  # dtype change
    assert len(compiled.stats.recompiles) == 2
    assert "float64" in compiled.stats.recompiles[1].reason
    assert compiled.stats.graphs == 3 and compiled.stats.calls == 5


def _many_shapes(compiled: Any, n: int) -> None:
    for k in range(1, n + 1):
        compiled(fluxion.ones(k))


def test_recompile_limit_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "recompile_limit", 3)
    compiled = fluxion.compile(lambda x: x + 1, backend="numpy")
    with pytest.warns(RuntimeWarning, match="recompile_limit") as record:
        _many_shapes(compiled, 8)
    assert len([w for w in record if "recompile_limit" in str(w.message)]) == 1
    assert len(compiled.stats.recompiles) == 7
    # under the limit: no warning
    monkeypatch.setattr(fluxion.compiler.config, "recompile_limit", 8)
    quiet = fluxion.compile(lambda x: x + 1, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _many_shapes(quiet, 8)


def test_recompile_warning_points_at_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning is attributed to the user's code (the call), not to fluxion's."""
    monkeypatch.setattr(fluxion.compiler.config, "recompile_limit", 1)
    compiled = fluxion.compile(lambda x: x + 1, backend="numpy")
    with pytest.warns(RuntimeWarning, match="recompile_limit") as record:
        for k in (1, 2, 3):
            compiled(fluxion.ones(k))
    assert record[0].filename == HERE, record[0].filename


def test_view_of_a_pending_value_does_not_break_the_graph() -> None:
    """``Tensor.view`` is a metadata change: no graph break (MNISTNet and GPT use it)."""
    compiled = fluxion.compile(lambda x: (x * 2).view(-1, 2).exp(), fullgraph=True)
    x = fluxion.arange(6.0).reshape(2, 3)
    assert_same_outputs(compiled(x), (x * 2).view(-1, 2).exp(), TOL)


def test_view_of_a_split_does_not_break_the_graph() -> None:
    """Splitting the last dimension of a column block is a view (GPT's attention heads)."""

    def f(x: Any) -> Any:
        q = (x * 2).split(2, dim=-1)[1]
        return q.view(3, 2, 1).exp()

    compiled = fluxion.compile(f, fullgraph=True)
    x = fluxion.arange(12.0).reshape(3, 4) / 10
    assert_same_outputs(compiled(x), f(x), TOL)


def test_boolean_mask_of_a_pending_value() -> None:
    def f(x: Any) -> Any:
        return x[x > 0] * 2

    x = fluxion.tensor([1.0, -3.0, 3.0, 0.5])
    assert_same_outputs(fluxion.compile(f)(x), f(x), TOL)


def test_masked_select_with_a_pending_mask() -> None:
    """The result's length depends on the data: the compiled graph must not guess it."""

    def f(x: Any) -> Any:
        return fluxion.masked_select(x, x > 0) * 2

    x = fluxion.tensor([1.0, -3.0, 3.0, 0.5])
    assert_same_outputs(fluxion.compile(f)(x), f(x), TOL)


def test_nested_compiled_call_is_inlined() -> None:
    inner = fluxion.compile(lambda x: x.exp() * 2)
    outer = fluxion.compile(lambda x: inner(x) + 1)
    x = fluxion.tensor([0.0, 1.0])
    assert_same_outputs(outer(x), x.exp() * 2 + 1, TOL)
    assert inner.stats.calls == 0 and outer.stats.graphs == 1


def test_other_threads_run_eagerly_during_a_compiled_call() -> None:
    """Capture belongs to the thread that runs the compiled function: another thread's
    eager ops in the meantime are neither recorded into its graph nor break it."""
    import threading

    capturing, worker_done = threading.Event(), threading.Event()
    seen: list = []

    def worker() -> None:
        capturing.wait(10)
        try:
            seen.append((fluxion.arange(4.0) * 3 + 1).tolist())
        except Exception as e:  # pragma: no cover - reported below
            seen.append(e)
        worker_done.set()

    def f(x: Any) -> Any:
        y = x * 2
        capturing.set()
        worker_done.wait(10)  # the worker's eager ops run while this call records
        return y + 1

    compiled = fluxion.compile(f, fullgraph=True, backend="numpy")
    t = threading.Thread(target=worker)
    t.start()
    out = compiled(fluxion.ones(3))
    t.join()
    assert seen == [[1.0, 4.0, 7.0, 10.0]]
    assert out.tolist() == [3.0, 3.0, 3.0]
    assert compiled.stats.breaks == [] and compiled.stats.graphs == 1
    (prog,) = compiled.programs.values()
    assert [n.op for n in prog.captured.nodes] == ["mul", "add"]


def test_exception_inside_leaves_no_capture_behind() -> None:
    def f(x: Any) -> Any:
        y = x * 2
        raise KeyError("boom")
        return y  # pragma: no cover

    compiled = fluxion.compile(f)
    with pytest.raises(KeyError):
        compiled(fluxion.ones(2))
    from fluxion.compiler.lazy import active

    assert not active()
    assert (fluxion.ones(2) * 3).tolist() == [3.0, 3.0]


def test_exception_after_in_place_write() -> None:
    """The Python raised after an in-place write (and after storing a new tensor outside):
    as in eager, the write happened and every tensor stays usable."""
    kept: list = []

    def f(x: Any, w: Any) -> Any:
        x.add_(1)
        kept.append(w * 2)
        raise ValueError("boom")

    for g in (f, fluxion.compile(f)):
        x, w = fluxion.zeros(3), fluxion.ones(3)
        with pytest.raises(ValueError, match="boom"):
            g(x, w)
        assert x.tolist() == [1.0, 1.0, 1.0]
        assert (x + 1).tolist() == [2.0, 2.0, 2.0]
        assert kept.pop().tolist() == [2.0, 2.0, 2.0]


def test_decorator_forms_and_bad_backend() -> None:
    @fluxion.compile
    def f(x: Any) -> Any:
        return x + 1

    @fluxion.compile(backend="numpy")
    def g(x: Any) -> Any:
        return x.exp() + 1

    x = fluxion.tensor([1.0, 2.0])
    assert f(x).tolist() == [2.0, 3.0]
    assert_same_outputs(g(x), x.exp() + 1, TOL)
    assert all(p.backend == "numpy" for p in g.programs.values())
    assert f.__name__ == "f"
    with pytest.raises(ValueError, match="backend"):
        fluxion.compile(f, backend="cuda-please")


def test_optimized_module_is_the_module() -> None:
    m = nn.Linear(3, 2)
    cm = fluxion.compile(m)
    assert cm.weight is m.weight
    assert list(cm.parameters()) == list(m.parameters())
    assert set(cm.state_dict()) == {"weight", "bias"}
    cm.eval()
    assert not m.training
    cm.extra = 5
    assert m.extra == 5
    x = fluxion.randn(4, 3)
    assert_same_outputs(cm(x), m(x), TOL)


def test_compiled_submodule_is_a_module() -> None:
    """A compiled module stays a Module: a parent registers it (its parameters are the
    parent's, so an optimizer over parent.parameters() trains them) and containers take
    it."""

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = fluxion.compile(nn.Linear(2, 3))

        def forward(self, x: Any) -> Any:
            return self.inner(x).relu()

    outer = Outer()
    assert isinstance(outer.inner, nn.Module)
    assert len(list(outer.parameters())) == 2
    seq = nn.Sequential(fluxion.compile(nn.Linear(2, 2)), nn.ReLU())
    assert len(list(seq.parameters())) == 2
    x = fluxion.ones(1, 2)
    assert_same_outputs(seq(x), seq[1](seq[0]._orig_mod(x)), TOL)


def test_compile_callables_without_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """functools.partial and callable objects compile, recompile warnings included."""
    import functools

    monkeypatch.setattr(fluxion.compiler.config, "recompile_limit", 1)

    class AddOne:
        def __call__(self, x: Any) -> Any:
            return x + 1

    def scale(x: Any, a: float) -> Any:
        return x * a

    for fn in (functools.partial(scale, a=2.0), AddOne()):
        compiled = fluxion.compile(fn, backend="numpy")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            for k in (1, 2, 3):
                assert_same_outputs(compiled(fluxion.ones(k)), fn(fluxion.ones(k)), TOL)
        assert any("recompile_limit" in str(w.message) for w in record)
        assert repr(compiled).startswith("<compiled ")


def test_verify_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify runs eager beside compiled: silent on a correct graph, names the node that
    differs on a broken one."""
    monkeypatch.setattr(fluxion.compiler.config, "verify", True)
    compiled = fluxion.compile(lambda x: (x * 2).exp().sum(), backend="numpy")
    x = fluxion.tensor([0.5, 1.0])
    assert_same_outputs(compiled(x), (x * 2).exp().sum(), TOL)
    (prog,) = compiled.programs.values()
    assert prog.kernels
    name = prog.kernels[0].name
    good = prog._fns[name]
    prog._fns[name] = lambda *a: good(*a) + 1.0  # sabotage the fused mul -> exp -> sum
    with pytest.raises(RuntimeError, match=r"verify: node %2 \(sum, float32\[\]\) differs"):
        compiled(x)


def test_verify_mode_on_a_training_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole AdamW step under verify mode: the in-place updates (the step count, the
    moments, the weights) are checked against the inputs they were computed from (none is
    overwritten before its check), and the weights end as without verify; a sabotaged
    extra output of a multi-output kernel (a new moment) is named."""
    def setup() -> tuple[Any, Any]:
        fluxion.manual_seed(0)
        m = fluxion.nn.Sequential(fluxion.nn.Linear(8, 16), fluxion.nn.ReLU(),
                                  fluxion.nn.Linear(16, 3))
        return m, fluxion.optim.AdamW(m.parameters(), lr=1e-2)

    x, y = fluxion.randn(5, 8), fluxion.tensor([0, 1, 2, 1, 0])

    def make(m: Any, opt: Any) -> Any:
        def step() -> Any:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss
        return fluxion.compile(step)

    plain, checked = setup(), setup()
    for _ in range(3):
        make(*plain)()
    monkeypatch.setattr(fluxion.compiler.config, "verify", True)
    step = make(*checked)
    for _ in range(3):
        step()
    for a, b in zip(plain[0].parameters(), checked[0].parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    (prog,) = step.last_programs
    if prog.backend != "c":
        pytest.skip("no working C compiler (CC): the sabotage below patches a C kernel")
    k = next(k for k in prog.kernels if k.extra)
    good = prog._fns[k.name]

    def sabotaged(*args: Any) -> None:  # the first extra output: its address is last-but-n
        good(*args)
        extra = np.ctypeslib.as_array(
            (ctypes.c_float * 1).from_address(args[-len(k.extra)]))
        extra[0] += 1.0

    prog._fns[k.name] = sabotaged
    node = prog.graph.nodes[k.extra[0]]
    with pytest.raises(RuntimeError, match=rf"verify: node %{k.extra[0]} \({node.op}, "):
        step()


# --- 7. explain -------------------------------------------------------------------------
def explained(x: Any) -> Any:
    y = (x * 2).exp()
    if y.sum() > 1:  # BREAK: explained
        y = y.relu() - 1
    return y


def test_explain_report(capsys: pytest.CaptureFixture) -> None:
    report = fluxion.explain(explained, fluxion.ones(2, 3))
    printed = capsys.readouterr().out
    assert report.graph_count == 2
    assert report.graph_break_count == 1
    (b,) = report.break_reasons
    assert b.location == f"{HERE}:{lineno('# BREAK: explained')}"
    assert "bool" in b.reason
    assert len(report.guards) == 2 and "float32[2, 3]" in report.guards[0]
    assert report.recompiles == []
    assert len(report.kernels) == len(report.sources) == len(report.graphs) == 2
    assert report.kernels[0][0].startswith("fused_0: mul -> exp")
    assert any("relu" in k for k in report.kernels[1])
    assert "/* fused_0: k_" in report.sources[0] and "exp(" in report.sources[0]
    assert "%in0: float32[2, 3]" in report.graphs[0]
    for key in ("passes", "fusion", "codegen", "call_total"):
        assert key in report.timings and report.timings[key] >= 0
    assert "compile" in report.timings or "load" in report.timings
    text = str(report)
    assert printed.strip() == text.strip()
    assert text.startswith("Fluxion compile report: 2 graph(s), 1 graph break(s)")
    assert f"break at {b.location}: {b.reason}" in text
    assert "Guards" in text and "generated source" in text and "/* fused_0: k_" in text
    assert "Time per stage (s):" in text


@pytest.mark.skipif(not fluxion.compiler.cache.c_available(),
                    reason="no working C compiler (CC)")
def test_explain_shows_the_copies_and_views_removed(capsys: pytest.CaptureFixture) -> None:
    """Attention's heads merged back: the product written in the merged layout, the views
    the kernels read never made; explain lists both per graph."""
    def heads(q: Any, k: Any) -> Any:
        a = (q @ k.transpose(-2, -1)).transpose(1, 2).reshape(2, 4, 12)
        return a.exp() + q.transpose(-2, -1).exp().sum()

    q, k = fluxion.randn(2, 3, 4, 5), fluxion.randn(2, 3, 4, 5)
    report = fluxion.explain(heads, q, k)
    (memory,) = report.memory
    assert any(m.endswith("(that reshape: a view)") and "(matmul)" in m for m in memory)
    # q, the second input recorded (k's transpose comes first)
    assert any("never made, its kernels read %in1 through its strides" in m for m in memory)
    assert "copies and views removed ---" in capsys.readouterr().out
    want = (q.numpy() @ k.numpy().swapaxes(-2, -1)).swapaxes(1, 2).reshape(2, 4, 12)
    got = fluxion.compile(heads)(q, k).numpy()
    np.testing.assert_allclose(got, np.exp(want) + np.exp(q.numpy()).sum(), rtol=1e-5)


def test_explain_reports_recompiles_of_a_compiled_function(capsys: pytest.CaptureFixture
                                                            ) -> None:
    compiled = fluxion.compile(lambda x: x.exp() + 1, backend="numpy")
    compiled(fluxion.ones(3))
    report = fluxion.explain(compiled, fluxion.ones(5))
    assert report.graph_count == 1 and report.graph_break_count == 0
    assert len(report.recompiles) == 1 and "[5]" in report.recompiles[0].reason
    assert "Recompiles:" in str(report)
    assert "def fused_0(" in report.sources[0]  # the NumPy backend's source
    capsys.readouterr()


def test_explain_module_and_show_source(capsys: pytest.CaptureFixture) -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    report = fluxion.explain(m, fluxion.randn(2, 3))
    assert report.graph_count == 1 and report.graph_break_count == 0
    # a linear layer is captured as one op and split into its product by the passes
    assert any("= linear(" in g for g in report.graphs)
    assert any("= matmul(" in g for g in report.optimized_graphs)
    cm = fluxion.compile(m)
    cm(fluxion.randn(2, 3))
    src = cm._compiled.show_source()
    assert src.startswith("# graph 0 (")
    capsys.readouterr()


def test_print_source(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "print_source", True)
    fluxion.compile(lambda x: (x + 1).sqrt(), backend="numpy")(fluxion.ones(2))
    out = capsys.readouterr().out
    assert "generated numpy source" in out and "def fused_0(" in out


def helper_that_reads(y: Any) -> float:
    return y.max().item()  # BREAK: helper


def test_break_location_is_the_innermost_user_frame() -> None:
    def f(x: Any) -> Any:
        return x * helper_that_reads(x * 2)

    compiled = fluxion.compile(f)
    assert_same_outputs(compiled(fluxion.ones(2)), f(fluxion.ones(2)), TOL)
    assert compiled.stats.breaks[0].location == f"{HERE}:{lineno('# BREAK: helper')}"


def test_module_level_names() -> None:
    assert fluxion.compile is fluxion.compiler.compile
    assert fluxion.explain is fluxion.compiler.explain
    assert issubclass(GraphBreakError, RuntimeError)
    assert sys.modules["fluxion.compiler.api"].GraphBreakError is GraphBreakError


def test_cycle_collector_paused_only_during_a_call() -> None:
    """Capture pauses the cycle collector (no full-heap collections mid-step) and restores
    it after the call, also when the call raises, and leaves it off if it was off."""
    import gc

    seen = []

    def f(x: Any) -> Any:
        seen.append(gc.isenabled())
        if x.shape[0] == 3:
            raise ValueError("boom")
        return x * 2

    compiled = fluxion.compile(f)
    assert gc.isenabled()
    compiled(fluxion.ones(2))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ValueError, match="boom"):
        compiled(fluxion.ones(3))
    assert gc.isenabled()
    gc.disable()
    try:
        compiled(fluxion.ones(2))
        assert not gc.isenabled()
    finally:
        gc.enable()
