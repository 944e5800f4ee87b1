"""Flatten parameters into one vector and back."""

from __future__ import annotations

from collections.abc import Iterable

from fluxion import functional as F
from fluxion.autograd.grad_mode import no_grad
from fluxion.tensor import Tensor


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """Concatenate flattened parameters into one 1-D tensor.

    >>> import fluxion
    >>> net = fluxion.nn.Linear(3, 2)
    >>> fluxion.nn.utils.parameters_to_vector(net.parameters()).shape
    fluxion.Size([8])
    """
    return F.cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of ``vec`` into the parameters.

    >>> import fluxion
    >>> net = fluxion.nn.Linear(3, 2)
    >>> fluxion.nn.utils.vector_to_parameters(fluxion.zeros(8), net.parameters())
    >>> float(net.weight.abs().sum())
    0.0
    """
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected fluxion.Tensor, but got: {type(vec).__name__}")
    start = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(vec[start:start + n].view(p.shape))
            start += n
