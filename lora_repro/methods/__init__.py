"""Adaptation methods behind one registry: a method is a function that turns a pretrained model into the
model to train (inserting modules, choosing what trains). Each lives in one module with one yaml in conf/method/.

    @register_method("bitfit")
    def apply_bitfit(model, cfg, family): ...

Every method freezes what it does not train; the task head (parameters outside ``model.base_model_prefix``)
always trains and is counted separately.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from torch import nn

from lora_repro.errors import UserError

MethodFn = Callable[[nn.Module, dict, "object"], None]
_METHODS: dict[str, MethodFn] = {}


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    def add(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = fn
        return fn
    return add


def _load_all() -> None:
    """Import every module of this package (lazily, on first use), so a new method is one module that registers
    itself plus its yaml in conf/method/: nothing else names it."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def method_names() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def get_method(name: str) -> MethodFn:
    _load_all()
    if name not in _METHODS:
        raise UserError(f"unknown method {name!r}; choices: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def apply_method(model: nn.Module, cfg: dict) -> nn.Module:
    """Apply the method named ``cfg['name']`` in place; returns the model for chaining."""
    from lora_repro.methods.common import unfreeze_head
    from lora_repro.models.families import family_of

    get_method(cfg["name"])(model, cfg, family_of(model))
    unfreeze_head(model)
    return model
