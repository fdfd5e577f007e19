"""paper_numbers.yaml against the reference transcription (paper_tables.md), plus the lookup API's contract.

The Markdown checks parse paper_tables.md at test time, independently of lora_repro.report.paper, and compare every
printed cell of every transcribed table; they skip when the reference file is absent (e.g. in CI without /work/shared).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from lora_repro.report.paper import (
    load_paper,
    paper_cell,
    paper_hparams,
    paper_rows,
    paper_table_frame,
    paper_value,
)

PAPER_TABLES_MD = Path(os.environ.get("LORA_REPRO_PAPER_TABLES", "/work/shared/reference/paper_tables.md"))
RESULT_TABLES = [1, 2, 3, 4, 5, 6, 7, 13, 14, 15, 18]
GLUE = ["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"]
NUMBER = re.compile(r"([+-]?\d*\.?\d+)(?:±(\d*\.?\d+))?")


# ---------------------------------------------------------------- Markdown side (independent of paper.py)
@pytest.fixture(scope="module")
def markdown() -> str:
    if not PAPER_TABLES_MD.is_file():
        pytest.skip(f"reference transcription {PAPER_TABLES_MD} not found (set LORA_REPRO_PAPER_TABLES)")
    return PAPER_TABLES_MD.read_text(encoding="utf-8")


def markdown_table(text: str, number: int) -> list[list[str]]:
    """The first Markdown table under the heading that names 'Table <number>': header row first, bold dropped."""
    lines = text.splitlines()
    heading = next(i for i, line in enumerate(lines)
                   if line.startswith("#") and re.search(rf"\bTable {number}(?!\d)", line))
    table_lines = lines[heading + 1:]
    start = next(i for i, line in enumerate(table_lines) if line.startswith("|"))
    rows = []
    for line in table_lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|").replace("**", "")
                 for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not all(re.fullmatch(r"-+", c) for c in cells):
            rows.append(cells)
    return rows


def markdown_body(rows: list[list[str]], index_levels: int) -> list[list[str]]:
    """Body rows with italic group rows ('*GPT-2 Medium*') moved into a leading column and blank labels filled down."""
    body, group, previous = [], None, None
    for cells in rows[1:]:
        if cells[0].startswith("*") and not any(cells[1:]):
            group = cells[0].strip("*")
            continue
        if previous is not None:
            cells = [c or previous[i] if i < index_levels else c for i, c in enumerate(cells)]
        previous = cells
        body.append([group, *cells] if group is not None else cells)
    return body


def frame_rows(frame) -> list[list[str]]:
    return [[*(idx if isinstance(idx, tuple) else (idx,)), *values] for idx, values in zip(frame.index, frame.values.tolist())]


def parse_number(text: str) -> tuple[float, float | None]:
    match = NUMBER.fullmatch(text)
    assert match, f"not a printed number: {text!r}"
    return float(match.group(1)), None if match.group(2) is None else float(match.group(2))


# ---------------------------------------------------------------- every printed cell, every table
@pytest.mark.parametrize("table", RESULT_TABLES)
def test_frame_reproduces_markdown_table(markdown: str, table: int) -> None:
    frame = paper_table_frame(table)
    rows = markdown_table(markdown, table)
    header = rows[0]
    if any(header):  # Table 1 prints a blank header row
        assert list(frame.columns) == header[-len(frame.columns):]
    grouped_by_header_rows = any(c[0].startswith("*") and not any(c[1:]) for c in rows[1:])
    levels = frame.index.nlevels - (1 if grouped_by_header_rows else 0)
    assert frame_rows(frame) == markdown_body(rows, levels)


GLUE_COLUMNS = {"MNLI": ("mnli", "accuracy"), "SST-2": ("sst2", "accuracy"), "MRPC": ("mrpc", "accuracy"),
                "CoLA": ("cola", "mcc"), "QNLI": ("qnli", "accuracy"), "QQP": ("qqp", "accuracy"),
                "RTE": ("rte", "accuracy"), "STS-B": ("stsb", "pearson"), "Avg.": ("avg", "average")}
E2E_COLUMNS = {"BLEU": ("e2e", "bleu"), "NIST": ("e2e", "nist"), "MET": ("e2e", "meteor"),
               "ROUGE-L": ("e2e", "rouge_l"), "CIDEr": ("e2e", "cider")}


@pytest.mark.parametrize(("table", "columns"), [(2, GLUE_COLUMNS), (3, E2E_COLUMNS)])
def test_tables_2_and_3_every_cell_value_and_pm(markdown: str, table: int, columns: dict) -> None:
    """Numbers (not just strings): each Markdown cell -> (value, ±) equals the YAML and paper_value's answer."""
    rows = markdown_table(markdown, table)
    header, body = rows[0], rows[1:]
    yaml_rows = paper_rows(table)
    assert len(yaml_rows) == len(body)
    checked = 0
    for cells, row in zip(body, yaml_rows):
        assert row["label"] == cells[0]
        assert row["trainable_params"] == cells[1]
        assert row["prior_work"] == cells[0].endswith("*")
        for head, text in zip(header[2:], cells[2:]):
            task, metric = columns[head]
            value, pm = parse_number(text)
            stored = row["results"][task][metric]
            assert (stored["value"], stored.get("pm")) == (value, pm), (row["label"], head)
            assert paper_value(table, row["model"], row["method"], task, metric, row.get("variant")) == value
            assert paper_cell(table, row["model"], row["method"], task, metric, row.get("variant")) == text
            checked += 1
    assert checked == len(body) * (len(header) - 2)


