"""Lifting over a sequence of detections: one person's temporal context, in one object.

`SequenceLifter` turns `Detected`s (realtime.estimator: one frame's 2D, in timestamp order)
into `PoseFrame`s, one per detection, in the same order:
    push(detected) -> the PoseFrames that became ready; flush() -> the rest, at the end.
It owns everything that depends on a person's past (and, for files, future) frames: the 2D
history resampled to the temporal model's spacing (realtime.history), the frames a centred
model holds back until the frames after them have arrived, the track's body (its bone
lengths, fixed: realtime.filters.TrackBody) and the root trajectory filter
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
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from realtime.filters import BodyConfig, TrackBody, with_body
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


@dataclass
class LiftJob:
    """Frames of one person that became ready to lift, in order, and what the model needs
    for the usable ones: `windows` (len(people), window, D) of per-frame inputs with their
    `padded` flags for a temporal model, None for a single-frame one (its input is each
    detection). Made by `SequenceLifter.submit`, lifted by `lift_jobs`."""

    ready: list[Detected]
    people: list[Detected]
    windows: np.ndarray | None = None
    padded: tuple[bool, ...] = ()


# The model's answer for one LiftJob: root-relative joints (len(people), 17, 3) float32 mm,
# FBI (14, 3) or None per person, and the lift time per person in ms.
Lifted = tuple[np.ndarray, list, float]


def lift_jobs(estimator: PoseEstimator, jobs: list[LiftJob]) -> list[Lifted]:
    """The model on every job's usable detections in one batch (one call for all of them; a
    single-frame model: one call per frame index among them, its people batched), split back
    per job. Several people's SequenceLifters share this call (realtime.people)."""
    t0 = time.perf_counter()
    counts = [len(j.people) for j in jobs]
    total = sum(counts)
    if total == 0:
        return [(np.zeros((0, 17, 3), np.float32), [], 0.0) for _ in jobs]
    people = [d for j in jobs for d in j.people]
    if any(j.windows is not None for j in jobs):
        rel = estimator.poses_of_windows(np.concatenate([j.windows for j in jobs if j.people]))
        fbi: list = [None] * total
    else:
        by_frame: dict[int, list[int]] = {}
        for k, d in enumerate(people):
            by_frame.setdefault(d.index, []).append(k)
        rel = np.zeros((total, 17, 3), np.float32)
        fbi = [None] * total
        for ks in by_frame.values():
            r, f = estimator.poses_of([people[k] for k in ks])
            for k, rk, fk in zip(ks, r, f):
                rel[k], fbi[k] = rk, fk
    ms = (time.perf_counter() - t0) * 1000.0 / total
    out, start = [], 0
    for n in counts:
        out.append((rel[start:start + n], fbi[start:start + n], ms))
        start += n
    return out


