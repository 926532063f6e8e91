"""Input normalisation shared by every lifter: camera-agnostic 2D features.

2D joints in pixels are turned into normalised camera coordinates ((u - c) / f), centred on
the pelvis and divided by their RMS spread, so the same model serves Human3.6M cameras,
webcams and renders. The pelvis position (normalised coordinates) and log of the spread are
appended, which keeps the perspective cue (where in the view, how large) the centring removes.
Feature layout (LIFT_INPUT_DIM = 17*2 + 3 = 37):
    [0:34]  root-centred, scale-normalised joints, (17, 2) flattened
    [34:36] pelvis in normalised camera coordinates
    [36]    log(spread)
"""
from __future__ import annotations

import numpy as np

from engines.skeleton import FLIP_PERMUTATION, NUM_JOINTS, ROOT

LIFT_INPUT_DIM = NUM_JOINTS * 2 + 3
# Per-frame image cues a temporal model may take besides the 2D (features_2d_cues): name -> width.
CUE_WIDTHS = {"world_mm": NUM_JOINTS, "coarse_mm": NUM_JOINTS, "fbi_prob": 14 * 3}
CUE_FRAME_DIM = LIFT_INPUT_DIM + sum(CUE_WIDTHS.values())
CUE_FRAME_INPUT = "engines.normalize.features_2d_cues"


def features_2d(uv: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    """uv: (..., 17, 2) pixels; f, c: (2,) or broadcastable (..., 2) pixels.
    Returns (..., 37) float32 features (layout in the module docstring)."""
    uv = np.asarray(uv, np.float64)
    assert uv.shape[-2:] == (NUM_JOINTS, 2), uv.shape
    f = np.asarray(f, np.float64)[..., None, :]
    c = np.asarray(c, np.float64)[..., None, :]
    xy = (uv - c) / f
    root = xy[..., ROOT, :]
    rel = xy - root[..., None, :]
    spread = np.sqrt(np.mean(np.sum(rel**2, axis=-1), axis=-1))
    spread = np.maximum(spread, 1e-6)
    rel = rel / spread[..., None, None]
    out = np.concatenate([rel.reshape(*rel.shape[:-2], NUM_JOINTS * 2), root, np.log(spread)[..., None]], axis=-1)
    return out.astype(np.float32)


def mirror_map(perm, signs) -> tuple[np.ndarray, np.ndarray]:
    """Index/sign pair of a mirror over a flattened (len(perm), len(signs)) block: item i takes
    item perm[i]'s values, coordinate k multiplied by signs[k]. Returns index int64 and sign
    float32, both of length len(perm) * len(signs)."""
    perm, signs = np.asarray(perm), np.asarray(signs, np.float32)
    index = (len(signs) * perm[:, None] + np.arange(len(signs))[None]).ravel().astype(np.int64)
    return index, np.tile(signs, len(perm))


def features_flip() -> tuple[np.ndarray, np.ndarray]:
    """The horizontal mirror (about the principal point) in feature space:
    features_2d(mirrored uv)[..., i] == sign[i] * features_2d(uv)[..., index[i]].
    Returns index (37,) int64 and sign (37,) float32. Left/right joints swap, x coordinates
    (joints and pelvis) change sign; the spread is unchanged."""
    index, sign = mirror_map(FLIP_PERMUTATION, (-1.0, 1.0))
    tail = 2 * NUM_JOINTS + np.arange(3)            # pelvis x, pelvis y, log spread
    return (np.concatenate([index, tail]).astype(np.int64),
            np.concatenate([sign, np.array([-1.0, 1.0, 1.0], np.float32)]))


def features_2d_cues(uv: np.ndarray, f: np.ndarray, c: np.ndarray, world_mm: np.ndarray | None = None,
                     coarse_mm: np.ndarray | None = None, fbi_prob: np.ndarray | None = None) -> np.ndarray:
    """features_2d plus per-frame image cues, (..., CUE_FRAME_DIM) float32; a cue not given is
    zeros (one layout for every combination, so models with and without a cue share a stage):
      world_mm  (..., 17, 3) MediaPipe's world landmarks as our joints, mm
                (engines.landmarks.world_landmarks_to_joints_mm): their pelvis-relative depth, m;
      coarse_mm (..., 17, 3) the Final generator's coarse 3D, mm: its root-relative depth, m;
      fbi_prob  (..., 14, 3) the generator's forward/backward/parallel probabilities."""
    base = features_2d(uv, f, c)
    lead = base.shape[:-1]

    def depth(x: np.ndarray | None) -> np.ndarray:
        if x is None:
            return np.zeros(lead + (NUM_JOINTS,), np.float32)
        x = np.asarray(x, np.float64)
        return ((x[..., 2] - x[..., ROOT:ROOT + 1, 2]) / 1000.0).astype(np.float32)

    fbi = np.zeros(lead + (CUE_WIDTHS["fbi_prob"],), np.float32) if fbi_prob is None else \
        np.asarray(fbi_prob, np.float32).reshape(lead + (-1,))
    return np.concatenate([base, depth(world_mm), depth(coarse_mm), fbi], -1)
