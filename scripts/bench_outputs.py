"""What the file outputs cost `posestream video`: the same clip processed with one .npz
output (A), with the .npz and a --preview video (B), and with four outputs at once (C:
.bvh, .npz, .json, .csv), in alternating rounds, each a whole `posestream video` process.
Prints every round's processing rate (the command's own "frames/s": MediaPipe, lifter and
outputs, start-up excluded) and wall time (start-up included), then the median ratios
B/A and C/A measured in this run.

    .venv/bin/python scripts/bench_outputs.py [--video assets/demo.mp4] [--rounds 3]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(REPO / "assets" / "demo.mp4"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
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
