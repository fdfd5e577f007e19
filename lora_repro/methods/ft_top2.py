"""FT^Top2 (Li & Liang 2021; the LoRA paper's Tables 3, 13, 14): fine-tune only the last two transformer blocks.

GPT-2 medium: 2 x (12 d^2 + 13 d) = 25,192,448 = the printed 25.19M (d = 1024). The final LayerNorm (2d) and the
embeddings stay frozen. ``top_layers`` changes the 2.

This module is also where the per-block methods (adapters, prefix-layer tuning, FT^Top2) find a model's blocks.
"""
from __future__ import annotations

import re

from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.common import freeze
from lora_repro.models.families import Family
from lora_repro.errors import UnsupportedError, UserError


def transformer_blocks(model: nn.Module, family: Family) -> list[tuple[int, str, nn.Module]]:
    """(index, qualified name, module) of every transformer block, in depth order (family.layers ends in the index)."""
    regex = re.compile(rf"(^|\.)(?:{family.layers})$")
    found = [(int(re.search(r"(\d+)$", name).group(1)), name, module)
             for name, module in model.named_modules() if regex.search(name)]
    if not found:
        raise UnsupportedError(f"no transformer block of {type(model).__name__} matches {family.layers!r} "
                                  f"(family {family.name}): per-block methods cannot be applied to it")
    return sorted(found, key=lambda item: item[0])


def block_submodule(model: nn.Module, block_name: str, pattern: str, what: str) -> tuple[str, nn.Module]:
    """The one module inside ``block_name`` whose name ends with the regex ``pattern`` (e.g. the family's "o")."""
    regex = re.compile(rf"(^|\.)(?:{pattern})$")
    hits = [(n, m) for n, m in model.named_modules() if n.startswith(block_name + ".") and regex.search(n)]
    if len(hits) != 1:
        raise UnsupportedError(f"expected one {what} module matching {pattern!r} in {block_name}, found "
                                  f"{[n for n, _ in hits] or 'none'}")
    return hits[0]


@register_method("ft_top2", describe=lambda cfg: f"top {cfg.get('top_layers', 2)} blocks")
def apply_ft_top2(model: nn.Module, cfg: dict, family: Family) -> None:
    blocks = transformer_blocks(model, family)
    top = cfg.get("top_layers", 2)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= len(blocks):
        raise UserError(f"method.top_layers must be an integer in 1..{len(blocks)} (the model's blocks), got {top!r}")
    freeze(model)
    for _, _, block in blocks[-top:]:
        for p in block.parameters():
            p.requires_grad_(True)
