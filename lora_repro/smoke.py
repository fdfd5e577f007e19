"""Smoke mode (``smoke=true``): the whole pipeline of any experiment in seconds on a CPU, offline.

The model keeps its family (so the same module names and methods apply) but shrinks to two tiny layers with random
weights, and a word-level tokenizer is trained on the job's own examples, so no weights or tokenizer files are
needed. Data are the task's real files when present, else synthetic rows of the task's schema (recorded as such).
"""
from __future__ import annotations

import random

SMOKE_TRAIN, SMOKE_EVAL = 32, 16
SMOKE_MAX_EPOCHS = 2  # a paper recipe's 30 epochs would make a table's smoke sweep take minutes
_TINY = {  # config attribute -> tiny value, set where the config has the attribute
    "num_hidden_layers": 2, "n_layer": 2, "hidden_size": 32, "n_embd": 32, "num_attention_heads": 2, "n_head": 2,
    "intermediate_size": 64, "n_inner": 64, "num_key_value_heads": 1, "head_dim": 16, "pooler_hidden_size": 32,
    "max_position_embeddings": 256, "n_positions": 256, "position_buckets": 16,
}
_WORDS = "the a movie film good bad great awful man woman dog cat runs sees is not very quite big small".split()


def limit_schedule(cfg: dict) -> dict:
    """At most SMOKE_MAX_EPOCHS epochs (each a couple of steps on SMOKE_TRAIN examples), and fp16 (a GPU recipe,
    e.g. DeBERTa's released scripts) as fp32 on a machine without a GPU; recorded in the config."""
    import torch

    trainer = cfg["trainer"]
    if isinstance(trainer.get("epochs"), (int, float)) and trainer["epochs"] > SMOKE_MAX_EPOCHS:
        trainer["epochs"] = SMOKE_MAX_EPOCHS
    if trainer.get("precision") == "fp16" and not torch.cuda.is_available():
        trainer["precision"] = "fp32"
    return cfg


def shrink_config(config, vocab_size: int, special_ids: dict[str, int]):
    for key, value in _TINY.items():
        if hasattr(config, key) and getattr(config, key) is not None:
            setattr(config, key, value)
    config.vocab_size = vocab_size
    for key, value in special_ids.items():
        setattr(config, key, value)
    return config


def train_tokenizer(texts: list[str], decoder: bool):
    """A word-level tokenizer learned from ``texts``; BERT-style specials for encoders, bos/eos for decoders."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if not decoder else ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    if decoder:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                       bos_token="<s>", eos_token="</s>")
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.model_max_length = 128
    return fast


def special_token_ids(tokenizer) -> dict[str, int]:
    ids = {"pad_token_id": tokenizer.pad_token_id}
    if tokenizer.bos_token_id is not None:
        ids.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return ids


def synthetic_rows(spec, n: int, seed: int) -> dict[str, list]:
    """Rows with the task's fields and random labels: enough to exercise a pipeline, nothing to learn from."""
    rng = random.Random(seed)
    rows = {f: [" ".join(rng.choices(_WORDS, k=rng.randint(4, 12))) for _ in range(n)] for f in spec.text_fields}
    if spec.kind == "regression":
        rows["label"] = [round(rng.uniform(0, 5), 3) for _ in range(n)]
    elif spec.kind == "classification":
        rows["label"] = [rng.randrange(spec.num_labels) for _ in range(n)]
    return rows
