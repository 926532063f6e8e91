"""Package list for setuptools (everything else is in pyproject.toml).

Every package under the top-level folders is found, subpackages included, so a new one
cannot be left out of the wheel. The shipped runtime models live in the checkout's models/
folder; the wheel carries them as the package data of `posestream.models`, where
engines.checkpoint.MODELS_DIR finds them in an install (docs/install.md).
"""
from setuptools import find_packages, setup

TOP_LEVEL = ("posestream", "engines", "realtime", "train", "web_viewer")

setup(
    packages=find_packages(include=[p for top in TOP_LEVEL for p in (top, f"{top}.*")]) + ["posestream.models"],
    package_dir={"posestream.models": "models"},
)
