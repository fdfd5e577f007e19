"""Exact parameter accounting for every row of the paper's Tables 2, 3 and 4 (and Table 15).

Each paper model is built from its config on the meta device (no weights, no memory): roberta-base, roberta-large,
deberta-v2-xxlarge (sequence classifiers with a 2-label head, as in Table 2), gpt2-medium, gpt2-large and GPT-3 175B
(causal LMs; GPT-3 as a GPT-2-style config with its dimensions). The row's method is applied with the settings that
reproduce the printed count (or come closest), and three numbers are set side by side: the printed "# Trainable
Parameters", the count of our implementation (trainable parameters outside the task head; full fine-tuning counts
everything), and the Section 5.1 closed formula. A note explains every disagreement and every setting a count needs.

    python -m lora_repro +experiment=param_counts                       -> results/param_counts.md and .csv
    python -m lora_repro.report.param_counts --out results/param_counts --tables 2 3 4
"""
from __future__ import annotations

import argparse
import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

from lora_repro.config import conf_dir, group_config
from lora_repro.methods import get_method
from lora_repro.report.paper import paper_rows

DEFAULT_TABLES = (2, 3, 4, 15)
GPT3_ARCHITECTURE = {"model_type": "gpt2", "n_layer": 96, "n_embd": 12288, "n_head": 96, "vocab_size": 50257,
                     "n_positions": 2048}
CLASSIFIER_TABLES = (2,)  # GLUE: sequence classifiers; the other tables are causal LMs


@dataclass
class Setting:
    """How one printed row is counted: method settings (over the method's yaml) and what to say about it."""
    overrides: dict | None = None  # None: from the row's printed config (or none needed)
    note: str = ""


