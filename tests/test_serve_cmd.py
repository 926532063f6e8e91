"""`posestream serve`: loading .npz / .jsonl recordings, the replay schedule, and a short real
replay to a websocket client."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import connect

from engines.errors import UserError
from realtime.cli import main
from realtime.protocol import RECORDING_FORMAT, encode_frame, encode_hello
from realtime.serve_cmd import load_frames, schedule
from tests.viewer_clip import synthetic_clip

REPO = Path(__file__).resolve().parents[1]


def write_npz(path: Path, n: int = 30, fps: float = 30.0) -> None:
    from realtime.writers import NpzWriter
    w = NpzWriter(path, fps=fps)
    for f in synthetic_clip(n, fps):
        w.write(f)
    w.close()


def write_jsonl(path: Path, n: int = 30) -> None:
    lines = [json.dumps({"v": 1, "type": "recording", "format": RECORDING_FORMAT}),
             encode_hello(source={"kind": "webcam", "fps": 25})]
    lines += [encode_frame(f, pub_ms=1.0) for f in synthetic_clip(n)]
    path.write_text("\n".join(lines) + "\n")


def test_load_npz_and_jsonl(tmp_path):
    write_npz(tmp_path / "a.npz", 30, fps=30)
    frames, fps = load_frames(tmp_path / "a.npz")
    assert len(frames) == 30 and fps == 30.0
    clip = synthetic_clip(30)
    np.testing.assert_allclose(frames[3].joints_mm, clip[3].joints_mm, atol=1e-3)
    write_jsonl(tmp_path / "b.jsonl", 12)
    frames, fps = load_frames(tmp_path / "b.jsonl")
    assert [f.index for f in frames] == list(range(12)) and fps == 25.0


@pytest.mark.parametrize("content,suffix,match", [
    (None, ".npz", "not found"), ("garbage\n", ".jsonl", "not a posestream viewer recording"),
    ("", ".jsonl", "no frames"), ("x", ".txt", "unsupported file type"), ("junk", ".npz", "not an .npz archive"),
])
def test_load_errors_are_user_errors(tmp_path, content, suffix, match):
    p = tmp_path / f"f{suffix}"
    if content is not None:
        p.write_text(content)
    with pytest.raises(UserError, match=match):
        load_frames(p)


def test_schedule():
    clip = synthetic_clip(10, fps=25)
    t, rate = schedule(clip, None, None)
    np.testing.assert_allclose(t, np.arange(10) / 25)
    assert rate == pytest.approx(25)
    t, rate = schedule(clip, 50.0, None)
    np.testing.assert_allclose(t, np.arange(10) / 50)
    # Non-increasing timestamps: nominal fps, else 30; long pauses are capped at 1 s.
    from dataclasses import replace
    frozen = [replace(f, timestamp_s=0.0) for f in clip]
    assert schedule(frozen, None, 20.0)[1] == 20.0 and schedule(frozen, None, None)[1] == 30.0
    paused = [replace(f, timestamp_s=f.timestamp_s + (100.0 if i >= 5 else 0.0)) for i, f in enumerate(clip)]
    t, _ = schedule(paused, None, None)
    assert t[5] - t[4] == pytest.approx(1.0)
    with pytest.raises(UserError):
        schedule(clip, -1.0, None)


def test_cli_reports_bad_file(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing.npz")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_replay_streams_at_the_file_rate(tmp_path):
    write_npz(tmp_path / "clip.npz", 45, fps=30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "serve", str(tmp_path / "clip.npz"), "--port",
                             str(port), "--wait", "--duration", "20"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().startswith("serving clip.npz (45 frames at 30.0 fps)")
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello" and hello["source"]["kind"] == "replay" and hello["source"]["frames"] == 45
            got, times, stats = [], [], None
            while stats is None:
                m = json.loads(ws.recv(timeout=10))
                if m["type"] == "frame":
                    got.append(m["index"])
                    times.append(time.monotonic())
                elif m["type"] == "stats" and m["published"] == 45 and m["sent"] == len(got):
                    stats = m
            # The replay speed in file frames per second (frames skipped for this client count too).
            rate = (got[-1] - got[0]) / (times[-1] - times[0])
            print(f"replay: {len(got)}/45 frames received (the server counts {stats['dropped']} dropped), "
                  f"at {rate:.1f} file frames/s (file: 30 fps)")
            assert got == sorted(set(got)) and got[-1] == 44   # in order, to the end
            assert 45 - len(got) == stats["dropped"]           # --wait: none published before it was live
            assert len(got) >= 20                              # latest-only skips frames only under load
            assert 20 < rate < 45
    finally:
        proc.terminate()
        proc.wait(10)


def _rewrite_npz(src: Path, dst: Path, **changes) -> Path:
    with np.load(src, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    np.savez(dst, **arrays)
    return dst


def _bad_npz(tmp_path: Path, case: str) -> Path:
    good = tmp_path / "good.npz"
    write_npz(good, 10)
    bad = tmp_path / f"{case}.npz"
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "text":
        bad.write_text("joints,valid\n1,2\n")
    elif case == "crc":   # a complete archive whose data was damaged
        data = bytearray(good.read_bytes())
        data[len(data) // 3: len(data) // 3 + 64] = bytes(64)
        bad.write_bytes(bytes(data))
    elif case == "valid-longer":
        _rewrite_npz(good, bad, valid=np.ones(25, bool))
    elif case == "valid-2d":
        _rewrite_npz(good, bad, valid=np.ones((10, 2), bool))
    elif case == "five-joints":
        _rewrite_npz(good, bad, joints_mm=np.zeros((10, 5, 3), np.float32))
    elif case == "strings":
        _rewrite_npz(good, bad, timestamps_s=np.array(["a"] * 10))
    elif case == "no-joints":
        with np.load(good) as d:
            np.savez(bad, **{k: d[k] for k in d.files if k != "joints_mm"})
    return bad


def _deep_jsonl(tmp_path: Path, case: str) -> Path:
    p = tmp_path / f"{case}.jsonl"
    head = [json.dumps({"v": 1, "type": "recording", "format": RECORDING_FORMAT})]
    frame = json.loads(encode_frame(synthetic_clip(1)[0]))
    if case == "deep":
        lines = head + ["[" * 5000 + "]" * 5000]
    elif case == "deep-object":
        lines = head + ['{"v":1,"type":"frame","x":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"]
    elif case == "huge-number":
        lines = head + [encode_frame(synthetic_clip(1)[0]).replace('"index":0', '"index":' + "1" + "0" * 400)]
    elif case == "huge-int":
        text = json.dumps({**frame, "joints_mm": [[10 ** 400, 0, 0]] + frame["joints_mm"][1:]})
        lines = head + [text]
    elif case == "huge-float":
        lines = head + [json.dumps(frame).replace('"timestamp_s": 0.0', '"timestamp_s": 1e400')]
    elif case == "source-string":
        hello = json.loads(encode_hello(source={"kind": "webcam"}))
        lines = head + [json.dumps({**hello, "source": "webcam"}), json.dumps(frame)]
    elif case == "nan":
        lines = head + [json.dumps({**frame, "timestamp_s": float("nan")})]
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("case", ["empty", "truncated", "text", "crc", "valid-longer", "valid-2d", "five-joints", "strings",
                                  "no-joints"])
def test_serve_bad_npz_is_one_line_exit_2(tmp_path, capsys, case):
    """Regression (#22): each of these gave a traceback (EOFError, BadZipFile, IndexError), a
    misleading allow_pickle hint, or (T, 5, 3) joints served as if they were 17."""
    bad = _bad_npz(tmp_path, case)
    assert main(["serve", str(bad), "--port", "0", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posestream serve: error: ") and err.count("\n") == 1, err
    assert "pickle" not in err and "Traceback" not in err
    if case in ("valid-longer", "valid-2d", "five-joints"):
        assert "shape" in err, err


@pytest.mark.parametrize("case", ["deep", "deep-object", "huge-number", "huge-int", "huge-float", "source-string", "nan"])
def test_serve_bad_jsonl_is_one_line_exit_2(tmp_path, capsys, case):
    """Regression (#22): nesting 5,000 deep (RecursionError), 10**400 (OverflowError) and a
    hello whose source is a string (AttributeError) gave tracebacks."""
    bad = _deep_jsonl(tmp_path, case)
    assert main(["serve", str(bad), "--port", "0", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posestream serve: error: ") and err.count("\n") == 1, err
    assert "line 2" in err, err


def test_serve_of_a_pose_json_says_what_it_is_and_what_serve_takes(tmp_path, capsys):
    import posestream
    from realtime.frames import PoseFrame

    path = posestream.write([PoseFrame.empty(i, i / 25, (64, 48)) for i in range(2)], tmp_path / "clip.json", fps=25)
    assert main(["serve", str(path), "--port", "0", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "is a posestream pose file (.json output), not a viewer recording" in err and ".npz" in err
    assert err.count("\n") == 1 and "invalid JSON" not in err
