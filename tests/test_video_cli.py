"""`posestream video` end to end on a few frames of the demo clip (MediaPipe + a lifter
checkpoint), plus its error paths and the no-person case."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bvh_reader import read_bvh  # noqa: E402
from engine_fixtures import make_lifter_checkpoint  # noqa: E402

from realtime.cli import main  # noqa: E402
from realtime.detector import DEFAULT_MODEL  # noqa: E402
from realtime.writers import read_pose_npz  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
needs_mediapipe_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(),
                                           reason=f"{DEFAULT_MODEL} missing: run scripts/build_mediapipe_model.py")


@pytest.fixture(scope="module")
def lifter(tmp_path_factory) -> Path:
    """A random-weight lifter in the training checkpoint layout: the product must run with
    whatever checkpoint is there (the trained one may not have landed yet)."""
    return make_lifter_checkpoint(tmp_path_factory.mktemp("ck") / "lifter.pt")


@needs_mediapipe_model
def test_video_to_npz_and_bvh(tmp_path: Path, lifter: Path, capsys):
    out = tmp_path / "demo.npz"
    rc = main(["video", str(DEMO), "--out", str(out), "--model", str(lifter), "--backend", "torch",
               "--max-frames", "4", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    poses = read_pose_npz(out)
    assert [p.index for p in poses] == [0, 1, 2, 3]
    assert all(p.valid for p in poses), "the demo clip shows one person in every frame"
    p = poses[-1]
    assert p.image_size == (640, 360)
    assert np.isfinite(p.joints_mm).all() and np.allclose(p.joints_mm[0], 0)  # root-relative
    assert (p.joints_2d_px[:, 0] > 200).all() and (p.joints_2d_px[:, 0] < 450).all()  # the person's columns
    assert "4 frames (4 with a person" in capsys.readouterr().out

    bvh = tmp_path / "demo.bvh"
    assert main(["video", str(DEMO), "--out", str(bvh), "--model", str(lifter), "--backend", "torch",
                 "--max-frames", "3", "--no-progress"]) == 0
    names, _, _, motion, frame_time = read_bvh(bvh)
    assert motion.shape[0] == 3 and len(names) == 17 and frame_time == pytest.approx(1 / 30, abs=1e-6)


@needs_mediapipe_model
def test_video_without_person_writes_nan_frames(tmp_path: Path, lifter: Path):
    empty = tmp_path / "empty.avi"
    w = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(3):
        w.write(np.full((120, 160, 3), 90, np.uint8))
    w.release()
    out = tmp_path / "empty.json"
    assert main(["video", str(empty), "--out", str(out), "--model", str(lifter), "--backend", "torch",
                 "--no-progress"]) == 0
    frames = json.loads(out.read_text())["frames"]
    assert len(frames) == 3 and not any(f["valid"] for f in frames)
    assert frames[0]["joints_mm"][5] == [None, None, None]


@pytest.mark.parametrize("argv, message", [
    (["video", "missing.mp4", "--out", "x.npz"], "not found"),
    (["video", str(DEMO), "--out", "x.txt"], "unsupported output"),
    (["video", str(DEMO), "--out", "x.npz", "--model", "no_such_model"], "unknown model"),
])
def test_video_user_errors(argv: list[str], message: str, capsys, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_video_is_a_user_error(tmp_path: Path, capsys, lifter: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(DEMO.read_bytes()[:5000])
    assert main(["video", str(bad), "--out", str(tmp_path / "o.npz"), "--model", str(lifter)]) == 2
    assert "cannot decode" in capsys.readouterr().err


def test_bench_stages_hook_without_module(capsys, monkeypatch):
    """--stages defers to engines.bench_stages; without it, a one-line 'unavailable'."""
    import builtins

    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "engines" and fromlist and "bench_stages" in fromlist:
            raise ImportError("no bench_stages")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert main(["bench", "--stages"]) == 2
    assert "unavailable" in capsys.readouterr().out
