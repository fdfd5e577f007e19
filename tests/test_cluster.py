"""Cluster sweeps: the launcher configs, failure records, and a real sweep through hydra-submitit-launcher's
``submitit_local`` (each job its own subprocess) with one forced failure, then an idempotent re-run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lora_repro import results as rs
from lora_repro.config import compose

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_slurm_launcher_config_wraps_submitit_slurm_with_the_cluster_fields():
    cfg = compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=lora",
                    "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4"], hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["partition"], launcher["account"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (
        "gpu", "lora", 4, 4)
    assert launcher["max_num_timeout"] > 0  # requeued on timeout: resumable runs make that safe
    assert launcher["timeout_min"] > 0 and launcher["mem_gb"] > 0 and launcher["array_parallelism"] > 0
    assert any("OMP_NUM_THREADS=8" in line for line in launcher["setup"])  # interpolated from cpus_per_task


def test_slurm_launcher_writes_the_sbatch_script_of_a_job_array(tmp_path, monkeypatch):
    """The real SlurmLauncher.launch with our config, stopped at the sbatch call (no SLURM here)."""
    import submitit
    from hydra.utils import instantiate

    class Submitted(Exception):
        pass

    def capture(executor, command):
        raise Submitted(executor._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were here
    monkeypatch.setattr(submitit.SlurmExecutor, "_submit_command", capture)
    cfg = compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=lora",
                    f"output_root={tmp_path}"], hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["seed=0"], ["seed=1"], ["seed=2"]], initial_job_idx=0)
    sbatch = submitted.value.args[0]
    for line in ("--partition=gpu", "--account=lora", "--gpus-per-node=1", "--array=0-2%3", "--time=720",
                 "--mem=64GB", "--cpus-per-task=8", "--signal=USR2@300", "export OMP_NUM_THREADS=8"):
        assert line in sbatch, f"{line} not in:\n{sbatch}"
    assert str(tmp_path / ".hydra") in sbatch  # job logs under the sweep folder


def test_local_launcher_config_wraps_submitit_local():
    launcher = compose(["hydra/launcher=local"], hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert launcher.gpus_per_node == 0 and launcher.timeout_min >= 60


def test_a_job_failing_before_training_still_leaves_a_failed_record(tmp_path):
    # a bug before training (not a user error: those write nothing, tests/test_errors.py)
    from lora_repro.run import record_failure, resolved_config, run_dir_for, to_dict

    cfg = compose([f"output_root={tmp_path}", "smoke=true"])
    path = record_failure(cfg, RuntimeError("tokenizer exploded"))
    record = rs.read_results(path.parent)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: tokenizer exploded"
    assert path.parent == run_dir_for(resolved_config(to_dict(cfg))) and record["method"] == "lora"
    assert record["seed"] == 0
    # a job's own (richer) record is never overwritten
    rs.write_json_atomic(path, {**record, "error": "the job's own words"})
    assert record_failure(cfg, ValueError("later")) is None
    assert rs.read_results(path.parent)["error"] == "the job's own words"


def test_submitit_multi_task_job_exports_torch_distributed_variables(monkeypatch):
    from lora_repro.__main__ import export_submitit_distributed_env

    for key in DISTRIBUTED_VARIABLES:  # set then delete: monkeypatch restores them (absent) after the test
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    export_submitit_distributed_env()  # not a submitit job: nothing changes
    assert "RANK" not in os.environ
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    for key, value in {"JOB_ID": "123", "NTASKS": "2", "JOB_NUM_NODES": "1", "NODEID": "0", "GLOBALID": "1",
                       "LOCALID": "1"}.items():
        monkeypatch.setenv(f"SUBMITIT_LOCAL_{key}", value)
    export_submitit_distributed_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] and int(os.environ["MASTER_PORT"]) > 0


SWEEP = ["smoke=true", "data_source=local", "trainer.max_steps=2", "trainer.lr_scheduler=linear,cosine,constant,bogus"]


def sweep(output_root: Path, *extra: str) -> subprocess.CompletedProcess:
    # synthetic smoke rows (never the hub); single-process jobs (a stray WORLD_SIZE would make them wait for peers)
    env = {k: v for k, v in os.environ.items() if k not in ("LORA_REPRO_DATA", *DISTRIBUTED_VARIABLES)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "lora_repro", "-m", *SWEEP, f"output_root={output_root}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=420)


def records(root: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted((root / "default").glob(f"*/seed0/{rs.RESULTS_FILE}"))}


def test_submitit_local_sweep_with_a_failure_then_rerun_runs_only_the_failed_job(tmp_path):
    done = sweep(tmp_path, "hydra/launcher=local", "hydra.launcher.timeout_min=6")  # submitit ends stuck jobs
    assert done.returncode == 0, done.stderr[-3000:]  # one job failing does not stop the sweep
    found = records(tmp_path)
    assert len(found) == 4
    by_status = {s: [p for p, r in found.items() if r["status"] == s] for s in ("complete", "failed")}
    assert len(by_status["complete"]) == 3 and len(by_status["failed"]) == 1
    (failed,) = by_status["failed"]
    assert "bogus is not a valid SchedulerType" in found[failed]["error"]
    assert found[failed]["config"]["trainer"]["lr_scheduler"] == "bogus"
    # real submitit jobs: one folder per job with its pickled result
    assert len(list(tmp_path.glob(".hydra/*/*/.submitit/*/*_result.pkl"))) == 4
    # the submitting console says each job's end, once (lora_repro.job_states)
    console = done.stdout + done.stderr
    assert console.count(": ended: done (log: ") == 3 and console.count(": ended: failed (log: ") == 1, console[-3000:]

    from lora_repro.report.__main__ import main as report

    report([str(tmp_path), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report.md").read_text()
    missing = text.split("## Missing or failed runs")[1]
    assert str(failed.parent) in missing and "failed" in missing and "SchedulerType" in missing
    assert all(str(p.parent) not in missing for p in by_status["complete"])
    import pandas as pd

    summary = pd.read_csv(tmp_path / "report.csv")
    assert len(summary) == 3 and set(summary.n_seeds) == {1}  # the three completed settings, each tabulated

    before = {p: p.stat().st_mtime_ns for p in found}
    again = sweep(tmp_path)  # the same sweep again (basic launcher: one process, so the test stays quick)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already complete, skipping") == 3
    after = records(tmp_path)
    for path in by_status["complete"]:
        assert path.stat().st_mtime_ns == before[path] and after[path] == found[path]  # untouched
    assert failed.stat().st_mtime_ns != before[failed] and after[failed]["status"] == "failed"  # tried again


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model_data_parallel(tmp_path):
    """torchrun --nproc_per_node=2 on CPU (gloo): the global batch is split, rank 0 alone writes, the sealed
    checkpoint holds both ranks' RNG states, and the logged loss is a mean (not multiplied by the process count)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LORA_REPRO_DATA", *DISTRIBUTED_VARIABLES)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "lora_repro", "smoke=true",
         "data_source=local", "trainer.batch_size=8", "trainer.epochs=2", "trainer.save_steps=3",
         "trainer.keep_checkpoints=true", f"output_root={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    ((path, record),) = records(tmp_path).items()
    assert record["status"] == "complete" and record["global_steps"] == 8  # 32 examples / global batch 8, 2 epochs
    assert all(loss < 1.0 for loss in record["train_loss"])  # binary cross-entropy near ln 2, not 2 ln 2
    (kept,) = (path.parent / "checkpoints").glob("checkpoint-*")
    manifest = json.loads((kept / "manifest.json").read_text())
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainable.safetensors"} <= set(manifest["files"])
    assert (path.parent / "method" / "method.safetensors").is_file()


def test_job_states_are_read_from_submitit_files(tmp_path):
    from lora_repro.job_states import job_states

    for job, text, result in [("7_0", "started\n", False), ("7_1", "Traceback (most recent call last):\n", True),
                              ("8", "submitit WARNING (2026-12-01 11:31:00,454) - Caught signal SIGUSR2 on vm\n"
                                    "[2026-12-01 11:31:00,454][submitit][WARNING] - Caught signal SIGUSR2 on vm\n"
                                    "submitit WARNING (2026-12-01 11:32:07,001) - Caught signal SIGUSR2 on vm\n", False),
                              ("9", "lora_repro: error: trainer.lr='x': must be a non-negative number\n", True),
                              ("10", "done\n", True)]:
        (tmp_path / job).mkdir()
        (tmp_path / job / f"{job}_0_log.out").write_text(text)
        if result:
            (tmp_path / job / f"{job}_0_result.pkl").write_bytes(b"")
    assert job_states(tmp_path) == {"7_0_0": "running", "7_1_0": "ended: failed", "8_0": "requeued (2x)",
                                    "9_0": "ended: invalid", "10_0": "ended: done"}
