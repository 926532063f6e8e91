"""What the file outputs cost `posestream video`: the same clip processed with one .npz
output (A), with the .npz and a --preview video (B), and with four outputs at once (C:
.bvh, .npz, .json, .csv), in alternating rounds, each a whole `posestream video` process.
Prints every round's processing rate (the command's own "frames/s": MediaPipe, lifter and
outputs, start-up excluded) and wall time (start-up included), then the median ratios
B/A and C/A measured in this run. First, what the end of a run costs: each format rendered
from the journal of a synthetic clip (--render-frames frames with landmarks), in ms per
frame; --render-only stops there.

    .venv/bin/python scripts/bench_outputs.py [--video assets/demo.mp4] [--rounds 3]
    .venv/bin/python scripts/bench_outputs.py --render-only [--render-frames 2000]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(video: str, outs: list[str], extra: list[str]) -> tuple[float, float]:
    argv = [sys.executable, "-m", "realtime.cli", "video", video, "--no-progress", *extra]
    for o in outs:
        argv += ["--out", o]
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
    return float(re.search(r"= ([\d.]+) frames/s", r.stdout).group(1)), wall


def render_costs(n: int) -> None:
    """Each format's renderer on an n-frame synthetic clip (the work done after the last frame)."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from realtime.frames import PoseFrame
    from realtime.journal import Clip
    from realtime.writers import FORMATS, Recording

    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        j = rng.normal(scale=300, size=(17, 3)).astype(np.float32)
        j[0] = 0
        frames.append(PoseFrame(i, i / 30, True, j, np.array([0, 0, 3000], np.float32),
                                rng.uniform(0, 600, (17, 2)).astype(np.float32), np.ones(17, np.float32), (640, 480),
                                None, landmarks_px=rng.uniform(0, 600, (33, 2)).astype(np.float32),
                                landmarks_world_mm=rng.normal(scale=300, size=(33, 3)).astype(np.float32),
                                landmarks_visibility=np.ones(33, np.float32)))
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recording([Path(tmp) / "journal_only.npz"], 30.0)
        t0 = time.perf_counter()
        for f in frames:
            rec.write(f)
        print(f"journal append: {1e6 * (time.perf_counter() - t0) / n:.0f} us/frame", flush=True)
        rec.discard()  # only the appends were timed
    clip = Clip.from_frames(frames, 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, fmt in FORMATS.items():
            t0 = time.perf_counter()
            fmt.render(clip, Path(tmp) / f"clip{suffix}", {"landmarks": True})
            print(f"render {suffix}: {1e3 * (time.perf_counter() - t0) / n:.2f} ms/frame ({n} frames)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(REPO / "assets" / "demo.mp4"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--render-frames", type=int, default=2000)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args()
    render_costs(args.render_frames)
    if args.render_only:
        return
    rates: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    walls: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        configs = {
            "A": ([str(t / "a.npz")], []),
            "B": ([str(t / "b.npz")], ["--preview", str(t / "b.mp4")]),
            "C": ([str(t / f"c.{x}") for x in ("bvh", "npz", "json", "csv")], []),
        }
        for r in range(args.rounds):
            for name, (outs, extra) in configs.items():
                rate, wall = run_once(args.video, outs, extra)
                rates[name].append(rate)
                walls[name].append(wall)
                print(f"round {r + 1} {name}: {rate:.1f} frames/s, {wall:.2f} s wall", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    wmed = {k: statistics.median(v) for k, v in walls.items()}
    print(f"median frames/s: A (.npz) {med['A']:.1f}, B (+ --preview) {med['B']:.1f}, C (4 outputs) {med['C']:.1f}")
    print(f"ratio B/A {med['B'] / med['A']:.2f}, C/A {med['C'] / med['A']:.2f} (processing rate); "
          f"wall time B/A {wmed['B'] / wmed['A']:.2f}, C/A {wmed['C'] / wmed['A']:.2f}")


if __name__ == "__main__":
    main()
