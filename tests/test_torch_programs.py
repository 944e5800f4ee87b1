"""``import fluxion as torch`` runs PyTorch programs: each program in tests/programs/ is run
once with real PyTorch and once with ``sys.modules['torch']`` pointing at Fluxion, on the
same (NumPy-generated) data; the losses they return must agree."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

PROGRAMS = sorted((Path(__file__).parent / "programs").glob("*.py"))
_counter = itertools.count()


@contextlib.contextmanager
def torch_is(module):
    """Make ``import torch`` (and ``import torch.x.y``) give ``module``'s tree, restoring
    ``sys.modules`` exactly afterwards."""
    saved = {k: v for k, v in sys.modules.items() if k == "torch" or k.startswith("torch.")}
    try:
        if module is fluxion:
            for k in saved:
                del sys.modules[k]
            sys.modules["torch"] = fluxion
            for k, v in list(sys.modules.items()):
                if k.startswith("fluxion."):
                    sys.modules["torch." + k[len("fluxion."):]] = v
        yield
    finally:
        for k in [k for k in sys.modules if k == "torch" or k.startswith("torch.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def run_program(path, module):
    """Import the program under ``torch`` = ``module`` and call its ``main()``."""
    name = f"_fluxion_program_{path.stem}_{next(_counter)}"
    out = io.StringIO()
    with torch_is(module), contextlib.redirect_stdout(out):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert mod.torch is module
        result = mod.main()
    return np.asarray(result, dtype=np.float64), out.getvalue()


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_program_agrees_with_pytorch(path):
    want, t_out = run_program(path, torch)
    got, f_out = run_program(path, fluxion)
    assert sys.modules["torch"] is torch  # restored
    assert got.shape == want.shape
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert len(f_out.splitlines()) == len(t_out.splitlines())
    # the printed numbers agree too (formatting of Python floats, not tensors)
    for f_line, t_line in zip(f_out.splitlines(), t_out.splitlines()):
        assert f_line.split()[0] == t_line.split()[0]


def test_programs_exist():
    assert len(PROGRAMS) >= 3


def test_swap_restores_sys_modules():
    before = {k: v for k, v in sys.modules.items() if k.startswith("torch")}
    with torch_is(fluxion):
        import torch as inner

        assert inner is fluxion
        import torch.nn.functional as F

        assert F is fluxion.nn.functional
    after = {k: v for k, v in sys.modules.items() if k.startswith("torch")}
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] for k in before)
