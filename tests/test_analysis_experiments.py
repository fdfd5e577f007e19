"""Section 7 experiments end to end in smoke mode: configs compose, runs train, the analysis writes its artefacts,
and the notebooks draw their figures from them headless.

Smoke runs use a tiny random model (2 layers, hidden 32), so r=64 exceeds the input size k=32: A_64 spans all of
R^32, which gives exact checks (φ(i, 32) = 1 against it).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lora_repro.analysis import experiments as ex
from lora_repro.config import compose
from lora_repro.analysis.__main__ import main as cli_main
from lora_repro.analysis.checkpoint import LoraModule

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
EXPERIMENTS = ("table5_weight_types", "table6_rank", "fig3_subspace", "fig4_seeds", "table7_amplification")


def compose_cfg(experiment: str, *overrides: str):
    return compose([f"+experiment={experiment}", *overrides])


def sweep(experiment: str) -> list[dict]:
    """Every job of the experiment's sweep, resolved: the cartesian product of hydra.sweeper.params."""
    from omegaconf import OmegaConf

    cfg = compose([f"+experiment={experiment}"], hydra_config=True)
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    return [OmegaConf.to_container(compose([f"+experiment={experiment}",
                                            *(f"{k}={v}" for k, v in zip(params, values))]), resolve=True)
            for values in itertools.product(*params.values())]


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_sweeps_compose_with_a_cpu_stand_in(experiment: str) -> None:
    jobs = sweep(experiment)
    for job in jobs:
        assert job["model"]["name"] == "minilm-l6" and job["task"]["name"] == "sst2"
        assert job["method"]["name"] == "lora" and job["run_group"] == experiment
        assert job["task"]["max_train_examples"] and job["method"]["alpha"] == 8
    settings = sorted((tuple(job["method"]["targets"]), job["method"]["r"], job["seed"]) for job in jobs)
    if experiment == "table5_weight_types":  # equal budget: (number of weight types) x r is the same for every row
        assert {len(t) * r for t, r, _ in settings} == {8}
        assert {t for t, _, _ in settings} == {("q",), ("k",), ("v",), ("o",), ("q", "k"), ("q", "v"),
                                               ("q", "k", "v", "o")}
    elif experiment == "table6_rank":
        assert settings == sorted((t, r, 0) for t in [("q",), ("q", "v"), ("q", "k", "v", "o")]
                                  for r in (1, 2, 4, 8, 64))
    elif experiment == "fig3_subspace":
        assert settings == [(("q", "v"), 8, 0), (("q", "v"), 64, 0)]
    elif experiment == "fig4_seeds":
        assert settings == [(("q", "v"), 64, 0), (("q", "v"), 64, 1)]
    elif experiment == "table7_amplification":
        assert settings == [(("q", "v"), 4, 0), (("q", "v"), 64, 0)]


# ---------------------------------------------------------------- smoke runs (shared by the tests below)


