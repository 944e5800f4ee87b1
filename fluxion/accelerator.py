"""``fluxion.accelerator``: PyTorch's device-agnostic accelerator queries. The CPU is the
only device until the GPU backend lands."""

from __future__ import annotations

from fluxion.backends import device


def is_available() -> bool:
    """Whether an accelerator (GPU) can be used.

    >>> import fluxion
    >>> fluxion.accelerator.is_available()
    False
    """
    return False


def current_accelerator(check_available: bool = False) -> device | None:
    """The accelerator device, or None when there is none (as now).

    >>> import fluxion
    >>> fluxion.accelerator.current_accelerator() is None
    True
    """
    return None


def device_count() -> int:
    """Number of accelerator devices (0 for now)."""
    return 0
