"""The LoRA layer's properties, tested the way peft tests LoRA (anchors.md B.3) plus loralib's specifics."""
import copy

import pytest
import torch
from scipy import stats
from torch import nn

from lora_repro.methods import apply_method
from lora_repro.methods.common import load_method_weights, parameter_counts, save_method_weights
from lora_repro.methods.lora import inject_lora, lora_disabled, lora_layers, merge_lora, unmerge_lora
from lora_repro.methods.lora_layer import LoRALinear
from lora_repro.models.families import FAMILIES, family_of


def randomise_b(model):
    """B = 0 makes LoRA a no-op; tests of merging need a LoRA that changes the output."""
    torch.manual_seed(2)
    for _, layer in lora_layers(model):
        nn.init.normal_(layer.lora_B, std=0.5)


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_forward_is_the_papers_formula():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(copy.deepcopy(base), r=2, alpha=6)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 6)
    expected = base(x) + (6 / 2) * x @ layer.lora_A.T @ layer.lora_B.T
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert layer.scaling == 3.0
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (5, 2)


def test_conv1d_fan_in_fan_out_matches_linear():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(5, 6)  # GPT-2 layout: weight (in=6, out=5)
    linear = nn.Linear(6, 5)
    linear.weight.data, linear.bias.data = conv.weight.data.T.clone(), conv.bias.data.clone()
    a, b = LoRALinear(conv, 2, 4), LoRALinear(linear, 2, 4)
    b.lora_A.data = a.lora_A.data.clone()
    nn.init.normal_(a.lora_B)
    b.lora_B.data = a.lora_B.data.clone()
    x = torch.randn(3, 6)
    assert torch.allclose(a(x), b(x), atol=1e-6)
    unmerged = a(x)
    a.merge()
    assert torch.allclose(a(x), unmerged, atol=1e-5)


def test_b_zero_is_a_noop_at_init(tiny_bert, batch):
    before = logits(tiny_bert, batch)
    apply_method(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    assert torch.equal(logits(tiny_bert, batch), before)


def test_merge_equals_unmerged_and_differs_from_base(tiny_bert, batch):
    base = logits(tiny_bert, batch)
    apply_method(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "k", "v", "o"]})
    randomise_b(tiny_bert)
    unmerged = logits(tiny_bert, batch)
    assert not torch.allclose(unmerged, base, atol=1e-3)
    merge_lora(tiny_bert)
    assert all(layer.merged for _, layer in lora_layers(tiny_bert))
    assert torch.allclose(logits(tiny_bert, batch), unmerged, atol=1e-5)
    unmerge_lora(tiny_bert)
    assert torch.allclose(logits(tiny_bert, batch), unmerged, atol=1e-5)


