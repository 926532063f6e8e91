"""Metric root trajectory: place the lifted, root-relative skeleton in camera space.

The lifter predicts the pose's shape in millimetres relative to the pelvis; where the person
stands is lost by its scale-free 2D input. Given the camera intrinsics, the global
translation t (3,) that makes the pinhole projection of (joints_rel + t) match the 2D joints
is a linear least-squares problem (`engines.camera.solve_root_translation`), weighted by the
detector's per-joint confidence. With a metric pose this gives metric depth: a person twice
as far appears half as large. The result lets a viewer show the person walking through the
scene instead of standing on the spot.

Intrinsics, in order of preference:
    --calib FILE  JSON {"fx", "fy", "cx", "cy"} in pixels, optionally "width", "height" (the
                  image size the calibration was made at; rescaled if frames differ);
    --fov DEG     horizontal field of view, pinhole with the principal point at the centre;
    default       `Camera.pinhole(w, h)`, 60 degrees horizontal (a typical webcam).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from engines.camera import Camera, solve_root_translation
from engines.errors import UserError
from engines.skeleton import NUM_JOINTS, ROOT
from realtime.frames import PoseFrame

DEFAULT_FOV_DEG = 60.0
# Joints below this confidence do not vote for the translation (MediaPipe visibility of
# an occluded or out-of-frame joint is low, and its 2D position is a guess).
MIN_CONFIDENCE = 0.3
# A solution closer than this (mm) is rejected: a person cannot stand 10 cm from the lens,
# and a near-zero or negative depth means the 2D/3D poses did not agree.
MIN_DEPTH_MM = 300.0


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for images of `size` (width, height). f, c: (2,)."""

    f: np.ndarray
    c: np.ndarray
    size: tuple[int, int]

    @staticmethod
    def from_fov(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> "Intrinsics":
        if not 1.0 <= fov_deg <= 179.0:
            raise UserError(f"--fov must be between 1 and 179 degrees, got {fov_deg}")
        cam = Camera.pinhole(width, height, fov_deg)
        return Intrinsics(np.asarray(cam.f, np.float64), np.asarray(cam.c, np.float64), (int(width), int(height)))

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (a webcam delivering a resized stream)."""
        if (width, height) == self.size:
            return self
        s = np.array([width / self.size[0], height / self.size[1]])
        return Intrinsics(self.f * s, self.c * s, (int(width), int(height)))

    @property
    def fov_deg(self) -> float:
        """Horizontal field of view in degrees."""
        return float(np.rad2deg(2.0 * math.atan(0.5 * self.size[0] / self.f[0])))


def load_calibration(path: str | Path, frame_size: tuple[int, int] | None = None) -> Intrinsics:
    """Read a calibration JSON {"fx", "fy", "cx", "cy"[, "width", "height"]} (pixels).
    Without width/height the calibration is taken to be for `frame_size` (or for a frame
    twice the principal point when that is unknown too)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"calibration file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read calibration {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"calibration {path} must be a JSON object with fx, fy, cx, cy")
    for key in ("fx", "fy", "cx", "cy"):
        if key not in data:
            raise UserError(f"calibration {path} lacks {key!r} (needs fx, fy, cx, cy in pixels)")
    for key in ("fx", "fy", "cx", "cy", "width", "height"):  # JSON true is no pixel count, nor is "500"
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"calibration {path}: {key!r} must be a number, got {json.dumps(value)}")
    fx, fy, cx, cy = (float(data[k]) for k in ("fx", "fy", "cx", "cy"))
    if not (fx > 0 and fy > 0 and math.isfinite(fx + fy + cx + cy)):
        raise UserError(f"calibration {path}: fx and fy must be positive and all values finite")
    if "width" in data and "height" in data:
        if not all(float(data[k]) >= 1 and float(data[k]) == int(data[k]) for k in ("width", "height")):
            raise UserError(f"calibration {path}: width and height must be whole numbers of pixels >= 1")
        size = (int(data["width"]), int(data["height"]))
    elif frame_size is not None:
        size = (int(frame_size[0]), int(frame_size[1]))
    else:
        size = (int(round(2 * cx)), int(round(2 * cy)))
    return Intrinsics(np.array([fx, fy]), np.array([cx, cy]), size)


