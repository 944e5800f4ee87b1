"""Learning-rate schedulers against PyTorch: for each scheduler and several configurations,
the learning rates (and cycled momenta / betas) of every param group must equal PyTorch's
over ~50 steps; also chained and sequential schedulers, ReduceLROnPlateau fed a metric
sequence, state_dict round trips, the deprecated ``step(epoch)`` closed forms, warnings
and errors."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest

import fluxion
import fluxion.optim as optim
from fluxion.nn.parameter import Parameter

torch = pytest.importorskip("torch")

STEPS = 50


def _optimizer(lib, name: str = "SGD", lrs=(0.1, 0.05), **kwargs):
    """An optimizer with one param group per learning rate."""
    param = Parameter if lib is fluxion else torch.nn.Parameter
    if name == "SGD":
        kwargs.setdefault("momentum", 0.9)
    groups = [{"params": [param(lib.zeros(2))], "lr": lr} for lr in lrs]
    return getattr(lib.optim, name)(groups, **kwargs)


def _snapshot(opt, sched):
    lrs = [float(x) for x in sched.get_last_lr()]
    groups = [(float(g["lr"]), g.get("momentum"), g.get("betas")) for g in opt.param_groups]
    return lrs, groups


def _run(lib, build, steps=STEPS, metrics=None, opt_name="SGD", opt_kwargs=None):
    opt = _optimizer(lib, opt_name, **(opt_kwargs or {}))
    with warnings.catch_warnings(record=True) as caught:  # building warns as PyTorch does
        warnings.simplefilter("always")
        sched = build(lib.optim.lr_scheduler, opt)
    out = [[str(w.message)[:60] for w in caught], _snapshot(opt, sched)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a normal loop warns about nothing
        for i in range(steps):
            opt.step()
            if metrics is None:
                sched.step()
            else:
                sched.step(metrics[i])
            out.append(_snapshot(opt, sched))
    return out


def _close(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_close(x, y)
                                                               for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


def _compare(build, **kwargs):
    f = _run(fluxion, build, **kwargs)
    t = _run(torch, build, **kwargs)
    for i, (a, b) in enumerate(zip(f, t)):
        assert _close(a, b), f"step {i}: fluxion {a} != torch {b}"
    return f


# --- each scheduler, several configurations ----------------------------------------------
def _lambda_power(epoch):
    return 0.95**epoch


CASES = {
    "StepLR(3, 0.5)": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "StepLR(10)": lambda m, o: m.StepLR(o, step_size=10),
    "StepLR(1, 0.9)": lambda m, o: m.StepLR(o, 1, 0.9),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[5, 10, 10, 30], gamma=0.5),
    "MultiStepLR(unsorted)": lambda m, o: m.MultiStepLR(o, milestones=[20, 2]),
    "ExponentialLR(0.9)": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "ExponentialLR(0.99)": lambda m, o: m.ExponentialLR(o, 0.99),
    "CosineAnnealingLR(10)": lambda m, o: m.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingLR(7, eta_min)": lambda m, o: m.CosineAnnealingLR(o, 7, eta_min=0.001),
    "CosineAnnealingLR(50)": lambda m, o: m.CosineAnnealingLR(o, T_max=50, eta_min=1e-4),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lr_lambda=_lambda_power),
    "LambdaLR(per group)": lambda m, o: m.LambdaLR(
        o, [lambda e: 1 / (1 + e), lambda e: (e // 7) + 1.0]),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9 if e % 2 else 1.0),
    "LinearLR": lambda m, o: m.LinearLR(o),
    "LinearLR(0.5, 1, 10)": lambda m, o: m.LinearLR(o, start_factor=0.5, total_iters=10),
    "LinearLR(1, 0.1, 20)": lambda m, o: m.LinearLR(o, 1.0, 0.1, 20),
    "ConstantLR": lambda m, o: m.ConstantLR(o),
    "ConstantLR(0.5, 10)": lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=10),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o),
    "PolynomialLR(20, 2)": lambda m, o: m.PolynomialLR(o, total_iters=20, power=2.0),
    "OneCycleLR(cos)": lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS),
    "OneCycleLR(linear)": lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 1.0], total_steps=60,
                                                    anneal_strategy="linear"),
    "OneCycleLR(three_phase)": lambda m, o: m.OneCycleLR(
        o, max_lr=0.8, epochs=5, steps_per_epoch=10, three_phase=True, pct_start=0.25),
    "OneCycleLR(no momentum)": lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, total_steps=55, cycle_momentum=False, div_factor=10.0,
        final_div_factor=100.0, pct_start=0.4),
    "OneCycleLR(momenta)": lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, total_steps=STEPS, base_momentum=[0.8, 0.7], max_momentum=0.99),
    "CyclicLR": lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5),
    "CyclicLR(triangular2)": lambda m, o: m.CyclicLR(o, [0.01, 0.02], 0.1, step_size_up=4,
                                                     step_size_down=6, mode="triangular2"),
    "CyclicLR(exp_range)": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3,
                                                   mode="exp_range", gamma=0.97),
    "CyclicLR(scale_fn)": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=5,
                                                  scale_fn=lambda x: 1 / x,
                                                  cycle_momentum=False),
    "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10),
    "CosineAnnealingWarmRestarts(T_mult)": lambda m, o: m.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=0.001),
    "SequentialLR(warmup, cosine)": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, 0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)],
        milestones=[5]),
    "SequentialLR(three)": lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, 0.2, total_iters=5), m.ExponentialLR(o, 0.9),
            m.StepLR(o, 4, 0.5)], milestones=[5, 20]),
    "SequentialLR(exp, multistep)": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, 0.8), m.MultiStepLR(o, [3, 12], 0.3)], milestones=[10]),
    "SequentialLR(chain first)": lambda m, o: m.SequentialLR(
        o, [m.ChainedScheduler([m.ExponentialLR(o, 0.95), m.StepLR(o, 3, 0.5)]),
            m.LinearLR(o, 0.25, total_iters=4)], milestones=[6]),
    "ChainedScheduler": lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, 0.1, total_iters=4), m.ExponentialLR(o, 0.9)]),
    "ChainedScheduler(cosine, step)": lambda m, o: m.ChainedScheduler(
        [m.CosineAnnealingLR(o, T_max=15), m.StepLR(o, 7, 0.5)], optimizer=o),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lr_sequence_matches_torch(case):
    _compare(CASES[case])


@pytest.mark.parametrize("case", ["OneCycleLR(cos)", "OneCycleLR(three_phase)", "CyclicLR",
                                  "CyclicLR(exp_range)"])
def test_beta1_cycling_with_adam(case):
    rows = _compare(CASES[case], opt_name="Adam", opt_kwargs={"betas": (0.9, 0.99)})
    assert len({row[1][0][2] for row in rows[1:]}) > 5  # beta1 really moved


def test_sequence_values():
    """A few values written out, so a shared mistake with the oracle would show."""
    rows = _compare(CASES["StepLR(3, 0.5)"], steps=7)[1:]
    assert [round(r[0][0], 8) for r in rows] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025,
                                                 0.025]
    rows = _compare(CASES["CosineAnnealingLR(10)"], steps=20)[1:]
    assert rows[10][0][0] == pytest.approx(0.0, abs=1e-15)
    assert rows[20][0][0] == pytest.approx(0.1)


# --- ReduceLROnPlateau ------------------------------------------------------------------------
def _metrics(kind: str) -> list[float]:
    if kind == "plateau":  # improves, then stalls with noise
        return [1.0 / (1 + i) if i < 10 else 0.1 + 0.01 * ((i * 7) % 5) for i in range(STEPS)]
    if kind == "rising":  # for mode='max'
        return [min(i, 12) + 0.001 * (i % 3) for i in range(STEPS)]
    return [abs(math.sin(i / 3.0)) for i in range(STEPS)]  # "wavy"


PLATEAU = [
    ({}, "plateau"),
    ({"patience": 2, "factor": 0.5}, "plateau"),
    ({"patience": 1, "factor": 0.5, "cooldown": 3}, "wavy"),
    ({"mode": "max", "patience": 2}, "rising"),
    ({"mode": "max", "threshold_mode": "abs", "threshold": 0.5, "patience": 1}, "rising"),
    ({"threshold_mode": "abs", "threshold": 0.05, "patience": 0}, "plateau"),
    ({"patience": 0, "factor": 0.5, "min_lr": [0.01, 0.02]}, "wavy"),
    ({"patience": 0, "factor": 0.9, "min_lr": 0.03, "eps": 1e-2}, "wavy"),
    ({"threshold": 0.5, "patience": 1, "factor": 0.3}, "plateau"),
]


@pytest.mark.parametrize(("kwargs", "kind"), PLATEAU, ids=[f"{k}-{m}" for k, m in PLATEAU])
def test_reduce_lr_on_plateau_matches_torch(kwargs, kind):
    metrics = _metrics(kind)
    rows = _compare(lambda m, o: m.ReduceLROnPlateau(o, **kwargs), metrics=metrics)[1:]
    if kind == "plateau":
        assert rows[-1][0][0] < rows[0][0][0]  # it did reduce


def test_reduce_lr_on_plateau_takes_a_tensor_metric():
    opt = _optimizer(fluxion)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    for _ in range(3):
        opt.step()
        sched.step(fluxion.tensor(1.0))
    assert sched.get_last_lr() == pytest.approx([1e-3, 5e-4])
    assert sched.num_bad_epochs == 0 and sched.best == 1.0 and sched.last_epoch == 3


# --- state_dict round trips -----------------------------------------------------------------
ROUND_TRIP = ["StepLR(3, 0.5)", "MultiStepLR", "CosineAnnealingLR(7, eta_min)", "LambdaLR",
              "LinearLR(0.5, 1, 10)", "OneCycleLR(three_phase)", "CyclicLR(triangular2)",
              "CosineAnnealingWarmRestarts(T_mult)", "SequentialLR(three)",
              "ChainedScheduler", "SequentialLR(chain first)"]


def _quiet(build):
    """``build`` with the warnings of construction (tested above) silenced."""
    def quiet(m, o):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build(m, o)
    return quiet


@pytest.mark.parametrize("case", ROUND_TRIP)
def test_state_dict_round_trip(case):
    build = _quiet(CASES[case])
    ref = _run(fluxion, build, steps=40)
    opt = _optimizer(fluxion)
    sched = build(optim.lr_scheduler, opt)
    for _ in range(13):
        opt.step()
        sched.step()
    saved = pickle.loads(pickle.dumps((opt.state_dict(), sched.state_dict())))
    # as PyTorch documents: build the scheduler, then load the optimizer, then the scheduler
    opt2 = _optimizer(fluxion)
    sched2 = build(optim.lr_scheduler, opt2)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    rows = [_snapshot(opt2, sched2)]
    for _ in range(27):
        opt2.step()
        sched2.step()
        rows.append(_snapshot(opt2, sched2))
    assert rows == ref[1:][13:]


def test_state_dict_matches_torch_keys():
    for case in ["StepLR(3, 0.5)", "OneCycleLR(cos)", "SequentialLR(three)", "LambdaLR",
                 "CyclicLR"]:
        fs = CASES[case](optim.lr_scheduler, _optimizer(fluxion)).state_dict()
        ts = CASES[case](torch.optim.lr_scheduler, _optimizer(torch)).state_dict()
        assert set(fs) <= set(ts), (case, set(fs) - set(ts))
        for key in ("last_epoch", "base_lrs", "_last_lr", "_step_count"):
            if key in ts:
                assert _close(fs[key], ts[key]), (case, key)


def test_reduce_lr_on_plateau_state_dict():
    metrics = _metrics("wavy")
    ref = _run(fluxion, lambda m, o: m.ReduceLROnPlateau(o, patience=1, cooldown=2,
                                                         factor=0.5), metrics=metrics)
    opt = _optimizer(fluxion)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, cooldown=2, factor=0.5)
    for i in range(20):
        opt.step()
        sched.step(metrics[i])
    saved = copy.deepcopy((opt.state_dict(), sched.state_dict()))
    opt2 = _optimizer(fluxion)
    sched2 = optim.lr_scheduler.ReduceLROnPlateau(opt2)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    rows = [_snapshot(opt2, sched2)]
    for i in range(20, STEPS):
        opt2.step()
        sched2.step(metrics[i])
        rows.append(_snapshot(opt2, sched2))
    assert rows == ref[1:][20:]


# --- resuming with last_epoch, the deprecated step(epoch), tensor lrs ------------------------
def test_resume_with_last_epoch():
    def build(m, o):
        m.StepLR(o, step_size=3)  # records initial_lr in the groups
        return m.CosineAnnealingLR(o, T_max=12, last_epoch=4)

    _compare(build, steps=20)
    with pytest.raises(KeyError, match="initial_lr"):
        optim.lr_scheduler.StepLR(_optimizer(fluxion), 3, last_epoch=5)


CLOSED_FORM = ["StepLR(3, 0.5)", "MultiStepLR", "ExponentialLR(0.9)",
               "CosineAnnealingLR(7, eta_min)", "LinearLR(0.5, 1, 10)", "ConstantLR(0.5, 10)",
               "PolynomialLR(20, 2)", "LambdaLR", "CosineAnnealingWarmRestarts(T_mult)",
               "CosineAnnealingWarmRestarts"]


@pytest.mark.parametrize("case", CLOSED_FORM)
def test_step_with_epoch_uses_the_closed_form(case):
    epochs = [3, 7, 7, 10, 2, 21, 30.5 if "Warm" in case else 30, 11]
    out = []
    for lib in (fluxion, torch):
        opt = _optimizer(lib)
        sched = CASES[case](lib.optim.lr_scheduler, opt)
        rows = []
        for e in epochs:
            opt.step()
            if "Warm" in case:  # its own step(epoch), which PyTorch does not deprecate
                sched.step(e)
            else:
                with pytest.warns(UserWarning, match="epoch parameter"):
                    sched.step(e)
            rows.append(_snapshot(opt, sched))
        out.append(rows)
    assert _close(out[0], out[1])


def test_warm_restarts_fractional_epochs():
    def loop(lib):
        opt = _optimizer(lib)
        sched = lib.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=2)
        rows = []
        for epoch in range(12):
            for i in range(5):
                opt.step()
                sched.step(epoch + i / 5)
                rows.append(_snapshot(opt, sched))
        return rows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _close(loop(fluxion), loop(torch))


def test_tensor_lr_is_updated_in_place():
    lr = fluxion.tensor(0.1, dtype=fluxion.float64)
    p = Parameter(fluxion.zeros(2))
    opt = optim.SGD([p], lr=lr)
    sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.025)
    last = sched.get_last_lr()[0]
    assert isinstance(last, fluxion.Tensor) and last is not lr
    assert opt.param_groups[0]["initial_lr"].item() == pytest.approx(0.1)


def test_scheduled_training_matches_torch():
    """Adam driven by OneCycleLR (lr and beta1 both scheduled) on a small quadratic."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    h, x0 = a @ a.T + np.eye(5), rng.standard_normal(5)
    out = []
    for lib, param in ((fluxion, Parameter), (torch, torch.nn.Parameter)):
        x = param(lib.tensor(x0))
        hh = lib.tensor(h)
        opt = lib.optim.Adam([x], lr=0.1)
        sched = lib.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=30)
        traj = []
        for _ in range(30):
            opt.zero_grad()
            (0.5 * (x @ (hh @ x))).backward()
            opt.step()
            sched.step()
            traj.append(x.detach().numpy().copy())
        out.append(np.array(traj))
    np.testing.assert_allclose(out[0], out[1], rtol=1e-12, atol=1e-14)


