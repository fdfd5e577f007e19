"""Training and evaluation for generation tasks (E2E, WebNLG, DART, SAMSum, WikiSQL, MNLI-m as text).

Input format (as microsoft/LoRA's ``gpt2_encode.py --add_bos --add_eos``): the context's tokens, a separator
token (the tokenizer's BOS; GPT-2: ``<|endoftext|>``), then ``" " + target`` and EOS. Labels are -100 on the context,
the separator and padding, so only the target tokens (and its EOS) contribute to the loss. Training batches are
right-padded; decoding batches are left-padded so every prompt ends where generation starts.

Decoding is beam search through ``model.generate`` with the task's ``task.generation`` settings (Table 11 for
E2E/WebNLG/DART: beam 10, length penalty 0.9 / 0.8 / 0.8, no-repeat n-gram 4, 64 new tokens). Two styles; the
paper experiments (``+experiment=table3_gpt2``, ``table13_webnlg``, ``table14_dart``) decode with ``loralib``, since
the paper's numbers come from ``gpt2_beam.py``; the task yamls, and so single runs and the SmolLM2 stand-in
experiments (whose committed results were decoded that way), keep ``hf``; ``task.generation.style=...`` switches:

* ``hf`` (the task yamls' default): transformers' beam search. In transformers 5 a finished hypothesis scores
  ``sum(log p) / L ** length_penalty`` with L the number of *generated* tokens including EOS (prompt excluded;
  older 4.x releases divided by the whole sequence, prompt included; tests/test_generation.py checks the formula).
  Search stops early (``early_stopping=False``) once no running beam, at its current length, can beat the worst of
  the ``num_beams`` finished ones; the no-repeat n-gram rule looks at prompt + output, so an output cannot repeat a
  4-gram of its own context.
* ``loralib``: what microsoft/LoRA's ``gpt2_beam.py`` did. Its normalisation is the same ``score / len ** lp`` with
  len = generated tokens including EOS, but it searches for all ``max_new_tokens`` steps (here
  ``early_stopping="never"``) and bans repeated n-grams within the output only (a logits processor on the generated
  part). Remaining difference: loralib lets an EOS candidate take one of the ``num_beams`` slots of that step, HF
  keeps ``num_beams`` running beams beside the finished ones; loralib keeps only the single best finished
  hypothesis, which is also what is returned here.

Outputs go to ``<run_dir>/generations/``: ``{split}.hyp.txt`` (one output per line), ``{split}.ref.txt`` (E2E
format: an input's references on consecutive lines, inputs separated by a blank line; one per line when every input
has one), ``{split}.jsonl`` (context, hypothesis, references) and ``{split}.metrics.json``, so
``python -m lora_repro.score TASK {split}.hyp.txt {split}.ref.txt`` rescores them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from lora_repro.distributed import is_main_process
from lora_repro.errors import UserError
from lora_repro.training import TrainingPlan

log = logging.getLogger("lora_repro")
STYLES = ("hf", "loralib")
IGNORE_INDEX = -100
GENERATIONS_DIR = "generations"


@dataclass(frozen=True)
class DecodingSettings:
    """``task.generation`` in the task's yaml."""

    num_beams: int = 10
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 64
    batch_size: int = 8
    style: str = "hf"  # hf | loralib (see the module docstring)
    merge_weights: bool = True  # fold each module's update into its weight while decoding (merged_while_decoding)

    @classmethod
    def from_cfg(cls, cfg: dict | None) -> "DecodingSettings":
        cfg = dict(cfg or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise UserError(f"unknown task.generation setting(s) {unknown}; valid: {', '.join(valid)}")
        settings = cls(**cfg)
        if settings.style not in STYLES:
            raise UserError(f"task.generation.style={settings.style!r}; choices: {', '.join(STYLES)}")
        if not isinstance(settings.merge_weights, bool):
            raise UserError(f"task.generation.merge_weights must be true or false, got {settings.merge_weights!r}")
        for name in ("num_beams", "max_new_tokens", "batch_size"):
            if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1:
                raise UserError(f"task.generation.{name} must be a positive integer, got {getattr(settings, name)!r}")
        if not isinstance(settings.no_repeat_ngram_size, int) or settings.no_repeat_ngram_size < 0:
            raise UserError(f"task.generation.no_repeat_ngram_size must be >= 0 (0: off), "
                             f"got {settings.no_repeat_ngram_size!r}")
        return settings


# ---------------------------------------------------------------- tokens and encoding
@dataclass(frozen=True)
class SpecialTokens:
    separator: int  # between context and target: the tokenizer's BOS (GPT-2: <|endoftext|>, as loralib)
    eos: int  # ends the target; decoding stops on it
    pad: int


def special_tokens(tokenizer) -> SpecialTokens:
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS token: generation tasks "
                         "end every target with EOS; give the model folder's tokenizer an eos_token")
    separator = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return SpecialTokens(separator, tokenizer.eos_token_id, pad)


