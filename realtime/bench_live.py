"""Live-pipeline benchmark: threaded pipeline throughput vs MediaPipe alone, and latency.

The frames of a video (default: the demo clip) are decoded into memory first and brought to
640x480 (centre crop to 4:3, then resize), so decoding is not timed and every variant sees
the same pixels. Then, alternating runs (to spread the noise of a shared machine):
  A     MediaPipe Pose Landmarker alone, one frame after another (VIDEO mode, fresh tracker).
  B     the threaded pipeline (realtime/pipeline.py: capture | detect | lift + trajectory +
        smoothing) in file mode, every frame in order, as fast as it goes: its throughput
        over A's is the "pipeline costs nothing" ratio (target >= 0.85 with the causal
        temporal model, the webcam's default).
  LIVE  the same pipeline fed like a camera (--camera-fps, default 30, newest frame wins):
        capture-to-output latency p50/p95 (target p95 <= 50 ms), output rate, dropped frames.
  STAND-IN  the pipeline machinery alone, once: the live run with a detector that sleeps
        --standin-ms (default 25, MediaPipe's idle-core time) and a trivial lift: its
        latency minus the stage times is what the threads and queues themselves cost.
Medians over --repeats runs are printed as a table; nothing is asserted. With other
processes on the CPU (training!) the absolute numbers drop; the ratio A/B is what compares.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from engines.checkpoint import default_live_model
from engines.errors import UserError

DEFAULT_VIDEO = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
BENCH_SIZE = (640, 480)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Range-checked at parsing (usage error, exit 2): a zero or negative camera rate would
    # divide by zero or run time backwards, a negative stand-in time fails only after the
    # whole benchmark.
    from realtime.cli_options import non_negative_float, non_negative_int, positive_float, positive_int

    p.add_argument("video", nargs="?", default=str(DEFAULT_VIDEO), help="video to run on (default assets/demo.mp4)")
    p.add_argument("--model", default=default_live_model(),
                   help=f"shipped model name or .pt/.onnx/.engine path: a causal temporal lifter, the Final model "
                        f"(generator + refiner) or a Base lifter (default {default_live_model()}, as the webcam)")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    p.add_argument("--frames", type=positive_int, default=150, help="frames per run (the clip is looped; default 150)")
    p.add_argument("--repeats", type=positive_int, default=3, help="runs of each variant, alternating (default 3)")
    p.add_argument("--camera-fps", type=positive_float, default=30.0, help="frame rate of the simulated camera (default 30)")
    p.add_argument("--threads", type=non_negative_int, default=1,
                   help="CPU threads for the lifter runtime (default 1; 0 = the runtime default)")
    p.add_argument("--standin-ms", type=non_negative_float, default=25.0,
                   help="detection time of the stand-in detector run (default 25 ms)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def to_bench_size(image: np.ndarray, size: tuple[int, int] = BENCH_SIZE) -> np.ndarray:
    """Centre-crop an RGB image to the aspect ratio of `size` (w, h), then resize to it."""
    import cv2

    h, w = image.shape[:2]
    tw, th = size
    if w * th > h * tw:  # too wide
        cw = int(round(h * tw / th))
        image = image[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = int(round(w * th / tw))
        image = image[(h - ch) // 2:(h - ch) // 2 + ch]
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def load_frames(video: str | Path, n: int) -> list[np.ndarray]:
    """n images (640x480 RGB) from the video, looping it if it is shorter."""
    from realtime.sources import VideoFileSource

    with VideoFileSource(video) as src:
        images = [to_bench_size(f.image) for f in src]
    if not images:
        raise UserError(f"no decodable frames in {video}")
    return [images[i % len(images)] for i in range(n)]


class _Clock:
    """Strictly increasing frame timestamps across runs (one MediaPipe tracker per run, but
    the trajectory/smoothing state is per run too: timestamps just never repeat)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.n = 0

    def frames(self, images: list[np.ndarray]) -> Iterator:
        from realtime.frames import Frame

        for i, img in enumerate(images):
            yield Frame(i, self.n / self.fps, img)
            self.n += 1


