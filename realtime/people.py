"""Several people (`--people N`): MediaPipe with num_poses = N -> identities -> each person
lifted with their own temporal context, the lifter batched over the people -> one PoseFrame
per frame carrying everyone.

    detect(frame)  -> PeopleDetected        MediaPipe (every pose it finds), an appearance
                                            descriptor per person, and realtime.tracker's ids
    sequence(root) -> PeopleSequenceLifter  push(PeopleDetected) -> the PoseFrames that became
                                            ready, flush() at the end
`PeopleSequenceLifter` keeps one realtime.sequence.SequenceLifter per track id: each person
has their own 2D history for a temporal model (a centred one holds each person's frames
until the window after them has arrived), their own cold start and their own root
trajectory filter. Their ready windows (or, for a single-frame model, their detections) go
to the model in one batch per frame (realtime.sequence.lift_jobs: one lifter call for
everyone), each pose placed in camera space by its own metric root solve from the camera
intrinsics: the people's relative positions and distances are metric. A track unseen for
`forget_s` is flushed and forgotten. Frames come out in order, each once every person in it
has been lifted.
`PerTrack(factory)` runs a per-person stage (the smoother, a filter) with one state per track
id, so each person keeps their own smoothing; a track unseen for `forget_s` is forgotten.

The output PoseFrame is the person with the lowest track id, the others in `others`
(realtime.frames.PoseFrame.from_people): single-person outputs keep working on it, person-aware
ones iterate `PoseFrame.people`.

The detector runs in IMAGE mode (its person detector on every frame): in VIDEO mode
MediaPipe's landmark tracker, once it follows someone, stops looking for anyone else.
MediaPipe's pose model is a single-person model: with num_poses = N it rarely returns more
than one person of a frame. So each person is looked for where they are: a square crop
around each track's predicted box (CROP_SCALE times its larger side, or the largest side its
box had over the last SIZE_MEMORY_S, so that a pose MediaPipe made of part of the person
does not shrink the next crop to that part) holds mostly that person, and MediaPipe finds
them there (as its own VIDEO mode follows one person through a region of interest). The
crops are searched nearest person first (lowest feet in the image), and in each crop every
other person is painted over along their skeleton (`painted_over`: bones, torso, head; boxes
would also hide someone hugging them): those found this frame where they were found, the
others where they are predicted, except where the person looked for is predicted to be
(`keep`). MediaPipe then sees one person, not a pose made of two. A person mostly behind
people found this frame (more than MAX_HIDDEN of their predicted body covered) is not
looked for: their crop would give the person in front; their track keeps its prediction
and is matched again when they come out. Of a crop's poses the one most like the
prediction is kept; a pose made on painted pixels (`on_paint`: a ghost) is refused.
New people are found every DISCOVER_EVERY frames (and while fewer than N are tracked) on the
whole image, then on square tiles of it (`discovery_tiles`: people small in the whole image
are larger for MediaPipe's person detector in a tile; a person cut by a tile's edge is
refused), with the people already found painted over, again and again until no one new
turns up or N are found. While fewer than N are tracked and nobody is lost (a lost track may
come back: it is looked for every frame), for longer than BACKOFF_AFTER_S, fewer people are
in view than asked for: the search waits 2, 4, 8, then DISCOVER_EVERY frames after each one
that finds nobody new, and on every frame where a crop missed its person (a clip of one
person under `--people 2` then costs about 1.4 MediaPipe calls a frame, not five). At most N
people are kept per frame, the longest-tracked first; a track is output once it has been
found on MIN_HITS frames (as SORT confirms tracks; those of the first MIN_HITS frames of a
stream at once), so a detection MediaPipe makes once (a ghost in the painted image, a half-hidden person's
stray pose) gives no identity of its own. Detection cost therefore grows with the
number of people: one MediaPipe call per tracked person per frame (and the discovery
calls), where MediaPipe alone with num_poses = N makes one call and misses most of them.
With `follow=True` a person whose predicted body no one else's meets is looked for by a
landmarker of their own in VIDEO mode on their crop (MediaPipe then follows them from their
last landmarks, relative to the crop, which moves with them, and skips its person detector:
a cheaper call); anyone overlapping someone goes through the IMAGE-mode search as above.
Faster, but its identities are less stable than the default's (docs/multiperson.md).
With `landmarks` (a realtime.landmark_runner.LandmarkRunner: MediaPipe's landmark model run
by us) the people seen last frame whose predicted body no one else's meets are looked for
by that model alone, all of them in one call per frame, each in the upright region their
predicted joints give (as BlazePose's landmark stage; people near them painted over); a
crop that holds nobody or a pose off the prediction sends the person to the crop search
above, as does any overlap. No person detector and no MediaPipe call for them: the
cheapest path, opt-in because identities on the dev scenes were not as good
(docs/multiperson.md).
With `workers` > 1 the MediaPipe calls that do not depend on one another run at once, each on
a landmarker of its own (MediaPipe releases the GIL while it runs): the crops of people whose
crop no one else's body meets (nothing to paint there), and the first search of the whole
image and of each tile for new people. A call made early is used only where the search, in
its order, would have made exactly that call (the same crop of the same image: nobody found
since who would be painted into it); else the search calls again. So the people found do not
depend on `workers`, only the time taken does.
With `complete` (COMPLETE by default) people behind others are output whole: a tracked
person found partly behind someone found in the same frame gets the joints that lie on the
bodies of the people in front, are unconfident, or are far off the track's prediction that
the other joints agree with, from that prediction re-anchored on the visible joints
(realtime.tracker.complete_pose); a tracked person not looked for because they are mostly
behind people found is output at their prediction. Only for a track seen whole within
COMPLETE_MAX_AGE_S, and for the outputs only: the tracker and the search keep MediaPipe's
poses. Completed joints carry confidence realtime.tracker.COMPLETED_CONFIDENCE exactly
(realtime.tracker.completed_joints), in every output that writes confidences.
"""
from __future__ import annotations

