"""python -m lora_repro.report RUNS [RUNS ...] --out results/NAME [--title ...] [--notes FILE]
python -m lora_repro.report claims RUNS [RUNS ...] --out results/claims

RUNS: run folders (searched recursively for results.json) or NAME_runs.csv files written by an earlier report.
Writes NAME.md (table beside the paper's numbers, with the readings), NAME.csv (one row per setting) and
NAME_runs.csv (every run, with failures). With no run under RUNS it writes nothing and exits 2.

`claims` writes the claims ledger, NAME.md and NAME.csv (one row per claim of the paper, with a computed verdict):
RUNS there are run folders, *_runs.csv files, Section 7 analysis folders and benchmark JSONs, or folders holding
them (e.g. results/); with no evidence at all every row says "not run here"."""
import argparse
import shlex
import sys
from pathlib import Path

from lora_repro.report.table import NoResults, report_paths, write_report


def claims_main(argv) -> None:
    from lora_repro.report.claims import claims_paths, write_claims, verdict_kind

    parser = argparse.ArgumentParser(prog="python -m lora_repro.report claims",
                                     description="The claims ledger: one row per claim of the paper, with a verdict "
                                                 "computed from the evidence under RUNS (lora_repro/report/claims.yaml).")
    parser.add_argument("paths", nargs="*", help="run folders, *_runs.csv, analysis folders, benchmark JSONs, or "
                                                 "folders holding them (e.g. results/)")
    parser.add_argument("--out", required=True, help="output path without suffix, e.g. results/claims")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    command = shlex.join(["python", "-m", "lora_repro.report", "claims", *args.paths, "--out", args.out])
    frame = write_claims(args.paths, args.out, command=command)
    for row in frame.itertuples():
        print(f"{row.id}: {row.verdict}")
    counts = frame.verdict.map(verdict_kind).value_counts()
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for path in claims_paths(args.out):
        print(f"wrote {path}")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "claims":
        claims_main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m lora_repro.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
