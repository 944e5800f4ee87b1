"""The framework RNG: ``manual_seed`` makes runs reproduce. Random creation functions.

Fluxion draws from NumPy's PCG64, so a seed reproduces Fluxion's runs, not PyTorch's
numbers (tests that compare with PyTorch copy the initial values across)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion._dtype import dtype as DType
from fluxion.backends import resolve
from fluxion.creation import _dt, _finish, _size
from fluxion.tensor import Tensor


class Generator:
    """A seeded random-number generator, as ``torch.Generator``.

    >>> import fluxion
    >>> g = fluxion.Generator().manual_seed(0)
    >>> fluxion.rand(2, generator=g).shape
    fluxion.Size([2])
    """

    def __init__(self, device: Any = "cpu") -> None:
        resolve(device)
        self._seed = 67280421310721  # PyTorch's default seed
        self.rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        """Reseed; returns the generator."""
        self._seed = int(seed)
        self.rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def seed(self) -> int:
        """Reseed from the OS entropy pool; returns the new seed."""
        s = int(np.random.SeedSequence().entropy % (2**63))
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        """The seed last set."""
        return self._seed

    def get_state(self) -> Tensor:
        """The generator state as a uint8 tensor (JSON bytes; never pickle)."""
        state = {"seed": self._seed, "bit_generator": self.rng.bit_generator.state}
        raw = json.dumps(state).encode()
        return Tensor._make(np.frombuffer(raw, dtype=np.uint8).copy())

    def set_state(self, new_state: Tensor) -> Generator:
        """Restore a state from ``get_state``."""
        state = json.loads(bytes(np.asarray(new_state._data, dtype=np.uint8)).decode())
        self._seed = state["seed"]
        self.rng.bit_generator.state = state["bit_generator"]
        return self


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator so runs reproduce.

    >>> import fluxion
    >>> _ = fluxion.manual_seed(0); a = fluxion.rand(3)
    >>> _ = fluxion.manual_seed(0); bool((a == fluxion.rand(3)).all())
    True
    """
    return default_generator.manual_seed(seed)


def seed() -> int:
    """Seed the default generator from OS entropy."""
    return default_generator.seed()


def initial_seed() -> int:
    """The default generator's seed."""
    return default_generator.initial_seed()


def get_rng_state() -> Tensor:
    """The default generator's state (a uint8 tensor)."""
    return default_generator.get_state()


def set_rng_state(new_state: Tensor) -> None:
    """Restore the default generator's state."""
    default_generator.set_state(new_state)


def _rng(generator: Generator | None) -> np.random.Generator:
    return (generator or default_generator).rng


def rand(*size: Any, generator: Generator | None = None, dtype: DType | None = None,
         device: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1).

    >>> import fluxion
    >>> bool(((fluxion.rand(100) >= 0) & (fluxion.rand(100) < 1)).all())
    True
    """
    resolve(device)
    d = _dt(dtype)
    if d.kind != "f":
        raise RuntimeError(f"rand(): dtype must be floating, got {dtype}")
    arr = _rng(generator).random(_size(size), dtype=np.float64).astype(d)
    return _finish(arr, requires_grad)


def randn(*size: Any, generator: Generator | None = None, dtype: DType | None = None,
          device: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples.

    >>> import fluxion
    >>> fluxion.randn(2, 3).shape
    fluxion.Size([2, 3])
    """
    resolve(device)
    arr = _rng(generator).standard_normal(_size(size)).astype(_dt(dtype))
    return _finish(arr, requires_grad)


def randint(low: int, high: int | None = None, size: Any = None, *,
            generator: Generator | None = None, dtype: DType | None = None,
            device: Any = None, requires_grad: bool = False) -> Tensor:
    """Integers uniform in [low, high); ``randint(high, size)`` as in PyTorch.

    >>> import fluxion
    >>> fluxion.randint(0, 10, (4,)).dtype
    fluxion.int64
    """
    resolve(device)
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    if high is None or size is None:
        raise TypeError("randint() needs high and size: randint(low=0, high, size)")
    if high <= low:
        raise RuntimeError(f"randint(): expected low < high, got low={low}, high={high}")
    d = (dtype or _dtype.int64).np
    arr = _rng(generator).integers(low, high, _size((size,))).astype(d)
    return _finish(arr, requires_grad)


