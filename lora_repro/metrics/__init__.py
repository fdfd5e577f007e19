"""NLG metrics of the LoRA paper's generation tasks, computed as their official scorers do.

``score(task, hypotheses, references)`` returns ``{metric: value}`` on the scale the paper's
tables use:

========  =====================================================================================
task      metrics
========  =====================================================================================
e2e       ``bleu`` (x100), ``nist``, ``meteor`` or ``meteor_approx`` (x100), ``rouge_l`` (x100),
          ``cider`` -- equal to tuetschek/e2e-metrics ``measure_scores.py`` (Perl mteval NIST)
webnlg,   ``bleu`` (x100), ``meteor`` or ``meteor_approx`` (0-1), ``ter`` or ``ter_tercom``
dart      (0-1) -- as WebNLG GenerationEval ``eval.py`` computes them; score the U/S/A splits
          as separate subsets of segments
samsum    ``rouge1``, ``rouge2``, ``rouge_l`` -- rouge-score F1 with stemming, x100
wikisql   ``accuracy`` (logical-form match, %) and ``execution_accuracy`` (%) with a SQLite db
========  =====================================================================================

A key names an approximation when the official tool is missing: ``meteor`` is the official
METEOR 1.5 (the jar from ``pycocoevalcap``, or ``METEOR_JAR``; needs java on the PATH), else
``meteor_approx`` (exact + stem matching only, about 0.02-0.03 lower; see
``lora_repro.metrics.meteor``); ``ter`` is GenerationEval's pyter3
TER, else ``ter_tercom`` (sacrebleu's tercom; see ``lora_repro.metrics.webnlg``).
A perfect output scores BLEU 100, ROUGE 100, TER 0; an empty output scores 0 (TER 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from lora_repro.metrics.e2e import e2e_scores
from lora_repro.metrics.rouge import samsum_scores
from lora_repro.metrics.webnlg import webnlg_scores
from lora_repro.metrics.wikisql import canonical_sql, wikisql_scores
from lora_repro.errors import UserError

TASKS = ("e2e", "webnlg", "dart", "samsum", "wikisql")

__all__ = ["TASKS", "canonical_sql", "e2e_scores", "samsum_scores", "score", "webnlg_scores",
           "wikisql_scores"]


def score(task: str, hypotheses: Sequence[str], references: Sequence[Sequence[str]], *,
          db_path: str | None = None) -> dict[str, float]:
    """Corpus metrics of ``hypotheses[i]`` against the references ``references[i]``.

    An empty hypothesis is scored (as a total miss); blank references are ignored and a group
    with none left is an error.
    For ``wikisql`` each group holds exactly one gold SQL query; ``db_path`` (a SQLite file)
    adds execution accuracy.
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} reference groups")
    if not hypotheses:
        raise UserError("nothing to score: no hypotheses")
    references = [[ref for ref in group if ref.strip()] for group in references]
    for index, group in enumerate(references):
        if not group:
            raise UserError(f"reference group {index} is empty")
    if db_path is not None and task != "wikisql":
        raise UserError(f"db_path is only used by the wikisql task, not {task!r}")

    if task == "e2e":
        return e2e_scores(hypotheses, references)
    if task in ("webnlg", "dart"):
        return webnlg_scores(hypotheses, references)
    if task == "samsum":
        return samsum_scores(hypotheses, references)
    several = [index for index, group in enumerate(references) if len(group) != 1]
    if several:
        raise UserError(f"wikisql needs exactly one gold query per hypothesis; group "
                         f"{several[0]} has {len(references[several[0]])}")
    return wikisql_scores(hypotheses, [group[0] for group in references], db_path)
