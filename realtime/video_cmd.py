"""Estimate 3D pose over a whole video (or image folder) and write it to a file.

MediaPipe Pose (2D) + the lifter on every frame, with a progress bar; the output format
follows OUT's extension: .npz, .json, .csv or .bvh (realtime/writers.py). Frames without a
person, and frames the decoder could not read, are written as empty (NaN, valid=False):
the output has one entry per source frame.

Live outputs while the file is processed (the same as `posestream webcam`'s):
    --serve    browser viewer at http://127.0.0.1:8765/ (page at /, websocket stream at /ws)
    --open3d   Open3D window with the skeleton in camera space
    --osc      OSC/VMC bundles over UDP to 127.0.0.1:39539 (or --osc HOST:PORT)
The file is still processed in file mode: every frame, in order, none dropped (detection
and lifting overlap in threads). --realtime paces the file at its own frame rate, so a
viewer sees it at natural speed (without it, frames go out as fast as they are computed);
--hold keeps serving the last frame after the end of the file, until Ctrl-C. Ctrl-C stops
after the frame in hand and the output file is finalised with every frame processed.
Smoothing is OFF by default (files are for accuracy): --smooth turns it on.

    posestream video assets/demo.mp4 --out out/demo.bvh
    posestream video assets/demo.mp4 --out out/demo.npz --serve --realtime --hold
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from engines.errors import UserError
from realtime.api import DEFAULT_FPS, QUEUE_SIZE, Options, PoseStream
from realtime.live import (DeferredInterrupt, LiveSinks, add_model_arguments, add_output_arguments,
                           add_smoothing_arguments)

# Frames whose images the thumbnail tap keeps: detection can run ahead of the caller by the
# queue after it, the lift thread and the output queue.
TAP_KEEP = 3 * QUEUE_SIZE + 4
HOLD_POLL_S = 0.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="video file or folder of images")
    p.add_argument("--out", required=True, help="output file: .npz, .json, .csv or .bvh")
    add_model_arguments(p, live=False)
    p.add_argument("--num-poses", type=int, default=Options.num_poses,
                   help="people MediaPipe may find; the largest/most central one is tracked (default 1)")
    p.add_argument("--image-mode", action="store_true",
                   help="run MediaPipe's person detector on every frame (IMAGE mode) instead of tracking")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frame rate of an image folder (default {DEFAULT_FPS:g})")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_smoothing_arguments(p, default_on=False)
    add_output_arguments(p, include_out=False)
    g = p.add_argument_group("live playback (with --serve, --open3d or --osc)")
    g.add_argument("--realtime", action="store_true",
                   help="pace the file at its own frame rate, so viewers see it at natural speed "
                        "(default: as fast as it is processed); still every frame, none dropped")
    g.add_argument("--hold", action="store_true",
                   help="after the end of the file keep serving the last frame (and the Open3D "
                        "window) until Ctrl-C; the output file is complete by then")


def run(args: argparse.Namespace) -> int:
    from realtime.api import Estimator
    from realtime.live import ImageTap, options_from_args
    from realtime.writers import WRITERS

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if not any(args.out.lower().endswith(ext) for ext in WRITERS):
        raise UserError(f"unsupported output {args.out!r}: use one of {', '.join(WRITERS)}")
    if args.hold and not (args.serve or args.open3d):
        raise UserError("--hold keeps the viewer open after the end of the file: it needs --serve or --open3d")
    tap = ImageTap(keep=TAP_KEEP) if args.serve else None
    # Live outputs: detection and lifting overlap in threads (file mode: every frame, in
    # order), the sinks fed from this thread as `posestream webcam` does.
    live_outputs = bool(args.serve or args.open3d or args.osc)
    poses = Estimator.from_options(options_from_args(args)).stream(
        args.input, live=False, realtime=args.realtime, max_frames=args.max_frames, fps=args.fps,
        overlap=live_outputs, tap=tap)
    with poses:
        sinks = LiveSinks.from_args(args, poses.fps, tap, {"kind": "video", "file": Path(args.input).name,
                                                           "frames": poses.frame_count,
                                                           "fps": poses.fps, "realtime": bool(args.realtime)})
        try:
            with DeferredInterrupt() as ctrl_c:
                stopped_by = _process(args, poses, sinks, ctrl_c)
                if stopped_by is None and args.hold:
                    held = f"serving the last frame at {sinks.url}" if sinks.url else "showing the last frame"
                    print(f"end of file: {held}; Ctrl-C to stop", file=sys.stderr, flush=True)
                    ctrl_c.message = ""
                    while not ctrl_c.requested and sinks.idle():
                        time.sleep(HOLD_POLL_S)
        finally:
            sinks.close()
    return {None: 0, "window closed": 0, "Ctrl-C": 130}.get(stopped_by, 1)


def _process(args: argparse.Namespace, poses: PoseStream, sinks: LiveSinks, ctrl_c: DeferredInterrupt) -> str | None:
    """Every pose of `poses` into `sinks`; the output file is finalised on the way out.
    Returns None at the end of the file, else why it stopped: "Ctrl-C", "window closed" or
    "error" (a failed stage, reported here)."""
    from tqdm import tqdm

    from realtime.pipeline import StageError

    if sinks.url:
        print(f"viewer: {sinks.url}", file=sys.stderr, flush=True)
    n_written = n_valid = 0
    stopped_by = failure = None
    t0 = time.perf_counter()
    bar = tqdm(total=poses.frame_count, unit="frame", disable=args.no_progress or getattr(args, "quiet", False),
               dynamic_ncols=True)
    try:
        for pose in poses:
            alive = sinks.emit(pose)
            n_written += 1
            n_valid += int(pose.valid)
            bar.update(1)
            if ctrl_c.requested or not alive:
                stopped_by = "Ctrl-C" if ctrl_c.requested else "window closed"
                break
    except StageError as exc:
        logging.getLogger(__name__).debug("pipeline failure", exc_info=exc)
        failure, stopped_by = exc, "error"
    finally:
        poses.close()
        bar.close()
        sinks.finish_file()
    dt = time.perf_counter() - t0
    print(f"{'stopped (' + stopped_by + '): ' if stopped_by else ''}"
          f"wrote {args.out}: {n_written} frames ({n_valid} with a person, {len(poses.skipped)} undecodable) "
          f"in {dt:.1f} s = {n_written / max(dt, 1e-9):.1f} frames/s, lifter on {poses.backend_name}", flush=True)
    if failure is not None:
        print(f"posestream video: error: {failure}", file=sys.stderr)
    return stopped_by
