"""The claims ledger: one row per claim of the LoRA paper, with the paper's evidence, the stand-in evidence found here,
the command that made it and a verdict computed from a stated rule.

    python -m lora_repro.report claims RUNS [RUNS ...] --out results/claims

The claims (statement, paper pointer, which evidence answers them, the rule and its thresholds, the command) are data:
``claims.yaml`` beside this file. This module has three layers:

* **rules** (``paired_rule``, ``overlap_rule``, ``ratio_rule``; ``combine``): pure functions of numbers returning a
  ``Result`` (verdict, one-line reason with the numbers and n, n). The verdict words are fixed here (``HOLDS``,
  ``FAILS``, ``INCONCLUSIVE``, ``NOT_RUN``, ``CANNOT``) and nowhere else.
* **evidence**: run records through the report's own loader (``table.load_runs`` / ``table.summary_frame``: the same
  seed grouping, protocol and constant-baseline test as the tables), Section 7 analysis folders (``manifest.json``,
  ``subspace.json``, ``amplification.json``) and benchmark JSONs (``"benchmark": NAME``).
* **evaluators** (``EVALUATORS``): generic readers that turn one claim part (``source``, ``select``, ``a``/``b``, ...)
  into comparisons and call a rule on each. They name no method: the claim's data does.

Smoke runs (random tiny models) are never evidence.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from lora_repro import results as rs
from lora_repro.report import table as tb
from lora_repro.report.paper import paper_rows

CLAIMS_YAML = Path(__file__).with_name("claims.yaml")

# The verdict vocabulary: the only words a claim's verdict is made of.
HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive at n={n}"
NOT_RUN = "not run here"
CANNOT = "cannot be tested here: {what}"
VERDICT_KINDS = ("holds", "does not hold", "inconclusive", "not run here", "cannot be tested here")

CSV_COLUMNS = ["id", "claim", "verdict", "rule", "summary", "reason", "paper", "evidence", "command"]


@dataclass(frozen=True)
class Result:
    verdict: str
    reason: str
    n: int = 0

    @property
    def kind(self) -> str:
        return verdict_kind(self.verdict)


def verdict_kind(verdict: str) -> str:
    """'inconclusive at n=2' -> 'inconclusive'; 'cannot be tested here: X' -> 'cannot be tested here'."""
    for kind in VERDICT_KINDS:
        if verdict.startswith(kind):
            return kind
    raise ValueError(f"not a verdict: {verdict!r}")


def inconclusive(n: int, reason: str) -> Result:
    return Result(INCONCLUSIVE.format(n=n), reason, n)


# ---------------------------------------------------------------------------------------------------------- rules

TESTS = {  # test: (what holds means, when it holds, when it does not hold), on the interval [lo, hi] of A - B
    "at_least": ("{a} >= {b} - {m}", lambda lo, hi, m: lo >= -m, lambda lo, hi, m: hi < -m),
    "at_most": ("{a} <= {b} + {m}", lambda lo, hi, m: hi <= m, lambda lo, hi, m: lo > m),
    "above": ("{a} > {b} + {m}", lambda lo, hi, m: lo > m, lambda lo, hi, m: hi <= m),
    "below": ("{a} < {b} - {m}", lambda lo, hi, m: hi < -m, lambda lo, hi, m: lo >= -m),
    "within": ("|{a} - {b}| <= {m}", lambda lo, hi, m: -m <= lo and hi <= m, lambda lo, hi, m: lo > m or hi < -m),
}


def paired_rule(a: dict, b: dict, *, test: str, margin: float, min_n: int, k_se: float = 2.0, scale: str = "diff",
                unit: str = "seeds", names: tuple[str, str] = ("A", "B")) -> Result:
    """A against B, paired over the keys both have (seeds, modules, timing rounds): the interval mean(d) ± k_se·SE of
    d = A - B (scale 'diff', margin in the metric's points) or d = log(A / B) (scale 'log', margin a fraction: 0.05
    is 5%). ``test`` is one of TESTS; with fewer than ``min_n`` pairs the verdict is inconclusive at that n."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choices: {', '.join(TESTS)}")
    if scale == "log":
        a = {k: v for k, v in a.items() if v is not None and v > 0}
        b = {k: v for k, v in b.items() if v is not None and v > 0}
        shared, diffs = tb.paired_differences({k: math.log(v) for k, v in a.items()},
                                              {k: math.log(v) for k, v in b.items()})
        m = math.log1p(margin)
    else:
        shared, diffs = tb.paired_differences(a, b)
        m = margin
    n = len(shared)
    if n == 0:
        return Result(NOT_RUN, f"no {unit} shared by {names[0]} and {names[1]}", 0)
    mean = sum(diffs) / n
    se = (math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) / math.sqrt(n)) if n > 1 else 0.0
    lo, hi = mean - k_se * se, mean + k_se * se
    if scale == "log":
        pct = lambda x: f"{math.expm1(x) * 100:+.1f}%"  # noqa: E731
        numbers = (f"{names[0]}/{names[1]} - 1 = {pct(mean)} (geometric mean), interval [{pct(lo)}, {pct(hi)}], "
                   f"n={n} {unit}")
    else:
        numbers = (f"mean({names[0]} - {names[1]}) = {mean:+.2f}, interval [{lo:+.2f}, {hi:+.2f}], n={n} {unit}")
    if n < min_n:
        return inconclusive(n, f"{numbers}; fewer than {min_n} {unit}")
    _, holds, fails = TESTS[test]
    if holds(lo, hi, m):
        return Result(HOLDS, numbers, n)
    if fails(lo, hi, m):
        return Result(FAILS, numbers, n)
    return inconclusive(n, f"{numbers}; the interval straddles the margin")