def configure_special_tokens(tokenizer, model) -> SpecialTokens:
    """Make tokenizer, model config and generation config agree (GPT-2 has no pad token: pad with EOS; labels and
    attention masks, not the pad id, decide what counts)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokens = special_tokens(tokenizer)
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = tokens.eos, tokens.pad
    return tokens


def _token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def encode_pairs(tokenizer, contexts: Sequence[str], targets: Sequence[str], max_len: int) -> dict[str, list]:
    """input_ids = context + separator + " " target + EOS; labels = -100 except on the target and its EOS.

    Too long: the context loses tokens from its start (keeping at least half of max_len when the target is long),
    then the target is cut at the end.
    """
    tokens = special_tokens(tokenizer)
    input_ids, labels, truncated = [], [], 0
    for context, target in zip(_token_ids(tokenizer, contexts), _token_ids(tokenizer, [" " + t for t in targets])):
        context, target = context + [tokens.separator], target + [tokens.eos]
        if len(context) + len(target) > max_len:
            truncated += 1
            context = context[-max(max_len - len(target), max_len // 2):]
            target = target[:max_len - len(context)]
        input_ids.append(context + target)
        labels.append([IGNORE_INDEX] * len(context) + target)
    if truncated:
        log.warning("%d of %d examples were longer than max_seq_len=%d and were truncated", truncated, len(labels),
                    max_len)
    return {"input_ids": input_ids, "labels": labels}


def references_of(dataset) -> list[list[str]]:
    if "references" in dataset.column_names:
        return [list(r) for r in dataset["references"]]
    return [[t] for t in dataset["target"]]  # smoke mode's synthetic rows


def training_dataset(dataset, tokenizer, max_len: int, every_reference: bool = False):
    """Tokenised rows for the Trainer; ``every_reference`` (evaluation loss) gives one row per reference."""
    import datasets

    contexts, targets = list(dataset["context"]), list(dataset["target"])
    if every_reference:
        pairs = [(c, r) for c, refs in zip(contexts, references_of(dataset)) for r in refs]
        contexts, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    return datasets.Dataset.from_dict(encode_pairs(tokenizer, contexts, targets, max_len))


@dataclass
class CausalLMCollator:
    """Right-pads input_ids (pad id), labels (-100) and builds the attention mask."""

    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.as_tensor(f["input_ids"])
            labels[row, :n] = torch.as_tensor(f["labels"])
            attention[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


# ---------------------------------------------------------------- decoding
class GeneratedNoRepeatNGram:
    """loralib's no-repeat rule: an n-gram may not occur twice within the *generated* tokens (transformers'
    NoRepeatNGramLogitsProcessor also counts the prompt's n-grams)."""

    def __init__(self, ngram_size: int, prompt_len: int):
        from transformers import NoRepeatNGramLogitsProcessor

        self.inner = NoRepeatNGramLogitsProcessor(ngram_size)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.inner(input_ids[:, self.prompt_len:], scores)


def generate_kwargs(settings: DecodingSettings, tokens: SpecialTokens, prompt_len: int) -> dict:
    from transformers import LogitsProcessorList

    kwargs = {"do_sample": False, "num_beams": settings.num_beams, "max_new_tokens": settings.max_new_tokens,
              "eos_token_id": tokens.eos, "pad_token_id": tokens.pad, "num_return_sequences": 1}
    if settings.num_beams > 1:
        kwargs["length_penalty"] = settings.length_penalty
        kwargs["early_stopping"] = "never" if settings.style == "loralib" else False
    if settings.style == "loralib" and settings.no_repeat_ngram_size:
        kwargs["logits_processor"] = LogitsProcessorList([GeneratedNoRepeatNGram(settings.no_repeat_ngram_size,
                                                                                 prompt_len)])
    else:
        kwargs["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
    return kwargs


def prompt_ids(tokenizer, contexts: Sequence[str], max_prompt_len: int) -> list[list[int]]:
    """context + separator, cut from the start to max_prompt_len tokens."""
    separator = special_tokens(tokenizer).separator
    return [(ids + [separator])[-max_prompt_len:] for ids in _token_ids(tokenizer, contexts)]


def clean_output(tokenizer, ids: Sequence[int], eos: int) -> str:
    """Text up to the first EOS, special tokens dropped, whitespace (newlines too) collapsed: one line per output."""
    ids = list(ids)
    if eos in ids:
        ids = ids[:ids.index(eos)]
    return " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())


@contextlib.contextmanager
def merged_while_decoding(model, enabled: bool = True):
    """Modules that can fold their update into the weight they wrap (a ``merge``/``unmerge`` pair and a ``merged``
    flag: LoRA's W0 + (α/r)·BA, DoRA's) are merged for the duration: the same function with one matmul per layer
    instead of three, the paper's "no additional inference latency". Each merged module's tensors are restored from
    a copy afterwards instead of by unmerging: W0 + ΔW - ΔW is not W0 bit for bit in floating point (in bf16 not even
    close), and a run that decodes at every epoch would otherwise train on a drifting W0."""
    layers = [m for m in model.modules() if enabled and getattr(m, "merged", None) is False
              and callable(getattr(m, "merge", None)) and callable(getattr(m, "unmerge", None))]
    saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in layers]
    try:
        for module in layers:
            module.merge()
        yield len(layers)
    finally:
        for module, state in zip(layers, saved):
            module.load_state_dict(state)
            module.merged = False


