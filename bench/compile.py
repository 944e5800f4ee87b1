#!/usr/bin/env python
"""Compiled Fluxion vs eager Fluxion, PyTorch eager and ``torch.compile``, in one run.

Three measurements, each side by side on this machine:

1. Training-step time (median ms) of a whole step (``zero_grad``, forward, loss,
   ``backward``, ``optimizer.step``) compiled as one function, for

   - the classic MNIST network (``MNISTNet``), batch 64, SGD(0.01, momentum 0.5);
   - an MLP 784-512-512-10 with ReLU, batch 128, SGD(0.01, momentum 0.9);
   - the small GPT (4 layers, width 128, 4 heads, context 64, vocabulary 95), batch 32,
     AdamW as ``fluxion train charlm`` sets it up;

   in four variants: Fluxion eager, ``fluxion.compile(step)``, PyTorch eager and
   ``torch.compile(step)``. Every variant has its own model, all starting from the same
   (Fluxion's) initial weights, and the same NumPy-generated batch. Before timing, a few
   steps run in every variant: compiled Fluxion's losses must equal eager Fluxion's, and
   eager Fluxion's must match PyTorch's, or the script exits with status 1. If
   ``torch.compile`` fails, its error text fills its table cells instead.
2. Compile latency: the first call of the compiled step in a new process, *cold* (an
   empty cache directory: capture, optimisation passes, fusion, code generation and the C
   compiler) and *warm* (a second new process on the same cache directory, which loads
   the cached shared libraries); the same for ``torch.compile`` with a fresh and then a
   reused ``TORCHINDUCTOR_CACHE_DIR``. Each child process prints its timings as JSON.
3. Fused elementwise bandwidth: ``((x * 1.5 + y).relu() * z).exp()`` on 16M float32
   elements, compiled (one fused kernel) vs eager Fluxion vs PyTorch eager vs a plain
   memory copy (``np.copyto`` into a preallocated array), in GB/s.

Threads: OpenBLAS, OpenMP (which also runs Fluxion's generated C kernels and inductor's
C++ kernels) and MKL are limited to ``--threads`` (default 1) through
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (the script re-executes
itself with them set) and ``torch.set_num_threads``; the child processes inherit them.

Usage::

    python bench/compile.py               # plain-text tables (~5-6 min)
    python bench/compile.py --markdown    # Markdown tables for README.md
    python bench/compile.py --quick       # smoke run (MLP only), < 90 s
    python bench/compile.py --threads 2   # two threads in every framework
    python bench/compile.py --models mlp,gpt --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
from ops import LoadMeter, QuietGate, machine_facts, quiesce
from torch import nn as tnn
from train import (
    GPT_VOCAB,
    MNIST_MEAN,
    MNIST_STD,
    Step,
    TorchGPT,
    TorchMNISTNet,
    _adamw_charlm,
    _lm_loss,
    _md_table,
    _sgd,
    _text_table,
    _timed_steps,
    copy_weights,
    ensure_thread_env,
    make_step,
    set_threads,
)

import fluxion
import fluxion.nn.functional as FF
from fluxion import nn as fnn
from fluxion.compiler import cache as fl_cache
from fluxion.compiler.config import config as fl_config
from fluxion.train.models import GPT, MNISTNet

COLD_GOAL_S = 2.0  # Fluxion's cold compile (first call, compile part) must stay below this
WARM_GOAL_S = 0.2  # ... and its warm (cached .so) compile/load part
BANDWIDTH_GOAL = 0.8  # fused chain GB/s over copy GB/s
BUSY_MACHINE_CORES = 0.25  # others' average CPU use above which the run is flagged
VERIFY_STEPS = 4  # steps compared before timing (GPT needs 3 calls to settle, see below)
COMPILED_RTOL = 1e-5  # compiled Fluxion's loss vs eager Fluxion's
TORCH_RTOL = 1e-4  # eager Fluxion's loss vs PyTorch's (as bench/train.py)
CHILD_MAX_CALLS = 8  # calls a latency child makes at most (until no new graph twice)
TORCH_CHILD_CALLS = 4
BW_ELEMENTS = 16 * 2**20
FLOAT32_BYTES = 4

VARIANTS = ("Fluxion eager", "Fluxion compiled", "PyTorch eager", "torch.compile")
FL_EAGER, FL_COMPILED, TH_EAGER, TH_COMPILED = range(4)


# --- models -----------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """One training-step benchmark: how to build its models, optimizers, loss and batch."""

    key: str
    name: str
    seed: int
    build: Callable[[], tuple[fnn.Module, tnn.Module]]  # Fluxion model and PyTorch twin
    optim: Callable[[Any, Any], tuple[Any, Any]]  # (fluxion model, torch model) -> optimizers
    loss: tuple[Callable[..., Any], Callable[..., Any]]  # Fluxion's and PyTorch's
    data: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
    random_in_training: bool = False  # active dropout: verify in eval mode

    def models(self) -> tuple[fnn.Module, tnn.Module]:
        """A Fluxion model (seeded) and its PyTorch twin holding the same weights."""
        fluxion.manual_seed(self.seed)
        fl, th = self.build()
        copy_weights(fl, th)
        return fl, th

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The benchmark's inputs and targets (the same on every call)."""
        return self.data(np.random.default_rng(self.seed))


