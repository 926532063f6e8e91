"""3D pose files for many videos at once, on Ray (this machine, or a cluster with --address).

INPUT is video files, folders (their videos, recursively) or glob patterns. Each video gives
DIR/<name>.<format> for every --format, the same file `posestream video` writes for it with
the same options, and a row in DIR/report.csv and DIR/report.json (frames, frames with a
person, fps, wall time, model, error). One Ray task per video; videos longer than
--chunk-frames are split into chunks processed in parallel and stitched. Videos whose
outputs all exist are skipped, so running the same command again resumes a killed run. A
video that cannot be read becomes an error row; the others still complete (exit status 1 if
any failed). Ctrl-C or SIGTERM stops it: videos being written are finished, the others are
left for a rerun; exit 130 / 143. See docs/batch.md.

    posestream batch clips/ --out-dir out/clips --format bvh,npz
    posestream batch 'takes/**/*.mp4' --out-dir /shared/out --address 10.0.0.5:6379
"""
from __future__ import annotations

import argparse
import sys

from realtime.api import Options
from realtime.cli_options import add_model_arguments, add_people_argument, add_smoothing_arguments
from realtime.writers import add_format_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="video files, folders or glob patterns")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the outputs and the report")
    p.add_argument("--format", default="npz", metavar="FMT[,FMT]",
                   help="output formats, comma-separated: npz, bvh, json, csv, openpose (default npz)")
    add_people_argument(p)
    add_model_arguments(p, live=False)
    p.add_argument("--image-mode", action="store_true",
                   help="run MediaPipe's person detector on every frame (IMAGE mode) instead of tracking")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("Ray")
    g.add_argument("--address", default=None,
                   help="Ray cluster address (HOST:PORT, ray://HOST:PORT, 'auto': RAY_ADDRESS or the cluster "
                        "`ray start` made on this machine, or any address ray.init takes, e.g. 'local'); "
                        "default: a Ray started on this machine for this run")
    g.add_argument("--workers", type=int, default=None,
                   help="at most this many tasks at once (default: as many as Ray has CPUs for)")
    g.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs Ray reserves for each task (default 1)")
    g.add_argument("--chunk-frames", type=int, default=None,
                   help="split longer videos into chunks of this many frames; a multiple of the detector's "
                        "restart interval (default: that interval)")
    g.add_argument("--retries", type=int, default=2,
                   help="Ray retries of a task that crashed or raised (default 2; unreadable videos are not retried)")
    add_smoothing_arguments(p, default_on=False)
    add_format_arguments(p.add_argument_group("output formats' options"))


def run(args: argparse.Namespace) -> int:
    from realtime.batch import BatchInterrupted, BatchOptions, format_options, run_batch
    from realtime.cli_options import options_from_args

    opts = BatchOptions(pose=options_from_args(args), formats=tuple(args.format.split(",")),
                        output_options=format_options(args), chunk_frames=args.chunk_frames,
                        cpus_per_task=args.cpus_per_task, retries=args.retries)
    try:
        report = run_batch(args.inputs, args.out_dir, opts, address=args.address, workers=args.workers,
                           progress=not args.no_progress)
    except BatchInterrupted as stopped:  # Ctrl-C / SIGTERM: what was done is on disk and in the report
        for row in stopped.report.failed:
            print(f"failed: {row.input}: {row.error}", file=sys.stderr)
        print(stopped.report.summary(), file=sys.stderr, flush=True)
        return stopped.exit_code
    for row in report.failed:
        print(f"failed: {row.input}: {row.error}")
    print(report.summary(), flush=True)
    return 1 if report.failed else 0
