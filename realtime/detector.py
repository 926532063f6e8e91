"""MediaPipe Pose Landmarker (Tasks API) -> 17-joint 2D detections.

Modes: VIDEO (default; files and webcams: tracks from the previous frame and skips the person
detector, so it is the faster, needs strictly increasing timestamps, which
`PoseDetector.detect` enforces) and IMAGE (independent stills; runs the detector every call).

With num_poses > 1 the detector keeps one person: on the first frame (or after the person
was lost for HOLD_FRAMES frames) the largest, most central one; afterwards only the one
nearest the previous detection, within MAX_JUMP box sides, so the track does not jump to a
passer-by; frames where the tracked person is missing return None. Caveat (docs/2d_stage.md
has the two-person clip it was seen on): in VIDEO mode MediaPipe often returns only the
person it is tracking, and that can swap to the other one; the gate then reports "no
person" instead of the wrong one. IMAGE mode (the person detector on every frame, slower)
returns both people, and the gate keeps the same one.
With num_poses = 1 no gate is applied (there is no other candidate to prefer).

Re-detection (`redetect=True`, VIDEO mode): MediaPipe's tracker answers "nobody" on a frame
where it loses the person (a cut between unrelated images, a fast move) and only searches the
whole image again on the next frame. With redetect, such a frame is searched again at once by
a second landmarker in IMAGE mode (created on first use), so the frame is not lost; the
tracker picks the person up again on the next frame by itself. It costs one IMAGE-mode run
(~50 ms) per frame without a person, which files can afford and live streams (latency) need not.

Still images (`views=True`, IMAGE mode): on a hard pose (bent over, lying, seen from an unusual
angle) one IMAGE-mode pass can land a skeleton on the wrong limbs, and which limbs it picks
depends on how the person sits in the picture. So a still is searched again on square views
around the person the first pass found (VIEW_SIDES crop-box sides wide, padded with black, the
person centred) turned by each of VIEW_TURNS quarter turns, and the answer kept is the
consensus: the candidate (first pass included) whose joints lie nearest the others'
(`consensus`). Passes that found the right limbs agree; wrong ones rarely agree with
each other. When the consensus outvotes the first pass, the first skeleton (and so the views
built on it) may have covered only part of the person, so the vote is held once more on views
around the consensus. It costs 4 (or 8) MediaPipe runs per still, which stills can afford;
video frames, live or not, never take this path. A still where the whole picture gives nobody
(a small person, a busy background) is searched on overlapping square tiles (TILE_FRACTION of
the short side, so the person is larger for MediaPipe's person detector); a person found there
counts only if two tiles agree on the skeleton (one tile alone is too often a figment of the
background), and then goes through the views as above.

Mirrored 2D (`mirror=True`, VIDEO or IMAGE mode; files, not live): MediaPipe's landmarks
carry noise of its own that is not the same on the horizontal mirror of a frame. So a second
landmarker, in the same running mode and fed the same timestamps, runs on the mirrored frame
(image[:, ::-1]); its landmarks are mapped back (engines.landmarks: u -> W - 1 - u, left and
right swapped; world x negated) and averaged with the normal pass (`merge_mirrored`): image
landmarks, visibility and world landmarks. Where only one pass found the person, that one is
kept; where the two disagree grossly (the median distance of their limb landmarks over
MIRROR_DISAGREE box sides: a left/right or limb mix-up in one of them) the normal pass is kept.
It costs a second MediaPipe run per frame, made at once with the normal pass on a thread of its
own (MediaPipe releases the GIL while it runs; the first frame's runs one after the other, as
the mirrored landmarker is made then): on two or more free cores a frame takes little longer
than one pass. Re-detection searches the normal frame only (the
mirrored tracker picks the person up again on the next frame by itself). Unrelated stills
(`views=True`) keep their own search and take no mirrored pass.

Pixel convention: MediaPipe returns coordinates normalised to the image extent; we convert
with u = x * W - 0.5, so integer coordinates are pixel centres, as in engines/crop.py and
OpenCV.
"""
from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engines.checkpoint import MODELS_DIR
from engines.crop import CropBox, box_from_joints
from engines.errors import UserError
from engines.landmarks import (MP_FLIP_PERMUTATION, NUM_MP_LANDMARKS, landmarks_to_joints_2d, mirror_landmarks_px,
                               mirror_world_landmarks, world_landmarks_to_joints_mm)
