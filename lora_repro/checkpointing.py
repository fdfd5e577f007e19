"""Checkpoints a run can trust after a kill at any moment (SIGKILL, SLURM preemption, a full disk).

The Trainer writes ``checkpoints/checkpoint-<step>/`` file by file; a kill in the middle leaves a folder that looks
like a checkpoint but is not one. So a checkpoint counts only once its ``manifest.json`` (size and sha256 of every
file) has been written atomically after everything else, and on resume each candidate is verified against it. A
folder without a manifest or with a mismatching file is reported, moved aside (``corrupt-checkpoint-<step>-...``) and
never loaded; the previous checkpoint is deleted only after the new one's manifest is on disk, so one valid
checkpoint always exists once the first was written.

Checkpoints are light: the trainable parameters (LoRA: a few MB) plus optimizer, scheduler, RNG and Trainer state.
The frozen body is rebuilt from the same pretrained weights (or the same seeded random init) when the run restarts.
Under FSDP or DeepSpeed the Trainer's own (sharded) format is kept.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainerCallback

from lora_repro.distributed import barrier, is_main_process
from lora_repro.methods.common import trainable_state_dict
from lora_repro.results import write_json_atomic

log = logging.getLogger("lora_repro")

CHECKPOINTS_DIR = "checkpoints"  # inside a run directory
MANIFEST = "manifest.json"
TRAINABLE_FILE = "trainable.safetensors"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_dirs(directory: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders under ``directory``, newest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step, reverse=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        os.fsync(f.fileno())  # the bytes the manifest vouches for are on disk before the manifest is
    return digest.hexdigest()


def _files(checkpoint: Path) -> list[Path]:
    return sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(checkpoint: str | os.PathLike) -> Path:
    """Seal a finished checkpoint: size and sha256 of each file, written atomically (last)."""
    checkpoint = Path(checkpoint)
    files = {str(p.relative_to(checkpoint)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(checkpoint)}
    return write_json_atomic(checkpoint / MANIFEST, {"format": 1, "step": checkpoint_step(checkpoint),
                                                     "files": files})


def verify_checkpoint(checkpoint: str | os.PathLike) -> str | None:
    """None when the checkpoint matches its manifest, else what is wrong with it (one line)."""
    import json

    checkpoint = Path(checkpoint)
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}: the write was interrupted before it finished"
    except (OSError, ValueError) as error:
        return f"unreadable {MANIFEST}: {error}"
    expected = manifest.get("files")
    if not isinstance(expected, dict) or not expected:
        return f"{MANIFEST} lists no files"
    for name, entry in sorted(expected.items()):
        path = checkpoint / name
        try:
            size = path.stat().st_size
            if size != entry["bytes"]:
                return f"{name} has {size} bytes, the manifest says {entry['bytes']}"
            if _sha256(path) != entry["sha256"]:
                return f"{name} does not match its sha256 in the manifest"
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as error:
            return f"{name} is unreadable: {error}"
    return None


def latest_valid_checkpoint(directory: str | os.PathLike, quarantine: bool = True) -> Path | None:
    """The newest checkpoint that verifies. Newer ones that do not are reported and, with ``quarantine``, moved to
    ``corrupt-checkpoint-<step>-<time>`` so that neither this code nor the Trainer ever picks them up."""
    for checkpoint in checkpoint_dirs(directory):
        problem = verify_checkpoint(checkpoint)
        if problem is None:
            return checkpoint
        message = f"checkpoint {checkpoint} is incomplete or corrupt ({problem}); it will not be loaded"
        if quarantine:
            target = checkpoint.with_name(f"corrupt-{checkpoint.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                checkpoint.rename(target)
                message += f"; moved to {target.name}"
            except OSError:  # another rank moved it first
                pass
        log.warning(message)
    return None


def prune_checkpoints(directory: str | os.PathLike, keep: str | os.PathLike) -> None:
    """Delete every ``checkpoint-<step>`` folder but ``keep`` (called once ``keep`` is sealed)."""
    keep = Path(keep).resolve()
    for checkpoint in checkpoint_dirs(directory):
        if checkpoint.resolve() != keep:
            shutil.rmtree(checkpoint, ignore_errors=True)


class SealCheckpoints(TrainerCallback):
    """Seals each checkpoint the Trainer writes in ``directory`` (its manifest, written last) and keeps only the
    newest one; with ``save_at_epoch_end`` (the Trainer saves every N steps) it also saves at the end of every epoch
    (the Trainer takes one strategy only).

    The training loss is logged at every checkpoint: the Trainer logs the mean loss since its last log and a resumed
    run starts that mean afresh, so only logs that coincide with checkpoints make a resumed run log what an
    uninterrupted one does. A step save that falls on the last step of an epoch waits for the epoch's evaluation:
    the Trainer would save first, and a run resumed from there (at the epoch boundary) would never evaluate it.
    """

    def __init__(self, directory: str | os.PathLike, save_at_epoch_end: bool) -> None:
        self.directory, self.save_at_epoch_end, self.last_saved_step = Path(directory), save_at_epoch_end, -1

    def on_step_end(self, args, state, control, **kwargs):
        epoch_ends = state.epoch is not None and float(state.epoch).is_integer()
        if control.should_save and self.save_at_epoch_end and epoch_ends and args.eval_strategy == "epoch":
            control.should_save = False  # saved by on_epoch_end, after the evaluation
        if control.should_save:
            control.should_log = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.save_at_epoch_end and state.global_step != self.last_saved_step:
            control.should_save = True
        if control.should_save:
            control.should_log = True

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its files (rng_state_<rank>.pth) before the main process seals the folder
        if is_main_process():
            checkpoint = self.directory / f"checkpoint-{state.global_step}"
            write_manifest(checkpoint)
            prune_checkpoints(self.directory, keep=checkpoint)
        self.last_saved_step = state.global_step


def trainer_callbacks(args) -> list:
    """For the Trainer's ``args``: the callback that seals its checkpoints (none when it saves none)."""
    if args.save_strategy == "no":
        return []
    return [SealCheckpoints(args.output_dir, save_at_epoch_end=args.save_strategy == "steps")]


