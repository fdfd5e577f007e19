"""Move LoRA checkpoints between this suite and peft (``peft.PeftModel.from_pretrained`` / ``save_pretrained``).

    python -m lora_repro.export peft RUN_DIR OUT_DIR        # suite method checkpoint -> peft adapter folder
    python -m lora_repro.export from-peft PEFT_DIR OUT_DIR  # peft LoRA adapter folder -> suite method checkpoint

RUN_DIR is a run folder (its ``method/`` holds ``method.safetensors`` + ``method_config.json``) or a method
checkpoint folder itself. Only the LoRA methods convert (``lora``, ``rslora``). The mapping:

* ``<module>.lora_A`` (r x in) / ``<module>.lora_B`` (out x r) <-> ``base_model.model.<module>.lora_A.weight`` /
  ``...lora_B.weight`` (peft's layout is the same, Conv1D included; peft saves without the adapter name).
* ``target_modules``: the exact module names the suite wrapped (a list of full names: peft matches an entry when a
  module's name equals it or ends with ``.entry``, so nothing else is adapted). Back from peft, a list entry ``t``
  becomes the suite regex target ``re.escape(t)`` (same rule: ``(^|\\.)t$``) and a regex string ``P`` (peft:
  ``re.fullmatch``) becomes ``^(?:P)``.
* ``lora_alpha`` = alpha, ``r``, ``lora_dropout`` = dropout, ``bias`` (none | all | lora_only; a wrapped layer's
  ``<module>.base.bias`` is peft's ``<module>.base_layer.bias``), ``use_rslora`` = (method == rslora),
  ``fan_in_fan_out`` for GPT-2's Conv1D.
* The task head (checkpoint keys outside the pretrained body, e.g. ``classifier.*``) is peft's ``modules_to_save``
  (its top-level module names), saved as ``base_model.model.<key>``; ``task_type`` is SEQ_CLS with a head,
  CAUSAL_LM without.
* GPT-2's q/v slices of ``c_attn`` (``LoRAFusedLinear``, one A, B per slice, each scaled s = alpha/r or
  alpha/sqrt(r)) are one peft LoRA on ``c_attn`` of rank r' = (number of slices) r: A' = [A_q; A_v] stacked,
  B' (3d x r') holds B_q in the q rows and the q columns, B_v in the v rows and v columns, zeros elsewhere, so
  B'A' = [B_q A_q; 0; B_v A_v], and lora_alpha' is chosen so peft's scaling (alpha'/r' or alpha'/sqrt(r')) is s.
  That is exact. When the model also has plain LoRA layers, the fused ones get r' and alpha' through
  ``rank_pattern`` / ``alpha_pattern`` (their full names, escaped).

The suite's method config and fused-slice layout ride along in the safetensors metadata (``lora_repro.*`` keys;
peft ignores them), so suite -> peft -> suite gives back the same config and identical weights. The way back uses
them only when the adapter still is exactly what they describe (re-exporting gives the same files); otherwise the
adapter converts as any peft adapter (a c_attn LoRA then stays one LoRA on the whole fused projection).

Refused, with one line saying why: non-LoRA methods, DoRA, a rank or alpha that differs per module
(rank_pattern / alpha_pattern), layers_to_transform / layers_pattern, LoRA on embeddings or convolutions, lora_bias,
trainable tokens, target_parameters, layer replication and other peft variants the suite does not implement, and
modules_to_save inside the pretrained body (the suite trains only LoRA, biases if asked, and the task head).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_repro.config import conf_dir
from lora_repro.errors import MissingInputError, UnsupportedError, UserError
from lora_repro.methods.common import CONFIG_FILE, WEIGHTS_FILE, read_method_config, save_method_weights
from lora_repro.methods.lora_layer import check_alpha, check_rank
from lora_repro.models.families import FAMILIES

SUPPORTED_METHODS = ("lora", "rslora")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_WEIGHTS_BIN = "adapter_model.bin"
PREFIX = "base_model.model."
META_METHOD, META_BASE, META_FUSED = "lora_repro.method", "lora_repro.base_model", "lora_repro.fused"

# peft settings the suite has no counterpart for: a set value refuses the adapter (field -> what it is)
UNSUPPORTED_PEFT = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "lora_bias": "a trainable bias on lora_B",
    "layers_to_transform": "LoRA on a subset of the layers",
    "layers_pattern": "LoRA on a subset of the layers",
    "layer_replication": "layer replication",
    "trainable_token_indices": "trainable token embeddings",
    "target_parameters": "LoRA on nn.Parameter targets",
    "exclude_modules": "excluded modules",
    "use_qalora": "QA-LoRA",
    "use_bdlora": "block-diagonal LoRA",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "megatron_config": "Megatron parallel layers",
    "arrow_config": "Arrow routing",
}


# ------------------------------------------------------------------------------------------- reading checkpoints
def method_dir(path: str | Path) -> Path:
    """A run folder (its method/ subfolder) or a method checkpoint folder itself."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"{path}: no such folder (give a run folder or its method/ checkpoint folder)")
    directory = path / "method" if (path / "method" / CONFIG_FILE).is_file() else path
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise MissingInputError(f"{path}: no {CONFIG_FILE} + {WEIGHTS_FILE} here or in {path / 'method'}: "
                                "not a run folder or a saved method checkpoint")
    return directory


