"""A minimal, independent BVH reader for the tests: parses the hierarchy (End Sites too) and the
motion, and runs forward kinematics (channels Z X Y rotation, as realtime.bvh writes them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.rig import matrix_from_euler_zxy


def _parse(text: str) -> tuple[list[str], list[int], np.ndarray, dict[int, np.ndarray], list[list[str]], list[str]]:
    """names, parents, offsets, end sites {joint: offset}, channels per joint, motion tokens."""
    tokens = text.split()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    ends: dict[int, np.ndarray] = {}
    stack: list[int] = []
    i = tokens.index("HIERARCHY") + 1
    while tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif t == "End":  # End Site { OFFSET x y z }
            assert tokens[i + 1:i + 4] == ["Site", "{", "OFFSET"] and tokens[i + 7] == "}", tokens[i:i + 8]
            ends[len(names) - 1] = np.array([float(v) for v in tokens[i + 4:i + 7]])
            i += 8
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
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2:i + 2 + n])
            i += 2 + n
        else:
            raise ValueError(f"unexpected token {t!r}")
    return names, parents, np.array(offsets), ends, channels, tokens[i:]


def read_bvh(path: str | Path) -> tuple[list[str], list[int], np.ndarray, np.ndarray, float]:
    """Returns joint names, parents (-1 root), offsets (J, 3), motion (F, C), frame time."""
    names, parents, offsets, _, _, rest = _parse(Path(path).read_text())
    assert rest[0] == "MOTION" and rest[1] == "Frames:" and rest[3:5] == ["Frame", "Time:"], rest[:6]
    n_frames = int(rest[2])
    frame_time = float(rest[5])
    vals = np.array([float(v) for v in rest[6:]])
    motion = vals.reshape(n_frames, -1)
    return names, parents, offsets, motion, frame_time


def read_bvh_details(path: str | Path) -> tuple[dict[int, np.ndarray], list[list[str]]]:
    """The End Site offsets {joint index: offset} and each joint's channel names."""
    _, _, _, ends, channels, _ = _parse(Path(path).read_text())
    return ends, channels


def _fk(parents: list[int], offsets: np.ndarray, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    F, J = motion.shape[0], len(parents)
    pos = np.zeros((F, J, 3))
    G = np.zeros((F, J, 3, 3))
    for f in range(F):
        row = motion[f]
        k = 3
        for j in range(J):
            R = matrix_from_euler_zxy(*row[k:k + 3])
            k += 3
            if parents[j] < 0:
                G[f, j] = R
                pos[f, j] = row[0:3]
            else:
                p = parents[j]
                pos[f, j] = pos[f, p] + G[f, p] @ offsets[j]
                G[f, j] = G[f, p] @ R
    return pos, G


def bvh_positions(parents: list[int], offsets: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Forward kinematics: (F, J, 3) positions, BVH frame and units. Joints are in file
    (depth-first) order, root channels = 3 position + 3 rotation, others 3 rotations."""
    return _fk(parents, offsets, motion)[0]


def bvh_end_positions(parents: list[int], offsets: np.ndarray, motion: np.ndarray,
                      ends: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Forward kinematics of the End Sites: {joint index: (F, 3)}."""
    pos, G = _fk(parents, offsets, motion)
    return {j: pos[:, j] + G[:, j] @ off for j, off in ends.items()}
