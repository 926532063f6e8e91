"""MediaPipe Pose (BlazePose, 33 landmarks) -> our 17 Human3.6M joints.

Direct correspondences (MediaPipe index -> our joint; MediaPipe "left" is the person's left,
as is ours):
    r_knee 26, r_ankle 28, l_knee 25, l_ankle 27,
    l_shoulder 11, l_elbow 13, l_wrist 15, r_shoulder 12, r_elbow 14, r_wrist 16.
Derived and corrected joints, in terms of H = MediaPipe's mid-hips (23, 24), S = its
mid-shoulders (11, 12), the torso axis a = S - H, E = mid-ears (7, 8) and N = the nose (0).
Constants were fitted on Human3.6M ground truth where it has the quantity (h36m_train.npz,
every 10th row), else on the 4 annotated real H36M frames and confirmed on the MPI-INF-3DHP
frames (scripts/check_landmark_mapping.py --sweep; table in docs/2d_stage.md):
    pelvis    = H + HIP_SHIFT * a, HIP_SHIFT = 0.15. MediaPipe's hip landmarks sit lower
                than H36M's hip joints: the H36M pelvis (= its mid-hip point exactly, 0.0004
                mm on ground truth) was 0.14-0.19 torso lengths towards the shoulders on all
                4 H36M frames and 0.12-0.17 on the 2 upright 3DHP frames.
    l/r_hip   = pelvis + HIP_WIDEN * (hip_mp - H), HIP_WIDEN = 1.4: H36M's hip joints are
                wider apart (ratio 1.38-1.41 on the 3 upright H36M frames).
    thorax    = H + THORAX_FRACTION * a, THORAX_FRACTION = 1.125: the H36M thorax is above
                the shoulder joints; 1.126 is the mean projection on ground truth (std 0.04),
                and 1.1-1.15 was also the best range on the real frames (1.0 = mid-shoulders
                gave 14.9 px mean error, 1.1 gave 6.6 px).
    spine     = pelvis + SPINE_FRACTION * (thorax - pelvis), SPINE_FRACTION = 0.483: mean
                projection of the H36M spine onto pelvis -> thorax on ground truth (std 0.018).
    neck_nose = N + NECK_NOSE_BLEND * (S - N), NECK_NOSE_BLEND = 0.2: H36M's "neck/nose" joint
                lies a little below the nose, towards the neck (best of 0..0.65 on the frames).
    head      = E + HEAD_UP * (E - S), HEAD_UP = 0.3: H36M's head joint is above the ears,
                towards the top of the skull; extending the shoulders -> ears direction is
                stable under head turns (eye/nose landmarks move with the face direction).
Confidence of a derived joint is the minimum visibility of the landmarks it uses.

The same rule maps MediaPipe's 33 world landmarks (metres, origin between the hips, x
right, y down, z forward = away from the camera, like our camera frame) to (17, 3) mm.

Mirror images: MP_FLIP_PERMUTATION swaps each "left" landmark with its "right" twin (the
person's sides trade places in a horizontally mirrored picture), and `mirror_landmarks_px` /
`mirror_world_landmarks` map landmarks found on a mirrored image to the image's own (both are
involutions: applied twice they give back what they were given).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.skeleton import JOINT_INDEX, NUM_JOINTS

NUM_MP_LANDMARKS = 33
# MediaPipe Pose's landmark names, in its order ("left" is the person's left).
MP_LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
MP_NOSE, MP_L_EAR, MP_R_EAR = 0, 7, 8


def _other_side(name: str) -> str:
    """A landmark name with its side swapped ("left_knee" -> "right_knee"; "nose" stays)."""
    if "left" in name:
        return name.replace("left", "right")
    return name.replace("right", "left")


# Landmark index permutation that swaps left and right (a horizontal mirror): landmark k of an
# image is landmark MP_FLIP_PERMUTATION[k] of its mirror image.
MP_FLIP_PERMUTATION: tuple[int, ...] = tuple(MP_LANDMARK_NAMES.index(_other_side(n)) for n in MP_LANDMARK_NAMES)
MP_L_SHOULDER, MP_R_SHOULDER, MP_L_HIP, MP_R_HIP = 11, 12, 23, 24

# Our joint -> MediaPipe landmark, for joints that exist in both skeletons.
DIRECT: dict[str, int] = {
    "r_knee": 26, "r_ankle": 28,
    "l_knee": 25, "l_ankle": 27,
    "l_shoulder": 11, "l_elbow": 13, "l_wrist": 15,
    "r_shoulder": 12, "r_elbow": 14, "r_wrist": 16,
}


@dataclass(frozen=True)
class MappingParams:
    """The four constants of the derived joints (module docstring)."""

    hip_shift: float = 0.15
    hip_widen: float = 1.4
    thorax_fraction: float = 1.125
    spine_fraction: float = 0.483
    neck_nose_blend: float = 0.2
    head_up: float = 0.3


DEFAULT_PARAMS = MappingParams()


def _derive(lm: np.ndarray, p: MappingParams = DEFAULT_PARAMS) -> np.ndarray:
    """(..., 33, D) landmarks -> (..., 17, D) joints (same units)."""
    out = np.empty(lm.shape[:-2] + (NUM_JOINTS, lm.shape[-1]), dtype=np.float64)
    for name, k in DIRECT.items():
        out[..., JOINT_INDEX[name], :] = lm[..., k, :]
    hips = 0.5 * (lm[..., MP_L_HIP, :] + lm[..., MP_R_HIP, :])
    shoulders = 0.5 * (lm[..., MP_L_SHOULDER, :] + lm[..., MP_R_SHOULDER, :])
    ears = 0.5 * (lm[..., MP_L_EAR, :] + lm[..., MP_R_EAR, :])
    nose = lm[..., MP_NOSE, :]
    axis = shoulders - hips
    pelvis = hips + p.hip_shift * axis
    thorax = hips + p.thorax_fraction * axis
    for name, k in (("l_hip", MP_L_HIP), ("r_hip", MP_R_HIP)):
        out[..., JOINT_INDEX[name], :] = pelvis + p.hip_widen * (lm[..., k, :] - hips)
    out[..., JOINT_INDEX["pelvis"], :] = pelvis
    out[..., JOINT_INDEX["spine"], :] = pelvis + p.spine_fraction * (thorax - pelvis)
    out[..., JOINT_INDEX["thorax"], :] = thorax
    out[..., JOINT_INDEX["neck_nose"], :] = nose + p.neck_nose_blend * (shoulders - nose)
    out[..., JOINT_INDEX["head"], :] = ears + p.head_up * (ears - shoulders)
    return out


# Landmarks each joint depends on (for its confidence).
_SOURCES: dict[str, tuple[int, ...]] = {
    **{n: (k,) for n, k in DIRECT.items()},
    "pelvis": (MP_L_HIP, MP_R_HIP, MP_L_SHOULDER, MP_R_SHOULDER),
    "l_hip": (MP_L_HIP, MP_R_HIP, MP_L_SHOULDER, MP_R_SHOULDER),
    "r_hip": (MP_L_HIP, MP_R_HIP, MP_L_SHOULDER, MP_R_SHOULDER),
    "spine": (MP_L_HIP, MP_R_HIP, MP_L_SHOULDER, MP_R_SHOULDER),
    "thorax": (MP_L_HIP, MP_R_HIP, MP_L_SHOULDER, MP_R_SHOULDER),
    "neck_nose": (MP_NOSE, MP_L_SHOULDER, MP_R_SHOULDER),
    "head": (MP_L_EAR, MP_R_EAR, MP_L_SHOULDER, MP_R_SHOULDER),
}


def _check(lm: np.ndarray, dims: int) -> np.ndarray:
    lm = np.asarray(lm, np.float64)
    if lm.shape[-2:] != (NUM_MP_LANDMARKS, dims):
        raise ValueError(f"expected (..., {NUM_MP_LANDMARKS}, {dims}) landmarks, got {lm.shape}")
    return lm


def landmarks_to_joints_2d(uv_px: np.ndarray, visibility: np.ndarray | None = None,
                           params: MappingParams = DEFAULT_PARAMS) -> tuple[np.ndarray, np.ndarray]:
    """uv_px: (..., 33, 2) image pixels; visibility: (..., 33) in [0, 1] (None = all 1).
    Returns joints (..., 17, 2) float32 px and confidence (..., 17) float32."""
    uv = _check(uv_px, 2)
    vis = np.ones(uv.shape[:-1]) if visibility is None else np.asarray(visibility, np.float64)
    assert vis.shape == uv.shape[:-1], (vis.shape, uv.shape)
    conf = np.empty(vis.shape[:-1] + (NUM_JOINTS,), np.float64)
    for name, src in _SOURCES.items():
        conf[..., JOINT_INDEX[name]] = vis[..., list(src)].min(axis=-1)
    return _derive(uv, params).astype(np.float32), np.clip(conf, 0.0, 1.0).astype(np.float32)


def world_landmarks_to_joints_mm(world_m: np.ndarray, params: MappingParams = DEFAULT_PARAMS) -> np.ndarray:
    """(..., 33, 3) MediaPipe world landmarks in metres -> (..., 17, 3) float32 mm, with the
    same derivation as the 2D joints (the pelvis is then HIP_SHIFT torso lengths above
MediaPipe's hip-centred origin)."""
    return (_derive(_check(world_m, 3), params) * 1000.0).astype(np.float32)


def mirror_landmarks_px(uv_px: np.ndarray, width: int) -> np.ndarray:
    """(..., 33, 2) landmarks in pixels of an image `width` px wide, found on its horizontal
    mirror (image[:, ::-1]) -> the same landmarks on the image itself: u -> width - 1 - u
    (pixel-centre convention) and left/right swapped. Float64."""
    out = _check(uv_px, 2)[..., list(MP_FLIP_PERMUTATION), :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def mirror_world_landmarks(world: np.ndarray) -> np.ndarray:
    """(..., 33, 3) world landmarks (x right; any unit) found on a mirrored image -> those of
    the image itself: x negated and left/right swapped. Float64."""
    out = _check(world, 3)[..., list(MP_FLIP_PERMUTATION), :].copy()
    out[..., 0] = -out[..., 0]
    return out
