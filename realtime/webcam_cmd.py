"""Live 3D pose from a webcam (or a video file played as one), with live outputs.

Capture, MediaPipe 2D detection and lifting run in separate threads (realtime/pipeline.py);
the newest camera frame wins, so latency stays low and frames the pipeline cannot keep up
with are dropped (counted in the status line). Outputs, any combination:
    --serve    browser viewer at http://127.0.0.1:8765/ (websocket stream)
    --open3d   Open3D window with the skeleton in camera space
    --out FILE poses as .npz / .json / .csv / .bvh / .openpose (every processed frame, in
               order; repeatable; crash-safe, see `posestream video --help`)
    --osc      OSC/VMC bundles over UDP to 127.0.0.1:39539 (or --osc HOST:PORT)
Examples:
    posestream webcam --serve
    posestream webcam --camera /dev/video2 --open3d --out take1.npz
    posestream webcam --camera assets/demo.mp4 --loop --serve     (a video as a stand-in camera)
With no output option it serves the browser viewer and prints its URL.
Stop with Ctrl-C or SIGTERM (the files are completed; exit status 130 / 143), or by closing
the Open3D window.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from engines.errors import UserError
from realtime.cli_options import (add_model_arguments, add_output_arguments, add_people_argument,
                                  add_smoothing_arguments, positive_float, positive_int)

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera", default="0", metavar="N|PATH",
                        help="webcam index (0, 1, ...), a device path (/dev/video0), or a video file "
                             "played in real time as a stand-in camera (default 0)")
    parser.add_argument("--loop", action="store_true", help="replay a stand-in video file endlessly")
    parser.add_argument("--width", type=positive_int, help="ask the webcam for this frame width")
    parser.add_argument("--height", type=positive_int, help="ask the webcam for this frame height")
    add_model_arguments(parser, live=True)
    add_people_argument(parser)
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many camera frames")
    parser.add_argument("--stall-timeout", type=positive_float, default=10.0, metavar="S",
                        help="give up when no pose came out for S seconds (camera unplugged; default 10)")
    add_smoothing_arguments(parser)
    add_output_arguments(parser)


def open_camera(spec: str, loop: bool = False, max_frames: int | None = None, width: int | None = None,
                height: int | None = None):
    """A live source: a webcam for an index or /dev/video path, else a video file played in
    real time. UserError with a hint when neither exists."""
    from realtime.playback import RealtimePlayback
    from realtime.sources import WebcamSource

    if spec.isdigit() or spec.startswith("/dev/video"):
        device: int | str = int(spec) if spec.isdigit() else spec
        if isinstance(device, str) and not Path(device).exists():
            raise UserError(f"no webcam at {device} (try --camera 0, or --camera VIDEO_FILE to test with a file)")
        try:
            return WebcamSource(device, width=width, height=height, max_frames=max_frames)
        except UserError as exc:
            raise UserError(f"{exc}; is a webcam connected? (--camera VIDEO_FILE plays a file as a camera)") from None
    if not Path(spec).is_file():
        raise UserError(f"--camera {spec!r} is neither a webcam index, a /dev/video path, nor a video file")
    if width or height:  # a file plays at its own size: say so rather than ignore the request
        given = " and ".join(f for f, v in (("--width", width), ("--height", height)) if v)
        log.warning("%s %s for a webcam: the video file %s plays at its own frame size", given,
                    "is" if " and " not in given else "are", spec)
    return RealtimePlayback.from_video(spec, loop=loop, max_frames=max_frames)


class StatusLine:
    """A one-line live status on stderr, rewritten in place at most every 0.5 s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._shown = False

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < STATUS_INTERVAL_S):
            return
        self._last = now
        sys.stderr.write("\r\x1b[2K" + text)
        sys.stderr.flush()
        self._shown = True

    def end(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from realtime.api import Estimator
    from realtime.cli_options import options_from_args
    from realtime.interrupts import DeferredInterrupt
    from realtime.osc_sink import check_vmc_arguments, parse_target
    from realtime.sinks import LiveSinks
    from realtime.thumbnails import ImageTap
    from realtime.pipeline import StageError
    from realtime.writers import OutputError, check_outputs, output_specs, part_path

    check_vmc_arguments(args)  # --vmc-mirror/--osc-rate/--osc-person that would be ignored: before any work
    if args.osc:
        parse_target(args.osc)  # a malformed --osc too
    estimator = Estimator.from_options(options_from_args(args))  # bad --fov/--calib: fail before opening anything
    estimator.options.smoother(live=True)  # bad smoothing settings too
    check_outputs(output_specs(args.out, args), overwrite=not args.no_overwrite)  # and a bad --out
    if not any(getattr(args, k, None) for k in ("out", "serve", "open3d", "osc")):
        args.serve = True  # no output asked for: show the poses in the browser viewer
        print("no output option given: serving the browser viewer (--out FILE saves the poses, "
              "--open3d opens a window)", file=sys.stderr)
    # Ctrl-C / SIGTERM: during start-up, acted upon between steps (nothing written); in the
    # loop at once (it may be waiting for the camera); the files are then completed, which
    # one more signal does not cut short.
    with DeferredInterrupt(message="") as interrupt:
        source = open_camera(args.camera, args.loop, args.max_frames, args.width, args.height)
        tap = ImageTap()
        sinks = poses = None
        try:
            sinks = LiveSinks.from_args(args, source.fps, tap, {"kind": "webcam", "camera": args.camera,
                                                                "fps": source.fps,
                                                                **({"people": args.people} if args.people > 1 else {})})
            interrupt.check()
            poses = estimator.stream(source, live=True, tap=tap, stall_timeout_s=args.stall_timeout)
            interrupt.check()
            if not getattr(args, "quiet", False):
                print(f"lifting: {poses.lifting} on {poses.backend_name}", file=sys.stderr)
            if sinks.url:
                print(f"viewer: {sinks.url}", file=sys.stderr)
            status = StatusLine(not getattr(args, "quiet", False))  # -q (posestream's global option): no status line
            stopped_by = "end of input"
            try:
                interrupt.immediate = True
                interrupt.check()
                frames = iter(poses)  # kept: leaving the loop must not close the stream before `finishing`
                for pf in frames:
                    if not sinks.emit(pf):
                        stopped_by = "window closed"
                        break
                    status.update(poses.stats.status_line())
            except KeyboardInterrupt:
                stopped_by = interrupt.name or "Ctrl-C"
            except StageError as exc:
                status.end()
                log.debug("pipeline failure", exc_info=exc)
                print(f"posestream webcam: error: {exc}", file=sys.stderr)
                return 1
            finally:
                status.end()
            names = sinks.out_names
            try:
                with interrupt.finishing(names):  # closing the models and writing the files
                    poses.close()
                    sinks.finish_file()
            except OutputError as exc:
                print(f"posestream webcam: error: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                journal = part_path(Path(args.out[0])) if args.out else None
                print(f"posestream webcam: aborted while writing {names}"
                      + (f"; every frame is kept in {journal}: `posestream recover {journal}`" if journal else ""),
                      file=sys.stderr)
                raise
            st = poses.stats
            print(f"stopped ({stopped_by}): {st.processed} frames in {st.elapsed_s:.1f} s ({st.fps:.1f} fps), "
                  f"{st.dropped} dropped, latency p50 {st.latency_ms_p50:.1f} ms p95 {st.latency_ms_p95:.1f} ms"
                  + (f"; wrote {sinks.written} frames to {names}" if args.out else ""), file=sys.stderr)
            return int(interrupt.exit_code or 0)
        finally:
            for obj in (sinks, poses, source):
                if obj is not None:
                    obj.close()