def randperm(n: int, *, generator: Generator | None = None, dtype: DType | None = None,
             device: Any = None, requires_grad: bool = False) -> Tensor:
    """A random permutation of 0..n-1.

    >>> import fluxion
    >>> sorted(fluxion.randperm(4).tolist())
    [0, 1, 2, 3]
    """
    resolve(device)
    arr = _rng(generator).permutation(n).astype((dtype or _dtype.int64).np)
    return _finish(arr, requires_grad)


def rand_like(input: Tensor, *, dtype: DType | None = None, **kw: Any) -> Tensor:
    """``rand`` with the shape (and dtype) of ``input``."""
    return rand(input.shape, dtype=dtype or input.dtype, **kw)


def randn_like(input: Tensor, *, dtype: DType | None = None, **kw: Any) -> Tensor:
    """``randn`` with the shape (and dtype) of ``input``."""
    return randn(input.shape, dtype=dtype or input.dtype, **kw)


def randint_like(input: Tensor, low: int, high: int | None = None,
                 **kw: Any) -> Tensor:
    """``randint`` with the shape of ``input``."""
    if high is None:
        low, high = 0, low
    return randint(low, high, input.shape, dtype=kw.pop("dtype", input.dtype), **kw)


def normal(mean: Any, std: Any = 1.0, size: Any = None, *,
           generator: Generator | None = None, dtype: DType | None = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    """Normal samples; ``mean``/``std`` may be tensors (broadcast) or numbers with ``size``.

    >>> import fluxion
    >>> fluxion.normal(fluxion.zeros(3), 1.0).shape
    fluxion.Size([3])
    """
    m = mean._data if isinstance(mean, Tensor) else mean
    s = std._data if isinstance(std, Tensor) else std
    if size is None:
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
    else:
        shape = _size((size,))
    if np.any(np.asarray(s) < 0):
        raise RuntimeError("normal expects std >= 0.0")
    ref = mean if isinstance(mean, Tensor) else std if isinstance(std, Tensor) else None
    d = dtype.np if dtype else (ref._data.dtype if ref is not None else _dt(None))
    arr = (m + s * _rng(generator).standard_normal(shape)).astype(d)
    return _finish(arr, requires_grad)


def bernoulli(input: Tensor, p: float | None = None, *,
              generator: Generator | None = None) -> Tensor:
    """Draws 1 with probability ``input`` (or ``p``), else 0.

    >>> import fluxion
    >>> fluxion.bernoulli(fluxion.ones(3))
    tensor([1., 1., 1.])
    """
    prob = input._data if p is None else np.full(input._data.shape, p)
    if np.any((prob < 0) | (prob > 1)):
        raise RuntimeError("bernoulli: all probabilities must be in [0, 1]")
    draw = _rng(generator).random(input._data.shape) < prob
    return Tensor._make(draw.astype(input._data.dtype))


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *,
                generator: Generator | None = None) -> Tensor:
    """Sample indices from rows of (unnormalised) weights.

    >>> import fluxion
    >>> fluxion.multinomial(fluxion.tensor([0.0, 1.0]), 2, replacement=True)
    tensor([1, 1])
    """
    w = np.asarray(input._data, dtype=np.float64)
    if w.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got {w.ndim}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise RuntimeError("multinomial: probability tensor contains either inf, nan or "
                           "element < 0")
    rows = w.reshape(-1, w.shape[-1])
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError(
            f"multinomial: cannot sample n_sample ({num_samples}) > prob_dist.size(-1) "
            f"({rows.shape[1]}) samples without replacement"
        )
    rng = _rng(generator)
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for i, r in enumerate(rows):
        total = r.sum()
        if total <= 0:
            raise RuntimeError("multinomial: invalid multinomial distribution (sum of "
                               "probabilities <= 0)")
        out[i] = rng.choice(r.size, size=num_samples, replace=replacement, p=r / total)
    return Tensor._make(out.reshape((*w.shape[:-1], num_samples)))