def test_table_2_averages_recompute_within_rounding() -> None:
    for row in paper_rows(2):
        mean = sum(row["results"][t][m]["value"] for t, m in
                   [("mnli", "accuracy"), ("sst2", "accuracy"), ("mrpc", "accuracy"), ("cola", "mcc"), ("qnli", "accuracy"),
                    ("qqp", "accuracy"), ("rte", "accuracy"), ("stsb", "pearson")]) / 8
        assert abs(mean - row["results"]["avg"]["average"]["value"]) <= 0.15, (row["label"], mean)


def test_table_7_reference_norms(markdown: str) -> None:
    line = next(l for l in markdown.splitlines() if l.startswith("‖W_q‖_F ="))
    printed = re.findall(r"= (\d+\.\d+)", line)
    norms = load_paper()["tables"][7]["reference_norms"]
    assert [n["printed"] for n in norms.values()] == printed == ["61.95", "6.91", "3.57"]


# ---------------------------------------------------------------- Appendix D against the Markdown
def _hparam_number(text: str) -> float:
    text = text.replace(" (all tasks)", "").replace(",", "")
    return float(text.rsplit("=", 1)[-1])  # "r_q=r_v=8" -> 8


HPARAM_ROWS = {"Batch Size": "batch_size", "# Epochs": "epochs", "# Epoch": "epochs", "Learning Rate": "lr",
               "LoRA α": "lora_alpha", "Max Seq. Len.": "max_seq_len", "Bottleneck r": "bottleneck",
               "LoRA Config.": "lora_r", "Adaptation": "lora_r", "Weight Decay": "weight_decay", "CLS Dropout": "cls_dropout",
               "Dropout Prob": "dropout_prob", "Warmup Steps": "warmup_steps", "Label Smooth": "label_smooth",
               "Beam Size": "beam_size", "Length Penalty": "length_penalty", "no repeat ngram size": "no_repeat_ngram_size",
               "Warmup Tokens": "warmup_tokens"}
TABLE_9_BLOCKS = {"RoBERTa base LoRA": ("roberta-base", "lora"), "RoBERTa large LoRA": ("roberta-large", "lora"),
                  "RoBERTa large LoRA†": ("roberta-large", "lora/dagger"),
                  "RoBERTa large Adpt^P (3M)†": ("roberta-large", "adapter_p/3.0M"),
                  "RoBERTa large Adpt^P (0.8M)†": ("roberta-large", "adapter_p/0.8M"),
                  "RoBERTa large Adpt^H (6M)†": ("roberta-large", "adapter_h/6.0M"),
                  "RoBERTa large Adpt^H (0.8M)†": ("roberta-large", "adapter_h/0.8M")}


def _compare_setting_row(model: str, method: str, tasks: list[str], setting: str, cells: list[str]) -> int:
    key = HPARAM_ROWS[setting]
    values = cells if all(cells) else [cells[0]] * len(tasks)  # one printed value spans every task
    for task, text in zip(tasks, values, strict=True):
        assert paper_hparams(model, method, task)[key] == _hparam_number(text), (model, method, task, setting)
    return len(tasks)