# --- warnings and errors ------------------------------------------------------------------------
def test_warns_when_stepped_before_the_optimizer():
    opt = _optimizer(fluxion)
    sched = optim.lr_scheduler.StepLR(opt, 2)
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        sched.step()


def test_get_lr_outside_step_warns():
    sched = optim.lr_scheduler.StepLR(_optimizer(fluxion), 2)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


def _error(fn):
    try:
        fn()
    except Exception as e:
        return type(e), str(e)
    return None


BAD = {
    "not an optimizer": lambda m, o: m.StepLR([1], 3),
    "OneCycleLR no length": lambda m, o: m.OneCycleLR(o, max_lr=1.0),
    "OneCycleLR total_steps": lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=0),
    "OneCycleLR pct_start": lambda m, o: m.OneCycleLR(o, 1.0, 10, pct_start=1.5),
    "OneCycleLR anneal": lambda m, o: m.OneCycleLR(o, 1.0, 10, anneal_strategy="exp"),
    "OneCycleLR max_lr list": lambda m, o: m.OneCycleLR(o, [1.0], 10),
    "LinearLR start": lambda m, o: m.LinearLR(o, start_factor=0),
    "LinearLR end": lambda m, o: m.LinearLR(o, end_factor=1.5),
    "ConstantLR factor": lambda m, o: m.ConstantLR(o, factor=2),
    "LambdaLR count": lambda m, o: m.LambdaLR(o, [_lambda_power]),
    "ReduceLROnPlateau factor": lambda m, o: m.ReduceLROnPlateau(o, factor=1.0),
    "ReduceLROnPlateau mode": lambda m, o: m.ReduceLROnPlateau(o, mode="up"),
    "ReduceLROnPlateau threshold_mode": lambda m, o: m.ReduceLROnPlateau(
        o, threshold_mode="pct"),
    "ReduceLROnPlateau min_lr": lambda m, o: m.ReduceLROnPlateau(o, min_lr=[0.1]),
    "SequentialLR milestones": lambda m, o: m.SequentialLR(
        o, [m.StepLR(o, 2), m.StepLR(o, 3)], milestones=[]),
    "SequentialLR plateau": lambda m, o: m.SequentialLR(
        o, [m.StepLR(o, 2), m.ReduceLROnPlateau(o)], milestones=[3]),
    "SequentialLR empty": lambda m, o: m.SequentialLR(o, [], milestones=[]),
    "CyclicLR mode": lambda m, o: m.CyclicLR(o, 0.1, 1.0, mode="square"),
    "WarmRestarts T_0": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0),
    "WarmRestarts T_mult": lambda m, o: m.CosineAnnealingWarmRestarts(o, 2, T_mult=0),
}


@pytest.mark.parametrize("case", list(BAD))
def test_errors_like_torch(case):
    f = _error(lambda: BAD[case](optim.lr_scheduler, _optimizer(fluxion)))
    t = _error(lambda: BAD[case](torch.optim.lr_scheduler, _optimizer(torch)))
    assert t is not None and f == t


def test_cycle_momentum_needs_momentum():
    for cls in ("OneCycleLR", "CyclicLR"):
        f = _error(lambda: getattr(optim.lr_scheduler, cls)(
            _optimizer(fluxion, "Adagrad"), 0.1, 1.0))
        t = _error(lambda: getattr(torch.optim.lr_scheduler, cls)(
            _optimizer(torch, "Adagrad"), 0.1, 1.0))
        assert t is not None and f == t


def test_one_cycle_stepping_past_the_end():
    for lib in (fluxion, torch):
        opt = _optimizer(lib)
        sched = lib.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
        for _ in range(5):
            opt.step()
            sched.step()
        with pytest.raises(ValueError, match=r"^Tried to step 6 times\. The specified number "
                                             r"of total steps is 5$"):
            sched.step()
