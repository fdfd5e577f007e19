"""What classification and regression tasks (GLUE) give the training loop: tokenised splits, a padding collator,
the task's metrics at every evaluation. The Trainer's own evaluation is the final one."""
from __future__ import annotations

import hashlib
from collections import Counter

from lora_repro.training import TrainingPlan


def tokenize(spec, splits: dict, tokenizer, max_len: int) -> dict:
    """Tokenise once (padding happens per batch in the collator)."""
    def encode(batch):
        return tokenizer(*[batch[f] for f in spec.text_fields], truncation=True, max_length=max_len)

    # An explicit fingerprint: letting datasets hash the closure (tokenizer included) with dill costs minutes.
    tag = hashlib.sha256(f"{tokenizer.name_or_path}|{len(tokenizer)}|{max_len}".encode()).hexdigest()[:16]
    return {name: ds.map(encode, batched=True, remove_columns=list(spec.text_fields),
                         new_fingerprint=f"{ds._fingerprint}-{tag}").rename_column("label", "labels")
            for name, ds in splits.items()}


def primary_key(spec) -> str:
    """The curve's key of the paper's metric: MNLI's two dev sets log as matched_accuracy, mismatched_accuracy."""
    return f"{spec.eval_splits[0]}_{spec.primary_metric}" if len(spec.eval_splits) > 1 else spec.primary_metric


def eval_label_counts(spec, splits: dict) -> dict:
    """The eval labels' counts: what a constant prediction would score, for the report's baseline."""
    if spec.kind != "classification":
        return {}
    return {s: dict(Counter(str(label) for label in splits[s]["label"])) for s in spec.eval_splits}


def training_plan(cfg: dict, spec, splits: dict, tokenizer, model, run_dir) -> TrainingPlan:
    from transformers import DataCollatorWithPadding

    encoded = tokenize(spec, splits, tokenizer, cfg["trainer"]["max_seq_len"])
    evals = {s: encoded[s] for s in spec.eval_splits}
    return TrainingPlan(
        train=encoded[spec.train_split], eval_dataset=evals if len(evals) > 1 else evals[spec.eval_splits[0]],
        collator=DataCollatorWithPadding(tokenizer), primary_metric=primary_key(spec),
        compute_metrics=lambda p: spec.score(p.predictions, p.label_ids),
        # The Trainer multiplies the loss by the number of processes, expecting the model to divide by the global
        # token count; classification heads take a plain mean, so under DDP the loss (and gradient) would double.
        arguments={"average_tokens_across_devices": False},
        details={"eval_label_counts": eval_label_counts(spec, splits)},
        n_examples={k: len(v) for k, v in encoded.items()})
