"""The report on synthetic run records: seed grouping by setting, the table's protocol (median vs mean, expected n),
the readings (two-sided within 1.5, per-seed pairing, order, constant-baseline cases), CSV input and the CLI."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO
from lora_repro import results as rs
from lora_repro.report.table import (at_constant_baseline, comparisons, load_runs, read_pair, runs_frame,
                                     summary_frame, write_report)


def record(task: str, method: str, seed: int, best: float, *, table=2, metric=None, model="roberta-base",
           warm_start=None, lr=4e-4, status="complete") -> dict:
    metric = metric or {"cola": "mcc", "stsb": "pearson", "e2e": "bleu"}.get(task, "accuracy")
    cfg = {"model": {"name": model}, "task": {"name": task}, "method": {"name": method, "r": 8},
           "trainer": {"lr": lr, "epochs": 3}, "seed": seed, "table": table, "run_group": "synthetic",
           "warm_start": warm_start, "output_root": "/somewhere/runs",
           "init_from": f"/somewhere/runs/synthetic/mnli_{method}/seed{seed}" if warm_start else None}
    return {"status": status, "experiment": "synthetic", "table": table, "seed": seed, "task": task, "method": method,
            "model": {"name": model}, "config": cfg,
            # the run folder's old identity: with a warm start it changed with the seed (the MNLI run's path)
            "config_id": f"{method}{task}{seed if warm_start else ''}", "primary_metric": metric,
            "best": {"epoch": 2, "metrics": {metric: best}}, "last": {"epoch": 3, "metrics": {metric: best - 1}},
            "parameters": {"trainable_without_head": 294_912}, "run_dir": f"/runs/{method}/{task}/seed{seed}"}


def frame(records: list[dict]) -> pd.DataFrame:
    return summary_frame(runs_frame(records))


def compare(records: list[dict], baseline: str = "full_ft") -> dict:
    table = comparisons(frame(records), "lora", [baseline])
    assert len(table) == 1
    return table.iloc[0].to_dict()


def test_a_tie_is_within_on_every_seed_and_orders_nothing():
    runs = [record("sst2", "lora", s, 94.0 + 0.1 * s) for s in range(5)]
    runs += [record("sst2", "full_ft", s, 94.2 - 0.1 * s) for s in range(5)]
    row = compare(runs)
    assert row["within_1.5"] == "yes" and row["per seed"] == "within 1.5 on all 5 seeds"
    assert row["seeds within 1.5"] == "5 of 5" and row["order"] == "inconclusive at n=5"


def test_a_clear_win_is_ahead_and_not_within():
    runs = [record("qnli", "lora", s, 93.0 + 0.2 * s) for s in range(5)]
    runs += [record("qnli", "full_ft", s, 88.0 + 0.3 * s) for s in range(5)]
    row = compare(runs)
    assert row["within_1.5"] == "no" and row["per seed"] == "outside 1.5 on all 5 seeds"
    assert row["order"] == "lora ahead"
    reverse = comparisons(frame(runs), "full_ft", ["lora"]).iloc[0]  # the same pair read the other way round
    assert reverse["order"] == "lora ahead" and reverse["gap"] == pytest.approx(-4.8, abs=0.01)


def test_a_win_within_the_seed_spread_is_inconclusive():
    runs = [record("rte", "lora", s, v) for s, v in enumerate([80.0, 86.0, 83.0])]
    runs += [record("rte", "full_ft", s, v) for s, v in enumerate([78.0, 84.5, 81.0])]
    assert compare(runs)["order"] == "inconclusive at n=3"  # wins every seed, by less than the 6-point spread


def test_too_small_n_is_inconclusive():
    row = compare([record("mrpc", "lora", 0, 89.0), record("mrpc", "full_ft", 0, 89.5)])
    assert row["within_1.5"] == "yes"  # the aggregate reading stands, but nothing is read per seed
    assert row["per seed"] == "inconclusive at n=1" and row["order"] == "inconclusive at n=1"
    assert read_pair({"0": 1.0}, {"1": 1.0}, 0.0, False)["per_seed"] == "inconclusive at n=0"  # no shared seed


def test_within_1_5_is_two_sided():
    """The stand-in's RTE: LoRA 4.3 points above full FT is not 'within 1.5' (it read so before)."""
    runs = [record("rte", "lora", s, v) for s, v in enumerate([61.01, 61.37])]
    runs += [record("rte", "full_ft", s, v) for s, v in enumerate([56.68, 57.04])]
    row = compare(runs)
    assert row["gap"] == pytest.approx(4.33, abs=0.01) and row["within_1.5"] == "no"
    assert row["per seed"] == "outside 1.5 on all 2 seeds"


