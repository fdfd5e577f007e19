"""What the researcher waits for on the stand-ins: training steps/s and beam-decoding MRs/s, this suite against plain
transformers + peft, in fp32 and bf16, timed interleaved on this machine, with the machine's load beside them.

    python -m benchmarks.standin_speed --size small   # real stand-in weights and data (about 12 minutes, 2 cores)
    python -m benchmarks.standin_speed --size tiny    # smoke models: seconds (what the tests run)
    python -m benchmarks.standin_speed --size small --pieces train-minilm-fp32,decode-smollm2-fp32 --budget-scale 2

Pieces (each in fp32 and in bf16 autocast; the suite's fast path then stores the frozen weights in bf16):

- ``train-minilm``: MiniLM-L6 on MRPC, the quickstart's settings (batch 32, max_seq_len 128, LoRA r=8 on q, v).
- ``train-smollm2``: SmolLM2-135M on E2E, ``+experiment=e2e_smollm2_standin`` (batch 8, LoRA r=4 alpha 32 on q, v,
  dropout 0.1, label smoothing 0.1).
- ``decode-smollm2``: E2E test MRs through SmolLM2 with the task yaml's beam search (beam 10, length penalty 0.9,
  no-repeat 4-gram, 64 new tokens), with untrained LoRA (B = 0) on both sides, so both compute the same function.

Sides:

- ``lora_repro``: the model from ``lora_repro.run.prepare`` (method and fast path), trained as the suite trains it
  (the task's TrainingPlan, ``training_arguments``, ``LightCheckpointTrainer``; evaluation, checkpoints and logging
  off), decoded by ``lora_repro.generation.generate_texts``.
- ``plain``: ``from_pretrained`` + ``peft.get_peft_model`` (the same r, alpha, dropout and modules) trained by a plain
  ``transformers.Trainer`` with the same hyper-parameters, tokenised examples and collator; decoded by a plain loop over
  ``model.generate`` (left padding, the same prompts and generation arguments).

Timing: rounds; in each round every side runs one unit (training: ``steps`` steps of a fresh Trainer; decoding: one
call on ``mrs`` MRs), the first side alternating (A B, B A, ...), so drift and other jobs' bursts spread over both.
A step is the gap between step ends (data, forward, backward, optimizer). Round r gives both sides the same batches
(same data seed) or the same MRs, so per-pair ratios cancel batch-to-batch differences. Each piece has a time budget:
after its first round, another starts only if the last one's duration still fits. bf16 pieces run few steps: on a CPU
without native bf16 dot products (no avx512_bf16 / amx_bf16; the report lists the flags) bf16 matmuls are emulated
and far slower than fp32, which the matmul probe measures first.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import common as bc

BENCHMARK = "standin_speed"
SIDES = ("lora_repro", "plain")
SIDE_LABEL = {"train": {"lora_repro": "lora_repro", "plain": "transformers.Trainer + peft"},
              "decode": {"lora_repro": "lora_repro generate_texts", "plain": "plain model.generate (+ peft)"}}
WORKLOADS = {
    "train-minilm": {"kind": "train", "label": "MiniLM-L6 / MRPC (quickstart)",
                     "overrides": ["+experiment=quickstart", "task=mrpc", "method=lora", "task.max_train_examples=512"]},
    "train-smollm2": {"kind": "train", "label": "SmolLM2-135M / E2E (e2e_smollm2_standin)",
                      "overrides": ["+experiment=e2e_smollm2_standin", "task.max_train_examples=384",
                                    "task.max_eval_examples=48"]},
    "decode-smollm2": {"kind": "decode", "label": "SmolLM2-135M / E2E test MRs, beam 10 (task yaml)",
                       "overrides": ["+experiment=e2e_smollm2_standin", "task.max_train_examples=16",
                                     "task.max_eval_examples=48"]},
}
# Per piece: warmup (untimed steps / calls per side), steps per unit (train), mrs per call (decode), the most rounds,
# and the budget in seconds (after round 1 a round starts only if the previous one's duration still fits).
PRESETS = {
    # tiny: one torch thread (on a busy machine, 2 threads' barriers make tiny ops wait for a time slice each)
    "tiny": {"smoke": True, "matmul_n": 128, "threads": 1, "pieces": {
        "train-minilm-fp32": {"warmup": 1, "steps": 2, "rounds": 2, "budget_s": 30},
        "train-minilm-bf16": {"warmup": 0, "steps": 2, "rounds": 2, "budget_s": 30},
        "train-smollm2-fp32": {"warmup": 1, "steps": 2, "rounds": 2, "budget_s": 30},
        "train-smollm2-bf16": {"warmup": 0, "steps": 2, "rounds": 2, "budget_s": 30},
        "decode-smollm2-fp32": {"warmup": 1, "mrs": 2, "rounds": 2, "budget_s": 30},
        "decode-smollm2-bf16": {"warmup": 0, "mrs": 2, "rounds": 2, "budget_s": 30}}},
    # small: sized for ~12 minutes on 2 shared cores; bf16 gets one unit per side (emulated bf16 is slow there)
    "small": {"smoke": False, "matmul_n": 1024, "threads": None, "pieces": {
        "train-minilm-fp32": {"warmup": 1, "steps": 2, "rounds": 3, "budget_s": 80},
        "train-minilm-bf16": {"warmup": 0, "steps": 2, "rounds": 1, "budget_s": 60},
        "train-smollm2-fp32": {"warmup": 0, "steps": 1, "rounds": 3, "budget_s": 120},
        "train-smollm2-bf16": {"warmup": 0, "steps": 1, "rounds": 1, "budget_s": 60},
        "decode-smollm2-fp32": {"warmup": 0, "mrs": 1, "rounds": 3, "budget_s": 120},
        "decode-smollm2-bf16": {"warmup": 0, "mrs": 1, "rounds": 1, "budget_s": 60}}},
}
CPU_NOTE = ("A CPU benchmark by design (the stand-ins are this project's CPU models): no GPU was available or used.")
AUTOCAST_DECODE_NOTE = (
    "bf16 decoding: both sides decode under torch.autocast(bf16), as a plain user of bf16 weights would; the suite's "
    "generate_texts also enters it by itself when the fast path stored the frozen weights in bf16.")


# ---------------------------------------------------------------- models

def piece_config(workload: str, precision: str, smoke: bool) -> dict:
    return bc.compose_config(WORKLOADS[workload]["overrides"] + [f"trainer.precision={precision}",
                                                                  f"smoke={str(smoke).lower()}"])


def plain_peft_model(cfg: dict, spec, suite_model, source, smoke: bool):
    """transformers' Auto class + peft LoRA on the modules the suite wrapped (same r, alpha, dropout); the same
    pretrained weights (smoke: the smoke model's config, random weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from lora_repro.methods.lora import lora_layers

    generation = spec.kind == "generation"
    auto = AutoModelForCausalLM if generation else AutoModelForSequenceClassification
    torch.manual_seed(cfg["seed"])
    if smoke:
        model = auto.from_config(suite_model.config)
    else:
        model = auto.from_pretrained(source.location, **({} if generation else {"num_labels": spec.num_labels}))
    for key in ("pad_token_id", "eos_token_id"):
        setattr(model.config, key, getattr(suite_model.config, key, None))
    if generation:
        model.generation_config.pad_token_id = suite_model.generation_config.pad_token_id
        model.generation_config.eos_token_id = suite_model.generation_config.eos_token_id
    m = cfg["method"]
    modules = sorted({name.rsplit(".", 1)[-1] for name, _ in lora_layers(suite_model)})
    config = LoraConfig(task_type="CAUSAL_LM" if generation else "SEQ_CLS", r=m["r"], lora_alpha=m["alpha"],
                        lora_dropout=m.get("dropout") or 0.0, target_modules=modules)
    return get_peft_model(model, config), modules


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- rounds

def rounds(units: dict, spec: dict, label: str) -> tuple[list[dict], str | None]:
    """Run ``units[side]()`` (each returns its timings) for up to ``spec['rounds']`` rounds, alternating the first
    side, within ``spec['budget_s']``; returns one dict per round and side, and why it stopped early (or None)."""
    out, start, last = [], time.perf_counter(), 0.0
    for r in range(spec["rounds"]):
        elapsed = time.perf_counter() - start
        if r and elapsed + last > spec["budget_s"]:
            return out, (f"{label}: {r} of {spec['rounds']} rounds (budget {spec['budget_s']:g} s; the last round "
                         f"took {last:.0f} s)")
        began = time.perf_counter()
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            out.append({"round": r, "side": side, **units[side](r)})
        last = time.perf_counter() - began
    return out, None


def train_piece(workload: str, precision: str, spec: dict, smoke: bool, device: torch.device) -> dict:
    from transformers import Trainer

    from lora_repro.run import prepare

    cfg = piece_config(workload, precision, smoke)
    torch.manual_seed(cfg["seed"])
    task, splits, data, tokenizer, suite, source = prepare(cfg)
    if not smoke and (data["source"] == "hub" or source.kind == "architecture"):
        raise SystemExit(f"standin_speed --size small needs the real data and weights of {cfg['model']['name']}: set "
                         "LORA_REPRO_DATA to the shared data folder and install the stand-in (README, Models)")
    plain, modules = plain_peft_model(cfg, task, suite, source, smoke)
    from lora_repro.checkpointing import LightCheckpointTrainer as suite_trainer
    from lora_repro.training import training_arguments
    losses: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        train, collator, kind_args = bc.suite_training(cfg, task, splits, tokenizer, suite, Path(tmp))

        def run(side: str, steps: int, record: bool = True) -> list[float]:
            timer = bc.step_timer()
            if side == "lora_repro":
                args = training_arguments(cfg, Path(tmp), **{**kind_args, **bc.TIMING_ONLY, "max_steps": steps})
                trainer = suite_trainer(model=suite, args=args, train_dataset=train, data_collator=collator,
                                        callbacks=[timer])
            else:
                trainer = Trainer(model=plain, args=bc.plain_training_arguments(cfg, steps, tmp, device),
                                  train_dataset=train, data_collator=collator, callbacks=[timer])
            loss = trainer.train().training_loss
            if record:
                losses[side].append(loss)
            return timer.seconds

        for side in SIDES:
            if spec["warmup"]:
                run(side, spec["warmup"], record=False)
        units = {side: (lambda r, side=side: {"seconds": run(side, spec["steps"])}) for side in SIDES}
        done, cut = rounds(units, spec, f"{workload}-{precision}")
    t = cfg["trainer"]
    settings = {"model": cfg["model"]["name"] + (" (smoke)" if smoke else ""), "task": task.name,
                "train_examples": len(train), "data": data["source"], "batch_size": t["batch_size"],
                "max_seq_len": t["max_seq_len"], "lr": t["lr"], "label_smoothing": t.get("label_smoothing") or 0.0,
                "lora": f"r={cfg['method']['r']} alpha={cfg['method']['alpha']} dropout={cfg['method'].get('dropout')} "
                        f"on {modules}",
                "trainable": {"lora_repro": trainable(suite), "plain": trainable(plain)},
                "frozen_dtypes_lora_repro": sorted({str(p.dtype).removeprefix("torch.") for p in suite.parameters()
                                                    if not p.requires_grad})}
    return {"units": done, "cut": cut, "settings": settings, "losses": losses, "unit": "step",
            "per_unit": {side: t["batch_size"] for side in SIDES}}


def plain_generate(model, tokenizer, prompts: list[list[int]], kwargs: dict, device: torch.device) -> list[str]:
    """What a researcher writes around ``model.generate``: left-pad the batch, decode the new tokens."""
    pad = kwargs["pad_token_id"]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    return [" ".join(t.split()) for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


def decode_piece(workload: str, precision: str, spec: dict, smoke: bool, device: torch.device) -> dict:
    from lora_repro import generation as gen
    from lora_repro.run import prepare

    cfg = piece_config(workload, precision, smoke)
    torch.manual_seed(cfg["seed"])
    task, splits, data, tokenizer, suite, source = prepare(cfg)
    if not smoke and (data["source"] == "hub" or source.kind == "architecture"):
        raise SystemExit("standin_speed --size small needs the real E2E data and the SmolLM2 stand-in")
    plain, modules = plain_peft_model(cfg, task, suite, source, smoke)
    plain.eval()
    yaml_settings = gen.DecodingSettings.from_cfg(cfg["task"].get("generation"))
    settings = gen.DecodingSettings.from_cfg({**cfg["task"]["generation"], "batch_size": spec["mrs"]})
    tokens = gen.configure_special_tokens(tokenizer, suite)
    max_len = cfg["trainer"]["max_seq_len"]
    max_prompt_len = max(max_len - settings.max_new_tokens, max_len // 2)
    split = task.extra.get("decode_splits", task.eval_splits)[0]
    contexts = list(splits[split]["context"])
    needed = spec["mrs"] * (spec["rounds"] + spec["warmup"])
    if len(contexts) < needed:
        contexts = (contexts * (needed // max(1, len(contexts)) + 1))[:needed]
    outputs: dict[str, list] = {side: [] for side in SIDES}

    def batch(r: int) -> list[str]:
        return contexts[r * spec["mrs"]:(r + 1) * spec["mrs"]]

    def run(side: str, r: int) -> dict:
        texts = batch(r)
        start = time.perf_counter()
        with bc.autocast(device, precision):
            if side == "lora_repro":
                out = gen.generate_texts(suite, tokenizer, texts, settings, max_prompt_len, progress=False)
            else:
                kwargs = gen.generate_kwargs(settings, tokens, 0)
                out = plain_generate(plain, tokenizer, gen.prompt_ids(tokenizer, texts, max_prompt_len), kwargs,
                                     device)
        seconds = time.perf_counter() - start
        outputs[side].append(out)
        return {"seconds": [seconds], "mrs": len(texts)}

    for w in range(spec["warmup"]):  # the rounds use the MRs after the warm-up ones
        for side in SIDES:
            run(side, spec["rounds"] + w)
    units = {side: (lambda r, side=side: run(side, r)) for side in SIDES}
    done, cut = rounds(units, spec, f"{workload}-{precision}")
    timed = {side: outputs[side][spec["warmup"]:] for side in SIDES}
    same = sum(a == b for ra, rb in zip(timed["lora_repro"], timed["plain"]) for a, b in zip(ra, rb))
    total = sum(len(r) for r in timed["lora_repro"][:len(timed["plain"])])
    info = {"model": cfg["model"]["name"] + (" (smoke)" if smoke else ""), "task": task.name, "split": split,
            "data": data["source"], "decoding": {**yaml_settings.__dict__, "batch_size (MRs per call here)":
                                                 spec["mrs"]},
            "max_prompt_len": max_prompt_len, "lora": f"r={cfg['method']['r']} on {modules}, B = 0 (untrained)",
            "lora_repro decodes with LoRA merged into W0": settings.merge_weights, "plain side": "peft, unmerged",
            "frozen_dtypes_lora_repro": sorted({str(p.dtype).removeprefix("torch.") for p in suite.parameters()
                                                if not p.requires_grad}),
            "identical_outputs": None if smoke else {"same": same, "of": total},
            "sample_output": timed["lora_repro"][0][0] if timed["lora_repro"] else None}
    return {"units": done, "cut": cut, "settings": info, "unit": "call",
            "per_unit": {side: spec["mrs"] for side in SIDES}}


def matmul_probe(n: int, seconds: float = 1.0) -> dict:
    """fp32 vs bf16 square matmuls (and a bf16-autocast nn.Linear) of size n, interleaved: is bf16 native here?"""
    a, b = torch.randn(n, n), torch.randn(n, n)
    linear = torch.nn.Linear(n, n)
    fns = {"fp32 matmul": lambda: a @ b, "bf16 matmul": (lambda x=a.bfloat16(), y=b.bfloat16(): x @ y)}

    def autocast_linear():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            linear(a)
    fns["bf16 autocast linear"] = autocast_linear
    first = {k: bc.timed(f, torch.device("cpu")) for k, f in fns.items()}  # warm-up and a cost estimate
    trials = max(3, min(50, int(seconds / max(1e-6, max(first.values())))))
    times = bc.time_interleaved(fns, trials, 0, torch.device("cpu"))
    out = {}
    for k, t in times.items():
        s = bc.summarize(t)
        out[k] = {**s, "gflops": 2 * n ** 3 / (s["median_ms"] / 1000) / 1e9}
    return {"n": n, "trials": trials, "results": out,
            "bf16_over_fp32_time": out["bf16 matmul"]["median_ms"] / out["fp32 matmul"]["median_ms"],
            "autocast_linear_over_fp32_time": out["bf16 autocast linear"]["median_ms"] / out["fp32 matmul"]["median_ms"]}


# ---------------------------------------------------------------- summaries and sentences

def side_stats(piece: dict) -> dict:
    out = {}
    for side in SIDES:
        seconds = [s for u in piece["units"] if u["side"] == side for s in u["seconds"]]
        if not seconds:
            continue
        s = bc.summarize(seconds)
        rate = 1000 / s["median_ms"]
        out[side] = {**s, "seconds": seconds, "units_per_s": rate,
                     "items_per_s": rate * piece["per_unit"][side]}
    return out


def paired_ratios(piece: dict) -> list[float]:
    """plain time / lora_repro time for each pair (same round, same step index): above 1, lora_repro is faster."""
    by = {(u["round"], u["side"]): u["seconds"] for u in piece["units"]}
    out = []
    for (r, side), ours in by.items():
        if side == "lora_repro" and (r, "plain") in by:
            out += [p / s for s, p in zip(ours, by[(r, "plain")]) if s > 0]
    return out


def verdict(spread: dict, faster: str, slower: str) -> str:
    """A sentence from the per-pair ratios' range (generated, never hand-written)."""
    if spread["n"] < 2:
        return f"one pair only, so this run cannot tell whether {faster} or {slower} is faster"
    if spread["min"] > 1:
        return f"{faster} was faster in every one of the {spread['n']} pairs"
    if spread["max"] < 1:
        return f"{slower} was faster in every one of the {spread['n']} pairs"
    return (f"the {spread['n']} pairs fall on both sides of 1 ({spread['min']:.2f}-{spread['max']:.2f}): "
            "no difference this run can separate from the machine's noise")


def load_sentence(loads: list[list[float]], cores: int | None) -> str:
    peak = max(l[0] for l in loads)
    low = min(l[0] for l in loads)
    text = (f"The 1-minute load average ranged from {low:.2f} to {peak:.2f} during the run on {cores} cores")
    if cores and peak > cores:
        return text + (": the machine was shared with other jobs (a load above the core count means runnable "
                       "processes waited for a core), so absolute times are slower and noisier than on an idle "
                       "machine; both sides of each pair ran under the same load, which interleaving spreads evenly.")
    return text + ": the machine was lightly loaded."


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = bc.base_parser(__doc__.splitlines()[0], sizes=tuple(PRESETS))
    parser.add_argument("--pieces", default=None, help="comma-separated subset of the preset's pieces (e.g. "
                        "train-minilm-fp32,decode-smollm2-bf16)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every piece's time budget")
    parser.add_argument("--rounds", type=int, default=None, help="the most rounds per piece (default: the preset's)")
    args = parser.parse_args(argv)
    load_start = bc.load_average()
    preset = PRESETS[args.size]
    if args.threads is None and preset["threads"]:
        args.threads = preset["threads"]
    device = bc.setup(args)
    if device.type != "cpu":
        raise SystemExit("standin_speed times the CPU stand-ins; use --device cpu (or auto on a CPU machine)")
    pieces = dict(preset["pieces"])
    if args.pieces:
        names = [p.strip() for p in args.pieces.split(",") if p.strip()]
        unknown = sorted(set(names) - set(pieces))
        if unknown or not names:
            raise SystemExit(f"--pieces: {unknown or '(empty)'} unknown; choices: {', '.join(pieces)}")
        pieces = {k: v for k, v in pieces.items() if k in names}
    if args.budget_scale <= 0:
        raise SystemExit("--budget-scale must be > 0")
    pieces = {k: {**v, "budget_s": v["budget_s"] * args.budget_scale,
                  "rounds": bc.positive(args.rounds, "--rounds") or v["rounds"]} for k, v in pieces.items()}
    facts = bc.cpu_facts()
    probe = matmul_probe(preset["matmul_n"], seconds=0.2 if preset["smoke"] else 1.0)
    results, loads = {}, [load_start]
    for name, spec in pieces.items():
        workload, precision = name.rsplit("-", 1)
        before, start = bc.load_average(), time.perf_counter()
        runner = train_piece if WORKLOADS[workload]["kind"] == "train" else decode_piece
        piece = runner(workload, precision, spec, preset["smoke"], device)
        after = bc.load_average()
        loads += [before, after]
        piece.update({"workload": workload, "precision": precision, "kind": WORKLOADS[workload]["kind"],
                      "label": WORKLOADS[workload]["label"], "spec": spec, "wall_s": time.perf_counter() - start,
                      "load_before": before, "load_after": after})
        piece["stats"] = side_stats(piece)
        ratios = paired_ratios(piece)
        piece["paired_ratios"] = ratios
        piece["paired_ratio"] = bc.spread(ratios) if ratios else None
        st = piece["stats"]
        piece["ratio_of_medians"] = (st["plain"]["median_ms"] / st["lora_repro"]["median_ms"]
                                     if len(st) == 2 else None)
        results[name] = piece
        print(f"{name}: {piece['wall_s']:.0f} s, load {before[0]} -> {after[0]}", flush=True)
    return report(args, argv, device, preset, results, probe, facts, loads, load_start)


def report(args, argv, device, preset, results, probe, facts, loads, load_start) -> dict:
    machine = [{"what": "CPU", "value": bc.environment(device)["device_name"]},
               {"what": "cores (os.cpu_count)", "value": facts["cores"]},
               {"what": "torch threads", "value": torch.get_num_threads()},
               {"what": "torch CPU capability", "value": facts["torch_cpu_capability"]},
               {"what": "native bf16 dot products (avx512_bf16 or amx_bf16)",
                "value": "yes" if facts["native_bf16_matmul"] else "no"},
               {"what": "flags", "value": ", ".join(f"{f} {'yes' if v else 'no'}"
                                                   for f, v in facts["flags_relevant_to_bf16"].items())}]
    pr = probe["results"]
    probe_rows = [{"operation": k, "n": probe["n"], "median ms": bc.fmt(v["median_ms"], 2),
                   "IQR ms": bc.fmt(v["iqr_ms"], 2), "GFLOP/s": bc.fmt(v["gflops"], 1), "x fp32 time":
                   bc.fmt(v["median_ms"] / pr["fp32 matmul"]["median_ms"], 1)} for k, v in pr.items()]
    tables = {"train": [], "decode": []}
    ratio_rows, sentences, cuts = [], [], []
    for name, p in results.items():
        unit = "steps/s" if p["kind"] == "train" else "calls/s"
        items = "examples/s" if p["kind"] == "train" else "MRs/s"
        for side, s in p["stats"].items():
            row = {"piece": name, "workload": p["label"], "precision": p["precision"],
                   "side": SIDE_LABEL[p["kind"]][side], "n": s["n"],
                   f"s per {p['unit']} (median)": bc.fmt(s["median_ms"] / 1000, 2),
                   "IQR s": bc.fmt(s["iqr_ms"] / 1000, 2),
                   "min-max s": f"{s['min_ms'] / 1000:.2f}-{s['max_ms'] / 1000:.2f}",
                   unit: bc.fmt(s["units_per_s"], 3), items: bc.fmt(s["items_per_s"], 3)}
            if p["kind"] == "train":
                row["trainable"] = f"{p['settings']['trainable'][side]:,}"
                row["loss by round"] = ", ".join(f"{x:.3f}" for x in p["losses"][side])
            tables[p["kind"]].append(row)
        if p["cut"]:
            cuts.append(p["cut"])
        sp = p["paired_ratio"]
        if sp:
            ratio_rows.append({"piece": name, "pairs": sp["n"], "ratio of medians": bc.fmt(p["ratio_of_medians"]),
                               "paired median": bc.fmt(sp["median"]), "paired IQR":
                               f"{sp['q1']:.2f}-{sp['q3']:.2f}", "paired min-max": f"{sp['min']:.2f}-{sp['max']:.2f}"})
            faster = "lora_repro"
            other = SIDE_LABEL[p["kind"]]["plain"]
            what = "training steps" if p["kind"] == "train" else "decoding calls"
            sentences.append(f"{p['label']}, {p['precision']}: lora_repro's {what} took {1 / sp['median']:.2f}x the "
                             f"time of {other}'s (speed ratio {sp['median']:.2f}, median of {sp['n']} pairs; ratio of "
                             f"medians {p['ratio_of_medians']:.2f}); {verdict(sp, faster, other)}.")
    precision_rows = []
    for workload in WORKLOADS:
        fp32, bf16 = results.get(f"{workload}-fp32"), results.get(f"{workload}-bf16")
        if not (fp32 and bf16):
            continue
        for side in SIDES:
            a, b = fp32["stats"].get(side), bf16["stats"].get(side)
            if not (a and b):
                continue
            r = b["median_ms"] / a["median_ms"]
            lo, hi = b["min_ms"] / a["max_ms"], b["max_ms"] / a["min_ms"]
            precision_rows.append({"workload": WORKLOADS[workload]["label"], "side": SIDE_LABEL[fp32["kind"]][side],
                                   "fp32 s (median)": bc.fmt(a["median_ms"] / 1000, 2),
                                   "bf16 s (median)": bc.fmt(b["median_ms"] / 1000, 2),
                                   "bf16 / fp32 time": bc.fmt(r), "range (min/max..max/min)": f"{lo:.2f}-{hi:.2f}",
                                   "n fp32, bf16": f"{a['n']}, {b['n']}"})
            word = "slower" if lo > 1 else ("faster" if hi < 1 else "neither clearly faster nor slower")
            sentences.append(f"{WORKLOADS[workload]['label']}, {SIDE_LABEL[fp32['kind']][side]}: bf16 took {r:.2f}x "
                             f"the fp32 time (range {lo:.2f}-{hi:.2f} over the extreme pairs): bf16 is {word} here.")
    native = facts["native_bf16_matmul"]
    sentences.insert(0, f"This CPU {'has' if native else 'has no'} native bf16 dot products (avx512_bf16 "
                        f"{'yes' if facts['flags_relevant_to_bf16']['avx512_bf16'] else 'no'}, amx_bf16 "
                        f"{'yes' if facts['flags_relevant_to_bf16']['amx_bf16'] else 'no'}): a {probe['n']}x"
                        f"{probe['n']} bf16 matmul took {probe['bf16_over_fp32_time']:.1f}x the fp32 time, a "
                        f"bf16-autocast nn.Linear {probe['autocast_linear_over_fp32_time']:.1f}x.")
    sentences.append(load_sentence(loads, facts["cores"]))
    load_rows = [{"piece": n, "wall s": bc.fmt(p["wall_s"], 0), "load before (1, 5, 15 min)":
                  ", ".join(map(str, p["load_before"])), "load after": ", ".join(map(str, p["load_after"])),
                  "rounds run / most": f"{len({u['round'] for u in p['units']})} / {p['spec']['rounds']}",
                  "budget s": bc.fmt(float(p["spec"]["budget_s"]), 0)} for n, p in results.items()]
    notes = ["Speed ratio = plain time / lora_repro time for one pair (same round, same batch or MRs; above 1: "
             "lora_repro is faster). 'ratio of medians' compares the sides' median times; the paired median and range "
             "say how much of it survives pairing. Every comparison sentence above is generated from these numbers.",
             "Sides share the tokenised examples, collator and hyper-parameters; they differ in who builds the model "
             "(lora_repro.run.prepare with its fast path vs from_pretrained + peft) and who trains or decodes it (the "
             "suite's Trainer setup / generate_texts vs a plain Trainer / model.generate).",
             "Training continues across rounds (each round a fresh Trainer on the same model, same data seed); the "
             "loss column shows both sides train. Decoding uses untrained LoRA (B = 0) so both sides compute the same "
             "function and search the same beams ('identical_outputs' in the JSON counts matching outputs).",
             "bf16 = autocast (the Trainer's bf16=True; decoding under torch.autocast); lora_repro's fast path also "
             "stores the frozen matmul weights in bf16. On this CPU bf16 pieces get one unit per side to finish.",
             AUTOCAST_DECODE_NOTE]
    if cuts:
        notes.append("Time budgets cut these pieces short (n in the tables): " + "; ".join(cuts) + ".")
    if preset["smoke"]:
        notes.append("Tiny size: smoke models (two tiny random layers) and smoke data; the timings only exercise the "
                     "code.")
    settings = {"size": args.size, "pieces": ",".join(results), "budget_scale": args.budget_scale,
                "torch_threads": torch.get_num_threads(), "sides": "lora_repro vs transformers.Trainer + peft / plain "
                "model.generate", "interleaving": "rounds, first side alternating (A B, B A, ...)"}
    sections = [("Findings (generated from the numbers below)", "\n".join(f"- {s}" for s in sentences)),
                ("Machine", bc.markdown_table(machine, ["what", "value"])),
                ("bf16 on this CPU: matmul probe", bc.markdown_table(probe_rows)),
                ("Training steps per second", bc.markdown_table(tables["train"])),
                ("Decoding MRs per second", bc.markdown_table(tables["decode"])),
                ("lora_repro vs plain: speed ratios", bc.markdown_table(ratio_rows)),
                ("fp32 vs bf16", bc.markdown_table(precision_rows)),
                ("Load and wall time per piece", bc.markdown_table(load_rows)),
                ("Pieces' settings", "\n".join(f"- **{n}**: " + ", ".join(f"{k}={v}" for k, v in p["settings"].items())
                                               for n, p in results.items()))]
    stem = bc.report_stem(BENCHMARK, device, args.size, args.name)
    paths = bc.write_report(args.out, stem, benchmark=BENCHMARK, device=device,
                            title="Stand-in speed: training steps/s and beam-decoding MRs/s, lora_repro vs plain "
                                  "transformers + peft, fp32 vs bf16 (CPU)",
                            command=bc.command_line("benchmarks.standin_speed", argv), settings=settings,
                            results={"pieces": results, "matmul_probe": probe, "cpu": facts,
                                     "load_average_samples": loads, "findings": sentences},
                            sections=sections, notes=notes, cpu_note=CPU_NOTE, load_before=load_start)
    print(paths["markdown"].read_text())
    return {"results": results, "probe": probe, "findings": sentences, "paths": paths}


if __name__ == "__main__":
    main()
