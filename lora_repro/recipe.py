"""``python -m lora_repro.recipe [overrides ...] [--cfg job]``: what a paper experiment's recipe resolves to.

``python -m lora_repro +experiment=table2_roberta --cfg job`` prints the composed config, in which the recipe's
settings are still null: ``trainer=paper`` fills them inside the job (``lora_repro.run.apply_recipe``). This command
composes the config the same way (Hydra's compose API on the repository's ``conf/``, the same overrides), expands the
experiment's declared sweep (every axis but ``seed``; an axis given on the command line is taken from there) and
prints, per job, the resolved trainer and method settings for ``trainer.recipe.source=paper`` beside
``released_scripts`` ("paper / released" where they differ; a line under the table names the jobs whose block has
no released-script settings transcribed). ``--cfg job`` prints each job's whole resolved config instead (for the source the overrides select),
which is what the run records in results.json.

    python -m lora_repro.recipe +experiment=table2_roberta
    python -m lora_repro.recipe +experiment=table2_roberta model=roberta-large trainer.recipe.variant=dagger
    python -m lora_repro.recipe +experiment=table2_deberta task=rte trainer.recipe.source=released_scripts --cfg job
"""
from __future__ import annotations

import argparse
import copy
import itertools

from lora_repro.config import compose

SOURCES = ("paper", "released_scripts")
SHOWN = [("trainer", k) for k in ("batch_size", "epochs", "lr", "max_seq_len", "warmup_ratio", "warmup_steps",
                                  "weight_decay", "precision")] + \
        [("method", k) for k in ("r", "alpha", "bottleneck")] + [("model", "config_overrides"), (None, "warm_start")]


def sweep_axes(overrides: list[str]) -> dict[str, list[str]]:
    """The experiment's declared sweep (BasicSweeper comma lists), without seed and without keys overridden here."""
    from omegaconf import OmegaConf

    params = compose(overrides, hydra_config=True).hydra.sweeper.params
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    axes = {}
    for key, values in (OmegaConf.to_container(params) if params else {}).items():
        if key != "seed" and key not in given:
            axes[key] = [v.strip() for v in str(values).split(",")]
    return axes


def jobs(overrides: list[str]) -> list[list[str]]:
    axes = sweep_axes(overrides)
    return [[*overrides, *(f"{k}={v}" for k, v in zip(axes, combo))] for combo in itertools.product(*axes.values())]


def resolve(overrides: list[str], source: str | None = None) -> dict:
    """The job's config after the recipe (``source`` replaces trainer.recipe.source when given)."""
    from lora_repro.run import apply_recipe, to_dict

    cfg = to_dict(compose(overrides))
    if source and cfg["trainer"].get("recipe"):
        cfg["trainer"]["recipe"]["source"] = source
    return apply_recipe(copy.deepcopy(cfg))


def _shown(cfg: dict, group: str | None, key: str):
    node = cfg if group is None else cfg.get(group) or {}
    return node.get(key, "—") if key in node else "—"


def side_by_side(overrides: list[str]) -> str:
    """One Markdown table per group of jobs (every sweep axis but task), tasks as columns."""
    axes = sweep_axes(overrides)
    task_values = axes.pop("task", None)
    out = []
    for combo in itertools.product(*axes.values()):
        base = [*overrides, *(f"{k}={v}" for k, v in zip(axes, combo))]
        columns = task_values or [None]
        cells: dict[tuple, list[str]] = {}
        unavailable = []
        for task in columns:
            job = base + ([f"task={task}"] if task else [])
            resolved = {}
            for source in SOURCES:
                try:
                    resolved[source] = resolve(job, source)
                except Exception as error:  # e.g. no released-script settings for this block
                    resolved[source] = error
            paper = resolved["paper"]
            if isinstance(paper, Exception):
                raise paper
            if not paper["trainer"].get("recipe"):
                return f"trainer {overrides} has no recipe (trainer=paper has): nothing to resolve\n"
            released = resolved["released_scripts"]
            if isinstance(released, Exception):
                unavailable.append((task or "job", str(released)))
            for group, key in SHOWN:
                value = _shown(paper, group, key)
                other = value if isinstance(released, Exception) else _shown(released, group, key)
                cells.setdefault((group, key), []).append(str(value) if str(other) == str(value) else f"{value} / {other}")
        name = " ".join([*overrides, *(f"{k}={v}" for k, v in zip(axes, combo))]) or "(defaults)"
        header = ["setting"] + [str(t) if t else "job" for t in columns]
        rows = [[f"{g}.{k}" if g else k, *v] for (g, k), v in cells.items() if any(c != "—" for c in v)]
        lines = [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        if unavailable:
            lines += ["", f"released_scripts n/a (paper values shown) for {', '.join(t for t, _ in unavailable)}: "
                      f"{unavailable[0][1]}"]
        out.append("\n".join(lines) + "\n")
    note = ("Cells: trainer.recipe.source=paper, then `/ released_scripts` where the released scripts differ. "
            "batch_size is the global batch (released scripts: per-device "
            "batch x their GPU count).\n")
    return note + "\n" + "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora_repro.recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m lora_repro")
    parser.add_argument("--cfg", choices=["job"], default=None, help="print each job's whole resolved config")
    args = parser.parse_args(argv)
    if args.cfg == "job":
        from omegaconf import OmegaConf

        for job in jobs(args.overrides):
            print(f"# {' '.join(job)}")
            print(OmegaConf.to_yaml(resolve(job)))
        return
    print(side_by_side(args.overrides))


if __name__ == "__main__":
    main()
