"""The Hydra configs (``python -m lora_repro`` composes ``config.yaml`` and the groups beside it). This folder ships
inside the package as ``lora_repro.conf`` (pyproject.toml's package-dir), so an installed wheel finds its configs."""
