"""Readers for the generation datasets of the LoRA paper, from their original published files.

Every reader takes the data root (the folder ``LORA_REPRO_DATA`` points at; ``None`` reads the env var) and a
split in ``train``/``dev``/``test`` (``val``/``valid``/``validation`` mean ``dev``). It returns ``Example``s:
``context`` is the conditioning text, ``references`` every reference of that input.

Context formats (they follow microsoft/LoRA ``examples/NLG`` and the paper's Appendix C):

* E2E: ``name : The Vaults | Type : pub | price : more than £ 30 | ...``. Slots keep the MR order. Three keys are
  renamed as LoRA renames them (eatType→Type, familyFriendly→family friendly, priceRange→price). LoRA's text files
  are tokenized, and the only MR values this changes are the price values (``£20-25`` → ``£ 20 - 25``), so only that
  is reproduced. The result equals the context of every line of LoRA's ``valid.txt``/``test.txt``. References stay
  untokenized as published, since the official E2E scorer tokenizes them itself. Dev/test give one Example per
  unique MR. Train gives one per CSV row, because the train CSV is not grouped by MR and keeping the file order
  matters there.
* WebNLG 2017: the modified tripleset, written ``subject : property : object`` and joined with `` | `` (underscores
  kept, property case kept), as in LoRA's ``format_converting_webnlg.py``. Like LoRA, only lexicalisations marked
  ``comment="good"`` are references. The others go to ``meta["to_fix_references"]`` (dev: 10 of 2,268; one dev
  entry has none marked good, so its ``references`` is empty).
  ``meta["seen"]`` says whether the category is one of the 10 train categories.
* DART: the same triple format, with the relation lower-cased as in LoRA's ``format_converting_dart.py``.
  Each entry gives one Example; the dev file holds 47 repeated triplesets, and these are kept as separate entries.
  JSON is read where present and WebNLG-style XML otherwise. The local test XML (Yale-LILY/dart@34b3c87) lists the
  entries in a different order from LoRA's test JSON.
* SAMSum: the dialogue's utterances joined with ``"\\n"`` and followed by ``"\\n\\n"`` (paper, Appendix C).
  The separator is part of the context.
* WikiSQL: ``"Table: col | col | ...\\nQuestion: ..."``. The paper says only "{table schema, query}", so this layout
  is our own choice. The target is the query string built from the sql dict with the column names
  (see ``wikisql_query_string``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from lora_repro.errors import MissingInputError, UserError

DATA_ENV_VAR = "LORA_REPRO_DATA"
SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"val": "dev", "valid": "dev", "validation": "dev"}

DataDir = Path | str | None


@dataclass
class Example:
    context: str
    references: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def flatten_for_training(examples: list[Example]) -> list[tuple[str, str]]:
    """One (context, target) pair per reference, in order."""
    return [(example.context, reference) for example in examples for reference in example.references]


def data_root(data_dir: DataDir = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$LORA_REPRO_DATA``."""
    if data_dir is None:
        env_value = os.environ.get(DATA_ENV_VAR)
        if not env_value:
            raise MissingInputError(f"no data folder given and {DATA_ENV_VAR} is not set; "
                                    f"set {DATA_ENV_VAR} to the shared data folder (with README.md)")
        data_dir = env_value
    root = Path(data_dir)
    if not root.is_dir():
        raise MissingInputError(f"data folder {root} does not exist; set {DATA_ENV_VAR} (or data_dir) "
                                f"to the shared data folder")
    return root


def _data_file(data_dir: DataDir, *parts: str) -> Path:
    path = data_root(data_dir).joinpath(*parts)
    if not path.exists():
        raise MissingInputError(f"missing data file {path}; set {DATA_ENV_VAR} (or data_dir) to a data folder "
                                f"that holds it (its README.md lists what is staged)")
    return path


def _check_split(split: str, available: tuple[str, ...] = SPLITS) -> str:
    canonical = _SPLIT_ALIASES.get(split, split)
    if canonical not in available:
        raise UserError(f"unknown split {split!r}; available splits: {', '.join(available)} "
                         f"(aliases: {', '.join(_SPLIT_ALIASES)} -> dev)")
    return canonical


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_number}: invalid JSON: {err.msg}") from None


def _xml_entries(path: Path) -> list[ET.Element]:
    try:
        return list(ET.parse(path).getroot().iter("entry"))
    except ET.ParseError as err:
        raise UserError(f"{path}: malformed XML: {err}") from None


