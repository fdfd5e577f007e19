"""What every benchmark shares: arguments, device, timing (warm-up, synchronised, interleaved trials, median and
IQR), peak memory, the environment and command, and the Markdown + JSON report in ``results/benchmarks/``."""
from __future__ import annotations

import argparse
import copy
import ctypes
import datetime as dt
import math
import os
import shlex
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "results" / "benchmarks"
SIZES = ("tiny", "small", "full")
SIZE_HELP = ("tiny: seconds on a CPU (what the tests run); small: the committed CPU reports (1-10 minutes on 2 "
             "shared cores); full: the paper's settings, meant for a GPU; gpu: the paper's shapes with trial counts "
             "sized for benchmarks/gpu.sh's 8 minutes on one GPU")
CPU_NOTE = ("CPU only: no GPU was available for this run, so these are CPU numbers at a reduced size. The full-size "
            "GPU numbers come from the command with `--size full --device cuda`; none are reported here.")


# ---------------------------------------------------------------- arguments and device

def base_parser(description: str, sizes: Sequence[str] = SIZES) -> argparse.ArgumentParser:
    """The arguments every benchmark takes; ``sizes``: its presets (a ``gpu`` preset where benchmarks/gpu.sh runs it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=list(sizes), default="tiny", help=SIZE_HELP)
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default results/benchmarks)")
    parser.add_argument("--name", default=None, help="report file stem (default: BENCHMARK_DEVICE_SIZE)")
    parser.add_argument("--trials", type=int, default=None, help="timed trials per variant (default: the size's)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=None, metavar="S",
                        help="soft limit in seconds on the timing loops: fewer trials where the preset's would not "
                             "fit (at least one each; the report says which were cut). Model building counts too.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 gives steadier timings on a shared machine")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Device and threads from the common arguments."""
    if positive(args.threads, "--threads"):
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name!r} is not a device; choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are supported")
    return device


def positive(value: int | None, what: str) -> int | None:
    if value is not None and value < 1:
        raise SystemExit(f"{what} must be >= 1, got {value}")
    return value


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of a run (``fp32``: none)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# ---------------------------------------------------------------- models

def model_architecture(name: str) -> dict:
    """The ``architecture:`` dict of conf/model/NAME.yaml (how the paper's models build offline)."""
    path = REPO / "conf" / "model" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"no model config {path}; choices: {', '.join(choices)}")
    arch = (yaml.safe_load(path.read_text()) or {}).get("architecture")
    if not arch:
        raise SystemExit(f"{path} has no architecture: dict, so it cannot be built from config")
    return dict(arch)


def build_causal_lm(name: str, overrides: dict | None = None, seed: int = 0) -> nn.Module:
    """A randomly initialised causal LM from the model's yaml architecture (plus ``overrides``), through the suite's
    own loader. Random weights are fine for speed and memory: the work per step does not depend on their values."""
    from lora_repro.models import ModelSource, load_model

    arch = {**model_architecture(name), **(overrides or {})}
    cfg = {"name": name, "init": "random", "architecture": arch}
    torch.manual_seed(seed)
    model, _ = load_model(cfg, "generation", source=ModelSource("architecture", name), random_init=True)
    return model


def compose_config(overrides: Sequence[str]) -> dict:
    """One job's resolved settings, as ``python -m lora_repro OVERRIDES`` would run it (recipe filled in)."""
    from hydra import compose, initialize_config_dir
    from lora_repro.run import apply_recipe, to_dict

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = to_dict(compose(config_name="config", overrides=list(overrides)))
    cfg.pop("hydra", None)
    return apply_recipe(cfg)


def suite_training(cfg: dict, spec, splits: dict, tokenizer, model, run_dir: Path):
    """What the suite's training loop trains on for this job: (train dataset, collator, the task kind's
    TrainingArguments on top of ``training_arguments``), from the task's TrainingPlan (lora_repro.training)."""
    plan = spec.training_plan(cfg, spec, splits, tokenizer, model, run_dir)
    return plan.train, plan.collator, dict(plan.arguments)


TIMING_ONLY = {"eval_strategy": "no", "save_strategy": "no", "logging_strategy": "no", "report_to": [],
               "disable_tqdm": True}  # TrainingArguments while timing steps: no evaluation, checkpoints or logs


