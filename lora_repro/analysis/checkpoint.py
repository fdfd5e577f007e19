"""Find the (A, B) pairs of every LoRA layer in a saved state dict, so the analyses can run over a whole checkpoint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import torch
from lora_repro.errors import UserError


class LoraModule(NamedTuple):
    """One adapted layer: A is r x in (down-projection), B is out x r (up-projection)."""

    name: str
    A: torch.Tensor
    B: torch.Tensor


def _module_name(key: str, suffix: str) -> str | None:
    """The key's prefix if it names `suffix` as a whole dotted component ("a.b.lora_A" -> "a.b"), else None."""
    if key == suffix:
        return ""
    if key.endswith("." + suffix):
        return key[: -len(suffix) - 1]
    return None


def iter_lora_modules(
    state_dict: Mapping[str, torch.Tensor], a_suffix: str = "lora_A", b_suffix: str = "lora_B"
) -> Iterator[LoraModule]:
    """Yield LoraModule(name, A, B) for each "<name>.lora_A" / "<name>.lora_B" pair, in state-dict order.

    Other keys (frozen weights, biases) are ignored. Other layouts can be read by changing the suffixes,
    e.g. a_suffix="lora_A.default.weight" for peft. The whole dict is checked before anything is yielded:
    an A without its B (or the reverse), a non-2-D tensor, or mismatched ranks raise ValueError naming the key.
    """
    a_keys: dict[str, str] = {}
    b_keys: dict[str, str] = {}
    for key in state_dict:
        if (name := _module_name(key, a_suffix)) is not None:
            a_keys[name] = key
        elif (name := _module_name(key, b_suffix)) is not None:
            b_keys[name] = key
    unpaired = sorted(set(a_keys) ^ set(b_keys))
    if unpaired:
        missing = [f"{name!r} has {'no ' + b_suffix if name in a_keys else 'no ' + a_suffix}" for name in unpaired]
        raise UserError(f"unpaired LoRA parameters in state dict: {'; '.join(missing)}")

    modules = []
    for name, a_key in a_keys.items():
        A, B = state_dict[a_key], state_dict[b_keys[name]]
        for key, tensor in ((a_key, A), (b_keys[name], B)):
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise UserError(f"state dict entry {key!r} must be a 2-D tensor, got {shape}")
        if B.shape[1] != A.shape[0]:
            raise UserError(
                f"rank mismatch in {name!r}: {a_key} is {tuple(A.shape)} (r x in) but {b_keys[name]} is "
                f"{tuple(B.shape)} (out x r)"
            )
        modules.append(LoraModule(name, A, B))
    return iter(modules)


class ModelLoraModule(NamedTuple):
    """One adapted weight of a live model, named as iter_lora_modules names it from the model's saved state dict.

    W is the frozen weight laid out like ΔW = BA (out x in, so GPT-2's Conv1D weight is transposed); for a slice of a
    fused projection (GPT-2's c_attn: name "...c_attn.lora.q") W is that slice only, W_q, not the whole 3d x d."""

    name: str
    W: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor


def iter_model_lora_modules(model: torch.nn.Module) -> Iterator[ModelLoraModule]:
    """Yield ModelLoraModule(name, W, A, B) for every adapted weight of `model` (detached views, W unmerged).

    A LoRALinear at "m" gives "m"; a LoRAFusedLinear at "m" gives one module per slice, "m.lora.<slice>", the
    prefixes of its state-dict keys "m.lora.<slice>.lora_A" / ".lora_B", with W the slice's rows of W (out x in).
    """
    from lora_repro.methods.lora import lora_layers
    from lora_repro.methods.lora_layer import LoRAFusedLinear

    for name, layer in lora_layers(model):
        weight = layer.base.weight.detach()
        if layer.merged:  # the base holds W0 + ΔW: the analyses want W0
            weight = weight - layer.delta_weight().detach().to(weight.dtype)
        W = weight.T if layer.fan_in_fan_out else weight  # out x in
        if isinstance(layer, LoRAFusedLinear):
            for part_name, part in layer.lora.items():
                yield ModelLoraModule(f"{name}.lora.{part_name}", W[part.start:part.stop],
                                      part.lora_A.detach(), part.lora_B.detach())
        else:
            yield ModelLoraModule(name, W, layer.lora_A.detach(), layer.lora_B.detach())
