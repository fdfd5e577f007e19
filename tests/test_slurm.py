"""The cluster path on a real SLURM: a one-node cluster on this machine (tests/slurm_cluster.py: munged, slurmctld
and slurmd as root, no accounting), sweeps submitted through ``hydra/launcher=slurm`` exactly as on a cluster.

Three scenarios: a sweep with a job that fails (report names it; a re-run runs only it), a job that hits its time
limit several times and is requeued by submitit each time (its results equal an uninterrupted run's), and a job
array task killed with scancel (a re-run runs only that task). Skips (with the reason) without root or the
SLURM/munge packages, or when the daemons do not come up: ``.ci/run`` installs them.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402

from lora_repro import results as rs  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# smoke runs on synthetic rows: 32 examples, batch 4 (8 steps an epoch, a sealed checkpoint at every epoch end)
SMOKE = ["smoke=true", "data_source=local", "trainer.batch_size=4", "trainer.save_steps=null",
         "trainer.logging_steps=8", "trainer.progress=false"]
# CPU-only jobs of one core: the compute node is this machine, so the venv's python runs the pickled job
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            f"hydra.launcher.setup=['export OMP_NUM_THREADS=1','export HF_HUB_OFFLINE=1','export PYTHONPATH={REPO}']"]
# a 1-minute limit; SLURM checks limits every 30 s, so USR2 (signal_delay_s before the limit) comes 25-55 s in, and
# an attempt trains for 10-40 s of it (the rest is start-up). Each step is paced to take at least STEP_SECONDS
# (PACING, a sitecustomize on the jobs' PYTHONPATH), so 600 steps need 120 s of training: at least 3 attempts of at
# most 40 s, i.e. 2 time-outs or more, however fast the CPU; the pause changes no number.
STEPS, STEP_SECONDS = 600, 0.2
REQUEUE = [f"trainer.max_steps={STEPS}", "hydra.launcher.name=requeue", "hydra.launcher.timeout_min=1",
           "hydra.launcher.signal_delay_s=5", "hydra.launcher.max_num_timeout=15"]
PACING = """import os
if os.environ.get("LORA_REPRO_TEST_STEP_SECONDS"):  # tests/test_slurm.py: every training step takes that long
    import time
    import transformers

    _step = transformers.Trainer.training_step

    def _paced(self, *args, **kwargs):
        began = time.monotonic()
        try:
            return _step(self, *args, **kwargs)
        finally:
            time.sleep(max(0.0, float(os.environ["LORA_REPRO_TEST_STEP_SECONDS"]) - (time.monotonic() - began)))

    transformers.Trainer.training_step = _paced
