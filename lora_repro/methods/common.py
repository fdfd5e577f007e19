"""What every method shares: freezing, the task head, parameter counts, saving and loading the trained part."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from lora_repro.errors import MissingInputError, UserError
from lora_repro.results import atomic_file, write_json_atomic

WEIGHTS_FILE = "method.safetensors"
CONFIG_FILE = "method_config.json"


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def is_head(model: nn.Module, param_name: str) -> bool:
    """The task head is whatever sits outside the pretrained body (e.g. ``classifier.*``). A causal LM's output
    layer is pretrained (usually tied to the input embeddings), so it is body, not head."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        return False
    return param_name.split(".")[0] not in (prefix, "lm_head")


def unfreeze_head(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if is_head(model, name):
            p.requires_grad_(True)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Counts the paper's way: 'trainable_without_head' is the number Tables 2-4 print for the methods."""
    total = trainable = head = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            head += p.numel() if is_head(model, name) else 0
    return {"total": total, "trainable": trainable, "trainable_head": head, "trainable_without_head": trainable - head}


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_method_weights(model: nn.Module, directory: str | os.PathLike, method_cfg: dict, base_model: str,
                        state_dict: dict[str, torch.Tensor] | None = None, counts: dict | None = None) -> Path:
    """Save only what the method trained (plus the head) and the settings needed to rebuild it.

    r, alpha, targets and init live in method_cfg: the scaling alpha/r is part of the checkpoint's contract
    (evaluating a LoRA checkpoint with the wrong alpha silently wrecks it, microsoft/LoRA#151).
    ``state_dict``/``counts``: the trainable parameters and their counts taken elsewhere, e.g. gathered from
    FSDP/ZeRO-3 shards (lora_repro.checkpointing.gathered_trainable_state), where the model holds only a shard.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = trainable_state_dict(model) if state_dict is None else state_dict
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    meta = {"method": method_cfg, "base_model": base_model, "dtype": dtypes,
            "parameters": counts or parameter_counts(model), "keys": sorted(state)}
    with atomic_file(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json_atomic(directory / CONFIG_FILE, meta)
    return directory


def read_method_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise MissingInputError(f"no {CONFIG_FILE} in {directory}: not a saved method checkpoint")
    return json.loads(path.read_text())


def load_method_weights(model: nn.Module, directory: str | os.PathLike, apply: bool = True,
                        include_head: bool = True) -> nn.Module:
    """Rebuild the method on a fresh base model from a checkpoint and load its weights.

    ``apply=False`` loads into a model that already has the method (switching tasks). LoRA layers that are merged
    stay merged, now with the loaded A and B (unmerging still gives W0 back).

    ``include_head=False`` loads only the method's own parameters: the paper's warm start of MRPC/RTE/STS-B from
    the MNLI-trained LoRA modules, whose classifier has a different number of labels.
    """
    from lora_repro.methods import apply_method

    meta = read_method_config(directory)
    if apply:
        apply_method(model, meta["method"])
    state = load_file(str(Path(directory) / WEIGHTS_FILE))
    if not include_head:
        state = {k: v for k, v in state.items() if not is_head(model, k)}
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise KeyError(f"checkpoint {directory} has parameters the model lacks (different base model or method "
                       f"settings?): {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    # A merged LoRA layer holds W0 + (alpha/r) B_old A_old in its base weight: overwriting A, B under it would leave
    # W0 lost (unmerge would subtract the new ΔW). Unmerge with the old A, B, load, and re-merge with the new ones.
    merged = merged_lora_layers(model)
    for layer in merged:
        layer.unmerge()
    try:
        copy_into_parameters(own, state, directory)
    finally:
        for layer in merged:
            layer.merge()
    return model


def merged_lora_layers(model: nn.Module) -> list[nn.Module]:
    from lora_repro.methods.lora_layer import _LoRAWrapper

    return [m for m in model.modules() if isinstance(m, _LoRAWrapper) and m.merged]


def copy_into_parameters(own: dict[str, nn.Parameter], state: dict[str, torch.Tensor], source) -> None:
    """Copy checkpoint tensors into parameters of the same names, refusing any shape mismatch."""
    with torch.no_grad():
        for name, tensor in state.items():
            if own[name].shape != tensor.shape:
                raise UserError(f"checkpoint {source}: {name} has shape {tuple(tensor.shape)}, the model "
                                 f"{tuple(own[name].shape)}")
            own[name].copy_(tensor)


def find_cache(values: dict):
    """The transformers key/value Cache among a call's keyword arguments or a model output, whatever its name
    (transformers <= 5.23: ``past_key_values``, 5.24: ``cache``); None when there is none."""
    from transformers.cache_utils import Cache

    return next((value for value in values.values() if isinstance(value, Cache)), None)


def cache_keyword(model: nn.Module) -> str:
    """The keyword the model's forward takes its cache under: ``cache`` from transformers 5.24 (the old
    ``past_key_values`` warns until 5.40), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
