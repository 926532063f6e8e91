"""posestream batch throughput on this machine: ratios measured in one run (docs/batch.md).

    .venv/bin/python scripts/bench_batch.py                 # the shared clips, twice each
    .venv/bin/python scripts/bench_batch.py --long --nodes  # + one long clip in chunks, + 2 Ray nodes

First, what a restart of MediaPipe's tracking changes in the 2D and what it costs, and
whether seeking lands on the right frame (every start frame of every clip). Then the same
clips (the shared videos and assets/demo.mp4, each listed --repeat times under another
name) are processed:
  loop   one after another in this process, by the same per-video code the Ray tasks run
         (realtime.batch.detect_chunk + finish_video), no Ray: the baseline;
  ray-1  `posestream batch`'s run_batch on a local Ray with 1 worker (its start-up timed apart);
  ray-2  the same with 2 workers;
  nodes  (--nodes) two local Ray nodes of 1 CPU each started with `ray start` (the cluster
         path: --address) against ray-2;
  long   (--long) one clip of 2.2 detector-restart intervals, split into chunks: 1 vs 2 workers.
Every run writes to its own fresh folder (nothing is skipped). Printed: frames, seconds,
frames/s, and the ratios: Ray's overhead on 1 worker (ray-1 / loop - 1, with and without
Ray's start-up), 2 workers vs 1 (ray-1 / ray-2), nodes vs ray-2, and the load average
before and after (other work on the machine changes every figure).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data" / "media" / "videos"


def clip_set(folder: Path, repeat: int) -> list[Path]:
    sources = sorted(SHARED.glob("*.mp4")) + sorted(SHARED.glob("*.avi")) + [ROOT / "assets" / "demo.mp4"]
    folder.mkdir(parents=True)
    clips = []
    for r in range(repeat):
        for src in sources:
            if src.is_file():
                dst = folder / f"r{r}_{src.name}"
                os.symlink(src.resolve(), dst)
                clips.append(dst)
    return clips


def long_clip(path: Path, frames: int) -> Path:
    """assets/demo.mp4 played forwards then backwards until `frames` frames (the motion stays
    continuous), re-encoded into `path`."""
    import cv2

    from realtime.sources import VideoFileSource

    with VideoFileSource(ROOT / "assets" / "demo.mp4") as src:
        bgr = [np.ascontiguousarray(f.image[:, :, ::-1]) for f in src]
    loop = bgr + bgr[-2:0:-1]
    h, w = bgr[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    for i in range(frames):
        out.write(loop[i % len(loop)])
    out.release()
    return path


def restart_effect(restart_at: int = 40) -> None:
    """What a restart of MediaPipe's tracking changes, and what it costs: the 2D of
    assets/demo.mp4 with the landmarker restarted at `restart_at` against one that tracked
    from frame 0 (max over joints, px, some frames after the restart), and the time to
    create a landmarker against the time per frame."""
    from realtime.detector import RESTART_FRAMES, PoseDetector
    from realtime.sources import VideoFileSource

    def run(restart: int | None) -> tuple[list, float]:
        out, t = [], 0.0
        with VideoFileSource(ROOT / "assets" / "demo.mp4") as src, PoseDetector() as det:
            for f in src:
                if f.index == restart:
                    det.restart()
                t0 = time.perf_counter()
                d = det.detect(f.image, f.timestamp_s)
                t += time.perf_counter() - t0
                out.append(None if d is None else d.joints_2d_px)
        return out, t / len(out)

    straight, per_frame = run(None)
    restarted, _ = run(restart_at)
    diffs = [float(np.abs(a - b).max()) if a is not None and b is not None else float("nan")
             for a, b in zip(straight, restarted)]
    after = [k for k in (0, 1, 5, 15, 30, len(diffs) - restart_at - 1) if restart_at + k < len(diffs)]
    print("restart at frame %d of demo.mp4, max 2D change (px) k frames later: %s" % (
        restart_at, ", ".join(f"k={k}: {diffs[restart_at + k]:.2f}" for k in after)))
    print(f"  before it: {max(diffs[:restart_at]):.2f} px (deterministic for the same frames)")
    loads = []
    for _ in range(5):
        t0 = time.perf_counter()
        PoseDetector().close()
        loads.append(time.perf_counter() - t0)
    load = float(np.median(loads))
    print(f"  landmarker load {load * 1000:.0f} ms (median of 5), detection {per_frame * 1000:.1f} ms/frame: one "
          f"restart per {RESTART_FRAMES} frames costs {100 * load / (RESTART_FRAMES * per_frame):.1f} % of "
          f"detection time", flush=True)


def seek_check(clips: list[Path]) -> None:
    """Does VideoFileSource(start=k) land on frame k? For every k of every clip: the pixels of
    the 3 frames from k after a seek against a straight decode from frame 0."""
    import hashlib

    from realtime.sources import VideoFileSource

    def hashes(src: VideoFileSource) -> dict[int, str]:
        with src:
            return {f.index: hashlib.blake2b(f.image.tobytes(), digest_size=16).hexdigest() for f in src}

    for clip in clips:
        straight = hashes(VideoFileSource(clip))
        wrong = [k for k in range(1, len(straight))
                 if any(straight.get(i) != h for i, h in hashes(VideoFileSource(clip, start=k, max_frames=k + 3)).items())]
        print(f"seek {clip.name}: {len(straight) - 1 - len(wrong)} of {len(straight) - 1} start frames land right"
              + (f" (wrong: {wrong[:10]})" if wrong else ""), flush=True)


def sequential(clips: list[Path], out: Path, opts) -> tuple[int, float]:
    from realtime import batch as B

    t0 = time.perf_counter()
    frames = 0
    for clip in clips:
        job = B.VideoJob(str(clip), clip.stem, None, ((0, None),))
        row = B.finish_video(job, str(out), opts, [B.detect_chunk(job.path, 0, None, opts)])
        frames += row.frames or 0
    return frames, time.perf_counter() - t0


def on_ray(inputs: list[str], out: Path, opts, workers: int | None, address: str | None = None) -> tuple[int, float, float]:
    """(frames, seconds of the batch, seconds of Ray's start-up) for one run_batch."""
    import ray

    from realtime import batch as B

    t0 = time.perf_counter()
    started = B._init_ray(address, workers)
    t1 = time.perf_counter()
    try:
        report = B.run_batch(inputs, out, opts, workers=workers, progress=False)
    finally:
        if started:
            ray.shutdown()
    t2 = time.perf_counter()
    bad = report.failed
    if bad:
        raise SystemExit(f"{len(bad)} videos failed: {bad[0].input}: {bad[0].error}")
    return sum(r.frames or 0 for r in report.rows), t2 - t1, t1 - t0


def main() -> int:
    from realtime import batch as B
    from realtime.api import Options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="times each clip is listed (default 2)")
    ap.add_argument("--model", default=None, help="lifter (default: the app's default model)")
    ap.add_argument("--long", action="store_true", help="also one long clip in chunks, 1 vs 2 workers")
    ap.add_argument("--nodes", action="store_true", help="also two local Ray nodes of 1 CPU each")
    args = ap.parse_args()
    opts = B.BatchOptions(Options(model=args.model), ("npz",)).resolved()
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    results: dict[str, tuple[int, float]] = {}
    print(f"model {opts.model}; load average before: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})", flush=True)
    try:
        restart_effect()
        clips = clip_set(work / "clips", args.repeat)
        seek_check(clips[:len(clips) // args.repeat])
        inputs = [str(c) for c in clips]
        n, t = sequential(clips, work / "loop", opts)
        results["loop"] = (n, t)
        print(f"loop   {len(clips)} clips, {n} frames: {t:7.1f} s  {n / t:5.2f} frames/s", flush=True)
        n, t, t_init = on_ray(inputs, work / "ray1", opts, 1)
        results["ray-1"] = (n, t + t_init)
        print(f"ray-1  {n} frames: {t + t_init:7.1f} s  {n / (t + t_init):5.2f} frames/s "
              f"(Ray start-up {t_init:.1f} s; {t:.1f} s without it)", flush=True)
        ray1_no_init = t
        n, t, t_init2 = on_ray(inputs, work / "ray2", opts, 2)
        results["ray-2"] = (n, t + t_init2)
        print(f"ray-2  {n} frames: {t + t_init2:7.1f} s  {n / (t + t_init2):5.2f} frames/s "
              f"(Ray start-up {t_init2:.1f} s)", flush=True)
        loop_t, r1, r2 = results["loop"][1], results["ray-1"][1], results["ray-2"][1]
        print(f"\nRay overhead on 1 worker vs the plain loop: {100 * (r1 / loop_t - 1):+.1f} % "
              f"({100 * (ray1_no_init / loop_t - 1):+.1f} % without Ray's start-up)")
        print(f"2 workers vs 1: {r1 / r2:.2f}x", flush=True)
        if args.nodes:
            with B.LocalRayNodes(nodes=2, cpus=1) as cluster:
                os.environ.update(RAY_AUTH_MODE=cluster.env["RAY_AUTH_MODE"], RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"])
                try:
                    n, t, t_conn = on_ray(inputs, work / "nodes", opts, None, address=cluster.address)
                finally:
                    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
                        os.environ.pop(k, None)
            print(f"nodes  2 nodes x 1 CPU, {n} frames: {t + t_conn:7.1f} s  {n / (t + t_conn):5.2f} frames/s "
                  f"(connecting {t_conn:.1f} s); vs ray-2: {r2 / (t + t_conn):.2f}x", flush=True)
        if args.long:
            from realtime.detector import RESTART_FRAMES

            frames = 2 * RESTART_FRAMES + RESTART_FRAMES // 5
            clip = long_clip(work / "long.mp4", frames)
            n1, t1, i1 = on_ray([str(clip)], work / "long1", opts, 1)
            n2, t2, i2 = on_ray([str(clip)], work / "long2", opts, 2)
            print(f"long   1 clip, {n1} frames in {len(B.plan_chunks(frames, RESTART_FRAMES))} chunks: "
                  f"1 worker {t1 + i1:.1f} s, 2 workers {t2 + i2:.1f} s: {(t1 + i1) / (t2 + i2):.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