def _mnist_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = (rng.random((64, 1, 28, 28), dtype=np.float32) - MNIST_MEAN) / MNIST_STD
    return x.astype(np.float32), rng.integers(0, 10, 64)


def _mlp_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((128, 784), dtype=np.float32), rng.integers(0, 10, 128)


def _gpt_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(0, GPT_VOCAB, (32, 65))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


def _mlp_build() -> tuple[fnn.Module, tnn.Module]:
    def build(nn: Any) -> Any:
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))

    return build(fnn), build(tnn)


GPT_DIMS = {"vocab_size": GPT_VOCAB, "block_size": 64, "n_layer": 4, "n_head": 4,
            "n_embd": 128}

SPECS: dict[str, ModelSpec] = {
    "mnist": ModelSpec("mnist", "MNISTNet, batch 64, SGD momentum 0.5", 0,
                       lambda: (MNISTNet(), TorchMNISTNet()), _sgd(0.01, 0.5),
                       (FF.nll_loss, TF.nll_loss), _mnist_data, random_in_training=True),
    "mlp": ModelSpec("mlp", "MLP 784-512-512-10, batch 128, SGD momentum 0.9", 1,
                     _mlp_build, _sgd(0.01, 0.9), (FF.cross_entropy, TF.cross_entropy),
                     _mlp_data),
    "gpt": ModelSpec("gpt", "GPT 4x128, 4 heads, ctx 64, batch 32, AdamW", 2,
                     lambda: (GPT(**GPT_DIMS), TorchGPT(**GPT_DIMS)), _adamw_charlm,
                     (_lm_loss(FF), _lm_loss(TF)), _gpt_data),
}


