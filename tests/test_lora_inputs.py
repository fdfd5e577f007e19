"""Inputs LoRA used to accept and then do the wrong thing with (issue 13): each is refused with one clear message, or
now works correctly (loading into a merged model, training a merged model)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_repro.errors import UserError
from lora_repro.methods import apply_method
from lora_repro.methods.common import load_method_weights, save_method_weights
from lora_repro.methods.lora import lora_layers, merge_lora, unmerge_lora
from lora_repro.methods.lora_layer import LoRAFusedLinear, LoRALinear

CFG = {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]}


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()


def randomise(model: nn.Module, seed: int) -> None:
    """Non-zero A and B in every LoRA layer (B starts at zero, so merging would otherwise change nothing)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.base.weight.detach().clone() for name, layer in lora_layers(model)}


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


# ---------------------------------------------------------------- 1-3: settings that are refused


@pytest.mark.parametrize("alpha", [0, 0.0, -8, True, float("nan"), float("inf"), None, "8"])
def test_alpha_must_be_a_positive_number(tiny_bert, alpha):
    with pytest.raises(UserError, match=r"method\.alpha .*must be a positive number"):
        apply_method(tiny_bert, {**CFG, "alpha": alpha})
    assert not list(lora_layers(tiny_bert))  # refused before the model was touched
    with pytest.raises(UserError, match="positive number"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=alpha)


@pytest.mark.parametrize("r", [True, False, 0, -1, 2.0, "4"])
def test_rank_must_be_a_positive_integer_and_not_a_bool(tiny_bert, r):
    with pytest.raises(UserError, match=r"method\.r .*must be a positive integer"):
        apply_method(tiny_bert, {**CFG, "r": r, "alpha": 8})
    with pytest.raises(UserError, match="positive integer"):
        LoRALinear(nn.Linear(4, 4), r=r, alpha=8)


def test_alpha_zero_used_to_train_nothing():
    """What the check prevents: with scaling 0, A and B get exactly zero gradient."""
    layer = LoRALinear(nn.Linear(4, 4), r=2, alpha=1)
    layer.scaling = 0.0
    layer(torch.randn(3, 4)).sum().backward()
    assert layer.lora_A.grad.abs().max() == 0 and layer.lora_B.grad.abs().max() == 0


def test_empty_targets_are_refused_naming_the_valid_targets(tiny_bert):
    with pytest.raises(UserError, match=r"method\.targets must be a non-empty list") as error:
        apply_method(tiny_bert, {**CFG, "targets": []})
    assert "q, k, v, o, fc1, fc2" in str(error.value) and "regular expression" in str(error.value)
    with pytest.raises(UserError) as error:  # GPT-2: the q/k/v slices of c_attn and the fused qkv are listed too
        apply_method(tiny_gpt2(), {**CFG, "targets": []})
    assert "gpt2: q, k, v, qkv, o, fc1, fc2" in str(error.value)
    assert "\n" not in str(error.value)
    assert sum(p.requires_grad for p in tiny_bert.parameters()) == len(list(tiny_bert.parameters()))  # untouched


@pytest.mark.parametrize("targets", [[""], ["q", None], "q"])
def test_targets_that_are_not_names_are_refused(tiny_bert, targets):
    with pytest.raises(UserError, match=r"method\.targets"):
        apply_method(tiny_bert, {**CFG, "targets": targets})


# ---------------------------------------------------------------- 4: LoRA applied twice


def test_applying_lora_twice_says_it_is_already_applied(tiny_bert):
    apply_method(tiny_bert, CFG)
    trainable = sorted(n for n, p in tiny_bert.named_parameters() if p.requires_grad)
    with pytest.raises(UserError, match="LoRA is already applied to this model") as error:
        apply_method(tiny_bert, CFG)
    assert "apply=False" in str(error.value) and "fresh base model" in str(error.value)
    assert "matches no linear module" not in str(error.value)
    # the refused second call froze nothing: A and B still train
    assert sorted(n for n, p in tiny_bert.named_parameters() if p.requires_grad) == trainable


def test_load_with_apply_on_a_lora_model_says_already_applied(tmp_path):
    model = apply_method(tiny_gpt2(), CFG)
    save_method_weights(model, tmp_path, CFG, "tiny-gpt2")
    with pytest.raises(UserError, match="already applied.*apply=False"):
        load_method_weights(model, tmp_path)  # apply=True on a model that has LoRA
    load_method_weights(model, tmp_path, apply=False)  # what the message says to do


