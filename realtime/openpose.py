"""OpenPose-style per-frame JSON, for tools that read OpenPose's `--write_json` output.

The output NAME.openpose is a folder with one file per source frame,
NAME_000000000000_keypoints.json (OpenPose's naming: the 12-digit frame number), each

    {"version": 1.3,
     "people": [{"person_id": [track_id],
                 "pose_keypoints_2d": [x, y, c] * 25,     BODY_25 layout, image pixels
                 "pose_keypoints_3d": [x, y, z, c] * 25,  BODY_25 layout, our 3D (see below)
                 "face_keypoints_2d": [], "hand_left_keypoints_2d": [], ... (empty)}],
     "posestream": {"layout": "BODY_25", "index": i, "timestamp_s": t, "units_3d": "..."}}

`people` is empty on frames without a person. A keypoint that is not available is (0, 0, 0)
(and (0, 0, 0, 0) in 3D), as OpenPose writes undetected keypoints.

Layout: BODY_25 (OpenPose's default model): 0 Nose, 1 Neck, 2 RShoulder, 3 RElbow, 4 RWrist,
5 LShoulder, 6 LElbow, 7 LWrist, 8 MidHip, 9 RHip, 10 RKnee, 11 RAnkle, 12 LHip, 13 LKnee,
14 LAnkle, 15 REye, 16 LEye, 17 REar, 18 LEar, 19 LBigToe, 20 LSmallToe, 21 LHeel,
22 RBigToe, 23 RSmallToe, 24 RHeel.
2D: from MediaPipe's 33 landmarks when the frame has them (Neck = mid-shoulders, MidHip =
mid-hips, big toe = MediaPipe's foot index; MediaPipe has no small toe, so those two stay
0); confidence = MediaPipe's visibility. Without landmarks, from our 17 joints where they
correspond (Nose = neck_nose, Neck = thorax, MidHip = pelvis, limbs), the rest 0.
3D: our lifted joints in camera space (joints_mm + translation_mm: millimetres, x right,
y down, z forward), at the BODY_25 points that correspond to one of our 17 joints (the same
correspondence as the 2D fallback), confidence = the joint's; the face and foot points are 0.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engines.landmarks import MP_LANDMARK_NAMES
from engines.skeleton import JOINT_INDEX
from realtime.journal import Clip

BODY_25: tuple[str, ...] = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel",
    "RBigToe", "RSmallToe", "RHeel",
)
_MP = {n: i for i, n in enumerate(MP_LANDMARK_NAMES)}
# BODY_25 point -> MediaPipe landmarks averaged for it.
FROM_LANDMARKS: dict[str, tuple[int, ...]] = {
    "Nose": (_MP["nose"],), "Neck": (_MP["left_shoulder"], _MP["right_shoulder"]),
    "RShoulder": (_MP["right_shoulder"],), "RElbow": (_MP["right_elbow"],), "RWrist": (_MP["right_wrist"],),
    "LShoulder": (_MP["left_shoulder"],), "LElbow": (_MP["left_elbow"],), "LWrist": (_MP["left_wrist"],),
    "MidHip": (_MP["left_hip"], _MP["right_hip"]), "RHip": (_MP["right_hip"],), "RKnee": (_MP["right_knee"],),
    "RAnkle": (_MP["right_ankle"],), "LHip": (_MP["left_hip"],), "LKnee": (_MP["left_knee"],),
    "LAnkle": (_MP["left_ankle"],), "REye": (_MP["right_eye"],), "LEye": (_MP["left_eye"],),
    "REar": (_MP["right_ear"],), "LEar": (_MP["left_ear"],), "LBigToe": (_MP["left_foot_index"],),
    "LHeel": (_MP["left_heel"],), "RBigToe": (_MP["right_foot_index"],), "RHeel": (_MP["right_heel"],),
}
# BODY_25 point -> our joint, where one corresponds.
FROM_JOINTS: dict[str, int] = {
    "Nose": JOINT_INDEX["neck_nose"], "Neck": JOINT_INDEX["thorax"], "MidHip": JOINT_INDEX["pelvis"],
    "RShoulder": JOINT_INDEX["r_shoulder"], "RElbow": JOINT_INDEX["r_elbow"], "RWrist": JOINT_INDEX["r_wrist"],
    "LShoulder": JOINT_INDEX["l_shoulder"], "LElbow": JOINT_INDEX["l_elbow"], "LWrist": JOINT_INDEX["l_wrist"],
    "RHip": JOINT_INDEX["r_hip"], "RKnee": JOINT_INDEX["r_knee"], "RAnkle": JOINT_INDEX["r_ankle"],
    "LHip": JOINT_INDEX["l_hip"], "LKnee": JOINT_INDEX["l_knee"], "LAnkle": JOINT_INDEX["l_ankle"],
}
UNITS_3D = "pose_keypoints_3d: camera-space millimetres (x right, y down, z forward), posestream's lifted joints"


def _clean(a: np.ndarray) -> np.ndarray:
    """NaN (not available) -> 0, OpenPose's value for an undetected keypoint."""
    return np.where(np.isfinite(a), a, 0.0)


