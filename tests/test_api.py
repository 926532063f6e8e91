"""The Python API (posestream.Estimator / write / read): the same poses as `posestream video`
from a file, an image folder and an iterator of (image, timestamp) pairs; process() frame by
frame; writers on their own; the options are the commands' defaults; bad input is one clear
error. Runs the shipped base_gt ONNX model (no torch)."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import posestream
from engines.errors import UserError
from realtime.cli import main
from tests.video_serve import DEMO, REPO, needs_shipped_model

pytestmark = needs_shipped_model
N = 6


@pytest.fixture(scope="module")
def demo_frames() -> list[tuple[np.ndarray, float]]:
    cap = cv2.VideoCapture(str(DEMO))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    for i in range(N):
        ok, bgr = cap.read()
        assert ok
        frames.append((bgr[:, :, ::-1].copy(), i / fps))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def cli_poses(tmp_path_factory) -> list[posestream.PoseFrame]:
    out = tmp_path_factory.mktemp("cli") / "demo.npz"
    assert main(["video", str(DEMO), "--out", str(out), "--model", "base_gt", "--max-frames", str(N),
                 "--no-progress"]) == 0
    return posestream.read(out)


def _same(a: list[posestream.PoseFrame], b: list[posestream.PoseFrame]) -> None:
    assert [p.index for p in a] == [p.index for p in b] and [p.valid for p in a] == [p.valid for p in b]
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.joints_mm, q.joints_mm, atol=1e-3)
        np.testing.assert_allclose(p.translation_mm, q.translation_mm, atol=1e-2)
        np.testing.assert_allclose(p.joints_2d_px, q.joints_2d_px, atol=1e-3)


def test_stream_of_a_file_gives_what_the_video_command_writes(cli_poses):
    with posestream.Estimator(model="base_gt") as est:
        stream = est.stream(DEMO, max_frames=N)
        assert stream.fps > 0 and stream.backend_name == "onnxruntime" and not stream.live
        poses = list(stream)
    assert len(poses) == N and all(p.valid for p in poses)
    assert poses[0].joints_mm.shape == (17, 3) and np.allclose(poses[0].joints_mm[0], 0)  # root-relative mm
    _same(poses, cli_poses)


def test_stream_of_image_pairs_and_of_a_folder_match_the_file(demo_frames, cli_poses, tmp_path):
    est = posestream.Estimator(model="base_gt")
    _same(list(est.stream(iter(demo_frames))), cli_poses)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, (rgb, _) in enumerate(demo_frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rgb[:, :, ::-1])
    fps = 1.0 / demo_frames[1][1]
    # a folder of consecutive frames (sequence=True) is a video: lossless PNGs, the same pixels
    _same(list(posestream.Estimator(model="base_gt", sequence=True).stream(folder, fps=fps)), cli_poses)
    # by default a folder holds unrelated stills: each image searched afresh, every one answered
    stills = list(est.stream(folder, fps=fps))
    assert [p.index for p in stills] == list(range(N)) and all(p.valid for p in stills)


def test_process_frame_by_frame(demo_frames):
    with posestream.Estimator(model="base_gt", fov=60) as est:
        poses = [est.process(rgb, t) for rgb, t in demo_frames]
        assert [p.index for p in poses] == list(range(N)) and all(p.valid for p in poses)
        assert [p.timestamp_s for p in poses] == [t for _, t in demo_frames]
        assert np.isfinite(poses[-1].translation_mm).all() and poses[-1].translation_mm[2] > 0  # in front
        with pytest.raises(ValueError, match="uint8 RGB"):
            est.process(np.zeros((10, 10), np.uint8), 1.0)
        with pytest.raises(ValueError, match="uint8 RGB"):
            est.process(np.zeros((10, 10, 3), np.float32), 1.0)


def test_bad_timestamps_and_taps_are_one_clear_error(demo_frames):
    """A timestamp must be a finite number of seconds that does not go back; a tap an
    ImageTap: each refused with its own message, before any model work on that frame."""
    (rgb, _), (rgb2, _) = demo_frames[:2]
    with posestream.Estimator(model="base_gt") as est:
        for bad, error, message in [(float("nan"), ValueError, "finite"), (float("inf"), ValueError, "finite"),
                                    (None, TypeError, "number of seconds, got NoneType"),
                                    ("0.1", TypeError, "number of seconds, got str")]:
            with pytest.raises(error, match=message):
                est.process(rgb, bad)
        assert est.process(rgb, 1.0).valid and est.process(rgb2, 1.0).index == 1  # an equal time is accepted
        with pytest.raises(ValueError, match="must not go back in time: 0.5 s after 1.0 s"):
            est.process(rgb, 0.5)
        assert est.process(rgb2, np.float32(1.5)).timestamp_s == 1.5  # numpy numbers are numbers
        assert est.process(rgb2, np.array(2.0)).timestamp_s == 2.0  # a 0-d array too
        for fps in (float("inf"), float("nan"), 0, "30"):  # refused before the source or a model opens
            with pytest.raises(UserError, match="fps must be a finite number"):
                est.stream([(rgb, 0.0)], fps=fps)
        with pytest.raises(ValueError, match="item 1: timestamp_s must be a finite"):
            list(est.stream([(rgb, 0.0), (rgb2, float("nan"))]))
        with pytest.raises(ValueError, match="item 1: timestamp_s must not go back"):
            list(est.stream([(rgb, 0.1), (rgb2, 0.0)]))
        with pytest.raises(TypeError, match="tap must be a realtime.thumbnails.ImageTap or None, got function"):
            est.stream([(rgb, 0.0)], tap=lambda frame: None)


def test_write_and_read_back_every_format(demo_frames, tmp_path):
    poses = list(posestream.Estimator(model="base_gt").stream(iter(demo_frames[:3])))
    for ext in (".npz", ".json", ".csv", ".bvh"):
        path = posestream.write(poses, tmp_path / f"out{ext}", fps=25)
        assert path.is_file() and path.stat().st_size > 0
    back = posestream.read(tmp_path / "out.npz")
    _same(back, poses)
    assert "Frame Time: 0.03333333" in (tmp_path / "out.bvh").read_text()  # the BVH follows the timestamps (30 fps)


def test_write_of_no_poses_is_a_clear_error_and_writes_nothing(tmp_path):
    from realtime.frames import PoseFrame

    with pytest.raises(ValueError, match="no poses to write"):
        posestream.write([], tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a journal
    (tmp_path / "kept.npz").write_bytes(b"old")
    with pytest.raises(ValueError, match="no poses to write"):
        posestream.write(iter(()), tmp_path / "kept.npz")
    assert (tmp_path / "kept.npz").read_bytes() == b"old"
    nobody = [PoseFrame.empty(i, i / 25, (640, 360)) for i in range(3)]  # what a clip without a person gives
    back = posestream.read(posestream.write(nobody, tmp_path / "nobody.npz", fps=25))
    assert [b.valid for b in back] == [False] * 3


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        posestream.Estimator(model="base_gt").stream(tmp_path / "missing.mp4")
    with pytest.raises(UserError, match="unknown model"):
        posestream.Estimator(model="no_such_model").stream(DEMO)
    with pytest.raises(UserError):
        posestream.Estimator(fov=-5)
    with pytest.raises(UserError, match="fov .--fov. must be a number of degrees, got 'abc'"):
        posestream.Estimator(fov="abc")
    with pytest.raises(UserError, match="threads must be a whole number"):
        posestream.Estimator(threads="2")
    with pytest.raises(UserError):
        posestream.Estimator(calib=tmp_path / "missing.json")
    with pytest.raises(TypeError, match="cannot stream"):
        posestream.Estimator().stream(3.5)
    with pytest.raises(ValueError, match="pair"):
        list(posestream.Estimator(model="base_gt").stream([np.zeros((8, 8, 3), np.uint8)]))


def test_the_commands_defaults_are_the_options_defaults():
    from realtime import video_cmd, webcam_cmd
    from realtime.cli_options import options_from_args

    def parsed(mod, argv):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        return options_from_args(p.parse_args(argv))

    defaults = posestream.Options()
    video = parsed(video_cmd, ["in.mp4", "--out", "o.npz"])
    webcam = parsed(webcam_cmd, [])
    for opts in (video, webcam):
        assert (opts.model, opts.backend, opts.fov, opts.calib, opts.threads) == \
               (defaults.model, defaults.backend, defaults.fov, defaults.calib, defaults.threads)
        assert opts.smoothing == defaults.smoothing
    # files are for accuracy (raw), live output is smoothed: what Options(smooth=None) does per source
    assert video.smoother(live=False) is None and defaults.smoother(live=False) is None
    assert webcam.smoother(live=True) is not None and defaults.smoother(live=True) is not None


def readme_example() -> str:
    """The Python block of the README (the one that imports posestream)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if "import posestream" in b]
    assert found, "README.md has no ```python block that imports posestream"
    return found[0]


def test_readme_python_example_runs(tmp_path):
    """The README's example, as written, in a fresh interpreter, from a directory outside the
    checkout that holds only clip.mp4 (tests/test_wheel.py runs it again on an installed wheel)."""
    (tmp_path / "clip.mp4").write_bytes(DEMO.read_bytes())
    code = readme_example()
    assert code.count("\n") <= 12
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "the example prints something"
    assert any(tmp_path.glob("clip.*")) and len(list(tmp_path.iterdir())) >= 2  # it wrote its output file
