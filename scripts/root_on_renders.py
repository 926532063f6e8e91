"""The app's lifting and root trajectory on rendered sequences with ground truth.

    python scripts/root_on_renders.py RENDER_DIR [--model NAME] [--max-clips N]

RENDER_DIR is a `posestream render --sequence` set (shards with MediaPipe's VIDEO-mode 2D of
each frame, the camera intrinsics, the true camera-space root and root-relative joints). Each
clip's detections go through `realtime.sequence.lift_sequence`, exactly as `posestream video`
lifts a file, three times: with the per-frame root solve alone, with the causal root filter
(live) and with the smoothed one (files). Printed per variant, over all clips (frames where
MediaPipe found the person):
    depth bias    median estimated / true root depth - 1
    root error    RMS and median distance of the root from the truth, mm
    root step     p95 frame-to-frame step, mm (the truth's own p95 beside it)
    MPJPE, MPJVE  root-relative joints against the truth, mm, and their velocity error, mm/frame
Distortion is ignored by the app's pinhole camera (as for any uncalibrated video).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.detector import Detection  # noqa: E402
from realtime.estimator import Detected, PoseEstimator, open_lifter  # noqa: E402
from realtime.sequence import lift_sequence  # noqa: E402
from realtime.trajectory import FILE_ROOT_LAG_S, RootFilterConfig  # noqa: E402


class _NoDetector:
    def close(self) -> None:
        pass


def clips(folder: Path):
    """(arrays of one clip) for every clip of every shard, in order."""
    for shard in sorted(folder.glob("shard_*.npz")):
        d = np.load(shard)
        for clip in np.unique(d["index"]):
            sel = np.flatnonzero(d["index"] == clip)
            sel = sel[np.argsort(d["frame_in_clip"][sel])]
            yield {k: d[k][sel] for k in ("frame_in_clip", "time_ms", "mp_found", "mp_joints_2d", "mp_conf",
                                           "root_cam", "joints_3d", "f", "c", "image_size")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("renders", type=Path)
    ap.add_argument("--model", default="final")
    ap.add_argument("--max-clips", type=int, default=None)
    args = ap.parse_args()
    lifter = open_lifter(args.model, "auto", 1)
    variants = {"per-frame solve": None, "causal filter": RootFilterConfig(),
                "smoothed filter": RootFilterConfig(lag_s=FILE_ROOT_LAG_S)}
    acc: dict[str, dict[str, list]] = {v: {"est": [], "true": [], "steps": [], "true_steps": [], "mpjpe": [],
                                           "mpjve": []} for v in variants}
    n_clips = 0
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips(args.renders):
            if args.max_clips is not None and n_clips >= args.max_clips:
                break
            n_clips += 1
            w, h = (int(x) for x in clip["image_size"][0])
            calib = Path(tmp) / "calib.json"
            f, c = clip["f"][0], clip["c"][0]
            calib.write_text(json.dumps({"fx": float(f[0]), "fy": float(f[1]), "cx": float(c[0]), "cy": float(c[1]),
                                         "width": w, "height": h}))
            dets = []
            for k in range(len(clip["time_ms"])):
                det = None
                if clip["mp_found"][k]:
                    det = Detection(clip["mp_joints_2d"][k], clip["mp_conf"][k], np.zeros((17, 3)), None,
                                    np.zeros((33, 2), np.float32), np.ones(33, np.float32))
                dets.append(Detected(int(clip["frame_in_clip"][k]), float(clip["time_ms"][k]) / 1000.0, (w, h), det))
            for name, root in variants.items():
                est = PoseEstimator(calib=calib, detector=_NoDetector(), lifter=lifter)
                poses = list(lift_sequence(dets, est, root))
                ok = np.array([p.valid and np.isfinite(p.translation_mm).all() for p in poses])
                t_est = np.stack([p.translation_mm for p in poses]).astype(np.float64)
                j_est = np.stack([p.joints_mm for p in poses]).astype(np.float64)
                a = acc[name]
                a["est"].append(t_est[ok])
                a["true"].append(clip["root_cam"][ok].astype(np.float64))
                both = ok[1:] & ok[:-1]
                a["steps"].append(np.linalg.norm(np.diff(t_est, axis=0), axis=1)[both])
                a["true_steps"].append(np.linalg.norm(np.diff(clip["root_cam"].astype(np.float64), axis=0), axis=1)[both])
                gt = clip["joints_3d"].astype(np.float64)
                a["mpjpe"].append(np.linalg.norm(j_est - gt, axis=-1).mean(axis=1)[ok])
                a["mpjve"].append(np.linalg.norm(np.diff(j_est, axis=0) - np.diff(gt, axis=0), axis=-1).mean(axis=1)[both])
    lifter.close()
    print(f"{n_clips} clips of {args.renders}, model {args.model}")
    print(f"{'root':<16} {'frames':>6} {'depth bias':>10} {'RMS mm':>7} {'median mm':>9} {'p95 step':>8} "
          f"{'true p95':>8} {'MPJPE':>6} {'MPJVE':>6}")
    for name, a in acc.items():
        est, true = np.concatenate(a["est"]), np.concatenate(a["true"])
        err = np.linalg.norm(est - true, axis=1)
        steps, tsteps = np.concatenate(a["steps"]), np.concatenate(a["true_steps"])
        print(f"{name:<16} {len(est):>6} {np.median(est[:, 2]) / np.median(true[:, 2]) - 1:>+10.3f} "
              f"{np.sqrt(np.mean(err ** 2)):>7.0f} {np.median(err):>9.0f} {np.percentile(steps, 95):>8.1f} "
              f"{np.percentile(tsteps, 95):>8.1f} {np.concatenate(a['mpjpe']).mean():>6.1f} "
              f"{np.concatenate(a['mpjve']).mean():>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
