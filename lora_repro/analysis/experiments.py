"""Section 7 over saved runs: load LoRA checkpoints, compute φ grids, ΔW spectra and Table 7, write artefacts.

A run directory (``run.py``) holds results.json and method/{method.safetensors, method_config.json}. The frozen
base weights W are not saved, so they are rebuilt exactly as training built them: same config, same seed, through
``lora_repro.run.prepare`` (pretrained weights for real runs; the seeded random tiny model for smoke runs). The same
rebuild gives A at initialisation, A0, which says how far training moved A (a short CPU run may leave A close to its
random init, and φ between two near-init A's is the random baseline, not a finding).

Artefacts (one folder per analysis, e.g. results/analysis/fig3_subspace/):
    manifest.json        what was analysed: runs (model, task, r, alpha, targets, seed, score), hardware, commands
    subspace.json/.npz   Figures 3/4: φ(A_a, A_b, i, j) grids per pair of runs, layer and module, + random baseline
    amplification.json   Table 7 per run, layer and module (and A's movement from init)
    spectra.json/.npz    singular values and effective rank of ΔW = (alpha/r) B A per run, layer and module
    w_vs_delta_w.json/.npz  Figure 8: φ between singular directions of ΔW and of W (left and right) + random baseline
    performance.json     Tables 5/6: each run's score with the paper's GPT-3 numbers for the same weight types and r
    summary.md           all of the above as Markdown tables
NPZ keys are "<pair or run id>|<site>[|random]" with site = "L<layer>.<module>" (e.g. "L3.q").
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lora_repro import results as rs
from lora_repro.analysis.checkpoint import LoraModule, iter_lora_modules, iter_model_lora_modules
from lora_repro.analysis.spectrum import amplification, delta_w, effective_rank, numerical_rank, spectrum
from lora_repro.analysis.subspace import (
    similarity_grid_of_bases,
    singular_directions,
    subspace_similarity,
    subspace_similarity_grid,
)
from lora_repro.errors import MissingInputError, UserError

log = logging.getLogger("lora_repro")

ANALYSES = ("subspace", "amplification", "spectra", "w_vs_delta_w", "performance")
NEEDS_BASE = ("amplification", "w_vs_delta_w")  # need W, which means rebuilding the base model
MANIFEST_FILE = "manifest.json"



# ---------------------------------------------------------------- loading runs


@dataclass(frozen=True)
class LoraRun:
    """One finished LoRA run: its results.json record, method settings and (A, B) per adapted module."""

    run_dir: Path
    record: dict
    method: dict
    modules: dict[str, LoraModule]

    @property
    def config(self) -> dict:
        return self.record.get("config", {})

    @property
    def r(self) -> int:
        return int(self.method["r"])

    @property
    def alpha(self) -> float:
        return float(self.method.get("alpha", self.r))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @property
    def seed(self) -> int:
        return int(self.record.get("seed", self.config.get("seed", 0)))

    @property
    def targets(self) -> list[str]:
        return list(self.method.get("targets", []))

    @property
    def run_id(self) -> str:
        """Short readable id, unique within one analysis: targets, rank, seed."""
        return f"{'+'.join(self.targets)}_r{self.r}_seed{self.seed}"

    def describe(self) -> dict:
        """The labels every artefact carries: model (and what it stands in for), task, data, ranks, seed, score."""
        rec, cfg = self.record, self.config
        best = (rec.get("best") or {}).get("metrics", {})
        return {
            "run_id": self.run_id, "run_dir": str(self.run_dir), "experiment": rec.get("experiment"),
            "model": rec.get("model", {}).get("name"), "stand_in_for": rec.get("model", {}).get("stand_in_for"),
            "model_init": rec.get("model", {}).get("init"), "task": rec.get("task"), "smoke": bool(rec.get("smoke")),
            "n_examples": rec.get("data", {}).get("n_examples"), "data_source": rec.get("data", {}).get("source"),
            "r": self.r, "alpha": self.alpha, "targets": self.targets, "seed": self.seed,
            "epochs": cfg.get("trainer", {}).get("epochs"), "lr": cfg.get("trainer", {}).get("lr"),
            "batch_size": cfg.get("trainer", {}).get("batch_size"),
            "metric": rec.get("primary_metric"), "best": best.get(rec.get("primary_metric")),
            "best_epoch": (rec.get("best") or {}).get("epoch"),
            "last": (rec.get("last") or {}).get("metrics", {}).get(rec.get("primary_metric")),
            "trainable_without_head": rec.get("parameters", {}).get("trainable_without_head"),
            "hardware": rec.get("hardware"), "wall_time_s": rec.get("wall_time_s"), "git": rec.get("git"),
        }


def load_lora_run(run_dir: str | Path) -> LoraRun:
    """Read a complete LoRA run directory; a clear error for anything else (unfinished run, other method, no weights)."""
    from safetensors.torch import load_file

    from lora_repro.methods.common import WEIGHTS_FILE, read_method_config

    run_dir = Path(run_dir)
    record = rs.read_results(run_dir)
    if record is None:
        raise MissingInputError(f"{run_dir}: no readable {rs.RESULTS_FILE}; pass a run directory (…/seed<N>)")
    if record.get("status") != "complete":
        raise UserError(f"{run_dir}: run status is {record.get('status')!r}, not 'complete'")
    meta = read_method_config(run_dir / "method")
    if meta["method"].get("name") != "lora":
        raise UserError(f"{run_dir}: method is {meta['method'].get('name')!r}; the Section 7 analyses need 'lora'")
    state = load_file(str(run_dir / "method" / WEIGHTS_FILE))
    modules = {m.name: m for m in iter_lora_modules(state)}
    if not modules:
        raise UserError(f"{run_dir / 'method' / WEIGHTS_FILE}: no '.lora_A' / '.lora_B' pairs in the checkpoint")
    return LoraRun(run_dir, record, meta["method"], modules)


def find_lora_runs(paths: Iterable[str | Path]) -> tuple[list[LoraRun], list[str]]:
    """All complete LoRA runs under `paths` (run dirs or folders above them), sorted; plus why others were skipped."""
    runs, skipped = [], []
    for root in map(Path, paths):
        if not root.exists():
            raise MissingInputError(f"{root}: no such run directory or experiment folder")
        result_files = [root / rs.RESULTS_FILE] if (root / rs.RESULTS_FILE).is_file() else sorted(
            root.rglob(rs.RESULTS_FILE))
        for path in result_files:
            run = guarded(path.parent, "loading", lambda: load_lora_run(path.parent), skipped)
            if run is not None:
                runs.append(run)
    runs.sort(key=lambda run: (run.targets, run.r, run.seed, str(run.run_dir)))
    return runs, skipped


def guarded(run: LoraRun | str | Path, what: str, compute, failures: list[str], default=None):
    """compute(), or `default` when it fails, so one bad run does not sink the analysis of the others; the failure
    is appended to `failures` naming the run. A user-fixable input (UserError, a missing or unreadable file) is
    logged as one line; anything else is a bug and is logged with its traceback."""
    label = run.run_dir if isinstance(run, LoraRun) else run
    try:
        return compute()
    except (UserError, OSError, KeyError) as error:  # an unfinished, foreign or damaged run: skip it
        failures.append(f"{label}: {what}: {type(error).__name__}: {error}")
        log.error("%s %s skipped: %s: %s", what, label, type(error).__name__, error)
    except Exception as error:  # noqa: BLE001 - a bug: show it in full, then go on with the other runs
        failures.append(f"{label}: {what}: BUG {type(error).__name__}: {error} (traceback in the log)")
        log.exception("%s %s failed with an unexpected error (a bug in lora_repro, please report it)", what, label)
    return default


# ---------------------------------------------------------------- where a module sits


def module_site(name: str) -> tuple[int | None, str]:
    """(layer index, logical module name) of a module path, via the family maps: 'bert.encoder.layer.3.attention.
    self.query' -> (3, 'q'); a slice of GPT-2's fused c_attn, 'transformer.h.3.attn.c_attn.lora.q' -> (3, 'q').
    Unknown paths keep their last component as the module and layer None."""
    from lora_repro.models.families import FAMILIES

    for family in FAMILIES.values():  # a slice of a fused projection: 'transformer.h.3.attn.c_attn.lora.q' -> (3, 'q')
        fused = re.search(rf"(^|\.)(?:{family.fused_qkv})\.lora\.(\w+)$", name) if family.fused_qkv else None
        if fused and fused.group(fused.lastindex) in family.fused_order:
            layer_match = re.search(family.layers, name)
            layer = int(re.findall(r"\d+", layer_match.group(0))[-1]) if layer_match else None
            return layer, fused.group(fused.lastindex)
    for family in FAMILIES.values():
        layer_match = re.search(family.layers, name)
        for logical, pattern in family.modules.items():
            if re.search(rf"(^|\.)(?:{pattern})$", name):
                layer = int(re.findall(r"\d+", layer_match.group(0))[-1]) if layer_match else None
                return layer, logical
    numbers = re.findall(r"\.(\d+)\.", name)
    return (int(numbers[-1]) if numbers else None), name.rsplit(".", 1)[-1]


def site_key(name: str) -> str:
    layer, module = module_site(name)
    return f"L{layer}.{module}" if layer is not None else module


def _site_order(name: str) -> tuple:
    layer, module = module_site(name)
    order = {m: i for i, m in enumerate(("q", "k", "v", "o", "qkv", "fc1", "gate", "fc2"))}
    return (layer if layer is not None else -1, order.get(module, 99), module)


# ---------------------------------------------------------------- rebuilding W and A0


@dataclass(frozen=True)
class BaseWeights:
    """W (out x in, as ΔW = BA is laid out) and A at initialisation (None when a caller has only W)."""

    W: torch.Tensor
    A0: torch.Tensor | None


def base_weights(run: LoraRun) -> dict[str, BaseWeights]:
    """Rebuild the run's model as training built it (same config and seed: run.prepare), and read W and A0 per module.

    Smoke runs have a random base that only the seed and the job's data define, so their data must be the same kind
    (real or synthetic) now as at training time; otherwise W would silently differ, and this raises instead.
    """
    from lora_repro import run as run_module

    cfg = json.loads(json.dumps(run.config))  # a private copy: prepare must not touch the record
    torch.manual_seed(run.seed)  # what run.run() does before prepare: the same random draws, in the same order
    np.random.seed(run.seed)
    _, _, data, _, model, _ = run_module.prepare(cfg)
    data_source, trained_on = data["source"], run.record.get("data", {}).get("source")
    if run.record.get("smoke") and data_source != trained_on:
        raise UserError(f"{run.run_dir}: smoke run trained on {trained_on!r} data but rebuilding finds {data_source!r}"
                         " data; the random base model would differ (set LORA_REPRO_DATA as at training time)")
    # one entry per adapted weight, named as the checkpoint names it: a fused layer (GPT-2's c_attn) gives one per
    # slice, "...c_attn.lora.q" with W = W_q (its rows of the out x in weight), not the whole fused 3d x d matrix
    weights = {m.name: BaseWeights(m.W.clone(), m.A.clone()) for m in iter_model_lora_modules(model)}
    missing = sorted(set(run.modules) - set(weights))
    if missing:
        raise UserError(f"{run.run_dir}: rebuilt model has no LoRA layer for {missing[:3]}: base model or settings "
                         "changed since training")
    for name, module in run.modules.items():
        if tuple(weights[name].W.shape) != (module.B.shape[0], module.A.shape[1]):
            raise UserError(f"{run.run_dir}: {name}: rebuilt W is {tuple(weights[name].W.shape)} but the checkpoint's "
                             f"ΔW is {(module.B.shape[0], module.A.shape[1])}")
    return weights


# ---------------------------------------------------------------- pairing runs


def _identity(run: LoraRun, drop: str) -> str:
    """The run's setting (lora_repro.results.setting) without `drop` ("r" or "seed"): equal for runs that differ only
    there."""
    cfg = rs.setting(run.config, drop=(drop,) if drop != "seed" else ())
    if drop != "seed":
        cfg["seed"] = run.seed
    return json.dumps(cfg, sort_keys=True, default=str)


def _groups(runs: Sequence[LoraRun], drop: str) -> list[list[LoraRun]]:
    """Runs grouped by their settings without `drop`."""
    groups: dict[str, list[LoraRun]] = defaultdict(list)
    for run in runs:
        groups[_identity(run, drop=drop)].append(run)
    return list(groups.values())


def rank_pairs(runs: Sequence[LoraRun]) -> list[tuple[LoraRun, LoraRun]]:
    """Figure 3: runs identical but for r (same seed): each smaller r paired with the largest r of its group."""
    pairs = []
    for group in _groups(runs, drop="r"):
        largest = max(group, key=lambda run: run.r)
        pairs += [(run, largest) for run in sorted(group, key=lambda run: run.r) if run.r < largest.r]
    return pairs


def seed_pairs(runs: Sequence[LoraRun]) -> list[tuple[LoraRun, LoraRun]]:
    """Figure 4: runs identical but for the seed (same r): every pair of seeds of a group."""
    pairs = []
    for group in _groups(runs, drop="seed"):
        group = sorted(group, key=lambda run: run.seed)
        pairs += [(a, b) for i, a in enumerate(group) for b in group[i + 1:] if a.seed != b.seed]
    return pairs


# ---------------------------------------------------------------- the analyses


def subspace_pair(run_a: LoraRun, run_b: LoraRun, baseline_seed: int = 0,
                  inits: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None,
                  ) -> tuple[dict, dict[str, np.ndarray]]:
    """φ(A_a, A_b, i, j) per shared module (Figures 3 and 4), with two random Gaussian A's of the same shapes.

    Returns (summary, arrays): summary rows per site with φ(1,1), φ(1, max_j), φ(m, m) (m = min of the two ranks)
    beside their random expectation max(i, j) / k; arrays hold the grids (float32). With `inits` (A0 per module
    name of each run, from base_weights) the same numbers for the two initial A's are added ("init_*", "|init"):
    what the overlap would be had training changed nothing (e.g. same seed: A_8's first rows can be A_64's).
    """
    pair_id = f"{run_a.run_id}__vs__{run_b.run_id}"
    shared = sorted(set(run_a.modules) & set(run_b.modules), key=_site_order)
    if not shared:
        raise UserError(f"{run_a.run_dir} and {run_b.run_dir} adapt no module in common")
    generator = torch.Generator().manual_seed(baseline_seed)
    rows, arrays = [], {}
    for name in shared:
        A_a, A_b = run_a.modules[name].A, run_b.modules[name].A
        grid = subspace_similarity_grid(A_a, A_b)
        random_grid = subspace_similarity_grid(
            torch.randn(tuple(A_a.shape), generator=generator, dtype=torch.float64),
            torch.randn(tuple(A_b.shape), generator=generator, dtype=torch.float64),
            max_i=grid.shape[0], max_j=grid.shape[1])
        k, (max_i, max_j) = A_a.shape[1], grid.shape
        m = min(max_i, max_j)
        key = site_key(name)
        arrays[f"{pair_id}|{key}"] = grid.numpy().astype(np.float32)
        arrays[f"{pair_id}|{key}|random"] = random_grid.numpy().astype(np.float32)
        layer, module = module_site(name)
        row = {"site": key, "layer": layer, "module": module, "name": name, "k": k, "max_i": max_i,
               "max_j": max_j, "phi_1_1": float(grid[0, 0]), "phi_1_max": float(grid[0, -1]),
               "phi_m_m": float(grid[m - 1, m - 1]), "m": m, "random_1_1": float(random_grid[0, 0]),
               "random_m_m": float(random_grid[m - 1, m - 1]), "expected_random_1_1": 1 / k,
               "expected_random_1_max": max_j / k, "expected_random_m_m": m / k}
        if inits is not None and name in inits[0] and name in inits[1]:
            init_grid = subspace_similarity_grid(inits[0][name], inits[1][name], max_i=max_i, max_j=max_j)
            arrays[f"{pair_id}|{key}|init"] = init_grid.numpy().astype(np.float32)
            row.update(init_phi_1_1=float(init_grid[0, 0]), init_phi_1_max=float(init_grid[0, -1]),
                       init_phi_m_m=float(init_grid[m - 1, m - 1]))
        rows.append(row)
    summary = {"pair_id": pair_id, "a": run_a.run_id, "b": run_b.run_id, "r_a": run_a.r, "r_b": run_b.r,
               "seed_a": run_a.seed, "seed_b": run_b.seed, "run_dir_a": str(run_a.run_dir),
               "run_dir_b": str(run_b.run_dir), "modules": rows}
    return summary, arrays


def spectra_of_run(run: LoraRun) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Singular values of ΔW = (alpha/r) B A per module: numerical rank, effective rank, ||ΔW||_F, top values."""
    rows, arrays = [], {}
    for name in sorted(run.modules, key=_site_order):
        module = run.modules[name]
        values = spectrum(delta_w(module.A, module.B, run.scaling))[: module.A.shape[0]]
        layer, logical = module_site(name)
        zero = float(values[0]) == 0.0
        rows.append({"run_id": run.run_id, "site": site_key(name), "layer": layer, "module": logical, "r": run.r,
                     "numerical_rank": numerical_rank(values), "effective_rank": None if zero else effective_rank(values),
                     "delta_w_fro": float(values.norm()), "sigma_1": float(values[0]),
                     "sigma_1_share": None if zero else float(values[0] ** 2 / (values ** 2).sum())})
        arrays[f"{run.run_id}|{site_key(name)}"] = values.numpy()
    return rows, arrays


