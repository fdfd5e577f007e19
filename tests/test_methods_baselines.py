"""The paper's baselines: adapters (H, L, P, D), prefix-embedding / prefix-layer tuning with infix tokens, FT^Top2 and
LoRA+PE / LoRA+PL compositions. Per method: exactly the paper's parameters train (names and Section 5.1 counts), the
output at init is the base model's where the method is an identity, optimizer steps move only those parameters,
save/load round-trips; prefix tokens sit where the paper puts them; peft agrees where it implements the same thing."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lora_repro.methods import apply_method
from lora_repro.methods.common import is_head, load_method_weights, parameter_counts, save_method_weights
from lora_repro.methods.prefix import Insertion, PrefixTokens, context_length
from lora_repro.methods import get_method
from lora_repro.methods.adapters import adapter_formula

D, LAYERS, VOCAB = 32, 2, 100


def lora_count(d: int, r: int, n_layers: int) -> int:
    """Section 5.1's |Θ| for LoRA on W_q and W_v, as the lora method states it."""
    return get_method("lora").formula({"r": r, "targets": ["q", "v"]}, d, n_layers)[0]


def prefix_count(d: int, n_tokens: int, n_layers: int = 1) -> int:
    """PreEmbed (one layer) or PreLayer (every layer) with n_tokens special tokens."""
    method = "prefix_layer" if n_layers > 1 else "prefix_embed"
    return get_method(method).formula({"l_p": n_tokens, "l_i": 0}, d, n_layers)[0]


def tiny(family: str, causal: bool | None = None, layers: int = LAYERS) -> nn.Module:
    """A 2-block model of the family with random weights and no dropout (same module names as the real ones)."""
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=layers, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, num_labels=2)
    if family == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(**common)).eval()
    if family == "roberta":
        return tf.RobertaForSequenceClassification(tf.RobertaConfig(**{**common, "max_position_embeddings": 66})).eval()
    if family == "mpnet":
        return tf.MPNetForSequenceClassification(tf.MPNetConfig(**{**common, "max_position_embeddings": 66})).eval()
    if family == "deberta-v2":
        config = tf.DebertaV2Config(**common, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"],
                                    position_biased_input=False, pooler_hidden_size=D, pooler_dropout=0.0)
        return tf.DebertaV2ForSequenceClassification(config).eval()
    if family == "gpt2":
        config = tf.GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=layers, n_head=2, n_positions=64, resid_pdrop=0.0,
                               embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, num_labels=2)
        return (tf.GPT2ForSequenceClassification(config) if causal is False else tf.GPT2LMHeadModel(config)).eval()
    if family == "llama":
        config = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=layers, num_attention_heads=2,
                                num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64,
                                bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return tf.LlamaForCausalLM(config).eval()
    raise ValueError(family)


def inputs(model: nn.Module, batch: int = 2, length: int = 9) -> dict:
    torch.manual_seed(1)
    ids = torch.randint(5, VOCAB, (batch, length))
    mask = torch.ones_like(ids)
    mask[-1, length - 3:] = 0  # right padding on the last row
    ids[-1, length - 3:] = 1
    return {"input_ids": ids, "attention_mask": mask}


def loss_of(model: nn.Module, batch: dict) -> torch.Tensor:
    if not type(model).__name__.endswith("ForSequenceClassification"):  # causal LM: 3 context tokens, then target
        return model(**batch, labels=lm_labels(batch)).loss
    return model(**batch, labels=torch.tensor([0, 1] * (batch["input_ids"].shape[0] // 2) +
                                             [0] * (batch["input_ids"].shape[0] % 2))).loss


def lm_labels(batch: dict, context: int = 3) -> torch.Tensor:
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :context] = -100
    return labels


def trainable(model: nn.Module, with_head: bool = False) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad and (with_head or not is_head(model, n))}


