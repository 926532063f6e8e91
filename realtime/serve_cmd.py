"""Replay a recorded pose file to browser viewers at its frame rate.

FILE is a pose file written by `posestream video --out X.npz` (or the live recorder), or a
viewer recording (`.jsonl`, saved by the viewer's Record button). Open the printed URL in a
browser. The server listens on 127.0.0.1 unless --host says otherwise; on a network, give
viewers a token: in $POSESTREAM_TOKEN or a file (--token-file) rather than --token, which
other users can read in the process list.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from engines.errors import UserError
from realtime.frames import PoseFrame

DEFAULT_FPS = 30.0
MAX_GAP_S = 1.0  # a longer pause between recorded frames is replayed as this long


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from realtime.cli_options import host_name, port_number, positive_float

    parser.add_argument("file", type=Path, help="pose file (.npz) or viewer recording (.jsonl)")
    parser.add_argument("--host", type=host_name, default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8765,
                        help="port for the page and the stream (default 8765)")
    from realtime.server import add_token_arguments
    add_token_arguments(parser, "access token viewers must present")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="another web page origin allowed to open the stream, e.g. http://host:9000 "
                             "(repeatable; the viewer's own page is always allowed)")
    parser.add_argument("--fps", type=positive_float, default=None,
                        help="replay rate (default: the file's timestamps / recorded fps)")
    parser.add_argument("--loop", action="store_true", help="replay forever")
    parser.add_argument("--wait", action="store_true",
                        help="start playing when the first viewer is connected (and authorised)")
    parser.add_argument("--duration", type=positive_float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C; after the last "
                             "frame, without --loop, viewers keep seeing it)")


def _is_pose_json(path: Path) -> bool:
    """Whether `path` is a .json pose file written by posestream (realtime.writers.render_json:
    its first line opens {"meta": {"format": "posestream-...-json-v1", ...), not a recording."""
    from realtime.writers import JSON_FORMAT, JSON_PEOPLE_FORMAT

    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return any(head.startswith(b'{"meta": {"format": "' + f.encode() + b'"') for f in (JSON_FORMAT, JSON_PEOPLE_FORMAT))


def load_frames(path: Path) -> tuple[list[PoseFrame], float | None]:
    """Frames of FILE and its nominal fps (None when the file does not say)."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        from realtime.writers import NPZ_READ_ERRORS, read_pose_npz
        frames = read_pose_npz(path)
        fps = None
        try:
            with np.load(path, allow_pickle=False) as d:
                fps = float(d["fps"]) if "fps" in d else None
        except (*NPZ_READ_ERRORS, TypeError):  # an unusable fps is as good as none: timestamps or 30 fps
            fps = None
        fps = fps if fps is not None and math.isfinite(fps) and fps > 0 else None
    elif suffix in (".jsonl", ".ndjson", ".json"):
        from realtime.protocol import ProtocolError, parse_recording
        if _is_pose_json(path):
            raise UserError(f"{path} is a posestream pose file (.json output), not a viewer recording: serve replays "
                            f"a pose file as .npz (posestream video IN --out clip.npz) or a viewer recording (.jsonl)")
        try:
            with open(path, encoding="utf-8") as fh:
                hello, frames = parse_recording(fh)
        except (ProtocolError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not a posestream viewer recording: {exc}") from None
        src_fps = (hello or {}).get("source", {}).get("fps")   # parse_recording checked source is an object
        fps = float(src_fps) if isinstance(src_fps, (int, float)) and not isinstance(src_fps, bool) and src_fps > 0 \
            else None
    else:
        raise UserError(f"unsupported file type {path.suffix!r}: expected .npz or .jsonl")
    if not frames:
        raise UserError(f"{path} holds no frames")
    return frames, fps


def schedule(frames: list[PoseFrame], fps: float | None, nominal_fps: float | None) -> tuple[np.ndarray, float]:
    """Replay times (s from the start) of each frame, and the rate they amount to.

    With `fps`, frames are evenly spaced. Otherwise the recorded timestamps are followed
    (gaps capped at MAX_GAP_S) when they increase; else `nominal_fps` or 30 fps."""
    n = len(frames)
    if fps is not None:
        if not (fps > 0 and math.isfinite(fps)):
            raise UserError("--fps must be a positive number")
        return np.arange(n) / fps, fps
    ts = np.array([f.timestamp_s for f in frames], np.float64)
    if n > 1 and np.isfinite(ts).all() and (np.diff(ts) > 0).all():
        gaps = np.minimum(np.diff(ts), MAX_GAP_S)
        return np.concatenate([[0.0], np.cumsum(gaps)]), float(1.0 / np.median(gaps))
    rate = nominal_fps or DEFAULT_FPS
    return np.arange(n) / rate, rate


def run(args: argparse.Namespace) -> int:
    from realtime.server import PoseServer, token_from_args

    token = token_from_args(args)
    frames, nominal = load_frames(args.file)
    times, rate = schedule(frames, args.fps, nominal)
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be positive")
    period = float(times[-1]) + 1.0 / rate
    server = PoseServer(host=args.host, port=args.port, token=token,
                        source={"kind": "replay", "file": args.file.name, "frames": len(frames), "fps": round(rate, 3)},
                        allowed_origins=tuple(args.allow_origin))
    with server:
        print(f"serving {args.file.name} ({len(frames)} frames at {rate:.1f} fps) at {server.url}"
              f"{' - token required' if token else ''}", flush=True)
        started = time.monotonic()
        deadline = started + args.duration if args.duration is not None else math.inf
        if args.wait:
            print("waiting for a viewer...", flush=True)
            while not any(c["live"] for c in server.stats()["per_client"]) and time.monotonic() < deadline:
                time.sleep(0.05)
        t0 = time.monotonic()
        sent = 0
        lap = 0
        while time.monotonic() < deadline:
            for i, frame in enumerate(frames):
                due = t0 + lap * period + times[i]
                now = time.monotonic()
                if due > deadline:
                    break
                if due > now:
                    time.sleep(due - now)
                server.publish(frame)
                sent += 1
            else:
                if args.loop:
                    lap += 1
                    continue
            break
        played = time.monotonic() - t0
        print(f"published {sent} frames in {played:.1f} s ({sent / max(played, 1e-9):.1f} fps)", flush=True)
        if time.monotonic() < deadline:
            print("end of file: serving the last frame" + ("; Ctrl-C to stop" if deadline == math.inf else ""),
                  flush=True)
            while time.monotonic() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return 0
