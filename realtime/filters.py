"""Causal temporal filters for live 3D pose: One Euro smoothing and bone-length stabilising.

Both filters see only the current and past frames (causal: no look-ahead, no added latency
beyond the filter's own phase lag), keep their state between calls and reset on gaps.

One Euro filter (Casiez, Roussel, Vogel, "1 Euro Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems", CHI 2012): an exponential low-pass whose
cutoff rises with the signal's speed, so a still pose is smoothed hard (no jitter) while a
fast movement is followed with little lag:
    a(fc, dt)  = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)
    dx_hat     = lowpass(dx = (x - x_hat_prev) / dt,  a(d_cutoff, dt))
    fc         = min_cutoff + beta * |dx_hat|
    x_hat      = lowpass(x, a(fc, dt))
Each coordinate is filtered independently (vectorised over any array shape, e.g. (17, 3)).

Defaults, for millimetre coordinates at webcam rates (15-60 fps):
    min_cutoff = 1.0 Hz  the cutoff when still. Lower = less jitter, more lag on slow moves.
    beta       = 0.005   per (mm/s): at 1 m/s (a brisk arm swing) the cutoff becomes
                         1 + 0.005 * 1000 = 6 Hz, so fast limbs lag by ~1 frame, not ~5.
    d_cutoff   = 1.0 Hz  smoothing of the speed estimate itself (Casiez et al.'s default).
Tune as in the paper: set beta = 0, lower min_cutoff until a still pose stops jittering,
then raise beta until fast movements stop lagging.

Bone-length stabiliser: a monocular lifter predicts each frame's limb lengths anew, so a
forearm "breathes" by a few centimetres. People do not change size: the stabiliser keeps a
running median of each bone's length over the last `window` valid frames (optionally
averaging left and right limbs) and rebuilds the skeleton from the root along the kinematic
tree with each bone's *direction* from the current frame and its *length* from the median.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np

from engines.skeleton import BONES, JOINT_NAMES, LEFT_JOINTS, NUM_JOINTS, PARENTS, RIGHT_JOINTS, ROOT, bone_lengths
from realtime.frames import PoseFrame

DEFAULT_MIN_CUTOFF = 1.0
DEFAULT_BETA = 0.005
DEFAULT_D_CUTOFF = 1.0
# A gap longer than this (seconds between two valid frames) restarts the filters: the
# person may have moved anywhere meanwhile, and smoothing across the gap would drag the
# new pose towards the old one.
DEFAULT_MAX_GAP_S = 0.5
# dt used when timestamps do not advance (duplicated or missing timestamps).
FALLBACK_DT_S = 1.0 / 30.0


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    """Smoothing factor of an exponential low-pass with the given cutoff and sample period."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, np.float64))
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Causal One Euro filter over arrays of a fixed shape (each element independent).

    `__call__(x, t)` takes the array x at time t seconds and returns the filtered array
    (float64, same shape). Non-finite entries of x (a joint the detector lost) come out as
    NaN and restart that element's filter, so a NaN never poisons later frames. `reset()`
    restarts every element (call it on gaps and on frames with no person)."""

    def __init__(self, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 d_cutoff: float = DEFAULT_D_CUTOFF) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None    # last filtered value
        self._dx: np.ndarray | None = None   # last filtered derivative
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        finite = np.isfinite(x)
        if self._x is None or self._x.shape != x.shape:
            self._x = np.where(finite, x, np.nan)
            self._dx = np.zeros_like(x)
            self._t = float(t)
            return self._x.copy()
        dt = float(t) - float(self._t)
        if not dt > 0:
            dt = FALLBACK_DT_S
        self._t = float(t)
        fresh = finite & ~np.isfinite(self._x)  # elements (re)starting now: no history
        dx = np.where(finite & ~fresh, (x - self._x) / dt, 0.0)
        dx_hat = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        x_hat = self._x + _alpha(cutoff, dt) * (x - self._x)
        x_hat = np.where(fresh, x, x_hat)
        self._x = np.where(finite, x_hat, np.nan)
        self._dx = np.where(finite, dx_hat, 0.0)
        return self._x.copy()


def rebuild_with_lengths(joints: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Rescale each bone of (17, 3) joints to `lengths` (16,), in BONES order, keeping every
    bone's direction and the root's position. Parents precede children in PARENTS, so one
    pass from the root places every joint after its parent. A zero-length bone keeps its
    child on the parent."""
    joints = np.asarray(joints, np.float64)
    out = joints.copy()
    for (p, c), length in zip(BONES, lengths):
        v = joints[c] - joints[p]
        n = np.linalg.norm(v)
        out[c] = out[p] + (v * (length / n) if n > 1e-9 else 0.0)
    return out


def _mirror_bone_index() -> np.ndarray:
    """For each bone in BONES, the index of its left/right mirror (itself if central)."""
    swap = {**dict(zip(LEFT_JOINTS, RIGHT_JOINTS)), **dict(zip(RIGHT_JOINTS, LEFT_JOINTS))}
    index = {b: i for i, b in enumerate(BONES)}
    return np.array([index[(swap.get(p, p), swap.get(c, c))] for p, c in BONES])