def plain_training_arguments(cfg: dict, steps: int, output_dir: str, device: torch.device | None = None):
    """``transformers.TrainingArguments`` as a researcher would write them for this job's settings (no suite code):
    the same seed, learning rate and schedule, batch, weight decay, clipping, label smoothing and precision."""
    from transformers import TrainingArguments

    t = cfg["trainer"]
    return TrainingArguments(
        output_dir=output_dir, seed=cfg["seed"], data_seed=cfg["seed"], learning_rate=t["lr"],
        per_device_train_batch_size=t["batch_size"], max_steps=steps,
        warmup_steps=t.get("warmup_steps") or t.get("warmup_ratio") or 0.0, weight_decay=t.get("weight_decay") or 0.0,
        lr_scheduler_type=t.get("lr_scheduler", "linear"), max_grad_norm=t.get("grad_clip", 1.0),
        label_smoothing_factor=t.get("label_smoothing") or 0.0,
        bf16=t.get("precision") == "bf16", dataloader_num_workers=t.get("num_workers", 0),
        use_cpu=device is None or device.type == "cpu", **TIMING_ONLY)


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


# ---------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], trials: int, warmup: int,
                     device: torch.device, deadline: float | None = None) -> dict[str, list[float]]:
    """Seconds per call of each variant. Variants run round-robin, one call each per round, and the starting variant
    rotates every round, so slow drift (thermal, another process on the machine) spreads evenly over all of them.
    A function that returns a number times itself (seconds): e.g. it times merge, then undoes it untimed.
    ``deadline`` (a ``time.perf_counter()`` value, see ``TimeBox``): no new round starts after it, but every variant
    gets at least one timed call; the caller reads how many it got from the lists' lengths."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for trial in range(trials):
        if trial and deadline is not None and time.perf_counter() >= deadline:
            break
        shift = trial % len(names)
        for name in names[shift:] + names[:shift]:
            sync(device)
            start = time.perf_counter()
            own = fns[name]()
            sync(device)
            times[name].append(own if isinstance(own, float) else time.perf_counter() - start)
    return times


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call takes, synchronised on the GPU."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class TimeBox:
    """A soft limit on a benchmark's timing loops (``--time-limit``): ``share(k)`` is the deadline for the next of k
    remaining loops, an equal share of what is left, so a slow machine shortens every loop instead of losing the last
    ones. Without a limit every deadline is None (each loop runs its preset's trials)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.perf_counter()
        self.cut: list[str] = []  # loops that stopped before their preset's trials

    def share(self, remaining_loops: int) -> float | None:
        if self.seconds is None:
            return None
        left = self.seconds - (time.perf_counter() - self.start)
        return time.perf_counter() + max(0.0, left) / max(1, remaining_loops)

    def record(self, label: str, got: int, wanted: int) -> None:
        if got < wanted:
            self.cut.append(f"{label}: {got} of {wanted} trials")

    def note(self) -> str | None:
        if not self.cut:
            return None
        return (f"--time-limit {self.seconds:g} s cut these timing loops short (every variant still timed at least "
                "once; n in the JSON): " + "; ".join(self.cut) + ".")


def summarize(seconds: Sequence[float]) -> dict:
    """Median and spread in milliseconds: the inter-quartile range is robust to the odd slow trial."""
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        raise ValueError("no timings to summarise")
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0], ms[0], ms[0])
    return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1,
            "mean_ms": statistics.fmean(ms), "min_ms": ms[0], "max_ms": ms[-1], "n": len(ms)}


def spread(values: Sequence[float]) -> dict:
    """Median, quartiles and range of plain numbers (e.g. per-pair speed ratios)."""
    v = sorted(values)
    if not v:
        raise ValueError("no values")
    q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else (v[0], v[0], v[0])
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1], "n": len(v)}


def step_timer():
    """A ``transformers.TrainerCallback`` collecting the seconds between consecutive step ends (the first from the
    first step's start): data, forward, backward and optimizer of each step, as the researcher waits for them."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.last: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.last is None:
                self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.last = now

    return StepTimer()


# ---------------------------------------------------------------- memory

def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_peak_supported() -> bool:
    """Linux lets a process reset its own peak RSS (VmHWM) by writing 5 to /proc/self/clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


