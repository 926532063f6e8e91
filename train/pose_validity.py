"""Anthropometric validity of 3D poses (what the adversarial fine-tuning should improve).

    bone_asymmetry_mm(j)     (N,) mean |left - right| length over the 4 limb-bone pairs
                             (upper arm, forearm, thigh, shin), mm
    angle_violations(j)      (N,) bool: any joint-angle limit broken (rules below)

Joint-angle limits (our choice, deliberately loose so real motion never trips them; the
ground truth's own rate is reported next to every model's):
  * fold: the interior angle at a knee or elbow (between the bones to its two neighbours)
    is below FOLD_MIN_DEG; soft tissue stops real limbs at about 30-40 degrees.
  * knee hyperextension: the knee is bent by more than HYPER_MIN_DEG and the shin bends
    forwards: its bend direction lies within 60 degrees of the thigh's front (the body's
    forward direction, left-hip axis x up, made perpendicular to the thigh; not judged when
    the thigh itself points within 30 degrees of forwards, as when sitting). A real knee
    only bends backwards.
Joints: (N, 17, 3) mm in any right-handed frame (camera coordinates are).
"""
from __future__ import annotations

import numpy as np

from engines.skeleton import JOINT_NAMES

_J = {n: i for i, n in enumerate(JOINT_NAMES)}
LIMB_PAIRS = (  # (left bone, right bone), bone = (parent, child)
    (("l_shoulder", "l_elbow"), ("r_shoulder", "r_elbow")),
    (("l_elbow", "l_wrist"), ("r_elbow", "r_wrist")),
    (("l_hip", "l_knee"), ("r_hip", "r_knee")),
    (("l_knee", "l_ankle"), ("r_knee", "r_ankle")),
)
HINGES = (("l_hip", "l_knee", "l_ankle"), ("r_hip", "r_knee", "r_ankle"),
          ("l_shoulder", "l_elbow", "l_wrist"), ("r_shoulder", "r_elbow", "r_wrist"))
FOLD_MIN_DEG = 25.0
HYPER_MIN_DEG = 20.0


def _len(j: np.ndarray, a: str, b: str) -> np.ndarray:
    return np.linalg.norm(j[:, _J[b]] - j[:, _J[a]], axis=-1)


def bone_asymmetry_mm(joints: np.ndarray) -> np.ndarray:
    assert joints.ndim == 3 and joints.shape[1:] == (17, 3), joints.shape
    return np.mean([np.abs(_len(joints, *l) - _len(joints, *r)) for l, r in LIMB_PAIRS], axis=0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def angle_violations(joints: np.ndarray) -> np.ndarray:
    """(N, 17, 3) -> (N,) bool, any rule of the module docstring broken."""
    assert joints.ndim == 3 and joints.shape[1:] == (17, 3), joints.shape
    bad = np.zeros(len(joints), bool)
    for a, m, b in HINGES:
        u = _unit(joints[:, _J[a]] - joints[:, _J[m]])
        w = _unit(joints[:, _J[b]] - joints[:, _J[m]])
        interior = np.degrees(np.arccos(np.clip(np.sum(u * w, -1), -1, 1)))
        bad |= interior < FOLD_MIN_DEG
    left = _unit(joints[:, _J["l_hip"]] - joints[:, _J["r_hip"]])
    up = _unit(joints[:, _J["thorax"]] - joints[:, _J["pelvis"]])
    fwd = _unit(np.cross(left, up))
    for hip, knee, ankle in HINGES[:2]:
        thigh = _unit(joints[:, _J[knee]] - joints[:, _J[hip]])
        shin = _unit(joints[:, _J[ankle]] - joints[:, _J[knee]])
        bend = np.degrees(np.arccos(np.clip(np.sum(thigh * shin, -1), -1, 1)))
        perp = _unit(shin - np.sum(shin * thigh, -1, keepdims=True) * thigh)
        front = fwd - np.sum(fwd * thigh, -1, keepdims=True) * thigh  # thigh's front, across it
        judged = np.linalg.norm(front, axis=-1) > 0.5                  # thigh not pointing forwards
        bad |= judged & (bend > HYPER_MIN_DEG) & (np.sum(perp * _unit(front), -1) > 0.5)
    return bad


def validity_report(joints: np.ndarray) -> dict[str, float]:
    return {"bone_asymmetry_mm": float(bone_asymmetry_mm(joints).mean()),
            "angle_violation_pct": float(100 * angle_violations(joints).mean())}
