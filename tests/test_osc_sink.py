"""OSC/VMC output: OSC 1.0 encoding, every message decoded by an independent receiver
(python-osc), the bundle's bytes against the VMC protocol's type tags, and forward kinematics
of a standard Unity humanoid driven by the received local rotations reproducing our joints'
directions (plain and mirrored)."""
from __future__ import annotations

import socket
from pathlib import Path
import struct

import numpy as np
import pytest
from pythonosc.osc_packet import OscPacket

from engines.errors import UserError
from engines.skeleton import FLIP_PERMUTATION, JOINT_INDEX, JOINT_NAMES
from realtime.frames import PoseFrame
from realtime.osc_sink import OscSink, VmcEncoder, encode_bundle, encode_message, parse_packet, parse_target
from realtime.rig import CAM_TO_RIG

from pose_fixtures import standing_pose
from recorded import recorded_poses

# Type tags of each address: the VMC protocol's Marionette spec (OK: int; T: float; Root/Pos
# and Bone/Pos: string + 7 floats) and our own /posestream/ space (realtime/osc_sink.py).
TYPE_TAGS = {"/VMC/Ext/OK": ",i", "/VMC/Ext/T": ",f", "/VMC/Ext/Root/Pos": ",sfffffff",
             "/VMC/Ext/Bone/Pos": ",sfffffff", "/posestream/frame": ",ifif", "/posestream/joint": ",sffff"}

# A standard humanoid as Unity holds a VRM in T-pose (left-handed, Y up, facing +Z, the
# avatar's left at -X, every rest rotation the identity): parent and local rest offset (m).
# Its proportions differ from ours on purpose: only the rotations are taken from the stream.
STANDARD: dict[str, tuple[str | None, tuple[float, float, float]]] = {
    "Hips": (None, (0.0, 0.95, 0.0)), "Spine": ("Hips", (0.0, 0.10, 0.0)), "Chest": ("Spine", (0.0, 0.13, 0.0)),
    "UpperChest": ("Chest", (0.0, 0.12, 0.0)), "Neck": ("UpperChest", (0.0, 0.11, 0.0)),
    "Head": ("Neck", (0.0, 0.09, 0.0)),
}
for _side, _x in (("Left", -1.0), ("Right", 1.0)):
    STANDARD.update({
        f"{_side}Shoulder": ("UpperChest", (_x * 0.03, 0.08, 0.0)),
        f"{_side}UpperArm": (f"{_side}Shoulder", (_x * 0.09, 0.0, 0.0)),
        f"{_side}LowerArm": (f"{_side}UpperArm", (_x * 0.27, 0.0, 0.0)),
        f"{_side}Hand": (f"{_side}LowerArm", (_x * 0.25, 0.0, 0.0)),
        f"{_side}UpperLeg": ("Hips", (_x * 0.085, -0.05, 0.0)),
        f"{_side}LowerLeg": (f"{_side}UpperLeg", (0.0, -0.42, 0.0)),
        f"{_side}Foot": (f"{_side}LowerLeg", (0.0, -0.41, 0.0)),
        f"{_side}Toes": (f"{_side}Foot", (0.0, -0.05, 0.13)),
    })
# Segments of the standard humanoid after FK -> the joints of ours they must point along.
# The hips' primary axis is the hip joints' axis (their up axis is the lower back's, made
# perpendicular to it, so the standard's Hips -> Spine is not compared: a girdle's two axes
# are not perpendicular in our joints).
SEGMENTS: list[tuple[str, str, str, str]] = [
    ("RightUpperLeg", "LeftUpperLeg", "r_hip", "l_hip"), ("Spine", "Chest", "spine", "thorax"),
    ("Chest", "UpperChest", "spine", "thorax"), ("Neck", "Head", "thorax", "head"),
]
for _side, _s in (("Left", "l"), ("Right", "r")):
    SEGMENTS += [(f"{_side}Shoulder", f"{_side}UpperArm", "thorax", f"{_s}_shoulder"),
                 (f"{_side}UpperArm", f"{_side}LowerArm", f"{_s}_shoulder", f"{_s}_elbow"),
                 (f"{_side}LowerArm", f"{_side}Hand", f"{_s}_elbow", f"{_s}_wrist"),
                 (f"{_side}UpperLeg", f"{_side}LowerLeg", f"{_s}_hip", f"{_s}_knee"),
                 (f"{_side}LowerLeg", f"{_side}Foot", f"{_s}_knee", f"{_s}_ankle")]
# Unity's HumanBodyBones names (the body part; fingers, eyes and jaw are never sent).
HUMAN_BODY_BONES = {"Hips", "Spine", "Chest", "UpperChest", "Neck", "Head"} | {
    f"{s}{b}" for s in ("Left", "Right")
    for b in ("Shoulder", "UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot", "Toes")}


