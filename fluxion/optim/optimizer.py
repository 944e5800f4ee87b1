"""``Optimizer``: the base class of every optimizer, with PyTorch's parameter groups,
per-parameter state, ``state_dict`` format and step hooks.

Subclasses implement ``step`` with Fluxion tensor ops under ``fluxion.no_grad()`` (never by
writing arrays directly), so the update is an ordinary sequence of ops that a compiler can
capture. Fluxion's own optimizers split it: ``step`` reads what changes every step as
numbers (Adam's bias corrections, from its step counts) and hands them to ``_update``, the
update rule, which reads no data, through ``_run_update``; inside a compiled call the rule
then replays from the last call's recording (``compiler/replay.py``).
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from copy import deepcopy
from typing import Any, ClassVar, TypeAlias

import numpy as np

from fluxion import _dtype
from fluxion.autograd.grad_mode import enable_grad, no_grad
from fluxion.ops.registry import recording_segment
from fluxion.tensor import Tensor

__all__ = [
    "Optimizer",
    "ParamsT",
    "StateDict",
    "required",
    "register_optimizer_step_pre_hook",
    "register_optimizer_step_post_hook",
]

ParamsT: TypeAlias = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]
StateDict: TypeAlias = dict[str, Any]


class _RequiredParameter:
    """Singleton marking a hyper-parameter that every param group must give."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class _RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``remove()`` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks: OrderedDict[int, Callable], hook: Callable) -> None:
        self.id = next(self._ids)
        self._hooks = hooks
        hooks[self.id] = hook

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> _RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


_global_step_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
_global_step_post_hooks: OrderedDict[int, Callable] = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable) -> _RemovableHandle:
    """Register ``hook(optimizer, args, kwargs)`` to run before every optimizer's ``step``;
    it may return a new ``(args, kwargs)`` pair."""
    return _RemovableHandle(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable) -> _RemovableHandle:
    """Register ``hook(optimizer, args, kwargs)`` to run after every optimizer's ``step``."""
    return _RemovableHandle(_global_step_post_hooks, hook)


def _to_scalar(x: float | Tensor) -> float | Tensor:
    """A one-element tensor hyper-parameter (e.g. a tensor ``lr``) as a 0-d tensor; numbers
    unchanged. Arithmetic on it then rounds in the tensor's dtype, as in PyTorch."""
    if isinstance(x, Tensor) and x.dim() != 0:
        return x.reshape(())
    return x


def _value(x: float | Tensor) -> float:
    """A hyper-parameter (or a quantity computed from one) as a Python number."""
    return x.item() if isinstance(x, Tensor) else x


def _get_scalar_dtype() -> _dtype.dtype:
    """The dtype of ``state['step']`` tensors: float64 when that is the default, else
    float32 (as in PyTorch)."""
    if _dtype.get_default_dtype() is _dtype.float64:
        return _dtype.float64
    return _dtype.float32


def _check_options(foreach: bool | None, fused: bool | None = None,
                   capturable: bool = False, differentiable: bool = False) -> None:
    """Accept PyTorch's implementation switches for compatibility, refusing the ones that
    Fluxion does not implement. ``foreach`` is accepted and ignored: the single-tensor
    algorithm is always used."""
    if fused:
        raise NotImplementedError("fused=True is not supported by Fluxion's optimizers")
    if capturable:
        raise NotImplementedError("capturable=True is not supported by Fluxion's optimizers")
    if differentiable:
        raise NotImplementedError("differentiable=True is not supported by Fluxion's optimizers")


