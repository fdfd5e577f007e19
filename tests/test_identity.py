"""One run identity (lora_repro.results.setting): independent of machine paths and cosmetic keys, the same for the
seeds of one setting, used by the run folder, the analysis' pairing and the report's seed grouping."""
import shutil

from lora_repro import results as rs
from lora_repro.config import compose
from lora_repro.run import resolved_config, run, run_dir_for, to_dict


def job(*overrides: str) -> dict:
    cfg = to_dict(compose(["task=rte", *overrides]))
    cfg.pop("hydra", None)
    return resolved_config(cfg)


def test_machine_paths_and_cosmetic_keys_are_not_part_of_the_identity(tmp_path):
    base = job("data_dir=/data/a", "output_root=/runs")
    moved = job("data_dir=/mnt/b", "output_root=/runs")
    labelled = job("data_dir=/data/a", "output_root=/runs", "+label=x", "wandb.mode=offline", "trainer.save_steps=7",
                   "trainer.logging_steps=3", "trainer.progress=false", "table=5")
    assert run_dir_for(base) == run_dir_for(moved) == run_dir_for(labelled)
    assert rs.setting_id(base) == rs.setting_id(job("data_dir=/data/a", "seed=3"))  # the seed is its own folder
    assert run_dir_for(base) != run_dir_for(job("data_dir=/data/a", "output_root=/runs", "seed=3"))
    for change in ("trainer.lr=1e-3", "method.r=4", "task=mrpc", "task.max_train_examples=100", "smoke=true"):
        assert rs.setting_id(job(change)) != rs.setting_id(base), change


def test_init_from_is_identified_by_the_weights_it_names_not_by_their_path(tmp_path):
    source = run(compose(["task=rte", "smoke=true", "trainer.max_steps=1", f"output_root={tmp_path / 'a'}"]))
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(source["run_dir"], copy)
    here, there = job("smoke=true", f"init_from={source['run_dir']}"), job("smoke=true", f"init_from={copy}")
    assert rs.setting(here)["init_from"].startswith("sha256:") and rs.setting_id(here) == rs.setting_id(there)
    other = run(compose(["task=rte", "smoke=true", "trainer.max_steps=1", "seed=1", f"output_root={tmp_path / 'a'}"]))
    assert rs.setting_id(job("smoke=true", f"init_from={other['run_dir']}")) != rs.setting_id(here)


def test_warm_started_seeds_share_their_setting():
    # warm_start=mnli fills init_from with each seed's own MNLI run: still one setting, seeds side by side
    seeds = [{**job("warm_start=mnli", f"seed={s}"), "init_from": f"/runs/mnli/seed{s}"} for s in range(3)]
    assert len({rs.setting_id(cfg) for cfg in seeds}) == 1
    assert rs.setting_id(seeds[0]) != rs.setting_id(job("seed=0"))  # warm_start itself is part of the setting


def test_the_analysis_pairs_runs_by_the_same_identity():
    from lora_repro.analysis.experiments import _identity

    class Run:  # the two attributes _identity reads
        def __init__(self, cfg):
            self.config, self.seed = cfg, cfg["seed"]

    r8, r64 = Run(job("data_dir=/data/a", "method.r=8")), Run(job("data_dir=/mnt/b", "method.r=64", "+label=big"))
    assert _identity(r8, drop="r") == _identity(r64, drop="r")
    assert _identity(r8, drop="seed") != _identity(r64, drop="seed")
    s0, s1 = Run(job("data_dir=/data/a", "seed=0")), Run(job("data_dir=/mnt/b", "seed=1"))
    assert _identity(s0, drop="seed") == _identity(s1, drop="seed") and _identity(s0, drop="r") != _identity(s1, "r")
