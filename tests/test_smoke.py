"""Smoke mode needs nothing: every experiment's smoke run works with no stand-in package, no data folder and no
network, and says so on the console and in results.json."""
import logging

import pytest

from lora_repro.config import compose, conf_dir
from lora_repro.models import packaged
from lora_repro.run import run
from test_experiments import sweep_jobs

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


@pytest.fixture
def nothing_installed(monkeypatch):
    """No stand-in package and no data folder: a lookup of either fails the test."""
    def no_package(name):
        raise AssertionError(f"smoke run looked for the stand-in package {name}")

    monkeypatch.setattr(packaged, "packaged_model_dir", no_package)
    monkeypatch.setattr("lora_repro.models.packaged_model_dir", no_package)
    monkeypatch.delenv("LORA_REPRO_DATA", raising=False)
    monkeypatch.delenv("LORA_REPRO_MODELS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_in_smoke_mode_with_nothing_installed(experiment, nothing_installed, tmp_path, caplog):
    job = sweep_jobs(experiment)[0]  # the first job of its sweep (MNLI first where others warm-start from it)
    overrides = [f"+experiment={experiment}", *job, "smoke=true", "data_dir=null", f"output_root={tmp_path}",
                 f"param_counts.out={tmp_path / 'param_counts'}"]
    if experiment == "param_counts":
        overrides.append("param_counts.tables=[2]")
    else:
        overrides.remove(f"param_counts.out={tmp_path / 'param_counts'}")
    with caplog.at_level(logging.WARNING, logger="lora_repro"):
        record = run(compose(overrides))
    assert record["status"] == "complete"
    if experiment == "param_counts":
        assert (tmp_path / "param_counts.md").is_file()
        return
    assert record["smoke"] and record["model"]["source"] == "architecture"
    assert record["model"]["init"] == "random (smoke)" and record["data"]["source"] == "synthetic"
    assert record["config"]["trainer"]["epochs"] <= 2
    assert any("smoke run" in message for message in caplog.messages)


def test_a_job_shows_progress_and_keeps_its_log_beside_its_results(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, "-m", "lora_repro", "smoke=true", "data_dir=null", "trainer.logging_steps=1",
                           f"output_root={tmp_path / 'runs'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "%|" in done.stderr and "'loss':" in done.stdout + done.stderr  # the Trainer's bar and its loss lines
    (results,) = (tmp_path / "runs").rglob("results.json")
    record = json.loads(results.read_text())
    log = results.parent / "job.log"
    assert record["log"] == str(log) and len(record["train_loss"]) == record["global_steps"]
    text = log.read_text()
    assert "smoke run (smoke=true)" in text and "best accuracy" in text and str(results) in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing of Hydra's beside it