def steps_change_only_trainable(model: nn.Module, batch: dict, steps: int = 3) -> None:
    """A few Adam steps (scale-free: tiny gradients still move): every trainable parameter moves, nothing else does."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()
    model.eval()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved == p.requires_grad, f"{name}: requires_grad={p.requires_grad} but moved={moved}"


def perturb(model: nn.Module) -> None:
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)


# ------------------------------------------------------------------------------------------------ adapters
SITES = {  # family -> where each site's adapter lives, per block index
    "bert": {"attention": "bert.encoder.layer.{}.attention.output", "ffn": "bert.encoder.layer.{}.output",
             "block": "bert.encoder.layer.{}"},
    "mpnet": {"attention": "mpnet.encoder.layer.{}.attention.attn", "ffn": "mpnet.encoder.layer.{}.output",
              "block": "mpnet.encoder.layer.{}"},
    "deberta-v2": {"attention": "deberta.encoder.layer.{}.attention.output", "ffn": "deberta.encoder.layer.{}.output",
                   "block": "deberta.encoder.layer.{}"},
    "gpt2": {"attention": "transformer.h.{}.attn", "ffn": "transformer.h.{}.mlp", "block": "transformer.h.{}"},
    "llama": {"attention": "model.layers.{}.self_attn", "ffn": "model.layers.{}.mlp", "block": "model.layers.{}"},
}
VARIANT_SITES = {"adapter_h": ("attention", "ffn"), "adapter_l": ("block",), "adapter_p": ("ffn",),
                 "adapter_d": ("attention", "ffn")}


def expected_adapter_params(family: str, variant: str, r: int, first_block: int = 0) -> dict[str, int]:
    shapes = {"down.weight": r * D, "down.bias": r, "up.weight": D * r, "up.bias": D}
    expected = {}
    for block in range(first_block, LAYERS):
        for site in VARIANT_SITES[variant]:
            own = dict(shapes, **({"layer_norm.weight": D, "layer_norm.bias": D} if site == "block" else {}))
            expected.update({f"{SITES[family][site].format(block)}.adapter.{k}": v for k, v in own.items()})
    return expected


@pytest.mark.parametrize("family", list(SITES))
@pytest.mark.parametrize("variant", list(VARIANT_SITES))
def test_adapters_train_exactly_the_papers_parameters(family, variant):
    base = tiny(family)
    batch = inputs(base)
    reference = base(**batch).logits
    model = copy.deepcopy(base)
    r, drop = 4, (1 if variant == "adapter_d" else 0)
    apply_method(model, {"name": variant, "bottleneck": r, "drop_layers": drop, "random_drop": False})
    names = trainable(model)
    assert names == expected_adapter_params(family, variant, r, first_block=drop)
    per_block = len(VARIANT_SITES[variant])
    n_ln = LAYERS if variant == "adapter_l" else 0
    assert sum(names.values()) == adapter_formula(D, r, per_block * (LAYERS - drop), n_ln)
    assert parameter_counts(model)["trainable_without_head"] == sum(names.values())
    torch.testing.assert_close(model(**batch).logits, reference, rtol=0, atol=1e-6)  # identity at init
    steps_change_only_trainable(model, batch)
    assert not torch.allclose(model(**batch).logits, reference, atol=1e-4)


def test_houlsby_adapter_follows_the_projection_before_the_residual():
    model = tiny("bert")
    apply_method(model, {"name": "adapter_h", "bottleneck": 4, "init": "houlsby"})
    output = model.bert.encoder.layer[0].attention.output
    x, residual = torch.randn(2, 5, D), torch.randn(2, 5, D)
    h = nn.functional.linear(x, output.dense.weight, output.dense.bias)  # the projection without its hook
    adapted = h + output.adapter.up(torch.nn.functional.silu(output.adapter.down(h)))  # swish by default
    torch.testing.assert_close(output(x, residual), output.LayerNorm(adapted + residual))


def test_pfeiffer_adapter_reads_the_ffn_layernorm_output():
    """microsoft/LoRA's AdapterP: h = FFN out; z = LN(h + x); LN(h + f(z) + x) with the same frozen LayerNorm."""
    model = tiny("bert")
    apply_method(model, {"name": "adapter_p", "bottleneck": 4, "init": "houlsby"})
    out = model.bert.encoder.layer[1].output
    assert type(out).__name__ == "PfeifferOutput"
    x, residual = torch.randn(2, 5, 64), torch.randn(2, 5, D)
    h = out.dense(x)
    z = out.LayerNorm(h + residual)
    expected = out.LayerNorm(h + out.adapter.up(torch.relu(out.adapter.down(z))) + residual)
    torch.testing.assert_close(out(x, residual), expected)


