"""Anomaly mode: the first NaN/Inf in backward raises, naming the forward op's source line."""

from __future__ import annotations

from fluxion.autograd.grad_mode import _GradModeContext, state


class detect_anomaly(_GradModeContext):  # noqa: N801
    """Inside this block, graph nodes remember the user's source line, and a backward
    that produces NaN or Inf raises naming the op and that line.

    >>> import fluxion
    >>> x = fluxion.tensor([0.0], requires_grad=True)
    >>> with fluxion.autograd.detect_anomaly():
    ...     y = x.sqrt() * 0
    ...     try:
    ...         y.sum().backward()
    ...     except RuntimeError as e:
    ...         print(str(e).splitlines()[0])
    Function 'SqrtBackward0' returned nan values in its 0th output.
    """

    def __init__(self, check_nan: bool = True) -> None:
        self._check = check_nan

    def __enter__(self) -> None:
        self._prev = (state.anomaly, state.anomaly_check_nan)
        state.anomaly, state.anomaly_check_nan = True, self._check

    def __exit__(self, *exc: object) -> None:
        state.anomaly, state.anomaly_check_nan = self._prev

    def _args(self) -> tuple:
        return (self._check,)


def set_detect_anomaly(mode: bool, check_nan: bool = True) -> None:
    """Turn anomaly mode on or off globally.

    >>> import fluxion
    >>> fluxion.autograd.set_detect_anomaly(False)
    """
    state.anomaly, state.anomaly_check_nan = bool(mode), check_nan


def is_anomaly_enabled() -> bool:
    """Whether anomaly mode is on."""
    return state.anomaly
