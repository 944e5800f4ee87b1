"""``fluxion.nn``: modules, layers, losses, initialisers and functional ops."""

from fluxion.nn import functional, init, utils
from fluxion.nn.module import Module
from fluxion.nn.modules import *  # noqa: F403
from fluxion.nn.modules import __all__ as _layers
from fluxion.nn.parameter import Buffer, Parameter

__all__ = ["Buffer", "Module", "Parameter", "functional", "init", "utils", *_layers]
