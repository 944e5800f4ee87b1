"""Fluxion: a small deep-learning framework with PyTorch's API, define-by-run autodiff
and (soon) a compiler that shows its work. ``import fluxion as torch`` runs the covered
subset of PyTorch programs."""

from __future__ import annotations

from fluxion import (
    _tensor_methods,  # attaches operators and methods to Tensor
    accelerator,
    autograd,
    nn,
    ops,
)
from fluxion._dtype import (
    bool_ as bool,
)
from fluxion._dtype import (
    dtype,
    float16,
    float32,
    float64,
    get_default_dtype,
    int8,
    int16,
    int32,
    int64,
    promote_types,
    result_type,
    set_default_dtype,
    uint8,
)
from fluxion.autograd.grad_mode import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_grad_enabled,
)
from fluxion.backends import cuda, device
from fluxion.compiler import compile, explain
from fluxion.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    logspace,
    ones,
    ones_like,
    tensor,
    zeros,
    zeros_like,
)
from fluxion.functional import *
from fluxion.nn.functional import log_softmax, softmax
from fluxion.random import (
    Generator,
    bernoulli,
    default_generator,
    get_rng_state,
    initial_seed,
    manual_seed,
    multinomial,
    normal,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    seed,
    set_rng_state,
)
from fluxion.serialization import load, save
from fluxion.tensor import Size, Tensor

half, float, double = float16, float32, float64
long, int, short = int64, int32, int16
uint8_ = uint8
cfloat = None  # complex dtypes are not supported

__version__ = "0.1.0"


def is_tensor(obj: object) -> bool:
    """Whether ``obj`` is a Fluxion tensor.

    >>> import fluxion
    >>> fluxion.is_tensor(fluxion.ones(1))
    True
    """
    return isinstance(obj, Tensor)


def is_floating_point(input: Tensor) -> bool:
    """Whether ``input`` has a floating dtype."""
    return input.is_floating_point()


def numel(input: Tensor) -> int:
    """Number of elements of ``input``."""
    return input.numel()


_LAZY = ("optim", "utils", "datasets", "train")


def __getattr__(name: str) -> object:
    # subpackages load on first use; anything else is a torch API Fluxion lacks
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"fluxion.{name}")
    raise AttributeError(
        f"module 'fluxion' has no attribute '{name}': Fluxion does not implement torch.{name} "
        "(see the coverage table in the README)"
    )
