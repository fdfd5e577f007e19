"""Task switching (the paper's deployment story, Section 4.2): one frozen model, many small LoRA module sets. How long
does it take to merge a set into W0, unmerge it, or swap one task's set for another's, merged or not?

    python -m benchmarks.task_switch --size full --device cuda    # GPT-2 medium and large
    python -m benchmarks.task_switch --size small --device cpu --threads 1   # GPT-2 medium (paper size), CPU

Operations (each starts and ends unmerged; only the named part is timed, synchronised on the GPU):

- ``merge`` / ``unmerge``: W0 + ΔW into (out of) every adapted weight.
- ``swap (unmerged)``: copy another task's A and B (already on the device) into the LoRA parameters.
- ``swap (merged)``: unmerge, copy the other set in, merge: switching tasks with no added inference latency.
- ``load from disk``: ``load_method_weights`` of a saved set (safetensors, page cache warm) into the model.
- ``peft ...``: the same with peft (``merge_adapter``, ``unmerge_adapter``, ``set_adapter`` between two loaded adapters).

It also reports how far the frozen weights drift after all the merge/unmerge round trips (floating-point rounding).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmarks import common as bc

BENCHMARK = "task_switch"
TINY = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512, "n_positions": 64}
PRESETS = {
    "tiny": {"models": (("gpt2-medium", TINY),), "trials": 5, "warmup": 1},
    "small": {"models": (("gpt2-medium", {}),), "trials": 10, "warmup": 1},  # full-size model: these ops are cheap
    "full": {"models": (("gpt2-medium", {}), ("gpt2-large", {})), "trials": 100, "warmup": 5},
}
PEFT_MODULES = {"qkv": "c_attn", "o": "attn.c_proj", "fc1": "c_fc", "fc2": "mlp.c_proj"}


def random_set(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A task's LoRA module set: every trainable tensor, random (B nonzero, so merging changes W)."""
    gen = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(p.shape, generator=gen) * 0.02).to(p.device, p.dtype)
            for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_set(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, value in values.items():
        params[name].copy_(value)


def suite_ops(model: nn.Module, sets: list[dict], checkpoint: Path, device: torch.device) -> dict[str, Callable]:
    from lora_repro.methods.common import load_method_weights
    from lora_repro.methods.lora import merge_lora, unmerge_lora

    current = [0]

    def other() -> dict:
        current[0] = 1 - current[0]
        return sets[current[0]]

    def merge() -> float:
        seconds = bc.timed(lambda: merge_lora(model), device)
        unmerge_lora(model)
        return seconds

    def unmerge() -> float:
        merge_lora(model)
        return bc.timed(lambda: unmerge_lora(model), device)

    def swap_unmerged() -> float:
        values = other()
        return bc.timed(lambda: load_set(model, values), device)

    def swap_merged() -> float:
        merge_lora(model)
        values = other()

        def switch() -> None:
            unmerge_lora(model)
            load_set(model, values)
            merge_lora(model)
        seconds = bc.timed(switch, device)
        unmerge_lora(model)
        return seconds

    def from_disk() -> float:
        return bc.timed(lambda: load_method_weights(model, checkpoint, apply=False), device)

    return {"merge": merge, "unmerge": unmerge, "swap (unmerged)": swap_unmerged, "swap (merged)": swap_merged,
            "load from disk": from_disk}


def peft_ops(model, device: torch.device) -> dict[str, Callable]:
    names, current = ["task_a", "task_b"], [0]

    def other() -> str:
        current[0] = 1 - current[0]
        return names[current[0]]

    def merge() -> float:
        seconds = bc.timed(model.merge_adapter, device)
        model.unmerge_adapter()
        return seconds

    def unmerge() -> float:
        model.merge_adapter()
        return bc.timed(model.unmerge_adapter, device)

    def swap_unmerged() -> float:
        name = other()
        return bc.timed(lambda: model.set_adapter(name), device)

    def swap_merged() -> float:
        model.merge_adapter()
        name = other()

        def switch() -> None:
            model.unmerge_adapter()
            model.set_adapter(name)
            model.merge_adapter()
        seconds = bc.timed(switch, device)
        model.unmerge_adapter()
        return seconds

    return {"peft merge": merge, "peft unmerge": unmerge, "peft swap (unmerged)": swap_unmerged,
            "peft swap (merged)": swap_merged}


def build_peft(base: nn.Module, targets: list[str], r: int, alpha: float, seed: int, device: torch.device):
    from peft import LoraConfig, get_peft_model

    unknown = [t for t in targets if t not in PEFT_MODULES]
    if unknown:
        raise SystemExit(f"--targets {unknown} have no peft module name here; choices: {', '.join(PEFT_MODULES)}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, fan_in_fan_out=True,
                        target_modules=[PEFT_MODULES[t] for t in targets])
    model = get_peft_model(bc.clone(base), config, adapter_name="task_a")
    model.add_adapter("task_b", config)
    for offset, name in enumerate(("task_a", "task_b")):
        model.set_adapter(name)
        load_set(model, random_set(model, seed + 10 + offset))
    model.set_adapter("task_a")
    return model.to(device).eval()


def max_drift(model: nn.Module, reference: dict[str, torch.Tensor], names: dict[str, str]) -> float:
    """Largest |W - W0| over the adapted weights, after the model's round trips (it ends unmerged)."""
    params = dict(model.named_parameters())
    return max((params[ours].detach().float().cpu() - reference[ref]).abs().max().item() for ours, ref in names.items())


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--targets", default="qkv", help="comma-separated logical targets (qkv o fc1 fc2)")
    parser.add_argument("--r", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--no-peft", action="store_true", help="time only this suite")
    args = parser.parse_args(argv)
    device = bc.setup(args)
    preset = PRESETS[args.size]
    trials = bc.positive(args.trials, "--trials") or preset["trials"]
    warmup = args.warmup if args.warmup is not None else preset["warmup"]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bc.positive(args.r, "--r")
    from lora_repro.methods import apply_method
    from lora_repro.methods.common import save_method_weights
    from lora_repro.methods.lora import lora_layers

    rows, checks, table = [], [], []
    for model_name, overrides in preset["models"]:
        base = bc.build_causal_lm(model_name, overrides, seed=args.seed).eval()
        method = {"name": "lora", "r": args.r, "alpha": args.alpha, "targets": targets, "dropout": 0.0}
        model = bc.clone(base)
        apply_method(model, method)
        sets = [random_set(model, args.seed + 1), random_set(model, args.seed + 2)]
        load_set(model, sets[0])
        reference = {n: p.detach().float().clone() for n, p in base.named_parameters()}
        adapted = {f"{name}.base.weight": f"{name}.weight" for name, _ in lora_layers(model)}
        set_params = sum(v.numel() for v in sets[0].values())
        with tempfile.TemporaryDirectory() as tmp:
            load_set(model, sets[1])
            checkpoint = save_method_weights(model, Path(tmp) / "task_b", method, model_name)
            file_bytes = sum(f.stat().st_size for f in checkpoint.iterdir())
            load_set(model, sets[0])
            model.to(device).eval()
            sets = [{k: v.to(device) for k, v in s.items()} for s in sets]
            ops = suite_ops(model, sets, checkpoint, device)
            peft_model = None
            if not args.no_peft:
                peft_model = build_peft(base, targets, args.r, args.alpha, args.seed, device)
                ops.update(peft_ops(peft_model, device))
            times = bc.time_interleaved(ops, trials, warmup, device)
        drift = {"suite": max_drift(model, reference, adapted)}
        if peft_model is not None:
            drift["peft"] = max_drift(peft_model, reference, {f"base_model.model.{n}.base_layer.weight": f"{n}.weight"
                                                              for n in (k.removesuffix(".weight") for k in adapted.values())})
        label = model_name + (" (shrunk)" if overrides else "")
        checks.append({"model": label, "lora_set_params": set_params, "lora_set_mib": bc.mib(sum(
            v.numel() * v.element_size() for v in sets[0].values())), "checkpoint_bytes": file_bytes,
            "max_weight_drift_after_round_trips": drift, "round_trips": (trials + warmup) * 3})
        for op, seconds in times.items():
            s = bc.summarize(seconds)
            rows.append({"model": label, "operation": op, **s, "seconds": seconds})
            table.append({"model": label, "operation": op, "median ms": bc.fmt(s["median_ms"], 3),
                          "IQR ms": bc.fmt(s["iqr_ms"], 3), "min ms": bc.fmt(s["min_ms"], 3)})
        del base, model, peft_model
    check_table = [{"model": c["model"], "LoRA set": f"{c['lora_set_params']:,} params ({c['lora_set_mib']:.2f} MiB)",
                    "checkpoint on disk": f"{c['checkpoint_bytes'] / 2**20:.2f} MiB",
                    "max |W - W0| after round trips": ", ".join(f"{k} {v:.1e}" for k, v in
                                                               c["max_weight_drift_after_round_trips"].items())}
                   for c in checks]
    settings = {"size": args.size, "trials": trials, "warmup": warmup, "targets": ",".join(targets), "r": args.r,
                "alpha": args.alpha, "models": "; ".join(f"{m} {o or '(paper size)'}" for m, o in preset["models"])}
    notes = ["Each operation starts and ends unmerged; only its named part is timed. Operations are interleaved "
             "round-robin with a rotating start, so drift hits all of them alike.",
             "peft swap (unmerged) only flips which loaded adapter is active (both stay in memory); the suite keeps "
             "one set in the model and copies the other in, which is what serving many tasks from one model needs.",
             "Drift: merge and unmerge add and subtract ΔW in floating point; the rounding left in W0 after many round "
             "trips (loralib's train/eval toggling had the same effect, anchors.md A.2)."]
    stem = bc.report_stem(BENCHMARK, device, args.size, args.name)
    paths = bc.write_report(args.out, stem, benchmark=BENCHMARK, device=device,
                            title="Task switching: merge, unmerge and swap one LoRA module set",
                            command=bc.command_line("benchmarks.task_switch", argv), settings=settings,
                            results={"rows": rows, "checks": checks},
                            sections=[("Timings", bc.markdown_table(table)),
                                      ("Module set and numerical drift", bc.markdown_table(check_table))],
                            notes=notes)
    print(paths["markdown"].read_text())
    return {"rows": rows, "checks": checks, "paths": paths}


if __name__ == "__main__":
    main()