# Per-row settings (over the method yaml) and notes. Rows without a printed `config` (paper_numbers.yaml) need their
# settings here; they are the paper's (Appendix D) unless the note says why not.
SETTINGS: dict[tuple, Setting] = {
    (2, "roberta-base", "full_ft", None): Setting(
        note="The printed 125.0M is RoBERTa-base's nominal size (prior work); ours: body + 2-label head."),
    (2, "roberta-base", "bitfit", None): Setting(note="Biases of the body; the head also trains and is not counted."),
    (2, "roberta-base", "adapter_d", "0.3M"): Setting(
        {"bottleneck": 8},
        "Prior work (Rücklé et al.); the paper gives no configuration. Robust AdapterDrop keeps adapters in every "
        "block: Houlsby placement at r=8 gives 0.31M (Pfeiffer placement at r=16: 304,320, also 0.3M)."),
    (2, "roberta-base", "adapter_d", "0.9M"): Setting(
        {"bottleneck": 24},
        "As the 0.3M row: Houlsby placement at r=24 (Pfeiffer placement at r=48, i.e. AdapterHub's default reduction "
        "factor 16: 894,528, also 0.9M)."),
    (2, "roberta-base", "lora", None): Setting(
        {"r": 8, "alpha": 8, "targets": ["q", "v"]},
        "Without the classifier head. microsoft/LoRA's README prints 0.8M: its scripts also train the head, and "
        "LoRA + head = 887,042, which truncates (not rounds) to 0.8M."),
    (2, "roberta-large", "full_ft", None): Setting(note="Nominal size (prior work); ours: body + 2-label head."),
    (2, "roberta-large", "lora", None): Setting({"r": 8, "alpha": 16, "targets": ["q", "v"]}),
    (2, "roberta-large", "lora", "dagger"): Setting({"r": 8, "alpha": 16, "targets": ["q", "v"]}),
    (2, "roberta-large", "adapter_p", "3.0M"): Setting({"bottleneck": 64}, "Table 9: bottleneck r=64."),
    (2, "roberta-large", "adapter_p", "0.8M"): Setting({"bottleneck": 16}, "Table 9: bottleneck r=16."),
    (2, "roberta-large", "adapter_h", "6.0M"): Setting({"bottleneck": 64}, "Table 9: bottleneck r=64."),
    (2, "roberta-large", "adapter_h", "0.8M"): Setting({"bottleneck": 8}, "Table 9: bottleneck r=8."),
    (2, "deberta-v2-xxlarge", "full_ft", None): Setting(note="Nominal size 1.5B; ours: body + 2-label head."),
    (2, "deberta-v2-xxlarge", "lora", None): Setting(
        {"r": 16, "alpha": 32, "targets": ["q", "v"]},
        "Needs r=16 (the released scripts' --lora_r 16 --lora_alpha 32); Table 10's r=8 gives 2,359,296 = 2.4M."),
    (3, "gpt2-medium", "full_ft", None): Setting(note="Prior work; ours counts the tied LM head once."),
    (3, "gpt2-medium", "adapter_l", "0.37M"): Setting({"bottleneck": 6}, "Bottleneck r=6 reproduces 0.37M."),
    (3, "gpt2-medium", "adapter_l", "11.09M"): Setting({"bottleneck": 224}, "Bottleneck r=224 reproduces 11.09M."),
    (3, "gpt2-medium", "adapter_h", None): Setting(
        {"bottleneck": 112},
        "The printed count repeats the Adapter^L 11.09M row's; the closest bottleneck is r=112 (r=113: 11.16M)."),
    (3, "gpt2-medium", "ft_top2", None): Setting(
        note="The last two blocks, 2 x (12d^2 + 13d); embeddings and the final LayerNorm stay frozen (its 2,048 "
             "parameters would not change the printed 25.19M)."),
    (3, "gpt2-medium", "prefix_layer", None): Setting(
        {"l_p": 14, "l_i": 0},
        "Prior work. 0.35M is 0.1% of 354.92M, the budget Li & Liang quote; l_p + l_i = 14 is the closest "
        "(15: 0.37M)."),
    (3, "gpt2-medium", "lora", None): Setting(
        {"r": 4, "alpha": 32, "targets": ["q", "v"]},
        "Table 11: r_q=r_v=4. The printed 0.35M is PreLayer's budget (0.1% of the model), not this setting's count."),
    (3, "gpt2-large", "full_ft", None): Setting(),
    (3, "gpt2-large", "adapter_l", "0.88M"): Setting({"bottleneck": 8}, "Bottleneck r=8 reproduces 0.88M."),
    (3, "gpt2-large", "adapter_l", "23.00M"): Setting({"bottleneck": 248}, "Bottleneck r=248 reproduces 23.00M."),
    (3, "gpt2-large", "prefix_layer", None): Setting(
        {"l_p": 17, "l_i": 0},
        "Prior work. 0.77M is 0.1% of 774.03M; l_p + l_i = 17 is the closest (16: 0.74M)."),
    (3, "gpt2-large", "lora", None): Setting(
        {"r": 4, "alpha": 32, "targets": ["q", "v"]},
        "Table 11: r_q=r_v=4. The printed 0.77M is PreLayer's budget (0.1% of the model), not this setting's count."),
    (4, "gpt3-175b", "full_ft", None): Setting(
        note="A GPT-2-style stand-in with GPT-3's dimensions (96 x 12288, 96 heads, vocabulary 50,257, 2,048 "
             "positions, tied output layer); GPT-3's exact layout is not published at this precision."),
    (4, "gpt3-175b", "bitfit", None): Setting(
        note="A GPT-2-style block has 11 d-sized bias vectors; the printed 14.2M equals 12·L·d = 14,155,776."),
    (4, "gpt3-175b", "adapter_h", "7.1M"): Setting({"bottleneck": 1}, "r=1 (Table 15's 7.1M row)."),
    (4, "gpt3-175b", "adapter_h", "40.1M"): Setting({"bottleneck": 8}, "r=8 (Table 15's 40.1M row)."),
    (4, "gpt3-175b", "lora", "4.7M"): Setting(
        {"r": 2, "alpha": 2, "targets": ["v"]},
        "r_v=2 (Table 15's row with the same scores); r_q=r_v=1 gives the same count."),
    (4, "gpt3-175b", "lora", "37.7M"): Setting(
        {"r": 8, "alpha": 8, "targets": ["q", "v"]}, "r_q=r_v=8; r=4 on q, k, v, o gives the same count."),
    (15, "gpt3-175b", "full_ft", None): Setting(note="Printed as 175B; see Table 4's FT row."),
    (15, "gpt3-175b", "lora", "r_q=r_k=r_v=r_o=64"): Setting(
        note="603.8M is twice the r_q=r_v=64 row's printed 301.9M, itself a truncation of 301.99M."),
}
PRELAYER_EXCESS = ("Every PreLayer count printed for GPT-3 exceeds L·d·(l_p+l_i) by 0.4M to 1.6M (Table 15: 5.1 vs "
                   "4.72, 10.1 vs 9.44, 20.2 vs 18.87, 44.1 vs 42.47, 76.1 vs 75.50), not in proportion to the tokens; "
                   "the paper does not say what else it counted.")
