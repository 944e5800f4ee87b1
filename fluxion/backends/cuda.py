"""``fluxion.cuda``: what PyTorch code asks about the GPU. No GPU backend yet."""


def is_available() -> bool:
    """Whether a CUDA device can be used; False until the CuPy backend lands.

    >>> import fluxion
    >>> fluxion.cuda.is_available()
    False
    """
    return False


def device_count() -> int:
    """Number of usable CUDA devices (0 for now).

    >>> import fluxion
    >>> fluxion.cuda.device_count()
    0
    """
    return 0


def manual_seed(seed: int) -> None:
    """Accepted for PyTorch compatibility; there is no CUDA generator to seed yet."""


def manual_seed_all(seed: int) -> None:
    """Accepted for PyTorch compatibility; there is no CUDA generator to seed yet."""
