"""Table 1: forward latency of GPT-2 medium: base weights, merged LoRA, unmerged LoRA, AdapterL, AdapterH.

The paper's grid is batch 32 / seq 512 / |Θ| 0.5M, 16 / 256 / 11M and 1 / 128 / 11M (|Θ|: trainable parameters of
the adapter layers), 100 trials on a Quadro RTX8000. Here each grid point times all variants interleaved (one call
each per round, rotating who goes first), after warm-up, synchronising the GPU around every call, and reports the
median with its inter-quartile range and the overhead over the base model beside the paper's.

    python -m benchmarks.table1_latency --size full --device cuda     # the paper's grid (GPU)
    python -m benchmarks.table1_latency --size gpu --time-limit 110   # the same grid, as benchmarks/gpu.sh runs it
    python -m benchmarks.table1_latency --size small --device cpu --threads 1   # the committed CPU report

Weights are random (built from conf/model/gpt2-medium.yaml's architecture): latency does not depend on them.
Smaller sizes shrink the model and the sequence lengths and scale |Θ| with the body's size (layers x width²), so
each adapter keeps the paper's share of the model; their numbers sit beside the paper's grid point of the same rank.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn

from benchmarks import common as bc

BENCHMARK = "table1_latency"
PAPER_POINTS = (("bs32_seq512", 32, 512, 0.5e6), ("bs16_seq256", 16, 256, 11e6), ("bs1_seq128", 1, 128, 11e6))
PAPER_BODY = 24 * 1024**2  # GPT-2 medium: layers x width², what |Θ| is scaled by for smaller models
PRESETS = {
    "tiny": {"overrides": {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512, "n_positions": 64},
             "points": ((4, 32), (2, 16), (1, 8)), "trials": 3, "warmup": 1},
    "small": {"overrides": {"n_layer": 4, "n_embd": 128, "n_head": 4, "vocab_size": 1024, "n_positions": 256},
              # the grid's seq lengths / 8; cheaper points get more trials (a shared CPU is noisy)
              "points": ((32, 64), (16, 32), (1, 16)), "trials": (30, 60, 300), "warmup": 2},
    "full": {"overrides": {}, "points": tuple((b, s) for _, b, s, _ in PAPER_POINTS), "trials": 100, "warmup": 10},
    # benchmarks/gpu.sh: the paper's grid and model; the 32 x 512 point costs most per call, so it gets fewer trials
    "gpu": {"overrides": {}, "points": tuple((b, s) for _, b, s, _ in PAPER_POINTS), "trials": (40, 100, 100),
            "warmup": 5},
}
VARIANTS = ("base", "lora_merged", "lora_merged_wrapped", "lora_unmerged", "adapter_l", "adapter_h")
PAPER_METHOD = {"base": "lora", "lora_merged": "lora", "lora_merged_wrapped": "lora", "adapter_l": "adapter_l",
                "adapter_h": "adapter_h"}
# ---------------------------------------------------------------- adapters

def method_config(name: str, **settings) -> dict:
    """conf/method/NAME.yaml as Hydra composes it, with ``settings`` on top."""
    from lora_repro.config import group_config

    return group_config("method", name, settings)


def apply_adapter(model: nn.Module, kind: str, bottleneck: int) -> None:
    from lora_repro.methods import apply_method

    apply_method(model, method_config(kind, bottleneck=bottleneck))


def adapter_params(model: nn.Module) -> int:
    from lora_repro.methods.common import parameter_counts

    return parameter_counts(model)["trainable_without_head"]


def bottleneck_for(target: float, kind: str, overrides: dict) -> int:
    """The bottleneck whose adapters hold ``target`` parameters: adapter parameters grow linearly with it, so two
    one-block probes (bottleneck 1 and 2) give the line, whatever the implementation's biases and norms."""
    probe_overrides = {**overrides, "n_layer": 1, "vocab_size": 64}
    counts = []
    for b in (1, 2):
        probe = bc.build_causal_lm("gpt2-medium", probe_overrides)
        apply_adapter(probe, kind, b)
        counts.append(adapter_params(probe))
    slope, intercept = counts[1] - counts[0], 2 * counts[0] - counts[1]
    n_layer = overrides.get("n_layer", bc.model_architecture("gpt2-medium")["n_layer"])
    return max(1, round((target / n_layer - intercept) / slope))


