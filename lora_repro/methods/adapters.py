"""Bottleneck adapters, the LoRA paper's adapter baselines (Section 5.1): one module, four placements.

    adapter(h) = h + W_up f(W_down h)          W_down: r x d (+ bias r), W_up: d x r (+ bias d)
    |Θ| = L_adpt (2 d r + r + d) + 2 L_LN d    (L_LN: adapters with their own LayerNorm, AdapterL only)

adapter_h  Houlsby et al. 2019: two adapters per block, on the attention output projection (family "o") and on
           the FFN output projection ("fc2"), before the residual. microsoft/LoRA ran it with swish. The adapter
           sits between the projection and its dropout (microsoft/LoRA: after the dropout; same at eval).
adapter_l  Lin et al. 2020: one adapter per block on the block's output (after the MLP, its residual and, for
           post-LN encoders, the LayerNorm), with its own trainable LayerNorm: h + W_up f(W_down LN(h)).
adapter_p  Pfeiffer et al. 2021, as microsoft/LoRA ran it: one adapter after the FFN. Post-LN encoders: the
           adapter reads the FFN sublayer's LayerNorm output z = LN(h + x) and adds to h, then the same frozen
           LayerNorm again: LN(h + f(z) + x). Pre-LN decoders have no such LayerNorm: the adapter acts on the FFN
           output before the residual (Houlsby's second adapter).
adapter_d  AdapterDrop (Rücklé et al. 2020): adapter_h (or ``placement: pfeiffer``) whose adapters in the lowest
           blocks are skipped. ``random_drop`` (robust AdapterDrop): every training batch skips the adapters of the
           lowest n blocks, n drawn uniformly from 0..L-1; evaluation skips the lowest ``eval_drop_layers`` (the
           inference saving). ``drop_layers`` removes the lowest blocks' adapters altogether (specialized
           AdapterDrop; the only setting that changes |Θ|).

The up-projection starts at zero (``init: zero_up``), so every variant is the pretrained model at init;
``init: houlsby`` draws both projections from N(0, init_std) truncated at 2 std (near-identity, Houlsby et al.).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.common import freeze
from lora_repro.methods.ft_top2 import block_submodule, transformer_blocks
from lora_repro.models.families import Family
from lora_repro.errors import UnsupportedError, UserError

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
INITS = ("zero_up", "houlsby")
PLACEMENTS = {  # placement -> sites per block; "attention"/"ffn": after the o/fc2 projection, "block": block output
    "houlsby": ("attention", "ffn"),
    "lin": ("block",),
    "pfeiffer": ("ffn_pfeiffer",),
}
VARIANTS = {"adapter_h": "houlsby", "adapter_l": "lin", "adapter_p": "pfeiffer", "adapter_d": None}
ADAPTER = "adapter"  # child name of every adapter module: parameter names end in adapter.{down,up,layer_norm}.*


class Bottleneck(nn.Module):
    """The adapter: ``residual + W_up f(W_down LN?(x))``; ``residual`` defaults to ``x``."""

    def __init__(self, d: int, r: int, activation: str = "relu", layer_norm: bool = False, init: str = "zero_up",
                 init_std: float = 1e-2, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        check_bottleneck(r)
        if activation not in ACTIVATIONS:
            raise UserError(f"unknown adapter activation {activation!r}; choices: {', '.join(ACTIVATIONS)}")
        if init not in INITS:
            raise UserError(f"unknown adapter init {init!r}; choices: {', '.join(INITS)}")
        self.layer_norm = nn.LayerNorm(d, eps=eps, device=device, dtype=dtype) if layer_norm else nn.Identity()
        self.down = nn.Linear(d, r, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(r, d, device=device, dtype=dtype)
        self.reset_parameters(init, init_std)

    def reset_parameters(self, init: str = "zero_up", init_std: float = 1e-2) -> None:
        nn.init.trunc_normal_(self.down.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        if init == "zero_up":  # exactly the pretrained model at init, as LoRA's B = 0
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.trunc_normal_(self.up.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(self.layer_norm(x))))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return (x if residual is None else residual) + self.delta(x)


class AdapterDrop:
    """Which blocks' adapters run in the current forward pass; a forward pre-hook on the model draws it."""

    def __init__(self, n_blocks: int, random_drop: bool, eval_drop_layers: int):
        if not isinstance(eval_drop_layers, int) or not 0 <= eval_drop_layers < n_blocks:
            raise UserError(f"method.eval_drop_layers must be an integer in 0..{n_blocks - 1}, "
                             f"got {eval_drop_layers!r}")
        self.n_blocks, self.random_drop, self.eval_drop_layers = n_blocks, bool(random_drop), eval_drop_layers
        self.dropped = eval_drop_layers  # the lowest this many blocks skip their adapters

    def draw(self, model: nn.Module, args) -> None:
        random = model.training and self.random_drop
        self.dropped = int(torch.randint(0, self.n_blocks, ())) if random else self.eval_drop_layers

    def runs(self, block: int) -> bool:
        return block >= self.dropped

    def gate(self, block: int) -> Callable[[], bool]:
        return functools.partial(self.runs, block)  # a bound method: deep copies of the model stay consistent


