"""Minimal BVH reader and forward kinematics for the Bandai-Namco Research Motion Dataset 2
(CC BY-NC 4.0, © 2022 Bandai Namco Research Inc.; see ../shared/data/bandai/dataset-2/).

Those files give every joint 6 channels (position + rotation, Euler order Z X Y,
degrees) and bones along each joint's local x axis, so their zero-rotation "rest" pose is not
a body pose. Rather than map joint frames onto MakeHuman's, we run FK to joint positions
and retarget those (train.synth.pose), which is independent of the rest-pose convention.

Units: centimetres, +y up. `to_world` converts to the Human3.6M world convention
(millimetres, +z up) with a proper rotation (x, y, z) -> (x, -z, y).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.skeleton import JOINT_INDEX as JI, NUM_JOINTS


@dataclass(frozen=True)
class Bvh:
    """names (J,); parents (J,) (-1 root, parents first); offsets (J,3); channels: per joint
    a tuple of channel names; motion (F, C) float64; frame_time s."""

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    motion: np.ndarray
    frame_time: float

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def parse_bvh(path: str | Path) -> Bvh:
    """Parse a BVH file (HIERARCHY + MOTION). End Sites are dropped."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except OSError as exc:
        raise UserError(f"cannot read BVH file {path}: {exc}") from None
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    stack: list[int] = []
    i = 0
    pending = -1  # index of the joint whose "{" we expect; -2 = End Site
    end_depth = 0
    try:
        if tokens[0] != "HIERARCHY":
            raise ValueError("no HIERARCHY")
        i = 1
        while tokens[i] != "MOTION":
            tok = tokens[i]
            if tok in ("ROOT", "JOINT"):
                names.append(tokens[i + 1])
                parents.append(stack[-1] if stack else -1)
                offsets.append([0.0, 0.0, 0.0])
                channels.append(())
                pending = len(names) - 1
                i += 2
            elif tok == "End":
                pending = -2
                i += 2
            elif tok == "{":
                if pending == -2 or end_depth:
                    end_depth += 1
                else:
                    stack.append(pending)
                i += 1
            elif tok == "}":
                if end_depth:
                    end_depth -= 1
                else:
                    stack.pop()
                i += 1
            elif tok == "OFFSET":
                if not end_depth:
                    offsets[stack[-1]] = [float(x) for x in tokens[i + 1:i + 4]]
                i += 4
            elif tok == "CHANNELS":
                n = int(tokens[i + 1])
                channels[stack[-1]] = tuple(tokens[i + 2:i + 2 + n])
                i += 2 + n
            else:
                raise ValueError(f"unexpected token {tok!r}")
        nframes = int(tokens[i + 2])
        ftime = float(tokens[i + 5])
        nch = sum(len(c) for c in channels)
        vals = np.asarray(tokens[i + 6:i + 6 + nframes * nch], np.float64)
        if vals.size != nframes * nch:
            raise ValueError(f"expected {nframes}x{nch} motion values, got {vals.size}")
    except (ValueError, IndexError) as exc:
        raise UserError(f"{path} is not a valid BVH file: {exc}") from None
    return Bvh(tuple(names), np.asarray(parents, np.int32), np.asarray(offsets), tuple(channels),
               vals.reshape(nframes, nch), ftime)


def _axis_rot(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    if axis == "X":
        m = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "Y":
        m = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        m = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.moveaxis(np.asarray(m), (0, 1), (-2, -1))


def forward_kinematics(bvh: Bvh, frames: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Global joint positions (F,J,3) (file units) and rotations (F,J,3,3).

    Local transform = translation (position channels if present, else OFFSET) then the
    rotation channels composed in the order listed (intrinsic)."""
    mot = bvh.motion if frames is None else bvh.motion[frames]
    F, J = mot.shape[0], len(bvh.names)
    pos = np.zeros((F, J, 3))
    rot = np.zeros((F, J, 3, 3))
    col = 0
    for j in range(J):
        ch = bvh.channels[j]
        t = np.repeat(bvh.offsets[j][None], F, 0)
        R = np.repeat(np.eye(3)[None], F, 0)
        for k, name in enumerate(ch):
            v = mot[:, col + k]
            if name.endswith("position"):
                t[:, "XYZ".index(name[0])] = v
            else:
                R = R @ _axis_rot(name[0], v)
        col += len(ch)
        p = bvh.parents[j]
        if p < 0:
            pos[:, j], rot[:, j] = t, R
        else:
            pos[:, j] = pos[:, p] + np.einsum("fij,fj->fi", rot[:, p], t)
            rot[:, j] = rot[:, p] @ R
    return pos, rot


BVH_TO_WORLD = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # y-up -> z-up, det +1
CM_TO_MM = 10.0


def to_world(x: np.ndarray) -> np.ndarray:
    """(..., 3) BVH centimetres, y up -> (..., 3) mm, z up."""
    return CM_TO_MM * np.asarray(x) @ BVH_TO_WORLD.T


# Our joints from the Bandai-Namco skeleton; pelvis = mid-hips (as in H36M), neck_nose and
# head are built from the Head joint (the file's head joint is at the top of the neck).
BANDAI_DIRECT = {
    "r_hip": "UpperLeg_R", "r_knee": "LowerLeg_R", "r_ankle": "Foot_R",
    "l_hip": "UpperLeg_L", "l_knee": "LowerLeg_L", "l_ankle": "Foot_L",
    "spine": "Chest", "thorax": "Neck",
    "l_shoulder": "UpperArm_L", "l_elbow": "LowerArm_L", "l_wrist": "Hand_L",
    "r_shoulder": "UpperArm_R", "r_elbow": "LowerArm_R", "r_wrist": "Hand_R",
}


def bandai_targets(bvh: Bvh, frames: np.ndarray | None = None) -> np.ndarray:
    """(F,17,3) target joints in world mm (z up) for the pose solver. Only bone *directions*
    of these are used for mocap bodies (lengths come from the sampled body)."""
    pos, _ = forward_kinematics(bvh, frames)
    w = to_world(pos)
    idx = {n: i for i, n in enumerate(bvh.names)}
    missing = [n for n in list(BANDAI_DIRECT.values()) + ["Head"] if n not in idx]
    if missing:
        raise UserError(f"BVH skeleton lacks joints {missing}; expected the Bandai-Namco naming")
    out = np.zeros((w.shape[0], NUM_JOINTS, 3))
    for ours, theirs in BANDAI_DIRECT.items():
        out[:, JI[ours]] = w[:, idx[theirs]]
    out[:, JI["pelvis"]] = 0.5 * (out[:, JI["l_hip"]] + out[:, JI["r_hip"]])
    head_base = w[:, idx["Head"]]
    up = head_base - out[:, JI["thorax"]]
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    left = out[:, JI["l_shoulder"]] - out[:, JI["r_shoulder"]]
    fwd = np.cross(left, up)  # right-handed: left x up = forward
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    out[:, JI["head"]] = head_base + 120.0 * up
    out[:, JI["neck_nose"]] = head_base + 10.0 * up + 80.0 * fwd
    return out


def list_bvh(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"BVH directory not found: {d}")
    files = sorted(d.rglob("*.bvh"))
    if not files:
        raise UserError(f"no .bvh files under {d}")
    return files