def split_lora_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(plain {module: (A, B)}, fused {module: {slice: (A, B)}}, other {key: tensor}) of a suite checkpoint."""
    plain, fused, other, pieces = {}, {}, {}, {}
    for key, tensor in state.items():
        m = re.fullmatch(r"(.+)\.lora\.([^.]+)\.lora_([AB])", key) or re.fullmatch(r"(.+)\.lora_([AB])", key)
        if m is None:
            other[key] = tensor
        elif m.re.groups == 3:
            pieces.setdefault((m[1], m[2]), {})[m[3]] = tensor
        else:
            pieces.setdefault((m[1], None), {})[m[2]] = tensor
    for (module, part), ab in sorted(pieces.items()):
        if set(ab) != {"A", "B"}:
            have = "".join(ab)
            raise UserError(f"checkpoint has {module} lora_{have} without its lora_{'AB'.replace(have, '')}")
        if part is None:
            plain[module] = (ab["A"], ab["B"])
        else:
            fused.setdefault(module, {})[part] = (ab["A"], ab["B"])
    return plain, fused, other


def body_prefixes(modules) -> set[str]:
    """The pretrained body's top-level names (LoRA only sits in the body): 'bert', 'model', 'transformer'."""
    return {m.split(".")[0] for m in modules}


def is_head_key(key: str, body: set[str]) -> bool:
    return key.split(".")[0] not in body | {"lm_head"}


def run_config(directory: Path) -> dict:
    """The run's resolved config (results.json next to method/), if there is one."""
    results = directory.parent / "results.json"
    if directory.name in ("method", "method_best") and results.is_file():
        try:
            return json.loads(results.read_text()).get("config") or {}
        except (json.JSONDecodeError, AttributeError):
            return {}
    return {}


def model_settings(directory: Path, name: str) -> dict:
    """The model config of the run (results.json), else conf/model/<name>.yaml, else {}."""
    model = run_config(directory).get("model") or {}
    if model:
        return model
    path = conf_dir() / "model" / f"{name}.yaml"
    if path.is_file():
        import yaml

        return yaml.safe_load(path.read_text()) or {}
    return {}


def fused_layout(fused: dict) -> tuple[dict[str, list[tuple[str, int, int]]], dict[str, int]]:
    """Each fused module's slices as (name, start, stop), in the family's order (as LoRAFusedLinear holds them),
    and its number of outputs."""
    layout, outputs = {}, {}
    for module, parts in fused.items():
        family = next((f for f in FAMILIES.values() if f.fused_qkv and re.search(rf"(^|\.)(?:{f.fused_qkv})$", module)),
                      None)
        if family is None or not set(parts) <= set(family.fused_order):
            raise UnsupportedError(f"{module}: LoRA slices {sorted(parts)} of a fused projection no family describes "
                                   "(only GPT-2's q|k|v c_attn): cannot place them in one peft LoRA")
        sizes = {b.shape[0] for _, b in parts.values()}
        if len(sizes) != 1:
            raise UnsupportedError(f"{module}: slices of different sizes {sorted(sizes)}: not equal parts of q|k|v")
        size = sizes.pop()
        layout[module] = [(s, family.fused_order.index(s) * size, (family.fused_order.index(s) + 1) * size)
                          for s in family.fused_order if s in parts]
        outputs[module] = len(family.fused_order) * size
    return layout, outputs


