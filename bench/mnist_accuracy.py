#!/usr/bin/env python
"""MNIST test accuracy after training: Fluxion vs PyTorch, same recipe, same batches.

The recipe of ``fluxion train mnist``: the classic MNIST network, SGD(lr=0.01,
momentum=0.5), batch 64, images normalised as (x - 0.1307) / 0.3081, 10 epochs, on the
4,000/1,000 train/test split of ``fluxion.datasets.MNIST5k``. PyTorch trains the same
network written with ``torch.nn`` (``TorchMNISTNet`` from ``bench/train.py``), starting from
Fluxion's initial weights, on exactly the same batches: each epoch's order is a NumPy
permutation from one seeded generator, and both frameworks get the same arrays. Only the
dropout masks differ (each framework draws its own). Before training, both networks'
test loss must agree (dropout off), or the script exits with status 1. Both run with
``--threads`` (default 1) BLAS/OpenMP/torch threads, as ``bench/train.py`` does.

Usage::

    python bench/mnist_accuracy.py              # 10 epochs (~1-2 min)
    python bench/mnist_accuracy.py --epochs 3
    python bench/mnist_accuracy.py --quick      # 2 epochs
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as TF
from train import TorchMNISTNet, copy_weights, ensure_thread_env

import fluxion
import fluxion.nn.functional as FF
from fluxion.datasets import MNIST5k
from fluxion.train.models import MNISTNet

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
BATCH, TEST_BATCH, LR, MOMENTUM = 64, 1000, 0.01, 0.5
GOAL_POINTS = 1.0  # |accuracy difference| goal, in percentage points
RECIPE_EPOCHS = 10

Arrays = tuple[np.ndarray, np.ndarray]


def load_split(train: bool) -> Arrays:
    """One MNIST5k split as normalised float32 N x 1 x 28 x 28 images and int64 labels."""
    ds = MNIST5k(train=train)
    x = ds.data.numpy().astype(np.float32)[:, None] / np.float32(255.0)
    x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return x, ds.targets.numpy().astype(np.int64)


def batches(data: Arrays, size: int, order: np.ndarray | None = None) -> Iterator[Arrays]:
    """Consecutive batches of ``data`` in ``order`` (default: as stored); the last may be
    short, as with ``DataLoader(drop_last=False)``."""
    x, y = data
    order = np.arange(len(y)) if order is None else order
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        yield np.ascontiguousarray(x[idx]), y[idx]


@dataclass
class Trainee:
    """One framework's network, optimizer and bookkeeping."""

    name: str
    model: Any
    optimizer: Any
    tensor: Callable[[np.ndarray], Any]  # the framework's from_numpy
    nll_loss: Callable[..., Any]
    no_grad: Callable[[], Any]
    seconds: float = 0.0  # time spent training
    history: list[dict[str, float]] = field(default_factory=list)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step on a batch; its loss."""
        start = time.perf_counter()
        self.optimizer.zero_grad()
        loss = self.nll_loss(self.model(self.tensor(x)), self.tensor(y))
        loss.backward()
        self.optimizer.step()
        self.seconds += time.perf_counter() - start
        return float(loss.item())

    def evaluate(self, data: Arrays) -> tuple[float, float]:
        """(mean loss, accuracy) on ``data``, in eval mode without gradients."""
        self.model.eval()
        loss_sum, correct = 0.0, 0
        with self.no_grad():
            for x, y in batches(data, TEST_BATCH):
                out = self.model(self.tensor(x))
                loss_sum += float(self.nll_loss(out, self.tensor(y)).item()) * len(y)
                correct += int((out.argmax(1).numpy() == y).sum())
        self.model.train()
        return loss_sum / len(data[1]), correct / len(data[1])


def make_trainees(seed: int) -> tuple[Trainee, Trainee]:
    """Fluxion's ``MNISTNet`` (seeded as ``fluxion train mnist`` seeds it) and its PyTorch
    twin with the same initial weights; each with SGD(0.01, momentum 0.5)."""
    fluxion.manual_seed(seed)
    torch.manual_seed(seed)
    fl, th = MNISTNet(), TorchMNISTNet()
    copy_weights(fl, th)
    return (
        Trainee("Fluxion", fl, fluxion.optim.SGD(fl.parameters(), lr=LR, momentum=MOMENTUM),
                fluxion.from_numpy, FF.nll_loss, fluxion.no_grad),
        Trainee("PyTorch", th, torch.optim.SGD(th.parameters(), lr=LR, momentum=MOMENTUM),
                torch.from_numpy, TF.nll_loss, torch.no_grad),
    )


def check_same_start(trainees: Sequence[Trainee], test: Arrays) -> None:
    """Exit with status 1 unless both untrained networks give the same test loss."""
    (fl_loss, fl_acc), (th_loss, th_acc) = (t.evaluate(test) for t in trainees)
    if not math.isclose(fl_loss, th_loss, rel_tol=1e-5) or fl_acc != th_acc:
        print(f"untrained networks disagree: Fluxion loss {fl_loss:.7g} acc {fl_acc:.4f}, "
              f"PyTorch loss {th_loss:.7g} acc {th_acc:.4f}", file=sys.stderr)
        raise SystemExit(1)
    print(f"before training (dropout off): test loss {fl_loss:.6f} (Fluxion) vs "
          f"{th_loss:.6f} (PyTorch), accuracy {100 * fl_acc:.1f}% in both")


def run_epoch(trainees: Sequence[Trainee], train: Arrays, test: Arrays,
              rng: np.random.Generator, epoch: int) -> None:
    """One epoch over the same shuffled batches for both; evaluate; print a line."""
    order = rng.permutation(len(train[1]))
    sums = [0.0, 0.0]
    for x, y in batches(train, BATCH, order):
        for i, t in enumerate(trainees):
            sums[i] += t.train_step(x, y) * len(y)
    parts = [f"epoch {epoch:2d}"]
    for t, s in zip(trainees, sums):
        loss, acc = t.evaluate(test)
        t.history.append({"train_loss": s / len(order), "test_loss": loss, "test_acc": acc})
        parts.append(f"{t.name}: train loss {s / len(order):.4f}, test loss {loss:.4f}, "
                     f"test acc {100 * acc:.2f}%")
    print(" | ".join(parts), flush=True)


def report(trainees: Sequence[Trainee], n_test: int, epochs: int) -> None:
    """Final accuracies, their difference and the verdict."""
    fl, th = (t.history[-1]["test_acc"] for t in trainees)
    diff = 100 * (fl - th)
    met = abs(diff) <= GOAL_POINTS
    print()
    for t in trainees:
        print(f"{t.name:8s} final test accuracy {100 * t.history[-1]['test_acc']:.2f}% "
              f"({n_test} images; {t.seconds:.1f} s training)")
    note = "" if epochs >= RECIPE_EPOCHS else f" (the goal is for {RECIPE_EPOCHS} epochs)"
    print(f"difference (Fluxion - PyTorch): {diff:+.2f} points; goal |difference| "
          f"<= {GOAL_POINTS:g} point: {'✓' if met else '✗'}{note}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--quick", action="store_true", help="2 epochs (smoke test)")
    p.add_argument("--seed", type=int, default=1, help="weights, dropout and batch order")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads for both frameworks (default 1)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train both networks side by side; exit status 1 if they start apart."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ensure_thread_env(args.threads, argv, __file__)
    torch.set_num_threads(args.threads)
    epochs = 2 if args.quick else args.epochs
    train, test = load_split(True), load_split(False)
    print(f"MNIST5k: {len(train[1])} training and {len(test[1])} test images; batch {BATCH}, "
          f"SGD(lr={LR}, momentum={MOMENTUM}), {epochs} epochs, seed {args.seed}; "
          f"torch {torch.__version__} (threads: {torch.get_num_threads()}), "
          f"fluxion {fluxion.__version__}")
    trainees = make_trainees(args.seed)
    check_same_start(trainees, test)
    rng = np.random.default_rng(args.seed)
    for epoch in range(1, epochs + 1):
        run_epoch(trainees, train, test, rng, epoch)
    report(trainees, len(test[1]), epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