def run_smoke(experiment: str, output_root: Path, *overrides: str) -> Path:
    from lora_repro.run import run

    record = run(compose_cfg(experiment, "smoke=true", f"output_root={output_root}", *overrides))
    assert record["status"] == "complete", record.get("error")
    return Path(record["run_dir"])


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> Path:
    """Four smoke runs from three experiments: r=8 and r=64 (seed 0), r=4 (seed 0), r=64 (seed 1)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    run_smoke("fig3_subspace", root, "method.r=8")
    run_smoke("fig3_subspace", root, "method.r=64")
    run_smoke("table7_amplification", root, "method.r=4")
    run_smoke("fig4_seeds", root, "seed=1")
    return root


@pytest.fixture(scope="module")
def smoke_analysis(smoke_runs: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "analysis" / "smoke"
    ex.analyse([smoke_runs], out, max_w_directions=16, train_command="pytest smoke runs")
    return out


def test_analysis_pairs_runs_and_writes_every_artefact(smoke_analysis: Path) -> None:
    manifest = json.loads((smoke_analysis / ex.MANIFEST_FILE).read_text())
    assert manifest["labels"]["ranks"] == [4, 8, 64] and manifest["labels"]["seeds"] == [0, 1]
    assert manifest["labels"]["smoke"] and manifest["labels"]["models"] == ["minilm-l6"]
    assert manifest["labels"]["tasks"] == ["sst2"] and manifest["labels"]["hardware"]
    assert manifest["train_command"] == "pytest smoke runs" and not manifest["skipped"]
    assert not manifest["skipped_base"]
    for files in manifest["files"].values():
        for name in files:
            assert (smoke_analysis / name).stat().st_size > 0
    assert "SMOKE" in (smoke_analysis / "summary.md").read_text()

    pairs = json.loads((smoke_analysis / "subspace.json").read_text())
    kinds = sorted((p["kind"], p["r_a"], p["r_b"], p["seed_a"], p["seed_b"]) for p in pairs)
    assert kinds == [("rank", 4, 64, 0, 0), ("rank", 8, 64, 0, 0), ("seed", 64, 64, 0, 1)]
    grids = np.load(smoke_analysis / "subspace.npz")
    for pair in pairs:
        assert [m["site"] for m in pair["modules"]] == ["L0.q", "L0.v", "L1.q", "L1.v"]
        for module in pair["modules"]:
            grid = grids[f"{pair['pair_id']}|{module['site']}"]
            assert grid.shape == (min(pair["r_a"], 32), 32)  # A_64 of a 32-wide model has rank 32
            assert np.all((grid >= -1e-6) & (grid <= 1 + 1e-6))
            # A_64 spans all of R^32, so any subspace lies in it: φ(i, 32) = 1 for every i
            np.testing.assert_allclose(grid[:, -1], 1.0, atol=1e-5)
            assert module["phi_1_1"] == pytest.approx(float(grid[0, 0]), abs=1e-6)
            assert grids[f"{pair['pair_id']}|{module['site']}|random"].shape == grid.shape
            # the runs' initial A's, rebuilt: A0_64 spans R^32 too
            np.testing.assert_allclose(grids[f"{pair['pair_id']}|{module['site']}|init"][:, -1], 1.0, atol=1e-5)
            assert 0 <= module["init_phi_1_1"] <= 1 + 1e-6


def test_amplification_and_spectra_rows_are_consistent(smoke_analysis: Path) -> None:
    amplification = json.loads((smoke_analysis / "amplification.json").read_text())
    rows = amplification["rows"]
    assert len(rows) == 4 * 4  # 4 runs x (2 layers x q, v)
    for row in rows:
        assert 1 <= row["r_used"] <= min(row["r"], 32)
        assert row["amplification"] == pytest.approx(row["delta_w_fro"] / row["proj_delta_w"])
        assert row["proj_w"] <= row["w_fro"] + 1e-9  # the top-r directions of W keep at most all of W
        assert row["proj_delta_w"] <= row["proj_w"] + 1e-9  # ... and no other r directions keep more
        assert 0 <= row["phi_a_vs_init"] <= 1 + 1e-9 and row["a_change_rel"] >= 0
    assert amplification["paper"]["by_rank"]["4"]["amplification"] == pytest.approx(6.91 / 0.32)
    spectra = json.loads((smoke_analysis / "spectra.json").read_text())
    assert all(row["numerical_rank"] <= min(row["r"], 32) for row in spectra)
    w_vs_dw = json.loads((smoke_analysis / "w_vs_delta_w.json").read_text())
    grids = np.load(smoke_analysis / "w_vs_delta_w.npz")
    for row in w_vs_dw:
        for side in ("left", "right"):
            assert grids[f"{row['run_id']}|{row['site']}|{side}"].shape == (row["max_i"], 16)


def test_rebuilt_base_model_is_the_one_training_started_from(tmp_path: Path) -> None:
    """With lr=0 training changes nothing, so the saved A must equal the rebuilt A0 bit for bit: the rebuild
    replays the same seeded draws (base model first, then A), so a different W would shift A0 too."""
    run_dir = run_smoke("fig3_subspace", tmp_path, "method.r=4", "trainer.lr=0.0")
    run = ex.load_lora_run(run_dir)
    weights = ex.base_weights(run)
    assert set(weights) == set(run.modules)
    for name, module in run.modules.items():
        assert torch.equal(weights[name].A0, module.A)
        assert weights[name].W.shape == (module.B.shape[0], module.A.shape[1])
    rows = ex.amplification_of_run(run, weights)
    assert all(row["note"] == "ΔW is zero" and row["a_change_rel"] == 0.0 for row in rows)
    spectra, _ = ex.spectra_of_run(run)
    assert all(row["numerical_rank"] == 0 and row["effective_rank"] is None for row in spectra)


def test_sweep_from_the_command_line_runs_the_analysis_callback(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, "-m", "lora_repro", "+experiment=fig4_seeds", "smoke=true",
                             f"output_root={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    analysis = tmp_path / "fig4_seeds" / "analysis"
    pairs = json.loads((analysis / "subspace.json").read_text())
    assert [(p["kind"], p["seed_a"], p["seed_b"]) for p in pairs] == [("seed", 0, 1)]
    assert (analysis / "amplification.json").is_file() and (analysis / "summary.md").is_file()


# ---------------------------------------------------------------- CLI


def test_cli_writes_the_chosen_analyses(smoke_runs: Path, tmp_path: Path, capsys) -> None:
    assert cli_main([str(smoke_runs), "--out", str(tmp_path / "out"), "--analyses", "subspace,performance"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "manifest.json", "performance.json", "subspace.json", "subspace.npz", "summary.md"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["analysis_command"].startswith("python -m lora_repro.analysis ")
    assert "4 runs analysed" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--analyses", "subspace,bogus"], "unknown analyses ['bogus']; choices: subspace, amplification"),
    (["--max-w-directions", "0"], "--max-w-directions must be >= 1"),
])
def test_cli_rejects_bad_options(smoke_runs: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert cli_main([str(smoke_runs), "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_names_a_missing_or_empty_input(tmp_path: Path, capsys) -> None:
    assert cli_main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert cli_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no complete LoRA run under" in capsys.readouterr().err


# ---------------------------------------------------------------- loading and pairing (no training)


def write_run(root: Path, method: dict, status: str = "complete", seed: int = 0, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    run_dir = root / f"{method['name']}_r{method.get('r')}_{'_'.join(method.get('targets', []))}_s{seed}"
    (run_dir / "method").mkdir(parents=True)
    config = {"model": {"name": "tiny"}, "task": {"name": "rte"}, "method": method, "seed": seed,
              "run_group": "x", "label": f"r={method.get('r')}", **(extra or {})}
    (run_dir / "results.json").write_text(json.dumps({"status": status, "seed": seed, "config": config,
                                                      "experiment": "x", "task": "rte"}))
    r = method.get("r", 2)
    generator = torch.Generator().manual_seed(seed + 10 * r)
    state = {f"bert.encoder.layer.0.attention.self.{m}.lora_{p}":
             torch.randn(*((r, 6) if p == "A" else (5, r)), generator=generator)
             for m in ("query", "value") for p in "AB"}
    save_file(state, str(run_dir / "method" / "method.safetensors"))
    (run_dir / "method" / "method_config.json").write_text(json.dumps({"method": method}))
    return run_dir


def lora(r: int, targets: tuple[str, ...] = ("q", "v")) -> dict:
    return {"name": "lora", "r": r, "alpha": 8, "targets": list(targets)}


def test_load_lora_run_refuses_unfinished_and_non_lora_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status is 'running', not 'complete'"):
        ex.load_lora_run(write_run(tmp_path / "running", lora(2), status="running"))
    with pytest.raises(ValueError, match="method is 'bitfit'; the Section 7 analyses need 'lora'"):
        ex.load_lora_run(write_run(tmp_path, {"name": "bitfit"}))
    with pytest.raises(FileNotFoundError, match="no readable results.json"):
        ex.load_lora_run(tmp_path)
    run = ex.load_lora_run(write_run(tmp_path / "complete", lora(2)))
    assert sorted(run.modules) == ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value"]
    assert run.scaling == 4.0 and run.run_id == "q+v_r2_seed0"


def test_runs_pair_only_when_nothing_but_r_or_the_seed_differs(tmp_path: Path) -> None:
    for r, seed in ((2, 0), (4, 0), (8, 0), (8, 1)):
        write_run(tmp_path, lora(r), seed=seed)
    write_run(tmp_path, lora(4, ("q",)))  # other targets: pairs with nothing
    write_run(tmp_path, lora(2), seed=1, extra={"trainer": {"lr": 1.0}})  # other lr: pairs with nothing
    runs, skipped = ex.find_lora_runs([tmp_path])
    assert len(runs) == 6 and not skipped
    ranks = sorted((a.r, b.r, a.seed) for a, b in ex.rank_pairs(runs))
    assert ranks == [(2, 8, 0), (4, 8, 0)]
    seeds = sorted((a.seed, b.seed, a.r) for a, b in ex.seed_pairs(runs))
    assert seeds == [(0, 1, 8)]


def test_subspace_pair_of_identical_A_is_one_everywhere(tmp_path: Path) -> None:
    run = ex.load_lora_run(write_run(tmp_path, lora(3)))
    summary, arrays = ex.subspace_pair(run, run)
    for row in summary["modules"]:
        np.testing.assert_allclose(arrays[f"{summary['pair_id']}|{row['site']}"], 1.0, atol=1e-6)
        assert row["expected_random_1_1"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("name, site", [
    ("roberta.encoder.layer.11.attention.self.query", (11, "q")),
    ("bert.encoder.layer.3.output.dense", (3, "fc2")),
    ("model.layers.7.self_attn.v_proj", (7, "v")),
    ("transformer.h.5.attn.c_attn", (5, "qkv")),
    ("deberta.encoder.layer.0.attention.self.value_proj", (0, "v")),
    ("blocks.2.mixer.proj", (2, "proj")),
])
def test_module_site_names_layer_and_logical_module(name: str, site: tuple) -> None:
    assert ex.module_site(name) == site


def test_performance_rows_carry_the_papers_number_for_the_same_setting(tmp_path: Path) -> None:
    run = ex.load_lora_run(write_run(tmp_path, lora(2, ("q", "k", "v", "o"))))
    (row,) = ex.performance_rows([run])
    assert row["paper_table"] == 5 and row["paper_gpt3_mnli_m"] == 91.7 and row["paper_gpt3_wikisql"] == 73.7
    other = ex.load_lora_run(write_run(tmp_path, lora(16, ("k",))))
    assert "paper_table" not in ex.performance_rows([other])[0]


def test_lora_module_tuple_is_what_the_analyses_read() -> None:
    A, B = torch.ones(2, 3), torch.ones(4, 2)
    assert LoraModule("x", A, B).A is A


# ---------------------------------------------------------------- notebooks


NOTEBOOK_FIGURES = {
    "fig3_fig4_subspace.ipynb": ("fig3_smoke_", "fig4_smoke_"),
    "fig8_w_vs_dw.ipynb": ("fig8_smoke_",),
    "tables5_6_7.ipynb": ("table7_smoke", "tables5_6_smoke", "spectra_smoke"),
}


def execute_notebook(name: str, results: Path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LORA_REPRO_RESULTS", str(results))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_FIGURES))
def test_notebook_runs_headless_and_writes_its_figures(notebook: str, smoke_analysis: Path, tmp_path: Path,
                                                       monkeypatch) -> None:
    results = tmp_path / "results"
    shutil.copytree(smoke_analysis, results / "analysis" / "smoke")
    execute_notebook(notebook, results, monkeypatch)
    pngs = sorted(p.name for p in (results / "figures").glob("*.png"))
    for prefix in NOTEBOOK_FIGURES[notebook]:
        made = [p for p in pngs if p.startswith(prefix)]
        assert made, f"{notebook} wrote no {prefix}*.png (wrote {pngs})"
        for png in made:
            assert (results / "figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_notebook_without_artefacts_fails_loudly(tmp_path: Path, monkeypatch) -> None:
    from nbclient.exceptions import CellExecutionError

    (tmp_path / "analysis").mkdir()
    with pytest.raises(CellExecutionError, match="no .*manifest.json"):
        execute_notebook("tables5_6_7.ipynb", tmp_path, monkeypatch)
