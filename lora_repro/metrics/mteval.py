"""Corpus BLEU and NIST exactly as the E2E scorer gets them from ``mteval-v13a-sig.pl``.

The E2E scorer writes every reference "set" (the k-th reference of each segment) as one system
of an mteval reference file, padding segments with fewer references with empty strings, and
calls the Perl script with its defaults: lowercase, v13a tokenisation, BLEU-4 with the
"closest reference length" brevity penalty (empty references skipped, ties to the shorter),
NIST-5. We mirror that (the padded empty references change nothing: mteval skips them):

* NIST information weights come from n-gram counts over *all* references of the corpus:
  ``info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn))`` (for unigrams, total ref words / count).
* NIST's length penalty compares the corpus's hypothesis words with its average reference
  length: mteval-v13a's ``score_system`` passes ``nist_score`` the number of non-empty
  references over the number of segments (``score_segment`` counts only non-empty ones), and
  ``nist_score`` divides the total reference words by it: total reference words over the mean
  number of references per segment. The penalty is
  ``exp(-beta * log(ratio)^2)`` for a ratio under 1, with ``beta = -log(0.5) / log(1.5)^2``,
  so a 1.5x-too-short output keeps half its score.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from lora_repro.metrics.tokenize import mteval_tokenize

BLEU_MAX_N = 4
NIST_MAX_N = 5


def _ngrams(words: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i:i + n]) for n in range(1, max_n + 1)
                   for i in range(len(words) - n + 1))


def _closest_ref_length(hyp_length: int, ref_lengths: Sequence[int]) -> int:
    """mteval-v13a-sig's brevity_penalty_closest: skips empty refs, ties go to the shorter."""
    closest = ref_lengths[0]
    for length in ref_lengths[1:]:
        if length == 0:
            continue
        distance, best = abs(hyp_length - length), abs(hyp_length - closest)
        if distance < best or (distance == best and length < closest):
            closest = length
    return closest


def _nist_info(references: Sequence[Sequence[Sequence[str]]]) -> dict[tuple[str, ...], float]:
    counts: Counter[tuple[str, ...]] = Counter()
    total_words = 0
    for refs in references:
        for ref in refs:
            total_words += len(ref)
            counts.update(_ngrams(ref, NIST_MAX_N))
    info = {}
    for ngram, count in counts.items():
        prefix = ngram[:-1]
        # Perl tests the joined prefix string for truth, so a bigram after the word "0" is
        # weighted like a unigram. We keep that quirk to stay equal to the official numbers.
        denominator = counts[prefix] if prefix and prefix != ("0",) else total_words
        info[ngram] = -math.log(count / denominator) / math.log(2)
    return info


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) ** 2
    return math.exp(-beta * math.log(ratio) ** 2)


def mteval_bleu_nist(hypotheses: Sequence[str],
                     references: Sequence[Sequence[str]]) -> tuple[float, float]:
    """(BLEU in [0, 1], NIST) of the corpus, as mteval-v13a-sig.pl computes them for E2E."""
    hyps = [mteval_tokenize(h) for h in hypotheses]
    refs = [[mteval_tokenize(r) for r in group] for group in references]
    num_refs = sum(1 for group in refs for ref in group if ref)  # non-empty, as mteval counts
    info = _nist_info(refs)

    matches = [0] * (NIST_MAX_N + 1)
    hyp_ngram_totals = [0] * (NIST_MAX_N + 1)
    matched_info = [0.0] * (NIST_MAX_N + 1)
    total_ref_length = total_ref_words = 0
    for hyp, group in zip(hyps, refs, strict=True):
        max_ref_counts: Counter[tuple[str, ...]] = Counter()
        for ref in group:
            max_ref_counts |= _ngrams(ref, NIST_MAX_N)  # | keeps the max count per n-gram
        for ngram, count in _ngrams(hyp, NIST_MAX_N).items():
            clipped = min(count, max_ref_counts[ngram])
            if clipped:
                matches[len(ngram)] += clipped
                matched_info[len(ngram)] += info[ngram] * clipped
        for n in range(1, NIST_MAX_N + 1):
            hyp_ngram_totals[n] += max(len(hyp) - n + 1, 0)
        total_ref_length += _closest_ref_length(len(hyp), [len(ref) for ref in group])
        total_ref_words += sum(len(ref) for ref in group)

    # BLEU: mteval's smoothing only touches n-gram orders without any match (1 / 2^k).
    hyp_words = hyp_ngram_totals[1]
    brevity = math.exp(min(0.0, 1 - total_ref_length / hyp_words)) if hyp_words else 0.0
    log_precision, smooth = 0.0, 1
    for n in range(1, BLEU_MAX_N + 1):
        if hyp_ngram_totals[n] == 0:
            continue
        if matches[n] == 0:
            smooth *= 2
            log_precision += math.log(1 / (smooth * hyp_ngram_totals[n]))
        else:
            log_precision += math.log(matches[n] / hyp_ngram_totals[n])
    bleu = math.exp(log_precision / BLEU_MAX_N) * brevity

    nist = sum(matched_info[n] / max(hyp_ngram_totals[n], 1) for n in range(1, NIST_MAX_N + 1))
    average_ref_words = total_ref_words / (num_refs / len(refs))  # see the module doc
    nist *= _nist_length_penalty(hyp_words / average_ref_words) if average_ref_words else 0.0
    return bleu, nist