class PeakMemory:
    """Peak memory of one block above the level at its start, in bytes (``None`` where it cannot be measured).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set (VmHWM), reset on entry after
    ``malloc_trim`` hands freed heap back, so other variants' earlier steps do not hide this one's peak.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.start = 0
        self.peak_above_start: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        elif cpu_peak_supported():
            _malloc_trim()
            Path("/proc/self/clear_refs").write_text("5")
            self.start = (_status_kb("VmRSS") or 0) * 1024
        else:
            self.start = -1
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_above_start = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.start >= 0:
            self.peak_above_start = max(0, (_status_kb("VmHWM") or 0) * 1024 - self.start)


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages (tied weights count once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """What stays in memory between steps: weights (by dtype), optimizer state; and the gradients a step creates."""
    params = list(model.parameters())
    by_dtype: dict[str, int] = {}
    for dtype in sorted({p.dtype for p in params}, key=str):
        by_dtype[str(dtype).removeprefix("torch.")] = tensor_bytes(p for p in params if p.dtype == dtype)
    trainable = [p for p in params if p.requires_grad]
    optim = tensor_bytes(v for state in (optimizer.state.values() if optimizer else []) for v in state.values())
    return {"weights": sum(by_dtype.values()), "weights_by_dtype": by_dtype, "optimizer": optim,
            "gradients": sum(p.numel() * p.element_size() for p in trainable),
            "trainable_params": sum(p.numel() for p in trainable), "total_params": sum(p.numel() for p in params)}


def mib(n: float | None) -> float | None:
    return None if n is None else n / 2**20


# ---------------------------------------------------------------- environment and reports

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx512_vnni", "avx_vnni", "avx2", "fma", "f16c")


def cpu_facts() -> dict:
    """CPU model, cores and the instruction-set flags that decide whether bf16 matmuls are fast on this CPU
    (native bf16 dot products: avx512_bf16 or amx_bf16; without them torch emulates bf16 through fp32)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        capability = None
    return {"flags_relevant_to_bf16": {f: f in flags for f in BF16_FLAGS}, "flags_read": bool(flags),
            "native_bf16_matmul": bool(flags & {"avx512_bf16", "amx_bf16"}), "torch_cpu_capability": capability,
            "cores": os.cpu_count()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def environment(device: torch.device) -> dict:
    from lora_repro import results as rs

    versions = rs.versions()
    try:
        import importlib.metadata as md
        versions["peft"] = md.version("peft")
    except Exception:  # noqa: BLE001 - peft is optional
        versions.setdefault("peft", None)
    env = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
           else rs.hardware().get("cpu"), "gpu_available": torch.cuda.is_available(),
           "hardware": rs.hardware(), "versions": versions, "git": rs.git_commit(),
           "load_average_1_5_15min": load_average(), "cpu": cpu_facts()}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def command_line(module: str, argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", module, *argv])


def report_stem(benchmark: str, device: torch.device, size: str, name: str | None) -> str:
    return name or f"{benchmark}_{device.type}_{size}"


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub Markdown table; values are printed as given (format numbers with ``fmt`` first)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])

    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, stem: str, *, benchmark: str, title: str, command: str, device: torch.device,
                 settings: dict, results: dict, sections: list[tuple[str, str]], notes: list[str],
                 cpu_note: str = CPU_NOTE, load_before: list[float] | None = None) -> dict[str, Path]:
    """``STEM.md`` (for people) and ``STEM.json`` (everything, for code) in ``out_dir``; a CPU run's notes open
    with ``cpu_note``. ``load_before``: the load average when the benchmark started (``load_average()``)."""
    from lora_repro.results import write_json_atomic

    env = environment(device)
    if load_before is not None:
        env["load_average_at_start_1_5_15min"] = list(load_before)
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if device.type == "cpu":
        notes = [cpu_note, *notes]
    record = {"benchmark": benchmark, "title": title, "created": created, "command": command, "environment": env,
              "settings": settings, "results": results, "notes": notes}
    out_dir = Path(out_dir)
    json_path = write_json_atomic(out_dir / f"{stem}.json", record)
    v, hw = env["versions"], env["hardware"]
    lines = [f"# {title}", "",
             f"- **Device:** {device.type.upper()} ({env['device_name']}; {hw.get('cpu_count')} CPU cores, "
             f"torch threads {hw.get('torch_threads')}; load average "
             + (f"at the start {', '.join(map(str, load_before))}, " if load_before is not None else "")
             + f"at the end {', '.join(map(str, env['load_average_1_5_15min']))})"
             + ("" if device.type == "cuda" else " — **no GPU**"),
             f"- **Command:** `{command}`",
             f"- **Versions:** torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}; "
             f"git {(env['git'].get('commit') or 'unknown')[:10]}{' (dirty)' if env['git'].get('dirty') else ''}",
             f"- **Created:** {created}", "",
             "**Settings:** " + ", ".join(f"{k}={v_}" for k, v_ in settings.items()), ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines.append(f"Raw numbers: `{json_path.name}`.")
    md_path = out_dir / f"{stem}.md"
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(md_path)
    return {"markdown": md_path, "json": json_path}
