"""Each run writes one self-describing results.json, atomically: a reader never sees half a file, and a run
whose file says ``status: complete`` is done (sweeps skip it)."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1
# Config keys that do not change what a run computes: where this machine keeps data and outputs, how the run is
# labelled, grouped or mirrored. They stay out of its identity, so a sweep moved to another machine finds its runs.
# "experiment": the run group's key in records written before run_group existed; "hydra": Hydra's own node.
VOLATILE_KEYS = ("seed", "output_root", "data_dir", "force", "wandb", "run_group", "table", "label", "experiment",
                 "hydra")
# trainer keys that only say how often to checkpoint or log and what to keep: same results, same identity
RUNTIME_TRAINER_KEYS = ("save_steps", "logging_steps", "keep_checkpoints", "progress")


def setting(cfg: dict, drop: tuple[str, ...] = ()) -> dict:
    """What a run computes, without the seed: the one identity of a run for the run folder, the report's seed
    grouping and the analysis' pairing. ``drop`` also leaves out method keys (the analysis pairs runs that differ
    only in ``r``).

    ``init_from`` is the path of another run on this machine: with ``warm_start`` set it is derived from the setting
    and the seed (``warm_start`` stays in the identity), otherwise it is replaced by the sha256 of the weights it
    names, so the same starting point has the same identity wherever it lies."""
    identity = {k: v for k, v in cfg.items() if k not in VOLATILE_KEYS}
    if isinstance(identity.get("trainer"), dict):
        identity["trainer"] = {k: v for k, v in identity["trainer"].items() if k not in RUNTIME_TRAINER_KEYS}
    if drop and isinstance(identity.get("method"), dict):
        identity["method"] = {k: v for k, v in identity["method"].items() if k not in drop}
    if identity.get("init_from"):
        identity["init_from"] = None if identity.get("warm_start") else weights_digest(identity["init_from"])
    return identity


def setting_id(cfg: dict) -> str:
    """Eight hex digits of the setting (see ``setting``): equal for the seeds of one setting on any machine."""
    import hashlib

    return hashlib.sha256(json.dumps(setting(cfg), sort_keys=True, default=str).encode()).hexdigest()[:8]


def weights_digest(path: str | os.PathLike) -> str:
    """sha256 of the method weights under ``path`` (a run folder or a method checkpoint folder); the path itself
    when there are none to read (the run then fails on it, naming it). Read once per file version: a run's identity
    is asked for several times, and the report asks it of every record."""
    folder = Path(path) / "method" if (Path(path) / "method").is_dir() else Path(path)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return str(path)
    return _files_digest(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=256)
def _files_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).read_bytes())
    return "sha256:" + digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Write ``path`` atomically: the body writes the yielded temporary path beside it (any writer: json, text,
    safetensors, numpy), then it replaces ``path`` in one step, so a reader sees the old file or the new one, never
    half of one; on error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to others
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_results(run_dir: str | os.PathLike) -> dict | None:
    """The run's record, or None when there is none or it is unreadable (never a half-written one: see above)."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(run_dir: str | os.PathLike) -> bool:
    record = read_results(run_dir)
    return bool(record) and record.get("status") == "complete"


def git_commit() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def hardware() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu": _cpu_name(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    else:
        info["gpu"] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "datasets", "hydra-core", "peft", "lora_repro"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def peak_memory_mb() -> dict:
    import resource

    import torch

    out = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