@pytest.mark.parametrize(("task", "lora", "full_ft"), [("mrpc", 68.4, 68.4), ("cola", 0.0, 0.0), ("stsb", -5.0, 0.3)])
def test_both_at_the_constant_baseline_is_uninformative(task, lora, full_ft):
    row = compare([record(task, "lora", s, lora) for s in range(3)] + [record(task, "full_ft", s, full_ft) for s in range(3)])
    assert row["within_1.5"] == "uninformative" and row["order"].startswith("uninformative")


def test_constant_baseline_margin_follows_the_dev_subset():
    assert at_constant_baseline("mrpc", "accuracy", 68.5) and not at_constant_baseline("mrpc", "accuracy", 71.0)
    assert at_constant_baseline("mrpc", "accuracy", 70.7, eval_examples=256)  # the quickstart's 256-example dev subset
    assert at_constant_baseline("rte", "accuracy", 50.2) and not at_constant_baseline("rte", "accuracy", 57.8)
    assert not at_constant_baseline("e2e", "bleu", 0.0)  # no constant baseline known: never flagged
    # one method at the baseline, the other above it: an ordinary comparison
    row = compare([record("mrpc", "lora", s, 68.5) for s in range(2)] + [record("mrpc", "full_ft", s, 71.0 + s) for s in range(2)])
    assert row["within_1.5"] == "no"


def test_warm_started_seeds_group_into_one_setting():
    """With warm_start=mnli each seed had its own folder (init_from is the seed's MNLI run): the report groups by the
    setting, so the cell is the median of all five seeds, not the first one's score labelled n=1."""
    runs = [record("rte", "lora", s, v, warm_start="mnli") for s, v in enumerate([80.0, 86.0, 83.0, 84.0, 85.0])]
    assert len({r["config_id"] for r in runs}) == 5
    assert len({rs.setting_id(r["config"]) for r in runs}) == 1
    summary = frame(runs)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row.n_seeds, row.best_agg, row.seeds) == (5, 84.0, "0,1,2,3,4")
    other_lr = [record("rte", "lora", s, 70.0, warm_start="mnli", lr=1e-4) for s in range(2)]
    assert len(frame(runs + other_lr)) == 2  # a different setting stays its own row


def test_median_for_glue_mean_for_gpt2_tables_and_n_against_the_protocol():
    glue = [record("rte", "lora", s, v) for s, v in enumerate([80.0, 81.0, 89.0])]
    e2e = [record("e2e", "lora", s, v, table=3, model="gpt2-medium") for s, v in enumerate([68.0, 69.0, 73.0])]
    summary = frame(glue + e2e).set_index("task")
    assert summary.loc["rte", "aggregate"] == "median" and summary.loc["rte", "best_agg"] == 81.0
    assert summary.loc["e2e", "aggregate"] == "mean" and summary.loc["e2e", "best_agg"] == pytest.approx(70.0)
    assert (summary.loc["rte", "n_seeds"], summary.loc["rte", "n_expected"]) == (3, 5)
    assert (summary.loc["e2e", "n_seeds"], summary.loc["e2e", "n_expected"]) == (3, 3)


def test_markdown_cells_show_n_and_the_paper(tmp_path):
    runs = [record("rte", "lora", s, 80.0 + s) for s in range(2)]
    runs += [record("e2e", "lora", s, 69.0 + s, table=3, model="gpt2-medium") for s in range(3)]
    runs += [record("rte", "full_ft", 0, 70.0, status="failed")]
    for i, r in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / rs.RESULTS_FILE).write_text(json.dumps(r))
    text = write_report([str(tmp_path)], tmp_path / "out" / "t", title="T")
    assert "80.5 (86.6) n=2 of 5" in text  # RoBERTa-base LoRA RTE: 86.6 in Table 2, median of 2 of 5 seeds
    assert "70.0±1.0 (70.4) n=3" in text and "n=3 of" not in text  # GPT-2 M E2E BLEU: mean ± std of all 3 seeds
    assert "median over 5 seeds" in text and "mean over 3 seeds" in text
    assert "## Missing or failed runs" in text and "## LoRA minus full" not in text  # full FT failed: no pairing


def test_runs_csv_regenerates_the_same_summary(tmp_path):
    runs = [record(t, m, s, 60.0 + 3 * s + (m == "lora")) for t in ("rte", "mrpc") for m in ("lora", "full_ft")
            for s in range(3)]
    for i, r in enumerate(runs):
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        (tmp_path / "runs" / str(i) / rs.RESULTS_FILE).write_text(json.dumps(r))
    first = write_report([str(tmp_path / "runs")], tmp_path / "a", title="T")
    second = write_report([str(tmp_path / "a_runs.csv")], tmp_path / "b", title="T")
    assert first == second
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))
    old = pd.read_csv(tmp_path / "a_runs.csv").drop(columns=["setting_id", "eval_examples"])  # an older runs CSV
    old.to_csv(tmp_path / "old_runs.csv", index=False)
    assert len(load_runs([tmp_path / "old_runs.csv"])) == len(runs)
    assert write_report([str(tmp_path / "old_runs.csv")], tmp_path / "c").count("n=3 of 5") == 4


