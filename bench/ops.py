#!/usr/bin/env python
"""Fluxion vs PyTorch operator micro-benchmarks, side by side in one process.

Both frameworks run in the same process, on the same NumPy-generated inputs (shared
through ``from_numpy``), interleaved round by round, with PyTorch's intra-op thread count
set to the number of threads NumPy's BLAS uses. Every case is checked for agreement
(``np.allclose``) before anything is timed; a mismatch or a crash aborts the run.

Usage::

    python bench/ops.py               # plain-text table
    python bench/ops.py --markdown    # Markdown table for README.md
    python bench/ops.py --quick       # smoke run, well under 20 s
    python bench/ops.py --json out.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

import fluxion
import fluxion.nn.functional as FF

OVERHEAD_GOAL = 1.5  # fluxion/torch time ratio goal for per-op (1-element) overhead
LARGE_GOAL = 1.2  # ... and for every case that works on real amounts of data
FLOAT32_BYTES = 4
BUSY_MACHINE_CORES = 0.25  # others' average CPU use above which the run is flagged

Outputs = Sequence[Any]  # tensors of either framework
Thunk = Callable[[], Outputs]


# --- machine facts and threads -------------------------------------------------------
def _blas_threads_threadpoolctl() -> int | None:
    """NumPy's BLAS thread count according to threadpoolctl, if it is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    mine = [p for p in pools if "numpy" in str(p.get("filepath", ""))] or pools
    return int(mine[0]["num_threads"]) if mine else None


