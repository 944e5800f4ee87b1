"""Measured choices between equivalent library calls, made once per shape and layout and
kept on disk beside the kernels (``config.cache_dir``), so a warm start and a second
process make the same choice without measuring.

The one choice so far is a matrix product's orientation: ``a @ b`` or ``(bᵀ @ aᵀ)ᵀ``.
BLAS computes both from the same operands (a transpose is a flag, not a copy) and sums in
the same order, but runs different inner kernels: a linear layer's ``x @ Wᵀ`` at batch
128 takes 10 % longer than ``W @ xᵀ`` under OpenBLAS on this project's machine, while at
batch 2048 it is the other way round. No rule of thumb covers both, so each shape is
timed on the machine that runs it."""

from __future__ import annotations

import hashlib
import math
import os
import time

import numpy as np

from fluxion.compiler.config import config

# products smaller than this (multiply-adds) are not worth a measurement
MIN_WORK = 1 << 21
# the other orientation must win by this much: it costs its readers a transposed read
MARGIN = 0.95

_known: dict[str, bool] = {}


def _key(a: tuple, b: tuple, dtype: np.dtype) -> str:
    from fluxion.compiler import cache

    # what decides which BLAS kernels run: threads, and OpenBLAS's core (forced or found)
    threads = [os.environ.get(v, "") for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                               "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")]
    text = repr((a, b, dtype.str, threads, os.cpu_count(), np.__version__,
                 cache.cpu_signature()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _operand(shape: tuple[int, ...], estrides: tuple[int, ...], dtype: np.dtype,
             rng: np.random.Generator) -> np.ndarray:
    """Random values of this shape laid out with these element strides (a transposed
    view, say): what BLAS will be handed at run time."""
    order = sorted(range(len(shape)), key=lambda d: -estrides[d])  # outermost first
    base = rng.standard_normal([shape[d] for d in order]).astype(dtype)
    return base.transpose(np.argsort(order))


def _best_of(fn, rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def product_flipped(a: tuple[tuple[int, ...], tuple[int, ...]],
                    b: tuple[tuple[int, ...], tuple[int, ...]], dtype: np.dtype) -> bool:
    """Whether ``(bᵀ @ aᵀ)ᵀ`` is faster than ``a @ b`` for 2-D operands given as (shape,
    element strides): measured here once, then remembered in memory and on disk.

    >>> import numpy as np
    >>> product_flipped(((4, 8), (8, 1)), ((8, 2), (1, 8)), np.dtype("float32"))  # tiny
    False
    """
    (m, k), (_, n) = a[0], b[0]
    if m * k * n < MIN_WORK:
        return False
    key = _key(a, b, dtype)
    got = _known.get(key)
    if got is not None:
        return got
    path = os.path.join(config.cache_dir, f"tune_{key}.txt")
    try:
        with open(path) as f:
            got = f.read().strip() == "flip"
    except OSError:
        got = _measure(a, b, dtype)
        try:
            from fluxion.compiler import cache

            os.makedirs(config.cache_dir, exist_ok=True)
            cache._atomic_write(path, "flip" if got else "keep")
        except OSError:  # a read-only cache: measure again next process
            pass
    _known[key] = got
    return got


def _measure(a: tuple, b: tuple, dtype: np.dtype) -> bool:
    rng = np.random.default_rng(0)
    x, y = _operand(*a, dtype, rng), _operand(*b, dtype, rng)
    out = np.empty((x.shape[0], y.shape[1]), dtype)
    out_t = np.empty((y.shape[1], x.shape[0]), dtype)
    plain = lambda: np.matmul(x, y, out=out)  # noqa: E731
    flipped = lambda: np.matmul(y.T, x.T, out=out_t)  # noqa: E731
    for fn in (plain, flipped):  # first calls: page faults, BLAS's buffers
        fn()
        fn()
    t_plain = t_flipped = math.inf
    for _ in range(3):  # alternated, so a slow moment of the machine hits both
        t_plain = min(t_plain, _best_of(plain, 3))
        t_flipped = min(t_flipped, _best_of(flipped, 3))
    return t_flipped < MARGIN * t_plain
