"""E2E NLG Challenge metrics, equal to the official scorer (tuetschek/e2e-metrics)."""

from __future__ import annotations

from collections.abc import Sequence

from lora_repro.metrics.coco import cider_d, rouge_l
from lora_repro.metrics.meteor import meteor
from lora_repro.metrics.mteval import mteval_bleu_nist
from lora_repro.metrics.tokenize import coco_tokenize


def e2e_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU, NIST, METEOR, ROUGE-L, CIDEr of the corpus on the LoRA paper's scale.

    BLEU, METEOR and ROUGE-L are x100 (the official script prints them in [0, 1]); NIST and
    CIDEr are as printed. BLEU/NIST follow mteval-v13a on the raw text; METEOR, ROUGE-L and
    CIDEr follow coco-caption on PTB-tokenised, lowercased text without punctuation.
    """
    bleu, nist = mteval_bleu_nist(hypotheses, references)
    coco_hyps = [coco_tokenize(h) for h in hypotheses]
    coco_refs = [[coco_tokenize(r) for r in refs] for refs in references]
    meteor_name, meteor_value = meteor(coco_hyps, coco_refs)
    return {"bleu": 100 * bleu, "nist": nist, meteor_name: 100 * meteor_value,
            "rouge_l": 100 * rouge_l(coco_hyps, coco_refs), "cider": cider_d(coco_hyps, coco_refs)}
