"""``python -m lora_repro [+experiment=NAME] [key=value ...]``: one job, or a sweep with ``-m``.

Bad input (unknown task or method, rank <= 0, missing data, a target that matches nothing) stops with a one-line
error before anything is written; HYDRA_FULL_ERROR=1 shows the traceback.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, NotImplementedError)
CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    # imported here, in the job: a process that only submits a sweep (SLURM login node) never loads torch
    from lora_repro.run import record_failure, run

    logging.getLogger("lora_repro").setLevel(logging.INFO)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    export_submitit_distributed_env()
    try:
        return run(cfg)
    except Exception as error:
        if multirun:  # the job leaves a failed results.json even when it failed before training started
            record_failure(cfg, error)
        if multirun and not isinstance(error, USER_ERRORS):  # keep the sweep going; results.json says "failed"
            logging.getLogger("lora_repro").exception("job failed")
            return {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        if not isinstance(error, USER_ERRORS):
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"lora_repro: error: {message}", file=sys.stderr)
        if multirun:  # one bad job must not stop the sweep; the report lists what is missing
            return {"status": "failed", "error": str(message)}
        sys.exit(2)


def export_submitit_distributed_env() -> None:
    """A submitit job with several tasks (``hydra.launcher.tasks_per_node=N``, one per GPU) becomes one data-parallel
    training: each task gets the torch.distributed variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) the Trainer reads.
    Outside submitit, or under torchrun / accelerate launch (which set them), nothing changes."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "WORLD_SIZE" in os.environ:
        return
    import submitit

    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job after all
        return
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


if __name__ == "__main__":
    main()
