"""Evaluation metrics. All inputs (N, 17, 3) in millimetres, root-relative or not."""
from __future__ import annotations

import numpy as np


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Protocol 1: per-frame mean per-joint position error after aligning the roots. (N,) mm."""
    assert pred.shape == gt.shape and pred.shape[-2:] == (17, 3), (pred.shape, gt.shape)
    p = pred - pred[:, :1]
    g = gt - gt[:, :1]
    return np.linalg.norm(p - g, axis=-1).mean(axis=-1)


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity transform (rotation, uniform scale, translation) of each pred onto gt. (N,17,3)."""
    mu_p = pred.mean(axis=1, keepdims=True)
    mu_g = gt.mean(axis=1, keepdims=True)
    p0 = pred - mu_p
    g0 = gt - mu_g
    norm_p = np.sqrt((p0**2).sum(axis=(1, 2), keepdims=True))
    norm_g = np.sqrt((g0**2).sum(axis=(1, 2), keepdims=True))
    p0 = p0 / np.maximum(norm_p, 1e-9)
    g0 = g0 / np.maximum(norm_g, 1e-9)
    H = np.matmul(np.transpose(p0, (0, 2, 1)), g0)
    U, s, Vt = np.linalg.svd(H)
    V = np.transpose(Vt, (0, 2, 1))
    R = np.matmul(V, np.transpose(U, (0, 2, 1)))
    # Fix reflections so R is a proper rotation.
    sign = np.sign(np.linalg.det(R))
    V[:, :, -1] *= sign[:, None]
    s[:, -1] *= sign
    R = np.matmul(V, np.transpose(U, (0, 2, 1)))
    tr = s.sum(axis=1)[:, None, None]
    scale = tr * norm_g / np.maximum(norm_p, 1e-9)
    return scale * np.matmul(pred - mu_p, np.transpose(R, (0, 2, 1))) + mu_g


def p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Protocol 2: MPJPE after Procrustes alignment. (N,) mm."""
    aligned = procrustes_align(pred.astype(np.float64), gt.astype(np.float64))
    return np.linalg.norm(aligned - gt, axis=-1).mean(axis=-1)
