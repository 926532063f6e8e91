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
import contextlib
import logging
import signal
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from realtime.api import Options, default_model, pipeline_steps  # noqa: F401 - pipeline_steps: for callers of live
from realtime.filters import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, PoseSmoother, SmootherConfig
from realtime.frames import Frame, PoseFrame
from realtime.preview import draw_skeleton

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
    """The live outputs' options. include_out adds the file outputs (--out, repeatable,
    --no-overwrite and the formats' options: realtime.writers.add_file_arguments); a command
    that adds those itself (posestream video) passes include_out=False."""
    if include_out:
        from realtime.writers import add_file_arguments

        add_file_arguments(parser)
    g = parser.add_argument_group("outputs")
    g.add_argument("--serve", action="store_true", help="stream to the browser viewer (websocket + HTTP)")
    g.add_argument("--host", default="127.0.0.1", help="--serve address (default 127.0.0.1, this machine only)")
    g.add_argument("--port", type=int, default=8765, help="--serve port (default 8765; 0 = any free port)")
    g.add_argument("--token", help="--serve: viewers must present this token")
    g.add_argument("--open3d", action="store_true", help="show the skeleton in an Open3D window")
    g.add_argument("--osc", metavar="[HOST:]PORT", nargs="?", const="39539",
                   help="send joints as OSC/VMC bundles over UDP (default 127.0.0.1:39539)")


class DeferredInterrupt:
    """Ctrl-C (SIGINT) and SIGTERM as a request to stop, so that the outputs are finalised.

    Inside the `with` block the first signal sets `requested` and `signum`: by default the
    caller acts on it at safe points (`check()` between start-up steps: raising inside
    native code that calls back into Python, as model loading does, would abort the
    process), and its loop stops after the frame in hand (no write is cut in half); with
    immediate=True it raises `Interrupted` at once (a live loop may be blocked waiting for a
    camera). A second signal raises `Interrupted` at once. What follows a raise (the
    clean-up), and `finishing(what)`, the writing of the outputs at the end, one more signal
    does not cut short: it takes two (the journal keeps every frame either way). `exit_code` is 128 + the first signal
    (130 for Ctrl-C, 143 for SIGTERM), None without one. Works in the main thread only;
    elsewhere (tests calling a command in a thread) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, message: str = "stopping after the current frame ({again} again to abort)",
                 immediate: bool = False) -> None:
        self.message = message
        self.immediate = immediate
        self.signum: int | None = None
        self.count = 0
        self._abort_at = 2
        self._finishing: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + int(self.signum)

    @property
    def name(self) -> str:
        """How the user stopped the run: "Ctrl-C" or "SIGTERM" (empty without a signal)."""
        if self.signum is None:
            return ""
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    def _handler(self, signum: int, frame: Any) -> None:
        from engines.errors import Interrupted

        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.count >= self._abort_at or (self.count == 1 and self.immediate):
            self._abort_at = self.count + 2  # the clean-up that follows: one more signal does not cut it short
            raise Interrupted(self.signum)
        if self._finishing is not None:
            print(f"\nstill writing {self._finishing}: {self.name} again to abort (every frame stays in the "
                  f"journal for `posestream recover`)", file=sys.stderr, flush=True)
        elif self.count > 1:
            print(f"\nstill stopping: {self.name} again to abort", file=sys.stderr, flush=True)
        elif self.message:
            print(f"\n{self.name}: {self.message.format(again=self.name)}", file=sys.stderr, flush=True)

    def check(self) -> None:
        """A safe point (between start-up steps): raise `Interrupted` if a signal came."""
        from engines.errors import Interrupted

        if self.signum is not None:
            self._abort_at = max(self._abort_at, self.count + 2)
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def finishing(self, what: str) -> Iterator[None]:
        """While the outputs (`what`) are written: one more signal only prints a note."""
        saved = self._finishing, self._abort_at
        self._finishing, self._abort_at = what, max(self._abort_at, self.count + 2)
        try:
            yield
        finally:
            self._finishing, self._abort_at = saved

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


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
        draw_skeleton(small, np.asarray(pf.joints_2d_px, np.float64) * s)
    return small


def encode_jpeg(rgb: np.ndarray, quality: int = THUMB_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class LiveSinks:
    """The outputs of a run: pose files (`out`: one path or several, realtime.writers.Recording),
    a preview video (`preview`, realtime.preview.PreviewWriter, drawn from the `tap`'s images),
    viewer server (`serve`), Open3D (`open3d`), OSC/VMC over UDP (`osc`, "[HOST:]PORT").

    `emit(pf)` sends one PoseFrame everywhere and returns False when the user closed the
    Open3D window (the caller then stops). `finish_file()` completes the files (end of input);
    `close()` completes them too (even after an error: everything emitted so far is kept) and
    stops the server and window. Construction opens everything at once, so a bad --out or a
    busy port fails before the pipeline starts (and whatever was already opened is closed
    again, leaving existing files as they were)."""

    def __init__(self, out: str | Path | Sequence[Any] | None = None, fps: float = 30.0, serve: bool = False,
                 host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 open3d: bool = False, tap: ImageTap | None = None, source_info: dict | None = None,
                 osc: str | None = None, overwrite: bool = True, preview: Any = None) -> None:
        self.writer = None
        self.preview = preview
        self.server = None
        self.viewer = None
        self.osc = None
        self.tap = tap
        self.written = 0
        self.out_paths: list[Path] = []
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
            if out:  # last: a busy port or a missing Open3D must not create (or replace) a file
                from realtime.writers import Recording

                self.writer = Recording([out] if isinstance(out, (str, Path)) else list(out), fps, source_info,
                                        overwrite=overwrite)
                self.out_paths = [s.path for s in self.writer.specs]
        except BaseException:
            self.close()
            raise

    @staticmethod
    def from_args(args: argparse.Namespace, fps: float, tap: ImageTap | None = None,
                  source_info: dict | None = None, preview: Any = None) -> "LiveSinks":
        from realtime.writers import output_specs

        return LiveSinks(output_specs(getattr(args, "out", None), args), fps, args.serve, args.host, args.port,
                         args.token, args.open3d, tap, source_info, getattr(args, "osc", None),
                         overwrite=not getattr(args, "no_overwrite", False), preview=preview)

    @property
    def out_names(self) -> str:
        """The pose files this run writes, for messages."""
        return ", ".join(str(p) for p in self.out_paths)

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    def emit(self, pf: PoseFrame) -> bool:
        if self.writer is not None:
            self.writer.write(pf)
            self.written += 1
        if self.preview is not None:
            self.preview.write(pf, self.tap.get(pf.index) if self.tap is not None else None)
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
        """Complete the files now (end of input) and keep the viewer outputs open. Each file
        output is completed even if another fails; the first failure is raised at the end."""
        self._close(("writer", "preview"))

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
        self._close(("writer", "preview", "server", "viewer", "osc"))

    def _close(self, names: tuple[str, ...]) -> None:
        first: BaseException | None = None
        for name in names:
            obj = getattr(self, name)
            if obj is None:
                continue
            setattr(self, name, None)
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                from realtime.writers import OutputError

                # an OutputError is the command's to report (one line, with how to recover)
                log.log(logging.DEBUG if isinstance(exc, OutputError) else logging.ERROR,
                        "closing the %s failed: %s", name, exc)
                first = first or exc
        if first is not None:
            raise first