from engines.skeleton import NUM_JOINTS

DEFAULT_MODEL = MODELS_DIR / "pose_landmarker_full.task"
MODES = ("video", "image")
# Track gate, in box sides per frame. A walking person's box centre moves ~0.02 side per
# frame at 30 fps; two people side by side are ~0.3-0.4 side apart (0.36 measured on
# mmaction2_demo_skeleton.mp4), so 0.25 keeps the person and refuses the neighbour.
MAX_JUMP = 0.25
# Frames the track survives without its person before any person may be picked again.
HOLD_FRAMES = 15
# Offline runs (files) restart VIDEO-mode tracking at every multiple of this frame index, so
# the 2D of frames k*RESTART_FRAMES.. depends only on the frames from there on: a chunk of a
# video that starts at such a boundary (posestream batch) reproduces a single run's 2D
# exactly. A landmarker started mid-video differs from one that tracked from frame 0 for
# many frames, so without fixed restarts no chunking could. A restart costs one landmarker
# load and one person-detector frame; live sources never restart.
RESTART_FRAMES = 600
# Still-image views (module docstring): width in crop-box sides (engines.crop: a box is 1.25x
# the joints' extent, so the person spans about 40 % of a view), and the quarter turns
# (counter-clockwise) of the view. 2.0 beat 2.5 on rendered stills (scripts/check_still_views.py;
# docs/temporal.md has the comparison).
VIEW_SIDES = 2.0
VIEW_TURNS = (0, 1, 2, 3)
# Two skeletons agree when their median joint distance is within this many crop-box sides.
VIEW_AGREE = 0.05
VIEW_REVOTE = True  # the second vote when the first pass is outvoted (off: one vote)
# Mirrored pass: the two passes disagree grossly when the median distance of their limb
# landmarks (shoulders, elbows, wrists, hips, knees, ankles) is over this many crop-box sides
# (engines.crop: 1.25x the joints' extent). Chosen on S8 renders among 0.05-0.2: a gross
# disagreement is a rare tail of the passes' spread (docs/realtime_temporal.md, "Mirrored 2D
# for files").
MIRROR_DISAGREE = 0.15
MIRROR_LIMBS = (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# Tiles of a still with nobody found on the whole picture: side as a fraction of the short
# side, overlapping by half a tile (a 2x2 grid on a square picture).
TILE_FRACTION = 2.0 / 3.0


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence C++ log lines written straight to fd 2 (LiteRT prints ~40 harmless
    "Sparsity tensors may not yet be fully supported" warnings per model load, and INFO
    lines at close). Python exceptions still carry their messages. Set
    POSESTREAM_MEDIAPIPE_LOGS=1 to see them."""
    if os.environ.get("POSESTREAM_MEDIAPIPE_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreter): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class Detection:
    """One person in one image.

    joints_2d_px: (17, 2) float32 image pixels (pixel-centre convention).
    confidence:   (17,) float32 in [0, 1] (MediaPipe visibility, min over source landmarks).
    world_mm:     (17, 3) float32 MediaPipe's own metric 3D (hip-centred, mm, x right,
                  y down, z away from the camera).
    box:          square crop box around the joints (engines.crop, 256x256 crop).
    landmarks_px: (33, 2) float32 raw MediaPipe landmarks, pixels; visibility (33,).
    landmarks_world_mm: (33, 3) float32 MediaPipe's world landmarks in mm (hip-centred,
                  x right, y down, z away from the camera).
    """

    joints_2d_px: np.ndarray
    confidence: np.ndarray
    world_mm: np.ndarray
    box: CropBox
    landmarks_px: np.ndarray
    visibility: np.ndarray
    landmarks_world_mm: np.ndarray | None = None


def consensus(joints_px: np.ndarray, sides: np.ndarray) -> tuple[int, int]:
    """The consensus among candidate skeletons of one person: joints_px (N, 17, 2) px, sides
    (N,) their crop-box sides px. Two candidates agree when the median over joints of their
    joint-to-joint distance is within VIEW_AGREE of the median side. The winner is the
    candidate the most candidates agree with (itself included); among those, the one with the
    smallest sum of distances to all others; then the first (so of two that disagree, the
    first). Returns its index and how many candidates agree with it."""
    j = np.asarray(joints_px, np.float64)
    assert j.ndim == 3 and j.shape[1:] == (NUM_JOINTS, 2) and len(j) == len(sides) >= 1, (j.shape, len(sides))
    d = np.median(np.linalg.norm(j[:, None] - j[None], axis=-1), axis=-1) / max(float(np.median(sides)), 1e-6)
    agree = (d <= VIEW_AGREE).sum(axis=1)
    total = np.where(agree == agree.max(), d.sum(axis=1), np.inf)
    k = int(np.flatnonzero(total <= total.min() + 1e-9)[0])
    return k, int(agree[k])


def tile_starts(length: int, side: int) -> list[int]:
    """Start offsets (px) of tiles `side` long covering `length`, overlapping by at least half
    a tile, the first at 0 and the last at length - side."""
    if side >= length:
        return [0]
    n = 1 + int(np.ceil((length - side) / (side / 2.0) - 1e-9))
    return [int(v) for v in np.linspace(0, length - side, n).round()]


def _vote(found: list[Detection]) -> tuple[int, int]:
    return consensus(np.stack([d.joints_2d_px for d in found]), np.array([d.box.side for d in found]))


def _skeleton_distance(a: Detection, b: Detection) -> float:
    """Median joint distance of two detections, in a's crop-box sides."""
    return float(np.median(np.linalg.norm(a.joints_2d_px - b.joints_2d_px, axis=1))) / max(a.box.side, 1e-6)