def train_resuming(trainer, quarantine: bool) -> tuple:
    """``trainer.train()`` from the newest checkpoint of ``trainer.args.output_dir`` that verifies, if any: returns
    the Trainer's output and that checkpoint (a str, or None for a fresh start)."""
    last = (latest_valid_checkpoint(trainer.args.output_dir, quarantine=quarantine)
            if trainer.args.save_strategy != "no" else None)
    if last:
        log.info("resuming from %s", last)
    resumed_from = str(last) if last else None
    return trainer.train(resume_from_checkpoint=resumed_from), resumed_from


class LightCheckpointTrainer(Trainer):
    """A ``transformers.Trainer`` whose checkpoints hold only the trainable parameters (plus the optimizer,
    scheduler, RNG and Trainer state the Trainer always writes). FSDP and DeepSpeed keep the Trainer's format.

    Saving goes through the public ``save_model``. Loading overrides ``_load_from_checkpoint``: the Trainer has no
    public hook for a checkpoint that holds part of the model, and its own loader (``load_state_dict(strict=False)``
    on a ``model.safetensors``) would accept any subset of names and log every frozen weight as missing, where
    ``load_trainable`` requires exactly this run's trainable parameters."""

    def _light(self) -> bool:
        return not (self.is_fsdp_enabled or self.is_deepspeed_enabled)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self._light():
            return super().save_model(output_dir, _internal_call)
        if not is_main_process():
            return
        output_dir = Path(output_dir or self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        save_file(trainable_state_dict(model), str(output_dir / TRAINABLE_FILE), metadata={"format": "pt"})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        path = Path(resume_from_checkpoint) / TRAINABLE_FILE
        if not path.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.accelerator.unwrap_model(model if model is not None else self.model, keep_torch_compile=False)
        load_trainable(model, load_file(str(path)), source=str(path))



def load_trainable(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into the model's trainable parameters; the names must match exactly (a checkpoint of another
    method or model setting is an error, not a partial load)."""
    own = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(own) != set(state):
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"checkpoint {source} does not fit this run's trainable parameters: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]} (was it written with other method settings?)")
    from lora_repro.methods.common import copy_into_parameters

    copy_into_parameters(own, state, source)


def gathered_trainable_state(trainer, trainable_names: list[str]) -> dict[str, torch.Tensor] | None:
    """The full (unsharded) trainable parameters after training, on the main process (None elsewhere).

    Under FSDP or DeepSpeed ZeRO-3 ``named_parameters()`` holds only this rank's shard (empty adapter files are a
    known failure elsewhere), so the state dict is gathered through ``accelerator.get_state_dict`` (full state dict
    under FSDP; consolidated 16-bit weights under ZeRO-3) and filtered to the names that were trainable before
    wrapping. Without sharding it is the unwrapped model's trainable parameters.
    """
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
        return trainable_state_dict(model) if is_main_process() else None
    wrapped = trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model_wrapped
    full = trainer.accelerator.get_state_dict(wrapped)  # a collective: every rank takes part
    if not is_main_process():
        return None
    state = {name: full[name].detach().cpu().contiguous() for name in trainable_names if name in full}
    missing = sorted(set(trainable_names) - set(state))
    if missing:
        raise RuntimeError(f"the gathered state dict lacks trainable parameters {missing[:3]} "
                           f"({len(missing)} in all): not saving an incomplete method checkpoint")
    empty = [name for name, tensor in state.items() if tensor.numel() == 0]
    if empty:
        raise RuntimeError(f"gathered trainable parameters are empty (still sharded?): {empty[:3]}")
    return state
