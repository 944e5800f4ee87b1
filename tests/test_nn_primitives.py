"""Dedicated network primitives (softmax, log_softmax) agree with the composites they
replace: values, first and second derivatives."""

from __future__ import annotations

import numpy as np
import pytest

import fluxion
from fluxion.nn import functional as F

CASES = [((3, 5), 1), ((3, 5), 0), ((2, 3, 4), -1), ((2, 3, 4), 1), ((6,), 0)]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", CASES)
def test_primitive_matches_composite(name: str, shape: tuple, dim: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal(shape) * 3
    prim, ref = getattr(F, name), getattr(F, f"{name}_reference")
    x1 = fluxion.tensor(data, requires_grad=True)
    x2 = fluxion.tensor(data, requires_grad=True)
    g = fluxion.tensor(rng.standard_normal(shape))
    y1, y2 = prim(x1, dim), ref(x2, dim)
    np.testing.assert_allclose(y1.detach().numpy(), y2.detach().numpy(), rtol=1e-12, atol=1e-12)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_primitive_gradients_first_and_second_order(name: str) -> None:
    x = fluxion.randn(3, 4, dtype=fluxion.float64, requires_grad=True)
    fn = getattr(F, name)
    assert fluxion.autograd.gradcheck(lambda t: fn(t, 1), (x,))
    assert fluxion.autograd.gradgradcheck(lambda t: fn(t, 1), (x,))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_primitive_matches_composite(approximate: str) -> None:
    data = np.linspace(-12, 12, 97)
    x1 = fluxion.tensor(data, requires_grad=True)
    x2 = fluxion.tensor(data, requires_grad=True)
    y1 = F.gelu(x1, approximate)
    y2 = F.gelu_reference(x2, approximate)
    np.testing.assert_allclose(y1.detach().numpy(), y2.detach().numpy(), rtol=1e-12, atol=1e-15)
    y1.sum().backward()
    y2.sum().backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-9, atol=1e-14)
    x = fluxion.randn(7, dtype=fluxion.float64, requires_grad=True)
    assert fluxion.autograd.gradcheck(lambda t: F.gelu(t, approximate), (x,))
    assert fluxion.autograd.gradgradcheck(lambda t: F.gelu(t, approximate), (x,))


def test_all_negative_infinity_row_has_no_nan_shift() -> None:
    x = fluxion.tensor([[-float("inf"), -float("inf")], [0.0, 1.0]])
    assert not np.isnan(F.log_softmax(x, 1).numpy()[1]).any()
    assert np.allclose(F.softmax(x, 1).numpy()[1].sum(), 1.0)
