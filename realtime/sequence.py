"""Lifting over a sequence of detections: one person's temporal context, in one object.

`SequenceLifter` turns `Detected`s (realtime.estimator: one frame's 2D, in timestamp order)
into `PoseFrame`s, one per detection, in the same order:
    push(detected) -> the PoseFrames that became ready; flush() -> the rest, at the end.
It owns everything that depends on a person's past (and, for files, future) frames: the 2D
history resampled to the temporal model's spacing (realtime.history), the frames a centred
model holds back until the frames after them have arrived, and the root trajectory filter
(realtime.trajectory.RootTrajectory). One instance per tracked person.

    single-frame model   each frame lifted alone, at once
    causal temporal      each frame lifted at once from the history up to it (live)
    centred temporal     each frame lifted once the history reaches lookahead_s past it (or
                         the person was lost, or the stream ended: the window is then edge-padded)
Frames without a person come out empty (valid=False) in their place. A window that reaches
past the person's history is edge-padded and its frame marked `cold_start` (the first frames
of a track, after a loss longer than the window, the last frames of a file).

`lift_sequence(detections, estimator)` is the lifting of a whole sequence as a pure function of
the detections and their timestamps: `posestream video` runs exactly this after detecting the
frames (threaded, or not), so a batch runner may detect 2D in parallel chunks, concatenate the
detections in order and lift them once with identical results.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Iterator

import numpy as np

from realtime.frames import PoseFrame
from realtime.history import History
from realtime.trajectory import RootFilterConfig, RootTrajectory

# Detected and PoseEstimator (realtime.estimator) appear here only as annotations: the
# estimator builds SequenceLifters, so this module does not import it back.
Detected = Any
PoseEstimator = Any


def usable(d: Detected) -> bool:
    """A person with finite 2D joints (a detection the lifters can take)."""
    return d.detection is not None and bool(np.isfinite(d.detection.joints_2d_px).all())

# A centred frame is ready when the newest timestamp is within this of its lookahead (float
# rounding of index / fps timestamps).
READY_TOLERANCE_S = 1e-6


class SequenceLifter:
    """One person's lifting state (module docstring). Not thread-safe: one thread pushes."""

    def __init__(self, estimator: PoseEstimator, root: RootFilterConfig | None = None) -> None:
        self.est = estimator
        self.spec = estimator.temporal
        self.history = History(self.spec) if self.spec is not None else None
        self.root = RootTrajectory(estimator.camera, root) if root is not None and estimator.trajectory else None
        self._pending: deque[Detected] = deque()
        self._now = -np.inf

    def push(self, d: Detected) -> list[PoseFrame]:
        if d.timestamp_s < self._now:
            raise ValueError(f"detections must come in timestamp order: {d.timestamp_s} after {self._now}")
        out: list[PoseFrame] = []
        if self.history is not None and usable(d):
            if self.history.gap_too_long(d.timestamp_s):
                out += self._lift_ready(force=True)  # the old track ends: its frames padded at its end
            self.history.push(d.timestamp_s, self.est.frame_input(d))
        self._pending.append(d)
        self._now = d.timestamp_s
        return out + self._lift_ready()

    def flush(self) -> list[PoseFrame]:
        """Everything still held (end of stream), then the root filter's buffer."""
        out = self._lift_ready(force=True)
        if self.root is not None:
            out += self.root.flush()
        if self.history is not None:
            self.history.reset()
        return out

    def _waits(self, d: Detected) -> bool:
        """Must this frame wait for later frames (a centred model's lookahead)?"""
        return (self.spec is not None and not self.spec.causal and usable(d)
                and self._now + READY_TOLERANCE_S < d.timestamp_s + self.spec.lookahead_s)

    def _lift_ready(self, force: bool = False) -> list[PoseFrame]:
        ready: list[Detected] = []
        while self._pending and (force or not self._waits(self._pending[0])):
            ready.append(self._pending.popleft())
        if not ready:
            return []
        lifted = self._lift(ready)
        if self.history is not None:
            self.history.forget_before(self._pending[0].timestamp_s if self._pending else self._now)
        if self.root is None:
            return lifted
        return [q for pf in lifted for q in self.root.push(pf)]

    def _lift(self, ready: list[Detected]) -> list[PoseFrame]:
        """PoseFrames of `ready` (in order): empty ones for nobody, the model's poses otherwise."""
        t0 = time.perf_counter()
        people = [d for d in ready if usable(d)]
        poses: dict[int, tuple[np.ndarray, np.ndarray | None, bool]] = {}
        if self.history is not None and people:
            windows, padded = zip(*(self.history.window(d.timestamp_s) for d in people))
            rel = self.est.poses_of_windows(np.stack(windows))  # one batch
            for d, r, cold in zip(people, rel, padded):
                poses[id(d)] = (r, None, cold)
        else:
            for d in people:
                rel, fbi = self.est.pose_of(d)
                poses[id(d)] = (rel, fbi, False)
        ms = (time.perf_counter() - t0) * 1000.0 / max(len(people), 1)
        out = []
        for d in ready:
            if id(d) not in poses:
                out.append(PoseFrame.empty(d.index, d.timestamp_s, d.image_size, d.timings_ms))
                continue
            rel, fbi, cold = poses[id(d)]
            out.append(self.est.pose_frame(d, rel, fbi, dict(d.timings_ms, lift=ms), cold_start=cold))
        return out


def lift_sequence(detections: Iterable[Detected], estimator: PoseEstimator,
                  root: RootFilterConfig | None = None) -> Iterator[PoseFrame]:
    """Every detection (timestamp order) lifted with its temporal context: one PoseFrame per
    detection, in order. A pure function of the detections, their timestamps and image sizes
    (for a given model, intrinsics and root settings)."""
    lifter = estimator.sequence(root)
    for d in detections:
        yield from lifter.push(d)
    yield from lifter.flush()
