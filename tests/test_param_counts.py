"""Parameter accounting: Section 5.1's formulas, our implementation's counts on the paper's models built on the meta
device, and the comparison with every printed "# Trainable Parameters" (lora_repro.report.param_counts)."""
from __future__ import annotations

import pandas as pd
import pytest

from lora_repro.methods import get_method
from lora_repro.report import param_counts as pc
from lora_repro.report.paper import paper_rows


def count(method: str, d: int, n_layers: int, **cfg) -> int:
    return get_method(method).formula(cfg, d, n_layers)[0]


def test_formulas_reproduce_the_papers_own_cross_checks():
    qv = ["q", "v"]
    assert count("lora", 768, 12, r=8, targets=qv) == 294_912  # RoBERTa-base, r=8 on q, v: 0.3M
    assert count("lora", 1536, 48, r=8, targets=qv) == 2_359_296  # DeBERTa XXL at Table 10's r=8: 2.4M, not 4.7M
    assert count("lora", 1536, 48, r=16, targets=qv) == 4_718_592  # ... r=16 gives the printed 4.7M
    assert count("lora", 1024, 24, r=4, targets=qv) == 393_216  # GPT-2 M: 0.39M against the printed 0.35M
    assert count("lora", 12288, 96, r=2, targets=["v"]) == 4_718_592  # GPT-3 r_v=2
    assert count("rslora", 12288, 96, r=2, targets=["v"]) == 4_718_592  # the same A and B, another scaling
    assert count("dora", 768, 12, r=8, targets=qv) == 294_912 + 24 * 768  # + one magnitude per output
    assert count("adapter_h", 12288, 96, bottleneck=1) == 7_078_080  # GPT-3 Adapter^H r=1: 7.1M
    assert count("adapter_l", 1024, 24, bottleneck=6) == 368_784  # GPT-2 M Adapter^L with its LayerNorms: 0.37M
    assert count("prefix_embed", 12288, 96, l_p=256, l_i=8) == 3_244_032  # GPT-3 PreEmbed: 3.2M
    assert count("prefix_layer", 12288, 96, l_p=8, l_i=8) == 18_874_368  # GPT-3 PreLayer: 18.9M, printed 20.2M
    parts = [{"name": "lora", "r": 8, "targets": qv}, {"name": "prefix_embed", "l_p": 8, "l_i": 4}]
    assert count("lora_pe", 12288, 96, methods=parts) == 37_748_736 + 147_456  # Appendix E: the parts' sum
    assert count("full_ft", 768, 12) is None  # no closed form: counted from the model


@pytest.mark.parametrize("printed, count, expected", [
    ("0.3M", 294_912, True), ("0.35M", 393_216, False), ("175,255.8M", 175_255_800_000, True),
    ("175B", 174_604_259_328, True), ("0.4 M", 436_000, True), ("0.4 M", 491_520, False), ("3.0M", 3_171_840, False),
])
def test_printed_precision(printed, count, expected):
    assert pc.prints_as(count, printed) is expected
    with pytest.raises(ValueError, match="unreadable"):
        pc.printed_unit("about 3M")


def test_method_config_resolves_compositions_like_hydra():
    cfg = pc.method_config("lora_pl", {"lora": {"r": 32}})
    assert [m["name"] for m in cfg["methods"]] == ["lora", "prefix_layer"]
    assert cfg["methods"][0]["r"] == 32 and cfg["methods"][1]["l_p"] == 8


@pytest.fixture(scope="module")
def table2() -> pd.DataFrame:
    return pc.count_tables((2,))


def test_every_printed_row_of_table_2_is_counted(table2):
    printed = [r for r in paper_rows(2) if r.get("trainable_params")]
    assert len(table2) == len(printed)
    with_formula = table2[table2.formula.notna()]
    assert (with_formula.formula == with_formula.ours).all()  # implementation == Section 5.1


def row(frame: pd.DataFrame, model: str, method: str, variant=None) -> pd.Series:
    match = frame[(frame.model == model) & (frame.method == method)]
    if variant is not None:
        match = match[match.variant == variant]
    assert len(match) == 1
    return match.iloc[0]


def test_table_2_counts_and_notes(table2):
    lora = row(table2, "roberta-base", "lora")
    assert lora.ours == 294_912 and lora.ours_prints_as_printed and lora["head"] == 592_130
    deberta = row(table2, "deberta-v2-xxlarge", "lora")
    assert deberta.ours == 4_718_592 and "r=16" in deberta.note and "2,359,296" in deberta.note
    adapter_p = row(table2, "roberta-large", "adapter_p", "3.0M")
    assert adapter_p.ours == 3_171_840 and not adapter_p.formula_prints_as_printed
    assert "60–61 would print it" in adapter_p.note
    assert row(table2, "roberta-large", "adapter_h", "0.8M").ours == 835_968
    assert row(table2, "roberta-base", "adapter_d", "0.9M").ours_prints_as_printed
    assert row(table2, "roberta-base", "bitfit").ours == 102_144


def test_gpt2_lora_rows_disagree_with_their_printed_counts():
    rows = [r for r in paper_rows(3, method="lora")]
    counted = {r["model"]: pc.count_row(r) for r in rows}
    assert counted["gpt2-medium"]["ours"] == 393_216 and counted["gpt2-large"]["ours"] == 737_280
    for result in counted.values():
        assert not result["ours_prints_as_printed"] and "PreLayer's budget" in result["note"]


def test_param_counts_job_writes_markdown_and_csv(tmp_path):
    from lora_repro.config import compose
    from lora_repro.run import run

    out = tmp_path / "param_counts"
    cfg = compose(["+experiment=param_counts", "param_counts.tables=[4]", f"param_counts.out={out}"])
    result = run(cfg)  # the experiment names its job: no training
    assert result["status"] == "complete" and result["rows"] == 8
    text = out.with_suffix(".md").read_text()
    assert "## Table 4" in text and "37,748,736" in text and "18,874,368" in text
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert set(frame.method) == {"full_ft", "bitfit", "prefix_embed", "prefix_layer", "adapter_h", "lora"}
