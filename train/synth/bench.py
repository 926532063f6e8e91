"""Synthetic-sample throughput, with and without the MediaPipe pass (issue targets: >= 300
samples/s without MediaPipe and >= 40 with it, on this 2-core CPU).

    python -m train.synth.bench [--data ../shared/data/h36m/h36m_val.npz] [--n 60] [--workers 2]

Two measurements, both printed for both modes:
- CPU time per sample in one process (all threads): load-independent, so it means something
  on a shared machine; samples/s per busy core = 1 / CPU time.
- Wall-clock rate of the real writer (`render_shards`, `--workers` processes, shards written
  to a temporary folder, deleted afterwards): what `posestream render` delivers on this machine
  now, including process start-up and shard writing. `--workers 0` skips it.
The load average is printed with it: wall-clock figures are only comparable on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {False: 300.0, True: 40.0}  # samples/s on 2 cores: without / with MediaPipe


def cpu_time_per_sample(src, mediapipe: bool, n: int) -> tuple[float, float]:
    """(CPU s, wall s) per sample of SampleRenderer.render in this process, after warm-up."""
    from train.synth.samples import SampleRenderer

    r = SampleRenderer(use_mediapipe=mediapipe)
    try:
        for i in range(3):  # warm-up: numba cache load, MediaPipe graph start
            r.render(src.item(i), np.random.default_rng([0, i]))
        t, c = time.perf_counter(), time.process_time()
        for i in range(10, 10 + n):
            r.render(src.item(i), np.random.default_rng([0, i]))
        return (time.process_time() - c) / n, (time.perf_counter() - t) / n
    finally:
        r.close()


def wall_rate(src, mediapipe: bool, n: int, workers: int) -> dict:
    """Render n samples with render_shards into a temporary folder; the manifest's figures."""
    from train.synth.shards import RunConfig, render_shards

    shard = max(n // (4 * workers), 1)  # >= 4 shards per worker so that the pool stays busy
    with tempfile.TemporaryDirectory(prefix="synth_bench_") as tmp:
        cfg = RunConfig(out=Path(tmp), seed=0, shard_size=shard, mediapipe=mediapipe, workers=workers, limit=n)
        m = render_shards(src, cfg, log=lambda s: None)
    return {**m["last_run"], **{k: v for k, v in m["stats"].items() if k.startswith("mp_")}}


def main(argv: list[str] | None = None) -> int:
    from train.h36m import default_data_dir
    from train.synth.shards import H36MSource

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(default_data_dir() / "h36m" / "h36m_val.npz"))
    ap.add_argument("--n", type=int, default=60, help="samples for the CPU-time figure (half with MediaPipe)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the wall-clock figure (0: skip it)")
    ap.add_argument("--wall-n", type=int, default=2400, help="samples for the wall-clock figure without "
                    "MediaPipe (a sixth of it with MediaPipe)")
    a = ap.parse_args(argv)
    src = H36MSource(a.data, 20)
    for mp in (False, True):
        n = a.n if not mp else max(a.n // 2, 1)
        cpu, wall = cpu_time_per_sample(src, mp, n)
        print(f"mediapipe={'on' if mp else 'off'}: {cpu * 1e3:.1f} ms CPU/sample "
              f"({1 / cpu:.0f}/s per busy core), wall {wall * 1e3:.1f} ms/sample, n={n}", flush=True)
    if a.workers > 0:
        print(f"load average before the wall-clock runs: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        for mp in (False, True):
            n = a.wall_n if not mp else max(a.wall_n // 6, 8)
            r = wall_rate(src, mp, n, a.workers)
            rate = r["samples_per_s"]
            det = (f", MediaPipe detected {100 * r['mp_detection_rate']:.1f}% correct {100 * r['mp_correct_rate']:.1f}%"
                   if mp else "")
            print(f"wall-clock mediapipe={'on' if mp else 'off'}: {rate:.1f} samples/s with {a.workers} workers "
                  f"({n} samples), target {TARGETS[mp]:.0f}: ratio {rate / TARGETS[mp]:.2f}{det}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
