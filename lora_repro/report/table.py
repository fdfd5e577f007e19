"""Run records -> a pandas table with the paper's number beside each cell, and the readings the numbers support.

Protocol (Appendix D; ``protocols`` in paper_numbers.yaml, one entry per table): each run contributes its best-epoch
score on the task's paper metric; the seeds of one *setting* (``lora_repro.results.setting_id`` of the run's config:
never its folder) are aggregated as the table's protocol says: GLUE (Table 2) the median of 5 seeds, the GPT-2
tables (3, 13, 14) the mean ± std of 3. Every cell shows its n, and "n=k of N" where it has fewer seeds than that.

Readings (stated in the report's text with their n; constants below):
* ``within 1.5``: |aggregate(A) - aggregate(B)| <= 1.5 points, two-sided: a method 4 points ahead is not "within".
* per seed: over the seeds both settings ran (paired by seed), how many have |A - B| <= 1.5; with fewer than
  ``MIN_PAIRED`` shared seeds the reading is "inconclusive at n=k".
* order: A is ahead of B only when it wins on every shared seed (at least ``MIN_PAIRED``) by more than the larger
  spread (max - min over those seeds) of the two methods' scores; otherwise "inconclusive at n=k".
* a comparison where both methods score at the constant-prediction baseline (majority class accuracy, MCC or
  Pearson 0; ``at_constant_baseline``) is "uninformative", whatever the gap.

Inputs: run folders (searched for results.json) or ``*_runs.csv`` files this module wrote (one row per run).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from lora_repro import results as rs
from lora_repro.errors import MissingInputError
from lora_repro.results import RESULTS_FILE
from lora_repro.report.paper import load_paper, paper_protocol, paper_rows, paper_value

TASK_ORDER = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb", "e2e", "webnlg", "dart", "wikisql", "samsum"]
WITHIN = 1.5  # points: the paper's "on par" margin read from Table 2 (LoRA vs full fine-tuning)
MIN_PAIRED = 2  # shared seeds below which no per-seed or order reading is given
# Constant-prediction scores on the full GLUE dev sets: (majority-class accuracy in %, dev size); counted from
# glue_data/*/dev.tsv (MRPC 279/408 positive, RTE 146/277 entailment, SST-2 444/872, QNLI 2761/5463, QQP 25545/40430,
# MNLI matched 3479/9815). MCC and Pearson/Spearman of a constant prediction are 0 (or undefined).
MAJORITY_ACCURACY = {"mrpc": (68.4, 408), "rte": (52.7, 277), "sst2": (50.9, 872), "qnli": (50.5, 5463),
                     "qqp": (63.2, 40430), "mnli": (35.4, 9815)}
CORRELATION_METRICS = ("mcc", "pearson", "spearman", "corr")
BASELINE_MARGIN = 1.0  # points above the constant-prediction score still counted as "at" it


class NoResults(MissingInputError):
    """Nothing to tabulate under the given paths."""


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


def _eval_examples(record: dict) -> int | None:
    """Size of the dev split the primary metric was computed on (None when the record does not say)."""
    sizes = (record.get("data") or {}).get("n_examples") or {}
    key = record.get("primary_metric") or ""
    for split, n in sizes.items():
        if key.startswith(f"{split}_"):
            return n
    others = [n for split, n in sizes.items() if not split.startswith("train")]
    return others[0] if others else None


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        cfg = r.get("config", {}) or {}
        key = r.get("primary_metric")
        rows.append({
            "experiment": r.get("experiment"), "table": r.get("table"), "model": (r.get("model") or {}).get("name"),
            "stand_in_for": (r.get("model") or {}).get("stand_in_for"), "task": r.get("task"), "method": r.get("method"),
            "label": (cfg.get("label") or r.get("method") or "?") + (" [smoke]" if r.get("smoke") else ""),
            "config_id": r.get("config_id"), "setting_id": rs.setting_id(cfg) if cfg else r.get("config_id"),
            "seed": r.get("seed"), "status": r.get("status"), "smoke": r.get("smoke"), "metric": key,
            "best": (r.get("best") or {}).get("metrics", {}).get(key), "best_epoch": (r.get("best") or {}).get("epoch"),
            "last": (r.get("last") or {}).get("metrics", {}).get(key),
            "trainable_params": (r.get("parameters") or {}).get("trainable_without_head"),
            "head_params": (r.get("parameters") or {}).get("trainable_head"), "eval_examples": _eval_examples(r),
            "error": r.get("error"), "run_dir": r.get("run_dir"),
            "train_examples": ((r.get("data") or {}).get("n_examples") or {}).get("train"),
            "method_settings": _method_settings(cfg),
            "precision": ((cfg.get("trainer") or {}).get("precision") or "fp32") if cfg else None,
            "setting_but_precision": rs.setting_id(_without_precision(cfg)) if cfg else None,
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


RUN_COLUMNS = ["experiment", "table", "model", "stand_in_for", "task", "method", "label", "config_id", "setting_id",
               "seed", "status", "smoke", "metric", "best", "best_epoch", "last", "trainable_params", "head_params",
               "eval_examples", "error", "run_dir", "train_examples", "method_settings", "precision",
               "setting_but_precision"]


def _without_precision(cfg: dict) -> dict:
    """The config without trainer.precision: runs whose settings differ only there pair up (bf16 vs fp32)."""
    return {**cfg, "trainer": {k: v for k, v in (cfg.get("trainer") or {}).items() if k != "precision"}}


def _method_settings(cfg: dict) -> str | None:
    """The run's method settings without its name (r, alpha, targets, l_p, ...) as sorted JSON: what a claim that
    varies one setting (rank, targets, special tokens) reads its x from. None when the record has no config."""
    method = dict((cfg or {}).get("method") or {})
    method.pop("name", None)
    return json.dumps(method, sort_keys=True, default=str) if method else None


def read_runs_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A ``*_runs.csv`` written by this module (older ones lack setting_id / eval_examples: the config_id, which
    was the setting's identity when they were written, stands in)."""
    runs = pd.read_csv(path)
    if "setting_id" not in runs:
        runs["setting_id"] = runs["config_id"]
    for column in RUN_COLUMNS:
        if column not in runs:
            runs[column] = None
    return runs[RUN_COLUMNS]