class _AdaptOutput:
    """Forward hook: the hooked module's output (a tensor, or a tuple whose first item is the hidden states)
    goes through the adapter. Hooks keep the pretrained modules and their parameter names untouched."""

    def __init__(self, adapter: Bottleneck, active: Callable[[], bool] | None = None):
        self.adapter, self.active = adapter, active

    def __call__(self, module: nn.Module, args, output):
        if self.active is not None and not self.active():
            return None  # AdapterDrop: this block's adapter is skipped in this pass
        if isinstance(output, torch.Tensor):
            return self.adapter(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (self.adapter(output[0]),) + tuple(output[1:])
        raise TypeError(f"cannot place an adapter after {type(module).__name__}: its output is {type(output).__name__}")


class PfeifferOutput(nn.Module):
    """A post-LN sublayer output (dense -> dropout -> LayerNorm(h + input), e.g. BertOutput) with Pfeiffer's adapter.

    It takes over the original module's children, so their parameter names do not change."""

    def __init__(self, original: nn.Module, adapter: Bottleneck, active: Callable[[], bool] | None = None):
        super().__init__()
        self.dense, self.dropout, self.LayerNorm = original.dense, original.dropout, original.LayerNorm
        self.adapter, self.active = adapter, active

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden_states))
        if self.active is None or self.active():
            h = self.adapter(self.LayerNorm(h + input_tensor), residual=h)
        return self.LayerNorm(h + input_tensor)


def check_bottleneck(r) -> None:
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise UserError(f"method.bottleneck (the adapter's r) must be a positive integer, got {r!r}")


def _is_post_ln_output(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, a, None), nn.Module) for a in ("dense", "dropout", "LayerNorm"))


def _check_free(parent: nn.Module, parent_name: str) -> None:
    if hasattr(parent, ADAPTER):
        raise UserError(f"{parent_name or type(parent).__name__} already has an adapter: an adapter method was "
                         "applied twice")


def _attach(parent: nn.Module, parent_name: str, adapter: Bottleneck) -> None:
    _check_free(parent, parent_name)
    parent.add_module(ADAPTER, adapter)


def add_adapters(model: nn.Module, family: Family, placement: str, r: int, activation: str = "relu",
                 init: str = "zero_up", init_std: float = 1e-2, drop_layers: int = 0,
                 drop: AdapterDrop | None = None) -> list[str]:
    """Insert adapters (trainable, everything else untouched); returns the adapter modules' names.
    ``drop_layers``: the lowest blocks get none; ``drop``: decides per pass which blocks' adapters run."""
    if placement not in PLACEMENTS:
        raise UserError(f"unknown adapter placement {placement!r}; choices: {', '.join(PLACEMENTS)}")
    check_bottleneck(r)
    blocks = transformer_blocks(model, family)
    if not isinstance(drop_layers, int) or not 0 <= drop_layers < len(blocks):
        raise UserError(f"method.drop_layers must be an integer in 0..{len(blocks) - 1} (the model has "
                         f"{len(blocks)} blocks), got {drop_layers!r}")
    d = model.config.hidden_size
    names = []
    for index, (_, block_name, block) in enumerate(blocks):
        if index < drop_layers:
            continue
        active = drop.gate(index) if drop is not None else None
        ref = next(block.parameters())
        for site in PLACEMENTS[placement]:
            adapter = Bottleneck(d, r, activation, layer_norm=site == "block", init=init, init_std=init_std,
                                 eps=getattr(model.config, "layer_norm_eps", 1e-5), device=ref.device, dtype=ref.dtype)
            if site == "block":  # Lin et al.: on the block's output hidden states
                _attach(block, block_name, adapter)
                block.register_forward_hook(_AdaptOutput(adapter, active))
                names.append(f"{block_name}.{ADAPTER}")
                continue
            logical = "o" if site == "attention" else "fc2"
            if logical not in family.modules:
                raise UnsupportedError(f"family {family.name} has no {logical!r} module: {placement} adapters "
                                          "cannot be placed")
            proj_name, proj = block_submodule(model, block_name, family.modules[logical], logical)
            parent_name, _, child = proj_name.rpartition(".")
            parent = model.get_submodule(parent_name)
            if site == "ffn_pfeiffer" and _is_post_ln_output(parent) and child == "dense":
                _check_free(parent, parent_name)
                grand_name, _, attr = parent_name.rpartition(".")
                replacement = PfeifferOutput(parent, adapter, active)
                setattr(model.get_submodule(grand_name), attr, replacement)
            else:  # Houlsby (and Pfeiffer on pre-LN decoders): after the projection, before the residual
                _attach(parent, parent_name, adapter)
                proj.register_forward_hook(_AdaptOutput(adapter, active))
            names.append(f"{parent_name}.{ADAPTER}")
    return names


