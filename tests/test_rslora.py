"""rsLoRA: LoRA with scaling alpha/sqrt(r); equals peft's use_rslora=True with the same weights and merges exactly."""
import copy
import math

import pytest
import torch

from lora_repro.methods import apply_method
from lora_repro.methods.common import load_method_weights, save_method_weights
from lora_repro.methods.lora import lora_layers, merge_lora, unmerge_lora
from test_methods_baselines import inputs, tiny

peft = pytest.importorskip("peft", reason="peft (a test-only dependency) is not installed")
RSLORA = {"name": "rslora", "r": 4, "alpha": 8, "targets": ["q", "v"]}


def trained(model):
    torch.manual_seed(3)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_()  # B != 0: the adapters do something
    return model


def test_scaling_is_alpha_over_sqrt_r():
    model = apply_method(tiny("bert"), RSLORA)
    assert [layer.scaling for _, layer in lora_layers(model)] == [8 / math.sqrt(4)] * 4


def test_equals_peft_use_rslora_with_the_same_weights():
    base = tiny("bert")
    batch = inputs(base)
    ours = trained(apply_method(copy.deepcopy(base), RSLORA))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, use_rslora=True,
                                                                      target_modules=["query", "value"]))
    params = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith(("lora_A", "lora_B")):
                module, kind = name.rsplit(".", 1)
                params[f"base_model.model.{module}.{kind}.default.weight"].copy_(p)
        theirs.base_model.model.classifier.load_state_dict(ours.classifier.state_dict())
    torch.testing.assert_close(theirs(**batch).logits, ours(**batch).logits, rtol=0, atol=1e-5)
    # and it is not plain LoRA: alpha/r would give other logits
    plain = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    plain.load_state_dict(theirs.state_dict())
    assert not torch.allclose(plain(**batch).logits, ours(**batch).logits, atol=1e-5)


def test_merges_exactly_and_reloads_with_its_scaling(tmp_path):
    base = tiny("bert")
    batch = inputs(base)
    model = trained(apply_method(copy.deepcopy(base), RSLORA))
    before = model(**batch).logits
    weights = {n: p.clone() for n, p in base.named_parameters()}
    merge_lora(model)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=1e-5)
    unmerge_lora(model)
    for name, layer in lora_layers(model):
        torch.testing.assert_close(layer.base.weight, weights[f"{name}.weight"], rtol=0, atol=1e-6)
    save_method_weights(model, tmp_path / "method", RSLORA, "tiny-bert")
    again = load_method_weights(copy.deepcopy(base), tmp_path / "method")
    torch.testing.assert_close(again(**batch).logits, before, rtol=0, atol=1e-6)