def test_lin_adapter_acts_on_the_block_output_with_its_own_layernorm():
    base = tiny("gpt2")
    model = copy.deepcopy(base)
    apply_method(model, {"name": "adapter_l", "bottleneck": 4, "init": "houlsby"})
    hidden = torch.randn(2, 5, D)
    block_out = base.transformer.h[0](hidden)
    adapter = model.transformer.h[0].adapter
    expected = block_out + adapter.up(torch.relu(adapter.down(adapter.layer_norm(block_out))))
    torch.testing.assert_close(model.transformer.h[0](hidden), expected)


def test_adapter_drop_skips_the_lowest_blocks():
    base = tiny("bert")
    batch = inputs(base)
    model, every = copy.deepcopy(base), copy.deepcopy(base)
    apply_method(model, {"name": "adapter_d", "bottleneck": 4, "init": "houlsby", "eval_drop_layers": 1})
    apply_method(every, {"name": "adapter_d", "bottleneck": 4, "eval_drop_layers": 0})
    perturb(model)
    every.load_state_dict(model.state_dict())
    assert not torch.allclose(model(**batch).logits, every(**batch).logits)
    # evaluation skips block 0's adapters: the same as block 0's adapters being the identity
    with torch.no_grad():
        for site in ("attention.output", "output"):
            every.bert.encoder.layer[0].get_submodule(site).adapter.up.weight.zero_()
            every.bert.encoder.layer[0].get_submodule(site).adapter.up.bias.zero_()
    torch.testing.assert_close(model(**batch).logits, every(**batch).logits)
    # robust AdapterDrop: training passes draw how many lowest blocks skip their adapters (dropout is off here)
    model.train()
    torch.manual_seed(3)
    outputs = {tuple(model(**batch).logits.flatten().tolist()) for _ in range(20)}
    assert len(outputs) == LAYERS


@pytest.mark.parametrize("settings, message", [
    ({"bottleneck": 0}, "positive integer"), ({"bottleneck": -2}, "positive integer"),
    ({"bottleneck": 2.5}, "positive integer"), ({"bottleneck": None}, "positive integer"),
    ({"bottleneck": 4, "activation": "softsign"}, "unknown adapter activation"),
    ({"bottleneck": 4, "init": "ones"}, "unknown adapter init"),
])
def test_bad_adapter_settings_fail_clearly(settings, message):
    with pytest.raises(ValueError, match=message):
        apply_method(tiny("bert"), {"name": "adapter_h", **settings})


def test_bad_adapter_drop_settings_fail_clearly():
    with pytest.raises(ValueError, match="drop_layers must be an integer in 0..1"):
        apply_method(tiny("bert"), {"name": "adapter_d", "bottleneck": 4, "drop_layers": 2})
    with pytest.raises(ValueError, match="eval_drop_layers"):
        apply_method(tiny("bert"), {"name": "adapter_d", "bottleneck": 4, "eval_drop_layers": 5})
    with pytest.raises(ValueError, match="placement"):
        apply_method(tiny("bert"), {"name": "adapter_d", "bottleneck": 4, "placement": "lin"})
    model = tiny("gpt2")
    apply_method(model, {"name": "adapter_h", "bottleneck": 4})
    with pytest.raises(ValueError, match="applied twice"):
        apply_method(model, {"name": "adapter_p", "bottleneck": 4})


def test_bitfit_on_a_model_without_biases_fails_before_training():
    """Llama-style bodies (the SmolLM2 stand-in) have no biases: BitFit would silently train only the head."""
    import transformers as tf

    llama = tf.LlamaForSequenceClassification(tiny("llama").config)
    with pytest.raises(ValueError, match="no bias terms in its pretrained body"):
        apply_method(llama, {"name": "bitfit"})
    apply_method(tiny("bert"), {"name": "bitfit"})  # BERT has them


