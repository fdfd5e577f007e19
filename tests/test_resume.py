"""Checkpoint and resume: verified checkpoints (lora_repro.checkpointing) and real processes killed with SIGKILL.

The end-to-end test trains a smoke model (real subprocesses, CPU, fixed seed) three ways and requires the killed and
resumed run to end bitwise equal to the uninterrupted one: same evaluation curve, same logged training losses, same
method weights file.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lora_repro import checkpointing as ckpt

REPO = Path(__file__).resolve().parent.parent


def fake_checkpoint(directory: Path, step: int, seal: bool = True) -> Path:
    path = directory / f"checkpoint-{step}"
    (path / "sub").mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(os.urandom(256))
    (path / "sub" / "rng_state.pth").write_bytes(b"rng" * 10)
    if seal:
        ckpt.write_manifest(path)
    return path


def test_sealed_checkpoint_verifies_and_every_kind_of_damage_is_named(tmp_path):
    path = fake_checkpoint(tmp_path, 4)
    assert ckpt.verify_checkpoint(path) is None
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    assert set(manifest["files"]) == {"optimizer.pt", "sub/rng_state.pth"} and manifest["step"] == 4

    data = bytearray((path / "optimizer.pt").read_bytes())
    data[10] ^= 0xFF  # same size, one flipped byte
    (path / "optimizer.pt").write_bytes(bytes(data))
    assert "optimizer.pt does not match its sha256" in ckpt.verify_checkpoint(path)
    (path / "optimizer.pt").write_bytes(bytes(data[:100]))
    assert "optimizer.pt has 100 bytes, the manifest says 256" in ckpt.verify_checkpoint(path)
    data[10] ^= 0xFF
    (path / "optimizer.pt").write_bytes(bytes(data))  # restored
    assert ckpt.verify_checkpoint(path) is None
    (path / "sub" / "rng_state.pth").unlink()
    assert "sub/rng_state.pth is missing" in ckpt.verify_checkpoint(path)
    (path / ckpt.MANIFEST).write_text("{not json")
    assert "unreadable manifest.json" in ckpt.verify_checkpoint(path)
    (path / ckpt.MANIFEST).unlink()
    assert "no manifest.json" in ckpt.verify_checkpoint(path)


def test_latest_valid_checkpoint_skips_reports_and_moves_aside_broken_ones(tmp_path, caplog):
    older = fake_checkpoint(tmp_path, 4)
    fake_checkpoint(tmp_path, 8, seal=False)  # killed while writing
    corrupt = fake_checkpoint(tmp_path, 12)
    (corrupt / "optimizer.pt").write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="lora_repro"):
        assert ckpt.latest_valid_checkpoint(tmp_path) == older
    assert "checkpoint-12 is incomplete or corrupt (optimizer.pt has 7 bytes" in caplog.text
    assert "checkpoint-8 is incomplete or corrupt (no manifest.json" in caplog.text
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "checkpoint-4" and len(names) == 3
    assert all(n.startswith(("corrupt-checkpoint-8-", "corrupt-checkpoint-12-")) for n in names[1:])
    # moved aside: neither this code nor the Trainer's get_last_checkpoint sees them again
    from transformers.trainer_utils import get_last_checkpoint

    assert Path(get_last_checkpoint(str(tmp_path))) == older
    assert ckpt.latest_valid_checkpoint(tmp_path / "absent") is None


def test_prune_keeps_only_the_sealed_newest(tmp_path):
    for step in (3, 6, 9):
        fake_checkpoint(tmp_path, step)
    ckpt.prune_checkpoints(tmp_path, keep=tmp_path / "checkpoint-9")
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["checkpoint-9"]


def test_load_trainable_refuses_a_checkpoint_of_other_settings(tiny_bert):
    from lora_repro.methods import apply_method

    apply_method(tiny_bert, {"name": "lora", "r": 2, "alpha": 2, "targets": ["q", "v"]})
    state = {n: torch.ones_like(p) for n, p in tiny_bert.named_parameters() if p.requires_grad}
    ckpt.load_trainable(tiny_bert, state, source="x")
    assert all(torch.equal(p, torch.ones_like(p)) for p in tiny_bert.parameters() if p.requires_grad)
    wrong = dict(list(state.items())[1:])
    with pytest.raises(ValueError, match="does not fit this run's trainable parameters"):
        ckpt.load_trainable(tiny_bert, wrong, source="x")
    name = next(iter(state))
    with pytest.raises(ValueError, match="has shape"):
        ckpt.load_trainable(tiny_bert, {**state, name: torch.ones(3)}, source="x")


class ShardedTrainerStub:
    """What gathered_trainable_state reads from a Trainer under FSDP: the flags and accelerate's get_state_dict."""

    def __init__(self, full: dict):
        from types import SimpleNamespace

        self.is_fsdp_enabled, self.is_deepspeed_enabled = True, False
        self.model_wrapped = "the FSDP-wrapped model"
        self.accelerator = SimpleNamespace(get_state_dict=lambda wrapped: full if wrapped == self.model_wrapped else {})


