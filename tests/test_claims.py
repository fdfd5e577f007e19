"""The claims ledger: the verdict rules on synthetic numbers (tie, clear win, clear loss, too small n, missing
evidence), the evaluators on synthetic run records / analysis / benchmark files, and the CLI end to end."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO
from lora_repro.report import claims as cl
from lora_repro.report.table import runs_frame

# --------------------------------------------------------------------------------------------------- the rules


def seeds(values):
    return {str(i): v for i, v in enumerate(values)}


def test_a_tie_holds_for_at_least_and_is_not_a_win():
    a, b = seeds([90.0, 90.2, 89.9, 90.1]), seeds([90.1, 90.0, 90.0, 90.2])
    assert cl.paired_rule(a, b, test="at_least", margin=1.5, min_n=3).verdict == cl.HOLDS
    assert cl.paired_rule(a, b, test="above", margin=0.0, min_n=3).kind == "inconclusive"


def test_a_clear_win_holds_above_and_a_clear_loss_does_not_hold():
    win, base = seeds([95.0, 95.5, 94.8]), seeds([90.0, 90.3, 89.9])
    assert cl.paired_rule(win, base, test="above", margin=1.5, min_n=3).verdict == cl.HOLDS
    loss = cl.paired_rule(base, win, test="at_least", margin=1.5, min_n=3)
    assert loss.verdict == cl.FAILS and loss.n == 3 and "-5.03" in loss.reason


def test_too_few_seeds_is_inconclusive_at_that_n_whatever_the_gap():
    result = cl.paired_rule(seeds([99.0, 98.0]), seeds([50.0, 51.0]), test="above", margin=1.5, min_n=3)
    assert result.verdict == "inconclusive at n=2" and result.n == 2


def test_a_wide_interval_straddling_the_margin_is_inconclusive():
    result = cl.paired_rule(seeds([80.0, 90.0, 84.0]), seeds([84.0, 84.0, 86.0]), test="at_least", margin=1.5,
                            min_n=3)
    assert result.verdict == "inconclusive at n=3"


def test_only_matched_seeds_count():
    a = {"0": 90.0, "1": 91.0, "2": 90.5, "7": 10.0}
    b = {"0": 90.0, "1": 91.0, "2": 90.5, "9": 99.0}
    result = cl.paired_rule(a, b, test="at_least", margin=0.1, min_n=3)
    assert result.verdict == cl.HOLDS and result.n == 3


def test_log_scale_margin_is_a_fraction():
    base = seeds([1.00, 1.02, 0.98, 1.01] * 5)
    slower = {k: v * 1.20 for k, v in base.items()}
    assert cl.paired_rule(slower, base, test="at_most", margin=0.05, min_n=10, scale="log").verdict == cl.FAILS
    assert cl.paired_rule(slower, base, test="above", margin=0.0, min_n=10, scale="log").verdict == cl.HOLDS
    same = {k: v * 1.01 for k, v in base.items()}
    assert cl.paired_rule(same, base, test="at_most", margin=0.05, min_n=10, scale="log").verdict == cl.HOLDS


def test_no_shared_seed_is_not_run():
    assert cl.paired_rule({"0": 1.0}, {"1": 1.0}, test="at_least", margin=1, min_n=1).verdict == cl.NOT_RUN


def test_overlap_and_ratio_rules():
    assert cl.overlap_rule([0.8, 0.7, 0.9, 0.6], [0.01] * 4, threshold=0.5, factor=2, min_fraction=0.5,
                           min_n=4).verdict == cl.HOLDS
    assert cl.overlap_rule([0.1, 0.2, 0.05, 0.6], [0.01] * 4, threshold=0.5, factor=2, min_fraction=0.5,
                           min_n=4).verdict == cl.FAILS
    # above the threshold but not above the initialisation's overlap: not learned
    assert cl.overlap_rule([0.9] * 4, [0.95] * 4, threshold=0.5, factor=1, min_fraction=0.5,
                           min_n=4).verdict == cl.FAILS
    assert cl.overlap_rule([0.9, 0.9], [0.0, 0.0], threshold=0.5, factor=2, min_fraction=0.5,
                           min_n=4).verdict == "inconclusive at n=2"
    assert cl.ratio_rule({"b1": 2.5, "b8": 1.4}, at_least=1.2).verdict == cl.HOLDS
    assert cl.ratio_rule({"b1": 2.5, "b8": 0.9}, at_least=1.2).verdict == cl.FAILS
    assert cl.ratio_rule({"b1": 1.1}, at_least=1.2).kind == "inconclusive"


def test_combine():
    h, f, i, nr = (cl.Result(cl.HOLDS, "h", 5), cl.Result(cl.FAILS, "f", 5), cl.inconclusive(2, "i"),
                   cl.Result(cl.NOT_RUN, "nr"))
    assert cl.combine([h, h]).verdict == cl.HOLDS
    assert cl.combine([h, f, i]).verdict == cl.FAILS
    assert cl.combine([h, i, cl.inconclusive(1, "j")]).verdict == "inconclusive at n=2"
    assert cl.combine([h, nr]).verdict == cl.NOT_RUN
    assert cl.combine([]).verdict == cl.NOT_RUN
    assert {cl.verdict_kind(v) for v in (cl.HOLDS, cl.FAILS, "inconclusive at n=3", cl.NOT_RUN,
                                         cl.CANNOT.format(what="x"))} == set(cl.VERDICT_KINDS)


# ----------------------------------------------------------------------------------------- synthetic evidence


def record(task, method, seed, best, *, table=2, metric=None, model="minilm-l6", r=8, targets=("q", "v"),
           params=73_728, train=None, experiment="synthetic", smoke=False):
    metric = metric or {"cola": "mcc", "stsb": "pearson", "e2e": "bleu"}.get(task, "accuracy")
    method_cfg = {"name": method, "r": r, "targets": list(targets)} if method == "lora" else {"name": method}
    cfg = {"model": {"name": model}, "task": {"name": task, "max_train_examples": train}, "method": method_cfg,
           "trainer": {"lr": 1e-3}, "seed": seed, "table": table, "run_group": experiment}
    return {"status": "complete", "experiment": experiment, "table": table, "seed": seed, "task": task,
            "method": method, "smoke": smoke, "model": {"name": model, "stand_in_for": "roberta-base"}, "config": cfg,
            "config_id": f"{method}{task}{r}{train}", "primary_metric": metric,
            "best": {"epoch": 2, "metrics": {metric: best}}, "last": {"epoch": 3, "metrics": {metric: best}},
            "parameters": {"trainable_without_head": params},
            "data": {"n_examples": {"train": train or 2000, "validation": 500}}}


def write_runs(root, records):
    for i, rec in enumerate(records):
        folder = root / f"run{i}" / f"seed{rec['seed']}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(rec))


def row_of(frame, claim_id):
    rows = frame[frame.id == claim_id]
    assert len(rows) == 1, claim_id
    return rows.iloc[0]


def test_every_claim_of_the_issue_has_a_row_and_no_evidence_means_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_REPRO_DATA", str(tmp_path / "no-data"))
    frame = cl.claims_frame([])
    wanted = {"glue_lora_vs_full_ft", "glue_lora_vs_baselines", "e2e_lora_vs_full_ft", "e2e_lora_vs_baselines",
              "prefix_tokens_degrade", "weight_types_qv", "rank_small_suffices", "rank_small_suffices_e2e",
              "subspace_rank_overlap", "subspace_seed_overlap", "delta_w_amplifies", "low_data",
              "finetune_beats_fewshot", "latency_merged_lora", "latency_adapters_bs1", "train_memory",
              "train_throughput"}
    assert wanted <= set(frame.id) and frame.id.is_unique
    kinds = set(frame.verdict.map(cl.verdict_kind))
    assert kinds <= {"not run here", "cannot be tested here"}
    # a claim whose data are missing names them; one whose data are not needed says not run and the command
    assert row_of(frame, "e2e_lora_vs_full_ft").verdict.startswith("cannot be tested here: data e2e")
    latency = row_of(frame, "latency_merged_lora")
    assert latency.verdict == cl.NOT_RUN and "benchmarks.table1_latency" in latency.summary
    assert all(frame.rule.str.len() > 20) and all(frame.paper.str.len() > 10)


def test_glue_claims_from_results_json(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_REPRO_DATA", str(tmp_path))
    ties = [record("rte", "lora", s, 70.0 + 0.2 * s) for s in range(3)]
    ties += [record("rte", "full_ft", s, 70.1 + 0.1 * s, params=22_000_000) for s in range(3)]
    losses = [record("mrpc", "lora", s, 70.0 + 0.1 * s) for s in range(3)]
    losses += [record("mrpc", "bitfit", s, 80.0 + 0.2 * s, params=26_112) for s in range(3)]
    losses += [record("mrpc", "prefix_embed", s, 90.0, params=9_216) for s in range(3)]  # 8x fewer: left out
    smoke = [record("rte", "full_ft", 7, 99.0, smoke=True)]
    write_runs(tmp_path / "runs", ties + losses + smoke)
    frame = cl.claims_frame([tmp_path / "runs"])
    glue_ft = row_of(frame, "glue_lora_vs_full_ft")
    assert glue_ft.verdict == cl.HOLDS, glue_ft.reason
    assert "n=3 seeds" in glue_ft.reason and "99.0" not in glue_ft.evidence  # the smoke run is not evidence
    baselines = row_of(frame, "glue_lora_vs_baselines")
    assert baselines.verdict == cl.FAILS and "bitfit" in baselines.reason
    assert "prefix_embed left out" in baselines.evidence and "lora vs prefix_embed" not in baselines.reason


def test_runs_csv_input_and_too_few_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_REPRO_DATA", str(tmp_path))
    recs = [record("stsb", "lora", s, 85.0) for s in range(2)] + [record("stsb", "full_ft", s, 86.0) for s in range(2)]
    runs_frame(recs).to_csv(tmp_path / "x_runs.csv", index=False)
    row = row_of(cl.claims_frame([tmp_path / "x_runs.csv"]), "glue_lora_vs_full_ft")
    assert row.verdict == "inconclusive at n=2"


def test_rank_trend_from_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_REPRO_DATA", str(tmp_path))
    recs = []
    for s in range(3):
        recs += [record("sst2", "lora", s, 80.0 + 0.1 * s, r=1, params=9_216, table=6),
                 record("sst2", "lora", s, 80.3 + 0.1 * s, r=8, params=73_728, table=6),
                 record("sst2", "lora", s, 80.1, r=64, params=589_824, table=6)]
    write_runs(tmp_path / "runs", recs)
    row = row_of(cl.claims_frame([tmp_path / "runs"]), "rank_small_suffices")
    assert row.verdict == cl.HOLDS and "r=1 vs r=8" in row.reason
    bad = [dict(rec) for rec in recs]
    for rec in bad:
        if rec["config"]["method"]["r"] == 1:
            rec["best"] = {"epoch": 1, "metrics": {"accuracy": 60.0 + rec["seed"]}}
    write_runs(tmp_path / "bad", bad)
    assert row_of(cl.claims_frame([tmp_path / "bad"]), "rank_small_suffices").verdict == cl.FAILS


def test_benchmark_and_analysis_evaluators(tmp_path):
    base = [0.010 + 0.0001 * (i % 7) for i in range(40)]
    bench = {"benchmark": "table1_latency", "command": "python -m benchmarks.table1_latency --size small",
             "environment": {"device": "cpu", "gpu_available": False, "hardware": {"cpu_count": 2}},
             "settings": {"model": "tiny", "precision": "fp32"},
             "results": {"raw": [{"batch": 1, "seq_len": 16, "seconds": {
                 "base": base, "lora_merged": [x * 1.005 for x in base], "adapter_l": [x * 1.3 for x in base],
                 "adapter_h": [x * 0.95 for x in base]}}]}}
    (tmp_path / "t1.json").write_text(json.dumps(bench))
    analysis = tmp_path / "analysis" / "fig3"
    analysis.mkdir(parents=True)
    (analysis / "manifest.json").write_text(json.dumps({"labels": {"smoke": False}, "runs": []}))
    modules = [{"site": f"L{i}.v", "max_i": 8, "max_j": 64, "phi_1_1": 0.8, "expected_random_1_1": 0.003,
                "init_phi_1_1": 0.01} for i in range(6)]
    (analysis / "subspace.json").write_text(json.dumps([{"a": "r8", "b": "r64", "kind": "rank", "modules": modules}]))
    frame = cl.claims_frame([tmp_path])
    assert row_of(frame, "latency_merged_lora").verdict == cl.HOLDS
    adapters = row_of(frame, "latency_adapters_bs1")
    assert adapters.verdict == cl.FAILS and "adapter_h/base - 1 = -5.0%" in adapters.reason
    assert "CPU" in adapters.evidence and adapters.command.startswith("python -m benchmarks.table1_latency")
    assert row_of(frame, "subspace_rank_overlap").verdict == cl.HOLDS
    assert row_of(frame, "subspace_seed_overlap").verdict == cl.NOT_RUN


# ------------------------------------------------------------------------------------------------------- CLI


def run_cli(*args, cwd=REPO, env_data=None):
    import os
    env = {**os.environ, "LORA_REPRO_DATA": str(env_data)} if env_data else None
    return subprocess.run([sys.executable, "-m", "lora_repro.report", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_cli_claims_end_to_end(tmp_path):
    recs = [record("rte", "lora", s, 60.0 + s) for s in range(3)]
    recs += [record("rte", "full_ft", s, 70.0 + s, params=22_000_000) for s in range(3)]
    write_runs(tmp_path / "runs", recs)
    runs_frame([record("cola", "lora", s, 20.0) for s in range(3)]
               + [record("cola", "full_ft", s, 40.0 + s) for s in range(3)]).to_csv(tmp_path / "c_runs.csv",
                                                                                       index=False)
    done = run_cli("claims", str(tmp_path / "runs"), str(tmp_path / "c_runs.csv"), "--out", str(tmp_path / "out" / "claims"),
                   env_data=tmp_path)
    assert done.returncode == 0, done.stderr
    csv = pd.read_csv(tmp_path / "out" / "claims.csv")
    md = (tmp_path / "out" / "claims.md").read_text()
    glue = csv[csv.id == "glue_lora_vs_full_ft"].iloc[0]
    assert glue.verdict == cl.FAILS and "rte" in glue.reason and "cola" in glue.reason
    assert "| glue_lora_vs_full_ft |" in md and "**does not hold**" in md
    assert md.splitlines()[2].startswith("Regenerate: `python -m lora_repro.report claims")
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporary file
    assert f"wrote {tmp_path / 'out' / 'claims.md'}" in done.stdout


def test_cli_claims_with_no_runs_writes_not_run_rows(tmp_path):
    done = run_cli("claims", "--out", str(tmp_path / "claims"), env_data=tmp_path / "none")
    assert done.returncode == 0, done.stderr
    csv = pd.read_csv(tmp_path / "claims.csv")
    assert len(csv) >= 17 and set(csv.verdict.map(cl.verdict_kind)) <= {"not run here", "cannot be tested here"}


def test_cli_table_report_keeps_its_usage(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli(str(empty), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and done.stdout.strip().startswith("no results.json under")
    assert not (tmp_path / "x.md").exists()
    write_runs(tmp_path / "runs", [record("rte", "lora", 0, 60.0)])
    done = run_cli(str(tmp_path / "runs"), "--out", str(tmp_path / "x"))
    assert done.returncode == 0 and (tmp_path / "x.md").exists() and (tmp_path / "x_runs.csv").exists()


def test_committed_results_verdicts_follow_the_numbers():
    """The committed GPU Table 2 runs have 2 seeds: every GLUE comparison must stay inconclusive at n=2 (min n 3)."""
    frame = cl.claims_frame([REPO / "results" / "table2_standin_gpu_runs.csv"])
    assert row_of(frame, "glue_lora_vs_full_ft").verdict == "inconclusive at n=2"
    with pytest.raises(AssertionError):
        row_of(frame, "no_such_claim")
