"""One training loop for every task: the Trainer with sealed checkpoints and resume, evaluation at every epoch, the
task's final evaluation, the method weights saved, the curve and its best point.

    job (lora_repro.run) -> train_and_evaluate -> spec.training_plan (the task's part) -> Trainer -> curve

A task kind supplies a ``TrainingPlan`` (``TaskSpec.training_plan``): its datasets, collator, metrics and what
else it evaluates (generation tasks decode). Nothing here names a task or a method.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from lora_repro import checkpointing as ckpt
from lora_repro.distributed import is_main_process, per_device_batch_size, world_size
from lora_repro.errors import UserError
from lora_repro.methods.common import parameter_counts, save_method_weights
from lora_repro.tracking import Tracker

log = logging.getLogger("lora_repro")
METHOD_DIR = "method"  # the method weights after training
BEST_METHOD_DIR = "method_best"  # the method weights of the run's best epoch (what warm_start=mnli starts from)


@dataclass
class TrainingPlan:
    """What a task kind gives the loop.

    eval_dataset     evaluated at every evaluation (one dataset, a dict of named ones, or None: no evaluation)
    primary_metric   the curve key that picks the best evaluation
    arguments        TrainingArguments of this kind of task (over ``training_arguments``)
    callbacks        Trainer callbacks; any with a ``bind(trainer)`` method gets the Trainer once it exists
    before_training  (trainer) -> what the record keeps of it (generation: decoding the untrained model)
    final_metrics    (trainer) -> metrics of the trained model beyond the Trainer's evaluation (decoding)
    details          record fields of this kind (e.g. the decoding settings)
    """

    train: object
    eval_dataset: object
    collator: Callable
    primary_metric: str
    compute_metrics: Callable | None = None
    arguments: dict = field(default_factory=dict)
    callbacks: list = field(default_factory=list)
    before_training: Callable | None = None
    final_metrics: Callable | None = None
    details: dict = field(default_factory=dict)
    n_examples: dict = field(default_factory=dict)


def training_arguments(cfg: dict, run_dir: Path, **overrides):
    """The Trainer's arguments from ``cfg['trainer']``, checkpoints under the run directory."""
    from transformers import TrainingArguments

    t = cfg["trainer"]
    max_steps = t.get("max_steps", -1) or -1
    save_steps = t.get("save_steps") or (max_steps if max_steps > 0 else None)
    settings = dict(
        output_dir=str(run_dir / ckpt.CHECKPOINTS_DIR), seed=cfg["seed"], data_seed=cfg["seed"],
        learning_rate=t["lr"], per_device_train_batch_size=per_device_batch_size(t["batch_size"], world_size()),
        per_device_eval_batch_size=t.get("eval_batch_size") or 64, num_train_epochs=t["epochs"],
        max_steps=max_steps, warmup_steps=t.get("warmup_steps") or t.get("warmup_ratio") or 0.0,
        weight_decay=t.get("weight_decay") or 0.0, lr_scheduler_type=t.get("lr_scheduler", "linear"),
        max_grad_norm=t.get("grad_clip", 1.0), label_smoothing_factor=t.get("label_smoothing", 0.0),
        eval_strategy="steps" if max_steps > 0 else "epoch", eval_steps=max_steps if max_steps > 0 else None,
        save_strategy=("steps" if save_steps else "epoch") if t.get("save_checkpoints", True) else "no",
        save_steps=save_steps,
        save_total_limit=None,  # checkpointing.SealCheckpoints rotates them once the newer one is sealed
        logging_strategy="steps", logging_steps=t.get("logging_steps") or 10,
        bf16=t.get("precision") == "bf16", fp16=t.get("precision") == "fp16",
        train_sampling_strategy="group_by_length" if t.get("group_by_length") else "random",
        torch_compile=t.get("torch_compile", False), dataloader_num_workers=t.get("num_workers", 0), report_to=[],
        disable_tqdm=not t.get("progress", True), use_cpu=not torch.cuda.is_available(),
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def evaluation_curve(log_history: list[dict]) -> list[dict]:
    """One entry per evaluated step, in step order: every metric logged for it (several eval sets log one entry
    each; decoded metrics another), ``eval_`` prefix dropped. The log history survives checkpoint/resume."""
    by_step: dict = {}
    for entry in log_history:
        metrics = {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_") and
                   not k.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))}
        if metrics:
            point = by_step.setdefault(entry.get("step"), {"epoch": entry.get("epoch"), "step": entry.get("step"),
                                                           "metrics": {}})
            point["metrics"].update(metrics)
    return [by_step[s] for s in sorted(by_step, key=lambda s: s or 0)]


