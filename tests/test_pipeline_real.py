"""The pipeline with the real stages: MediaPipe 2D (models/pose_landmarker_full.task) and a
randomly initialised lifter (the wiring is under test here, not accuracy), on the demo
clip: every frame out, no person, person leaving and returning, truncated/corrupt video,
and the `posestream webcam` command with a video as its camera."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.errors import UserError
from realtime.frames import Frame

from engine_fixtures import make_lifter_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "assets" / "demo.mp4"
MP_MODEL = REPO / "models" / "pose_landmarker_full.task"

pytestmark = pytest.mark.skipif(not (DEMO.is_file() and MP_MODEL.is_file()),
                                reason="needs assets/demo.mp4 and models/pose_landmarker_full.task")


@pytest.fixture(scope="module")
def lifter_pt(tmp_path_factory) -> Path:
    return make_lifter_checkpoint(tmp_path_factory.mktemp("lifter") / "lifter.pt")


@pytest.fixture(scope="module")
def demo_frames() -> list[Frame]:
    from realtime.sources import VideoFileSource

    with VideoFileSource(DEMO, max_frames=12) as src:
        return list(src)


def _estimator(lifter_pt: Path):
    from realtime.estimator import PoseEstimator

    return PoseEstimator(str(lifter_pt), "torch", threads=1)


def _run(estimator, frames, live=False):
    from realtime.filters import PoseSmoother
    from realtime.api import pipeline_steps
    from realtime.pipeline import Pipeline

    p = Pipeline(frames, pipeline_steps(estimator, PoseSmoother()), live=live)
    return list(p), p


def test_real_stages_every_frame_in_order(lifter_pt, demo_frames):
    with _estimator(lifter_pt) as est:
        out, p = _run(est, demo_frames)
    assert [f.index for f in out] == [f.index for f in demo_frames]
    assert all(f.valid for f in out), "the demo clip shows one person in every frame"
    for f in out:
        assert np.isfinite(f.joints_mm).all() and np.isfinite(f.joints_2d_px).all()
        np.testing.assert_allclose(f.joints_mm[0], 0.0, atol=1e-3)       # root-relative
        # An untrained lifter's pose may not fit the 2D joints: then no translation (NaN),
        # never one behind the camera.
        assert np.isnan(f.translation_mm).all() or f.translation_mm[2] > 0
        assert {"capture", "detect", "lift", "smooth", "latency"} <= set(f.timings_ms)
        assert f.image_size == (640, 360)
    assert p.stats.dropped == 0


def test_person_leaving_and_returning(lifter_pt, demo_frames):
    """Frames 4-7 show an empty room: they come out as empty PoseFrames (never dropped),
    and the person is found again when they return."""
    blank = np.full_like(demo_frames[0].image, 90)
    frames = [Frame(f.index, f.timestamp_s, blank if 4 <= f.index < 8 else f.image) for f in demo_frames]
    with _estimator(lifter_pt) as est:
        out, _ = _run(est, frames)
    assert [f.valid for f in out] == [not 4 <= i < 8 for i in range(len(frames))]
    assert np.isnan(out[5].joints_mm).all() and out[5].confidence.max() == 0
    back = out[8:]
    assert all(np.isfinite(f.joints_mm).all() for f in back)


def test_truncated_video_processes_what_decodes(lifter_pt, demo_frames, tmp_path):
    """A file cut off mid-stream (a recording interrupted): every frame before the cut is
    processed, the undecodable tail is reported by the source, and the run ends normally."""
    import cv2

    from realtime.sources import VideoFileSource

    full = tmp_path / "full.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for f in demo_frames:
        w.write(f.image[:, :, ::-1])
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    with VideoFileSource(cut) as src, _estimator(lifter_pt) as est:
        out, _ = _run(est, src)
        skipped = src.skipped
    assert 3 <= len(out) < len(demo_frames) and skipped  # the tail was lost, and reported
    assert [f.index for f in out] == list(range(len(out)))
    assert all(f.valid for f in out)


def test_corrupt_video_is_a_clear_error(tmp_path):
    from realtime.webcam_cmd import open_camera

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(UserError, match="cannot decode"):
        open_camera(str(bad))
    with pytest.raises(UserError, match="no webcam"):
        open_camera("/dev/video97")
    with pytest.raises(UserError, match="neither a webcam"):
        open_camera(str(tmp_path / "missing.mp4"))


def _posestream(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_webcam_command_with_video_as_camera_writes_every_output_frame(lifter_pt, tmp_path, capsys):
    """In-process (no interpreter start-up): the same code path as the console script."""
    from realtime.cli import main
    from realtime.writers import read_pose_npz

    out = tmp_path / "live.npz"
    rc = main(["webcam", "--camera", str(DEMO), "--max-frames", "30", "--model", str(lifter_pt),
               "--backend", "torch", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    summary = [ln for ln in err.splitlines() if ln.startswith("stopped (end of input)")]
    assert summary, err[-2000:]
    n = int(summary[0].split(": ")[1].split(" frames")[0])
    dropped = int(summary[0].split(", ")[1].split(" dropped")[0])
    poses = read_pose_npz(out)
    assert len(poses) == n and n + dropped == 30
    idx = [p.index for p in poses]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert sum(p.valid for p in poses) >= 0.8 * n


def test_webcam_command_missing_camera_is_one_line_error():
    r = _posestream("webcam", "--camera", "/dev/video97", timeout=60)
    assert r.returncode == 2
    assert "no webcam at /dev/video97" in r.stderr and "Traceback" not in r.stderr


def test_webcam_command_ctrl_c_finalises_the_output(lifter_pt, tmp_path):
    """SIGINT (Ctrl-C) mid-stream: clean stop, exit code 130, the .npz finalised with every
    processed frame."""
    import signal
    import time

    from realtime.journal import journal_frames
    from realtime.writers import read_pose_npz

    out = tmp_path / "live.npz"
    part = tmp_path / "live.npz.part"
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "webcam", "--camera", str(DEMO), "--loop",
                             "--model", str(lifter_pt), "--backend", "torch", "--out", str(out), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while journal_frames(part) < 1 and time.monotonic() < deadline:  # frames are flowing
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    line = [ln for ln in err.splitlines() if ln.startswith("stopped (Ctrl-C)")]
    assert line, err[-2000:]
    n = int(line[0].split(": ")[1].split(" frames")[0])
    assert n > 0 and len(read_pose_npz(out)) == n and not part.exists()
