"""A minimal BVH reader for the tests: parses the hierarchy and motion and runs forward
kinematics (channels Z X Y rotation, as realtime.writers writes them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.writers import matrix_from_euler_zxy


def read_bvh(path: str | Path) -> tuple[list[str], list[int], np.ndarray, np.ndarray, float]:
    """Returns joint names, parents (-1 root), offsets (J, 3), motion (F, C), frame time."""
    tokens = Path(path).read_text().split()
    names, parents, offsets, stack = [], [], [], []
    i = tokens.index("HIERARCHY") + 1
    while tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif t == "End":  # End Site: skip its block
            i = tokens.index("}", i) + 1
        elif t == "{":
            stack.append(len(names) - 1)
            i += 1
        elif t == "}":
            stack.pop()
            i += 1
        elif t == "OFFSET":
            offsets.append([float(v) for v in tokens[i + 1:i + 4]])
            i += 4
        elif t == "CHANNELS":
            i += 2 + int(tokens[i + 1])
        else:
            raise ValueError(f"unexpected token {t!r}")
    n_frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    vals = np.array([float(v) for v in tokens[i + 6:]])
    motion = vals.reshape(n_frames, -1)
    return names, parents, np.array(offsets), motion, frame_time


def bvh_positions(parents: list[int], offsets: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Forward kinematics: (F, J, 3) positions, BVH frame and units. Joints are in file
    (depth-first) order, root channels = 3 position + 3 rotation, others 3 rotations."""
    F, J = motion.shape[0], len(parents)
    out = np.zeros((F, J, 3))
    for f in range(F):
        G = [None] * J
        row = motion[f]
        k = 3
        for j in range(J):
            R = matrix_from_euler_zxy(*row[k:k + 3])
            k += 3
            if parents[j] < 0:
                G[j] = R
                out[f, j] = row[0:3]
            else:
                p = parents[j]
                out[f, j] = out[f, p] + G[p] @ offsets[j]
                G[j] = G[p] @ R
    return out