@torch.no_grad()
def generate_texts(model, tokenizer, contexts: Sequence[str], settings: DecodingSettings,
                   max_prompt_len: int = 512, progress: bool = True) -> list[str]:
    """Batched, left-padded beam search; outputs in the order of ``contexts`` (a progress bar per batch)."""
    tokens = special_tokens(tokenizer)
    prompts = prompt_ids(tokenizer, contexts, max_prompt_len)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths share a batch
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # frozen weights stored in half precision (the fast path) need autocast, as in training: fp32 activations
    # would meet bf16 weights in one matmul
    half = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
    autocast = (torch.autocast(device.type, dtype=half.pop()) if len(half) == 1 else contextlib.nullcontext())
    starts = range(0, len(order), settings.batch_size)
    try:
        with merged_while_decoding(model, settings.merge_weights):
            for start in tqdm(starts, desc=f"decoding {len(order)} inputs", unit="batch", disable=not progress):
                batch = order[start:start + settings.batch_size]
                width = max(len(prompts[i]) for i in batch)
                input_ids = torch.full((len(batch), width), tokens.pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, width - len(prompts[i]):] = torch.as_tensor(prompts[i])
                    attention[row, width - len(prompts[i]):] = 1
                with autocast:
                    generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                               **generate_kwargs(settings, tokens, width))
                for row, i in enumerate(batch):
                    outputs[i] = clean_output(tokenizer, generated[row, width:].tolist(), tokens.eos)
    finally:
        model.train(was_training)
    return outputs


def write_references(path: Path, references: Sequence[Sequence[str]]) -> None:
    """E2E reference format (blank line between inputs), or one per line when every input has one reference."""
    groups = [[" ".join(r.split()) for r in refs] for refs in references]
    if all(len(g) == 1 for g in groups):
        text = "\n".join(g[0] for g in groups) + "\n"
    else:
        text = "\n\n".join("\n".join(g) for g in groups) + "\n"
    path.write_text(text, encoding="utf-8")


def decode_and_score(model, tokenizer, spec, dataset, settings: DecodingSettings, out_dir: Path, tag: str,
                     max_prompt_len: int) -> dict:
    """Decode ``dataset``'s contexts, score them against their references, write the files named ``tag.*``."""
    references = references_of(dataset)
    subsets = dataset["subset"] if "subset" in dataset.column_names else None
    start = time.time()
    hypotheses = generate_texts(model, tokenizer, dataset["context"], settings, max_prompt_len)
    seconds = time.time() - start
    metrics = spec.score(hypotheses, references, subsets)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{tag}.hyp.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    write_references(out_dir / f"{tag}.ref.txt", references)
    with open(out_dir / f"{tag}.jsonl", "w", encoding="utf-8") as f:
        for context, hypothesis, refs in zip(dataset["context"], hypotheses, references):
            f.write(json.dumps({"context": context, "hypothesis": hypothesis, "references": refs}) + "\n")
    empty = [n for n, h in enumerate(hypotheses, 1) if not h]
    if empty:
        log.warning("%s: %d empty outputs (lines %s...): scored as misses here; the .hyp.txt has blank lines there, "
                    "which `python -m lora_repro.score` refuses, the .jsonl keeps them", tag, len(empty), empty[:5])
    result = {"metrics": metrics, "n_inputs": len(hypotheses), "n_empty": len(empty), "decode_time_s": seconds,
              "hypotheses": str(out_dir / f"{tag}.hyp.txt")}
    (out_dir / f"{tag}.metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    log.info("%s %s: %s (%d inputs, %.0f s)", spec.name, tag,
             ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()), len(hypotheses), seconds)
    return result


