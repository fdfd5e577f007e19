"""wandb as an optional mirror of results.json (the source of truth stays the local file).

``wandb.mode``: ``disabled`` (default: wandb is not even imported, so nothing touches the network), ``offline``
(run folders under ``wandb.dir``, else $WANDB_DIR, else the run directory; upload later with ``wandb sync``) or
``online``. One wandb group per table (or run group) / model / task / method, one run per seed named ``seed<N>``,
the resolved config as a plain dict. The wandb run id derives from the run directory, so a resumed or requeued job
continues its wandb run. Runs are always finished, with exit code 1 when the job failed.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from lora_repro.errors import UserError

log = logging.getLogger("lora_repro")
MODES = ("disabled", "offline", "online")


def wandb_settings(cfg: dict) -> dict:
    settings = {"mode": "disabled", "project": "lora-repro", "entity": None, "group": None, "dir": None,
                "tags": [], **(cfg.get("wandb") or {})}
    if settings["mode"] not in MODES:
        raise UserError(f"wandb.mode must be one of {', '.join(MODES)}, got {settings['mode']!r}")
    return settings


def wandb_group(cfg: dict) -> str:
    """``table2/roberta-base/rte/lora``; the run group when the run belongs to no paper table."""
    table = cfg.get("table")
    scope = f"table{table}" if table is not None else cfg.get("run_group", "default")
    return f"{scope}/{cfg['model']['name']}/{cfg['task']['name']}/{cfg['method']['name']}"


def wandb_run_id(run_dir: str | Path) -> str:
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class Tracker:
    """Does nothing: wandb disabled, or not the main process."""

    def callbacks(self) -> list:
        return []

    def log_summary(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(Tracker):
    def __init__(self, run) -> None:
        self.run = run
        self.finished = False

    def callbacks(self) -> list:
        from transformers import TrainerCallback

        run = self.run

        class MirrorLogs(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                run.define_metric("train/global_step")
                run.define_metric("*", step_metric="train/global_step", step_sync=True)

            def on_log(self, args, state, control, logs=None, **kwargs):
                # the Trainer's own step as an ordinary key: a resumed run logs steps again, which wandb's
                # monotonic internal step would drop
                if state.is_world_process_zero and logs:
                    run.log({**{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                             "train/global_step": state.global_step})

        return [MirrorLogs()]

    def log_summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        if not self.finished:
            self.finished = True
            self.run.finish(exit_code=exit_code)


def start_tracking(cfg: dict, run_dir: str | Path, extra_config: dict | None = None,
                   main_process: bool = True) -> Tracker:
    """Open the wandb run of this job (or a no-op tracker); call ``finish`` in a ``finally``.

    ``extra_config`` (e.g. the config id) joins the resolved config; non-main processes get the no-op tracker."""
    settings = wandb_settings(cfg)
    if settings["mode"] == "disabled" or not main_process:
        return Tracker()
    import wandb

    directory = Path(settings["dir"] or os.environ.get("WANDB_DIR") or run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tags = [str(t) for t in (settings["tags"] or [])]
    tags += [str(t) for t in (cfg.get("run_group"), (extra_config or {}).get("config_id")) if t]
    tags += ["smoke"] if cfg.get("smoke") else []
    config = {**cfg, **(extra_config or {}), "run_dir": str(run_dir)}
    run = wandb.init(mode=settings["mode"], project=settings["project"], entity=settings["entity"],
                     group=settings["group"] or wandb_group(cfg), name=f"seed{cfg['seed']}", job_type="train",
                     id=wandb_run_id(run_dir), resume="allow", dir=str(directory), tags=tags,
                     config=config, reinit="create_new")
    log.info("wandb %s run %s (group %s) in %s", settings["mode"], run.id, run.group, directory)
    return WandbTracker(run)
