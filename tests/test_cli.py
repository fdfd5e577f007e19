"""The command line as users run it: bad input fails in one line before anything is written; smoke runs work."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_cli(*args, tmp_path, env_extra=None, timeout=300):
    env = {**os.environ, "LORA_REPRO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lora_repro", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def results_files(tmp_path):
    return sorted((tmp_path / "runs").rglob("results.json"))


@pytest.mark.parametrize("args, expected", [
    (["task=nonexistent"], "Available options in 'task'"),
    (["method=nonexistent"], "Available options in 'method'"),
    (["model=nonexistent"], "Available options in 'model'"),
    (["method.r=0", "smoke=true"], "method.r (the LoRA rank) must be a positive integer"),
    (["method.targets=[nonexistent_proj]", "smoke=true"], "matches no linear module"),
    (["data_dir=/nonexistent/data"], "data folder /nonexistent/data does not exist"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, args, expected):
    result = run_cli(*args, tmp_path=tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert results_files(tmp_path) == []


def test_model_without_weights_names_the_settings(tmp_path):
    result = run_cli("model=roberta-base", "task=rte", tmp_path=tmp_path,
                     env_extra={"LORA_REPRO_DATA": str(tmp_path), "LORA_REPRO_MODELS": str(tmp_path)})
    assert result.returncode != 0
    assert "model.path=DIR" in result.stderr and "model.init=random" in result.stderr
    assert results_files(tmp_path) == []


def test_smoke_run_writes_a_self_describing_record_and_skips_when_done(tmp_path):
    result = run_cli("task=rte", "method=lora", "smoke=true", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = results_files(tmp_path)
    record = json.loads(path.read_text())
    assert record["status"] == "complete" and record["smoke"] is True
    for key in ("config", "git", "model", "parameters", "curve", "best", "last", "wall_time_s", "hardware",
                "memory", "versions", "primary_metric"):
        assert key in record, key
    assert record["parameters"]["trainable_without_head"] > 0
    assert (path.parent / "method" / "method.safetensors").is_file()
    before = path.stat().st_mtime_ns
    again = run_cli("task=rte", "method=lora", "smoke=true", tmp_path=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stderr + again.stdout
    assert path.stat().st_mtime_ns == before


def test_a_half_precision_checkpoint_loads_as_fp32_master_weights(tmp_path):
    """transformers 5 loads dtype="auto": an fp16 copy (as carried to a GPU machine) would train full FT in fp16."""
    import torch
    from transformers import BertConfig, BertModel

    from lora_repro.models import load_model

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    BertModel(config).to(torch.float16).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float16"
    model, source = load_model({"name": "tiny", "path": str(tmp_path)}, "classification", num_labels=2)
    assert source.kind == "dir" and {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_run_group_can_be_named_from_the_command_line(tmp_path):
    """The folder under output_root: the experiment's name by default, any name with run_group=..."""
    result = run_cli("+experiment=quickstart", "hydra.mode=RUN", "task=rte", "method=lora", "smoke=true",
                     "run_group=my_ablation", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = results_files(tmp_path)
    assert path.relative_to(tmp_path / "runs").parts[0] == "my_ablation"
    assert json.loads(path.read_text())["experiment"] == "my_ablation"