import os
import queue
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from realtime.estimator import Detected, PoseEstimator
from realtime.filters import BodyConfig
from realtime.frames import Frame, PoseFrame
from realtime.sequence import SequenceLifter, lift_jobs
from realtime.trajectory import RootFilterConfig
from realtime.tracker import (Observation, PersonTracker, TrackerConfig, appearance_descriptor, box_iou,
                              COMPLETED_CONFIDENCE, complete_pose, confident_joints, keypoint_box, oks)

DEFAULT_FORGET_S = 5.0
# MediaPipe's person-detection and presence thresholds with several people: people who stand
# close together or overlap score lower; 0.3 found both people of the shared two-person clip
# on 36 of its 72 frames, 0.5 on 27.
MIN_CONFIDENCE = 0.3
CROP_SCALE = 1.6         # crop side / the larger side of the track's predicted box
SIZE_MEMORY_S = 1.0      # a track's crop is at least as large as its box was over this long
CROP_MAX_LOST_S = 0.5    # tracks lost for longer are left to the discovery search
DISCOVER_EVERY = 10      # frames between whole-image searches for new people
BACKOFF_AFTER_S = 0.5    # fewer in view than asked for this long, nobody lost: search for new people less often
MIN_HITS = 3             # a track is output once found on this many frames (a one-off false detection is not)
MASK_GREY = 127          # the colour people already found are painted over with
BODY_WIDTH = 0.12        # painted bone thickness / the person's height
MAX_HIDDEN = 0.6         # a tracked person this much behind people found is not looked for (kept by prediction)
GHOST_PAINTED = 0.5      # a pose with more of its joints than this on painted pixels is a ghost
DUPLICATE_OKS = 0.5      # a person this close to one already found is that person again
BATCHED_MIN_IOU = 0.3    # a pose of the batched landmark model this far off its prediction is not the person
MAX_SEARCH_WORKERS = 4  # MediaPipe landmarkers searching at once (each holds its graph, ~tens of MB)
COMPLETE = True           # PeopleEstimator's `complete` when not given
COMPLETE_MAX_AGE_S = 1.0  # completion: only for a track seen whole this recently
COAST_MIN_SIDE = 0.7      # a person behind others is output at their prediction only when its box's larger
                          # side is this much of the largest their box had in SIZE_MEMORY_S (a pose of part
                          # of the person would give a box of that part)
TORSO = (11, 14, 1, 4)   # l_shoulder, r_shoulder, r_hip, l_hip: the torso quad, in order
HEAD = 10


def square_crop(box: np.ndarray, image_size: tuple[int, int], scale: float = CROP_SCALE, min_side: float = 0.0
                ) -> tuple[int, int, int, int] | None:
    """The square region (x0, y0, x1, y1) px, `scale` times the larger side of box (4,) (or
    of min_side px, if larger), centred on it and clipped to the image; None when it falls
    outside."""
    w, h = image_size
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    half = 0.5 * scale * max(box[2] - box[0], box[3] - box[1], min_side)
    x0, y0, x1, y1 = max(0, int(cx - half)), max(0, int(cy - half)), min(w, int(np.ceil(cx + half))), \
        min(h, int(np.ceil(cy + half)))
    return (x0, y0, x1, y1) if x1 - x0 >= 16 and y1 - y0 >= 16 else None


