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
    ("", ".jsonl", "no frames"), ("x", ".txt", "unsupported file type"), ("junk", ".npz", "cannot read"),
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
            got, times = [], []
            while not got or got[-1] != 44:
                m = json.loads(ws.recv(timeout=10))
                if m["type"] == "frame":
                    got.append(m["index"])
                    times.append(time.monotonic())
            rate = (len(got) - 1) / (times[-1] - times[0])
            print(f"replay: {len(got)}/45 frames received at {rate:.1f} fps (file: 30 fps)")
            assert got == sorted(set(got)) and got[0] <= 2    # in order, from the start (--wait)
            assert len(got) >= 40                             # latest-only may skip a frame under load
            assert 20 < rate < 45
    finally:
        proc.terminate()
        proc.wait(10)
