"""Dropout layers (active only in training mode)."""

from __future__ import annotations

from fluxion.nn import functional as F
from fluxion.nn.module import Module
from fluxion.tensor import Tensor


class Dropout(Module):
    """Zero elements with probability ``p`` in training; identity in eval.

    >>> import fluxion
    >>> fluxion.nn.Dropout(0.5).eval()(fluxion.ones(3))
    tensor([1., 1., 1.])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Zero whole channels with probability ``p`` in training.

    >>> import fluxion
    >>> fluxion.nn.Dropout2d(0.5).eval()(fluxion.ones(1, 2, 2, 2)).shape
    fluxion.Size([1, 2, 2, 2])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, self.inplace)
