"""BitFit (Ben Zaken et al. 2021): only the bias terms of the pretrained body train (plus the task head)."""
from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.common import freeze


@register_method("bitfit")
def apply_bitfit(model: nn.Module, cfg: dict, family) -> None:
    freeze(model)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.requires_grad_(True)
