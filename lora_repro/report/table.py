"""results.json files -> a pandas table with the paper's number beside each cell.

Protocol (Appendix D): each run contributes its best-epoch score on the task's paper metric; the table shows the
median over seeds (GLUE, as the paper) and the number of seeds; last-epoch medians sit in their own columns.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from lora_repro.results import RESULTS_FILE
from lora_repro.report.paper import paper_rows, paper_value

TASK_ORDER = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb", "e2e", "webnlg", "dart", "wikisql", "samsum"]


def find_results(paths: list[str | os.PathLike]) -> list[dict]:
    """Every readable results.json under ``paths`` (unreadable ones are reported as such, never guessed at)."""
    records = []
    for root in paths:
        root = Path(root)
        files = [root] if root.name == RESULTS_FILE else sorted(root.rglob(RESULTS_FILE))
        for path in files:
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                record = {"status": "unreadable", "error": str(error)}
            record.setdefault("run_dir", str(path.parent))
            records.append(record)
    return records


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        cfg = r.get("config", {})
        key = r.get("primary_metric")
        rows.append({
            "experiment": r.get("experiment"), "table": r.get("table"), "model": r.get("model", {}).get("name"),
            "stand_in_for": r.get("model", {}).get("stand_in_for"), "task": r.get("task"), "method": r.get("method"),
            "label": (cfg.get("label") or r.get("method")) + (" [smoke]" if r.get("smoke") else ""), "config_id": r.get("config_id"), "seed": r.get("seed"),
            "status": r.get("status"), "smoke": r.get("smoke"), "metric": key,
            "best": (r.get("best") or {}).get("metrics", {}).get(key), "best_epoch": (r.get("best") or {}).get("epoch"),
            "last": (r.get("last") or {}).get("metrics", {}).get(key),
            "trainable_params": r.get("parameters", {}).get("trainable_without_head"),
            "head_params": r.get("parameters", {}).get("trainable_head"),
            "error": r.get("error"), "run_dir": r.get("run_dir"),
        })
    return pd.DataFrame(rows)


def summary_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, method setting, task): median over complete seeds, with the paper's number."""
    done = runs[runs.status == "complete"]
    if done.empty:
        return pd.DataFrame()
    grouped = done.groupby(["experiment", "model", "stand_in_for", "label", "method", "config_id", "task", "metric"],
                           dropna=False)
    summary = grouped.agg(median_best=("best", "median"), median_last=("last", "median"),
                          n_seeds=("seed", "nunique"), seeds=("seed", lambda s: ",".join(map(str, sorted(s)))),
                          trainable_params=("trainable_params", "first"), table=("table", "first")).reset_index()
    summary["paper"] = [_paper(row) for row in summary.itertuples()]
    return summary


def _paper(row) -> float | None:
    model = row.stand_in_for if isinstance(row.stand_in_for, str) else row.model
    table = int(row.table) if pd.notna(row.table) else 2
    try:
        return paper_value(table, model, row.method, row.task)
    except KeyError:
        return None
    except ValueError:  # several printed rows (AdptD 0.3M and 0.9M): the one nearest in trainable parameters
        nearest = min(paper_rows(table, model, row.method),
                      key=lambda r: abs(r.get("trainable_params_m", 0) * 1e6 - (row.trainable_params or 0)))
        return paper_value(table, model, row.method, row.task, variant=nearest.get("variant"))


def pivot_markdown(summary: pd.DataFrame) -> str:
    """Rows: model x method; columns: tasks; cells: 'ours (paper)'."""
    if summary.empty:
        return "_no complete runs_\n"
    cells = summary.assign(cell=[
        f"{r.median_best:.1f}" + (f" ({r.paper:.1f})" if pd.notna(r.paper) else "") + (f" n={r.n_seeds}")
        for r in summary.itertuples()])
    tasks = [t for t in TASK_ORDER if t in set(cells.task)] + sorted(set(cells.task) - set(TASK_ORDER))
    table = cells.pivot_table(index=["model", "label"], columns="task", values="cell",
                              aggfunc="first").reindex(columns=tasks).fillna("")
    params = cells.groupby(["model", "label"]).trainable_params.max().rename("trainable (no head)")
    return table.join(params).reset_index().to_markdown(index=False) + "\n"


def gap_markdown(summary: pd.DataFrame, method: str = "lora", baseline: str = "full_ft") -> str:
    """The paper's central small-scale claim: LoRA within ~1.5 points of full fine-tuning, per task."""
    rows = []
    for (model, task), group in summary.groupby(["model", "task"]):
        ours, base = group[group.method == method], group[group.method == baseline]
        if ours.empty or base.empty:
            continue
        gap = ours.median_best.iloc[0] - base.median_best.iloc[0]
        paper_gap = (ours.paper.iloc[0] - base.paper.iloc[0]) if pd.notna(ours.paper.iloc[0]) and pd.notna(base.paper.iloc[0]) else None
        rows.append({"model": model, "task": task, "metric": group.metric.iloc[0], method: round(ours.median_best.iloc[0], 2),
                     baseline: round(base.median_best.iloc[0], 2), "gap": round(gap, 2), "within_1.5": abs(gap) <= 1.5 or gap > 0,
                     "seeds": f"{ours.seeds.iloc[0]} / {base.seeds.iloc[0]}",
                     "paper_gap": None if paper_gap is None else round(paper_gap, 2)})
    return pd.DataFrame(rows).to_markdown(index=False) + "\n" if rows else ""


def missing_markdown(runs: pd.DataFrame) -> str:
    bad = runs[runs.status != "complete"]
    if bad.empty:
        return ""
    return bad[["experiment", "model", "task", "method", "seed", "status", "error", "run_dir"]].to_markdown(index=False) + "\n"


def write_report(paths: list[str], out: str | os.PathLike, title: str | None = None, notes: str = "") -> str:
    runs = runs_frame(find_results(paths))
    summary = summary_frame(runs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title or out.stem}\n", notes,
             "Cells: median over seeds of each run's best-epoch score (the paper's protocol), paper's number in "
             "parentheses (for stand-ins: the model it stands in for; where the paper prints several rows for a "
             "method, the one nearest in trainable parameters; none where the paper has no such row), n = seeds.\n",
             pivot_markdown(summary)]
    gap = gap_markdown(summary)
    if gap:
        parts += ["\n## LoRA minus full fine-tuning, per task\n", gap]
    missing = missing_markdown(runs)
    if missing:
        parts += ["\n## Missing or failed runs\n", missing]
    text = "\n".join(parts)
    out.with_suffix(".md").write_text(text)
    summary.to_csv(out.with_suffix(".csv"), index=False)
    runs.to_csv(out.with_name(out.stem + "_runs.csv"), index=False)
    return text
