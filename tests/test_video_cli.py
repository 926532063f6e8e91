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
    # the default skeleton: the Mixamo-style humanoid (realtime/bvh.py)
    assert motion.shape[0] == 3 and names[0] == "Hips" and len(names) == 24
    assert frame_time == pytest.approx(1 / 30, abs=1e-6)


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


# --------------------------------------------------------------------------- file outputs (#22, #19)
def _video(lifter: Path, *argv: str) -> int:
    return main(["video", *argv, "--model", str(lifter), "--backend", "torch", "--no-progress"])


def test_an_output_that_is_a_folder_fails_before_anything_is_loaded(tmp_path: Path, capsys, monkeypatch):
    import realtime.estimator
    import realtime.sources

    def not_reached(*a, **k):
        raise AssertionError("the video was opened although an output cannot be written")

    monkeypatch.setattr(realtime.sources, "open_source", not_reached)
    monkeypatch.setattr(realtime.estimator, "PoseEstimator", not_reached)
    for name in ("a.npz", "a.bvh"):
        (tmp_path / name).mkdir()
        assert main(["video", str(DEMO), "--out", str(tmp_path / "ok.json"), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "is a folder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "p.mp4").mkdir()
    assert main(["video", str(DEMO), "--out", str(tmp_path / "ok.json"), "--preview", str(tmp_path / "p.mp4")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bvh", "a.npz", "p.mp4"]  # nothing written


def test_an_output_that_is_the_input_or_an_existing_persons_file_is_refused_before_work(
        tmp_path: Path, capsys, monkeypatch):
    import realtime.estimator
    import realtime.sources

    def not_reached(*a, **k):
        raise AssertionError("the video was opened although an output cannot be written")

    monkeypatch.setattr(realtime.sources, "open_source", not_reached)
    monkeypatch.setattr(realtime.estimator, "PoseEstimator", not_reached)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(DEMO.read_bytes())
    (tmp_path / "link.mp4").hardlink_to(clip)
    (tmp_path / "two.person0.bvh").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for preview in ("clip.mp4", "../" + tmp_path.name + "/clip.mp4", str(tmp_path / "link.mp4")):
        argv = ["--out", "a.npz", "--preview", preview]
        assert main(["video", "clip.mp4", *argv]) == 2
        err = capsys.readouterr().err
        assert "would replace the input clip.mp4" in err and len(err.strip().splitlines()) == 1
    assert main(["video", str(DEMO), "--people", "2", "--out", "two.bvh", "--no-overwrite"]) == 2
    err = capsys.readouterr().err
    assert "two.person0.bvh exists and --no-overwrite is set" in err and len(err.strip().splitlines()) == 1
    assert clip.read_bytes() == DEMO.read_bytes() and (tmp_path / "two.person0.bvh").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "link.mp4", "two.person0.bvh"]  # no .part


@needs_mediapipe_model
def test_several_outputs_in_one_pass(tmp_path: Path, lifter: Path, capsys):
    outs = [tmp_path / n for n in ("a.bvh", "b.npz", "c.json", "d.csv", "e.openpose")]
    rc = _video(lifter, str(DEMO), *(a for o in outs for a in ("--out", str(o))), "--landmarks", "--max-frames", "4")
    assert rc == 0, capsys.readouterr().err
    poses = read_pose_npz(outs[1])
    assert [p.index for p in poses] == [0, 1, 2, 3]
    d = np.load(outs[1])
    assert np.isfinite(d["landmarks_px"]).all() and d["landmarks_world_mm"].shape == (4, 33, 3)
    assert read_bvh(outs[0])[3].shape[0] == 4
    frames = json.loads(outs[2].read_text())["frames"]
    np.testing.assert_allclose(frames[3]["joints_mm"], poses[3].joints_mm, atol=1e-3)
    assert "landmarks_world_mm" in frames[0]
    assert len(outs[3].read_text().splitlines()) == 5
    assert len(list(outs[4].iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(o.name for o in outs)  # no journal, no temporaries


@needs_mediapipe_model
def test_overwriting_says_so_and_no_overwrite_refuses(tmp_path: Path, lifter: Path, capsys):
    out = tmp_path / "take.csv"
    out.write_text("an earlier take")
    assert _video(lifter, str(DEMO), "--out", str(out), "--max-frames", "2", "--no-overwrite") == 2
    err = capsys.readouterr().err
    assert "--no-overwrite" in err and len(err.strip().splitlines()) == 1 and out.read_text() == "an earlier take"
    assert _video(lifter, str(DEMO), "--out", str(out), "--max-frames", "2") == 0
    assert "take.csv exists: it will be replaced" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3
    assert _video(lifter, str(DEMO), "--out", str(out), "--max-frames", "1", "-q") == 0
    assert "exists" not in capsys.readouterr().err  # -q: errors only
    assert len(out.read_text().splitlines()) == 2


@needs_mediapipe_model
def test_a_leftover_part_is_recovered_not_overwritten(tmp_path: Path, lifter: Path, capsys):
    from realtime.frames import PoseFrame
    from realtime.writers import Recording

    out = tmp_path / "take.npz"
    killed = Recording([out, tmp_path / "take.bvh"], 30.0)
    for i in range(5):
        killed.write(PoseFrame.empty(i, i / 30, (640, 360)))
    killed._journal.close()  # what a killed run leaves: take.npz.part with 5 frames, nothing else
    assert _video(lifter, str(DEMO), "--out", str(out), "--max-frames", "2") == 0
    assert "recovered its 5 frames as" in capsys.readouterr().err
    assert len(read_pose_npz(tmp_path / "take.recovered.npz")) == 5 and (tmp_path / "take.recovered.bvh").is_file()
    assert len(read_pose_npz(out)) == 2 and not (tmp_path / "take.npz.part").exists()


def test_recover_command(tmp_path: Path, capsys):
    from realtime.frames import PoseFrame
    from realtime.writers import Recording

    outs = [tmp_path / "k.json", tmp_path / "k.bvh"]
    killed = Recording(outs, 30.0)
    for i in range(3):
        killed.write(PoseFrame.empty(i, i / 30, (640, 360)))
    killed._journal.close()
    assert main(["recover", str(tmp_path / "k.json.part"), "--out", str(tmp_path / "other.csv")]) == 0
    assert len((tmp_path / "other.csv").read_text().splitlines()) == 4 and (tmp_path / "k.json.part").exists()
    assert main(["recover", str(tmp_path / "k.json")]) == 0  # the output's name finds its journal
    assert "recovered 3 frames" in capsys.readouterr().err
    assert len(json.loads(outs[0].read_text())["frames"]) == 3 and len(read_bvh(outs[1])[3]) == 3
    assert not (tmp_path / "k.json.part").exists()
    assert main(["recover", str(tmp_path / "k.json.part")]) == 2
    err = capsys.readouterr().err
    assert "no journal" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.npz.part").write_text("not a journal")  # too short for a record of either kind
    assert main(["recover", str(tmp_path / "junk.npz.part")]) == 2
    assert "no complete frame" in capsys.readouterr().err


def _clip_with_gaps(path: Path, n_person: int = 6, n_blank: int = 3) -> int:
    """The demo's first frames, then frames without anybody: an .avi of n_person + n_blank frames."""
    cap = cv2.VideoCapture(str(DEMO))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for _ in range(n_person):
        ok, bgr = cap.read()
        assert ok
        w.write(bgr)
    for _ in range(n_blank):
        w.write(np.full((360, 640, 3), 120, np.uint8))
    w.release()
    cap.release()
    return n_person + n_blank


def _decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1])
    cap.release()
    return frames


@needs_mediapipe_model
def test_preview_has_a_frame_per_input_frame_and_marks_frames_without_a_person(tmp_path: Path, lifter: Path):
    clip = tmp_path / "gaps.avi"
    n = _clip_with_gaps(clip)
    preview = tmp_path / "preview.mp4"
    assert _video(lifter, str(clip), "--out", str(tmp_path / "p.npz"), "--preview", str(preview)) == 0
    frames = _decode_all(preview)
    assert len(frames) == n and frames[0].shape == (360, 640, 3)
    valid = [p.valid for p in read_pose_npz(tmp_path / "p.npz")]
    assert valid[:6] == [True] * 6 and valid[6:] == [False] * 3

    def red_border(rgb: np.ndarray) -> bool:
        edge = rgb[2:5, 100:540].reshape(-1, 3).astype(int).mean(axis=0)  # the top edge
        return edge[0] > 150 and edge[1] < 110

    assert [red_border(f) for f in frames] == [not v for v in valid]
    bar = [int((f[-3, :, 1].astype(int) > 150).sum()) for f in frames]  # the progress bar's green part
    assert bar == sorted(bar) and bar[-1] > 600 and bar[0] < 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gaps.avi", "p.npz", "preview.mp4"]


@needs_mediapipe_model
@pytest.mark.skipif(not __import__("engines.checkpoint").checkpoint.shipped("temporal_mp"),
                    reason="the centred temporal model (models/temporal_mp) is not shipped")
def test_preview_with_the_centred_model_draws_every_frame(tmp_path: Path, capsys):
    """The centred model, the body and the root filter answer a frame seconds after its image
    was read: the preview must still draw every decoded frame (none black, "not decodable")."""
    preview = tmp_path / "p.mp4"
    rc = main(["video", str(DEMO), "--out", str(tmp_path / "p.npz"), "--preview", str(preview),
               "--max-frames", "30", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "centred" in capsys.readouterr().out
    frames = _decode_all(preview)
    inputs = []
    cap = cv2.VideoCapture(str(DEMO))
    for _ in range(30):
        inputs.append(cap.read()[1][:, :, ::-1])
    cap.release()
    assert len(frames) == 30
    # the middle band (clear of the inset and the progress bar): the input frame, not black
    black = [i for i, f in enumerate(frames) if f[150:300, :300].mean() < 10]
    assert black == []
    diff = [float(np.abs(f[150:300, :200].astype(int) - x[150:300, :200].astype(int)).mean())
            for f, x in zip(frames, inputs)]
    assert max(diff) < 25, diff


def test_recover_reports_an_output_it_could_not_write_on_stderr(tmp_path: Path, capsys, monkeypatch):
    import realtime.writers as writers

    def fail(*args, **kwargs):
        raise writers.OutputError("could not write k.bvh (disk full)")

    monkeypatch.setattr(writers, "recover", fail)
    assert main(["recover", str(tmp_path / "k.bvh.part")]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == "posestream recover: error: could not write k.bvh (disk full)"
