"""One console line per job state change while a submitit sweep (SLURM or local) runs: started, requeued, ended.

Read from submitit's own files in the sweep's ``.submitit/`` folder (a job's log appears when it starts, a requeue
writes "Caught signal SIGUSR2" into it, its result file appears when it ends), so it works on clusters without SLURM
accounting, where ``sacct`` cannot say. A Hydra callback (``hydra.callbacks.job_states`` in conf/config.yaml) runs
it in the submitting process; with the basic launcher there is no ``.submitit/`` folder and it says nothing.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("lora_repro")
SIGNALLED = re.compile(r"(\d\d:\d\d:\d\d,\d{3})\S* - Caught signal SIGUSR2")


def job_states(folder: Path) -> dict[str, str]:
    """Each job's state from its files under ``folder`` (``<sweep>/.submitit``)."""
    found = {}
    for log_file in sorted(folder.glob("*/*_log.out")):
        job = log_file.name.removesuffix("_log.out")
        try:
            text = log_file.read_text(errors="replace")
        except OSError:
            continue
        # submitit writes each of its lines up to three times (two handlers and Hydra's): count distinct times
        requeues = len(set(SIGNALLED.findall(text)))
        state = f"requeued ({requeues}x)" if requeues else "running"
        if log_file.with_name(f"{job}_result.pkl").is_file():
            outcome = "invalid" if "lora_repro: error" in text else "failed" if "Traceback" in text else "done"
            state = f"ended: {outcome}"
        found[job] = state
    return found


class JobStateWatcher(threading.Thread):
    """Polls ``folder`` every ``poll_s`` seconds until stopped; logs each job's new state once."""

    def __init__(self, folder: Path, poll_s: float = 5.0):
        super().__init__(name="lora_repro-job-states", daemon=True)
        self.folder, self.poll_s, self.said, self.stopped = folder, poll_s, {}, threading.Event()

    def report(self) -> None:
        for job, state in job_states(self.folder).items():
            if self.said.get(job) != state:
                self.said[job] = state
                log.info("job %s: %s (log: %s)", job, state, self.folder / job.rsplit("_", 1)[0])

    def run(self) -> None:
        while not self.stopped.wait(self.poll_s):
            try:
                self.report()
            except Exception:  # watching must never take the sweep down: say why once and stop
                log.exception("job state watcher stopped")
                return


class JobStates(Callback):
    """Starts the watcher when a sweep starts and reports the final states when it ends."""

    def __init__(self, poll_s: float = 5.0) -> None:
        self.poll_s, self.watcher = poll_s, None

    def __getstate__(self) -> dict:  # submitit pickles the launcher, and with it the callbacks: not the thread
        return {"poll_s": self.poll_s, "watcher": None}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.watcher = JobStateWatcher(Path(str(config.hydra.sweep.dir)) / ".submitit", self.poll_s)
        self.watcher.start()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.watcher is not None:
            self.watcher.stopped.set()
            self.watcher.report()