def overlap_rule(values: list[float], baselines: list[float], *, threshold: float, factor: float, min_fraction: float,
                 min_n: int, unit: str = "modules") -> Result:
    """Overlap above random: a module overlaps when its value exceeds ``threshold`` and ``factor`` x its baseline
    (the largest of the random / initialisation references given for it). Holds when at least ``min_fraction`` of
    at least ``min_n`` modules overlap, does not hold when fewer do."""
    n = len(values)
    if n == 0:
        return Result(NOT_RUN, f"no {unit}", 0)
    hits = sum(v > threshold and v > factor * base for v, base in zip(values, baselines))
    ordered = sorted(values)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    numbers = (f"{hits} of {n} {unit} overlap (median {median:.2f}, range {ordered[0]:.2f}-{ordered[-1]:.2f}; "
               f"largest baseline {max(baselines):.3f})")
    if n < min_n:
        return inconclusive(n, f"{numbers}; fewer than {min_n} {unit}")
    return Result(HOLDS if hits >= min_fraction * n else FAILS, numbers, n)


def ratio_rule(ratios: dict[str, float], *, at_least: float, unit: str = "measurements") -> Result:
    """A benchmark ratio (B / A, e.g. full FT's peak memory over LoRA's) against a threshold, at every point
    measured: holds when every ratio >= at_least, does not hold when any is below 1, else inconclusive."""
    n = len(ratios)
    if n == 0:
        return Result(NOT_RUN, "no measurement", 0)
    numbers = ", ".join(f"{k}: {v:.2f}x" for k, v in ratios.items()) + f" ({n} {unit}, one measurement each)"
    if all(v >= at_least for v in ratios.values()):
        return Result(HOLDS, numbers, n)
    if any(v < 1.0 for v in ratios.values()):
        return Result(FAILS, numbers, n)
    return inconclusive(n, f"{numbers}; between 1 and {at_least}")


def combine(results: list[Result], missing_means: str = NOT_RUN) -> Result:
    """Many comparisons (or claim parts) -> one verdict: does not hold when any does not hold; not run when some are
    missing (``missing_means``); holds when every one holds; otherwise inconclusive at the largest n among the
    inconclusive ones."""
    if not results:
        return Result(NOT_RUN, "no evidence found", 0)
    kinds = [r.kind for r in results]
    if "does not hold" in kinds:
        verdict = FAILS
    elif any(k in ("not run here", "cannot be tested here") for k in kinds):
        verdict = missing_means if not all(k == "cannot be tested here" for k in kinds) else results[0].verdict
    elif all(k == "holds" for k in kinds):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE.format(n=max(r.n for r in results if r.kind == "inconclusive"))
    n = max((r.n for r in results), default=0)
    return Result(verdict, "; ".join(r.reason for r in results), n)


def describe_rule(rule: dict, defaults: dict, unit: str, names: tuple[str, str]) -> str:
    """The rule as one sentence, with its thresholds (the row states it)."""
    a, b = names
    if rule["name"] == "paired":
        test, m = rule["test"], rule.get("margin", 0.0)
        k, min_n = rule.get("k_se", defaults["k_se"]), rule.get("min_n", defaults["min_n"])
        if rule.get("scale") == "log":
            d, mt = f"log({a}/{b})", f"{m * 100:g}%"
        else:
            d, mt = f"{a} - {b}", f"{m:g}"
        what = TESTS[test][0].format(a=a, b=b, m=mt)
        return (f"paired over matched {unit}: interval = mean({d}) ± {k:g} SE; holds if it shows {what} "
                f"(whole interval on that side), does not hold if the whole interval is on the other side, "
                f"else inconclusive; n >= {min_n} {unit}")
    if rule["name"] == "overlap":
        return (f"overlap above random: a module overlaps when its value > {rule['threshold']:g} and > "
                f"{rule['factor']:g} x its baseline; holds if >= {rule['min_fraction']:.0%} of >= {rule['min_n']} "
                f"modules overlap, else does not hold")
    if rule["name"] == "ratio":
        return (f"benchmark ratio {b} / {a} of {rule['value']} at every point measured: holds if every ratio >= "
                f"{rule['at_least']:g}, does not hold if any < 1, else inconclusive")
    raise ValueError(f"unknown rule {rule['name']!r}")


# ------------------------------------------------------------------------------------------------------- evidence

@dataclass
class Evidence:
    """Everything found under the inputs: run arms (one row per setting), analysis folders and benchmark JSONs."""
    arms: pd.DataFrame
    analyses: list[Path]
    benchmarks: list[dict]


