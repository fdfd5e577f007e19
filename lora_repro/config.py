"""Where the Hydra configs live and one way to compose them outside the CLI (benchmarks, reports, notebooks, tests).

The configs are the package ``lora_repro.conf`` (the repository's ``conf/`` folder, shipped in the wheel), so the
same composition works from a checkout, an editable install and an installed wheel, from any working directory.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

CONF_PACKAGE = "lora_repro.conf"
CONFIG_NAME = "config"


def conf_dir() -> Path:
    """The folder holding config.yaml and the config groups (model, task, method, trainer, experiment, hydra)."""
    return Path(str(resources.files(CONF_PACKAGE)))


def compose(overrides: list[str] | tuple[str, ...] = (), hydra_config: bool = False):
    """The config ``python -m lora_repro OVERRIDES...`` would run (a DictConfig; ``run.to_dict`` resolves it)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a job of the CLI): compose with its search path
        return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=hydra_config)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=hydra_config)


def group_config(group: str, option: str, overrides: dict | None = None) -> dict:
    """One config group's option as Hydra composes it (``group_config("method", "lora_pl")``: its defaults list and
    interpolations resolved), ``overrides`` merged: the yaml states each default once, for every reader."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(_composed_group(group, option), {group: overrides or {}})
    return OmegaConf.to_container(merged, resolve=True)[group]


@functools.cache
def _composed_group(group: str, option: str):
    from omegaconf import OmegaConf

    return OmegaConf.create({group: OmegaConf.to_container(compose([f"{group}={option}"])[group])})


@functools.cache
def declared_settings(group: str, option: str | None = None) -> frozenset[str]:
    """The setting names a config group declares: those of ``option``, or of every option of the group (its yaml
    files) when None. What a job may set in that group; anything else is a typo."""
    options = [option] if option else sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
    return frozenset(key for name in options for key in _composed_group(group, name)[group].keys())
