"""Several people (`--people N`): MediaPipe with num_poses = N -> identities -> the lifter
batched over the people -> one PoseFrame per frame carrying everyone.

    detect(frame) -> PeopleDetected   MediaPipe (every pose it finds), an appearance
                                      descriptor per person, and realtime.tracker's ids
    lift(people)  -> PoseFrame        every person lifted in one batch (one lifter call per
                                      frame), each placed in camera space by its own metric
                                      root solve from the camera intrinsics: the people's
                                      relative positions and distances are metric
`PerTrack(factory)` runs a per-person stage (the smoother, a filter) with one state per track
id, so each person keeps their own smoothing and history; a track unseen for `forget_s` is
forgotten.

The output PoseFrame is the person with the lowest track id, the others in `others`
(realtime.frames.PoseFrame.from_people): single-person outputs keep working on it, person-aware
ones iterate `PoseFrame.people`.

The detector runs in IMAGE mode (its person detector on every frame): in VIDEO mode
MediaPipe's landmark tracker, once it follows someone, stops looking for anyone else.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from realtime.estimator import Detected, PoseEstimator
from realtime.frames import Frame, PoseFrame
from realtime.tracker import Observation, PersonTracker, TrackerConfig, appearance_descriptor

DEFAULT_FORGET_S = 5.0


@dataclass(frozen=True)
class PeopleDetected:
    """One frame's people, what crosses detect -> lift: each a `Detected` with its track_id
    (usable detections only, in track id order), and the frame's detect timings."""

    index: int
    timestamp_s: float
    image_size: tuple[int, int]
    people: tuple[Detected, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)


class PeopleEstimator:
    """detect/lift for several people, on a PoseEstimator (its detector must return every
    person: num_poses = N, IMAGE mode) and a PersonTracker. Not thread-safe per half: one
    thread detects (the tracker sees frames in order), one lifts."""

    def __init__(self, estimator: PoseEstimator, tracker: PersonTracker | None = None,
                 appearance: bool = True) -> None:
        self.est = estimator
        self.tracker = tracker if tracker is not None else PersonTracker(TrackerConfig())
        self.appearance = appearance

    def close(self) -> None:
        self.est.close()

    def __enter__(self) -> "PeopleEstimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend_name(self) -> str:
        return self.est.backend_name

    def detect(self, frame: Frame) -> PeopleDetected:
        h, w = frame.image.shape[:2]
        t0 = time.perf_counter()
        found = [d for d in self.est.detector.detect_people(frame.image, frame.timestamp_s)
                 if np.isfinite(d.joints_2d_px).all()]
        t1 = time.perf_counter()
        obs = [Observation(d.joints_2d_px, d.confidence,
                           appearance_descriptor(frame.image, d.joints_2d_px, d.confidence) if self.appearance else None)
               for d in found]
        ids = self.tracker.update(obs, frame.timestamp_s)
        t2 = time.perf_counter()
        timings = {"detect": (t1 - t0) * 1000.0, "track": (t2 - t1) * 1000.0}
        image = frame.image if self.est.needs_image else None
        people = sorted((Detected(frame.index, frame.timestamp_s, (int(w), int(h)), d, timings, image, track_id=tid)
                         for d, tid in zip(found, ids) if tid is not None), key=lambda d: d.track_id)
        return PeopleDetected(frame.index, frame.timestamp_s, (int(w), int(h)), tuple(people), timings)

    def lift(self, pd: PeopleDetected) -> PoseFrame:
        poses = self.est.lift_many(list(pd.people))
        timings = dict(poses[0].timings_ms) if poses else dict(pd.timings_ms)
        return PoseFrame.from_people(poses, pd.index, pd.timestamp_s, pd.image_size, timings)

    def process(self, frame: Frame) -> PoseFrame:
        return self.lift(self.detect(frame))


class PerTrack:
    """A per-person stage (PoseFrame -> PoseFrame, stateful: a smoother, a filter) applied to
    every person of a frame with one instance per track id, made by `factory()` on the
    track's first frame. Instances of tracks unseen for `forget_s` seconds are dropped (a
    returning id starts afresh, as a single-person stage does after a long gap)."""

    def __init__(self, factory: Callable[[], Callable[[PoseFrame], PoseFrame]],
                 forget_s: float = DEFAULT_FORGET_S) -> None:
        self.factory = factory
        self.forget_s = float(forget_s)
        self._stages: dict[int, Callable[[PoseFrame], PoseFrame]] = {}
        self._seen: dict[int, float] = {}

    def __call__(self, pf: PoseFrame) -> PoseFrame:
        t = pf.timestamp_s
        for tid in [k for k, s in self._seen.items() if t - s > self.forget_s or t < s]:
            del self._stages[tid], self._seen[tid]
        out = []
        for person in pf.people:
            stage = self._stages.get(person.track_id)
            if stage is None:
                stage = self._stages[person.track_id] = self.factory()
            self._seen[person.track_id] = t
            out.append(replace(stage(person), others=()))
        return PoseFrame.from_people(out, pf.index, pf.timestamp_s, pf.image_size, pf.timings_ms)
