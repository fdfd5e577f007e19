"""One job: model -> method -> train -> evaluate every epoch -> results.json.

The run directory is derived from the resolved config (everything but the seed and where outputs go), so the same
job always lands in the same place: a sweep re-run skips finished jobs, and seeds of one setting sit side by side
for the report's median.
"""
from __future__ import annotations

import copy
import logging
import logging.handlers
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lora_repro import results as rs
from lora_repro import checkpointing as ckpt
from lora_repro.distributed import is_main_process
from lora_repro.methods import apply_method, get_method
from lora_repro.methods.common import load_method_weights, parameter_counts
from lora_repro.training import BEST_METHOD_DIR, METHOD_DIR, train_and_evaluate
from lora_repro.models import load_model, load_tokenizer, resolve_source, load_config
from lora_repro.tasks import get_task
from lora_repro.tracking import Tracker, start_tracking, wandb_settings
from lora_repro.errors import MissingInputError, UserError

log = logging.getLogger("lora_repro")


def to_dict(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


config_id = rs.setting_id  # the run's identity: lora_repro.results.setting


def run_dir_for(cfg: dict) -> Path:
    setting = f"{cfg['model']['name']}__{cfg['task']['name']}__{cfg['method']['name']}__{config_id(cfg)}"
    return Path(cfg["output_root"]) / cfg["run_group"] / setting / f"seed{cfg['seed']}"


TRAINER_FROM_RECIPE = ("batch_size", "epochs", "lr", "max_seq_len", "warmup_ratio", "weight_decay")


WARM_START_TASKS = ("mrpc", "rte", "stsb")


def recipe_hparams(cfg: dict) -> tuple[str, str, dict]:
    """(paper model, method block, settings) of the run's recipe: ``trainer.recipe`` names the source (paper |
    released_scripts), the model (default: the run's, or the paper model a stand-in replaces), the method block and
    its ``variant`` (``dagger``: Table 9's RoBERTa-large LoRA† block; ``method: lora/dagger`` says the same)."""
    from lora_repro.report.paper import paper_hparams

    recipe = cfg["trainer"]["recipe"]
    model = recipe.get("model") or cfg["model"].get("stand_in_for") or cfg["model"]["name"]
    method = recipe.get("method") or cfg["method"]["name"]
    if recipe.get("variant") and not method.endswith(f"/{recipe['variant']}"):
        method = f"{method}/{recipe['variant']}"
    return model, method, paper_hparams(model, method, cfg["task"]["name"], source=recipe.get("source", "paper"))


def apply_recipe(cfg: dict) -> dict:
    """Fill the trainer and method settings left null from the paper's Appendix D (or the released scripts).

    ``trainer.recipe`` names the source; settings given explicitly (yaml or command line) always win. The released
    scripts' batch is per device: the global batch (``trainer.batch_size``) is that times their GPU count (RoBERTa:
    16 x 8 = 128); their ``--fp16`` (DeBERTa) fills ``trainer.precision``. A † block (pretrained init) turns the
    MNLI warm start off for MRPC, RTE and STS-B.
    """
    recipe = cfg["trainer"].get("recipe")
    if not recipe:
        return cfg
    model, method, hp = recipe_hparams(cfg)
    if hp.get("batch_size_scope") == "per_device" and hp.get("batch_size") is not None:
        hp["batch_size"] = hp["batch_size"] * hp.get("n_gpus", 1)
    for key in TRAINER_FROM_RECIPE:
        if cfg["trainer"].get(key) is None and hp.get(key) is not None:
            cfg["trainer"][key] = hp[key]
    if cfg["trainer"].get("precision") is None:
        cfg["trainer"]["precision"] = "fp16" if hp.get("fp16") else "fp32"
    if cfg["trainer"].get("warmup_ratio") is None and hp.get("warmup_steps"):
        cfg["trainer"]["warmup_steps"] = hp["warmup_steps"]
    if "dagger" in method.split("/")[1:] and cfg.get("warm_start"):
        cfg["warm_start"] = None  # the † rows start MRPC, RTE and STS-B from the pretrained model
    for key, source_key in get_method(cfg["method"]["name"]).recipe_keys.items():  # e.g. LoRA's r from lora_r
        if key in cfg["method"] and cfg["method"][key] is None and hp.get(source_key) is not None:
            cfg["method"][key] = hp[source_key]
    if hp.get("cls_dropout") is not None:
        cfg["model"].setdefault("config_overrides", {})
        cfg["model"]["config_overrides"] = {"cls_dropout": hp["cls_dropout"], **(cfg["model"]["config_overrides"] or {})}
    missing = [k for k in ("batch_size", "epochs", "lr", "max_seq_len") if cfg["trainer"].get(k) is None]
    if missing:
        raise UserError(f"trainer settings {missing} are null and the recipe ({model}, {method}, {cfg['task']['name']}) "
                         "has no value for them: set them, e.g. trainer.lr=2e-4")
    return cfg


def resolved_config(composed: dict) -> dict:
    """The settings a job runs with: the recipe's values filled in, smoke runs' schedules cut short (a copy)."""
    cfg = apply_recipe(copy.deepcopy(composed))
    if cfg.get("smoke"):
        from lora_repro import smoke as sm

        sm.limit_schedule(cfg)
    return cfg


def job_config(composed: dict) -> dict:
    """What a job runs with, and so where its run folder is: the recipe, smoke limits and the MNLI warm start."""
    return resolve_warm_start(resolved_config(composed), composed)


def resolve_warm_start(cfg: dict, composed: dict) -> dict:
    """``warm_start=mnli``: MRPC, RTE and STS-B start from the method weights of the *best* MNLI epoch (by MNLI's
    metric, the run's ``best``) of the same setting and seed (the paper's non-dagger rows, Appendix D: "the best MNLI
    checkpoint"). The MNLI job must have finished first; it keeps those weights in ``method_best/`` (``method/`` is
    the last epoch's: used only when the last epoch is the best). ``composed`` is the config before the recipe filled
    it, from which the MNLI job's own config (and so its run directory) is rebuilt. ``warm_start_epoch: best`` goes
    into the config (and so the identity): runs warm-started from the last epoch before this rule get other folders."""
    if cfg.get("warm_start") != "mnli" or cfg["task"]["name"] not in WARM_START_TASKS or cfg.get("init_from"):
        return cfg
    mnli = resolved_config({**composed, "task": {**composed["task"], "name": "mnli"}})
    mnli_dir = run_dir_for(mnli)
    if not rs.is_complete(mnli_dir):
        raise MissingInputError(f"warm_start=mnli: the MNLI run {mnli_dir} is not complete; run task=mnli with the "
                                "same settings first (or set warm_start=null for the dagger setup)")
    record = rs.read_results(mnli_dir) or {}
    best_epoch, last_epoch = (record.get("best") or {}).get("epoch"), (record.get("last") or {}).get("epoch")
    if (mnli_dir / BEST_METHOD_DIR).is_dir():
        cfg["init_from"] = str(mnli_dir / BEST_METHOD_DIR)
    elif best_epoch is not None and best_epoch == last_epoch:
        cfg["init_from"] = str(mnli_dir)  # its method/ is the best epoch's
    else:
        raise MissingInputError(f"warm_start=mnli: the MNLI run {mnli_dir} has no {BEST_METHOD_DIR}/ (written before "
                                f"runs kept it) and its last epoch ({last_epoch}) is not its best ({best_epoch}): "
                                "re-run it with force=true, or name the weights to start from with init_from=DIR")
    cfg["warm_start_epoch"] = "best"
    return cfg


POSITIVE_INT = ("trainer.batch_size", "trainer.eval_batch_size", "trainer.max_seq_len")
NON_NEGATIVE_INT = ("seed", "trainer.num_workers", "task.subset_seed")
POSITIVE_INT_OR_NULL = ("trainer.save_steps", "trainer.logging_steps", "trainer.warmup_steps",
                        "task.max_train_examples", "task.max_eval_examples")
POSITIVE_NUMBER = ("trainer.epochs",)
FRACTION = ("trainer.warmup_ratio", "trainer.label_smoothing")
NON_NEGATIVE_NUMBER = ("trainer.lr", "trainer.weight_decay", "trainer.grad_clip")  # lr 0: a frozen control run
PRECISIONS = ("fp32", "bf16", "fp16")


def _setting(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def validate_settings(cfg: dict) -> None:
    """The types and ranges of the numeric settings, checked before anything is loaded or written: one line naming
    the setting, the value and what it must be."""
    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    rules = ([(k, is_int, lambda v: v > 0, "a positive integer") for k in POSITIVE_INT] +
             [(k, is_int, lambda v: v >= 0, "a non-negative integer") for k in NON_NEGATIVE_INT] +
             [(k, is_number, lambda v: v > 0, "a positive number") for k in POSITIVE_NUMBER] +
             [(k, is_number, lambda v: 0 <= v < 1, "a number in [0, 1)") for k in FRACTION] +
             [(k, is_number, lambda v: v >= 0, "a non-negative number") for k in NON_NEGATIVE_NUMBER])
    for key, of_type, in_range, what in rules:
        value = _setting(cfg, key)
        if value is not None and not (of_type(value) and in_range(value)):
            raise UserError(f"{key}={value!r}: must be {what}")
    for key in POSITIVE_INT_OR_NULL:
        value = _setting(cfg, key)
        if value is not None and not (is_int(value) and value > 0):
            raise UserError(f"{key}={value!r}: must be a positive integer or null")
    max_steps = _setting(cfg, "trainer.max_steps")
    if max_steps is not None and not is_int(max_steps):
        raise UserError(f"trainer.max_steps={max_steps!r}: must be an integer (-1 or 0: train for trainer.epochs)")
    precision = _setting(cfg, "trainer.precision") or "fp32"
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision={precision!r}; choices: {', '.join(PRECISIONS)}")
    root = Path(cfg["output_root"])
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"output_root={cfg['output_root']}: {existing} is a file; output_root must be a folder "
                        "(runs go under it; default $LORA_REPRO_RUNS or runs/)")


def check_declared_settings(cfg: dict) -> None:
    """The settings of each group are the keys its yaml files declare, each default stated once there: a key no
    yaml declares is a typo that would be ignored, so it fails naming the valid ones. A method is held to its own
    yaml (conf/method/NAME.yaml); task, trainer and model blocks to what any of their options declares."""
    from hydra.errors import MissingConfigException

    from lora_repro.config import declared_settings

    get_method(cfg["method"]["name"])
    for group, option in (("method", cfg["method"]["name"]), ("task", None), ("trainer", None), ("model", None)):
        try:
            declared = declared_settings(group, option)
        except MissingConfigException:  # a method registered in code without a yaml: nothing declares its keys
            continue
        unknown = sorted(set(cfg.get(group) or {}) - declared)
        if unknown:
            owner = f"method {option!r}" if option else group
            raise UserError(f"{owner} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(declared))}")


def prepare(cfg: dict):
    """Everything that can fail on bad input, before anything is written: task, method, data, model."""
    spec = get_task(cfg["task"]["name"])
    method = get_method(cfg["method"]["name"])
    method.validate(cfg["method"])
    kind = method.model_kind or spec.kind  # a prompting method scores with the LM head on a classification task
    if cfg.get("data_dir") and not Path(cfg["data_dir"]).is_dir():
        raise MissingInputError(f"data folder {cfg['data_dir']} does not exist (set by data_dir or $LORA_REPRO_DATA)")
    smoke = cfg.get("smoke", False)
    source = smoke_source(cfg["model"]) if smoke else resolve_source(cfg["model"])
    if smoke:
        from lora_repro import smoke as sm

        splits, data = load_splits(spec, cfg, smoke)
        texts = [t for ds in splits.values() for f in spec.text_fields for t in ds[f]]
        prompt = spec.extra.get("prompt") or {}  # the task's prompt words are text to know as well (few-shot)
        texts += [prompt.get("template", ""), *prompt.get("label_words", [])]
        tokenizer = sm.train_tokenizer(texts, decoder=kind == "generation")
        config = sm.shrink_config(load_config(cfg["model"], source), len(tokenizer), sm.special_token_ids(tokenizer))
        model, _ = load_model(cfg["model"], kind, spec.num_labels, config=config, source=source, random_init=True)
    else:  # the model first: a missing model is reported before minutes of data loading
        model, _ = load_model(cfg["model"], kind, spec.num_labels, source=source)
        tokenizer = load_tokenizer(source)
        splits, data = load_splits(spec, cfg, smoke)
    if spec.kind == "generation":  # decoding settings checked; separator/EOS/pad agree for tokenizer and model
        from lora_repro.generation import DecodingSettings, configure_special_tokens

        DecodingSettings.from_cfg(cfg["task"].get("generation"))
        configure_special_tokens(tokenizer, model)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    apply_method(model, cfg["method"])
    for module in model.modules():  # modules that take input positions (prefix/infix tokens) check they fit
        if hasattr(module, "check_input_room"):
            module.check_input_room(cfg["trainer"].get("max_seq_len"))
    if cfg.get("init_from"):
        load_method_weights(model, _method_dir(cfg["init_from"]), apply=False, include_head=False)
    apply_fast_path(model, cfg)
    return spec, splits, data, tokenizer, model, source


def smoke_source(model_cfg: dict):
    """Smoke runs need no weights: the model's architecture from its yaml (every model config has one), shrunk."""
    from lora_repro.models import ModelSource

    if not model_cfg.get("architecture"):
        return resolve_source(model_cfg)  # a model.path / $LORA_REPRO_MODELS folder without an architecture entry
    return ModelSource("architecture", model_cfg["name"], ["smoke: the architecture in conf/model, no weights"])


FROZEN_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def apply_fast_path(model: torch.nn.Module, cfg: dict) -> dict:
    """The fast training path, applied once the method has chosen what trains (benchmarks/train_throughput.py).

    ``trainer.frozen_dtype`` (auto | bf16 | fp16 | null): the frozen weights and biases of the matmul layers
    (nn.Linear, GPT-2's Conv1D, also inside LoRA wrappers) are stored in the autocast dtype, so no fp32 copy is kept
    and autocast no longer re-casts them every step. ``auto`` (with ``trainer.fast_path``, default true) does it when
    ``trainer.precision`` is bf16/fp16: exactly the rounding autocast applied to them anyway, so the numerics do not
    change. Parameters shared with other layers (GPT-2's tied lm_head/embedding), norms, embeddings and everything
    that trains stay as they are. Full fine-tuning trains those weights: bf16 storage would change its numerics, so
    it gets nothing from ``auto`` and an explicit dtype is refused. ``trainer.attn_implementation`` (null: the
    transformers default, sdpa where supported) and ``trainer.torch_compile`` are the other switches.
    """
    from lora_repro.methods.lora_layer import in_out_features

    t = cfg["trainer"]
    attn = t.get("attn_implementation")
    if attn:
        try:
            model.set_attn_implementation(attn)
        except (ValueError, ImportError) as error:
            raise UserError(f"trainer.attn_implementation={attn!r} is not available for {cfg['model']['name']}: "
                             f"{error}") from None
    requested, precision = t.get("frozen_dtype", "auto"), t.get("precision") or "fp32"
    if requested in (None, "none", False):
        return {"frozen_dtype": None, "cast_parameters": 0}
    if requested == "auto":
        if not t.get("fast_path", True) or precision not in FROZEN_DTYPES:
            return {"frozen_dtype": None, "cast_parameters": 0}
        requested = precision
    elif requested not in FROZEN_DTYPES:
        raise UserError(f"trainer.frozen_dtype must be one of auto, bf16, fp16, null; got {requested!r}")
    elif precision != requested:
        raise UserError(f"trainer.frozen_dtype={requested} needs trainer.precision={requested} (autocast), got "
                         f"precision={precision}: without autocast in that dtype, activations and weights would disagree")

    def is_matmul(module: torch.nn.Module) -> bool:
        try:
            in_out_features(module)
            return True
        except TypeError:
            return False

    shared = {id(p) for m in model.modules() if not is_matmul(m) for p in m.parameters(recurse=False)}
    frozen = [p for module in filter(is_matmul, model.modules()) for p in module.parameters(recurse=False)
              if not p.requires_grad and id(p) not in shared and p.is_floating_point()]
    if not frozen and t.get("frozen_dtype", "auto") != "auto":
        raise UserError(f"trainer.frozen_dtype={requested} is for methods that freeze the pretrained weights (lora, "
                         f"adapters, bitfit): {cfg['method']['name']} trains every matmul weight, and storing them in "
                         "half precision would change its numerics; use trainer.precision=bf16 (autocast over fp32 "
                         "weights) instead")
    dtype, cast = FROZEN_DTYPES[requested], 0
    for p in frozen:
        if p.dtype != dtype:
            p.data = p.data.to(dtype)
            cast += 1
    log.info("fast path: %d frozen matmul weights/biases stored in %s", cast, requested)
    return {"frozen_dtype": requested, "cast_parameters": cast}


def _method_dir(path: str) -> Path:
    """``init_from`` may name a run directory (its method/ subfolder) or a method checkpoint folder itself."""
    path = Path(path)
    return path / METHOD_DIR if (path / METHOD_DIR).is_dir() else path


def load_splits(spec, cfg: dict, smoke: bool):
    import datasets

    from lora_repro.tasks import RowPolicy

    task_cfg = cfg["task"]
    names = (spec.train_split, *spec.eval_splits)
    rows = RowPolicy(skip=bool(task_cfg.get("skip_malformed_rows", False)))
    n_train, n_eval = task_cfg.get("max_train_examples"), task_cfg.get("max_eval_examples")
    if smoke:
        from lora_repro import smoke as sm

        n_train, n_eval = sm.SMOKE_TRAIN, sm.SMOKE_EVAL
        try:
            splits = {s: spec.load(s, cfg.get("data_dir"), cfg.get("data_source", "auto"), rows) for s in names}
            data_source = "real"
        except FileNotFoundError:
            splits = {s: datasets.Dataset.from_dict(sm.synthetic_rows(spec, 64, i)) for i, s in enumerate(names)}
            data_source = "synthetic"
            log.warning("smoke run: no data files for %s, synthetic rows of its schema (nothing to learn from)",
                        spec.name)
    else:
        splits = {s: spec.load(s, cfg.get("data_dir"), cfg.get("data_source", "auto"), rows) for s in names}
        data_source = cfg.get("data_dir") or "hub"
    if rows.skipped:
        log.warning("skipped malformed rows (task.skip_malformed_rows=true): %s", rows.skipped)
    data = {"source": data_source, "skipped_rows": rows.skipped}
    # subsets are fixed by the data seed, not the run seed, so every seed and method sees the same examples
    for split, limit in [(spec.train_split, n_train)] + [(s, n_eval) for s in spec.eval_splits]:
        if limit and len(splits[split]) > limit:
            splits[split] = splits[split].shuffle(seed=task_cfg.get("subset_seed", 0)).select(range(limit))
    return splits, data


def run(cfg: DictConfig | dict) -> dict:
    cfg = to_dict(cfg)
    cfg.pop("hydra", None)
    if cfg.get("job"):  # a job other than training, by its dotted path (conf/experiment/param_counts.yaml)
        from hydra.utils import get_method as job_function

        return job_function(cfg["job"])(cfg)
    with JobLog() as job_log:
        return train_job(cfg, job_log)


def train_job(cfg: dict, job_log: "JobLog") -> dict:
    """config -> recipe -> validation -> model, method, data -> train and evaluate -> results.json."""
    check_declared_settings(cfg)  # what was asked for, before the recipe adds its own keys (config_overrides)
    validate_settings(cfg)  # before the recipe: a typo'd number fails before anything is loaded
    cfg = job_config(cfg)
    validate_settings(cfg)  # and what the recipe filled in
    run_dir = run_dir_for(cfg)
    if rs.is_complete(run_dir) and not cfg.get("force"):
        log.info("already complete, skipping: %s", run_dir)
        return rs.read_results(run_dir)
    wandb_settings(cfg)  # a bad wandb.mode stops the job before anything is written
    if cfg.get("smoke"):
        log.warning("smoke run (smoke=true): a tiny random %s, a word-level tokenizer, a few examples: checks the "
                    "pipeline, scores mean nothing", cfg["model"]["name"])
        torch.set_num_threads(1)  # a tiny model's ops are fastest on one thread (2 threads on a busy CPU: 10x slower)
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    start = time.time()
    spec, splits, data, tokenizer, model, source = prepare(cfg)
    counts = parameter_counts(model)
    log.info("%s on %s with %s: %s trainable parameters (%s in the head) of %s", cfg["model"]["name"], spec.name,
             cfg["method"]["name"], f"{counts['trainable']:,}", f"{counts['trainable_head']:,}", f"{counts['total']:,}")
    main = is_main_process()
    record = {"schema": rs.SCHEMA_VERSION, "status": "running", "run_dir": str(run_dir), "config_id": config_id(cfg),
              "experiment": cfg["run_group"], "table": cfg.get("table"), "seed": cfg["seed"],
              "smoke": cfg.get("smoke", False), "config": cfg, "git": rs.git_commit(),
              "model": {"name": cfg["model"]["name"], "source": source.kind, "location": source.location,
                        "init": "random (smoke)" if cfg.get("smoke") else cfg["model"].get("init", "pretrained"),
                        "stand_in_for": cfg["model"].get("stand_in_for")},
              "task": spec.name, "method": cfg["method"]["name"], "parameters": counts,
              "data": data, "hardware": rs.hardware(), "versions": rs.versions(), "log": str(run_dir / JOB_LOG)}
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        record["submitit_log"] = link_submitit_log(run_dir)
        rs.write_json_atomic(run_dir / rs.RESULTS_FILE, record)
        job_log.open(run_dir / JOB_LOG)
    tracker, exit_code = Tracker(), 1
    try:  # the wandb run is finished whatever happens (exit code 1 unless the job completed)
        try:
            tracker = start_tracking(cfg, run_dir, {"config_id": record["config_id"]}, main_process=main)
            evaluate = get_method(cfg["method"]["name"]).evaluate or train_and_evaluate
            outcome = evaluate(cfg, spec, splits, tokenizer, model, run_dir, tracker)
        except BaseException as error:
            record.update(status="failed", error=f"{type(error).__name__}: {error}", wall_time_s=time.time() - start)
            if main:
                rs.write_json_atomic(run_dir / rs.RESULTS_FILE, record)
            tracker.log_summary({"status": "failed", "error": record["error"]})
            raise
        record["data"]["n_examples"] = outcome.pop("n_examples")
        record.update(outcome, status="complete", wall_time_s=time.time() - start, memory=rs.peak_memory_mb())
        if main:
            rs.write_json_atomic(run_dir / rs.RESULTS_FILE, record)
            if not cfg["trainer"].get("keep_checkpoints", False):
                shutil.rmtree(run_dir / ckpt.CHECKPOINTS_DIR, ignore_errors=True)
        key = record["primary_metric"]
        tracker.log_summary({"status": "complete", f"best/{key}": record["best"]["metrics"].get(key),
                             f"last/{key}": record["last"]["metrics"].get(key), "best/epoch": record["best"]["epoch"],
                             "parameters": counts})
        exit_code = 0
    finally:
        tracker.finish(exit_code)
    log.info("%s: best %s = %.2f at epoch %s (last %.2f) -> %s", spec.name, record["primary_metric"],
             record["best"]["metrics"][record["primary_metric"]], record["best"]["epoch"],
             record["last"]["metrics"][record["primary_metric"]], run_dir / rs.RESULTS_FILE)
    return record


JOB_LOG = "job.log"


def link_submitit_log(run_dir: Path) -> str | None:
    """In a submitit job (SLURM or local launcher): its log (submitit's stdout, every requeued attempt appended),
    linked as ``<run_dir>/submitit.log``; its path (None outside submitit)."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    try:
        import submitit

        path = submitit.JobEnvironment().paths.stdout
        (run_dir / "submitit.log").unlink(missing_ok=True)
        (run_dir / "submitit.log").symlink_to(path)
    except (ImportError, RuntimeError, KeyError, OSError):
        return None
    return str(path)


class JobLog:
    """The job's log (this suite's, Hydra's, the Trainer's) also goes to ``<run_dir>/job.log``, beside results.json,
    appended to (an interrupted and resumed run keeps both parts). Lines logged before the run folder exists are
    held in memory, so a run that fails validation writes nothing."""

    LOGGERS = ("", "transformers")  # the root logger, and transformers' (which does not propagate)
    FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

    def __enter__(self) -> "JobLog":
        self.handler: logging.Handler = logging.handlers.BufferingHandler(capacity=1_000_000)
        self._attach(self.handler)
        return self

    def open(self, path: Path) -> None:
        file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(logging.Formatter(self.FORMAT))
        for record in self.handler.buffer:
            file.handle(record)
        self.__exit__()
        self.handler = file
        self._attach(file)

    def _attach(self, handler: logging.Handler) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(handler)

    def __exit__(self, *exc) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        self.handler.close()


def record_failure(cfg: DictConfig | dict, error: BaseException) -> Path | None:
    """A sweep job that failed before training started (bad setting, missing data) still leaves a results.json
    with status failed, so the report names it and a re-run retries it; a job's own record is never overwritten."""
    try:
        cfg = to_dict(cfg)
        cfg.pop("hydra", None)
        cfg = job_config(cfg)
        run_dir = run_dir_for(cfg)
    except Exception:  # no run directory can be named the way run() would; the sweep log has the error
        return None
    previous = rs.read_results(run_dir)
    if (previous or {}).get("status") in ("complete", "failed") or not is_main_process():
        return None
    return rs.write_json_atomic(run_dir / rs.RESULTS_FILE, {
        "schema": rs.SCHEMA_VERSION, "status": "failed", "error": f"{type(error).__name__}: {error}",
        "run_dir": str(run_dir), "config_id": config_id(cfg), "experiment": cfg.get("run_group"),
        "table": cfg.get("table"), "seed": cfg.get("seed"), "smoke": cfg.get("smoke", False), "config": cfg,
        "model": {"name": cfg["model"]["name"], "stand_in_for": cfg["model"].get("stand_in_for")},
        "task": cfg["task"]["name"], "method": cfg["method"]["name"]})