"""
TIMEOUT_S = 900


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    try:
        conf = slurm_cluster.start(folder, cpus=2, mem_mb=4000)
    except slurm_cluster.ClusterUnavailable as error:
        pytest.skip(f"no one-node SLURM cluster here: {error}")
    yield conf
    slurm_cluster.stop(folder)


def environment(conf: Path, pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LORA_REPRO_DATA", *DISTRIBUTED_VARIABLES)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=":".join(map(str, filter(None, (REPO, pythonpath)))),
               SLURM_CONF=str(conf), HF_HUB_OFFLINE="1")
    return env


def command(root: Path, *overrides: str, sweep: bool = True, launcher: list[str] = LAUNCHER) -> list[str]:
    return [sys.executable, "-m", "lora_repro", *(["-m", *launcher] if sweep else []), *SMOKE, *overrides,
            f"output_root={root}"]


def start(conf: Path, root: Path, *overrides: str, sweep: bool = True, launcher: list[str] = LAUNCHER,
          pythonpath: Path | None = None) -> subprocess.Popen:
    """The submitting process (or a plain run), its console in ``<root>.<n>.console``."""
    root.mkdir(parents=True, exist_ok=True)
    console = root.parent / f"{root.name}.{len(list(root.parent.glob(f'{root.name}.*.console')))}.console"
    with open(console, "w") as out:
        process = subprocess.Popen(command(root, *overrides, sweep=sweep, launcher=launcher), cwd=REPO,
                                   env=environment(conf, pythonpath), stdout=out, stderr=subprocess.STDOUT, text=True)
    process.console = console
    return process


def finish(process: subprocess.Popen, timeout: float = TIMEOUT_S) -> str:
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    out = process.console.read_text()
    assert process.returncode == 0, out[-4000:]
    return out


def run_sweep(conf: Path, root: Path, *overrides: str) -> str:
    return finish(start(conf, root, *overrides))


def records(root: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in sorted(root.glob(f"default/*/seed*/{rs.RESULTS_FILE}"))}


def slurm_jobs(conf: Path, name: str) -> list[tuple[str, str]]:
    done = subprocess.run(["squeue", "-h", "-n", name, "-t", "all", "-o", "%i %T"], env=environment(conf),
                          capture_output=True, text=True, timeout=30)
    return [tuple(line.split()) for line in done.stdout.splitlines() if line.strip()]


def scontrol_field(conf: Path, job_id: str, field: str) -> str | None:
    done = subprocess.run(["scontrol", "show", "job", job_id], env=environment(conf), capture_output=True,
                          text=True, timeout=30)
    match = re.search(rf"\b{field}=(\S+)", done.stdout)
    return match.group(1) if match else None


def assert_quiet(console: str) -> None:
    """The submitting console: no sacct warning per poll (lora_repro.__main__.QuietSacct), at most one line."""
    assert "Bypassing sacct error" not in console, console[-3000:]
    assert console.count("sacct failed") <= 1


def test_a_slurm_sweep_with_a_failing_job_is_reported_and_rerun_runs_only_it(slurm, tmp_path):
    began = time.time()
    sweep = ["trainer.max_steps=2", "trainer.lr_scheduler=linear,bogus", "hydra.launcher.name=fail",
             "hydra.launcher.timeout_min=10"]
    console = run_sweep(slurm, tmp_path / "runs", *sweep)  # one job failing does not fail the sweep
    assert_quiet(console)
    found = records(tmp_path / "runs")
    by_status = {s: [p for p, r in found.items() if r["status"] == s] for s in ("complete", "failed")}
    assert len(found) == 2 and len(by_status["complete"]) == 1 and len(by_status["failed"]) == 1, found
    (failed,), (complete,) = by_status["failed"], by_status["complete"]
    assert "bogus is not a valid SchedulerType" in found[failed]["error"]
    for run_dir, record in found.items():  # each job's submitit log, linked from its run folder
        log = Path(record["submitit_log"])
        assert log.is_file() and (run_dir / "submitit.log").resolve() == log.resolve()
        assert re.search(r"/\.submitit/\d+_\d/\d+_\d_0_log\.out$", str(log))
    assert "SchedulerType" in (failed / "submitit.log").read_text()

    from lora_repro.report.__main__ import main as report

    report([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    missing = (tmp_path / "report.md").read_text().split("## Missing or failed runs")[1]
    assert str(failed) in missing and "SchedulerType" in missing and str(complete) not in missing

    before = {p: (p / rs.RESULTS_FILE).stat().st_mtime_ns for p in found}
    assert_quiet(run_sweep(slurm, tmp_path / "runs", *sweep))
    after = records(tmp_path / "runs")
    assert (complete / rs.RESULTS_FILE).stat().st_mtime_ns == before[complete] and after[complete] == found[complete]
    assert (failed / rs.RESULTS_FILE).stat().st_mtime_ns != before[failed] and after[failed]["status"] == "failed"
    rerun_logs = sorted((tmp_path / "runs").glob(".hydra/*/*/.submitit/*/*_log.out"))[-2:]  # the second sweep's
    assert sum("already complete, skipping" in p.read_text() for p in rerun_logs) == 1
    print(f"\nfailed-job sweep, report and re-run: {time.time() - began:.0f} s")


def test_scancel_of_one_array_task_then_rerun_runs_only_that_task(slurm, tmp_path):
    began, root = time.time(), tmp_path / "runs"
    sweep = ["trainer.max_steps=1500", "seed=0,1", "hydra.launcher.name=cancel", "hydra.launcher.timeout_min=10"]
    submitter = start(slurm, root, *sweep)
    try:
        deadline, victim = time.time() + 300, None
        while victim is None and time.time() < deadline:  # a running task with a checkpoint: mid-training
            for job, state in slurm_jobs(slurm, "cancel"):
                seed = job.split("_")[-1]
                if state == "RUNNING" and seed.isdigit() and list(root.glob(f"default/*/seed{seed}/checkpoints/*")):
                    victim = job
            time.sleep(1)
        assert victim, slurm_jobs(slurm, "cancel")
        subprocess.run(["scancel", victim], env=environment(slurm), check=True, timeout=30)
        cancelled_seed = victim.split("_")[-1]
        deadline = time.time() + 400
        while time.time() < deadline:  # the other task finishes
            others = [r for r in records(root).values() if str(r["seed"]) != cancelled_seed]
            if others and others[0]["status"] == "complete":
                break
            time.sleep(2)
        states = dict(slurm_jobs(slurm, "cancel"))
        assert states[victim] == "CANCELLED", states
    finally:
        # without accounting submitit never learns that the cancelled task ended (no sacct, no result file): the
        # submitting process would wait for it for ever. A user interrupts it and runs the sweep again.
        submitter.terminate()
        submitter.wait(timeout=60)
    found = records(root)
    (cancelled,) = [p for p, r in found.items() if str(r["seed"]) == cancelled_seed]
    (other,) = [p for p in found if p != cancelled]
    assert found[cancelled]["status"] == "running" and found[other]["status"] == "complete"
    before = (other / rs.RESULTS_FILE).stat().st_mtime_ns

    console = run_sweep(slurm, root, *sweep)
    assert_quiet(console)
    after = records(root)
    assert (other / rs.RESULTS_FILE).stat().st_mtime_ns == before and after[other] == found[other]  # skipped
    assert after[cancelled]["status"] == "complete"
    assert after[cancelled]["resumed_from"]  # from the checkpoint the cancelled task had sealed
    print(f"\nscancel of {victim} and re-run: {time.time() - began:.0f} s")


def test_a_job_timing_out_is_requeued_and_ends_as_the_uninterrupted_run(slurm, tmp_path, monkeypatch):
    """Alone (other jobs beside it would slow each attempt's start-up, leaving it less time to train)."""
    root, began = tmp_path, time.time()
    (tmp_path / "pacing").mkdir()
    (tmp_path / "pacing" / "sitecustomize.py").write_text(PACING)
    monkeypatch.setenv("LORA_REPRO_TEST_STEP_SECONDS", str(STEP_SECONDS))  # the submitter's environment, exported
    paced = [*LAUNCHER[:-1], f"hydra.launcher.setup=['export OMP_NUM_THREADS=1','export HF_HUB_OFFLINE=1',"
                              f"'export PYTHONPATH={REPO}:{tmp_path / 'pacing'}']"]
    submitter = start(slurm, root / "slurm", *REQUEUE, launcher=paced, pythonpath=tmp_path / "pacing")
    reference = start(slurm, root / "reference", f"trainer.max_steps={STEPS}", sweep=False,
                      pythonpath=tmp_path / "pacing")  # alongside
    try:
        console = finish(submitter)
        minutes = (time.time() - began) / 60
        finish(reference)
    finally:
        for process in (submitter, reference):
            if process.poll() is None:
                process.kill()
    assert_quiet(console)
    ((run_dir, record),) = records(root / "slurm").items()
    ((_, expected),) = records(root / "reference").items()
    log = Path(record["submitit_log"]).read_text()
    signalled = set(re.findall(r"(\d\d:\d\d:\d\d,\d{3})\S* - Caught signal SIGUSR2 on \S+: this job is timed-out", log))
    job_id = re.search(r"/(\d+)_0_log\.out$", record["submitit_log"]).group(1)
    restarts = scontrol_field(slurm, job_id, "Restarts")
    print(f"\nrequeued job {job_id}: {len(signalled)} timeouts, SLURM Restarts={restarts}, {minutes:.1f} min; "
          f"resumed from {record['resumed_from']}")
    assert len(signalled) >= 2, log[-3000:]  # timed out at least twice, requeued each time
    assert restarts is None or int(restarts) == len(signalled)
    assert log.count("resuming from") >= 2
    assert record["status"] == "complete" and record["resumed_from"] and expected["resumed_from"] is None
    assert record["global_steps"] == expected["global_steps"] == STEPS
    for key in ("curve", "best", "last", "train_loss"):  # metric for metric, exact floats
        assert record[key] == expected[key], key
