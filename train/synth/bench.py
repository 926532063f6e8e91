"""CPU cost per synthetic sample, with and without the MediaPipe pass.

    python -m train.synth.bench [--data ../shared/data/h36m/h36m_val.npz] [--n 60]

Reports process CPU time (all threads) and wall time per sample in one process, so the
figure is meaningful on a shared machine: samples/s per busy core = 1 / CPU time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from train.h36m import default_data_dir
    from train.synth.samples import SampleRenderer
    from train.synth.shards import H36MSource
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(default_data_dir() / "h36m" / "h36m_val.npz"))
    ap.add_argument("--n", type=int, default=60)
    a = ap.parse_args(argv)
    src = H36MSource(a.data, 20)
    for mp in (False, True):
        r = SampleRenderer(use_mediapipe=mp)
        for i in range(3):  # warm-up: numba cache load, MediaPipe graph start
            r.render(src.item(i), np.random.default_rng([0, i]))
        n = a.n if not mp else max(a.n // 2, 1)
        t, c = time.perf_counter(), time.process_time()
        for i in range(10, 10 + n):
            r.render(src.item(i), np.random.default_rng([0, i]))
        cpu, wall = (time.process_time() - c) / n, (time.perf_counter() - t) / n
        print(f"mediapipe={'on' if mp else 'off'}: {cpu * 1e3:.1f} ms CPU/sample "
              f"({1 / cpu:.0f}/s per busy core), wall {wall * 1e3:.1f} ms/sample, n={n}")
        r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
