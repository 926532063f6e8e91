"""Checkpoints: one file holds the weights, the model config, the training config and the
contract metadata (joint order, FBI rule, input normalisation) so an artifact is never
separated from what it means. Loading needs torch; the app reads exported ONNX instead.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from engines.skeleton import FBI_RULE_VERSION, FBI_THRESHOLD, JOINT_NAMES



def _models_dir() -> Path:
    """Where the shipped models are: $POSESTREAM_MODELS when set; in an installed wheel the
    package data `posestream/models` (next to this package in site-packages); in a checkout,
    or an editable install of one, the repository's models/ folder."""
    if os.environ.get("POSESTREAM_MODELS"):
        return Path(os.environ["POSESTREAM_MODELS"]).expanduser().resolve()
    root = Path(__file__).resolve().parents[1]
    installed = root / "posestream" / "models"
    return installed if installed.is_dir() else root / "models"


MODELS_DIR = _models_dir()
INPUT_NORMALIZATION = "engines.normalize.features_2d v1: (uv-c)/f, pelvis-centred, RMS-scaled, +pelvis xy, +log spread"


# The app's default model: the paper's Final model (generator + refiner, MediaPipe 2D) when
# shipped, else the 2D-only Base lifter trained on projected ground truth.
FINAL_MODEL, BASE_MODEL = "final", "base_gt"


def shipped(name: str) -> bool:
    """Is models/NAME.{pt,onnx} present?"""
    return any((MODELS_DIR / f"{name}{s}").is_file() for s in (".pt", ".onnx"))


def default_app_model() -> str:
    """The single-frame default (still images): `final` if shipped, else `base_gt`."""
    return FINAL_MODEL if shipped(FINAL_MODEL) else BASE_MODEL


# The temporal lifters on MediaPipe-like 2D: centred for files (`posestream video`), causal for
# live use (`posestream webcam`, `video --realtime`). Until shipped, the single-frame default.
FILE_MODEL, LIVE_MODEL = "temporal_mp", "temporal_mp_causal"


def default_file_model() -> str:
    return FILE_MODEL if shipped(FILE_MODEL) else default_app_model()


def default_live_model() -> str:
    return LIVE_MODEL if shipped(LIVE_MODEL) else default_app_model()


def cache_root() -> Path:
    """Where derived artifacts live: $POSESTREAM_CACHE or ~/.cache/posestream."""
    env = os.environ.get("POSESTREAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "posestream"


def load_checkpoint(checkpoint: str | Path) -> dict:
    """torch.load a posestream checkpoint (a dict with `model` and `kind`), or UserError."""
    import torch

    from engines.errors import UserError

    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"cannot load checkpoint {checkpoint}: {exc}") from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise UserError(f"{checkpoint} is not a posestream checkpoint (no 'model' entry)")
    return ck


def contract_metadata() -> dict[str, Any]:
    """What every exported artifact records about the data contract."""
    return {
        "joint_names": list(JOINT_NAMES),
        "fbi_rule_version": FBI_RULE_VERSION,
        "fbi_threshold": FBI_THRESHOLD,
        "input_normalization": INPUT_NORMALIZATION,
        "units": "millimetres, camera space, root-relative (pelvis = 0)",
    }


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model_path(name_or_path: str, suffix: str = ".pt") -> Path:
    """A shipped model name (e.g. 'base_gt') or a path to a file."""
    from engines.errors import UserError

    p = Path(name_or_path)
    if p.suffix and p.is_file():
        return p
    cand = MODELS_DIR / f"{name_or_path}{suffix}"
    if cand.is_file():
        return cand
    shipped = sorted(q.stem for q in MODELS_DIR.glob(f"*{suffix}"))
    raise UserError(f"unknown model {name_or_path!r}: not a file, and not one of the shipped models "
                    f"({', '.join(shipped) or 'none found in ' + str(MODELS_DIR)})")
