"""The LoRA paper's printed numbers (arXiv 2106.09685 v2), read from paper_numbers.yaml: one lookup for report code.

    paper_value(2, "roberta-base", "lora", "rte")              -> 86.6
    paper_cell(2, "roberta-base", "lora", "rte")               -> "86.6±.7"
    paper_value(3, "gpt2-medium", "lora", "e2e", "bleu")       -> 70.4
    paper_hparams("roberta-base", "lora", "rte")               -> Table 9's settings for RTE
    paper_table_frame(2)                                       -> Table 2 as printed (strings)
    paper_protocol(2)                                          -> {aggregate: median, n_seeds: 5, epoch: best, ...}

Keys (models, methods, tasks) are listed under ``vocab`` in the YAML. A key that is not in the vocabulary raises
a KeyError naming the valid choices; a valid key the paper simply has no number for gives None from paper_value.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

PAPER_NUMBERS_YAML = Path(__file__).with_name("paper_numbers.yaml")
HPARAM_SOURCES = ("paper", "released_scripts")
ALL_TASKS = "all_tasks"  # released_scripts key: overrides applied to every task


class PaperKeyError(KeyError):
    """A KeyError whose message prints without KeyError's extra quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _choices(options) -> str:
    return ", ".join(str(o) for o in options)


@functools.cache
def load_paper() -> dict:
    """The parsed paper_numbers.yaml (cached; treat it as read-only, the other functions return copies)."""
    with PAPER_NUMBERS_YAML.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _check_key(kind: str, key: str | None) -> None:
    """kind is 'models', 'methods' or 'tasks'; None means 'any'."""
    vocab = load_paper()["vocab"][kind]
    if key is not None and key not in vocab:
        raise PaperKeyError(f"unknown {kind[:-1]} {key!r}; choices: {_choices(vocab)}")


def _table(table: int | str) -> dict:
    tables = load_paper()["tables"]
    try:
        number = int(table)
    except (TypeError, ValueError):
        number = None
    if number not in tables:
        raise PaperKeyError(f"unknown table {table!r}; transcribed tables: {_choices(tables)} "
                            "(hyper-parameter Tables 9-12: use paper_hparams)")
    return tables[number]


def _row_methods(row: dict) -> list[str]:
    return [row["method"], *row.get("also_methods", [])]


def paper_rows(table: int | str | None = None, model: str | None = None, method: str | None = None) -> list[dict]:
    """Copies of the printed rows (each with its ``table`` number added), filtered by table, model and method."""
    _check_key("models", model)
    _check_key("methods", method)
    if table is not None:
        _table(table)  # validates the number
    numbers = list(load_paper()["tables"]) if table is None else [int(table)]
    rows = []
    for number in numbers:
        for row in load_paper()["tables"][number]["rows"]:
            if (model is None or row["model"] == model) and (method is None or method in _row_methods(row)):
                rows.append({"table": number, **copy.deepcopy(row)})
    return rows


def _find_row(table: int | str, model: str, method: str, variant: str | None) -> dict | None:
    """The one row for (model, method, variant), None when the paper has none; ValueError when variant is needed."""
    _check_key("models", model)
    _check_key("methods", method)
    rows = [r for r in _table(table)["rows"] if r["model"] == model and method in _row_methods(r)]
    if not rows:
        return None
    variants = [r.get("variant") for r in rows]
    if variant in variants:
        return rows[variants.index(variant)]
    if variant is None and len(rows) == 1:
        return rows[0]
    named = _choices(repr(v) for v in variants)
    if variant is None:
        raise ValueError(f"table {table} has {len(rows)} rows for {model}/{method}; pass variant= one of {named}")
    raise PaperKeyError(f"table {table} has no variant {variant!r} for {model}/{method}; choices: {named}")


def _resolve_metric(table: int | str, task: str, metric: str | None) -> str:
    """The metric to read: the table's column metric when not given; checks task and metric names."""
    _check_key("tasks", task)
    tbl = _table(table)
    table_tasks = list(dict.fromkeys(r_task for r in tbl["rows"] for r_task in r["results"]))
    if task not in table_tasks:
        raise PaperKeyError(f"table {table} has no task {task!r}; its tasks: {_choices(table_tasks)}")
    known = list(dict.fromkeys(m for r in tbl["rows"] for m in r["results"].get(task, {})))
    if metric is None:
        column_metrics = [m for c in tbl["columns"] if c.get("task") == task for m in c.get("metrics", [c.get("metric")])]
        if len(column_metrics) != 1:
            raise ValueError(f"table {table}, task {task!r} has several metrics; pass metric= one of {_choices(known)}")
        return column_metrics[0]
    if metric not in known:
        raise PaperKeyError(f"table {table}, task {task!r} has no metric {metric!r}; choices: {_choices(known)}")
    return metric


def paper_value(table: int | str, model: str, method: str, task: str, metric: str | None = None,
                variant: str | None = None) -> float | None:
    """The printed number (as printed: e.g. METEOR x100 in Table 3, see the table's metric_scale); None if not in the paper."""
    row = _find_row(table, model, method, variant)
    if row is None:
        _check_key("tasks", task)
        return None
    metric = _resolve_metric(table, task, metric)
    found = row["results"].get(task, {}).get(metric)
    return None if found is None else found["value"]


