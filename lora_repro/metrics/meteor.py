"""METEOR: the official METEOR 1.5 jar when one is given, otherwise a labelled approximation.

Official path: set ``METEOR_JAR`` to a ``meteor-1.5.jar`` (with its ``data/paraphrase-en.gz``
beside it; the PyPI package ``pycocoevalcap`` ships both) and have ``java`` on the PATH. The jar
then runs as the E2E scorer and GenerationEval run it (``-l en -norm``) and the result is
reported as ``meteor``.

Otherwise ``meteor_approx`` is reported: METEOR 1.5's English "rank" parameters
(alpha 0.85, beta 0.2, gamma 0.6) and scoring formula, but

* only the exact (weight 1.0) and Snowball-stem (weight 0.6) matchers; the synonym (WordNet)
  and paraphrase matchers need data that is not available offline;
* no function-word list, so every word counts as a content word (delta has no effect);
* a small beam search (40 states, as METEOR's) over one-to-one word alignments that prefers
  more matches, then fewer chunks, then exact over stem matches.

Missing synonym/paraphrase matches make the approximation lower than the real METEOR, by 0.02
to 0.03 on this kind of text: 0.451 vs the jar's 0.480 on the E2E scorer's example, 0.429 vs
0.450 on E2E dev (each MR's first reference scored against the others), 0.392 vs 0.424 on 600
WebNLG test entries. Compare ``meteor_approx`` values with each other, not with published METEOR.
Like METEOR, segment statistics are those of the best-scoring reference, summed over the corpus
before the final score is computed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

ALPHA, BETA, GAMMA = 0.85, 0.2, 0.6
EXACT_WEIGHT, STEM_WEIGHT = 1.0, 0.6
BEAM_SIZE = 40


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem.snowball import SnowballStemmer  # lazy: nltk is slow to import

    return SnowballStemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer().stem(word)


@dataclass(frozen=True)
class _Stats:
    hyp_words: int = 0
    ref_words: int = 0
    weighted_matches: float = 0.0  # exact and stem matches times their module weights
    matches: int = 0
    chunks: int = 0

    def __add__(self, other: _Stats) -> _Stats:
        return _Stats(self.hyp_words + other.hyp_words, self.ref_words + other.ref_words,
                      self.weighted_matches + other.weighted_matches,
                      self.matches + other.matches, self.chunks + other.chunks)

    def score(self) -> float:
        if self.matches == 0:
            return 0.0
        precision = self.weighted_matches / self.hyp_words
        recall = self.weighted_matches / self.ref_words
        f_mean = precision * recall / (ALPHA * precision + (1 - ALPHA) * recall)
        penalty = GAMMA * (self.chunks / self.matches) ** BETA
        return f_mean * (1 - penalty)


def _align(hyp: Sequence[str], ref: Sequence[str]) -> _Stats:
    ref_stems = [_stem(word) for word in ref]
    candidates = []
    for word in hyp:
        stem = _stem(word)
        candidates.append([(j, EXACT_WEIGHT if word == r else STEM_WEIGHT)
                           for j, r in enumerate(ref) if word == r or stem == ref_stems[j]])
    # state: (matches, -chunks, weight, used ref positions, ref position of the previous
    # hypothesis word if it was matched, else -2)
    beam = [(0, 0, 0.0, frozenset(), -2)]
    for options in candidates:
        successors = []
        for matches, neg_chunks, weight, used, previous in beam:
            successors.append((matches, neg_chunks, weight, used, -2))
            for j, match_weight in options:
                if j not in used:
                    new_chunk = 0 if j == previous + 1 else 1
                    successors.append((matches + 1, neg_chunks - new_chunk, weight + match_weight,
                                       used | {j}, j))
        successors.sort(key=lambda state: state[:3], reverse=True)
        beam = successors[:BEAM_SIZE]
    matches, neg_chunks, weight, _, _ = beam[0]
    chunks = -neg_chunks
    if matches == len(hyp) == len(ref) and chunks == 1:
        chunks = 0  # METEOR 1.5 gives a complete in-order match no fragmentation penalty
    return _Stats(len(hyp), len(ref), weight, matches, chunks)


def meteor_approx(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Approximate corpus METEOR 1.5 (exact + stem matching only), in [0, 1]."""
    total = _Stats()
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        hyp = hypothesis.lower().split()
        best = max((_align(hyp, ref.lower().split()) for ref in refs if ref.strip()),
                   key=_Stats.score, default=_Stats(hyp_words=len(hyp)))
        total = total + best
    return total.score()


def meteor_jar() -> str | None:
    """The METEOR 1.5 jar to run (``METEOR_JAR``), or None when it or java is missing."""
    jar = os.environ.get("METEOR_JAR")
    return jar if jar and os.path.isfile(jar) and shutil.which("java") else None


def meteor_official(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                    jar: str) -> float:
    """Corpus METEOR from the jar's stdio protocol, as coco-caption drives it."""
    command = ["java", "-Xmx2G", "-jar", jar, "-", "-", "-stdio", "-l", "en", "-norm"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          encoding="utf-8", cwd=os.path.dirname(os.path.abspath(jar))) as process:
        assert process.stdin is not None and process.stdout is not None
        statistics = []
        for hypothesis, refs in zip(hypotheses, references, strict=True):
            fields = [r for r in refs if r.strip()] + [hypothesis.replace("|||", "")]
            process.stdin.write("SCORE ||| " + " ||| ".join(" ".join(f.split()) for f in fields)
                                + "\n")
            process.stdin.flush()
            statistics.append(process.stdout.readline().strip())
        process.stdin.write("EVAL ||| " + " ||| ".join(statistics) + "\n")
        process.stdin.close()
        lines = process.stdout.read().split()
    if process.returncode != 0 or len(lines) != len(statistics) + 1:
        raise RuntimeError(f"METEOR jar {jar} failed (exit code {process.returncode})")
    return float(lines[-1])


def meteor(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[str, float]:
    """("meteor", official score) with a jar, else ("meteor_approx", approximation)."""
    jar = meteor_jar()
    if jar:
        return "meteor", meteor_official(hypotheses, references, jar)
    return "meteor_approx", meteor_approx(hypotheses, references)
