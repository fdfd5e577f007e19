"""The GPU benchmarks in one time-boxed run (what ``bash benchmarks/gpu.sh`` starts): the full-size Table 1 latency
grid, and training throughput and memory of GPT-2 medium and large (full FT, LoRA, the fast path, peft) without and
with ``torch.compile``. Each piece is a subprocess of an existing benchmark module with its ``gpu`` preset, a soft
``--time-limit`` (fewer trials when the machine is slower than planned) and a hard timeout; the reports go to OUT as
``*_gpu.md/json`` and a summary (``gpu_suite_gpu.md/json``) says what each piece did, how long it took, and what was
skipped or cut and why.

    python -m benchmarks.gpu_suite --size gpu --out results/benchmarks      # on one GPU, about 8 minutes in all
    python -m benchmarks.gpu_suite --size tiny --out /tmp/check             # the same pieces at tiny shapes (CPU)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


from benchmarks import common as bc

BENCHMARK = "gpu_suite"
TOTAL_S = 480  # the whole run, with the start-up: 8 minutes
# (name, module, arguments, soft time limit s, hard timeout s, needs torch.compile)
GPU_PIECES = (
    ("table1_latency_gpu", "benchmarks.table1_latency", ["--size", "gpu"], 90, 150, False),
    ("train_throughput_gpu", "benchmarks.train_throughput", ["--size", "gpu"], 90, 150, False),
    # compilation (4 variants) dominates these; each model is its own piece so a slow compile loses one report only
    ("train_throughput_compile_gpu", "benchmarks.train_throughput",
     ["--size", "gpu", "--compile", "--models", "gpt2-medium", "--points", "8x512"], 30, 170, True),
    ("train_throughput_compile_large_gpu", "benchmarks.train_throughput",
     ["--size", "gpu", "--compile", "--models", "gpt2-large", "--points", "8x512"], 30, 170, True),
)
TINY = ["--size", "tiny", "--trials", "2", "--warmup", "1", "--threads", "1"]
TINY_PIECES = (
    ("table1_latency_gpu", "benchmarks.table1_latency", TINY, 60, 150, False),
    ("train_throughput_gpu", "benchmarks.train_throughput", TINY, 60, 150, False),
    ("train_throughput_compile_gpu", "benchmarks.train_throughput", [*TINY, "--compile", "--points", "4x32"], 60, 300,
     True),
)
RESERVE_S = 15  # kept back for the summary and the interpreter's exit


def run_piece(name: str, module: str, args: list[str], soft: float, hard: float, out: Path, device: str,
              env: dict) -> dict:
    cmd = [sys.executable, "-m", module, *args, "--device", device, "--out", str(out), "--name", name,
           "--time-limit", f"{soft:g}"]
    start = time.perf_counter()
    log = out / f"{name}.log"
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, cwd=bc.REPO, stdout=f, stderr=subprocess.STDOUT, timeout=hard, env=env)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {hard:g} s (killed; no report)"
    seconds = time.perf_counter() - start
    report = out / f"{name}.json"
    ok = status == "ok" and report.is_file()
    cut = None
    if ok:
        notes = json.loads(report.read_text()).get("notes", [])
        cut = next((n for n in notes if n.startswith("--time-limit")), None)
    return {"piece": name, "command": bc.command_line(module, [*args, "--device", device, "--name", name,
                                                              "--time-limit", f"{soft:g}"]),
            "status": status if ok or status != "ok" else "failed (no report written)", "wall_s": seconds,
            "report": report.name if ok else None, "log": log.name, "time_limit_s": soft, "timeout_s": hard,
            "trials_cut": cut}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("gpu", "tiny"), default="gpu")
    parser.add_argument("--out", type=Path, default=bc.DEFAULT_OUT)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--total", type=float, default=TOTAL_S, help="seconds for the whole run (default 480)")
    parser.add_argument("--compile-on-cpu", action="store_true",
                        help="run the torch.compile piece on a CPU too (minutes of compilation; skipped otherwise)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = bc.load_average()
    device = bc.resolve_device(args.device)
    if args.size == "gpu" and device.type != "cuda":
        raise SystemExit("gpu_suite --size gpu needs a CUDA GPU (none here); --size tiny runs the same pieces on a "
                         "CPU at tiny shapes")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(bc.REPO), os.environ.get("PYTHONPATH")]))}
    pieces = GPU_PIECES if args.size == "gpu" else TINY_PIECES
    rows = []
    for name, module, piece_args, soft, hard, compiled in pieces:
        if compiled and device.type == "cpu" and not args.compile_on_cpu:
            rows.append({"piece": name, "status": "skipped: torch.compile on a CPU spends minutes in inductor's C++ "
                         "compilation, too slow for a tiny check (--compile-on-cpu runs it); on the GPU it runs",
                         "wall_s": 0.0, "report": None, "command": bc.command_line(module, piece_args)})
            continue
        left = args.total - (time.perf_counter() - started) - RESERVE_S
        if left < (90 if compiled else 20):  # a compiled piece needs time to compile before its first trial
            rows.append({"piece": name, "status": f"skipped: only {max(0, left):.0f} s of the {args.total:g} s left",
                         "wall_s": 0.0, "report": None, "command": bc.command_line(module, piece_args)})
            continue
        hard = min(hard, left)
        soft = min(soft, max(5.0, hard - 60))  # a minute for building models and writing the report
        print(f"gpu_suite: {name} (time limit {soft:.0f} s, timeout {hard:.0f} s)", flush=True)
        rows.append(run_piece(name, module, piece_args, soft, hard, args.out, args.device, env))
        print(f"gpu_suite: {name}: {rows[-1]['status']} in {rows[-1]['wall_s']:.0f} s", flush=True)
    total = time.perf_counter() - started
    table = [{"piece": r["piece"], "status": r["status"], "wall s": bc.fmt(r["wall_s"], 0),
              "report": f"`{r['report']}`" if r.get("report") else "–",
              "trials cut by the time limit": "yes" if r.get("trials_cut") else "no"} for r in rows]
    ok = sum(r["status"] == "ok" for r in rows)
    notes = [f"{ok} of {len(rows)} pieces wrote their report; the whole run took {total:.0f} s of the {args.total:g} s "
             "allowed.",
             "Each piece is a subprocess with a soft --time-limit (its timing loops take fewer trials when the machine "
             "is slower than planned; the piece's report says which) and a hard timeout (a piece killed by it writes "
             "no report; its log is kept).",
             "The torch.compile piece compiles every variant alike (default mode) at one shape (batch 8 x 512 on the "
             "GPU); compilation happens in the untimed warm-up steps (warmup_s in its JSON)."]
    notes += [f"{r['piece']}: {r['trials_cut']}" for r in rows if r.get("trials_cut")]
    stem = "gpu_suite_gpu"
    paths = bc.write_report(args.out, stem, benchmark=BENCHMARK, device=device,
                            title="GPU benchmarks in one time-boxed run (benchmarks/gpu.sh)",
                            command=bc.command_line("benchmarks.gpu_suite", argv),
                            settings={"size": args.size, "total_s": args.total, "pieces": len(rows)},
                            results={"pieces": rows, "total_s": total}, sections=[("Pieces", bc.markdown_table(table))],
                            notes=notes, load_before=load_before,
                            cpu_note="CPU only: this is the tiny-shape check of benchmarks/gpu.sh, not GPU numbers.")
    print(paths["markdown"].read_text())
    return {"pieces": rows, "paths": paths}


if __name__ == "__main__":
    main()
