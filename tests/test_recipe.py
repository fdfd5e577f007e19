"""Recipes: Table 9's † block, the released scripts' global batch and fp16, the recipe printer, the GPT-2 tables'
decoding style, and warm starts from the best MNLI epoch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from lora_repro import results as rs
from lora_repro.config import compose
from lora_repro.errors import MissingInputError
from lora_repro.methods.common import CONFIG_FILE, WEIGHTS_FILE
from lora_repro.recipe import main as recipe_main
from lora_repro.run import BEST_METHOD_DIR, apply_recipe, resolve_warm_start, run_dir_for, to_dict

GLUE = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"]


def composed(*overrides: str) -> dict:
    return to_dict(compose(overrides))


def resolved(*overrides: str) -> dict:
    return apply_recipe(composed(*overrides))


def test_dagger_variant_resolves_to_table_9_dagger_block():
    jobs = [resolved("+experiment=table2_roberta", "model=roberta-large", "trainer.recipe.variant=dagger", f"task={t}")
            for t in GLUE]
    assert [j["trainer"]["batch_size"] for j in jobs] == [4] * 8
    assert [j["trainer"]["epochs"] for j in jobs] == [10, 10, 20, 20, 10, 20, 20, 10]
    assert [j["trainer"]["lr"] for j in jobs] == [3e-4, 4e-4, 3e-4, 2e-4, 2e-4, 3e-4, 4e-4, 2e-4]
    assert [j["trainer"]["max_seq_len"] for j in jobs] == [128] * 8
    assert all((j["method"]["r"], j["method"]["alpha"], j["trainer"]["warmup_ratio"]) == (8, 16, 0.06) for j in jobs)
    assert all(j["warm_start"] is None for j in jobs)  # † = MRPC, RTE, STS-B from the pretrained model
    plain = resolved("+experiment=table2_roberta", "model=roberta-large", "task=stsb")  # the non-† block
    assert (plain["trainer"]["batch_size"], plain["trainer"]["epochs"], plain["trainer"]["max_seq_len"]) == (8, 30, 512)
    assert plain["warm_start"] == "mnli"
    same = resolved("+experiment=table2_roberta", "model=roberta-large", "trainer.recipe.method=lora/dagger", "task=stsb")
    assert (same["trainer"]["epochs"], same["warm_start"]) == (10, None)


def test_released_scripts_global_batch_and_fp16():
    base = [resolved("+experiment=table2_roberta", "trainer.recipe.source=released_scripts", f"task={t}") for t in GLUE]
    # per-device batch (Table 9's) x 8 GPUs, CoLA's script x 2 GPUs
    assert [j["trainer"]["batch_size"] for j in base] == [128, 128, 128, 64, 256, 128, 256, 128]
    assert all((j["method"]["alpha"], j["trainer"]["weight_decay"], j["trainer"]["precision"]) == (16, 0.1, "fp32")
               for j in base)
    large = resolved("+experiment=table2_roberta", "model=roberta-large", "trainer.recipe.source=released_scripts",
                     "task=stsb")
    assert (large["trainer"]["batch_size"], large["trainer"]["lr"], large["trainer"]["epochs"],
            large["trainer"]["max_seq_len"]) == (32, 3e-4, 10, 128)
    deberta = resolved("+experiment=table2_deberta", "trainer.recipe.source=released_scripts", "task=rte")
    assert (deberta["trainer"]["precision"], deberta["method"]["r"], deberta["method"]["alpha"]) == ("fp16", 16, 32)
    assert (deberta["trainer"]["warmup_steps"], deberta["trainer"]["warmup_ratio"], deberta["trainer"]["lr"]) == (50, None, 2.6e-4)
    paper = resolved("+experiment=table2_deberta", "task=rte")
    assert (paper["trainer"]["precision"], paper["trainer"]["batch_size"], paper["method"]["r"]) == ("fp32", 4, 8)
    explicit = resolved("+experiment=table2_deberta", "trainer.recipe.source=released_scripts", "task=rte",
                        "trainer.precision=bf16", "trainer.batch_size=8")
    assert (explicit["trainer"]["precision"], explicit["trainer"]["batch_size"]) == ("bf16", 8)  # explicit wins


def test_recipe_command_prints_paper_beside_released_scripts(capsys):
    recipe_main(["+experiment=table2_roberta"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| trainer.batch_size"))
    assert row.split(" | ")[1:] == ["16 / 128", "16 / 128", "16 / 128", "32 / 64", "32 / 256", "16 / 128",
                                    "32 / 256", "16 / 128 |"]
    assert "| method.alpha | 8 / 16 |" in out and "None" not in out.split("| method.alpha")[1].split("\n")[0]
    recipe_main(["+experiment=table2_deberta", "task=rte", "trainer.recipe.source=released_scripts", "--cfg", "job"])
    job = capsys.readouterr().out
    assert "precision: fp16" in job and "warmup_steps: 50" in job and "  r: 16" in job


def test_gpt2_paper_tables_decode_like_loralib_and_the_stand_ins_like_hf():
    for experiment in ("table3_gpt2", "table13_webnlg", "table14_dart"):
        assert composed(f"+experiment={experiment}")["task"]["generation"]["style"] == "loralib"
    assert composed("+experiment=table3_gpt2", "task=e2e_readme")["task"]["generation"]["style"] == "loralib"
    for experiment in ("e2e_smollm2_standin", "e2e_smollm2_gpu"):
        assert composed(f"+experiment={experiment}")["task"]["generation"]["style"] == "hf"


def _mnli_run(tmp_path, best_epoch: int, last_epoch: int, best_dir: bool):
    cfg = composed("+experiment=table2_roberta", "task=rte", f"output_root={tmp_path}")
    mnli_dir = run_dir_for(apply_recipe({**cfg, "task": {**cfg["task"], "name": "mnli"}}))
    (mnli_dir / "method").mkdir(parents=True)
    if best_dir:
        (mnli_dir / BEST_METHOD_DIR).mkdir()
    rs.write_json_atomic(mnli_dir / rs.RESULTS_FILE, {"status": "complete", "best": {"epoch": best_epoch},
                                                      "last": {"epoch": last_epoch}})
    return cfg, mnli_dir


def test_warm_start_takes_the_best_mnli_epoch(tmp_path):
    cfg, mnli_dir = _mnli_run(tmp_path, best_epoch=7, last_epoch=30, best_dir=True)
    warm = resolve_warm_start(apply_recipe(dict(cfg)), cfg)
    assert warm["init_from"] == str(mnli_dir / BEST_METHOD_DIR) and warm["warm_start_epoch"] == "best"
    assert rs.setting_id(warm) == rs.setting_id({**warm, "init_from": "/elsewhere/seed3/method_best"})


def test_warm_start_from_method_only_when_the_last_epoch_is_the_best(tmp_path):
    cfg, mnli_dir = _mnli_run(tmp_path / "a", best_epoch=30, last_epoch=30, best_dir=False)
    assert resolve_warm_start(apply_recipe(dict(cfg)), cfg)["init_from"] == str(mnli_dir)
    cfg, mnli_dir = _mnli_run(tmp_path / "b", best_epoch=7, last_epoch=30, best_dir=False)
    with pytest.raises(MissingInputError, match="last epoch \\(30\\) is not its best \\(7\\)"):
        resolve_warm_start(apply_recipe(dict(cfg)), cfg)


def test_mnli_run_keeps_its_best_epoch_weights_and_rte_starts_from_them(tmp_path):
    env = {**os.environ, "LORA_REPRO_RUNS": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LORA_REPRO_DATA", None)  # synthetic smoke rows
    for task in ("mnli", "rte"):
        done = subprocess.run([sys.executable, "-m", "lora_repro", "+experiment=table2_roberta", "smoke=true",
                               "seed=0", f"task={task}", "hydra.mode=RUN"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    (mnli,) = [json.loads(p.read_text()) for p in tmp_path.rglob(rs.RESULTS_FILE) if "__mnli__" in str(p)]
    (rte,) = [json.loads(p.read_text()) for p in tmp_path.rglob(rs.RESULTS_FILE) if "__rte__" in str(p)]
    best_dir = Path(mnli["run_dir"]) / BEST_METHOD_DIR
    assert (best_dir / WEIGHTS_FILE).is_file() and (best_dir / CONFIG_FILE).is_file()
    assert rte["config"]["init_from"].endswith(BEST_METHOD_DIR) and rte["config"]["warm_start_epoch"] == "best"
