"""METEOR: the official METEOR 1.5 jar whenever java is on the PATH, otherwise an approximation.

Official path (reported as ``meteor``): the ``meteor-1.5.jar`` (with ``data/paraphrase-en.gz``)
that the PyPI package ``pycocoevalcap`` ships, driven by that package's own ``Meteor`` class,
which is coco-caption's wrapper as the E2E scorer bundles it: ``java -jar -Xmx2G meteor-1.5.jar
- - -stdio -l en -norm``, one ``SCORE`` line per segment, then one ``EVAL`` line for the corpus.
GenerationEval (WebNLG/DART) runs the same jar with the same ``-l en -norm``. ``METEOR_JAR``
overrides the jar (its ``data/paraphrase-en.gz`` must lie beside it: the jar looks for it
there). The jar starts once per process (10-15 s of CPU: it loads its paraphrase table) and
serves every later call; it is stopped at exit (``close_meteor``) or when a call fails.

Without java, ``meteor_approx`` is reported: METEOR 1.5's English "rank" parameters
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

import atexit
import contextlib
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lora_repro.errors import MissingInputError

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


def packaged_jar(subpackage: str, name: str) -> Path:
    """A jar that the ``pycocoevalcap`` package ships (``meteor``, ``tokenizer``), as a path."""
    import importlib

    module = importlib.import_module(f"pycocoevalcap.{subpackage}")
    return Path(next(iter(module.__path__))) / name


def meteor_jar() -> str | None:
    """The METEOR 1.5 jar to run: ``METEOR_JAR``, else pycocoevalcap's; None without java.

    A ``METEOR_JAR`` that is not a file is an error rather than a silent fall back.
    """
    if shutil.which("java") is None:
        return None
    jar = os.environ.get("METEOR_JAR")
    if jar:
        if not os.path.isfile(jar):
            raise MissingInputError(f"METEOR_JAR={jar} is not a file (unset it to use the "
                                    f"jar pycocoevalcap ships)")
        return os.path.abspath(jar)
    packaged = packaged_jar("meteor", "meteor-1.5.jar")
    if not packaged.is_file():
        raise MissingInputError(f"{packaged} is missing: reinstall pycocoevalcap (or set "
                                f"METEOR_JAR)")
    return str(packaged)


_JAR_PATCH_LOCK = threading.Lock()
_SCORERS: dict[str, object] = {}  # jar -> a running pycocoevalcap Meteor: the paraphrase table loads once a process


def _field(text: str) -> str:
    # one line of the jar's protocol: no newlines and no " ||| " separators inside a field
    return " ".join(text.replace("|||", "").split())


def _running_scorer(jar: str):
    """This process's METEOR jar for ``jar``, started on first use (10-15 s: it loads its paraphrase table) and
    reused by later calls (a sweep's jobs, decoding after every epoch); stopped at exit by ``close_meteor``."""
    from pycocoevalcap.meteor import meteor as coco_meteor

    scorer = _SCORERS.get(jar)
    if scorer is not None and scorer.meteor_p.poll() is None:
        return scorer
    # Meteor() starts "java -jar <METEOR_JAR>" (a module constant) in its own folder.
    with _JAR_PATCH_LOCK:
        saved, coco_meteor.METEOR_JAR = coco_meteor.METEOR_JAR, jar
        try:
            scorer = coco_meteor.Meteor()
        finally:
            coco_meteor.METEOR_JAR = saved
    _SCORERS[jar] = scorer
    return scorer


def _stop(scorer) -> None:
    process = scorer.meteor_p
    if scorer.lock.locked():  # compute_score failed holding it; Meteor.__del__ takes it
        scorer.lock.release()
    with contextlib.suppress(OSError):
        process.stdin.close()
    process.kill()
    process.wait()
    process.stdout.close()
    process.stderr.close()


@atexit.register
def close_meteor() -> None:
    """Stop the METEOR jars this process started (also run at exit)."""
    while _SCORERS:
        _stop(_SCORERS.popitem()[1])


def meteor_official(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                    jar: str) -> float:
    """Corpus METEOR 1.5 in [0, 1] from pycocoevalcap's ``Meteor`` running ``jar``."""
    scorer = _running_scorer(jar)
    gts = {i: [_field(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [_field(h)] for i, h in enumerate(hypotheses)}
    try:
        score, _ = scorer.compute_score(gts, res)
    except BaseException as failure:
        _SCORERS.pop(jar, None)
        process = scorer.meteor_p
        process.kill()
        error = process.stderr.read().decode("utf-8", "replace").strip().splitlines()
        _stop(scorer)
        if isinstance(failure, ValueError):  # a line that is not a number: the jar failed
            raise RuntimeError(f"METEOR jar {jar} failed: {error[-1] if error else 'no output'}") from None
        raise
    return float(score)


def meteor(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[str, float]:
    """("meteor", official METEOR 1.5) when java is there, else ("meteor_approx", approximation)."""
    jar = meteor_jar()
    if jar:
        return "meteor", meteor_official(hypotheses, references, jar)
    return "meteor_approx", meteor_approx(hypotheses, references)