_WARNED_OUTSIDE: set[tuple[str, tuple[int, int]]] = set()


def warn_principal_point_outside(intr: Intrinsics, calib: str | Path) -> None:
    """A one-line warning, once per calibration file and image size, when its principal point
    lies outside the image: legitimate for a crop of a larger frame, but more often a
    calibration made for another resolution, which misplaces every person in depth."""
    (cx, cy), (w, h) = intr.c, intr.size
    key = (str(calib), intr.size)
    if 0 <= cx <= w and 0 <= cy <= h or key in _WARNED_OUTSIDE:
        return
    _WARNED_OUTSIDE.add(key)
    logging.getLogger(__name__).warning(
        "calibration %s: principal point (%g, %g) lies outside the %dx%d image (fine for a crop; otherwise "
        "give the calibration's \"width\" and \"height\" so it is rescaled)", calib, cx, cy, w, h)


def intrinsics_for(frame_size: tuple[int, int], fov_deg: float | None = None,
                   calib: str | Path | None = None) -> Intrinsics:
    """The intrinsics for frames of `frame_size` (width, height) from the CLI options
    (precedence: calibration file, then --fov, then the 60 degree default)."""
    w, h = int(frame_size[0]), int(frame_size[1])
    if calib is not None:
        return load_calibration(calib, (w, h)).scaled_to(w, h)
    return Intrinsics.from_fov(w, h, DEFAULT_FOV_DEG if fov_deg is None else float(fov_deg))


def estimate_translation(joints_rel_mm: np.ndarray, uv_px: np.ndarray, intr: Intrinsics,
                         confidence: np.ndarray | None = None,
                         min_confidence: float = MIN_CONFIDENCE) -> np.ndarray | None:
    """Camera-space translation (3,) mm of the root-relative pose (17, 3) mm that best
    explains the 2D joints (17, 2) px, or None if too few joints are confident and finite
    (fewer than 4) or the solution lies behind / at the camera."""
    rel = np.asarray(joints_rel_mm, np.float64)
    uv = np.asarray(uv_px, np.float64)
    assert rel.shape == (NUM_JOINTS, 3) and uv.shape == (NUM_JOINTS, 2), (rel.shape, uv.shape)
    w = np.ones(NUM_JOINTS) if confidence is None else np.asarray(confidence, np.float64).copy()
    ok = np.isfinite(rel).all(axis=1) & np.isfinite(uv).all(axis=1) & np.isfinite(w) & (w >= min_confidence)
    if ok.sum() < 4:
        return None
    t = solve_root_translation(rel[ok], uv[ok], intr.f, intr.c, w[ok])
    if not np.isfinite(t).all() or t[2] < MIN_DEPTH_MM:
        return None
    return t


class TrajectoryStage:
    """PoseFrame -> PoseFrame with `translation_mm` set to the camera-space pelvis position;
    `joints_mm` stay root-relative (the convention of every sink and file format: camera
    space = joints_mm + translation_mm). Frames whose translation cannot be found get a NaN
    translation (and stay valid: the pose itself is fine).
    Intrinsics are fixed per image size; they are resolved on the first frame of each size,
    so the stage needs no frame size up front."""

    def __init__(self, fov_deg: float | None = None, calib: str | Path | None = None) -> None:
        self.fov_deg = fov_deg
        self.calib = calib
        self._intr: Intrinsics | None = None
        if calib is not None:
            load_calibration(calib)  # fail at start-up, not on the first frame

    def intrinsics(self, frame_size: tuple[int, int]) -> Intrinsics:
        size = (int(frame_size[0]), int(frame_size[1]))
        if self._intr is None or self._intr.size != size:
            self._intr = intrinsics_for(size, self.fov_deg, self.calib)
            if self.calib is not None:
                warn_principal_point_outside(self._intr, self.calib)
        return self._intr

    def __call__(self, pf: PoseFrame) -> PoseFrame:
        if not pf.valid:
            return pf
        rel = np.asarray(pf.joints_mm, np.float64)
        rel = rel - rel[ROOT]
        t = estimate_translation(rel, pf.joints_2d_px, self.intrinsics(pf.image_size), pf.confidence)
        trans = np.full(3, np.nan, np.float32) if t is None else t.astype(np.float32)
        return dataclasses.replace(pf, joints_mm=rel.astype(np.float32), translation_mm=trans)


