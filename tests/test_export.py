"""lora_repro.export: suite LoRA checkpoints <-> peft adapters, on tiny config-built models of each family.

Each family: suite -> peft gives peft's logits equal to the suite's; peft -> suite (an adapter peft trained and
saved) gives the suite's logits equal to peft's; suite -> peft -> suite gives back identical weights and config.
GPT-2's q/v slices of c_attn go to peft as one block-structured LoRA on c_attn (exact)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lora_repro.errors import MissingInputError, UnsupportedError
from lora_repro.export import PEFT_CONFIG, PEFT_WEIGHTS, from_peft, main, to_peft
from lora_repro.methods import apply_method
from lora_repro.methods.common import (CONFIG_FILE, WEIGHTS_FILE, load_method_weights, read_method_config,
                                      save_method_weights)
from test_methods_baselines import inputs, tiny

peft = pytest.importorskip("peft", reason="peft (a test-only dependency) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore")
ATOL = 1e-5

# family, suite method settings, peft's names for the same targets, peft's extra modules_to_save
CASES = {
    "bert": ("bert", {"name": "lora", "targets": ["q", "v"]}, ["query", "value"], None),
    "bert-bias-all": ("bert", {"name": "lora", "targets": ["q", "v"], "bias": "all"}, None, None),
    "bert-rslora": ("bert", {"name": "rslora", "targets": ["q", "k", "v", "o"]}, None, None),
    "roberta": ("roberta", {"name": "lora", "targets": ["q", "v", "o"]}, ["query", "value"], None),
    "deberta-v2": ("deberta-v2", {"name": "lora", "targets": ["q", "v", "fc1"]}, ["query_proj", "value_proj"],
                   ["pooler"]),
    "llama": ("llama", {"name": "lora", "targets": ["q", "v", "o", "fc2"]}, ["q_proj", "v_proj"], None),
    "gpt2": ("gpt2", {"name": "lora", "targets": ["q", "v"]}, ["c_attn"], None),
    "gpt2-rslora": ("gpt2", {"name": "rslora", "targets": ["q", "v"]}, None, None),
    "gpt2-mixed": ("gpt2", {"name": "lora", "targets": ["q", "v", "o", "fc1"], "bias": "lora_only"}, None, None),
}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(model)).logits


def perturb(model, scale: float = 0.1) -> None:
    """Move every trainable parameter (B off zero, the head, biases) so the adapter changes the outputs."""
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)


def suite_run(tmp_path, family: str, method: dict):
    """A tiny model with the suite's LoRA, trained (perturbed) and saved as a run folder (run/method/)."""
    model = tiny(family)
    cfg = {"r": 4, "alpha": 8, "dropout": 0.0, "init": "kaiming", "init_std": 0.02, "bias": "none", **method}
    apply_method(model, cfg)
    perturb(model)
    save_method_weights(model, tmp_path / "run" / "method", cfg, f"tiny-{family}")
    return model, tmp_path / "run"


def peft_load(family: str, adapter_dir):
    return peft.PeftModel.from_pretrained(tiny(family), str(adapter_dir)).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_suite_to_peft_gives_the_same_logits(tmp_path, case):
    family, method, _, _ = CASES[case]
    ours, run = suite_run(tmp_path, family, method)
    expected = logits(ours)
    assert not torch.allclose(expected, logits(tiny(family)), atol=1e-3)  # the adapter does something
    out = to_peft(run, tmp_path / "peft")
    theirs = peft_load(family, out)
    torch.testing.assert_close(logits(theirs), expected, atol=ATOL, rtol=0)
    config = json.loads((out / PEFT_CONFIG).read_text())
    assert config["use_rslora"] == (method["name"] == "rslora")
    assert config["bias"] == method.get("bias", "none")
    assert config["task_type"] == ("CAUSAL_LM" if family in ("llama", "gpt2") else "SEQ_CLS")
    assert config["fan_in_fan_out"] == (family == "gpt2")


