"""A small synthetic pose clip for the viewer tests: a figure walking a circle, arms swinging."""
from __future__ import annotations

import numpy as np

from realtime.frames import PoseFrame
from tests.pose_fixtures import standing_pose


def synthetic_clip(n: int = 90, fps: float = 30.0) -> list[PoseFrame]:
    """`n` PoseFrames at `fps`: root-relative joints (mm), translation on a 1 m circle 3.5 m away,
    a 2D projection (f = 600 px, 640x480), FBI one-hot from the skeleton rule; every 30th frame
    (from 25 on) is an invalid "no person" frame."""
    from engines.skeleton import FBI_BONES, fbi_states

    base = standing_pose().astype(np.float64)
    out = []
    for i in range(n):
        t = i / fps
        j = base.copy()
        swing = 0.6 * np.sin(2 * np.pi * t)
        for shoulder, elbow, wrist, sign in ((11, 12, 13, 1), (14, 15, 16, -1)):
            for k, r in ((elbow, 270.0), (wrist, 520.0)):
                j[k] = j[shoulder] + [sign * r * np.cos(swing), r * 0.3, sign * r * np.sin(swing)]
        j -= j[0]
        trans = np.array([1000 * np.sin(0.5 * t), 0.0, 3500 + 1000 * np.cos(0.5 * t)])
        cam = j + trans
        uv = 600 * cam[:, :2] / cam[:, 2:3] + [320, 240]
        if i % 30 == 25:
            out.append(PoseFrame.empty(i, t, (640, 480), {"detect": 9.0}))
            continue
        fbi = np.eye(3, dtype=np.float32)[fbi_states(cam)]
        assert fbi.shape == (len(FBI_BONES), 3)
        out.append(PoseFrame(i, t, True, j.astype(np.float32), trans.astype(np.float32), uv.astype(np.float32),
                             np.full(17, 0.9, np.float32), (640, 480), fbi, {"detect": 9.0, "lift": 0.4, "total": 10.0}))
    return out
