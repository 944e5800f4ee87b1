"""``fluxion run script.py``: PyTorch scripts (tests/scripts/) run once with real PyTorch
(``python script.py``) and once on Fluxion (``python -m fluxion run script.py``) print the
same numbers; torch modules and functions Fluxion lacks fail with errors naming them; and
``torch_compat.install/uninstall/run`` in-process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fluxion
from fluxion import torch_compat

torch = pytest.importorskip("torch")

SCRIPTS = Path(__file__).parent / "scripts"
CASES = [
    ("mlp_classifier.py", []),
    ("functional_tools.py", []),
    ("argv_polyfit.py", ["--steps", "30", "demo", "--lr", "0.1"]),
    ("argv_polyfit.py", ["--help"]),
    ("conv_bn.py", []),
]
ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def python(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=120)


def fluxion_run(script, *args, cwd=None):
    return python("-m", "fluxion", "run", script, *args, cwd=cwd)


def tokens(text):
    """Each printed line as tokens; numbers (also inside ``[a, b]`` lists) as floats."""
    lines = []
    for line in text.splitlines():
        toks = []
        for tok in line.replace("[", " [ ").replace("]", " ] ").replace(",", " ").split():
            try:
                toks.append(float(tok))
            except ValueError:
                toks.append(tok)
        lines.append(toks)
    return lines


@pytest.mark.parametrize(("script", "args"), CASES,
                         ids=[f"{s[:-3]}{'-' + a[0] if a else ''}" for s, a in CASES])
def test_script_agrees_with_pytorch(script, args):
    path = SCRIPTS / script
    want = python(path, *args)
    assert want.returncode == 0, want.stderr
    got = fluxion_run(path, *args)
    assert got.returncode == 0, got.stderr
    want_lines, got_lines = tokens(want.stdout), tokens(got.stdout)
    assert len(want_lines) >= 1 and len(got_lines) == len(want_lines), got.stdout
    n_numbers = 0
    for w_line, g_line in zip(want_lines, got_lines):
        assert len(g_line) == len(w_line), (g_line, w_line)
        for w, g in zip(w_line, g_line):
            if isinstance(w, float):
                assert isinstance(g, float), (g_line, w_line)
                assert np.isfinite(w)
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6,
                                           err_msg=f"{g_line} vs {w_line}")
                n_numbers += 1
            else:
                assert g == w, (g_line, w_line)
    if args != ["--help"]:
        assert n_numbers >= 5


def test_scripts_exist_and_use_torch():
    for script, _ in CASES:
        assert "import torch" in (SCRIPTS / script).read_text()


# --- what Fluxion lacks ---------------------------------------------------------------------
@pytest.mark.parametrize(("source", "error", "name"), [
    ("import torch.distributions\n", "ImportError", "torch.distributions"),
    ("from torch.distributions import Normal\n", "ImportError", "torch.distributions"),
    ("from torch import distributions\n", "ImportError", "torch.distributions"),
    ("import torch\nprint(torch.fft.fft(torch.ones(4)))\n", "AttributeError", "torch.fft"),
    ("import torch\ntorch.some_missing(1)\n", "AttributeError", "torch.some_missing"),
])
def test_missing_torch_parts_fail_naming_them(tmp_path, source, error, name):
    script = tmp_path / "uses_missing.py"
    script.write_text("import torch.nn\nprint('started')\n" + source + "print('unreachable')\n")
    proc = fluxion_run(script)
    assert proc.returncode == 1
    assert proc.stdout == "started\n"
    last = proc.stderr.strip().splitlines()[-1]
    kinds = (error, "ModuleNotFoundError") if error == "ImportError" else (error,)
    assert last.startswith(kinds) and name in last, proc.stderr
    assert "uses_missing.py" in proc.stderr  # the traceback points at the user's script


def test_script_exit_code_and_stdin_args(tmp_path):
    script = tmp_path / "exits.py"
    script.write_text("import sys\nimport torch\nsys.exit(int(sys.argv[1]))\n")
    assert fluxion_run(script, "3").returncode == 3
    assert fluxion_run(script, "0").returncode == 0


def test_script_directory_is_on_sys_path(tmp_path):
    """As with ``python script.py``: a script imports the modules beside it, wherever the
    command is run from."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "helpers.py").write_text("import torch\n\ndef ones():\n    return torch.ones(3)\n")
    (proj / "main.py").write_text("from helpers import ones\nprint(float(ones().sum()))\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    want = python(proj / "main.py", cwd=elsewhere)
    got = fluxion_run(proj / "main.py", cwd=elsewhere)
    assert want.returncode == 0, want.stderr
    assert got.returncode == 0, got.stderr
    assert got.stdout == want.stdout == "3.0\n"


# --- in-process ---------------------------------------------------------------------------
def test_install_and_uninstall_restore_real_torch():
    real = {k: v for k, v in sys.modules.items() if k == "torch" or k.startswith("torch.")}
    assert real["torch"] is torch
    torch_compat.install()
    try:
        import torch as t
        import torch.nn.functional as F
        import torch.optim.lr_scheduler as sched
        import torch.utils.data.dataloader as dl
        from torch import nn

        assert t is fluxion
        assert F is fluxion.nn.functional and nn is fluxion.nn
        assert sched is fluxion.optim.lr_scheduler
        assert dl is fluxion.utils.data.dataloader
        with pytest.raises(ImportError, match=r"torch\.distributions"):
            importlib.import_module("torch.distributions")
        with pytest.raises(ImportError, match=r"torch\.distributions"):
            exec("from torch import distributions", {})
        with pytest.raises(AttributeError, match=r"torch\.fft"):
            _ = t.fft
        torch_compat.install()  # twice is harmless
        import torch as t2

        assert t2 is fluxion
    finally:
        torch_compat.uninstall()
    import torch as again
    import torch.nn.functional as real_F

    assert again is torch  # the very module objects from before: no re-import of torch
    assert real_F is real["torch.nn.functional"]
    now = {k: v for k, v in sys.modules.items() if k == "torch" or k.startswith("torch.")}
    assert now.keys() == real.keys() and all(now[k] is real[k] for k in real)
    assert torch.ones(2).sum().item() == 2.0  # and it still works


def test_run_in_process_sets_and_restores_argv_and_path(tmp_path):
    record = tmp_path / "record.json"
    script = tmp_path / "rec.py"
    script.write_text(
        "import json, sys\nimport torch\n"
        "json.dump({'argv': sys.argv, 'path0': sys.path[0], 'name': __name__,\n"
        "           'torch': torch.__name__, 'sum': torch.ones(3).sum().item()},\n"
        "          open(sys.argv[1], 'w'))\n")
    argv, path = sys.argv[:], sys.path[:]
    try:
        torch_compat.run(str(script), [str(record), "--flag"])
    finally:
        torch_compat.uninstall()
    assert sys.argv == argv and sys.path == path
    assert sys.modules["torch"] is torch
    rec = json.loads(record.read_text())
    assert rec == {"argv": [str(script), str(record), "--flag"], "path0": str(tmp_path),
                   "name": "__main__", "torch": "fluxion", "sum": 3.0}


def test_target_of():
    assert torch_compat.target_of("torch") == "fluxion"
    assert torch_compat.target_of("torch.nn.functional") == "fluxion.nn.functional"
    assert torch_compat.target_of("torch.cuda") == "fluxion.backends.cuda"