def select_person(boxes: list[CropBox], image_size: tuple[int, int], previous: CropBox | None = None,
                  max_jump: float = MAX_JUMP) -> int | None:
    """Index of the person to keep among candidate boxes (non-empty list), or None.

    With a previous box (a track): the candidate whose centre is nearest the previous
    centre, if it moved less than `max_jump` previous box sides; else None (the tracked
    person is not among the candidates). Without a track: the highest score
    side / (1 + d), d = distance of the box centre from the image centre divided by the
    image half-diagonal: big and central wins."""
    assert boxes, "no candidates"
    if previous is not None:
        d = [np.hypot(b.cx - previous.cx, b.cy - previous.cy) for b in boxes]
        i = int(np.argmin(d))
        return i if d[i] <= max_jump * previous.side else None
    w, h = image_size
    half_diag = 0.5 * np.hypot(w, h)
    scores = [b.side / (1.0 + np.hypot(b.cx - w / 2, b.cy - h / 2) / half_diag) for b in boxes]
    return int(np.argmax(scores))


def check_rgb(image: np.ndarray) -> None:
    """Refuse anything but an (H, W, 3) uint8 RGB image, before MediaPipe sees it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")


class PoseDetector:
    """MediaPipe Pose Landmarker on RGB uint8 frames. Use as a context manager or call close()."""

    def __init__(self, model_path: str | Path | None = None, mode: str = "video", num_poses: int = 1,
                 min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, redetect: bool = False, views: bool = False,
                 mirror: bool = False) -> None:
        """views: IMAGE mode, unrelated stills: search each still again on turned views
        around the person and keep the consensus, and search a still where nobody is found
        on tiles (module docstring). mirror: average with a second pass on the mirrored
        frame (module docstring; not with views)."""
        if mode not in MODES:
            raise UserError(f"detector mode must be one of {MODES}, got {mode!r}")
        path = Path(model_path) if model_path else DEFAULT_MODEL
        if not path.is_file():
            raise UserError(f"MediaPipe model {path} not found: run `python scripts/build_mediapipe_model.py`")
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ log spam (harmless lines)
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

        self._mp = mp
        self.mode = mode
        self.redetect = bool(redetect) and mode == "video"
        self.views = bool(views) and mode == "image"
        self.mirror = bool(mirror) and not self.views

        def options(running_mode: str) -> PoseLandmarkerOptions:
            return PoseLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(path)),
                running_mode=RunningMode.VIDEO if running_mode == "video" else RunningMode.IMAGE,
                num_poses=int(num_poses), min_pose_detection_confidence=min_detection_confidence,
                min_pose_presence_confidence=min_presence_confidence,
                min_tracking_confidence=min_tracking_confidence)

        self._options = options
        self._create = PoseLandmarker.create_from_options
        self._landmarker = None
        self._still = None  # the IMAGE-mode landmarker of re-detection, made on first use
        self._mirror = None  # the mirrored pass's landmarker (same mode), made on first use
        self._mirror_thread: ThreadPoolExecutor | None = None  # where it runs, beside the normal pass
        self._mirror_job: Future | None = None  # its last call (an interrupted detect may leave it running)
        self.redetected = 0  # frames the tracker lost and re-detection found a person on
        self.num_poses = int(num_poses)
        self.restart()

    def restart(self) -> None:
        """A fresh tracking landmarker and track, as if this detector had just been created:
        what it finds from here on depends only on the frames from here on (the mirrored
        pass's landmarker too). (The re-detection landmarker runs in IMAGE mode, which keeps
        nothing between frames: it stays.)"""
        self._wait_mirrored()
        self._close("_landmarker", "_mirror")
        with _quiet_native_stderr():
            self._landmarker = self._create(self._options(self.mode))
        self._last_ts_ms = -1
        self._calls = 0
        self._lost = 0
        self._previous: CropBox | None = None

    def __enter__(self) -> "PoseDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wait_mirrored()
        if self._mirror_thread is not None:
            self._mirror_thread.shutdown(wait=True)
            self._mirror_thread = None
        self._close("_landmarker", "_still", "_mirror")

    def _close(self, *names: str) -> None:
        for name in names:
            lm = getattr(self, name, None)
            if lm is not None:
                setattr(self, name, None)
                with _quiet_native_stderr():
                    lm.close()

    def reset_track(self) -> None:
        """Forget the tracked person (e.g. after a scene cut)."""
        self._previous = None
        self._lost = 0

    def detect_people(self, image: np.ndarray, timestamp_s: float | None = None,
                      roi: tuple[int, int, int, int] | None = None) -> list[Detection]:
        """Every person MediaPipe finds in image (H, W, 3) uint8 RGB (at most num_poses), in
        its order, with no track gate (several people: realtime.tracker keeps identities).
        timestamp_s is needed in VIDEO mode; it is made strictly increasing in whole
        milliseconds (MediaPipe rejects repeats). roi (x0, y0, x1, y1) px: look in that part
        of the image alone (people are larger there for MediaPipe's person detector);
        coordinates come back in the full image's pixels. In VIDEO mode MediaPipe follows
        its person from their landmarks in the previous call's roi (relative to the roi):
        give it a roi that moves with the person."""
        return self._landmarks(image, timestamp_s, roi)[0]

    def _landmarks(self, image: np.ndarray, timestamp_s: float | None,
                   roi: tuple[int, int, int, int] | None = None) -> tuple[list[Detection], object]:
        """MediaPipe on one image (or its roi): its people and the MediaPipe image (for a
        second search)."""
        check_rgb(image)
        full_h, full_w = image.shape[:2]
        x0 = y0 = 0
        if roi is not None:
            x0, y0 = max(int(roi[0]), 0), max(int(roi[1]), 0)
            x1, y1 = min(int(roi[2]), full_w), min(int(roi[3]), full_h)
            if x1 - x0 < 16 or y1 - y0 < 16:
                return [], None
            image = image[y0:y1, x0:x1]
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        # The first call logs one-time graph warnings (alignment, NORM_RECT) to fd 2.
        quiet = _quiet_native_stderr() if self._calls == 0 else contextlib.nullcontext()
        self._calls += 1
        with quiet:
            if self.mode == "video":
                ts = self._next_ts_ms(timestamp_s)
                self._last_ts_ms = ts
                result = self._landmarker.detect_for_video(mp_image, ts)
            else:
                result = self._landmarker.detect(mp_image)
        h, w = image.shape[:2]
        return self._people(result, w, h, (x0, y0)), mp_image

    def _next_ts_ms(self, timestamp_s: float | None) -> int:
        """The VIDEO-mode timestamp (ms) the next call gets: timestamp_s in whole ms, strictly
        after the last call's (MediaPipe rejects repeats)."""
        if timestamp_s is None:
            raise ValueError("VIDEO mode needs a timestamp")
        return max(int(round(timestamp_s * 1000.0)), self._last_ts_ms + 1)

    def detect(self, image: np.ndarray, timestamp_s: float | None = None) -> Detection | None:
        """image: (H, W, 3) uint8 RGB. timestamp_s is needed in VIDEO mode; it is made
        strictly increasing in whole milliseconds (MediaPipe rejects repeats). Returns the
        kept person, or None when nobody is found."""
        job = self._start_mirrored(image, timestamp_s) if self.mirror and self._mirror is not None else None
        try:
            people, mp_image = self._landmarks(image, timestamp_s)
        except BaseException:
            if job is not None:
                wait([job])
            raise
        mirrored = job.result() if job is not None else self._mirrored(image, self._last_ts_ms) if self.mirror else []
        h, w = image.shape[:2]
        track = self._previous if self.num_poses > 1 else None
        i = select_person([p.box for p in people], (w, h), track) if people else None
        if i is None and self.redetect:  # the tracker lost the person: search this frame again
            again = self._people(self._detect_still(mp_image), w, h)
            j = select_person([p.box for p in again], (w, h), track) if again else None
            if j is not None or (not people and again):
                people, i = again, j
                self.redetected += int(j is not None)
        if mirrored:
            people, i = _with_mirrored(people, i, mirrored, (w, h), track)
        if i is None and self.views and not people:  # a still with nobody: look closer, on tiles
            people = self._tiles(image)
            i = 0 if people else None
        if i is None and track is not None:
            self._lost += 1
            if self._lost <= HOLD_FRAMES or not people:
                return None
            i = select_person([p.box for p in people], (w, h))  # track expired: pick afresh
        if i is None:
            self._previous = None
            return None
        self._lost = 0
        self._previous = people[i].box
        return self._consensus(image, people[i]) if self.views else people[i]

    def _consensus(self, image: np.ndarray, first: Detection) -> Detection:
        """The consensus of `first` and the person found on each turned view around it; when
        the consensus disagrees with `first` (it was outvoted: its skeleton, and so the
        views, may cover only part of the person), one more vote around the consensus."""
        found = [first, *self._views(image, first)]
        k, _ = _vote(found)
        if VIEW_REVOTE and k != 0 and _skeleton_distance(found[k], first) > VIEW_AGREE:
            found = [found[k], *self._views(image, found[k])]
            k, _ = _vote(found)
        return found[k]

    def _tiles(self, image: np.ndarray) -> list[Detection]:
        """The consensus person of overlapping square tiles of the image, if two tiles agree
        on it; else nobody ([])."""
        h, w = image.shape[:2]
        side = max(int(round(TILE_FRACTION * min(h, w))), 16)
        found = [p for y in tile_starts(h, side) for x in tile_starts(w, side)
                 for p in self._landmarks(image, None, (x, y, x + side, y + side))[0]]
        if len(found) < 2:
            return []
        k, agree = _vote(found)
        return [found[k]] if agree >= 2 else []

    def _views(self, image: np.ndarray, around: Detection) -> list[Detection]:
        """The person nearest `around` on each turned square view centred on it."""
        h, w = image.shape[:2]
        side = max(int(round(VIEW_SIDES * around.box.side)), 16)
        x0, y0 = int(round(around.box.cx - side / 2)), int(round(around.box.cy - side / 2))
        view = np.zeros((side, side, 3), np.uint8)  # black outside the image, as engines.crop
        ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if ax1 > ax0 and ay1 > ay0:
            view[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = image[ay0:ay1, ax0:ax1]
        found = []
        for turns in VIEW_TURNS:
            img = self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                 data=np.ascontiguousarray(np.rot90(view, turns)))
            with _quiet_native_stderr():
                result = self._landmarker.detect(img)
            people = self._people(result, side, side, (x0, y0), turns)
            if people:  # the one nearest the view's centre
                found.append(people[select_person([p.box for p in people], (w, h), around.box, np.inf)])
        return found

    def _start_mirrored(self, image: np.ndarray, timestamp_s: float | None) -> Future:
        """The mirrored pass on `image`, started on its own thread at the timestamp the normal
        pass is about to get (`_mirrored`)."""
        check_rgb(image)
        ts = self._mirror_ts_ms(timestamp_s)
        if self._mirror_thread is None:
            self._mirror_thread = ThreadPoolExecutor(1, thread_name_prefix="mirror-pass")
        self._mirror_job = self._mirror_thread.submit(self._mirrored, image, ts)
        return self._mirror_job

    def _mirror_ts_ms(self, timestamp_s: float | None) -> int:
        """The timestamp `_mirrored` gets for a frame whose normal pass has not run yet: the
        one that pass is about to get (VIDEO mode)."""
        return self._next_ts_ms(timestamp_s) if self.mode == "video" else self._last_ts_ms

    def _wait_mirrored(self) -> None:
        """Let a mirrored pass still running (its detect was interrupted) end before its
        landmarker is closed."""
        job, self._mirror_job = self._mirror_job, None
        if job is not None:
            wait([job])

    def _mirrored(self, image: np.ndarray, ts_ms: int) -> list[Detection]:
        """The people the mirrored pass finds on the horizontal mirror of `image` (the frame
        the normal pass sees, at its VIDEO-mode timestamp ts_ms), in `image`'s pixels and
        sides."""
        h, w = image.shape[:2]
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image[:, ::-1]))
        first = self._mirror is None
        with _quiet_native_stderr() if first else contextlib.nullcontext():
            if first:
                self._mirror = self._create(self._options(self.mode))
            if self.mode == "video":
                result = self._mirror.detect_for_video(mp_image, ts_ms)
            else:
                result = self._mirror.detect(mp_image)
        return self._people(result, w, h, mirror=True)

    def _detect_still(self, mp_image: object) -> object:
        with _quiet_native_stderr():
            if self._still is None:
                self._still = self._create(self._options("image"))
            return self._still.detect(mp_image)

    def _people(self, result: object, w: int, h: int, offset: tuple[int, int] = (0, 0),
                turns: int = 0, mirror: bool = False) -> list[Detection]:
        people = [self._to_detection(lms, wlms, w, h, offset, turns, mirror)
                  for lms, wlms in zip(result.pose_landmarks, result.pose_world_landmarks)]
        return [p for p in people if p is not None]

    @staticmethod
    def _to_detection(lms: list, wlms: list, w: int, h: int, offset: tuple[int, int] = (0, 0),
                      turns: int = 0, mirror: bool = False) -> Detection | None:
        """MediaPipe's landmarks of one person on a (w, h) image that is the part of the full
        image at `offset`, turned `turns` quarter turns counter-clockwise (np.rot90; square
        when turned), or mirrored horizontally (`mirror`) -> a Detection in the full image's
        pixels and sides, world landmarks turned or mirrored back."""
        if len(lms) != NUM_MP_LANDMARKS or len(wlms) != NUM_MP_LANDMARKS:
            return None
        norm = np.array([[p.x, p.y] for p in lms], np.float64)
        vis = np.array([p.visibility if p.visibility is not None else 1.0 for p in lms], np.float64)
        world = np.array([[p.x, p.y, p.z] for p in wlms], np.float64)
        if not (np.isfinite(norm).all() and np.isfinite(world).all()):
            return None
        px = norm * np.array([w, h]) - 0.5
        for _ in range(turns % 4):  # undo one counter-clockwise quarter turn of a square image
            px = np.stack([w - 1 - px[:, 1], px[:, 0]], axis=1)
            world = np.stack([-world[:, 1], world[:, 0], world[:, 2]], axis=1)
        if mirror:
            px, vis, world = mirror_landmarks_px(px, w), vis[list(MP_FLIP_PERMUTATION)], mirror_world_landmarks(world)
        return detection_from_landmarks(px + np.asarray(offset, np.float64), vis, world)


