"""Prefix-embedding (PreEmbed) and prefix-layer (PreLayer) tuning with l_p prefix and l_i infix tokens (Section 5.1).

PreEmbed  l_p + l_i special tokens with trainable word embeddings:               |Θ| = d (l_p + l_i)
PreLayer  the hidden states of those tokens entering every block are trainable
          vectors (the activations computed by the previous block are replaced):  |Θ| = L d (l_p + l_i)

Where the tokens go (the paper: "prefixing" prepends them to the prompt, "infixing" appends them to the prompt):
  decoders  [P_1..P_lp] context [I_1..I_li] target    the prefix before the first attended token; the infix between
            the context and the target, i.e. right before the first token whose label is not -100 (so the last
            infix token predicts the first target token). Without labels (generation) the prompt is the context:
            the infix goes after its last attended token and the model generates from there.
  encoders  [CLS] [P_1..P_lp] segment_a [SEP] segment_b [SEP] [I_1..I_li]   the prefix right after the first token
            (the classifier reads it), the infix after the last attended token: for a classifier the whole input
            is the prompt. Single-sentence and pair inputs are treated alike.
Inserted tokens are attended (mask 1), get label -100 (decoders) and the token type of the token before them.

How: a forward pre-hook on the model turns input_ids into inputs_embeds with the special tokens inserted and extends
attention_mask / token_type_ids / labels / position_ids; PreLayer adds a pre-hook per block that writes its vectors
into the special positions. During cached generation the prompt pass inserts the tokens (their keys and values land
in the transformers Cache like any token's); later steps only get their attention mask and positions extended.
Decoder logits therefore have T + l_p + l_i positions (as peft's prompt tuning returns them).

PreLayer vectors start as the activations of random vocabulary tokens (Li & Liang 2021: real-word initialisation
helps); PreEmbed vectors as those tokens' embeddings. ``init: normal`` draws N(0, init_std) instead.
With l_i = 0, PreEmbed is peft's prompt tuning and PreLayer computes what peft's prefix tuning computes (peft stores
each layer's keys and values, 2 L d per token; PreLayer stores the hidden state they are computed from, L d).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from lora_repro.methods import register_method
from lora_repro.methods.common import find_cache, freeze
from lora_repro.methods.ft_top2 import transformer_blocks
from lora_repro.models.families import Family
from lora_repro.errors import UnsupportedError, UserError

IGNORE_INDEX = -100
INITS = ("vocab", "normal")
# Models whose position ids start after the padding index (RoBERTa-style): usable positions = max - (pad + 1).
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "mpnet")


def context_length(config) -> int:
    """How many positions the model can take (RoBERTa's 514 position embeddings give 512)."""
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        raise UnsupportedError(f"{config.model_type} has no max_position_embeddings: prefix tuning cannot check "
                                  "its context length")
    if config.model_type in PADDING_OFFSET_TYPES:
        n -= (config.pad_token_id or 0) + 1
    return n


@dataclass
class Insertion:
    """Where one batch's special tokens go. ``source`` maps each position of the longer sequence to an original
    position t < T or to T + k for special token k; ``special`` holds the special tokens' new positions."""
    source: torch.Tensor  # (B, T + n)
    special: torch.Tensor  # (B, n): prefix tokens first, then infix tokens
    prefix_at: torch.Tensor  # (B,) original index the prefix goes before
    infix_at: torch.Tensor  # (B,) original index the infix goes before
    length: int

    @classmethod
    def plan(cls, prefix_at: torch.Tensor, infix_at: torch.Tensor, n_prefix: int, n_infix: int,
             length: int) -> "Insertion":
        device = prefix_at.device
        infix_at = torch.maximum(infix_at, prefix_at)
        n = n_prefix + n_infix
        t = torch.arange(length, device=device).unsqueeze(0)
        moved = t + n_prefix * (t >= prefix_at[:, None]) + n_infix * (t >= infix_at[:, None])
        special = torch.cat([prefix_at[:, None] + torch.arange(n_prefix, device=device),
                             infix_at[:, None] + n_prefix + torch.arange(n_infix, device=device)], dim=1)
        batch = prefix_at.shape[0]
        source = torch.empty(batch, length + n, dtype=torch.long, device=device)
        source.scatter_(1, moved, t.expand(batch, -1))
        source.scatter_(1, special, (length + torch.arange(n, device=device)).expand(batch, -1))
        return cls(source, special, prefix_at, infix_at, length)

    @property
    def n_special(self) -> int:
        return self.special.shape[1]

    def insert(self, x: torch.Tensor, specials: torch.Tensor | float | int) -> torch.Tensor:
        """x: (B, T, ...) -> (B, T + n, ...), special positions taken from ``specials`` (broadcast to (B, n, ...))."""
        batch, n, rest = x.shape[0], self.n_special, x.shape[2:]
        if isinstance(specials, torch.Tensor):
            extra = specials.to(dtype=x.dtype, device=x.device).expand(batch, n, *rest)
        else:
            extra = x.new_full((batch, n, *rest), specials)
        full = torch.cat([x, extra], dim=1)
        index = self.source.view(batch, -1, *([1] * len(rest))).expand(batch, self.source.shape[1], *rest)
        return full.gather(1, index)


def _first_true(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.int8).argmax(dim=1)


def _end_of_attended(mask: torch.Tensor) -> torch.Tensor:
    return mask.shape[1] - _first_true(mask.flip(1))


class PrefixTokens(nn.Module):
    """The special tokens' parameters, ``tokens``: (l_p + l_i, d) for PreEmbed, (L, l_p + l_i, d) for PreLayer."""

    def __init__(self, n_prefix: int, n_infix: int, d: int, n_layers: int | None, decoder: bool, n_ctx: int,
                 device=None, dtype=None):
        super().__init__()
        self.n_prefix, self.n_infix, self.decoder, self.n_ctx = n_prefix, n_infix, decoder, n_ctx
        shape = (n_prefix + n_infix, d) if n_layers is None else (n_layers, n_prefix + n_infix, d)
        self.tokens = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        self.per_layer = n_layers is not None
        self._insertion: Insertion | None = None  # the current forward's (None: nothing inserted this step)
        self._prompt: tuple[torch.Tensor, torch.Tensor] | None = None  # prefix_at, infix_at of the last prompt pass

    def check_input_room(self, max_input_len: int | None) -> None:
        """Called by the training job before it trains, on any module that has this method."""
        if max_input_len and max_input_len + self.n_special > self.n_ctx:
            raise UserError(f"trainer.max_seq_len={max_input_len} + l_p + l_i = {self.n_special} special tokens "
                            f"exceed the model's {self.n_ctx} positions: set trainer.max_seq_len <= "
                            f"{self.n_ctx - self.n_special} or use fewer special tokens")

    def extra_repr(self) -> str:
        return f"l_p={self.n_prefix}, l_i={self.n_infix}, per_layer={self.per_layer}"

    # -- where the tokens go ------------------------------------------------------------------------------------
    def positions(self, mask: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        end = _end_of_attended(mask)
        if not self.decoder:
            return torch.clamp(_first_true(mask) + 1, max=mask.shape[1]), end
        prefix_at = _first_true(mask)
        if labels is None or labels.dim() != 2 or labels.shape != mask.shape:
            return prefix_at, end
        targets = labels != IGNORE_INDEX
        first_target = _first_true(targets)
        has_target = targets.any(dim=1)
        if self.n_infix and bool((has_target & (first_target <= prefix_at)).any()):
            raise UserError("infix tokens go between the context and the target, but some examples' labels start at "
                             "their first token: mask the context's labels with -100 so the boundary is known")
        return prefix_at, torch.where(has_target, first_target, end)

    # -- hooks --------------------------------------------------------------------------------------------------
    def before_model(self, model: nn.Module, args: tuple, kwargs: dict):
        if args:  # every Hugging Face model takes input_ids first
            kwargs = {"input_ids": args[0], **kwargs}
            args = ()
        cache = find_cache(kwargs)
        if cache is not None and cache.get_seq_length() > 0:
            return args, self._cached_step(kwargs)
        ids, embeds = kwargs.pop("input_ids", None), kwargs.pop("inputs_embeds", None)
        if embeds is None:
            embeds = model.get_input_embeddings()(ids)
        batch, length = embeds.shape[:2]
        if length + self.n_special > self.n_ctx:
            raise UserError(f"{length} input tokens + l_p + l_i = {self.n_special} special tokens exceed the "
                             f"model's {self.n_ctx} positions: set trainer.max_seq_len <= "
                             f"{self.n_ctx - self.n_special} or use fewer special tokens")
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=embeds.device)
        if mask.dim() != 2:
            raise UserError(f"prefix tuning needs a 2-D attention_mask (batch, tokens), got shape {tuple(mask.shape)}")
        labels = kwargs.get("labels") if self.decoder else None
        insertion = Insertion.plan(*self.positions(mask, labels), self.n_prefix, self.n_infix, length)
        specials = self.tokens.unsqueeze(0) if not self.per_layer else 0.0  # PreLayer: replaced at every block
        kwargs["inputs_embeds"] = insertion.insert(embeds, specials)
        kwargs["attention_mask"] = mask = insertion.insert(mask, 1)
        if kwargs.get("token_type_ids") is not None:
            types = kwargs["token_type_ids"]
            before = torch.stack([insertion.prefix_at, insertion.infix_at], 1).sub(1).clamp(min=0)
            neighbours = types.gather(1, before)
            kwargs["token_type_ids"] = insertion.insert(types, torch.cat(
                [neighbours[:, :1].expand(-1, self.n_prefix), neighbours[:, 1:].expand(-1, self.n_infix)], 1))
        if labels is not None and labels.dim() == 2 and labels.shape == (batch, length):
            kwargs["labels"] = insertion.insert(labels, IGNORE_INDEX)
        if kwargs.get("position_ids") is not None:  # generate derives them from its (shorter) mask: redo them
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        self._insertion = insertion
        self._prompt = (insertion.prefix_at, insertion.infix_at)
        return args, kwargs

    def _cached_step(self, kwargs: dict) -> dict:
        """A generation step after the prompt pass: the special tokens are in the cache, not in the input."""
        self._insertion = None
        if self._prompt is None:
            raise RuntimeError("a cached generation step before any prompt pass: prefix tuning inserts its tokens in "
                               "the prompt pass (call generate with the prompt, not with a pre-filled cache)")
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            prefix_at, infix_at = self._prompt
            if mask.shape[0] != prefix_at.shape[0]:
                raise RuntimeError(f"batch of {mask.shape[0]} after a prompt pass of {prefix_at.shape[0]}")
            kwargs["attention_mask"] = Insertion.plan(prefix_at, infix_at, self.n_prefix, self.n_infix,
                                                      mask.shape[1]).insert(mask, 1)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + self.n_special
        return kwargs

    def before_block(self, index: int):
        """The pre-hook for block ``index`` (PreLayer): its vectors replace the special positions' hidden states."""
        return functools.partial(self._replace, index)

    def _replace(self, index: int, module: nn.Module, args: tuple, kwargs: dict):
        if self._insertion is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        special = self._insertion.special
        values = self.tokens[index].to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        hidden = hidden.scatter(1, special.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]), values)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    @property
    def n_special(self) -> int:
        return self.n_prefix + self.n_infix

    # -- initialisation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialise(self, model: nn.Module, blocks: list, init: str, init_std: float) -> None:
        if self.tokens.is_meta:
            return
        if init == "normal":
            nn.init.normal_(self.tokens, std=init_std)
            return
        embedding = model.get_input_embeddings()
        ids = torch.randint(0, embedding.num_embeddings, (1, self.n_special), device=self.tokens.device)
        if not self.per_layer:
            self.tokens.copy_(embedding(ids)[0])
            return
        seen: dict[int, torch.Tensor] = {}
        handles = [block.register_forward_pre_hook(_capture(seen, i), with_kwargs=True)
                   for i, (_, _, block) in enumerate(blocks)]
        was_training = model.training
        try:
            model.eval()
            model(input_ids=ids)
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
        self.tokens.copy_(torch.stack([seen[i][0] for i in range(len(blocks))]))


