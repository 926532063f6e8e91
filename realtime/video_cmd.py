"""Estimate 3D pose over a whole video (or image folder) and write it to files.

MediaPipe Pose (2D) on every frame, then the lifting of the sequence of detections
(realtime/sequence.py: a video uses the centred temporal model, each frame seeing the 2D of
the frames around it; --realtime the causal one; a folder of images is a set of unrelated
stills, each searched afresh by MediaPipe and lifted by the single-frame model, unless
--sequence; --model overrides), with a progress bar. In a video, a frame where MediaPipe's
tracker loses the person is searched again at once. The root trajectory is smoothed over a
second of context on each side (causal with --realtime; --raw-root: per frame). Each --out (repeat it
for several outputs, written in one pass) picks its format by extension: .npz, .json,
.csv, .bvh, or a .openpose folder (realtime/writers.py, docs/outputs.md); --landmarks adds
MediaPipe's 33 landmarks to .npz/.json. --preview VIDEO also writes the input with the
skeleton drawn, a 3D side-view inset and a progress bar (realtime/preview.py). Frames
without a person, and frames the decoder could not read, are written as empty (NaN,
valid=False): the outputs have one entry per source frame.

Files are safe to interrupt: every output is checked before anything is loaded; every frame
goes to a journal (OUT.part, after the first --out) as it is computed, and the outputs are
written from it at the end under temporary names, then renamed, so an existing file is
only ever replaced by a complete one (with a note; --no-overwrite refuses). Ctrl-C or
SIGTERM stops the reading of the input, then lifts and writes the frames already read (a
centred model holds seconds of them back, flushed as at the end of the file) and completes the
files (exit 130 / 143; a second signal stops at once, the files still completed); a run that
was killed outright leaves the journal: `posestream recover OUT.part`, or the next run with
the same --out recovers it as OUT.recovered.EXT.

Live outputs while the file is processed (the same as `posestream webcam`'s):
    --serve    browser viewer at http://127.0.0.1:8765/ (page at /, websocket stream at /ws)
    --open3d   Open3D window with the skeleton in camera space
    --osc      OSC/VMC bundles over UDP to 127.0.0.1:39539 (or --osc HOST:PORT)
The file is still processed in file mode: every frame, in order, none dropped (detection
and lifting overlap in threads). --realtime paces the file at its own frame rate, so a
viewer sees it at natural speed (without it, frames go out as fast as they are computed);
--hold keeps serving the last frame after the end of the file, until Ctrl-C.
Smoothing is OFF by default (files are for accuracy): --smooth turns it on.

    posestream video assets/demo.mp4 --out out/demo.bvh --out out/demo.npz
    posestream video assets/demo.mp4 --out out/demo.npz --preview out/demo_preview.mp4
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
from realtime.api import DEFAULT_FPS, Options, PoseStream
from realtime.cli_options import (add_model_arguments, add_output_arguments, add_people_argument,
                                  add_smoothing_arguments, positive_float, positive_int)
from realtime.interrupts import DeferredInterrupt
from realtime.sinks import LiveSinks
from realtime.preview import add_preview_arguments
from realtime.writers import add_file_arguments

HOLD_POLL_S = 0.05
STOP_MESSAGE = "reading no further frame, finishing those already read ({again} again to abort)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="video file or folder of images")
    add_model_arguments(p, live=False)
    add_people_argument(p)
    p.add_argument("--num-poses", type=int, default=Options.num_poses,
                   help="people MediaPipe may find; the largest/most central one is tracked (default 1)")
    p.add_argument("--image-mode", action="store_true",
                   help="run MediaPipe's person detector on every frame (IMAGE mode) instead of tracking")
    p.add_argument("--sequence", action="store_true",
                   help="the folder's images are consecutive frames of one video (default: unrelated stills, "
                        "each searched afresh and lifted alone)")
    p.add_argument("--fps", type=positive_float, default=DEFAULT_FPS, help=f"frame rate of an image folder (default {DEFAULT_FPS:g})")
    p.add_argument("--raw-root", action="store_true",
                   help="each frame's own root solve, without the trajectory filter (to compare)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_smoothing_arguments(p, default_on=False)
    add_file_arguments(p)
    add_preview_arguments(p)
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
    from realtime.cli_options import options_from_args
    from realtime.thumbnails import ImageTap
    from realtime.preview import PreviewWriter, check_preview
    from realtime.writers import check_not_input, check_outputs, output_specs

    if not args.out and not args.preview:
        raise UserError("nothing to write: give --out FILE (repeatable) and/or --preview VIDEO")
    # Every output is checked before anything is loaded or processed.
    specs = output_specs(args.out, args)
    check_not_input(args.input, [s.path for s in specs] + ([Path(args.preview)] if args.preview else []), args.people)
    check_outputs(specs, overwrite=not args.no_overwrite, people=args.people)
    if args.preview:
        note = check_preview(Path(args.preview), overwrite=not args.no_overwrite)
        if note and not getattr(args, "quiet", False):
            print(note, file=sys.stderr, flush=True)
    if args.hold and not (args.serve or args.open3d):
        raise UserError("--hold keeps the viewer open after the end of the file: it needs --serve or --open3d")
    from realtime.osc_sink import check_vmc_arguments, parse_target

    check_vmc_arguments(args)  # VMC options that would be ignored, and a malformed --osc: before any work
    if args.osc:
        parse_target(args.osc)
    # the images the preview and the thumbnails draw on; the stream sizes it to the frames its
    # lifter holds back (a centred model answers a frame seconds after it was read)
    tap = ImageTap() if (args.serve or args.preview) else None
    # Live outputs: detection and lifting overlap in threads (file mode: every frame, in
    # order), the sinks fed from this thread as `posestream webcam` does.
    live_outputs = bool(args.serve or args.open3d or args.osc)
    estimator = Estimator.from_options(options_from_args(args))
    # Ctrl-C / SIGTERM: during start-up, acted upon between steps (nothing written); then the
    # input stops, the frames already read are finished and the files are completed.
    with DeferredInterrupt(message="") as ctrl_c:
        poses = estimator.stream(args.input, live=False, realtime=args.realtime, max_frames=args.max_frames,
                                 fps=args.fps, overlap=live_outputs, tap=tap)
        with poses:
            # from here a signal stops the reading; the frames already read are still lifted
            # (the centred model holds seconds of them back) and written
            ctrl_c.on_request = poses.stop_input
            ctrl_c.check()
            preview = (PreviewWriter(Path(args.preview), poses.fps, poses.frame_count,
                                     overwrite=not args.no_overwrite) if args.preview else None)
            sinks = LiveSinks.from_args(args, poses.fps, tap, {"kind": "video", "file": Path(args.input).name,
                                                               "frames": poses.frame_count, "fps": poses.fps,
                                                               "realtime": bool(args.realtime),
                                                               **({"people": args.people} if args.people > 1 else {})},
                                        preview=preview)
            try:
                ctrl_c.check()
                ctrl_c.message = STOP_MESSAGE
                rc, ended = _process(args, poses, sinks, ctrl_c)
                if ended and args.hold:
                    held = f"serving the last frame at {sinks.url}" if sinks.url else "showing the last frame"
                    print(f"end of file: {held}; Ctrl-C to stop", file=sys.stderr, flush=True)
                    ctrl_c.message = ""
                    while not ctrl_c.requested and sinks.idle():
                        time.sleep(HOLD_POLL_S)
            finally:
                sinks.close()
    return rc


def _process(args: argparse.Namespace, poses: PoseStream, sinks: LiveSinks,
             ctrl_c: DeferredInterrupt) -> tuple[int, bool]:
    """Every pose of `poses` into `sinks`; the files are completed on the way out. Returns
    the exit code (0; 130/143 after Ctrl-C/SIGTERM; 1 after a failed stage or output,
    reported here) and whether the whole file was processed."""
    from tqdm import tqdm

    from realtime.pipeline import StageError
    from realtime.writers import OutputError, part_path

    if sinks.url:
        print(f"viewer: {sinks.url}", file=sys.stderr, flush=True)
    n_written = n_valid = 0
    stopped_by = None
    failures: list[str] = []
    t0 = time.perf_counter()
    bar = tqdm(total=poses.frame_count, unit="frame", disable=args.no_progress or getattr(args, "quiet", False),
               dynamic_ncols=True)
    # Keep the iterator: leaving the loop must not close the stream (models, threads) before
    # the `finishing` block below, which shields that from a further Ctrl-C.
    frames = iter(poses)
    try:
        for pose in frames:
            alive = sinks.emit(pose)
            n_written += 1
            n_valid += int(pose.valid)
            bar.update(1)
            if ctrl_c.requested:  # the input stopped (stop_input): the frames read still come out
                stopped_by = ctrl_c.name
            elif not alive:
                stopped_by = "window closed"
                break
    except StageError as exc:
        logging.getLogger(__name__).debug("pipeline failure", exc_info=exc)
        failures.append(str(exc))
        stopped_by = "error"
    except OSError as exc:  # the journal could not be written (disk full, ...)
        failures.append(f"cannot write the journal: {exc.strerror or exc}")
        stopped_by = "error"
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: stop now, and still write the files
        stopped_by = ctrl_c.name or "Ctrl-C"
    except BaseException:
        poses.close()
        raise
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    names = ", ".join(filter(None, [sinks.out_names, str(args.preview or "")]))
    try:
        with ctrl_c.finishing(names):  # closing the models and writing the files
            poses.close()
            sinks.finish_file()
    except OutputError as exc:
        failures.append(str(exc))
    except KeyboardInterrupt:
        journal = part_path(Path(args.out[0])) if args.out else None
        print(f"posestream video: aborted while writing {names}"
              + (f"; every frame is kept in {journal}: `posestream recover {journal}`" if journal else ""),
              file=sys.stderr, flush=True)
        raise
    if n_written and not failures:  # the files on disk: several people write one .bvh per person
        from realtime.writers import written_files

        on_disk = [str(f) for p in sinks.out_paths for f in written_files(p, args.people)]
        names = ", ".join(filter(None, [", ".join(on_disk) or sinks.out_names, str(args.preview or "")]))
    what = f"wrote {names}" if n_written and not failures else "processed"
    print(f"{'stopped (' + stopped_by + '): ' if stopped_by else ''}"
          f"{what}: {n_written} frames ({n_valid} with a person, {len(poses.skipped)} undecodable) "
          f"in {dt:.1f} s = {n_written / max(dt, 1e-9):.1f} frames/s, {poses.lifting} on {poses.backend_name}",
          flush=True)
    for failure in failures:
        print(f"posestream video: error: {failure}", file=sys.stderr, flush=True)
    if failures:
        return 1, False
    if ctrl_c.requested:
        return int(ctrl_c.exit_code or 130), False
    return 0, stopped_by is None
