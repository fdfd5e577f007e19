"""Every experiment config composes into valid jobs, and the GLUE tables run end to end in smoke mode."""
import itertools
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from lora_repro.config import compose
from lora_repro.methods import get_method
from lora_repro.run import apply_recipe, run_dir_for, to_dict
from lora_repro.tasks import get_task

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The override lists of the experiment's declared sweep (comma lists; BasicSweeper syntax)."""
    cfg = compose([f"+experiment={experiment}"], hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
    axes = [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_every_experiment_composes(experiment):
    jobs = sweep_jobs(experiment)
    dirs = set()
    for job in jobs:
        cfg = to_dict(compose([f"+experiment={experiment}", *job]))
        if cfg.get("job", "train") != "train":
            continue  # non-training jobs (e.g. parameter accounting) are tested with their own code
        get_task(cfg["task"]["name"])
        method = get_method(cfg["method"]["name"])
        cfg = apply_recipe(cfg)
        if method.evaluate is None:  # a method that trains nothing (few_shot) needs no learning rate
            assert cfg["trainer"]["lr"] and cfg["trainer"]["batch_size"] and cfg["trainer"]["epochs"]
        dirs.add(run_dir_for(cfg))
    assert len(dirs) == len([j for j in jobs]) or not dirs, "two jobs of one sweep would share a run directory"


@pytest.mark.parametrize("experiment", ["quickstart", "table2_roberta", "table2_deberta", "table2_standin_gpu"])
def test_glue_tables_run_in_smoke_mode(tmp_path, experiment):
    env = {**os.environ, "LORA_REPRO_RUNS": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "lora_repro", f"+experiment={experiment}", "smoke=true", "seed=0"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lora_repro: error" not in result.stderr, result.stderr[-3000:]
    records = list(tmp_path.rglob("results.json"))
    n_jobs = len([j for j in sweep_jobs(experiment) if "seed=1" not in j and "seed=2" not in j
                  and "seed=3" not in j and "seed=4" not in j])
    assert len(records) == n_jobs
    assert all('"status": "complete"' in r.read_text() for r in records)


def test_the_experiment_cards_name_existing_experiments_and_results():
    import re

    cards = sorted((REPO / "experiments").glob("*.md"))
    assert len(cards) >= 17  # one per paper table and figure, and the index
    text = "\n".join(card.read_text() for card in cards)
    named = set(re.findall(r"\+experiment=([A-Za-z0-9_]+)", text))
    assert named and named <= set(EXPERIMENTS), named - set(EXPERIMENTS)
    index = (REPO / "experiments" / "README.md").read_text()
    assert all(card.name in index for card in cards if card.name != "README.md")
