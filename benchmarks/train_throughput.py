"""Training throughput (tokens/s) and peak memory per step: full fine-tuning vs this suite's LoRA (plain and with
the fast path) vs peft's LoRA, on the same model, batch, targets and optimizer, timed side by side in one run.

    python -m benchmarks.train_throughput --size full --device cuda   # GPT-2 medium and large, batch 8 and 1, seq 512
    python -m benchmarks.train_throughput --size gpu --time-limit 120 [--compile --models gpt2-medium --points 8x512]
    python -m benchmarks.train_throughput --size small --device cpu --threads 1 [--precision bf16]   # CPU reports

A step is forward (causal-LM loss on random tokens), backward, AdamW step, zero_grad. LoRA is r=4, alpha=32 on the
fused q|k|v projection (c_attn) for both implementations, as in the issue's reference measurement. Variants:

- ``full_ft``: every weight trains (fp32 weights, autocast when --precision is bf16).
- ``lora``: this suite's LoRA, fp32 frozen weights (what peft does too).
- ``lora_fast``: the suite's fast path (``lora_repro.run.apply_fast_path``): frozen matmul weights stored in the
  autocast dtype; only with --precision bf16 (in fp32 it is the same model as ``lora`` and is left out).
- ``peft_lora``: ``peft.get_peft_model`` with ``LoraConfig(r=4, lora_alpha=32, target_modules=["c_attn"])``.

Memory per variant = weights + optimizer state (exact, from the tensors) + the step's peak above that (measured: CUDA
``max_memory_allocated``; CPU peak RSS, reset per step through /proc/self/clear_refs), so all variants can stay
resident for interleaved timing without their memory mixing.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn

from benchmarks import common as bc

BENCHMARK = "train_throughput"
TINY = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512, "n_positions": 64}
SMALL = {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 2048, "n_positions": 256}
PRESETS = {
    "tiny": {"models": (("gpt2-medium", TINY),), "points": ((4, 32), (1, 32)), "trials": 3, "warmup": 1},
    "small": {"models": (("gpt2-medium", SMALL),), "points": ((8, 64), (1, 64)), "trials": 15, "warmup": 2},
    "full": {"models": (("gpt2-medium", {}), ("gpt2-large", {})), "points": ((8, 512), (1, 512)), "trials": 50,
             "warmup": 10},
    # benchmarks/gpu.sh: the full shapes with fewer trials (its 8 minutes also hold Table 1 and the compiled run)
    "gpu": {"models": (("gpt2-medium", {}), ("gpt2-large", {})), "points": ((8, 512), (1, 512)), "trials": 30,
            "warmup": 5},
}
VARIANTS = ("full_ft", "lora", "lora_fast", "peft_lora")
LORA = {"r": 4, "alpha": 32}
# The reference (one H100, transformers 5.17 + peft 0.21, GPT-2 medium, batch 8, seq 512, bf16 autocast).
REFERENCE = {"full_ft": {"tokens_per_s": 52.6e3, "peak_gib": 15.5}, "peft_lora": {"tokens_per_s": 59.9e3, "peak_gib": 11.9}}
GOALS = (("lora_fast / peft_lora tokens/s", 1.5), ("lora_fast / full_ft tokens/s", 1.35),
         ("full_ft / lora_fast peak memory at batch 1", 3.0))


def build_variant(base: nn.Module, variant: str, precision: str) -> nn.Module:
    from lora_repro.methods import apply_method

    model = bc.clone(base)
    if variant == "full_ft":
        apply_method(model, {"name": "full_ft"})
    elif variant in ("lora", "lora_fast"):
        apply_method(model, {"name": "lora", **LORA, "targets": ["qkv"], "dropout": 0.0})
        if variant == "lora_fast":
            from lora_repro.run import apply_fast_path

            apply_fast_path(model, {"trainer": {"precision": precision, "frozen_dtype": precision},
                                    "method": {"name": "lora"}, "model": {"name": "gpt2"}})
    elif variant == "peft_lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=["c_attn"],
                            fan_in_fan_out=True, bias="none")
        model = get_peft_model(model, config)
    else:
        raise ValueError(f"unknown variant {variant!r}; choices: {', '.join(VARIANTS)}")
    return model


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, input_ids: torch.Tensor, device: torch.device,
              precision: str) -> Callable[[], None]:
    def step() -> None:
        with bc.autocast(device, precision):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")


def measure_point(base: nn.Module, variants: list[str], batch: int, seq: int, device: torch.device, precision: str,
                  trials: int, warmup: int, compile_models: bool, seed: int, deadline: float | None = None) -> list[dict]:
    torch.manual_seed(seed)
    input_ids = torch.randint(0, base.config.vocab_size, (batch, seq), device=device)
    models, optimizers, steps = {}, {}, {}
    for variant in variants:
        model = build_variant(base, variant, precision).to(device).train()
        if compile_models:
            model = torch.compile(model)
        models[variant], optimizers[variant] = model, make_optimizer(model, device)
        steps[variant] = make_step(model, optimizers[variant], input_ids, device, precision)
    # warm-up also creates the AdamW state and, with --compile, compiles: its time is kept apart from the trials
    warmup_s = {}
    for variant in variants:
        warmup_s[variant] = sum(bc.timed(steps[variant], device) for _ in range(max(1, warmup)))
    times = bc.time_interleaved(steps, trials, 0, device, deadline=deadline)
    rows = []
    for variant in variants:
        with bc.PeakMemory(device) as peak:
            steps[variant]()
        state = bc.model_state_bytes(models[variant], optimizers[variant])
        resident = state["weights"] + state["optimizer"]
        stats = bc.summarize(times[variant])
        rows.append({"batch": batch, "seq_len": seq, "variant": variant, **stats, "warmup_s": warmup_s[variant],
                     "warmup_steps": max(1, warmup),
                     "tokens_per_s": batch * seq / (stats["median_ms"] / 1000), "seconds": times[variant],
                     "trainable_params": state["trainable_params"], "total_params": state["total_params"],
                     "weights_mib": bc.mib(state["weights"]), "weights_by_dtype_mib":
                     {k: bc.mib(v) for k, v in state["weights_by_dtype"].items()},
                     "optimizer_mib": bc.mib(state["optimizer"]), "step_peak_above_resident_mib": bc.mib(peak.peak_above_start),
                     "peak_mib": None if peak.peak_above_start is None else bc.mib(resident + peak.peak_above_start)})
    del models, optimizers, steps
    return rows


def select(items: tuple, wanted: str | None, key, flag: str) -> tuple:
    """The preset's ``items`` named in ``wanted`` (comma-separated; None: all), in the preset's order."""
    if wanted is None:
        return items
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = sorted(set(names) - {key(i) for i in items})
    if unknown or not names:
        raise SystemExit(f"{flag}: {unknown or '(empty)'} not in this size's preset; choices: "
                         f"{', '.join(key(i) for i in items)}")
    return tuple(i for i in items if key(i) in names)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = bc.base_parser(__doc__.splitlines()[0], sizes=tuple(PRESETS))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="autocast dtype (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--models", default=None, help="comma-separated subset of the preset's models (gpt2-medium, "
                        "gpt2-large)")
    parser.add_argument("--points", default=None, help="comma-separated BATCHxSEQ subset of the preset's points, "
                        "e.g. 8x512")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--compile", action="store_true", help="torch.compile every variant (same treatment for all)")
    args = parser.parse_args(argv)
    load_before = bc.load_average()
    box = bc.TimeBox(args.time_limit)
    device = bc.setup(args)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")  # the GPU setup; CPU: fp32
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise SystemExit(f"--variants: unknown {unknown or '(empty)'}; choices: {', '.join(VARIANTS)}")
    notes = []
    if "lora_fast" in variants and precision == "fp32":
        variants.remove("lora_fast")
        notes.append("lora_fast is left out: with fp32 compute the fast path stores nothing in half precision, so it "
                     "is the same model as lora (run with --precision bf16 to time it).")
    preset = PRESETS[args.size]
    trials = bc.positive(args.trials, "--trials") or preset["trials"]
    warmup = args.warmup if args.warmup is not None else preset["warmup"]
    models = select(preset["models"], args.models, lambda m: m[0], "--models")
    points = select(preset["points"], args.points, lambda p: f"{p[0]}x{p[1]}", "--points")
    rows, loops = [], len(models) * len(points)
    for model_name, overrides in models:
        base = bc.build_causal_lm(model_name, overrides, seed=args.seed)
        for batch, seq in points:
            point_rows = measure_point(base, variants, batch, seq, device, precision, trials, warmup, args.compile,
                                       args.seed, deadline=box.share(loops))
            loops -= 1
            box.record(f"{model_name} {batch} x {seq}", min(r["n"] for r in point_rows), trials)
            rows += [{"model": model_name + (" (shrunk)" if overrides else ""), **row} for row in point_rows]
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del base
    by_key = {(r["model"], r["batch"], r["variant"]): r for r in rows}
    table = []
    for r in rows:
        full = by_key.get((r["model"], r["batch"], "full_ft"), {})
        peft = by_key.get((r["model"], r["batch"], "peft_lora"), {})
        table.append({"model": r["model"], "batch x seq": f"{r['batch']} x {r['seq_len']}", "variant": r["variant"],
                      "trainable": f"{r['trainable_params']:,}", "step ms (median)": bc.fmt(r["median_ms"], 1),
                      "IQR ms": bc.fmt(r["iqr_ms"], 1), "n": r["n"], "warm-up s": bc.fmt(r["warmup_s"], 1),
                      "tokens/s": bc.fmt(r["tokens_per_s"], 0),
                      "x full FT": bc.fmt(ratio(r["tokens_per_s"], full.get("tokens_per_s"))),
                      "x peft": bc.fmt(ratio(r["tokens_per_s"], peft.get("tokens_per_s"))),
                      "peak MiB": bc.fmt(r["peak_mib"], 1), "weights+optim MiB":
                      bc.fmt(r["weights_mib"] + r["optimizer_mib"], 1),
                      "memory / full FT": bc.fmt(ratio(r["peak_mib"], full.get("peak_mib")))})
    ours = "lora_fast" if "lora_fast" in variants else "lora"
    goals = []
    for model_name in dict.fromkeys(r["model"] for r in rows):
        big = max(b for (m, b, _) in by_key if m == model_name)
        small = min(b for (m, b, _) in by_key if m == model_name)
        get = lambda batch, variant, key: by_key.get((model_name, batch, variant), {}).get(key)  # noqa: E731
        measured = (ratio(get(big, ours, "tokens_per_s"), get(big, "peft_lora", "tokens_per_s")),
                    ratio(get(big, ours, "tokens_per_s"), get(big, "full_ft", "tokens_per_s")),
                    ratio(get(small, "full_ft", "peak_mib"), get(small, ours, "peak_mib")))
        for (goal, target), value in zip(GOALS, measured):
            goals.append({"model": model_name, "goal": goal.replace("lora_fast", ours), "target": f">= {target}",
                          "measured": bc.fmt(value), "met here": "–" if value is None else
                          ("yes" if value >= target else "no")})
    settings = {"size": args.size, "precision": precision, "trials": trials, "warmup": warmup,
                "variants": ",".join(variants), "lora": f"r={LORA['r']} alpha={LORA['alpha']} on c_attn",
                "optimizer": "AdamW lr 1e-5", "compile": args.compile, "time_limit_s": args.time_limit,
                "points": ",".join(f"{b}x{q}" for b, q in points),
                "models": "; ".join(f"{m} {o or '(paper size)'}" for m, o in models)}
    notes += ["tokens/s = batch x seq / median step time; memory / full FT compares peaks at the same batch.",
              "Reference (issue 6, one H100, GPT-2 medium, batch 8, seq 512, bf16 autocast): full FT 52.6k tokens/s, "
              "15.5 GiB; peft LoRA 59.9k tokens/s, 11.9 GiB. The goals table compares ratios measured here.",
              "CPU peak memory is the process's resident set above the level before the step (weights and optimizer "
              "state added exactly); small steps can round to a few pages."]
    if args.compile:
        notes.append("torch.compile: every variant is compiled the same way (default mode); the warm-up steps, which "
                     "include compilation, are not timed (warmup_s in the JSON).")
    if box.note():
        notes.append(box.note())
    if args.size not in ("full", "gpu"):
        notes.append("Reduced size: a shrunk GPT-2 (see settings), so ratios say how these implementations compare on "
                     "this machine at this size, not what the paper's GPT-2 medium/large on a GPU would show.")
    default_precision = "bf16" if device.type == "cuda" else "fp32"
    stem = args.name or bc.report_stem(BENCHMARK, device, args.size, None) + (
        "" if precision == default_precision else f"_{precision}")
    paths = bc.write_report(args.out, stem, benchmark=BENCHMARK, device=device,
                            title="Training throughput and peak memory: full FT vs LoRA (suite, fast path) vs peft",
                            command=bc.command_line("benchmarks.train_throughput", argv), settings=settings,
                            results={"rows": rows, "goals": goals, "reference": REFERENCE},
                            sections=[("Throughput and memory", bc.markdown_table(table)),
                                      ("Issue 6 goals, as measured in this run", bc.markdown_table(goals))],
                            notes=notes, load_before=load_before)
    print(paths["markdown"].read_text())
    return {"rows": rows, "goals": goals, "paths": paths}


if __name__ == "__main__":
    main()