def test_table_9_roberta_hparams(markdown: str) -> None:
    rows = markdown_table(markdown, 9)
    assert rows[0][2:] == ["MNLI", "SST-2", "MRPC", "CoLA", "QNLI", "QQP", "RTE", "STS-B"]
    checked, block = 0, None
    for cells in rows[1:]:
        block = cells[0] or block
        model, method = TABLE_9_BLOCKS[block]
        checked += _compare_setting_row(model, method, GLUE, cells[1], cells[2:])
    assert checked == (3 * 6 + 4 * 5) * 8  # 3 LoRA blocks x 6 settings + 4 adapter blocks x 5 settings, 8 tasks each


def test_table_10_deberta_hparams(markdown: str) -> None:
    rows = markdown_table(markdown, 10)
    assert rows[0][1:] == ["MNLI", "SST-2", "MRPC", "CoLA", "QNLI", "QQP", "RTE", "STS-B"]
    checked = sum(_compare_setting_row("deberta-v2-xxlarge", "lora", GLUE, cells[0], cells[1:]) for cells in rows[1:])
    assert checked == 8 * 8


def test_table_11_gpt2_hparams(markdown: str) -> None:
    rows = markdown_table(markdown, 11)
    assert rows[0][1:] == ["E2E", "WebNLG", "DART"]
    checked = 0
    for cells in rows[1:]:
        if cells[0] in HPARAM_ROWS:
            for model in ("gpt2-medium", "gpt2-large"):
                checked += _compare_setting_row(model, "lora", ["e2e", "webnlg", "dart"], cells[0], cells[1:])
    assert checked == 2 * 3 * 12


def test_table_12_gpt3_hparams(markdown: str) -> None:
    rows = markdown_table(markdown, 12)
    methods = {"Fine-Tune": "full_ft", "PreEmbed": "prefix_embed", "PreLayer": "prefix_layer", "BitFit": "bitfit",
               "Adapter^H": "adapter_h", "LoRA": "lora"}
    checked = 0
    for cells in rows[1:]:
        if cells[0] not in HPARAM_ROWS:
            continue
        for head, text in zip(rows[0][1:], cells[1:], strict=True):
            for task in ("wikisql", "mnli_m", "samsum"):
                assert paper_hparams("gpt3-175b", methods[head], task)[HPARAM_ROWS[cells[0]]] == _hparam_number(text)
                checked += 1
    assert checked == 4 * 6 * 3


# ---------------------------------------------------------------- YAML integrity (no reference file needed)
def test_every_cell_matches_its_printed_text() -> None:
    for row in paper_rows():
        for task, metrics in row["results"].items():
            for metric, cell in metrics.items():
                if metric == "overhead_pct":
                    assert cell["printed"] == f"+{cell['value']}%"
                    continue
                value, pm = parse_number(cell["printed"])
                assert isinstance(cell["value"], float) and cell["value"] == value, (row["table"], row["label"], task, metric)
                assert cell.get("pm") == pm, (row["table"], row["label"], task, metric)


def test_trainable_params_float_matches_printed() -> None:
    for row in paper_rows():
        if "trainable_params" not in row:
            continue
        printed = row["trainable_params"].replace(",", "").replace(" ", "")
        millions = float(printed[:-1]) * (1000.0 if printed.endswith("B") else 1.0)
        assert printed[-1] in "MB" and math.isclose(row["trainable_params_m"], millions), row["label"]


def test_keys_are_in_vocab_and_rows_are_unique() -> None:
    vocab = load_paper()["vocab"]
    seen = set()
    for row in paper_rows():
        assert row["model"] in vocab["models"]
        assert all(m in vocab["methods"] for m in [row["method"], *row.get("also_methods", [])])
        assert all(t in vocab["tasks"] for t in row["results"])
        key = (row["table"], row["model"], row["method"], row.get("variant"))
        assert key not in seen, key
        seen.add(key)


def test_star_and_dagger_flags_follow_labels() -> None:
    for row in paper_rows(2) + paper_rows(3):
        assert row["prior_work"] == row["label"].endswith("*")
    daggers = [row for row in paper_rows(2) if row["dagger"]]
    assert {(r["method"], r.get("variant")) for r in daggers} == {
        ("adapter_p", "3.0M"), ("adapter_p", "0.8M"), ("adapter_h", "6.0M"), ("adapter_h", "0.8M"), ("lora", "dagger")}
    assert all(r["label"].endswith("†") for r in daggers)


