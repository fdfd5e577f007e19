"""Tests for lora_repro.tasks.nlg_data. Counts come from the shared data README; tests needing it skip without it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from lora_repro.tasks import nlg_data
from lora_repro.tasks.nlg_data import (READERS, Example, flatten_for_training, format_e2e_mr, read_dart, read_e2e,
                                       read_samsum, read_webnlg, read_wikisql, wikisql_query_string)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    value = os.environ.get("LORA_REPRO_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("LORA_REPRO_DATA is unset or not a folder: the shared datasets are needed")
    return Path(value)


def _counts(examples: list[Example]) -> tuple[int, int]:
    return len(examples), sum(len(example.references) for example in examples)


# ---------------------------------------------------------------- no data needed
def test_readers_registry() -> None:
    assert READERS == {"e2e": read_e2e, "webnlg": read_webnlg, "dart": read_dart, "samsum": read_samsum,
                       "wikisql": read_wikisql}


@pytest.mark.parametrize("name", sorted(READERS))
def test_unknown_split_lists_available(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown split 'validate'.*train, dev, test"):
        READERS[name](tmp_path, "validate")


@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_data_folder_names_path_and_env_var(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*LORA_REPRO_DATA"):
        READERS[name](missing, "dev")


def test_unset_env_var_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORA_REPRO_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="LORA_REPRO_DATA is not set"):
        read_e2e(None, "dev")


def test_missing_file_names_path_and_env_var(tmp_path: Path) -> None:
    (tmp_path / "samsum").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "samsum" / "val.json")) + ".*LORA_REPRO_DATA"):
        read_samsum(tmp_path, "validation")


def test_format_e2e_mr_renames_keys_and_tokenizes_prices() -> None:
    mr = "name[The Vaults], eatType[pub], priceRange[£20-25], customer rating[5 out of 5], familyFriendly[no]"
    assert format_e2e_mr(mr) == ("name : The Vaults | Type : pub | price : £ 20 - 25 | customer rating : 5 out of 5"
                                 " | family friendly : no")


def test_e2e_grouping_and_bad_mr_line(tmp_path: Path) -> None:
    (tmp_path / "e2e").mkdir()
    rows = ('mr,ref\n"name[A], area[riverside]","First, ref."\n"name[A], area[riverside]","Second\nline"\n'
            '"name[B]",Third\n')
    (tmp_path / "e2e" / "devset.csv").write_text(rows, encoding="utf-8")
    (tmp_path / "e2e" / "trainset.csv").write_text(rows, encoding="utf-8")
    dev = read_e2e(tmp_path, "dev")
    assert [(e.context, e.references) for e in dev] == [
        ("name : A | area : riverside", ["First, ref.", "Second\nline"]), ("name : B", ["Third"])]
    assert len(read_e2e(tmp_path, "train")) == 3  # train keeps one Example per row
    assert flatten_for_training(dev) == [("name : A | area : riverside", "First, ref."),
                                         ("name : A | area : riverside", "Second\nline"), ("name : B", "Third")]
    (tmp_path / "e2e" / "devset.csv").write_text('mr,ref\n"name[A]",ok\n"name A",bad\n', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("devset.csv:3: malformed E2E MR 'name A'")):
        read_e2e(tmp_path, "dev")


def _write_wikisql(folder: Path, questions: list[dict]) -> None:
    folder.mkdir(exist_ok=True)
    table = {"id": "1-1000-1", "header": ["Player", "No.", "School"], "types": ["text", "real", "text"],
             "rows": [["Ann", 3, "Butler CC (KS)"]]}
    (folder / "dev.tables.jsonl").write_text(json.dumps(table) + "\n", encoding="utf-8")
    (folder / "dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")


def test_wikisql_sample_gives_sql_string(tmp_path: Path) -> None:
    questions = [
        {"phase": 1, "table_id": "1-1000-1", "question": "Who played for butler cc (ks)? ",
         "sql": {"sel": 0, "conds": [[2, 0, "Butler CC (KS)"]], "agg": 0}},
        {"phase": 1, "table_id": "1-1000-1", "question": "How many schools had numbers above 3 and player Ann?",
         "sql": {"sel": 2, "conds": [[1, 1, 3], [0, 0, "Ann"]], "agg": 3}},
        {"phase": 1, "table_id": "1-1000-1", "question": "Highest number?", "sql": {"sel": 1, "conds": [], "agg": 1}},
    ]
    _write_wikisql(tmp_path / "wikisql", questions)
    examples = read_wikisql(tmp_path, "dev")
    assert [e.references for e in examples] == [
        ["SELECT Player FROM table WHERE School = Butler CC (KS)"],
        ["SELECT COUNT School FROM table WHERE No. > 3 AND Player = Ann"],
        ["SELECT MAX No. FROM table"],
    ]
    assert examples[0].context == "Table: Player | No. | School\nQuestion: Who played for butler cc (ks)?"
    assert examples[1].meta["sql"] == questions[1]["sql"] and examples[1].meta["table_id"] == "1-1000-1"


def test_wikisql_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    good = {"table_id": "1-1000-1", "question": "q", "sql": {"sel": 0, "conds": [], "agg": 0}}
    _write_wikisql(tmp_path / "wikisql", [good, {**good, "table_id": "2-2-2"}])
    with pytest.raises(ValueError, match=r"dev\.jsonl:2: table_id '2-2-2' is not in .*dev\.tables\.jsonl"):
        read_wikisql(tmp_path, "dev")
    _write_wikisql(tmp_path / "wikisql", [good, {**good, "sql": {"sel": 7, "conds": [], "agg": 0}}])
    with pytest.raises(ValueError, match=r"dev\.jsonl:2: bad sql"):
        read_wikisql(tmp_path, "dev")
    with pytest.raises(IndexError):
        wikisql_query_string({"sel": 0, "conds": [], "agg": 9}, ["a"])


# ---------------------------------------------------------------- shared data
@pytest.mark.parametrize(("split", "inputs", "refs"), [("dev", 547, 4672), ("test", 630, 4693)])
def test_e2e_counts(data_dir: Path, split: str, inputs: int, refs: int) -> None:
    assert _counts(read_e2e(data_dir, split)) == (inputs, refs)


def test_e2e_train_counts(data_dir: Path) -> None:
    train = read_e2e(data_dir, "train")
    assert len(train) == 42061 and len({example.context for example in train}) == 4862


@pytest.mark.parametrize(("split", "lora_file"), [("dev", "valid.txt"), ("test", "test.txt")])
def test_e2e_matches_lora_format(data_dir: Path, split: str, lora_file: str) -> None:
    lines = (data_dir / "e2e" / "lora_format" / lora_file).read_text(encoding="utf-8").splitlines()
    pairs = flatten_for_training(read_e2e(data_dir, split))
    assert len(pairs) == len(lines)
    for line_number, ((context, reference), line) in enumerate(zip(pairs, lines), start=1):
        lora_context, lora_reference = line.split("||", 1)
        assert context == lora_context, f"{lora_file}:{line_number}"
        # LoRA's references are tokenized; ours are as published, so they agree once whitespace is ignored.
        assert re.sub(r"\s", "", reference) == re.sub(r"\s", "", lora_reference), f"{lora_file}:{line_number}"


def test_webnlg_counts_and_seen_split(data_dir: Path) -> None:
    dev = read_webnlg(data_dir, "dev")
    assert len(dev) == 872
    assert sum(len(e.references) + len(e.meta["to_fix_references"]) for e in dev) == 2268
    assert sum(len(e.references) for e in dev) == 2258  # LoRA keeps comment="good" only
    test = read_webnlg(data_dir, "test")
    assert _counts(test) == (1862, 4928)
    unseen = [e for e in test if not e.meta["seen"]]
    assert len(unseen) == 891 and sum(len(e.references) for e in unseen) == 2433
    assert {e.meta["category"] for e in unseen} == nlg_data.WEBNLG_UNSEEN_CATEGORIES
    train = read_webnlg(data_dir, "train")
    assert len(train) == 6940 and sum(len(e.references) + len(e.meta["to_fix_references"]) for e in train) == 18102
    assert {e.meta["category"] for e in train} == nlg_data.WEBNLG_SEEN_CATEGORIES == {
        e.meta["category"] for e in test if e.meta["seen"]}


def test_webnlg_dev_matches_lora_json(data_dir: Path) -> None:
    entries = json.loads((data_dir / "webnlg_challenge_2017" / "lora_format" / "dev.json").read_text("utf-8"))
    entries = [entry[str(number)] for number, entry in enumerate(entries["entries"], start=1)]
    dev = read_webnlg(data_dir, "dev")
    assert len(dev) == len(entries)
    for example, entry in zip(dev, entries):
        assert example.context == " | ".join(f"{t['subject']} : {t['property']} : {t['object']}"
                                             for t in entry["modifiedtripleset"])
        assert example.references == [lex["lex"] for lex in entry["lexicalisations"] if lex["comment"] == "good"]
        assert (example.meta["category"], example.meta["eid"]) == (entry["category"], entry["xml_id"])


@pytest.mark.parametrize(("split", "inputs", "refs"), [("dev", 2768, 6980), ("test", 5097, 12552)])
def test_dart_counts(data_dir: Path, split: str, inputs: int, refs: int) -> None:
    examples = read_dart(data_dir, split)
    assert _counts(examples) == (inputs, refs)
    assert all(" : " in example.context for example in examples)


def test_dart_dev_json_and_xml_agree(data_dir: Path) -> None:
    from_json = nlg_data._read_dart_json(data_dir / "dart" / "dart-v1.1.1-full-dev.json")
    from_xml = nlg_data._read_dart_xml(data_dir / "dart" / "dart-v1.1.1-full-dev.xml")
    assert [(e.context, e.references) for e in from_json] == [(e.context, e.references) for e in from_xml]
    assert from_json[0].context == ("Mars Hill College : joined : 1973 | "
                                    "Mars Hill College : location : Mars Hill, North Carolina")


def test_dart_missing_train_is_reported(data_dir: Path) -> None:
    if (data_dir / "dart" / "dart-v1.1.1-full-train.json").exists():
        pytest.skip("DART train is staged here")
    with pytest.raises(FileNotFoundError, match="dart-v1.1.1-full-train.json.*LORA_REPRO_DATA"):
        read_dart(data_dir, "train")


@pytest.mark.parametrize(("split", "count"), [("train", 14732), ("dev", 818), ("val", 818), ("test", 819)])
def test_samsum_counts_and_format(data_dir: Path, split: str, count: int) -> None:
    examples = read_samsum(data_dir, split)
    assert _counts(examples) == (count, count)
    assert all(e.context.endswith("\n\n") and "\r" not in e.context for e in examples)


def test_samsum_utterances_one_per_line(data_dir: Path) -> None:
    dialogue = json.loads((data_dir / "samsum" / "val.json").read_text("utf-8"))[0]
    example = read_samsum(data_dir, "dev")[0]
    assert example.context.split("\n")[:-2] == dialogue["dialogue"].split("\r\n")
    assert example.references == [dialogue["summary"]] and example.meta["id"] == dialogue["id"]


def test_wikisql_missing_tables_error_on_shared_copy(data_dir: Path) -> None:
    tables = data_dir / "wikisql" / "dev.tables.jsonl"
    if tables.exists():
        pytest.skip("WikiSQL dev tables are staged here")
    questions = data_dir / "wikisql" / "dev.jsonl"
    expected = (f"missing WikiSQL tables file {tables}: the questions in {questions} cannot be paired"
                f" with table headers without it; get dev.tables.jsonl from salesforce/WikiSQL data.tar.bz2 "
                f"and put it next to dev.jsonl")
    with pytest.raises(FileNotFoundError) as caught:
        read_wikisql(data_dir, "dev")
    assert str(caught.value) == expected