def amplification_of_run(run: LoraRun, weights: dict[str, BaseWeights], seed: int = 0) -> list[dict]:
    """Table 7 per module: ||U^T W V||_F for the top-r directions of ΔW, W and a random matrix; ||ΔW||_F; the factor.

    r is the run's rank, capped at ΔW's numerical rank (ΔW = BA has rank <= r; beyond it the directions are
    arbitrary). Also how far A moved from its initialisation A0: ||A - A0||_F / ||A0||_F and φ(A, A0, r, r).
    """
    rows = []
    for name in sorted(run.modules, key=_site_order):
        module, base = run.modules[name], weights[name]
        dW = delta_w(module.A, module.B, run.scaling)
        layer, logical = module_site(name)
        row = {"run_id": run.run_id, "site": site_key(name), "layer": layer, "module": logical, "r": run.r,
               "seed": run.seed}
        rank = numerical_rank(dW)
        if rank == 0:  # nothing learned (e.g. lr=0): no direction to project on
            row.update(r_used=0, delta_w_fro=0.0, note="ΔW is zero")
        else:
            result = amplification(base.W, dW, min(run.r, rank), seed=seed)
            result["r_used"] = result.pop("r")
            row.update(result)
        if base.A0 is not None:
            A, A0 = module.A.to(torch.float64), base.A0.to(torch.float64)
            row["a_change_rel"] = float((A - A0).norm() / A0.norm())
            top = min(numerical_rank(A), numerical_rank(A0))
            row["phi_a_vs_init"] = subspace_similarity(A, A0, top, top)
        rows.append(row)
    return rows


