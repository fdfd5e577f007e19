"""Where the paper's logical weight names live in each architecture family.

The paper speaks of W_q, W_k, W_v, W_o (attention) and the MLP; Hugging Face names them differently per family.
Each pattern is a regular expression matched against the *end* of a module's qualified name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from lora_repro.errors import UserError


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "encoder" | "decoder"
    modules: dict[str, str]  # logical name -> regex on the module path
    layers: str  # regex matching one transformer block (used by methods that act per block)
    # GPT-2 packs q, k, v into one Conv1D (c_attn): logical q/k/v are slices of its output, in fused_order
    # (equal parts, as GPT2Attention splits it). Targets q/v then mean LoRA on those slices only (the paper's setting).
    fused_qkv: str | None = None
    fused_order: tuple[str, ...] = ()
    notes: str = ""
    model_types: tuple[str, ...] = field(default_factory=tuple)


_BERT_LIKE = {
    "q": r"attention\.self\.query", "k": r"attention\.self\.key", "v": r"attention\.self\.value",
    "o": r"attention\.output\.dense", "fc1": r"intermediate\.dense", "fc2": r"layer\.\d+\.output\.dense",
}
_LLAMA_LIKE = {
    "q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj", "o": r"self_attn\.o_proj",
    "fc1": r"mlp\.up_proj", "gate": r"mlp\.gate_proj", "fc2": r"mlp\.down_proj",
}

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("bert", "encoder", _BERT_LIKE, r"encoder\.layer\.\d+", model_types=("bert", "roberta", "xlm-roberta", "electra")),
    Family("mpnet", "encoder", {
        "q": r"attention\.attn\.q", "k": r"attention\.attn\.k", "v": r"attention\.attn\.v", "o": r"attention\.attn\.o",
        "fc1": r"intermediate\.dense", "fc2": r"layer\.\d+\.output\.dense",
    }, r"encoder\.layer\.\d+", model_types=("mpnet",)),
    Family("deberta-v2", "encoder", {
        "q": r"attention\.self\.query_proj", "k": r"attention\.self\.key_proj", "v": r"attention\.self\.value_proj",
        "o": r"attention\.output\.dense", "fc1": r"intermediate\.dense", "fc2": r"layer\.\d+\.output\.dense",
    }, r"encoder\.layer\.\d+", model_types=("deberta-v2", "deberta")),
    Family("gpt2", "decoder", {
        "qkv": r"attn\.c_attn", "o": r"attn\.c_proj", "fc1": r"mlp\.c_fc", "fc2": r"mlp\.c_proj",
    }, r"transformer\.h\.\d+", fused_qkv=r"attn\.c_attn", fused_order=("q", "k", "v"), model_types=("gpt2",)),
    Family("llama", "decoder", _LLAMA_LIKE, r"model\.layers\.\d+",
           model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "smollm3", "olmo2")),
]}


def family_of(model_or_type) -> Family:
    model_type = model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise UserError(f"no module map for model_type {model_type!r}; known: {', '.join(known)}. "
                     "Add a Family in lora_repro/models/families.py or give explicit module regexes as targets.")
