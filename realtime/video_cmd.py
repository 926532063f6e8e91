"""Estimate 3D pose over a whole video (or image folder) and write it to a file.

MediaPipe Pose (2D) + the lifter on every frame, with a progress bar; the output format
follows OUT's extension: .npz, .json, .csv or .bvh (realtime/writers.py). Frames without a
person, and frames the decoder could not read, are written as empty (NaN, valid=False):
the output has one entry per source frame.

    posestream video assets/demo.mp4 --out out/demo.bvh
"""
from __future__ import annotations

import argparse
import logging
import time

from engines.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="video file or folder of images")
    p.add_argument("--out", required=True, help="output file: .npz, .json, .csv or .bvh")
    p.add_argument("--model", default="base_gt", help="lifter: shipped name or .pt/.onnx/.engine path (default base_gt)")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    p.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees (default 60)")
    p.add_argument("--calib", default=None, help="camera calibration JSON {fx, fy, cx, cy[, width, height]}")
    p.add_argument("--num-poses", type=int, default=1,
                   help="people MediaPipe may find; the largest/most central one is tracked (default 1)")
    p.add_argument("--image-mode", action="store_true",
                   help="run MediaPipe's person detector on every frame (IMAGE mode) instead of tracking")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of an image folder (default 30)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    # One thread: a batch-1 lifter takes well under a millisecond, and extra intra-op
    # threads (ONNX Runtime spins them between calls) steal CPU from MediaPipe.
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the lifter runtime (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from realtime.estimator import PoseEstimator
    from realtime.frames import PoseFrame
    from realtime.sources import open_source
    from realtime.writers import WRITERS, open_writer

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if not any(args.out.lower().endswith(ext) for ext in WRITERS):
        raise UserError(f"unsupported output {args.out!r}: use one of {', '.join(WRITERS)}")
    source = open_source(args.input, max_frames=args.max_frames, fps=args.fps)
    with source, PoseEstimator(args.model, args.backend, args.fov, args.calib,
                               detector_mode="image" if args.image_mode else "video",
                               num_poses=args.num_poses, threads=args.threads) as est:
        writer = open_writer(args.out, source.fps)
        total = getattr(source, "frame_count", None)
        n_written = n_valid = 0
        t0 = time.perf_counter()
        bar = tqdm(total=total, unit="frame", disable=args.no_progress, dynamic_ncols=True)
        size = getattr(source, "size", (0, 0))
        try:
            for frame in source:
                # Frames the decoder skipped keep their place in the output, empty.
                while n_written < frame.index:
                    writer.write(PoseFrame.empty(n_written, n_written / source.fps, size))
                    n_written += 1
                    bar.update(1)
                pose = est.process(frame)
                size = pose.image_size
                writer.write(pose)
                n_written += 1
                n_valid += int(pose.valid)
                bar.update(1)
            for i in source.skipped:  # trailing undecodable frames
                if i >= n_written:
                    writer.write(PoseFrame.empty(i, i / source.fps, size))
                    n_written += 1
                    bar.update(1)
        finally:
            bar.close()
            writer.close()
        dt = time.perf_counter() - t0
    print(f"wrote {args.out}: {n_written} frames ({n_valid} with a person, {len(source.skipped)} undecodable) "
          f"in {dt:.1f} s = {n_written / max(dt, 1e-9):.1f} frames/s, lifter on {est.backend_name}")
    return 0