# ---------------------------------------------------------------- training
class DecodeOnEvaluate(TrainerCallback):
    """Decode the decode splits at each evaluation (``trainer.decode_every_epoch``), logging the metrics into the
    Trainer's history (which checkpoints keep) so the best epoch can be chosen as the paper did."""

    def __init__(self, decode: Callable[[int], dict[str, float]]):
        self.decode, self.trainer, self.done = decode, None, set()

    def bind(self, trainer) -> None:
        self.trainer = trainer

    def on_evaluate(self, args, state, control, **kwargs):
        if state.global_step not in self.done:  # called once per eval dataset
            self.done.add(state.global_step)
            self.trainer.log({f"eval_{k}": v for k, v in self.decode(state.global_step).items()})


def training_plan(cfg: dict, spec, splits: dict, tokenizer, model, run_dir: Path) -> TrainingPlan:
    """Causal-LM loss on the target only; the loss on every eval split at each evaluation, then beam-search decoding
    and scoring of the decode splits (each evaluation with ``trainer.decode_every_epoch``, else once at the end;
    ``trainer.eval_before_training`` also decodes the untrained model). Decoding runs on the main process, on an
    unsharded model (single process or DDP)."""
    t = cfg["trainer"]
    settings = DecodingSettings.from_cfg(cfg["task"].get("generation"))
    tokens = configure_special_tokens(tokenizer, model)
    max_len = t["max_seq_len"]
    max_prompt_len = max(max_len - settings.max_new_tokens, max_len // 2)
    decode_splits = [s for s in spec.extra.get("decode_splits", spec.eval_splits) if s in splits]
    out_dir = run_dir / GENERATIONS_DIR
    main = is_main_process()
    # trainer.eval_loss=false skips the per-epoch loss on the eval splits (every reference of every input: on a CPU
    # that can cost more than the training); decoding then happens once, after training
    eval_loss = t.get("eval_loss", True)
    if t.get("decode_every_epoch") and not eval_loss:
        raise UserError("trainer.decode_every_epoch=true decodes at each evaluation and needs trainer.eval_loss=true")
    train = training_dataset(splits[spec.train_split], tokenizer, max_len)
    evals = ({s: training_dataset(splits[s], tokenizer, max_len, every_reference=True) for s in spec.eval_splits}
             if eval_loss else {})

    def decode(tag: str) -> dict[str, float]:
        out = {}
        for split in decode_splits if main else ():
            result = decode_and_score(model, tokenizer, spec, splits[split], settings, out_dir, f"{split}{tag}",
                                      max_prompt_len)
            out.update({f"{split}_{k}": v for k, v in result["metrics"].items()})
        return out

    def untrained(trainer) -> dict | None:
        if not (t.get("eval_before_training") and main):
            return None
        cached = [out_dir / f"{s}.untrained.metrics.json" for s in decode_splits]
        if all(p.is_file() for p in cached):  # a resumed run decoded the untrained model already
            return {s: json.loads(p.read_text())["metrics"] for s, p in zip(decode_splits, cached)}
        return {s: decode_and_score(model, tokenizer, spec, splits[s], settings, out_dir, f"{s}.untrained",
                                    max_prompt_len)["metrics"] for s in decode_splits}

    every_epoch = DecodeOnEvaluate(lambda step: decode(f".step{step}")) if t.get("decode_every_epoch") else None

    def final(trainer) -> dict[str, float]:
        step = trainer.state.global_step
        if not (every_epoch and step in every_epoch.done):
            return decode("")  # the trained model's outputs: {split}.hyp.txt
        found = {}  # the last evaluation decoded these weights already
        for split in decode_splits if main else ():
            for suffix in (".hyp.txt", ".ref.txt", ".jsonl", ".metrics.json"):
                shutil.copyfile(out_dir / f"{split}.step{step}{suffix}", out_dir / f"{split}{suffix}")
            metrics = json.loads((out_dir / f"{split}.metrics.json").read_text())["metrics"]
            found.update({f"{split}_{k}": v for k, v in metrics.items()})
        return found

    return TrainingPlan(
        train=train, eval_dataset=evals or None, collator=CausalLMCollator(tokens.pad),
        primary_metric=f"{decode_splits[0]}_{spec.primary_metric}" if decode_splits else f"{spec.eval_splits[0]}_loss",
        arguments={"per_device_eval_batch_size": t.get("eval_batch_size") or 16, "prediction_loss_only": True,
                   "average_tokens_across_devices": True,  # the causal-LM loss divides by the global count
                   **({} if eval_loss else {"eval_strategy": "no"})},
        callbacks=[every_epoch] if every_epoch else [], before_training=untrained, final_metrics=final,
        details={"decoding": {**asdict(settings), "splits": decode_splits, "max_prompt_len": max_prompt_len,
                              "special_tokens": asdict(tokens), "outputs": str(out_dir)}},
        n_examples={"train_pairs": len(train), **{f"{s}_pairs": len(d) for s, d in evals.items()},
                    **{f"{s}_inputs": len(splits[s]) for s in decode_splits}})
