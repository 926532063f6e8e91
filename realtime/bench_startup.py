"""Start-up benchmark: `posestream video` against MediaPipe alone, as whole processes.

For short clips, the ones batch users feed in by the hundred, start-up dominates: importing
the libraries, loading MediaPipe's and the lifter's models. This runs, as separate processes
over the same clip (default: the first 5 frames of the demo clip, written to a temporary
file), in alternating rounds so a shared machine's load hits them alike:

  help       `posestream --help`
  mediapipe  a minimal Python program: import mediapipe and OpenCV, create the Pose
             Landmarker (VIDEO mode) from the same .task bundle, decode the clip and detect
             every frame: what any MediaPipe-based tool must do at least
  video      `posestream video CLIP --out OUT.npz` (the default model and backend)

and prints the median wall time, CPU time and peak resident memory (the child's max RSS) of
each, and the ratios video / mediapipe, measured in one run:

    posestream bench-startup [--clip VIDEO] [--frames 5] [--rounds 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from engines.errors import UserError

DEFAULT_CLIP = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
TARGETS = {"help_s": 0.3, "video_time_ratio": 1.5, "video_memory_ratio": 1.5}

MEDIAPIPE_ALONE = """
import sys
import cv2
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

task, clip = sys.argv[1], sys.argv[2]
opts = PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=task), running_mode=RunningMode.VIDEO)
landmarker = PoseLandmarker.create_from_options(opts)
cap = cv2.VideoCapture(clip)
fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
n = found = 0
while True:
    ok, bgr = cap.read()
    if not ok:
        break
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    found += bool(landmarker.detect_for_video(image, int(n * 1000 / fps)).pose_landmarks)
    n += 1
landmarker.close()
print(f"{n} frames, {found} with a person")
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from realtime.cli_options import non_negative_int, positive_int

    p.add_argument("--clip", default=str(DEFAULT_CLIP), help="video to take the frames from (default the demo clip)")
    p.add_argument("--frames", type=non_negative_int, default=5, help="first N frames of --clip (0 = the whole clip; default 5)")
    p.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds; medians are reported (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")


# Peak memory is the child's max RSS, read by a small launcher process: a child forked from
# this (large) process would report this process's resident size as its own peak, because
# Linux carries the high-water mark across fork and exec.
LAUNCHER = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
sys.exit(rc)
"""


def measure(argv: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one process; RuntimeError if it fails."""
    r = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *argv], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    wall, cpu, maxrss_kb = r.stdout.split()[-3:]
    return float(wall), float(cpu), int(maxrss_kb) / 1024.0  # Linux: kilobytes


def cut_clip(src: Path, frames: int, out: Path) -> int:
    """The first `frames` frames of `src` (all when 0) into `out` (mp4v); the frame count."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    n = 0
    while frames == 0 or n < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (bgr.shape[1], bgr.shape[0]))
        writer.write(bgr)
        n += 1
    cap.release()
    if writer is None:
        raise UserError(f"cannot decode {src} as a video")
    writer.release()
    return n


def run(args: argparse.Namespace) -> int:
    from realtime.detector import DEFAULT_MODEL

    from realtime.cli_options import check_report_paths, write_report

    if args.rounds < 1 or args.frames < 0:
        raise UserError("--rounds must be >= 1 and --frames >= 0")
    check_report_paths(args, "json")
    clip_src = Path(args.clip)
    if not clip_src.is_file():
        raise UserError(f"video file not found: {clip_src}")
    cli = [sys.executable, "-m", "realtime.cli"]
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="posestream-bench-startup-") as tmp:
        tmp_path = Path(tmp)
        clip = tmp_path / "clip.mp4"
        n = cut_clip(clip_src, args.frames, clip)
        variants = {
            "help": [*cli, "--help"],
            "mediapipe": [sys.executable, "-c", MEDIAPIPE_ALONE, str(DEFAULT_MODEL), str(clip)],
            "video": [*cli, "video", str(clip), "--out", str(tmp_path / "out.npz"), "--no-progress", "-q"],
        }
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
        for r in range(args.rounds):
            for name, argv in variants.items():
                results[name].append(measure(argv, cwd=repo))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1][0]:.2f} s {v[-1][2]:.0f} MB" for k, v in results.items()), file=sys.stderr, flush=True)
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in results.items()}
    out = {
        "clip": str(clip_src), "frames": n, "rounds": args.rounds, "load_average": list(os.getloadavg()),
        "median_wall_s": {k: round(v[0], 3) for k, v in med.items()},
        "median_cpu_s": {k: round(v[1], 3) for k, v in med.items()},
        "median_peak_mb": {k: round(v[2], 1) for k, v in med.items()},
        "help_s": round(med["help"][0], 3),
        "video_time_ratio": round(med["video"][0] / med["mediapipe"][0], 3),
        "video_cpu_ratio": round(med["video"][1] / med["mediapipe"][1], 3),
        "video_memory_ratio": round(med["video"][2] / med["mediapipe"][2], 3),
        "targets": TARGETS,
    }
    print(f"{n}-frame clip from {clip_src.name}, median of {args.rounds} alternating rounds, whole processes "
          f"(load average {out['load_average'][0]:.1f}):")
    print("| process | wall s | CPU s | peak MB |\n|---|---:|---:|---:|")
    for k, (wall, cpu, mb) in med.items():
        print(f"| {k} | {wall:.2f} | {cpu:.2f} | {mb:.0f} |")
    print(f"video_cpu_ratio: {out['video_cpu_ratio']:.2f} (CPU seconds; less sensitive to other load than wall time)")
    for key, target in TARGETS.items():
        print(f"{key}: {out[key]:.2f} (target <= {target}: {'met' if out[key] <= target else 'MISSED'})")
    if args.json:
        write_report(args.json, json.dumps(out, indent=1) + "\n")
    return 0
