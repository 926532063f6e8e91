"""Mirrored 2D (`--mirror-2d`, realtime.detector `mirror=True`): the 33-landmark mirror
tables, the mapping back of a mirrored pass, the averaging rule, the plumbing from the CLI and
the API to the detector, the refused combinations, and MediaPipe itself on a few frames."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engines.errors import UserError  # noqa: E402
from engines.landmarks import (MP_FLIP_PERMUTATION, MP_LANDMARK_NAMES, landmarks_to_joints_2d,  # noqa: E402
                               mirror_landmarks_px, mirror_world_landmarks)
from engines.skeleton import FLIP_PERMUTATION  # noqa: E402
from realtime import detector as D  # noqa: E402
from realtime.detector import DEFAULT_MODEL, detection_from_landmarks, merge_mirrored  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
needs_mediapipe_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(),
                                           reason=f"{DEFAULT_MODEL} missing: run scripts/build_mediapipe_model.py")


def _person(seed: int = 0, cx: float = 300.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic upright person: 33 landmarks (px), visibility, world landmarks (m)."""
    rng = np.random.default_rng(seed)
    px = np.stack([cx + rng.uniform(-60, 60, 33), np.linspace(80, 400, 33)], axis=1)
    return px, rng.uniform(0.5, 1.0, 33), rng.normal(0, 0.3, (33, 3))


def test_mirror_permutation_is_an_involution_that_swaps_sides():
    perm = np.array(MP_FLIP_PERMUTATION)
    assert sorted(perm) == list(range(33)) and (perm[perm] == np.arange(33)).all()
    for k, j in enumerate(perm):
        a, b = MP_LANDMARK_NAMES[k], MP_LANDMARK_NAMES[j]
        if "left" in a:
            assert b == a.replace("left", "right")
        elif "right" in a:
            assert b == a.replace("right", "left")
        else:
            assert j == k == 0  # the nose alone stays
    # through the 33 -> 17 mapping it is the skeleton's own left/right swap
    px, vis, _ = _person()
    joints, _ = landmarks_to_joints_2d(px, vis)
    swapped, _ = landmarks_to_joints_2d(px[perm], vis[perm])
    np.testing.assert_allclose(swapped, joints[list(FLIP_PERMUTATION)], atol=1e-3)


def test_mirroring_twice_gives_the_landmarks_back():
    px, _, world = _person(1)
    np.testing.assert_allclose(mirror_landmarks_px(mirror_landmarks_px(px, 640), 640), px)
    np.testing.assert_allclose(mirror_world_landmarks(mirror_world_landmarks(world)), world)
    m = mirror_world_landmarks(world)
    np.testing.assert_allclose(m[:, 0], -world[list(MP_FLIP_PERMUTATION), 0])
    np.testing.assert_allclose(m[:, 1:], world[list(MP_FLIP_PERMUTATION), 1:])


class _Point:
    def __init__(self, x: float, y: float, z: float = 0.0, visibility: float = 1.0) -> None:
        self.x, self.y, self.z, self.visibility = x, y, z, visibility


def test_a_mirrored_pass_maps_back_to_the_image_pixels_sides_and_axes():
    """Landmarks as MediaPipe reports them on image[:, ::-1] (normalised, pixel centres) come
    back at the pixels they are on in the image, each under its own side's name, with the
    world landmarks mirrored back (x negated)."""
    w, h = 640, 480
    rng = np.random.default_rng(2)
    pts = np.stack([rng.integers(0, w, 33), rng.integers(0, h, 33)], axis=1)  # integer pixels of the image
    vis = rng.uniform(0.2, 1.0, 33)
    world = rng.normal(0, 0.3, (33, 3))
    perm = list(MP_FLIP_PERMUTATION)
    # what MediaPipe sees on the mirror: the person's left landmark k is where the image's
    # landmark perm[k] is, at column w - 1 - u
    seen = [_Point((w - 1 - pts[j, 0] + 0.5) / w, (pts[j, 1] + 0.5) / h, visibility=vis[j]) for j in perm]
    seen_world = [_Point(-world[j, 0], world[j, 1], world[j, 2]) for j in perm]
    d = D.PoseDetector._to_detection(seen, seen_world, w, h, mirror=True)
    np.testing.assert_allclose(d.landmarks_px, pts, atol=1e-3)
    np.testing.assert_allclose(d.visibility, vis, atol=1e-6)
    np.testing.assert_allclose(d.landmarks_world_mm, world * 1000.0, atol=1e-2)


def _det(px: np.ndarray, vis: np.ndarray, world_m: np.ndarray) -> D.Detection:
    d = detection_from_landmarks(px, vis, world_m)
    assert d is not None
    return d


