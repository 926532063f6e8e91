"""Data that crosses pipeline stages: frozen dataclasses with documented shapes and units."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image. image: (H, W, 3) uint8 RGB. timestamp_s: capture time (monotonic
    seconds for live sources, presentation time for files). index: 0-based frame number."""

    index: int
    timestamp_s: float
    image: np.ndarray


@dataclass(frozen=True)
class PoseFrame:
    """The 3D result for one frame.

    valid:        False when no person was found (arrays then hold NaN).
    joints_mm:    (17, 3) float32 millimetres, camera axes (x right, y down, z forward),
                  always root-relative (pelvis = 0).
    translation_mm: (3,) float32 camera-space pelvis position (NaN if unknown): the joints
                  in camera space are joints_mm + translation_mm.
    joints_2d_px: (17, 2) float32 image pixels.
    confidence:   (17,) float32 in [0, 1] (detector visibility).
    fbi:          (14, 3) float32 FBI state probabilities (forward, backward, parallel), or None.
    timings_ms:   per-stage durations, e.g. {"detect": 28.1, "lift": 0.3}.
    image_size:   (width, height) of the source frame.
    track_id:     identity of the person across frames (0 in single-person use).
    landmarks_px: (33, 2) float32 MediaPipe's raw landmarks in image pixels, or None.
    landmarks_world_mm: (33, 3) float32 MediaPipe's world landmarks, millimetres, hip-centred,
                  camera axes (x right, y down, z forward), or None.
    landmarks_visibility: (33,) float32 MediaPipe visibility in [0, 1], or None.
    The landmarks keep what the 17 joints drop (heels, toes, hands, face) for the outputs
    that want them.
    cold_start:   True when a temporal lifter produced this pose without a full window of
                  real 2D around it: the first frames of a person's track (or after the
                  person was lost for longer than the window), and, for a centred model, the
                  last frames of a file. The missing part of the window repeats the nearest
                  detection (edge padding), so the pose is closer to a single-frame estimate,
                  a little less steady and accurate. Always False for single-frame models.
    others:       the other people of the same frame (several people, `--people N`), each a
                  PoseFrame of its own with its own track_id (and `others` empty), ordered by
                  track_id; all share this frame's index, timestamp and image size, and their
                  translation_mm are in the same camera space, so their relative positions are
                  metric. This frame is the person with the lowest track_id found in it (an
                  empty frame when nobody was). Single-person code reads this frame alone;
                  person-aware code iterates `people`.
    """

    index: int
    timestamp_s: float
    valid: bool
    joints_mm: np.ndarray
    translation_mm: np.ndarray
    joints_2d_px: np.ndarray
    confidence: np.ndarray
    image_size: tuple[int, int]
    fbi: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    track_id: int = 0
    landmarks_px: np.ndarray | None = None
    landmarks_world_mm: np.ndarray | None = None
    landmarks_visibility: np.ndarray | None = None
    cold_start: bool = False
    others: tuple["PoseFrame", ...] = ()

    @property
    def people(self) -> tuple["PoseFrame", ...]:
        """Every valid person of the frame: this one (if valid) then `others`."""
        return tuple(p for p in (self, *self.others) if p.valid)

    def person(self, track_id: int | None) -> "PoseFrame":
        """The person with this track id in the frame (None: this frame itself, the one with
        the lowest id), alone (no `others`); an empty frame when they are not in it."""
        if track_id is None:
            return replace(self, others=()) if self.others else self
        for p in self.people:
            if p.track_id == track_id:
                return p if p is self and not self.others else replace(p, others=(), timings_ms=self.timings_ms)
        return PoseFrame.empty(self.index, self.timestamp_s, self.image_size, self.timings_ms)

    @staticmethod
    def from_people(people: "list[PoseFrame] | tuple[PoseFrame, ...]", index: int, timestamp_s: float,
                    image_size: tuple[int, int], timings_ms: dict[str, float] | None = None) -> "PoseFrame":
        """One frame holding `people` (valid PoseFrames of this frame, any order): the lowest
        track_id first, carrying the rest in `others` and the frame's timings; an empty
        frame when the list is empty."""
        ordered = sorted((p for p in people if p.valid), key=lambda p: p.track_id)
        if not ordered:
            return PoseFrame.empty(index, timestamp_s, image_size, timings_ms)
        first, rest = ordered[0], tuple(replace(p, others=()) for p in ordered[1:])
        return replace(first, others=rest, timings_ms=dict(timings_ms if timings_ms is not None else first.timings_ms))

    @staticmethod
    def empty(index: int, timestamp_s: float, image_size: tuple[int, int],
              timings_ms: dict[str, float] | None = None) -> "PoseFrame":
        """A frame with no person: NaN arrays and valid=False (never dropped)."""
        nan = np.float32(np.nan)
        return PoseFrame(index, timestamp_s, False, np.full((17, 3), nan, np.float32), np.full(3, nan, np.float32),
                         np.full((17, 2), nan, np.float32), np.zeros(17, np.float32), image_size, None,
                         dict(timings_ms or {}))
