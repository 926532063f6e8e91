"""Shared wiring for the commands that run the threaded pipeline (`posestream webcam`, and
`posestream video` with `--serve` / `--open3d` / `--osc`):

    add_output_arguments(parser)   --out, --serve/--host/--port/--token, --open3d, --osc
    add_smoothing_arguments(parser) --min-cutoff, --beta, --d-cutoff, --bones-window, --no-smooth
                                   (default_on=False: off unless --smooth or a setting is given)
    add_model_arguments(parser)    --model, --backend, --threads, --fov, --calib (realtime.api.Options)
    options_from_args(args)        -> realtime.api.Options
    LiveSinks(...)                 every output of the caller's loop: file, viewer server, Open3D, OSC
    ImageTap                       keeps recent frames' images for viewer thumbnails
    DeferredInterrupt              Ctrl-C stops the caller's loop between frames (file finalised)

All sinks are called from the caller's thread (the one iterating the pipeline): Open3D needs
its window's thread, the file writer its order, and the server's `publish` never blocks.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engines.skeleton import BONES, LEFT_JOINTS, RIGHT_JOINTS
from realtime.api import Options, default_model, pipeline_steps  # noqa: F401 - pipeline_steps: for callers of live
from realtime.filters import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, PoseSmoother, SmootherConfig
from realtime.frames import Frame, PoseFrame

log = logging.getLogger(__name__)

THUMB_WIDTH = 320
THUMB_QUALITY = 70
DEFAULT_BONES_WINDOW = SmootherConfig.bones_window


def add_smoothing_arguments(parser: argparse.ArgumentParser, default_on: bool = True) -> None:
    """The smoothing options. Live commands filter by default (--no-smooth turns it off);
    `default_on=False` (posestream video: files are for accuracy) leaves the output raw unless
    --smooth, or any of the filter's settings, is given. --no-smooth is accepted by both."""
    g = parser.add_argument_group(
        "smoothing (causal One Euro filter + bone-length stabiliser)",
        None if default_on else "OFF by default: files are for accuracy. --smooth turns it on, as does giving "
                                "any of its settings (--min-cutoff, --beta, --bones-window).")

    def default(value: float | int) -> float | int | None:
        return value if default_on else None  # None: "not given", so a setting can imply --smooth

    g.add_argument("--min-cutoff", type=float, default=default(DEFAULT_MIN_CUTOFF),
                   help=f"One Euro cutoff when still, Hz; lower = steadier, more lag (default {DEFAULT_MIN_CUTOFF})")
    g.add_argument("--beta", type=float, default=default(DEFAULT_BETA),
                   help=f"One Euro speed coefficient per mm/s; higher = less lag on fast moves (default {DEFAULT_BETA})")
    g.add_argument("--d-cutoff", type=float, default=default(DEFAULT_D_CUTOFF), help=argparse.SUPPRESS)
    g.add_argument("--bones-window", type=int, default=default(DEFAULT_BONES_WINDOW),
                   help=f"frames in the running median of bone lengths; 0 = off (default {DEFAULT_BONES_WINDOW})")
    if not default_on:
        g.add_argument("--smooth", action="store_true", help="filter the poses as `posestream webcam` does")
    g.add_argument("--no-smooth", action="store_true",
                   help="raw per-frame output (no filtering)" + ("" if default_on else "; the default here"))


def smoothing_options(args: argparse.Namespace) -> tuple[bool, SmootherConfig]:
    """(on, settings) from the smoothing options: off with --no-smooth, or, where smoothing
    is off by default, when neither --smooth nor a setting is given."""
    values = (args.min_cutoff, args.beta, args.d_cutoff, args.bones_window)
    off = args.no_smooth or (not getattr(args, "smooth", True) and all(v is None for v in values))
    defaults = (DEFAULT_MIN_CUTOFF, DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_BONES_WINDOW)
    min_cutoff, beta, d_cutoff, bones_window = (d if v is None else v for v, d in zip(values, defaults))
    return not off, SmootherConfig(min_cutoff, beta, d_cutoff, bones_window=bones_window)


