"""Backward passes and optimizer steps replayed from the last call's recording
(``compiler.replay``): replayed in a steady training loop, equal to eager there, and not
replayed whenever something the rules read has changed (requires_grad, saved Python
numbers, hooks, retain_grad, accumulated gradients, saved values written in place, freed
graphs; the learning rate, a tensor learning rate, a replaced momentum buffer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fluxion
from fluxion import nn


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", str(tmp_path / "kernels"))


def _close(a: fluxion.Tensor | None, b: fluxion.Tensor | None, scale: float = 1.0) -> None:
    """Equal to float32 rounding; ``scale``: the magnitude of the values the compared ones
    were computed from (an element near zero of a large-valued state carries their
    rounding)."""
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5,
                                   atol=1e-6 * scale)


def _mlp(seed: int) -> nn.Module:
    fluxion.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _step(model: nn.Module, opt: Any) -> Callable[[Any, Any], Any]:
    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def test_training_loop_replays_and_equals_eager() -> None:
    rng = np.random.default_rng(0)
    eager, comp = _mlp(1), _mlp(1)
    e_step = _step(eager, fluxion.optim.SGD(eager.parameters(), lr=0.1, momentum=0.9))
    c_step = fluxion.compile(_step(comp, fluxion.optim.SGD(comp.parameters(), lr=0.1,
                                                           momentum=0.9)))
    for _ in range(5):
        x = fluxion.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
        y = fluxion.from_numpy(rng.integers(0, 3, 4))
        _close(c_step(x, y), e_step(x, y))
        for pc, pe in zip(comp.parameters(), eager.parameters()):
            _close(pc, pe)
            _close(pc.grad, pe.grad)
    # the first call records, the next four replay (the first SGD step creates the
    # momentum buffers, so the second call's optimizer graph differs, not its backward)
    assert c_step.stats.backward_replays == 4
    # the first step creates the momentum buffers, the second is recorded
    assert c_step.stats.step_replays == 3
    # the replayed calls run the recorded call's graph (outputs in the same order)
    assert c_step.stats.graphs == 2
    for pc, pe in zip(comp.parameters(), eager.parameters()):
        assert pc._version == pe._version  # every in-place write counted
    report = fluxion.explain(c_step, x, y)
    assert any(g.startswith("backward: recorded once, replayed") and "5 time(s)" in g
               for g in report.guards), report.guards


def _loss_of(x: fluxion.Tensor, w: fluxion.Tensor, s: float) -> fluxion.Tensor:
    return ((x * w).tanh() * s).sum()


def test_requires_grad_flip_is_not_replayed() -> None:
    x = fluxion.ones(3, requires_grad=True)
    w = fluxion.full((3,), 0.5, requires_grad=True)

    @fluxion.compile
    def f() -> None:
        x.grad = w.grad = None
        _loss_of(x, w, 2.0).backward()

    f()
    f()
    assert f.stats.backward_replays == 1
    w.requires_grad_(False)
    f()
    assert w.grad is None and x.grad is not None
    xe = fluxion.ones(3, requires_grad=True)
    _loss_of(xe, fluxion.full((3,), 0.5), 2.0).backward()
    _close(x.grad, xe.grad)
    assert f.stats.backward_replays == 1


def test_saved_python_number_change_is_not_replayed() -> None:
    """A Python float the forward saved (``x * s``) is compiled as an input, so the
    forward graph is the same for every ``s``; the backward must still use the new one."""
    x = fluxion.ones(3, requires_grad=True)

    @fluxion.compile
    def f(s: float) -> None:
        x.grad = None
        (x * s).sum().backward()

    for s in (2.0, 3.0, 3.0, 5.0):
        f(s)
        np.testing.assert_array_equal(x.grad.numpy(), np.full(3, s, np.float32))
    assert f.stats.backward_replays == 1  # 3.0 twice in a row


def test_hooks_and_retain_grad_run_when_added_later() -> None:
    x = fluxion.ones(3, requires_grad=True)
    w = fluxion.full((3,), 0.5, requires_grad=True)
    calls = []
    keep: dict[str, Any] = {}

    @fluxion.compile
    def f(retain: bool) -> None:
        x.grad = w.grad = None
        h = x * w
        if retain:
            h.retain_grad()
        keep["h"] = h
        (h.tanh() * 2.0).sum().backward()

    f(False)
    f(False)
    assert f.stats.backward_replays == 1
    x.register_hook(lambda g: calls.append(1) or g * 10)
    f(False)
    assert calls == [1]
    xe = fluxion.ones(3, requires_grad=True)
    we = fluxion.full((3,), 0.5, requires_grad=True)
    he = xe * we
    he.retain_grad()
    xe.register_hook(lambda g: g * 10)
    (he.tanh() * 2.0).sum().backward()
    _close(x.grad, xe.grad)
    f(True)
    assert calls == [1, 1]
    _close(keep["h"].grad, he.grad)
    assert f.stats.backward_replays == 1


def test_accumulating_gradients_equal_eager() -> None:
    """No zero_grad: each call adds to the gradients the last one left."""
    xs = [fluxion.ones(3, requires_grad=True) for _ in range(2)]

    def f(x: fluxion.Tensor) -> None:
        _loss_of(x, fluxion.full((3,), 0.5), 2.0).backward()

    cf = fluxion.compile(f)
    for _ in range(4):
        f(xs[0])
        cf(xs[1])
        _close(xs[1].grad, xs[0].grad)


def test_saved_value_written_in_place_raises_as_eager() -> None:
    w = fluxion.full((3,), 0.5, requires_grad=True)

    def f(bump: bool) -> None:
        w.grad = None
        y = w.exp()
        if bump:
            with fluxion.no_grad():
                y.add_(1.0)  # exp saved its output
        y.sum().backward()

    cf = fluxion.compile(f)
    cf(False)
    cf(False)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as got:
        cf(True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as want:
        f(True)
    assert str(got.value) == str(want.value)


def test_second_backward_without_retain_graph_raises() -> None:
    w = fluxion.full((3,), 0.5, requires_grad=True)

    @fluxion.compile
    def f(twice: bool) -> None:
        w.grad = None
        loss = w.exp().sum()
        loss.backward()
        if twice:
            loss.backward()

    f(False)
    f(False)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        f(True)


def test_retain_graph_twice_per_call_equals_eager() -> None:
    ws = [fluxion.full((3,), 0.5, requires_grad=True) for _ in range(2)]

    def f(w: fluxion.Tensor) -> None:
        w.grad = None
        loss = (w.exp() * w).sum()
        loss.backward(retain_graph=True)
        loss.backward()

    cf = fluxion.compile(f)
    for _ in range(3):
        f(ws[0])
        cf(ws[1])
        _close(ws[1].grad, ws[0].grad)
    assert cf.stats.backward_replays == 4  # both passes of the second and third calls


def _sgd_pair(**kw: Any) -> tuple:
    eager, comp = _mlp(2), _mlp(2)
    e_opt = fluxion.optim.SGD(eager.parameters(), **kw)
    c_opt = fluxion.optim.SGD(comp.parameters(), **kw)
    return eager, comp, e_opt, c_opt, _step(eager, e_opt), fluxion.compile(_step(comp, c_opt))


def _batch(rng: np.random.Generator) -> tuple:
    return (fluxion.from_numpy(rng.standard_normal((4, 6)).astype(np.float32)),
            fluxion.from_numpy(rng.integers(0, 3, 4)))


def _same_params(a: nn.Module, b: nn.Module) -> None:
    for pa, pb in zip(a.parameters(), b.parameters()):
        _close(pa, pb)


def test_step_with_a_new_learning_rate_is_not_replayed() -> None:
    rng = np.random.default_rng(1)
    eager, comp, e_opt, c_opt, e_step, c_step = _sgd_pair(lr=0.1, momentum=0.9,
                                                          weight_decay=0.01)
    e_sched = fluxion.optim.lr_scheduler.StepLR(e_opt, step_size=2, gamma=0.5)
    c_sched = fluxion.optim.lr_scheduler.StepLR(c_opt, step_size=2, gamma=0.5)
    for _ in range(7):
        x, y = _batch(rng)
        _close(c_step(x, y), e_step(x, y))
        _same_params(comp, eager)
        e_sched.step()
        c_sched.step()
    # steps 3, 5 and 7 follow a step with the same lr; step 2 adds no state but is the
    # first recorded, each change of lr records again
    assert 0 < c_step.stats.step_replays < 6


def test_tensor_learning_rate_is_read_every_step() -> None:
    rng = np.random.default_rng(2)
    eager, comp, e_opt, c_opt, e_step, c_step = _sgd_pair(lr=fluxion.tensor(0.1),
                                                          momentum=0.5)
    for lr in (0.1, 0.1, 0.05, 0.05, 0.2):
        e_opt.param_groups[0]["lr"].fill_(lr)
        c_opt.param_groups[0]["lr"].fill_(lr)
        x, y = _batch(rng)
        _close(c_step(x, y), e_step(x, y))
        _same_params(comp, eager)
    assert c_step.stats.step_replays == 0


def test_replaced_momentum_buffer_is_the_one_updated() -> None:
    rng = np.random.default_rng(3)
    eager, comp, e_opt, c_opt, e_step, c_step = _sgd_pair(lr=0.1, momentum=0.9)
    for i in range(5):
        if i == 3:  # new buffers, same layout: the replayed step reads and writes them
            for opt in (e_opt, c_opt):
                for p in opt.param_groups[0]["params"]:
                    opt.state[p]["momentum_buffer"] = fluxion.full(p.shape, 0.01)
        x, y = _batch(rng)
        _close(c_step(x, y), e_step(x, y))
        _same_params(comp, eager)
        for pc, pe in zip(comp.parameters(), eager.parameters()):
            _close(c_opt.state[pc]["momentum_buffer"], e_opt.state[pe]["momentum_buffer"])
    assert c_step.stats.step_replays == 3


# (optimizer, options, replays in six steps: a step that creates the state is followed
# by the first recorded one; Adagrad creates its state with the optimizer)
_OPTIMIZERS = [
    ("Adam", {"lr": 0.05}, 4),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.1}, 4),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.01, "maximize": True}, 4),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.01}, 5),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}, 4),
    ("Adadelta", {"lr": 1.0, "weight_decay": 0.01}, 4),
]


@pytest.mark.parametrize(("name", "kwargs", "replays"), _OPTIMIZERS,
                         ids=[f"{n}-{'-'.join(k)}" for n, k, _ in _OPTIMIZERS])
def test_every_optimizer_replays_and_equals_eager(name: str, kwargs: dict,
                                                  replays: int) -> None:
    # Adam's and Adagrad's updates compute with numbers that change every step (bias
    # corrections, the decayed lr): a replay that fed last call's would drift from eager
    rng = np.random.default_rng(4)
    eager, comp = _mlp(1), _mlp(1)
    e_opt = getattr(fluxion.optim, name)(eager.parameters(), **kwargs)
    c_opt = getattr(fluxion.optim, name)(comp.parameters(), **kwargs)
    e_step, c_step = _step(eager, e_opt), fluxion.compile(_step(comp, c_opt))
    for _ in range(6):
        x, y = _batch(rng)
        _close(c_step(x, y), e_step(x, y))
        _same_params(comp, eager)
    for pc, pe in zip(comp.parameters(), eager.parameters()):
        assert pc._version == pe._version
        for k, v in e_opt.state[pe].items():  # (RMSprop's buffers reach 10 and more)
            _close(c_opt.state[pc][k], v, scale=max(1.0, float(v.abs().max())))
    assert c_step.stats.step_replays == replays


def test_adam_with_unequal_step_counts_is_not_replayed_as_equal() -> None:
    # the rule's numbers are shared where equal: parameters whose step counts part ways
    # (one frozen for a step) change which are, so that step runs the rule again
    rng = np.random.default_rng(5)
    eager, comp = _mlp(1), _mlp(1)
    e_opt = fluxion.optim.Adam(eager.parameters(), lr=0.05)
    c_opt = fluxion.optim.Adam(comp.parameters(), lr=0.05)

    def step(model: nn.Module, opt: Any, freeze: bool) -> Callable[[Any, Any], Any]:
        def run(x: Any, y: Any) -> Any:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if freeze:
                model[0].bias.grad = None  # not stepped: its count falls behind
            opt.step()
            return loss
        return run

    c_runs = {f: fluxion.compile(step(comp, c_opt, f)) for f in (False, True)}
    for freeze in (False, False, False, True, False, False):
        x, y = _batch(rng)
        _close(c_runs[freeze](x, y), step(eager, e_opt, freeze)(x, y))
        _same_params(comp, eager)
    counts = [s["step"].item() for s in c_opt.state.values()]
    assert sorted(counts) == [5.0, 6.0, 6.0, 6.0]
    # unfrozen: calls 3 and 6 replay (call 5 has unequal counts: recorded anew)
    assert c_runs[False].stats.step_replays == 2