class SequenceLifter:
    """One person's lifting state (module docstring). Not thread-safe: one thread pushes.

    `push(d)` is `submit(d)` (the history's part: which frames are ready, their windows)
    followed by `complete(jobs, lift_jobs(estimator, jobs))` (the model's poses placed in
    camera space, the root filter); several people's lifters submit, share one `lift_jobs`
    call, then complete (realtime.people)."""

    def __init__(self, estimator: PoseEstimator, root: RootFilterConfig | None = None,
                 body: BodyConfig | None = None) -> None:
        """root: the root filter's settings (None: each frame's own solve); body: the track's
        fixed bone lengths (realtime.filters.TrackBody; None: each pose as the model gives
        it)."""
        self.est = estimator
        self.spec = estimator.temporal
        self.history = History(self.spec) if self.spec is not None else None
        self.root = RootTrajectory(estimator.camera, root) if root is not None and estimator.trajectory else None
        self.body = TrackBody(body) if body is not None else None
        self._pending: deque[Detected] = deque()
        self._now = -np.inf

    def push(self, d: Detected) -> list[PoseFrame]:
        jobs = self.submit(d)
        return self.complete(jobs, lift_jobs(self.est, jobs))

    def flush(self) -> list[PoseFrame]:
        """Everything still held (end of stream), then the root filter's buffer."""
        jobs = self._take_ready(force=True)
        out = self.complete(jobs, lift_jobs(self.est, jobs))
        if self.body is not None:
            out += self._rooted(with_body(pf, lengths) for pf, lengths in self.body.flush())
        if self.root is not None:
            out += self.root.flush()
        if self.history is not None:
            self.history.reset()
        return out

    def submit(self, d: Detected) -> list[LiftJob]:
        """Take one detection (timestamp order); returns the frames that became ready."""
        if d.timestamp_s < self._now:
            raise ValueError(f"detections must come in timestamp order: {d.timestamp_s} after {self._now}")
        jobs: list[LiftJob] = []
        if self.history is not None and usable(d):
            if self.history.gap_too_long(d.timestamp_s):
                jobs += self._take_ready(force=True)  # the old track ends: its frames padded at its end
            self.history.push(d.timestamp_s, self.est.frame_input(d))
        self._pending.append(d)
        self._now = d.timestamp_s
        return jobs + self._take_ready()

    def complete(self, jobs: list[LiftJob], lifted: list[Lifted]) -> list[PoseFrame]:
        """The PoseFrames of submitted jobs (in order) from the model's answers (`lift_jobs`):
        empty ones for nobody, through the root filter when there is one."""
        out: list[PoseFrame] = []
        for job, (rel, fbi, ms) in zip(jobs, lifted, strict=True):
            poses = {id(d): k for k, d in enumerate(job.people)}
            for d in job.ready:
                k = poses.get(id(d))
                if k is None:
                    pf = PoseFrame.empty(d.index, d.timestamp_s, d.image_size, d.timings_ms)
                else:
                    cold = bool(job.padded[k]) if job.windows is not None else False
                    pf = self.est.pose_frame(d, rel[k], fbi[k], dict(d.timings_ms, lift=ms), cold_start=cold)
                if self.body is None:
                    out += self._rooted([pf])
                else:
                    joints = pf.joints_mm if pf.valid else None
                    out += self._rooted(with_body(p, lengths) for p, lengths in self.body.push(d.timestamp_s, joints, pf))
        return out

    def _rooted(self, poses: Iterable[PoseFrame]) -> list[PoseFrame]:
        """Poses through the root filter, when there is one."""
        if self.root is None:
            return list(poses)
        return [q for pf in poses for q in self.root.push(pf)]

    def _waits(self, d: Detected) -> bool:
        """Must this frame wait for later frames (a centred model's lookahead)?"""
        return (self.spec is not None and not self.spec.causal and usable(d)
                and self._now + READY_TOLERANCE_S < d.timestamp_s + self.spec.lookahead_s)

    def _take_ready(self, force: bool = False) -> list[LiftJob]:
        ready: list[Detected] = []
        while self._pending and (force or not self._waits(self._pending[0])):
            ready.append(self._pending.popleft())
        if not ready:
            return []
        people = [d for d in ready if usable(d)]
        job = LiftJob(ready, people)
        if self.history is not None:
            if people:  # the windows now, before the history forgets what they read
                windows, padded = zip(*(self.history.window(d.timestamp_s) for d in people))
                job.windows, job.padded = np.stack(windows), tuple(bool(p) for p in padded)
            self.history.forget_before(self._pending[0].timestamp_s if self._pending else self._now)
        return [job]


def hold_s(spec: Any, root: RootFilterConfig | None = None, body: BodyConfig | None = None) -> float:
    """How long a SequenceLifter may hold a frame back, in seconds of later frames: a centred
    model's lookahead, then the body's lookahead, then the root filter's lag (they run in
    turn, each waiting on the frames the one before has answered); 0 when it answers at
    once. A caller keeping something per frame until its pose comes out (the images a
    preview draws on) keeps this much of the stream."""
    held = spec.lookahead_s if spec is not None and not spec.causal else 0.0
    if body is not None:
        held += body.lookahead_s
    if root is not None:
        held += root.lag_s
    return float(held)


def lift_sequence(detections: Iterable[Detected], estimator: PoseEstimator,
                  root: RootFilterConfig | None = None, body: BodyConfig | None = None) -> Iterator[PoseFrame]:
    """Every detection (timestamp order) lifted with its temporal context: one PoseFrame per
    detection, in order. A pure function of the detections, their timestamps and image sizes
    (for a given model, intrinsics, root and body settings)."""
    lifter = estimator.sequence(root, body)
    for d in detections:
        yield from lifter.push(d)
    yield from lifter.flush()