@pytest.mark.parametrize("case", list(CASES))
def test_suite_to_peft_to_suite_is_identical(tmp_path, case):
    family, method, _, _ = CASES[case]
    ours, run = suite_run(tmp_path, family, method)
    back = from_peft(to_peft(run, tmp_path / "peft"), tmp_path / "back")
    original, again = load_file(str(run / "method" / WEIGHTS_FILE)), load_file(str(back / WEIGHTS_FILE))
    assert set(again) == set(original)
    for key in original:
        assert torch.equal(again[key], original[key]), key
    assert read_method_config(back)["method"] == read_method_config(run / "method")["method"]
    assert read_method_config(back)["base_model"] == f"tiny-{family}"
    torch.testing.assert_close(logits(load_method_weights(tiny(family), back)), logits(ours), atol=ATOL, rtol=0)


def test_gpt2_slices_become_one_block_structured_lora_on_c_attn(tmp_path):
    ours, run = suite_run(tmp_path, "gpt2", {"name": "lora", "targets": ["q", "v"]})
    out = to_peft(run, tmp_path / "peft")
    config = json.loads((out / PEFT_CONFIG).read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16  # r' = 2r, alpha'/r' = alpha/r
    assert config["target_modules"] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    tensors = load_file(str(out / PEFT_WEIGHTS))
    layer = ours.transformer.h[0].attn.c_attn
    a = tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    b = tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    d = ours.config.n_embd
    assert a.shape == (8, d) and b.shape == (3 * d, 8)
    assert torch.equal(a, torch.cat([layer.lora["q"].lora_A, layer.lora["v"].lora_A]))
    assert torch.equal(b[:d, :4], layer.lora["q"].lora_B) and torch.equal(b[2 * d:, 4:], layer.lora["v"].lora_B)
    assert not b[d:2 * d].any() and not b[:d, 4:].any() and not b[2 * d:, :4].any()
    # peft's ΔW on c_attn is the suite's, zero on k
    torch.testing.assert_close((b @ a) * config["lora_alpha"] / config["r"], layer.delta_weight().T, atol=1e-6, rtol=0)


def test_gpt2_rslora_slices_keep_their_scaling(tmp_path):
    _, run = suite_run(tmp_path, "gpt2", {"name": "rslora", "targets": ["q", "v"]})
    config = json.loads((to_peft(run, tmp_path / "peft") / PEFT_CONFIG).read_text())
    assert config["r"] == 8 and config["use_rslora"]
    assert config["lora_alpha"] / config["r"] ** 0.5 == pytest.approx(8 / 4 ** 0.5)


def test_gpt2_mixed_targets_use_rank_and_alpha_patterns(tmp_path):
    _, run = suite_run(tmp_path, "gpt2", {"name": "lora", "targets": ["q", "v", "o"]})
    config = json.loads((to_peft(run, tmp_path / "peft") / PEFT_CONFIG).read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert config["rank_pattern"] == {r"transformer\.h\.0\.attn\.c_attn": 8, r"transformer\.h\.1\.attn\.c_attn": 8}
    assert set(config["alpha_pattern"].values()) == {16}


def test_head_goes_in_as_modules_to_save(tmp_path):
    _, run = suite_run(tmp_path, "deberta-v2", {"name": "lora", "targets": ["q", "v"]})
    out = to_peft(run, tmp_path / "peft")
    assert json.loads((out / PEFT_CONFIG).read_text())["modules_to_save"] == ["classifier", "pooler"]
    keys = set(load_file(str(out / PEFT_WEIGHTS)))
    assert {"base_model.model.classifier.weight", "base_model.model.pooler.dense.weight"} <= keys
    theirs = peft_load("deberta-v2", out)
    assert torch.equal(theirs.base_model.model.pooler.modules_to_save["default"].dense.weight,
                       load_file(str(run / "method" / WEIGHTS_FILE))["pooler.dense.weight"])


def peft_trained(tmp_path, family: str, **settings):
    """An adapter peft made, trained (perturbed) and saved."""
    task = "CAUSAL_LM" if family in ("llama", "gpt2") else "SEQ_CLS"
    config = peft.LoraConfig(r=4, lora_alpha=8, task_type=task, fan_in_fan_out=family == "gpt2", **settings)
    model = peft.get_peft_model(tiny(family), config).eval()
    perturb(model)
    model.save_pretrained(str(tmp_path / "peft"))
    return model, tmp_path / "peft"


PEFT_CASES = {name: (family, targets, extra) for name, (family, _, targets, extra) in CASES.items() if targets}


@pytest.mark.parametrize("case", list(PEFT_CASES))
def test_peft_to_suite_gives_the_same_logits(tmp_path, case):
    family, targets, extra = PEFT_CASES[case]
    theirs, adapter = peft_trained(tmp_path, family, target_modules=targets, modules_to_save=extra)
    out = from_peft(adapter, tmp_path / "suite")
    method = read_method_config(out)["method"]
    assert method["name"] == "lora" and method["r"] == 4 and method["alpha"] == 8
    ours = load_method_weights(tiny(family), out)
    torch.testing.assert_close(logits(ours), logits(theirs), atol=ATOL, rtol=0)
    # the suite re-exports it to peft with the same logits
    again = peft_load(family, to_peft(out, tmp_path / "again"))
    torch.testing.assert_close(logits(again), logits(theirs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("settings", [
    {"target_modules": r".*\.attention\.self\.(query|value)", "use_rslora": True, "bias": "all"},
    {"target_modules": ["query", "key", "dense"], "bias": "lora_only"},
], ids=["regex-rslora-bias-all", "list-lora-only"])
def test_peft_to_suite_regex_targets_rslora_and_biases(tmp_path, settings):
    theirs, adapter = peft_trained(tmp_path, "bert", **settings)
    out = from_peft(adapter, tmp_path / "suite")
    method = read_method_config(out)["method"]
    assert method["name"] == ("rslora" if settings.get("use_rslora") else "lora")
    assert method["bias"] == settings["bias"]
    ours = load_method_weights(tiny("bert"), out)
    torch.testing.assert_close(logits(ours), logits(theirs), atol=ATOL, rtol=0)
    suite_lora = {n[:-len(".lora_A")] for n, _ in ours.named_parameters() if n.endswith(".lora_A")}
    peft_lora = {n[len("base_model.model."):-len(".lora_A.default.weight")] for n, _ in theirs.named_parameters()
                 if n.endswith(".lora_A.default.weight")}
    assert suite_lora == peft_lora


@pytest.mark.parametrize("settings, why", [
    ({"target_modules": ["query", "value"], "use_dora": True}, "DoRA"),
    ({"target_modules": ["query", "value"], "rank_pattern": {"value": 2}}, "rank_pattern"),
    ({"target_modules": ["query", "value"], "layers_to_transform": [0]}, "layers_to_transform"),
    ({"target_modules": ["word_embeddings"]}, "embedding"),
    ({"target_modules": ["query"], "modules_to_save": ["LayerNorm"]}, "inside the pretrained body"),
], ids=["dora", "rank-pattern", "layers-to-transform", "embedding", "body-modules-to-save"])
def test_from_peft_refuses_what_the_suite_does_not_implement(tmp_path, settings, why):
    _, adapter = peft_trained(tmp_path, "bert", **settings)
    with pytest.raises(UnsupportedError, match=why):
        from_peft(adapter, tmp_path / "suite")
    assert not (tmp_path / "suite").exists()


def test_from_peft_refuses_other_peft_types(tmp_path):
    model = peft.get_peft_model(tiny("llama"), peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    model.save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(UnsupportedError, match="PROMPT_TUNING.*LoRA"):
        from_peft(tmp_path / "peft", tmp_path / "suite")


def test_edited_export_converts_as_a_plain_peft_adapter(tmp_path):
    """The suite config in the metadata is used only while the adapter is still what it describes: trained further
    in peft, a GPT-2 c_attn LoRA stays one LoRA on the whole c_attn (exact, rank 2r)."""
    _, run = suite_run(tmp_path, "gpt2", {"name": "lora", "targets": ["q", "v"]})
    theirs = peft_load("gpt2", to_peft(run, tmp_path / "peft"))
    with torch.no_grad():
        theirs.base_model.model.transformer.h[0].attn.c_attn.lora_B["default"].weight.add_(0.1)
    theirs.save_pretrained(str(tmp_path / "edited"))
    out = from_peft(tmp_path / "edited", tmp_path / "suite")
    method = read_method_config(out)["method"]
    assert method["r"] == 8
    assert method["targets"] == [r"transformer\.h\.0\.attn\.c_attn", r"transformer\.h\.1\.attn\.c_attn"]
    torch.testing.assert_close(logits(load_method_weights(tiny("gpt2"), out)), logits(theirs), atol=ATOL, rtol=0)


def test_base_model_comes_from_the_run_record(tmp_path):
    """A run folder's results.json names the model's hub id: peft's base_model_name_or_path."""
    _, run = suite_run(tmp_path, "roberta", {"name": "lora", "targets": ["q", "v"]})
    (run / "results.json").write_text(json.dumps({"config": {"model": {
        "name": "roberta-base", "hub_id": "FacebookAI/roberta-base", "architecture": {"model_type": "roberta"}}}}))
    config = json.loads((to_peft(run, tmp_path / "peft") / PEFT_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "FacebookAI/roberta-base" and not config["fan_in_fan_out"]
    assert read_method_config(from_peft(tmp_path / "peft", tmp_path / "back"))["base_model"] == "tiny-roberta"


def test_to_peft_refuses_non_lora_methods_naming_the_supported_ones(tmp_path):
    model = tiny("bert")
    apply_method(model, {"name": "bitfit"})
    save_method_weights(model, tmp_path / "run" / "method", {"name": "bitfit"}, "tiny-bert")
    with pytest.raises(UnsupportedError, match="'bitfit'.*lora, rslora"):
        to_peft(tmp_path / "run", tmp_path / "peft")


def test_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(MissingInputError, match="no such folder"):
        to_peft(tmp_path / "nope", tmp_path / "peft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match=CONFIG_FILE):
        to_peft(tmp_path / "empty", tmp_path / "peft")
    with pytest.raises(MissingInputError, match="no such folder"):
        from_peft(tmp_path / "nope", tmp_path / "suite")
    with pytest.raises(MissingInputError, match=PEFT_CONFIG):
        from_peft(tmp_path / "empty", tmp_path / "suite")


def test_cli_both_ways_and_one_line_errors(tmp_path, capsys):
    ours, run = suite_run(tmp_path, "llama", {"name": "lora", "targets": ["q", "v"]})
    assert main(["peft", str(run), str(tmp_path / "peft"), "--base-model", "some/llama"]) == 0
    assert json.loads((tmp_path / "peft" / PEFT_CONFIG).read_text())["base_model_name_or_path"] == "some/llama"
    assert main(["from-peft", str(tmp_path / "peft"), str(tmp_path / "back")]) == 0
    torch.testing.assert_close(logits(load_method_weights(tiny("llama"), tmp_path / "back")), logits(ours),
                               atol=ATOL, rtol=0)
    capsys.readouterr()
    assert main(["peft", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lora_repro: error: ") and err.count("\n") == 1 and "nope" in err
    model = tiny("bert")
    apply_method(model, {"name": "bitfit"})
    save_method_weights(model, tmp_path / "bitfit" / "method", {"name": "bitfit"}, "tiny-bert")
    assert main(["peft", str(tmp_path / "bitfit"), str(tmp_path / "x")]) == 2
    assert "lora, rslora" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bogus"])


def test_python_dash_m_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lora_repro.export", "from-peft", str(tmp_path / "nope"),
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such folder" in done.stderr


def test_peft_targets_that_also_name_head_layers_stay_in_the_body(tmp_path):
    """peft puts no LoRA inside modules_to_save: target 'dense' adapts RoBERTa's body dense layers, not the head's
    classifier.dense; the suite's target is kept to the body so it wraps the same layers."""
    theirs, adapter = peft_trained(tmp_path, "roberta", target_modules=["dense"])
    out = from_peft(adapter, tmp_path / "suite")
    assert read_method_config(out)["method"]["targets"] == [r"^(?=(?:roberta)\.)(?:.*\.)?dense"]
    ours = load_method_weights(tiny("roberta"), out)
    assert type(ours.classifier.dense).__name__ == "Linear"
    torch.testing.assert_close(logits(ours), logits(theirs), atol=ATOL, rtol=0)


def test_to_peft_refuses_lora_inside_the_head(tmp_path):
    _, run = suite_run(tmp_path, "roberta", {"name": "lora", "targets": ["dense"]})
    with pytest.raises(UnsupportedError, match="task-head layers.*classifier.dense"):
        to_peft(run, tmp_path / "peft")
