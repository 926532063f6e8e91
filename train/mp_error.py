"""Fit a model of MediaPipe's 2D error that turns exact 2D into MediaPipe-like 2D for training.

The model is fitted on rendered sequences and gives every Human3.6M training sequence the
MediaPipe-like 2D that the product's lifters see.

    posestream mp-error fit --renders data_out/seq_h36m_train --hold-out 8 --out data_out/mp_error.npz
    (prints the fit statistics on the held-out subject's renders: real vs simulated)

The residual r = MediaPipe's 17 joints - the exact projection (px) of a frame is modelled as:
  * a systematic offset per joint: a 3D vector o_j (mm) fixed in a body-relative frame (the
    torso's frame for torso joints; for knees, ankles, elbows and wrists the frame of the bone
    that ends there), projected through the camera at the joint: MediaPipe's landmarks are
    other anatomical points than Human3.6M's joints (engines.landmarks maps 33 -> 17 with
    constants fitted elsewhere; what remains is this offset);
  * a lag: -lag_j * (2D velocity of the joint), MediaPipe VIDEO mode smooths over time;
  * noise whose scale (mm at the person's depth, so it shrinks with distance in px) depends
    on the view (body yaw to the camera, 4 bins) and the pose (whether the joint lies more
    than BEHIND_MM farther than the pelvis, i.e. likely hidden by the body), per joint and axis;
    in time it is the sum of two Ornstein-Uhlenbeck processes (time constants in ms), so it is
    equally correlated at 25, 30 or 60 fps;
  * outlier episodes (a joint far off for a while: entry rate per second, mean duration, the
    displacement drawn from the fitted outliers), left/right swaps of the lower legs or
    forearms (rate per second by view bin, mean duration) and dropouts (frames without a
    person: rate per second, mean duration; simulate() marks them, the caller fills them as
    the app's history buffer does, by interpolating in time).
Everything is fitted per joint on the renders' pairs (ground-truth 2D, MediaPipe 2D); see
docs/temporal.md for the fit statistics.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numba import njit

from engines.errors import UserError
from engines.skeleton import JOINT_INDEX as JI, NUM_JOINTS

BEHIND_MM = 100.0          # a joint this much farther from the camera than the pelvis counts as "behind"
VIEW_BINS = 4              # body yaw to the camera: front, one side, back, other side
OUTLIER_SIGMAS = 4.0       # |residual| above this many noise sigmas (either axis) = outlier
MIN_CELL = 40              # fewer frames than this in a (joint, view, behind) cell: use the joint's pooled sigma
BANK_SIZE = 1000           # outlier displacements kept per joint
POSE_DIM = NUM_JOINTS * 3  # pose_features
POSE_RIDGE = 50.0          # ridge on the pose-dependent offsets (px^2 per (mm/m)^2 of weight)
FIT_FRAMES = 60000         # frames (at most) the systematic offsets are fitted on
LIMB_END = {JI[n]: JI[p] for n, p in (("r_knee", "r_hip"), ("r_ankle", "r_knee"), ("l_knee", "l_hip"),
                                       ("l_ankle", "l_knee"), ("l_elbow", "l_shoulder"), ("l_wrist", "l_elbow"),
                                       ("r_elbow", "r_shoulder"), ("r_wrist", "r_elbow"))}
SWAP_GROUPS = {"legs": ((JI["l_knee"], JI["r_knee"]), (JI["l_ankle"], JI["r_ankle"])),
               "arms": ((JI["l_elbow"], JI["r_elbow"]), (JI["l_wrist"], JI["r_wrist"]))}
TAU_GRID_MS = np.geomspace(5.0, 5000.0, 40)
JUMP_GRID_MS = (0.0, 40.0, 80.0, 160.0, 320.0)


# ------------------------------------------------------------------ geometry of a frame

def body_frames(j3: np.ndarray) -> np.ndarray:
    """Root-relative camera-space joints (N, 17, 3) mm -> (N, 17, 3, 3) rotation per joint
    whose columns are its local axes: the torso frame (left, up, forward) for torso joints,
    for limb ends (LIMB_END) the incoming bone's direction, the torso's forward made
    perpendicular to it, and their cross product."""
    j3 = np.asarray(j3, np.float64)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)

    left = unit(j3[:, JI["l_hip"]] - j3[:, JI["r_hip"]])
    up = j3[:, JI["thorax"]] - j3[:, JI["pelvis"]]
    up = unit(up - (up * left).sum(-1, keepdims=True) * left)
    fwd = np.cross(left, up)
    torso = np.stack([left, up, fwd], -1)                                  # (N, 3, 3) columns
    out = np.repeat(torso[:, None], NUM_JOINTS, 1)
    for j, p in LIMB_END.items():
        e1 = unit(j3[:, j] - j3[:, p])
        e2 = fwd - (fwd * e1).sum(-1, keepdims=True) * e1
        ok = np.linalg.norm(e2, axis=-1) > 0.2
        e2 = unit(e2)
        frame = np.stack([e1, e2, np.cross(e1, e2)], -1)
        out[ok, j] = frame[ok]
    return out


def view_bin(frames: np.ndarray, root: np.ndarray) -> np.ndarray:
    """(N,) int 0..VIEW_BINS-1 from body_frames (N, 17, 3, 3) and the pelvis (N, 3) mm: the
    body's yaw to the camera ray through the pelvis (0 = facing the camera, 2 = its back to it)."""
    fwd = frames[:, JI["pelvis"], :, 2]
    d = root / np.maximum(np.linalg.norm(root, axis=-1, keepdims=True), 1e-9)
    side = np.cross(np.array([0.0, 1.0, 0.0]), d)                         # the camera's horizontal across the ray
    side /= np.maximum(np.linalg.norm(side, axis=-1, keepdims=True), 1e-9)
    yaw = np.arctan2((fwd * side).sum(-1), -(fwd * d).sum(-1))
    return np.round(yaw / (2 * np.pi / VIEW_BINS)).astype(np.int64) % VIEW_BINS


