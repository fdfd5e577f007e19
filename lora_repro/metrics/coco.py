"""ROUGE-L and CIDEr-D as coco-caption (bundled in the E2E scorer) computes them.

Both take text already through ``coco_tokenize`` (lowercase, PTB tokens, punctuation dropped).

* ROUGE-L: per segment, LCS-based precision and recall against each reference; the best
  precision and the best recall (possibly from different references) are combined with
  ``beta = 1.2``; the corpus score is the mean over segments.
* CIDEr-D: TF-IDF weighted 1..4-gram vectors, with document frequencies taken from the
  references being scored (one "document" per segment), clipped hypothesis weights, a Gaussian
  length penalty (sigma 6), averaged over n and references, times 10, mean over segments.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

ROUGE_BETA = 1.2
CIDER_MAX_N = 4
CIDER_SIGMA = 6.0


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b):
            current.append(previous[j] + 1 if token_a == token_b
                           else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_segment(hypothesis: str, references: Sequence[str]) -> float:
    # coco-caption splits on single spaces, so an empty string is one empty token.
    hyp = hypothesis.split(" ")
    precisions, recalls = [], []
    for reference in references:
        ref = reference.split(" ")
        lcs = _lcs_length(ref, hyp)
        precisions.append(lcs / len(hyp))
        recalls.append(lcs / len(ref))
    precision, recall = max(precisions), max(recalls)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + ROUGE_BETA ** 2) * precision * recall / (recall + ROUGE_BETA ** 2 * precision)


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean coco-caption ROUGE-L over segments, in [0, 1]."""
    scores = [rouge_l_segment(h, refs) for h, refs in zip(hypotheses, references, strict=True)]
    return sum(scores) / len(scores)


def _counts(sentence: str) -> Counter[tuple[str, ...]]:
    words = sentence.split()
    return Counter(tuple(words[i:i + n]) for n in range(1, CIDER_MAX_N + 1)
                   for i in range(len(words) - n + 1))


def _tfidf(counts: Counter[tuple[str, ...]], document_frequency: Counter[tuple[str, ...]],
           log_num_docs: float) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
    vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(CIDER_MAX_N)]
    for ngram, term_frequency in counts.items():
        idf = log_num_docs - math.log(max(1.0, document_frequency[ngram]))
        vectors[len(ngram) - 1][ngram] = term_frequency * idf
    norms = [math.sqrt(sum(v * v for v in vector.values())) for vector in vectors]
    # coco-caption's "length" is the number of bigrams, not of words.
    length = sum(count for ngram, count in counts.items() if len(ngram) == 2)
    return vectors, norms, length


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean coco-caption CIDEr-D over segments (its scale: 0 to about 10)."""
    ref_counts = [[_counts(r) for r in refs] for refs in references]
    document_frequency: Counter[tuple[str, ...]] = Counter()
    for group in ref_counts:
        document_frequency.update({ngram for counts in group for ngram in counts})
    log_num_docs = math.log(len(references))

    scores = []
    for hypothesis, group in zip(hypotheses, ref_counts, strict=True):
        hyp_vectors, hyp_norms, hyp_length = _tfidf(_counts(hypothesis), document_frequency,
                                                     log_num_docs)
        total = 0.0
        for counts in group:
            ref_vectors, ref_norms, ref_length = _tfidf(counts, document_frequency, log_num_docs)
            penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * CIDER_SIGMA ** 2))
            for n in range(CIDER_MAX_N):
                ref_vector = ref_vectors[n]
                similarity = sum(min(weight, ref_vector.get(ngram, 0.0)) * ref_vector.get(ngram, 0.0)
                                 for ngram, weight in hyp_vectors[n].items())
                if hyp_norms[n] != 0 and ref_norms[n] != 0:
                    similarity /= hyp_norms[n] * ref_norms[n]
                total += similarity * penalty
        scores.append(total / CIDER_MAX_N / len(group) * 10.0)
    return sum(scores) / len(scores)