def w_vs_delta_w_of_run(run: LoraRun, weights: dict[str, BaseWeights], max_w_directions: int = 128,
                        seed: int = 0) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Figure 8: φ between the top-i singular directions of ΔW and the top-j of W, for left and right vectors
    (the paper does not say which), with a random Gaussian matrix in place of W as the baseline."""
    rows, arrays = [], {}
    generator = torch.Generator().manual_seed(seed)
    for name in sorted(run.modules, key=_site_order):
        module, W = run.modules[name], weights[name].W
        dW = delta_w(module.A, module.B, run.scaling)
        n_delta = min(run.r, numerical_rank(dW))
        if n_delta == 0:
            continue
        n_w = min(max_w_directions, min(W.shape))
        random_matrix = torch.randn(tuple(W.shape), generator=generator, dtype=torch.float64)
        key = site_key(name)
        layer, logical = module_site(name)
        row = {"run_id": run.run_id, "site": key, "layer": layer, "module": logical, "r": run.r, "max_i": n_delta,
               "max_j": n_w}
        tenth = max(1, min(W.shape) // 10)  # H.3 quotes φ(top 4 of ΔW, top 10% of W)
        for side in ("left", "right"):
            grid = similarity_grid_of_bases(singular_directions(dW, side, n_delta), singular_directions(W, side, n_w))
            random_grid = similarity_grid_of_bases(singular_directions(dW, side, n_delta),
                                                   singular_directions(random_matrix, side, n_w))
            # float16 (3 significant digits, plenty for a heatmap of values in [0, 1]) keeps the file small
            arrays[f"{run.run_id}|{key}|{side}"] = grid.numpy().astype(np.float16)
            arrays[f"{run.run_id}|{key}|{side}|random"] = random_grid.numpy().astype(np.float16)
            i, j = min(4, n_delta), min(tenth, n_w)
            row[f"{side}_phi_top{i}_vs_top{j}"] = float(grid[i - 1, j - 1])
            row[f"{side}_random_top{i}_vs_top{j}"] = float(random_grid[i - 1, j - 1])
        rows.append(row)
    return rows, arrays


def performance_rows(runs: Sequence[LoraRun]) -> list[dict]:
    """Tables 5/6: each run's score beside the paper's GPT-3 numbers for the same weight types and rank (if any)."""
    from lora_repro.report.paper import paper_rows

    printed = [row for table in (5, 6) for row in paper_rows(table)]
    rows = []
    for run in runs:
        d = run.describe()
        row = {k: d[k] for k in ("run_id", "targets", "r", "seed", "trainable_without_head", "metric", "best", "last")}
        matches = [p for p in printed if set(p.get("weight_types", [])) == set(run.targets) and p.get("rank") == run.r]
        for p in matches[:1]:
            row["paper_table"] = p["table"]
            for task in ("wikisql", "mnli_m"):
                row[f"paper_gpt3_{task}"] = p["results"].get(task, {}).get("accuracy", {}).get("value")
        rows.append(row)
    return rows


def paper_table7() -> dict:
    """The printed Table 7 (GPT-3 175B, layer 48, W_q) as {r: {subspace: value}} plus the reference norms."""
    from lora_repro.report.paper import load_paper, paper_rows

    table = {}
    for row in paper_rows(7):
        table.setdefault(row["rank"], {})[row["subspace"]] = row["results"]["projection"]["frobenius_norm"]["value"]
    norms = {k: v["value"] for k, v in load_paper()["tables"][7]["reference_norms"].items()}
    for r in table:
        dw = norms.get(f"delta_wq_frobenius_r{r}")
        table[r]["delta_w_fro"] = dw
        table[r]["amplification"] = dw / table[r]["delta_wq"] if dw else None
    return {"by_rank": table, "w_fro": norms.get("wq_frobenius"), "model": "gpt3-175b", "layer": 48}


# ---------------------------------------------------------------- writing artefacts


def _markdown(rows: list[dict], columns: Sequence[str], digits: int = 3) -> str:
    if not rows:
        return "_none_\n"

    def cell(value) -> str:
        if isinstance(value, float):
            return "inf" if math.isinf(value) else f"{value:.{digits}g}" if abs(value) >= 1e3 else f"{value:.{digits}f}"
        if isinstance(value, list):
            return ",".join(map(str, value))
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _labels(runs: Sequence[LoraRun]) -> dict:
    described = [run.describe() for run in runs]

    def values(key: str) -> list:
        return sorted({json.dumps(d[key], sort_keys=True, default=str) for d in described})

    hardware = {json.dumps({k: (d["hardware"] or {}).get(k) for k in ("cpu", "cpu_count", "gpu", "torch_threads")},
                           sort_keys=True) for d in described}
    return {"experiments": [json.loads(v) for v in values("experiment")],
            "models": [json.loads(v) for v in values("model")],
            "stand_in_for": [json.loads(v) for v in values("stand_in_for")],
            "tasks": [json.loads(v) for v in values("task")], "ranks": sorted({d["r"] for d in described}),
            "seeds": sorted({d["seed"] for d in described}), "smoke": any(d["smoke"] for d in described),
            "hardware": [json.loads(h) for h in sorted(hardware)]}


def _files(*names: str | None) -> list[str]:
    return [name for name in names if name]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> str | None:
    """Write the arrays (compressed, atomically); None, and no file, when there are none."""
    path.unlink(missing_ok=True)  # a stale file from an earlier analysis must not outlive its json
    if not arrays:
        return None
    with rs.atomic_file(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy would append .npz to a name
        np.savez_compressed(f, **arrays)
    return path.name


def analyse(paths: Sequence[str | Path], out_dir: str | Path, analyses: Sequence[str] = ANALYSES,
            max_w_directions: int = 128, train_command: str | None = None,
            analysis_command: str | None = None) -> dict:
    """Run the chosen analyses over every complete LoRA run under `paths`; write the artefacts to `out_dir`.

    Returns the manifest (also written as manifest.json). Pairs for Figure 3 (same settings, different r) and
    Figure 4 (same settings, different seed) are found from the runs' configs.
    """
    unknown = sorted(set(analyses) - set(ANALYSES))
    if unknown:
        raise UserError(f"unknown analyses {unknown}; choices: {', '.join(ANALYSES)}")
    runs, skipped = find_lora_runs(paths)
    if not runs:
        detail = f" (skipped: {'; '.join(skipped[:3])})" if skipped else ""
        raise MissingInputError(f"no complete LoRA run under {', '.join(map(str, paths))}{detail}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    manifest = {"schema": 1, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "labels": _labels(runs),
                "analysis_command": analysis_command,
                "train_command": train_command, "inputs": [str(p) for p in paths],
                "runs": [run.describe() for run in runs], "skipped": skipped, "analyses": list(analyses), "files": {},
                "failed": []}  # per-run analyses that failed (the others went on); skipped_base: runs without W
    sections = [f"# Section 7 analysis: {', '.join(map(str, manifest['labels']['experiments']))}\n", _header(manifest)]

    # W (and A0) need the base model rebuilt: one run at a time, keeping only the small A0's for the subspace pairs
    amp_rows, w_rows, w_arrays, inits = [], [], {}, {}
    if any(a in analyses for a in NEEDS_BASE):
        manifest["skipped_base"] = []
        for run in runs:
            log.info("rebuilding the base model of %s", run.run_dir)
            weights = guarded(run, "rebuilding W of", lambda: base_weights(run), manifest["skipped_base"])
            if weights is None:
                continue
            inits[run.run_dir] = {name: base.A0 for name, base in weights.items() if base.A0 is not None}
            if "amplification" in analyses:
                amp_rows += guarded(run, "Table 7 of", lambda: amplification_of_run(run, weights),
                                    manifest["failed"], default=[])
            if "w_vs_delta_w" in analyses:
                run_rows, run_arrays = guarded(
                    run, "Figure 8 of", lambda: w_vs_delta_w_of_run(run, weights, max_w_directions),
                    manifest["failed"], default=([], {}))
                w_rows += run_rows
                w_arrays.update(run_arrays)
            del weights

    if "subspace" in analyses:
        summaries, arrays = [], {}
        for kind, pairs in (("rank", rank_pairs(runs)), ("seed", seed_pairs(runs))):
            for a, b in pairs:
                pair_inits = (inits[a.run_dir], inits[b.run_dir]) if a.run_dir in inits and b.run_dir in inits else None
                result = guarded(f"{a.run_dir} vs {b.run_dir}", "subspace similarity of",
                                 lambda: subspace_pair(a, b, inits=pair_inits), manifest["failed"])
                if result is not None:
                    summaries.append({"kind": kind, **result[0]})
                    arrays.update(result[1])
        rs.write_json_atomic(out_dir / "subspace.json", summaries)
        manifest["files"]["subspace"] = _files("subspace.json", _save_npz(out_dir / "subspace.npz", arrays))
        sections.append("## Subspace similarity φ(A_a, A_b, i, j) (Figures 3, 4)\n")
        sections.append("Pairs that differ only in r (Figure 3) or only in the seed (Figure 4). expected_* = "
                        "max(i, j)/k, the mean for random subspaces; random_* = two Gaussian A's of the same shapes; "
                        "init_* = the same φ between the two runs' A at initialisation (rebuilt), when available.\n")
        columns = ("site", "phi_1_1", "init_phi_1_1", "expected_random_1_1", "phi_1_max", "init_phi_1_max",
                   "expected_random_1_max", "m", "phi_m_m", "init_phi_m_m", "random_m_m")
        for summary in summaries:
            sections.append(f"\n### {summary['kind']} pair: {summary['a']} vs {summary['b']}\n")
            shown = [c for c in columns if any(c in row for row in summary["modules"])]
            sections.append(_markdown(summary["modules"], shown))
        if not summaries:
            sections.append("_no pair of runs differs only in r or only in the seed_\n")

    if "spectra" in analyses:
        rows, arrays = [], {}
        for run in runs:
            run_rows, run_arrays = guarded(run, "spectra of", lambda: spectra_of_run(run), manifest["failed"],
                                           default=([], {}))
            rows += run_rows
            arrays.update(run_arrays)
        rs.write_json_atomic(out_dir / "spectra.json", rows)
        manifest["files"]["spectra"] = _files("spectra.json", _save_npz(out_dir / "spectra.npz", arrays))
        sections += ["\n## Spectrum of ΔW = (alpha/r) B A\n",
                     _markdown(rows, ("run_id", "site", "r", "numerical_rank", "effective_rank", "sigma_1_share",
                                      "delta_w_fro"))]

    if "amplification" in analyses:
        rs.write_json_atomic(out_dir / "amplification.json", {"rows": amp_rows, "paper": paper_table7()})
        manifest["files"]["amplification"] = ["amplification.json"]
        sections += ["\n## Table 7: ||U^T W V||_F for the top-r directions of ΔW, W, random; amplification\n",
                     _markdown(amp_rows, ("run_id", "site", "r_used", "w_fro", "delta_w_fro", "proj_delta_w",
                                          "proj_w", "proj_random", "amplification", "a_change_rel",
                                          "phi_a_vs_init")),
                     "\n" + _paper_table7_markdown(), "\n### Median over layers, per module and r\n",
                     _markdown(_median_amplification(amp_rows), ("module", "r_used", "n_layers", "delta_w_fro",
                                                                 "proj_delta_w", "proj_w", "proj_random",
                                                                 "amplification"))]
    if manifest.get("skipped_base"):
        sections += ["\n**Runs without W (no Table 7 / Figure 8 rows):**\n"]
        sections += [f"- {line}" for line in manifest["skipped_base"]]
    if "w_vs_delta_w" in analyses:
        rs.write_json_atomic(out_dir / "w_vs_delta_w.json", w_rows)
        manifest["files"]["w_vs_delta_w"] = _files("w_vs_delta_w.json",
                                                   _save_npz(out_dir / "w_vs_delta_w.npz", w_arrays))
        columns = ["run_id", "site", "r"] + sorted({k for row in w_rows for k in row if "_top" in k})
        sections += ["\n## Figure 8: φ(top-i directions of ΔW, top-j of W), left and right singular vectors\n",
                     _markdown(w_rows, columns)]

    if "performance" in analyses:
        rows = guarded("all runs", "performance rows of", lambda: performance_rows(runs), manifest["failed"],
                       default=[])
        rs.write_json_atomic(out_dir / "performance.json", rows)
        manifest["files"]["performance"] = ["performance.json"]
        sections += ["\n## Scores (Tables 5, 6) beside the paper's GPT-3 175B numbers for the same weight types and r\n",
                     _markdown(rows, ("run_id", "targets", "r", "seed", "trainable_without_head", "metric", "best",
                                      "last", "paper_gpt3_mnli_m", "paper_gpt3_wikisql"))]

    if manifest["failed"]:
        sections += ["\n**Analyses that failed (the rest went on; see the log):**\n"]
        sections += [f"- {line}" for line in manifest["failed"]]
    manifest["analysis_wall_time_s"] = round(time.time() - start, 1)
    (out_dir / "summary.md").write_text("\n".join(sections))
    manifest["files"]["summary"] = ["summary.md"]
    rs.write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return manifest


def _median_amplification(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row.get("r_used"):
            groups[(row["module"], row["r_used"])].append(row)
    out = []
    for (module, r), group in sorted(groups.items()):
        medians = {k: float(np.median([g[k] for g in group])) for k in
                   ("delta_w_fro", "proj_delta_w", "proj_w", "proj_random", "amplification")}
        out.append({"module": module, "r_used": r, "n_layers": len(group), **medians})
    return out


def _paper_table7_markdown() -> str:
    paper = paper_table7()
    rows = [{"r": r, **values} for r, values in sorted(paper["by_rank"].items())]
    return (f"Paper (GPT-3 175B, layer 48, W_q, ||W_q||_F = {paper['w_fro']}):\n\n"
            + _markdown(rows, ("r", "delta_wq", "wq", "random", "delta_w_fro", "amplification"), digits=2))


def _header(manifest: dict) -> str:
    labels = manifest["labels"]
    hardware = "; ".join(f"{h.get('cpu')} ({h.get('cpu_count')} cores, {h.get('torch_threads')} torch threads)"
                         + (f", GPU {h['gpu']}" if h.get("gpu") else "") for h in labels["hardware"])
    lines = [f"- model: {', '.join(map(str, labels['models']))} (stand-in for "
             f"{', '.join(map(str, labels['stand_in_for']))}){' [SMOKE: tiny random model]' if labels['smoke'] else ''}",
             f"- task: {', '.join(map(str, labels['tasks']))}; ranks: {labels['ranks']}; seeds: {labels['seeds']}",
             f"- hardware: {hardware}", f"- runs: {len(manifest['runs'])} (skipped: {len(manifest['skipped'])})"]
    if manifest.get("train_command"):
        lines.append(f"- trained with: `{manifest['train_command']}`")
    if manifest.get("analysis_command"):
        lines.append(f"- analysed with: `{manifest['analysis_command']}`")
    lines.append("\n| run | targets | r | alpha | seed | train/eval examples | epochs | lr | metric | best | last |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in manifest["runs"]:
        n = d.get("n_examples") or {}
        lines.append(f"| {d['run_id']} | {','.join(d['targets'])} | {d['r']} | {d['alpha']:g} | {d['seed']} | "
                     f"{'/'.join(str(v) for v in n.values())} | {d['epochs']} | {d['lr']} | {d['metric']} | "
                     f"{_fmt(d['best'])} | {_fmt(d['last'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


# ---------------------------------------------------------------- Hydra hook


try:
    from hydra.experimental.callback import Callback
except ImportError:  # hydra is a dependency, but keep the analysis importable without it
    Callback = object  # type: ignore[misc,assignment]


class AnalyseSweep(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback: when a sweep ends, analyse its runs into ``{output_root}/{experiment}/analysis`` (or `out`).

    The artefacts for results/ are made with the CLI (python -m lora_repro.analysis RUNS --out results/analysis/NAME);
    a failing analysis is logged and never turns a finished sweep into a failed one.
    """

    def __init__(self, out: str | None = None, analyses: Sequence[str] = ANALYSES) -> None:
        self.out, self.analyses = out, tuple(analyses)

    def on_multirun_end(self, config, **kwargs) -> None:
        root = Path(config.output_root) / config.run_group
        out = Path(self.out) if self.out else root / "analysis"
        try:
            manifest = analyse([root], out, self.analyses)
            print(f"analysis of {len(manifest['runs'])} runs -> {out}/summary.md")
        except (UserError, OSError) as error:  # e.g. no complete LoRA run in the sweep: one line
            log.error("analysis of %s failed: %s: %s", root, type(error).__name__, error)
        except Exception:  # noqa: BLE001 - a bug: report it with its traceback, but do not fail the sweep
            log.exception("analysis of %s failed with an unexpected error (a bug in lora_repro)", root)