def test_merge_averages_both_passes_keeps_the_one_that_found_and_the_normal_on_disagreement():
    px, vis, world = _person(3)
    normal = _det(px, vis, world)
    shift = np.array([4.0, -2.0])
    other = _det(px + shift, vis * 0.5, world + 0.01)
    m = merge_mirrored(normal, other)
    np.testing.assert_allclose(m.landmarks_px, px + shift / 2, atol=1e-3)
    np.testing.assert_allclose(m.visibility, vis * 0.75, atol=1e-6)
    np.testing.assert_allclose(m.landmarks_world_mm, (world + 0.005) * 1000.0, atol=1e-2)
    np.testing.assert_allclose(m.joints_2d_px, (normal.joints_2d_px + other.joints_2d_px) / 2, atol=1e-3)
    # only one pass found the person
    assert merge_mirrored(normal, None) is normal and merge_mirrored(None, other) is other
    assert merge_mirrored(None, None) is None
    # a gross disagreement (the legs swapped with the arms in the mirrored pass): the normal pass
    limbs = list(D.MIRROR_LIMBS)
    wrong = px.copy()
    wrong[limbs] = px[limbs[::-1]]
    bad = _det(wrong, vis, world)
    assert D.mirror_disagreement(normal, bad) > D.MIRROR_DISAGREE
    assert merge_mirrored(normal, bad) is normal
    # the threshold: a shift just inside it is averaged, just outside it is not
    side = normal.box.side
    near = _det(px + [0.9 * D.MIRROR_DISAGREE * side, 0.0], vis, world)
    far = _det(px + [1.1 * D.MIRROR_DISAGREE * side, 0.0], vis, world)
    assert merge_mirrored(normal, near) is not normal and merge_mirrored(normal, far) is normal


def _fake_result(people: list[np.ndarray], w: int, h: int, mirrored: bool = False):
    """A MediaPipe-like result holding these people (33 landmarks each, image px), as seen on
    the image or, `mirrored`, on its mirror."""
    out, world = [], []
    for px in people:
        seen = mirror_landmarks_px(px, w) if mirrored else px
        out.append([_Point((u + 0.5) / w, (v + 0.5) / h, visibility=0.9) for u, v in seen])
        world.append([_Point(0.01 * k, 0.02 * k, 0.0) for k in range(33)])
    return NS(pose_landmarks=out, pose_world_landmarks=world)


def _fake_detector(normal: list, mirror: list, w: int, h: int, num_poses: int = 1) -> D.PoseDetector:
    """A PoseDetector in IMAGE mode whose two landmarkers answer from scripts (lists of the
    people, image px, of each frame)."""
    det = D.PoseDetector.__new__(D.PoseDetector)
    det.mode, det.num_poses, det._calls, det._lost, det._previous, det._last_ts_ms = "image", num_poses, 1, 0, None, -1
    det.redetect, det.views, det._still, det.mirror, det._mirror_thread, det._mirror_job = \
        False, False, None, True, None, None
    det._mp = NS(Image=lambda **k: None, ImageFormat=NS(SRGB=0))
    a, b = iter(normal), iter(mirror)
    det._landmarker = NS(detect=lambda img: _fake_result(next(a), w, h))
    det._mirror = NS(detect=lambda img: _fake_result(next(b), w, h, mirrored=True))
    return det


def test_detect_takes_the_mirrored_pass_in():
    w, h = 640, 480
    px, _, _ = _person(4)
    moved = px + [3.0, 1.0]
    det = _fake_detector([[px], [], [px], [px]], [[moved], [moved], [], [px + [0.0, 300.0]]], w, h)
    img = np.zeros((h, w, 3), np.uint8)
    both, mirror_only, normal_only, far = (det.detect(img) for _ in range(4))
    np.testing.assert_allclose(both.landmarks_px, px + [1.5, 0.5], atol=1e-3)
    np.testing.assert_allclose(mirror_only.landmarks_px, moved, atol=1e-3)
    np.testing.assert_allclose(normal_only.landmarks_px, px, atol=1e-3)
    np.testing.assert_allclose(far.landmarks_px, px, atol=1e-3)  # disagree grossly: the normal pass


def test_with_several_candidates_the_mirrored_person_nearest_the_kept_one_is_merged():
    w, h = 640, 480
    a, _, _ = _person(5, cx=200.0)
    b = a + [280.0, 0.0]  # the same size, less central: `a` is the one kept
    det = _fake_detector([[a, b]], [[b + 2.0, a + 2.0]], w, h, num_poses=2)
    d = det.detect(np.zeros((h, w, 3), np.uint8))
    np.testing.assert_allclose(d.landmarks_px, a + 1.0, atol=1e-3)