def test_sharded_method_weights_come_from_the_gathered_state_dict():
    full = {"body.w": torch.ones(4, 4), "body.lora_A": torch.ones(2, 4), "classifier.weight": torch.ones(2, 4)}
    state = ckpt.gathered_trainable_state(ShardedTrainerStub(full), ["body.lora_A", "classifier.weight"])
    assert sorted(state) == ["body.lora_A", "classifier.weight"]  # the frozen body stays out
    with pytest.MonkeyPatch.context() as patch:  # rank 1 of a distributed job gathers, writes nothing
        patch.setenv("RANK", "1")
        assert ckpt.gathered_trainable_state(ShardedTrainerStub(full), ["body.lora_A"]) is None
    with pytest.raises(RuntimeError, match="lacks trainable parameters"):
        ckpt.gathered_trainable_state(ShardedTrainerStub(full), ["body.lora_B"])
    with pytest.raises(RuntimeError, match="empty"):  # the ZeRO-3 failure: shards of size 0 saved as the adapter
        ckpt.gathered_trainable_state(ShardedTrainerStub({**full, "body.lora_A": torch.empty(0)}), ["body.lora_A"])


def test_checkpoint_frequency_is_not_part_of_the_run_identity():
    from lora_repro.run import config_id

    cfg = {"model": {"name": "m"}, "task": {"name": "rte"}, "method": {"name": "lora"}, "trainer": {"lr": 1e-3}}
    assert config_id(cfg) == config_id({**cfg, "trainer": {"lr": 1e-3, "save_steps": 7}})
    assert config_id(cfg) != config_id({**cfg, "trainer": {"lr": 2e-3, "save_steps": 7}})


def test_a_checkpoint_at_an_epoch_end_holds_that_epochs_evaluation(tmp_path, monkeypatch):
    """save_steps=4 with 8 steps per epoch: the step save at step 8 must wait for the epoch-end evaluation, or a run
    resumed from checkpoint-8 (at the epoch boundary) would have no evaluation of epoch 1 in its curve."""
    from lora_repro.config import compose
    from lora_repro.run import run

    monkeypatch.delenv("LORA_REPRO_DATA", raising=False)
    cfg = compose(["smoke=true", "data_source=local", "trainer.batch_size=4", "trainer.epochs=1",
                   "trainer.save_steps=4", "trainer.keep_checkpoints=true", f"output_root={tmp_path}"])
    record = run(cfg)
    (kept,) = ckpt.checkpoint_dirs(Path(record["run_dir"]) / "checkpoints")
    assert kept.name == "checkpoint-8" and ckpt.verify_checkpoint(kept) is None
    history = json.loads((kept / "trainer_state.json").read_text())["log_history"]
    assert any(e.get("step") == 8 and "eval_loss" in e for e in history), history
    assert [e["step"] for e in record["curve"]] == [8]


# --- real processes -------------------------------------------------------------------------------------------

# Runs ``python -m lora_repro`` with one Trainer method patched to SIGKILL the process at a given step: inside a
# training step, or inside a checkpoint write (after weights and optimizer, before RNG and trainer state).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    import transformers
    where, step = os.environ.get("KILL_WHERE"), int(os.environ.get("KILL_AT_STEP", "-1"))
    name = "_save_rng_state" if where == "checkpoint_write" else "training_step"
    original = getattr(transformers.Trainer, name)
    def patched(self, *args, **kwargs):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)
    setattr(transformers.Trainer, name, patched)
    from lora_repro.__main__ import main
    main()
