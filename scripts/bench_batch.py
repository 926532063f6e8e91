"""posestream batch throughput on this machine: ratios measured in one run (docs/batch.md).

    .venv/bin/python scripts/bench_batch.py                 # the shared clips, 4 times each, 2 rounds
    .venv/bin/python scripts/bench_batch.py --long --nodes  # + one long clip in chunks, + 2 Ray nodes
    .venv/bin/python scripts/bench_batch.py --repeat 2 --no-checks --long --nodes   # shorter

First, what a restart of MediaPipe's tracking changes in the 2D and what it costs, and
whether seeking lands on the right frame (every start frame of every clip). Then the same
clips (the shared videos and assets/demo.mp4, each copied --repeat times under another
name) are processed, in --rounds interleaved rounds (each figure is the best round: other
work on a shared machine only ever slows a run down):
  loop   one after another in this process, by the same per-video code the Ray tasks run
         (realtime.batch.detect_chunk + finish_video), no Ray, the lifter loaded afresh: the
         baseline;
  ray-1  `posestream batch`'s run_batch on a local Ray with 1 worker (Ray's start-up timed
         apart); the first video a worker runs also pays that process's imports and model
         load, shown as its wall time minus the same clip's later copy;
  ray-2  the same with 2 workers.
Then, once:
  resume the ray-2 run again on its own output folder: every video skipped (wall time);
  errors a folder of one good clip, random bytes named .mp4 and a real .mp4 cut in half: the
         report's rows (two error rows, the good clip done);
  nodes  (--nodes) `posestream batch --address` on two local Ray nodes of 1 CPU each started
         with `ray start` (realtime.batch.LocalRayNodes), against `posestream batch
         --workers 2` on a local Ray, both as commands in their own processes;
  long   (--long) one clip of 2.2 detector-restart intervals, split into chunks: 1 vs 2
         workers, and `posestream video` on the same file in this process: the time ratio
         and the largest difference between its output and each chunked one (joints and
         root translation in mm, 2D in px; the frames and their validity must match).
Every timed run writes to its own fresh folder (nothing is skipped). Printed: frames,
seconds, frames/s, the ratios, and the load average before and after.
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
            if src.is_file():  # copies: the batch treats links to one file as one video
                dst = folder / f"r{r}_{src.name}"
                shutil.copyfile(src, dst)
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

    B._LIFTERS.clear()  # the loop loads its lifter too
    t0 = time.perf_counter()
    frames = 0
    for clip in clips:
        job = B.VideoJob(str(clip), clip.stem, None, ((0, None),))
        row = B.finish_video(job, str(out), opts, [B.detect_chunk(job.path, 0, None, opts)])
        frames += row.frames or 0
    return frames, time.perf_counter() - t0


def on_ray(inputs: list[str], out: Path, opts, workers: int | None,
           address: str | None = None) -> tuple[int, float, float, list]:
    """(frames, seconds of the batch, seconds of Ray's start-up, the report's rows) for one
    run_batch."""
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
    return sum(r.frames or 0 for r in report.rows), t2 - t1, t1 - t0, report.rows


def warm_up(rows: list, first: str) -> float:
    """With 1 worker, the first input runs first: its wall time minus its copy's (r0_x vs
    r1_x) is what the worker's first task paid for imports and loading the models."""
    wall = {Path(r.input).name: r.wall_s for r in rows}
    name = Path(first).name
    return wall[name] - wall["r1_" + name[len("r0_"):]]


def command(args: list[str], env: dict | None = None) -> tuple[float, str]:
    """(seconds, output) of `posestream ARGS` in a process of its own."""
    import subprocess

    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "realtime.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    t = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"posestream {' '.join(args)} failed: {(run.stdout + run.stderr)[-2000:]}")
    return t, run.stdout


def max_difference(a: Path, b: Path) -> str:
    """The largest difference between two posestream .npz files, per array; raises
    SystemExit if their frames or validity differ."""
    with np.load(a) as x, np.load(b) as y:
        if x["index"].tolist() != y["index"].tolist() or x["valid"].tolist() != y["valid"].tolist():
            raise SystemExit(f"{a} and {b} differ in their frames or in which frames have a pose")
        parts = []
        for key, unit in (("joints_mm", "mm"), ("translation_mm", "mm"), ("joints_2d_px", "px")):
            u, v = x[key], y[key]
            if not np.array_equal(np.isnan(u), np.isnan(v)):
                raise SystemExit(f"{a} and {b}: {key} is missing on different frames")
            ok = ~np.isnan(u)
            parts.append(f"{key} {float(np.abs(u[ok] - v[ok]).max(initial=0.0)):.2g} {unit}")
        return ", ".join(parts)


def error_rows(folder: Path, out: Path, opts) -> None:
    """A good clip, random bytes named .mp4 and a truncated .mp4, on 2 workers: the rows."""
    from realtime import batch as B

    folder.mkdir(parents=True)
    demo = ROOT / "assets" / "demo.mp4"
    shutil.copyfile(demo, folder / "good.mp4")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    data = demo.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    report = B.run_batch([str(folder)], out, opts, workers=2, progress=False)
    for r in report.rows:
        print(f"errors {Path(r.input).name}: {r.status}, frames {r.frames}" + (f", error: {r.error}" if r.error else ""))
    print(f"errors report rows: {(out / 'report.csv').read_text().count(chr(10)) - 1} in report.csv", flush=True)


