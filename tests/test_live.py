"""LiveSinks (file + viewer server + OSC from one emit), ImageTap thumbnails, RealtimePlayback
pacing and looping."""
from __future__ import annotations

import dataclasses
import json
import socket
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from realtime.frames import Frame, PoseFrame
from realtime.sinks import LiveSinks
from realtime.thumbnails import ImageTap, draw_overlay, encode_jpeg
from realtime.osc_sink import parse_packet
from realtime.playback import RealtimePlayback
from realtime.preview import render_frame
from realtime.protocol import decode_thumb
from realtime.writers import read_pose_npz

from pose_fixtures import standing_pose


def _pf(i: int) -> PoseFrame:
    uv = np.stack([np.linspace(100, 500, 17), np.linspace(50, 400, 17)], 1).astype(np.float32)
    return PoseFrame(i, i / 30, True, standing_pose().astype(np.float32), np.array([0, 0, 3000], np.float32), uv,
                     np.ones(17, np.float32), (640, 480), None, {"latency": 10.0})


def test_one_emit_reaches_file_server_and_osc(tmp_path):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tap = ImageTap(keep=4)
    out = tmp_path / "o.npz"
    sinks = LiveSinks(out=out, fps=30, serve=True, port=0, tap=tap, osc=f"127.0.0.1:{rx.getsockname()[1]}")
    try:
        with connect(f"ws://127.0.0.1:{sinks.server.port}/ws?thumbs=1", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            for i in range(5):
                tap.put(Frame(i, i / 30, np.full((480, 640, 3), 30 * i, np.uint8)))
                assert sinks.emit(_pf(i))
            got_frame = got_thumb = False
            deadline = time.monotonic() + 5
            while not (got_frame and got_thumb) and time.monotonic() < deadline:
                m = ws.recv(timeout=5)
                if isinstance(m, bytes):
                    idx, jpeg = decode_thumb(m)
                    assert jpeg[:2] == b"\xff\xd8"
                    got_thumb = True
                elif json.loads(m)["type"] == "frame":
                    got_frame = True
            assert got_frame and got_thumb
        assert [a for a, _ in parse_packet(rx.recv(65536))][0] == "/VMC/Ext/OK"
    finally:
        sinks.close()
        rx.close()
    assert sinks.written == 5 and [p.index for p in read_pose_npz(out)] == list(range(5))
    assert tap.get(0) is None and tap.get(4) is not None  # only the last `keep` images are held


def test_close_reports_a_writer_failure_after_closing_the_rest(tmp_path):
    sinks = LiveSinks(out=tmp_path / "o.json", fps=30, serve=True, port=0)

    class Boom:
        def close(self):
            raise OSError("disk full")

    sinks.writer = Boom()
    server = sinks.server
    with pytest.raises(OSError, match="disk full"):
        sinks.close()
    assert server._thread is None  # the server was still stopped


def test_overlay_thumbnail():
    img = np.zeros((480, 640, 3), np.uint8)
    small = draw_overlay(img, _pf(0))
    assert small.shape == (240, 320, 3) and small.any()  # bones drawn
    assert draw_overlay(img, PoseFrame.empty(0, 0, (640, 480))).max() == 0
    assert encode_jpeg(small)[:2] == b"\xff\xd8"


def test_playback_paces_in_real_time_and_loops():
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(5)]
    pb = RealtimePlayback(lambda: (Frame(i, i / 50, im) for i, im in enumerate(images)), fps=50, loop=True,
                          max_frames=12)
    t0 = time.perf_counter()
    frames = list(pb)
    dt = time.perf_counter() - t0
    assert [f.index for f in frames] == list(range(12))
    assert [int(f.image[0, 0, 0]) for f in frames] == [i % 5 for i in range(12)]
    assert np.all(np.diff([f.timestamp_s for f in frames]) > 0)
    assert dt >= 11 / 50 * 0.9  # paced: 12 frames at 50 fps span 0.22 s at least
    assert pb.loops == 2


def test_output_arguments_without_out_for_commands_that_have_their_own():
    import argparse

    from realtime.cli_options import add_output_arguments

    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    add_output_arguments(p, include_out=False)
    args = p.parse_args(["--out", "x.npz", "--serve", "--port", "0", "--osc"])
    assert args.serve and args.port == 0 and args.osc == "39539" and not args.open3d