def discover(paths: list[str | os.PathLike]) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """Split the inputs: run folders (results.json, searched by table.load_runs), *_runs.csv files, analysis folders
    (a manifest.json with its analyses) and benchmark JSONs (a top-level "benchmark" key), under each path."""
    folders, csvs, analyses, benchmarks = [], [], [], []
    for path in map(Path, paths):
        if path.is_file():
            if path.name.endswith("_runs.csv"):
                csvs.append(path)
            elif path.name == tb.RESULTS_FILE:
                folders.append(path)
            elif path.suffix == ".json" and _benchmark(path) is not None:
                benchmarks.append(path)
            continue
        if not path.is_dir():
            continue
        folders.append(path)
        csvs += sorted(path.rglob("*_runs.csv"))
        analyses += sorted(p.parent for p in path.rglob("manifest.json") if (p.parent / "summary.md").exists()
                           or any(p.parent.glob("*.json")))
        benchmarks += sorted(p for p in path.rglob("*.json") if p.name != tb.RESULTS_FILE and p.name != "manifest.json"
                             and p.parent not in analyses and _benchmark(p) is not None)
    unique = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    return unique(folders), unique(csvs), unique(analyses), unique(benchmarks)


@functools.lru_cache(maxsize=None)
def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _benchmark(path: Path) -> str | None:
    data = _read_json(path)
    return data.get("benchmark") if isinstance(data, dict) else None


ARM_COLUMNS = ["source", "experiment", "model", "stand_in_for", "task", "metric", "method", "settings", "context",
               "train_examples", "eval_examples", "trainable_params", "seeds", "at_baseline", "table", "aggregate",
               "command"]


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def run_arms(folders: list[Path], csvs: list[Path]) -> pd.DataFrame:
    """One row per setting from run records, through the report's loader and summary (seed grouping by setting,
    best epoch, constant-baseline test); each input is summarised on its own, so runs of two reports never pair."""
    rows = []
    for source in [*folders, *csvs]:
        runs = tb.load_runs([source])
        if runs.empty:
            continue
        runs = runs[runs.smoke.astype(str).str.lower() != "true"]
        summary = tb.summary_frame(runs) if not runs.empty else pd.DataFrame()
        for r in summary.itertuples():
            settings = json.loads(r.method_settings) if isinstance(r.method_settings, str) else None
            train = _nan_to_none(r.train_examples)
            rows.append({
                "source": str(source), "experiment": r.experiment, "model": r.model,
                "stand_in_for": _nan_to_none(r.stand_in_for), "task": r.task, "metric": r.metric, "method": r.method,
                "settings": settings, "context": (str(source), r.experiment, r.model, r.task, train),
                "train_examples": train, "eval_examples": _nan_to_none(r.eval_examples),
                "trainable_params": _nan_to_none(r.trainable_params), "seeds": tb.seed_values(r),
                "at_baseline": bool(r.at_baseline), "table": _nan_to_none(r.table), "aggregate": r.aggregate,
                "command": f"python -m lora_repro +experiment={r.experiment} (runs: {source})"})
    return pd.DataFrame(rows, columns=ARM_COLUMNS)


def analysis_arms(analyses: list[Path]) -> pd.DataFrame:
    """One row per setting from the runs an analysis manifest lists (LoRA runs with their r, targets, recipe, data
    size and best score); the same run listed by two analyses counts once."""
    by_setting: dict[tuple, dict] = {}
    for folder in analyses:
        manifest = _read_json(folder / "manifest.json") or {}
        if manifest.get("labels", {}).get("smoke"):
            continue
        for run in manifest.get("runs", []):
            if run.get("smoke") or run.get("best") is None:
                continue
            settings = {"r": run.get("r"), "targets": run.get("targets"), "alpha": run.get("alpha")}
            recipe = {k: run.get(k) for k in ("lr", "epochs", "batch_size")}
            train = (run.get("n_examples") or {}).get("train")
            key = (run.get("model"), run.get("task"), json.dumps(settings, sort_keys=True), json.dumps(recipe), train)
            arm = by_setting.setdefault(key, {
                "source": str(folder.parent), "experiment": run.get("experiment"), "model": run.get("model"),
                "stand_in_for": run.get("stand_in_for"), "task": run.get("task"), "metric": run.get("metric"),
                "method": "lora", "settings": settings,
                "context": ("analysis", run.get("model"), run.get("task"), json.dumps(recipe), train),
                "train_examples": train, "eval_examples": (run.get("n_examples") or {}).get("validation"),
                "trainable_params": run.get("trainable_without_head"), "seeds": {}, "at_baseline": False,
                "table": None, "aggregate": "median", "command": manifest.get("train_command")})
            arm["seeds"].setdefault(str(run.get("seed")), float(run["best"]))
            if str(folder) not in arm["source"]:
                arm["source"] += f", {folder}"
    return pd.DataFrame(list(by_setting.values()), columns=ARM_COLUMNS)


def gather(paths: list[str | os.PathLike]) -> Evidence:
    folders, csvs, analyses, benchmarks = discover(paths)
    runs, analysis = run_arms(folders, csvs), analysis_arms(analyses)
    runs["origin"], analysis["origin"] = "runs", "analysis"
    arms = pd.concat([f for f in (runs, analysis) if not f.empty], ignore_index=True) if not (
        runs.empty and analysis.empty) else pd.DataFrame(columns=[*ARM_COLUMNS, "origin"])
    bench = []
    for path in benchmarks:
        data = _read_json(path)
        if isinstance(data, dict):
            bench.append({**data, "path": str(path)})
    return Evidence(arms, analyses, bench)


# ----------------------------------------------------------------------------------------------------- evaluators