def _xml_triples(entry: ET.Element, path: Path) -> list[tuple[str, str, str]]:
    triples = []
    for mtriple in entry.iter("mtriple"):
        parts = (mtriple.text or "").split(" | ")
        if len(parts) != 3:
            raise UserError(f"{path}: entry eid={entry.get('eid')}: mtriple {mtriple.text!r} is not "
                             f"'subject | property | object'")
        triples.append((parts[0], parts[1], parts[2]))
    return triples


def format_triples(triples: list[tuple[str, str, str]], lowercase_relation: bool = False) -> str:
    """LoRA's linearisation: ``subject : relation : object | ...``."""
    return " | ".join(f"{s} : {r.lower() if lowercase_relation else r} : {o}" for s, r, o in triples)


# ---------------------------------------------------------------- E2E
_E2E_FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}
_E2E_KEY_NAMES = {"eatType": "Type", "familyFriendly": "family friendly", "priceRange": "price"}
_E2E_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\[\]]*)\]")


def format_e2e_mr(mr: str) -> str:
    """``name[X], eatType[pub]`` -> ``name : X | Type : pub`` (LoRA's E2E context)."""
    slots = _E2E_SLOT.findall(mr)
    if not slots or ", ".join(f"{key}[{value}]" for key, value in slots) != mr.strip():
        raise UserError(f"malformed E2E MR {mr!r}; expected 'slot[value], slot[value], ...'")
    return " | ".join(f"{_E2E_KEY_NAMES.get(key, key)} : {_lora_tokenize_value(value)}" for key, value in slots)


def _lora_tokenize_value(value: str) -> str:
    # LoRA's files were tokenized: '£' and a '-' between digits become separate tokens ('£20-25' -> '£ 20 - 25').
    return re.sub(r"(?<=\d)-(?=\d)", " - ", re.sub(r"£(?=\d)", "£ ", value))


def read_e2e(data_dir: DataDir, split: str) -> list[Example]:
    split = _check_split(split)
    path = _data_file(data_dir, "e2e", _E2E_FILES[split])
    contexts: dict[str, str] = {}  # MR -> formatted context
    grouped: dict[str, Example] = {}  # MR -> its Example (dev/test)
    examples: list[Example] = []
    with path.open(encoding="utf-8", newline="") as csv_file:
        reader = csv.DictReader(csv_file)
        if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
            raise UserError(f"{path}:1: expected CSV columns mr,ref, got {reader.fieldnames}")
        for row in reader:
            mr, ref = row["mr"], row["ref"]
            if mr not in contexts:
                try:
                    contexts[mr] = format_e2e_mr(mr)
                except ValueError as err:
                    raise UserError(f"{path}:{reader.line_num}: {err}") from None
            if split == "train":
                examples.append(Example(contexts[mr], [ref], {"mr": mr}))
            elif mr in grouped:
                grouped[mr].references.append(ref)
            else:
                grouped[mr] = Example(contexts[mr], [ref], {"mr": mr})
                examples.append(grouped[mr])
    return examples


# ---------------------------------------------------------------- WebNLG 2017
WEBNLG_SEEN_CATEGORIES = frozenset({"Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food",
                                    "Monument", "SportsTeam", "University", "WrittenWork"})
WEBNLG_UNSEEN_CATEGORIES = frozenset({"Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"})


def read_webnlg(data_dir: DataDir, split: str) -> list[Example]:
    split = _check_split(split)
    folder = _data_file(data_dir, "webnlg_challenge_2017", split)
    if split == "test":
        files = [_data_file(data_dir, "webnlg_challenge_2017", "test", "testdata_with_lex.xml")]
    else:  # size folders 1..7, then categories alphabetically: the order of LoRA's dev.json
        files = sorted(folder.glob("*triples/*.xml"))
        if not files:
            raise MissingInputError(f"no {folder}/*triples/*.xml files; set {DATA_ENV_VAR} to the shared data folder")
    examples = []
    for path in files:
        for entry in _xml_entries(path):
            lexes = entry.findall("lex")
            category = entry.get("category", "")
            examples.append(Example(
                format_triples(_xml_triples(entry, path)),
                [lex.text or "" for lex in lexes if lex.get("comment") == "good"],
                {"category": category, "seen": category in WEBNLG_SEEN_CATEGORIES, "eid": entry.get("eid"),
                 "size": int(entry.get("size", 0)), "file": str(path.relative_to(folder.parent)),
                 "to_fix_references": [lex.text or "" for lex in lexes if lex.get("comment") != "good"]}))
    return examples