def mirror_disagreement(a: Detection, b: Detection) -> float:
    """How far apart two passes' skeletons of one person are: the median distance of their
    limb landmarks (MIRROR_LIMBS), in crop-box sides of `a`."""
    d = np.linalg.norm(a.landmarks_px[list(MIRROR_LIMBS)] - b.landmarks_px[list(MIRROR_LIMBS)], axis=-1)
    return float(np.median(d)) / max(float(a.box.side), 1e-6)


def merge_mirrored(normal: Detection | None, mirrored: Detection | None) -> Detection | None:
    """One person from the normal pass and the mirrored pass (already mapped back to the
    image): the mean of their image landmarks, visibility and world landmarks; the one that
    found the person when the other did not; the normal pass when they disagree grossly
    (`mirror_disagreement` over MIRROR_DISAGREE)."""
    if normal is None or mirrored is None:
        return normal if mirrored is None else mirrored
    if mirror_disagreement(normal, mirrored) > MIRROR_DISAGREE:
        return normal
    worlds = [w for w in (normal.landmarks_world_mm, mirrored.landmarks_world_mm) if w is not None]
    if not worlds:  # stand-in detections without world landmarks: nothing to average them with
        return normal
    world_m = np.mean(worlds, axis=0, dtype=np.float64) / 1000.0
    merged = detection_from_landmarks(
        (normal.landmarks_px.astype(np.float64) + mirrored.landmarks_px) / 2.0,
        (normal.visibility.astype(np.float64) + mirrored.visibility) / 2.0, world_m)
    return merged if merged is not None else normal


