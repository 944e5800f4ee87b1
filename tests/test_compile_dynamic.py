"""Dynamic sizes: with ``dynamic=True``, or once a function's shapes have changed, kernels
read their sizes at run time, so a new batch size reuses the compiled C (no compiler run,
not a step toward the recompile limit) and still equals eager; ``dynamic=False`` keeps
sizes written into the C and counts every change."""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest

import fluxion
import fluxion.nn as nn
import fluxion.nn.functional as F
from fluxion.compiler import cache, runtime
from fluxion.compiler.graph import GNode, Graph

HAVE_CC = cache.toolchain(fluxion.compiler.config.cc) is not None
pytestmark = pytest.mark.skipif(not HAVE_CC, reason="no working C compiler (CC)")
F32 = np.dtype(np.float32)


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", str(tmp_path / "kernels"))


@pytest.fixture
def compiler_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the C compiler is started."""
    runs: list[int] = []
    real = cache._compile

    def counted(source: str, so_path: str) -> Any:
        runs.append(1)
        return real(source, so_path)

    monkeypatch.setattr(cache, "_compile", counted)
    return runs


def _graph(batch: int) -> Graph:
    """A broadcast nest, a fused sum and a max-pool window (template) at one batch size."""
    x = (batch, 3, 4, 6)
    return Graph([(x, F32), ((3, 1, 1), F32)], [
        GNode("add", (("in", 0), ("in", 1)), {}, x, F32),                              # 0
        GNode("mul", (("n", 0), ("n", 0)), {}, x, F32),                                # 1
        GNode("sum", (("n", 1),), {"dims": (0, 2), "keepdim": False}, (3, 6), F32),    # 2
        GNode("unfold", (("n", 0),), {"kernel": (2, 2), "stride": (2, 2),
                                      "dilation": (1, 1)}, (batch, 12, 6), F32),        # 3
        GNode("reshape", (("n", 3),), {"shape": (batch, 3, 4, 6)}, x, F32),            # 4
        GNode("max_dim", (("n", 4),), {"dim": 2, "keepdim": False}, (batch, 3, 6), F32,
              aux=(((batch, 3, 6), np.dtype(np.int64)),)),                             # 5
    ], [("n", 2), ("n", 5), ("aux", 5, 0)])


def _eager(batch: int, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    xb = fluxion.from_numpy(a) + fluxion.from_numpy(b)
    s = (xb * xb).sum((0, 2))
    cols = F.unfold(xb, 2, stride=2).reshape(batch, 3, 4, 6)
    v, i = fluxion.max(cols, dim=2)
    return [s.numpy(), v.numpy(), i.numpy()]


def test_dynamic_kernels_are_one_function_for_every_batch_size(compiler_runs: list) -> None:
    names = None
    rng = np.random.default_rng(0)
    for batch in (5, 2, 7):
        prog = runtime.build_program(_graph(batch), "c", dynamic=True)
        these = sorted(re.findall(r"/\* \w+: (k_\w+) \*/", prog.source))  # the index
        assert prog._params, "dynamic kernels read their sizes at run time"
        if names is None:
            names, first_runs = these, len(compiler_runs)
        else:
            assert these == names  # the same functions...
            assert prog.cache_hit and len(compiler_runs) == first_runs  # ...not compiled
        a = rng.standard_normal((batch, 3, 4, 6)).astype(F32)
        b = rng.standard_normal((3, 1, 1)).astype(F32)
        got = prog.run([a, b])
        want = _eager(batch, a, b)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)  # a float32 sum
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


def test_static_kernels_write_sizes_in() -> None:
    prog = runtime.build_program(_graph(5), "c")
    assert not prog._params and "sz[" not in prog.source
    dyn = runtime.build_program(_graph(5), "c", dynamic=True)
    assert "const int64_t* restrict sz" in dyn.source


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: Any) -> Any:
        x = F.relu(F.max_pool2d(self.conv(x), 2))
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


def _steps(dynamic: bool | None, sizes: tuple[int, ...],
           eager: bool = False) -> tuple[Any, list, list]:
    fluxion.manual_seed(0)
    model = Net()
    opt = fluxion.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    compiled = step if eager else fluxion.compile(step, dynamic=dynamic)
    rng = np.random.default_rng(1)
    losses = []
    for b in sizes:
        x = fluxion.from_numpy(rng.standard_normal((b, 1, 8, 8)).astype(np.float32))
        y = fluxion.from_numpy(rng.integers(0, 5, b))
        losses.append(compiled(x, y).item())
    return compiled, losses, [p.detach().numpy().copy() for p in model.parameters()]


SIZES = (6, 6, 4, 9, 3, 6, 2)  # the first two calls differ in structure (momentum buffers)


@pytest.mark.parametrize("dynamic", [True, None])
def test_training_step_over_batch_sizes(dynamic: bool | None, compiler_runs: list,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new batch size after the first change runs the compiled functions it already
    has: no compiler run, no limit warning (the limit is set just above the two real
    recompiles: new optimizer state, and with dynamic=None the first size change), values
    equal eager."""
    monkeypatch.setattr(fluxion.compiler.config, "recompile_limit", 3)
    _, want_losses, want_params = _steps(None, SIZES, eager=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a limit warning would fail the test
        compiled, losses, params = _steps(dynamic, SIZES)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for g, w in zip(params, want_params):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    reused = [r.sizes_only for r in compiled.stats.recompiles]
    # call 2: new optimizer state (structural); call 3 (batch 4): the first size change,
    # compiled dynamic if it was not already; every later size reuses the functions
    assert not reused[0]
    assert all(reused[2:]), [r.reason for r in compiled.stats.recompiles]
    assert compiled.dynamic_sizes


def test_dynamic_false_counts_every_size(compiler_runs: list,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "recompile_limit", 3)
    with pytest.warns(RuntimeWarning, match="recompile_limit"):
        compiled, _, _ = _steps(False, SIZES)
    assert not compiled.dynamic_sizes
    assert not any(r.sizes_only for r in compiled.stats.recompiles)
    assert not any(p._params for p in compiled.programs.values())


def test_new_batch_size_does_not_run_the_compiler(compiler_runs: list) -> None:
    compiled, _, _ = _steps(True, (6, 6, 4))
    before = len(compiler_runs)
    rng = np.random.default_rng(2)
    for b in (5, 11, 1, 7):
        x = fluxion.from_numpy(rng.standard_normal((b, 1, 8, 8)).astype(np.float32))
        y = fluxion.from_numpy(rng.integers(0, 5, b))
        compiled(x, y)
    # batch 1 makes some extents 1, which changes a loop structure: allow that one
    assert len(compiler_runs) - before <= 1
