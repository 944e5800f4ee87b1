"""Devices and the array namespace (``xp``) each one computes with.

Kernels in the op table are written against ``xp`` so that the NumPy backend (CPU) and
the CuPy backend (GPU, to come) share them, as Chainer did.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


class device:  # noqa: N801 - PyTorch's name
    """Where a tensor lives: ``fluxion.device('cpu')``. Only the CPU exists for now.

    >>> import fluxion
    >>> fluxion.device("cpu")
    device(type='cpu')
    """

    __slots__ = ("type", "index")

    def __init__(self, type: str | device, index: int | None = None) -> None:
        if isinstance(type, device):
            type, index = type.type, type.index
        name, _, idx = str(type).partition(":")
        if idx:
            index = int(idx)
        if name not in ("cpu", "cuda"):
            raise RuntimeError(
                f"Expected one of cpu, cuda device type at start of device string: {type}"
            )
        self.type = name
        self.index = index

    def __repr__(self) -> str:
        idx = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{idx})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")


def resolve(dev: str | device | None) -> device:
    """Check a ``device=`` argument; CUDA fails with a clear error until its backend lands."""
    if dev is None:
        return CPU
    d = dev if isinstance(dev, device) else device(dev)
    if d.type != "cpu":
        raise RuntimeError(
            f"device {d} is not available: Fluxion's CUDA backend is not built yet "
            "(fluxion.cuda.is_available() is False); use device='cpu'"
        )
    return CPU


def xp_for(dev: device) -> ModuleType:
    """The array namespace that computes on ``dev``."""
    return np
