"""DoRA: magnitude and direction; equals peft's use_dora=True with the same weights, merges and unmerges exactly."""
import copy

import pytest
import torch

from lora_repro.errors import UnsupportedError
from lora_repro.methods import apply_method
from lora_repro.methods.common import load_method_weights, parameter_counts, save_method_weights
from lora_repro.methods.dora import DoRALinear
from lora_repro.methods.lora import lora_layers, merge_lora, unmerge_lora
from test_methods_baselines import D, LAYERS, inputs, tiny

peft = pytest.importorskip("peft", reason="peft (a test-only dependency) is not installed")
DORA = {"name": "dora", "r": 4, "alpha": 8, "targets": ["q", "v"]}


def trained(model):
    torch.manual_seed(3)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_(std=0.5)  # B != 0 and m != ||W0||: both parts do something
            layer.magnitude.mul_(torch.rand_like(layer.magnitude) + 0.5)
    return model


def test_starts_as_the_pretrained_model_and_trains_magnitude_a_and_b():
    base = tiny("bert")
    batch = inputs(base)
    model = apply_method(copy.deepcopy(base), DORA)
    layers = dict(lora_layers(model))
    assert len(layers) == 2 * LAYERS and all(isinstance(layer, DoRALinear) for layer in layers.values())
    torch.testing.assert_close(model(**batch).logits, base(**batch).logits, rtol=0, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier")}
    assert trainable == {f"{name}.{p}" for name in layers for p in ("lora_A", "lora_B", "magnitude")}
    assert parameter_counts(model)["trainable_without_head"] == 2 * LAYERS * (4 * D + D * 4 + D)


def test_equals_peft_use_dora_with_the_same_weights():
    base = tiny("bert")
    batch = inputs(base)
    ours = trained(apply_method(copy.deepcopy(base), DORA))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                                      target_modules=["query", "value"]))
    params = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            module, _, kind = name.rpartition(".")
            if kind in ("lora_A", "lora_B"):
                params[f"base_model.model.{module}.{kind}.default.weight"].copy_(p)
            elif kind == "magnitude":
                params[f"base_model.model.{module}.lora_magnitude_vector.default.weight"].copy_(p)
        theirs.base_model.model.classifier.load_state_dict(ours.classifier.state_dict())
    torch.testing.assert_close(theirs(**batch).logits, ours(**batch).logits, rtol=0, atol=1e-5)
    # the gradients agree too (the norm is a constant in both)
    ours(**batch).logits.sum().backward()
    theirs(**batch).logits.sum().backward()
    for name, p in ours.named_parameters():
        module, _, kind = name.rpartition(".")
        if kind == "magnitude":
            their = params[f"base_model.model.{module}.lora_magnitude_vector.default.weight"]
            torch.testing.assert_close(their.grad, p.grad, rtol=1e-4, atol=1e-6)


def test_merges_and_unmerges_exactly_and_reloads(tmp_path):
    base = tiny("bert")
    batch = inputs(base)
    model = trained(apply_method(copy.deepcopy(base), DORA))
    before = model(**batch).logits
    merge_lora(model)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=1e-5)
    unmerge_lora(model)
    w0 = dict(base.named_parameters())
    for name, layer in lora_layers(model):
        torch.testing.assert_close(layer.base.weight, w0[f"{name}.weight"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=1e-6)
    save_method_weights(model, tmp_path / "method", DORA, "tiny-bert")
    again = load_method_weights(copy.deepcopy(base), tmp_path / "method")
    torch.testing.assert_close(again(**batch).logits, before, rtol=0, atol=1e-6)


def test_a_fused_projection_is_refused():
    with pytest.raises(UnsupportedError, match="dora"):
        apply_method(tiny("gpt2"), DORA)