# ---------------------------------------------------------------- variants

def lora_config() -> dict:
    """r=4, alpha=32 on the fused q|k|v projection (the E2E recipe's rank; peft's c_attn target)."""
    return method_config("lora", r=4, alpha=32, targets=["qkv"], dropout=0.0)


def build_variants(base: nn.Module, point_index: int, overrides: dict,
                   seed: int) -> tuple[dict[str, nn.Module], dict]:
    from lora_repro.methods import apply_method
    from lora_repro.methods.lora import lora_layers, merge_and_unload, merge_lora

    models: dict[str, nn.Module] = {"base": bc.clone(base)}
    unmerged = bc.clone(base)
    apply_method(unmerged, lora_config())
    torch.manual_seed(seed)
    for _, layer in lora_layers(unmerged):  # B = 0 would make merging a no-op; give LoRA something to merge
        for name, p in layer.named_parameters():
            if name.endswith("lora_B"):
                nn.init.normal_(p, std=0.02)
    wrapped = bc.clone(unmerged)
    merge_lora(wrapped)  # W0 + BA in place, LoRA wrappers kept (switchable: unmerge_lora undoes it)
    models["lora_merged"] = merge_and_unload(bc.clone(unmerged))  # the plain architecture again (deployment)
    models["lora_merged_wrapped"], models["lora_unmerged"] = wrapped, unmerged
    body = overrides.get("n_layer", 24) * overrides.get("n_embd", 1024) ** 2
    target = PAPER_POINTS[point_index][3] * body / PAPER_BODY
    info = {"lora_params": adapter_params(unmerged), "adapter_target_params": target}
    for kind in ("adapter_l", "adapter_h"):
        b = bottleneck_for(target, kind, overrides)
        model = bc.clone(base)
        apply_adapter(model, kind, b)
        models[kind] = model
        info[f"{kind}_bottleneck"], info[f"{kind}_params"] = b, adapter_params(model)
    return models, info


def forward_fn(model: nn.Module, input_ids: torch.Tensor, device: torch.device, precision: str) -> Callable[[], None]:
    def call() -> None:
        with torch.inference_mode(), bc.autocast(device, precision):
            model(input_ids=input_ids)
    return call


# ---------------------------------------------------------------- main