def _error_text(exc: BaseException, limit: int = 2000) -> str:
    """``Type: message`` of an exception, cut to ``limit`` characters."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _short(text: str, width: int = 70) -> str:
    """The first line of an error, short enough for a table cell (no ``|``)."""
    line = text.splitlines()[0] if text else ""
    line = line.replace("|", "/")
    return line if len(line) <= width else line[: width - 3] + "..."


# --- the four variants of one model -----------------------------------------------------
@dataclass
class Variant:
    """One framework/mode of a training step."""

    label: str
    model: Any
    step: Step | None  # None once it has failed
    error: str | None = None
    compiled: Any = None  # the fluxion.compile'd function, for its stats


def build_variants(spec: ModelSpec) -> list[Variant]:
    """Fluxion eager, Fluxion compiled, PyTorch eager and torch.compile steps of ``spec``;
    four models with the same initial weights, all reading the same batch."""
    fl1, th1 = spec.models()
    fl2, th2 = spec.models()
    fl2.load_state_dict(fl1.state_dict())
    copy_weights(fl1, th2)
    for name, p in fl2.state_dict().items():  # same seed and an explicit copy: must agree
        if not np.array_equal(p.numpy(), fl1.state_dict()[name].numpy()):
            raise SystemExit(f"[{spec.name}] the two Fluxion models' {name} differ")
    x, y = spec.batch()
    fx, fy, tx, ty = fluxion.from_numpy(x), fluxion.from_numpy(y), torch.from_numpy(x), \
        torch.from_numpy(y)
    fo1, to1 = spec.optim(fl1, th1)
    fo2, to2 = spec.optim(fl2, th2)
    compiled = fluxion.compile(make_step(fl2, fo2, spec.loss[0], fx, fy))
    variants = [Variant(VARIANTS[FL_EAGER], fl1, make_step(fl1, fo1, spec.loss[0], fx, fy)),
                Variant(VARIANTS[FL_COMPILED], fl2, compiled, compiled=compiled),
                Variant(VARIANTS[TH_EAGER], th1, make_step(th1, to1, spec.loss[1], tx, ty))]
    try:
        tc = torch.compile(make_step(th2, to2, spec.loss[1], tx, ty))
        variants.append(Variant(VARIANTS[TH_COMPILED], th2, tc))
    except Exception as exc:  # compilation itself is lazy; this is a setup failure
        variants.append(Variant(VARIANTS[TH_COMPILED], th2, None, _error_text(exc)))
    return variants


def _call(v: Variant) -> float | None:
    """One step of ``v``, its loss; a failing torch.compile step is recorded, not raised."""
    if v.step is None:
        return None
    if v.label != VARIANTS[TH_COMPILED]:
        return float(v.step().item())
    try:
        return float(v.step().item())
    except Exception as exc:
        v.step, v.error = None, _error_text(exc)
        return None


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@dataclass
class Verification:
    """The losses of the verification steps and how well they agree."""

    losses: dict[str, list[float | None]]
    compiled_max_rel: float  # compiled vs eager Fluxion
    torch_max_rel: float  # eager Fluxion vs PyTorch eager
    torch_compile_max_rel: float | None  # torch.compile vs PyTorch eager
    mode: str  # "train" or "eval"


def verify(spec: ModelSpec, variants: list[Variant]) -> Verification:
    """``VERIFY_STEPS`` steps in every variant; exits with status 1 when compiled Fluxion's
    losses are not eager Fluxion's, or eager Fluxion's not PyTorch's. Models with active
    dropout run in eval mode here (masks are random) and are left in training mode."""
    mode = "eval" if spec.random_in_training else "train"
    for v in variants:
        v.model.train(mode == "train")
    losses: dict[str, list[float | None]] = {v.label: [] for v in variants}
    for _ in range(VERIFY_STEPS):
        for v in variants:
            losses[v.label].append(_call(v))
    for v in variants:
        v.model.train()
    fe, fc, te, tc = (losses[label] for label in VARIANTS)
    compiled_rel = max(_rel(a, b) for a, b in zip(fc, fe))  # type: ignore[arg-type]
    torch_rel = max(_rel(a, b) for a, b in zip(fe, te))  # type: ignore[arg-type]
    problems = []
    if not compiled_rel <= COMPILED_RTOL:
        problems.append(f"compiled Fluxion's losses {fc} differ from eager Fluxion's {fe} "
                        f"(max relative difference {compiled_rel:.3g} > {COMPILED_RTOL:g})")
    if not torch_rel <= TORCH_RTOL:
        problems.append(f"eager Fluxion's losses {fe} differ from PyTorch's {te} "
                        f"(max relative difference {torch_rel:.3g} > {TORCH_RTOL:g})")
    if problems:
        print(f"[{spec.name}] FAILED verification ({mode} mode); nothing was timed:",
              file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(1)
    tc_rel = None
    if all(v is not None for v in tc):
        tc_rel = max(_rel(a, b) for a, b in zip(tc, te))  # type: ignore[arg-type]
    return Verification(losses, compiled_rel, torch_rel, tc_rel, mode)


# --- step timing ------------------------------------------------------------------------
@dataclass
class Settings:
    """How hard to measure."""

    warmup: int  # untimed steps per variant before timing (compiled ones: also until settled)
    rounds: int  # timed rounds per variant, the order rotating every round
    min_round_s: float  # each round runs enough steps to last about this long
    quiet_wait_s: float  # longest wait for a quiet machine before each round
    bw_rounds: int  # rounds of the bandwidth cases
    bw_min_round_s: float
    models: tuple[str, ...]  # step benchmarks
    latency_models: tuple[str, ...]  # compile-latency children
    torch_warm: bool = True  # also time torch.compile's warm start (a ~10 s child)


QUICK = Settings(warmup=1, rounds=3, min_round_s=0.15, quiet_wait_s=0.1, bw_rounds=3,
                 bw_min_round_s=0.15, models=("mlp",), latency_models=("mlp",),
                 torch_warm=False)
FULL = Settings(warmup=3, rounds=5, min_round_s=1.0, quiet_wait_s=1.0, bw_rounds=5,
                bw_min_round_s=0.5, models=("mnist", "mlp", "gpt"),
                latency_models=("mnist", "mlp", "gpt"))


def settle(v: Variant, warmup: int, max_calls: int = CHILD_MAX_CALLS) -> None:
    """Untimed warm-up steps; a compiled Fluxion step runs until two calls in a row add no
    graph (its first calls may recompile: Python scalars that change are lifted to inputs)."""
    for _ in range(warmup):
        _call(v)
    if v.compiled is not None:
        quiet = 0
        for _ in range(max_calls):
            graphs = v.compiled.stats.graphs
            _call(v)
            quiet = quiet + 1 if v.compiled.stats.graphs == graphs else 0
            if quiet >= 2:
                break


def time_variants(variants: Sequence[Variant], cfg: Settings,
                  gate: QuietGate) -> tuple[list[list[float]], int]:
    """Seconds of every timed step per variant, in rounds whose order rotates, and the
    number of rounds timed while the machine was busy elsewhere."""
    for v in variants:
        settle(v, cfg.warmup)
    reps = []
    for v in variants:
        if v.step is None:
            reps.append(0)
            continue
        try:
            sizing = _timed_steps(v.step, 2)
        except Exception as exc:  # torch.compile's training-mode graph may fail late
            v.step, v.error = None, _error_text(exc)
            reps.append(0)
            continue
        reps.append(max(1, math.ceil(cfg.min_round_s / min(sizing))))
    live = [i for i, v in enumerate(variants) if v.step is not None]
    timed: list[list[float]] = [[] for _ in variants]
    contended = 0
    for r in range(cfg.rounds):
        k = r % len(live)
        for i in live[k:] + live[:k]:
            contended += not gate.wait(cfg.quiet_wait_s)
            quiesce()
            timed[i].extend(_timed_steps(variants[i].step, reps[i]))  # type: ignore[arg-type]
    return timed, contended


def compiled_stats(compiled: Any) -> dict[str, Any]:
    """What ``fluxion.compile`` did for a step: calls, graphs, breaks, recompiles, kernels."""
    st = compiled.stats
    reasons: dict[str, int] = {}
    for b in st.breaks:
        where = os.path.relpath(b.location) if b.location.startswith("/") else b.location
        key = f"{b.reason} (at {where})"
        reasons[key] = reasons.get(key, 0) + 1
    return {"calls": st.calls, "graphs": st.graphs, "cache_hits": st.cache_hits,
            "programs": len(compiled.programs),
            "kernels": sum(len(p.kernels) for p in compiled.programs.values()),
            "breaks": len(st.breaks), "break_reasons": reasons,
            "recompiles": [r.reason for r in st.recompiles]}


@dataclass
class StepResult:
    """Timed steps of the four variants of one model."""

    key: str
    name: str
    steps_s: list[list[float]]  # per variant (VARIANTS order), every timed step
    errors: list[str | None]
    contended_rounds: int
    verification: Verification
    fluxion_compiled: dict[str, Any] = field(default_factory=dict)

    def median(self, i: int) -> float | None:
        return statistics.median(self.steps_s[i]) if self.steps_s[i] else None

    def ratio(self, i: int) -> float | None:
        """Median step of variant ``i`` over PyTorch eager's."""
        a, b = self.median(i), self.median(TH_EAGER)
        return None if a is None or b is None else a / b

    @property
    def met(self) -> bool:
        r = self.ratio(FL_COMPILED)
        return r is not None and r < 1.0