def main() -> int:
    from realtime import batch as B
    from realtime.api import Options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4, help="copies of each clip (default 4, at least 2)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of loop, ray-1, ray-2 (default 2)")
    ap.add_argument("--model", default=None, help="lifter (default: the app's default model for files)")
    ap.add_argument("--long", action="store_true", help="also one long clip in chunks, 1 vs 2 workers")
    ap.add_argument("--nodes", action="store_true", help="also two local Ray nodes of 1 CPU each")
    ap.add_argument("--no-checks", action="store_true", help="skip the restart and seek checks")
    args = ap.parse_args()
    if args.repeat < 2 or args.rounds < 1:
        ap.error("--repeat must be at least 2 and --rounds at least 1")
    opts = B.BatchOptions(Options(model=args.model), ("npz",)).resolved()
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    print(f"model {opts.model}; load average before: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})", flush=True)
    try:
        clips = clip_set(work / "clips", args.repeat)
        if not args.no_checks:
            restart_effect()
            seek_check(clips[:len(clips) // args.repeat])
        inputs = [str(c) for c in clips]
        best: dict[str, float] = {}
        ray1_run = ray1_init = ray1_warm = 0.0
        frames = 0
        for rnd in range(args.rounds):
            n, t = sequential(clips, work / f"loop{rnd}", opts)
            frames = n
            print(f"round {rnd} loop   {len(clips)} clips, {n} frames: {t:6.1f} s  {n / t:5.2f} frames/s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            best["loop"] = min(best.get("loop", t), t)
            n1, t, t_init, rows = on_ray(inputs, work / f"ray1_{rnd}", opts, 1)
            assert n1 == n, (n1, n)
            warm = warm_up(rows, inputs[0])
            print(f"round {rnd} ray-1  {n1} frames: {t + t_init:6.1f} s  {n1 / (t + t_init):5.2f} frames/s "
                  f"(Ray start-up {t_init:.1f} s, first task's warm-up {warm:.1f} s; load {os.getloadavg()[0]:.1f})",
                  flush=True)
            if t + t_init < best.get("ray-1", float("inf")):
                best["ray-1"], ray1_run, ray1_init, ray1_warm = t + t_init, t, t_init, warm
            n2, t, t_init, _ = on_ray(inputs, work / f"ray2_{rnd}", opts, 2)
            assert n2 == n, (n2, n)
            print(f"round {rnd} ray-2  {n2} frames: {t + t_init:6.1f} s  {n2 / (t + t_init):5.2f} frames/s "
                  f"(Ray start-up {t_init:.1f} s; load {os.getloadavg()[0]:.1f})", flush=True)
            best["ray-2"] = min(best.get("ray-2", t + t_init), t + t_init)
        loop_t, r1, r2 = best["loop"], best["ray-1"], best["ray-2"]
        print(f"\nbest of {args.rounds}: loop {loop_t:.1f} s, ray-1 {r1:.1f} s, ray-2 {r2:.1f} s ({frames} frames)")
        print(f"Ray overhead on 1 worker vs the plain loop: {100 * (r1 / loop_t - 1):+.1f} % ({r1 - loop_t:+.1f} s; "
              f"{100 * (ray1_run / loop_t - 1):+.1f} % without Ray's start-up of {ray1_init:.1f} s, of which the "
              f"worker's warm-up {ray1_warm:.1f} s)")
        print(f"2 workers vs 1: {r1 / r2:.2f}x; 2 workers vs the loop: {loop_t / r2:.2f}x", flush=True)
        t0 = time.perf_counter()
        again = B.run_batch(inputs, work / f"ray2_{args.rounds - 1}", opts, workers=2, progress=False)
        t_again = time.perf_counter() - t0
        statuses = sorted({r.status for r in again.rows})
        print(f"resume: the ray-2 run again: {len(again.rows)} videos, statuses {statuses}, {t_again:.2f} s", flush=True)
        error_rows(work / "bad", work / "bad_out", opts)
        if args.nodes:
            common = [*inputs, "--model", str(opts.model), "--format", "npz", "--no-progress"]
            t_local, _ = command(["batch", *common, "--out-dir", str(work / "local2"), "--workers", "2"])
            with B.LocalRayNodes(nodes=2, cpus=1) as cluster:
                t_nodes, out = command(["batch", *common, "--out-dir", str(work / "nodes"), "--address",
                                        cluster.address], env=cluster.env)
            import json

            nodes = {r["nodes"] for r in json.loads((work / "nodes" / "report.json").read_text())["videos"]}
            print(f"nodes  `posestream batch --workers 2` (local Ray) {t_local:.1f} s; `--address` on 2 local nodes "
                  f"x 1 CPU {t_nodes:.1f} s ({len(nodes)} nodes ran videos): local / nodes {t_local / t_nodes:.2f}x",
                  flush=True)
        if args.long:
            from realtime.detector import RESTART_FRAMES

            n_long = 2 * RESTART_FRAMES + RESTART_FRAMES // 5
            clip = long_clip(work / "long.mp4", n_long)
            n1, t1, i1, _ = on_ray([str(clip)], work / "long1", opts, 1)
            n2, t2, i2, rows = on_ray([str(clip)], work / "long2", opts, 2)
            print(f"long   1 clip, {n1} frames in {rows[0].chunks} chunks: 1 worker {t1 + i1:.1f} s, "
                  f"2 workers {t2 + i2:.1f} s: {(t1 + i1) / (t2 + i2):.2f}x", flush=True)
            from realtime.cli import main as posestream

            single = work / "single" / "long.npz"
            single.parent.mkdir()
            t0 = time.perf_counter()
            if posestream(["video", str(clip), "--out", str(single), "--model", str(opts.model), "--no-progress"]):
                raise SystemExit("posestream video failed on the long clip")
            t_single = time.perf_counter() - t0
            print(f"long   posestream video {t_single:.1f} s; it / 2 workers in chunks: {t_single / (t2 + i2):.2f}x")
            for name in ("long1", "long2"):
                print(f"long   {name} vs posestream video, max abs difference: "
                      f"{max_difference(work / name / 'long.npz', single)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
