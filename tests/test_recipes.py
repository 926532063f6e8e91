"""Training recipes (train/recipes/*.toml, `posestream train --recipe`): every shipped
checkpoint is named by a recipe, every step of every recipe is a valid command line for its
command, and the runner runs steps in order, stops at the first failure and resumes with
--from."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engines.errors import UserError
from realtime.cli import build_parser, main
from train.recipe_cmd import RECIPES_DIR, available, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_checkpoint_has_a_recipe():
    text = "\n".join(p.read_text() for p in RECIPES_DIR.glob("*.toml"))
    shipped = sorted(p.stem for p in (REPO / "models").glob("*.pt"))
    assert shipped and available()
    missing = [name for name in shipped if name not in text]
    assert not missing, f"shipped checkpoints no recipe names: {missing}"


@pytest.mark.parametrize("name", available())
def test_recipe_steps_parse_with_their_commands(name, tmp_path):
    recipe = load_recipe(name, data_dir=tmp_path)
    assert recipe.description and recipe.produces
    for step in recipe.steps:
        if step.argv[0] != "posestream":
            continue
        command, *args = step.argv[1:]
        parser = build_parser(populate=command)
        try:
            ns = parser.parse_args([command, *args])
        except SystemExit:
            pytest.fail(f"{name}: `{step}` does not parse")
        assert ns.command == command


def _recipe(tmp_path: Path, steps: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(f'description = "test"\nproduces = "out.txt"\nsteps = [\n{steps}\n]\n')
    return path


def test_runner_runs_in_order_stops_on_failure_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ok = _recipe(tmp_path, '"python -c \\"open(\'a.txt\', \'w\').write(\'1\')\\"",\n'
                           '{ run = "python -c \\"print(42)\\"", stdout = "runs/b.txt" },\n'
                           '"python -c \\"import sys; sys.exit(3)\\"",\n'
                           '"python -c \\"open(\'c.txt\', \'w\').write(\'3\')\\"",')
    assert main(["train", "--recipe", str(ok)]) == 1
    err = capsys.readouterr().err
    assert "step 3 of recipe r failed (exit status 3)" in err and "--from 3" in err
    assert (tmp_path / "a.txt").read_text() == "1" and (tmp_path / "runs" / "b.txt").read_text().strip() == "42"
    assert not (tmp_path / "c.txt").exists()
    assert main(["train", "--recipe", str(ok), "--from", "4"]) == 0
    assert (tmp_path / "c.txt").read_text() == "3"
    assert main(["train", "--recipe", str(ok), "--dry-run"]) == 0
    assert "[4/4] python -c" in capsys.readouterr().out


def test_bad_recipes_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown recipe"):
        load_recipe("no_such_recipe")
    with pytest.raises(UserError, match="must start with"):
        load_recipe(str(_recipe(tmp_path, '"rm -rf /"')))
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [")
    with pytest.raises(UserError, match="cannot read recipe"):
        load_recipe(str(bad))
    assert main(["train", "--recipe", "no_such_recipe"]) == 2
    assert sys.executable  # the runner starts `python` steps with this interpreter