def test_houlsby_can_also_train_the_pretrained_layernorms():
    model = tiny("gpt2")
    apply_method(model, {"name": "adapter_h", "bottleneck": 4, "train_layer_norms": True})
    norms = {n for n in trainable(model) if ".ln_" in n}
    assert norms == {f"transformer.h.{i}.ln_{j}.{w}" for i in range(LAYERS) for j in (1, 2) for w in ("weight", "bias")}
    assert sum(trainable(model).values()) == adapter_formula(D, 4, 2 * LAYERS, 2 * LAYERS)


@pytest.mark.parametrize("family, cfg", [
    ("bert", {"name": "adapter_p", "bottleneck": 4}), ("gpt2", {"name": "adapter_l", "bottleneck": 4}),
    ("bert", {"name": "adapter_d", "bottleneck": 4, "drop_layers": 1}), ("gpt2", {"name": "ft_top2", "top_layers": 1}),
    ("bert", {"name": "prefix_layer", "l_p": 3, "l_i": 2}), ("gpt2", {"name": "prefix_embed", "l_p": 3, "l_i": 2}),
    ("bert", {"name": "lora_pl", "methods": [{"name": "lora", "r": 2}, {"name": "prefix_layer", "l_p": 2, "l_i": 1}]}),
])
def test_save_load_round_trip(tmp_path, family, cfg):
    model = tiny(family)
    batch = inputs(model)
    apply_method(model, cfg)
    perturb(model)
    expected = model(**batch).logits
    save_method_weights(model, tmp_path / "method", cfg, "tiny")
    fresh = tiny(family)
    load_method_weights(fresh, tmp_path / "method")
    torch.testing.assert_close(fresh(**batch).logits, expected)
    assert trainable(fresh, with_head=True).keys() == trainable(model, with_head=True).keys()


# ------------------------------------------------------------------------------------------------ FT^Top2
def test_ft_top2_trains_the_last_two_blocks_only():
    model = tiny("gpt2", layers=3)  # block 0 stays frozen
    batch = inputs(model)
    reference = model(**batch).logits
    apply_method(model, {"name": "ft_top2"})
    names = trainable(model)
    assert {n.split(".")[2] for n in names} == {"1", "2"} and all(n.startswith("transformer.h.") for n in names)
    assert sum(names.values()) == 2 * sum(p.numel() for p in model.transformer.h[0].parameters())
    assert sum(names.values()) == 2 * (12 * D * D + 13 * D)  # the GPT-2 block size behind the printed 25.19M
    torch.testing.assert_close(model(**batch).logits, reference)
    steps_change_only_trainable(model, batch)
    with pytest.raises(ValueError, match="top_layers"):
        apply_method(tiny("gpt2"), {"name": "ft_top2", "top_layers": 3})


# ------------------------------------------------------------------------------------------------ prefix tuning
def test_insertion_plan_places_prefix_and_infix():
    plan = Insertion.plan(torch.tensor([1, 0]), torch.tensor([4, 6]), n_prefix=2, n_infix=1, length=6)
    assert plan.source.tolist() == [[0, 6, 7, 1, 2, 3, 8, 4, 5], [6, 7, 0, 1, 2, 3, 4, 5, 8]]
    assert plan.special.tolist() == [[1, 2, 6], [0, 1, 8]]
    values = plan.insert(torch.arange(12).view(2, 6), -1)
    assert values.tolist() == [[0, -1, -1, 1, 2, 3, -1, 4, 5], [-1, -1, 6, 7, 8, 9, 10, 11, -1]]


def capture_model_inputs(model: nn.Module) -> dict:
    """The keyword arguments the model's forward receives after the prefix hook (hooks run in order)."""
    seen = {}
    model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    return seen


