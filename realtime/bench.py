"""Frame-rate benchmark: MediaPipe alone vs the whole per-frame product.

The frames of a video (default: the demo clip) are decoded into memory first, so decoding is
not timed. Then, on the same frames, alternately (to spread the noise of a shared machine):
  A  MediaPipe Pose Landmarker alone (VIDEO mode, a fresh tracker each run);
  B  MediaPipe + lifter + metric trajectory + writing an .npz (PoseEstimator + NpzWriter).
Prints the median fps of each over --repeats runs and the ratio B/A (target >= 0.85:
lifting must cost little next to 2D detection). Numbers are measured, never asserted.

--stages prints per-stage backend latencies instead (engines.bench_stages, when installed).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from engines.errors import UserError

DEFAULT_VIDEO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", nargs="?", default=str(DEFAULT_VIDEO), help="video to run on (default assets/demo.mp4)")
    p.add_argument("--model", default="base_gt", help="lifter: shipped name or path (default base_gt)")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--repeats", type=int, default=3, help="runs of each variant, alternating (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the lifter runtime")
    p.add_argument("--stages", nargs=argparse.REMAINDER, default=None,
                   help="per-stage backend latencies (engines.bench_stages); the rest of the line is passed on")


def _run_stages(argv: list[str]) -> int:
    try:
        from engines import bench_stages
    except ImportError:
        print("posestream bench --stages: unavailable in this install (engines.bench_stages is missing)")
        return 2
    return int(bench_stages.main(argv) or 0)


def run(args: argparse.Namespace) -> int:
    if args.stages is not None:
        return _run_stages(list(args.stages))
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    from realtime.detector import PoseDetector
    from realtime.estimator import PoseEstimator, open_lifter
    from realtime.sources import VideoFileSource
    from realtime.writers import open_writer

    with VideoFileSource(args.video, max_frames=args.max_frames) as src:
        frames = list(src)
        fps_src = src.fps
    if not frames:
        raise UserError(f"no decodable frames in {args.video}")
    lifter = open_lifter(args.model, args.backend, args.threads)
    print(f"{len(frames)} frames of {args.video} ({frames[0].image.shape[1]}x{frames[0].image.shape[0]}), "
          f"lifter {args.model} on {lifter.name}, {args.repeats} alternating runs each")

    def mediapipe_only() -> tuple[float, int]:
        with PoseDetector(mode="video") as det:
            t0 = time.perf_counter()
            found = sum(det.detect(f.image, f.timestamp_s) is not None for f in frames)
            return len(frames) / (time.perf_counter() - t0), found

    def full(out: Path) -> tuple[float, int]:
        est = PoseEstimator(detector=PoseDetector(mode="video"), lifter=lifter)
        writer = open_writer(out, fps_src)
        t0 = time.perf_counter()
        found = 0
        for f in frames:
            pose = est.process(f)
            writer.write(pose)
            found += int(pose.valid)
        writer.close()
        dt = time.perf_counter() - t0
        est.detector.close()  # the lifter is shared between runs
        return len(frames) / dt, found

    a, b = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            fa, na = mediapipe_only()
            fb, nb = full(Path(tmp) / f"bench{r}.npz")
            a.append(fa)
            b.append(fb)
            print(f"  run {r + 1}: MediaPipe {fa:.1f} fps ({na} with a person), "
                  f"+ lifter + npz {fb:.1f} fps ({nb} with a person)")
    lifter.close()
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"MediaPipe alone:            {ma:.1f} fps ({1000 / ma:.1f} ms/frame)")
    print(f"MediaPipe + lifter + write: {mb:.1f} fps ({1000 / mb:.1f} ms/frame)")
    print(f"ratio: {mb / ma:.3f} (target >= 0.85)")
    return 0
