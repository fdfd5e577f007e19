"""Generation tasks (kind "generation"): E2E, WebNLG, DART (Table 3, 13, 14), WikiSQL, SAMSum and MNLI-m as text
(Table 4), read from their published files by ``lora_repro.tasks.nlg_data`` and scored by ``lora_repro.metrics``.

Every split is a ``datasets.Dataset`` with the columns

* ``context``: the conditioning text (formats in ``nlg_data``'s docstring);
* ``target``: the text to generate. Train has one row per (context, reference) pair, as the paper trains;
  evaluation splits have one row per input, with ``target`` its first reference;
* ``references``: every reference of the input (a list): multi-reference scoring (E2E, WebNLG, DART);
* ``subset``: ``seen``/``unseen`` for WebNLG (Table 14's S/U columns), else ``""``.

How a row becomes tokens (context, separator, target, EOS; loss on the target only) is in ``lora_repro.generation``.
Data come from local files only (``data_dir`` / ``$LORA_REPRO_DATA``): the hub copies of these datasets have other
schemas, and the paper's runs used the published files.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from lora_repro.tasks import TaskSpec, register_task
from lora_repro.tasks.nlg_data import Example, read_dataset
from lora_repro.errors import UserError

log = logging.getLogger("lora_repro")
SOURCES = ("auto", "local")
COLUMNS = ("context", "target", "references", "subset")
MNLI_LABELS = ("entailment", "neutral", "contradiction")  # GLUE's label ids 0, 1, 2


def examples_to_dataset(examples: list[Example], train: bool, subset_of: Callable[[Example], str] | None = None):
    """Train: one row per reference. Evaluation: one row per input with all its references; inputs without any
    reference cannot be scored and are left out (one WebNLG dev entry has none marked good)."""
    import datasets

    rows: dict[str, list] = {c: [] for c in COLUMNS}
    dropped = 0
    for example in examples:
        if not example.references:
            dropped += 1
            continue
        subset = subset_of(example) if subset_of else ""
        targets = example.references if train else example.references[:1]
        for target in targets:
            rows["context"].append(example.context)
            rows["target"].append(target)
            rows["references"].append(list(example.references))
            rows["subset"].append(subset)
    if dropped:
        log.info("left out %d inputs without references", dropped)
    return datasets.Dataset.from_dict(rows)


def _check_source(name: str, source: str) -> None:
    if source not in SOURCES:
        raise UserError(f"{name}: data source {source!r} is not available; choices: {', '.join(SOURCES)} "
                         "(generation tasks read the published files under data_dir / $LORA_REPRO_DATA)")


def file_loader(name: str, train_split: str, subset_of: Callable[[Example], str] | None = None):
    def load(split: str, data_dir: str | None = None, source: str = "auto", rows_policy=None):
        _check_source(name, source)  # the published readers (nlg_data) stop on a malformed record themselves
        return examples_to_dataset(read_dataset(name, data_dir, split), train=split == train_split,
                                   subset_of=subset_of)
    return load


def webnlg_subset(example: Example) -> str:
    return "seen" if example.meta.get("seen") else "unseen"


def metrics_scorer(metric_task: str) -> Callable[..., dict]:
    """score(hypotheses, references, subsets=None) through lora_repro.metrics."""
    def score(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
              subsets: Sequence[str] | None = None) -> dict[str, float]:
        from lora_repro.metrics import score as metric_score

        return metric_score(metric_task, list(hypotheses), [list(r) for r in references])
    return score


def webnlg_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                 subsets: Sequence[str] | None = None) -> dict[str, float]:
    """Table 14's columns: each metric on all inputs (_a), the seen categories (_s) and the unseen ones (_u)."""
    from lora_repro.metrics import score as metric_score

    subsets = list(subsets) if subsets is not None else [""] * len(hypotheses)
    out: dict[str, float] = {}
    for suffix, keep in (("a", None), ("s", "seen"), ("u", "unseen")):
        chosen = [i for i, s in enumerate(subsets) if keep is None or s == keep]
        if not chosen:
            continue
        scores = metric_score("webnlg", [hypotheses[i] for i in chosen], [list(references[i]) for i in chosen])
        out.update({f"{key}_{suffix}": value for key, value in scores.items()})
    return out


def exact_match_accuracy(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                         subsets: Sequence[str] | None = None) -> dict[str, float]:
    """MNLI as generation: the output, stripped and lowercased, must be the label word (x100)."""
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    correct = sum(h.strip().lower() in {r.strip().lower() for r in refs} for h, refs in zip(hypotheses, references))
    return {"accuracy": 100.0 * correct / max(1, len(hypotheses))}


def mnli_loader(split: str, data_dir: str | None = None, source: str = "auto"):
    """MNLI from the GLUE files (or the hub), rewritten as text: our own layout, the paper gives none."""
    import datasets

    from lora_repro.tasks import get_task

    glue = get_task("mnli").load(split, data_dir, source)
    contexts = [f"Premise: {p}\nHypothesis: {h}\nRelation:" for p, h in zip(glue["premise"], glue["hypothesis"])]
    targets = [MNLI_LABELS[label] for label in glue["label"]]
    return datasets.Dataset.from_dict({"context": contexts, "target": targets, "references": [[t] for t in targets],
                                       "subset": [""] * len(targets)})


def _register(name: str, metrics: tuple[str, ...], eval_splits: tuple[str, ...], decode_splits: tuple[str, ...],
              load, score, description: str) -> None:
    register_task(TaskSpec(
        name=name, kind="generation", text_fields=("context", "target"), metrics=metrics, train_split="train",
        eval_splits=eval_splits, load=load, score=score, family="nlg", description=description,
        # loss is logged on every eval split; decoding (slow) runs on decode_splits only
        extra={"decode_splits": decode_splits}, plan="lora_repro.generation:training_plan"))


_register("e2e", ("bleu", "nist", "meteor", "rouge_l", "cider"), ("validation", "test"), ("test",),
          file_loader("e2e", "train"), metrics_scorer("e2e"), "E2E NLG Challenge (Table 3): test, 630 MRs")
_register("webnlg", ("bleu_a", "bleu_s", "bleu_u", "meteor_a", "ter_a"), ("validation", "test"), ("test",),
          file_loader("webnlg", "train", webnlg_subset), webnlg_score, "WebNLG 2017 (Table 14): test, U/S/A")
_register("dart", ("bleu", "meteor", "ter"), ("validation", "test"), ("test",),
          file_loader("dart", "train"), metrics_scorer("dart"), "DART v1.1.1 (Table 13): test")
_register("samsum", ("rouge1", "rouge2", "rouge_l"), ("validation", "test"), ("test",),
          file_loader("samsum", "train"), metrics_scorer("samsum"), "SAMSum (Table 4): ROUGE-1/2/L")
_register("wikisql", ("accuracy",), ("validation",), ("validation",),
          file_loader("wikisql", "train"), metrics_scorer("wikisql"),
          "WikiSQL (Table 4): logical-form accuracy on validation; needs the *.tables.jsonl files")
_register("mnli_m", ("accuracy",), ("validation_matched",), ("validation_matched",),
          mnli_loader, exact_match_accuracy, "MNLI-matched as generation (Table 4): label word accuracy")
