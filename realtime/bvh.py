"""BVH motion files for animators, from a clip's joints (and MediaPipe's landmarks).

`bvh_document(...)` returns the whole file. What it holds (realtime.rig for the skeleton):
    HIERARCHY  `ROOT Hips` with 6 channels (Xposition Yposition Zposition Zrotation Xrotation
               Yrotation), every other joint 3 (Zrotation Xrotation Yrotation), degrees.
               Names: Mixamo-style (Hips, Spine, Spine1, Spine2, Neck, Head; LeftShoulder,
               LeftArm, LeftForeArm, LeftHand; LeftUpLeg, LeftLeg, LeftFoot, LeftToeBase,
               LeftHeel; Right...), which Blender's and MotionBuilder's humanoid mappers and
               common retargeting tools recognise; `names="h36m"` writes our 17 joints under
               their own names instead (pelvis, r_hip, ...). End sites: the head's top, the
               hand (MediaPipe's index and pinky knuckles), the toe tip and the heel.
               OFFSETs are a T-pose (facing +Z, arms along X, Y up) with fixed bone lengths:
               the clip's medians, never frame 1; what the clip never shows (no landmarks)
               comes from a default adult skeleton.
    MOTION     one frame per source frame on the source's time base: Frame Time is the median
               interval of the timestamps, and a frame the source dropped (a timestamp gap)
               repeats the previous pose, so the motion keeps real time. Frames without a
               person repeat the previous pose (the rest pose before the first person).
Units: centimetres by default (`units="m"`: metres).
Placement (`root`): "floor" (default) levels the camera (realtime.rig.level_rotation: the
person stands upright), puts the floor at Y = 0 (the 5th percentile over the clip of the
lowest foot point, so a few outlier frames do not lift everybody else) and the first
frame's hips above the origin; "contact" puts each frame's lowest foot point on Y = 0 (no
jumps, no floor drift); "camera" keeps the camera-space trajectory (camera at the origin
looking along -Z, Y up; not levelled).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engines.errors import UserError
from realtime.rig import (H36M_RIG, HUMANOID_BVH, Rest, Rig, default_rest, euler_zxy_from_matrix, fit_rest, forward,
                          ground_height, level_rotation, local_rotations, rig_points, rotate_points, solve)

FLOOR_PERCENTILE = 5.0
UNITS = {"cm": 100.0, "m": 1.0}
RIGS = {"mixamo": HUMANOID_BVH, "h36m": H36M_RIG}
ROOTS = ("floor", "contact", "camera")


@dataclass(frozen=True)
class BvhOptions:
    """units: "cm" or "m"; names: "mixamo" (humanoid) or "h36m" (our 17 joints); root:
    "floor", "contact" or "camera" (module docstring)."""

    units: str = "cm"
    names: str = "mixamo"
    root: str = "floor"

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.units, UNITS, "units"), (self.names, RIGS, "names"),
                                     (self.root, ROOTS, "root")):
            if value not in allowed:
                raise UserError(f"BVH {what} must be one of {', '.join(allowed)}, got {value!r}")

    @staticmethod
    def from_mapping(options: Mapping[str, Any]) -> "BvhOptions":
        """From a run's stored output options (missing keys: defaults)."""
        d = BvhOptions()
        return BvhOptions(str(options.get("units", d.units)), str(options.get("names", d.names)),
                          str(options.get("root", d.root)))


def add_bvh_arguments(group: argparse._ActionsContainer) -> None:
    """The .bvh output's options: --units, --names, --bvh-root."""
    group.add_argument("--units", choices=list(UNITS), default="cm", help=".bvh length unit (default cm)")
    group.add_argument("--names", choices=list(RIGS), default="mixamo",
                       help=".bvh skeleton: mixamo = a humanoid with Mixamo-style names that retargeting tools "
                            "map (Hips, Spine, LeftArm, ...); h36m = our 17 joints and names (default mixamo)")
    group.add_argument("--bvh-root", choices=list(ROOTS), default="floor",
                       help=".bvh placement: floor = feet on the floor (y = 0) over the clip, the first frame "
                            "above the origin; contact = the lowest foot on the floor in every frame; "
                            "camera = the camera-space trajectory (default floor)")


def bvh_options(args: argparse.Namespace) -> dict[str, Any]:
    """The .bvh options given on the command line (JSON values)."""
    d = BvhOptions()
    return asdict(BvhOptions(getattr(args, "units", d.units), getattr(args, "names", d.names),
                             getattr(args, "bvh_root", d.root)))


def render_bvh(clip: Any, path: Path, options: Mapping[str, Any]) -> None:
    """Write the .bvh of a whole clip to `path`. `clip` has the arrays of
    realtime.journal.Clip: joints_mm (T, 17, 3) root-relative, translation_mm (T, 3),
    valid, timestamps_s, fps, landmarks_world_mm (T, 33, 3), landmarks_visibility (T, 33)."""
    J = np.asarray(clip.joints_mm, np.float64)
    tr = np.asarray(clip.translation_mm, np.float64)
    cam = J - J[:, :1] + np.where(np.isfinite(tr).all(axis=1, keepdims=True), tr, 0.0)[:, None, :]
    fps = float(clip.fps) if math.isfinite(float(clip.fps)) and float(clip.fps) > 0 else 30.0
    text = bvh_document(cam, clip.valid, clip.timestamps_s, fps, getattr(clip, "landmarks_world_mm", None),
                        getattr(clip, "landmarks_visibility", None), BvhOptions.from_mapping(options))
    Path(path).write_text(text)


