"""The wheel, as a user gets it: built from the checkout's files (tracked files plus what
set-up makes: the ONNX exports, the MediaPipe bundle, the vendored three.js), installed into
a fresh virtual environment with the runtime dependencies only (no torch), then run from a
directory outside the checkout: `posestream video` and the README's Python example.

Slow (a venv and the runtime packages: minutes); `.ci/run` runs it after the default tests.
pip reuses its cache and the machine's configured indexes (registries only).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_api import readme_example

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
GENERATED = ("models/*.onnx", "models/*.onnx.data", "web_viewer/vendor/**/*")


def _run(argv: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "POSESTREAM_MODELS")}
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv[:4]} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """A clean copy of the checkout to build from (so the build writes nothing here): the
    tracked files except the .pt checkpoints, plus set-up's generated files."""
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    for must in ("models/final.onnx", "models/pose_landmarker_full.task", "web_viewer/vendor/three/three.module.js"):
        if not (REPO / must).is_file():
            pytest.fail(f"{must} is missing: run scripts/setup.sh first (the wheel carries it)")
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [f for f in tracked.decode().split("\0") if f and not f.endswith(".pt")]
    files += [str(p.relative_to(REPO)) for g in GENERATED for p in REPO.glob(g) if p.is_file()]
    for f in files:
        if (REPO / f).is_file():
            _link(REPO / f, src / f)
    return src


@pytest.fixture(scope="module")
def wheel(source_tree: Path, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(source_tree)], cwd=source_tree)
    (whl,) = dist.glob("posestream-*.whl")
    return whl


def test_wheel_holds_every_package_the_models_and_three_js(wheel: Path, source_tree: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(source_tree)) for top in ("posestream", "engines", "realtime", "train",
                                                                   "web_viewer") for p in source_tree.glob(f"{top}/**/__init__.py")}
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"packages left out of the wheel: {missing}"
    for f in ("posestream/models/final.onnx", "posestream/models/generator.onnx", "posestream/models/base_gt.onnx",
              "posestream/models/pose_landmarker_full.task", "web_viewer/vendor/three/three.module.js",
              "web_viewer/index.html", "train/recipes/base_gt.toml"):
        assert f in names, f
    assert not any(n.endswith(".pt") for n in names), "checkpoints stay out of the runtime wheel"


def test_wheel_runs_video_and_the_readme_example_without_torch(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py, exe = venv / "bin" / "python", venv / "bin" / "posestream"
    _run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), str(wheel)], cwd=tmp_path,
         timeout=1800)
    r = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0, "the runtime install must not bring torch"

    work = tmp_path / "work"  # outside the checkout
    work.mkdir()
    (work / "clip.mp4").write_bytes((REPO / "assets" / "demo.mp4").read_bytes())
    assert _run([str(exe), "--version"], cwd=work).stdout.startswith("posestream ")
    r = _run([str(py), "-c", "from engines.checkpoint import MODELS_DIR; print(MODELS_DIR)"], cwd=work)
    assert Path(r.stdout.strip()).is_relative_to(venv), r.stdout
    r = _run([str(exe), "video", "clip.mp4", "--out", "out.bvh", "--max-frames", "10", "--no-progress"], cwd=work)
    assert "wrote out.bvh: 10 frames (10 with a person" in r.stdout, r.stdout
    assert (work / "out.bvh").read_text().startswith("HIERARCHY")

    _run([str(py), "-c", readme_example()], cwd=work, timeout=600)
    assert (work / "clip.bvh").is_file()
