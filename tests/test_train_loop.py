"""The fit loop: summaries, metrics, plot and checkpoint every epoch, ``evaluate``, and exact
resume (3 epochs straight == 2 epochs + resume to 3, bit for bit, with dropout, SGD
momentum, a step LR schedule and a shuffled loader with a seeded generator)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fluxion
from fluxion import nn
from fluxion.nn import functional as F
from fluxion.optim import SGD
from fluxion.optim.lr_scheduler import StepLR
from fluxion.train import FitConfig, MetricsLog, evaluate, fit
from fluxion.train.loop import checkpoint_path
from fluxion.utils.data import DataLoader, TensorDataset

pytest.importorskip("safetensors")

TIMING = ("seconds", "samples_per_s")  # wall-clock fields: the only ones allowed to differ


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int64) + (x[:, 3] > 0.5)
    return fluxion.from_numpy(x), fluxion.from_numpy(y)


def build(scheduler_per="step"):
    """Everything a fresh run builds, from the same seeds (as a new process would)."""
    fluxion.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = StepLR(opt, step_size=4 if scheduler_per == "step" else 1, gamma=0.5)
    gen = fluxion.Generator().manual_seed(7)
    train = DataLoader(TensorDataset(*_data(80, 1)), batch_size=16, shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(*_data(40, 2)), batch_size=16)
    return model, opt, sched, train, val


def run(out_dir, epochs, resume=False, scheduler_per="step", **cfg_kwargs):
    model, opt, sched, train, val = build(scheduler_per)
    seen = []
    cfg = FitConfig(epochs=epochs, out_dir=str(out_dir), resume=resume, progress=False,
                    scheduler_per=scheduler_per, **cfg_kwargs)
    history = fit(model, opt, train, F.cross_entropy, cfg, eval_loader=val, scheduler=sched,
                  on_epoch_end=seen.append)
    return model, opt, sched, history, seen


def strip(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


@pytest.mark.parametrize("scheduler_per", ["step", "epoch"])
def test_resume_is_exact(tmp_path, capsys, scheduler_per):
    extra = {"clip_grad_norm": 0.5} if scheduler_per == "epoch" else {}
    m_a, o_a, s_a, hist_a, seen_a = run(tmp_path / "a", 3, scheduler_per=scheduler_per,
                                        **extra)
    assert seen_a == [1, 2, 3]

    run(tmp_path / "b", 2, scheduler_per=scheduler_per, **extra)
    fluxion.manual_seed(999)  # disturb the global RNG: the resume must not depend on it
    fluxion.randn(10)
    capsys.readouterr()
    m_b, o_b, s_b, hist_b, seen_b = run(tmp_path / "b", 3, resume=True,
                                        scheduler_per=scheduler_per, **extra)
    out = capsys.readouterr().out
    assert f"resumed from {checkpoint_path(str(tmp_path / 'b'))} at epoch 2" in out
    assert seen_b == [3]  # epochs 1 and 2 were not rerun
    assert "epoch 3 |" in out and "epoch 2 |" not in out

    assert strip(hist_b) == strip(hist_a)  # floats compared exactly
    assert [r["epoch"] for r in hist_b] == [1, 2, 3]
    sd_a, sd_b = m_a.state_dict(), m_b.state_dict()
    assert list(sd_a) == list(sd_b)
    for k in sd_a:
        assert np.array_equal(sd_a[k].numpy(), sd_b[k].numpy()), k
    for pa, pb in zip(o_a.param_groups[0]["params"], o_b.param_groups[0]["params"]):
        assert np.array_equal(o_a.state[pa]["momentum_buffer"].numpy(),
                              o_b.state[pb]["momentum_buffer"].numpy())
    assert s_a.get_last_lr() == s_b.get_last_lr()
    assert s_a.last_epoch == s_b.last_epoch

    # the files of the resumed run hold the whole history
    for d in ("a", "b"):
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        assert strip([json.loads(line) for line in lines]) == strip(hist_a)
        assert (tmp_path / d / "curves.png").stat().st_size > 0
        state = fluxion.load(checkpoint_path(str(tmp_path / d)))
        assert state["epoch"] == 3
        assert strip(state["history"]) == strip(hist_a)
        for k in sd_a:
            assert np.array_equal(state["model"][k].numpy(), sd_a[k].numpy()), k


def test_rng_after_resume_matches(tmp_path):
    """What happens after fit (more random draws) continues the same way too."""
    run(tmp_path / "a", 2)
    after_a = fluxion.rand(5).numpy()
    run(tmp_path / "b", 1)
    fluxion.manual_seed(5)
    run(tmp_path / "b", 2, resume=True)
    after_b = fluxion.rand(5).numpy()
    assert np.array_equal(after_a, after_b)


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    _, _, _, hist, seen = run(tmp_path / "new", 1, resume=True)
    out = capsys.readouterr().out
    assert "no checkpoint at" in out and "starting from scratch" in out
    assert seen == [1] and len(hist) == 1


def test_resume_when_already_done(tmp_path, capsys):
    _, _, _, hist, _ = run(tmp_path / "r", 2)
    model, _, _, hist2, seen = run(tmp_path / "r", 2, resume=True)
    assert seen == [] and strip(hist2) == strip(hist)
    state = fluxion.load(checkpoint_path(str(tmp_path / "r")))
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), state["model"][k].numpy())


def test_fit_outputs(tmp_path, capsys):
    _, _, _, hist, _ = run(tmp_path / "o", 2, max_steps_per_epoch=2, name="demo",
                           extra_state={"note": "hello", "cfg": {"width": 16}})
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for line in lines:
        for part in ("train loss", "train acc", "val loss", "val acc", "samples/s"):
            assert part in line, line
    assert [r["epoch"] for r in hist] == [1, 2]
    for r in hist:
        assert set(r) >= {"train_loss", "train_acc", "val_loss", "val_acc", *TIMING}
        assert 0.0 <= r["train_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
        # max_steps_per_epoch=2 with batch 16: 32 samples, so accuracy is a multiple of 1/32
        assert (r["train_acc"] * 32) == int(r["train_acc"] * 32)
    state = fluxion.load(checkpoint_path(str(tmp_path / "o")))
    assert state["note"] == "hello" and state["cfg"] == {"width": 16}
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "loader_rng", "epoch",
                          "history"}
    assert os.path.getsize(tmp_path / "o" / "curves.png") > 1000


def test_fit_regression_without_classification(tmp_path, capsys):
    fluxion.manual_seed(0)
    x = fluxion.randn(32, 3)
    y = x @ fluxion.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    opt = SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    cfg = FitConfig(epochs=3, out_dir=str(tmp_path), classification=False, progress=False)
    hist = fit(model, opt, loader, F.mse_loss, cfg, eval_loader=loader)
    assert "train_acc" not in hist[0] and "val_acc" not in hist[0]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_loss"] == pytest.approx(evaluate(model, loader, F.mse_loss,
                                                          classification=False)["loss"])
    assert "acc" not in capsys.readouterr().out


def test_evaluate_matches_manual_computation():
    fluxion.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))
    x, y = _data(50, 3)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 16 + 16 + 16 + 2
    model.train()
    res = evaluate(model, loader, F.cross_entropy)
    assert model.training  # mode restored
    model.eval()
    with fluxion.no_grad():
        out = model(x)
    want_loss = F.cross_entropy(out, y).item()
    want_acc = (out.argmax(-1) == y).float().mean().item()
    assert res["loss"] == pytest.approx(want_loss, rel=1e-6)
    assert res["acc"] == pytest.approx(want_acc)
    part = evaluate(model, loader, F.cross_entropy, max_batches=1)
    with fluxion.no_grad():
        want = F.cross_entropy(model(x[:16]), y[:16]).item()
    assert part["loss"] == pytest.approx(want, rel=1e-6)
    assert not model.training


def test_metrics_log_rewrites_history(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    log = MetricsLog(str(path), [{"epoch": 1, "train_loss": 0.5}])
    log.append({"epoch": 2, "train_loss": 0.25})
    assert [json.loads(line) for line in path.read_text().splitlines()] == log.history
    assert log.plot(str(tmp_path / "p.png"), title="t")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class CountingLoader:
    """A loader that counts the batches taken from it."""

    def __init__(self, loader):
        self.loader, self.fetched = loader, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.fetched += 1
            yield batch


def test_max_steps_per_epoch_fetches_only_those_batches(tmp_path):
    model, opt, _, train, _ = build()
    counting = CountingLoader(train)
    cfg = FitConfig(epochs=2, out_dir=str(tmp_path), progress=False, max_steps_per_epoch=2)
    hist = fit(model, opt, counting, F.cross_entropy, cfg)
    assert counting.fetched == 4  # 2 per epoch: no batch loaded and thrown away
    assert len(hist) == 2 and "val_loss" not in hist[0]
