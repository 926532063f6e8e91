"""Several people: keep each person's identity from frame to frame (sans I/O).

`PersonTracker.update(people, timestamp_s) -> list[int]` takes the people the 2D detector
found in one frame (`Observation`: 17 keypoints in pixels, their confidence, optionally an
appearance descriptor) and returns a track id for each, in the same order. Nothing here
reads images or clocks: the caller passes the timestamps and (optionally) the descriptors
from `appearance_descriptor(image, keypoints, confidence)`.

How a detection is matched to a track:
  * Motion prediction: each track keeps its last keypoints and a whole-body velocity (px/s,
    the mean over its confident joints, exponentially smoothed). Its predicted keypoints at
    time t are the last ones shifted by velocity * min(t - t_last, max_predict_s): a person
    walking behind someone else is looked for where they are heading.
  * Similarity in [0, 1] between a track and a detection:
        motion = iou_weight * IoU(predicted box, detection box) + (1 - iou_weight) * OKS
    OKS is COCO's object keypoint similarity, exp(-d_j^2 / (2 s^2 k_j^2)) averaged over the
    joints confident in both (s^2 = the track's box area, k_j = 2 x COCO's per-joint sigma);
    for a lost track s grows with the time it has been lost (its position is less certain).
    With appearance descriptors on both sides:
        similarity = (1 - appearance_weight) * motion + appearance_weight * appearance
    where appearance is the Bhattacharyya coefficient of the colour histograms, rescaled so
    that `appearance_floor` (two different people in similar clothes) maps to 0.
  * Assignment: the Hungarian method (`lap.lapjv`, a maintained LAPJV solver), in two rounds
    as in DeepSORT's matching cascade: tracks seen in the previous frame first, then lost
    tracks against the detections left over. A pair below `min_similarity` never matches.
  * Birth: a detection left unmatched starts a new track (ids count up from 0 and are never
    reused). Near-duplicate detections of one person (OKS >= duplicate_oks, which MediaPipe
    sometimes returns when people overlap) are merged first, keeping the more confident.
  * Loss and re-identification: a track not matched in a frame is *lost*; it keeps its
    prediction and can be matched again (same id) for `max_lost_s`; after that it is dropped.

Track appearance is updated only from detections that do not overlap another person's box
(the histogram of a half-hidden person would describe the one in front).

Completion (`complete_pose`, used by realtime.people for people partly behind others): the
joints of a matched person's new pose that are hidden are replaced by the track's prediction
re-anchored (translation and scale) on the joints that are visible. Completed joints carry
confidence COMPLETED_CONFIDENCE exactly (`completed_joints` finds them): counted by boxes and
the root solve, below any visible joint. `TrackState.whole_s` says how long ago a track was
last seen whole (a completion is only as good as a recent whole view).

Units: keypoints in image pixels, (17, 2) in engines.skeleton order; confidence (17,) in
[0, 1]; timestamps in seconds (any origin, increasing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engines.skeleton import NUM_JOINTS

# COCO keypoint sigmas mapped onto the 17 Human3.6M joints (pelvis/spine take the hips',
# thorax the shoulders', neck_nose the nose's, head the ears'). OKS uses k = 2 sigma.
_COCO_SIGMAS = np.array([0.107, 0.107, 0.087, 0.089, 0.107, 0.087, 0.089, 0.107, 0.079, 0.026, 0.035,
                         0.079, 0.072, 0.062, 0.079, 0.072, 0.062])
OKS_KAPPA = 2.0 * _COCO_SIGMAS
MIN_JOINT_CONFIDENCE = 0.3  # joints below this do not count for boxes, OKS or velocity
# The confidence of a joint `complete_pose` filled in from the track's prediction: counted (>=
# MIN_JOINT_CONFIDENCE) and told apart by its exact value (`completed_joints`).
COMPLETED_CONFIDENCE = np.float32(0.35)
_ANCHOR_JOINTS = (1, 4, 11, 14)  # hips and shoulders: a completion is anchored on one at least
BOX_PAD = 0.1               # keypoint boxes grow by this fraction of their size on each side

# Appearance descriptor: hue x saturation (8 x 4) and value (8) histograms of two regions
# (torso: shoulders + hips quad; legs: hips to knees), each normalised to sum 1.
_H_BINS, _S_BINS, _V_BINS = 8, 4, 8
_REGION_DIM = _H_BINS * _S_BINS + _V_BINS
APPEARANCE_DIM = 2 * _REGION_DIM
_TORSO = (11, 14, 1, 4)     # l_shoulder, r_shoulder, r_hip, l_hip (a quad, in order)
_LEGS = (1, 4, 5, 2)        # r_hip, l_hip, l_knee, r_knee
_APPEARANCE_SAMPLES = 24    # each region is resampled to at most this many pixels a side


@dataclass(frozen=True)
class Observation:
    """One detected person. keypoints (17, 2) px, confidence (17,) in [0, 1], appearance
    (APPEARANCE_DIM,) float32 histograms from `appearance_descriptor`, or None."""

    keypoints: np.ndarray
    confidence: np.ndarray
    appearance: np.ndarray | None = None


@dataclass(frozen=True)
class TrackerConfig:
    """Tuning of `PersonTracker` (see the module docstring for the meaning of each)."""

    iou_weight: float = 0.5
    appearance_weight: float = 0.5
    appearance_floor: float = 0.6
    min_similarity: float = 0.2
    max_lost_s: float = 2.0
    motion_trust_s: float = 0.5
    reach_per_s: float = 1.5
    max_predict_s: float = 1.0
    lost_scale_growth_per_s: float = 1.0
    velocity_smoothing: float = 0.5
    appearance_smoothing: float = 0.2
    duplicate_oks: float = 0.8
    overlap_iou: float = 0.15
    whole_joints: int = 15

    def __post_init__(self) -> None:
        for name in ("iou_weight", "appearance_weight", "appearance_floor", "min_similarity",
                     "velocity_smoothing", "appearance_smoothing", "duplicate_oks", "overlap_iou"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"TrackerConfig.{name} must be in [0, 1], got {v}")
        for name in ("max_lost_s", "max_predict_s", "lost_scale_growth_per_s", "reach_per_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrackerConfig.{name} must be >= 0")
        if not 0 <= self.whole_joints <= NUM_JOINTS:
            raise ValueError(f"TrackerConfig.whole_joints must be in [0, {NUM_JOINTS}], got {self.whole_joints}")
        if not self.motion_trust_s > 0:
            raise ValueError(f"TrackerConfig.motion_trust_s must be > 0, got {self.motion_trust_s}")


@dataclass(frozen=True)
class TrackState:
    """A snapshot of one track. box (4,) x0, y0, x1, y1 px of its last keypoints; lost_s:
    seconds since it was last matched (0 if matched in the latest frame); hits: frames
    matched so far; whole_s: seconds since it was last matched with a whole body (at least
    TrackerConfig.whole_joints confident joints, none completed; inf if never)."""

    track_id: int
    box: np.ndarray
    lost_s: float
    hits: int
    whole_s: float = float("inf")


@dataclass
class _Track:
    track_id: int
    keypoints: np.ndarray            # (17, 2) px, NaN where never seen
    confidence: np.ndarray           # (17,)
    t_last: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px/s, whole body
    appearance: np.ndarray | None = None
    hits: int = 1
    matched_last: bool = True        # matched in the latest update
    t_whole: float = -np.inf         # last matched with a whole body

    def predicted(self, t: float, max_predict_s: float) -> np.ndarray:
        dt = float(np.clip(t - self.t_last, 0.0, max_predict_s))
        return self.keypoints + self.velocity * dt


def confident_joints(keypoints: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """(17,) bool: the keypoints (17, 2) px that are finite and at least MIN_JOINT_CONFIDENCE
    confident (confidence (17,)): the joints boxes, OKS, motion and painting count."""
    finite = np.isfinite(np.asarray(keypoints, np.float64)).all(axis=1)
    return finite & (np.asarray(confidence) >= MIN_JOINT_CONFIDENCE)


def keypoint_box(keypoints: np.ndarray, confidence: np.ndarray | None = None) -> np.ndarray | None:
    """(4,) x0, y0, x1, y1 px around the confident, finite keypoints (all finite ones when
    fewer than 3 are confident), padded by BOX_PAD; None without 2 usable keypoints."""
    kp = np.asarray(keypoints, np.float64)
    ok = np.isfinite(kp).all(axis=1)
    if confidence is not None:
        conf_ok = ok & (np.asarray(confidence) >= MIN_JOINT_CONFIDENCE)
        if conf_ok.sum() >= 3:
            ok = conf_ok
    if ok.sum() < 2:
        return None
    lo, hi = kp[ok].min(axis=0), kp[ok].max(axis=0)
    pad = BOX_PAD * np.maximum(hi - lo, 1.0)
    return np.concatenate([lo - pad, hi + pad])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) x0, y0, x1, y1 boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def oks(a: np.ndarray, b: np.ndarray, scale_px: float, conf_a: np.ndarray | None = None,
        conf_b: np.ndarray | None = None) -> float:
    """Object keypoint similarity of two (17, 2) px keypoint sets at object scale `scale_px`
    (sqrt of the box area): the mean of exp(-d^2 / (2 s^2 k^2)) over joints finite (and
    confident, when confidences are given) in both; 0 when no joint qualifies."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    for c in (conf_a, conf_b):
        if c is not None:
            ok &= np.asarray(c) >= MIN_JOINT_CONFIDENCE
    if not ok.any() or not scale_px > 0:
        return 0.0
    d2 = ((a[ok] - b[ok]) ** 2).sum(axis=1)
    return float(np.exp(-d2 / (2.0 * scale_px ** 2 * OKS_KAPPA[ok] ** 2)).mean())