def test_lora_on_other_weights_of_a_lora_model_is_still_allowed(tiny_bert):
    apply_method(tiny_bert, CFG)
    apply_method(tiny_bert, {**CFG, "targets": ["fc1"]})  # e.g. a composition: q, v then fc1 - nothing wrapped twice
    assert len(list(lora_layers(tiny_bert))) == 6


# ---------------------------------------------------------------- 5: loading method weights into a merged model


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_loading_into_a_merged_model_keeps_w0_and_merges_the_new_weights(tmp_path, tiny_bert, batch, family):
    model = tiny_bert if family == "bert" else tiny_gpt2()
    if family == "gpt2":
        batch = {"input_ids": batch["input_ids"]}
    cfg = CFG
    apply_method(model, cfg)
    w0 = base_weights(model)
    # task B's weights, saved from the same model
    randomise(model, seed=2)
    save_method_weights(model, tmp_path / "task_b", cfg, "tiny")
    unmerged_b = logits(model, batch)
    # the deployed model: task A merged
    randomise(model, seed=1)
    merge_lora(model)
    merged_a = logits(model, batch)
    assert not torch.allclose(merged_a, unmerged_b, atol=1e-3)

    load_method_weights(model, tmp_path / "task_b", apply=False)  # switch tasks on the merged model

    assert all(layer.merged for _, layer in lora_layers(model))  # stays merged ...
    assert torch.allclose(logits(model, batch), unmerged_b, atol=1e-5)  # ... with task B's weights
    unmerge_lora(model)
    for name, layer in lora_layers(model):  # and unmerging gives W0 back (it was off by |BA| before)
        assert torch.allclose(layer.base.weight, w0[name], atol=1e-6), name
    assert torch.allclose(logits(model, batch), unmerged_b, atol=1e-5)


def test_loading_into_an_unmerged_model_leaves_it_unmerged(tmp_path, tiny_bert):
    apply_method(tiny_bert, CFG)
    w0 = base_weights(tiny_bert)
    randomise(tiny_bert, seed=3)
    save_method_weights(tiny_bert, tmp_path, CFG, "tiny")
    load_method_weights(tiny_bert, tmp_path, apply=False)
    assert not any(layer.merged for _, layer in lora_layers(tiny_bert))
    assert all(torch.equal(layer.base.weight, w0[name]) for name, layer in lora_layers(tiny_bert))


# ---------------------------------------------------------------- 6: a merged model put back in train()


@pytest.mark.parametrize("fused", [False, True])
def test_train_on_a_merged_layer_unmerges_and_a_b_get_gradients(fused):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    if fused:
        layer = LoRAFusedLinear(Conv1D(12, 4), {"q": (0, 4), "v": (8, 12)}, r=2, alpha=4)
    else:
        layer = LoRALinear(nn.Linear(4, 6), r=2, alpha=4)
    randomise(layer, seed=4)
    w0 = layer.base.weight.detach().clone()
    x = torch.randn(5, 4)
    layer.eval()
    with torch.no_grad():
        expected = layer(x)
    layer.merge()
    layer.train()
    assert not layer.merged and torch.allclose(layer.base.weight, w0, atol=1e-6)
    out = layer(x)
    assert torch.allclose(out, expected, atol=1e-5)  # the unmerge changed no output
    out.square().sum().backward()
    grads = [p.grad for n, p in layer.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.abs().max() > 0 for g in grads)
    layer.eval()  # eval() leaves the merge state alone
    assert not layer.merged


def test_model_train_after_merge_trains_a_and_b(tiny_bert, batch):
    apply_method(tiny_bert, CFG)
    randomise(tiny_bert, seed=5)
    expected = logits(tiny_bert, batch)
    merge_lora(tiny_bert)
    tiny_bert.train()
    assert not any(layer.merged for _, layer in lora_layers(tiny_bert))
    tiny_bert.eval()
    assert torch.allclose(logits(tiny_bert, batch), expected, atol=1e-5)
    tiny_bert.train()
    tiny_bert(**batch, labels=torch.tensor([0, 1, 0])).loss.backward()
    for name, p in tiny_bert.named_parameters():
        if "lora_" in name:
            assert p.grad is not None and p.grad.abs().max() > 0, name