def _unity_matrix(q: list[float]) -> np.ndarray:
    """Unity's Quaternion (x, y, z, w) as the 3x3 matrix it applies to vectors."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _receive(bundle: bytes) -> list[tuple[str, list]]:
    """What a python-osc receiver gets from one datagram: [(address, params), ...]."""
    return [(m.message.address, list(m.message.params)) for m in OscPacket(bundle).messages]


def _standard_fk(received: list[tuple[str, list]]) -> dict[str, np.ndarray]:
    """Positions of the standard humanoid (Unity space) posed by the received Root/Pos and
    Bone/Pos rotations (a receiver that applies rotations only; bones not received stay at rest)."""
    local = {p[0]: _unity_matrix(p[4:8]) for a, p in received if a == "/VMC/Ext/Bone/Pos"}
    root = next(p for a, p in received if a == "/VMC/Ext/Root/Pos")
    R: dict[str, np.ndarray] = {}
    pos: dict[str, np.ndarray] = {}
    for name, (parent, offset) in STANDARD.items():  # parents come first
        Rp = _unity_matrix(root[4:8]) if parent is None else R[parent]
        base = np.asarray(root[1:4]) if parent is None else pos[parent]
        pos[name] = base + Rp @ np.asarray(offset)
        R[name] = Rp @ local.get(name, np.eye(3))
    return pos


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


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


def test_python_osc_receiver_decodes_every_message():
    poses, _ = recorded_poses()
    poses = poses[:10] + [PoseFrame.empty(10, 10 / 30, (640, 360))]
    enc = VmcEncoder()
    for pf in poses:
        bundle = encode_bundle(enc.messages(pf))
        got = _receive(bundle)
        ours = parse_packet(bundle)
        assert [a for a, _ in got] == [a for a, _ in ours]
        for (_, p), (_, q) in zip(got, ours):
            assert p == pytest.approx(q, nan_ok=True)
        addresses = [a for a, _ in got]
        assert addresses[:2] == ["/VMC/Ext/OK", "/VMC/Ext/T"] and got[0][1] == [int(pf.valid)]
        assert got[1][1][0] == pytest.approx(pf.timestamp_s)
        assert got[addresses.index("/posestream/frame")][1][:3] == [pf.index, pytest.approx(pf.timestamp_s), int(pf.valid)]
        if not pf.valid:
            assert not any(a.startswith("/VMC/Ext/Root") or a.startswith("/VMC/Ext/Bone") for a in addresses)
            continue
        assert addresses.count("/VMC/Ext/Root/Pos") == 1
        bones = [p[0] for a, p in got if a == "/VMC/Ext/Bone/Pos"]
        assert len(bones) == len(set(bones)) == 22 and set(bones) == HUMAN_BODY_BONES
        joints = [p[0] for a, p in got if a == "/posestream/joint"]
        assert joints == list(JOINT_NAMES)
        assert len(bundle) < 8192  # one datagram, well under any receiver's buffer


def test_recorded_frame_bundle_matches_the_protocol_type_tags_byte_for_byte():
    poses, _ = recorded_poses()
    enc = VmcEncoder()
    for pf in poses[:2]:
        bundle = encode_bundle(enc.messages(pf))
    assert bundle[:8] == b"#bundle\0" and bundle[8:16] == struct.pack(">Q", 1)  # time tag "immediately"
    pos, n_msgs = 16, 0
    while pos < len(bundle):
        (size,) = struct.unpack_from(">i", bundle, pos)
        elem = bundle[pos + 4:pos + 4 + size]
        assert size % 4 == 0 and len(elem) == size
        pos += 4 + size
        n_msgs += 1
        end = elem.index(b"\0")
        address = elem[:end].decode("ascii")
        k = (end // 4 + 1) * 4
        assert elem[end:k] == bytes(k - end)  # NUL-padded to a multiple of 4
        tags_end = elem.index(b"\0", k)
        tags = elem[k:tags_end].decode("ascii")
        assert tags == TYPE_TAGS[address], (address, tags)
        k2 = (tags_end // 4 + 1) * 4
        assert elem[tags_end:k2] == bytes(k2 - tags_end)
        p = k2
        for t in tags[1:]:
            if t == "s":
                s_end = elem.index(b"\0", p)
                elem[p:s_end].decode("utf-8")
                q = (s_end // 4 + 1) * 4
                assert elem[s_end:q] == bytes(q - s_end)
                p = q
            else:
                value = struct.unpack_from(">f" if t == "f" else ">i", elem, p)[0]
                assert np.isfinite(value) or address == "/posestream/frame"  # latency may be NaN
                p += 4
        assert p == len(elem), f"{address}: {len(elem) - p} bytes beyond its type tags"
    assert pos == len(bundle) and n_msgs == 2 + 1 + 22 + 1 + 17


@pytest.mark.parametrize("mirror", [False, True])
def test_standard_humanoid_fk_reproduces_our_joint_directions(mirror: bool):
    """Every bone of a standard humanoid, posed by the received local rotations, points along
    the corresponding bone of our joints (within 2 degrees), in the stream's levelled Unity
    space; mirrored, the avatar's left follows the person's right, reflected."""
    poses, _ = recorded_poses()
    enc = VmcEncoder(mirror=mirror)
    flip = np.diag([-1.0, 1.0, 1.0])
    worst = 0.0
    for pf in poses[::3]:
        received = _receive(encode_bundle(enc.messages(pf)))
        pos = _standard_fk(received)
        J = np.asarray(pf.joints_mm, np.float64)
        if mirror:
            J = J[list(FLIP_PERMUTATION)] @ flip
        to_unity = np.diag([-1.0, 1.0, 1.0]) @ enc.running.level @ CAM_TO_RIG
        for a, b, ja, jb in SEGMENTS:
            ours = to_unity @ (J[JOINT_INDEX[jb]] - J[JOINT_INDEX[ja]])
            err = _angle_deg(pos[b] - pos[a], ours)
            assert err < 2.0, (pf.index, a, b, err)
            worst = max(worst, err)
    assert worst < 0.1  # the solver's aims are exact; float32 on the wire is all that is lost


def test_stream_is_upright_on_the_floor_and_starts_at_the_origin():
    poses, _ = recorded_poses()
    enc = VmcEncoder()
    first = None
    for pf in poses[::4]:
        got = _receive(encode_bundle(enc.messages(pf)))
        root = next(p for a, p in got if a == "/VMC/Ext/Root/Pos")
        bones = {p[0]: p for a, p in got if a == "/VMC/Ext/Bone/Pos"}
        first = first or root
        assert root[2] == 0.0 and root[4:8] == [0.0, 0.0, 0.0, 1.0]
        assert 0.7 < bones["Hips"][2] < 1.2 and bones["Hips"][1] == bones["Hips"][3] == 0.0  # height above floor
        for name, p in bones.items():  # real rest offsets: only the UpperChest (zero by design) has none
            assert (np.linalg.norm(p[1:4]) > 0.02) != (name == "UpperChest"), name
        pos = _standard_fk(got)
        up = pos["Head"] - pos["Hips"]
        assert _angle_deg(up, np.array([0.0, 1.0, 0.0])) < 25.0  # the levelled person stands upright
    assert first[1:4] == [0.0, 0.0, 0.0]
    # the lowest foot point of our own skeleton touches y = 0: rebuild it from the received offsets
    local = {p[0]: (np.asarray(p[1:4]), _unity_matrix(p[4:8])) for a, p in got if a == "/VMC/Ext/Bone/Pos"}
    lowest = min(_own_fk(local, np.asarray(root[1:4]))[n][1] for n in ("LeftToes", "RightToes", "LeftFoot", "RightFoot"))
    assert lowest == pytest.approx(0.0, abs=0.03)


def _own_fk(local: dict[str, tuple[np.ndarray, np.ndarray]], root: np.ndarray) -> dict[str, np.ndarray]:
    """FK with the received positions too (as EVMC4U applies them): our own skeleton."""
    R: dict[str, np.ndarray] = {}
    pos: dict[str, np.ndarray] = {}
    for name, (parent, _) in STANDARD.items():
        offset, rot = local[name]
        Rp = np.eye(3) if parent is None else R[parent]
        pos[name] = (root if parent is None else pos[parent]) + Rp @ offset
        R[name] = Rp @ rot
    return pos


def test_facing_and_mirror_sides():
    """A T-posed person facing the camera: the avatar faces +Z with identity rotations; raising
    the person's left arm raises the avatar's left arm, or its right one when mirrored."""
    rel = standing_pose().astype(np.float32)
    up = rel.copy()
    up[12] = rel[11] + (0, -270, 0)  # left elbow straight above the left shoulder (camera y is down)
    up[13] = rel[11] + (0, -520, 0)
    for mirror, raised in ((False, "LeftUpperArm"), (True, "RightUpperArm")):
        enc = VmcEncoder(mirror=mirror)
        pf = PoseFrame(0, 0.0, True, up, np.array([0, 0, 3000], np.float32), np.zeros((17, 2), np.float32),
                       np.ones(17, np.float32), (640, 480))
        pos = _standard_fk(_receive(encode_bundle(enc.messages(pf))))
        hand = pos[raised.replace("UpperArm", "Hand")] - pos[raised]
        assert _angle_deg(hand, np.array([0.0, 1.0, 0.0])) < 10.0, (mirror, hand)
        other = "Right" if raised.startswith("Left") else "Left"
        assert _angle_deg(pos[f"{other}Hand"] - pos[f"{other}UpperArm"], np.array([0.0, 1.0, 0.0])) > 60.0
        # facing +Z: the hips' left-right axis is Unity's X (avatar's left at -X)
        assert _angle_deg(pos["LeftUpperLeg"] - pos["RightUpperLeg"], np.array([-1.0, 0.0, 0.0])) < 5.0


def test_rate_limit_by_frame_time():
    poses, fps = recorded_poses()
    enc = VmcEncoder(rate_hz=10.0)
    sent = [pf.index for pf in poses[:40] if enc.messages(pf) is not None]
    assert fps == 30.0 and sent == list(range(0, 40, 3))


def test_frames_arrive_as_one_bundle_each_on_loopback():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    sink = OscSink("127.0.0.1", rx.getsockname()[1], mirror=True)
    rel = standing_pose()
    tr = np.array([100.0, -50.0, 3000.0])
    pf = PoseFrame(7, 0.25, True, rel.astype(np.float32), tr.astype(np.float32), np.zeros((17, 2), np.float32),
                   np.ones(17, np.float32), (640, 480), None, {"latency": 42.0})
    sink.emit(pf)
    sink.emit(PoseFrame.empty(8, 0.3, (640, 480)))
    got = _receive(rx.recv(65536))
    assert got[0] == ("/VMC/Ext/OK", [1]) and got[1][0] == "/VMC/Ext/T"
    raw = {p[0]: np.array(p[1:4]) for a, p in got if a == "/posestream/joint"}
    np.testing.assert_allclose(raw["pelvis"], tr, atol=1e-3)  # camera space, mm
    assert ("/posestream/frame", [7, 0.25, 1, 42.0]) in got
    empty = _receive(rx.recv(65536))
    assert empty[0] == ("/VMC/Ext/OK", [0]) and not any(a == "/VMC/Ext/Bone/Pos" for a, _ in empty)
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


def test_command_line_options_reach_the_stream():
    import argparse

    from realtime.cli_options import add_output_arguments
    from realtime.sinks import LiveSinks

    parser = argparse.ArgumentParser()
    add_output_arguments(parser)
    args = parser.parse_args(["--osc", "127.0.0.1:9", "--vmc-mirror", "--osc-rate", "20"])
    sinks = LiveSinks.from_args(args, 30.0)
    try:
        assert sinks.osc.encoder.mirror is True and sinks.osc.encoder.min_interval_s == pytest.approx(0.05)
    finally:
        sinks.close()
    plain = LiveSinks.from_args(parser.parse_args(["--osc"]), 30.0)
    try:
        assert plain.osc.address[1] == 39539 and not plain.osc.encoder.mirror and plain.osc.encoder.min_interval_s == 0
    finally:
        plain.close()
    for bad in ("0", "-5", "x", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--osc", "--osc-rate", bad])


def test_parse_target_takes_bracketed_ipv6():
    assert parse_target("[::1]:39539") == ("::1", 39539)
    for bad in ("[]:9000", "::1:9000", "[::1]"):
        with pytest.raises(UserError, match="--osc"):
            parse_target(bad)
    sink = OscSink(*parse_target("[::1]:9"))  # resolves: the message said "cannot resolve [::1]"
    sink.close()


@pytest.mark.parametrize("argv, message", [
    (["--vmc-mirror"], "--vmc-mirror applies to the VMC stream: it needs --osc"),
    (["--osc-rate", "5"], "--osc-rate applies to the VMC stream: it needs --osc"),
    (["--osc-person", "5"], "--osc-person applies to the VMC stream: it needs --osc"),
    (["--osc", "--osc-person", "5"], "--osc-person picks which of several people drives the avatar: it needs --people"),
])
def test_vmc_options_that_would_be_ignored_are_usage_errors_before_any_work(argv, message, capsys, monkeypatch,
                                                                            tmp_path):
    import realtime.api
    from realtime.cli import main

    def not_reached(*a, **k):
        raise AssertionError("work started although an option would be ignored")

    monkeypatch.setattr(realtime.api.Estimator, "from_options", not_reached)
    assert main(["webcam", "--camera", "nosuch.mp4", *argv]) == 2
    assert f"posestream webcam: error: {message}" in capsys.readouterr().err
    demo = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
    out = tmp_path / "o.npz"
    assert main(["video", str(demo), "--out", str(out), *argv]) == 2  # video: before its models load too
    assert f"posestream video: error: {message}" in capsys.readouterr().err and not out.exists()


def test_webcam_size_for_a_video_file_is_a_warning(caplog):
    from pathlib import Path

    from realtime.webcam_cmd import open_camera

    demo = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
    with caplog.at_level("WARNING"):
        source = open_camera(str(demo), max_frames=1, width=320, height=240)
    source.close()
    assert "--width and --height are for a webcam" in caplog.text and "its own frame size" in caplog.text