def evaluated_at(log_history: list[dict], step: int) -> bool:
    return any(e.get("step") == step and any(k.startswith("eval_") and k.endswith("loss") for k in e)
               for e in log_history)


class BestMethodSaver(TrainerCallback):
    """Writes the method weights to ``<run_dir>/method_best/`` whenever an evaluation beats every earlier one on the
    run's primary metric (ties keep the earlier epoch, as the record's ``best`` does), so a later run can start from
    the best epoch. Gathered like the final save (a collective under FSDP/ZeRO-3: every rank calls it); only the main
    process writes. The Trainer restores log_history on resume, so the comparison continues across an interruption."""

    def __init__(self, key: str, run_dir: Path, cfg: dict, trainable_names: list[str], counts: dict):
        self.key, self.run_dir, self.cfg, self.trainable_names, self.counts = key, run_dir, cfg, trainable_names, counts
        self.trainer = None

    def bind(self, trainer) -> None:
        self.trainer = trainer

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = f"eval_{self.key}"
        value = (metrics or {}).get(name)
        if value is None:
            return
        earlier = [e[name] for e in state.log_history if name in e][:-1]  # the last entry is this evaluation
        if earlier and value <= max(earlier):
            return
        save_trained(self.trainer, self.run_dir / BEST_METHOD_DIR, self.cfg, self.trainable_names, self.counts)


def saves_best_method(cfg: dict) -> bool:
    """``trainer.save_best_method`` (default: only for MNLI, the run others warm-start from)."""
    value = cfg["trainer"].get("save_best_method")
    return cfg["task"]["name"] == "mnli" if value is None else bool(value)


def save_trained(trainer, directory: Path, cfg: dict, trainable_names: list[str], counts: dict) -> None:
    """The method weights, gathered when sharded (every rank takes part), written by the main process."""
    state = ckpt.gathered_trainable_state(trainer, trainable_names)
    if is_main_process():
        save_method_weights(trainer.model, directory, cfg["method"], cfg["model"]["name"], state_dict=state,
                            counts=counts)


def train_and_evaluate(cfg: dict, spec, splits: dict, tokenizer, model, run_dir: Path,
                       tracker: Tracker | None = None) -> dict:
    """Train with evaluation at every epoch, checkpointing every ``trainer.save_steps`` steps and at every epoch end
    (resuming from the newest verified checkpoint), evaluate the trained model, save its method weights."""
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable_names:
        raise UserError(f"method {cfg['method']['name']!r} leaves nothing to train on {cfg['model']['name']}")
    counts = parameter_counts(model)
    plan = spec.training_plan(cfg, spec, splits, tokenizer, model, run_dir)
    args = training_arguments(cfg, run_dir, **plan.arguments)
    callbacks = ckpt.trainer_callbacks(args) + (tracker or Tracker()).callbacks() + plan.callbacks
    if saves_best_method(cfg):  # the best epoch's method weights, for warm_start=mnli (lora_repro.run)
        callbacks.append(BestMethodSaver(plan.primary_metric, run_dir, cfg, trainable_names, counts))
    trainer = ckpt.LightCheckpointTrainer(model=model, args=args, train_dataset=plan.train,
                                          eval_dataset=plan.eval_dataset, data_collator=plan.collator,
                                          compute_metrics=plan.compute_metrics, callbacks=callbacks)
    for callback in callbacks:
        if hasattr(callback, "bind"):
            callback.bind(trainer)
    before = plan.before_training(trainer) if plan.before_training else None
    output, resumed_from = ckpt.train_resuming(trainer, quarantine=is_main_process())
    step, epoch = trainer.state.global_step, trainer.state.epoch
    history = list(trainer.state.log_history)
    if plan.eval_dataset is not None and not evaluated_at(history, step):  # a run shorter than one epoch
        history.append({**trainer.evaluate(), "epoch": epoch, "step": step})
    if plan.final_metrics:
        history.append({**{f"eval_{k}": v for k, v in plan.final_metrics(trainer).items()}, "epoch": epoch,
                        "step": step})
    save_trained(trainer, run_dir / METHOD_DIR, cfg, trainable_names, counts)
    curve = evaluation_curve(history)
    key = plan.primary_metric
    scored = [e for e in curve if key in e["metrics"]]
    best = max(scored, key=lambda e: e["metrics"][key]) if scored else curve[-1]
    return {"curve": curve, "best": best, "last": scored[-1] if scored else curve[-1], "primary_metric": key,
            **({"untrained": before} if plan.before_training else {}), **plan.details,
            "train_loss": [e["loss"] for e in trainer.state.log_history if "loss" in e], "global_steps": step,
            "train_runtime_s": output.metrics.get("train_runtime"), "resumed_from": resumed_from,
            "n_examples": plan.n_examples}