def adapter_settings(cfg: dict, variant: str) -> dict:
    """The settings one variant runs with (yaml values win; the defaults are microsoft/LoRA's)."""
    placement = VARIANTS[variant] or {"houlsby": "houlsby", "pfeiffer": "pfeiffer"}.get(cfg.get("placement", "houlsby"))
    if placement is None:
        raise UserError(f"method.placement for {variant} must be houlsby or pfeiffer, got {cfg.get('placement')!r}")
    default_act = "swish" if placement == "houlsby" else "relu"
    return {"placement": placement, "r": cfg.get("bottleneck"), "activation": cfg.get("activation") or default_act,
            "init": cfg.get("init", "zero_up"), "init_std": cfg.get("init_std", 1e-2),
            "drop_layers": cfg.get("drop_layers", 0) if variant == "adapter_d" else 0}


def _add_drop(model: nn.Module, family: Family, cfg: dict) -> AdapterDrop:
    drop = AdapterDrop(len(transformer_blocks(model, family)), cfg.get("random_drop", True),
                       cfg.get("eval_drop_layers", 0))
    model.register_forward_pre_hook(drop.draw)
    return drop


def _apply(variant: str):
    def apply(model: nn.Module, cfg: dict, family: Family) -> None:
        settings = adapter_settings(cfg, variant)
        check_bottleneck(settings["r"])
        freeze(model)
        drop = _add_drop(model, family, cfg) if variant == "adapter_d" else None
        add_adapters(model, family, **settings, drop=drop)
        if cfg.get("train_layer_norms", False):  # Houlsby et al. also tuned the pretrained LayerNorms
            for _, _, block in transformer_blocks(model, family)[settings["drop_layers"]:]:
                for name, module in block.named_modules():
                    if "norm" in type(module).__name__.lower() and ADAPTER not in name.split("."):
                        module.requires_grad_(True)
    apply.__name__ = f"apply_{variant}"
    return apply


def adapter_formula(d: int, r: int, n_adapters: int, n_layer_norms: int = 0) -> int:
    """Section 5.1: |Θ| = L_adpt (2 d r + r + d) + 2 L_LN d."""
    return n_adapters * (2 * d * r + r + d) + 2 * n_layer_norms * d


def _formula(variant: str):
    def formula(cfg: dict, d: int, n_layers: int) -> tuple[int, str]:
        r, kept = cfg["bottleneck"], n_layers - cfg.get("drop_layers", 0)
        per_block = len(PLACEMENTS[adapter_settings(cfg, variant)["placement"]])
        n_ln = kept if variant == "adapter_l" else 0  # AdapterL's adapters have their own LayerNorm
        expr = f"{per_block * kept}·(2·{d}·{r}+{r}+{d})" + (f" + 2·{n_ln}·{d}" if n_ln else "")
        return adapter_formula(d, r, per_block * kept, n_ln), expr
    return formula


def _describe(variant: str):
    def describe(cfg: dict) -> str:
        extra = f", drop_layers={cfg['drop_layers']}" if cfg.get("drop_layers") else ""
        placement = f", {cfg.get('placement', 'houlsby')}" if VARIANTS[variant] is None else ""
        return f"r={cfg['bottleneck']}{placement}{extra}"
    return describe


def adapter_from_printed(printed: dict, cfg: dict) -> dict | None:
    return {"bottleneck": printed["r"]} if "r" in printed else None


for _variant in VARIANTS:
    register_method(_variant, validate=lambda cfg: check_bottleneck(cfg.get("bottleneck")),
                    formula=_formula(_variant), describe=_describe(_variant),
                    size_knob=("bottleneck r", lambda cfg, v: {**cfg, "bottleneck": v}),
                    from_printed=adapter_from_printed, recipe_keys={"bottleneck": "bottleneck"})(_apply(_variant))

