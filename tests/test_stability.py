"""`posestream stability`: the figures on synthetic outputs with known answers, and the command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime.cli import main
from realtime.detector import DEFAULT_MODEL
from realtime.frames import PoseFrame
from realtime.stability import bone_length_cv, frame_rate, joint_acceleration, lag_frames, measure, root_steps
from realtime.writers import open_writer

from pose_fixtures import standing_pose

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
REL = standing_pose() - standing_pose()[0]


def moving(n: int, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """(n, 17, 3) mm: the standing pose swinging its arms (smooth motion), plus white jitter on
    every joint but the pelvis."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    j = np.repeat(REL[None], n, 0)
    j[:, 13, 1] += 200 * np.sin(2 * np.pi * t / 40)
    j[:, 16, 1] += 200 * np.sin(2 * np.pi * t / 40 + 1)
    j[:, 1:] += rng.normal(0, jitter, (n, 16, 3))
    return j


def test_acceleration_bone_cv_and_root_steps_known_answers():
    n = 4000
    idx = np.arange(n)
    ok = np.ones(n, bool)
    still = np.repeat(REL[None], n, 0)
    assert joint_acceleration(still, ok, idx) == 0.0 and bone_length_cv(still, ok) == pytest.approx(0.0, abs=1e-12)
    # white jitter sigma on 16 joints: |second difference| is a 3D normal of std sqrt(6) sigma,
    # whose mean length is sqrt(8 / pi) times that; the pelvis has none
    sigma = 5.0
    expected = 16 / 17 * np.sqrt(8 / np.pi) * np.sqrt(6) * sigma
    assert joint_acceleration(still + moving(n, sigma) - moving(n), ok, idx) == pytest.approx(expected, rel=0.03)
    assert bone_length_cv(moving(n, sigma), ok) > bone_length_cv(moving(n, 1.0), ok) > 0
    # triples across a gap in the source indices or a frame without a person do not count
    jumpy = still.copy()
    jumpy[2000:] += 500.0 * (np.arange(17) > 0)[None, :, None]
    gap = np.r_[np.arange(2000), np.arange(2010, n + 10)]
    assert joint_acceleration(jumpy, ok, gap) == 0.0
    holed = ok.copy()
    holed[2000] = False
    assert joint_acceleration(jumpy, holed, idx) == 0.0  # no triple spans the jump without frame 2000
    assert joint_acceleration(jumpy, ok, idx) > 0
    # root: 40 mm a frame along x, one frame without a translation
    trans = np.stack([40.0 * idx, np.zeros(n), 3000 + np.zeros(n)], 1)
    trans[100] = np.nan
    steps = root_steps(trans, ok, idx)
    assert len(steps) == n - 3 and np.allclose(steps, 40.0)
    s = measure(still, ok, idx, trans)
    assert (s.root_step_median_mm, s.root_step_p95_mm, s.depth_median_mm) == pytest.approx((40.0, 40.0, 3000.0))


@pytest.mark.parametrize("shift", [0, 3, -2])
def test_lag_from_cross_correlation(shift):
    n = 300
    rng = np.random.default_rng(1)
    ref = moving(n + 20, 2.0, seed=1)
    ref[:, 5, 0] += np.cumsum(rng.normal(0, 3, n + 20))  # motion that is not periodic
    out = np.roll(ref, shift, axis=0)[10:n + 10]       # the output trails by `shift` frames
    ref = ref[10:n + 10]
    assert lag_frames(out, ref, np.ones(n, bool), np.arange(n)) == pytest.approx(shift, abs=0.25)


def _write_npz(path: Path, joints: np.ndarray, trans: np.ndarray) -> None:
    w = open_writer(path, 30.0)
    for i, (j, t) in enumerate(zip(joints, trans)):
        w.write(PoseFrame(i, i / 30, True, j.astype(np.float32), t.astype(np.float32),
                          np.zeros((17, 2), np.float32), np.ones(17, np.float32), (640, 360)))
    w.close()


