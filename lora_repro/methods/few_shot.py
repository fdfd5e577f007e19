"""Few-shot in-context prompting (Table 8's "Few-Shot" row, GPT-3's protocol): the pretrained causal LM, nothing
trained. Every eval example is appended to the same prompt of ``shots_per_class`` demonstrations per class, drawn
from the training split with the run's seed and shuffled; the prediction is the label whose word gets the highest
next-token logit (the first token of each label word). The task holds the template and the label words
(``lora_repro.tasks.glue``; ``method.template`` and ``method.label_words`` override them), so the same method prompts
SST-2, RTE or MNLI.

The demonstrations are the same for every example, so their keys and values are computed once and each example runs
on top of them (the cache is cropped back after it): the same logits as one forward pass over demonstrations and
example together (``tests/test_few_shot.py``), at the cost of the example's tokens only.
"""
from __future__ import annotations

import random
import time

import numpy as np
import torch
from torch import nn

from lora_repro.errors import UserError
from lora_repro.methods import register_method
from lora_repro.methods.common import cache_keyword, find_cache, freeze


def _validate(cfg: dict) -> None:
    shots = cfg.get("shots_per_class")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise UserError(f"method few_shot: shots_per_class must be an integer >= 0, got {shots!r}")


def prompt_settings(method_cfg: dict, spec) -> tuple[str, list[str], str]:
    """The template, the label words (by label id) and the separator between demonstrations: the method's settings
    where given, else the task's own prompt (``lora_repro.tasks.glue``)."""
    prompt = spec.extra.get("prompt") or {}
    template = method_cfg.get("template") or prompt.get("template")
    words = method_cfg.get("label_words") or prompt.get("label_words")
    if spec.kind != "classification" or not template or not words:
        raise UserError(f"method few_shot needs a classification task with a prompt; task {spec.name!r} has none: "
                        "set method.template and method.label_words (tasks with one: sst2, rte, mnli)")
    if len(words) != spec.num_labels:
        raise UserError(f"method few_shot: {len(words)} label words {list(words)}, task {spec.name} has "
                        f"{spec.num_labels} labels: one word per label id")
    missing = [f for f in spec.text_fields if "{" + f + "}" not in template]
    if missing:
        raise UserError(f"method few_shot: template {template!r} lacks the field(s) {missing} of task {spec.name}")
    return template, list(words), method_cfg.get("separator") or "\n\n"


def demonstrations(train, shots_per_class: int, num_labels: int, seed: int) -> list[int]:
    """Indices into the training split: ``shots_per_class`` per label, drawn with ``seed``, in a shuffled order."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {label: [] for label in range(num_labels)}
    for i, label in enumerate(train["label"]):
        by_label[int(label)].append(i)
    short = {label: len(rows) for label, rows in by_label.items() if len(rows) < shots_per_class}
    if short:
        raise UserError(f"method few_shot: shots_per_class={shots_per_class}, but the training split has only "
                        f"{short} examples of label(s) {sorted(short)}; lower it or use more training examples")
    chosen = [i for label in range(num_labels) for i in rng.sample(by_label[label], shots_per_class)]
    rng.shuffle(chosen)
    return chosen


def label_token_ids(tokenizer, words: list[str]) -> list[int]:
    ids = [tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    if len(set(ids)) < len(ids):
        raise UserError(f"method few_shot: label words {words} share a first token; choose words that start differently")
    return ids


@torch.inference_mode()
def label_logits(model, prefix_ids: torch.Tensor, queries: list[torch.Tensor], word_ids: list[int],
                 progress: bool = True) -> np.ndarray:
    """Next-token logits of the label words after ``prefix + query``, one row per query; the prefix's cache is
    computed once and cropped back to it after every query."""
    from tqdm.auto import tqdm

    model.eval()
    keyword = cache_keyword(model)
    cache = find_cache(model(prefix_ids[None], use_cache=True))
    rows = []
    for query in tqdm(queries, desc="few-shot prompts", disable=not progress):
        logits = model(query[None], use_cache=True, **{keyword: cache}).logits[0, -1]
        rows.append(logits[word_ids].float().cpu().numpy())
        cache.crop(-query.numel())  # negative: drop this many tokens (one meaning in transformers 4.x and 5.x)
    return np.stack(rows)


def evaluate_in_context(cfg: dict, spec, splits: dict, tokenizer, model, run_dir, tracker=None) -> dict:
    """The ``evaluate`` hook: score every eval split by prompting; the outcome has the training loop's shape (one
    curve point at step 0) plus the prompt's record (demonstration indices, token counts)."""
    from lora_repro.tasks.classification import eval_label_counts, primary_key

    template, words, separator = prompt_settings(cfg["method"], spec)
    word_ids = label_token_ids(tokenizer, words)
    train = splits[spec.train_split]
    chosen = demonstrations(train, cfg["method"]["shots_per_class"], spec.num_labels, cfg["seed"])
    fill = lambda row: template.format(**{f: row[f] for f in spec.text_fields})  # noqa: E731
    prefix = "".join(fill(train[i]) + words[int(train[i]["label"])] + separator for i in chosen)
    # the tokenizer's BOS (if it adds one) opens the prompt; examples continue it without special tokens
    prefix_ids = torch.tensor(tokenizer(prefix).input_ids, dtype=torch.long)
    room = getattr(model.config, "max_position_embeddings", None)
    start, metrics, query_tokens = time.time(), {}, {}
    several = len(spec.eval_splits) > 1
    for split in spec.eval_splits:
        queries = [torch.tensor(tokenizer(fill(row), add_special_tokens=False).input_ids, dtype=torch.long)
                   for row in splits[split]]
        longest = max(q.numel() for q in queries) + prefix_ids.numel()
        if room and longest > room:
            raise UserError(f"method few_shot: a prompt of {longest} tokens exceeds {cfg['model']['name']}'s "
                            f"{room} positions; lower method.shots_per_class")
        scores = spec.score(label_logits(model, prefix_ids, queries, word_ids), splits[split]["label"])
        metrics.update({f"{split}_{k}" if several else k: v for k, v in scores.items()})
        query_tokens[split] = int(sum(q.numel() for q in queries))
    point = {"epoch": 0, "step": 0, "metrics": metrics}
    return {"curve": [point], "best": point, "last": point, "primary_metric": primary_key(spec),
            "eval_label_counts": eval_label_counts(spec, splits), "global_steps": 0, "train_loss": [],
            "train_runtime_s": 0.0, "eval_runtime_s": time.time() - start, "resumed_from": None,
            "prompt": {"demonstrations": chosen, "template": template, "label_words": words,
                       "prefix_tokens": int(prefix_ids.numel()), "query_tokens": query_tokens},
            "n_examples": {name: len(ds) for name, ds in splits.items()}}


@register_method("few_shot", model_kind="generation", evaluate=evaluate_in_context, validate=_validate,
                 describe=lambda cfg: f"{cfg.get('shots_per_class')} per class")
def apply_few_shot(model: nn.Module, cfg: dict, family) -> None:
    _validate(cfg)
    freeze(model)  # prompting trains nothing: the causal LM's output layer is body, not head