""")
# 32 examples / batch 4 = 8 steps per epoch, 2 epochs; checkpoints at steps 3, 6, 8 (epoch end), 9, 12, 15, 16
OVERRIDES = ["smoke=true", "task=rte", "method=lora", "seed=3", "trainer.batch_size=4", "trainer.epochs=2",
             "trainer.lr=5e-3", "trainer.save_steps=3", "trainer.keep_checkpoints=true", "data_source=local"]


def launch(script: Path, output_root: Path, kill: tuple[str, int] | None = None) -> subprocess.Popen:
    # no data folder: synthetic smoke rows (data_source=local never tries the hub), identical in every process
    env = {k: v for k, v in os.environ.items()
           if k not in ("LORA_REPRO_DATA", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if kill:
        env.update(KILL_WHERE=kill[0], KILL_AT_STEP=str(kill[1]))
    return subprocess.Popen([sys.executable, str(script), *OVERRIDES, f"output_root={output_root}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, _ = process.communicate(timeout=300)
    return process.returncode, out


def only_run_dir(root: Path) -> Path:
    (path,) = list(root.glob("default/*/seed3"))
    return path


def test_sigkill_mid_epoch_while_writing_a_checkpoint_then_resume_is_bitwise_identical(tmp_path):
    """Killed at step 6 of the 8-step first epoch, inside the write of checkpoint-6: that checkpoint is partial, the
    previous one (checkpoint-3, mid-epoch) still loads, and the resumed run skips the 3 batches it had trained, restores
    the RNG and ends exactly where the uninterrupted run ends."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    reference = launch(script, tmp_path / "uninterrupted")  # runs alongside the interrupted one

    code, out = finish(launch(script, tmp_path / "killed", kill=("checkpoint_write", 6)))
    assert code == -9, out[-2000:]
    run_dir = only_run_dir(tmp_path / "killed")
    assert json.loads((run_dir / "results.json").read_text())["status"] == "running"  # SIGKILL: no last word
    partial = run_dir / "checkpoints" / "checkpoint-6"
    assert (partial / ckpt.TRAINABLE_FILE).is_file() and (partial / "optimizer.pt").is_file()
    assert not (partial / "rng_state.pth").exists() and not (partial / ckpt.MANIFEST).exists()
    assert ckpt.verify_checkpoint(run_dir / "checkpoints" / "checkpoint-3") is None  # the previous one survives

    code, out = finish(launch(script, tmp_path / "killed"))
    assert code == 0, out[-3000:]
    assert "checkpoint-6 is incomplete or corrupt (no manifest.json" in out  # reported, never loaded
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["status"] == "complete" and resumed["resumed_from"].endswith("checkpoint-3")
    assert list((run_dir / "checkpoints").glob("corrupt-checkpoint-6-*"))

    code, out = finish(reference)
    assert code == 0, out[-3000:]
    expected = json.loads((only_run_dir(tmp_path / "uninterrupted") / "results.json").read_text())
    assert expected["resumed_from"] is None and expected["global_steps"] == resumed["global_steps"] == 16
    assert len(expected["curve"]) == 2 and len(expected["train_loss"]) == 8  # an eval per epoch; a loss per save + step 10
    assert resumed["curve"] == expected["curve"]  # evaluation per epoch, exact float equality
    assert resumed["train_loss"] == expected["train_loss"]
    assert resumed["best"] == expected["best"] and resumed["last"] == expected["last"]

    def weights(run: Path) -> str:
        return hashlib.sha256((run / "method" / "method.safetensors").read_bytes()).hexdigest()

    assert weights(run_dir) == weights(only_run_dir(tmp_path / "uninterrupted"))
    # light checkpoints: the trainable parameters, not the model
    kept = ckpt.checkpoint_dirs(run_dir / "checkpoints")[0]
    assert kept.name == "checkpoint-16" and (kept / ckpt.TRAINABLE_FILE).is_file()
    assert not list(kept.glob("model*.safetensors"))
