"""``python -m lora_repro.analysis RUNS... [--out DIR]``: Section 7 analyses over finished LoRA runs.

RUNS are run directories or folders above them (e.g. runs/fig3_subspace). Every complete LoRA run found is analysed:
ΔW spectra, Table 7 (rebuilds each run's base model for W), Figure 8 grids, and φ grids for every pair of runs that
differ only in r (Figure 3) or only in the seed (Figure 4). Artefacts and summary.md go to --out
(default results/analysis/<experiment>). The notebooks in notebooks/ draw the figures from them.

    python -m lora_repro.analysis runs/fig3_subspace --out results/analysis/fig3_subspace
    python -m lora_repro.analysis runs/table6_rank --analyses performance,spectra
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lora_repro.analysis.experiments import ANALYSES, analyse, find_lora_runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lora_repro.analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or experiment folders (e.g. runs/fig3_subspace)")
    parser.add_argument("--out", help="output folder (default: results/analysis/<experiment of the runs>)")
    parser.add_argument("--analyses", default=",".join(ANALYSES),
                        help=f"comma-separated subset of: {', '.join(ANALYSES)} (default: all)")
    parser.add_argument("--max-w-directions", type=int, default=128,
                        help="Figure 8: how many singular directions of W to compare with (default 128)")
    parser.add_argument("--train-command", help="the command that trained the runs, recorded in the manifest")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    unknown = sorted(set(analyses) - set(ANALYSES))
    if unknown or not analyses:
        print(f"lora_repro.analysis: error: unknown analyses {unknown or args.analyses!r}; choices: "
              f"{', '.join(ANALYSES)}", file=sys.stderr)
        return 2
    if args.max_w_directions < 1:
        print(f"lora_repro.analysis: error: --max-w-directions must be >= 1, got {args.max_w_directions}",
              file=sys.stderr)
        return 2
    try:
        out = args.out
        if out is None:
            runs, _ = find_lora_runs(args.runs)
            experiments = sorted({str(run.record.get("experiment")) for run in runs}) or ["analysis"]
            out = Path("results") / "analysis" / "+".join(experiments)
        command = " ".join(["python -m lora_repro.analysis", *(sys.argv[1:] if argv is None else argv)])
        manifest = analyse(args.runs, out, analyses, args.max_w_directions, args.train_command, command)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"lora_repro.analysis: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(manifest['runs'])} runs analysed ({', '.join(analyses)}) -> {out}/summary.md")
    for line in manifest["skipped"]:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
