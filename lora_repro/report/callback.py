"""Hydra callback that prints an experiment's table when its sweep ends. Jobs catch their own errors, so one failed
job does not stop this from running (Hydra skips on_multirun_end when a job raises); the report lists failures.

After the full report it prints a short headline table (``headline``): per task, the constant-prediction baseline
computed from the evaluation data the runs were scored on (majority-class accuracy of its labels; 0 for correlation
and MCC metrics), each method's score and its margin over that baseline, LoRA minus full fine-tuning with the
report's own reading of it (``table.comparisons``), and each method's trainable share of the model. The last line
printed is the path of the saved report."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lora_repro import results as rs
from lora_repro.report.table import (NoResults, WITHIN, comparisons, constant_baseline, find_results, report_paths,
                                     runs_frame, summary_frame, write_report)


# what the quickstart has to show to be worth running (README): LoRA within 2 points of full fine-tuning, both
# clearly learning (10 points above a constant prediction); read at whatever n the sweep ran
TARGET_GAP, TARGET_ABOVE_BASELINE = 2.0, 10.0


def eval_baseline(record: dict) -> tuple[float | None, str]:
    """The score of a constant prediction on the evaluation data ``record`` was scored on, and how it was obtained.

    Accuracy: the majority class's share of the eval labels the run counted (``eval_label_counts`` in results.json).
    Correlation / MCC: 0 (a constant prediction has none; ``table.constant_baseline``). None where neither applies."""
    metric, task = record.get("primary_metric") or "", record.get("task")
    known = constant_baseline(task, metric)
    if not metric.endswith("accuracy"):
        return (known, "constant prediction: 0 by definition") if known is not None else (None, "no constant baseline")
    label_counts = record.get("eval_label_counts") or {}
    if not label_counts:
        return None, "the run recorded no eval label counts (written before results.json kept them)"
    split = next(iter(label_counts))  # the first eval split: the one the primary metric is read on
    counts = Counter(label_counts[split])
    label, top = counts.most_common(1)[0]
    n = sum(counts.values())
    return 100.0 * top / n, f"majority class {label}: {top} of {n} {split} examples"


def headline(records: list[dict], method: str = "lora", against: str = "full_ft") -> str:
    """The quickstart's closing table, every number computed from ``records`` (see the module docstring)."""
    complete = [r for r in records if r.get("status") == "complete"]
    summary = summary_frame(runs_frame(complete))
    if summary.empty:
        return ""
    baselines = {}
    for r in complete:  # one baseline per task and eval data (the task's settings: subset size and seed)
        key = (r.get("task"), json.dumps((r.get("config") or {}).get("task"), sort_keys=True, default=str),
               bool(r.get("smoke")))
        if key not in baselines:
            baselines[key] = eval_baseline(r)
    by_task = {}
    for (task, _, _), value in baselines.items():
        by_task.setdefault(task, set()).add(value)
    gaps = comparisons(summary, method, [against])
    methods = [m for m in (against, method) if m in set(summary.method)]
    methods += sorted(set(summary.method) - set(methods))
    rows, lines = [], []
    for (model, task), group in summary.groupby(["model", "task"], sort=False):
        values = by_task.get(task, {(None, "unknown")})
        base, how = next(iter(values)) if len(values) == 1 else (None, "several eval sets: see the report")
        row = {"model": model, "task": task, "metric": group.metric.iloc[0],
               "eval examples": int(group.eval_examples.max()) if group.eval_examples.notna().any() else "?",
               "constant baseline": "?" if base is None else f"{base:.1f}", "baseline from": how}
        for m in methods:
            cells = group[group.method == m]
            for c in cells.itertuples():
                name = m if len(cells) == 1 else c.row
                margin = "" if base is None else f" ({c.best_agg - base:+.1f})"
                row[name] = f"{c.best_agg:.1f}{margin} n={c.n_seeds}"
        gap = gaps[(gaps.model == model) & (gaps.task == task)] if not gaps.empty else gaps
        for g in gap.to_dict("records"):  # the report's own reading of the pair (table.read_pair)
            pair = "" if (g["A"], g["B"]) == (method, against) else f" ({g['A']} vs {g['B']})"
            row[f"{method} - {against}{pair}"] = f"{g['gap']:+.1f}"
            row[f"within {WITHIN}{pair}"] = g["within_1.5"]
            lowest = min(g["A value"], g["B value"])
            above = "" if base is None else f"; the lower of the two is {lowest - base:+.1f} points from the baseline"
            met = (base is not None and abs(g["gap"]) <= TARGET_GAP and lowest - base >= TARGET_ABOVE_BASELINE)
            lines.append(f"- {task} ({model}, seeds {g['seeds']}): {g['A']} {g['A value']:.1f} vs {g['B']} "
                         f"{g['B value']:.1f}, gap {g['gap']:+.1f} points, within {WITHIN}: {g['within_1.5']} "
                         f"({g['per seed']}){above}. The main job's target (|gap| <= {TARGET_GAP:g} and both at least "
                         f"{TARGET_ABOVE_BASELINE:g} points above the baseline): {'met' if met else 'not met'}.")
        rows.append(row)
    params = []
    for r in complete:
        counts = r.get("parameters") or {}
        if counts.get("total"):
            params.append({"method": r.get("method"), "trainable (no head)": counts.get("trainable_without_head"),
                           "total": counts["total"]})
    share = ""
    if params:
        p = pd.DataFrame(params).groupby("method").max()
        share = "Trainable parameters (without the task head) as a share of the model's: " + ", ".join(
            f"{m} {int(v['trainable (no head)']):,} of {int(v['total']):,} = {100 * v['trainable (no head)'] / v['total']:.2f}%"
            for m, v in p.reindex([m for m in methods if m in p.index]).iterrows()) + ".\n"
    return ("\n## Headline: constant-prediction baseline, scores and LoRA - full fine-tuning\n\n"
            "Cells: the report's aggregate (best-epoch score) with its margin over the constant-prediction baseline "
            "in parentheses, n = seeds. The baseline is computed from the evaluation data the runs were scored on "
            "(majority-class accuracy of its labels; 0 for correlation metrics).\n\n"
            + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n\n" + "\n".join(lines) + "\n\n" + share)


class PrintReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.output_root) / config.run_group
        if not root.is_dir():
            return
        out = root / "report"
        try:
            text = write_report([str(root)], out, title=f"{config.run_group} ({root})")
        except NoResults as error:  # every job failed before it could write a record
            print(error)
            return
        head = headline(find_results([str(root)]))
        if head:  # saved with the report, and printed last, before the report's path
            report = report_paths(out)[0]
            rs.write_text_atomic(report, report.read_text() + head)
        print(text)
        print(head)
        print("Report saved to " + ", ".join(map(str, report_paths(out))))