METHOD_NOTES = {(4, "prefix_layer"): PRELAYER_EXCESS,
                (15, "prefix_layer"): "Above the formula like every GPT-3 PreLayer count (see Table 4's PreLayer row).",
                (15, "lora_pl"): "Its PreLayer part is above the formula like the PreLayer rows."}


# ------------------------------------------------------------------------------------------------ configs and models
def architecture(model: str) -> dict:
    if model == "gpt3-175b":
        return dict(GPT3_ARCHITECTURE)
    path = conf_dir() / "model" / f"{model}.yaml"
    arch = yaml.safe_load(path.read_text()).get("architecture")
    if not arch:
        raise ValueError(f"{path} has no architecture: cannot build {model} without weights")
    return dict(arch)


def build_on_meta(model: str, classifier: bool):
    """The paper model from its config alone, parameters on the meta device (shapes only); a fresh copy per call."""
    return copy.deepcopy(_built_on_meta(model, classifier))


@functools.cache
def _built_on_meta(model: str, classifier: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    arch = architecture(model)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    if classifier:
        config.num_labels = 2
    cls = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    with torch.device("meta"):
        return cls.from_config(config)


def method_config(name: str, overrides: dict | None = None) -> dict:
    """conf/method/NAME.yaml as Hydra composes it, ``overrides`` merged."""
    return group_config("method", name, overrides)


def _from_config(row: dict, cfg: dict) -> dict:
    """Method settings from a row's printed configuration (Tables 4 and 15: l_p/l_i, r_q/r_k/r_v/r_o, r), read by
    the method itself (lora_repro.methods.Method.from_printed)."""
    try:
        settings = get_method(row["method"]).from_printed(row.get("config") or {}, cfg)
    except ValueError as error:
        raise ValueError(f"table {row['table']} row {row['label']!r}: {error}") from None
    if settings is None:
        raise KeyError(f"no parameter-count setting for table {row['table']} row {row['label']!r} ({row['model']}, "
                       f"{row['method']}, variant {row.get('variant')!r}): add one to SETTINGS in {__file__}")
    return settings


def row_setting(row: dict) -> Setting:
    """The settings for one printed row: SETTINGS' overrides, else the row's own ``config``; notes from both."""
    key = (row["table"], row["model"], row["method"], row.get("variant"))
    setting = SETTINGS.get(key, Setting())
    overrides = (setting.overrides if setting.overrides is not None else
                 _from_config(row, method_config(row["method"])))
    note = " ".join(n for n in (setting.note, METHOD_NOTES.get((row["table"], row["method"]), "")) if n)
    return Setting(overrides, note)


# ------------------------------------------------------------------------------------------------ formulas (§5.1)
def formula(method: str, cfg: dict, d: int, n_layers: int) -> tuple[int | None, str]:
    """The closed-form count of a method setting and the expression it came from (None: no §5.1 formula): each
    method module states its own (lora_repro.methods.Method.formula)."""
    return get_method(method).formula(cfg, d, n_layers)


# ------------------------------------------------------------------------------------------------ printed values
def printed_unit(printed: str) -> tuple[float, int]:
    """'0.35M' -> (1e6, 2); '175,255.8M' -> (1e6, 1); '175B' -> (1e9, 0): the unit and decimals printed."""
    text = printed.replace(",", "").replace(" ", "")
    found = re.fullmatch(r"(\d+(?:\.(\d+))?)([MB])", text)
    if not found:
        raise ValueError(f"unreadable printed parameter count {printed!r}")
    return (1e6 if found.group(3) == "M" else 1e9), len(found.group(2) or "")


def prints_as(count: int | None, printed: str) -> bool:
    """Whether ``count`` rounds to the printed value at the printed precision."""
    if count is None:
        return False
    unit, decimals = printed_unit(printed)
    value = float(printed.replace(",", "").replace(" ", "")[:-1])
    return round(count / unit, decimals) == round(value, decimals)


def truncates_to(count: int | None, printed: str) -> bool:
    """Whether ``count`` cut (not rounded) at the printed precision gives the printed value."""
    if count is None:
        return False
    unit, decimals = printed_unit(printed)
    value = float(printed.replace(",", "").replace(" ", "")[:-1])
    return int(count / unit * 10 ** decimals) == round(value * 10 ** decimals)


def fmt(count: int | None) -> str:
    return "—" if count is None else f"{count:,} ({count / 1e6:,.2f}M)"


def settings_that_print(method: str, cfg: dict, printed: str, d: int, n_layers: int) -> list[int]:
    """The integer values of the row's size knob (bottleneck, rank or number of special tokens) whose formula
    count prints as ``printed``."""
    knob = get_method(method).size_knob
    if knob is None:
        return []
    return [v for v in range(1, 4097) if prints_as(formula(method, knob[1](cfg, v), d, n_layers)[0], printed)]


# ------------------------------------------------------------------------------------------------ counting
def count_row(row: dict) -> dict:
    """Build the row's model on meta, apply its method setting, count; compare with print and formula."""
    from lora_repro.methods import apply_method
    from lora_repro.methods.common import parameter_counts

    setting = row_setting(row)
    cfg = method_config(row["method"], setting.overrides)
    classifier = row["table"] in CLASSIFIER_TABLES
    model = build_on_meta(row["model"], classifier)
    d, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    apply_method(model, cfg)
    counts = parameter_counts(model)
    # a method that trains the whole model is counted whole (the paper prints the model's size for it)
    ours = counts["trainable"] if counts["trainable"] == counts["total"] else counts["trainable_without_head"]
    value, expr = formula(row["method"], cfg, d, n_layers)
    printed = row.get("trainable_params")
    notes = [setting.note] if setting.note else []
    if value is not None and value != ours:
        notes.append(f"Our implementation counts {ours - value:+,} against the formula.")
    unit, decimals = printed_unit(printed)
    reference = value if value is not None else ours  # what the print is judged against
    if match(reference, printed) == "truncates":
        notes.append(f"The printed {printed} is {reference / unit:,.{decimals + 2}f} cut, not rounded, to "
                     f"{decimals} decimal{'' if decimals == 1 else 's'}.")
    elif match(reference, printed) == "differs" and value is not None:
        fits = settings_that_print(row["method"], cfg, printed, d, n_layers)
        notes.append(f"The formula gives {value / 1e6:,.2f}M, not the printed {printed}"
                     + (f"; {get_method(row['method']).size_knob[0]} {_ranges(fits)} would print it." if fits else
                        "; no integer setting of this method prints it."))
    elif match(reference, printed) == "differs":
        notes.append(f"Ours prints as {ours / unit:,.{decimals}f}{'M' if unit == 1e6 else 'B'}, not {printed}.")
    return {"table": row["table"], "row": _row_label(row), "model": row["model"], "method": row["method"],
            "variant": row.get("variant"), "setting": get_method(row["method"]).describe(cfg), "printed": printed,
            "ours": ours, "head": counts["trainable_head"] if classifier else None, "formula": value,
            "formula_expr": expr, "ours_match": match(ours, printed), "formula_match": match(value, printed),
            "ours_prints_as_printed": prints_as(ours, printed), "formula_prints_as_printed": prints_as(value, printed),
            "note": " ".join(notes)}


def match(count: int | None, printed: str) -> str | None:
    """rounds: the count rounds to the print; truncates: only cutting its digits gives it; differs; None: no count."""
    if count is None:
        return None
    return "rounds" if prints_as(count, printed) else "truncates" if truncates_to(count, printed) else "differs"


def _row_label(row: dict) -> str:
    group, label = row.get("group"), row["label"]
    label = (f"{group}: {label}" if label != "-" else group) if group else label
    variant = row.get("variant")
    return label if not variant or variant in label else f"{label} [{variant}]"


def _ranges(values: list[int]) -> str:
    runs, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}–{prev}")
            start = cur
    return ", ".join(runs)


