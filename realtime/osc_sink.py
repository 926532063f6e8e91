"""`--osc [HOST:]PORT`: the pose as a VMC Performer -> Marionette stream over UDP (OSC 1.0),
one bundle per frame, for VMC receivers (VSeeFace, VirtualMotionCapture, Warudo, EVMC4U in
Unity); plus our raw joints under /posestream/ (receivers ignore addresses they do not know).

OSC 1.0 is encoded here (no dependency): strings NUL-terminated and padded to 4 bytes,
big-endian int32 'i' / float32 'f', bundles "#bundle\\0" + 64-bit time tag (1 = now) +
size-prefixed elements. `parse_packet` decodes what `encode_*` writes (tests, debugging).

Per frame, one bundle (`VmcEncoder`):
    /VMC/Ext/OK        i  1 when a person is tracked, else 0 (and no Root/Bone messages)
    /VMC/Ext/T         f  frame timestamp, seconds
    /VMC/Ext/Root/Pos  s "root", f px py pz, f qx qy qz qw
    /VMC/Ext/Bone/Pos  s HumanBodyBones name, f px py pz, f qx qy qz qw   one per bone
    /posestream/frame  i index, f timestamp_s, i valid, f capture-to-output latency ms
    /posestream/joint  s joint name, f x y z (mm, camera axes), f confidence   one per joint
VMC values follow Unity and VRM: left-handed, Y up, metres; the avatar's T-pose rest faces
+Z with its arms along X, every bone's rest rotation the identity. Bone/Pos rotations are
local (relative to the parent bone) and relative to that rest, solved by realtime.rig from
the joints (and MediaPipe's hand, foot and ear landmarks when visible); Bone/Pos positions
are the bones' rest offsets from their parent (our running estimate of the person's bone
lengths), which receivers that apply positions (EVMC4U) use as the skeleton. Bones sent:
Hips, Spine, Chest, UpperChest (zero offset, identity: avatars that have one keep our
chest), Neck, Head, and Left/Right Shoulder, UpperArm, LowerArm, Hand, UpperLeg, LowerLeg,
Foot, Toes.
Root/Pos: the hips' position on the floor (x, 0, z), relative to the first tracked frame
(zero when the trajectory is unknown), identity rotation; the Hips bone carries the height
above the floor (the lowest foot point in that frame touches it) and the body's rotation.
The camera is levelled (realtime.rig.level_rotation): the person stands upright on Y = 0.
Facing: a person facing the camera drives an avatar facing +Z (towards a receiver's default
view) with the same side: their left hand moves the avatar's left hand. With mirror=True
(--vmc-mirror) left and right swap and the motion is mirrored, as in a selfie view.
/posestream/joint positions are camera space (root-relative when the trajectory is
unknown), engines.skeleton's names and axes (x right, y down, z forward).
Several people (`--people N`): one avatar is driven by one person, the one with track id
`person` (--osc-person ID; default: the frame's own person, the lowest id in view). While
that person is not in view, /VMC/Ext/OK is 0.
Default target 127.0.0.1:39539 (VMC's usual Marionette port). A receiver that is not
listening is not an error (UDP): datagrams are just lost; send errors are counted.
"""
from __future__ import annotations

import argparse
import logging
import socket
from typing import Any
import struct

import numpy as np

from engines.errors import UserError
from engines.skeleton import JOINT_NAMES
from realtime.frames import PoseFrame
from realtime.rig import (HUMANOID_VMC, RIG_TO_UNITY, RunningRest, forward, ground_height, local_rotations,
                          rig_points, rotate_points, solve, unity_quaternion)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 39539
OscArg = int | float | str | bool


def _osc_string(s: str) -> bytes:
    b = s.encode("utf-8") + b"\0"
    return b + b"\0" * (-len(b) % 4)


def encode_message(address: str, *args: OscArg) -> bytes:
    """One OSC message. bool -> T/F (no payload), int -> i, float -> f, str -> s."""
    if not address.startswith("/"):
        raise ValueError(f"OSC addresses start with '/', got {address!r}")
    tags, payload = [","], []
    for a in args:
        if isinstance(a, bool):
            tags.append("T" if a else "F")
        elif isinstance(a, (int, np.integer)):
            tags.append("i")
            payload.append(struct.pack(">i", int(a)))
        elif isinstance(a, (float, np.floating)):
            tags.append("f")
            payload.append(struct.pack(">f", float(a)))
        elif isinstance(a, str):
            tags.append("s")
            payload.append(_osc_string(a))
        else:
            raise TypeError(f"unsupported OSC argument {a!r}")
    return _osc_string(address) + _osc_string("".join(tags)) + b"".join(payload)


def encode_bundle(messages: list[bytes], timetag: int = 1) -> bytes:
    """An OSC bundle of encoded messages; time tag 1 means "immediately"."""
    return b"#bundle\0" + struct.pack(">Q", timetag) + b"".join(struct.pack(">i", len(m)) + m for m in messages)


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8"), (end + 4) & ~3