def _select(arms: pd.DataFrame, part: dict) -> pd.DataFrame:
    sources = part["source"] if isinstance(part["source"], list) else [part["source"]]
    arms = arms[arms.origin.isin(sources)] if not arms.empty else arms
    for key, want in (part.get("select") or {}).items():
        if arms.empty:
            break
        if key.endswith("_not"):
            arms = arms[arms[key[:-4]] != want]
        elif isinstance(want, list):
            arms = arms[arms[key].isin(want)]
        else:
            arms = arms[arms[key].astype(str) == str(want)]
    return arms


def _spread(seeds: dict) -> str:
    values = list(seeds.values())
    mean = sum(values) / len(values)
    text = f"{mean:.1f}"
    if len(values) > 1:
        text += f" [{min(values):.1f}-{max(values):.1f}]"
    return text + f" n={len(values)} (seeds {tb._seed_list(seeds)})"


def _arm_text(arm) -> str:
    model = arm.model + (f" (stand-in for {arm.stand_in_for})" if arm.stand_in_for else "")
    data = []
    if pd.notna(arm.train_examples) and arm.train_examples:  # NaN: a record that did not say
        data.append(f"train {int(arm.train_examples)}")
    if pd.notna(arm.eval_examples) and arm.eval_examples:
        data.append(f"eval {int(arm.eval_examples)}")
    return f"{arm.experiment} · {model} · {arm.task} ({', '.join(data) or 'data size not recorded'}) · {arm.metric}"


def _rule_kwargs(rule: dict, defaults: dict) -> dict:
    return {"test": rule["test"], "margin": rule.get("margin", 0.0), "min_n": rule.get("min_n", defaults["min_n"]),
            "k_se": rule.get("k_se", defaults["k_se"]), "scale": rule.get("scale", "diff")}


def _label(arm) -> str:
    if isinstance(arm.settings, dict) and arm.method == "lora" and arm.settings.get("r") is not None:
        targets = arm.settings.get("targets")
        return f"{arm.method}(r={arm.settings['r']}" + (f",{'+'.join(map(str, targets))}" if targets else "") + ")"
    return arm.method


