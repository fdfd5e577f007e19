"""DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): the adapted weight is split into a
magnitude and a direction; LoRA's B A moves the direction, a trainable vector m sets each output's magnitude:

    W' = m * (W0 + s B A) / ||W0 + s B A||_c        s = alpha / r, m initialised to ||W0||_c

with ||.||_c the norm of each output's weights (a row of the out x in matrix), so W' = W0 at initialisation (B = 0).
As in the paper (Section 4.3) and peft, the norm is treated as a constant in the backward pass. Targets, A/B
initialisation and dropout are the LoRA method's; ``merge()`` folds W' into the base weight exactly and remembers
the norm it divided by, so ``unmerge()`` gives W0 back. peft: ``LoraConfig(use_dora=True)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lora_repro.errors import UnsupportedError
from lora_repro.methods import register_method
from lora_repro.methods.lora import LORA_HOOKS, apply_lora, lora_formula, lora_layers
from lora_repro.methods.lora_layer import LoRALinear
from lora_repro.models.families import Family


class DoRALinear(LoRALinear):
    """A LoRA linear layer with a trainable magnitude per output (``magnitude``, out_features)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, init: str = "kaiming",
                 init_std: float = 0.02):
        super().__init__(base, r, alpha, dropout, init, init_std)
        self.magnitude = nn.Parameter(self.column_norm().to(base.weight.dtype))
        self._merged_norm: torch.Tensor | None = None

    @classmethod
    def from_lora(cls, layer: LoRALinear) -> "DoRALinear":
        """The DoRA layer over ``layer``'s frozen base, taking over its A, B, scaling and dropout."""
        if layer.fan_in_fan_out or layer.merged:
            raise UnsupportedError("dora wraps nn.Linear layers that are not merged (GPT-2's Conv1D and fused q|k|v "
                                   "slices are not supported); use method=lora there")
        dora = cls(layer.base, layer.r, layer.alpha)
        dora.lora_A, dora.lora_B, dora.lora_dropout, dora.scaling = (layer.lora_A, layer.lora_B, layer.lora_dropout,
                                                                     layer.scaling)
        with torch.no_grad():
            dora.magnitude.copy_(dora.column_norm())
        return dora

    def direction_weight(self) -> torch.Tensor:
        """W0 + s B A (out x in), in fp32; valid while unmerged."""
        return self.base.weight.float() + self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def column_norm(self) -> torch.Tensor:
        """||W0 + s B A|| over each output's weights (out_features,), fp32, no gradient (Section 4.3)."""
        with torch.no_grad():
            return torch.linalg.norm(self.direction_weight(), dim=1)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- m * (W0 + s B A) / ||W0 + s B A||_c. Idempotent; computed in fp32."""
        if self.merged:
            return
        norm = self.column_norm()
        w = self.base.weight
        w.copy_(((self.magnitude.float() / norm)[:, None] * self.direction_weight()).to(w.dtype))
        self._merged_norm = norm
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.base.weight
        direction = w.float() * (self._merged_norm / self.magnitude.float())[:, None]
        w.copy_((direction - self.scaling * (self.lora_B.float() @ self.lora_A.float())).to(w.dtype))
        self._merged_norm = None
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged or not self.enabled:
            return result
        scale = (self.magnitude / self.column_norm().to(self.magnitude.dtype)).to(result.dtype)
        dropped = self.lora_dropout(x)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            frozen = result if self.base.bias is None else result - self.base.bias
        else:  # the branch sees the dropped-out input, the frozen path the full one (as peft computes it)
            frozen = F.linear(dropped.to(self.base.weight.dtype), self.base.weight).to(result.dtype)
        lora = F.linear(F.linear(dropped.to(self.lora_A.dtype), self.lora_A), self.lora_B) * self.scaling
        return result + (scale - 1) * frozen + scale * lora.to(result.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}, dora"


def dora_formula(cfg: dict, d: int, n_layers: int) -> tuple[int, str]:
    """LoRA's 2·L·d·r plus one magnitude per output of each adapted d x d weight (L·d)."""
    lora, expr = lora_formula(cfg, d, n_layers)
    n = n_layers * len(cfg["targets"])
    return lora + n * d, f"{expr} + {n}·{d}"


@register_method("dora", **{**LORA_HOOKS, "formula": dora_formula})
def apply_dora(model: nn.Module, cfg: dict, family: Family) -> None:
    apply_lora(model, cfg, family)
    for name, layer in list(lora_layers(model)):
        if not isinstance(layer, LoRALinear):
            raise UnsupportedError(f"dora: {name} is a fused projection (GPT-2's c_attn q|k|v slices); DoRA here "
                                   "wraps separate nn.Linear projections: use method=lora, or a model with separate "
                                   "q/k/v projections")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, DoRALinear.from_lora(layer))