# ---- temporal context: a Kalman filter / fixed-lag smoother over the per-frame solves ------------

@dataclasses.dataclass(frozen=True)
class RootFilterConfig:
    """Settings of `RootTrajectory`.

    accel_mm_s2: how hard the root may change velocity: the white-noise acceleration of the
        constant-velocity motion model, as the velocity change (mm/s) it allows in one second.
        A person starts, stops and turns at a few m/s^2.
    depth_sigma: per-frame noise of the solve along the viewing ray, as a fraction of the depth
        (the lifted pose's scale error becomes a depth error of the same fraction).
    image_sigma_px: per-frame noise of the solve across the ray, in pixels at the root's depth
        (the 2D detector's jitter of the hips).
    lag_s: 0 = causal filter (live); > 0 = each frame is smoothed with this much of the
        future (Rauch-Tung-Striebel over the frames of the lag; files).
    max_gap_s: a person lost for longer restarts the filter (they may be anywhere now).
    gate: squared Mahalanobis distance beyond which a solve counts as an outlier; its noise is
        inflated by distance / gate (so it still pulls, weakly), instead of dragging the track.
    """

    accel_mm_s2: float = 1000.0
    depth_sigma: float = 0.05
    image_sigma_px: float = 4.0
    lag_s: float = 0.0
    max_gap_s: float = 1.0
    gate: float = 16.3  # chi-square, 3 degrees of freedom, p = 0.999


FILE_ROOT_LAG_S = 1.0  # the smoothing horizon of files: a second of future per frame
INITIAL_SPEED_MM_S = 1500.0  # prior std of each velocity component when a track starts


@dataclasses.dataclass
class _Step:
    """One frame in the smoother's buffer. For a frame with a state: filtered state x (6,), its
    prediction x_pred from the previous state, and the RTS gain C to the next state."""

    pose: PoseFrame
    x: np.ndarray | None = None
    x_pred: np.ndarray | None = None
    gain: np.ndarray | None = None