def test_the_option_reaches_the_detector_from_the_cli_and_the_api(monkeypatch, caplog):
    import argparse

    from realtime import api, estimator
    from realtime.cli_options import add_model_arguments, add_smoothing_arguments, options_from_args

    p = argparse.ArgumentParser()
    add_model_arguments(p, live=False)
    add_smoothing_arguments(p, default_on=False)
    assert options_from_args(p.parse_args([])).mirror_2d is False
    assert options_from_args(p.parse_args(["--mirror-2d"])).mirror_2d is True
    live = argparse.ArgumentParser()
    add_model_arguments(live, live=True)
    with pytest.raises(SystemExit):  # posestream webcam has no such option
        live.parse_args(["--mirror-2d"])

    made: list[dict] = []

    class Recorder:
        def __init__(self, **kw) -> None:
            made.append(kw)

    monkeypatch.setattr(estimator, "PoseDetector", Recorder)
    monkeypatch.setattr(estimator, "open_lifter", lambda *a, **k: NS(metadata={}, close=lambda: None))
    est = api.open_pose_estimator(api.Options(model="x", mirror_2d=True), live=False)
    assert made[-1]["mirror"] is True and made[-1]["mode"] == "video"
    api.open_pose_estimator(api.Options(model="x"), live=False)
    assert made[-1]["mirror"] is False
    api.open_pose_estimator(api.Options(model="x", mirror_2d=True, image_mode=True), live=False)
    assert made[-1]["mirror"] is True and made[-1]["mode"] == "image"
    with caplog.at_level("WARNING", logger="realtime.api"):
        api.open_pose_estimator(api.Options(model="x", mirror_2d=True), live=False, stills=True)
    assert made[-1]["mirror"] is False and made[-1]["views"] is True  # stills keep their own search
    assert "does not apply to unrelated still images" in caplog.text  # and the user is told
    assert est.detector is not None


def test_refused_combinations_are_one_line_errors(tmp_path: Path, capsys, monkeypatch):
    from realtime import api
    from realtime.cli import main

    with pytest.raises(UserError, match="--people"):
        api.Options(mirror_2d=True, people=2)
    for kw in ({"live": True}, {"live": False, "realtime": True}):
        with pytest.raises(UserError, match="live or real-time"):
            api.open_pose_estimator(api.Options(model="x", mirror_2d=True), **kw)
    monkeypatch.chdir(tmp_path)
    for extra in (["--people", "2"], ["--realtime"]):
        assert main(["video", str(DEMO), "--out", "o.npz", "--mirror-2d", *extra]) == 2
        err = capsys.readouterr().err
        assert "--mirror-2d" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.npz").exists()
    assert main(["batch", str(DEMO), "--out-dir", "b", "--mirror-2d", "--people", "2"]) == 2
    err = capsys.readouterr().err
    assert "--mirror-2d" in err and len(err.strip().splitlines()) == 1


@needs_mediapipe_model
def test_mediapipe_with_the_mirrored_pass_on_a_clip():
    """VIDEO mode on the demo clip's first frames: the person on every frame, the merged 2D
    within a few pixels of the normal pass's (the two passes see the same person); a
    restart makes a fresh mirrored landmarker as well."""
    from realtime.detector import PoseDetector
    from realtime.sources import VideoFileSource

    with VideoFileSource(DEMO, max_frames=6) as src:
        frames = list(src)
    with PoseDetector(mode="video") as one, PoseDetector(mode="video", mirror=True) as two:
        for k, f in enumerate(frames):
            if k == 3:
                mirror_before = two._mirror
                two.restart()
                assert two._mirror is None and mirror_before is not None
            a, b = one.detect(f.image, f.timestamp_s), two.detect(f.image, f.timestamp_s)
            assert a is not None and b is not None
            d = np.linalg.norm(a.joints_2d_px - b.joints_2d_px, axis=1)
            assert np.median(d) < 0.02 * a.box.side, d.round(1)
            assert np.isfinite(b.world_mm).all() and np.isfinite(b.landmarks_world_mm).all()
        assert two._mirror is not None
    assert two._mirror is None and two._landmarker is None  # closed


@needs_mediapipe_model
def test_the_mirrored_pass_beside_the_normal_one_gives_what_the_two_in_turn_give(monkeypatch):
    """The mirrored pass runs on a thread of its own at once with the normal pass; the result
    is the same to the bit as running the two one after the other (same landmarkers, same
    timestamps), through a restart; close() ends the thread."""
    from concurrent.futures import Future

    from realtime.detector import PoseDetector
    from realtime.sources import VideoFileSource

    with VideoFileSource(DEMO, max_frames=10) as src:
        frames = list(src)

    def run(in_turn: bool) -> list:
        with monkeypatch.context() as m:
            if in_turn:  # the mirrored pass made at once in the caller's thread, before the normal pass
                def start(self, image, timestamp_s):
                    done: Future = Future()
                    done.set_result(self._mirrored(image, self._mirror_ts_ms(timestamp_s)))
                    return done

                m.setattr(PoseDetector, "_start_mirrored", start)
            det = PoseDetector(mode="video", mirror=True)
            out = []
            for k, f in enumerate(frames):
                if k == 5:
                    det.restart()
                out.append(det.detect(f.image, f.timestamp_s))
            threaded = det._mirror_thread is not None
            det.close()
            assert det._mirror_thread is None and det._mirror is None
            return out, threaded

    (together, threaded), (in_turn, not_threaded) = run(False), run(True)
    assert threaded and not not_threaded
    assert all(d is not None for d in together)
    for a, b in zip(together, in_turn):
        for name in ("joints_2d_px", "confidence", "world_mm", "landmarks_px", "visibility", "landmarks_world_mm"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
