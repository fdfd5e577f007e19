"""Methods applied together: LoRA+PE and LoRA+PL (Appendix E), or any list of registered methods.

The cfg lists the sub-methods' own cfgs, applied in order with their own code (no copies):

    name: lora_pe
    methods: [{name: lora, r: 8, targets: [q, v]}, {name: prefix_embed, l_p: 8, l_i: 4}]

Every method freezes what it does not train, so a later one would freeze an earlier one's parameters; what trains
in the end is the union of what each sub-method trains. |Θ| is the sum of the parts (LoRA+PE on GPT-3 at
r_q=r_v=8, l_p=8, l_i=4: 37,748,736 + 147,456).
"""
from __future__ import annotations

from torch import nn

from lora_repro.methods import get_method, register_method
from lora_repro.models.families import Family
from lora_repro.errors import UserError

COMPOSITIONS = ("compose", "lora_pe", "lora_pl")


def apply_composition(model: nn.Module, cfg: dict, family: Family) -> None:
    subs = cfg.get("methods")
    if not isinstance(subs, (list, tuple)) or not subs:
        raise UserError(f"method {cfg.get('name')!r} composes methods: method.methods must be a non-empty list of "
                         "method settings, e.g. [{name: lora, r: 8}, {name: prefix_embed, l_p: 8, l_i: 4}]")
    names = [sub.get("name") if isinstance(sub, dict) else None for sub in subs]
    if None in names or any(n in COMPOSITIONS for n in names):
        raise UserError(f"method.methods entries must be settings of registered methods with a name (not "
                         f"compositions), got names {names}")
    methods = [get_method(n) for n in names]  # unknown names fail before the model is touched
    trained: list[nn.Parameter] = []
    for sub, method in zip(subs, methods):
        method.apply(model, sub, family)
        trained += [p for p in model.parameters() if p.requires_grad]
    keep = {id(p) for p in trained}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def composition_formula(cfg: dict, d: int, n_layers: int) -> tuple[int | None, str]:
    """The sum of the parts' counts (None when a part has no formula)."""
    parts = [get_method(sub["name"]).formula(sub, d, n_layers) for sub in cfg["methods"]]
    if any(value is None for value, _ in parts):
        return None, ""
    return sum(value for value, _ in parts), " + ".join(expr for _, expr in parts)


def describe_composition(cfg: dict) -> str:
    return " + ".join(get_method(sub["name"]).describe(sub) for sub in cfg["methods"])


def composition_from_printed(printed: dict, cfg: dict) -> dict | None:
    """Each part's settings from the printed row, under the part's own key (``lora:``, ``prefix_embed:``)."""
    parts = {sub["name"]: get_method(sub["name"]).from_printed(printed, sub) for sub in cfg.get("methods", [])}
    return None if any(v is None for v in parts.values()) else parts


for _name in COMPOSITIONS:
    register_method(_name, formula=composition_formula, describe=describe_composition,
                    from_printed=composition_from_printed)(apply_composition)