# ------------------------------------------------------------------------------------------------ suite -> peft
def peft_adapter(meta: dict, state: dict[str, torch.Tensor], model: dict | None = None,
                 base_model: str | None = None, task_type: str | None = None) -> tuple[dict, dict, dict]:
    """(adapter_config, adapter tensors, safetensors metadata) equal to the suite checkpoint ``meta``/``state``."""
    method = meta.get("method") or {}
    name = method.get("name")
    if name not in SUPPORTED_METHODS:
        raise UnsupportedError(f"method {name!r} has no peft LoRA counterpart; only these export: "
                               f"{', '.join(SUPPORTED_METHODS)}")
    r, alpha = method.get("r", 8), method.get("alpha", method.get("r", 8))
    rslora = name == "rslora"
    bias = method.get("bias", "none")
    plain, fused, other = split_lora_state(state)
    if not plain and not fused:
        raise UserError("checkpoint holds no LoRA A/B parameters")
    for module, (a, b) in plain.items():
        if a.shape[0] != r or b.shape[1] != r:
            raise UserError(f"{module}: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} do not have the config's "
                            f"r={r}")
    for module, parts in fused.items():
        for part, (a, b) in parts.items():
            if a.shape[0] != r or b.shape[1] != r:
                raise UserError(f"{module} slice {part}: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} do not "
                                f"have the config's r={r}")
    layout, outputs = fused_layout(fused)
    wrapped = set(plain) | set(fused)
    in_head = sorted(m for m in wrapped if f"{m}.base.weight" in other)  # a wrapped layer whose W0 trains: head
    if in_head:
        raise UnsupportedError(f"LoRA on task-head layers ({', '.join(in_head)}): peft keeps the head whole in "
                               "modules_to_save and puts no LoRA inside it; export a run whose targets are in the "
                               "pretrained body")
    body = body_prefixes(wrapped)
    tensors, head_modules = {}, set()
    for module, (a, b) in plain.items():
        tensors[f"{PREFIX}{module}.lora_A.weight"] = a
        tensors[f"{PREFIX}{module}.lora_B.weight"] = b
    fused_r = {}
    for module, slices in layout.items():
        r_big = r * len(slices)
        big_b = torch.zeros(outputs[module], r_big, dtype=fused[module][slices[0][0]][1].dtype)
        for i, (part, start, stop) in enumerate(slices):
            big_b[start:stop, i * r:(i + 1) * r] = fused[module][part][1]
        tensors[f"{PREFIX}{module}.lora_A.weight"] = torch.cat([fused[module][p][0] for p, _, _ in slices]).contiguous()
        tensors[f"{PREFIX}{module}.lora_B.weight"] = big_b
        fused_r[module] = r_big
    for key, tensor in other.items():
        if is_head_key(key, body):
            head_modules.add(key.split(".")[0])
            tensors[PREFIX + key] = tensor
        elif key.endswith(".bias") and bias != "none":
            owner = key[:-len(".base.bias")] if key.endswith(".base.bias") else None
            tensors[PREFIX + (f"{owner}.base_layer.bias" if owner in wrapped else key)] = tensor
        else:
            raise UnsupportedError(f"checkpoint parameter {key} is in the pretrained body but is no LoRA weight or "
                                   "bias: peft's LoRA has no place for it")
    model = model or {}
    model_type = (model.get("architecture") or {}).get("model_type")
    gpt2_layers = FAMILIES["gpt2"].modules.values()  # Conv1D: c_attn, c_proj, c_fc
    fan_in_fan_out = (model_type == "gpt2" if model_type else
                      all(any(re.search(rf"(^|\.)(?:{p})$", m) for p in gpt2_layers) for m in wrapped))

    def peft_alpha(rank: int) -> float:  # peft's scaling lora_alpha / r (or / sqrt(r)) equal to the suite's
        exact = alpha * rank / r if not rslora else alpha * math.sqrt(rank / r)
        return int(exact) if float(exact).is_integer() else exact

    all_fused = not plain
    config = {
        "peft_type": "LORA",
        "task_type": task_type or ("SEQ_CLS" if head_modules else "CAUSAL_LM"),
        "base_model_name_or_path": base_model or model.get("hub_id") or model.get("path") or meta.get("base_model"),
        "r": next(iter(fused_r.values())) if all_fused else r,
        "lora_alpha": peft_alpha(next(iter(fused_r.values()))) if all_fused else alpha,
        "lora_dropout": float(method.get("dropout", 0.0)),
        "bias": bias,
        "use_rslora": rslora,
        "use_dora": False,
        "fan_in_fan_out": fan_in_fan_out,
        "target_modules": sorted(wrapped),
        "modules_to_save": sorted(head_modules) or None,
        "rank_pattern": {} if all_fused else {re.escape(m): rk for m, rk in sorted(fused_r.items())},
        "alpha_pattern": {} if all_fused else {re.escape(m): peft_alpha(rk) for m, rk in sorted(fused_r.items())},
        "init_lora_weights": True,
        "inference_mode": True,
    }
    metadata = {"format": "pt", META_METHOD: json.dumps(method, sort_keys=True),
                META_BASE: json.dumps(meta.get("base_model")),
                META_FUSED: json.dumps({m: [list(s) for s in slices] for m, slices in layout.items()})}
    return config, tensors, metadata


