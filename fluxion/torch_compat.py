"""Run PyTorch programs on Fluxion: ``import torch`` (and ``torch.nn``, ``torch.optim``,
``torch.utils.data``, ...) resolve to Fluxion's modules. ``fluxion run script.py`` uses it.

A torch module Fluxion does not provide fails at import with an ImportError naming it; a
missing function fails with an AttributeError naming ``torch.<name>``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
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


def _missing(torch_name: str, name: str) -> str:
    return (f"{torch_name} is not provided by Fluxion (fluxion run maps torch to fluxion; "
            f"there is no {name}). See the coverage table in the README.")


class _TorchFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname == "torch" or fullname.startswith("torch."):
            return importlib.util.spec_from_loader(fullname, self)
        if fullname.startswith("fluxion.") and \
                importlib.machinery.PathFinder.find_spec(fullname, path) is None:
            # ``from torch import x`` looks for the submodule by the module's own name,
            # ``fluxion.x``: name the torch module, as ``import torch.x`` does
            torch_name = "torch" + fullname[len("fluxion"):]
            raise ModuleNotFoundError(_missing(torch_name, fullname), name=torch_name)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        name = target_of(spec.name)
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            raise ImportError(_missing(spec.name, name)) from None

    def exec_module(self, module: ModuleType) -> None:
        pass


_finder = _TorchFinder()
# the real torch modules that were imported before ``install``: ``uninstall`` puts them back
# (PyTorch's C extension cannot be imported a second time in one process)
_saved: dict[str, ModuleType] = {}


def _torch_modules() -> list[str]:
    return [n for n in sys.modules if n == "torch" or n.startswith("torch.")]


def install() -> None:
    """Make ``import torch`` (and its submodules) resolve to Fluxion in this process."""
    if _finder not in sys.meta_path:
        _saved.update({name: sys.modules[name] for name in _torch_modules()})
        sys.meta_path.insert(0, _finder)
    for name in _torch_modules():
        del sys.modules[name]


def uninstall() -> None:
    """Undo ``install``: later imports of torch find the real one again (the very modules
    that were imported before ``install``, if any)."""
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in _torch_modules():
        del sys.modules[name]
    sys.modules.update(_saved)
    _saved.clear()


def run(script: str, args: Sequence[str] = ()) -> None:
    """Run a PyTorch script file on Fluxion with ``sys.argv = [script, *args]`` and, as
    ``python script.py`` does, the script's directory first on ``sys.path``."""
    install()
    argv, path = sys.argv, sys.path[:]
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
        sys.path[:] = path