class RootTrajectory:
    """A steady metric root trajectory for one person: `push(pf) -> [PoseFrame, ...]`, then
    `flush()` at the end of the stream.

    Input frames carry the per-frame solve in `translation_mm` (TrajectoryStage; NaN when it
    failed). A constant-velocity Kalman filter on the pelvis position (camera space, mm) takes
    each solve as a measurement whose noise is anisotropic: along the viewing ray it is
    `depth_sigma` x depth (the lifted scale sets the depth, and it varies from frame to frame),
    across it `image_sigma_px` at that depth (the 2D is far steadier). So depth is smoothed
    hard while the image-plane position, which the 2D pins down, follows the person closely.
    Frames keep their order and their count; frames without a person pass through, a pose
    whose solve failed gets the filter's prediction.

    Causal (lag_s = 0): every frame comes straight back, with the filtered position (live).
    Smoothed (lag_s > 0): frames come back once lag_s of later frames has arrived, each with
    the Rauch-Tung-Striebel smoothed position over the frames buffered after it (files; at a
    gap or at flush() the rest is smoothed to the end of what was seen).
    A small numpy filter rather than a Kalman library: six states, one measurement model, and
    the lean runtime install keeps its dependency list (filterpy would bring scipy).
    """

    def __init__(self, camera: TrajectoryStage, config: RootFilterConfig = RootFilterConfig()) -> None:
        self.camera = camera
        self.config = config
        self._buf: list[_Step] = []
        self._x: np.ndarray | None = None
        self._P: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> list[PoseFrame]:
        """Forget the person; returns the frames still buffered, smoothed to their end."""
        out = self._emit(len(self._buf))
        self._x = self._P = self._t = None
        return out

    def flush(self) -> list[PoseFrame]:
        return self.reset()

    def push(self, pf: PoseFrame) -> list[PoseFrame]:
        out: list[PoseFrame] = []
        if not pf.valid:
            self._buf.append(_Step(pf))
        else:
            if self._t is not None and pf.timestamp_s - self._t > self.config.max_gap_s:
                out += self.reset()
            self._buf.append(self._update(pf))
        newest = pf.timestamp_s
        ready = 0
        while ready < len(self._buf) and newest - self._buf[ready].pose.timestamp_s >= self.config.lag_s - 1e-9:
            ready += 1
        return out + self._emit(ready)

    # ---- filter --------------------------------------------------------------------------
    def _noise(self, z: np.ndarray, f_px: float) -> np.ndarray:
        """Measurement covariance (3, 3) of a solve at camera-space position z."""
        depth = max(float(z[2]), MIN_DEPTH_MM)
        ray = z / np.linalg.norm(z)
        along = (self.config.depth_sigma * depth) ** 2
        across = (self.config.image_sigma_px * depth / f_px) ** 2
        return across * np.eye(3) + (along - across) * np.outer(ray, ray)

    def _update(self, pf: PoseFrame) -> _Step:
        z = np.asarray(pf.translation_mm, np.float64)
        has_z = bool(np.isfinite(z).all())
        t = pf.timestamp_s
        step = _Step(pf)
        if self._x is None:
            if not has_z:
                return step  # nothing to start from yet
            f_px = float(np.mean(self.camera.intrinsics(pf.image_size).f))
            self._x = np.concatenate([z, np.zeros(3)])
            self._P = np.zeros((6, 6))
            self._P[:3, :3] = self._noise(z, f_px)
            self._P[3:, 3:] = np.eye(3) * INITIAL_SPEED_MM_S ** 2  # a person starts at an unknown walking speed
            self._t = t
            step.x, step.x_pred = self._x.copy(), self._x.copy()
            self._link(step)
            return step
        dt = max(t - self._t, 1e-3)
        F = np.eye(6)
        F[:3, 3:] = dt * np.eye(3)
        q = self.config.accel_mm_s2 ** 2
        Q = np.zeros((6, 6))
        Q[:3, :3] = q * dt ** 3 / 3 * np.eye(3)
        Q[:3, 3:] = Q[3:, :3] = q * dt ** 2 / 2 * np.eye(3)
        Q[3:, 3:] = q * dt * np.eye(3)
        x_pred = F @ self._x
        P_pred = F @ self._P @ F.T + Q
        x, P = x_pred, P_pred
        if has_z:
            f_px = float(np.mean(self.camera.intrinsics(pf.image_size).f))
            R = self._noise(x_pred[:3], f_px)
            y = z - x_pred[:3]
            S = P_pred[:3, :3] + R
            d2 = float(y @ np.linalg.solve(S, y))
            if d2 > self.config.gate:  # an outlier: believe it less, in proportion
                R = R * (d2 / self.config.gate)
                S = P_pred[:3, :3] + R
            K = np.linalg.solve(S, P_pred[:3, :]).T  # (6, 3) = P H^T S^-1 (S symmetric)
            x = x_pred + K @ y
            IKH = np.eye(6)
            IKH[:, :3] -= K
            P = IKH @ P_pred @ IKH.T + K @ R @ K.T  # Joseph form: stays symmetric positive
        # RTS gain of the previous state towards this one: C = P_prev F^T P_pred^-1
        gain = np.linalg.solve(P_pred, F @ self._P).T
        self._x, self._P, self._t = x, P, t
        step.x, step.x_pred = x.copy(), x_pred
        self._link(step, gain)
        return step

    def _link(self, step: _Step, gain: np.ndarray | None = None) -> None:
        """Give the previous stateful step in the buffer its gain towards `step`."""
        for prev in reversed(self._buf):
            if prev.x is not None:
                prev.gain = gain
                break

    def _emit(self, n: int) -> list[PoseFrame]:
        """Pop the first n buffered frames with their smoothed positions."""
        if n <= 0:
            return []
        smoothed: dict[int, np.ndarray] = {}
        nxt: _Step | None = None
        x_next: np.ndarray | None = None
        for k in range(len(self._buf) - 1, -1, -1):  # RTS backward pass over the buffer
            s = self._buf[k]
            if s.x is None:
                continue
            if nxt is None or s.gain is None:
                xs = s.x
            else:
                xs = s.x + s.gain @ (x_next - nxt.x_pred)
            smoothed[k] = xs
            nxt, x_next = s, xs
        out = []
        for k, s in enumerate(self._buf[:n]):
            pose = s.pose
            if k in smoothed:
                pose = dataclasses.replace(pose, translation_mm=smoothed[k][:3].astype(np.float32))
            out.append(pose)
        del self._buf[:n]
        return out