def _hooked_step(step: Callable) -> Callable:
    """Wrap a subclass's ``step`` to run the step hooks and to record that it ran (the LR
    schedulers warn when they are stepped before their optimizer)."""

    @functools.wraps(step)
    def wrapper(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_in_step", False):  # a subclass's step calling super().step()
            return step(self, *args, **kwargs)
        self._opt_called = True
        for hook in itertools.chain(_global_step_pre_hooks.values(),
                                    self._optimizer_step_pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(
                        f"{hook} must return None or a tuple of (new_args, new_kwargs), but "
                        f"got {result}."
                    )
                args, kwargs = result
        self._in_step = True
        try:
            out = step(self, *args, **kwargs)
        finally:
            self._in_step = False
        for hook in itertools.chain(self._optimizer_step_post_hooks.values(),
                                    _global_step_post_hooks.values()):
            hook(self, args, kwargs)
        return out

    wrapper._fluxion_hooked = True  # type: ignore[attr-defined]
    return wrapper


class Optimizer:
    """Base class of all optimizers: holds ``param_groups`` (a list of dicts, each with its
    ``'params'`` and its hyper-parameters), ``defaults`` and per-parameter ``state``.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts that each
            define a parameter group (``{'params': [...], 'lr': ...}``).
        defaults: the default hyper-parameters, used where a group does not give them.

    >>> import fluxion
    >>> from fluxion.nn.parameter import Parameter
    >>> from fluxion.optim import SGD
    >>> w, b = Parameter(fluxion.ones(2)), Parameter(fluxion.zeros(1))
    >>> opt = SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1)
    >>> [g["lr"] for g in opt.param_groups]
    [0.1, 0.5]
    >>> opt.state_dict()["param_groups"][1]["params"]
    [1]
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._optimizer_step_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Callable] = OrderedDict()
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                f"dicts, but got {_typename(params)}"
            )
        self.state: defaultdict[Tensor, Any] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_fluxion_hooked", False):
            cls.step = _hooked_step(step)  # type: ignore[method-assign]

    # --- pickling: the hooks and flags are not part of an optimizer's state ---------------
    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    # options an older pickled optimizer may lack, filled in by __setstate__
    _group_defaults: ClassVar[dict[str, Any]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_optimizer_step_pre_hooks", OrderedDict())
        self.__dict__.setdefault("_optimizer_step_post_hooks", OrderedDict())
        for group in self.param_groups:
            for key, value in self._group_defaults.items():
                group.setdefault(key, value)
        for p_state in self.state.values():
            _step_as_tensor(p_state)

    def __repr__(self) -> str:
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"

    # --- groups ------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (a dict with ``'params'`` and optional hyper-parameters
        that override ``defaults``), e.g. to train layers that were frozen until now."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list "
                "instead."
            )
        else:
            params = list(params)
        tensors, names = [], []
        for p in params:
            if isinstance(p, tuple):
                names.append(p[0])
                tensors.append(p[1])
            else:
                tensors.append(p)
        param_group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError("all optimizer params should be with/without names. Some "
                                 "param names are missing")
            param_group["param_names"] = names

        for p in tensors:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params "
                                f"is {_typename(p)}")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")

        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)

        ids = [id(p) for p in tensors]
        if len(ids) != len(set(ids)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, "
                "this will cause an error; see github.com/pytorch/pytorch/issues/40967 for "
                "more information",
                stacklevel=3,
            )
        seen: set[int] = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # --- gradients and steps -------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized tensors: to ``None`` (the default), or to
        zeros in place with ``set_to_none=False``. (An optimizer skips parameters whose
        gradient is ``None``, but steps those whose gradient is zero.)"""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    with no_grad():
                        p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns
        the loss (run with gradients enabled)."""
        raise NotImplementedError

    def _run_update(self, numbers: Sequence[tuple[float, np.dtype]] = ()) -> None:
        """Run the subclass's ``_update(values)``: the update rule, which reads no data, so
        that inside a compiled call the last call's recording of it can be replayed
        (``compiler/replay.py``). ``numbers``: the per-step values the rule computes with,
        each with its dtype (Adam's step size), read here and handed to the rule as
        Python numbers, or, inside a compiled call, as 0-d tensors (graph inputs)."""
        seg = recording_segment()
        if seg is None:
            self._update([v for v, _ in numbers])
        else:
            from fluxion.compiler import replay

            replay.optimizer_step(seg, self, numbers)

    def _update(self, values: list[Any]) -> None:
        """The update rule of an optimizer that steps through ``_run_update``: ``values``
        are its ``numbers``, in order (nothing else it reads may be data)."""
        raise NotImplementedError

    def _closure_loss(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def register_step_pre_hook(self, hook: Callable) -> _RemovableHandle:
        """Register ``hook(optimizer, args, kwargs)`` to run before this optimizer's
        ``step``; it may return a new ``(args, kwargs)`` pair."""
        return _RemovableHandle(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook: Callable) -> _RemovableHandle:
        """Register ``hook(optimizer, args, kwargs)`` to run after this optimizer's
        ``step``."""
        return _RemovableHandle(self._optimizer_step_post_hooks, hook)

    # --- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        """The optimizer's state as ``{'state': {index: {...}}, 'param_groups': [...]}``,
        parameters replaced by their index in group order (PyTorch's format). The state's
        tensors are the live ones, not copies: deep-copy or save them to keep a snapshot."""
        index: dict[int, int] = {}
        start = 0
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index.setdefault(id(p), i)
            packed["params"] = [index[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) else k): v
                 for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a state from :meth:`state_dict`: groups are matched by position and must
        have the same sizes; hyper-parameters come from the saved groups; floating state
        tensors are cast to their parameter's dtype (``'step'`` is kept as saved)."""
        state_dict = state_dict.copy()
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't "
                             "match the size of optimizer's group")
        id_map = dict(zip(itertools.chain.from_iterable(s["params"] for s in saved_groups),
                          itertools.chain.from_iterable(g["params"] for g in groups)))

        def cast(param: Tensor, value: Any, key: Hashable = None) -> Any:
            if isinstance(value, Tensor):
                if key == "step" or not param.is_floating_point():
                    return value
                return value.to(param.dtype)
            if isinstance(value, dict):
                return {k: cast(param, v, k) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(cast(param, v) for v in value)
            return value

        state: defaultdict[Any, Any] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = cast(id_map[k], v)
            else:
                state[k] = v

        new_groups = []
        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            new_groups.append(saved)
        self.__setstate__({"state": state, "param_groups": new_groups})


def _typename(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return "fluxion.Tensor"
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _step_as_tensor(p_state: dict[str, Any] | None) -> None:
    """Old checkpoints stored ``step`` as a number; PyTorch (and Fluxion) keep a tensor."""
    if p_state and "step" in p_state and not isinstance(p_state["step"], Tensor):
        from fluxion.creation import tensor

        p_state["step"] = tensor(float(p_state["step"]), dtype=_get_scalar_dtype())
