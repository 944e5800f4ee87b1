"""Run PyTorch programs on Fluxion: ``import torch`` (and ``torch.nn``, ``torch.optim``,
``torch.utils.data``, ...) resolve to Fluxion's modules. ``fluxion run script.py`` uses it.

A torch module Fluxion does not provide fails at import with an ImportError naming it; a
missing function fails with an AttributeError naming ``torch.<name>``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import runpy
import sys
from collections.abc import Sequence
from types import ModuleType

# torch modules whose Fluxion home is not simply fluxion.<same path>
_RENAMED = {
    "torch.cuda": "fluxion.backends.cuda",
    "torch.nn.modules": "fluxion.nn.modules",
    "torch.nn.parameter": "fluxion.nn.parameter",
    "torch.autograd.grad_mode": "fluxion.autograd.grad_mode",
    "torch.autograd.function": "fluxion.autograd.function",
    "torch.utils.data.dataloader": "fluxion.utils.data.dataloader",
    "torch.utils.data.dataset": "fluxion.utils.data.dataset",
    "torch.utils.data.sampler": "fluxion.utils.data.sampler",
}


def target_of(name: str) -> str:
    """The Fluxion module that stands in for torch module ``name``.

    >>> target_of("torch.nn.functional")
    'fluxion.nn.functional'
    """
    return _RENAMED.get(name, "fluxion" + name[len("torch"):])


class _TorchFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname == "torch" or fullname.startswith("torch."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        name = target_of(spec.name)
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            raise ImportError(
                f"{spec.name} is not provided by Fluxion (fluxion run maps torch to fluxion; "
                f"there is no {name}). See the coverage table in the README."
            ) from None

    def exec_module(self, module: ModuleType) -> None:
        pass


_finder = _TorchFinder()


def install() -> None:
    """Make ``import torch`` (and its submodules) resolve to Fluxion in this process."""
    for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
        del sys.modules[name]
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Undo ``install``: later imports of torch find the real one again."""
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
        del sys.modules[name]


def run(script: str, args: Sequence[str] = ()) -> None:
    """Run a PyTorch script file on Fluxion with ``sys.argv = [script, *args]``."""
    install()
    argv = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
