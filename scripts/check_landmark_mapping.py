"""Check engines/landmarks.py against annotated real frames: MediaPipe (IMAGE mode) on the
4 Human3.6M and 4 MPI-INF-3DHP frames of ../shared/data/media/frames, 2D error per joint in
pixels against the dataset annotations.

MPI-INF-3DHP uses its own joint order and definitions; we compare through the usual
correspondence (ours <- 3DHP): pelvis<-root, spine<-spine, thorax<-neck, neck_nose<-head,
head<-head_top, limbs by name. Its 'head'/'head_top' are not H36M's joints, so the head
rows for 3DHP measure definition differences as much as detection error.

    python scripts/check_landmark_mapping.py [--data ../shared/data/media/frames] [--sweep]

--sweep also prints the H36M mean error of the derived joints over a small grid of the
mapping constants (how MappingParams' defaults were chosen).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.landmarks import DEFAULT_PARAMS, MappingParams, landmarks_to_joints_2d  # noqa: E402
from engines.skeleton import JOINT_NAMES  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "media" / "frames"


def load_samples(data: Path) -> list[tuple[str, str, Path, np.ndarray, np.ndarray]]:
    """(dataset, name, image path, gt (17, 2) px in our order, valid (17,) bool), read by
    train.eval_renders.load_real_frames (one reader of these annotations)."""
    from train.eval_renders import load_real_frames

    return [(f.dataset, f.name, f.image, f.joints_2d_px, f.valid_2d) for f in load_real_frames(data)]


def detect_all(samples: list) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Raw MediaPipe landmarks (33, 2) px + visibility (33,) per sample, None if missed."""
    import cv2

    from realtime.detector import PoseDetector

    res = []
    with PoseDetector(mode="image") as det:
        for _, name, path, _, _ in samples:
            bgr = cv2.imread(str(path))
            if bgr is None:
                print(f"skip {path}: unreadable", file=sys.stderr)
                res.append(None)
                continue
            d = det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            res.append(None if d is None else (d.landmarks_px, d.visibility))
    return res


def errors(samples: list, raw: list, params: MappingParams) -> np.ndarray:
    """(N, 17) pixel errors, NaN where missed or not annotated."""
    err = np.full((len(samples), len(JOINT_NAMES)), np.nan)
    for i, ((_, _, _, gt, valid), r) in enumerate(zip(samples, raw)):
        if r is None:
            continue
        joints, _ = landmarks_to_joints_2d(r[0], r[1], params)
        e = np.linalg.norm(joints - gt, axis=-1)
        err[i, valid] = e[valid]
    return err


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    if not (args.data / "h36m" / "test_h36m_body3d.npz").is_file():
        print(f"annotated frames not found under {args.data}", file=sys.stderr)
        return 2
    samples = load_samples(args.data)
    raw = detect_all(samples)
    err = errors(samples, raw, DEFAULT_PARAMS)
    print("| dataset | frame | detected | person height px | mean error px | max error px |")
    print("|---|---|---|---|---|---|")
    for (ds, name, _, gt, _), r, e in zip(samples, raw, err):
        height = np.ptp(gt[:, 1])
        mean, mx = (f"{np.nanmean(e):.1f}", f"{np.nanmax(e):.1f}") if r is not None else ("-", "-")
        print(f"| {ds} | {name} | {r is not None} | {height:.0f} | {mean} | {mx} |")
    is_h = np.array([s[0] == "h36m" for s in samples])
    print("\n| joint | H36M median px | H36M max px | 3DHP median px | 3DHP max px |")
    print("|---|---|---|---|---|")
    for j, n in enumerate(JOINT_NAMES):
        row = [f(err[m, j]) for m in (is_h, ~is_h) for f in (np.nanmedian, np.nanmax)]
        print(f"| {n} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    for m, ds in ((is_h, "H36M"), (~is_h, "3DHP")):
        heights = np.array([np.ptp(s[3][:, 1]) for s in np.array(samples, dtype=object)[m]])
        print(f"{ds}: mean over joints and frames {np.nanmean(err[m]):.1f} px; "
              f"median {100 * np.nanmedian(err[m] / heights[:, None]):.2f} % of person height")
    if args.sweep:
        derived = {"pelvis": "hip_shift", "r_hip": "hip_widen", "thorax": "thorax_fraction",
                   "spine": "spine_fraction", "neck_nose": "neck_nose_blend", "head": "head_up"}
        grid = {"hip_shift": [0.0, 0.1, 0.15, 0.2], "hip_widen": [1.0, 1.2, 1.4, 1.6],
                "thorax_fraction": [1.0, 1.05, 1.1, 1.125, 1.15], "spine_fraction": [0.4, 0.45, 0.483, 0.55],
                "neck_nose_blend": [0.0, 0.1, 0.2, 0.3, 0.5], "head_up": [0.0, 0.2, 0.3, 0.4, 0.5]}
        print("\nsweep (H36M frames, mean px of the affected joint):")
        for joint, field in derived.items():
            j = JOINT_NAMES.index(joint)
            vals = [f"{v}: {np.nanmean(errors(samples, raw, replace(DEFAULT_PARAMS, **{field: v}))[is_h, j]):.1f}"
                    for v in grid[field]]
            print(f"  {joint:9s} {field:16s} " + "  ".join(vals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
