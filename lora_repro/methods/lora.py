"""LoRA as a method: wrap the target weights of every block in ``LoRALinear`` and train only A and B.

Targets are the paper's logical names (``q``, ``k``, ``v``, ``o``, ``fc1``, ``fc2``), mapped per architecture by
``lora_repro.models.families``, or regular expressions matched against the end of module names. On a family with a
fused q|k|v projection (GPT-2's ``c_attn``), ``q``/``k``/``v`` adapt only their slice of it (``LoRAFusedLinear``, as
loralib's MergedLinear did for the paper); ``qkv`` adapts the whole fused output with one LoRA.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Iterator

from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.common import freeze
from lora_repro.methods.lora_layer import LoRAFusedLinear, LoRALinear, check_alpha, check_rank, in_out_features
from lora_repro.models.families import Family
from lora_repro.errors import UserError


def linear_module_names(model: nn.Module) -> list[str]:
    names = []
    for name, module in model.named_modules():
        try:
            in_out_features(module)
        except TypeError:
            continue
        names.append(name)
    return names


def fused_slice_targets(targets: list[str], family: Family | None) -> list[str]:
    """The targets that name a slice of the family's fused q|k|v projection (e.g. q, v on GPT-2)."""
    if family is None or not family.fused_qkv:
        return []
    return [t for t in targets if t in family.fused_order and t not in family.modules]


def target_patterns(targets: list[str], family: Family | None) -> list[tuple[str, re.Pattern]]:
    """Each target with the regular expression its module names end with: the family's module for a logical name
    (the fused projection for a slice of it), else the target itself as a regular expression."""
    fused = fused_slice_targets(targets, family)
    patterns = []
    for target in targets:
        if target in fused:
            pattern = family.fused_qkv
        else:
            pattern = family.modules.get(target, target) if family is not None else target
        patterns.append((target, re.compile(rf"(^|\.)(?:{pattern})$")))
    return patterns


def resolve_targets(model: nn.Module, targets: list[str], family: Family | None) -> list[str]:
    """Module names to wrap (a fused-slice target gives the fused module). A target that matches nothing is an
    error listing the model's linear modules."""
    linear = linear_module_names(model)
    chosen: list[str] = []
    for target, regex in target_patterns(targets, family):
        hits = [n for n in linear if regex.search(n)]
        if not hits:
            logical = f"; choices: {valid_targets(family)}" if family else ""
            raise UserError(f"LoRA target {target!r} matches no linear module{logical}. "
                             f"Linear modules of this model: {', '.join(linear[:40])}{' ...' if len(linear) > 40 else ''}")
        chosen += [n for n in hits if n not in chosen]
    return chosen


def slice_ranges(out_features: int, order: tuple[str, ...], chosen: list[str]) -> dict[str, tuple[int, int]]:
    """Output ranges of the chosen slices of a fused projection split into len(order) equal parts."""
    if out_features % len(order):
        raise UserError(f"fused projection with {out_features} outputs does not split into {len(order)} equal parts")
    size = out_features // len(order)
    return {name: (order.index(name) * size, (order.index(name) + 1) * size) for name in order if name in chosen}


def valid_targets(family: Family | None) -> str:
    """For error messages: "the logical targets of bert: q, k, v, o, fc1, fc2, or a regular expression ..."."""
    logical = list(family.modules) if family is not None else []
    if family is not None:
        logical = [*[t for t in family.fused_order if t not in logical], *logical]
    names = f"the logical targets of {family.name}: {', '.join(logical)}, " if logical else ""
    return f"{names}or a regular expression matched against the end of module names"


def check_targets(targets: object, family: Family | None) -> list[str]:
    """method.targets: a non-empty list of non-empty strings. An empty list would make a "lora" run with no LoRA
    parameter at all, and an empty string matches every linear module."""
    if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
        raise UserError(f"method.targets must be a non-empty list of the weights to adapt, got {targets!r}; "
                         f"choices: {valid_targets(family)}")
    bad = [t for t in targets if not isinstance(t, str) or not t.strip()]
    if bad:
        raise UserError(f"method.targets={list(targets)!r} has entries that are not target names: {bad!r}; "
                         f"choices: {valid_targets(family)}")
    return list(targets)


def check_not_applied(model: nn.Module, targets: list[str], family: Family | None) -> None:
    """Adapting a weight that is already wrapped would otherwise fail as "target 'q' matches no linear module"
    (the linear module now sits at '...query.base')."""
    wrapped = [name for name, _ in lora_layers(model)]
    if not wrapped:
        return
    for target, regex in target_patterns(targets, family):
        hits = [n for n in wrapped if regex.search(n)]
        if hits:
            raise UserError(f"LoRA is already applied to this model (target {target!r}: {hits[0]}"
                             f"{f' and {len(hits) - 1} more' if len(hits) > 1 else ''}); to load a LoRA checkpoint "
                             "into it use load_method_weights(model, directory, apply=False), or apply LoRA to a "
                             "fresh base model")