def test_hparam_numbers_load_as_numbers() -> None:
    """PyYAML reads '5e-04' as a string; every learning rate must come back as a float."""
    for source in ("paper", "released_scripts"):
        for methods in load_paper()["hparams"][source].values():
            for tasks in methods.values():
                for settings in tasks.values():
                    for key in ("lr", "weight_decay", "warmup_ratio", "length_penalty"):
                        assert settings.get(key) is None or isinstance(settings[key], (int, float)), (key, settings)


# ---------------------------------------------------------------- lookups (hand-picked, across tables)
@pytest.mark.parametrize(("args", "expected"), [
    ((2, "roberta-base", "lora", "rte"), 86.6),
    ((2, "roberta-large", "lora", "rte", None, "dagger"), 85.2),
    ((2, "roberta-large", "adapter_h", "cola", None, "6.0M"), 66.5),
    ((2, "roberta-base", "lora", "mnli", "readme_accuracy_mm"), 86.9),
    ((2, "deberta-v2-xxlarge", "lora", "stsb", "readme_spearman"), 92.9),
    ((3, "gpt2-medium", "lora", "e2e", "meteor"), 46.8),
    ((3, "gpt2-large", "adapter_l", "e2e", "bleu", "23.00M"), 68.9),
    ((4, "gpt3-175b", "lora", "samsum", "rouge2", "4.7M"), 29.8),
    ((1, "gpt2-medium", "full_ft", "bs1_seq128", "latency_ms"), 19.8),
    ((1, "gpt2-medium", "adapter_h", "bs1_seq128", "overhead_pct"), 30.3),
    ((5, "gpt3-175b", "lora", "wikisql", None, "W_o r=8"), 73.2),
    ((6, "gpt3-175b", "lora", "wikisql", None, "W_q,W_v r=64"), 73.5),
    ((7, "gpt3-175b", "lora", "projection", None, "r=4,wq"), 21.67),
    ((14, "gpt2-large", "lora", "webnlg", "bleu_u"), 48.4),
    ((15, "gpt3-175b", "lora", "wikisql", None, "r_q=r_v=64"), 73.6),
    ((15, "gpt3-175b", "lora_pe", "wikisql", None, "r_q=r_v=64, l_p=8, l_i=4"), 76.2),
    ((18, "gpt2-medium", "lora", "e2e", "meteor", "r=4"), 0.4689),
    ((2, "roberta-base", "adapter_p", "rte"), None),  # the paper has no RoBERTa-base Adpt^P row
    ((3, "gpt2-large", "adapter_h", "e2e", "bleu"), None),
])
def test_paper_value_lookups(args: tuple, expected: float | None) -> None:
    assert paper_value(*args) == expected


def test_paper_cell_formats_as_printed() -> None:
    assert paper_cell(2, "roberta-base", "lora", "rte") == "86.6±.7"
    assert paper_cell(3, "gpt2-medium", "lora", "e2e", "nist") == "8.85±.02"
    assert paper_cell(4, "gpt3-175b", "full_ft", "samsum") == "52.0/28.0/44.5"
    assert paper_cell(1, "gpt2-medium", "adapter_l", "bs32_seq512") == "1482.0±1.0 (+2.2%)"
    assert paper_cell(14, "gpt2-medium", "full_ft", "webnlg", "meteor_u") == ".30"


def test_paper_rows_filters() -> None:
    lora_2 = paper_rows(2, method="lora")
    assert [(r["model"], r.get("variant")) for r in lora_2] == [
        ("roberta-base", None), ("roberta-large", None), ("roberta-large", "dagger"), ("deberta-v2-xxlarge", None)]
    assert {r["table"] for r in paper_rows(model="gpt3-175b")} == {4, 5, 6, 7, 15}
    paper_rows(2)[0]["results"].clear()  # copies: the cached data stays intact
    assert paper_rows(2)[0]["results"]