def count_tables(tables: tuple[int, ...] = DEFAULT_TABLES) -> pd.DataFrame:
    rows = [count_row(row) for table in tables for row in paper_rows(table) if row.get("trainable_params")]
    return pd.DataFrame(rows).astype({"head": "Int64", "formula": "Int64"})


# ------------------------------------------------------------------------------------------------ report
HEADER = """# Trainable parameters: printed vs implementation vs formula

Every row of the LoRA paper's (arXiv 2106.09685 v2) Tables {tables} that prints a "# Trainable Parameters".
*printed*: the paper's number. *ours*: the trainable parameters of this suite's implementation of the row's method,
on the paper's model built from its config on the meta device (`python -m lora_repro +experiment=param_counts`);
the task head is left out (the paper's convention; Table 2's 2-label classifier head trains too and is listed
as *head*), except for full fine-tuning, which counts everything. *formula*: Section 5.1's closed form
(LoRA 2·L_LoRA·d·r, adapters L_Adpt·(2dr + r + d) + 2·L_LN·d, PreEmbed d·(l_p+l_i), PreLayer L·d·(l_p+l_i));
— where the paper has none. ✓ = rounds to the paper's number at its precision; ✓ (cut) = only truncating
its digits gives the paper's number (several LoRA rows of Table 15 are printed that way).
GPT-3 175B is a GPT-2-style configuration with GPT-3's dimensions (96 layers, d = 12,288, 96 heads, vocabulary
50,257, 2,048 positions), built on the meta device only.
"""


