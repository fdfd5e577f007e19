"""SAMSum ROUGE-1/2/L F1 with Google's ``rouge-score`` (Porter stemming), as is standard."""

from __future__ import annotations

from collections.abc import Sequence

ROUGE_TYPES = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL"}


def samsum_scores(hypotheses: Sequence[str],
                  references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean per-summary ROUGE F1 x100; with several references, the best one per ROUGE type.

    rouge-score lowercases and keeps only [a-z0-9] tokens. ``rougeL`` is sentence-level LCS
    over the whole summary (not the newline-split ``rougeLsum``). The mean is a plain average
    (HF ``evaluate`` reports a bootstrap median of the mean, which is within sampling noise).
    """
    from rouge_score.rouge_scorer import RougeScorer  # lazy: it imports all of nltk

    scorer = RougeScorer(list(ROUGE_TYPES.values()), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        # score_multi keeps, for each ROUGE type, the reference with the best F1
        scores = scorer.score_multi(list(refs), hypothesis)
        for name, rouge_type in ROUGE_TYPES.items():
            totals[name] += scores[rouge_type].fmeasure
    return {name: 100 * total / len(hypotheses) for name, total in totals.items()}
