"""Adadelta."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from fluxion.autograd.grad_mode import no_grad
from fluxion.creation import tensor, zeros_like
from fluxion.optim.optimizer import (
    Optimizer,
    ParamsT,
    _check_options,
    _get_scalar_dtype,
    _value,
)
from fluxion.tensor import Tensor

__all__ = ["Adadelta", "adadelta"]


class Adadelta(Optimizer):
    """Adadelta, PyTorch's single-tensor algorithm::

        g = -grad if maximize else grad
        g = g + weight_decay * p                         (if weight_decay != 0)
        v = rho * v + (1 - rho) * g * g
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d
        p = p - lr * d

    State per parameter: ``step``, ``square_avg`` (v) and ``acc_delta`` (u).

    Args:
        params: tensors or parameter-group dicts to optimize.
        lr: coefficient that scales delta before it is applied (default: 1.0).
        rho: coefficient of the running averages (default: 0.9).
        eps: added inside the square roots (default: 1e-6).
        weight_decay: L2 penalty (default: 0).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable, differentiable: accepted for compatibility with PyTorch;
            ``foreach`` is ignored, the others are not supported.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import Adadelta
    >>> w = Parameter(fluxion.tensor([1.0, -2.0]))
    >>> opt = Adadelta([w])
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     opt.step()
    >>> w.detach()
    tensor([ 0.9903, -1.9903])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        _check_options(foreach, capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
            "maximize": maximize, "capturable": capturable, "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    # options an older pickled optimizer may lack
    _group_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False,
        "capturable": False
    }

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the loss)."""
        loss = self._closure_loss(closure)
        self._run_update()
        return loss

    def _update(self, values: list[Any]) -> None:
        with no_grad():
            for group in self.param_groups:
                params, grads, square_avgs, acc_deltas, steps = [], [], [], [], []
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    params.append(p)
                    grads.append(p.grad)
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = tensor(0.0, dtype=_get_scalar_dtype())
                        state["square_avg"] = zeros_like(p)
                        state["acc_delta"] = zeros_like(p)
                    square_avgs.append(state["square_avg"])
                    acc_deltas.append(state["acc_delta"])
                    steps.append(state["step"])
                adadelta(params, grads, square_avgs, acc_deltas, steps, lr=group["lr"],
                         rho=group["rho"], eps=group["eps"],
                         weight_decay=group["weight_decay"], maximize=group["maximize"])


def adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The functional Adadelta update (call under ``no_grad``)."""
    lr = _value(lr)
    for param, grad, square_avg, acc_delta, step in zip(params, grads, square_avgs,
                                                        acc_deltas, state_steps):
        step.add_(1)
        grad = -grad if maximize else grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(delta, alpha=-lr)