def _capture(store: dict, index: int):
    def hook(module, args, kwargs):
        store[index] = (args[0] if args else kwargs["hidden_states"]).detach()
    return hook


def _check_lengths(cfg: dict, n_ctx: int) -> tuple[int, int]:
    n_prefix, n_infix = cfg.get("l_p", 0), cfg.get("l_i", 0)
    for key, value in (("l_p", n_prefix), ("l_i", n_infix)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"method.{key} must be a non-negative integer, got {value!r}")
    if n_prefix + n_infix == 0:
        raise UserError("method.l_p + method.l_i must be at least 1 (no special tokens: nothing to train)")
    if n_prefix + n_infix >= n_ctx:
        raise UserError(f"l_p + l_i = {n_prefix + n_infix} special tokens leave no room for the input in the "
                         f"model's {n_ctx} positions")
    return n_prefix, n_infix


def add_prefix_tokens(model: nn.Module, family: Family, cfg: dict, per_layer: bool) -> PrefixTokens:
    """Insert the method's tokens and hooks; returns the module that holds the trainable tokens."""
    method = "prefix_layer" if per_layer else "prefix_embed"
    if family.kind == "decoder" and type(model).__name__.endswith("ForSequenceClassification"):
        raise UnsupportedError(f"{method} on {type(model).__name__}: the classifier pools the last non-padding "
                                  "token, which inserted tokens displace; use an encoder or a generation task")
    if any(isinstance(m, PrefixTokens) for m in model.modules()):
        raise UserError(f"{method}: the model already has prefix tokens (one prefix method per model)")
    init = cfg.get("init", "vocab")
    if init not in INITS:
        raise UserError(f"unknown {method} init {init!r}; choices: {', '.join(INITS)}")
    n_ctx = context_length(model.config)
    n_prefix, n_infix = _check_lengths(cfg, n_ctx)
    blocks = transformer_blocks(model, family)
    weight = model.get_input_embeddings().weight
    tokens = PrefixTokens(n_prefix, n_infix, model.config.hidden_size, len(blocks) if per_layer else None,
                          decoder=family.kind == "decoder", n_ctx=n_ctx, device=weight.device, dtype=weight.dtype)
    tokens.initialise(model, blocks, init, cfg.get("init_std", 0.02))
    # inside the pretrained body, so the tokens count as the method's parameters, not the task head's
    prefix = getattr(model, "base_model_prefix", "")
    body = getattr(model, prefix) if prefix and hasattr(model, prefix) else model
    body.add_module(method, tokens)
    model.register_forward_pre_hook(tokens.before_model, with_kwargs=True)
    if per_layer:
        for i, (_, _, block) in enumerate(blocks):
            block.register_forward_pre_hook(tokens.before_block(i), with_kwargs=True)
    return tokens