def appearance_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Bhattacharyya coefficient of the two regions' histograms, in [0, 1] (1 = the
    same colour distribution). A region that is empty on either side is skipped; 0.5 when
    no region can be compared (no evidence either way)."""
    a = np.asarray(a, np.float64).reshape(2, _REGION_DIM)
    b = np.asarray(b, np.float64).reshape(2, _REGION_DIM)
    sims = []
    for ra, rb in zip(a, b):
        if ra.sum() <= 0 or rb.sum() <= 0:
            continue
        hs = np.sqrt(ra[:-_V_BINS] * rb[:-_V_BINS]).sum()
        v = np.sqrt(ra[-_V_BINS:] * rb[-_V_BINS:]).sum()
        sims.append(0.5 * (hs + v))
    return float(np.mean(sims)) if sims else 0.5


def _region_histogram(hsv: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Hue-saturation and value histograms of the pixels of (H, W, 3) uint8 HSV (OpenCV
    ranges: H 0-179) inside the convex quad (4, 2) px, sampled on a grid of at most
    _APPEARANCE_SAMPLES points a side; zeros if the quad is degenerate or outside."""
    import cv2

    out = np.zeros(_REGION_DIM, np.float32)
    h, w = hsv.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    step = max(1, int(max(x1 - x0, y1 - y0) // _APPEARANCE_SAMPLES))
    patch = hsv[y0:y1 + 1:step, x0:x1 + 1:step]
    mask = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round((quad - [x0, y0]) / step).astype(np.int32), 1)
    px = patch[mask.astype(bool)].astype(np.int32)
    if len(px) < 4:
        return out
    hs = (px[:, 0] * _H_BINS // 180) * _S_BINS + px[:, 1] * _S_BINS // 256
    out[:_H_BINS * _S_BINS] = np.bincount(hs, minlength=_H_BINS * _S_BINS)
    out[_H_BINS * _S_BINS:] = np.bincount(px[:, 2] * _V_BINS // 256, minlength=_V_BINS)
    return out / len(px)


def appearance_descriptor(image_rgb: np.ndarray, keypoints: np.ndarray,
                          confidence: np.ndarray | None = None) -> np.ndarray:
    """(APPEARANCE_DIM,) float32 colour histograms of a person's torso and upper legs in
    image (H, W, 3) uint8 RGB, from their (17, 2) px keypoints. A region whose corner joints
    are missing or unconfident is left at zero (skipped by `appearance_similarity`)."""
    import cv2

    kp = np.asarray(keypoints, np.float64)
    conf = np.ones(NUM_JOINTS) if confidence is None else np.asarray(confidence, np.float64)
    box = keypoint_box(kp)
    out = np.zeros(APPEARANCE_DIM, np.float32)
    if box is None:
        return out
    h, w = image_rgb.shape[:2]
    x0, y0 = int(max(box[0], 0)), int(max(box[1], 0))
    x1, y1 = int(min(box[2], w - 1)), int(min(box[3], h - 1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    hsv = cv2.cvtColor(np.ascontiguousarray(image_rgb[y0:y1 + 1, x0:x1 + 1]), cv2.COLOR_RGB2HSV)
    for r, joints in enumerate((_TORSO, _LEGS)):
        quad = kp[list(joints)]
        if not np.isfinite(quad).all() or (conf[list(joints)] < MIN_JOINT_CONFIDENCE).any():
            continue
        out[r * _REGION_DIM:(r + 1) * _REGION_DIM] = _region_histogram(hsv, quad - [x0, y0])
    return out


def _assign(similarity: np.ndarray, min_similarity: float) -> list[tuple[int, int]]:
    """Pairs (row, col) maximising the total similarity, each at least min_similarity."""
    if similarity.size == 0:
        return []
    import lap

    cost = 1.0 - similarity
    cost[similarity < min_similarity] = 1e6  # never chosen: cost_limit excludes it
    _, rows, _ = lap.lapjv(cost, extend_cost=True, cost_limit=1.0 - min_similarity + 1e-9)
    return [(r, int(c)) for r, c in enumerate(rows) if c >= 0 and similarity[r, c] >= min_similarity]


class PersonTracker:
    """Track identities over a stream of frames. One `update` per frame, in time order."""

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._now = 0.0  # timestamp of the latest update

    def reset(self) -> None:
        """Forget every track (ids keep counting up: an id is never reused)."""
        self._tracks.clear()

    @property
    def tracks(self) -> tuple[TrackState, ...]:
        """The live tracks (matched or lost within max_lost_s) after the latest update."""
        return tuple(TrackState(tr.track_id, keypoint_box(tr.keypoints, tr.confidence), self._now - tr.t_last, tr.hits,
                                self._now - tr.t_whole) for tr in self._tracks)

    def predicted_boxes(self, timestamp_s: float) -> dict[int, np.ndarray]:
        """track id -> (4,) predicted box px at `timestamp_s`, for every live track (where
        to look for people in the next frame)."""
        out = {}
        for tr in self._tracks:
            box = keypoint_box(tr.predicted(timestamp_s, self.config.max_predict_s), tr.confidence)
            if box is not None:
                out[tr.track_id] = box
        return out

    def predicted_keypoints(self, timestamp_s: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """track id -> ((17, 2) px predicted keypoints, (17,) their last confidence) at
        `timestamp_s`, for every live track."""
        return {tr.track_id: (tr.predicted(timestamp_s, self.config.max_predict_s), tr.confidence.copy())
                for tr in self._tracks}

    # -- similarity -------------------------------------------------------------------------
    def _similarity(self, tracks: list[_Track], obs: list[Observation], boxes: list[np.ndarray],
                    t: float) -> np.ndarray:
        cfg = self.config
        sim = np.zeros((len(tracks), len(obs)))
        centres = [0.5 * (b[:2] + b[2:]) for b in boxes]
        for i, tr in enumerate(tracks):
            pred = tr.predicted(t, cfg.max_predict_s)
            pbox = keypoint_box(pred, tr.confidence)
            if pbox is None:
                continue
            dt = max(0.0, t - tr.t_last)
            lost_s = 0.0 if tr.matched_last else dt
            w, h = pbox[2] - pbox[0], pbox[3] - pbox[1]
            scale = float(np.sqrt(w * h)) * (1.0 + cfg.lost_scale_growth_per_s * lost_s)
            reach = float(np.hypot(w, h)) * (0.5 + cfg.reach_per_s * dt)
            trust = 1.0 / (1.0 + lost_s / cfg.motion_trust_s)
            centre = 0.5 * (pbox[:2] + pbox[2:])
            for j, (o, box) in enumerate(zip(obs, boxes)):
                if np.hypot(*(centres[j] - centre)) > reach:
                    continue  # further than a person can have moved
                motion = (cfg.iou_weight * box_iou(pbox, box)
                          + (1.0 - cfg.iou_weight) * oks(pred, o.keypoints, scale, tr.confidence, o.confidence))
                if tr.appearance is None or o.appearance is None:
                    sim[i, j] = motion
                    continue
                app = appearance_similarity(tr.appearance, o.appearance)
                app = max(0.0, (app - cfg.appearance_floor) / (1.0 - cfg.appearance_floor))
                wm = (1.0 - cfg.appearance_weight) * trust
                sim[i, j] = wm * motion + (1.0 - wm) * app
        return sim

    def _dedupe(self, obs: list[Observation], boxes: list[np.ndarray]) -> list[int]:
        """Indices of the observations to keep: of two near-identical skeletons (OKS >=
        duplicate_oks) the one with the higher mean confidence."""
        keep = list(range(len(obs)))
        order = sorted(keep, key=lambda k: -float(np.mean(obs[k].confidence)))
        kept: list[int] = []
        for k in order:
            scale = float(np.sqrt((boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])))
            if all(oks(obs[k].keypoints, obs[m].keypoints, scale) < self.config.duplicate_oks for m in kept):
                kept.append(k)
        return sorted(kept)

    # -- update -----------------------------------------------------------------------------
    def update(self, people: Sequence[Observation], timestamp_s: float) -> list[int | None]:
        """Match one frame's people to tracks; returns each one's track id, in input order
        (None for a person dropped as a duplicate of another, or without 2 usable keypoints)."""
        cfg = self.config
        t = float(timestamp_s)
        self._now = t
        # Tracks lost for too long are gone before this frame is matched.
        self._tracks = [tr for tr in self._tracks if t - tr.t_last <= cfg.max_lost_s or tr.matched_last]
        boxes_all = [keypoint_box(p.keypoints, p.confidence) for p in people]
        usable = [k for k, b in enumerate(boxes_all) if b is not None]
        kept = [usable[k] for k in self._dedupe([people[k] for k in usable], [boxes_all[k] for k in usable])]
        obs = [people[k] for k in kept]
        boxes = [boxes_all[k] for k in kept]
        ids: list[int | None] = [None] * len(people)

        free = list(range(len(obs)))
        matched: dict[int, _Track] = {}
        for group in ([tr for tr in self._tracks if tr.matched_last], [tr for tr in self._tracks if not tr.matched_last]):
            if not group or not free:
                continue
            sim = self._similarity(group, [obs[j] for j in free], [boxes[j] for j in free], t)
            pairs = _assign(sim, cfg.min_similarity)
            taken = set()
            for r, c in pairs:
                matched[free[c]] = group[r]
                taken.add(free[c])
            free = [j for j in free if j not in taken]

        overlapping = self._overlapping(boxes)
        for tr in self._tracks:
            tr.matched_last = False
        for j, tr in matched.items():
            self._refresh(tr, obs[j], t, update_appearance=not overlapping[j])
            ids[kept[j]] = tr.track_id
        for j in free:
            tr = _Track(self._next_id, np.asarray(obs[j].keypoints, np.float64).copy(),
                        np.asarray(obs[j].confidence, np.float64).copy(), t,
                        appearance=None if obs[j].appearance is None else np.asarray(obs[j].appearance, np.float64))
            if self._whole(obs[j]):
                tr.t_whole = t
            self._next_id += 1
            self._tracks.append(tr)
            ids[kept[j]] = tr.track_id
        return ids

    def _whole(self, o: Observation) -> bool:
        """Does the observation show a whole body (whole_joints confident, none completed)?"""
        ok = confident_joints(o.keypoints, o.confidence) & ~completed_joints(o.confidence)
        return int(ok.sum()) >= self.config.whole_joints

    def _overlapping(self, boxes: list[np.ndarray]) -> list[bool]:
        out = [False] * len(boxes)
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                if box_iou(boxes[a], boxes[b]) > self.config.overlap_iou:
                    out[a] = out[b] = True
        return out

    def _refresh(self, tr: _Track, o: Observation, t: float, update_appearance: bool) -> None:
        cfg = self.config
        kp = np.asarray(o.keypoints, np.float64)
        conf = np.asarray(o.confidence, np.float64)
        dt = t - tr.t_last
        both = confident_joints(kp, conf) & confident_joints(tr.keypoints, tr.confidence)
        if dt > 0 and both.sum() >= 3:
            v = (kp[both] - tr.keypoints[both]).mean(axis=0) / dt
            a = cfg.velocity_smoothing if tr.hits > 1 else 1.0
            tr.velocity = (1.0 - a) * tr.velocity + a * v
        seen = np.isfinite(kp).all(axis=1)
        tr.keypoints = np.where(seen[:, None], kp, tr.keypoints + tr.velocity * max(dt, 0.0))
        tr.confidence = np.where(seen, conf, 0.0)
        tr.t_last = t
        tr.hits += 1
        tr.matched_last = True
        if self._whole(o):
            tr.t_whole = t
        if update_appearance and o.appearance is not None:
            tr.appearance = _blend_appearance(tr.appearance, np.asarray(o.appearance, np.float64),
                                              cfg.appearance_smoothing)


def completed_joints(confidence: np.ndarray) -> np.ndarray:
    """(..., 17) bool: the joints of confidence (..., 17) that `complete_pose` filled in (their
    confidence is COMPLETED_CONFIDENCE exactly)."""
    return np.asarray(confidence) == COMPLETED_CONFIDENCE


def complete_pose(keypoints: np.ndarray, confidence: np.ndarray, predicted: np.ndarray,
                  hidden: np.ndarray | None = None, min_anchors: int = 4, outlier: float = 0.2,
                  max_scale_change: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A partly hidden person's pose made whole from their track's prediction.

    keypoints (17, 2) px and confidence (17,): the person's new pose; predicted (17, 2) px:
    their track's predicted keypoints for this frame; hidden (17,) bool: joints known to lie
    behind someone (on a nearer person's body). The anchors are the joints confident, not
    hidden and near the prediction once it is fitted to them: the prediction is scaled
    (by at most 1 +- max_scale_change) and translated onto the confident joints by least
    squares, joints further from the fit than `outlier` times the predicted box's height are
    dropped, and the fit is made again on the rest. The joints that are not anchors (hidden,
    unconfident, or far off a prediction the other joints agree with: a joint put on the
    person in front) take the fitted prediction, with confidence COMPLETED_CONFIDENCE.

    Returns (keypoints (17, 2) px, confidence (17,), completed (17,) bool), or None when
    nothing needs completing or the pose cannot be anchored: fewer than `min_anchors`
    anchors, or none of them a hip or shoulder.
    """
    kp = np.asarray(keypoints, np.float64)
    conf = np.asarray(confidence, np.float32)
    pred = np.asarray(predicted, np.float64)
    usable = np.isfinite(pred).all(axis=1)
    box = keypoint_box(pred)
    if box is None or usable.sum() < min_anchors:
        return None
    height = max(box[3] - box[1], box[2] - box[0], 1.0) / (1.0 + 2.0 * BOX_PAD)
    anchors = confident_joints(kp, conf) & usable
    if hidden is not None:
        anchors &= ~np.asarray(hidden, bool)

    def anchored(a: np.ndarray) -> bool:
        return a.sum() >= min_anchors and a[list(_ANCHOR_JOINTS)].any()

    def fit(a: np.ndarray) -> np.ndarray:
        p, d = pred[a], kp[a]
        pc, dc = p.mean(axis=0), d.mean(axis=0)
        spread = float(((p - pc) ** 2).sum())
        scale = float(((p - pc) * (d - dc)).sum()) / spread if spread > 0 else 1.0
        scale = float(np.clip(scale, 1.0 / (1.0 + max_scale_change), 1.0 + max_scale_change))
        return scale * (pred - pc) + dc

    for _ in range(3):  # drop the joints off the fit, fit again, until none is
        if not anchored(anchors):
            return None
        fitted = fit(anchors)
        near = anchors & (np.linalg.norm(fitted - kp, axis=1) <= outlier * height)
        if near.sum() == anchors.sum():
            break
        anchors = near
    else:
        if not anchored(anchors):
            return None
        fitted = fit(anchors)
    completed = usable & ~anchors
    if not completed.any():
        return None
    out_conf = conf.copy()
    out_conf[completed] = COMPLETED_CONFIDENCE
    out_kp = np.where(completed[:, None], fitted, kp)
    return out_kp.astype(np.float32), out_conf, completed


def _blend_appearance(old: np.ndarray | None, new: np.ndarray, a: float) -> np.ndarray:
    """Exponential average of two descriptors, region by region: an empty region (all
    zero: its joints were not seen) on one side takes the other side's histogram."""
    if old is None:
        return new.copy()
    old_r, new_r = old.reshape(2, _REGION_DIM), new.reshape(2, _REGION_DIM)
    out = np.empty_like(old_r)
    for r in range(2):
        if old_r[r].sum() <= 0:
            out[r] = new_r[r]
        elif new_r[r].sum() <= 0:
            out[r] = old_r[r]
        else:
            out[r] = (1.0 - a) * old_r[r] + a * new_r[r]
    return out.reshape(-1)
