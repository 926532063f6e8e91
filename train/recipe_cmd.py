"""Reproduce a shipped model from its recipe (`posestream train --recipe NAME`).

A recipe is a TOML file, `train/recipes/NAME.toml` (or any path given to --recipe):

    description = "one line: what it makes and its headline figure"
    produces = "runs/NAME/best.pt"                # the checkpoint the steps end with
    steps = [
        "posestream train-lifter --input gt ... --out runs/NAME",
        "posestream eval --data {data}/h36m/h36m_val.npz --input gt --model runs/NAME/best.pt",
        { run = "git show REV:models/x.pt", stdout = "runs/x.pt" },   # output to a file
    ]

Each step is a command line run in the current directory (the checkout's root): `posestream
...` (this installation's CLI), `python ...` (this interpreter) or `git ...`; `{data}` is the
shared data folder (train.h36m.default_data_dir). Steps run in order, each as its own process;
the first failing step stops the recipe (exit status 1) and names itself. Training steps
resume from their run directory (train/run_state.py) and renders keep finished shards, so
running a recipe again continues where it stopped; `--from N` starts at step N.

    posestream train --list
    posestream train --recipe base_gt --dry-run
    posestream train --recipe base_gt
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from engines.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
PROGRAMS = ("posestream", "python", "git")


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]  # as written, placeholders filled
    stdout: Path | None = None

    def command(self) -> list[str]:
        """The process to start: `posestream` and `python` become this interpreter."""
        prog, *rest = self.argv
        if prog == "posestream":
            return [sys.executable, "-m", "realtime.cli", *rest]
        if prog == "python":
            return [sys.executable, *rest]
        return list(self.argv)

    def __str__(self) -> str:
        return shlex.join(self.argv) + (f" > {self.stdout}" if self.stdout else "")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    produces: str
    steps: tuple[Step, ...]


def recipe_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml":
        if not p.is_file():
            raise UserError(f"recipe file {p} does not exist")
        return p
    cand = RECIPES_DIR / f"{name_or_path}.toml"
    if not cand.is_file():
        raise UserError(f"unknown recipe {name_or_path!r}: one of {', '.join(available()) or 'none'} "
                        f"(train/recipes/), or a path to a .toml")
    return cand


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str, data_dir: Path | None = None) -> Recipe:
    """Parse and check a recipe; UserError naming the file and the problem."""
    path = recipe_path(name_or_path)
    if data_dir is None:
        from train.h36m import default_data_dir

        data_dir = default_data_dir()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read recipe {path}: {exc}") from None
    unknown = set(raw) - {"description", "produces", "steps"}
    if unknown or not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise UserError(f"recipe {path}: needs a non-empty `steps` list (and only description, produces, steps; "
                        f"got {', '.join(sorted(raw))})")
    steps = []
    for i, item in enumerate(raw["steps"], 1):
        line, stdout = (item, None) if isinstance(item, str) else (item.get("run"), item.get("stdout"))
        if not isinstance(line, str) or (stdout is not None and not isinstance(stdout, str)) \
                or (not isinstance(item, str) and set(item) - {"run", "stdout"}):
            raise UserError(f"recipe {path}, step {i}: a command line, or {{ run = ..., stdout = ... }}")
        try:
            argv = tuple(a.replace("{data}", str(data_dir)) for a in shlex.split(line))
        except ValueError as exc:
            raise UserError(f"recipe {path}, step {i}: {exc}") from None
        if not argv or argv[0] not in PROGRAMS:
            raise UserError(f"recipe {path}, step {i}: must start with one of {', '.join(PROGRAMS)}")
        steps.append(Step(argv, Path(stdout) if stdout else None))
    return Recipe(path.stem, str(raw.get("description", "")), str(raw.get("produces", "")), tuple(steps))


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--recipe", metavar="NAME|FILE", help="a recipe in train/recipes/ (by name) or a .toml file")
    g.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    p.add_argument("--from", dest="start", type=int, default=1, metavar="N", help="start at step N (default 1)")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in available():
            r = load_recipe(name)
            print(f"{name:<24}{r.description}")
        return 0
    recipe = load_recipe(args.recipe)
    if not 1 <= args.start <= len(recipe.steps):
        raise UserError(f"--from must be between 1 and {len(recipe.steps)} (the recipe's steps)")
    print(f"recipe {recipe.name}: {recipe.description}", flush=True)
    for i, step in enumerate(recipe.steps, 1):
        if i < args.start:
            continue
        print(f"[{i}/{len(recipe.steps)}] {step}", flush=True)
        if args.dry_run:
            continue
        if step.stdout is not None:
            step.stdout.parent.mkdir(parents=True, exist_ok=True)
            part = step.stdout.with_name(step.stdout.name + ".part")
            with open(part, "wb") as fh:
                rc = subprocess.call(step.command(), stdout=fh)
            if rc == 0:
                part.replace(step.stdout)
            else:
                part.unlink(missing_ok=True)
        else:
            rc = subprocess.call(step.command())
        if rc != 0:
            print(f"posestream train: error: step {i} of recipe {recipe.name} failed (exit status {rc}): {step}; "
                  f"fix it and rerun with --from {i}", file=sys.stderr)
            return 1
    if not args.dry_run:
        print(f"recipe {recipe.name} done: {recipe.produces}", flush=True)
    return 0
