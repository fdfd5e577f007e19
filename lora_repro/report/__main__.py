"""python -m lora_repro.report RUNS_DIR [RUNS_DIR ...] --out results/NAME [--title ...] [--notes FILE]

Writes NAME.md (table beside the paper's numbers), NAME.csv (summary) and NAME_runs.csv (every run, with failures)."""
import argparse
from pathlib import Path

from lora_repro.report.table import write_report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora_repro.report", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run folders (searched recursively for results.json)")
    parser.add_argument("--out", required=True, help="output path without suffix, e.g. results/table2_standin")
    parser.add_argument("--title", default=None)
    parser.add_argument("--notes", default=None, help="a Markdown file placed under the title (provenance)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such run folder: {', '.join(missing)}")
    notes = Path(args.notes).read_text() if args.notes else ""
    print(write_report(args.paths, args.out, args.title, notes))


if __name__ == "__main__":
    main()