def test_cli_on_an_empty_folder_writes_nothing_and_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "lora_repro.report", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "out" / "x")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == f"no results.json under {tmp_path / 'empty'}"
    assert not (tmp_path / "out").exists()


def test_cli_prints_where_it_wrote_and_the_regeneration_command(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / rs.RESULTS_FILE).write_text(json.dumps(record("rte", "lora", 0, 80.0)))
    notes = tmp_path / "notes.md"
    notes.write_text("Provenance: synthetic.\n")
    done = subprocess.run([sys.executable, "-m", "lora_repro.report", str(tmp_path / "r"), "--out",
                           str(tmp_path / "x"), "--notes", str(notes)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert [f"wrote {tmp_path / name}" for name in ("x.md", "x.csv", "x_runs.csv")] == done.stdout.splitlines()[-3:]
    text = (tmp_path / "x.md").read_text()
    assert "Provenance: synthetic." in text and f"--notes {notes}" in text.splitlines()[2]


def test_the_quickstart_headline_computes_the_baseline_from_the_eval_labels():
    """The closing table: the majority share of the eval labels the runs counted, each score's margin over it, the
    report's reading of LoRA - full FT and the trainable shares, all from the records."""
    from lora_repro.report.callback import headline

    runs = [record("sst2", "lora", 0, 82.0), record("sst2", "full_ft", 0, 83.6)]
    for run, trainable in zip(runs, (73_728, 22_713_216)):
        run["eval_label_counts"] = {"validation": {"1": 444, "0": 428}}
        run["parameters"] = {"trainable_without_head": trainable, "total": 22_787_714}
    text = headline(runs)
    assert "majority class 1: 444 of 872 validation examples" in text and "| 50.9 " in text
    assert "83.6 (+32.7) n=1" in text and "82.0 (+31.1) n=1" in text
    assert "gap -1.6 points, within 1.5: no" in text and "lora 73,728 of 22,787,714 = 0.32%" in text
    assert "at least 10 points above the baseline): met." in text
    runs[0]["best"]["metrics"]["accuracy"] = 81.0  # 2.6 behind: the target is not met
    assert "at least 10 points above the baseline): not met." in headline(runs)
    runs[0]["eval_label_counts"] = runs[1]["eval_label_counts"] = {}
    assert "recorded no eval label counts" in headline(runs)  # never a number it could not compute


def with_precision(rec: dict, precision: str) -> dict:
    rec["config"]["trainer"]["precision"] = precision
    return rec


def test_settings_that_differ_only_in_precision_pair_up_with_the_equivalence_rule():
    from lora_repro.report.table import pivot_markdown, precision_pairs

    fp32 = [with_precision(record("sst2", "lora", s, 81.0 + s), "fp32") for s in range(3)]
    close = [with_precision(record("sst2", "lora", s, 81.2 + s), "bf16") for s in range(3)]
    far = [with_precision(record("sst2", "lora", s, 75.0 + s, lr=1e-3), "bf16") for s in range(3)]
    other_lr = [with_precision(record("sst2", "lora", s, 75.0 + s, lr=1e-3), "fp32") for s in range(3)]
    pairs = precision_pairs(frame(fp32 + close))
    assert len(pairs) == 1 and pairs.iloc[0]["A"] == "bf16" and pairs.iloc[0]["B"] == "fp32"
    verdict = pairs.iloc[0].filter(like="paired").iloc[0]
    assert verdict.startswith("holds") and "n=3 seeds" in verdict
    # another learning rate is another setting: bf16 at lr 1e-3 pairs with fp32 at lr 1e-3 only
    pairs = precision_pairs(frame(fp32 + far + other_lr))
    assert len(pairs) == 1 and pairs.iloc[0]["gap"] == pytest.approx(0.0)
    assert precision_pairs(frame(fp32 + other_lr)).empty  # one precision: nothing to pair
    lost = [with_precision(record("sst2", "lora", s, 70.0 + s), "bf16") for s in range(3)]
    assert precision_pairs(frame(fp32 + lost)).iloc[0].filter(like="paired").iloc[0].startswith("does not hold")
    two = precision_pairs(frame(fp32[:2] + close[:2])).iloc[0].filter(like="paired").iloc[0]
    assert two.startswith("inconclusive")
    table = pivot_markdown(frame(fp32 + close))  # every row says its precision
    assert "precision" in table.splitlines()[0] and "bf16" in table and "fp32" in table