def load_runs(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per run from run folders / results.json files and ``*_runs.csv`` files."""
    frames = []
    folders = [p for p in paths if not str(p).endswith(".csv")]
    if folders:
        frames.append(runs_frame(find_results(folders)))
    frames += [read_runs_csv(p) for p in paths if str(p).endswith(".csv")]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)


def _protocol(table) -> dict:
    return paper_protocol(None if pd.isna(table) else table)


def constant_baseline(task: str, metric: str | None) -> float | None:
    """The score of a constant prediction on the task's full dev set (None when not known)."""
    if metric and any(metric.endswith(m) for m in CORRELATION_METRICS):
        return 0.0
    if metric and metric.endswith("accuracy") and task in MAJORITY_ACCURACY:
        return MAJORITY_ACCURACY[task][0]
    return None


def at_constant_baseline(task: str, metric: str | None, value: float | None, eval_examples: float | None = None) -> bool:
    """True when ``value`` is no more than BASELINE_MARGIN points above the constant-prediction score (or below it).
    On a dev subset of n of N examples the majority share itself varies: the margin widens to twice its sampling
    error, 100 * sqrt(p (1 - p) / n * (1 - n / N))."""
    base = constant_baseline(task, metric)
    if base is None or value is None or pd.isna(value):
        return False
    margin = BASELINE_MARGIN
    if metric.endswith("accuracy") and eval_examples and not pd.isna(eval_examples):
        p, full = base / 100, MAJORITY_ACCURACY[task][1]
        n = min(int(eval_examples), full)
        margin = max(margin, 200 * math.sqrt(p * (1 - p) / n * (1 - n / full)))
    return value <= base + margin


def _seed_list(seeds) -> str:
    return ",".join(str(int(s)) if isinstance(s, float) and s.is_integer() else str(s) for s in sorted(seeds))


def summary_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (model, method, task and every other setting key; seeds grouped by setting_id): the
    table's aggregate over its complete seeds, the seed count against the protocol's, and the paper's number."""
    done = runs[runs.status == "complete"] if "status" in runs else runs.iloc[0:0]
    if done.empty:
        return pd.DataFrame()
    done = done.assign(setting_id=done.setting_id.fillna(done.config_id))
    keys = ["model", "stand_in_for", "method", "task", "metric", "setting_id"]
    rows = []
    for key, group in done.groupby(keys, dropna=False, sort=True):
        group = group.sort_values("seed").drop_duplicates("seed", keep="last")
        protocol = _protocol(group.table.iloc[0])
        agg = protocol["aggregate"]
        best, last = group.best.astype(float), group["last"].astype(float)
        value = best.median() if agg == "median" else best.mean()
        row = dict(zip(keys, key))
        row.update(
            experiment=group.experiment.iloc[0], table=group.table.iloc[0], label=group.label.iloc[0],
            aggregate=agg, best_agg=value, best_std=best.std() if len(best) > 1 else float("nan"),
            last_agg=last.median() if agg == "median" else last.mean(),
            n_seeds=int(group.seed.nunique()), n_expected=protocol["n_seeds"], seeds=_seed_list(group.seed),
            seed_values=json.dumps({str(s): float(v) for s, v in zip(group.seed, best)}),
            trainable_params=group.trainable_params.max(),
            eval_examples=group.eval_examples.max() if "eval_examples" in group else None,
            train_examples=group.train_examples.max() if "train_examples" in group else None,
            method_settings=group.method_settings.dropna().iloc[0]
            if "method_settings" in group and group.method_settings.notna().any() else None,
            precision=group.precision.dropna().iloc[0] if group.precision.notna().any() else "not recorded",
            setting_but_precision=group.setting_but_precision.dropna().iloc[0]
            if group.setting_but_precision.notna().any() else None)
        row["at_baseline"] = at_constant_baseline(row["task"], row["metric"], value, row["eval_examples"])
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["paper"] = [_paper(row) for row in summary.itertuples()]
    # settings that share a model, label and task get their precision shown where that tells them apart (lora bf16),
    # else their setting id (two ranks both labelled lora)
    clash = summary.duplicated(["model", "label", "task"], keep=False)
    summary["row"] = [f"{r.label} {r.precision}" if c else r.label for r, c in zip(summary.itertuples(), clash)]
    clash = summary.duplicated(["model", "row", "task"], keep=False)
    summary["row"] = [f"{r.label} [{r.setting_id}]" if c else r.row for r, c in zip(summary.itertuples(), clash)]
    return summary


def _paper_metric(table: int, task: str, metric: str | None) -> str | None:
    """The paper's metric for a run's primary metric where the table prints several for the task (Table 3's E2E:
    'test_bleu' -> 'bleu'); None where the table has one metric for the task (its column's)."""
    rows = [r for r in paper_rows(table) if task in r["results"]]
    known = {m for r in rows for m in r["results"][task]}
    columns = [c for c in load_paper()["tables"][table]["columns"] if c.get("task") == task]
    if len(columns) == 1 and "metric" in columns[0]:
        return None
    matches = [m for m in known if metric and (metric == m or metric.endswith(f"_{m}"))]
    return max(matches, key=len) if matches else None


def _paper(row) -> float | None:
    model = row.stand_in_for if isinstance(row.stand_in_for, str) else row.model
    table = int(row.table) if pd.notna(row.table) else 2
    try:
        metric = _paper_metric(table, row.task, getattr(row, "metric", None))
        try:
            return paper_value(table, model, row.method, row.task, metric=metric)
        except ValueError as error:  # several printed rows (AdptD 0.3M and 0.9M): the one nearest in parameters
            if "rows for" not in str(error):
                return None
            nearest = min(paper_rows(table, model, row.method),
                          key=lambda r: abs(r.get("trainable_params_m", 0) * 1e6 - (row.trainable_params or 0)))
            return paper_value(table, model, row.method, row.task, metric=metric, variant=nearest.get("variant"))
    except KeyError:
        return None


def _n_text(n: int, expected) -> str:
    return f"n={n} of {int(expected)}" if expected is not None and not pd.isna(expected) and n < expected else f"n={n}"


def cell_text(r) -> str:
    """'81.5 (89.7) n=2 of 5' (median tables) or '70.1±0.3 (70.4) n=3' (mean tables: ± the std over seeds)."""
    text = f"{r.best_agg:.1f}"
    if r.aggregate == "mean" and not pd.isna(r.best_std):
        text += f"±{r.best_std:.1f}"
    if pd.notna(r.paper):
        text += f" ({r.paper:.1f})"
    return f"{text} {_n_text(r.n_seeds, r.n_expected)}" + (" ‡" if r.at_baseline else "")


def pivot_markdown(summary: pd.DataFrame) -> str:
    """Rows: model x method setting; columns: tasks; cells: 'ours (paper) n'."""
    if summary.empty:
        return "_no complete runs_\n"
    cells = summary.assign(cell=[cell_text(r) for r in summary.itertuples()])
    tasks = [t for t in TASK_ORDER if t in set(cells.task)] + sorted(set(cells.task) - set(TASK_ORDER))
    table = cells.set_index(["model", "row", "task"]).cell.unstack("task").reindex(columns=tasks).fillna("")
    params = cells.groupby(["model", "row"]).trainable_params.max().rename("trainable (no head)")
    precision = cells.groupby(["model", "row"]).precision.agg(lambda p: "/".join(sorted(set(map(str, p)))))
    table = table.join(params).join(precision).reset_index().rename(columns={"row": "label"})
    return table.to_markdown(index=False) + "\n"


def paired_differences(a: dict, b: dict) -> tuple[list, list[float]]:
    """The keys (seeds) both A and B have, sorted, and A - B on each: the pairing every reading and claim uses."""
    shared = sorted(set(a) & set(b))
    return shared, [a[s] - b[s] for s in shared]


def seed_values(row) -> dict[str, float]:
    """A summary row's per-seed best scores, {seed (str): value}."""
    return {str(k): float(v) for k, v in json.loads(row.seed_values).items()}


def read_pair(a: dict, b: dict, gap: float, degenerate: bool) -> dict:
    """The readings of A vs B from their per-seed best scores ({seed: value}) and the gap of their aggregates."""
    shared, diffs = paired_differences(a, b)
    n = len(shared)
    k = sum(abs(d) <= WITHIN for d in diffs)
    out = {"n_paired": n, "paired_within": f"{k} of {n}" if n else "no shared seeds"}
    if degenerate:
        word = "uninformative: both at the constant-prediction score"
        return {**out, "within_1.5": "uninformative", "per_seed": word, "order": word}
    out["within_1.5"] = "yes" if abs(gap) <= WITHIN else "no"
    if n < MIN_PAIRED:
        return {**out, "per_seed": f"inconclusive at n={n}", "order": f"inconclusive at n={n}"}
    if k == n:
        out["per_seed"] = f"within {WITHIN} on all {n} seeds"
    elif k == 0:
        out["per_seed"] = f"outside {WITHIN} on all {n} seeds"
    else:
        out["per_seed"] = f"inconclusive at n={n} ({k} of {n} seeds within {WITHIN})"
    spread = max(max(a[s] for s in shared) - min(a[s] for s in shared),
                 max(b[s] for s in shared) - min(b[s] for s in shared))
    if min(diffs) > spread:
        out["order"] = "A ahead"
    elif max(diffs) < -spread:
        out["order"] = "B ahead"
    else:
        out["order"] = f"inconclusive at n={n}"
    out["spread"] = spread
    return out


def comparisons(summary: pd.DataFrame, method: str = "lora", baselines: list[str] | None = None) -> pd.DataFrame:
    """``method`` against each baseline method (default: every other method), per model and task."""
    if summary.empty:
        return pd.DataFrame()
    rows = []
    # runs on different amounts of training data (Table 16) are compared only within one amount
    sizes = summary.train_examples if "train_examples" in summary else pd.Series(None, index=summary.index)
    several = sizes.groupby([summary.model, summary.task]).nunique().max() > 1
    for (model, task, size), group in summary.assign(size=sizes).groupby(["model", "task", "size"], sort=True,
                                                                          dropna=False):
        ours = group[group.method == method]
        others = group[group.method != method] if baselines is None else group[group.method.isin(baselines)]
        for a in ours.itertuples():
            for b in others.itertuples():
                gap = a.best_agg - b.best_agg
                paper_gap = a.paper - b.paper if pd.notna(a.paper) and pd.notna(b.paper) else None
                reading = read_pair(seed_values(a), seed_values(b), gap, bool(a.at_baseline and b.at_baseline))
                order = reading["order"].replace("A ahead", f"{a.row} ahead").replace("B ahead", f"{b.row} ahead")
                rows.append({"model": model, "task": task, **({"train examples": size} if several else {}),
                             "metric": a.metric, "A": a.row, "B": b.row,
                             "A value": round(a.best_agg, 2), "B value": round(b.best_agg, 2),
                             "aggregate": a.aggregate if a.aggregate == b.aggregate else f"{a.aggregate}/{b.aggregate}",
                             "gap": round(gap, 2), "within_1.5": reading["within_1.5"],
                             "seeds within 1.5": reading["paired_within"], "per seed": reading["per_seed"],
                             "order": order, "seeds": f"{a.seeds} / {b.seeds}",
                             "paper_gap": "" if paper_gap is None else f"{paper_gap:+.1f}"})
    return pd.DataFrame(rows)


def precision_pairs(summary: pd.DataFrame) -> pd.DataFrame:
    """Settings that differ only in ``trainer.precision`` (bf16 or fp16 against fp32), paired by seed: the report's
    readings and the equivalence rule of the claims ledger (mean(A - B) ± 2 SE within ±WITHIN points, n >= 3)."""
    from lora_repro.report.claims import paired_rule

    if summary.empty or "setting_but_precision" not in summary:
        return pd.DataFrame()
    rows = []
    for _, group in summary.dropna(subset=["setting_but_precision"]).groupby(["setting_but_precision", "metric"]):
        reference = group[group.precision == "fp32"]
        for a in group[group.precision != "fp32"].itertuples():
            for b in reference.itertuples():
                a_seeds, b_seeds = seed_values(a), seed_values(b)
                reading = read_pair(a_seeds, b_seeds, a.best_agg - b.best_agg, bool(a.at_baseline and b.at_baseline))
                rule = paired_rule(a_seeds, b_seeds, test="within", margin=WITHIN, min_n=3,
                                   names=(a.precision, b.precision))
                rows.append({"model": a.model, "task": a.task, "method": a.row, "metric": a.metric,
                             "A": a.precision, "B": b.precision, "A value": round(a.best_agg, 2),
                             "B value": round(b.best_agg, 2), "gap": round(a.best_agg - b.best_agg, 2),
                             "seeds within 1.5": reading["paired_within"], "order": reading["order"],
                             f"|A - B| <= {WITHIN} (paired, ± 2 SE)": f"{rule.verdict}: {rule.reason}",
                             "seeds": f"{a.seeds} / {b.seeds}"})
    return pd.DataFrame(rows)


def missing_markdown(runs: pd.DataFrame) -> str:
    bad = runs[runs.status != "complete"]
    if bad.empty:
        return ""
    return bad[["experiment", "model", "task", "method", "seed", "status", "error", "run_dir"]].to_markdown(index=False) + "\n"


def protocol_text(summary: pd.DataFrame) -> str:
    lines = []
    for table in sorted({t for t in summary.table if pd.notna(t)} or {None}, key=lambda t: -1 if t is None else t):
        p = _protocol(table)
        what = f"Table {int(table)}" if table is not None else "Runs without a table"
        n = f"{p['n_seeds']} seeds" if p["n_seeds"] else "the seeds present"
        lines.append(f"- {what}: the {p['aggregate']} over {n} of each run's {p['epoch']}-epoch score "
                     f"({p['source']}).")
    return "\n".join(lines) + "\n"


RULES = f"""Rules of the readings below (lora_repro/report/table.py):
- `within_1.5`: |A - B| <= {WITHIN} points on the aggregated values, two-sided (A ahead by more than {WITHIN} is *not* within).
- `seeds within 1.5` / `per seed`: the seeds both settings ran, paired by seed; |A - B| <= {WITHIN} on all of them, on
  none of them, or "inconclusive at n=k" when they disagree or fewer than {MIN_PAIRED} seeds are shared.
- `order`: A is ahead of B only when A wins on every shared seed (at least {MIN_PAIRED}) by more than the larger spread
  (max - min over those seeds) of A's and B's scores; otherwise "inconclusive at n=k".
- "uninformative": both A and B score at the constant-prediction baseline (cells marked ‡: at most {BASELINE_MARGIN}
  point above the majority-class accuracy of the dev set, e.g. MRPC 68.4, RTE 52.7, or above MCC/Pearson 0; on a dev
  subset the margin widens to twice the majority share's sampling error); no comparison is read from them.
"""


def write_report(paths: list[str], out: str | os.PathLike, title: str | None = None, notes: str = "",
                 command: str | None = None) -> str:
    """Write NAME.md, NAME.csv (one row per setting) and NAME_runs.csv (one row per run); returns the Markdown.
    Raises NoResults, writing nothing, when the paths hold no run."""
    runs = load_runs(paths)
    if runs.empty:
        raise NoResults(f"no {RESULTS_FILE} under {', '.join(map(str, paths))}")
    summary = summary_frame(runs)
    out = Path(out)
    parts = [f"# {title or out.stem}\n"]
    if command:
        parts.append(f"Regenerate: `{command}`\n")
    parts += [notes,
              "Cells: each setting's seeds aggregated as its table's protocol says, from each run's best-epoch score:\n",
              protocol_text(summary) if not summary.empty else "",
              "\nThe paper's number is in parentheses (for stand-ins: the model it stands in for; where the paper "
              "prints several rows for a method, the one nearest in trainable parameters; none where the paper has "
              "no such row); n = seeds, \"n=k of N\" where fewer than the protocol's N; ± (mean tables) = standard "
              "deviation over seeds; ‡ = at the constant-prediction baseline (see the rules below).\n",
              pivot_markdown(summary)]
    gap = comparisons(summary, "lora", ["full_ft"])
    if not gap.empty:
        parts += ["\n## LoRA minus full fine-tuning, per task\n", RULES, gap.to_markdown(index=False) + "\n"]
    others = comparisons(summary, "lora")
    others = others[others.B != "full_ft"] if not others.empty else others
    if not others.empty:
        parts += ["\n## LoRA against every other method, per task\n",
                  "Same rules; A = LoRA, gap = A - B.\n", others.to_markdown(index=False) + "\n"]
    precisions = precision_pairs(summary)
    if not precisions.empty:
        parts += ["\n## The same setting in two precisions\n",
                  f"Settings that differ only in `trainer.precision`, paired by seed. The last column is the claims "
                  f"ledger's equivalence rule (lora_repro/report/claims.py): the interval mean(A - B) ± 2 SE over the "
                  f"shared seeds lies within ±{WITHIN} points -> holds; wholly outside -> does not hold; else "
                  f"inconclusive; fewer than 3 seeds -> inconclusive. Same readings as above otherwise.\n",
                  precisions.to_markdown(index=False) + "\n"]
    missing = missing_markdown(runs)
    if missing:
        parts += ["\n## Missing or failed runs\n", missing]
    text = "\n".join(parts)
    rs.write_text_atomic(out.with_suffix(".md"), text)
    rs.write_text_atomic(out.with_suffix(".csv"), summary.to_csv(index=False))
    rs.write_text_atomic(out.with_name(out.stem + "_runs.csv"), runs.to_csv(index=False))
    return text


def report_paths(out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    return [out.with_suffix(".md"), out.with_suffix(".csv"), out.with_name(out.stem + "_runs.csv")]
