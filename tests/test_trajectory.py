"""Root trajectory: synthetic poses walking through camera space, projected, then recovered."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engines.camera import project_camera
from engines.errors import UserError
from realtime.frames import PoseFrame
from realtime.trajectory import (Intrinsics, TrajectoryStage, estimate_translation, intrinsics_for,
                                 load_calibration)

from pose_fixtures import standing_pose as _tpose

W, H = 640, 480


def _walk(n: int = 60) -> np.ndarray:
    """Pelvis positions (n, 3) mm: walking diagonally away from 2 m to 6 m, swaying."""
    s = np.linspace(0.0, 1.0, n)
    return np.stack([-800 + 1600 * s, 100 * np.sin(6 * s), 2000 + 4000 * s], axis=1)


def _frame(i: int, rel: np.ndarray, uv: np.ndarray, conf: np.ndarray | None = None) -> PoseFrame:
    return PoseFrame(i, i / 30.0, True, rel.astype(np.float32), np.full(3, np.nan, np.float32),
                     uv.astype(np.float32), np.ones(17, np.float32) if conf is None else conf.astype(np.float32),
                     (W, H))


@pytest.mark.parametrize("fov", [50.0, 60.0, 90.0])
def test_recovers_translation_of_walking_person(fov):
    intr = Intrinsics.from_fov(W, H, fov)
    rel = _tpose() - _tpose()[0]
    rng = np.random.default_rng(0)
    stage = TrajectoryStage(fov_deg=fov)
    for i, t in enumerate(_walk()):
        # Turn the body a little so depth differs across joints (perspective matters).
        a = 0.02 * i
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        pose = rel @ R.T
        uv = project_camera(pose + t, intr.f, intr.c)
        exact = estimate_translation(pose, uv, intr)
        assert np.linalg.norm(exact - t) < 1e-6 * np.linalg.norm(t)
        # With 1 px of 2D noise: depth within 3 %, lateral position within 1.5 %.
        out = stage(_frame(i, pose, uv + rng.normal(0, 1.0, uv.shape)))
        err = np.abs(out.translation_mm - t)
        assert err[2] < 0.03 * t[2] and np.hypot(err[0], err[1]) < 0.015 * t[2], (i, t, out.translation_mm)
        np.testing.assert_allclose(out.joints_mm, pose, atol=1e-3)  # stays root-relative


def test_low_confidence_joints_ignored():
    intr = Intrinsics.from_fov(W, H)
    rel = _tpose() - _tpose()[0]
    t = np.array([300.0, 200.0, 3500.0])
    uv = project_camera(rel + t, intr.f, intr.c)
    conf = np.ones(17)
    uv[13] += 200.0   # a wrist the detector guessed wildly, with low visibility
    conf[13] = 0.05
    got = estimate_translation(rel, uv, intr, conf)
    np.testing.assert_allclose(got, t, rtol=1e-6)


def test_unsolvable_frames_keep_relative_pose():
    stage = TrajectoryStage()
    rel = _tpose() - _tpose()[0]
    few = stage(_frame(0, rel, np.zeros((17, 2)), conf=np.zeros(17)))
    assert few.valid and np.isnan(few.translation_mm).all()
    np.testing.assert_allclose(few.joints_mm, rel)
    empty = PoseFrame.empty(1, 0.1, (W, H))
    assert stage(empty) is empty


def test_intrinsics_options(tmp_path):
    default = intrinsics_for((W, H))
    assert default.fov_deg == pytest.approx(60.0)
    np.testing.assert_allclose(default.c, [320, 240])
    assert intrinsics_for((W, H), fov_deg=90.0).f[0] == pytest.approx(320.0)
    calib = tmp_path / "cam.json"
    calib.write_text(json.dumps({"fx": 1000, "fy": 1010, "cx": 960, "cy": 540, "width": 1920, "height": 1080}))
    k = intrinsics_for((W, 360), calib=calib)  # the camera delivers a downscaled stream
    np.testing.assert_allclose(k.f, [1000 / 3, 1010 / 3])
    np.testing.assert_allclose(k.c, [320, 180])
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 320, "cy": 240}))
    assert load_calibration(plain, (W, H)).size == (W, H)


@pytest.mark.parametrize("content,match", [
    (None, "not found"), ("{not json", "cannot read"), ("[1, 2]", "JSON object"),
    ('{"fx": 1, "fy": 1, "cx": 1}', "lacks 'cy'"), ('{"fx": -1, "fy": 1, "cx": 1, "cy": 1}', "positive"),
    ('{"fx": "a", "fy": 1, "cx": 1, "cy": 1}', "'fx' must be a number"),
    ('{"fx": true, "fy": 500, "cx": 320, "cy": 180}', "'fx' must be a number, got true"),
    ('{"fx": 500, "fy": 500, "cx": "320", "cy": 180}', "'cx' must be a number"),
    ('{"fx": 500, "fy": 500, "cx": 320, "cy": null}', "'cy' must be a number"),
    ('{"fx": 500, "fy": 500, "cx": 320, "cy": 180, "width": false, "height": 360}', "'width' must be a number"),
    ('{"fx": 500, "fy": 500, "cx": 320, "cy": 180, "width": 0, "height": 360}', "whole numbers of pixels"),
])
def test_bad_calibration_is_a_user_error(tmp_path, content, match):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=match):
        TrajectoryStage(calib=path)


def test_a_principal_point_outside_the_image_is_one_warning(tmp_path, caplog):
    calib = tmp_path / "big.json"  # made for 1920x1080 without saying so, used on 640x360
    calib.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 960, "cy": 540}))
    stage, again = TrajectoryStage(calib=calib), TrajectoryStage(calib=calib)
    with caplog.at_level("WARNING", logger="realtime.trajectory"):
        for st in (stage, again):
            for _ in range(3):
                st.intrinsics((640, 360))
        TrajectoryStage(calib=calib).intrinsics((1920, 1080))  # inside: no warning
    warned = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert len(warned) == 1 and "(960, 540) lies outside the 640x360 image" in warned[0]


def test_bad_fov_is_a_user_error():
    with pytest.raises(UserError, match="fov"):
        intrinsics_for((W, H), fov_deg=0.0)
