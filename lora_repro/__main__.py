"""``lora-repro`` / ``python -m lora_repro [+experiment=NAME] [key=value ...]``: one job, or a sweep with ``-m``.

Bad input (an unknown task or method, a setting of the wrong type, missing data, a malformed data row, a target that
matches nothing) is a ``lora_repro.errors.UserError``: one line naming the setting and the choices, exit code 2,
nothing written. Any other exception is a bug and keeps its traceback (in a sweep: logged with it, and the job's
results.json says ``failed``). HYDRA_FULL_ERROR=1 shows a user error's traceback too.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lora_repro.config import CONFIG_NAME, conf_dir
from lora_repro.errors import UserError


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> dict | None:
    # imported here, in the job: a process that only submits a sweep (SLURM login node) never loads torch
    from lora_repro.run import record_failure, run

    logging.getLogger("lora_repro").setLevel(logging.INFO)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    export_submitit_distributed_env()
    try:
        return run(cfg)
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"lora_repro: error: {error}", file=sys.stderr)
        if multirun:  # one bad job must not stop the sweep; the sweep's log names it
            return {"status": "invalid", "error": str(error)}
        sys.exit(2)
    except Exception as error:
        if not multirun:
            raise
        record_failure(cfg, error)  # a job that failed before training started still leaves a failed record
        logging.getLogger("lora_repro").exception("job failed")  # keep the sweep going; results.json says failed
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


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


class QuietSacct(logging.Filter):
    """submitit polls ``sacct`` for job states; on a cluster without accounting every poll fails and logs the same
    warning three times (submitit's two handlers, then Hydra's). Said once, in one line, and then, when sacct says that
    accounting is disabled, no more polls (states come from submitit's result files either way)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if getattr(self, "said", False):
            return False
        import subprocess

        from submitit.slurm.slurm import SlurmJob

        self.said = True
        try:
            why = subprocess.run(["sacct", "-n", "-j", "1"], capture_output=True, text=True, timeout=60).stderr
        except (OSError, subprocess.SubprocessError) as error:
            why = str(error)
        if "accounting storage is disabled" in why or "No such file" in why:
            SlurmJob.watcher._make_command = lambda: None  # nothing to ask: no more failing polls
        logging.getLogger("lora_repro").warning(  # one line (submitit's own record would print three)
            "sacct failed (%s): job states come from submitit's result files (a job killed outside submitit is not "
            "seen to end)", (why or record.getMessage()).strip())
        return False


logging.getLogger("submitit").addFilter(QuietSacct())

if __name__ == "__main__":
    main()