def _formula(per_layer: bool):
    def formula(cfg: dict, d: int, n_layers: int) -> tuple[int, str]:
        """PreEmbed: d_model × (l_p + l_i); PreLayer: L × d_model × (l_p + l_i)."""
        n_tokens, layers = cfg["l_p"] + cfg["l_i"], n_layers if per_layer else 1
        return layers * d * n_tokens, (f"{layers}·" if layers > 1 else "") + f"{d}·{n_tokens}"
    return formula


def prefix_from_printed(printed: dict, cfg: dict) -> dict | None:
    found = {k: printed[k] for k in ("l_p", "l_i") if k in printed}
    return found or None


def _hooks(per_layer: bool) -> dict:
    return dict(formula=_formula(per_layer), describe=lambda cfg: f"l_p={cfg['l_p']}, l_i={cfg['l_i']}",
                size_knob=("l_p + l_i", lambda cfg, v: {**cfg, "l_p": v, "l_i": 0}), from_printed=prefix_from_printed)


@register_method("prefix_embed", **_hooks(per_layer=False))
def apply_prefix_embed(model: nn.Module, cfg: dict, family: Family) -> None:
    freeze(model)
    add_prefix_tokens(model, family, cfg, per_layer=False)


@register_method("prefix_layer", **_hooks(per_layer=True))
def apply_prefix_layer(model: nn.Module, cfg: dict, family: Family) -> None:
    freeze(model)
    add_prefix_tokens(model, family, cfg, per_layer=True)