def test_encoder_prefix_after_cls_and_infix_after_the_input():
    model = tiny("bert")
    apply_method(model, {"name": "prefix_embed", "l_p": 2, "l_i": 3})
    tokens = model.bert.prefix_embed.tokens
    seen = capture_model_inputs(model)
    ids = torch.tensor([[2, 11, 12, 3, 21, 22, 3, 0], [2, 13, 3, 23, 3, 0, 0, 0]])  # [CLS] a [SEP] b [SEP] pad
    mask = (ids != 0).long()
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0]])
    model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=torch.tensor([0, 1]))
    embeds, new_mask = seen["inputs_embeds"], seen["attention_mask"]
    words = model.bert.embeddings.word_embeddings(ids)
    prefix, infix = [1, 2], {0: [9, 10, 11], 1: [7, 8, 9]}  # after [CLS]; after the last attended token
    for row in range(2):
        special = prefix + infix[row]
        real = [j for j in range(13) if j not in special]
        torch.testing.assert_close(embeds[row, special], tokens)
        torch.testing.assert_close(embeds[row, real], words[row])
        assert new_mask[row, special].tolist() == [1] * 5
        assert new_mask[row, real].tolist() == mask[row].tolist()
        assert seen["token_type_ids"][row, real].tolist() == types[row].tolist()
        assert seen["token_type_ids"][row, prefix].tolist() == [0, 0]  # [CLS]'s segment
        assert seen["token_type_ids"][row, infix[row]].tolist() == [1, 1, 1]  # the last segment's
    assert seen["labels"].tolist() == [0, 1]  # a classifier's labels are untouched


def test_decoder_infix_between_context_and_target_with_labels_masked():
    model = tiny("gpt2")
    apply_method(model, {"name": "prefix_embed", "l_p": 2, "l_i": 2})
    seen = capture_model_inputs(model)
    ids = torch.tensor([[11, 12, 13, 51, 52, 0], [14, 15, 53, 54, 55, 56]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, -100, 51, 52, -100], [-100, -100, 53, 54, 55, 56]])
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 10, VOCAB)
    assert seen["labels"].tolist() == [[-100] * 2 + [-100, -100, -100] + [-100] * 2 + [51, 52, -100],
                                       [-100] * 2 + [-100, -100] + [-100] * 2 + [53, 54, 55, 56]]
    assert seen["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1, 0], [1] * 10]
    tokens, words = model.transformer.prefix_embed.tokens, model.transformer.wte(ids)
    torch.testing.assert_close(seen["inputs_embeds"][0, [0, 1, 5, 6]], tokens)  # [P P] c c c [I I] t t pad
    torch.testing.assert_close(seen["inputs_embeds"][1, [0, 1, 4, 5]], tokens)  # [P P] c c [I I] t t t t
    torch.testing.assert_close(seen["inputs_embeds"][0, [2, 3, 4, 7, 8, 9]], words[0])
    # no labels (generation): the whole prompt is the context, the infix follows its last attended token
    model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(seen["inputs_embeds"][0, [0, 1, 7, 8]], tokens)
    with pytest.raises(ValueError, match="mask the context's labels"):
        model(input_ids=ids, attention_mask=mask, labels=ids)


def test_prefix_layer_replaces_the_special_activations_at_every_block():
    model = tiny("gpt2")
    apply_method(model, {"name": "prefix_layer", "l_p": 2, "l_i": 1})
    assert trainable(model) == {"transformer.prefix_layer.tokens": prefix_count(D, 3, LAYERS)}
    seen = {}
    for i, block in enumerate(model.transformer.h):
        block.register_forward_pre_hook(lambda m, a, kw, i=i: seen.__setitem__(i, a[0]), with_kwargs=True)
    ids = torch.randint(5, VOCAB, (2, 6))
    labels = torch.cat([torch.full((2, 3), -100), ids[:, 3:]], dim=1)
    model(input_ids=ids, labels=labels)
    for i in range(LAYERS):
        torch.testing.assert_close(seen[i][:, [0, 1, 5]], model.transformer.prefix_layer.tokens[i].expand(2, -1, -1))


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet", "deberta-v2", "gpt2", "llama"])
@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_prefix_methods_train_only_their_tokens(family, method):
    model = tiny(family)
    batch = inputs(model)
    apply_method(model, {"name": method, "l_p": 3, "l_i": 2})
    layers = LAYERS if method == "prefix_layer" else 1
    prefix = model.base_model_prefix
    assert trainable(model) == {f"{prefix}.{method}.tokens": prefix_count(D, 5, layers)}
    steps_change_only_trainable(model, batch)


@pytest.mark.parametrize("settings, error, message", [
    ({"l_p": 60, "l_i": 4}, ValueError, "leave no room"), ({"l_p": -1, "l_i": 2}, ValueError, "non-negative"),
    ({"l_p": 0, "l_i": 0}, ValueError, "at least 1"), ({"l_p": 2, "l_i": 1, "init": "zeros"}, ValueError, "init"),
])
def test_bad_prefix_settings_fail_before_training(settings, error, message):
    with pytest.raises(error, match=message):
        apply_method(tiny("bert"), {"name": "prefix_layer", **settings})


def test_prefix_context_limits():
    assert context_length(tiny("roberta").config) == 64  # 66 position embeddings minus RoBERTa's padding offset
    model = tiny("bert")
    apply_method(model, {"name": "prefix_embed", "l_p": 10, "l_i": 4})
    with pytest.raises(ValueError, match="trainer.max_seq_len <= 50"):
        model(input_ids=torch.randint(5, VOCAB, (1, 60)))
    model.bert.prefix_embed.check_input_room(50)  # run.prepare asks every module that has it, before training
    with pytest.raises(ValueError, match="trainer.max_seq_len=51 .* <= 50"):
        model.bert.prefix_embed.check_input_room(51)
    with pytest.raises(NotImplementedError, match="pools the last non-padding token"):
        apply_method(tiny("gpt2", causal=False), {"name": "prefix_embed", "l_p": 2, "l_i": 0})
    with pytest.raises(ValueError, match="already has prefix tokens"):
        apply_method(model, {"name": "compose", "methods": [{"name": "prefix_layer", "l_p": 1, "l_i": 0}]})


@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_cached_generation_matches_full_recomputation(method):
    """generate() inserts the tokens in the prompt pass and extends masks/positions at later steps; the result must
    equal greedy decoding by full forward passes (prompt as context, generated tokens as target)."""
    model = tiny("gpt2")
    apply_method(model, {"name": method, "l_p": 2, "l_i": 2, "init": "normal", "init_std": 0.5})
    ids = torch.tensor([[0, 0, 21, 22, 23], [31, 32, 33, 34, 35]])  # left-padded, as batched generation pads
    mask = (torch.arange(5) >= torch.tensor([[2], [0]])).long()
    generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4,
                               do_sample=False, pad_token_id=0)[:, 5:]
    sequence, full_mask = ids, mask
    for _ in range(4):
        labels = torch.cat([torch.full_like(ids, -100), sequence[:, 5:]], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)  # as generate derives them (recomputed by the hook)
        logits = model(input_ids=sequence, attention_mask=full_mask, labels=labels, position_ids=positions).logits
        step = logits[:, -1].argmax(-1, keepdim=True)
        sequence, full_mask = torch.cat([sequence, step], 1), torch.cat([full_mask, torch.ones_like(step)], 1)
    assert generated.tolist() == sequence[:, 5:].tolist()