def test_stability_command(tmp_path: Path, capsys):
    n = 90
    trans = np.stack([10.0 * np.arange(n), np.zeros(n), np.full(n, 3000.0)], 1)
    _write_npz(tmp_path / "a.npz", moving(n, 4.0), trans)
    _write_npz(tmp_path / "b.npz", np.roll(moving(n, 4.0), 2, axis=0), trans)
    assert main(["stability", str(tmp_path / "b.npz"), "--lag-against", str(tmp_path / "a.npz"),
                 "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "b.npz" in out and "lag of b.npz behind a.npz" in out and "10.0" in out
    assert (tmp_path / "s.json").is_file()
    assert "30.0 fps" in out
    assert main(["stability", str(tmp_path / "missing.npz")]) == 2
    assert main(["stability", str(tmp_path / "s.json")]) == 2
    assert "error" in capsys.readouterr().err


def test_acceleration_at_30_fps_from_timestamps():
    # the same smooth motion sampled at 5 fps and at 30 fps: per frame^2 the 5 fps figure is
    # 36x larger; converted to 30 fps from the timestamps both agree
    def swing(fps: float, seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(0, seconds, 1.0 / fps)
        j = np.repeat(REL[None].astype(np.float64), len(t), axis=0)
        j[:, 1:, 0] += 200.0 * np.sin(2 * np.pi * 0.3 * t)[:, None]
        return j, t

    (a, ta), (b, tb) = swing(5.0), swing(30.0)
    ia, ib = np.arange(len(ta)), np.arange(len(tb))
    assert frame_rate(ta, ia) == pytest.approx(5.0) and frame_rate(tb, ib) == pytest.approx(30.0)
    # a dropped source frame (index gap, time gap) does not change the rate
    assert frame_rate(np.delete(tb, 7), np.delete(ib, 7)) == pytest.approx(30.0)
    assert np.isnan(frame_rate(tb[:1], ib[:1]))
    sa = measure(a, np.ones(len(ta), bool), ia, fps=frame_rate(ta, ia))
    sb = measure(b, np.ones(len(tb), bool), ib, fps=frame_rate(tb, ib))
    assert sa.acceleration_mm == pytest.approx(36 * sb.acceleration_mm, rel=0.05)
    assert sa.acceleration_30fps_mm == pytest.approx(sb.acceleration_mm, rel=0.05)
    assert sb.acceleration_30fps_mm == pytest.approx(sb.acceleration_mm)
    assert np.isnan(measure(a, np.ones(len(ta), bool), ia).acceleration_30fps_mm)  # rate unknown


@pytest.mark.skipif(not (DEFAULT_MODEL.is_file() and DEMO.is_file()), reason="needs MediaPipe's model and the demo clip")
def test_stability_against_mediapipe(tmp_path: Path, capsys):
    n = 12
    _write_npz(tmp_path / "o.npz", moving(n, 3.0), np.full((n, 3), 3000.0))
    assert main(["stability", str(tmp_path / "o.npz"), "--against-mediapipe", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "MediaPipe world landmarks" in out and "o.npz" in out


def test_unwritable_json_is_refused_before_the_figures(tmp_path: Path, capsys):
    n = 30
    _write_npz(tmp_path / "o.npz", moving(n, 3.0), np.full((n, 3), 3000.0))
    (tmp_path / "afile").write_text("x")
    assert main(["stability", str(tmp_path / "o.npz"), "--json", str(tmp_path / "afile" / "s.json")]) == 2
    captured = capsys.readouterr()
    assert "--json" in captured.err and "not a folder" in captured.err and "Traceback" not in captured.err
    assert "bone CV" not in captured.out  # refused before the work, not after the table
    # A missing folder is created, and the report is whole (written under a temporary name, then renamed).
    assert main(["stability", str(tmp_path / "o.npz"), "--json", str(tmp_path / "new" / "s.json")]) == 0
    assert json.loads((tmp_path / "new" / "s.json").read_text())["rows"]
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["s.json"]