def paper_cell(table: int | str, model: str, method: str, task: str, metric: str | None = None,
               variant: str | None = None) -> str:
    """The cell text as printed, e.g. "86.6±.7"; with metric=None a multi-metric cell comes whole ("52.0/28.0/44.5")."""
    row = _find_row(table, model, method, variant)
    if row is None:
        _check_key("tasks", task)
        raise PaperKeyError(f"table {table} prints no row for {model}/{method}")
    if metric is None and task in row.get("printed_cells", {}):
        return row["printed_cells"][task]
    metric = _resolve_metric(table, task, metric)
    found = row["results"].get(task, {}).get(metric)
    if found is None:
        raise PaperKeyError(f"table {table} prints no {task}/{metric} for {model}/{method}")
    return found["printed"]


def paper_hparams(model: str, method: str, task: str, source: str = "paper", variant: str | None = None) -> dict[str, Any]:
    """Appendix D's settings for one run. method may carry its variant ("lora/dagger", "adapter_p/3.0M").

    source='released_scripts' overlays the settings where microsoft/LoRA's released scripts differ (anchors.md §A.5);
    settings the scripts are not known to change keep the paper's value.
    """
    if source not in HPARAM_SOURCES:
        raise ValueError(f"unknown hparams source {source!r}; choices: {_choices(HPARAM_SOURCES)}")
    _check_key("models", model)
    _check_key("methods", method.split("/")[0])
    _check_key("tasks", task)
    hparams = load_paper()["hparams"]
    by_method = hparams["paper"].get(model)
    if by_method is None:
        raise PaperKeyError(f"Appendix D has no hyper-parameters for {model}; models: {_choices(hparams['paper'])}")
    method_key = f"{method}/{variant}" if variant is not None else method
    if method_key not in by_method:
        variants = [key for key in by_method if key.startswith(f"{method_key}/")]
        if variants:
            raise ValueError(f"{model}/{method_key} has several Appendix D blocks; pass one of {_choices(variants)}")
        raise PaperKeyError(f"Appendix D has no {method_key!r} block for {model}; choices: {_choices(by_method)}")
    if task not in by_method[method_key]:
        raise PaperKeyError(f"Appendix D has no {task!r} for {model}/{method_key}; tasks: {_choices(by_method[method_key])}")
    settings = copy.deepcopy(by_method[method_key][task])
    if source == "paper":
        return settings
    released = hparams["released_scripts"].get(model, {}).get(method_key)
    if released is None or (task not in released and ALL_TASKS not in released):
        raise PaperKeyError(f"no released-script settings recorded for {model}/{method_key}/{task}; use source='paper'")
    settings.update(copy.deepcopy(released.get(ALL_TASKS, {})))
    settings.update(copy.deepcopy(released.get(task, {})))
    return settings


def paper_protocol(table: int | str | None) -> dict[str, Any]:
    """How the paper aggregates seeds for a results table (``protocols`` in the YAML): GLUE (Table 2) the median of
    5 seeds, the GPT-2 tables (3, 13, 14) the mean of 3, each run at its best epoch. Tables with no stated protocol
    (or no table) get ``protocols.default``: the median of the seeds present, no expected count."""
    protocols = load_paper()["protocols"]
    try:
        number = int(table)
    except (TypeError, ValueError):
        number = None
    return {"table": number, **copy.deepcopy(protocols.get(number, protocols["default"]))}


def _printed_column(row: dict, column: dict) -> str:
    if "field" in column:
        value = row.get(column["field"])
        return "" if value is None else str(value)
    task = column["task"]
    if task in row.get("printed_cells", {}):
        return row["printed_cells"][task]
    return row["results"][task][column["metric"]]["printed"]


def _pivot_frame(tbl: dict) -> pd.DataFrame:
    """Rows carry pivot_column (and pivot_index); each task column becomes a block of printed rows."""
    cells: dict[tuple, dict[str, str]] = {}
    for column in tbl["columns"]:
        for row in tbl["rows"]:
            index = (column["header"], row["pivot_index"]) if "pivot_index" in row else (column["header"],)
            cells.setdefault(index, {})[row["pivot_column"]] = _printed_column(row, column)
    header = list(dict.fromkeys(row["pivot_column"] for row in tbl["rows"]))
    index = pd.MultiIndex.from_tuples(list(cells), names=tbl["index_header"])
    return pd.DataFrame([[by_col[c] for c in header] for by_col in cells.values()], index=index, columns=header)


def paper_table_frame(table: int | str) -> pd.DataFrame:
    """The printed table as a DataFrame of printed strings (row labels in the index, '**' bold markers dropped)."""
    tbl = _table(table)
    if tbl.get("layout") == "pivot":
        return _pivot_frame(tbl)
    headers = [c["header"] for c in tbl["columns"]]
    body = [[_printed_column(row, c) for c in tbl["columns"]] for row in tbl["rows"]]
    if isinstance(tbl["index_header"], list):  # rows under a group label (model or method)
        index = pd.MultiIndex.from_tuples([(r["group"], r["label"]) for r in tbl["rows"]], names=tbl["index_header"])
    else:
        index = pd.Index([r["label"] for r in tbl["rows"]], name=tbl["index_header"])
    frame = pd.DataFrame(body, index=index, columns=headers)
    if tbl.get("header_rows"):  # Table 1 prints its settings as the first rows
        settings = pd.DataFrame([cells for _, cells in tbl["header_rows"]], columns=headers,
                                index=pd.Index([label for label, _ in tbl["header_rows"]], name=tbl["index_header"]))
        frame = pd.concat([settings, frame])
    if tbl.get("layout") == "transposed":
        frame = frame.T
        frame.columns.name = tbl["index_header"]
    return frame