def parse_packet(data: bytes) -> list[tuple[str, list[OscArg]]]:
    """Decode a message or (nested) bundle into [(address, args), ...]. ValueError if malformed."""
    try:
        if data.startswith(b"#bundle\0"):
            out, pos = [], 16
            while pos < len(data):
                (n,) = struct.unpack_from(">i", data, pos)
                if n < 0 or pos + 4 + n > len(data):
                    raise ValueError("bundle element overruns the packet")
                out += parse_packet(data[pos + 4:pos + 4 + n])
                pos += 4 + n
            return out
        address, pos = _read_string(data, 0)
        tags, pos = _read_string(data, pos)
        if not tags.startswith(","):
            raise ValueError("missing type tag string")
        args: list[OscArg] = []
        for t in tags[1:]:
            if t == "i":
                args.append(struct.unpack_from(">i", data, pos)[0])
                pos += 4
            elif t == "f":
                args.append(struct.unpack_from(">f", data, pos)[0])
                pos += 4
            elif t == "s":
                s, pos = _read_string(data, pos)
                args.append(s)
            elif t in "TF":
                args.append(t == "T")
            else:
                raise ValueError(f"unsupported OSC type tag {t!r}")
        return [(address, args)]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed OSC packet: {exc}") from None


def raw_messages(pf: PoseFrame) -> list[bytes]:
    """The /posestream/ messages of one frame (module docstring)."""
    latency = float(pf.timings_ms.get("latency", float("nan")))
    msgs = [encode_message("/posestream/frame", int(pf.index), float(pf.timestamp_s), int(pf.valid), latency)]
    if pf.valid:
        joints = np.asarray(pf.joints_mm, np.float64)
        tr = np.asarray(pf.translation_mm, np.float64)
        if np.isfinite(tr).all():
            joints = joints - joints[0] + tr
        conf = np.asarray(pf.confidence, np.float64)
        for name, p, c in zip(JOINT_NAMES, joints, conf):
            if np.isfinite(p).all():
                msgs.append(encode_message("/posestream/joint", name, *map(float, p), float(c)))
    return msgs


IDENTITY_Q = (0.0, 0.0, 0.0, 1.0)


class VmcEncoder:
    """PoseFrames -> VMC bundles (module docstring), sans I/O. Keeps the stream's state: the
    running rest and level (realtime.rig.RunningRest), the first tracked hips position (the
    root's origin) and the last sent frame time (for `rate_hz`)."""

    def __init__(self, mirror: bool = False, rate_hz: float | None = None, person: int | None = None) -> None:
        self.rig = HUMANOID_VMC
        self.person = person
        self.mirror = mirror
        self.min_interval_s = 0.0 if not rate_hz else 1.0 / rate_hz
        self.running = RunningRest(self.rig)
        self._origin: np.ndarray | None = None
        self._last_t: float | None = None
        self._bones = [(b, bone.unity) for b, bone in enumerate(self.rig.bones) if bone.unity]
        self._chest = self.rig.names.index("Chest")

    def due(self, pf: PoseFrame) -> bool:
        """Whether this frame is sent under the rate limit (by frame time)."""
        t = float(pf.timestamp_s)
        return self._last_t is None or t < self._last_t or t - self._last_t >= self.min_interval_s - 1e-6

    def messages(self, pf: PoseFrame) -> list[bytes] | None:
        """The encoded messages of the frame's bundle, or None when the rate limit skips it."""
        if not self.due(pf):
            return None
        pf = pf.person(self.person)
        self._last_t = float(pf.timestamp_s)
        tracked = bool(pf.valid) and np.isfinite(np.asarray(pf.joints_mm, np.float64)).all()
        msgs = [encode_message("/VMC/Ext/OK", 1 if tracked else 0), encode_message("/VMC/Ext/T", float(pf.timestamp_s))]
        if tracked:
            msgs += self._pose_messages(pf)
        return msgs + raw_messages(pf)

    def _pose_messages(self, pf: PoseFrame) -> list[bytes]:
        joints = np.asarray(pf.joints_mm, np.float64)
        tr = np.asarray(pf.translation_mm, np.float64)
        known = bool(np.isfinite(tr).all())
        cam = joints - joints[0] + (tr if known else 0.0)
        pts = rig_points(cam, pf.landmarks_world_mm, pf.landmarks_visibility, mirror=self.mirror)
        self.running.update(pts)
        rest = self.running.rest
        pts = rotate_points(pts, self.running.level)
        G = solve(self.rig, pts, rest)
        pos, ends = forward(self.rig, rest, G, pts["pelvis"])
        height = float(pos[0, 0, 1] - ground_height(self.rig, pos, ends)[0])
        hips = pts["pelvis"][0]
        if known and self._origin is None:
            self._origin = hips.copy()
        floor = (hips - self._origin) * [1.0, 0.0, 1.0] if known and self._origin is not None else np.zeros(3)
        quats = unity_quaternion(local_rotations(self.rig, G)[0])
        msgs = [encode_message("/VMC/Ext/Root/Pos", "root", *map(float, RIG_TO_UNITY @ floor), *IDENTITY_Q)]
        for b, name in self._bones:
            p = (0.0, height, 0.0) if b == 0 else RIG_TO_UNITY @ rest.offset[b]
            msgs.append(encode_message("/VMC/Ext/Bone/Pos", name, *map(float, p), *map(float, quats[b])))
            if b == self._chest:
                msgs.append(encode_message("/VMC/Ext/Bone/Pos", "UpperChest", 0.0, 0.0, 0.0, *IDENTITY_Q))
        return msgs


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"wants a positive number of bundles per second, got {text!r}")
    return v


