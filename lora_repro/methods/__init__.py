"""Adaptation methods behind one interface: a method turns a pretrained model into the model to train (inserting
modules, choosing what trains). Each lives in one module that registers itself, with one yaml in conf/method/:

    @register_method("bitfit")
    def apply_bitfit(model, cfg, family): ...

``register_method`` also takes what generic code may ask of a method (see ``Method``): the training job, the
recipe, the report and the parameter counts call these hooks and never name a method.

Every method freezes what it does not train; the task head (parameters outside ``model.base_model_prefix``)
always trains and is counted separately.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

from lora_repro.errors import UserError

ApplyFn = Callable[[nn.Module, dict, "object"], None]


def _no_formula(cfg: dict, d: int, n_layers: int) -> tuple[int | None, str]:
    return None, ""


def _no_settings(printed: dict, cfg: dict) -> dict | None:
    return {}


@dataclass(frozen=True)
class Method:
    """One method and what generic code may ask of it; only ``apply`` is required.

    apply         (model, cfg, family): adapt the model in place (validating cfg before touching the model).
    validate      (cfg): the settings' checks that need no model, run before the model is loaded.
    formula       (cfg, d_model, n_layers) -> (|Θ| of Section 5.1, its expression); (None, "") when there is none.
    describe      (cfg) -> the setting in a few words for tables ("r=8 on q,v").
    size_knob     (label, resize(cfg, value) -> cfg): the integer that sets the method's size, for the parameter
                  report's "which setting would print this count".
    from_printed  (printed row config, method cfg) -> settings from a paper row's printed configuration (Tables 4,
                  15: r_q/r_v, l_p/l_i, r), {} when the method has none to read, None when the row lacks them.
    recipe_keys   method setting -> Appendix D hyperparameter that fills it when the yaml leaves it null.
    model_kind    the model head the method needs when it is not the task's: "generation" (the LM head) for a method
                  that prompts the model; None: the task's (a classification head for GLUE).
    evaluate      replaces the training loop for a method that trains nothing (in-context prompting): the
                  signature and outcome of ``lora_repro.training.train_and_evaluate``; None: the training loop.
    """

    name: str
    apply: ApplyFn
    validate: Callable[[dict], None] = lambda cfg: None
    formula: Callable[[dict, int, int], tuple[int | None, str]] = _no_formula
    describe: Callable[[dict], str] = lambda cfg: ""
    size_knob: tuple[str, Callable[[dict, int], dict]] | None = None
    from_printed: Callable[[dict, dict], dict | None] = _no_settings
    recipe_keys: Mapping[str, str] = field(default_factory=dict)
    model_kind: str | None = None
    evaluate: Callable | None = None


_METHODS: dict[str, Method] = {}


def register_method(name: str, **hooks) -> Callable[[ApplyFn], ApplyFn]:
    """Decorate a method's apply function; ``hooks`` are ``Method``'s other fields."""
    def add(fn: ApplyFn) -> ApplyFn:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = Method(name, fn, **hooks)
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


def get_method(name: str) -> Method:
    _load_all()
    if name not in _METHODS:
        raise UserError(f"unknown method {name!r}; choices: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def apply_method(model: nn.Module, cfg: dict) -> nn.Module:
    """Apply the method named ``cfg['name']`` in place; returns the model for chaining."""
    from lora_repro.methods.common import unfreeze_head
    from lora_repro.models.families import family_of

    get_method(cfg["name"]).apply(model, cfg, family_of(model))
    unfreeze_head(model)
    return model