def step_case(spec: ModelSpec, cfg: Settings, gate: QuietGate, fl_dir: str,
              th_dir: str) -> StepResult:
    """Build, verify and time the four variants of one model. ``fl_dir`` and ``th_dir``
    are the kernel caches (those of the latency children when they ran: warm)."""
    fl_config.cache_dir = fl_dir
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = th_dir
    variants = build_variants(spec)
    ver = verify(spec, variants)
    timed, contended = time_variants(variants, cfg, gate)
    return StepResult(spec.key, spec.name, timed, [v.error for v in variants], contended,
                      ver, compiled_stats(variants[FL_COMPILED].compiled))


# --- compile latency: child processes ---------------------------------------------------
def _program_times(progs: Sequence[Any]) -> dict[str, float]:
    """The stage times (passes, fusion, codegen, compile, load, total) summed over programs."""
    out = dict.fromkeys(("passes", "fusion", "codegen", "compile", "load", "total"), 0.0)
    for p in progs:
        for k, v in p.times.items():
            out[k] = out.get(k, 0.0) + v
    return out


def child_fluxion(spec: ModelSpec) -> dict[str, Any]:
    """In a fresh process: compile the training step, call it until it settles; every
    call's time and the programs it built (with their stage times) as a dict."""
    fl, th = spec.models()
    opt, _ = spec.optim(fl, th)
    x, y = spec.batch()
    compiled = fluxion.compile(make_step(fl, opt, spec.loss[0], fluxion.from_numpy(x),
                                         fluxion.from_numpy(y)))
    calls: list[dict[str, Any]] = []
    quiet = 0
    for i in range(CHILD_MAX_CALLS):
        before = set(compiled.programs)
        start = time.perf_counter()
        loss = compiled()
        seconds = time.perf_counter() - start
        new = [p for k, p in compiled.programs.items() if k not in before]
        calls.append({"s": seconds, "programs": len(new),
                      "cache_hits": sum(bool(p.cache_hit) for p in new),
                      "kernels": sum(len(p.kernels) for p in new), **_program_times(new),
                      "loss": float(loss.item())})
        quiet = quiet + 1 if not new else 0
        if quiet >= 2 and i >= 2:
            break
    st = compiled.stats
    return {"calls": calls, "graphs": st.graphs, "breaks": len(st.breaks),
            "recompiles": len(st.recompiles), "cache_dir": fl_config.cache_dir}


