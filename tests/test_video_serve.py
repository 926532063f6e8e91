"""`posestream video IN --out OUT --serve`: the file processed in file mode while a websocket
client on loopback watches the stream (documented frame schema, the same poses as the file),
--hold, Ctrl-C with the file finalised, the output identical to a run without --serve, and
the clear errors (busy port, corrupt video, --hold without a viewer)."""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import connect

from engines.skeleton import BONES, JOINT_NAMES
from realtime.cli import main
from realtime.protocol import PROTOCOL_VERSION, message_to_frame
from realtime.writers import read_pose_npz
from tests.video_serve import DEMO, VideoServe, needs_shipped_model

FRAME_KEYS = {"v", "type", "index", "timestamp_s", "valid", "joints_mm", "translation_mm", "joints_2d_px",
              "confidence", "fbi", "timings_ms", "image_size", "pub_ms", "track_id", "others"}


def recv_frames(ws, until_index: int, timeout_s: float = 20.0) -> list[dict]:
    """Frame messages (schema-checked) until the one with `until_index`."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not got or got[-1]["index"] < until_index:
        m = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(m, bytes):
            continue
        msg = json.loads(m)
        if msg["type"] != "frame":
            assert msg["type"] in ("hello", "stats"), msg
            continue
        assert set(msg) == FRAME_KEYS and msg["v"] == PROTOCOL_VERSION
        assert len(msg["joints_mm"]) == 17 and all(len(j) == 3 for j in msg["joints_mm"])
        assert len(msg["joints_2d_px"]) == 17 and len(msg["confidence"]) == 17 and len(msg["translation_mm"]) == 3
        assert msg["image_size"] == [640, 360] and isinstance(msg["pub_ms"], float)
        assert {"detect", "lift", "latency"} <= set(msg["timings_ms"])
        got.append(msg)
    return got


@needs_shipped_model
def test_serve_streams_the_file_and_holds(tmp_path: Path):
    """--realtime --hold on 24 frames: the client sees the frames in order at the file's pace,
    the last one included; the file is complete while the last frame is still served; Ctrl-C
    then ends the command cleanly."""
    out = tmp_path / "demo.npz"
    with VideoServe(out, "--max-frames", "24", "--realtime", "--hold") as run:
        with connect(f"ws://127.0.0.1:{run.port}/ws", open_timeout=10) as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["type"] == "hello" and hello["joint_names"] == list(JOINT_NAMES)
            assert [tuple(b) for b in hello["bones"]] == list(BONES)
            assert hello["source"] == {"kind": "video", "file": "demo.mp4", "frames": 24, "fps": 30.0,
                                       "realtime": True}
            got = recv_frames(ws, until_index=23)
        indices = [m["index"] for m in got]
        assert indices == sorted(set(indices)) and indices[-1] == 23
        assert len(got) >= 5, indices  # paced at 30 fps: the viewer sees them go by, not just the last
        run.wait_for("end of file: serving the last frame at")
        poses = read_pose_npz(out)  # finalised before the hold
        assert [p.index for p in poses] == list(range(24)) and all(p.valid for p in poses)
        for m in got:
            streamed = message_to_frame(m)
            np.testing.assert_allclose(streamed.joints_mm, poses[m["index"]].joints_mm, atol=0.051)
            np.testing.assert_allclose(streamed.translation_mm, poses[m["index"]].translation_mm, atol=0.051)
        with urllib.request.urlopen(run.url, timeout=10) as page:  # the viewer page on the same port
            assert page.status == 200 and b"<html" in page.read().lower()
        with connect(f"ws://127.0.0.1:{run.port}/ws", open_timeout=10) as late:  # a late joiner: the last state
            assert json.loads(late.recv(timeout=10))["type"] == "hello"
            assert recv_frames(late, until_index=23)[-1]["index"] == 23
        assert run.interrupt() == 0, run.output
    assert "wrote" in run.output and "24 frames (24 with a person" in run.output
    assert "Traceback" not in run.output


@needs_shipped_model
def test_ctrl_c_mid_file_finalises_every_processed_frame(tmp_path: Path):
    out = tmp_path / "part.json"
    with VideoServe(out, "--realtime") as run:
        with connect(f"ws://127.0.0.1:{run.port}/ws", open_timeout=10) as ws:
            recv_frames(ws, until_index=10)
        assert run.interrupt() == 130, run.output
    assert "stopped (Ctrl-C): wrote" in run.output and "Traceback" not in run.output
    frames = json.loads(out.read_text())["frames"]  # valid JSON: the writer was closed
    assert 10 < len(frames) < 103 and [f["index"] for f in frames] == list(range(len(frames)))
    assert f"{len(frames)} frames" in run.output


@needs_shipped_model
def test_serve_writes_the_same_file_as_a_plain_run(tmp_path: Path, capsys):
    plain, served = tmp_path / "plain.json", tmp_path / "served.json"
    common = ["--max-frames", "8", "--no-progress"]
    assert main(["video", str(DEMO), "--out", str(plain), *common]) == 0
    assert main(["video", str(DEMO), "--out", str(served), *common, "--serve", "--port", "0", "--osc"]) == 0
    assert "viewer: http://127.0.0.1:" in capsys.readouterr().err
    assert served.read_bytes() == plain.read_bytes()


@needs_shipped_model
def test_busy_port_is_a_clear_error(tmp_path: Path, capsys):
    out = tmp_path / "o.npz"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        rc = main(["video", str(DEMO), "--out", str(out), "--serve", "--port", str(s.getsockname()[1]),
                   "--max-frames", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "already in use" in err and "--port 0" in err and "Traceback" not in err
    assert not out.exists()  # nothing written, nothing truncated


@pytest.mark.parametrize("argv, message", [
    (["--serve", "--port", "0"], "cannot decode"),                     # a corrupt video
    (["--osc", "--hold"], "needs --serve or --open3d"),                # nothing to hold
])
def test_serve_user_errors(tmp_path: Path, capsys, argv: list[str], message: str):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(DEMO.read_bytes()[:5000])
    assert main(["video", str(bad), "--out", str(tmp_path / "o.npz"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@needs_shipped_model
def test_serve_keeps_unreadable_frames_in_place(tmp_path: Path, capsys):
    """Through the threaded path too, an image that cannot be read is an empty frame in its place."""
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    cap = cv2.VideoCapture(str(DEMO))
    for i in range(5):
        ok, bgr = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), bgr)
    cap.release()
    (folder / "002.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "imgs.json"
    assert main(["video", str(folder), "--out", str(out), "--serve", "--port", "0", "--no-progress"]) == 0
    frames = json.loads(out.read_text())["frames"]
    assert [(f["index"], f["valid"]) for f in frames] == [(0, True), (1, True), (2, False), (3, True), (4, True)]
    assert "5 frames (4 with a person, 1 undecodable)" in capsys.readouterr().out
