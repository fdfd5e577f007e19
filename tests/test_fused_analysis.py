"""Section 7 analysis on GPT-2's fused c_attn (issue 13): each adapted slice (q, v) is its own module, with its own
A, B and W = that slice of the weight (W_q, not the whole 3d x d matrix; Conv1D stores it (in, out))."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from lora_repro.analysis import experiments as ex
from lora_repro.analysis.checkpoint import iter_lora_modules, iter_model_lora_modules
from lora_repro.analysis.spectrum import amplification, delta_w
from lora_repro.errors import UserError
from lora_repro.methods import apply_method
from lora_repro.methods.common import save_method_weights, trainable_state_dict
from lora_repro.methods.lora import lora_layers, merge_lora

D = 32
SITES = ["L0.q", "L0.v", "L1.q", "L1.v"]


def lora(r: int) -> dict:
    return {"name": "lora", "r": r, "alpha": 8, "targets": ["q", "v"]}


def build(method: dict):
    """What run.prepare builds for these runs: a tiny random GPT-2 (random draws from the caller's seed) + LoRA."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=D, n_head=2, vocab_size=100, n_positions=32)).eval()
    return apply_method(model, method)


def fake_prepare(cfg: dict):
    return None, None, {"source": "synthetic"}, None, build(cfg["method"]), None


def train(model, seed: int) -> None:
    """Stand-in for training: move A off its init a little, make B non-zero."""
    generator = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_A"):
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
            elif name.endswith("lora_B"):
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))


def write_run(root: Path, r: int, seed: int = 0) -> Path:
    method = lora(r)
    run_dir = root / f"r{r}_s{seed}"
    config = {"model": {"name": "tiny-gpt2"}, "task": {"name": "e2e"}, "method": method, "seed": seed,
              "run_group": "x", "label": f"r={r}"}
    torch.manual_seed(seed)  # as run.run() seeds before prepare
    model = build(method)
    train(model, seed)
    save_method_weights(model, run_dir / "method", method, "tiny-gpt2")
    (run_dir / "results.json").write_text(json.dumps({"status": "complete", "seed": seed, "config": config,
                                                      "experiment": "x", "task": "e2e"}))
    return run_dir


@pytest.fixture
def rebuilt(monkeypatch):
    """base_weights rebuilds through run.prepare: here the tiny GPT-2 above, no data or tokenizer needed."""
    from lora_repro import run as run_module

    monkeypatch.setattr(run_module, "prepare", fake_prepare)


def test_each_slice_is_a_module_named_as_the_checkpoint_names_it():
    torch.manual_seed(0)
    model = build(lora(4))
    train(model, 0)
    live = list(iter_model_lora_modules(model))
    saved = list(iter_lora_modules(trainable_state_dict(model)))
    expected = [f"transformer.h.{i}.attn.c_attn.lora.{s}" for i in range(2) for s in "qv"]
    assert [m.name for m in live] == [m.name for m in saved] == expected
    for module, from_checkpoint in zip(live, saved):
        assert torch.equal(module.A, from_checkpoint.A) and torch.equal(module.B, from_checkpoint.B)
    for i in range(2):
        c_attn = model.transformer.h[i].attn.c_attn.base  # Conv1D: weight (in, out) = (d, 3d), x @ W + b
        assert tuple(c_attn.weight.shape) == (D, 3 * D)
        by_name = {m.name.rsplit(".", 1)[1]: m for m in live if f".h.{i}." in m.name}
        # W_q is the first d output columns of the (in, out) weight, transposed to out x in; W_v the last d
        assert torch.equal(by_name["q"].W, c_attn.weight[:, :D].T)
        assert torch.equal(by_name["v"].W, c_attn.weight[:, 2 * D:].T)
        assert tuple(by_name["q"].W.shape) == (D, D) and tuple(by_name["q"].B.shape) == (D, 4)
        x = torch.randn(3, D)  # and W_q x is the q part of what GPT-2 computes
        with torch.no_grad():
            q = (c_attn(x) - c_attn.bias)[:, :D]
        assert torch.allclose(x @ by_name["q"].W.T, q, atol=1e-6)


def test_a_merged_model_still_gives_w0():
    torch.manual_seed(0)
    model = build(lora(4))
    train(model, 0)
    before = {m.name: m.W.clone() for m in iter_model_lora_modules(model)}
    merge_lora(model)
    for module in iter_model_lora_modules(model):
        assert torch.allclose(module.W, before[module.name], atol=1e-6)


def test_module_site_of_a_fused_slice():
    assert ex.module_site("transformer.h.5.attn.c_attn.lora.q") == (5, "q")
    assert ex.module_site("transformer.h.11.attn.c_attn.lora.v") == (11, "v")
    assert ex.site_key("transformer.h.0.attn.c_attn.lora.v") == "L0.v"