_MIRROR = _mirror_bone_index()
assert len(PARENTS) == NUM_JOINTS == len(JOINT_NAMES)


class BoneLengthStabilizer:
    """Keeps limb lengths consistent over time: running median of each bone's length over
    the last `window` valid frames (left and right limbs averaged when `symmetric`), applied
    by `rebuild_with_lengths`. Causal; `reset()` forgets the person (a new person may enter
    after a gap). Input/output: (17, 3) joints in mm (root-relative or camera space)."""

    def __init__(self, window: int = 60, symmetric: bool = True) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.symmetric = symmetric
        self._history: deque[np.ndarray] = deque(maxlen=self.window)

    def reset(self) -> None:
        self._history.clear()

    @property
    def lengths(self) -> np.ndarray | None:
        """Current target bone lengths (16,) mm, or None before the first valid frame."""
        if not self._history:
            return None
        med = np.median(np.stack(self._history), axis=0)
        if self.symmetric:
            med = 0.5 * (med + med[_MIRROR])
        return med

    def __call__(self, joints: np.ndarray) -> np.ndarray:
        joints = np.asarray(joints, np.float64)
        if not np.isfinite(joints).all():
            return joints.copy()  # a partial skeleton cannot be rebuilt from the root; pass it on
        self._history.append(bone_lengths(joints))
        return rebuild_with_lengths(joints, self.lengths)


@dataclasses.dataclass(frozen=True)
class BodyConfig:
    """Settings of `TrackBody`: how a track's body (its 16 bone lengths) is estimated.

    lookahead_s: later frames the estimate of a frame may use; 0 = causal (live: each frame
                 is answered at once, from itself and the frames before it).
    past_s:      earlier frames it may use (the estimate's memory).
    settle_s:    once the track's frames span this long the body is fixed for the rest of the
                 track (the estimate over the frames seen then); None = it keeps following
                 the window.
    reset_gap_s: a track unseen for longer than this starts a new body (it may be someone else).
    symmetric:   left and right limbs get the same length (their mean)."""

    lookahead_s: float = 0.0
    past_s: float = math.inf
    settle_s: float | None = None
    reset_gap_s: float = 1.0
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not (self.lookahead_s >= 0 and self.past_s > 0 and self.reset_gap_s > 0
                and (self.settle_s is None or self.settle_s >= 0)):
            raise ValueError(f"body settings need lookahead_s >= 0, past_s > 0, reset_gap_s > 0, settle_s >= 0; "
                             f"got {self}")


class TrackBody:
    """One track's body: its bone lengths, estimated robustly (per-bone median) from the
    track's own poses within [t - past_s, t + lookahead_s], for rebuilding each pose with
    them along its own bone directions (`rebuild_with_lengths`). A person's bones do not
    change length within a clip, while a monocular lifter predicts them anew on every frame.

    `push(t, joints, item)` takes one frame of the track in timestamp order (joints (17, 3) mm,
    None or non-finite for a frame without a usable pose) with any payload `item`; it returns
    the (item, lengths) pairs that became ready, in order: lengths (16,) mm in BONES order,
    or None for a frame without a pose. A frame is ready once a frame `lookahead_s` after it
    was pushed (at once when causal), or at `flush()`. Generic in the payload so the app
    (PoseFrames, realtime.sequence) and the evaluation (arrays, `fixed_bones`) share it."""

    def __init__(self, config: BodyConfig = BodyConfig()) -> None:
        self.config = config
        self._samples: deque[tuple[float, np.ndarray]] = deque()  # (t, bone lengths) of the current track
        self._pending: deque[tuple[float, object, bool]] = deque()
        self._first_t: float | None = None  # the current track's first pose
        self._last_t: float | None = None   # its latest pose
        self._now = -math.inf
        self._fixed: np.ndarray | None = None  # the settled body

    def push(self, t: float, joints: np.ndarray | None, item: object) -> list[tuple[object, np.ndarray | None]]:
        t = float(t)
        if t < self._now:
            raise ValueError(f"frames must come in timestamp order: {t} after {self._now}")
        out: list[tuple[object, np.ndarray | None]] = []
        has_pose = joints is not None and bool(np.isfinite(joints).all())
        if has_pose:
            if self._last_t is not None and t - self._last_t > self.config.reset_gap_s:
                out += self.flush()  # the old track's frames, with its own body; then a new one
            if self._first_t is None:
                self._first_t = t
            self._last_t = t
            if self._fixed is None:
                self._samples.append((t, bone_lengths(np.asarray(joints, np.float64))))
        self._pending.append((t, item, has_pose))
        self._now = t
        return out + self._release(force=False)

    def flush(self) -> list[tuple[object, np.ndarray | None]]:
        """Every held frame (end of stream); the next pose starts a new body."""
        out = self._release(force=True)
        self._samples.clear()
        self._first_t = self._last_t = None
        self._fixed = None
        return out

    def _release(self, force: bool) -> list[tuple[object, np.ndarray | None]]:
        out = []
        look = self.config.lookahead_s
        while self._pending and (force or self._pending[0][0] + look <= self._now + 1e-9):
            t, item, has_pose = self._pending.popleft()
            out.append((item, self._lengths(t) if has_pose else None))
        horizon = (self._pending[0][0] if self._pending else self._now) - self.config.past_s
        if self._fixed is None:
            while self._samples and self._samples[0][0] < horizon:
                self._samples.popleft()
        return out

    def _lengths(self, t: float) -> np.ndarray:
        if self._fixed is not None:
            return self._fixed
        c = self.config
        near = [v for s, v in self._samples if t - c.past_s <= s <= t + c.lookahead_s]
        med = np.median(np.stack(near), axis=0)
        if c.symmetric:
            med = 0.5 * (med + med[_MIRROR])
        if c.settle_s is not None and self._samples[-1][0] - self._first_t >= c.settle_s:
            self._fixed = med
            self._samples.clear()
        return med