def child_torch(spec: ModelSpec) -> dict[str, Any]:
    """In a fresh process: ``torch.compile`` the training step and time its first calls."""
    fl, th = spec.models()
    _, opt = spec.optim(fl, th)
    x, y = spec.batch()
    compiled = torch.compile(make_step(th, opt, spec.loss[1], torch.from_numpy(x),
                                       torch.from_numpy(y)))
    calls = []
    for _ in range(TORCH_CHILD_CALLS):
        start = time.perf_counter()
        loss = compiled()
        calls.append({"s": time.perf_counter() - start, "loss": float(loss.item())})
    return {"calls": calls, "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}


def child_main(what: str, threads: int) -> int:
    """``--child FRAMEWORK:MODEL``: print one line of JSON with the timings (or the error)."""
    torch.set_num_threads(threads)
    framework, key = what.split(":")
    spec = SPECS[key]
    try:
        report = (child_fluxion if framework == "fluxion" else child_torch)(spec)
    except Exception as exc:
        report = {"error": _error_text(exc), "traceback": traceback.format_exc()[-4000:]}
    report["threads"] = {"torch": torch.get_num_threads(),
                         "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    sys.stdout.flush()
    print(json.dumps(report), flush=True)
    return 0


@dataclass
class Latency:
    """One child process: a framework's compiled step, first calls, cold or warm cache."""

    framework: str  # "fluxion" or "torch"
    model: str
    cache: str  # "cold" or "warm"
    calls: list[dict[str, Any]]
    error: str | None
    process_s: float  # the whole child: interpreter, imports, model, calls
    contended: bool
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # not run (--quick leaves out torch.compile's warm start)

    @property
    def first_s(self) -> float | None:
        return self.calls[0]["s"] if self.calls else None

    @property
    def steady_s(self) -> float | None:
        """Median of the calls after the second (compiled code only, by then)."""
        rest = [c["s"] for c in self.calls[2:]]
        return statistics.median(rest) if rest else None

    @property
    def compile_s(self) -> float | None:
        """Fluxion: the stage times of the programs the first call built (its ``times``
        ``total``). PyTorch: first call minus a settled call (an estimate)."""
        if not self.calls:
            return None
        if self.framework == "fluxion":
            return self.calls[0]["total"]
        steady = self.steady_s
        return None if steady is None else max(0.0, self.calls[0]["s"] - steady)

    @property
    def settle(self) -> tuple[int, float] | None:
        """Fluxion: the calls that built programs before it settled, and their stage time."""
        if self.framework != "fluxion" or not self.calls:
            return None
        building = [c for c in self.calls if c["programs"]]
        return len(building), sum(c["total"] for c in building)


def run_child(framework: str, key: str, cache: str, env_dir: tuple[str, str], threads: int,
              gate: QuietGate, cfg: Settings) -> Latency:
    """Run ``--child`` in a new interpreter with ``env_dir`` = (variable, cache directory)."""
    quiet = gate.wait(cfg.quiet_wait_s)
    quiesce()
    env = {**os.environ, env_dir[0]: env_dir[1]}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{framework}:{key}",
           "--threads", str(threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        report = {"error": f"child exited with status {proc.returncode}: "
                           f"{proc.stderr.strip()[-1500:]}"}
    calls = report.pop("calls", [])
    return Latency(framework, key, cache, calls, report.pop("error", None), wall, not quiet,
                   report)


def latency_case(key: str, fl_dir: str, th_dir: str, threads: int, gate: QuietGate,
                 cfg: Settings) -> list[Latency]:
    """Fluxion cold then warm on ``fl_dir``; torch.compile cold then warm on ``th_dir``."""
    out = []
    for framework, var, where in (("fluxion", "FLUXION_CACHE_DIR", fl_dir),
                                  ("torch", "TORCHINDUCTOR_CACHE_DIR", th_dir)):
        if os.listdir(where):
            raise SystemExit(f"cache directory {where} is not empty: not a cold start")
        for cache in ("cold", "warm"):
            if framework == "torch" and cache == "warm" and not cfg.torch_warm:
                out.append(Latency(framework, key, cache, [], None, 0.0, False, skipped=True))
                continue
            print(f"latency: {framework} {key}, {cache} cache ...", file=sys.stderr,
                  flush=True)
            out.append(run_child(framework, key, cache, (var, where), threads, gate, cfg))
    return out


# --- fused elementwise bandwidth ---------------------------------------------------------
@dataclass
class Bandwidth:
    """Per-call seconds of one bandwidth case."""

    name: str
    bytes_moved: int
    calls_s: list[float]
    is_goal: bool = False  # the compiled chain, judged against the copy
    is_baseline: bool = False  # the copy

    @property
    def median(self) -> float:
        return statistics.median(self.calls_s)

    @property
    def gbps(self) -> float:
        return self.bytes_moved / self.median / 1e9


def chain(x: Any, y: Any, z: Any) -> Any:
    """The fused elementwise chain: 3 inputs, 5 ops, 1 output."""
    return ((x * 1.5 + y).relu() * z).exp()


def bandwidth_cases(cfg: Settings, gate: QuietGate) -> tuple[list[Bandwidth], dict[str, Any]]:
    """Time the chain compiled, eager and in PyTorch, and ``np.copyto``, interleaved."""
    n = BW_ELEMENTS
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(n, dtype=np.float32) for _ in range(3)]
    fx, fy, fz = (fluxion.from_numpy(a) for a in xs)
    tx, ty, tz = (torch.from_numpy(a) for a in xs)
    compiled = fluxion.compile(chain)
    got, want = compiled(fx, fy, fz).numpy(), chain(fx, fy, fz).numpy()
    ref = chain(tx, ty, tz).numpy()
    if not (np.allclose(got, want, rtol=1e-5, atol=0) and np.allclose(want, ref, rtol=1e-5)):
        err = np.max(np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1e-30))
        raise SystemExit(f"the compiled chain differs from eager Fluxion (max rel {err:.3g}) "
                         "or eager Fluxion from PyTorch; nothing was timed")
    info = compiled_stats(compiled)
    dst = np.empty_like(xs[0])
    chain_bytes, copy_bytes = 4 * n * FLOAT32_BYTES, 2 * n * FLOAT32_BYTES
    k = info["kernels"]
    cases = [
        (Bandwidth(f"Fluxion compiled ({k} fused kernel{'s' * (k != 1)})", chain_bytes, [],
                   is_goal=True), lambda: compiled(fx, fy, fz)),
        (Bandwidth("Fluxion eager (5 ops)", chain_bytes, []), lambda: chain(fx, fy, fz)),
        (Bandwidth("PyTorch eager (5 ops)", chain_bytes, []), lambda: chain(tx, ty, tz)),
        (Bandwidth("np.copyto into a preallocated array", copy_bytes, [], is_baseline=True),
         lambda: np.copyto(dst, xs[0])),
        (Bandwidth("np.copy (a new array each call)", copy_bytes, []), lambda: xs[0].copy()),
    ]
    fns = [fn for _, fn in cases]
    reps = []
    for fn in fns:
        for _ in range(2):
            fn()
        reps.append(max(1, math.ceil(cfg.bw_min_round_s / min(_timed_steps(fn, 2)))))
    contended = 0
    for r in range(cfg.bw_rounds):
        k0 = r % len(fns)
        for i in list(range(k0, len(fns))) + list(range(k0)):
            contended += not gate.wait(cfg.quiet_wait_s)
            quiesce()
            cases[i][0].calls_s.extend(_timed_steps(fns[i], reps[i]))
    info["contended_rounds"] = contended
    return [b for b, _ in cases], info


# --- reporting --------------------------------------------------------------------------
STEP_HEADER = ("Training step (median ms)", *VARIANTS, "Fl. eager / PT", "Fl. compiled / PT",
               "torch.compile / PT", "Goal", "Met")
STATS_HEADER = ("Compiled Fluxion step", "Calls", "Graphs", "Programs", "Kernels",
                "Breaks / call", "Recompiles", "Loss vs eager (max rel)")
LAT_HEADER = ("Compile latency", "Framework", "Cold: first call", "Cold: compile",
              "Warm: first call", "Warm: compile/load", "Cold < 2 s", "Warm < 0.2 s",
              "Until settled (cold / warm)")
BW_HEADER = ("16M float32: ((x*1.5+y).relu()*z).exp()", "Median", "GB/s", "vs copy", "Goal",
             "Met")


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:.2f}"


