"""GLUE loaders on the shared data (row counts from its README) and the paper's metrics against their definitions."""
import math

import numpy as np
import pytest

from lora_repro.tasks import get_task, task_names

ROWS = {("cola", "train"): 8551, ("cola", "validation"): 1043, ("sst2", "train"): 67349,
        ("sst2", "validation"): 872, ("mrpc", "train"): 3668, ("mrpc", "validation"): 408,
        ("stsb", "train"): 5749, ("stsb", "validation"): 1500, ("qnli", "validation"): 5463,
        ("rte", "train"): 2490, ("rte", "validation"): 277}


def test_all_glue_tasks_registered():
    assert {"mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"} <= set(task_names())
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("stsb").kind == "regression" and get_task("cola").primary_metric == "mcc"


@pytest.mark.parametrize("task, split", sorted(ROWS))
def test_row_counts(shared_data, task, split):
    ds = get_task(task).load(split, str(shared_data), "local")
    assert len(ds) == ROWS[task, split]
    spec = get_task(task)
    assert set(spec.text_fields) | {"label"} == set(ds.column_names)
    labels = set(ds["label"])
    if spec.kind == "regression":
        assert min(labels) >= 0 and max(labels) <= 5 and isinstance(ds[0]["label"], float)
    else:
        assert labels == set(range(spec.num_labels))


def test_known_rows(shared_data):
    mrpc = get_task("mrpc").load("train", str(shared_data), "local")
    assert mrpc[0]["sentence1"].startswith("Amrozi accused his brother") and mrpc[0]["label"] == 1
    rte = get_task("rte").load("validation", str(shared_data), "local")
    assert rte[0]["label"] == 1  # not_entailment
    stsb = get_task("stsb").load("validation", str(shared_data), "local")
    assert stsb[0]["label"] == 5.0


def test_missing_split_names_the_setting(shared_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="QNLI/train.tsv"):
        get_task("qnli").load("train", str(shared_data), "local")
    with pytest.raises(FileNotFoundError, match="LORA_REPRO_DATA"):
        get_task("rte").load("train", str(tmp_path), "auto")


def test_no_data_and_no_hub_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LORA_REPRO_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lora_repro import hub

    hub.hub_reachable.cache_clear()
    with pytest.raises(FileNotFoundError, match="data_dir=DIR or \\$LORA_REPRO_DATA"):
        get_task("rte").load("train", None, "auto")
    hub.hub_reachable.cache_clear()


def test_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[y] * 0.8
    p = logits.argmax(-1)
    tp, tn = int(((p == 1) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
    fp, fn = int(((p == 1) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    mrpc = get_task("mrpc").score(logits, y)
    assert mrpc["accuracy"] == pytest.approx(100 * (tp + tn) / 200)
    assert mrpc["f1"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert get_task("cola").score(logits, y)["mcc"] == pytest.approx(100 * mcc)
    scores, gold = rng.normal(size=100), rng.normal(size=100)
    gold = gold + scores
    pearson = np.corrcoef(scores, gold)[0, 1]
    rank = lambda v: np.argsort(np.argsort(v))
    spearman = np.corrcoef(rank(scores), rank(gold))[0, 1]
    stsb = get_task("stsb").score(scores.reshape(-1, 1), gold)
    assert stsb["pearson"] == pytest.approx(100 * pearson) and stsb["spearman"] == pytest.approx(100 * spearman)