# ------------------------------------------------------------------------------------------------ peft agrees
peft = pytest.importorskip("peft", reason="peft (a test-only dependency) is not installed")


def test_lora_matches_peft_on_separate_linear_layers():
    base = tiny("bert")
    batch = inputs(base)
    ours = copy.deepcopy(base)
    apply_method(ours, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    perturb(ours)  # B != 0: the adapters do something
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8,
                                                                      target_modules=["query", "value"]))
    lora_params = {n: p for n, p in theirs.named_parameters() if "lora_" in n}
    assert sum(p.numel() for p in lora_params.values()) == sum(trainable(ours).values())
    assert sum(trainable(ours).values()) == lora_count(D, 4, LAYERS)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith(("lora_A", "lora_B")):
                module, kind = name.rsplit(".", 1)
                target = f"base_model.model.{module}.{kind}.default.weight"
                lora_params[target].copy_(p)
        theirs.base_model.model.classifier.load_state_dict(ours.classifier.state_dict())
    torch.testing.assert_close(theirs(**batch).logits, ours(**batch).logits)


def test_prompt_tuning_equals_prefix_embed_without_infix():
    base = tiny("gpt2")
    batch = inputs(base)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # prompt tuning: labels as given
    ours = copy.deepcopy(base)
    apply_method(ours, {"name": "prefix_embed", "l_p": 4, "l_i": 0})
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                                              num_virtual_tokens=4))
    their_tokens = theirs.prompt_encoder["default"].embedding.weight
    assert their_tokens.shape == ours.transformer.prefix_embed.tokens.shape  # same parameters, d x l_p
    with torch.no_grad():
        their_tokens.copy_(ours.transformer.prefix_embed.tokens)
    mine, peft_out = ours(**batch, labels=labels), theirs(**batch, labels=labels)
    torch.testing.assert_close(mine.logits, peft_out.logits)
    torch.testing.assert_close(mine.loss, peft_out.loss)