def _sec(s: float | None) -> str:
    """Seconds, as ms below one second."""
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1e3:.1f} ms" if s >= 0.01 else f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


def step_rows(results: Sequence[StepResult]) -> list[tuple[str, ...]]:
    """Display strings of the step table; a failed variant shows its error."""
    rows = []
    for r in results:
        tilde = "~" if r.contended_rounds else ""
        cells = [(_ms(r.median(i)) if r.errors[i] is None else f"error: {_short(r.errors[i])}")
                 for i in range(4)]
        ratios = [("—" if (x := r.ratio(i)) is None else f"{x:.2f}{tilde}")
                  for i in (FL_EAGER, FL_COMPILED, TH_COMPILED)]
        rows.append((r.name, *cells, *ratios, "compiled < PT eager", _mark(r.met)))
    return rows


def stats_rows(results: Sequence[StepResult]) -> list[tuple[str, ...]]:
    """Display strings of the compiled-Fluxion table (graphs, breaks, recompiles)."""
    rows = []
    for r in results:
        s = r.fluxion_compiled
        calls = max(1, s["calls"])
        rows.append((r.name, str(s["calls"]), str(s["graphs"]), str(s["programs"]),
                     str(s["kernels"]), f"{s['breaks'] / calls:g}", str(len(s["recompiles"])),
                     f"{r.verification.compiled_max_rel:.2g}"))
    return rows


def latency_rows(lats: Sequence[Latency]) -> list[tuple[str, ...]]:
    """Display strings of the latency table: one row per model and framework."""
    rows = []
    by = {(x.model, x.framework, x.cache): x for x in lats}
    for key in dict.fromkeys(x.model for x in lats):
        for fw in ("fluxion", "torch"):
            cold, warm = by.get((key, fw, "cold")), by.get((key, fw, "warm"))
            if cold is None or warm is None:
                continue
            cells: list[str] = []
            for lat in (cold, warm):
                tilde = "~" if lat.contended else ""
                if lat.skipped:
                    cells += ["skipped (--quick)", "—"]
                    continue
                if lat.error:
                    cells += [f"error: {_short(lat.error)}", "—"]
                    continue
                part = _sec(lat.compile_s)
                if fw == "fluxion":
                    stage = "compile" if lat.cache == "cold" else "load"
                    part += f" ({stage} {_sec(lat.calls[0][stage])})"
                else:
                    part = "≈ " + part
                cells += [_sec(lat.first_s) + tilde, part]
            if fw == "fluxion":
                goals = [_mark(None if lat.error else lat.compile_s < goal)
                         for lat, goal in ((cold, COLD_GOAL_S), (warm, WARM_GOAL_S))]
                settle = " / ".join("—" if lat.error else
                                    f"{lat.settle[0]} calls, {_sec(lat.settle[1])}"
                                    for lat in (cold, warm))
            else:
                goals, settle = ["—", "—"], "—"
            label = "Fluxion" if fw == "fluxion" else "torch.compile"
            rows.append((SPECS[key].name, label, *cells, *goals, settle))
    return rows


