"""The ``fluxion`` command: ``fluxion train linreg`` for now (MNIST and a char-level GPT
come with the training work)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence


def train_linreg(steps: int, lr: float, seed: int) -> float:
    """Fit y = Xw + b on synthetic data with autograd and gradient descent; returns the
    final loss."""
    import fluxion

    fluxion.manual_seed(seed)
    true_w = fluxion.tensor([[2.0], [-3.4], [0.5]])
    x = fluxion.randn(512, 3)
    y = x @ true_w + 4.2 + 0.01 * fluxion.randn(512, 1)
    w = fluxion.zeros(3, 1, requires_grad=True)
    b = fluxion.zeros(1, requires_grad=True)
    start = time.perf_counter()
    for step in range(steps):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with fluxion.no_grad():
            for p in (w, b):
                p -= lr * p.grad
                p.grad = None
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"step {step:5d}/{steps}  loss {loss.item():.6f}")
    took = time.perf_counter() - start
    print(f"learned w = {[round(v, 3) for v in w.flatten().tolist()]} (true [2.0, -3.4, 0.5]),"
          f" b = {b.item():.3f} (true 4.2)")
    print(f"{steps} steps in {took:.2f}s ({steps / took:.0f} steps/s)")
    return loss.item()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fluxion`` command.

    >>> main(["train", "linreg", "--steps", "2"])  # doctest: +ELLIPSIS
    step ...
    0
    """
    parser = argparse.ArgumentParser(prog="fluxion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an example model")
    train.add_argument("model", choices=["linreg"], help="which example model")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "train" and args.model == "linreg":
        train_linreg(args.steps, args.lr, args.seed)
    return 0
