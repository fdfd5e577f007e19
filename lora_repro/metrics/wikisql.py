"""WikiSQL accuracy: logical-form match of predicted SQL, and execution match given a database.

Logical-form accuracy compares ``canonical_sql(prediction) == canonical_sql(gold)``:

1. the query is split into tokens: quoted strings ('...' or "..."), the operators
   ``<= >= != <> = < >``, the symbols ``( ) , ; *`` and whitespace-separated words, so spacing
   such as ``COUNT(x)`` vs ``COUNT ( x )`` or ``a=1`` vs ``a = 1`` does not matter;
2. every token is lowercased (WikiSQL's own evaluation also lowercases condition values), a
   quoted string keeps its content with whitespace runs collapsed and single quotes;
3. a trailing ``;`` is dropped;
4. the conditions after the first ``WHERE`` are split on ``AND`` and sorted, since WikiSQL
   treats conditions as a set (an unquoted value that itself contains the word "and" is split
   too, which cannot make different condition sets equal in practice).

Execution accuracy runs both queries on a SQLite database (stdlib ``sqlite3``) and compares the
result rows as multisets (WikiSQL queries have no ORDER BY). A prediction that fails to run is
wrong; a gold query that fails to run is an error.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from contextlib import closing
from collections.abc import Sequence
from pathlib import Path
from lora_repro.errors import MissingInputError, UserError

_SQL_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|<=|>=|!=|<>|[=<>(),;*]|[^\s=<>(),;*'"]+""")


def canonical_sql(sql: str) -> tuple[str, ...]:
    """The normalised token sequence that logical-form accuracy compares (rules above)."""
    tokens = []
    for token in _SQL_TOKEN.findall(sql):
        if token[0] in "'\"":
            token = "'" + " ".join(token[1:-1].split()) + "'"
        tokens.append(token.lower())
    if tokens and tokens[-1] == ";":
        tokens.pop()
    if "where" not in tokens:
        return tuple(tokens)
    where = tokens.index("where")
    conditions, current = [], []
    for token in tokens[where + 1:]:
        if token == "and":
            conditions.append(tuple(current))
            current = []
        else:
            current.append(token)
    conditions.append(tuple(current))
    ordered = [token for condition in sorted(conditions) for token in (*condition, "and")][:-1]
    return (*tokens[:where + 1], *ordered)


def logical_form_accuracy(predictions: Sequence[str], golds: Sequence[str]) -> float:
    """Percentage of predictions whose canonical form equals the gold's."""
    correct = sum(canonical_sql(p) == canonical_sql(g)
                  for p, g in zip(predictions, golds, strict=True))
    return 100 * correct / len(golds)


def execution_accuracy(predictions: Sequence[str], golds: Sequence[str], db_path: str) -> float:
    """Percentage of predictions returning the same rows (as a multiset) as the gold query."""
    if not Path(db_path).is_file():
        raise MissingInputError(f"SQLite database not found: {db_path}")
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as connection:
        correct = 0
        for index, (prediction, gold) in enumerate(zip(predictions, golds, strict=True), 1):
            try:
                expected = Counter(connection.execute(gold).fetchall())
            except sqlite3.Error as error:
                raise UserError(f"gold query {index} fails on {db_path}: {error}: {gold}") from None
            try:
                correct += Counter(connection.execute(prediction).fetchall()) == expected
            except sqlite3.Error:
                pass  # a prediction that does not run is simply wrong
    return 100 * correct / len(golds)


def wikisql_scores(predictions: Sequence[str], golds: Sequence[str],
                   db_path: str | None = None) -> dict[str, float]:
    """``accuracy`` (logical form, %) and, with a database, ``execution_accuracy`` (%)."""
    scores = {"accuracy": logical_form_accuracy(predictions, golds)}
    if db_path is not None:
        scores["execution_accuracy"] = execution_accuracy(predictions, golds, db_path)
    return scores