# The forms the app uses, chosen on Human3.6M S8 held out (docs/realtime_temporal.md).
# Files: the median over the track so far and two seconds ahead, fixed for the rest of the
# track once it covers four seconds. Live (causal, when asked for): the running median of
# the last four seconds. Both start a new body after a loss of over a second, as the root
# trajectory filter restarts (realtime.trajectory).
FILE_BODY = BodyConfig(lookahead_s=2.0, settle_s=4.0)
LIVE_BODY = BodyConfig(lookahead_s=0.0, past_s=4.0)


def with_body(pf: PoseFrame, lengths: np.ndarray | None) -> PoseFrame:
    """The PoseFrame rebuilt with a body's bone lengths (16,) mm along its own bones (its
    root-relative joints; the root translation is kept); as is when lengths is None."""
    if lengths is None or not pf.valid:
        return pf
    return dataclasses.replace(pf, joints_mm=rebuild_with_lengths(pf.joints_mm, lengths).astype(np.float32))


def fixed_bones(joints: np.ndarray, times_s: np.ndarray, config: BodyConfig = BodyConfig()) -> np.ndarray:
    """`TrackBody` over one track given as arrays: joints (N, 17, 3) mm (root-relative; a
    frame with a non-finite joint is left as is) at times_s (N,) seconds, increasing. Returns
    (N, 17, 3) float64 mm, every pose rebuilt with its body's lengths along its own bones."""
    joints = np.asarray(joints, np.float64)
    body = TrackBody(config)
    out = joints.copy()
    ready = [r for k in range(len(joints)) for r in body.push(float(times_s[k]), joints[k], k)]
    for k, lengths in ready + body.flush():
        if lengths is not None:
            out[k] = rebuild_with_lengths(joints[k], lengths)
    return out


@dataclasses.dataclass(frozen=True)
class SmootherConfig:
    """Settings of `PoseSmoother` (see the module docstring for the One Euro parameters).
    `bones_window` = 0 turns the bone-length stabiliser off."""

    min_cutoff: float = DEFAULT_MIN_CUTOFF
    beta: float = DEFAULT_BETA
    d_cutoff: float = DEFAULT_D_CUTOFF
    max_gap_s: float = DEFAULT_MAX_GAP_S
    bones_window: int = 60


class PoseSmoother:
    """The post-lifting stage on `PoseFrame`s: bone lengths stabilised, then the root-relative
    shape (joints_mm - joints_mm[pelvis]) and the camera-space root translation
    (translation_mm) One-Euro filtered, each with its own state: the root's depth is far
    noisier than the limbs, and must not shake the skeleton's shape. Output joints_mm are
    root-relative (pelvis at 0), as everywhere. An invalid
    frame passes through unchanged and resets the One Euro state; a gap longer than
    `max_gap_s` resets everything, bone lengths included (it may be someone else).
    Causal, one call per frame in timestamp order; time from `PoseFrame.timestamp_s`."""

    def __init__(self, config: SmootherConfig = SmootherConfig()) -> None:
        self.config = config
        self._joints = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
        self._trans = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
        self._bones = BoneLengthStabilizer(config.bones_window) if config.bones_window > 0 else None
        self._last_valid_t: float | None = None

    def reset(self) -> None:
        self._joints.reset()
        self._trans.reset()
        if self._bones is not None:
            self._bones.reset()
        self._last_valid_t = None

    def __call__(self, pf: PoseFrame) -> PoseFrame:
        if not pf.valid:
            self._joints.reset()
            self._trans.reset()
            return pf
        t = pf.timestamp_s
        if self._last_valid_t is not None and (t - self._last_valid_t > self.config.max_gap_s or t < self._last_valid_t):
            self.reset()
        self._last_valid_t = t
        joints = np.asarray(pf.joints_mm, np.float64)
        rel = joints - joints[ROOT]
        if self._bones is not None:
            rel = self._bones(rel)
        rel = self._joints(rel, t)
        trans = np.asarray(pf.translation_mm, np.float64)
        if np.isfinite(trans).all():
            trans = self._trans(trans, t)
        else:
            self._trans.reset()
        return dataclasses.replace(pf, joints_mm=rel.astype(np.float32), translation_mm=trans.astype(np.float32))
