"""``fluxion.utils``: helpers around the core, as ``torch.utils`` (``data`` for now)."""

from fluxion.utils import data

__all__ = ["data"]
