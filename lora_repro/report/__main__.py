"""python -m lora_repro.report RUNS [RUNS ...] --out results/NAME [--title ...] [--notes FILE]

RUNS: run folders (searched recursively for results.json) or NAME_runs.csv files written by an earlier report.
Writes NAME.md (table beside the paper's numbers, with the readings), NAME.csv (one row per setting) and
NAME_runs.csv (every run, with failures). With no run under RUNS it writes nothing and exits 2."""
import argparse
import shlex
import sys
from pathlib import Path

from lora_repro.report.table import NoResults, report_paths, write_report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora_repro.report", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run folders (searched recursively for results.json) or *_runs.csv")
    parser.add_argument("--out", required=True, help="output path without suffix, e.g. results/table2_standin")
    parser.add_argument("--title", default=None)
    parser.add_argument("--notes", default=None, help="a Markdown file placed under the title (provenance)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such run folder or runs CSV: {', '.join(missing)}")
    notes = Path(args.notes).read_text() if args.notes else ""
    command = ["python", "-m", "lora_repro.report", *args.paths, "--out", args.out]
    if args.title:
        command += ["--title", args.title]
    if args.notes:
        command += ["--notes", args.notes]
    try:
        text = write_report(args.paths, args.out, args.title, notes, command=shlex.join(command))
    except NoResults as error:
        print(error)
        sys.exit(2)
    print(text)
    for path in report_paths(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
