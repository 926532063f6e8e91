"""Synthetic poses and fake pipeline stages shared by the realtime tests."""
from __future__ import annotations

import numpy as np

from engines.skeleton import NUM_JOINTS


def standing_pose() -> np.ndarray:
    """A plausible standing pose (17, 3) mm, camera axes (y down), pelvis at the origin,
    arms stretched out sideways (a T-pose seen from the front)."""
    j = np.zeros((NUM_JOINTS, 3))
    j[1], j[4] = [-130, 0, 0], [130, 0, 0]                 # hips
    j[2], j[5] = [-130, 450, 0], [130, 450, 0]             # knees
    j[3], j[6] = [-130, 880, 0], [130, 880, 0]             # ankles
    j[7], j[8], j[9], j[10] = [0, -230, 0], [0, -480, 0], [0, -590, -30], [0, -700, 0]
    j[11], j[12], j[13] = [150, -450, 0], [420, -450, 0], [670, -450, 0]
    j[14], j[15], j[16] = [-150, -450, 0], [-420, -450, 0], [-670, -450, 0]
    return j
