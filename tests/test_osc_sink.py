"""OSC/VMC output: encoding round-trip, one bundle per frame received on loopback UDP."""
from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from engines.errors import UserError
from engines.skeleton import JOINT_NAMES
from realtime.frames import PoseFrame
from realtime.osc_sink import OscSink, encode_bundle, encode_message, parse_packet, parse_target

from pose_fixtures import standing_pose


def test_message_encoding_follows_osc_1_0():
    m = encode_message("/a", 1, 2.5, "hi", True)
    assert len(m) % 4 == 0
    # address "/a\0\0", tags ",ifsT\0\0\0", int, float, "hi\0\0"
    assert m == b"/a\0\0" + b",ifsT\0\0\0" + struct.pack(">i", 1) + struct.pack(">f", 2.5) + b"hi\0\0"
    assert parse_packet(m) == [("/a", [1, 2.5, "hi", True])]
    b = encode_bundle([m, encode_message("/b")])
    assert b.startswith(b"#bundle\0") and parse_packet(b) == [("/a", [1, 2.5, "hi", True]), ("/b", [])]
    for bad in (b"/a\0\0,x\0\0", b"#bundle\0" + bytes(8) + struct.pack(">i", 999)):
        with pytest.raises(ValueError):
            parse_packet(bad)
    with pytest.raises(ValueError):
        encode_message("no-slash")


def test_frames_arrive_as_vmc_bundles_on_loopback():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    sink = OscSink("127.0.0.1", rx.getsockname()[1])
    rel = standing_pose()
    tr = np.array([100.0, -50.0, 3000.0])
    pf = PoseFrame(7, 0.25, True, rel.astype(np.float32), tr.astype(np.float32), np.zeros((17, 2), np.float32),
                   np.ones(17, np.float32), (640, 480), None, {"latency": 42.0})
    sink.emit(pf)
    sink.emit(PoseFrame.empty(8, 0.3, (640, 480)))
    got = parse_packet(rx.recv(65536))
    assert got[0] == ("/VMC/Ext/OK", [1]) and got[1][0] == "/VMC/Ext/T"
    trackers = {a[0]: np.array(a[1:4]) for addr, a in got if addr == "/VMC/Ext/Tra/Pos"}
    assert list(trackers) == list(JOINT_NAMES)
    # metres, y up: the head is above the pelvis, everything ~3 m away
    np.testing.assert_allclose(trackers["pelvis"], [0.1, 0.05, 3.0], atol=1e-6)
    assert trackers["head"][1] > trackers["pelvis"][1] + 0.5
    assert got[-1] == ("/posestream/frame", [7, 0.25, 1, 42.0])
    empty = parse_packet(rx.recv(65536))
    assert empty[0] == ("/VMC/Ext/OK", [0]) and not any(a == "/VMC/Ext/Tra/Pos" for a, _ in empty)
    assert sink.sent == 2 and sink.errors == 0
    sink.close()
    rx.close()


def test_no_receiver_is_not_an_error():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    sink = OscSink("127.0.0.1", port)
    for i in range(5):
        sink.emit(PoseFrame.empty(i, i / 30, (640, 480)))
    assert sink.sent + sink.errors == 5
    sink.close()


def test_parse_target():
    assert parse_target("9000") == ("127.0.0.1", 9000)
    assert parse_target("localhost:39539") == ("localhost", 39539)
    for bad in ("x", "1:0", "70000"):
        with pytest.raises(UserError):
            parse_target(bad)
