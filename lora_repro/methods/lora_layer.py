"""The LoRA layer: h = W0 x + (alpha / r) * B A x  (Hu et al. 2021, Eq. 3).

It wraps a frozen ``nn.Linear`` (weight: out x in) or GPT-2's ``Conv1D`` (weight: in x out, "fan-in/fan-out").
A (r x in) starts Kaiming-uniform as in loralib (or Gaussian, as the paper's DeBERTa runs had it) and B (out x r)
starts at zero, so the wrapped layer is the pretrained one at init. Dropout acts on the LoRA branch only.
``LoRAFusedLinear`` does the same on chosen output slices of a fused projection (GPT-2's q|k|v ``c_attn``).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn
import torch.nn.functional as F
from lora_repro.errors import UserError

INITS = ("kaiming", "gaussian")


def is_fan_in_fan_out(base: nn.Module) -> bool:
    """GPT-2's Conv1D stores its weight as (in, out) and computes x @ W + b."""
    return type(base).__name__ == "Conv1D"


def in_out_features(base: nn.Module) -> tuple[int, int]:
    if isinstance(base, nn.Linear):
        return base.in_features, base.out_features
    if is_fan_in_fan_out(base):
        return base.weight.shape[0], base.weight.shape[1]
    raise TypeError(f"LoRA wraps nn.Linear or GPT-2 Conv1D, got {type(base).__name__}")


def init_lora_(lora_A: nn.Parameter, lora_B: nn.Parameter, init: str = "kaiming", init_std: float = 0.02) -> None:
    if init == "kaiming":  # loralib's default (and peft's): same init as nn.Linear's weight
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
    else:  # the paper's "random Gaussian"; DeBERTa's _init_weights used N(0, initializer_range=0.02)
        nn.init.normal_(lora_A, std=init_std)
    nn.init.zeros_(lora_B)


def check_rank(r: object) -> int:
    """method.r: a positive integer (a bool is an int to Python, but r=True is a typo, not rank 1)."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
        raise UserError(f"method.r (the LoRA rank) must be a positive integer, got r={r!r}")
    return r


def check_alpha(alpha: object) -> float:
    """method.alpha: a positive finite number. alpha=0 makes the scaling alpha/r zero, and then A and B never
    receive a gradient (dL/dA and dL/dB are both multiplied by it): a run that trains nothing."""
    if (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha)
            or alpha <= 0):
        raise UserError(f"method.alpha (LoRA scaling alpha/r) must be a positive number, got alpha={alpha!r}")
    return alpha


class _LoRAWrapper(nn.Module):
    """What both LoRA layers share: the frozen base, the scaling alpha/r, branch dropout and exact merging.
    Subclasses hold A and B and define ``delta_weight()`` (laid out like the base weight) and ``forward``."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float, init: str):
        super().__init__()
        check_rank(r)
        check_alpha(alpha)
        if init not in INITS:
            raise UserError(f"unknown LoRA init {init!r}; choices: {', '.join(INITS)}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = in_out_features(base)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        self.fan_in_fan_out = is_fan_in_fan_out(base)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W0 + ΔW. Idempotent; computed in fp32 so half-precision weights lose no extra bits."""
        if self.merged:
            return
        w = self.base.weight
        w.copy_((w.float() + self.delta_weight().float()).to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.base.weight
        w.copy_((w.float() - self.delta_weight().float()).to(w.dtype))
        self.merged = False

    def train(self, mode: bool = True) -> "_LoRAWrapper":
        """Back to training unmerges (as loralib's ``train(True)`` does): with ΔW folded into W the LoRA branch is
        skipped, so A and B would get no gradient. Outputs do not change. ``eval()`` leaves the merge state alone."""
        super().train(mode)
        if mode and self.merged:
            self.unmerge()
        return self


class LoRALinear(_LoRAWrapper):
    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0,
                 init: str = "kaiming", init_std: float = 0.02):
        super().__init__(base, r, alpha, dropout, init)
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=weight.dtype, device=weight.device))
        self.reset_lora_parameters(init, init_std)

    def reset_lora_parameters(self, init: str = "kaiming", init_std: float = 0.02) -> None:
        init_lora_(self.lora_A, self.lora_B, init, init_std)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha/r) B A, laid out like the base weight (transposed for Conv1D)."""
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged or not self.enabled:
            return result
        lora = F.linear(F.linear(self.lora_dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        return result + (lora * self.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


class LoRASlice(nn.Module):
    """The A (r x in) and B (stop - start x r) of one output slice of a fused projection."""

    def __init__(self, in_features: int, start: int, stop: int, r: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.start, self.stop = start, stop
        self.lora_A = nn.Parameter(torch.empty(r, in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(stop - start, r, dtype=dtype, device=device))


class LoRAFusedLinear(_LoRAWrapper):
    """LoRA on some output slices of a fused projection: GPT-2's ``c_attn`` computes [q | k | v] in one Conv1D, and
    the paper adapts only q and v (loralib's ``MergedLinear(enable_lora=[True, False, True])``).

    Each adapted slice has its own A (r x in) and B (slice x r), in ``self.lora[name]``, so a state dict reads
    ``...c_attn.lora.q.lora_A`` and the analyses see ΔW_q and ΔW_v as separate rank-r updates. loralib stores the
    same numbers stacked: its lora_A is cat([A_q, A_v]) and its lora_B cat([B_q, B_v]) (a grouped conv1d). As in
    loralib, one dropout mask on x feeds every slice.
    """

    def __init__(self, base: nn.Module, slices: dict[str, tuple[int, int]], r: int, alpha: float,
                 dropout: float = 0.0, init: str = "kaiming", init_std: float = 0.02):
        super().__init__(base, r, alpha, dropout, init)
        for name, (start, stop) in slices.items():
            if not 0 <= start < stop <= self.out_features:
                raise UserError(f"slice {name}={start}:{stop} is outside the {self.out_features} outputs")
        weight = base.weight
        self.lora = nn.ModuleDict({name: LoRASlice(self.in_features, start, stop, r, weight.dtype, weight.device)
                                   for name, (start, stop) in slices.items()})
        self.reset_lora_parameters(init, init_std)

    def reset_lora_parameters(self, init: str = "kaiming", init_std: float = 0.02) -> None:
        for part in self.lora.values():
            init_lora_(part.lora_A, part.lora_B, init, init_std)

    def delta_weight(self) -> torch.Tensor:
        """ΔW of the whole fused projection (zero outside the adapted slices), laid out like the base weight."""
        first = next(iter(self.lora.values())).lora_A
        delta = torch.zeros(self.out_features, self.in_features, dtype=first.dtype, device=first.device)
        for part in self.lora.values():
            delta[part.start:part.stop] = (part.lora_B @ part.lora_A) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged or not self.enabled:
            return result
        h = self.lora_dropout(x)
        delta = 0
        for part in self.lora.values():
            out = F.linear(F.linear(h.to(part.lora_A.dtype), part.lora_A), part.lora_B)
            delta = delta + F.pad(out, (part.start, self.out_features - part.stop))
        return result + (delta * self.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        spans = ", ".join(f"{name}={p.start}:{p.stop}" for name, p in self.lora.items())
        return f"r={self.r}, alpha={self.alpha}, slices=({spans}), merged={self.merged}"
