"""Bad input stops with one line naming the setting or the file (exit code 2) and writes nothing; a bug keeps its
traceback; a malformed data row is never dropped silently."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from lora_repro.config import compose
from lora_repro.errors import UserError
from lora_repro.run import run

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
RTE_ROWS = [f"{i}\tA man {i} walks a dog.\tA dog is walked.\t{'entailment' if i % 2 else 'not_entailment'}\n"
            for i in range(40)]


def cli(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m lora_repro ARGS`` (or ``code`` run before the CLI's main) from ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("LORA_REPRO_DATA", "HYDRA_FULL_ERROR")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    script = ["-m", "lora_repro"] if code is None else [
        "-c", f"import sys\n{code}\nfrom lora_repro.__main__ import main\nsys.argv = ['lora-repro', *sys.argv[1:]]\n"
              "main()"]
    return subprocess.run([sys.executable, *script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def written(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


def glue_folder(tmp_path: Path, train: str, dev: str | None = None) -> Path:
    rte = tmp_path / "data" / "glue_data" / "RTE"
    rte.mkdir(parents=True)
    (rte / "train.tsv").write_text(train)
    (rte / "dev.tsv").write_text(dev if dev is not None else RTE_HEADER + "".join(RTE_ROWS[:8]))
    return tmp_path / "data"


def smoke_job(tmp_path: Path, *overrides: str) -> dict:
    return run(compose(["task=rte", "smoke=true", f"output_root={tmp_path / 'runs'}", *overrides]))


def test_a_number_of_the_wrong_type_fails_in_one_line_before_anything_is_loaded(tmp_path):
    done = cli("trainer.lr=abc", "smoke=true", f"output_root={tmp_path / 'runs'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "lora_repro: error: trainer.lr='abc': must be a non-negative number"
    assert "Traceback" not in done.stderr and written(tmp_path) == []  # not even Hydra's folder


@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size=0: must be a positive integer"),
    ("trainer.epochs=true", "trainer.epochs=True: must be a positive number"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio=1.5: must be a number in [0, 1)"),
    ("task.max_train_examples=-3", "task.max_train_examples=-3: must be a positive integer or null"),
    ("trainer.precision=fp8", "trainer.precision='fp8'; choices: fp32, bf16, fp16"),
])
def test_numeric_settings_are_checked_before_loading(tmp_path, override, message):
    with pytest.raises(UserError) as error:
        smoke_job(tmp_path, override)
    assert str(error.value) == message and written(tmp_path / "runs") == []


def test_output_root_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    done = cli("smoke=true", f"output_root={tmp_path / 'afile'}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"output_root={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file; output_root must be a folder" in \
        done.stderr.strip().splitlines()[-1]
    assert written(tmp_path) == [tmp_path / "afile"]


@pytest.mark.parametrize("train, problem", [
    ("", "train.tsv is empty"),
    (RTE_HEADER, "train.tsv has no rows after its header"),
])
def test_an_empty_or_header_only_split_names_the_file(tmp_path, train, problem):
    data = glue_folder(tmp_path, train)
    with pytest.raises(UserError, match=problem) as error:
        smoke_job(tmp_path, f"data_dir={data}")
    assert str(data / "glue_data" / "RTE" / "train.tsv") in str(error.value)
    assert written(tmp_path / "runs") == []


@pytest.mark.parametrize("bad_row, problem", [
    ("7\tA man walks.\tentailment\n", "3 columns, expected 4"),
    ("7\tA man walks.\tA dog.\tmaybe\n", "label 'maybe' is not one of entailment, not_entailment"),
    ("7\t  \tA dog.\tentailment\n", "empty text in sentence1"),
])
def test_a_malformed_row_stops_the_run_with_file_and_line_unless_skipping_is_asked_for(tmp_path, bad_row, problem):
    rows = RTE_ROWS[:20] + [bad_row] + RTE_ROWS[20:]
    data = glue_folder(tmp_path, RTE_HEADER + "".join(rows))
    with pytest.raises(UserError) as error:
        smoke_job(tmp_path, f"data_dir={data}")
    train = data / "glue_data" / "RTE" / "train.tsv"
    assert str(error.value).startswith(f"{train}, line 22: {problem}")  # header is line 1
    assert "task.skip_malformed_rows=true" in str(error.value) and written(tmp_path / "runs") == []

    record = smoke_job(tmp_path, f"data_dir={data}", "task.skip_malformed_rows=true")
    assert record["status"] == "complete" and record["data"]["skipped_rows"] == {str(train): 1}
    assert record["data"]["source"] == "real" and record["data"]["n_examples"]["train"] == 32  # the smoke subset


def test_a_bug_keeps_its_traceback(tmp_path):
    bug = "import lora_repro.run\nlora_repro.run.prepare = lambda cfg: {}['no such key']"
    done = cli("smoke=true", f"output_root={tmp_path / 'runs'}", cwd=tmp_path, code=bug)
    assert done.returncode not in (0, 2)
    assert "Traceback" in done.stderr and "KeyError: 'no such key'" in done.stderr
    assert "lora_repro: error" not in done.stderr


def test_in_a_sweep_an_invalid_job_is_reported_and_writes_nothing_while_the_others_run(tmp_path):
    done = cli("-m", "smoke=true", "trainer.max_steps=1", "trainer.batch_size=4,0", f"output_root={tmp_path / 'runs'}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lora_repro: error: trainer.batch_size=0: must be a positive integer" in done.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("results.json")]
    assert [(r["status"], r["config"]["trainer"]["batch_size"]) for r in records] == [("complete", 4)]