def test_merge_is_idempotent_and_toggling_does_not_drift(tiny_bert, batch):
    apply_method(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    randomise_b(tiny_bert)
    w0 = {n: l.base.weight.detach().clone() for n, l in lora_layers(tiny_bert)}
    merge_lora(tiny_bert)
    once = {n: l.base.weight.detach().clone() for n, l in lora_layers(tiny_bert)}
    merge_lora(tiny_bert)  # a second merge must change nothing
    for n, l in lora_layers(tiny_bert):
        assert torch.equal(l.base.weight, once[n])
    for _ in range(100):
        unmerge_lora(tiny_bert)
        merge_lora(tiny_bert)
    unmerge_lora(tiny_bert)
    for n, l in lora_layers(tiny_bert):
        assert torch.allclose(l.base.weight, w0[n], atol=1e-5), "repeated merge/unmerge drifted"


def test_disable_gives_the_base_model(tiny_bert, batch):
    base = logits(tiny_bert, batch)
    apply_method(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    randomise_b(tiny_bert)
    adapted = logits(tiny_bert, batch)
    merge_lora(tiny_bert)
    with lora_disabled(tiny_bert):
        assert torch.allclose(logits(tiny_bert, batch), base, atol=1e-5)
    assert torch.allclose(logits(tiny_bert, batch), adapted, atol=1e-5)


@pytest.mark.parametrize("r, alpha", [(1, 1), (4, 8), (8, 16), (16, 8)])
def test_scaling_is_alpha_over_r(r, alpha):
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    layer = LoRALinear(copy.deepcopy(base), r=r, alpha=alpha)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(5, 16)
    branch = x @ layer.lora_A.T @ layer.lora_B.T
    assert layer.scaling == alpha / r
    assert torch.allclose(layer(x) - base(x), (alpha / r) * branch, atol=1e-5)


def test_only_lora_and_head_parameters_train(tiny_bert, batch):
    apply_method(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    randomise_b(tiny_bert)  # with B = 0, A's first gradients are zero (peft tests with a non-zero B, too)
    trainable = {n for n, p in tiny_bert.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in tiny_bert.named_parameters() if "lora_" in n or n.startswith("classifier.")}
    before = {n: p.detach().clone() for n, p in tiny_bert.named_parameters()}
    optimizer = torch.optim.SGD([p for p in tiny_bert.parameters() if p.requires_grad], lr=0.5)
    tiny_bert.train()
    for _ in range(3):
        loss = tiny_bert(**batch, labels=torch.tensor([0, 1, 1])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for n, p in tiny_bert.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (n in trainable), f"{n}: changed={changed}, trainable={n in trainable}"


def test_parameter_counts_match_the_formula(tiny_bert):
    apply_method(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    counts = parameter_counts(tiny_bert)
    # |Θ| = 2 x L_lora x d x r per adapted matrix pair (A: r x d, B: d x r): 2 layers x 2 matrices
    assert counts["trainable_without_head"] == 2 * (2 * 2) * 32 * 4
    assert counts["trainable_head"] == 32 * 2 + 2


def test_init_kaiming_uniform_and_gaussian():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(512, 512), r=64, alpha=64)
    a = layer.lora_A.detach().flatten().numpy()
    bound = (1 / 512) ** 0.5  # kaiming_uniform with a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert stats.kstest(a, stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > 0.01
    assert stats.kstest(a, stats.norm(scale=a.std()).cdf).pvalue < 0.01
    assert torch.count_nonzero(layer.lora_B) == 0
    layer = LoRALinear(nn.Linear(512, 512), r=64, alpha=64, init="gaussian", init_std=0.02)
    a = layer.lora_A.detach().flatten().numpy()
    assert stats.kstest(a, stats.norm(scale=0.02).cdf).pvalue > 0.01


def test_dropout_acts_on_the_lora_branch_only():
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    layer = LoRALinear(copy.deepcopy(base), r=2, alpha=2, dropout=0.9).train()
    x = torch.randn(4, 8)
    assert torch.equal(layer(x), base(x))  # B = 0: whatever dropout does, the output is the base's
    nn.init.normal_(layer.lora_B)
    outputs = {tuple(layer(x).flatten().tolist()) for _ in range(3)}
    assert len(outputs) > 1  # dropout is active on the branch in training
    layer.eval()
    assert torch.allclose(layer(x), layer(x))


def test_save_load_round_trip(tmp_path, tiny_bert, batch):
    cfg = {"name": "lora", "r": 4, "alpha": 16, "targets": ["q", "v"], "init": "gaussian"}
    fresh = copy.deepcopy(tiny_bert)
    apply_method(tiny_bert, cfg)
    randomise_b(tiny_bert)
    torch.nn.init.normal_(tiny_bert.classifier.weight)
    expected = logits(tiny_bert, batch)
    save_method_weights(tiny_bert, tmp_path, cfg, base_model="tiny-bert")
    meta = (tmp_path / "method_config.json").read_text()
    assert '"r": 4' in meta and '"alpha": 16' in meta and '"gaussian"' in meta and "tiny-bert" in meta
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "method.safetensors")
    assert all("lora_" in k or k.startswith("classifier.") for k in saved)  # LoRA-only (plus head), no base weights
    load_method_weights(fresh, tmp_path)
    assert torch.equal(logits(fresh, batch), expected)


def test_rank_must_be_positive():
    with pytest.raises(ValueError, match="positive integer"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1)


def test_unknown_target_lists_linear_modules(tiny_bert):
    with pytest.raises(ValueError) as error:
        inject_lora(tiny_bert, ["nonexistent_proj"], r=2, alpha=2, family=family_of(tiny_bert))
    assert "matches no linear module" in str(error.value) and "attention.self.query" in str(error.value)


@pytest.mark.parametrize("model_type, targets, expected", [
    ("bert", ["q", "v", "o", "fc2"], ["attention.self.query", "attention.self.value", "attention.output.dense",
                                       "layer.0.output.dense"]),
    ("mpnet", ["q", "v"], ["attention.attn.q", "attention.attn.v"]),
    ("deberta-v2", ["q", "v"], ["attention.self.query_proj", "attention.self.value_proj"]),
    ("llama", ["q", "v", "o"], ["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj"]),
])
def test_logical_targets_per_family(model_type, targets, expected):
    from transformers import AutoConfig, AutoModel

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    if model_type == "llama":
        small.update(num_key_value_heads=1)
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **small))
    names = inject_lora(model, targets, r=2, alpha=2, family=family_of(model))
    for suffix in expected:
        assert any(n.endswith(suffix) for n in names), (suffix, names)
    assert not any(n.endswith("intermediate.dense") for n in names)


def test_every_family_has_attention_names():
    for family in FAMILIES.values():
        assert "o" in family.modules and ("q" in family.modules or family.fused_qkv)