def _percentiles(lat: list[float]) -> tuple[float, float]:
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


def run(args: argparse.Namespace) -> int:
    from realtime.cli_options import check_report_paths, write_report

    if args.repeats < 1 or args.frames < 10:
        raise UserError("--repeats must be >= 1 and --frames >= 10")
    check_report_paths(args, "json")
    from realtime.detector import PoseDetector
    from realtime.estimator import PoseEstimator, open_lifter
    from realtime.filters import PoseSmoother
    from realtime.api import pipeline_steps
    from realtime.history import TemporalSpec
    from realtime.pipeline import Pipeline, Stage
    from realtime.playback import RealtimePlayback

    images = load_frames(args.video, args.frames)
    lifter = open_lifter(args.model, args.backend, args.threads)
    clock = _Clock(args.camera_fps)
    spec = TemporalSpec.from_metadata(getattr(lifter, "metadata", {}))
    kind = "single-frame" if spec is None else f"{'causal' if spec.causal else 'centred'} temporal, {spec.window} frames"
    print(f"{len(images)} frames of {args.video} at {BENCH_SIZE[0]}x{BENCH_SIZE[1]}, lifter {args.model} ({kind}) on "
          f"{lifter.name}, {args.repeats} alternating runs each; simulated camera {args.camera_fps:g} fps")

    def mediapipe_only(subset: list[np.ndarray] = images) -> float:
        with PoseDetector(mode="video") as det:
            frames = list(clock.frames(subset))
            t0 = time.perf_counter()
            for f in frames:
                det.detect(f.image, f.timestamp_s)
            return len(frames) / (time.perf_counter() - t0)

    def pipeline(live: bool) -> dict:
        est = PoseEstimator(detector=PoseDetector(mode="video"), lifter=lifter)
        try:
            if live:
                source = RealtimePlayback(lambda: clock.frames(images), args.camera_fps)
            else:
                source = clock.frames(images)
            p = Pipeline(source, pipeline_steps(est, PoseSmoother()), live=live)
            lat, over, det, valid = [], [], [], 0
            t0 = time.perf_counter()
            for pf in p:
                tm = pf.timings_ms
                lat.append(tm["latency"])
                # What the pipeline itself adds: waiting in queues and thread hand-offs.
                over.append(tm["latency"] - sum(tm.get(k, 0.0) for k in ("detect", "lift", "smooth")))
                det.append(tm["detect"])
                valid += int(pf.valid)
            dt = time.perf_counter() - t0
            st = p.stats
            p50, p95 = _percentiles(lat)
            o50, o95 = _percentiles(over)
            return {"fps": st.processed / dt, "processed": st.processed, "dropped": st.dropped,
                    "valid": valid, "latency_p50_ms": p50, "latency_p95_ms": p95,
                    "overhead_p50_ms": o50, "overhead_p95_ms": o95, "detect_p50_ms": float(np.median(det))}
        finally:
            est.detector.close()  # the lifter is shared between runs

    def standin() -> dict:
        from realtime.frames import PoseFrame

        def detect(frame):
            time.sleep(args.standin_ms / 1000.0)
            return frame

        def lift(frame):
            return PoseFrame.empty(frame.index, frame.timestamp_s, BENCH_SIZE)

        p = Pipeline(RealtimePlayback(lambda: clock.frames(images), args.camera_fps),
                     [Stage("detect", detect), Stage("lift", lift)], live=True)
        over = [pf.timings_ms["latency"] - pf.timings_ms["detect"] - pf.timings_ms["lift"] for pf in p]
        lat = p.stats
        o50, o95 = _percentiles(over)
        return {"overhead_p50_ms": o50, "overhead_p95_ms": o95, "latency_p95_ms": lat.latency_ms_p95,
                "dropped": lat.dropped}

    # One untimed pass warms up everything (MediaPipe graph, ONNX Runtime, caches).
    mediapipe_only(images[:10])
    a, b, c = [], [], []
    for r in range(args.repeats):
        a.append(mediapipe_only())
        b.append(pipeline(live=False))
        c.append(pipeline(live=True))
        print(f"  run {r + 1}: MediaPipe {a[-1]:.1f} fps | pipeline {b[-1]['fps']:.1f} fps "
              f"(latency p95 {b[-1]['latency_p95_ms']:.0f} ms, queued) | live {c[-1]['fps']:.1f} fps, "
              f"p50 {c[-1]['latency_p50_ms']:.1f} ms, p95 {c[-1]['latency_p95_ms']:.1f} ms "
              f"(detect p50 {c[-1]['detect_p50_ms']:.1f} ms), "
              f"{c[-1]['dropped']} dropped, {c[-1]['valid']}/{c[-1]['processed']} with a person")
    lifter.close()
    sd = standin()

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    fa, fb = statistics.median(a), med(b, "fps")
    # The ratio of each run's pair (run back to back, under the same machine load), then
    # the median: steadier than a ratio of medians when the load drifts between runs.
    ratio = statistics.median(r["fps"] / x for r, x in zip(b, a))
    result = {
        "frames": len(images), "size": list(BENCH_SIZE), "repeats": args.repeats, "camera_fps": args.camera_fps,
        "backend": lifter.name, "model": args.model,
        "mediapipe_fps": fa, "pipeline_fps": fb, "throughput_ratio": ratio,
        "live_fps": med(c, "fps"), "live_latency_p50_ms": med(c, "latency_p50_ms"),
        "live_latency_p95_ms": med(c, "latency_p95_ms"), "live_dropped": med(c, "dropped"),
        "live_detect_p50_ms": med(c, "detect_p50_ms"),
        "live_overhead_p50_ms": med(c, "overhead_p50_ms"), "live_overhead_p95_ms": med(c, "overhead_p95_ms"),
        "live_dropped_fraction": med(c, "dropped") / len(images),
        "standin_detect_ms": args.standin_ms, "standin_overhead_p50_ms": sd["overhead_p50_ms"],
        "standin_overhead_p95_ms": sd["overhead_p95_ms"], "standin_latency_p95_ms": sd["latency_p95_ms"],
    }
    rows = [
        ("MediaPipe alone (sequential)", f"{fa:.1f} fps", f"{1000 / fa:.1f} ms/frame", ""),
        ("pipeline, every frame (file mode)", f"{fb:.1f} fps", f"ratio {ratio:.2f} (median per run)",
         "target >= 0.85"),
        (f"pipeline, live camera {args.camera_fps:g} fps", f"{result['live_fps']:.1f} fps",
         f"p50 {result['live_latency_p50_ms']:.1f} ms, p95 {result['live_latency_p95_ms']:.1f} ms",
         "target p95 <= 50 ms"),
        ("  of which MediaPipe (detect)", "", f"p50 {result['live_detect_p50_ms']:.1f} ms", ""),
        ("  of which queues + hand-offs", "", f"p50 {result['live_overhead_p50_ms']:.1f} ms, "
                                             f"p95 {result['live_overhead_p95_ms']:.1f} ms", ""),
        ("  dropped (newest frame wins)", f"{result['live_dropped']:.0f} of {len(images)}", "", ""),
        (f"stand-in {args.standin_ms:g} ms detector, live", "", f"p95 {sd['latency_p95_ms']:.1f} ms", ""),
        ("  of which queues + hand-offs", "", f"p50 {sd['overhead_p50_ms']:.2f} ms, "
                                             f"p95 {sd['overhead_p95_ms']:.2f} ms", ""),
    ]
    w0 = max(len(r[0]) for r in rows)
    print(f"\n{'variant':<{w0}}  {'rate':>10}  {'':<34}  ")
    for name, rate, detail, target in rows:
        print(f"{name:<{w0}}  {rate:>10}  {detail:<34}  {target}")
    if args.json:
        write_report(args.json, json.dumps(result, indent=2))
    return 0