def frame_slots(timestamps_s: np.ndarray, fps: float) -> tuple[float, np.ndarray]:
    """(frame time s, (T,) output frame of each input frame): the median positive interval
    of the timestamps, and each frame's timestamp rounded onto that grid. Timestamps that
    are not increasing, or gaps that would more than double the clip, fall back to one
    output frame per input frame at 1/fps."""
    t = np.asarray(timestamps_s, np.float64)
    default = 1.0 / fps if fps and np.isfinite(fps) and fps > 0 else 1.0 / 30.0
    d = np.diff(t)
    if len(t) < 2 or not np.isfinite(t).all() or (d <= 0).any():
        return default, np.arange(len(t))
    dt = float(np.median(d))
    slots = np.round((t - t[0]) / dt).astype(np.int64)
    if (np.diff(slots) <= 0).any() or slots[-1] + 1 > 2 * len(t):
        return default, np.arange(len(t))
    return dt, slots


def bvh_document(joints_mm: np.ndarray, valid: np.ndarray, timestamps_s: np.ndarray, fps: float,
                 landmarks_world_mm: np.ndarray | None = None, visibility: np.ndarray | None = None,
                 options: BvhOptions = BvhOptions()) -> str:
    """The BVH file (module docstring) of a clip.

    joints_mm: (T, 17, 3) camera axes, millimetres: camera space (joints + translation), or
    root-relative when the trajectory is unknown. valid: (T,) whether a person was found.
    timestamps_s: (T,) seconds. landmarks_world_mm / visibility: (T, 33, 3) / (T, 33)
    MediaPipe's world landmarks (NaN rows where unknown), or None."""
    rig = RIGS[options.names]
    scale = UNITS[options.units]
    J = np.asarray(joints_mm, np.float64)
    T = len(J)
    ok = np.asarray(valid, bool) & np.isfinite(J).all(axis=(1, 2))
    lm = None if landmarks_world_mm is None else np.asarray(landmarks_world_mm, np.float64)[ok]
    vis = None if visibility is None else np.asarray(visibility, np.float64)[ok]
    pts = rig_points(J[ok], lm, vis)
    if options.root != "camera" and ok.any():
        pts = rotate_points(pts, level_rotation(pts))
    rest = fit_rest(rig, pts, default_rest(rig)) if ok.any() else default_rest(rig)
    G = solve(rig, pts, rest)
    root = pts["pelvis"].copy()
    pos, ends = forward(rig, rest, G, root)
    ground = ground_height(rig, pos, ends)
    rest_pos, rest_ends = forward(rig, rest, np.eye(3)[None, None].repeat(len(rig.bones), 1), np.zeros((1, 3)))
    rest_root = np.array([0.0, -float(ground_height(rig, rest_pos, rest_ends)[0]), 0.0])
    if ok.any() and options.root != "camera":
        root[:, [0, 2]] -= root[0, [0, 2]]
        root[:, 1] -= np.percentile(ground, FLOOR_PERCENTILE) if options.root == "floor" else ground
    elif ok.any():
        rest_root = root[0].copy()
    euler = euler_zxy_from_matrix(local_rotations(rig, G))  # (F_ok, B, 3)
    order = rig.depth_first()
    rows_ok = np.concatenate([root * scale, euler[:, order].reshape(len(root), 3 * len(order))], axis=1)
    rest_row = np.concatenate([rest_root * scale, np.zeros(3 * len(order))])

    frame_time, slots = frame_slots(timestamps_s, fps)
    n_out = int(slots[-1]) + 1 if T else 0
    src = np.full(n_out, -1)
    src[slots[ok]] = np.arange(int(ok.sum()))
    for i in range(1, n_out):  # gaps and frames without a person hold the previous pose
        if src[i] < 0:
            src[i] = src[i - 1]
    motion = np.where((src >= 0)[:, None], rows_ok[np.maximum(src, 0)] if len(rows_ok) else rest_row, rest_row)
    lines = [bvh_hierarchy(rig, rest, scale), "MOTION", f"Frames: {n_out}", f"Frame Time: {frame_time:.8f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in motion]
    return "\n".join(lines) + "\n"


def bvh_hierarchy(rig: Rig, rest: Rest, scale: float) -> str:
    """The HIERARCHY section: the rest offsets times `scale`, channels as in the module docstring."""
    lines = ["HIERARCHY"]

    def emit(b: int, depth: int) -> None:
        ind = "  " * depth
        o = rest.offset[b] * scale
        root = rig.parents[b] < 0
        lines.append(f"{ind}{'ROOT' if root else 'JOINT'} {rig.bones[b].name}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}")
        ch = "6 Xposition Yposition Zposition" if root else "3"
        lines.append(f"{ind}  CHANNELS {ch} Zrotation Xrotation Yrotation")
        kids = rig.children(b)
        for c in kids:
            emit(c, depth + 1)
        if not kids:
            e = rest.end[b] * scale
            assert np.isfinite(e).all(), f"leaf {rig.bones[b].name} has no end site"
            lines.extend([f"{ind}  End Site", f"{ind}  {{", f"{ind}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}",
                          f"{ind}  }}"])
        lines.append(f"{ind}}}")

    emit(0, 0)
    return "\n".join(lines)
