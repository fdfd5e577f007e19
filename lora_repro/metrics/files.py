"""Reading hypothesis and reference files in the E2E scorer's plain-text formats.

* hypotheses: one output per line (UTF-8); surrounding whitespace is stripped; a blank line is
  an error, since it would silently shift every later output against its references.
* references: the E2E official format for every task: the references of one segment on
  consecutive lines, segments separated by one blank line (blank lines at the end are ignored).
  As in the official script, a file without any blank line holds one reference per segment
  (one line per segment) when there is more than one hypothesis.
* wikisql references: one gold SQL query per line.

Unlike the official ``measure_scores.py`` we read no TSV/CSV files and do not ``eval`` lines
wrapped in quotes.
"""

from __future__ import annotations

from pathlib import Path
from lora_repro.errors import MissingInputError, UserError


def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start})") from None
    return [line.strip() for line in text.splitlines()]


def read_hypotheses(path: str | Path) -> list[str]:
    lines = _read_lines(path)
    for number, line in enumerate(lines, 1):
        if not line:
            raise UserError(f"{path}:{number}: empty hypothesis line "
                             f"(every line must hold one output)")
    return lines


def read_reference_groups(path: str | Path, num_hypotheses: int) -> list[list[str]]:
    lines = _read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    if "" not in lines and num_hypotheses > 1:
        return [[line] for line in lines]  # single-reference file, as the official script reads it
    groups: list[list[str]] = [[]]
    for number, line in enumerate(lines, 1):
        if line:
            groups[-1].append(line)
        elif not groups[-1]:
            raise UserError(f"{path}:{number}: empty reference group "
                             f"(a blank line at the start or two blank lines in a row)")
        else:
            groups.append([])
    return groups if groups[0] else []


def read_single_references(path: str | Path) -> list[list[str]]:
    """One reference per line (WikiSQL gold SQL); blank lines are errors."""
    lines = _read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line:
            raise UserError(f"{path}:{number}: empty reference line")
    return [[line] for line in lines]