def body25_2d(landmarks_px: np.ndarray | None, visibility: np.ndarray | None, joints_2d_px: np.ndarray,
              confidence: np.ndarray) -> np.ndarray:
    """(25, 3) x, y, confidence in the BODY_25 layout for one frame (module docstring)."""
    out = np.zeros((len(BODY_25), 3))
    use_lm = landmarks_px is not None and visibility is not None and np.isfinite(landmarks_px).all()
    for k, name in enumerate(BODY_25):
        if use_lm:
            idx = FROM_LANDMARKS.get(name)
            if idx:
                out[k, :2] = np.mean([landmarks_px[i] for i in idx], axis=0)
                out[k, 2] = min(float(visibility[i]) for i in idx)
        elif name in FROM_JOINTS:
            j = FROM_JOINTS[name]
            out[k, :2], out[k, 2] = joints_2d_px[j], confidence[j]
    return _clean(out)


def body25_3d(camera_mm: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """(25, 4) x, y, z (camera-space mm), confidence in the BODY_25 layout for one frame."""
    out = np.zeros((len(BODY_25), 4))
    for k, name in enumerate(BODY_25):
        if name in FROM_JOINTS:
            j = FROM_JOINTS[name]
            out[k, :3], out[k, 3] = camera_mm[j], confidence[j]
    return _clean(out)


def _flat(a: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in a.reshape(-1)]


def render_openpose(clip: Clip, path: Path, options: Mapping[str, Any]) -> None:
    """Write the folder `path` with one OpenPose-style JSON file per frame of `clip`."""
    path.mkdir()
    name = path.stem
    has_lm = clip.has_landmarks
    for g in clip.groups():  # a frame's records: one per person found (or one empty record)
        people = []
        for i in g:
            if not clip.valid[i]:
                continue
            lm = has_lm[i]
            kp2 = body25_2d(clip.landmarks_px[i] if lm else None, clip.landmarks_visibility[i] if lm else None,
                            clip.joints_2d_px[i], clip.confidence[i])
            kp3 = body25_3d(clip.joints_mm[i].astype(np.float64) + clip.translation_mm[i], clip.confidence[i])
            people.append({"person_id": [int(clip.track_id[i])], "pose_keypoints_2d": _flat(kp2),
                           "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
                           "pose_keypoints_3d": _flat(kp3), "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
                           "hand_right_keypoints_3d": []})
        i = int(g[0])
        doc = {"version": 1.3, "people": people,
               "posestream": {"layout": "BODY_25", "index": int(clip.index[i]),
                              "timestamp_s": round(float(clip.timestamps_s[i]), 6), "units_3d": UNITS_3D}}
        (path / f"{name}_{int(clip.index[i]):012d}_keypoints.json").write_text(json.dumps(doc))
