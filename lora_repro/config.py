"""Where the Hydra configs live and one way to compose them outside the CLI (benchmarks, reports, notebooks, tests).

The configs are the package ``lora_repro.conf`` (the repository's ``conf/`` folder, shipped in the wheel), so the
same composition works from a checkout, an editable install and an installed wheel, from any working directory.
"""
from __future__ import annotations

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

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=hydra_config)
