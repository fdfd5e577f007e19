"""rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA"): LoRA with the
scaling alpha / sqrt(r) instead of alpha / r, so the update keeps its size as the rank grows (alpha / r shrinks it
with r and slows learning at large ranks). Everything else is the LoRA method: targets, A/B initialisation, exact
merge. peft: ``LoraConfig(use_rslora=True)``.

    h = W0 x + (alpha / sqrt(r)) B A x
"""
from __future__ import annotations

import math

from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.lora import LORA_HOOKS, apply_lora, lora_layers
from lora_repro.models.families import Family


@register_method("rslora", **LORA_HOOKS)
def apply_rslora(model: nn.Module, cfg: dict, family: Family) -> None:
    apply_lora(model, cfg, family)
    for _, layer in lora_layers(model):
        layer.scaling = layer.alpha / math.sqrt(layer.r)
