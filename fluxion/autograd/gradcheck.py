"""Finite-difference checks of gradients (first and second order), as in PyTorch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fluxion.autograd.engine import grad
from fluxion.tensor import Tensor


def _outputs(fn: Callable, inputs: Sequence[Any]) -> list[Tensor]:
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, Tensor) and o._data.dtype.kind == "f"]


def _numerical(fn: Callable, inputs: list[Any], i: int, eps: float) -> list[np.ndarray]:
    """d outputs / d inputs[i] by central differences: one (out.size, in.size) per output."""
    x = inputs[i]
    flat = x._data.reshape(-1)  # a view: perturb in place
    cols: list[list[np.ndarray]] = []
    for k in range(flat.size):
        orig = flat[k]
        # grad mode stays on: fn may itself take gradients (gradgradcheck)
        flat[k] = orig + eps
        plus = [o._data.astype(np.float64).ravel().copy() for o in _outputs(fn, inputs)]
        flat[k] = orig - eps
        minus = [o._data.astype(np.float64).ravel().copy() for o in _outputs(fn, inputs)]
        flat[k] = orig
        cols.append([(p - m) / (2 * eps) for p, m in zip(plus, minus)])
    if not cols:  # an input with no elements: empty Jacobians
        return [np.zeros((o._data.size, 0)) for o in _outputs(fn, inputs)]
    return [np.stack([c[j] for c in cols], axis=1) for j in range(len(cols[0]))]


def _analytical(fn: Callable, inputs: list[Any], i: int) -> list[np.ndarray]:
    outs = _outputs(fn, inputs)
    x = inputs[i]
    jacs = []
    for o in outs:
        rows = []
        for k in range(o._data.size):
            seed = np.zeros(o._data.size, dtype=o._data.dtype)
            seed[k] = 1
            if not o.requires_grad:
                rows.append(np.zeros(x._data.size))
                continue
            (g,) = grad(o, x, Tensor._make(seed.reshape(o._data.shape)), retain_graph=True,
                        allow_unused=True)
            rows.append(np.zeros(x._data.size) if g is None else g._data.astype(np.float64).ravel())
        jacs.append(np.stack(rows) if rows else np.zeros((0, x._data.size)))
    return jacs


def gradcheck(
    func: Callable, inputs: Any, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
    raise_exception: bool = True, **_: Any,
) -> bool:
    """Compare autograd's gradients of ``func`` with central finite differences, for every
    input that requires grad (use float64 inputs).

    >>> import fluxion
    >>> x = fluxion.randn(3, dtype=fluxion.float64, requires_grad=True)
    >>> fluxion.autograd.gradcheck(lambda t: (t.sin() * t).sum(), (x,))
    True
    """
    inputs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        if x._data.dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {x.dtype}; use float64 for a meaningful "
                             "check")
        num = _numerical(func, inputs, i, eps)
        ana = _analytical(func, inputs, i)
        for j, (a, n) in enumerate(zip(ana, num)):
            if not np.allclose(a, n, rtol=rtol, atol=atol):
                if raise_exception:
                    bad = np.unravel_index(np.argmax(np.abs(a - n)), a.shape)
                    raise RuntimeError(
                        f"Jacobian mismatch for output {j} with respect to input {i}: "
                        f"analytical {a[bad]:.6g} vs numerical {n[bad]:.6g} at {tuple(bad)}\n"
                        f"analytical:\n{a}\nnumerical:\n{n}"
                    )
                return False
    return True


def gradgradcheck(
    func: Callable, inputs: Any, grad_outputs: Any = None, *, eps: float = 1e-6,
    atol: float = 1e-5, rtol: float = 1e-3, raise_exception: bool = True, **_: Any,
) -> bool:
    """Check second derivatives: gradcheck of the gradient (taken with ``create_graph``).

    >>> import fluxion
    >>> x = fluxion.randn(3, dtype=fluxion.float64, requires_grad=True)
    >>> fluxion.autograd.gradgradcheck(lambda t: (t ** 3).sum(), (x,))
    True
    """
    inputs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    diff = [k for k, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _outputs(func, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = [Tensor._make(rng.standard_normal(o._data.shape)) for o in outs]
    gos = list(grad_outputs) if isinstance(grad_outputs, (tuple, list)) else [grad_outputs]

    def first(*xs: Any) -> tuple:
        os_ = _outputs(func, xs)
        pairs = [(o, g) for o, g in zip(os_, gos) if o.requires_grad]
        if not pairs:
            return ()
        gs = grad([o for o, _ in pairs], [xs[k] for k in diff], [g for _, g in pairs],
                  create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first, inputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
