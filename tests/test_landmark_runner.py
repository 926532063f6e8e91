"""realtime.landmark_runner: the crop geometry (image <-> model coordinates), decoding the
model's outputs back into the image, the interpreter batched over crops, and the
several-people path that uses it for people apart from the others."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engines.skeleton import NUM_JOINTS
from realtime.estimator import PoseEstimator
from realtime.frames import Frame
from realtime.landmark_runner import (INPUT, MODEL_LANDMARKS, Roi, crop, decode, roi_from_joints)
from realtime.people import PeopleEstimator

from test_people_search import SIZE, NoLifter, ProminentDetector, crossing_script, detection, near_far, person


def test_roi_maps_model_coordinates_to_the_image_and_back():
    roi = Roi(412.3, 250.7, 300.0, 0.4)
    xy = np.array([[0.0, 0.0], [INPUT, INPUT], [128.0, 128.0], [37.5, 200.25]])
    assert np.allclose(roi.to_model(roi.to_image(xy)), xy)
    assert np.allclose(roi.to_image([[INPUT / 2, INPUT / 2]]), [[412.3, 250.7]])  # the centre
    # the crop's up (decreasing y) points along (sin r, -cos r) in the image
    step = roi.to_image([[128.0, 0.0]]) - roi.to_image([[128.0, 128.0]])
    assert np.allclose(step / np.linalg.norm(step), [[math.sin(0.4), -math.cos(0.4)]])
    assert np.linalg.norm(step) == pytest.approx(150.0)  # half the side


def test_crop_puts_an_image_point_where_to_model_says():
    image = np.zeros((540, 960, 3), np.uint8)
    u, v = 530, 190
    image[v - 2:v + 3, u - 2:u + 3] = 255  # a 5x5 dot, centred on (u, v)
    roi = Roi(480.0, 260.0, 256.0, -0.7)   # scale 1: the dot stays 5 px wide
    x = crop(image, roi)
    assert x.shape == (INPUT, INPUT, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    weights = x[..., 0]
    rows, cols = np.indices(weights.shape)
    centre = np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()  # pixel-centre coords
    assert np.allclose(centre + 0.5, roi.to_model([[u, v]])[0], atol=0.3)
    # outside the image: black
    assert not crop(image, Roi(-500.0, -500.0, 100.0)).any()


def test_roi_from_joints_stands_the_body_up_and_covers_it():
    conf = np.ones(NUM_JOINTS, np.float32)
    upright = person(480, 500, 400)
    roi = roi_from_joints(upright, conf)
    assert roi.rotation == pytest.approx(0.0, abs=1e-6)
    inside = roi.to_model(upright)
    assert (inside > 0).all() and (inside < INPUT).all()
    assert roi_from_joints(upright, conf, min_side=2000.0).side == 2000.0
    # the same body tilted 30 degrees clockwise on the image about its hips
    hips = 0.5 * (upright[1] + upright[4])
    a = math.radians(30)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    tilted = (upright - hips) @ rot.T + hips
    assert roi_from_joints(tilted, conf).rotation == pytest.approx(a, abs=1e-6)
    # upside down: half a turn
    flipped = 2 * hips - upright
    assert abs(roi_from_joints(flipped, conf).rotation) == pytest.approx(math.pi, abs=1e-6)
    # no confident hips or shoulders: no region
    weak = conf.copy()
    weak[11] = 0.0
    assert roi_from_joints(upright, weak) is None


def model_outputs(landmarks_px: np.ndarray, world_img_m: np.ndarray, roi: Roi, visibility_logit: float = 3.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """What the model would return for these (33, 2) image landmarks and (33, 3) world
    landmarks (m, the image's orientation) seen in roi: (195,) and (117,)."""
    lm = np.zeros((MODEL_LANDMARKS, 5))
    lm[:33, :2] = roi.to_model(landmarks_px)
    lm[:, 3] = visibility_logit
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    world = np.zeros((MODEL_LANDMARKS, 3))
    world[:33] = np.stack([c * world_img_m[:, 0] + s * world_img_m[:, 1],
                           -s * world_img_m[:, 0] + c * world_img_m[:, 1], world_img_m[:, 2]], axis=1)
    return lm.ravel(), world.ravel()


def test_decode_puts_the_landmarks_back_in_the_image():
    rng = np.random.default_rng(0)
    roi = Roi(300.0, 200.0, 350.0, 0.9)
    px = rng.uniform([150, 60], [450, 340], size=(33, 2))
    world = rng.normal(0.0, 0.4, size=(33, 3))
    lm, wm = model_outputs(px, world, roi)
    d = decode(lm, wm, 0.9, roi)
    assert np.allclose(d.landmarks_px, px, atol=1e-3)
    assert np.allclose(d.visibility, 1.0 / (1.0 + math.exp(-3.0)), atol=1e-6)
    assert np.allclose(d.landmarks_world_mm, world * 1000.0, atol=1e-2)
    assert d.joints_2d_px.shape == (NUM_JOINTS, 2) and np.isfinite(d.joints_2d_px).all()
    assert decode(lm, wm, 0.2, roi) is None          # pose presence below the threshold: nobody
    assert decode(lm * np.nan, wm, 0.9, roi) is None  # not finite: nobody


def _runner():
    pytest.importorskip("ai_edge_litert")
    from realtime.landmark_runner import LandmarkRunner

    return LandmarkRunner(threads=1)


def test_a_batch_gives_each_crop_what_it_gives_alone():
    rng = np.random.default_rng(1)
    crops = rng.uniform(0.0, 1.0, size=(3, INPUT, INPUT, 3)).astype(np.float32)
    with _runner() as runner:
        batch = runner.run(crops)
        alone = [runner.run(c[None]) for c in crops]
        assert runner.calls == 4
    assert [b.shape for b in batch] == [(3, 195), (3,), (3, 117)]
    for i in range(3):
        for b, a in zip(batch, alone[i]):
            assert np.allclose(b[i], a[0], atol=1e-4)


def test_an_empty_crop_holds_nobody():
    with _runner() as runner:
        image = np.zeros((540, 960, 3), np.uint8)
        grey = np.full((540, 960, 3), 127, np.uint8)
        roi = Roi(480.0, 270.0, 400.0)
        assert runner.detect([image, grey], [roi, roi]) == [None, None]
        assert runner.calls == 1
        assert runner.detect([], []) == [] and runner.calls == 1


class ScriptedRunner:
    """As the landmark model on what it is shown: in each region the scripted person whose
    pelvis lies in it (the tallest), unless painted over. Records the regions of each call."""

    def __init__(self, script: list[list[np.ndarray]]) -> None:
        self.script = script
        self.frame = 0
        self.batches: list[tuple[int, int]] = []  # (frame, regions in the call)
        self.calls = 0
        self.closed = False

    def detect(self, images, rois):
        self.calls += 1
        self.batches.append((self.frame, len(rois)))
        out = []
        for image, roi in zip(images, rois):
            seen = []
            for uv in self.script[self.frame]:
                m = roi.to_model(uv[:1])[0]
                u, v = int(round(uv[0, 0])), int(round(uv[0, 1]))
                if (0 <= m).all() and (m < INPUT).all() and not image[v, u].any():
                    seen.append(uv)
            out.append(detection(max(seen, key=lambda uv: np.ptp(uv[:, 1]))) if seen else None)
        return out

    def close(self) -> None:
        self.closed = True


def test_people_apart_are_found_by_one_batched_call_and_overlaps_by_the_search():
    """With a landmark runner, the people seen last frame whom no one else's predicted body
    meets are all looked for in one runner call per frame; while two people overlap (a
    crossing) they go through the MediaPipe crop search; identities hold through it; the
    runner is closed with the estimator."""
    n = 60
    script = crossing_script(n)
    det, runner = ProminentDetector(script), ScriptedRunner(script)
    est = PeopleEstimator(PoseEstimator(detector=det, lifter=NoLifter()), appearance=False, people=2,
                          landmarks=runner)
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    ids = []
    for i in range(n):
        runner.frame = i
        ids.append(near_far(est.detect(Frame(i, i / 30.0, black))))
    near = {f["near"] for f in ids if "near" in f}
    far = {f["far"] for f in ids if "far" in f}
    assert len(near) == 1 and len(far) == 1 and near != far
    assert sum("near" in f for f in ids) >= n - 3 and sum("far" in f for f in ids) >= n - 15
    per_frame = dict(runner.batches)
    assert len(per_frame) == len(runner.batches)  # at most one call per frame
    assert all(per_frame.get(f) == 2 for f in range(2, 10))  # both apart: both in one call
    crossing = {i for i in range(n) if abs((150 + 11 * i) - (810 - 11 * i)) < 150}
    assert not crossing & set(per_frame)  # overlapping: the search instead
    searched = {f for f, roi in det.rois if roi is not None}
    assert crossing <= searched and not searched & set(range(3, 10))
    assert est.batched_found == sum(per_frame.values()) > 0
    est.close()
    assert runner.closed