# ---------------------------------------------------------------- DART
def _read_dart_json(path: Path) -> list[Example]:
    return [Example(format_triples([tuple(t) for t in entry["tripleset"]], lowercase_relation=True),
                    [annotation["text"] for annotation in entry["annotations"]],
                    {"index": index, "sources": [annotation["source"] for annotation in entry["annotations"]],
                     "subtree_was_extended": entry.get("subtree_was_extended")})
            for index, entry in enumerate(_load_json(path))]


def _read_dart_xml(path: Path) -> list[Example]:
    return [Example(format_triples(_xml_triples(entry, path), lowercase_relation=True),
                    [lex.text or "" for lex in entry.findall("lex")],
                    {"index": index, "sources": [lex.get("comment") for lex in entry.findall("lex")],
                     "eid": entry.get("eid")})
            for index, entry in enumerate(_xml_entries(path))]


def read_dart(data_dir: DataDir, split: str) -> list[Example]:
    split = _check_split(split)
    json_path = data_root(data_dir) / "dart" / f"dart-v1.1.1-full-{split}.json"
    if json_path.exists():
        return _read_dart_json(json_path)
    xml_path = json_path.with_suffix(".xml")
    if xml_path.exists():
        return _read_dart_xml(xml_path)
    raise MissingInputError(f"missing data file {json_path} (or {xml_path.name}); set {DATA_ENV_VAR} (or data_dir) "
                            f"to a data folder that holds it (DART train is not staged in the shared copy)")


# ---------------------------------------------------------------- SAMSum
_SAMSUM_FILES = {"train": "train.json", "dev": "val.json", "test": "test.json"}


def read_samsum(data_dir: DataDir, split: str) -> list[Example]:
    split = _check_split(split)
    path = _data_file(data_dir, "samsum", _SAMSUM_FILES[split])
    return [Example(dialogue["dialogue"].replace("\r\n", "\n") + "\n\n", [dialogue["summary"]], {"id": dialogue["id"]})
            for dialogue in _load_json(path)]


# ---------------------------------------------------------------- WikiSQL
WIKISQL_AGG_OPS = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")
WIKISQL_COND_OPS = ("=", ">", "<", "OP")


def wikisql_query_string(sql: dict[str, Any], header: list[str]) -> str:
    """WikiSQL's query-to-string with column names: ``SELECT [agg] col FROM table [WHERE col op val AND ...]``.

    Unlike WikiSQL's ``lib/query.py``, it writes no double space when there is no aggregation.
    """
    select = " ".join(part for part in ("SELECT", WIKISQL_AGG_OPS[sql["agg"]], header[sql["sel"]]) if part)
    conditions = " AND ".join(f"{header[column]} {WIKISQL_COND_OPS[op]} {value}" for column, op, value in sql["conds"])
    return f"{select} FROM table" + (f" WHERE {conditions}" if conditions else "")


def read_wikisql(data_dir: DataDir, split: str) -> list[Example]:
    split = _check_split(split)
    questions_path = _data_file(data_dir, "wikisql", f"{split}.jsonl")
    tables_path = questions_path.with_name(f"{split}.tables.jsonl")
    if not tables_path.exists():
        raise MissingInputError(
            f"missing WikiSQL tables file {tables_path}: the questions in {questions_path} cannot be paired with "
            f"table headers without it; get {split}.tables.jsonl from salesforce/WikiSQL data.tar.bz2 and put it "
            f"next to {split}.jsonl")
    headers = {table["id"]: table["header"] for _, table in _read_jsonl(tables_path)}
    examples = []
    for line_number, question in _read_jsonl(questions_path):
        header = headers.get(question["table_id"])
        if header is None:
            raise UserError(f"{questions_path}:{line_number}: table_id {question['table_id']!r} "
                             f"is not in {tables_path}")
        try:
            target = wikisql_query_string(question["sql"], header)
        except (IndexError, KeyError, TypeError) as err:
            raise UserError(f"{questions_path}:{line_number}: bad sql {question.get('sql')!r} for "
                             f"{len(header)} columns: {err!r}") from None
        examples.append(Example(f"Table: {' | '.join(header)}\nQuestion: {question['question'].strip()}", [target],
                                {"table_id": question["table_id"], "sql": question["sql"], "header": header}))
    return examples


READERS: dict[str, Callable[[DataDir, str], list[Example]]] = {
    "e2e": read_e2e, "webnlg": read_webnlg, "dart": read_dart, "samsum": read_samsum, "wikisql": read_wikisql}


def read_dataset(name: str, data_dir: DataDir, split: str) -> list[Example]:
    if name not in READERS:
        raise UserError(f"unknown generation dataset {name!r}; available: {', '.join(READERS)}")
    return READERS[name](data_dir, split)
