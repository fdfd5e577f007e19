"""GLUE (Wang et al. 2019) with the paper's metrics, from the hub (``nyu-mll/glue``) or from a local folder in the
original GLUE TSV layout (``<data_dir>/glue_data/<TASK>/{train,dev}.tsv``, as download_glue_data.py writes it)."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lora_repro.hub import hub_reachable, in_local_cache
from lora_repro.tasks import DATA_ENV, RowPolicy, TaskSpec, register_task
from lora_repro.errors import MissingInputError, UserError

SOURCES = ("auto", "local", "hub")


@dataclass(frozen=True)
class GlueFormat:
    directory: str
    fields: dict[str, str | int]  # our column -> TSV header name (or column index when there is no header)
    labels: dict[str, int] | None = None  # label strings -> ids (None: numeric labels)
    header: bool = True
    files: dict[str, str] | None = None  # split -> file stem
    numeric: type = int  # type of numeric labels (STS-B's similarity scores are floats)


_GLUE: dict[str, tuple[GlueFormat, tuple[str, ...], str, tuple[str, ...]]] = {
    # name: (format, text fields, kind, metrics with the paper's first)
    "cola": (GlueFormat("CoLA", {"sentence": 3, "label": 1}, header=False), ("sentence",), "classification", ("mcc", "accuracy")),
    "sst2": (GlueFormat("SST-2", {"sentence": "sentence", "label": "label"}), ("sentence",), "classification", ("accuracy",)),
    "mrpc": (GlueFormat("MRPC", {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
             ("sentence1", "sentence2"), "classification", ("accuracy", "f1")),
    "qqp": (GlueFormat("QQP", {"question1": "question1", "question2": "question2", "label": "is_duplicate"}),
            ("question1", "question2"), "classification", ("accuracy", "f1")),
    "stsb": (GlueFormat("STS-B", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}, numeric=float),
             ("sentence1", "sentence2"), "regression", ("pearson", "spearman")),
    "qnli": (GlueFormat("QNLI", {"question": "question", "sentence": "sentence", "label": "label"},
                        {"entailment": 0, "not_entailment": 1}), ("question", "sentence"), "classification", ("accuracy",)),
    "rte": (GlueFormat("RTE", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
                       {"entailment": 0, "not_entailment": 1}), ("sentence1", "sentence2"), "classification", ("accuracy",)),
    "mnli": (GlueFormat("MNLI", {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
                        {"entailment": 0, "neutral": 1, "contradiction": 2},
                        files={"validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched"}),
             ("premise", "hypothesis"), "classification", ("accuracy",)),
}
_EVAL_SPLITS = {"mnli": ("validation_matched", "validation_mismatched")}
# In-context prompts (method=few_shot, Table 8): a demonstration is the template filled from the row, then its label's
# word (by label id; the first token of each word is scored). RTE and MNLI follow GPT-3's formats (Brown et al. 2020,
# Appendix G). method.template / method.label_words override them.
_PROMPTS = {
    "sst2": {"template": "Review: {sentence}\nSentiment:", "label_words": [" negative", " positive"]},
    "rte": {"template": "{sentence1}\nquestion: {sentence2} True or False?\nanswer:", "label_words": [" True", " False"]},
    "mnli": {"template": "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:",
             "label_words": [" True", " Neither", " False"]},
}


def pearson(predictions, labels) -> float:
    return float(stats.pearsonr(predictions, labels)[0])


def spearman(predictions, labels) -> float:
    return float(stats.spearmanr(predictions, labels)[0])


METRICS = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p)),
    "mcc": lambda p, y: float(matthews_corrcoef(y, p)),
    "pearson": pearson,
    "spearman": spearman,
}


def scorer(metric_names: tuple[str, ...], kind: str):
    def score(logits_or_predictions, labels) -> dict[str, float]:
        predictions = np.asarray(logits_or_predictions)
        if kind == "regression":
            predictions = predictions.reshape(-1)
        elif predictions.ndim == 2:
            predictions = predictions.argmax(-1)
        # x100, as the paper prints them
        return {m: 100.0 * METRICS[m](predictions, np.asarray(labels)) for m in metric_names}
    return score


def read_tsv(path: Path, fmt: GlueFormat, rows_policy: RowPolicy | None = None) -> dict[str, list]:
    """Read one GLUE TSV into columns. GLUE's TSVs are unquoted (quotes are text) and some carry a BOM. A malformed
    row stops the run naming the file and line, unless ``rows_policy`` skips it (QQP's train file has a few rows
    with a wrong column count: conf/task/qqp.yaml skips them, as every GLUE loader does, and says so)."""
    policy = rows_policy or RowPolicy()
    columns: dict[str, list] = {k: [] for k in fmt.fields}
    text_keys = [k for k in fmt.fields if k != "label"]
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        index = {k: v for k, v in fmt.fields.items()}
        if fmt.header:
            header = next(rows, None)
            if header is None:
                raise UserError(f"{path} is empty: a GLUE split needs a header line and at least one row")
            missing = [v for v in fmt.fields.values() if v not in header]
            if missing:
                raise UserError(f"{path}: header lacks column(s) {missing}; found {header}")
            index = {k: header.index(v) for k, v in fmt.fields.items()}
            width = len(header)
        else:
            width = None
        for row in rows:
            line = rows.line_num
            if (width is not None and len(row) != width) or len(row) <= max(index.values()):
                policy.reject(path, line, f"{len(row)} columns, expected {width or max(index.values()) + 1}")
                continue
            label = row[index["label"]]
            if fmt.labels is not None:
                if label not in fmt.labels:
                    policy.reject(path, line, f"label {label!r} is not one of {', '.join(fmt.labels)}")
                    continue
                label = fmt.labels[label]
            else:
                try:
                    label = fmt.numeric(label)
                except ValueError:
                    policy.reject(path, line, f"label {label!r} is not a number")
                    continue
            empty = [k for k in text_keys if not row[index[k]].strip()]
            if empty:
                policy.reject(path, line, f"empty text in {', '.join(empty)}")
                continue
            for key, i in index.items():
                columns[key].append(label if key == "label" else row[i])
    if not columns["label"]:
        raise UserError(f"{path} has no rows{' after its header' if fmt.header else ''}: a split needs at least one "
                        "example")
    return columns


def make_loader(name: str, fmt: GlueFormat):
    def load(split: str, data_dir: str | None = None, source: str = "auto", rows_policy: RowPolicy | None = None):
        import datasets

        if source not in SOURCES:
            raise UserError(f"unknown data source {source!r}; choices: {', '.join(SOURCES)}")
        data_dir = data_dir or os.environ.get(DATA_ENV)
        local = Path(data_dir) / "glue_data" / fmt.directory if data_dir else None
        stem = (fmt.files or {}).get(split, {"train": "train", "validation": "dev"}.get(split, split))
        if source in ("auto", "local") and local is not None and (local / f"{stem}.tsv").is_file():
            return datasets.Dataset.from_dict(read_tsv(local / f"{stem}.tsv", fmt, rows_policy))
        if source == "local" or (local is not None and local.is_dir()):
            where = local / f"{stem}.tsv" if local else f"<data_dir>/glue_data/{fmt.directory}/{stem}.tsv"
            raise MissingInputError(f"GLUE {name} split {split!r}: {where} not found. Put the GLUE TSVs there, "
                                    f"or set data_dir=DIR / ${DATA_ENV}=DIR to a folder with glue_data/{fmt.directory}/")
        try:
            if not (hub_reachable() or in_local_cache("nyu-mll/glue", "README.md", "dataset")):
                raise ConnectionError("hub unreachable")
            return datasets.load_dataset("nyu-mll/glue", name, split=split)
        except Exception as error:  # offline, or hub down: say which setting fixes it
            raise MissingInputError(
                f"GLUE {name} split {split!r}: no local copy (data_dir / ${DATA_ENV} "
                f"{'unset' if not data_dir else 'has no ' + str(local)}) and the hub dataset nyu-mll/glue could not "
                f"be loaded ({type(error).__name__}). Set data_dir=DIR or ${DATA_ENV}=DIR to a folder holding "
                f"glue_data/{fmt.directory}/{stem}.tsv") from None
    return load


for _name, (_fmt, _fields, _kind, _metrics) in _GLUE.items():
    register_task(TaskSpec(
        name=_name, kind=_kind, text_fields=_fields, metrics=_metrics, train_split="train",
        eval_splits=_EVAL_SPLITS.get(_name, ("validation",)), load=make_loader(_name, _fmt),
        score=scorer(_metrics, _kind), num_labels=1 if _kind == "regression" else len(_fmt.labels or {0: 0, 1: 1}),
        family="glue", extra={"prompt": _PROMPTS[_name]} if _name in _PROMPTS else {}))