def discovery_tiles(image_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Square regions (x0, y0, x1, y1) px, the image's shorter side wide, overlapping and
    evenly spaced along its longer side from one end to the other (none for a square image):
    where new people are looked for after the whole image."""
    w, h = image_size
    side, length = min(w, h), max(w, h)
    if length - side < 16:
        return []
    n = int(np.ceil(length / side)) + 1
    starts = np.round(np.linspace(0, length - side, n)).astype(int)
    return [(int(a), 0, int(a) + side, h) if w >= h else (0, int(a), w, int(a) + side) for a in starts]


Skeleton = tuple[np.ndarray, np.ndarray]  # (17, 2) px keypoints, (17,) confidence


def skeleton_of(d) -> Skeleton:
    """The (keypoints, confidence) of a realtime.detector.Detection."""
    return np.asarray(d.joints_2d_px), np.asarray(d.confidence)


def _draw_body(mask: np.ndarray, uv: np.ndarray, conf: np.ndarray) -> None:
    """Draw one person's body into mask (H, W) uint8 as 1: confident bones as lines
    BODY_WIDTH times the person's height thick, the torso filled, the head a disc."""
    import cv2

    from engines.skeleton import PARENTS

    uv, conf = np.asarray(uv, np.float64), np.asarray(conf)
    box = keypoint_box(uv, conf)
    if box is None:
        return
    width = max(3, int(BODY_WIDTH * (box[3] - box[1])))
    ok = confident_joints(uv, conf)
    pts = np.round(np.clip(np.nan_to_num(uv), -1e5, 1e5)).astype(np.int32)
    for j, parent in enumerate(PARENTS):
        if parent >= 0 and ok[j] and ok[parent]:
            cv2.line(mask, tuple(int(v) for v in pts[j]), tuple(int(v) for v in pts[parent]), 1, width)
    if ok[list(TORSO)].all():
        cv2.fillConvexPoly(mask, pts[list(TORSO)], 1)
    if ok[HEAD]:
        cv2.circle(mask, tuple(int(v) for v in pts[HEAD]), width, 1, -1)


def _bodies(shape: tuple[int, int], people: list[Skeleton], origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(H, W) uint8 = shape: 1 on the bodies (`_draw_body`) of `people`, drawn in the window of
    the image whose top-left pixel is origin (x, y)."""
    mask = np.zeros(shape, np.uint8)
    for uv, conf in people:
        _draw_body(mask, np.asarray(uv, np.float64) - np.asarray(origin, np.float64), conf)
    return mask


def paint_mask(image_size: tuple[int, int], people: list[Skeleton], keep: list[Skeleton] = ()) -> np.ndarray:
    """(H, W) bool: where `painted_over` paints (the bodies of `people`, `_draw_body`, less
    those of `keep`)."""
    w, h = image_size
    paint = _bodies((h, w), people)
    if keep:
        paint &= _bodies((h, w), keep) ^ 1
    return paint.astype(bool)


def painted_over(image: np.ndarray, people: list[Skeleton], keep: list[Skeleton] = (),
                 mask: np.ndarray | None = None) -> np.ndarray:
    """A copy of image (H, W, 3) with each person of `people` painted MASK_GREY along their
    skeleton (their bones, torso and head: `_draw_body`), except where the body of a person
    of `keep` is (the person looked for, in front of someone painted); `mask`: that region
    if already computed (`paint_mask`). People who stand close or hug keep each other
    visible, where painting their boxes would hide both."""
    if mask is None:
        mask = paint_mask((image.shape[1], image.shape[0]), people, keep)
    out = np.ascontiguousarray(image.copy())
    out[mask] = MASK_GREY
    return out


def on_paint(d, mask: np.ndarray | None) -> bool:
    """Do most of detection d's confident joints lie on painted pixels (mask (H, W) bool)?
    Then MediaPipe made the pose out of a painted person's remains (a ghost)."""
    if mask is None:
        return False
    uv, conf = np.asarray(d.joints_2d_px), np.asarray(d.confidence)
    ok = confident_joints(uv, conf)
    if not ok.any():
        return True
    h, w = mask.shape
    u = np.clip(np.round(uv[ok, 0]).astype(int), 0, w - 1)
    v = np.clip(np.round(uv[ok, 1]).astype(int), 0, h - 1)
    return bool(mask[v, u].mean() > GHOST_PAINTED)


def same_person(a, b) -> bool:
    """Are two detections (realtime.detector.Detection) the same person found twice (OKS
    >= DUPLICATE_OKS at the first one's scale)?"""
    box = keypoint_box(a.joints_2d_px, a.confidence)
    if box is None:
        return False
    scale = float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
    return oks(a.joints_2d_px, b.joints_2d_px, scale, a.confidence, b.confidence) >= DUPLICATE_OKS


def _overlaps(uv: np.ndarray, conf: np.ndarray, roi: tuple[int, int, int, int]) -> bool:
    """Does the keypoint box of a person ((17, 2) px, (17,)) meet roi (x0, y0, x1, y1)?"""
    own = keypoint_box(uv, conf)
    return own is not None and own[0] < roi[2] and own[2] > roi[0] and own[1] < roi[3] and own[3] > roi[1]


def _hidden(person: Skeleton, box: np.ndarray, found: list, image_size: tuple[int, int]) -> float:
    """The fraction of a person's predicted body (`_draw_body` of person, whose box (4,) px
    is `box`) covered by the bodies of the people of `found` who stand in front of them."""
    front = [skeleton_of(f) for f in found if _in_front(f, box)]
    if not front:
        return 0.0
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), image_size[0]), min(int(np.ceil(box[3])), image_size[1])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    own = _bodies((y1 - y0, x1 - x0), [person], (x0, y0))
    cover = _bodies(own.shape, front, (x0, y0))
    area = int(own.sum())
    return float((own & cover).sum()) / area if area else 0.0


def _on_bodies(uv: np.ndarray, people: list[Skeleton], image_size: tuple[int, int]) -> np.ndarray:
    """(17,) bool: which of the keypoints uv (17, 2) px lie on the body (`_draw_body`) of one
    of `people`, inside the image (W, H)."""
    w, h = image_size
    inside = np.isfinite(uv).all(axis=1) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    out = np.zeros(len(uv), bool)
    if not inside.any():
        return out
    lo = np.floor(uv[inside].min(axis=0)).astype(int)
    hi = np.ceil(uv[inside].max(axis=0)).astype(int) + 1
    mask = _bodies((hi[1] - lo[1], hi[0] - lo[0]), people, tuple(lo))
    px = np.clip(np.round(uv[inside]).astype(int) - lo, 0, [mask.shape[1] - 1, mask.shape[0] - 1])
    out[inside] = mask[px[:, 1], px[:, 0]] > 0
    return out


