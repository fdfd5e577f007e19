"""Score generated outputs: ``python -m lora_repro.score TASK HYPOTHESES_FILE REFERENCES_FILE``.

Prints the metrics as JSON (see ``lora_repro.metrics`` for their definitions and scales and
``lora_repro.metrics.files`` for the file formats).
"""

from __future__ import annotations

import argparse
import json
import sys

from lora_repro.metrics import TASKS, score
from lora_repro.metrics.files import read_hypotheses, read_reference_groups, read_single_references
from lora_repro.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lora_repro.score",
        description="Score NLG outputs against references as the official scorers do.",
        epilog="References file: the references of one segment on consecutive lines, segments "
               "separated by a blank line (E2E official format); for wikisql one gold SQL "
               "query per line. METEOR and the E2E PTB tokenisation run pycocoevalcap's jars "
               "and need java on the PATH (without it: meteor_approx and an emulated tokeniser); "
               "METEOR_JAR overrides the meteor-1.5.jar.")
    parser.add_argument("task", choices=TASKS, help="which task's metrics to compute")
    parser.add_argument("hypotheses", help="file with one output per line")
    parser.add_argument("references", help="references file (format below)")
    parser.add_argument("--db", help="wikisql only: SQLite database for execution accuracy")
    args = parser.parse_args(argv)

    try:
        if args.db is not None and args.task != "wikisql":
            raise UserError(f"--db is only used by the wikisql task, not {args.task}")
        hypotheses = read_hypotheses(args.hypotheses)
        if args.task == "wikisql":
            references = read_single_references(args.references)
        else:
            references = read_reference_groups(args.references, len(hypotheses))
        if len(hypotheses) != len(references):
            raise UserError(f"{len(hypotheses)} hypotheses in {args.hypotheses} but "
                             f"{len(references)} reference groups in {args.references}")
        scores = score(args.task, hypotheses, references, db_path=args.db)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