def to_peft(run_dir: str | Path, out_dir: str | Path, base_model: str | None = None,
            task_type: str | None = None) -> Path:
    """Write peft's adapter_config.json + adapter_model.safetensors for the suite checkpoint in ``run_dir``."""
    directory = method_dir(run_dir)
    meta = read_method_config(directory)
    state = load_file(str(directory / WEIGHTS_FILE))
    config, tensors, metadata = peft_adapter(meta, state, model_settings(directory, meta.get("base_model") or ""),
                                             base_model, task_type)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / PEFT_WEIGHTS), metadata=metadata)
    (out / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


# ------------------------------------------------------------------------------------------------ peft -> suite
def read_peft(peft_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    peft_dir = Path(peft_dir)
    if not peft_dir.is_dir():
        raise MissingInputError(f"{peft_dir}: no such folder (give a peft adapter folder, as save_pretrained wrote it)")
    if not (peft_dir / PEFT_CONFIG).is_file():
        raise MissingInputError(f"{peft_dir}: no {PEFT_CONFIG}: not a peft adapter folder")
    config = json.loads((peft_dir / PEFT_CONFIG).read_text())
    if (peft_dir / PEFT_WEIGHTS).is_file():
        with safe_open(str(peft_dir / PEFT_WEIGHTS), "pt") as f:
            metadata = f.metadata() or {}
        return config, load_file(str(peft_dir / PEFT_WEIGHTS)), metadata
    if (peft_dir / PEFT_WEIGHTS_BIN).is_file():
        return config, torch.load(peft_dir / PEFT_WEIGHTS_BIN, map_location="cpu", weights_only=True), {}
    raise MissingInputError(f"{peft_dir}: no {PEFT_WEIGHTS} (or {PEFT_WEIGHTS_BIN}): not a peft adapter folder")


def check_peft_config(config: dict, patterns_ok: bool = False) -> None:
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise UnsupportedError(f"peft_type {peft_type!r}: only peft LoRA adapters (peft_type LORA) convert, to the "
                               f"suite's {' / '.join(SUPPORTED_METHODS)}")
    for field, what in UNSUPPORTED_PEFT.items():
        if config.get(field) not in (None, False, [], {}, ""):
            raise UnsupportedError(f"peft adapter uses {field}={config[field]!r} ({what}): this converter has no "
                                   "counterpart for it; only plain LoRA (with use_rslora, bias, modules_to_save) "
                                   f"converts, to the suite's {' / '.join(SUPPORTED_METHODS)}")
    for field in ("rank_pattern", "alpha_pattern"):
        if config.get(field) and not patterns_ok:
            raise UnsupportedError(f"peft adapter sets {field}={config[field]!r}: the suite's LoRA has one r and one "
                                   "alpha for every adapted module")
    if config.get("target_modules") in (None, [], "") or config.get("target_modules") == "all-linear":
        raise UnsupportedError(f"peft adapter target_modules={config.get('target_modules')!r}: name the adapted "
                               "modules (a list or a regex); the suite does not resolve peft's per-model defaults")
    bias = config.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        raise UnsupportedError(f"peft adapter bias={bias!r}; choices: none, all, lora_only")


def suite_targets(target_modules, body: set[str] = frozenset(), head_modules: set[str] = frozenset()) -> list[str]:
    """peft's target_modules as the suite's regex targets (matched as ``(^|\\.)(?:t)$`` against module names).

    peft puts no LoRA inside modules_to_save (the head); the suite's targets would match head layers too, so a target
    that matches one of ``head_modules`` is kept to the pretrained body (names starting with one of ``body``)."""
    regex = isinstance(target_modules, str)
    only_body = f"(?=(?:{'|'.join(re.escape(b) for b in sorted(body))})\\.)" if body else ""
    out = []
    for entry in [target_modules] if regex else sorted(target_modules):
        # the names peft adapts: re.fullmatch(regex, name), or name == entry or name.endswith("." + entry)
        full = f"(?:{entry})" if regex else f"(?:.*\\.)?{re.escape(entry)}"
        if any(re.fullmatch(full, h) for h in head_modules):
            out.append(f"^{only_body}{full}")
        else:
            out.append(f"^{full}" if regex else re.escape(entry))
    return out


def suite_checkpoint(config: dict, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(method config, suite state) of a plain peft LoRA adapter."""
    check_peft_config(config)
    r, alpha = check_rank(config.get("r", 8)), check_alpha(config.get("lora_alpha", 8))
    method = {"name": "rslora" if config.get("use_rslora") else "lora", "r": r, "alpha": alpha,
              "targets": [], "dropout": float(config.get("lora_dropout") or 0.0),
              "init": "kaiming", "init_std": 0.02, "bias": config.get("bias", "none")}
    lora, rest = {}, {}
    for key, tensor in tensors.items():
        if not key.startswith(PREFIX):
            raise UnsupportedError(f"peft adapter key {key} does not start with {PREFIX!r}: not a LoRA model's save")
        key = key[len(PREFIX):]
        m = re.fullmatch(r"(.+)\.lora_([AB])\.weight", key)
        if m:
            if tensor.ndim != 2:
                raise UnsupportedError(f"peft adapter {key} has shape {tuple(tensor.shape)}: LoRA on a convolution; "
                                       "the suite's LoRA wraps linear layers (nn.Linear, GPT-2 Conv1D) only")
            lora.setdefault(m[1], {})[m[2]] = tensor
        elif re.search(r"\.lora_(embedding_[AB]|magnitude_vector|[AB])\b", key):
            what = "LoRA on an embedding" if "embedding" in key else "DoRA or another LoRA variant"
            raise UnsupportedError(f"peft adapter key {key}: {what}; the suite's LoRA wraps linear layers only")
        else:
            rest[key] = tensor
    if not lora:
        raise UserError("peft adapter holds no lora_A/lora_B weights")
    state = {}
    for module, ab in sorted(lora.items()):
        if set(ab) != {"A", "B"}:
            raise UserError(f"peft adapter has {module}.lora_{''.join(ab)} without the other half")
        if ab["A"].shape[0] != r or ab["B"].shape[1] != r:
            raise UnsupportedError(f"peft adapter {module} has rank {ab['A'].shape[0]}, the config r={r}: the suite's "
                                   "LoRA has one rank for every module")
        state[f"{module}.lora_A"], state[f"{module}.lora_B"] = ab["A"], ab["B"]
    body = body_prefixes(lora)
    head_modules = {k.rsplit(".", 1)[0] for k in rest if is_head_key(k, body)}
    method["targets"] = suite_targets(config["target_modules"], body, head_modules)
    bias = method["bias"]
    for key, tensor in rest.items():
        if ".original_module." in key or ".modules_to_save." in key:
            continue  # bias="all" also saves the frozen copy and a duplicate of a modules_to_save bias
        if key.endswith(".base_layer.bias") and key[:-len(".base_layer.bias")] in lora:
            if bias == "none":
                raise UnsupportedError(f"peft adapter bias='none' but it saves {key}")
            state[key[:-len(".base_layer.bias")] + ".base.bias"] = tensor
        elif is_head_key(key, body):
            state[key] = tensor  # modules_to_save: the task head
        elif key.endswith("bias") and bias == "all":
            state[key] = tensor
        else:
            raise UnsupportedError(f"peft adapter saves {key} (modules_to_save inside the pretrained body, or an "
                                   "unknown key): the suite trains only LoRA A/B, biases (bias=all|lora_only) and the "
                                   "task head outside the body")
    return method, state


def restore_suite_checkpoint(config: dict, tensors: dict, metadata: dict) -> tuple[dict, dict] | None:
    """The suite checkpoint an export from this suite came from, when the adapter is still exactly that one
    (re-exporting it gives the same config and tensors). None otherwise."""
    if META_METHOD not in metadata:
        return None
    try:
        method = json.loads(metadata[META_METHOD])
        layout = json.loads(metadata.get(META_FUSED, "{}"))
        r = method.get("r", 8)
        state = {}
        for key, tensor in tensors.items():
            key = key[len(PREFIX):] if key.startswith(PREFIX) else key
            m = re.fullmatch(r"(.+)\.lora_([AB])\.weight", key)
            if m and m[1] in layout:
                for i, (part, start, stop) in enumerate(layout[m[1]]):
                    piece = tensor[i * r:(i + 1) * r] if m[2] == "A" else tensor[start:stop, i * r:(i + 1) * r]
                    state[f"{m[1]}.lora.{part}.lora_{m[2]}"] = piece.contiguous()
            elif m:
                state[f"{m[1]}.lora_{m[2]}"] = tensor
            elif key.endswith(".base_layer.bias"):
                state[key[:-len(".base_layer.bias")] + ".base.bias"] = tensor
            else:
                state[key] = tensor
        again, again_tensors, _ = peft_adapter({"method": method}, state, task_type=config.get("task_type"),
                                               base_model=config.get("base_model_name_or_path"))
    except (UserError, ValueError, KeyError, TypeError, IndexError, RuntimeError):
        return None
    same_config = all(again[k] == config.get(k, again[k]) for k in
                      ("r", "lora_alpha", "use_rslora", "target_modules", "rank_pattern", "alpha_pattern", "bias",
                       "lora_dropout"))
    same_tensors = set(again_tensors) == set(tensors) and all(torch.equal(again_tensors[k], tensors[k])
                                                              for k in tensors)
    return (method, state) if same_config and same_tensors and not config.get("use_dora") else None


def from_peft(peft_dir: str | Path, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write a suite method checkpoint (method.safetensors + method_config.json) for a peft LoRA adapter."""
    config, tensors, metadata = read_peft(peft_dir)
    restored = restore_suite_checkpoint(config, tensors, metadata)
    if restored is not None:
        check_peft_config(config, patterns_ok=True)
        method, state = restored
        name = json.loads(metadata.get(META_BASE, "null"))
    else:
        method, state = suite_checkpoint(config, tensors)
        name = None
    base = base_model or name or config.get("base_model_name_or_path")
    lora_keys = [k for k in state if ".lora_A" in k or ".lora_B" in k or ".lora." in k]
    body = body_prefixes(k.split(".lora")[0] for k in lora_keys)
    trainable = sum(t.numel() for t in state.values())
    head = sum(t.numel() for k, t in state.items() if is_head_key(k, body))
    counts = {"total": None, "trainable": trainable, "trainable_head": head, "trainable_without_head": trainable - head}
    return save_method_weights(None, out_dir, method, base, state_dict=state, counts=counts)


# ------------------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_repro.export",
                                     description="Move LoRA checkpoints between lora_repro and peft.")
    sub = parser.add_subparsers(dest="command", required=True)
    to = sub.add_parser("peft", help="suite run/method checkpoint -> peft adapter folder")
    to.add_argument("run_dir", help="a run folder (with method/) or a method checkpoint folder")
    to.add_argument("out_dir", help="where adapter_config.json and adapter_model.safetensors go")
    to.add_argument("--base-model", help="base_model_name_or_path to write (default: the run's hub_id or model name)")
    to.add_argument("--task-type", choices=("SEQ_CLS", "CAUSAL_LM"),
                    help="peft task_type (default: SEQ_CLS when the checkpoint has a task head, else CAUSAL_LM)")
    back = sub.add_parser("from-peft", help="peft LoRA adapter folder -> suite method checkpoint")
    back.add_argument("peft_dir", help="a folder peft's save_pretrained wrote")
    back.add_argument("out_dir", help="where method.safetensors and method_config.json go")
    back.add_argument("--base-model", help="base model name to record (default: the adapter's base_model_name_or_path)")
    args = parser.parse_args(argv)
    try:
        if args.command == "peft":
            out = to_peft(args.run_dir, args.out_dir, args.base_model, args.task_type)
        else:
            out = from_peft(args.peft_dir, args.out_dir, args.base_model)
    except UserError as error:
        print(f"lora_repro: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