def bandwidth_rows(cases: Sequence[Bandwidth]) -> list[tuple[str, ...]]:
    """Display strings of the bandwidth table; the compiled chain is judged vs the copy."""
    copy = next(c for c in cases if c.is_baseline)
    rows = []
    for c in cases:
        share = c.gbps / copy.gbps
        goal = f"≥ {BANDWIDTH_GOAL:.0%}" if c.is_goal else ""
        met = _mark(share >= BANDWIDTH_GOAL) if c.is_goal else ""
        rows.append((c.name, f"{c.median * 1e3:.1f} ms", f"{c.gbps:.2f}", f"{share:.0%}",
                     goal, met))
    return rows


def render(facts: dict[str, Any], results: Sequence[StepResult], lats: Sequence[Latency],
           bw: Sequence[Bandwidth], markdown: bool) -> str:
    """Facts and the four tables, as plain text or Markdown."""
    table = _md_table if markdown else _text_table
    out = [f"- **{k}**: {v}" if markdown else f"{k}: {v}" for k, v in facts.items()]
    if results:
        out += ["", *table(STEP_HEADER, step_rows(results)), ""]
        out += [*table(STATS_HEADER, stats_rows(results))]
    if lats:
        out += ["", *table(LAT_HEADER, latency_rows(lats))]
    if bw:
        out += ["", *table(BW_HEADER, bandwidth_rows(bw))]
    return "\n".join(out)


def notes(results: Sequence[StepResult], lats: Sequence[Latency],
          bw_info: dict[str, Any] | None, others: float | None) -> str:
    """Verification losses, graph breaks, errors in full, goals met and missed, warnings."""
    lines = [f"Verified before timing ({VERIFY_STEPS} steps per variant; compiled Fluxion "
             f"must match eager Fluxion to rel {COMPILED_RTOL:g}, eager Fluxion PyTorch to "
             f"rel {TORCH_RTOL:g}):"]
    for r in results:
        v = r.verification
        fmt = lambda xs: ", ".join("—" if x is None else f"{x:.6f}" for x in xs)
        tc = ("—" if v.torch_compile_max_rel is None
              else f"{v.torch_compile_max_rel:.2g}")
        lines.append(f"  {r.name} ({v.mode} mode): losses Fluxion eager "
                     f"{fmt(v.losses[VARIANTS[0]])}; compiled {fmt(v.losses[VARIANTS[1]])}; "
                     f"max rel diff compiled/eager "
                     f"{v.compiled_max_rel:.2g}, Fluxion/PyTorch {v.torch_max_rel:.2g}, "
                     f"torch.compile/PyTorch {tc}")
    for r in results:
        s = r.fluxion_compiled
        for reason, count in s["break_reasons"].items():
            lines.append(f"  graph break in {r.name}: {reason} — {count}x in {s['calls']} calls")
        if s["recompiles"]:
            lines.append(f"  recompiles in {r.name}: "
                         + "; ".join(_short(x, 110) for x in s["recompiles"][:3])
                         + (f" (+{len(s['recompiles']) - 3} more)"
                            if len(s["recompiles"]) > 3 else ""))
    flat = lambda e: _short(" ".join(e.split()), 300)  # full texts are in --json
    errors = [f"  {r.name}, {VARIANTS[i]}: {flat(e)}" for r in results
              for i, e in enumerate(r.errors) if e]
    errors += [f"  latency {x.framework} {x.model} {x.cache}: {flat(x.error)}" for x in lats
               if x.error]
    if errors:
        lines += ["Errors:", *errors]
    goals = []
    if results:
        met = sum(r.met for r in results)
        goals.append(f"compiled Fluxion faster than PyTorch eager: {met}/{len(results)}")
    fl_lats = [x for x in lats if x.framework == "fluxion" and not x.error]
    for cache, goal in (("cold", COLD_GOAL_S), ("warm", WARM_GOAL_S)):
        these = [x for x in fl_lats if x.cache == cache]
        if these:
            met = sum(x.compile_s is not None and x.compile_s < goal for x in these)
            goals.append(f"Fluxion {cache} compile < {goal:g} s: {met}/{len(these)}")
    if bw_info is not None:
        goals.append(f"fused chain ≥ {BANDWIDTH_GOAL:.0%} of copy bandwidth: "
                     f"{'met' if bw_info['met'] else 'missed'}")
    if goals:
        lines.append("Goals: " + "; ".join(goals))
    shaky = [r.name for r in results if r.contended_rounds]
    shaky += [f"{x.framework} {x.model} {x.cache}" for x in lats if x.contended]
    if bw_info is not None and bw_info.get("contended_rounds"):
        shaky.append("bandwidth")
    if shaky:
        lines.append("~ timed while the machine was busy elsewhere: " + "; ".join(shaky))
    if others is not None and others > BUSY_MACHINE_CORES:
        lines.append(f"WARNING: other processes kept {others:.2f} cores busy while timing; "
                     "these numbers measure a shared machine, re-run when it is idle.")
    return "\n".join(lines)