def evaluate_pairwise(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Method A against each listed baseline, per task, within one input (report) and training-set size."""
    arms = _select(evidence.arms, part)
    results, texts, commands = [], [], []
    if arms.empty:
        return results, texts, commands
    kwargs = _rule_kwargs(part["rule"], defaults)
    for context, group in arms.groupby(arms.context.astype(str), sort=True):
        ours = group[group.method == part["a"]]
        for a in ours.itertuples():
            for b in group[group.method.isin(part["b"])].itertuples():
                names = (_label(a), _label(b))
                ratio = part.get("param_ratio_max")
                if ratio and a.trainable_params and b.trainable_params and a.trainable_params > ratio * b.trainable_params:
                    texts.append(f"{_arm_text(a)}: {names[1]} left out, {int(a.trainable_params):,} vs "
                                 f"{int(b.trainable_params):,} trainable parameters (> {ratio}x)")
                    continue
                gap = (sum(a.seeds.values()) / len(a.seeds)) - (sum(b.seeds.values()) / len(b.seeds))
                reading = tb.read_pair(a.seeds, b.seeds, gap, a.at_baseline and b.at_baseline)
                if a.at_baseline and b.at_baseline:
                    result = inconclusive(reading["n_paired"], f"{a.task} {names[0]} vs {names[1]}: uninformative, "
                                          "both at the constant-prediction score")
                else:
                    result = paired_rule(a.seeds, b.seeds, names=names, **kwargs)
                    result = Result(result.verdict, f"{a.task} {names[0]} vs {names[1]}: {result.reason}", result.n)
                results.append(result)
                texts.append(f"{_arm_text(a)}: {names[0]} {_spread(a.seeds)} vs {names[1]} {_spread(b.seeds)}; "
                             f"table.py reading: within {tb.WITHIN} {reading['within_1.5']}, order "
                             f"{reading['order'].replace('A ahead', names[0] + ' ahead').replace('B ahead', names[1] + ' ahead')}"
                             f" -> {result.verdict}")
                commands.append(a.command)
    return results, texts, commands


def _x(arm, keys: list[str]):
    settings = arm.settings if isinstance(arm.settings, dict) else None
    if settings is None or any(settings.get(k) is None for k in keys):
        return None
    values = [settings[k] for k in keys]
    if len(values) == 1:
        value = values[0]
        if isinstance(value, list):
            return ",".join(map(str, value))
    else:
        value = sum(values)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def evaluate_trend(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Arms that differ in one setting (x: rank, special tokens, targets), within one context (input, model, task,
    data size, recipe, the other settings): the focus arm (smallest / largest x, or a named value) against the best
    other arm (``against: best``) or every other arm (``against: each``)."""
    arms = _select(evidence.arms, part)
    results, texts, commands = [], [], []
    if arms.empty:
        return results, texts, commands
    keys, ignore = part["x"], set(part.get("ignore", []))
    if part.get("equal_budget"):
        ignore.add("r")  # an equal budget trades the rank against the number of weight types
    arms = arms.assign(x=pd.Series([_x(a, keys) for a in arms.itertuples()], index=arms.index, dtype=object))
    arms = arms[arms.x.notna()]
    if arms.empty:
        return results, texts, commands
    rest = [json.dumps({k: v for k, v in a.settings.items() if k not in keys and k not in ignore}, sort_keys=True)
            for a in arms.itertuples()]
    arms = arms.assign(group=[f"{a.context}|{a.method}|{r}" for a, r in zip(arms.itertuples(), rest)])
    kwargs = _rule_kwargs(part["rule"], defaults)
    xname = "+".join(keys)
    for _, group in arms.groupby("group", sort=True):
        values = list(group.x)
        focus = part["focus"]
        if focus in ("smallest", "largest"):
            pick = min(values) if focus == "smallest" else max(values)
        else:
            pick = focus if focus in values else None
        order = sorted(group.itertuples(), key=lambda a: (not isinstance(a.x, (int, float)), a.x if isinstance(a.x, (int, float)) else str(a.x)))
        listing = ", ".join(f"{xname}={a.x}: {_spread(a.seeds)}" for a in order)
        first = group.iloc[0]
        if pick is None or len(set(values)) < 2:
            texts.append(f"{_arm_text(first)}: {listing} (no {xname} to compare against)")
            continue
        a = group[group.x == pick].iloc[0]
        others = group[group.x != pick]
        if part.get("equal_budget"):
            others = others[others.trainable_params == a.trainable_params]
        if others.empty:
            texts.append(f"{_arm_text(first)}: {listing} (no other {xname} at the same budget)")
            continue
        if part.get("against", "best") == "best":
            others = others.assign(mean=[sum(s.values()) / len(s) for s in others.seeds]).nlargest(1, "mean")
        for b in others.itertuples():
            names = (f"{xname}={a.x}", f"{xname}={b.x}")
            result = paired_rule(a.seeds, b.seeds, names=names, **kwargs)
            results.append(Result(result.verdict, f"{a.method} {names[0]} vs {names[1]}: {result.reason}", result.n))
        texts.append(f"{_arm_text(first)}: {listing} -> {combine(results[-len(others):]).verdict}")
        commands += list(dict.fromkeys(group.command))
    return results, texts, commands


def _analysis_files(evidence: Evidence, name: str) -> list[tuple[Path, object]]:
    out = []
    for folder in evidence.analyses:
        manifest = _read_json(folder / "manifest.json") or {}
        data = _read_json(folder / name)
        if data is not None and not manifest.get("labels", {}).get("smoke"):
            out.append((folder, data))
    return out


def _analysis_text(folder: Path) -> tuple[str, str | None]:
    manifest = _read_json(folder / "manifest.json") or {}
    labels = manifest.get("labels", {})
    runs = manifest.get("runs", [])
    hardware = ", ".join(sorted({f"{h.get('cpu')} {h.get('cpu_count')} cores" + (f", {h['gpu']}" if h.get("gpu") else "")
                                 for h in labels.get("hardware", [])}))
    sizes = ", ".join(sorted({f"train {r['n_examples'].get('train')} / eval {r['n_examples'].get('validation')}"
                              for r in runs if r.get("n_examples")}))
    models = ", ".join(f"{m} (stand-in for {s})" for m, s in zip(labels.get("models", []), labels.get("stand_in_for", [])))
    text = (f"{folder}: {models or '?'} · {', '.join(labels.get('tasks', []))} ({sizes}) · ranks "
            f"{labels.get('ranks')} · seeds {labels.get('seeds')} · {hardware}")
    command = manifest.get("analysis_command")
    if manifest.get("train_command"):
        command = f"{manifest['train_command']}; {command}"
    return text, command


def evaluate_subspace(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Subspace similarity of two runs' A (subspace.json), module by module, against random / initial references."""
    select = dict(part.get("select") or {})
    kind = select.pop("kind", None)
    results, texts, commands = [], [], []
    for folder, pairs in _analysis_files(evidence, "subspace.json"):
        for pair in pairs:
            if kind is not None and pair.get("kind") != kind:
                continue
            modules = [m for m in pair.get("modules", []) if all(m.get(k) == v for k, v in select.items())]
            modules = [m for m in modules if m.get(part["value"]) is not None]
            if not modules:
                continue
            values = [m[part["value"]] for m in modules]
            bases = [max(m[k] for k in part["baselines"] if m.get(k) is not None) for m in modules]
            rule = part["rule"]
            result = overlap_rule(values, bases, threshold=rule["threshold"], factor=rule["factor"],
                                  min_fraction=rule["min_fraction"], min_n=rule["min_n"])
            result = Result(result.verdict, f"{pair['a']} vs {pair['b']}: {result.reason}", result.n)
            results.append(result)
            text, command = _analysis_text(folder)
            texts.append(f"{text}; {part['value']} of {pair['a']} vs {pair['b']} per module: "
                         + ", ".join(f"{m.get('site')} {v:.2f}" for m, v in zip(modules, values))
                         + f" -> {result.verdict}")
            commands.append(command)
    return results, texts, commands


def evaluate_amplification(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Table 7's quantities (amplification.json), paired by module: the amplification factor at the smallest r
    against the largest r (``compare: ranks``), or two projections at the smallest r (``compare: projections``)."""
    results, texts, commands = [], [], []
    kwargs = _rule_kwargs(part["rule"], defaults)
    for folder, data in _analysis_files(evidence, "amplification.json"):
        rows = pd.DataFrame(data.get("rows", []))
        if rows.empty:
            continue
        for seed, group in rows.groupby("seed"):
            ranks = sorted(group.r.unique())
            small = group[group.r == ranks[0]]
            if part["compare"] == "ranks":
                if len(ranks) < 2:
                    continue
                large = group[group.r == ranks[-1]]
                a, b = dict(zip(small.site, small[part["value"]])), dict(zip(large.site, large[part["value"]]))
                names = (f"{part['value']}(r={ranks[0]})", f"{part['value']}(r={ranks[-1]})")
            else:
                a, b = dict(zip(small.site, small[part["a"]])), dict(zip(small.site, small[part["b"]]))
                names = (f"{part['a']}(r={ranks[0]})", f"{part['b']}(r={ranks[0]})")
            result = paired_rule(a, b, names=names, unit="modules", **kwargs)
            results.append(result)
            text, command = _analysis_text(folder)
            med = lambda d: sorted(d.values())[len(d) // 2]  # noqa: E731
            texts.append(f"{text}; seed {seed}: median {names[0]} {med(a):.2f}, {names[1]} {med(b):.2f} -> "
                         f"{result.verdict}")
            commands.append(command)
    return results, texts, commands


def _benchmarks(evidence: Evidence, part: dict) -> list[dict]:
    want = (part.get("select") or {}).get("benchmark")
    return [b for b in evidence.benchmarks if want is None or b.get("benchmark") == want]


def _device_text(bench: dict) -> str:
    env = bench.get("environment", {})
    hw = env.get("hardware", {})
    device = "GPU" if env.get("gpu_available") and env.get("device") != "cpu" else "CPU"
    settings = bench.get("settings", {})
    model = settings.get("model") or settings.get("models")
    return (f"{bench['path']}: {device} ({env.get('device_name')}, {hw.get('cpu_count')} cores, "
            f"{hw.get('torch_threads')} torch threads), {model}, {settings.get('precision')}")


def evaluate_latency(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Forward latency, paired over interleaved timing rounds (results.raw: seconds per variant per round)."""
    results, texts, commands = [], [], []
    kwargs = _rule_kwargs(part["rule"], defaults)
    for bench in _benchmarks(evidence, part):
        raw = bench.get("results", {}).get("raw", [])
        if part.get("points") == "smallest_batch" and raw:
            smallest = min(p["batch"] for p in raw)
            raw = [p for p in raw if p["batch"] == smallest]
        lines = []
        for point in raw:
            seconds = point.get("seconds", {})
            if part["a"] not in seconds or part["b"] not in seconds:
                continue
            a, b = dict(enumerate(seconds[part["a"]])), dict(enumerate(seconds[part["b"]]))
            result = paired_rule(a, b, names=(part["a"], part["b"]), unit="rounds", **kwargs)
            where = f"batch {point['batch']} x seq {point['seq_len']}"
            results.append(Result(result.verdict, f"{where}: {result.reason}", result.n))
            med = lambda v: sorted(v)[len(v) // 2] * 1000  # noqa: E731
            lines.append(f"{where}: median {part['a']} {med(seconds[part['a']]):.1f} ms vs {part['b']} "
                         f"{med(seconds[part['b']]):.1f} ms -> {result.verdict}")
        if lines:
            texts.append(f"{_device_text(bench)}; " + "; ".join(lines))
            commands.append(bench.get("command"))
    return results, texts, commands


def _throughput_rows(bench: dict, variant: str) -> dict:
    return {row["batch"]: row for row in bench.get("results", {}).get("rows", []) if row.get("variant") == variant}


def evaluate_throughput(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Training step time, paired over interleaved trials (results.rows[].seconds), at each batch size."""
    results, texts, commands = [], [], []
    kwargs = _rule_kwargs(part["rule"], defaults)
    for bench in _benchmarks(evidence, part):
        a_rows, b_rows = _throughput_rows(bench, part["a"]), _throughput_rows(bench, part["b"])
        lines = []
        for batch in sorted(set(a_rows) & set(b_rows)):
            ra, rb = a_rows[batch], b_rows[batch]
            result = paired_rule(dict(enumerate(ra["seconds"])), dict(enumerate(rb["seconds"])),
                                 names=(f"step({part['a']})", f"step({part['b']})"), unit="trials", **kwargs)
            where = f"batch {batch} x seq {ra.get('seq_len')}"
            results.append(Result(result.verdict, f"{where}: {result.reason}", result.n))
            lines.append(f"{where}: {ra['tokens_per_s']:.0f} vs {rb['tokens_per_s']:.0f} tokens/s "
                         f"(median step {ra['median_ms']:.0f} vs {rb['median_ms']:.0f} ms, IQR {ra['iqr_ms']:.0f} / "
                         f"{rb['iqr_ms']:.0f}) -> {result.verdict}")
        if lines:
            texts.append(f"{_device_text(bench)}; {part['a']} vs {part['b']}: " + "; ".join(lines))
            commands.append(bench.get("command"))
    return results, texts, commands


def evaluate_memory(part: dict, evidence: Evidence, defaults: dict) -> tuple[list[Result], list[str], list[str]]:
    """Peak training memory: B's over A's at each batch size (one measurement per variant and batch)."""
    results, texts, commands = [], [], []
    rule = part["rule"]
    for bench in _benchmarks(evidence, part):
        a_rows, b_rows = _throughput_rows(bench, part["a"]), _throughput_rows(bench, part["b"])
        ratios = {f"batch {batch}": b_rows[batch][rule["value"]] / a_rows[batch][rule["value"]]
                  for batch in sorted(set(a_rows) & set(b_rows)) if a_rows[batch].get(rule["value"])}
        if not ratios:
            continue
        result = ratio_rule(ratios, at_least=rule["at_least"], unit="batch sizes")
        results.append(Result(result.verdict, f"{Path(bench['path']).name}: {result.reason}", result.n))
        texts.append(f"{_device_text(bench)}; {rule['value']} {part['b']} / {part['a']}: "
                     + ", ".join(f"{k} {b_rows[int(k.split()[1])][rule['value']]:.1f} / "
                                 f"{a_rows[int(k.split()[1])][rule['value']]:.1f} MiB" for k in ratios)
                     + f" -> {result.verdict}")
        commands.append(bench.get("command"))
    return results, texts, commands


EVALUATORS = {"pairwise": evaluate_pairwise, "trend": evaluate_trend, "subspace": evaluate_subspace,
              "amplification": evaluate_amplification, "latency": evaluate_latency,
              "throughput": evaluate_throughput, "memory": evaluate_memory}
UNITS = {"runs": "seeds", "analysis": "seeds", "latency": "rounds", "throughput": "trials", "amplification": "modules",
         "subspace": "modules", "memory": "batch sizes"}


# ---------------------------------------------------------------------------------------------------------- claims

@functools.cache
def load_claims(path: str | os.PathLike = CLAIMS_YAML) -> dict:
    with Path(path).open(encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    ids = [c["id"] for c in spec["claims"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate claim ids")
    for claim in spec["claims"]:
        for part in claim["parts"]:
            if part["evaluator"] not in EVALUATORS:
                raise ValueError(f"{claim['id']}: unknown evaluator {part['evaluator']!r}; choices: {', '.join(EVALUATORS)}")
    return spec


def paper_text(paper: dict) -> str:
    """The paper's evidence for a claim: its table's printed cells (paper_numbers.yaml) and/or a pointer text."""
    parts = []
    if "table" in paper:
        tasks, metric = paper.get("tasks"), paper.get("metric")
        cells = []
        for row in paper_rows(paper["table"], paper.get("model")):
            if paper.get("methods") and row["method"] not in paper["methods"]:
                continue
            values = []
            for task, metrics in row["results"].items():
                if tasks and task not in tasks:
                    continue
                shown = {name: value for name, value in metrics.items()
                         if value.get("source") != "readme" and (not metric or name == metric)}
                for name, value in shown.items():
                    values.append(f"{task} {value['printed']}" if len(shown) == 1 else f"{task} {name} {value['printed']}")
            if values:
                label = row.get("variant") if len(row["label"]) <= 4 and row.get("variant") else row["label"]
                if row.get("group") and row["group"] not in label:
                    label = f"{row['group']} {label}"
                if row.get("trainable_params"):
                    label += f" ({row['trainable_params']})"
                cells.append(f"{label}: {', '.join(values)}")
        model = f", {paper['model']}" if paper.get("model") else ""
        parts.append(f"Table {paper['table']}{model}: " + "; ".join(cells))
    if paper.get("text"):
        parts.append(paper["text"])
    return " | ".join(parts)


def _missing_requirements(requires: dict) -> list[str]:
    missing = []
    root = os.environ.get("LORA_REPRO_DATA")
    for item in requires.get("data", []):
        if not root or not (Path(root) / item).exists():
            missing.append(f"data {item} (under $LORA_REPRO_DATA{'' if root else ', which is not set'})")
    for module in requires.get("modules", []):
        name, what = (module["name"], module.get("what")) if isinstance(module, dict) else (module, None)
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(f"{what} (no module {name})" if what else f"module {name}")
    return missing


def summarise(results: list[Result], verdict: str) -> str:
    """The short reason the ledger's table shows: the comparisons' verdict counts and, for the few that decide it,
    their numbers (all of them when there are at most three)."""
    if len(results) <= 3:
        return "; ".join(r.reason for r in results)
    kinds = pd.Series([r.kind for r in results]).value_counts()
    counts = ", ".join(f"{v} {k}" for k, v in kinds.items())
    deciding = [r for r in results if r.verdict == verdict or (r.kind == verdict_kind(verdict) and r.n == max(
        x.n for x in results if x.kind == r.kind))]
    shown = "; ".join(r.reason for r in deciding[:3]) + (f"; ... ({len(deciding) - 3} more)" if len(deciding) > 3 else "")
    return f"{len(results)} comparisons: {counts}. {shown}"


def evaluate_claim(claim: dict, evidence: Evidence, defaults: dict) -> dict:
    """One claim -> its ledger row (verdict, rule, summary, reason, evidence, command)."""
    part_results, texts, commands, rules, leaves = [], [], [], [], []
    for part in claim["parts"]:
        results, part_texts, part_commands = EVALUATORS[part["evaluator"]](part, evidence, defaults)
        unit = UNITS.get(part["evaluator"], "seeds")
        names = (part.get("a", "A"), part.get("b", ["B"])[0] if isinstance(part.get("b"), list) else part.get("b", "B"))
        if part["evaluator"] == "trend":
            names = (f"{part['focus']} {'+'.join(part['x'])}", "best other" if part.get("against", "best") == "best"
                     else "each other")
        elif part["evaluator"] == "amplification" and part["compare"] == "ranks":
            names = ("smallest r", "largest r")
        elif part["evaluator"] == "pairwise" and len(part["b"]) > 1:
            names = (part["a"], "each baseline")
        elif part["evaluator"] == "throughput":
            names = (f"step time({part['a']})", f"step time({part['b']})")
        elif part["evaluator"] == "subspace":
            names = (f"{part['value']} of the pair", "its baselines")
        rules.append(describe_rule(part["rule"], defaults, unit, names))
        part_results.append(combine(results, missing_means=NOT_RUN) if results else
                            Result(NOT_RUN, f"no evidence for {names[0]} vs {names[1]}", 0))
        leaves += results or [part_results[-1]]
        texts += part_texts
        commands += [c for c in part_commands if c]
    result = combine(part_results)
    missing = _missing_requirements(claim.get("requires", {}))
    reason, summary = result.reason, summarise(leaves, result.verdict)
    if result.kind == "not run here":
        if missing and claim.get("requires_mode") != "note":
            result = Result(CANNOT.format(what="; ".join(missing)), reason, 0)
        else:
            reason += f"; to run: {claim['command']}"
            summary += f"; to run: {claim['command']}"
    if missing and claim.get("requires_mode") == "note":
        reason += f"; not testable here: {'; '.join(missing)}"
        summary += f"; not testable here: {'; '.join(missing)}"
    combined = "" if len(claim["parts"]) == 1 else " Parts combined the same way, and any not run -> not run here. Parts: any does not hold -> does not hold; any not run -> not run here; all hold -> holds; else inconclusive."
    many = ". Comparisons combined: any does not hold -> does not hold; all hold -> holds; else inconclusive."
    return {"id": claim["id"], "claim": claim["statement"], "verdict": result.verdict,
            "rule": " || ".join(rules) + many + combined, "summary": summary, "reason": reason,
            "paper": paper_text(claim.get("paper", {})), "evidence": " || ".join(texts) or "none found",
            "command": " ; ".join(dict.fromkeys(commands)) or claim["command"]}


def claims_frame(paths: list[str | os.PathLike], claims_yaml: str | os.PathLike = CLAIMS_YAML) -> pd.DataFrame:
    spec = load_claims(claims_yaml)
    defaults = spec.get("defaults", {"min_n": 3, "k_se": 2.0})
    evidence = gather(paths)
    return pd.DataFrame([evaluate_claim(c, evidence, defaults) for c in spec["claims"]], columns=CSV_COLUMNS)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("\\|\\|", "<br>")


def claims_markdown(frame: pd.DataFrame, command: str | None = None) -> str:
    counts = frame.verdict.map(verdict_kind).value_counts()
    lines = ["# Claims ledger: the LoRA paper's claims against the evidence here\n"]
    if command:
        lines.append(f"Regenerate: `{command}`\n")
    lines += [
        "One row per claim of Hu et al. 2021 (arXiv 2106.09685 v2). The claims, what answers each and its rule are "
        "data (`lora_repro/report/claims.yaml`); the verdict is computed by `lora_repro/report/claims.py` from the "
        "evidence found under the inputs: run records (the report's loader and seed grouping), Section 7 analysis "
        "folders and benchmark JSONs. Verdicts: `holds`, `does not hold`, `inconclusive at n=k` (the rule's interval "
        "straddles its margin, or fewer than its minimum n), `not run here` (no evidence; the row names the "
        "command), `cannot be tested here: <what>` (no evidence, and the data or code it needs is missing). "
        "Stand-in evidence is from small stand-in models (MiniLM-L6, SmolLM2-135M, shrunk GPT-2) and speaks for "
        "them, not for the paper's models; benchmarks are labelled with their device. Smoke runs are never evidence.\n",
        "Verdicts: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in VERDICT_KINDS) + ".\n",
        "| id | claim | verdict | reason |", "|---|---|---|---|"]
    lines += [f"| {r.id} | {_cell(r.claim)} | **{r.verdict}** | {_cell(r.summary)} |" for r in frame.itertuples()]
    lines.append("\n## Each claim in full\n")
    for r in frame.itertuples():
        lines += [f"### {r.id}: {r.claim}\n", f"- **Verdict:** {r.verdict}", f"- **Rule:** {r.rule.replace(' || ', '; ')}",
                  f"- **Reason:** {r.reason}", f"- **Paper:** {r.paper or 'no number transcribed'}",
                  "- **Evidence here:**" + ("".join(f"\n  - {t}" for t in r.evidence.split(" || "))),
                  f"- **Command:** `{r.command}`" if "`" not in r.command else f"- **Command:** {r.command}", ""]
    return "\n".join(lines)


def claims_paths(out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    return [out.with_suffix(".md"), out.with_suffix(".csv")]


def write_claims(paths: list[str | os.PathLike], out: str | os.PathLike, command: str | None = None) -> pd.DataFrame:
    """Write NAME.md and NAME.csv (one row per claim), atomically; returns the frame."""
    frame = claims_frame(paths)
    md, csv = claims_paths(out)
    rs.write_text_atomic(md, claims_markdown(frame, command))
    rs.write_text_atomic(csv, frame.to_csv(index=False))
    return frame
