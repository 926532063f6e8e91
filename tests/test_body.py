"""Fixed bone lengths per track (realtime.filters.TrackBody): a person's skeleton is one body.
Synthetic tracks whose lifted bone lengths are noisy: the output keeps each pose's bone
directions and root, with one set of lengths per track (the left/right mirror bones equal);
the causal form never uses later frames; a long loss starts a new body; several people each
keep their own; the app's options and the BVH's offsets agree with it."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from engines.skeleton import BONES, bone_lengths
from realtime.filters import FILE_BODY, LIVE_BODY, BodyConfig, TrackBody, fixed_bones, rebuild_with_lengths

from pose_fixtures import standing_pose

REL = standing_pose() - standing_pose()[0]
MIRROR_PAIRS = [(BONES.index((1, 2)), BONES.index((4, 5))), (BONES.index((11, 12)), BONES.index((14, 15))),
                (BONES.index((12, 13)), BONES.index((15, 16)))]


def noisy_track(n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """(n, 17, 3) mm: the standing pose turning about the vertical axis, each bone's length
    scaled anew per frame by up to +-15 % (a lifter's breathing limbs), pelvis at 0."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 17, 3))
    for k in range(n):
        a = 0.02 * k
        rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        pose = REL @ rot.T * scale
        out[k] = rebuild_with_lengths(pose, bone_lengths(pose) * rng.uniform(0.85, 1.15, len(BONES)))
    return out


def directions(joints: np.ndarray) -> np.ndarray:
    v = np.stack([joints[..., c, :] - joints[..., p, :] for p, c in BONES], axis=-2)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_file_body_is_constant_once_settled_and_keeps_directions_and_root():
    poses = noisy_track(240)                       # 8 s at 30 fps
    t = np.arange(240) / 30.0
    out = fixed_bones(poses, t, FILE_BODY)
    lengths = bone_lengths(out)
    settled = t >= FILE_BODY.settle_s - FILE_BODY.lookahead_s  # frames released after the body settled
    np.testing.assert_allclose(lengths[settled], np.broadcast_to(lengths[settled][0], lengths[settled].shape),
                               atol=1e-9)
    assert bone_lengths(poses)[settled].std(0).max() > 10.0  # the input's lengths did vary
    # the body is the median over the first 4 s (left and right averaged), near the true lengths
    early = bone_lengths(poses[t <= FILE_BODY.settle_s])
    med = np.median(early, axis=0)
    for a, b in MIRROR_PAIRS:
        assert lengths[-1, a] == pytest.approx(lengths[-1, b])
        assert lengths[-1, a] == pytest.approx(0.5 * (med[a] + med[b]))
    np.testing.assert_allclose(lengths[-1], bone_lengths(REL), rtol=0.05)
    np.testing.assert_allclose(directions(out), directions(poses), atol=1e-9)  # no bone turned
    np.testing.assert_allclose(out[:, 0], poses[:, 0])                         # root untouched
    # before the body settled it follows the track so far and 2 s ahead: already steady
    assert bone_lengths(out)[~settled].std(0).max() < 0.2 * bone_lengths(poses)[~settled].std(0).max()


def test_frames_wait_for_the_lookahead_and_come_out_in_order():
    body = TrackBody(BodyConfig(lookahead_s=0.5))
    poses = noisy_track(30)
    got = []
    for k in range(30):
        out = body.push(k / 30.0, poses[k] if k != 7 else None, k)  # frame 7: nobody
        assert all(i <= k - 15 for i, _ in out)
        got += out
    got += body.flush()
    assert [i for i, _ in got] == list(range(30))
    assert got[7][1] is None and all(lengths is not None for i, lengths in got if i != 7)


def test_causal_body_never_uses_later_frames():
    a, b = noisy_track(90, seed=1), noisy_track(90, seed=2, scale=1.4)
    k = 40
    mixed = np.concatenate([a[:k + 1], b[k + 1:]])  # the same up to frame k, someone else after it
    body = TrackBody(LIVE_BODY)
    for i in range(90):
        (item, lengths), = body.push(i / 30.0, mixed[i], i)  # answered at once
        assert item == i
    t = np.arange(90) / 30.0
    np.testing.assert_array_equal(fixed_bones(a, t, LIVE_BODY)[:k + 1], fixed_bones(mixed, t, LIVE_BODY)[:k + 1])
    # control: a body with lookahead does see the later frames
    assert not np.array_equal(fixed_bones(a, t, FILE_BODY)[:k + 1], fixed_bones(mixed, t, FILE_BODY)[:k + 1])


@pytest.mark.parametrize("gap_s, new_body", [(0.5, False), (1.5, True)])
def test_a_loss_longer_than_the_reset_gap_starts_a_new_body(gap_s, new_body):
    small, big = noisy_track(60, seed=3), noisy_track(60, seed=4, scale=1.3)
    t = np.r_[np.arange(60) / 30.0, 2.0 - 1 / 30.0 + gap_s + np.arange(60) / 30.0]
    out = fixed_bones(np.concatenate([small, big]), t, BodyConfig(lookahead_s=10.0))
    def body_of(poses):  # the median lengths, left and right averaged
        med = np.median(bone_lengths(poses), axis=0)
        for a, b in MIRROR_PAIRS + [(BONES.index((0, 1)), BONES.index((0, 4))), (BONES.index((2, 3)), BONES.index((5, 6))),
                                    (BONES.index((8, 11)), BONES.index((8, 14)))]:
            med[a] = med[b] = 0.5 * (med[a] + med[b])
        return med

    lengths = bone_lengths(out)
    if new_body:  # each person's own body
        np.testing.assert_allclose(lengths[:60], np.broadcast_to(body_of(small), (60, len(BONES))))
        np.testing.assert_allclose(lengths[60:], np.broadcast_to(body_of(big), (60, len(BONES))))
    else:         # one track: one body over both stretches
        np.testing.assert_allclose(lengths, np.broadcast_to(body_of(np.concatenate([small, big])), (120, len(BONES))))


def test_a_frame_without_a_full_pose_is_left_as_is():
    poses = noisy_track(10)
    poses[4, 13] = np.nan
    out = fixed_bones(poses, np.arange(10) / 30.0, FILE_BODY)
    np.testing.assert_array_equal(out[4], poses[4])
    assert np.isfinite(out[[0, 1, 2, 3, 5]]).all()


def test_bad_settings_are_refused():
    for bad in ({"lookahead_s": -1.0}, {"past_s": 0.0}, {"reset_gap_s": 0.0}, {"settle_s": -1.0}):
        with pytest.raises(ValueError):
            BodyConfig(**bad)
    body = TrackBody()
    body.push(1.0, REL, 0)
    with pytest.raises(ValueError, match="timestamp order"):
        body.push(0.5, REL, 1)


# ---- in the app: the sequence lifter, several people, options, BVH --------------------------------
def _single_frame_estimator(scales):
    """A PoseEstimator whose 'model' gives the standing pose with each row's bones scaled by
    the next of `scales` (a function of the row's features: per person)."""
    from realtime.estimator import PoseEstimator

    class Lifter:
        name = "fake"
        metadata = {"stage": "lifter"}

        def run(self, inputs):
            feats = inputs["features"]
            return {"joints_mm": np.stack([rebuild_with_lengths(REL, bone_lengths(REL) * scales(f))
                                           for f in feats]).astype(np.float32)}

        def close(self):
            pass

    class NoDetector:
        def close(self):
            pass

    return PoseEstimator(detector=NoDetector(), lifter=Lifter())


def _detected(i: int, uv: np.ndarray, track_id: int = 0):
    from realtime.detector import Detection
    from realtime.estimator import Detected

    det = Detection(uv.astype(np.float32), np.ones(17, np.float32), np.zeros((17, 3)), None,
                    np.zeros((33, 2), np.float32), np.ones(33, np.float32))
    return Detected(i, i / 30.0, (640, 480), det, track_id=track_id)


def _uv(x_mm: float, k: int) -> np.ndarray:
    from engines.camera import project_camera
    from realtime.trajectory import intrinsics_for

    intr = intrinsics_for((640, 480))
    return project_camera(REL + np.array([x_mm + 5.0 * k, 100.0, 4000.0]), intr.f, intr.c)


def test_sequence_lifter_gives_each_track_one_body_and_keeps_its_root():
    from realtime.sequence import lift_sequence
    from realtime.trajectory import FILE_ROOT_LAG_S, RootFilterConfig

    scales = list(np.random.default_rng(5).uniform(0.85, 1.15, (150, len(BONES))))
    n = 150
    dets = [_detected(k, _uv(-300.0, k)) for k in range(n)]
    root = RootFilterConfig(lag_s=FILE_ROOT_LAG_S)
    raw = list(lift_sequence(dets, _single_frame_estimator(lambda f, it=iter(scales): next(it)), root))
    fixed = list(lift_sequence(dets, _single_frame_estimator(lambda f, it=iter(scales): next(it)), root, FILE_BODY))
    assert [p.index for p in fixed] == list(range(n)) and all(p.valid for p in fixed)
    lengths = bone_lengths(np.stack([p.joints_mm for p in fixed]).astype(np.float64))
    settled = np.arange(n) / 30.0 >= FILE_BODY.settle_s - FILE_BODY.lookahead_s
    assert np.ptp(lengths[settled], axis=0).max() < 1e-3
    assert np.ptp(bone_lengths(np.stack([p.joints_mm for p in raw]).astype(np.float64)), axis=0).max() > 50
    for p, q in zip(raw, fixed):  # the same root trajectory, the same bone directions
        np.testing.assert_array_equal(p.translation_mm, q.translation_mm)
        np.testing.assert_allclose(directions(q.joints_mm.astype(np.float64)),
                                   directions(p.joints_mm.astype(np.float64)), atol=1e-5)


def test_several_people_keep_their_own_bodies():
    """Two tracks lifted together (realtime.people.PeopleSequenceLifter), one 1.3 times the
    other's size: each keeps its own body, unaffected by the other."""
    from realtime.people import PeopleDetected, PeopleEstimator

    rng = np.random.default_rng(6)

    def scales(f):  # the person on the right (pelvis x > 0 in the features) is 1.3 times bigger
        return (1.3 if f[34] > 0 else 1.0) * rng.uniform(0.85, 1.15, len(BONES))

    est = PeopleEstimator(_single_frame_estimator(scales))
    lifter = est.sequence(None, FILE_BODY)
    n = 150
    frames = []
    for k in range(n):
        people = (_detected(k, _uv(-900.0, k), track_id=1), _detected(k, _uv(900.0, k), track_id=2))
        frames += lifter.push(PeopleDetected(k, k / 30.0, (640, 480), people, {"detect": 1.0}))
    frames += lifter.flush()
    assert [f.index for f in frames] == list(range(n))
    settled = [f for f in frames if f.timestamp_s >= FILE_BODY.settle_s - FILE_BODY.lookahead_s]
    body = {tid: bone_lengths(np.stack([f.person(tid).joints_mm for f in settled]).astype(np.float64))
            for tid in (1, 2)}
    for tid in (1, 2):
        assert np.ptp(body[tid], axis=0).max() < 1e-3
    np.testing.assert_allclose(body[2][0], 1.3 * body[1][0], rtol=0.05)
    np.testing.assert_allclose(body[1][0], bone_lengths(REL), rtol=0.05)


def test_options_and_flags_choose_the_body():
    from realtime.api import Options, body_filter
    from realtime.cli_options import add_model_arguments, options_from_args, add_smoothing_arguments

    assert body_filter(Options(), live=False, stills=False) == FILE_BODY
    assert body_filter(Options(), live=True, stills=False) is None
    assert body_filter(Options(), live=False, stills=True) is None
    assert body_filter(Options(fixed_bones=True), live=True, stills=False) == LIVE_BODY
    assert body_filter(Options(fixed_bones=False), live=False, stills=False) is None
    p = argparse.ArgumentParser()
    add_model_arguments(p, live=False)
    add_smoothing_arguments(p, default_on=False)
    assert options_from_args(p.parse_args([])).fixed_bones is None
    assert options_from_args(p.parse_args(["--no-fixed-bones"])).fixed_bones is False
    assert options_from_args(p.parse_args(["--fixed-bones"])).fixed_bones is True


def test_bvh_offsets_are_the_tracks_body(tmp_path):
    """The BVH's fixed offsets (the clip's median bone lengths) are the body the poses carry."""
    from realtime.bvh import BvhOptions, bvh_document
    from bvh_reader import read_bvh
    from engines.skeleton import JOINT_NAMES

    n = 150
    poses = fixed_bones(noisy_track(n, seed=7), np.arange(n) / 30.0, BodyConfig(lookahead_s=10.0))
    path = tmp_path / "o.bvh"
    path.write_text(bvh_document(poses + np.array([0.0, 0.0, 4000.0]), np.ones(n, bool), np.arange(n) / 30.0, 30.0,
                                 options=BvhOptions(names="h36m", units="m", root="camera")))
    names, parents, offsets = read_bvh(path)[:3]
    body = bone_lengths(poses[0])
    for b, (p, c) in enumerate(BONES):
        k = names.index(JOINT_NAMES[c])
        assert names[parents[k]] == JOINT_NAMES[p]
        assert np.linalg.norm(offsets[k]) * 1000.0 == pytest.approx(body[b], rel=1e-4), JOINT_NAMES[c]