def paper_numbers(variant: str, task: str) -> tuple[float | None, float | None]:
    from lora_repro.report.paper import paper_value

    method = PAPER_METHOD.get(variant)
    if method is None:
        return None, None
    latency = paper_value(1, "gpt2-medium", method, task, "latency_ms")
    overhead = paper_value(1, "gpt2-medium", method, task, "overhead_pct") if method != "lora" else 0.0
    return latency, None if variant == "base" else overhead


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = bc.base_parser(__doc__.splitlines()[0], sizes=tuple(PRESETS))
    parser.add_argument("--precision", choices=list(bc.PRECISIONS), default="fp32",
                        help="fp32 (default, the paper's setting as far as it says) or autocast bf16/fp16")
    args = parser.parse_args(argv)
    load_before = bc.load_average()
    box = bc.TimeBox(args.time_limit)
    device = bc.setup(args)
    preset = PRESETS[args.size]
    trials = bc.positive(args.trials, "--trials") or preset["trials"]
    per_point = trials if isinstance(trials, tuple) else (trials,) * len(preset["points"])
    warmup = args.warmup if args.warmup is not None else preset["warmup"]
    overrides = preset["overrides"]
    base = bc.build_causal_lm("gpt2-medium", overrides, seed=args.seed).eval()
    vocab = base.config.vocab_size
    rows, raw, table = [], [], []
    for index, (batch, seq) in enumerate(preset["points"]):
        task = PAPER_POINTS[index][0]
        models, info = build_variants(base, index, overrides, args.seed)
        torch.manual_seed(args.seed + index)
        input_ids = torch.randint(0, vocab, (batch, seq), device=device)
        for model in models.values():
            model.to(device).eval()
        with torch.inference_mode():  # merged and unmerged LoRA must compute the same function
            diff = (models["lora_merged"](input_ids=input_ids[:1]).logits
                    - models["lora_unmerged"](input_ids=input_ids[:1]).logits).abs().max().item()
        times = bc.time_interleaved({v: forward_fn(models[v], input_ids, device, args.precision) for v in VARIANTS},
                                    per_point[index], warmup, device,
                                    deadline=box.share(len(preset["points"]) - index))
        box.record(f"{batch} x {seq}", min(map(len, times.values())), per_point[index])
        stats = {v: bc.summarize(t) for v, t in times.items()}
        base_ms, base_min = stats["base"]["median_ms"], stats["base"]["min_ms"]
        point = {"batch": batch, "seq_len": seq, "paper_point": task, **info, "merged_vs_unmerged_max_abs_diff": diff}
        for variant in VARIANTS:
            s = stats[variant]
            overhead = 100 * (s["median_ms"] / base_ms - 1)
            overhead_min = 100 * (s["min_ms"] / base_min - 1)  # the least-disturbed call, on a shared machine
            paper_ms, paper_pct = paper_numbers(variant, task)
            params = {"lora_merged": info["lora_params"], "lora_merged_wrapped": info["lora_params"],
                      "lora_unmerged": info["lora_params"],
                      "adapter_l": info["adapter_l_params"], "adapter_h": info["adapter_h_params"]}.get(variant, 0)
            rows.append({**point, "variant": variant, **s, "overhead_pct": overhead,
                         "overhead_pct_of_min": overhead_min, "trainable_params": params,
                         "paper_latency_ms": paper_ms, "paper_overhead_pct": paper_pct})
            table.append({"batch / seq": f"{batch} / {seq}", "variant": variant, "|Θ|": f"{params:,}",
                          "median ms": bc.fmt(s["median_ms"]), "IQR ms": bc.fmt(s["iqr_ms"]),
                          "overhead": "–" if variant == "base" else f"{overhead:+.1f}%",
                          "min ms": bc.fmt(s["min_ms"]),
                          "overhead (min)": "–" if variant == "base" else f"{overhead_min:+.1f}%",
                          "paper ms (its point)": bc.fmt(paper_ms, 1), "paper overhead":
                          "–" if paper_pct is None else f"{paper_pct:+.1f}%"})
        raw.append({"batch": batch, "seq_len": seq, "seconds": times})
        del models
    settings = {"size": args.size, "model": "gpt2-medium" + (f" shrunk {overrides}" if overrides else ""),
                "precision": args.precision, "trials": list(per_point), "warmup": warmup,
                "time_limit_s": args.time_limit,
                "grid": [f"{b}x{s}" for b, s in preset["points"]], "threads": torch.get_num_threads(),
                "lora": "r=4 alpha=32 on c_attn (q|k|v)",
                "adapters": "lora_repro.methods (adapter_l, adapter_h)"}
    notes = ["Overhead = median latency / base median - 1. The paper's 'Fine-Tune/LoRA' row is both the base model and "
             "merged LoRA (0% by construction); unmerged LoRA has no paper row. lora_merged is "
             "lora_repro.methods.lora.merge_and_unload (plain modules holding W0 + BA: the deployment form); "
             "lora_merged_wrapped keeps the LoRA wrappers with merged weights (switchable, one Python call more per "
             "adapted layer).",
             "Interleaved timing: every round calls each variant once, rotating the first, so drift hits all alike. "
             "Compare an overhead with the base's IQR/median before reading much into a small one; 'overhead (min)' "
             "compares the fastest calls, which other processes disturbed least.",
             "merged_vs_unmerged_max_abs_diff (JSON) checks that merging kept the function."]
    if box.note():
        notes.append(box.note())
    if args.size not in ("full", "gpu"):
        notes.append("Reduced size: the model, sequence lengths and |Θ| are scaled down; 'paper ms' is the paper's "
                     "number at the grid point of the same rank, shown for the shape (largest overhead at batch 1), "
                     "not for a like-for-like comparison.")
    stem = bc.report_stem(BENCHMARK, device, args.size, args.name)
    paths = bc.write_report(args.out, stem, benchmark=BENCHMARK, device=device,
                            title="Table 1: forward latency, base vs LoRA vs adapters (GPT-2 medium architecture)",
                            command=bc.command_line("benchmarks.table1_latency", argv), settings=settings,
                            results={"rows": rows, "raw": raw}, sections=[("Latency", bc.markdown_table(table))],
                            notes=notes, load_before=load_before)
    print(paths["markdown"].read_text())
    return {"rows": rows, "paths": paths}


if __name__ == "__main__":
    main()
