"""The 17-joint Human3.6M skeleton every stage shares, and the FBI (forward/backward/
parallel) bone-state rule.

Coordinates: camera space, millimetres, x right, y down, z forward (away from the camera),
as in Human3.6M's camera frame. "Forward" in FBI means *towards the camera*.

FBI rule (the paper leaves it open; this module owns it): for bone a->b,
    s = (z_b - z_a) / |b - a|          (the sine of the bone's angle out of the image plane)
    FORWARD  if s < -FBI_THRESHOLD     (child end nearer the camera)
    BACKWARD if s >  FBI_THRESHOLD
    PARALLEL otherwise.
FBI_THRESHOLD = sin(15 deg) = 0.259: chosen from the class balance on Human3.6M train
(S1,S5,S6,S7,S8, all four cameras; `python -m train.fbi_balance` prints the table kept in
README.md), where it gives the most even split (highest entropy) of the three states among
the candidates sin(10), sin(15), sin(20), sin(30) degrees.
"""
from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
    "spine", "thorax", "neck_nose", "head",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {n: i for i, n in enumerate(JOINT_NAMES)}
ROOT = 0

# Parent of each joint (-1 for the root): the Human3.6M kinematic tree.
PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
# All 16 parent->child bones of the tree.
BONES: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS) if p >= 0)

LEFT_JOINTS: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
RIGHT_JOINTS: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
# Index permutation that swaps left and right (for flip augmentation).
FLIP_PERMUTATION: tuple[int, ...] = tuple(
    {**{l: r for l, r in zip(LEFT_JOINTS, RIGHT_JOINTS)}, **{r: l for l, r in zip(LEFT_JOINTS, RIGHT_JOINTS)}}.get(i, i)
    for i in range(NUM_JOINTS)
)

# The 14 FBI bones: the 8 limb segments, the 4 spine/neck/head segments and the two
# clavicles (thorax->shoulder). The two pelvis->hip bones are left out: they are short
# (~130 mm), so their out-of-plane angle is noisy, and the clavicles already carry the
# torso's turn towards or away from the camera.
FBI_BONES: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 3),        # right thigh, right shin
    (4, 5), (5, 6),        # left thigh, left shin
    (0, 7), (7, 8),        # lower spine, upper spine
    (8, 9), (9, 10),       # neck, head
    (8, 11), (11, 12), (12, 13),  # left clavicle, upper arm, forearm
    (8, 14), (14, 15), (15, 16),  # right clavicle, upper arm, forearm
)
NUM_FBI_BONES = len(FBI_BONES)
# FBI bone index permutation under a horizontal mirror (left and right bones swap; a mirror
# keeps z, so the states themselves do not change).
FBI_FLIP_PERMUTATION: tuple[int, ...] = tuple(
    FBI_BONES.index((FLIP_PERMUTATION[a], FLIP_PERMUTATION[b])) for a, b in FBI_BONES)
FBI_BONE_NAMES: tuple[str, ...] = tuple(f"{JOINT_NAMES[a]}->{JOINT_NAMES[b]}" for a, b in FBI_BONES)

FORWARD, BACKWARD, PARALLEL = 0, 1, 2
FBI_STATE_NAMES: tuple[str, ...] = ("forward", "backward", "parallel")
FBI_THRESHOLD = float(np.sin(np.deg2rad(15.0)))
FBI_RULE_VERSION = "fbi-v1-sin15"


def fbi_slopes(joints_cam: np.ndarray) -> np.ndarray:
    """Out-of-plane sine s = dz/|bone| of each FBI bone.

    joints_cam: (..., 17, 3) camera-space positions (any unit). Returns (..., 14) in [-1, 1].
    """
    assert joints_cam.shape[-2:] == (NUM_JOINTS, 3), joints_cam.shape
    a = np.asarray([b[0] for b in FBI_BONES])
    b = np.asarray([b[1] for b in FBI_BONES])
    vec = joints_cam[..., b, :] - joints_cam[..., a, :]
    length = np.linalg.norm(vec, axis=-1)
    return vec[..., 2] / np.maximum(length, 1e-9)


def fbi_states(joints_cam: np.ndarray, threshold: float = FBI_THRESHOLD) -> np.ndarray:
    """FBI state of each bone: (..., 17, 3) camera-space joints -> (..., 14) int8 in
    {FORWARD=0, BACKWARD=1, PARALLEL=2}."""
    s = fbi_slopes(joints_cam)
    out = np.full(s.shape, PARALLEL, dtype=np.int8)
    out[s < -threshold] = FORWARD
    out[s > threshold] = BACKWARD
    return out


def root_relative(joints: np.ndarray) -> np.ndarray:
    """Subtract the pelvis: (..., 17, D) -> (..., 17, D)."""
    assert joints.shape[-2] == NUM_JOINTS, joints.shape
    return joints - joints[..., ROOT : ROOT + 1, :]


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Lengths of the 16 tree bones: (..., 17, 3) -> (..., 16)."""
    p = np.asarray([b[0] for b in BONES])
    c = np.asarray([b[1] for b in BONES])
    return np.linalg.norm(joints[..., c, :] - joints[..., p, :], axis=-1)


def flip_horizontal(joints: np.ndarray) -> np.ndarray:
    """Mirror x and swap left/right joints: (..., 17, D) with x at index 0."""
    out = joints[..., list(FLIP_PERMUTATION), :].copy()
    out[..., 0] = -out[..., 0]
    return out