def test_base_weights_pairs_each_slice_with_its_w_and_a0(tmp_path, rebuilt):
    run = ex.load_lora_run(write_run(tmp_path, r=4))
    assert sorted(map(ex.site_key, run.modules)) == SITES
    weights = ex.base_weights(run)
    assert sorted(weights) == sorted(run.modules)
    torch.manual_seed(0)
    fresh = build(lora(4))  # the same model before training
    for i in range(2):
        c_attn = dict(lora_layers(fresh))[f"transformer.h.{i}.attn.c_attn"]
        W = c_attn.base.weight.detach()
        assert torch.equal(weights[f"transformer.h.{i}.attn.c_attn.lora.q"].W, W[:, :D].T)
        assert torch.equal(weights[f"transformer.h.{i}.attn.c_attn.lora.v"].W, W[:, 2 * D:].T)
        assert torch.equal(weights[f"transformer.h.{i}.attn.c_attn.lora.v"].A0, c_attn.lora["v"].lora_A.detach())


def test_amplification_spectra_and_subspace_per_slice(tmp_path, rebuilt):
    small, large = (ex.load_lora_run(write_run(tmp_path, r=r)) for r in (2, 8))
    weights = ex.base_weights(small)
    rows = ex.amplification_of_run(small, weights)
    assert [row["site"] for row in rows] == SITES
    for row in rows:
        name = f"transformer.h.{row['layer']}.attn.c_attn.lora.{row['module']}"
        module, W = small.modules[name], weights[name].W
        assert row["w_fro"] == pytest.approx(float(W.double().norm()))  # ||W_q||_F, not ||W_qkv||_F
        expected = amplification(W, delta_w(module.A, module.B, small.scaling), 2)
        assert row["amplification"] == pytest.approx(expected["amplification"])
        assert row["r_used"] == 2 and row["a_change_rel"] > 0  # A moved from its rebuilt init
    summary, grids = ex.subspace_pair(small, large, inits=({n: b.A0 for n, b in weights.items()},
                                                           {n: b.A0 for n, b in ex.base_weights(large).items()}))
    assert [row["site"] for row in summary["modules"]] == SITES
    assert all(grids[f"{summary['pair_id']}|{site}"].shape == (2, 8) for site in SITES)
    spectra, _ = ex.spectra_of_run(small)
    assert [row["site"] for row in spectra] == SITES and all(row["numerical_rank"] == 2 for row in spectra)
    figure8, _ = ex.w_vs_delta_w_of_run(small, weights)
    assert [row["site"] for row in figure8] == SITES


def test_analyse_runs_over_fused_gpt2_runs(tmp_path, rebuilt):
    for r in (2, 8):
        write_run(tmp_path / "runs", r=r)
    manifest = ex.analyse([tmp_path / "runs"], tmp_path / "out")
    assert not manifest["skipped"] and not manifest["skipped_base"] and not manifest["failed"]
    amp = json.loads((tmp_path / "out" / "amplification.json").read_text())["rows"]
    assert sorted({row["site"] for row in amp}) == SITES and len(amp) == 8


def test_one_failing_run_does_not_sink_the_analysis_and_a_bug_shows(tmp_path, rebuilt, monkeypatch, caplog):
    bad, user_error = write_run(tmp_path / "runs", r=2), write_run(tmp_path / "runs", r=4)
    write_run(tmp_path / "runs", r=8)
    real_base_weights, real_amplification = ex.base_weights, ex.amplification_of_run

    def base_weights(run):
        if run.run_dir == user_error:
            raise UserError("base model not available")
        return real_base_weights(run)

    def amplification_of_run(run, weights, seed=0):
        if run.run_dir == bad:
            raise AttributeError("'LoRAFusedLinear' object has no attribute 'lora_A'")
        return real_amplification(run, weights, seed)

    monkeypatch.setattr(ex, "base_weights", base_weights)
    monkeypatch.setattr(ex, "amplification_of_run", amplification_of_run)
    with caplog.at_level(logging.ERROR, logger="lora_repro"):
        manifest = ex.analyse([tmp_path / "runs"], tmp_path / "out")
    amp = json.loads((tmp_path / "out" / "amplification.json").read_text())["rows"]
    assert {row["run_id"] for row in amp} == {"q+v_r8_seed0"}  # the good run's rows are there
    assert [line for line in manifest["skipped_base"] if str(user_error) in line and "base model not available"
            in line]
    (failure,) = manifest["failed"]
    assert str(bad) in failure and "BUG AttributeError" in failure
    bug = [rec for rec in caplog.records if str(bad) in rec.getMessage()]
    assert bug and bug[0].exc_info is not None  # logged with its traceback
    user = [rec for rec in caplog.records if str(user_error) in rec.getMessage()]
    assert user and user[0].exc_info is None  # a user error is one line
    assert "BUG AttributeError" in (tmp_path / "out" / "summary.md").read_text()
    assert manifest["files"]["spectra"]  # the analyses that need no W ran over all three runs
    assert len(json.loads((tmp_path / "out" / "spectra.json").read_text())) == 12
