"""``fluxion.nn``: network building blocks. (Modules and layers come with the training work.)"""

from fluxion.nn import functional

__all__ = ["functional"]
