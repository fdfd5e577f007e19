"""ROUGE-L and CIDEr as the E2E scorer computes them: pycocoevalcap's ``Rouge`` and ``Cider``.

The E2E scorer (tuetschek/e2e-metrics) bundles coco-caption, whose ``Rouge`` and ``Cider`` are
the ones the PyPI package ``pycocoevalcap`` 1.2 ships (the same code, ported to Python 3). We
call the package's classes; these helpers only lay the segments out as they expect
(``{segment: [text]}``). Both take text already through coco-caption's PTB tokenisation
(lowercase, punctuation tokens dropped; see ``lora_repro.metrics.tokenize``).

* ROUGE-L: per segment, LCS-based precision and recall against each reference; the best
  precision and the best recall (possibly from different references) are combined with
  ``beta = 1.2``; the corpus score is the mean over segments.
* CIDEr: coco-caption's ``Cider``, which is CIDEr-D's formula (TF-IDF weighted 1..4-gram
  vectors, clipped hypothesis weights, a Gaussian length penalty with sigma 6, averaged over n
  and references, times 10, mean over segments) with document frequencies taken from the
  references being scored (one "document" per segment), not from a fixed corpus.
"""

from __future__ import annotations

from collections.abc import Sequence


def _layout(hypotheses: Sequence[str], references: Sequence[Sequence[str]]):
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference groups")
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [hypothesis] for i, hypothesis in enumerate(hypotheses)}
    return gts, res


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean coco-caption ROUGE-L over segments, in [0, 1]."""
    from pycocoevalcap.rouge.rouge import Rouge

    score, _ = Rouge().compute_score(*_layout(hypotheses, references))
    return float(score)


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean coco-caption CIDEr over segments (its scale: 0 to about 10)."""
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(*_layout(hypotheses, references))
    return float(score)
