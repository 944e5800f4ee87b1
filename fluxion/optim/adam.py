"""Adam (and, with ``decoupled_weight_decay=True``, AdamW's update)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from fluxion.autograd.grad_mode import no_grad
from fluxion.creation import tensor, zeros_like
from fluxion.functional import maximum
from fluxion.optim.optimizer import (
    Optimizer,
    ParamsT,
    _check_options,
    _get_scalar_dtype,
    _to_scalar,
    _value,
)
from fluxion.tensor import Tensor

__all__ = ["Adam", "adam"]


class Adam(Optimizer):
    """Adam, PyTorch's single-tensor algorithm. With ``t`` the step count::

        g = -grad if maximize else grad
        p = p * (1 - lr * weight_decay)      (decoupled_weight_decay, i.e. AdamW)
        g = g + weight_decay * p             (otherwise, if weight_decay != 0)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                (amsgrad; then v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    State per parameter: ``step`` (a scalar tensor), ``exp_avg``, ``exp_avg_sq`` and, with
    ``amsgrad``, ``max_exp_avg_sq``.

    Args:
        params: tensors or parameter-group dicts to optimize.
        lr: learning rate (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its square
            (default: (0.9, 0.999)).
        eps: added to the denominator (default: 1e-8).
        weight_decay: L2 penalty, or decoupled decay (default: 0).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximize the objective instead of minimizing it.
        decoupled_weight_decay: decay the weights directly, as AdamW does.
        foreach, capturable, differentiable, fused: accepted for compatibility with
            PyTorch; ``foreach`` is ignored, the others are not supported.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import Adam
    >>> w = Parameter(fluxion.tensor([1.0, -2.0]))
    >>> opt = Adam([w], lr=0.1)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     (w ** 2).sum().backward()
    ...     opt.step()
    >>> w.detach()
    tensor([ 0.7016, -1.7006])
    >>> opt.state[w]["step"]
    tensor(3.)
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (all(isinstance(b, float) for b in betas[:2])
                or all(isinstance(b, Tensor) for b in betas[:2])):
            raise ValueError("betas must be either both floats or both Tensors")
        _check_options(foreach, fused=fused, capturable=capturable,
                       differentiable=differentiable)
        defaults = {
            "lr": lr, "betas": tuple(_to_scalar(b) for b in betas), "eps": eps,
            "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize,
            "foreach": foreach, "capturable": capturable, "differentiable": differentiable,
            "fused": fused, "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    # options an older pickled optimizer may lack
    _group_defaults: ClassVar[dict[str, Any]] = {
        "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
        "differentiable": False, "decoupled_weight_decay": False, "fused": None
    }

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the loss)."""
        loss = self._closure_loss(closure)
        self._run_update(self._step_numbers())
        return loss

    def _step_numbers(self) -> list[tuple[float, np.dtype]]:
        """Per parameter with a gradient: minus its step size (lr over the first bias
        correction) and the square root of the second bias correction, from its step
        count after this step, read as a number here (the update, which increments it,
        reads no data)."""
        numbers = []
        for group in self.param_groups:
            beta1, beta2 = _value(group["betas"][0]), _value(group["betas"][1])
            lr = _to_scalar(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                step_t = self.state[p].get("step")
                step = 1 if step_t is None else step_t.item() + 1
                dtype = p._data.dtype
                numbers += [(-_value(lr / (1 - beta1**step)), dtype),
                            ((1 - beta2**step) ** 0.5, dtype)]
        return numbers

    def _update(self, values: list[Any]) -> None:
        numbers = iter(values)
        with no_grad():
            for group in self.param_groups:
                params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], [], [], []
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    params.append(p)
                    grads.append(p.grad)
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = tensor(0.0, dtype=_get_scalar_dtype())
                        state["exp_avg"] = zeros_like(p)
                        state["exp_avg_sq"] = zeros_like(p)
                        if group["amsgrad"]:
                            state["max_exp_avg_sq"] = zeros_like(p)
                    exp_avgs.append(state["exp_avg"])
                    exp_avg_sqs.append(state["exp_avg_sq"])
                    if group["amsgrad"]:
                        max_sqs.append(state["max_exp_avg_sq"])
                    steps.append(state["step"])
                beta1, beta2 = group["betas"]
                adam(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
                     [(next(numbers), next(numbers)) for _ in params],
                     amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
                     weight_decay=group["weight_decay"], eps=group["eps"],
                     maximize=group["maximize"],
                     decoupled_weight_decay=group["decoupled_weight_decay"])


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    corrections: list[tuple[Any, Any]],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool = False,
) -> None:
    """The functional Adam/AdamW update (call under ``no_grad``). ``corrections``: per
    parameter, minus its step size (``lr / (1 - beta1**step)``) and
    ``(1 - beta2**step) ** 0.5`` for the step count after this step (Python numbers, or
    0-d tensors of the parameter's dtype); ``state_steps`` are incremented.

    >>> import fluxion
    >>> w, step = fluxion.tensor([1.0, -2.0]), fluxion.tensor(0.0)
    >>> m, v = fluxion.zeros(2), fluxion.zeros(2)
    >>> with fluxion.no_grad():  # the first step: both corrections for step 1
    ...     adam([w], [fluxion.tensor([0.5, 0.5])], [m], [v], [], [step],
    ...          [(-0.1 / (1 - 0.9), (1 - 0.999) ** 0.5)], amsgrad=False, beta1=0.9,
    ...          beta2=0.999, lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
    >>> w, step
    (tensor([ 0.9000, -2.1000]), tensor(1.))
    """
    # a tensor lr stays a tensor: the weight decay's factor computed from it rounds in its
    # dtype, as in PyTorch (so do the step sizes, in Adam._step_numbers); tensor betas are
    # used as Python numbers
    lr = _to_scalar(lr)
    beta1, beta2 = _value(beta1), _value(beta2)
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        neg_step_size, bias_correction2_sqrt = corrections[i]
        state_steps[i].add_(1)
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(_value(1 - lr * weight_decay))
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if amsgrad:
            max_exp_avg_sqs[i].copy_(maximum(max_exp_avg_sqs[i], exp_avg_sq))
            denom = (max_exp_avg_sqs[i].sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=neg_step_size)