def smoother_from_args(args: argparse.Namespace) -> PoseSmoother | None:
    """The smoother the options ask for, or None (smoothing off)."""
    on, config = smoothing_options(args)
    return Options(smooth=on, smoothing=config).smoother(live=on)


def add_model_arguments(parser: argparse.ArgumentParser, live: bool) -> None:
    """--model, --backend, --threads, --fov, --calib: the realtime.api.Options fields, with
    their defaults (the commands and the Python API share them)."""
    parser.add_argument("--model", default=Options.model,
                        help=f"shipped model name or .onnx/.pt/.engine path (default {default_model(live)}); "
                             f"a model of another kind is refused with the list of those this command runs")
    parser.add_argument("--backend", default=Options.backend,
                        help=f"auto, onnxruntime, tensorrt or torch (default {Options.backend}: TensorRT if usable, "
                             f"else ONNX Runtime)")
    # One thread: a batch-1 lifter takes well under a millisecond, and extra intra-op
    # threads (ONNX Runtime spins them between calls) steal CPU from MediaPipe.
    parser.add_argument("--threads", type=int, default=Options.threads,
                        help=f"CPU threads for the lifter runtime (default {Options.threads})")
    parser.add_argument("--fov", type=float, default=Options.fov,
                        help="horizontal field of view in degrees (default 60)")
    parser.add_argument("--calib", metavar="FILE", default=Options.calib,
                        help='camera intrinsics JSON {"fx", "fy", "cx", "cy"} (pixels); overrides --fov')


def options_from_args(args: argparse.Namespace) -> Any:
    """The realtime.api.Options a command's arguments ask for."""
    on, config = smoothing_options(args)
    return Options(model=args.model, backend=args.backend, fov=args.fov, calib=args.calib, threads=args.threads,
                   num_poses=getattr(args, "num_poses", Options.num_poses),
                   image_mode=getattr(args, "image_mode", Options.image_mode), smooth=on, smoothing=config)


def add_output_arguments(parser: argparse.ArgumentParser, include_out: bool = True) -> None:
    """The live outputs' options. A command with its own --out (posestream video) passes
    include_out=False and gets --serve/--host/--port/--token/--open3d/--osc only."""
    g = parser.add_argument_group("outputs")
    if include_out:
        g.add_argument("--out", metavar="FILE", help="write poses to FILE (.npz, .json, .csv or .bvh)")
    g.add_argument("--serve", action="store_true", help="stream to the browser viewer (websocket + HTTP)")
    g.add_argument("--host", default="127.0.0.1", help="--serve address (default 127.0.0.1, this machine only)")
    g.add_argument("--port", type=int, default=8765, help="--serve port (default 8765; 0 = any free port)")
    g.add_argument("--token", help="--serve: viewers must present this token")
    g.add_argument("--open3d", action="store_true", help="show the skeleton in an Open3D window")
    g.add_argument("--osc", metavar="[HOST:]PORT", nargs="?", const="39539",
                   help="send joints as OSC/VMC bundles over UDP (default 127.0.0.1:39539)")


class DeferredInterrupt:
    """Ctrl-C as a request: inside the `with` block the first SIGINT only sets `requested`
    (the caller's loop stops after the frame in hand, so no write is cut in half and the
    output file is finalised); a second one raises KeyboardInterrupt at once. Works in the
    main thread only; elsewhere (tests calling a command in a thread) it does nothing."""

    def __init__(self, message: str = "stopping after the current frame (Ctrl-C again to abort)") -> None:
        self.message = message
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


class ImageTap:
    """Remembers the images of the last `keep` frames (by index), so the caller can draw a
    thumbnail for a PoseFrame, which carries no pixels. Thread-safe (written by the detect
    thread, read by the caller). `wrap(fn)` returns fn with the tap in front."""

    def __init__(self, keep: int = 8) -> None:
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def put(self, frame: Frame) -> None:
        with self._lock:
            self._images[frame.index] = frame.image
            while len(self._images) > self.keep:
                self._images.popitem(last=False)

    def get(self, index: int) -> np.ndarray | None:
        with self._lock:
            return self._images.get(index)

    def wrap(self, fn: Callable[[Frame], Any]) -> Callable[[Frame], Any]:
        def tapped(frame: Frame) -> Any:
            self.put(frame)
            return fn(frame)
        return tapped


