"""RMSprop."""

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

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(Optimizer):
    """RMSprop, PyTorch's single-tensor algorithm::

        g = -grad if maximize else grad
        g = g + weight_decay * p                         (if weight_decay != 0)
        v = alpha * v + (1 - alpha) * g * g
        centered: m = lerp(m, g, 1 - alpha); avg = sqrt(v - m * m) + eps
        else:     avg = sqrt(v) + eps
        momentum > 0: b = momentum * b + g / avg; p = p - lr * b
        else:         p = p - lr * g / avg

    State per parameter: ``step``, ``square_avg``, and ``momentum_buffer`` (momentum > 0)
    and ``grad_avg`` (centered).

    Args:
        params: tensors or parameter-group dicts to optimize.
        lr: learning rate (default: 1e-2).
        alpha: smoothing constant (default: 0.99).
        eps: added to the denominator (default: 1e-8).
        weight_decay: L2 penalty (default: 0).
        momentum: momentum factor (default: 0).
        centered: normalize by an estimate of the gradient's variance (default: False).
        maximize: maximize the objective instead of minimizing it.
        capturable, foreach, differentiable: accepted for compatibility with PyTorch;
            ``foreach`` is ignored, the others are not supported.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import RMSprop
    >>> w = Parameter(fluxion.tensor([1.0, -2.0]))
    >>> opt = RMSprop([w], lr=0.01, centered=True)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     opt.step()
    >>> w.detach()
    tensor([ 0.7781, -1.7733])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not momentum >= 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not alpha >= 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        _check_options(foreach, capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
            "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    # options an older pickled optimizer may lack
    _group_defaults: ClassVar[dict[str, Any]] = {
        "momentum": 0, "centered": False, "foreach": None, "maximize": False,
        "differentiable": False, "capturable": False
    }

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the loss)."""
        loss = self._closure_loss(closure)
        self._run_update()
        return loss

    def _update(self, values: list[Any]) -> None:
        with no_grad():
            for group in self.param_groups:
                params, grads, square_avgs, grad_avgs, bufs, steps = [], [], [], [], [], []
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    params.append(p)
                    grads.append(p.grad)
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = tensor(0.0, dtype=_get_scalar_dtype())
                        state["square_avg"] = zeros_like(p)
                        if group["momentum"] > 0:
                            state["momentum_buffer"] = zeros_like(p)
                        if group["centered"]:
                            state["grad_avg"] = zeros_like(p)
                    square_avgs.append(state["square_avg"])
                    steps.append(state["step"])
                    if group["momentum"] > 0:
                        bufs.append(state["momentum_buffer"])
                    if group["centered"]:
                        grad_avgs.append(state["grad_avg"])
                rmsprop(params, grads, square_avgs, grad_avgs, bufs, steps, lr=group["lr"],
                        alpha=group["alpha"], eps=group["eps"],
                        weight_decay=group["weight_decay"], momentum=group["momentum"],
                        centered=group["centered"], maximize=group["maximize"])


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffer_list: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """The functional RMSprop update (call under ``no_grad``)."""
    lr = _value(lr)
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        square_avg = square_avgs[i]
        state_steps[i].add_(1)
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf = momentum_buffer_list[i]
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)
