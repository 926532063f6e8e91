"""Print the FBI class balance on Human3.6M train for candidate thresholds (README table).

    python -m train.fbi_balance [--data ../shared/data/h36m/h36m_train.npz]
"""
from __future__ import annotations

import argparse

import numpy as np

from engines.skeleton import FBI_THRESHOLD, fbi_slopes
from train.h36m import default_data_dir, load


def balance(slopes: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """(forward, backward, parallel fractions, entropy in bits) for one threshold."""
    fw = float((slopes < -threshold).mean())
    bw = float((slopes > threshold).mean())
    pa = 1.0 - fw - bw
    p = np.array([fw, bw, pa])
    ent = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    return fw, bw, pa, ent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(default_data_dir() / "h36m" / "h36m_train.npz"))
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args(argv)
    s = load(args.data, "gt", every=args.every)
    sl = fbi_slopes(s.joints_cam)
    print("| angle | t | forward | backward | parallel | entropy (bits) |\n|---|---|---|---|---|---|")
    for deg in (10, 15, 20, 30):
        t = float(np.sin(np.deg2rad(deg)))
        fw, bw, pa, ent = balance(sl, t)
        mark = " (chosen)" if abs(t - FBI_THRESHOLD) < 1e-9 else ""
        print(f"| {deg} deg{mark} | {t:.3f} | {fw:.3f} | {bw:.3f} | {pa:.3f} | {ent:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
