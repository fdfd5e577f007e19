"""WebNLG and DART metrics as the WebNLG challenge's GenerationEval (``eval.py``) computes them.

GenerationEval (used by the LoRA repo with ``-m bleu,meteor,ter``):

* BLEU: Moses ``multi-bleu-detok.perl`` on the raw files: case-sensitive, mteval-v13a
  tokenisation, closest reference length, no smoothing (an n-gram order without any match gives
  BLEU 0). That is sacrebleu's ``BLEU(tokenize="13a", lowercase=False, smooth_method="none")``.
  Reported x100, as the script prints it.
* METEOR: the METEOR 1.5 jar with ``-l en -norm`` on ``nltk.word_tokenize``d text. We run the
  jar pycocoevalcap ships (or ``METEOR_JAR``) through the package's ``Meteor`` class, the same
  path as for E2E (``meteor.py``), whenever java is on the PATH; GenerationEval runs the jar on
  files (``-r`` references per segment, padded with empty ones) rather than over ``-stdio``,
  which scores each segment against its best reference and sums the statistics the same way.
  Without java we report ``meteor_approx``. In [0, 1].
* TER: for each segment the lowest TER over its references, averaged over segments (not corpus
  TER), on ``nltk.word_tokenize``d, case-sensitive text, with ``pyter3`` (a simplified TER).
  In [0, 1]. We report it as ``ter`` when ``pyter3`` is installed; otherwise as ``ter_tercom``,
  the same average with sacrebleu's port of tercom (tercom's shift constraints), which finds
  fewer edits: 0.436 vs pyter's 0.453 on 1,000 DART test entries and 0.616 vs 0.625 on 500
  WebNLG test entries (each entry's first reference scored against the others). TER is the
  slow part: about 70 s (pyter3) or 115 s (sacrebleu) per 1,000 DART segments on one core.

Deviations, all small: GenerationEval pads missing references with empty lines, which can only
change BLEU's closest reference length for outputs under half the shortest reference's length;
we leave missing references out. Tokenisation splits sentences with an untrained Punkt model
given common abbreviations (nltk's trained punkt data is not installed), which can differ from
``word_tokenize`` around rarer abbreviations.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from sacrebleu.metrics import BLEU
from sacrebleu.metrics.lib_ter import translation_edit_rate

from lora_repro.metrics.meteor import meteor
from lora_repro.metrics.tokenize import treebank_tokenize


def multi_bleu_detok(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU x100 as multi-bleu-detok.perl (cased, 13a, no smoothing)."""
    num_streams = max(len(refs) for refs in references)
    # sacrebleu takes one stream per reference position; None marks a missing reference
    streams = [[refs[k] if k < len(refs) else None for refs in references]
               for k in range(num_streams)]
    bleu = BLEU(tokenize="13a", lowercase=False, smooth_method="none")
    return bleu.corpus_score(list(hypotheses), streams).score


def _pyter_rate(hyp_words: list[str], ref_words: list[str]) -> float:
    import pyter  # the pyter3 package, GenerationEval's TER

    try:
        return pyter.ter(hyp_words, ref_words)
    except Exception:  # noqa: BLE001 -- GenerationEval scores any pyter failure as 1
        return 1.0


def _tercom_rate(hyp_words: list[str], ref_words: list[str]) -> float:
    edits, ref_length = translation_edit_rate(hyp_words, ref_words)
    return edits / ref_length


def segment_ter(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                use_pyter: bool | None = None) -> tuple[str, float]:
    """("ter" or "ter_tercom", mean over segments of the lowest TER against any reference).

    ``use_pyter`` None means: pyter3 when it is installed.
    """
    if use_pyter is None:
        use_pyter = importlib.util.find_spec("pyter") is not None
    rate = _pyter_rate if use_pyter else _tercom_rate
    total = 0.0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        hyp_words = hypothesis.split()
        # GenerationEval scores an empty reference as TER 1
        total += min(rate(hyp_words, ref.split()) if ref.split() else 1.0 for ref in refs)
    return ("ter" if use_pyter else "ter_tercom"), total / len(hypotheses)


def webnlg_scores(hypotheses: Sequence[str],
                  references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU (x100), METEOR and TER (in [0, 1]) of the corpus, as in the LoRA paper's tables.

    Keys: ``bleu``, ``meteor`` or ``meteor_approx``, ``ter`` or ``ter_tercom`` (see above).
    """
    tok_hyps = [treebank_tokenize(h) for h in hypotheses]
    tok_refs = [[treebank_tokenize(r) for r in refs] for refs in references]
    meteor_name, meteor_value = meteor(tok_hyps, tok_refs)
    ter_name, ter_value = segment_ter(tok_hyps, tok_refs)
    return {"bleu": multi_bleu_detok(hypotheses, references), meteor_name: meteor_value,
            ter_name: ter_value}