def test_prefix_tuning_equals_prefix_layer_without_infix():
    """peft stores each layer's keys and values (2 L d per token); PreLayer stores the hidden state they come from
    (L d, the paper's count). Mapping ours through every layer's k/v projection gives peft's table and the outputs."""
    base = tiny("gpt2")
    batch = inputs(base)
    labels = lm_labels(batch)  # peft's prefix has no position that could predict the first token: it is context
    ours = copy.deepcopy(base)
    apply_method(ours, {"name": "prefix_layer", "l_p": 3, "l_i": 0, "init": "normal", "init_std": 0.5})
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.PrefixTuningConfig(task_type="CAUSAL_LM",
                                                                              num_virtual_tokens=3))
    tokens = ours.transformer.prefix_layer.tokens  # (L, l_p, d)
    with torch.no_grad():
        per_layer = []
        for i, block in enumerate(ours.transformer.h):
            qkv = block.attn.c_attn(block.ln_1(tokens[i]))
            per_layer += [qkv[:, D:2 * D], qkv[:, 2 * D:]]  # key, value of layer i
        theirs.prompt_encoder["default"].embedding.weight.copy_(torch.cat(per_layer, dim=-1))
    mine, peft_out = ours(**batch, labels=labels), theirs(**batch, labels=labels)
    torch.testing.assert_close(mine.logits[:, 3:], peft_out.logits)
    torch.testing.assert_close(mine.loss, peft_out.loss)


# ------------------------------------------------------------------------------------------------ compositions
@pytest.mark.parametrize("name, prefix", [("lora_pe", "prefix_embed"), ("lora_pl", "prefix_layer")])
def test_lora_plus_prefix_trains_both_parts(name, prefix):
    model = tiny("bert")
    batch = inputs(model)
    cfg = {"name": name, "methods": [{"name": "lora", "r": 2, "alpha": 2, "targets": ["q", "v"]},
                                     {"name": prefix, "l_p": 3, "l_i": 1}]}
    apply_method(model, cfg)
    names = trainable(model)
    lora = {n: v for n, v in names.items() if n.endswith(("lora_A", "lora_B"))}
    assert len(lora) == 2 * 2 * LAYERS and sum(lora.values()) == lora_count(D, 2, LAYERS)
    layers = LAYERS if prefix == "prefix_layer" else 1
    assert names.keys() - lora.keys() == {f"bert.{prefix}.tokens"}
    assert sum(names.values()) == lora_count(D, 2, LAYERS) + prefix_count(D, 4, layers)
    perturb(model)
    steps_change_only_trainable(model, batch)


def test_bad_compositions_fail_clearly():
    with pytest.raises(ValueError, match="non-empty list"):
        apply_method(tiny("bert"), {"name": "lora_pe", "methods": []})
    with pytest.raises(ValueError, match="not compositions"):
        apply_method(tiny("bert"), {"name": "compose", "methods": [{"name": "lora_pe", "methods": []}]})
    with pytest.raises(ValueError, match="unknown method 'lorra'"):
        apply_method(tiny("bert"), {"name": "compose", "methods": [{"name": "lorra"}]})


def test_prefix_tokens_live_in_the_body_not_the_head():
    model = tiny("bert")
    apply_method(model, {"name": "prefix_embed", "l_p": 2, "l_i": 0})
    assert isinstance(model.bert.prefix_embed, PrefixTokens)
    counts = parameter_counts(model)
    assert counts["trainable_without_head"] == prefix_count(D, 2)
    assert counts["trainable_head"] == sum(p.numel() for p in model.classifier.parameters())
