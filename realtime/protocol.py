"""The viewer wire protocol, sans I/O: message encoding and decoding, size limits, the token
check and its per-address back-off, per-client token-bucket rate limiting, the connection limit,
the HTTP method check and the thumbnail throttle.

Nothing here touches a socket or a clock: callers pass `now` (monotonic seconds) and send
what the functions return, so every rule is testable without a server. `realtime.server`
is the thin asyncio layer on top. The schema is documented in docs/web_viewer.md.

Server -> client text messages (JSON objects, all carry `"v": 1` and `"type"`):
    hello         skeleton description + server state, sent once a client is authorised.
    frame         one PoseFrame (arrays as nested lists, NaN as null; see `frame_to_message`).
    stats         every second: connected clients, frames published, frames this client missed.
    auth_required the server wants a token: send {"type": "auth", "token": ...}.
    auth_ok       the token was accepted (hello and the current frame follow).
    pong          answer to ping, for clock-offset and round-trip estimation.
    error         {"code": ..., "message": ...}; the connection stays open unless closed.
Server -> client binary messages: a JPEG thumbnail of the 2D overlay, framed by
`encode_thumb` (only to clients that subscribed, at most `Limits.thumb_max_fps` per second).
Client -> server text messages: auth, ping, subscribe (see `ClientSession.on_message`).
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import math
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable
from urllib.parse import urlsplit

import numpy as np

from engines.skeleton import (BONES, FBI_BONES, FBI_STATE_NAMES, JOINT_NAMES, LEFT_JOINTS, NUM_FBI_BONES,
                              NUM_JOINTS, RIGHT_JOINTS)
from realtime.frames import PoseFrame

PROTOCOL_VERSION = 1
RECORDING_FORMAT = "posestream-jsonl-v1"

# WebSocket close codes (RFC 6455).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

# Error codes carried by {"type": "error", "code": ...}.
ERR_BAD_MESSAGE = "bad_message"
ERR_TOO_LARGE = "too_large"
ERR_RATE_LIMITED = "rate_limited"
ERR_AUTH_REQUIRED = "auth_required"
ERR_AUTH_FAILED = "auth_failed"

THUMB_MAGIC = b"PSJ1"
_THUMB_HEADER = struct.Struct("<4sI")  # magic, frame index (uint32, little-endian)


class ProtocolError(ValueError):
    """A message that does not follow the schema. `code` is one of the ERR_* strings."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """Every bound the server enforces. Sizes in bytes, rates per second, times in seconds."""

    max_inbound_bytes: int = 4096        # a client message larger than this closes the connection (1009)
    max_clients: int = 32                # concurrent websocket connections (handshake answered 503 beyond)
    rate_per_s: float = 20.0             # inbound messages per client: token-bucket refill rate
    burst: int = 40                      # ... and bucket capacity
    max_violations: int = 20             # bad / rate-limited messages tolerated before closing (1008)
    max_auth_failures: int = 3           # wrong tokens tolerated before closing (1008)
    auth_timeout_s: float = 60.0         # an unauthenticated connection is closed after this long
    thumb_max_fps: float = 5.0           # JPEG thumbnails forwarded per second, at most
    max_thumb_bytes: int = 256 * 1024    # larger thumbnails are dropped (and logged)
    max_token_chars: int = 256           # longer tokens are rejected without comparing
    send_timeout_s: float = 10.0         # a client that takes longer to accept one message is dropped
    auth_backoff_free: int = 5           # wrong tokens per address before its tokens are slowed down ...
    auth_backoff_base_s: float = 1.0     # ... then each wrong one locks the address this long, doubling ...
    auth_backoff_max_s: float = 60.0     # ... up to this (see AuthBackoff)
    max_path_chars: int = 1024           # longer URL paths are answered 414

    def __post_init__(self) -> None:
        for name in ("max_inbound_bytes", "max_clients", "burst", "max_violations", "max_auth_failures",
                     "max_thumb_bytes", "max_token_chars", "max_path_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1")
        for name in ("rate_per_s", "auth_timeout_s", "thumb_max_fps", "send_timeout_s", "auth_backoff_base_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0")
        if self.auth_backoff_free < 0 or self.auth_backoff_max_s < self.auth_backoff_base_s:
            raise ValueError("Limits.auth_backoff_free must be >= 0 and auth_backoff_max_s >= auth_backoff_base_s")


# ----------------------------------------------------------------------------- encoding helpers

def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _to_list(a: np.ndarray | None, decimals: int) -> list[Any] | None:
    """Round and convert to nested lists; NaN/inf become None (JSON null)."""
    if a is None:
        return None
    r = np.round(np.asarray(a, dtype=np.float64), decimals)
    finite = np.isfinite(r)
    if finite.all():
        return r.tolist()
    if not finite.any():
        return None
    obj = r.astype(object)
    obj[~finite] = None
    return obj.tolist()


def _from_list(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Nested lists with null -> float32 array of `shape` with NaN. None -> all NaN."""
    if value is None:
        return np.full(shape, np.nan, np.float32)
    try:
        arr = np.array(value, dtype=object)
        if arr.shape != shape:
            raise ProtocolError(ERR_BAD_MESSAGE, f"{name}: expected shape {shape}, got {arr.shape}")
        out = np.full(shape, np.nan, np.float32)
        for idx, v in np.ndenumerate(arr):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ProtocolError(ERR_BAD_MESSAGE, f"{name}: non-numeric element {v!r}")
            out[idx] = v
        return out
    except ProtocolError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(ERR_BAD_MESSAGE, f"{name}: {exc}") from None