def _with_mirrored(people: list[Detection], i: int | None, mirrored: list[Detection], image_size: tuple[int, int],
                   track: CropBox | None) -> tuple[list[Detection], int | None]:
    """The normal pass's people and kept index with the mirrored pass taken in: the kept
    person merged with the mirrored person nearest them; when the normal pass kept nobody,
    the mirrored pass's pick (under the same track gate)."""
    boxes = [p.box for p in mirrored]
    if i is None:
        j = select_person(boxes, image_size, track)
        return (mirrored, j) if j is not None else (people, i)
    k = select_person(boxes, image_size, people[i].box, np.inf)
    return [*people[:i], merge_mirrored(people[i], mirrored[k]), *people[i + 1:]], i


def detection_from_landmarks(landmarks_px: np.ndarray, visibility: np.ndarray, world_m: np.ndarray) -> Detection | None:
    """One person's 33 MediaPipe landmarks, (33, 2) full-image px, visibility (33,) in [0, 1]
    and world landmarks (33, 3) m (hip-centred) -> a Detection (17 joints, crop box); None
    when no box can be made of them."""
    px, vis, world = (np.asarray(a, np.float64) for a in (landmarks_px, visibility, world_m))
    joints, conf = landmarks_to_joints_2d(px, vis)
    try:
        box = box_from_joints(joints)
    except ValueError:
        return None
    return Detection(joints, conf, world_landmarks_to_joints_mm(world), box,
                     px.astype(np.float32), vis.astype(np.float32), (world * 1000.0).astype(np.float32))
