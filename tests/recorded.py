"""A recorded clip for the motion-capture tests: tests/data/demo_poses.npz holds every frame of
`posestream video assets/demo.mp4` with the default model (103 frames, 30 fps, one person),
including MediaPipe's 33 world landmarks and their visibility (float32). Recreated with
PoseEstimator(default_app_model()).process over VideoFileSource("assets/demo.mp4"),
saving the PoseFrame fields under their own names."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.frames import PoseFrame

RECORDED = Path(__file__).parent / "data" / "demo_poses.npz"


def recorded_poses() -> tuple[list[PoseFrame], float]:
    """The recorded PoseFrames and the clip's frame rate."""
    d = np.load(RECORDED)
    size = tuple(int(v) for v in d["image_size"])
    poses = [PoseFrame(int(d["index"][i]), float(d["timestamps_s"][i]), bool(d["valid"][i]), d["joints_mm"][i],
                       d["translation_mm"][i], np.zeros((17, 2), np.float32), d["confidence"][i], size,
                       landmarks_world_mm=d["landmarks_world_mm"][i],
                       landmarks_visibility=d["landmarks_visibility"][i])
             for i in range(len(d["index"]))]
    return poses, float(d["fps"])