def projection_jacobian(xyz: np.ndarray, f: np.ndarray) -> np.ndarray:
    """d(u, v)/d(x, y, z) of the pinhole at camera-space points (N, 17, 3) mm, focal (N, 2)
    px -> (N, 17, 2, 3) px per mm."""
    x, y, z = xyz[..., 0], xyz[..., 1], np.maximum(xyz[..., 2], 1.0)
    fx, fy = f[:, None, 0], f[:, None, 1]
    J = np.zeros(xyz.shape[:-1] + (2, 3))
    J[..., 0, 0], J[..., 0, 2] = fx / z, -fx * x / z**2
    J[..., 1, 1], J[..., 1, 2] = fy / z, -fy * y / z**2
    return J


def velocity(uv: np.ndarray, time_ms: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(N, 17, 2) px/ms, central differences within each run (one-sided at its ends)."""
    from engines.temporal import group_bounds

    first, last = group_bounds(keys)
    i = np.arange(len(uv))
    a, b = np.maximum(i - 1, first), np.minimum(i + 1, last)
    dt = np.maximum(time_ms[b] - time_ms[a], 1e-6)
    return (uv[b] - uv[a]) / dt[:, None, None]


@dataclass(frozen=True)
class Geometry:
    """What the error model needs about each frame (from ground truth)."""

    P: np.ndarray         # (N, 17, 2, 3) offset in the local frames (mm) -> px
    px_per_mm: np.ndarray  # (N, 2) f / pelvis depth
    view: np.ndarray      # (N,) int view bin
    behind: np.ndarray    # (N, 17) bool
    vel: np.ndarray       # (N, 17, 2) px/ms
    pose: np.ndarray      # (N, POSE_DIM) the pose in the torso's frame, m (pose_features)


def geometry(gt2d: np.ndarray, j3: np.ndarray, root: np.ndarray, f: np.ndarray, time_ms: np.ndarray,
             keys: np.ndarray) -> Geometry:
    j3, root, f = np.asarray(j3, np.float64), np.asarray(root, np.float64), np.asarray(f, np.float64)
    xyz = j3 + root[:, None]
    frames = body_frames(j3)
    P = np.matmul(projection_jacobian(xyz, f), frames)
    return Geometry(P, f / np.maximum(root[:, 2:3], 1.0), view_bin(frames, root), j3[..., 2] > BEHIND_MM,
                    velocity(np.asarray(gt2d, np.float64), np.asarray(time_ms, np.float64), keys),
                    pose_features(j3, frames))


def pose_features(j3: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N, POSE_DIM) root-relative joints (N, 17, 3) mm expressed in the torso's frame (the
    pelvis' body_frames), metres: the pose without the view, which the offsets depend on
    (e.g. MediaPipe's shoulder landmarks ride up when the arms are raised)."""
    torso = frames[:, JI["pelvis"]]                                        # (N, 3, 3) columns = axes
    return (np.matmul(j3, torso) / 1000.0).reshape(len(j3), -1)


# ------------------------------------------------------------------ the model

@dataclass
class ErrorModel:
    """Fitted parameters (module docstring). Units: mm (offsets, noise: at the pelvis depth),
    ms (lags, time constants, durations), 1/s (rates)."""

    offset_mm: np.ndarray        # (17, 3) in each joint's local frame, at the mean pose
    pose_weight: np.ndarray      # (17, 3, POSE_DIM) mm per metre of pose_features (minus pose_mean)
    pose_mean: np.ndarray        # (POSE_DIM,)
    lag_ms: np.ndarray           # (17,)
    sigma_mm: np.ndarray         # (17, VIEW_BINS, 2, 2) [joint, view, behind, axis]
    tau_ms: np.ndarray           # (17, 2) fast and slow OU time constants
    weight_fast: np.ndarray      # (17,) variance share of the fast component
    outlier_rate: np.ndarray     # (17,) episodes per second
    outlier_ms: np.ndarray       # (17,) mean duration
    outlier_bank: np.ndarray     # (17, BANK_SIZE, 2) mm displacements (NaN-padded)
    swap_rate: np.ndarray        # (2, VIEW_BINS) legs, arms: episodes per second
    swap_ms: np.ndarray          # (2,) mean duration
    drop_rate: float             # dropout episodes per second
    drop_ms: float               # mean dropout duration
    jump_ms: float = 0.0         # time constant smoothing outlier and swap jumps in and out

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in self.__dict__.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "ErrorModel":
        if not Path(path).is_file():
            raise UserError(f"no MediaPipe error model at {path}: fit one with `posestream mp-error fit`")
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        return cls(**{k: (float(v) if v.ndim == 0 else v) for k, v in d.items()})


# ------------------------------------------------------------------ fitting

def _episode_parts(flag: np.ndarray, time_ms: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a flag (N,) over runs (keys): (starts an episode (N,) bool, time to the next
    frame of its run (N,) ms, 0 at a run's last frame)."""
    same = np.r_[keys[1:] == keys[:-1], False]
    dt = np.where(same, np.diff(time_ms, append=0.0), 0.0)
    return flag & ~np.r_[False, flag[:-1] & same[:-1]], dt


def _episodes(flag: np.ndarray, time_ms: np.ndarray, keys: np.ndarray) -> tuple[float, float]:
    """(entries per second of time outside an episode, mean episode duration ms) of a flag
    (N,) over runs (keys)."""
    start, dt = _episode_parts(flag, time_ms, keys)
    off_s = dt[~flag].sum() / 1000.0
    n = int(start.sum())
    typical = float(np.median(dt[dt > 0])) if (dt > 0).any() else 33.3
    return (n / off_s if off_s > 0 else 0.0), (max(dt[flag].sum() / n, typical) if n else typical)


def _autocorr(u: np.ndarray, keys: np.ndarray, lag: int) -> float:
    """Pooled autocorrelation at `lag` frames of u (N, ...) within runs, NaN-aware."""
    a, b = u[:-lag], u[lag:]
    same = (keys[:-lag] == keys[lag:]).reshape((-1,) + (1,) * (u.ndim - 1))
    ok = same & np.isfinite(a) & np.isfinite(b)
    a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _hysteresis(high: np.ndarray, low: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(N,) bool: the frames of each stretch of `low` (within a run) that contains a `high` frame."""
    low = low | high
    brk = np.r_[True, (keys[1:] != keys[:-1]) | ~low[1:] | ~low[:-1]]      # a new stretch starts
    label = np.cumsum(brk)
    hit = np.zeros(label.max() + 1, bool)
    hit[label[high]] = True
    return low & hit[label]


def fit_ou(ac: np.ndarray, lag_ms: np.ndarray) -> tuple[float, float, float]:
    """Two-component OU fit to autocorrelations ac (L,) at lags lag_ms (L,): (tau_fast,
    tau_slow, weight_fast) minimising sum (w e^{-l/t1} + (1-w) e^{-l/t2} - ac)^2."""
    best = (np.inf, 30.0, 300.0, 1.0)
    E = np.exp(-lag_ms[None, :] / TAU_GRID_MS[:, None])                   # (G, L)
    for i in range(len(TAU_GRID_MS)):
        for k in range(i, len(TAU_GRID_MS)):
            d = E[i] - E[k]
            w = float(np.clip((d @ (ac - E[k])) / max(d @ d, 1e-12), 0, 1))
            err = float(((w * E[i] + (1 - w) * E[k] - ac) ** 2).sum())
            if err < best[0]:
                best = (err, TAU_GRID_MS[i], TAU_GRID_MS[k], w)
    return best[1], best[2], best[3]


def _design(g: Geometry, dpose: np.ndarray, j: int, idx: np.ndarray) -> np.ndarray:
    """(2 len(idx), 3 + 3 POSE_DIM + 1) rows of joint j's systematic model at frames idx:
    columns o (3), W (3 x POSE_DIM, row-major), lag."""
    P = g.P[idx, j]                                                        # (n, 2, 3)
    W = (P[:, :, :, None] * dpose[idx, None, None, :]).reshape(len(idx), 2, -1)
    return np.concatenate([P, W, -g.vel[idx, j, :, None]], -1).reshape(-1, 4 + 3 * POSE_DIM)


def swapped(mp2d: np.ndarray, gt2d: np.ndarray, px_per_mm: np.ndarray) -> np.ndarray:
    """(N, 2) bool: legs / arms of MediaPipe's 2D are left-right swapped against the truth
    (the swapped assignment is less than half as far, and the direct one > 150 mm off)."""
    out = np.zeros((len(mp2d), len(SWAP_GROUPS)), bool)
    scale = px_per_mm.mean(-1)
    for g, pairs in enumerate(SWAP_GROUPS.values()):
        direct = sum(np.linalg.norm(mp2d[:, a] - gt2d[:, a], axis=-1) + np.linalg.norm(mp2d[:, b] - gt2d[:, b], axis=-1)
                     for a, b in pairs) / scale
        cross = sum(np.linalg.norm(mp2d[:, a] - gt2d[:, b], axis=-1) + np.linalg.norm(mp2d[:, b] - gt2d[:, a], axis=-1)
                    for a, b in pairs) / scale
        out[:, g] = (cross < 0.5 * direct) & (direct > 150.0)
    return out


def fit(gt2d: np.ndarray, mp2d: np.ndarray, found: np.ndarray, j3: np.ndarray, root: np.ndarray, f: np.ndarray,
        time_ms: np.ndarray, keys: np.ndarray, seed: int = 0) -> ErrorModel:
    """Fit the error model on pairs of exact 2D gt2d (N, 17, 2) px and MediaPipe's 2D mp2d
    (N, 17, 2) px (NaN where found (N,) is False), with the frames' root-relative 3D j3 (N,
    17, 3) mm, pelvis root (N, 3) mm, focal f (N, 2) px, times (N,) ms and run keys (N,)
    (frames of a run consecutive, in time order)."""
    rng = np.random.default_rng(seed)
    keys = np.asarray(keys)
    g = geometry(gt2d, j3, root, f, time_ms, keys)
    r = np.asarray(mp2d, np.float64) - gt2d
    ok = found & np.isfinite(r).all((1, 2))
    swap = swapped(mp2d, gt2d, g.px_per_mm) & ok[:, None]
    in_swap = np.zeros(r.shape[:2], bool)
    for k, pairs in enumerate(SWAP_GROUPS.values()):
        for a, b in pairs:
            in_swap[:, a] |= swap[:, k]
            in_swap[:, b] |= swap[:, k]
    usable = ok[:, None] & ~in_swap                                        # (N, 17)
    mm = r / g.px_per_mm[:, None, :]                                       # residual in mm at the pelvis depth
    # Systematic part, per joint: r ~ P (o + W (pose - mean)) - lag * v, by ridge least squares
    # on (a sample of) the usable frames, refitted once without the frames it misses by > 4 MADs.
    pose_mean = g.pose[ok].mean(0) if ok.any() else np.zeros(POSE_DIM)
    dpose = g.pose - pose_mean
    offset, lag = np.zeros((NUM_JOINTS, 3)), np.zeros(NUM_JOINTS)
    weight = np.zeros((NUM_JOINTS, 3, POSE_DIM))
    reg = np.r_[np.zeros(3), np.full(3 * POSE_DIM, POSE_RIDGE), 0.0]
    for j in range(NUM_JOINTS):
        m = usable[:, j] & (np.linalg.norm(mm[:, j], axis=-1) < 300.0)
        for _ in range(2):
            idx = np.flatnonzero(m)
            idx = idx[rng.permutation(len(idx))[:FIT_FRAMES]]
            A = _design(g, dpose, j, idx)
            sol = np.linalg.solve(A.T @ A + np.diag(reg), A.T @ r[idx, j].reshape(-1))
            res = (r[:, j] - (_design(g, dpose, j, np.arange(len(r))) @ sol).reshape(-1, 2)) / g.px_per_mm
            med = np.nanmedian(np.abs(res[m]), 0) * 1.4826
            m = usable[:, j] & (np.abs(res) < OUTLIER_SIGMAS * med).all(-1)
        offset[j], weight[j], lag[j] = sol[:3], sol[3:-1].reshape(3, POSE_DIM), sol[-1]
    partial = ErrorModel(offset, weight, pose_mean, lag, *([None] * 10))
    pred = systematic(partial, g)
    e = (r - pred) / g.px_per_mm[:, None, :]                                # noise, mm
    def cell_sigma(j: int, keep: np.ndarray, spread) -> np.ndarray:
        """(VIEW_BINS, 2, 2) per-cell spread of joint j's noise over frames `keep`."""
        out = np.zeros((VIEW_BINS, 2, 2))
        pooled = spread(e[keep, j])
        for v in range(VIEW_BINS):
            for b in range(2):
                m = keep & (g.view == v) & (g.behind[:, j] == b)
                out[v, b] = spread(e[m, j]) if m.sum() >= MIN_CELL else pooled
        return out

    def mad(x: np.ndarray) -> np.ndarray:
        return 1.4826 * np.median(np.abs(x), 0)

    # Outlier episodes with hysteresis: a stretch beyond 2 robust sigmas that somewhere
    # exceeds OUTLIER_SIGMAS (flicker around one threshold would cut episodes short).
    sigma = np.zeros((NUM_JOINTS, VIEW_BINS, 2, 2))
    norm = np.full(e.shape, np.nan)
    outlier = np.zeros(usable.shape, bool)
    for j in range(NUM_JOINTS):
        core = cell_sigma(j, usable[:, j], mad)
        z = np.abs(e[:, j] / core[g.view, g.behind[:, j].astype(int)]).max(-1)
        outlier[:, j] = usable[:, j] & _hysteresis(z > OUTLIER_SIGMAS, z > 0.5 * OUTLIER_SIGMAS, keys)
        # The Gaussian part: the standard deviation of what is left.
        sigma[j] = cell_sigma(j, usable[:, j] & ~outlier[:, j], lambda x: np.sqrt(np.mean(x**2, 0)))
        norm[:, j] = e[:, j] / sigma[j][g.view, g.behind[:, j].astype(int)]
    inl = np.where((usable & ~outlier)[..., None], norm, np.nan)
    dt = float(np.nanmedian(np.where(keys[1:] == keys[:-1], np.diff(time_ms), np.nan)))
    lags = np.arange(1, 11)
    tau, wfast = np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS)
    for j in range(NUM_JOINTS):
        ac = np.array([_autocorr(inl[:, j], keys, k) for k in lags])
        # The inliers' autocorrelation is that of the noise without its outlier episodes.
        t1, t2, w = fit_ou(ac, lags * dt)
        tau[j], wfast[j] = (t1, t2), w
    rate, dur, bank = np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS), np.full((NUM_JOINTS, BANK_SIZE, 2), np.nan)
    for j in range(NUM_JOINTS):
        rate[j], dur[j] = _episodes(outlier[:, j], time_ms, keys)
        vecs = e[outlier[:, j], j]
        if len(vecs):
            bank[j, :min(len(vecs), BANK_SIZE)] = vecs[rng.permutation(len(vecs))[:BANK_SIZE]]
    swap_rate, swap_ms = np.zeros((len(SWAP_GROUPS), VIEW_BINS)), np.zeros(len(SWAP_GROUPS))
    for k in range(len(SWAP_GROUPS)):
        swap_ms[k] = _episodes(swap[:, k], time_ms, keys)[1]
        start, dt = _episode_parts(swap[:, k], time_ms, keys)
        for v in range(VIEW_BINS):
            off = (g.view == v) & ~swap[:, k]
            swap_rate[k, v] = start[g.view == v].sum() / max(dt[off].sum() / 1000.0, 1e-9) if off.any() else 0.0
    drop_rate, drop_ms = _episodes(~found, time_ms, keys)
    model = ErrorModel(offset, weight, pose_mean, lag, sigma, tau, wfast, rate, dur, bank, swap_rate, swap_ms,
                       drop_rate, drop_ms)
    # The jump smoothing: the time constant whose simulation best matches the data's
    # autocorrelation at 1 and 3 frames.
    real = residual_stats(r, g.px_per_mm, keys, ok)

    def mismatch(jump_ms: float) -> float:
        sim, det = simulate(replace(model, jump_ms=jump_ms), gt2d, j3, root, f, time_ms, keys,
                            np.random.default_rng(seed + 1), g)
        st = residual_stats(sim.astype(np.float64) - gt2d, g.px_per_mm, keys, det)
        return float(sum(np.abs(st[k] - real[k]).mean() for k in ("ac1", "ac3")))

    return replace(model, jump_ms=min(JUMP_GRID_MS, key=mismatch))


# ------------------------------------------------------------------ simulation

def systematic(model: "ErrorModel", g: Geometry) -> np.ndarray:
    """The modelled mean residual (N, 17, 2) px: each joint's offset in its local frame (mm),
    a constant plus a linear function of the pose, projected; minus lag (ms) times the 2D
    velocity."""
    local = model.offset_mm[None] + np.einsum("jcp,np->njc", model.pose_weight, g.pose - model.pose_mean)
    return np.matmul(g.P, local[..., None])[..., 0] - model.lag_ms[None, :, None] * g.vel


@njit(cache=True)
def _ou(first: np.ndarray, dt: np.ndarray, tau: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Unit-variance OU per column: x_t = rho x_{t-1} + sqrt(1 - rho^2) z_t, restarted (x = z)
    where first[t]; dt (N,) ms since the previous frame; tau (C,) ms; z (N, C) N(0, 1)."""
    x = np.empty_like(z)
    for t in range(z.shape[0]):
        for c in range(z.shape[1]):
            if first[t]:
                x[t, c] = z[t, c]
            else:
                rho = np.exp(-dt[t] / tau[c])
                x[t, c] = rho * x[t - 1, c] + np.sqrt(1.0 - rho * rho) * z[t, c]
    return x


@njit(cache=True)
def _lowpass(first: np.ndarray, dt: np.ndarray, tau: float, x: np.ndarray) -> np.ndarray:
    """First-order low-pass of each column of x (N, C) in time (tau ms; 0 = none), restarted
    at each run's first frame."""
    y = np.empty_like(x)
    for t in range(x.shape[0]):
        a = 1.0 if (first[t] or tau <= 0) else 1.0 - np.exp(-dt[t] / tau)
        for c in range(x.shape[1]):
            y[t, c] = x[t, c] if first[t] else y[t - 1, c] + a * (x[t, c] - y[t - 1, c])
    return y


@njit(cache=True)
def _episode_flags(first: np.ndarray, dt: np.ndarray, rate: np.ndarray, dur: np.ndarray,
                   u: np.ndarray) -> np.ndarray:
    """Two-state Markov chain per column: off -> on with probability 1 - exp(-rate dt)
    (rate (N, C) per s), on -> off with 1 - exp(-dt / dur) (dur (C,) ms); u (N, C) uniform.
    Returns (N, C) bool; every run starts off."""
    on = np.zeros(u.shape, np.bool_)
    for t in range(u.shape[0]):
        for c in range(u.shape[1]):
            if first[t]:
                on[t, c] = False
            elif on[t - 1, c]:
                on[t, c] = u[t, c] >= 1.0 - np.exp(-dt[t] / max(dur[c], 1.0))
            else:
                on[t, c] = u[t, c] < 1.0 - np.exp(-rate[t, c] * dt[t] / 1000.0)
    return on


def simulate(model: ErrorModel, gt2d: np.ndarray, j3: np.ndarray, root: np.ndarray, f: np.ndarray,
             time_ms: np.ndarray, keys: np.ndarray, rng: np.random.Generator,
             geom: Geometry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe-like 2D for exact 2D gt2d (N, 17, 2) px of frames with root-relative 3D j3
    (N, 17, 3) mm, pelvis root (N, 3) mm, focal f (N, 2) px, times (N,) ms, run keys (N,)
    (consecutive, in time order). Returns (uv (N, 17, 2) float32 px, detected (N,) bool);
    undetected frames keep their simulated 2D (fill them from the detected ones in time, as
    the app does: fill_dropouts). geom: geometry() of these frames, when already computed
    (training draws new 2D every epoch from the same frames)."""
    keys = np.asarray(keys)
    time_ms = np.asarray(time_ms, np.float64)
    g = geom if geom is not None else geometry(gt2d, j3, root, f, time_ms, keys)
    n = len(gt2d)
    first = np.r_[True, keys[1:] != keys[:-1]]
    dt = np.r_[0.0, np.diff(time_ms)]
    uv = gt2d + systematic(model, g)
    # Noise: two OU components per joint and axis, scaled by the frame's cell sigma.
    cols = NUM_JOINTS * 2
    fast = _ou(first, dt, np.repeat(model.tau_ms[:, 0], 2), rng.standard_normal((n, cols))).reshape(n, NUM_JOINTS, 2)
    slow = _ou(first, dt, np.repeat(model.tau_ms[:, 1], 2), rng.standard_normal((n, cols))).reshape(n, NUM_JOINTS, 2)
    w = model.weight_fast[None, :, None]
    unit = np.sqrt(w) * fast + np.sqrt(1 - w) * slow
    sig = model.sigma_mm[np.arange(NUM_JOINTS)[None], g.view[:, None], g.behind.astype(int)]    # (N, 17, 2)
    noise = unit * sig
    # Outlier episodes (one displacement from the bank held for the episode) and left/right
    # swaps of the lower legs and forearms are jumps away from the noisy 2D; MediaPipe's VIDEO
    # mode smooths them in and out, with time constant jump_ms.
    on = _episode_flags(first, dt, np.repeat(model.outlier_rate[None], n, 0), model.outlier_ms,
                        rng.random((n, NUM_JOINTS)))
    starts = on & ~np.r_[np.zeros((1, NUM_JOINTS), bool), on[:-1] & ~first[1:, None]]
    jump = np.zeros_like(noise)
    for j in range(NUM_JOINTS):
        bank = model.outlier_bank[j][np.isfinite(model.outlier_bank[j]).all(-1)]
        if not len(bank) or not on[:, j].any():
            continue
        pick = np.where(starts[:, j], rng.integers(len(bank), size=n), -1)
        episode = np.maximum.accumulate(np.where(starts[:, j], np.arange(n), 0))   # start of the current episode
        jump[on[:, j], j] = bank[pick[episode[on[:, j]]]] - noise[on[:, j], j]
    uv = uv + noise * g.px_per_mm[:, None, :]
    jump_px = jump * g.px_per_mm[:, None, :]
    swap = _episode_flags(first, dt, model.swap_rate.T[g.view], model.swap_ms, rng.random((n, len(SWAP_GROUPS))))
    for k, pairs in enumerate(SWAP_GROUPS.values()):
        for a, b in pairs:
            m = swap[:, k]
            d = uv[m, b] - uv[m, a]
            jump_px[m, a] += d
            jump_px[m, b] -= d
    uv = uv + _lowpass(first, dt, float(model.jump_ms), jump_px.reshape(n, -1)).reshape(uv.shape)
    drop = _episode_flags(first, dt, np.full((n, 1), model.drop_rate), np.array([model.drop_ms]), rng.random((n, 1)))[:, 0]
    return uv.astype(np.float32), ~drop


def fill_dropouts(uv: np.ndarray, detected: np.ndarray, time_ms: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Undetected frames of each run filled by linear interpolation in time between the
    detected frames around them (the edge frame before the first/after the last), which is what
    resampling the app's history by timestamp gives. Runs without a detection stay as they are."""
    from engines.temporal import group_bounds

    out = np.array(uv, np.float32, copy=True)
    first, last = group_bounds(np.asarray(keys))
    for a in np.unique(first[~detected]):
        b = int(last[a]) + 1
        d = detected[a:b]
        if not d.any() or d.all():
            continue
        t = time_ms[a:b]
        flat = out[a:b].reshape(b - a, -1)
        for c in range(flat.shape[1]):
            flat[~d, c] = np.interp(t[~d], t[d], flat[d, c])
        out[a:b] = flat.reshape(out[a:b].shape)
    return out


# ------------------------------------------------------------------ fit statistics

def residual_stats(r: np.ndarray, px_per_mm: np.ndarray, keys: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Per-joint statistics of residuals r (N, 17, 2) px over valid (N,) frames, in mm at the
    pelvis depth: mean (17, 2), std (17, 2), autocorrelation at 1 and 3 frames (17,) (of the
    residual minus its per-joint mean, both axes pooled)."""
    mm = np.where(valid[:, None, None], r / px_per_mm[:, None, :], np.nan)
    mean = np.nanmean(mm, 0)
    std = np.nanstd(mm, 0)
    centred = mm - mean
    return {"mean": mean, "std": std,
            "ac1": np.array([_autocorr(centred[:, j], keys, 1) for j in range(NUM_JOINTS)]),
            "ac3": np.array([_autocorr(centred[:, j], keys, 3) for j in range(NUM_JOINTS)])}


def compare(model: ErrorModel, gt2d: np.ndarray, mp2d: np.ndarray, found: np.ndarray, j3: np.ndarray,
            root: np.ndarray, f: np.ndarray, time_ms: np.ndarray, keys: np.ndarray, seed: int = 1) -> dict:
    """Residual statistics of MediaPipe (real) and of the model (simulated on the same exact
    2D, frames and times) on held-out renders, per joint. Frames count where real MediaPipe
    found the person (real) / where the simulation detected one (simulated)."""
    sim, det = simulate(model, gt2d, j3, root, f, time_ms, keys, np.random.default_rng(seed))
    g = geometry(gt2d, j3, root, f, time_ms, keys)
    real = residual_stats(np.asarray(mp2d, np.float64) - gt2d, g.px_per_mm, keys, found & np.isfinite(mp2d).all((1, 2)))
    fake = residual_stats(sim.astype(np.float64) - gt2d, g.px_per_mm, keys, det)
    return {"real": {k: v.tolist() for k, v in real.items()}, "simulated": {k: v.tolist() for k, v in fake.items()},
            "frames": int(len(gt2d)), "detected_real": float(found.mean()), "detected_simulated": float(det.mean())}


def stats_markdown(cmp: dict) -> str:
    """The comparison as a per-joint table (mm at the pelvis depth; autocorrelations)."""
    from engines.skeleton import JOINT_NAMES

    r, s = cmp["real"], cmp["simulated"]
    lines = ["| joint | mean x real / sim | mean y real / sim | std x real / sim | std y real / sim | "
             "AC(1) real / sim | AC(3) real / sim |", "|---|---|---|---|---|---|---|"]
    for j, name in enumerate(JOINT_NAMES):
        lines.append(f"| {name} | {r['mean'][j][0]:.1f} / {s['mean'][j][0]:.1f} | {r['mean'][j][1]:.1f} / "
                     f"{s['mean'][j][1]:.1f} | {r['std'][j][0]:.1f} / {s['std'][j][0]:.1f} | {r['std'][j][1]:.1f} / "
                     f"{s['std'][j][1]:.1f} | {r['ac1'][j]:.2f} / {s['ac1'][j]:.2f} | {r['ac3'][j]:.2f} / {s['ac3'][j]:.2f} |")
    lines.append(f"\nframes {cmp['frames']}; MediaPipe found the person on {100 * cmp['detected_real']:.1f} %, "
                 f"the model on {100 * cmp['detected_simulated']:.1f} %")
    return "\n".join(lines)


# ------------------------------------------------------------------ command

def _arrays(ss) -> tuple:
    return ss.gt2d.astype(np.float64), ss.mp2d, ss.found, ss.joints_3d, ss.root_cam, ss.f, ss.time_ms, ss.clip_keys()


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fit", help="fit on sequence renders; report real vs simulated on held-out renders")
    f.add_argument("--renders", nargs="+", required=True, help="`posestream render --sequence` folders")
    f.add_argument("--hold-out", type=int, default=8, help="subject whose renders are held out for the report")
    f.add_argument("--out", required=True, help="error model file (.npz)")
    f.add_argument("--json", default=None, help="write the fit statistics here")
    f.add_argument("--md", default=None, help="write the fit statistics table here")
    f.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from realtime.cli_options import check_report_paths
    from train.eval_common import save_report
    from train.sequence_sets import concat_sets, load_sequence_set

    check_report_paths(args, "json", "md")
    ss = concat_sets([load_sequence_set(r) for r in args.renders])
    held = ss.subject == args.hold_out
    if not held.any() or held.all():
        raise UserError(f"--hold-out {args.hold_out} must leave renders on both sides (subjects "
                        f"{sorted(set(ss.subject.tolist()))})")
    fit_set, test_set = ss.subset(~held), ss.subset(held)
    model = fit(*_arrays(fit_set), seed=args.seed)
    model.save(args.out)
    cmp = compare(model, *_arrays(test_set), seed=args.seed + 1)
    cmp.update(fit_frames=int(len(fit_set)), held_out_subject=args.hold_out, renders=list(args.renders))
    md = stats_markdown(cmp)
    print(md)
    print(f"wrote {args.out} (fitted on {len(fit_set)} frames; held out subject {args.hold_out}: {len(test_set)} frames)")
    save_report(cmp, md, args.json, args.md)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posestream mp-error", description=__doc__.split("\n")[0])
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except UserError as exc:
        print(f"error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
