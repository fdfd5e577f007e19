"""wandb as an optional mirror (lora_repro.tracking): disabled by default without importing wandb or opening a
socket; offline runs land on disk with the right group, name, config and exit code, also when the job fails."""
from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

import pytest

from lora_repro.config import compose
from lora_repro.run import resolved_config, run, run_dir_for, to_dict
from lora_repro.tracking import wandb_group, wandb_run_id, wandb_settings

REPO = Path(__file__).resolve().parent.parent


def smoke_cfg(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose(["smoke=true", "data_source=local", "trainer.max_steps=2", f"output_root={tmp_path / 'runs'}",
                   "table=2", *overrides])
    return to_dict(cfg)


def test_settings_default_to_disabled_and_reject_unknown_modes(tmp_path):
    assert wandb_settings(smoke_cfg(tmp_path))["mode"] == "disabled"
    with pytest.raises(ValueError, match="wandb.mode must be one of disabled, offline, online, got 'on'"):
        wandb_settings({"wandb": {"mode": "on"}})


def test_group_per_table_model_task_method():
    cfg = {"table": 2, "run_group": "e", "model": {"name": "roberta-base"}, "task": {"name": "rte"},
           "method": {"name": "lora"}}
    assert wandb_group(cfg) == "table2/roberta-base/rte/lora"
    assert wandb_group({**cfg, "table": None}) == "e/roberta-base/rte/lora"
    assert wandb_run_id("/a/seed0") == wandb_run_id("/a/seed0") != wandb_run_id("/a/seed1")


@pytest.fixture
def no_network(monkeypatch):
    """Any internet socket connection raises (and so fails the run that makes it)."""
    def refuse(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access to {address} while it must stay offline")
        return original(self, address, *args)

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_disabled_never_imports_wandb_and_opens_no_connection(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("LORA_REPRO_DATA", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now raises ImportError
    record = run(smoke_cfg(tmp_path))
    assert record["status"] == "complete"
    assert not list(tmp_path.rglob("*wandb*"))


# --- reading an offline run's records (LevelDB-style log of protobuf Records, wandb's .wandb format) ---------------

def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block never starts a record header in its last 6 bytes
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_run(wandb_dir: Path, run_id: str) -> dict:
    """What an offline run recorded; waits (up to 30 s) for its exit record, which wandb's service process writes
    shortly after ``finish`` returns."""
    import time

    deadline = time.time() + 30
    while True:
        try:
            found = read_offline_run(wandb_dir, run_id)
        except Exception:  # a record still being written
            if time.time() > deadline:
                raise
            found = {"exit_code": None}
        if found["exit_code"] is not None or time.time() > deadline:
            return found
        time.sleep(0.2)


def read_offline_run(wandb_dir: Path, run_id: str) -> dict:
    import json

    (log,) = wandb_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    out = {"config": {}, "summary": {}, "exit_code": None}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(group=record.run.run_group, name=record.run.display_name, tags=list(record.run.tags))
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def test_offline_runs_carry_group_name_config_and_are_finished_also_on_failure(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("LORA_REPRO_DATA", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")

    good = smoke_cfg(tmp_path, "wandb.mode=offline", "seed=1")
    record = run(good)
    assert record["status"] == "complete"
    mirrored = offline_run(tmp_path / "wandb_dir", wandb_run_id(record["run_dir"]))
    assert mirrored["group"] == "table2/minilm-l6/rte/lora" and mirrored["name"] == "seed1"
    assert mirrored["config"]["model"]["name"] == "minilm-l6" and mirrored["config"]["seed"] == 1
    assert mirrored["config"]["method"]["r"] == good["method"]["r"]  # the resolved config, as a plain dict
    assert mirrored["config"]["config_id"] == record["config_id"] and record["config_id"] in mirrored["tags"]
    assert mirrored["summary"]["status"] == "complete" and "best/accuracy" in mirrored["summary"]
    assert mirrored["exit_code"] == 0

    bad = smoke_cfg(tmp_path, "wandb.mode=offline", "trainer.lr_scheduler=bogus")
    with pytest.raises(ValueError, match="bogus"):
        run(bad)
    failed = offline_run(tmp_path / "wandb_dir", wandb_run_id(run_dir_for(resolved_config(bad))))
    assert failed["exit_code"] == 1 and failed["summary"]["status"] == "failed"
    assert "bogus" in failed["summary"]["error"] and failed["name"] == "seed0"
