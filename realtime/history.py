"""The 2D history of one person, resampled by timestamp to a temporal model's frame spacing.

A temporal lifter (engines.temporal) reads a window of `window` 2D frames `spacing_ms` apart,
ending at its reference frame (causal) or centred on it. Cameras and files deliver frames at
25-60 fps, with uneven timestamps (variable-rate files, a live pipeline dropping the frames it
cannot keep up with) and gaps (frames where nobody was found). `History` keeps the person's
recent detections with their timestamps and answers `window(t_ref)`: the 2D at
t_ref + spacing * offset for every offset of the window, linearly interpolated between the
two detections around each sample time (the samples are the model's per-frame inputs, e.g.
engines.normalize.features_2d of the frame's 2D). Sample times outside the history take its first or
last detection: the edge padding the models were trained with at the ends of a sequence.
Such a window is *padded*: the person has not been seen for the whole window (the first
frames of a track, after a reset, or the last frames of a file); `SequenceLifter` marks the
frame (PoseFrame.cold_start).

Never a future frame for a causal model: its window ends at t_ref and `window` interpolates
only between detections at or before each sample time, and the live caller never holds a
detection newer than the frame it lifts. For a centred model the caller waits until the
history reaches t_ref + lookahead_s (or the stream ends) before asking.

A detection arriving more than `max_gap_s` after the previous one starts a new history
(`push` returns True): the person was lost for longer than the window, and interpolating
across the gap would invent motion. Numpy only.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from engines.errors import UserError
from engines.temporal import FRAME_INPUT, WindowSpec, window_offsets

# Sample times within this much of the history's ends count as covered (timestamps of
# files are index / fps and carry float rounding; a millisecond is far below any spacing).
EDGE_TOLERANCE_S = 1e-3


@dataclass(frozen=True)
class TemporalSpec:
    """What a temporal lifter reads: `window` frames `spacing_s` apart, ending at the
    reference frame (causal) or centred on it."""

    window: int
    spacing_s: float
    causal: bool

    def __post_init__(self) -> None:
        window_offsets(self.window, self.causal)  # ValueError on an impossible window
        if not self.spacing_s > 0:
            raise ValueError(f"spacing must be positive, got {self.spacing_s} s")

    @staticmethod
    def from_metadata(meta: Mapping[str, Any]) -> "TemporalSpec | None":
        """The spec in a model's metadata, read as engines.temporal.WindowSpec (the one window
        contract: window, causal, spacing_ms, frame input), or None for a single-frame model.
        UserError for a model whose frames take more than engines.normalize.features_2d (image
        cues), which this history does not compute."""
        window = meta.get("window")
        if window is None or int(window) <= 1:
            return None
        spec = WindowSpec.from_metadata({**meta, "causal": meta.get("causal", False)})
        if spec.frame_input != FRAME_INPUT or spec.frame_cues:
            raise UserError(f"{meta.get('source_file', 'model')}: its frames take {spec.frame_input}"
                            f"{' with ' + ', '.join(spec.frame_cues) if spec.frame_cues else ''}; "
                            f"the app feeds temporal models {FRAME_INPUT} only")
        return TemporalSpec(spec.window, spec.spacing_ms / 1000.0, spec.causal)

    @property
    def offsets_s(self) -> np.ndarray:
        """(window,) float64 sample times relative to the reference frame, seconds."""
        return window_offsets(self.window, self.causal).astype(np.float64) * self.spacing_s

    @property
    def lookahead_s(self) -> float:
        """How far past its reference frame the window reaches (0 for a causal model)."""
        return float(self.offsets_s[-1])

    @property
    def lookback_s(self) -> float:
        """How far before its reference frame the window reaches."""
        return float(-self.offsets_s[0])

    @property
    def span_s(self) -> float:
        return self.lookback_s + self.lookahead_s


class History:
    """Timestamped per-frame samples of one person (any fixed shape, e.g. a (37,) feature
    vector) and their resampling onto a TemporalSpec's window. Timestamps must increase."""

    def __init__(self, spec: TemporalSpec, max_gap_s: float | None = None) -> None:
        self.spec = spec
        self.max_gap_s = spec.span_s if max_gap_s is None else float(max_gap_s)
        self._t: deque[float] = deque()
        self._x: deque[np.ndarray] = deque()

    def __len__(self) -> int:
        return len(self._t)

    @property
    def first_s(self) -> float | None:
        return self._t[0] if self._t else None

    @property
    def last_s(self) -> float | None:
        return self._t[-1] if self._t else None

    def reset(self) -> None:
        self._t.clear()
        self._x.clear()

    def gap_too_long(self, t: float) -> bool:
        """Would a detection at t start a new history (lost for longer than max_gap_s)?"""
        return bool(self._t) and t - self._t[-1] > self.max_gap_s

    def push(self, t: float, sample: np.ndarray) -> bool:
        """Add a detection at time t (s). Returns True when it started a new history (the
        previous detection is more than max_gap_s older). A timestamp not after the last one
        replaces that last sample (a duplicate frame)."""
        x = np.asarray(sample, np.float64)
        restarted = self.gap_too_long(t)
        if restarted:
            self.reset()
        if self._t and t <= self._t[-1]:
            if t < self._t[-1]:
                raise ValueError(f"timestamps must increase: {t} after {self._t[-1]}")
            self._x[-1] = x
            return restarted
        self._t.append(float(t))
        self._x.append(x)
        return restarted

    def forget_before(self, t: float) -> None:
        """Drop samples no window at or after reference time t can need (one sample before
        t - lookback_s stays, to interpolate from)."""
        keep_from = t - self.spec.lookback_s
        while len(self._t) > 1 and self._t[1] <= keep_from:
            self._t.popleft()
            self._x.popleft()

    def window(self, t_ref: float) -> tuple[np.ndarray, bool]:
        """The window of reference time t_ref: (window, *sample shape) float64, and whether
        it is padded (reaches before the first or after the last sample)."""
        if not self._t:
            raise ValueError("empty history")
        ts = np.fromiter(self._t, np.float64, len(self._t))
        xs = np.stack(self._x)
        q = t_ref + self.spec.offsets_s
        padded = bool(q[0] < ts[0] - EDGE_TOLERANCE_S or q[-1] > ts[-1] + EDGE_TOLERANCE_S)
        return resample(ts, xs, q), padded


def resample(ts: np.ndarray, xs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear interpolation of samples xs (N, ...) at increasing times ts (N,) onto times q
    (M,) -> (M, ...); times outside [ts[0], ts[-1]] take the first / last sample."""
    ts, q = np.asarray(ts, np.float64), np.asarray(q, np.float64)
    xs = np.asarray(xs, np.float64)
    if len(ts) == 1:
        return np.repeat(xs, len(q), axis=0)
    qc = np.clip(q, ts[0], ts[-1])
    hi = np.clip(np.searchsorted(ts, qc, side="right"), 1, len(ts) - 1)
    lo = hi - 1
    w = ((qc - ts[lo]) / (ts[hi] - ts[lo])).reshape(-1, *([1] * (xs.ndim - 1)))
    return xs[lo] * (1.0 - w) + xs[hi] * w
