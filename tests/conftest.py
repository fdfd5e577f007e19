import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    value = os.environ.get("LORA_REPRO_DATA")
    return Path(value) if value and Path(value).is_dir() else None


# $LORA_REPRO_DATA naming a folder that is not there (a checkout without ../shared) would make every smoke run fail
# on it (the CLI rightly refuses a missing data folder); unset, smoke runs use synthetic rows and data tests skip
MISSING_DATA = os.environ.get("LORA_REPRO_DATA") if os.environ.get("LORA_REPRO_DATA") and data_dir() is None else None
if MISSING_DATA:
    del os.environ["LORA_REPRO_DATA"]


def pytest_report_header(config):
    if MISSING_DATA:
        return f"real data: $LORA_REPRO_DATA={MISSING_DATA} does not exist; tests that need it skip"
    return f"real data: {data_dir() or 'not set ($LORA_REPRO_DATA); tests that need it skip'}"


@pytest.fixture
def shared_data() -> Path:
    path = data_dir()
    if path is None:
        pytest.skip("real data not available: set LORA_REPRO_DATA to the shared data folder (../shared/data)")
    return path


@pytest.fixture
def tiny_bert():
    """A 2-layer BERT-family classifier with random weights (same module names as MiniLM / BERT)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return {"input_ids": torch.randint(5, 100, (3, 12)), "attention_mask": torch.ones(3, 12, dtype=torch.long)}