def test_paper_hparams_paper_and_released_scripts() -> None:
    paper = paper_hparams("roberta-base", "lora", "cola")
    released = paper_hparams("roberta-base", "lora", "cola", source="released_scripts")
    assert (paper["lora_alpha"], paper["batch_size"], paper["lr"]) == (8, 32, 4e-4)
    assert (released["lora_alpha"], released["weight_decay"], released["n_gpus"], released["batch_size"]) == (16, 0.1, 2, 32)
    assert paper_hparams("roberta-base", "lora", "rte", source="released_scripts")["n_gpus"] == 8
    large = paper_hparams("roberta-large", "lora", "stsb", source="released_scripts")
    assert (large["batch_size"], large["lr"], large["epochs"], large["max_seq_len"]) == (4, 3e-4, 10, 128)
    assert paper_hparams("roberta-large", "lora", "cola", source="released_scripts")["lr"] == 3e-4
    deberta = [paper_hparams("deberta-v2-xxlarge", "lora", t, source="released_scripts") for t in GLUE]
    assert all((d["lora_r"], d["lora_alpha"]) == (16, 32) for d in deberta)
    assert [d.get("warmup_steps") for d in deberta] == [1000, 1000, None, 100, 500, 10000, 50, 100]
    assert deberta[2]["warmup_ratio"] == 0.1 and deberta[3]["lr"] == 1.3e-4 and deberta[6]["lr"] == 2.6e-4
    assert paper_hparams("gpt2-medium", "lora", "e2e")["length_penalty"] == 0.9
    assert paper_hparams("gpt2-medium", "lora", "e2e", source="released_scripts")["length_penalty"] == 0.8
    assert paper_hparams("roberta-large", "adapter_p", "mnli", variant="3.0M")["bottleneck"] == 64
    assert paper_hparams("roberta-large", "lora/dagger", "mrpc")["init_from_mnli"] is False
    assert paper_hparams("roberta-large", "lora", "mrpc")["init_from_mnli"] is True


# ---------------------------------------------------------------- bad keys
@pytest.mark.parametrize(("call", "error", "names"), [
    (lambda: paper_value(2, "roberta-xl", "lora", "rte"), KeyError, "roberta-base"),
    (lambda: paper_value(2, "roberta-base", "loRA", "rte"), KeyError, "adapter_d"),
    (lambda: paper_value(2, "roberta-base", "lora", "sts-b"), KeyError, "stsb"),
    (lambda: paper_value(2, "roberta-base", "lora", "e2e"), KeyError, "mnli, sst2"),
    (lambda: paper_value(2, "roberta-base", "lora", "cola", "accuracy"), KeyError, "mcc"),
    (lambda: paper_value(8, "roberta-base", "lora", "rte"), KeyError, "1, 2, 3"),
    (lambda: paper_value(2, "roberta-large", "adapter_p", "rte"), ValueError, "'3.0M', '0.8M'"),
    (lambda: paper_value(2, "roberta-large", "adapter_p", "rte", variant="3M"), KeyError, "'3.0M'"),
    (lambda: paper_value(3, "gpt2-medium", "lora", "e2e"), ValueError, "bleu, nist"),
    (lambda: paper_cell(2, "roberta-base", "adapter_h", "rte"), KeyError, "no row"),
    (lambda: paper_hparams("roberta-base", "lora", "rte", source="scripts"), ValueError, "released_scripts"),
    (lambda: paper_hparams("roberta-large", "adapter_h", "rte"), ValueError, "adapter_h/6.0M"),
    (lambda: paper_hparams("gpt2-large", "lora", "e2e", source="released_scripts"), KeyError, "source='paper'"),
    (lambda: paper_table_frame("two"), KeyError, "paper_hparams"),
])
def test_bad_keys_name_the_choices(call, error: type, names: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert names in str(info.value)


def test_report_takes_the_printed_row_nearest_in_size_where_there_are_several() -> None:
    from types import SimpleNamespace

    from lora_repro.report.table import _paper

    def row(method: str, trainable: int) -> SimpleNamespace:
        return SimpleNamespace(model="minilm-l6", stand_in_for="roberta-base", table=2, method=method, task="mrpc",
                               trainable_params=trainable)

    assert _paper(row("adapter_d", 310_000)) == 88.5  # RoB_base (Adpt^D) 0.3M
    assert _paper(row("adapter_d", 900_000)) == 88.4  # RoB_base (Adpt^D) 0.9M
    assert _paper(row("lora", 300_000)) == 89.7
    assert _paper(row("adapter_h", 78_432)) is None  # the paper has Adpt^H on RoBERTa-large only