def write_json(path: str, facts: dict[str, Any], cfg: Settings,
               results: Sequence[StepResult], lats: Sequence[Latency],
               bw: Sequence[Bandwidth], bw_info: dict[str, Any] | None) -> None:
    """Facts, settings, every timed step, every child's report and the bandwidth rounds."""
    payload = {
        "machine": facts, "settings": asdict(cfg),
        "steps": [{**asdict(r), "variants": VARIANTS,
                   "median_s": [r.median(i) for i in range(4)],
                   "ratio_vs_torch_eager": [r.ratio(i) for i in range(4)], "met": r.met}
                  for r in results],
        "latency": [{**asdict(x), "first_s": x.first_s, "compile_s": x.compile_s,
                     "settle": x.settle} for x in lats],
        "bandwidth": [{**asdict(b), "median_s": b.median, "gbps": b.gbps} for b in bw],
        "bandwidth_info": bw_info,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


# --- entry point ------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="MLP only, few short rounds (smoke test, < 90 s)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads for every framework (default 1)")
    p.add_argument("--models", metavar="LIST",
                   help="comma-separated subset of mnist,mlp,gpt (steps and latency)")
    p.add_argument("--skip", metavar="LIST", default="",
                   help="comma-separated parts to leave out: steps,latency,bandwidth")
    p.add_argument("--child", help=argparse.SUPPRESS)  # FRAMEWORK:MODEL, internal
    return p.parse_args(argv)


def extra_facts(threads: int) -> dict[str, Any]:
    """The C compiler and flags of Fluxion's kernels, and inductor's, for the facts."""
    from torch._inductor import config as ind_config

    return {"c_compiler": fl_cache.toolchain(fl_config.cc) or f"{fl_config.cc} (not working)",
            "fluxion_c_flags": " ".join(fl_cache.FLAGS),
            "inductor_cpp_threads": f"{ind_config.cpp.threads} (-1: torch's intra-op threads, "
                                    f"{threads})",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}


def main(argv: Sequence[str] | None = None) -> int:
    """Latency children, step verification and timing, bandwidth; print the tables."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ensure_thread_env(args.threads, argv, script=__file__)
    if args.child:
        return child_main(args.child, args.threads)
    cfg = QUICK if args.quick else FULL
    if args.models:
        chosen = tuple(m.strip() for m in args.models.split(",") if m.strip())
        unknown = [m for m in chosen if m not in SPECS]
        if unknown:
            raise SystemExit(f"unknown models {unknown}; choose from {list(SPECS)}")
        cfg = Settings(**{**asdict(cfg), "models": chosen, "latency_models": chosen})
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    facts = machine_facts(set_threads(args.threads))
    facts.update(extra_facts(args.threads))
    root = tempfile.mkdtemp(prefix="fluxion-bench-compile-")
    dirs = {key: (os.path.join(root, f"fluxion-{key}"), os.path.join(root, f"inductor-{key}"))
            for key in SPECS}
    for a, b in dirs.values():
        os.makedirs(a)
        os.makedirs(b)
    gate = QuietGate()
    results: list[StepResult] = []
    lats: list[Latency] = []
    bw: list[Bandwidth] = []
    bw_info: dict[str, Any] | None = None
    try:
        # children first: then the main process's compiled steps load their caches (warm)
        if "latency" not in skip:
            for key in cfg.latency_models:
                lats += latency_case(key, *dirs[key], args.threads, gate, cfg)
        load = LoadMeter()
        timing_started = time.perf_counter()
        if "steps" not in skip:
            for key in cfg.models:
                print(f"steps: {SPECS[key].name} ...", file=sys.stderr, flush=True)
                results.append(step_case(SPECS[key], cfg, gate, *dirs[key]))
        if "bandwidth" not in skip:
            print("bandwidth ...", file=sys.stderr, flush=True)
            fl_config.cache_dir = os.path.join(root, "fluxion-bandwidth")
            bw, bw_info = bandwidth_cases(cfg, gate)
            goal = next(b for b in bw if b.is_goal)
            copy = next(b for b in bw if b.is_baseline)
            bw_info["met"] = goal.gbps / copy.gbps >= BANDWIDTH_GOAL
        others = load.others_cores()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    facts["timing"] = (f"steps: median of every step in {cfg.rounds} rotating rounds per "
                       f"variant, each ≥ {cfg.min_round_s} s; bandwidth: median call of "
                       f"{cfg.bw_rounds} rounds ≥ {cfg.bw_min_round_s} s; latency: one child "
                       f"process per cell; {time.perf_counter() - timing_started:.0f} s of "
                       f"in-process timing, {time.perf_counter() - started:.0f} s in all")
    facts["cpu_used_by_other_processes"] = (
        "unknown" if others is None else f"{others:.2f} cores on average while timing "
                                         "(latency children excluded)")
    print(render(facts, results, lats, bw, args.markdown))
    print()
    print(notes(results, lats, bw_info, others))
    if args.json:
        write_json(args.json, facts, cfg, results, lats, bw, bw_info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
