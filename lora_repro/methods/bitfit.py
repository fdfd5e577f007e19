"""BitFit (Ben Zaken et al. 2021): only the bias terms of the pretrained body train (plus the task head)."""
from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.common import freeze, is_head
from lora_repro.errors import UserError


@register_method("bitfit")
def apply_bitfit(model: nn.Module, cfg: dict, family) -> None:
    freeze(model)
    biases = [p for name, p in model.named_parameters() if name.endswith("bias") and not is_head(model, name)]
    if not biases:  # e.g. Llama/SmolLM2, built without biases: "BitFit" would silently be a linear probe
        raise UserError(f"method bitfit: {type(model).__name__} has no bias terms in its pretrained body, so BitFit "
                         "would train nothing but the task head; choose another method (e.g. lora, adapter_h)")
    for p in biases:
        p.requires_grad_(True)
