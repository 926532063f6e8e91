"""Metric root trajectory: place the lifted, root-relative skeleton in camera space.

The lifter predicts the pose's shape in millimetres relative to the pelvis; where the person
stands is lost by its scale-free 2D input. Given the camera intrinsics, the global
translation t (3,) that makes the pinhole projection of (joints_rel + t) match the 2D joints
is a linear least-squares problem (`engines.camera.solve_root_translation`), weighted by the
detector's per-joint confidence. With a metric pose this gives metric depth: a person twice
as far appears half as large. The result lets a viewer show the person walking through the
scene instead of standing on the spot.

Intrinsics, in order of preference:
    --calib FILE  JSON {"fx", "fy", "cx", "cy"} in pixels, optionally "width", "height" (the
                  image size the calibration was made at; rescaled if frames differ);
    --fov DEG     horizontal field of view, pinhole with the principal point at the centre;
    default       `Camera.pinhole(w, h)`, 60 degrees horizontal (a typical webcam).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from engines.camera import Camera, solve_root_translation
from engines.errors import UserError
from engines.skeleton import NUM_JOINTS, ROOT
from realtime.frames import PoseFrame

DEFAULT_FOV_DEG = 60.0
# Joints below this confidence do not vote for the translation (MediaPipe visibility of
# an occluded or out-of-frame joint is low, and its 2D position is a guess).
MIN_CONFIDENCE = 0.3
# A solution closer than this (mm) is rejected: a person cannot stand 10 cm from the lens,
# and a near-zero or negative depth means the 2D/3D poses did not agree.
MIN_DEPTH_MM = 300.0


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for images of `size` (width, height). f, c: (2,)."""

    f: np.ndarray
    c: np.ndarray
    size: tuple[int, int]

    @staticmethod
    def from_fov(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> "Intrinsics":
        if not 1.0 <= fov_deg <= 179.0:
            raise UserError(f"--fov must be between 1 and 179 degrees, got {fov_deg}")
        cam = Camera.pinhole(width, height, fov_deg)
        return Intrinsics(np.asarray(cam.f, np.float64), np.asarray(cam.c, np.float64), (int(width), int(height)))

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (a webcam delivering a resized stream)."""
        if (width, height) == self.size:
            return self
        s = np.array([width / self.size[0], height / self.size[1]])
        return Intrinsics(self.f * s, self.c * s, (int(width), int(height)))

    @property
    def fov_deg(self) -> float:
        """Horizontal field of view in degrees."""
        return float(np.rad2deg(2.0 * math.atan(0.5 * self.size[0] / self.f[0])))


def load_calibration(path: str | Path, frame_size: tuple[int, int] | None = None) -> Intrinsics:
    """Read a calibration JSON {"fx", "fy", "cx", "cy"[, "width", "height"]} (pixels).
    Without width/height the calibration is taken to be for `frame_size` (or for a frame
    twice the principal point when that is unknown too)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"calibration file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read calibration {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"calibration {path} must be a JSON object with fx, fy, cx, cy")
    try:
        fx, fy, cx, cy = (float(data[k]) for k in ("fx", "fy", "cx", "cy"))
    except KeyError as exc:
        raise UserError(f"calibration {path} lacks {exc.args[0]!r} (needs fx, fy, cx, cy in pixels)") from None
    except (TypeError, ValueError):
        raise UserError(f"calibration {path}: fx, fy, cx, cy must be numbers") from None
    if not (fx > 0 and fy > 0 and math.isfinite(fx + fy + cx + cy)):
        raise UserError(f"calibration {path}: fx and fy must be positive and all values finite")
    if "width" in data and "height" in data:
        size = (int(data["width"]), int(data["height"]))
    elif frame_size is not None:
        size = (int(frame_size[0]), int(frame_size[1]))
    else:
        size = (int(round(2 * cx)), int(round(2 * cy)))
    return Intrinsics(np.array([fx, fy]), np.array([cx, cy]), size)


def intrinsics_for(frame_size: tuple[int, int], fov_deg: float | None = None,
                   calib: str | Path | None = None) -> Intrinsics:
    """The intrinsics for frames of `frame_size` (width, height) from the CLI options
    (precedence: calibration file, then --fov, then the 60 degree default)."""
    w, h = int(frame_size[0]), int(frame_size[1])
    if calib is not None:
        return load_calibration(calib, (w, h)).scaled_to(w, h)
    return Intrinsics.from_fov(w, h, DEFAULT_FOV_DEG if fov_deg is None else float(fov_deg))


def estimate_translation(joints_rel_mm: np.ndarray, uv_px: np.ndarray, intr: Intrinsics,
                         confidence: np.ndarray | None = None,
                         min_confidence: float = MIN_CONFIDENCE) -> np.ndarray | None:
    """Camera-space translation (3,) mm of the root-relative pose (17, 3) mm that best
    explains the 2D joints (17, 2) px, or None if too few joints are confident and finite
    (fewer than 4) or the solution lies behind / at the camera."""
    rel = np.asarray(joints_rel_mm, np.float64)
    uv = np.asarray(uv_px, np.float64)
    assert rel.shape == (NUM_JOINTS, 3) and uv.shape == (NUM_JOINTS, 2), (rel.shape, uv.shape)
    w = np.ones(NUM_JOINTS) if confidence is None else np.asarray(confidence, np.float64).copy()
    ok = np.isfinite(rel).all(axis=1) & np.isfinite(uv).all(axis=1) & np.isfinite(w) & (w >= min_confidence)
    if ok.sum() < 4:
        return None
    t = solve_root_translation(rel[ok], uv[ok], intr.f, intr.c, w[ok])
    if not np.isfinite(t).all() or t[2] < MIN_DEPTH_MM:
        return None
    return t


class TrajectoryStage:
    """PoseFrame -> PoseFrame with `translation_mm` set to the camera-space pelvis position;
    `joints_mm` stay root-relative (the convention of every sink and file format: camera
    space = joints_mm + translation_mm). Frames whose translation cannot be found get a NaN
    translation (and stay valid: the pose itself is fine).
    Intrinsics are fixed per image size; they are resolved on the first frame of each size,
    so the stage needs no frame size up front."""

    def __init__(self, fov_deg: float | None = None, calib: str | Path | None = None) -> None:
        self.fov_deg = fov_deg
        self.calib = calib
        self._intr: Intrinsics | None = None
        if calib is not None:
            load_calibration(calib)  # fail at start-up, not on the first frame

    def intrinsics(self, frame_size: tuple[int, int]) -> Intrinsics:
        size = (int(frame_size[0]), int(frame_size[1]))
        if self._intr is None or self._intr.size != size:
            self._intr = intrinsics_for(size, self.fov_deg, self.calib)
        return self._intr

    def __call__(self, pf: PoseFrame) -> PoseFrame:
        if not pf.valid:
            return pf
        rel = np.asarray(pf.joints_mm, np.float64)
        rel = rel - rel[ROOT]
        t = estimate_translation(rel, pf.joints_2d_px, self.intrinsics(pf.image_size), pf.confidence)
        trans = np.full(3, np.nan, np.float32) if t is None else t.astype(np.float32)
        return dataclasses.replace(pf, joints_mm=rel.astype(np.float32), translation_mm=trans)
