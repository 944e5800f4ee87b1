"""Stochastic gradient descent, with optional (Nesterov) momentum and weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from fluxion.autograd.grad_mode import no_grad
from fluxion.optim.optimizer import Optimizer, ParamsT, _check_options, _value
from fluxion.tensor import Tensor

__all__ = ["SGD", "sgd"]


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum), PyTorch's algorithm::

        g = -grad if maximize else grad
        g = g + weight_decay * p                          (if weight_decay != 0)
        b = g on the first step, else momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b           (if momentum != 0)
        p = p - lr * g

    Args:
        params: tensors or parameter-group dicts to optimize.
        lr: learning rate (default: 1e-3).
        momentum: momentum factor (default: 0).
        dampening: dampening for momentum (default: 0).
        weight_decay: L2 penalty (default: 0).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and zero dampening.
        maximize: maximize the objective instead of minimizing it.
        foreach, differentiable, fused: accepted for compatibility with PyTorch;
            ``foreach`` is ignored, the other two are not supported.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import SGD
    >>> w = Parameter(fluxion.tensor([1.0, -2.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     opt.step()
    >>> w.detach()
    tensor([ 0.4600, -0.9200])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        _check_options(foreach, fused=fused, differentiable=differentiable)
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening,
            "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
            "foreach": foreach, "differentiable": differentiable, "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)

    # options an older pickled optimizer may lack
    _group_defaults: ClassVar[dict[str, Any]] = {
        "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
        "fused": False
    }

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the loss)."""
        loss = self._closure_loss(closure)
        self._run_update()
        return loss

    def _update(self, values: list[Any]) -> None:
        # reads no data (a tensor lr aside), so compiled calls may replay it (replay.py)
        with no_grad():
            for group in self.param_groups:
                params: list[Tensor] = []
                grads: list[Tensor] = []
                bufs: list[Tensor | None] = []
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    params.append(p)
                    grads.append(p.grad)
                    if group["momentum"] != 0:
                        bufs.append(self.state[p].get("momentum_buffer"))
                sgd(params, grads, bufs, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"],
                    dampening=group["dampening"], nesterov=group["nesterov"],
                    maximize=group["maximize"])
                if group["momentum"] != 0:
                    for p, buf in zip(params, bufs):
                        self.state[p]["momentum_buffer"] = buf


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    *,
    weight_decay: float,
    momentum: float,
    lr: float | Tensor,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The functional SGD update (call under ``no_grad``); new momentum buffers are
    written back into ``momentum_buffer_list``."""
    lr = _value(lr)
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = grad.detach().clone()
                momentum_buffer_list[i] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)
