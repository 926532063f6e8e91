"""Camera math in the Human3.6M convention (3d-pose-baseline's `cameras.py`).

World points are millimetres. R is the world-to-camera rotation and T the camera centre in
world coordinates, so X_cam = R (X_world - T). Camera space: x right, y down, z forward.
Projection applies radial (k1, k2, k3) and tangential (p1, p2) distortion exactly as
`project_point_radial` does, and returns pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """One calibrated camera. Shapes: R (3,3), T (3,) mm, f (2,) px, c (2,) px, k (3,), p (2,);
    size (width, height) in pixels."""

    R: np.ndarray
    T: np.ndarray
    f: np.ndarray
    c: np.ndarray
    k: np.ndarray
    p: np.ndarray
    size: tuple[int, int]

    @staticmethod
    def pinhole(width: int, height: int, fov_deg: float = 60.0) -> "Camera":
        """An undistorted camera at the world origin looking down +z, with the given
        horizontal field of view (default 60 deg, a typical webcam)."""
        f = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2.0)
        return Camera(R=np.eye(3), T=np.zeros(3), f=np.array([f, f]),
                      c=np.array([width / 2.0, height / 2.0]), k=np.zeros(3), p=np.zeros(2),
                      size=(int(width), int(height)))

    @property
    def K(self) -> np.ndarray:
        """3x3 intrinsic matrix."""
        return np.array([[self.f[0], 0, self.c[0]], [0, self.f[1], self.c[1]], [0, 0, 1.0]])


def world_to_camera(x_world: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(..., 3) world mm -> (..., 3) camera mm."""
    return (np.asarray(x_world) - T) @ np.asarray(R).T


def camera_to_world(x_cam: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(..., 3) camera mm -> (..., 3) world mm (inverse of world_to_camera)."""
    return np.asarray(x_cam) @ np.asarray(R) + T


def distort(xy: np.ndarray, k: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply H36M radial/tangential distortion to normalised coordinates (..., 2)."""
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * y + p[1] * x
    xd = x * (radial + tan) + p[1] * r2
    yd = y * (radial + tan) + p[0] * r2
    return np.stack([xd, yd], axis=-1)


def project_camera(x_cam: np.ndarray, f: np.ndarray, c: np.ndarray,
                   k: np.ndarray | None = None, p: np.ndarray | None = None) -> np.ndarray:
    """(..., 3) camera-space mm -> (..., 2) pixels, with optional distortion."""
    x_cam = np.asarray(x_cam, dtype=np.float64)
    xy = x_cam[..., :2] / x_cam[..., 2:3]
    if k is not None and p is not None:
        xy = distort(xy, np.asarray(k, np.float64), np.asarray(p, np.float64))
    return xy * np.asarray(f) + np.asarray(c)


def project(x_world: np.ndarray, cam: Camera, distortion: bool = True) -> np.ndarray:
    """(..., 3) world mm -> (..., 2) pixels through `cam`."""
    x_cam = world_to_camera(x_world, cam.R, cam.T)
    if distortion:
        return project_camera(x_cam, cam.f, cam.c, cam.k, cam.p)
    return project_camera(x_cam, cam.f, cam.c)


def unproject(uv: np.ndarray, depth: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Pinhole back-projection, no distortion: pixels (..., 2) and depth z (...) mm ->
    camera-space (..., 3) mm."""
    xy = (np.asarray(uv, np.float64) - c) / f
    z = np.asarray(depth, np.float64)[..., None]
    return np.concatenate([xy * z, z], axis=-1)


def solve_root_translation(joints_rel: np.ndarray, uv: np.ndarray, f: np.ndarray, c: np.ndarray,
                           weights: np.ndarray | None = None) -> np.ndarray:
    """Global translation t (3,) mm so that the pinhole projection of joints_rel + t best
    matches uv (17, 2) px in least squares (the linear DLT form of weak-to-full perspective
    used by VideoPose3D-style trajectory recovery).

    For each joint: f_x (X_i + t_x) - (u_i - c_x)(Z_i + t_z) = 0, same for y: linear in t.
    """
    X = np.asarray(joints_rel, np.float64)
    u = (np.asarray(uv, np.float64) - c)
    n = X.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    A = np.zeros((2 * n, 3))
    b = np.zeros(2 * n)
    A[0::2, 0] = f[0]
    A[0::2, 2] = -u[:, 0]
    b[0::2] = u[:, 0] * X[:, 2] - f[0] * X[:, 0]
    A[1::2, 1] = f[1]
    A[1::2, 2] = -u[:, 1]
    b[1::2] = u[:, 1] * X[:, 2] - f[1] * X[:, 1]
    sw = np.sqrt(np.repeat(w, 2))
    t, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
    return t
