"""The method interface: generic code (the job, the recipe, the parameter report, the training loop) works for a
method it has never heard of, and names none; the training path has no import cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torch import nn

from lora_repro import methods
from lora_repro.config import compose
from lora_repro.errors import UserError
from lora_repro.methods import get_method, register_method
from lora_repro.methods.common import freeze, parameter_counts
from lora_repro.report import param_counts as pc
from lora_repro.run import apply_recipe, run, to_dict

PACKAGE = Path(__file__).resolve().parent.parent / "lora_repro"
GENERIC = ["run.py", "training.py", "checkpointing.py", "tasks/classification.py", "generation.py",
           "report/param_counts.py"]


@pytest.fixture
def layer_norm_tuning(monkeypatch):
    """A method registered here, with no yaml and no line anywhere else: tune the LayerNorms (size knob: none)."""
    def apply(model: nn.Module, cfg: dict, family) -> None:
        freeze(model)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)

    methods.method_names()  # every method module registered first, into the registry that stays
    monkeypatch.setattr(methods, "_METHODS", dict(methods._METHODS))
    register_method("ln_tuning", describe=lambda cfg: "every LayerNorm",
                    formula=lambda cfg, d, n_layers: (2 * 2 * n_layers * d, f"2·2·{n_layers}·{d}"))(apply)
    return "ln_tuning"


def test_a_new_method_runs_end_to_end_through_generic_code(layer_norm_tuning, tmp_path):
    cfg = to_dict(compose(["smoke=true", "data_source=local", "trainer.max_steps=2", f"output_root={tmp_path}"]))
    cfg["method"] = {"name": layer_norm_tuning}
    record = run(cfg)
    assert record["status"] == "complete" and record["method"] == layer_norm_tuning
    assert record["parameters"]["trainable_without_head"] > 0
    assert (Path(record["run_dir"]) / "method" / "method.safetensors").is_file()


def test_the_parameter_report_asks_the_method(layer_norm_tuning):
    model = pc.build_on_meta("roberta-base", classifier=True)
    d, layers = model.config.hidden_size, model.config.num_hidden_layers
    assert pc.formula(layer_norm_tuning, {}, d, layers) == (2 * 2 * 12 * 768, "2·2·12·768")
    methods.apply_method(model, {"name": layer_norm_tuning})
    # RoBERTa's two LayerNorms per block and the embeddings' one: the formula's 2·2·L·d plus 2·d
    assert parameter_counts(model)["trainable_without_head"] == 2 * 2 * 12 * 768 + 2 * 768
    assert pc.settings_that_print(layer_norm_tuning, {}, "0.04M", d, layers) == []  # no size knob: nothing to vary


def test_recipe_fills_the_settings_the_method_names():
    """LoRA names r and alpha as filled from Appendix D's lora_r / lora_alpha (RoBERTa-large: r 8, alpha 16)."""
    cfg = to_dict(compose(["model=roberta-large", "task=rte", "method=lora", "trainer=paper", "method.r=null",
                           "method.alpha=null"]))
    filled = apply_recipe(cfg)["method"]
    assert (filled["r"], filled["alpha"]) == (8, 16)


def test_a_typo_in_a_method_setting_names_the_valid_ones(tmp_path):
    cfg = to_dict(compose(["smoke=true", "data_source=local", f"output_root={tmp_path}", "+method.rr=4"]))
    with pytest.raises(UserError, match=r"method 'lora' has no setting rr; its settings: alpha, bias, .*targets"):
        run(cfg)
    assert not any(tmp_path.rglob("results.json"))


@pytest.mark.parametrize("override, message", [
    ("+trainer.warmup_ratoi=0.1", r"trainer has no setting warmup_ratoi; its settings: .*warmup_ratio"),
    ("+task.max_train_example=10", r"task has no setting max_train_example; its settings: .*max_train_examples"),
])
def test_a_typo_in_any_group_names_the_valid_settings(tmp_path, override, message):
    cfg = to_dict(compose(["smoke=true", "data_source=local", f"output_root={tmp_path}", override]))
    with pytest.raises(UserError, match=message):
        run(cfg)


def test_generic_modules_name_no_method():
    """No function of the generic modules tests for a method's name (module-level data may: param_counts' notes
    on the paper's printed rows are keyed by the row's method)."""
    names = set(methods.method_names())
    for relative in GENERIC:
        tree = ast.parse((PACKAGE / relative).read_text())
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        strings = {node.value for function in functions for node in ast.walk(function)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not strings & names, f"{relative} names methods {sorted(strings & names)}"


def imports_of(relative: str) -> set[str]:
    tree = ast.parse((PACKAGE / relative).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_training_path_has_no_import_cycle():
    """job (run) -> training loop (training) -> a task's plan (tasks.classification, generation): never back."""
    assert "lora_repro.run" not in imports_of("training.py")
    for plan in ("tasks/classification.py", "generation.py"):
        assert not {"lora_repro.run", "lora_repro.generation"} & imports_of(plan) - {plan}
    assert not {"lora_repro.tasks.classification", "lora_repro.generation"} & imports_of("training.py")