def hello_message(*, auth_required: bool = False, thumb_max_fps: float = 5.0,
                  source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The skeleton description every viewer needs before drawing a frame."""
    return {
        "v": PROTOCOL_VERSION, "type": "hello", "server": "posestream",
        "joint_names": list(JOINT_NAMES), "bones": [list(b) for b in BONES],
        "left_joints": list(LEFT_JOINTS), "right_joints": list(RIGHT_JOINTS),
        "fbi_bones": [list(b) for b in FBI_BONES], "fbi_state_names": list(FBI_STATE_NAMES),
        "units": "mm", "coords": "camera: x right, y down, z forward",
        "auth_required": bool(auth_required), "thumb_max_fps": float(thumb_max_fps),
        "source": dict(source or {}),
    }


def encode_hello(**kwargs: Any) -> str:
    """`hello_message(**kwargs)` as compact JSON text."""
    return _dumps(hello_message(**kwargs))


MAX_PEOPLE = 64  # `others` entries a frame message may carry


def _person_fields(frame: PoseFrame) -> dict[str, Any]:
    """The per-person part of a frame message (also each entry of `others`)."""
    return {
        "track_id": int(frame.track_id),
        "valid": bool(frame.valid),
        "joints_mm": _to_list(frame.joints_mm, 1),
        "translation_mm": _to_list(frame.translation_mm, 1),
        "joints_2d_px": _to_list(frame.joints_2d_px, 1),
        "confidence": _to_list(frame.confidence, 3),
        "fbi": _to_list(frame.fbi, 3),
    }


def frame_to_message(frame: PoseFrame, pub_ms: float | None = None) -> dict[str, Any]:
    """A PoseFrame as the `frame` message.

    Fields: index (int), timestamp_s (source time, s), then the person fields: track_id (int),
    valid (bool), joints_mm (17x3, mm, 0.1 mm precision), translation_mm (3), joints_2d_px
    (17x2, px), confidence (17, 3 decimals), fbi (14x3 probabilities or null); others (the
    frame's other people, each an object with the same person fields; [] for one person),
    timings_ms ({stage: ms}), image_size ([w, h]), pub_ms (server wall-clock ms since the
    epoch when the frame was published, or null).
    Any array may be null (all unknown) and any element may be null (NaN).
    """
    return {
        "v": PROTOCOL_VERSION, "type": "frame", "index": int(frame.index),
        "timestamp_s": round(float(frame.timestamp_s), 6) if math.isfinite(frame.timestamp_s) else None,
        **_person_fields(frame),
        "others": [_person_fields(o) for o in frame.others[:MAX_PEOPLE]],
        "timings_ms": {str(k): round(float(v), 2) for k, v in frame.timings_ms.items() if math.isfinite(float(v))},
        "image_size": [int(frame.image_size[0]), int(frame.image_size[1])],
        "pub_ms": None if pub_ms is None else round(float(pub_ms), 2),
    }


def encode_frame(frame: PoseFrame, pub_ms: float | None = None) -> str:
    """`frame_to_message` as compact JSON text (about 1.2 kB per valid person)."""
    return _dumps(frame_to_message(frame, pub_ms))


def _person_from(msg: dict[str, Any], index: int, ts: float, size: tuple[int, int],
                 timings: dict[str, float]) -> PoseFrame:
    """One person's PoseFrame from the person fields of a frame message."""
    track_id = msg.get("track_id", 0)
    if isinstance(track_id, bool) or not isinstance(track_id, int):
        raise ProtocolError(ERR_BAD_MESSAGE, "track_id must be an integer")
    fbi = None if msg.get("fbi") is None else _from_list(msg["fbi"], (NUM_FBI_BONES, 3), "fbi")
    conf = msg.get("confidence")
    return PoseFrame(
        index=index, timestamp_s=ts, valid=bool(msg.get("valid")),
        joints_mm=_from_list(msg.get("joints_mm"), (NUM_JOINTS, 3), "joints_mm"),
        translation_mm=_from_list(msg.get("translation_mm"), (3,), "translation_mm"),
        joints_2d_px=_from_list(msg.get("joints_2d_px"), (NUM_JOINTS, 2), "joints_2d_px"),
        confidence=np.nan_to_num(_from_list(conf, (NUM_JOINTS,), "confidence"), nan=0.0) if conf is not None
        else np.zeros(NUM_JOINTS, np.float32),
        image_size=size, fbi=fbi, timings_ms=timings, track_id=track_id,
    )


def message_to_frame(msg: dict[str, Any]) -> PoseFrame:
    """Inverse of `frame_to_message` (values are rounded as on the wire). Raises ProtocolError."""
    if not isinstance(msg, dict) or msg.get("type") != "frame":
        raise ProtocolError(ERR_BAD_MESSAGE, "not a frame message")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(ERR_BAD_MESSAGE, f"unsupported protocol version {msg.get('v')!r}")
    index = msg.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ProtocolError(ERR_BAD_MESSAGE, "index must be an integer")
    ts = msg.get("timestamp_s")
    ts = float("nan") if ts is None else ts
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise ProtocolError(ERR_BAD_MESSAGE, "timestamp_s must be a number")
    size = msg.get("image_size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size)):
        raise ProtocolError(ERR_BAD_MESSAGE, "image_size must be [width, height]")
    timings = msg.get("timings_ms") or {}
    if not isinstance(timings, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in timings.values()):
        raise ProtocolError(ERR_BAD_MESSAGE, "timings_ms must map names to numbers")
    others = msg.get("others") or []
    if not isinstance(others, list) or len(others) > MAX_PEOPLE or not all(isinstance(o, dict) for o in others):
        raise ProtocolError(ERR_BAD_MESSAGE, f"others must be a list of at most {MAX_PEOPLE} person objects")
    timings = {str(k): float(v) for k, v in timings.items()}
    frame = _person_from(msg, index, float(ts), (size[0], size[1]), timings)
    people = tuple(_person_from(o, index, float(ts), (size[0], size[1]), {}) for o in others)
    return replace(frame, others=people) if people else frame


MAX_INT_DIGITS = 18  # integers in messages fit an int64; longer digit strings are refused unparsed


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(ERR_BAD_MESSAGE, f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(ERR_BAD_MESSAGE, f"number out of range: {text[:20]}")
    return value


def _parse_constant(name: str) -> float:
    raise ProtocolError(ERR_BAD_MESSAGE, f"{name} is not a JSON number (unknown values are null)")


def decode_json(text: str | bytes) -> dict[str, Any]:
    """Parse one JSON object that carries `"v": 1` and a string `type`. Raises ProtocolError,
    and only ProtocolError, for any input: numbers must be finite (no NaN/Infinity, no
    overflowing exponent) and integers at most MAX_INT_DIGITS digits, so no later float() or
    int64 conversion can overflow; nesting beyond the interpreter's recursion limit is refused."""
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError(ERR_BAD_MESSAGE, "invalid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ERR_BAD_MESSAGE, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ERR_BAD_MESSAGE, "a message must be a JSON object")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(ERR_BAD_MESSAGE, f"unsupported protocol version {obj.get('v')!r} (expected 1)")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError(ERR_BAD_MESSAGE, "missing message type")
    return obj


def error_message(code: str, message: str) -> str:
    return _dumps({"v": PROTOCOL_VERSION, "type": "error", "code": code, "message": message[:200]})


def simple_message(type_: str, **fields: Any) -> str:
    return _dumps({"v": PROTOCOL_VERSION, "type": type_, **fields})


def stats_message(*, clients: int, published: int, dropped: int, sent: int) -> str:
    """Per-client statistics: `published` = frames published so far (all clients), `sent` =
    frames sent to this client, `dropped` = frames published while it was connected that it
    will never get (it was slower than the stream: latest-only mailboxes)."""
    return simple_message("stats", clients=int(clients), published=int(published), dropped=int(dropped),
                          sent=int(sent))


def encode_thumb(index: int, jpeg: bytes) -> bytes:
    """Binary thumbnail message: b"PSJ1" + uint32 LE frame index + JPEG bytes."""
    return _THUMB_HEADER.pack(THUMB_MAGIC, index & 0xFFFFFFFF) + bytes(jpeg)


def decode_thumb(data: bytes) -> tuple[int, bytes]:
    """Inverse of `encode_thumb`: (frame index, JPEG bytes). Raises ProtocolError."""
    if len(data) < _THUMB_HEADER.size or data[:4] != THUMB_MAGIC:
        raise ProtocolError(ERR_BAD_MESSAGE, "not a thumbnail message")
    _, index = _THUMB_HEADER.unpack_from(data)
    return index, bytes(data[_THUMB_HEADER.size:])


def check_hello(msg: dict[str, Any]) -> dict[str, Any]:
    """`msg` if it is a hello a replay can use (the skeleton of this server, a `source` object);
    raises ProtocolError otherwise."""
    names = msg.get("joint_names", list(JOINT_NAMES))
    if names != list(JOINT_NAMES):
        raise ProtocolError(ERR_BAD_MESSAGE, f"hello: joint_names must be the {NUM_JOINTS} joints of "
                                             f"engines.skeleton, got {str(names)[:80]}")
    if not isinstance(msg.get("source", {}), dict):
        raise ProtocolError(ERR_BAD_MESSAGE, f"hello: source must be an object, got {type(msg['source']).__name__}")
    return msg


def parse_recording(lines: Iterable[str]) -> tuple[dict[str, Any] | None, list[PoseFrame]]:
    """Read the viewer's recording (JSON Lines: a `recording` header, the `hello`, then `frame`
    messages as received). Returns (hello or None, frames). Other message types are skipped.
    Raises ProtocolError naming the bad line."""
    hello: dict[str, Any] | None = None
    frames: list[PoseFrame] = []
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = decode_json(line)
            if obj["type"] == "frame":
                frames.append(message_to_frame(obj))
            elif obj["type"] == "hello":
                hello = check_hello(obj)
            elif obj["type"] == "recording" and obj.get("format") != RECORDING_FORMAT:
                raise ProtocolError(ERR_BAD_MESSAGE, f"unknown recording format {obj.get('format')!r}")
        except ProtocolError as exc:
            raise ProtocolError(exc.code, f"line {lineno}: {exc}") from None
    return hello, frames


# ----------------------------------------------------------------------------- limits and auth

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _hostname(host_header: str) -> str | None:
    """'name:port' / '[v6]:port' -> lower-case name, or None when malformed."""
    try:
        parts = urlsplit("//" + host_header)
        name = parts.hostname
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return None
    return name.lower() if name else None


def host_allowed(host_header: str | None, bind_host: str) -> bool:
    """DNS-rebinding guard: a server bound to a loopback address answers only requests whose
    Host header names a loopback address (so a web page on some domain that resolves to
    127.0.0.1 cannot read the stream). Servers bound elsewhere accept any Host."""
    if bind_host.lower().strip("[]") not in LOOPBACK_HOSTS:
        return True
    if not host_header:
        return False
    return _hostname(host_header) in LOOPBACK_HOSTS


def origin_allowed(origin: str | None, host_header: str | None, allowed: Iterable[str] = ()) -> bool:
    """Cross-site guard for the websocket (browsers send Origin; websockets are not covered by
    the same-origin policy): allowed when there is no Origin (not a browser), when the Origin is
    the page's own server (same host:port as the Host header), or when listed in `allowed`."""
    if origin is None:
        return True
    if origin in allowed:
        return True
    if origin == "null" or not host_header:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()


def check_token(expected: str | None, given: object, max_chars: int = 256) -> bool:
    """True when no token is required, or `given` equals `expected` (constant-time compare)."""
    if expected is None:
        return True
    if not isinstance(given, str) or len(given) > max_chars:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass
class TokenBucket:
    """Token-bucket rate limiter: `rate` tokens per second, at most `capacity` stored.
    Starts full. `allow(now)` spends one token if there is one. `now`: monotonic seconds."""

    rate: float
    capacity: float
    tokens: float = field(default=-1.0)
    last: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.capacity)

    def allow(self, now: float, cost: float = 1.0) -> bool:
        if self.last is not None and now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now if self.last is None else max(self.last, now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Slot:
    """One connection's place under a `ConnectionLimiter`. `release()` gives it back exactly
    once, whichever path the connection ends by (later calls do nothing): the I/O layer calls
    it when the transport is lost, and may call it earlier (a refused upgrade)."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: "ConnectionLimiter") -> None:
        self._limiter: ConnectionLimiter | None = limiter

    @property
    def held(self) -> bool:
        return self._limiter is not None

    def release(self) -> bool:
        """Give the place back; True the first time, False after."""
        limiter, self._limiter = self._limiter, None
        if limiter is None:
            return False
        limiter.active -= 1
        return True


@dataclass
class ConnectionLimiter:
    """Counts open connections; `try_acquire` returns a `Slot`, or None beyond `max_connections`."""

    max_connections: int
    active: int = 0

    def try_acquire(self) -> Slot | None:
        if self.active >= self.max_connections:
            return None
        self.active += 1
        return Slot(self)


@dataclass
class Throttle:
    """At most `max_per_s` events per second: `allow(now)` is True when at least 1/max_per_s
    seconds passed since the last allowed event."""

    max_per_s: float
    last: float | None = None

    def ready(self, now: float) -> bool:
        return self.last is None or now - self.last >= 1.0 / self.max_per_s - 1e-9

    def allow(self, now: float) -> bool:
        if self.ready(now):
            self.last = now
            return True
        return False


HTTP_METHODS = ("GET", "HEAD")  # what the server answers; any other method gets 405
_METHOD_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # an RFC 9110 token (method name)


def refused_method(head: bytes) -> bool | None:
    """Whether a connection whose first bytes are `head` asks for an HTTP method the server does
    not serve (answer 405 before reading the rest: such requests may carry a body, which the
    websocket handshake parser refuses without any answer). None: not enough bytes to tell yet.
    False for GET/HEAD, and for bytes that are not an HTTP request line at all (the handshake
    parser rejects those)."""
    end = min((i for i in (head.find(b" "), head.find(b"\r"), head.find(b"\n")) if i >= 0), default=-1)
    if end < 0:
        return None if len(head) <= 32 else False
    method = head[:end]
    if head[end:end + 1] != b" " or not _METHOD_TOKEN.fullmatch(method):
        return False
    return method.decode("ascii") not in HTTP_METHODS


def address_key(ip: str) -> str:
    """The unit the token back-off counts by: an IPv4 address, or an IPv6 /64 network (one
    host usually owns a whole /64); anything unparsable as itself."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass
class _Failures:
    count: int
    last: float
    locked_until: float


class AuthBackoff:
    """Slows down token guessing per address (sans I/O; `now` in monotonic seconds).

    The first `free` wrong tokens from an address cost nothing (typos). After that, each
    wrong token locks the address for `base_s`, doubling with every further one up to `max_s`:
    while locked, every token from that address is refused *unchecked*, even a right one
    (otherwise a guesser could keep trying at full speed and learn the moment it hits). So an
    address gets at most one verdict per lock period, however many connections it opens.
    A right token clears the address's record; a record quiet for `forget_s` is dropped; at
    most `max_addresses` are tracked (the least recently failed dropped first), so memory is
    bounded whatever the number of addresses."""

    def __init__(self, free: int = 5, base_s: float = 1.0, max_s: float = 60.0, forget_s: float = 900.0,
                 max_addresses: int = 4096) -> None:
        if free < 0 or not 0 < base_s <= max_s or forget_s < max_s or max_addresses < 1:
            raise ValueError("AuthBackoff needs free >= 0, 0 < base_s <= max_s <= forget_s, max_addresses >= 1")
        self.free, self.base_s, self.max_s, self.forget_s = free, base_s, max_s, forget_s
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, address: str, now: float) -> float:
        """0 when a token from `address` may be checked now, else the seconds until it may."""
        f = self._failures.get(address)
        if f is None:
            return 0.0
        if now - f.last >= self.forget_s:
            del self._failures[address]
            return 0.0
        return max(0.0, f.locked_until - now)

    def record(self, address: str, ok: bool, now: float) -> None:
        """The verdict on a token from `address` that `retry_after` allowed to be checked."""
        if ok:
            self._failures.pop(address, None)
            return
        f = self._failures.pop(address, None)
        if f is None or now - f.last >= self.forget_s:
            f = _Failures(0, now, now)
        f.count += 1
        f.last = now
        if f.count > self.free:
            f.locked_until = now + min(self.max_s, self.base_s * 2.0 ** min(f.count - self.free - 1, 60))
        self._failures[address] = f           # most recently failed last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


# ----------------------------------------------------------------------------- one client's state

@dataclass
class Reply:
    """What the I/O layer must do after an inbound message: send `send` (text messages) in order,
    then close with `close` = (code, reason) if set; log `log` if set. `authorised` is True
    when this message authorised the client (the server then sends hello + current frame)."""

    send: list[str] = field(default_factory=list)
    close: tuple[int, str] | None = None
    log: str | None = None
    authorised: bool = False


class ClientSession:
    """The inbound-message rules for one connection (sans I/O).

    token:       the server's token, or None when none is required.
    query_token: the `?token=` of the websocket URL, or None.
    backoff, address: the server's AuthBackoff (shared by all connections) and this client's
                 `address_key`: tokens from a locked address are refused unchecked
                 (`error rate_limited`, "retry in N s") and count as wrong ones.
    Client messages:
        {"v":1, "type":"auth", "token": str}       -> auth_ok | error auth_failed
        {"v":1, "type":"ping", "t": number}        -> pong {"t", "server_ms"}
        {"v":1, "type":"subscribe", "thumbs": bool} -> thumbnails on/off for this client
    Anything else is answered with an error and counts as a violation; so do rate-limited
    messages and messages before authorisation. `max_violations` violations close with 1008.
    """

    def __init__(self, limits: Limits, token: str | None, query_token: str | None, now: float,
                 thumbs: bool = False, backoff: AuthBackoff | None = None, address: str = "") -> None:
        self.limits = limits
        self._token = token
        self.backoff = backoff
        self.address = address
        self.bucket = TokenBucket(limits.rate_per_s, limits.burst)
        self.opened_at = now
        self.violations = 0
        self.auth_failures = 0
        self.thumbs = thumbs
        self._rate_warned = False
        self.authorised = token is None
        self._query_error: str | None = None
        if not self.authorised and query_token is not None:
            ok, wait = self._try_token(query_token, now)
            if ok:
                self.authorised = True
            else:
                self.auth_failures += 1
                self._query_error = (self._locked_error(wait) if wait else
                                     error_message(ERR_AUTH_FAILED, "the token in the URL is wrong"))

    def _try_token(self, given: object, now: float) -> tuple[bool, float]:
        """(accepted, retry_after): when the address is locked by the back-off, the token is not
        checked and retry_after > 0 says for how long."""
        if self.backoff is not None:
            wait = self.backoff.retry_after(self.address, now)
            if wait > 0:
                return False, wait
        ok = check_token(self._token, given, self.limits.max_token_chars)
        if self.backoff is not None:
            self.backoff.record(self.address, ok, now)
        return ok, 0.0

    @staticmethod
    def _locked_error(wait: float) -> str:
        return error_message(ERR_RATE_LIMITED, f"too many wrong tokens from this address: retry in "
                                               f"{math.ceil(wait)} s")

    def opening(self) -> list[str]:
        """Messages to send right after the handshake, before hello (empty when authorised)."""
        if self.authorised:
            return []
        out = []
        if self._query_error is not None:
            out.append(self._query_error)
        out.append(simple_message("auth_required", message="send {\"v\":1,\"type\":\"auth\",\"token\":...}"))
        return out

    def auth_expired(self, now: float) -> bool:
        return not self.authorised and now - self.opened_at >= self.limits.auth_timeout_s

    def _violation(self, reply: Reply, code: str, message: str, send: bool = True) -> Reply:
        self.violations += 1
        reply.log = f"{code}: {message}"
        if self.violations >= self.limits.max_violations:
            reply.close = (CLOSE_POLICY, f"too many bad messages ({code})")
        elif send:
            reply.send.append(error_message(code, message))
        return reply

    def on_message(self, data: str | bytes, now: float, now_ms: float = 0.0) -> Reply:
        """Apply the rules to one inbound message. `now`: monotonic s; `now_ms`: wall-clock ms
        (only echoed in pong)."""
        reply = Reply()
        if len(data) > self.limits.max_inbound_bytes:
            reply.close = (CLOSE_TOO_BIG, f"message over {self.limits.max_inbound_bytes} bytes")
            reply.log = f"{ERR_TOO_LARGE}: {len(data)} bytes"
            return reply
        if not self.bucket.allow(now):
            first = not self._rate_warned
            self._rate_warned = True
            return self._violation(reply, ERR_RATE_LIMITED,
                                   f"more than {self.limits.rate_per_s:g} messages/s", send=first)
        self._rate_warned = False
        if isinstance(data, (bytes, bytearray, memoryview)):
            return self._violation(reply, ERR_BAD_MESSAGE, "binary messages are not accepted")
        try:
            msg = decode_json(data)
        except ProtocolError as exc:
            return self._violation(reply, exc.code, str(exc))
        kind = msg["type"]
        if kind == "auth":
            if self.authorised:
                reply.send.append(simple_message("auth_ok"))
                return reply
            ok, wait = self._try_token(msg.get("token"), now)
            if ok:
                self.authorised = True
                reply.authorised = True
                reply.send.append(simple_message("auth_ok"))
                return reply
            self.auth_failures += 1
            reply.log = (f"{ERR_RATE_LIMITED if wait else ERR_AUTH_FAILED} "
                         f"({self.auth_failures}/{self.limits.max_auth_failures})")
            if self.auth_failures >= self.limits.max_auth_failures:
                reply.close = (CLOSE_POLICY, "authentication failed")
            else:
                reply.send.append(self._locked_error(wait) if wait else error_message(ERR_AUTH_FAILED, "wrong token"))
            return reply
        if not self.authorised:
            return self._violation(reply, ERR_AUTH_REQUIRED, f"{kind!r} before authentication")
        if kind == "ping":
            t = msg.get("t")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                return self._violation(reply, ERR_BAD_MESSAGE, "ping needs a numeric t")
            reply.send.append(simple_message("pong", t=t, server_ms=round(now_ms, 2)))
            return reply
        if kind == "subscribe":
            thumbs = msg.get("thumbs")
            if not isinstance(thumbs, bool):
                return self._violation(reply, ERR_BAD_MESSAGE, "subscribe needs a boolean thumbs")
            self.thumbs = thumbs
            return reply
        return self._violation(reply, ERR_BAD_MESSAGE, f"unknown message type {kind[:40]!r}")
