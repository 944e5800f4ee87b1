"""Whether operations record the graph: ``no_grad``, ``enable_grad``, ``inference_mode``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    __slots__ = ("enabled", "anomaly", "anomaly_check_nan")

    def __init__(self) -> None:
        self.enabled = True
        self.anomaly = False
        self.anomaly_check_nan = True


state = _State()


def is_grad_enabled() -> bool:
    """Whether new operations are recorded for autograd.

    >>> import fluxion
    >>> with fluxion.no_grad():
    ...     fluxion.is_grad_enabled()
    False
    """
    return state.enabled


class _GradModeContext:
    """A context manager that is also a decorator, like PyTorch's grad-mode guards."""

    _mode: bool

    def __enter__(self) -> None:
        self._prev = state.enabled
        state.enabled = self._mode

    def __exit__(self, *exc: object) -> None:
        state.enabled = self._prev

    def __call__(self, fn: F) -> F:
        mode_cls, args = type(self), self._args()

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            with mode_cls(*args):
                return fn(*a, **kw)

        return wrapper  # type: ignore[return-value]

    def _args(self) -> tuple:
        return ()


class _Bare(_GradModeContext):
    """Grad-mode guards that also work as a bare decorator: ``@fluxion.no_grad``."""

    def __new__(cls, orig_func: Any = None) -> Any:
        if orig_func is not None and callable(orig_func):
            return cls()(orig_func)
        return super().__new__(cls)

    def __init__(self, orig_func: Any = None) -> None:
        pass


class no_grad(_Bare):  # noqa: N801
    """Disable graph recording inside the block or decorated function.

    >>> import fluxion
    >>> x = fluxion.ones(2, requires_grad=True)
    >>> with fluxion.no_grad():
    ...     (x * 2).requires_grad
    False
    """

    _mode = False


class enable_grad(_Bare):  # noqa: N801
    """Re-enable graph recording inside a ``no_grad`` block.

    >>> import fluxion
    >>> x = fluxion.ones(2, requires_grad=True)
    >>> with fluxion.no_grad(), fluxion.enable_grad():
    ...     (x * 2).requires_grad
    True
    """

    _mode = True


class set_grad_enabled(_GradModeContext):  # noqa: N801
    """Set grad mode on (``True``) or off; works as a call, a context manager or decorator.

    >>> import fluxion
    >>> with fluxion.set_grad_enabled(False):
    ...     fluxion.is_grad_enabled()
    False
    """

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)
        self._prev = state.enabled
        state.enabled = self._mode  # takes effect as a plain call too, as in PyTorch

    def __enter__(self) -> None:
        state.enabled = self._mode

    def _args(self) -> tuple:
        return (self._mode,)

    def __call__(self, fn: F) -> F:  # restore: the constructor call already flipped the mode
        state.enabled = self._prev
        return super().__call__(fn)


class inference_mode(_GradModeContext):  # noqa: N801
    """Like ``no_grad`` (Fluxion keeps no extra bookkeeping to skip beyond that).

    >>> import fluxion
    >>> with fluxion.inference_mode():
    ...     fluxion.is_grad_enabled()
    False
    """

    def __init__(self, mode: bool = True) -> None:
        self._mode = not mode

    def _args(self) -> tuple:
        return (not self._mode,)


def is_inference_mode_enabled() -> bool:
    """True inside ``inference_mode``; in Fluxion that is the same as grad being off."""
    return not state.enabled
