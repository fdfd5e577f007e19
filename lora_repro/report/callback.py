"""Hydra callback that prints an experiment's table when its sweep ends. Jobs catch their own errors, so one failed
job does not stop this from running (Hydra skips on_multirun_end when a job raises); the report lists failures."""
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lora_repro.report.table import NoResults, write_report


class PrintReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.output_root) / config.run_group
        if not root.is_dir():
            return
        try:
            print(write_report([str(root)], root / "report", title=f"{config.run_group} ({root})"))
        except NoResults as error:  # every job failed before it could write a record
            print(error)
