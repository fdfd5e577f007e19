"""E2E NLG Challenge metrics, equal to the official scorer (tuetschek/e2e-metrics)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from lora_repro.metrics.coco import cider_d, rouge_l
from lora_repro.metrics.meteor import meteor
from lora_repro.metrics.mteval import mteval_bleu_nist
from lora_repro.metrics.tokenize import coco_tokenize, coco_tokenize_jar


def coco_tokenized(hypotheses: Sequence[str], references: Sequence[Sequence[str]]
                   ) -> tuple[list[str], list[list[str]]]:
    """Hypotheses and references through coco-caption's PTB tokenisation.

    With java: the CoreNLP jar pycocoevalcap ships, references and hypotheses tokenised as two
    sets, as the E2E scorer does; without: the pure-Python emulation ``coco_tokenize``.
    """
    if shutil.which("java") is None:
        return ([coco_tokenize(h) for h in hypotheses],
                [[coco_tokenize(r) for r in refs] for refs in references])
    flat = coco_tokenize_jar([r for refs in references for r in refs])
    grouped, start = [], 0
    for refs in references:
        grouped.append(flat[start:start + len(refs)])
        start += len(refs)
    return coco_tokenize_jar(list(hypotheses)), grouped


def e2e_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU, NIST, METEOR, ROUGE-L, CIDEr of the corpus on the LoRA paper's scale.

    BLEU, METEOR and ROUGE-L are x100 (the official script prints them in [0, 1]); NIST and
    CIDEr are as printed. BLEU/NIST follow mteval-v13a on the raw text (``mteval.py``); METEOR,
    ROUGE-L and CIDEr are coco-caption's, from pycocoevalcap (the METEOR 1.5 jar, ``Rouge``,
    ``Cider``), on PTB-tokenised, lowercased text without punctuation. Without java the
    tokenisation is emulated and METEOR is ``meteor_approx`` (see ``meteor.py``).
    """
    bleu, nist = mteval_bleu_nist(hypotheses, references)
    coco_hyps, coco_refs = coco_tokenized(hypotheses, references)
    meteor_name, meteor_value = meteor(coco_hyps, coco_refs)
    return {"bleu": 100 * bleu, "nist": nist, meteor_name: 100 * meteor_value,
            "rouge_l": 100 * rouge_l(coco_hyps, coco_refs), "cider": cider_d(coco_hyps, coco_refs)}
