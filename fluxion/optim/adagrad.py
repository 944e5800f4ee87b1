"""Adagrad."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from fluxion.autograd.grad_mode import no_grad
from fluxion.creation import full_like, tensor
from fluxion.optim.optimizer import (
    Optimizer,
    ParamsT,
    _check_options,
    _get_scalar_dtype,
    _to_scalar,
    _value,
)
from fluxion.tensor import Tensor

__all__ = ["Adagrad", "adagrad"]


class Adagrad(Optimizer):
    """Adagrad, PyTorch's single-tensor algorithm. With ``t`` the step count::

        g = -grad if maximize else grad
        g = g + weight_decay * p                         (if weight_decay != 0)
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)

    The state (``step`` and ``sum``, filled with ``initial_accumulator_value``) is created
    for every parameter when the optimizer is built; as in PyTorch, that uses the
    constructor's ``initial_accumulator_value``, not a group's own.

    Args:
        params: tensors or parameter-group dicts to optimize.
        lr: learning rate (default: 1e-2).
        lr_decay: learning-rate decay (default: 0).
        weight_decay: L2 penalty (default: 0).
        initial_accumulator_value: starting value of the sums of squares (default: 0).
        eps: added to the denominator (default: 1e-10).
        maximize: maximize the objective instead of minimizing it.
        foreach, differentiable, fused: accepted for compatibility with PyTorch;
            ``foreach`` is ignored, the others are not supported.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import Adagrad
    >>> w = Parameter(fluxion.tensor([1.0, -2.0]))
    >>> opt = Adagrad([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     opt.step()
    >>> w.detach()
    tensor([ 0.7805, -1.7758])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not lr_decay >= 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not initial_accumulator_value >= 0.0:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        _check_options(foreach, fused=fused, differentiable=differentiable)
        defaults = {
            "lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
            "maximize": maximize, "differentiable": differentiable, "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, initial_accumulator_value)

    def _init_state(self, p: Tensor, initial_accumulator_value: float) -> None:
        state = self.state[p]
        state["step"] = tensor(0.0, dtype=_get_scalar_dtype())
        state["sum"] = full_like(p, initial_accumulator_value)

    # options an older pickled optimizer may lack
    _group_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None, "maximize": False, "differentiable": False, "fused": None
    }

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the loss)."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and len(self.state[p]) == 0:  # a group added later
                    self._init_state(p, self.defaults["initial_accumulator_value"])
        self._run_update(self._step_numbers())
        return loss

    def _step_numbers(self) -> list[tuple[float, np.dtype]]:
        """Per parameter with a gradient: minus its decayed learning rate, from its step
        count, read as a number here (the update, which increments it, reads no data)."""
        numbers = []
        for group in self.param_groups:
            lr = _to_scalar(group["lr"])
            for p in group["params"]:
                if p.grad is not None:
                    step = self.state[p]["step"].item() + 1
                    numbers.append((-_value(lr / (1 + (step - 1) * group["lr_decay"])),
                                    p._data.dtype))
        return numbers

    def _update(self, values: list[Any]) -> None:
        numbers = iter(values)
        with no_grad():
            for group in self.param_groups:
                params, grads, sums, steps = [], [], [], []
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    params.append(p)
                    grads.append(p.grad)
                    sums.append(self.state[p]["sum"])
                    steps.append(self.state[p]["step"])
                adagrad(params, grads, sums, steps, [next(numbers) for _ in params],
                        weight_decay=group["weight_decay"], eps=group["eps"],
                        maximize=group["maximize"])


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    neg_clrs: list[Any],
    *,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """The functional Adagrad update (call under ``no_grad``). ``neg_clrs``: per parameter,
    minus its learning rate decayed to this step, ``lr / (1 + (step - 1) * lr_decay)``
    (Python numbers, or 0-d tensors of the parameter's dtype); ``state_steps`` are
    incremented.

    >>> import fluxion
    >>> w, total, step = fluxion.tensor([1.0, -2.0]), fluxion.zeros(2), fluxion.tensor(0.0)
    >>> with fluxion.no_grad():
    ...     adagrad([w], [fluxion.tensor([0.5, 0.5])], [total], [step], [-0.1],
    ...             weight_decay=0.0, eps=1e-10, maximize=False)
    >>> w, step
    (tensor([ 0.9000, -2.1000]), tensor(1.))
    """
    for param, grad, state_sum, step_t, neg_clr in zip(params, grads, state_sums,
                                                        state_steps, neg_clrs):
        step_t.add_(1)
        grad = -grad if maximize else grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(eps)
        param.addcdiv_(grad, std, value=neg_clr)
