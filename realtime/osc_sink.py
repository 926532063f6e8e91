"""`--osc [HOST:]PORT`: the skeleton as OSC over UDP, VMC-protocol style, one bundle per frame.

OSC 1.0 is encoded here (no dependency): strings NUL-terminated and padded to 4 bytes,
big-endian int32 'i' / float32 'f', bundles "#bundle\\0" + 64-bit time tag (1 = now) +
size-prefixed elements. `parse_packet` decodes what `encode_*` writes (tests, debugging).

Per frame, one bundle (~1.3 KB, one datagram) holding:
    /VMC/Ext/OK        i  1 when a person is tracked, else 0
    /VMC/Ext/T         f  frame timestamp, seconds
    /VMC/Ext/Tra/Pos   s name, f px py pz, f qx qy qz qw   one per joint when tracked
    /posestream/frame  i index, f timestamp_s, i valid, f capture-to-output latency ms
Tracker positions follow VMC's Unity convention: metres, left-handed, x right, y up,
z forward (away from the camera): (x, -y, z) of our camera coordinates, in camera space
when the trajectory is known, else relative to the pelvis. Orientation is identity (a
17-point skeleton has no joint twist to send). Joint names are engines.skeleton's.
Default target 127.0.0.1:39539 (VMC's usual performer -> marionette port). A receiver that
is not listening is not an error (UDP): datagrams are just lost; send errors are counted.
"""
from __future__ import annotations

import logging
import socket
import struct

import numpy as np

from engines.errors import UserError
from engines.skeleton import JOINT_NAMES
from realtime.frames import PoseFrame

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


def frame_messages(pf: PoseFrame) -> list[bytes]:
    """The messages of one frame's bundle (module docstring)."""
    msgs = [encode_message("/VMC/Ext/OK", 1 if pf.valid else 0), encode_message("/VMC/Ext/T", float(pf.timestamp_s))]
    if pf.valid:
        joints = np.asarray(pf.joints_mm, np.float64)
        tr = np.asarray(pf.translation_mm, np.float64)
        if np.isfinite(tr).all():
            joints = joints - joints[0] + tr
        unity = joints * np.array([1.0, -1.0, 1.0]) / 1000.0
        for name, p in zip(JOINT_NAMES, unity):
            if np.isfinite(p).all():
                msgs.append(encode_message("/VMC/Ext/Tra/Pos", name, *map(float, p), 0.0, 0.0, 0.0, 1.0))
    latency = float(pf.timings_ms.get("latency", float("nan")))
    msgs.append(encode_message("/posestream/frame", int(pf.index), float(pf.timestamp_s), int(pf.valid), latency))
    return msgs


def parse_target(spec: str) -> tuple[str, int]:
    """'PORT' or 'HOST:PORT' -> (host, port); UserError if malformed."""
    host, _, port = spec.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise UserError(f"--osc wants PORT or HOST:PORT, got {spec!r}") from None
    if not 0 < p < 65536:
        raise UserError(f"--osc port must be 1-65535, got {p}")
    return host or DEFAULT_HOST, p


class OscSink:
    """Sends each PoseFrame as one OSC bundle by UDP. Never blocks (non-blocking socket;
    a full send buffer or an unreachable receiver loses the datagram, counted in `errors`)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise UserError(f"--osc: cannot resolve {host}: {exc}") from None
        family, _, _, _, addr = infos[0]
        self.address = addr
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.sent = 0
        self.errors = 0

    def emit(self, pf: PoseFrame) -> None:
        try:
            self._sock.sendto(encode_bundle(frame_messages(pf)), self.address)
            self.sent += 1
        except OSError as exc:  # BlockingIOError, ConnectionRefusedError (ICMP from loopback), ...
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("OSC send to %s failed (%d so far): %s", self.address, self.errors, exc)

    def close(self) -> None:
        self._sock.close()