def _openblas_call(name: str, restype: Any = ctypes.c_int) -> Any:
    """Call ``name`` (under any of OpenBLAS's symbol spellings) in NumPy's OpenBLAS."""
    try:
        with open("/proc/self/maps") as f:
            libs = {w for w in f.read().split() if "openblas" in w.lower() and ".so" in w}
    except OSError:
        return None
    symbols = (f"openblas_{name}", f"openblas_{name}64_", f"scipy_openblas_{name}64_",
               f"scipy_openblas_{name}")
    for path in sorted(libs, key=lambda p: "numpy" not in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in symbols:
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = restype
                return fn()
    return None


def _blas_threads_openblas() -> int | None:
    """NumPy's OpenBLAS thread count via ctypes, for when threadpoolctl is missing."""
    n = _openblas_call("get_num_threads")
    return None if n is None else int(n)


# set on some machines to keep old OpenBLAS builds off newer CPUs' kernels; they make a
# current NumPy's products up to 1.8x slower than it is, so the benchmarks run without them
# (the machine facts print the core OpenBLAS then runs)
OPENBLAS_FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def without_forced_core(env: dict[str, str]) -> dict[str, str]:
    """``env`` less the variables that force OpenBLAS onto older kernels."""
    return {k: v for k, v in env.items() if k not in OPENBLAS_FORCED}


def blas_core() -> str | None:
    """The CPU kernels NumPy's OpenBLAS runs (``OPENBLAS_CORETYPE`` can force older ones)."""
    name = _openblas_call("get_corename", ctypes.c_char_p)
    return name.decode() if name else None


def align_threads() -> dict[str, Any]:
    """Set torch's intra-op threads to NumPy's BLAS thread count; say how it was found."""
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure BLAS is loaded before probing it
    source = "threadpoolctl"
    blas = _blas_threads_threadpoolctl()
    if blas is None:
        source, blas = "openblas ctypes probe", _blas_threads_openblas()
    if blas is None:
        source = "unknown (torch left at its default)"
    else:
        torch.set_num_threads(blas)
    return {"blas_threads": blas, "blas_threads_source": source,
            "torch_threads": torch.get_num_threads()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user .. steal
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """How many cores other processes kept busy while we were timing."""

    def __init__(self) -> None:
        self.busy, self.own = _busy_cpu_seconds(), sum(os.times()[:2])
        self.wall = time.perf_counter()

    def others_cores(self) -> float | None:
        busy = _busy_cpu_seconds()
        if busy is None or self.busy is None:
            return None
        own = sum(os.times()[:2]) - self.own
        return max(0.0, (busy - self.busy - own) / (time.perf_counter() - self.wall))


def machine_facts(threads: dict[str, Any]) -> dict[str, Any]:
    """What the numbers depend on: hardware, library versions, thread counts."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": _blas_name(),
        "numpy_blas_core": blas_core(),
        "torch": torch.__version__,
        "fluxion": getattr(fluxion, "__version__", "?"),
        **threads,
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


# --- cases ---------------------------------------------------------------------------
@dataclass
class Case:
    """One benchmark: the same computation written for each framework."""

    name: str
    group: str  # "overhead" or "large"
    fluxion_fn: Thunk
    torch_fn: Thunk
    bytes_moved: float | None = None  # ideal memory traffic per call, for GB/s
    flops: float | None = None  # floating-point operations per call, for GFLOP/s
    rtol: float = 1e-5
    atol: float = 1e-6

    @property
    def goal(self) -> float:
        return OVERHEAD_GOAL if self.group == "overhead" else LARGE_GOAL


def _pair(arr: np.ndarray, requires_grad: bool = False) -> tuple[Any, torch.Tensor]:
    """The same array as a Fluxion and a PyTorch tensor (sharing its memory)."""
    f, t = fluxion.from_numpy(arr), torch.from_numpy(arr)
    if requires_grad:
        f.requires_grad_(True)
        t.requires_grad_(True)
    return f, t


def _randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def overhead_cases(rng: np.random.Generator) -> list[Case]:
    """``a + b`` on 1-element tensors: dispatch cost, with and without graph recording."""
    cases = []
    for requires_grad in (False, True):
        (fa, ta), (fb, tb) = (_pair(_randn(rng, 1), requires_grad) for _ in range(2))
        label = "requires_grad" if requires_grad else "no grad"
        cases.append(Case(f"a + b, 1 elem ({label})", "overhead",
                          lambda fa=fa, fb=fb: (fa + fb,), lambda ta=ta, tb=tb: (ta + tb,)))
    return cases


def _elementwise_trio(n: int, fl: Sequence[Any], th: Sequence[torch.Tensor]) -> list[Case]:
    """``a + b``, ``a * b + c`` and ``exp(a)`` on ``n`` elements held in ``fl`` / ``th``."""
    (fa, fb, fc), (ta, tb, tc) = fl, th
    tag = f"{n / 2**20:g}M" if n >= 2**20 else str(n)
    nbytes = n * FLOAT32_BYTES
    return [
        Case(f"a + b, {tag}", "large", lambda: (fa + fb,), lambda: (ta + tb,),
             bytes_moved=3 * nbytes),
        Case(f"a * b + c, {tag}", "large", lambda: (fa * fb + fc,), lambda: (ta * tb + tc,),
             bytes_moved=4 * nbytes),
        Case(f"exp(a), {tag}", "large", lambda: (fa.exp(),), lambda: (ta.exp(),),
             bytes_moved=2 * nbytes, atol=0.0),
    ]


def elementwise_cases(rng: np.random.Generator, sizes: Sequence[int]) -> list[Case]:
    """Memory-bound elementwise ops; GB/s counts each input read and the output written once."""
    cases = []
    for n in sizes:
        pairs = [_pair(_randn(rng, n)) for _ in range(3)]
        cases += _elementwise_trio(n, [f for f, _ in pairs], [t for _, t in pairs])
    return cases


def matmul_cases(rng: np.random.Generator, sizes: Sequence[int]) -> list[Case]:
    """Square float32 matrix products, 2·n³ flops each."""
    cases = []
    for n in sizes:
        (fa, ta), (fb, tb) = _pair(_randn(rng, n, n)), _pair(_randn(rng, n, n))
        cases.append(Case(f"matmul {n}x{n}", "large",
                          lambda fa=fa, fb=fb: (fa @ fb,), lambda ta=ta, tb=tb: (ta @ tb,),
                          flops=2.0 * n**3, rtol=1e-4, atol=1e-3))
    return cases


def conv_cases(rng: np.random.Generator) -> list[Case]:
    """MNIST first layer, 64x1x28x28 * 10x1x5x5 + bias; backward of sum(out)."""
    x, w, b = _randn(rng, 64, 1, 28, 28), _randn(rng, 10, 1, 5, 5), _randn(rng, 10)
    fwd_flops = 2.0 * 64 * 10 * 1 * 5 * 5 * 24 * 24
    (fx, tx), (fw, tw), (fb, tb) = _pair(x, True), _pair(w, True), _pair(b, True)
    (fx0, tx0), (fw0, tw0), (fb0, tb0) = _pair(x), _pair(w), _pair(b)

    def fl_train() -> Outputs:
        fx.grad = fw.grad = fb.grad = None
        out = FF.conv2d(fx, fw, fb)
        out.sum().backward()
        return out, fx.grad, fw.grad, fb.grad

    def th_train() -> Outputs:
        tx.grad = tw.grad = tb.grad = None
        out = torch.nn.functional.conv2d(tx, tw, tb)
        out.sum().backward()
        return out, tx.grad, tw.grad, tb.grad

    tol = {"rtol": 1e-4, "atol": 1e-4}
    return [
        Case("conv2d 64x1x28x28 * 10x1x5x5, fwd", "large",
             lambda: (FF.conv2d(fx0, fw0, fb0),),
             lambda: (torch.nn.functional.conv2d(tx0, tw0, tb0),), flops=fwd_flops, **tol),
        Case("conv2d 64x1x28x28 * 10x1x5x5, fwd+bwd", "large", fl_train, th_train,
             flops=3 * fwd_flops, **tol),
    ]


def softmax_cases(rng: np.random.Generator) -> list[Case]:
    """softmax over the last dim of 128x512; backward of a fixed random upstream gradient."""
    x, g = _randn(rng, 128, 512), _randn(rng, 128, 512)
    (fx0, tx0), (fx, tx), (fg, tg) = _pair(x), _pair(x, True), _pair(g)

    def fl_train() -> Outputs:
        fx.grad = None
        out = FF.softmax(fx, dim=-1)
        out.backward(fg)
        return out, fx.grad

    def th_train() -> Outputs:
        tx.grad = None
        out = torch.softmax(tx, dim=-1)
        out.backward(tg)
        return out, tx.grad

    return [
        Case("softmax 128x512, fwd", "large",
             lambda: (FF.softmax(fx0, dim=-1),), lambda: (torch.softmax(tx0, dim=-1),),
             rtol=1e-5, atol=1e-7),
        Case("softmax 128x512, fwd+bwd", "large", fl_train, th_train, rtol=1e-4, atol=1e-6),
    ]


def build_cases() -> list[Case]:
    """Every benchmark case, inputs drawn from one seeded NumPy generator."""
    rng = np.random.default_rng(0)
    return (overhead_cases(rng)
            + elementwise_cases(rng, [2**20, 16 * 2**20])
            + matmul_cases(rng, [256, 512, 1024])
            + conv_cases(rng)
            + softmax_cases(rng))


# --- verification --------------------------------------------------------------------
def _as_numpy(t: Any) -> np.ndarray:
    if t is None:
        raise AssertionError("missing output (a gradient that was never computed?)")
    return t.detach().numpy()  # same spelling in both frameworks


def _mismatch(case: Case, fl: Outputs, th: Outputs) -> str | None:
    """Why the two frameworks' outputs disagree, or None if they agree."""
    if len(fl) != len(th):
        return f"{len(fl)} Fluxion outputs vs {len(th)} PyTorch outputs"
    for i, (f, t) in enumerate(zip(fl, th)):
        a, b = _as_numpy(f), _as_numpy(t)
        if a.shape != b.shape or a.dtype != b.dtype:
            return (f"output {i}: Fluxion {a.dtype}{list(a.shape)} vs "
                    f"PyTorch {b.dtype}{list(b.shape)}")
        if not np.allclose(a, b, rtol=case.rtol, atol=case.atol):
            err = np.abs(a.astype(np.float64) - b)
            where = tuple(int(i) for i in np.unravel_index(int(np.nanargmax(err)), err.shape))
            return (f"output {i}: max |diff| {np.nanmax(err):.3g} at {where} "
                    f"(rtol={case.rtol}, atol={case.atol}); nan in Fluxion: "
                    f"{bool(np.isnan(a).any())}")
    return None


def verify(cases: Sequence[Case]) -> list[str]:
    """Run every case once in each framework; return a report per failing case."""
    failures = []
    for case in cases:
        try:
            problem = _mismatch(case, case.fluxion_fn(), case.torch_fn())
        except Exception:
            problem = "raised:\n" + traceback.format_exc()
        if problem:
            failures.append(f"[{case.name}] {problem}")
    return failures


# --- timing --------------------------------------------------------------------------
@dataclass
class Settings:
    """How hard to measure."""

    min_time_s: float  # each timed round lasts at least this long
    rounds: int  # rounds per framework; the median is reported
    warmup: int  # untimed calls before calibrating
    retries: int  # extra attempts for a case whose rounds disagree
    noisy: float  # median/min across rounds above this counts as noisy
    budget_s: float  # timing budget; waits and retries only while it allows
    quiet_wait_s: float  # longest wait for a quiet machine before each round


QUICK = Settings(min_time_s=0.02, rounds=3, warmup=0, retries=0, noisy=1.3, budget_s=12.0,
                 quiet_wait_s=0.1)
FULL = Settings(min_time_s=0.2, rounds=5, warmup=3, retries=2, noisy=1.3, budget_s=75.0,
                quiet_wait_s=1.0)


def quiesce(max_wait: float = 0.3, tick: float = 0.01) -> None:
    """Wait until this process's worker threads stop burning CPU.

    After a call, OpenBLAS's worker threads spin for ~0.1 s and PyTorch's OpenMP threads
    for a few ms; on a small machine that spinning steals cores from whichever framework
    is timed next. Waiting it out keeps the interleaved rounds independent.
    """
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        cpu = time.process_time()
        time.sleep(tick)
        if time.process_time() - cpu < 0.2 * tick:
            return


class QuietGate:
    """Holds timing back while the machine is busy with something else.

    On a shared (virtual) machine a core can be taken away for seconds at a time, which
    slows any multi-threaded op by 10-50x. Before each round a ~1 ms multi-threaded probe
    is timed against the fastest probe seen so far; a slow probe means waiting.
    """

    def __init__(self, tolerance: float = 1.5) -> None:
        x, w = torch.randn(64, 1, 28, 28), torch.randn(10, 1, 5, 5)
        self._probe = lambda: torch.nn.functional.conv2d(x, w)
        self.tolerance = tolerance
        self.baseline = min(self._time_probe() for _ in range(20))

    def _time_probe(self) -> float:
        self._probe()  # wake the thread pool: its first call after a pause is slow anyway
        start = time.perf_counter()
        for _ in range(4):
            self._probe()
        return time.perf_counter() - start

    def wait(self, max_wait: float) -> bool:
        """Return once the probe runs at full speed (True) or ``max_wait`` has passed."""
        deadline = time.perf_counter() + max_wait
        while True:
            t = self._time_probe()
            self.baseline = min(self.baseline, t)
            if t <= self.tolerance * self.baseline:
                return True
            if time.perf_counter() > deadline:
                return False
            time.sleep(0.05)


@dataclass
class Timing:
    """Per-call seconds of each round, for one framework."""

    rounds: list[float]
    contended: int = 0  # rounds timed although the machine never went quiet

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def noise(self) -> float:
        """Median over fastest round: 1.0 is perfectly steady."""
        return self.median / min(self.rounds)


class Timer:
    """Interleaved, calibrated, noise-aware timing of benchmark cases.

    Waiting for a quiet machine and retrying unsteady cases are extras paid from the time
    budget: an extra is taken only if every case still to come, at the average cost of a
    first attempt so far, would fit in what is left.
    """

    def __init__(self, cfg: Settings, n_cases: int) -> None:
        self.cfg = cfg
        self.gate = QuietGate()
        self.end = time.perf_counter() + cfg.budget_s
        self.cases_left = n_cases
        self.first_attempts: list[float] = []

    def spare(self) -> float:
        """Seconds of budget not needed for the first attempts still to come."""
        per_case = statistics.mean(self.first_attempts) if self.first_attempts else 0.0
        return self.end - time.perf_counter() - per_case * self.cases_left

    def run(self, fn: Thunk, reps: int, gated: bool = True) -> tuple[float, bool]:
        """Seconds per call of ``fn`` over ``reps`` back-to-back calls; was it quiet?

        Waits for a quiet machine first (``gated``), as long as the budget allows.
        """
        wait = min(self.cfg.quiet_wait_s, max(0.0, self.spare()))
        if gated:
            quiesce()  # our own spinning threads would make the probe look contended
        quiet = self.gate.wait(wait) if gated else True
        quiesce()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps, quiet

    def calibrate(self, fn: Thunk) -> int:
        """Repetitions needed for one round of ``fn`` to last at least ``min_time_s``."""
        reps = 1
        while True:
            per_call, _ = self.run(fn, reps, gated=reps == 1)
            if per_call * reps >= self.cfg.min_time_s / 8:
                return max(1, math.ceil(self.cfg.min_time_s / per_call))
            reps *= 4

    def time_pair(self, case: Case) -> tuple[Timing, Timing]:
        """Rounds of (Fluxion, PyTorch), interleaved, the order alternating per round."""
        fns = (case.fluxion_fn, case.torch_fn)
        for fn in fns:
            for _ in range(self.cfg.warmup):
                fn()
        reps = [self.calibrate(fn) for fn in fns]
        timings = (Timing([]), Timing([]))
        for r in range(self.cfg.rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                per_call, quiet = self.run(fns[i], reps[i])
                timings[i].rounds.append(per_call)
                timings[i].contended += not quiet
        return timings

    @staticmethod
    def _badness(pair: tuple[Timing, Timing]) -> tuple[int, float]:
        return sum(t.contended for t in pair), max(t.noise for t in pair)

    def measure(self, case: Case) -> tuple[Timing, Timing, int]:
        """Time a case, retrying while it is noisy or contended; keep the best attempt."""
        self.cases_left -= 1
        start = time.perf_counter()
        best = self.time_pair(case)
        self.first_attempts.append(time.perf_counter() - start)
        attempts = 1
        while attempts <= self.cfg.retries:
            contended, noise = self._badness(best)
            steady = not contended and noise <= self.cfg.noisy
            if steady or self.spare() < self.first_attempts[-1]:  # good, or unaffordable
                break
            pair = self.time_pair(case)
            attempts += 1
            if self._badness(pair) < self._badness(best):
                best = pair
        return best[0], best[1], attempts


# --- results and reporting -----------------------------------------------------------
@dataclass
class Result:
    """Timings of one case and what they mean."""

    name: str
    group: str
    fluxion_s: float
    torch_s: float
    goal: float
    noise: float  # worst median/min over both frameworks' rounds
    contended_rounds: int  # rounds timed while the machine was busy elsewhere
    attempts: int
    fluxion_rounds_s: list[float]
    torch_rounds_s: list[float]
    fluxion_rate: float | None = None
    torch_rate: float | None = None
    rate_unit: str = ""

    @property
    def ratio(self) -> float:
        return self.fluxion_s / self.torch_s

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal


def to_result(case: Case, fl: Timing, th: Timing, attempts: int) -> Result:
    """Summarise the rounds; attach GB/s or GFLOP/s where the case defines its work."""
    res = Result(case.name, case.group, fl.median, th.median, case.goal,
                 noise=max(fl.noise, th.noise), contended_rounds=fl.contended + th.contended,
                 attempts=attempts,
                 fluxion_rounds_s=fl.rounds, torch_rounds_s=th.rounds)
    work, unit = (case.bytes_moved, "GB/s") if case.bytes_moved else (case.flops, "GFLOP/s")
    if work:
        res.fluxion_rate, res.torch_rate = work / res.fluxion_s / 1e9, work / res.torch_s / 1e9
        res.rate_unit = unit
    return res


def fmt_time(seconds: float) -> str:
    """A duration with a readable unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


HEADER = ("Operation", "Fluxion", "PyTorch", "Ratio", "Goal", "Met",
          "Fluxion rate", "PyTorch rate")


def _unsteady(r: Result, noisy: float) -> bool:
    return r.noise > noisy or r.contended_rounds > 0


def table_rows(results: Sequence[Result], noisy: float) -> list[tuple[str, ...]]:
    """One row of display strings per result; a noisy ratio gets a trailing ``~``."""
    rows = []
    for r in results:
        rate = (lambda v: f"{v:.3g} {r.rate_unit}" if v is not None else "—")
        ratio = f"{r.ratio:.2f}" + ("~" if _unsteady(r, noisy) else "")
        rows.append((r.name, fmt_time(r.fluxion_s), fmt_time(r.torch_s), ratio,
                     f"≤ {r.goal:g}", "✓" if r.met else "✗",
                     rate(r.fluxion_rate), rate(r.torch_rate)))
    return rows


def render_text(facts: dict[str, Any], results: Sequence[Result], noisy: float) -> str:
    """Facts as ``key: value`` lines, then an aligned plain-text table."""
    rows = [HEADER, *table_rows(results, noisy)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    line = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths)))
    out = [f"{k}: {v}" for k, v in facts.items()]
    out += ["", line(HEADER), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows[1:]]
    return "\n".join(out)


def render_markdown(facts: dict[str, Any], results: Sequence[Result], noisy: float) -> str:
    """Facts as a bullet list, then a GitHub-flavoured Markdown table."""
    out = [f"- **{k}**: {v}" for k, v in facts.items()]
    out += ["", "| " + " | ".join(HEADER) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in table_rows(results, noisy)]
    return "\n".join(out)


def summary(results: Sequence[Result], noisy: float) -> str:
    """How many goals were met, which were not, and which timings were unsteady."""
    missed = [r.name for r in results if not r.met]
    lines = [f"{len(results) - len(missed)}/{len(results)} cases meet their goal"
             + (f"; missed: {'; '.join(missed)}" if missed else "")]
    shaky = [f"{r.name} (spread {r.noise:.2f}, {r.contended_rounds} contended rounds)"
             for r in results if _unsteady(r, noisy)]
    if shaky:
        lines.append(f"~ unsteady after retries (median/fastest round > {noisy:g}, or timed "
                     "while the machine was busy): " + "; ".join(shaky))
    return "\n".join(lines)


def write_json(path: str, facts: dict[str, Any], results: Sequence[Result],
               settings: Settings) -> None:
    """Facts, settings and every result (with ratio and verdict) as JSON."""
    payload = {"machine": facts, "settings": asdict(settings),
               "results": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in results]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --- entry point ---------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few, short rounds (smoke test)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return p.parse_args(argv)


def harness_overhead(timer: Timer, reps: int = 200_000) -> float:
    """Seconds per call that the timing loop itself adds (a thunk returning a tuple)."""
    x = object()
    return min(timer.run(lambda: (x,), reps, gated=False)[0] for _ in range(3))


def time_all(cases: Sequence[Case], timer: Timer) -> list[Result]:
    """Measure every case in order, with progress on stderr."""
    results = []
    for case in cases:
        print(f"timing {case.name} ...", file=sys.stderr, flush=True)
        results.append(to_result(case, *timer.measure(case)))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Verify every case, time every case, print the table. Exit status 1 on mismatch."""
    args = parse_args(argv)
    if any(v in os.environ for v in OPENBLAS_FORCED):  # read when NumPy loads: start anew
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__),
                                   *(sys.argv[1:] if argv is None else argv)],
                  without_forced_core(dict(os.environ)))
    cfg = QUICK if args.quick else FULL
    facts = machine_facts(align_threads())
    cases = build_cases()
    failures = verify(cases)
    if failures:
        print("Fluxion disagrees with PyTorch or crashed; nothing was timed:", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        return 1
    started, load = time.perf_counter(), LoadMeter()
    timer = Timer(cfg, len(cases))
    results = time_all(cases, timer)
    facts["timing"] = (f"median of {cfg.rounds} interleaved rounds per framework, each "
                       f"≥ {cfg.min_time_s} s; {time.perf_counter() - started:.0f} s in all")
    others = load.others_cores()
    facts["cpu_used_by_other_processes"] = (
        "unknown" if others is None else f"{others:.2f} cores on average while timing")
    overhead_ns = harness_overhead(timer) * 1e9
    facts["harness_overhead_per_call"] = f"{overhead_ns:.0f} ns (included in both)"
    render = render_markdown if args.markdown else render_text
    print(render(facts, results, cfg.noisy))
    print()
    print(summary(results, cfg.noisy))
    if others is not None and others > BUSY_MACHINE_CORES:
        print(f"WARNING: other processes kept {others:.2f} cores busy while timing; "
              "these numbers measure a shared machine, re-run when it is idle.")
    if args.json:
        write_json(args.json, facts, results, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
