"""Gradient clipping, as ``torch.nn.utils``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fluxion import functional as F
from fluxion.autograd.grad_mode import no_grad
from fluxion.creation import tensor
from fluxion.tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    ps = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in ps if p.grad is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> Tensor:
    """Scale gradients in place so their joint norm is at most ``max_norm``; returns the
    norm before clipping.

    >>> import fluxion
    >>> p = fluxion.nn.Parameter(fluxion.zeros(2)); p.grad = fluxion.tensor([3.0, 4.0])
    >>> fluxion.nn.utils.clip_grad_norm_([p], 1.0), p.grad
    (tensor(5.), tensor([0.6000, 0.8000]))
    """
    grads = _grads(parameters)
    if not grads:
        return tensor(0.0)
    with no_grad():
        norms = [g.norm(norm_type) for g in grads]
        if norm_type == math.inf:
            total = F.stack(norms).max()
        else:
            total = F.stack(norms).norm(norm_type)
        if error_if_nonfinite and not bool(total.isfinite()):
            raise RuntimeError(f"The total norm of order {float(norm_type)} for gradients from "
                               "`parameters` is non-finite, so it cannot be clipped. To disable "
                               "this error and scale the gradients by the non-finite norm "
                               "anyway, set `error_if_nonfinite=False`")
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] in place.

    >>> import fluxion
    >>> p = fluxion.nn.Parameter(fluxion.zeros(2)); p.grad = fluxion.tensor([3.0, -4.0])
    >>> fluxion.nn.utils.clip_grad_value_([p], 1.0); p.grad
    tensor([ 1., -1.])
    """
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)
