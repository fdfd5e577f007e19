"""Full fine-tuning: every parameter trains."""
from torch import nn

from lora_repro.methods import register_method


@register_method("full_ft")
def apply_full_ft(model: nn.Module, cfg: dict, family) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