def draw_overlay(image: np.ndarray, pf: PoseFrame, width: int = THUMB_WIDTH) -> np.ndarray:
    """A downscaled RGB copy of `image` with the 2D skeleton drawn (left blue, right red)."""
    import cv2

    h, w = image.shape[:2]
    s = width / w
    small = cv2.resize(image, (width, max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    if pf.valid:
        uv = np.asarray(pf.joints_2d_px, np.float64) * s
        left, right = set(LEFT_JOINTS), set(RIGHT_JOINTS)
        for p, c in BONES:
            if np.isfinite(uv[[p, c]]).all():
                color = (40, 110, 240) if c in left else (230, 50, 40) if c in right else (240, 240, 240)
                cv2.line(small, tuple(int(v) for v in uv[p]), tuple(int(v) for v in uv[c]), color, 2, cv2.LINE_AA)
    return small


def encode_jpeg(rgb: np.ndarray, quality: int = THUMB_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class LiveSinks:
    """The outputs of a run: file writer (`out`), viewer server (`serve`), Open3D (`open3d`),
    OSC/VMC over UDP (`osc`, "[HOST:]PORT").

    `emit(pf)` sends one PoseFrame everywhere and returns False when the user closed the
    Open3D window (the caller then stops). `close()` finalises the file (even after an
    error: everything emitted so far is kept) and stops the server and window. Construction
    opens everything at once, so a bad --out or a busy port fails before the pipeline starts
    (and whatever was already opened is closed again)."""

    def __init__(self, out: str | Path | None = None, fps: float = 30.0, serve: bool = False,
                 host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 open3d: bool = False, tap: ImageTap | None = None, source_info: dict | None = None,
                 osc: str | None = None) -> None:
        self.writer = None
        self.server = None
        self.viewer = None
        self.osc = None
        self.tap = tap
        self.written = 0
        try:
            if serve:
                from realtime.server import PoseServer

                self.server = PoseServer(host=host, port=port, token=token, source=source_info).start()
            if open3d:
                from realtime.open3d_sink import Open3DSink

                self.viewer = Open3DSink()
            if osc:
                from realtime.osc_sink import OscSink, parse_target

                self.osc = OscSink(*parse_target(osc))
            if out:  # last: a busy port or a missing Open3D must not create (or truncate) the file
                from realtime.writers import open_writer

                self.writer = open_writer(out, fps)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def from_args(args: argparse.Namespace, fps: float, tap: ImageTap | None = None,
                  source_info: dict | None = None) -> "LiveSinks":
        return LiveSinks(getattr(args, "out", None), fps, args.serve, args.host, args.port, args.token, args.open3d, tap, source_info,
                         getattr(args, "osc", None))

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    def emit(self, pf: PoseFrame) -> bool:
        if self.writer is not None:
            self.writer.write(pf)
            self.written += 1
        if self.server is not None:
            jpeg = None
            if self.tap is not None and self.server.wants_thumbnail():
                image = self.tap.get(pf.index)
                if image is not None:
                    jpeg = encode_jpeg(draw_overlay(image, pf))
            self.server.publish(pf, jpeg)
        if self.osc is not None:
            self.osc.emit(pf)
        if self.viewer is not None:
            return self.viewer.update(pf)
        return True

    def finish_file(self) -> None:
        """Finalise the output file now (end of input) and keep the viewer outputs open."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()

    def idle(self) -> bool:
        """Keep the outputs responsive while no frame comes (the server needs nothing; the
        Open3D window needs its events polled). False once the user closed that window."""
        if self.viewer is not None:
            return self.viewer.poll()
        return True

    def close(self) -> None:
        """Close everything, each independently (one failing close does not skip the rest);
        the first failure is re-raised at the end (a file that could not be finalised must
        not pass silently)."""
        first: BaseException | None = None
        for name in ("writer", "server", "viewer", "osc"):
            obj = getattr(self, name)
            if obj is None:
                continue
            setattr(self, name, None)
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                log.error("closing the %s failed: %s", name, exc)
                first = first or exc
        if first is not None:
            raise first