def test_finish_file_keeps_the_viewer_serving(tmp_path):
    out = tmp_path / "o.npz"
    sinks = LiveSinks(out=out, fps=30, serve=True, port=0)
    try:
        for i in range(3):
            sinks.emit(_pf(i))
        sinks.finish_file()  # end of input: the file is complete, the viewer still up
        assert [p.index for p in read_pose_npz(out)] == [0, 1, 2]
        assert sinks.idle() and sinks.emit(_pf(3))
        with connect(f"ws://127.0.0.1:{sinks.server.port}/ws", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            assert json.loads(ws.recv(timeout=5))["index"] == 3  # the last state, to a late joiner
    finally:
        sinks.close()
    assert sinks.written == 3 and len(read_pose_npz(out)) == 3  # frames written to the file


def test_a_busy_port_leaves_the_output_file_alone(tmp_path):
    from engines.errors import UserError

    out = tmp_path / "keep.json"
    out.write_text("an earlier take")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UserError, match="already in use"):
            LiveSinks(out=out, fps=30, serve=True, port=s.getsockname()[1])
    assert out.read_text() == "an earlier take"


def test_smoothing_is_off_for_files_unless_asked():
    import argparse

    from realtime.filters import PoseSmoother
    from realtime.cli_options import add_smoothing_arguments, smoother_from_args

    def smoother(argv, default_on):
        p = argparse.ArgumentParser()
        add_smoothing_arguments(p, default_on=default_on)
        return smoother_from_args(p.parse_args(argv))

    assert isinstance(smoother([], True), PoseSmoother) and smoother(["--no-smooth"], True) is None
    assert smoother([], False) is None and smoother(["--no-smooth"], False) is None
    assert smoother(["--smooth"], False).config == smoother([], True).config
    tuned = smoother(["--beta", "0.02"], False)  # a setting implies --smooth
    assert tuned.config.beta == 0.02 and tuned.config.min_cutoff == smoother([], True).config.min_cutoff
    assert smoother(["--beta", "0.02", "--no-smooth"], False) is None


def test_paced_file_keeps_indices_and_timestamps():
    from realtime.api import paced

    frames = [Frame(i, i / 50, np.zeros((2, 2, 3), np.uint8)) for i in (0, 1, 2, 5, 6)]  # 3, 4 undecodable
    t0 = time.perf_counter()
    got = list(paced(iter(frames), fps=50))
    dt = time.perf_counter() - t0
    assert got == frames and 0.9 * 6 / 50 <= dt < 1.0  # frame 6 at 0.12 s: the gap is kept


def test_deferred_interrupt_stops_between_frames():
    import signal

    from realtime.interrupts import DeferredInterrupt

    before = signal.getsignal(signal.SIGINT)
    with DeferredInterrupt(message="") as ctrl_c:
        signal.raise_signal(signal.SIGINT)
        assert ctrl_c.requested  # the first Ctrl-C is a request
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second one interrupts
    assert signal.getsignal(signal.SIGINT) is before


def test_image_tap_holds_what_the_stream_needs_within_its_budget():
    """A stream's tap keeps as many images as its lifter holds frames back (`hold`), and
    downscales images that would not fit its memory budget; the drawing scales the
    source-pixel joints to the kept image."""
    tap = ImageTap(keep=4, budget_bytes=10 * 640 * 480 * 3)
    tap.hold(10)
    tap.hold(2)  # never fewer than asked before
    assert tap.keep == 10
    for i in range(12):
        tap.put(Frame(i, i / 30, np.full((480, 640, 3), 7, np.uint8)))
    assert tap.get(1) is None and tap.get(2).shape == (480, 640, 3)  # the last 10, at full size
    tap.hold(40)  # 4x the frames in the same budget: half the width and height
    tap.put(Frame(12, 12 / 30, np.zeros((480, 640, 3), np.uint8)))
    small = tap.get(12)
    assert small.shape == (240, 320, 3)
    pf = _pf(12)  # joints in the 640x480 source's pixels
    # drawn as the same pose found on a 320x240 source would be
    half = dataclasses.replace(pf, joints_2d_px=pf.joints_2d_px / 2, image_size=(320, 240))
    assert np.array_equal(render_frame(pf, small, 1, 1, (320, 240)), render_frame(half, small, 1, 1, (320, 240)))
    assert np.array_equal(draw_overlay(small, pf, width=160), draw_overlay(small, half, width=160))