MARKS = {"rounds": " ✓", "truncates": " ✓ (cut)"}


def to_markdown(frame: pd.DataFrame) -> str:
    parts = [HEADER.format(tables=", ".join(str(t) for t in dict.fromkeys(frame.table)))]
    for table, group in frame.groupby("table", sort=False):
        parts.append(f"\n## Table {table}\n")
        shown = pd.DataFrame({
            "row": group.row,
            "setting": group.setting,
            "printed": group.printed,
            "ours": [fmt(v) + MARKS.get(m, "") for v, m in zip(group.ours, group.ours_match)],
            "formula": [("—" if v is None or pd.isna(v) else fmt(int(v)) + MARKS.get(m, "")) for v, m in
                        zip(group.formula, group.formula_match)],
            "head": ["" if h is None or pd.isna(h) else f"{int(h):,}" for h in group["head"]],
            "note": group.note,
        })
        if shown["head"].eq("").all():
            shown = shown.drop(columns="head")
        parts.append(shown.to_markdown(index=False) + "\n")
    return "\n".join(parts)


def write_param_counts(out: str | Path, tables: tuple[int, ...] = DEFAULT_TABLES) -> pd.DataFrame:
    frame = count_tables(tuple(tables))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(to_markdown(frame))
    frame.to_csv(out.with_suffix(".csv"), index=False)
    return frame


def param_counts_job(cfg: dict) -> dict:
    """The ``job: param_counts`` entry of ``python -m lora_repro`` (conf/experiment/param_counts.yaml)."""
    settings = cfg.get("param_counts") or {}
    out = settings.get("out", "results/param_counts")
    frame = write_param_counts(out, tuple(settings.get("tables", DEFAULT_TABLES)))
    print(f"{len(frame)} rows -> {Path(out).with_suffix('.md')} and .csv")
    return {"status": "complete", "rows": len(frame), "out": str(out)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora_repro.report.param_counts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/param_counts", help="output path without suffix")
    parser.add_argument("--tables", type=int, nargs="+", default=list(DEFAULT_TABLES))
    args = parser.parse_args(argv)
    frame = write_param_counts(args.out, tuple(args.tables))
    print(to_markdown(frame))


if __name__ == "__main__":
    main()