def _in_front(d, box: np.ndarray) -> bool:
    """Does detection d (realtime.detector.Detection) stand nearer the camera than the person
    of box (4,) px? On a floor seen from above the feet, the bottom of the box, of the nearer
    person are lower in the image."""
    own = keypoint_box(d.joints_2d_px, d.confidence)
    return own is not None and own[3] > box[3]


def _within(d, roi: tuple[int, int, int, int] | None, image_size: tuple[int, int]) -> bool:
    """Is detection d's keypoint box inside roi away from its edges that cut the image (a
    person cut by a tile's edge gives a pose of part of them)? True without a roi."""
    if roi is None:
        return True
    box = keypoint_box(d.joints_2d_px, d.confidence)
    if box is None:
        return False
    w, h = image_size
    margin = 0.02 * max(roi[2] - roi[0], roi[3] - roi[1])
    return ((roi[0] <= 0 or box[0] > roi[0] + margin) and (roi[1] <= 0 or box[1] > roi[1] + margin)
            and (roi[2] >= w or box[2] < roi[2] - margin) and (roi[3] >= h or box[3] < roi[3] - margin))


def _box_iou_or_zero(d, box: np.ndarray) -> float:
    own = keypoint_box(d.joints_2d_px, d.confidence)
    return 0.0 if own is None else box_iou(own, box)


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
                 appearance: bool = True, people: int | None = None, min_hits: int = MIN_HITS,
                 follow: bool = False, landmarks=None, workers: int = 1,
                 detector_factory: Callable[[], object] | None = None, complete: bool | None = None) -> None:
        """landmarks: a realtime.landmark_runner.LandmarkRunner (owned: closed with this
        estimator): the people seen last frame whom no one else's predicted body meets are
        looked for by it, all in one call, in the region their predicted joints give
        (module docstring). workers: MediaPipe calls run at once where they do not depend on
        one another (module docstring), on the estimator's detector and workers - 1 more
        made by detector_factory (default: an IMAGE-mode landmarker as the estimator's,
        `new_people_detector`), made on first use and closed with this estimator.
        complete: people partly or mostly behind someone found in the same frame are output
        whole, their hidden joints from their track's prediction (`_complete`); None:
        COMPLETE."""
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.est = estimator
        self.tracker = tracker if tracker is not None else PersonTracker(TrackerConfig())
        self.appearance = appearance
        self.people = int(people if people is not None else getattr(estimator.detector, "num_poses", 2))
        self.min_hits = int(min_hits)
        self.follow = bool(follow)
        self.landmarks = landmarks
        self.complete = COMPLETE if complete is None else bool(complete)
        self.completed = 0  # poses completed so far (complete)
        self.coasted = 0    # people output at their prediction, behind others, so far (complete)
        self.batched_found = 0  # people the batched landmark model found (landmarks.calls: its calls)
        self._confirmed: set[int] = set()  # track ids seen on min_hits frames: the ones output
        self._frames = 0
        self._searched = -1       # the frame of the last search for new people
        self._short_since = None  # since when fewer than `people` were in view and nobody lost (s)
        self._gap = 1             # frames from that search to the next one meanwhile
        self.detector_calls = 0  # MediaPipe calls made so far (crops and searches for new people)
        self._followers: dict[int, object] = {}  # track id -> its VIDEO-mode landmarker (follow)
        self._sides: dict[int, deque[tuple[float, float]]] = {}  # track id -> (time s, box side px) found
        self.workers = int(workers)
        self._factory = detector_factory
        self._extra: list = []  # the landmarkers made for the other workers
        self._idle: queue.SimpleQueue | None = None  # landmarkers free for a call made at once
        self._pool: ThreadPoolExecutor | None = None
        self._behind: set[int] = set()  # this frame: tracks not looked for, behind people found
        self._last: dict[int, object] = {}  # track id -> its last Detection (complete)

    def _size(self, tid: int, t: float) -> float:
        """The larger box side (px) a track had over the last SIZE_MEMORY_S: its crop is at
        least that big, so a pose MediaPipe found on part of the person (a small box) does not
        shrink the next crop to that part."""
        sides = self._sides.get(tid)
        if not sides:
            return 0.0
        while sides and t - sides[0][0] > SIZE_MEMORY_S:
            sides.popleft()
        return max((side for _, side in sides), default=0.0)

    def _remember_sizes(self, found: list, ids: list, t: float) -> None:
        for d, tid in zip(found, ids):
            box = keypoint_box(d.joints_2d_px, d.confidence)
            if tid is not None and box is not None:
                self._sides.setdefault(tid, deque()).append((t, float(max(box[2] - box[0], box[3] - box[1]))))
        live = {s.track_id for s in self.tracker.tracks}
        for tid in [k for k in self._sides if k not in live]:
            del self._sides[tid]
        for tid in [k for k in self._followers if k not in live]:
            self._followers.pop(tid).close()

    def _follower(self, tid: int):
        """The VIDEO-mode landmarker that follows track tid in its crops (made on first use,
        closed when the track is gone)."""
        f = self._followers.get(tid)
        if f is None:
            f = self._followers[tid] = self._new_follower()
        return f

    @staticmethod
    def _new_follower():
        """A VIDEO-mode MediaPipe landmarker for one person (realtime.detector.PoseDetector)."""
        from realtime.detector import PoseDetector

        return PoseDetector(mode="video", num_poses=1, min_detection_confidence=MIN_CONFIDENCE,
                            min_presence_confidence=MIN_CONFIDENCE)

    def _at_once(self, calls: list[tuple[np.ndarray, tuple[int, int, int, int] | None]], t: float) -> list[list]:
        """MediaPipe (IMAGE mode) on each (image, roi) at once, each call on a landmarker of
        its own (the estimator's detector and the workers' ones). Returns each call's people,
        in order."""
        if self._pool is None:
            self._idle = queue.SimpleQueue()
            self._idle.put(self.est.detector)
            make = self._factory or (lambda: new_people_detector(self.people))
            for _ in range(self.workers - 1):
                self._extra.append(make())
                self._idle.put(self._extra[-1])
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="people-search")

        def one(call: tuple[np.ndarray, tuple[int, int, int, int] | None]) -> list:
            det = self._idle.get()
            try:
                return det.detect_people(call[0], t, call[1])
            finally:
                self._idle.put(det)

        self.detector_calls += len(calls)
        return list(self._pool.map(one, calls))

    def close_search(self) -> None:
        """Close what searches for people (the workers, followers and the batched landmark
        model) but not the estimator (its detector and lifter)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for d in self._extra:
            d.close()
        self._extra.clear()
        for f in self._followers.values():
            f.close()
        self._followers.clear()
        if self.landmarks is not None:
            self.landmarks.close()

    def close(self) -> None:
        self.close_search()
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
        found = [d for d in self._find(frame) if np.isfinite(d.joints_2d_px).all()]
        t1 = time.perf_counter()
        obs = [Observation(d.joints_2d_px, d.confidence,
                           appearance_descriptor(frame.image, d.joints_2d_px, d.confidence) if self.appearance else None)
               for d in found]
        before = {s.track_id: s for s in self.tracker.tracks} if self.complete else {}
        predicted = self.tracker.predicted_keypoints(frame.timestamp_s) if self.complete else {}
        ids = self.tracker.update(obs, frame.timestamp_s)
        self._remember_sizes(found, ids, frame.timestamp_s)
        if self.complete:
            found, ids = self._complete(found, ids, before, predicted, (w, h), frame.timestamp_s)
        hits = {s.track_id: s.hits for s in self.tracker.tracks}
        start = self._frames <= self.min_hits  # as SORT: the first frames' people are output at once
        self._confirmed.update(tid for tid in ids if tid is not None and (start or hits.get(tid, 0) >= self.min_hits))
        t2 = time.perf_counter()
        timings = {"detect": (t1 - t0) * 1000.0, "track": (t2 - t1) * 1000.0}
        image = frame.image if self.est.needs_image else None
        # at most `people`, the longest-known identities first (ids count up, never reused)
        people = sorted((Detected(frame.index, frame.timestamp_s, (int(w), int(h)), d, timings, image, track_id=tid)
                         for d, tid in zip(found, ids) if tid in self._confirmed), key=lambda d: d.track_id)[:self.people]
        return PeopleDetected(frame.index, frame.timestamp_s, (int(w), int(h)), tuple(people), timings)

    def _complete(self, found: list, ids: list, before: dict, predicted: dict[int, Skeleton],
                  image_size: tuple[int, int], t: float) -> tuple[list, list]:
        """The frame's people made whole where others hide them (module docstring), for the
        outputs only (the tracker and the search keep MediaPipe's poses): `found` and their
        track `ids`, with

        * the pose of each tracked person partly behind someone found in the same frame
          completed (realtime.tracker.complete_pose) from their track's prediction
          `predicted` (made before this frame's update): the joints that lie on the bodies
          of the people in front of them, are unconfident, or are far off the prediction the
          other joints agree with;
        * each track not looked for because it is mostly behind people found (`_find`), and
          not matched, added at its prediction (at time t), every joint completed, unless the
          prediction's box has shrunk below COAST_MIN_SIDE of the track's size (a partial pose).

        Only for tracks that existed before this frame (`before`: their TrackState) and were
        seen whole within COMPLETE_MAX_AGE_S."""
        out, out_ids = list(found), list(ids)
        for k, (d, tid) in enumerate(zip(found, ids)):
            state = before.get(tid)
            if state is None or state.whole_s > COMPLETE_MAX_AGE_S or tid not in predicted:
                continue
            pred_uv = predicted[tid][0]
            box = keypoint_box(pred_uv)
            if box is None:
                continue
            roi = tuple(int(v) for v in box)
            front = [skeleton_of(f) for m, f in enumerate(found) if m != k and _in_front(f, box)]
            front = [f for f in front if _overlaps(f[0], f[1], roi)]
            if not front:
                continue
            uv, conf = skeleton_of(d)
            done = complete_pose(uv, conf, pred_uv, _on_bodies(uv, front, image_size))
            if done is not None:
                out[k] = replace(d, joints_2d_px=done[0], confidence=done[1])
                self.completed += 1
        now = {s.track_id: s for s in self.tracker.tracks}
        for tid in sorted(self._behind):
            state = now.get(tid)
            if (state is None or state.lost_s == 0 or state.whole_s > COMPLETE_MAX_AGE_S or tid not in before
                    or tid not in self._last or tid not in predicted):
                continue
            uv = predicted[tid][0]
            box = keypoint_box(uv)
            if box is None or max(box[2] - box[0], box[3] - box[1]) < COAST_MIN_SIDE * self._size(tid, t):
                continue
            out.append(replace(self._last[tid], joints_2d_px=uv.astype(np.float32),
                               confidence=np.full(len(uv), COMPLETED_CONFIDENCE, np.float32)))
            out_ids.append(tid)
            self.coasted += 1
        for d, tid in zip(found, ids):
            if tid is not None:
                self._last[tid] = d
        for tid in [k for k in self._last if k not in now]:
            del self._last[tid]
        return out, out_ids

    def _find(self, frame: Frame) -> list:
        """MediaPipe's people in the frame: each tracked person in a crop around them, then
        (every DISCOVER_EVERY frames, and while fewer than `people` are tracked, less often
        once that has lasted BACKOFF_AFTER_S with nobody lost) anyone new on the whole image
        with the others painted over (module docstring)."""
        def detect(image: np.ndarray, t: float, roi: tuple[int, int, int, int] | None, tid: int | None = None) -> list:
            """MediaPipe on image's roi: track tid's own VIDEO-mode landmarker when following
            it, else the IMAGE-mode one."""
            self.detector_calls += 1
            if tid is not None and self.follow:
                return self._follower(tid).detect_people(image, t, roi)
            return self.est.detector.detect_people(image, t, roi)

        image, t = frame.image, frame.timestamp_s
        h, w = image.shape[:2]
        found: list = []
        self._behind.clear()
        # tracks seen in the last CROP_MAX_LOST_S, at most `people`: those seen last frame first
        # (a person seen last frame is looked for before the crop of one hidden behind them
        # takes them), then the longest-known
        order = sorted((s.lost_s > 0, s.track_id) for s in self.tracker.tracks if s.lost_s <= CROP_MAX_LOST_S)
        recent = [tid for _, tid in order]
        predicted = self.tracker.predicted_boxes(t)
        skeletons = self.tracker.predicted_keypoints(t)
        crops = [tid for tid in recent if tid in predicted][:self.people]
        # nearest first (the lower a person's feet in the image, the nearer on a floor): the
        # people in front of a person are found before them. In each person's crop every
        # other person is painted over (those found this frame where they were found, the
        # others where they are predicted), except where the person's own predicted body is:
        # MediaPipe then sees one person, not a pose made of two.
        pending = sorted(crops, key=lambda k: -predicted[k][3])
        if self.landmarks is not None:
            found += self._batched(image, t, pending, order, predicted, skeletons)
        unfound: list[int] = []
        early = self._crops_at_once(image, t, pending, found, predicted, skeletons) if self.workers > 1 else {}
        while pending:
            tid = pending.pop(0)
            if len(found) >= self.people:
                break
            box = predicted[tid]
            roi = square_crop(box, (w, h), min_side=self._size(tid, t))
            if roi is None:
                continue
            if _hidden(skeletons[tid], box, found, (w, h)) > MAX_HIDDEN:
                unfound.append(tid)  # mostly behind people found: a crop would give one of them
                self._behind.add(tid)
                continue
            others = [skeleton_of(f) for f in found] + [skeletons[k] for k in pending + unfound]
            others = [o for o in others if _overlaps(o[0], o[1], roi)]
            mask = paint_mask((w, h), others, [skeletons[tid]]) if others else None
            # following (self.follow): only a person whose predicted body no one else's meets
            # (a landmarker following someone in a crowd moves over to a neighbour)
            alone = not any(_overlaps(o[0], o[1], tuple(int(v) for v in box)) for o in others)
            if not others and early.get(tid, (None,))[0] == roi:
                poses = early[tid][1]  # the very call this search makes, made at once with others
            else:
                poses = detect(painted_over(image, others, mask=mask) if others else image, t, roi,
                               tid if alone else None)
            got = [g for g in poses if not any(same_person(g, f) for f in found) and not on_paint(g, mask)]
            if got:  # the crop's person: the one most like the track's prediction
                found.append(max(got, key=lambda g: _box_iou_or_zero(g, box)))
            else:
                unfound.append(tid)
        discover = self._frames % DISCOVER_EVERY == 0
        if len(recent) < self.people:
            # someone lost may come back: look every frame; else, once fewer people than asked
            # for have been in view for BACKOFF_AFTER_S, look less and less often while nobody
            # new turns up
            lost = any(s.lost_s > 0 for s in self.tracker.tracks)
            if lost:
                self._short_since = None
            elif self._short_since is None:
                self._short_since = t
            if lost or t - self._short_since < BACKOFF_AFTER_S:
                self._gap = 1
            discover = discover or bool(unfound) or self._frames - self._searched >= self._gap
        else:
            self._short_since = None
        self._frames += 1
        if not discover:
            return found
        self._searched = self._frames - 1
        # the whole image, then square tiles of it (people small in the whole image are
        # larger for MediaPipe's person detector in a tile)
        rois = [None, *discovery_tiles((w, h))]
        start = len(found)
        first: dict = {}
        if self.workers > 1 and start < self.people:
            # the first search of every region, at once: used while nobody new has been found
            # (the image searched is then the same: the people found so far painted over)
            mask = paint_mask((w, h), [skeleton_of(f) for f in found]) if found else None
            shown = painted_over(image, [], mask=mask) if found else image
            first = dict(zip(rois, self._at_once([(shown, roi) for roi in rois], t)))
        for roi in rois:
            early = first.pop(roi, None)
            while len(found) < self.people:
                mask = paint_mask((w, h), [skeleton_of(f) for f in found]) if found else None
                if early is not None and len(found) == start:
                    poses, early = early, None
                else:
                    poses = detect(painted_over(image, [], mask=mask) if found else image, t, roi)
                new = [g for g in poses
                       if not any(same_person(g, f) for f in found) and _within(g, roi, (w, h))
                       and not on_paint(g, mask)]
                if not new:
                    break
                found += new[:self.people - len(found)]
        self._gap = 1 if len(found) > start else min(2 * self._gap, DISCOVER_EVERY)
        return found

    def _crops_at_once(self, image: np.ndarray, t: float, pending: list[int], found: list,
                       predicted: dict[int, np.ndarray], skeletons: dict[int, Skeleton]
                       ) -> dict[int, tuple[tuple[int, int, int, int], list]]:
        """The crops of the people in `pending` (search order) whose crop no one else's body
        meets (nobody to paint: the crop search's call is the plain crop), searched at once:
        track id -> (crop, MediaPipe's people there). Fewer than two such crops, or
        following (each person's own VIDEO-mode landmarker, whose tracking a call moves on):
        none."""
        if self.follow:
            return {}
        h, w = image.shape[:2]
        jobs = []
        for tid in pending[:max(self.people - len(found), 0)]:
            box = predicted[tid]
            roi = square_crop(box, (w, h), min_side=self._size(tid, t))
            if roi is None or _hidden(skeletons[tid], box, found, (w, h)) > MAX_HIDDEN:
                continue
            others = [skeleton_of(f) for f in found] + [skeletons[k] for k in pending if k != tid]
            if not any(_overlaps(o[0], o[1], roi) for o in others):
                jobs.append((tid, roi))
        if len(jobs) < 2:
            return {}
        poses = self._at_once([(image, roi) for _, roi in jobs], t)
        return {tid: (roi, p) for (tid, roi), p in zip(jobs, poses)}

    def _batched(self, image: np.ndarray, t: float, pending: list[int], order: list[tuple[bool, int]],
                 predicted: dict[int, np.ndarray], skeletons: dict[int, Skeleton]) -> list:
        """The people seen last frame whom no other track's predicted body meets, looked for
        by the landmark model in one call, each in the region their predicted joints give
        (realtime.landmark_runner.roi_from_joints), other people in that region painted over.
        Those found are taken out of `pending` (the rest go through the MediaPipe crop
        search); a crop that holds nobody, a pose on painted pixels or one that moved off
        the prediction (box IoU < BATCHED_MIN_IOU) counts as not found."""
        from realtime.landmark_runner import roi_from_joints

        h, w = image.shape[:2]
        seen_last = {tid for lost, tid in order if not lost}
        tids, images, rois, masks = [], [], [], []
        for tid in pending:
            if tid not in seen_last:
                continue
            box = tuple(int(v) for v in predicted[tid])
            others = [skeletons[k] for k in skeletons if k != tid]
            if any(_overlaps(o[0], o[1], box) for o in others):
                continue  # someone meets this person: the search with painting and a choice of poses
            roi = roi_from_joints(*skeletons[tid], min_side=self._size(tid, t))
            if roi is None:
                continue
            reach = 0.75 * roi.side  # the rotated square's half diagonal, and a margin
            near = (int(roi.cx - reach), int(roi.cy - reach), int(roi.cx + reach), int(roi.cy + reach))
            others = [o for o in others if _overlaps(o[0], o[1], near)]
            mask = paint_mask((w, h), others, [skeletons[tid]]) if others else None
            tids.append(tid)
            rois.append(roi)
            masks.append(mask)
            images.append(painted_over(image, others, mask=mask) if others else image)
        if not tids:
            return []
        found = []
        for tid, d, mask in zip(tids, self.landmarks.detect(images, rois), masks):
            if (d is None or on_paint(d, mask) or _box_iou_or_zero(d, predicted[tid]) < BATCHED_MIN_IOU
                    or any(same_person(d, f) for f in found)):
                continue
            found.append(d)
            pending.remove(tid)
        self.batched_found += len(found)
        return found

    @property
    def temporal(self):
        """The lifter's realtime.history.TemporalSpec, None for a single-frame model."""
        return self.est.temporal

    def describe(self) -> str:
        return f"{self.est.describe()}, up to {self.people} people"

    def sequence(self, root: RootFilterConfig | None = None, body: BodyConfig | None = None,
                 forget_s: float = DEFAULT_FORGET_S) -> "PeopleSequenceLifter":
        """A fresh PeopleSequenceLifter: every person's lifting state (root, body: each
        person's root filter and body settings, as PoseEstimator.sequence)."""
        return PeopleSequenceLifter(self.est, root, forget_s, body)


@dataclass
class _Slot:
    """A frame waiting for its people's poses: `waiting` lifters still owe it one."""

    pd: PeopleDetected
    waiting: int = 0
    poses: list[PoseFrame] = field(default_factory=list)


class PeopleSequenceLifter:
    """Several people's lifting state (module docstring): one SequenceLifter per track id,
    one model call per pushed frame for everyone. Not thread-safe: one thread pushes."""

    def __init__(self, estimator: PoseEstimator, root: RootFilterConfig | None = None,
                 forget_s: float = DEFAULT_FORGET_S, body: BodyConfig | None = None) -> None:
        self.est = estimator
        self.root = root
        self.body = body  # each track its own body (realtime.filters.TrackBody), as its own root filter
        self.forget_s = float(forget_s)
        self._lifters: dict[int, SequenceLifter] = {}
        self._owed: dict[int, deque[_Slot]] = {}  # per track: the frames its lifter still owes
        self._seen: dict[int, float] = {}
        self._slots: deque[_Slot] = deque()

    def push(self, pd: PeopleDetected) -> list[PoseFrame]:
        t = pd.timestamp_s
        here = {d.track_id: d for d in pd.people}
        for tid in [k for k, s in self._seen.items() if k not in here and t - s > self.forget_s]:
            self._take(tid, self._lifters.pop(tid).flush())  # gone: the frames it holds, then forget it
            del self._seen[tid], self._owed[tid]
        for tid in here:
            self._seen[tid] = t
            if tid not in self._lifters:
                self._lifters[tid] = SequenceLifter(self.est, self.root, self.body)
                self._owed[tid] = deque()
        slot = _Slot(pd)
        self._slots.append(slot)
        submitted = []
        for tid, lifter in self._lifters.items():
            d = here.get(tid)
            if d is None:  # not found in this frame: an empty detection keeps the person's clock
                d = Detected(pd.index, pd.timestamp_s, pd.image_size, None, pd.timings_ms, track_id=tid)
            self._owed[tid].append(slot)
            slot.waiting += 1
            submitted.append((tid, lifter.submit(d)))
        lifted = iter(lift_jobs(self.est, [job for _, jobs in submitted for job in jobs]))
        for tid, jobs in submitted:
            self._take(tid, self._lifters[tid].complete(jobs, [next(lifted) for _ in jobs]))
        return self._ready()

    def flush(self) -> list[PoseFrame]:
        """Every person's held frames (end of stream), then every frame still waiting."""
        for tid, lifter in self._lifters.items():
            self._take(tid, lifter.flush())
        self._lifters.clear(), self._owed.clear(), self._seen.clear()
        return self._ready()

    def _take(self, tid: int, poses: list[PoseFrame]) -> None:
        """Poses a track's lifter gave back (in the order of its frames) into their frames."""
        owed = self._owed[tid]
        for pf in poses:
            slot = owed.popleft()
            slot.waiting -= 1
            if pf.valid:
                slot.poses.append(pf)

    def _ready(self) -> list[PoseFrame]:
        out = []
        while self._slots and self._slots[0].waiting == 0:
            slot = self._slots.popleft()
            pd = slot.pd
            timings = dict(pd.timings_ms)
            if slot.poses:
                timings["lift"] = slot.poses[0].timings_ms.get("lift", 0.0)
            out.append(PoseFrame.from_people(slot.poses, pd.index, pd.timestamp_s, pd.image_size, timings))
        return out


def new_people_detector(people: int):
    """MediaPipe as the several-people search runs it (realtime.detector.PoseDetector): IMAGE
    mode, num_poses = people, MIN_CONFIDENCE thresholds."""
    from realtime.detector import PoseDetector

    return PoseDetector(mode="image", num_poses=people, min_detection_confidence=MIN_CONFIDENCE,
                        min_presence_confidence=MIN_CONFIDENCE)


def search_workers(people: int) -> int:
    """How many MediaPipe calls the search for `people` people runs at once: one per person,
    at most one per CPU core (each call keeps one core busy), at most MAX_SEARCH_WORKERS."""
    return max(1, min(int(people), os.cpu_count() or 1, MAX_SEARCH_WORKERS))


def open_landmarks():
    """The batched landmark model (realtime.landmark_runner.LandmarkRunner) as `--people N
    --fast-people` runs it: a crop holds a person at MediaPipe's MIN_CONFIDENCE presence."""
    from realtime.landmark_runner import LandmarkRunner

    return LandmarkRunner(min_presence=MIN_CONFIDENCE)


def open_people(model: str, backend: str = "auto", fov_deg: float | None = None, calib: str | None = None,
                people: int = 2, threads: int | None = None, lifter=None, own_lifter: bool = True,
                follow: bool = False, batched: bool = False, complete: bool | None = None) -> PeopleEstimator:
    """The several-people estimator as `--people N` runs it: MediaPipe in IMAGE mode with
    MIN_CONFIDENCE thresholds, the tracker with appearance, up to `people` people. `lifter`:
    an opened lifter of `model` (else opened here); when this fails, it is closed if
    `own_lifter` (else left open for its owner). follow: PeopleEstimator's. batched: people
    apart from the others looked for by the batched landmark model (PeopleEstimator's
    `landmarks`). complete: PeopleEstimator's (None: COMPLETE)."""
    detector = runner = None
    try:
        detector = new_people_detector(people)
        if batched:
            runner = open_landmarks()
        return PeopleEstimator(PoseEstimator(model, backend, fov_deg, calib, threads=threads, detector=detector,
                                             lifter=lifter), people=people, follow=follow, landmarks=runner,
                               workers=search_workers(people), complete=complete)
    except BaseException:
        if runner is not None:
            runner.close()
        if detector is not None:
            detector.close()
        if lifter is not None and own_lifter:
            lifter.close()
        raise


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