def inject_lora(model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float = 0.0,
                init: str = "kaiming", init_std: float = 0.02, family: Family | None = None) -> list[str]:
    targets = check_targets(targets, family)
    check_rank(r)
    check_alpha(alpha)
    check_not_applied(model, targets, family)
    slices = fused_slice_targets(targets, family)
    plain = resolve_targets(model, [t for t in targets if t not in slices], family)
    fused = resolve_targets(model, slices, family) if slices else []
    if set(plain) & set(fused):
        raise UserError(f"LoRA targets {targets} adapt {family.fused_qkv} both whole and per slice; "
                         f"use either {'/'.join(family.fused_order)} or the whole fused projection")
    for name in plain + fused:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        if name in fused:
            ranges = slice_ranges(in_out_features(base)[1], family.fused_order, slices)
            layer = LoRAFusedLinear(base, ranges, r, alpha, dropout, init, init_std)
        else:
            layer = LoRALinear(base, r, alpha, dropout, init, init_std)
        setattr(parent, child, layer)
    return plain + fused


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear | LoRAFusedLinear]]:
    """Every LoRA-wrapped module. A LoRAFusedLinear keeps its A/B per slice in ``.lora[slice]``."""
    for name, module in model.named_modules():
        if isinstance(module, (LoRALinear, LoRAFusedLinear)):
            yield name, module


def merge_lora(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """For deployment: merge every LoRA layer and put its base layer back, leaving the plain architecture with
    W0 + BA in place (no wrapper call per layer, the paper's "no additional inference latency"). The LoRA
    parameters are dropped; keep a saved copy to switch tasks later."""
    for name, layer in list(lora_layers(model)):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)
    return model


@contextlib.contextmanager
def lora_disabled(model: nn.Module):
    """Run the pretrained model: unmerge and switch the LoRA branches off, restore on exit."""
    state = [(layer, layer.merged, layer.enabled) for _, layer in lora_layers(model)]
    for layer, _, _ in state:
        layer.unmerge()
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, merged, enabled in state:
            layer.enabled = enabled
            if merged:
                layer.merge()


BIASES = ("none", "all", "lora_only")  # loralib's options: the paper trains no biases ('none')
PRINTED_RANKS = {"r_q": "q", "r_k": "k", "r_v": "v", "r_o": "o"}  # Tables 15/18's columns -> targets


def validate_lora(cfg: dict) -> None:
    """The settings that need no model: rank, alpha, bias (targets are checked against the model's family)."""
    check_alpha(cfg.get("alpha", check_rank(cfg.get("r", 8))))
    if cfg.get("bias", "none") not in BIASES:
        raise UserError(f"method.bias must be one of {', '.join(BIASES)}; got {cfg.get('bias')!r}")


def lora_formula(cfg: dict, d: int, n_layers: int) -> tuple[int, str]:
    """Section 5.1: |Θ| = 2 × L_LoRA × d_model × r (L_LoRA: the number of adapted d x d weight matrices)."""
    n = n_layers * len(cfg["targets"])
    return 2 * n * d * cfg["r"], f"2·{n}·{d}·{cfg['r']}"


def describe_lora(cfg: dict) -> str:
    return f"r={cfg['r']} on {','.join(cfg['targets'])}"


def lora_from_printed(printed: dict, cfg: dict) -> dict | None:
    """r_q=r_v=8 -> r 8 on q, v (alpha = r, the paper's first choice). Different ranks per matrix are not one
    LoRA setting."""
    ranks = {m: printed[k] for k, m in PRINTED_RANKS.items() if k in printed}
    if not ranks:
        return None
    if len(set(ranks.values())) > 1:
        raise ValueError(f"ranks {ranks}: different ranks per matrix are not one LoRA setting")
    r = max(ranks.values())
    return {"r": r, "alpha": r, "targets": list(ranks)}


LORA_HOOKS = dict(validate=validate_lora, formula=lora_formula, describe=describe_lora,
                  size_knob=("rank r", lambda cfg, v: {**cfg, "r": v}), from_printed=lora_from_printed,
                  recipe_keys={"r": "lora_r", "alpha": "lora_alpha", "targets": "lora_targets"})


@register_method("lora", **LORA_HOOKS)
def apply_lora(model: nn.Module, cfg: dict, family: Family) -> None:
    # every setting is checked before the model is touched (freeze would otherwise already have run)
    validate_lora(cfg)
    targets = check_targets(cfg.get("targets", ["q", "v"]), family)
    r = check_rank(cfg.get("r", 8))
    alpha = check_alpha(cfg.get("alpha", r))
    check_not_applied(model, targets, family)
    bias = cfg.get("bias", "none")
    freeze(model)
    inject_lora(model, targets, r=r, alpha=alpha, dropout=cfg.get("dropout", 0.0), init=cfg.get("init", "kaiming"),
                init_std=cfg.get("init_std", 0.02), family=family)
    for name, module in model.named_modules():
        if bias == "all" or (bias == "lora_only" and isinstance(module, (LoRALinear, LoRAFusedLinear))):
            for pname, p in module.named_parameters(recurse=bias == "lora_only"):
                if pname.endswith("bias"):
                    p.requires_grad_(True)