def _track_id(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"wants a track id (an integer >= 0), got {text!r}")
    return v


def add_vmc_arguments(group: argparse._ActionsContainer) -> None:
    """The VMC stream's options (beside --osc): --vmc-mirror, --osc-rate."""
    group.add_argument("--vmc-mirror", action="store_true",
                       help="--osc: the avatar mirrors the person, as a selfie view does (their right hand moves "
                            "the avatar's left); default: it moves as the person in the image")
    group.add_argument("--osc-rate", type=_rate, default=None, metavar="HZ",
                       help="--osc: at most HZ bundles per second, by frame time (default: every frame)")
    group.add_argument("--osc-person", type=_track_id, default=None, metavar="ID",
                       help="--osc with --people N: the track id of the person who drives the avatar "
                            "(default: the lowest id in view)")


def check_vmc_arguments(args: argparse.Namespace) -> None:
    """UserError (exit 2) for a VMC option given without what it applies to: --vmc-mirror,
    --osc-rate or --osc-person without --osc, and --osc-person without --people N > 1. They
    used to be ignored without a word; refused as `posestream video --hold` without a live
    output is, so the user learns the stream will not do what they asked."""
    if not getattr(args, "osc", None):
        given = [flag for flag, attr, unset in (("--vmc-mirror", "vmc_mirror", False), ("--osc-rate", "osc_rate", None),
                                                ("--osc-person", "osc_person", None))
                 if getattr(args, attr, unset) not in (unset, False)]
        if given:
            raise UserError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the VMC stream: "
                            f"{'it needs' if len(given) == 1 else 'they need'} --osc [HOST:]PORT")
    if getattr(args, "osc_person", None) is not None and getattr(args, "people", 1) <= 1:
        raise UserError("--osc-person picks which of several people drives the avatar: it needs --people N (N > 1)")


def vmc_options(args: argparse.Namespace) -> dict[str, Any]:
    """OscSink's keyword options from the parsed --vmc-mirror / --osc-rate (checked first:
    check_vmc_arguments)."""
    check_vmc_arguments(args)
    return {"mirror": bool(getattr(args, "vmc_mirror", False)), "rate_hz": getattr(args, "osc_rate", None)}


def parse_target(spec: str) -> tuple[str, int]:
    """'PORT', 'HOST:PORT' or '[IPV6]:PORT' (the bracketed form of URLs, e.g. [::1]:39539)
    -> (host, port); UserError if malformed."""
    host, _, port = spec.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise UserError(f"--osc wants PORT, HOST:PORT or [IPV6]:PORT, got {spec!r}")
    elif ":" in host or "[" in host or "]" in host:
        raise UserError(f"--osc: an IPv6 address goes in brackets, [ADDRESS]:PORT (e.g. [::1]:39539), got {spec!r}")
    try:
        p = int(port)
    except ValueError:
        raise UserError(f"--osc wants PORT, HOST:PORT or [IPV6]:PORT, got {spec!r}") from None
    if not 0 < p < 65536:
        raise UserError(f"--osc port must be 1-65535, got {p}")
    return host or DEFAULT_HOST, p


class OscSink:
    """Sends each PoseFrame as one OSC bundle by UDP. Never blocks (non-blocking socket;
    a full send buffer or an unreachable receiver loses the datagram, counted in `errors`)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, mirror: bool = False,
                 rate_hz: float | None = None, person: int | None = None) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise UserError(f"--osc: cannot resolve {host}: {exc}") from None
        family, _, _, _, addr = infos[0]
        self.address = addr
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.encoder = VmcEncoder(mirror, rate_hz, person)
        self.sent = 0
        self.errors = 0

    def emit(self, pf: PoseFrame) -> None:
        msgs = self.encoder.messages(pf)
        if msgs is None:
            return
        try:
            self._sock.sendto(encode_bundle(msgs), self.address)
            self.sent += 1
        except OSError as exc:  # BlockingIOError, ConnectionRefusedError (ICMP from loopback), ...
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("OSC send to %s failed (%d so far): %s", self.address, self.errors, exc)

    def close(self) -> None:
        self._sock.close()
