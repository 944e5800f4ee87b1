"""AdamW: Adam with decoupled weight decay."""

from __future__ import annotations

from typing import Any

from fluxion.optim.adam import Adam
from fluxion.optim.optimizer import ParamsT
from fluxion.tensor import Tensor

__all__ = ["AdamW"]


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): each step first shrinks the
    weights, ``p = p * (1 - lr * weight_decay)``, then applies Adam's update; the decay
    never enters the running averages. Same arguments as :class:`Adam`, but
    ``weight_decay`` defaults to 1e-2.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import AdamW
    >>> w = Parameter(fluxion.tensor([1.0, -2.0]))
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     opt.step()
    >>> w.detach()
    tensor([ 0.6751, -1.6444])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
