"""The real-video stability table of docs/realtime_temporal.md, with one MediaPipe pass per clip.

    python scripts/stability_table.py CLIP [CLIP ...] [--temporal MODEL] [--single MODEL] [--mirror-2d] [--json FILE]

`posestream video` is detection over the frames, then `realtime.sequence.lift_sequence` over
the detections (and the One Euro smoother with --smooth): this script detects each clip once,
exactly as the command does (VIDEO mode with re-detection), and lifts the detections several
ways, which gives what these commands write, without running MediaPipe once per row:

    single-frame, per-frame root     posestream video CLIP --model SINGLE --raw-root --no-fixed-bones --out a.npz
    single-frame + --smooth          posestream video CLIP --model SINGLE --smooth --no-fixed-bones --out c.npz
    temporal, model's own bones      posestream video CLIP --model TEMPORAL --no-fixed-bones --out e.npz
    temporal                         posestream video CLIP --model TEMPORAL --out d.npz   (the default)
    --mirror-2d adds (a second detection pass per clip, with the mirrored 2D):
    temporal --mirror-2d, own bones  posestream video CLIP --model TEMPORAL --mirror-2d --no-fixed-bones --out f.npz
    temporal --mirror-2d             posestream video CLIP --model TEMPORAL --mirror-2d --out g.npz

and prints, per clip, the figures `posestream stability X.npz --against-mediapipe CLIP
--lag-against a.npz` prints for each (realtime.stability), MediaPipe's world landmarks first;
"lag fx" is the lag behind the single-frame output with fixed bones (`--raw-root` alone), the
like-for-like reference of a fixed-bones output.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.checkpoint import default_app_model, default_file_model  # noqa: E402
from realtime.estimator import PoseEstimator, open_lifter  # noqa: E402
from realtime.filters import FILE_BODY, PoseSmoother  # noqa: E402
from realtime.sequence import lift_sequence  # noqa: E402
from realtime.sources import VideoFileSource  # noqa: E402
from realtime.stability import frame_rate, lag_frames, measure  # noqa: E402
from realtime.trajectory import FILE_ROOT_LAG_S, RootFilterConfig  # noqa: E402


def detect(clip: str, keep_images: bool, mirror: bool = False) -> tuple[list, list[np.ndarray | None]]:
    """The app's detections of every frame (VIDEO mode + re-detection; `mirror`: with the
    mirrored pass of --mirror-2d), and MediaPipe's world joints (17, 3) mm per frame (None
    without a person)."""
    est = PoseEstimator(lifter=_NoLifter(keep_images), redetect=True, mirror=mirror)
    dets, world = [], []
    with VideoFileSource(clip) as src:
        for frame in src:
            d = est.detect(frame)
            dets.append(d)
            world.append(None if d.detection is None else np.asarray(d.detection.world_mm, np.float64))
    est.detector.close()
    return dets, world


class _NoLifter:
    """Stands in for the lifter while detecting (the estimator keeps the pixels if asked)."""

    metadata: dict = {}
    name = "-"

    def __init__(self, keep_images: bool) -> None:
        if keep_images:  # a callable `lift` (the Final model's) makes detect() keep the frame
            self.lift = lambda *a: None

    def close(self) -> None:
        pass


def arrays(poses: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([p.joints_mm for p in poses]).astype(np.float64),
            np.stack([p.translation_mm for p in poses]).astype(np.float64),
            np.array([p.valid for p in poses]), np.array([p.index for p in poses]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--single", default=default_app_model())
    ap.add_argument("--temporal", default=default_file_model())
    ap.add_argument("--mirror-2d", action="store_true", help="add the temporal rows with --mirror-2d's 2D")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    single, temporal = open_lifter(args.single, "auto", 1), open_lifter(args.temporal, "auto", 1)
    report: dict[str, dict] = {}
    for clip in args.clips:
        dets, world = detect(clip, keep_images=callable(getattr(single, "lift", None)))
        smoothed_root = RootFilterConfig(lag_s=FILE_ROOT_LAG_S)

        def lifted(lifter, root, body=None, detections=dets):
            return list(lift_sequence(detections, PoseEstimator(lifter=lifter, detector=_Closed()), root, body))

        rows = {"single-frame, per-frame root": lifted(single, None)}
        smoother = PoseSmoother()
        rows["single-frame + --smooth"] = [smoother(p) for p in lifted(single, smoothed_root)]
        rows["temporal, model's own bones"] = lifted(temporal, smoothed_root)
        rows["temporal"] = lifted(temporal, smoothed_root, FILE_BODY)
        if args.mirror_2d:
            mirrored = detect(clip, keep_images=False, mirror=True)[0]
            rows["temporal --mirror-2d, own bones"] = lifted(temporal, smoothed_root, None, mirrored)
            rows["temporal --mirror-2d"] = lifted(temporal, smoothed_root, FILE_BODY, mirrored)
        j_ref, _, ok_ref, index = arrays(rows["single-frame, per-frame root"])
        # fixed bones take the limbs' length changes out of the joint velocities the lag is
        # measured on: every output is also compared with the single-frame output with fixed
        # bones (like with like for a fixed-bones output)
        j_ref_fixed = arrays(lifted(single, None, FILE_BODY))[0]
        fps = frame_rate(np.array([p.timestamp_s for p in rows["single-frame, per-frame root"]]), index)
        mp_ok = np.array([w is not None for w in world])
        mp_j = np.stack([w if w is not None else np.full((17, 3), np.nan) for w in world])
        table = {"MediaPipe world landmarks": dict(asdict(measure(mp_j, mp_ok & ok_ref, index, fps=fps)),
                                                   lag_frames=lag_frames(mp_j, j_ref, mp_ok & ok_ref, index))}
        for name, poses in rows.items():
            j, t, ok, idx = arrays(poses)
            both = ok & mp_ok
            table[name] = dict(asdict(measure(j, both, idx, t, fps)), lag_frames=lag_frames(j, j_ref, both & ok_ref, idx),
                               lag_fixed_frames=lag_frames(j, j_ref_fixed, both & ok_ref, idx))
        report[Path(clip).name] = table
        print(f"\n{Path(clip).name}: {len(dets)} frames at {fps:.1f} fps; single {args.single}, "
              f"temporal {args.temporal}")
        print(f"{'output':<32} {'accel':>6} {'@30fps':>6} {'bone CV':>7} {'lag':>6} {'lag fx':>6} {'root step med':>13} "
              f"{'p95':>6} {'max':>6} {'depth med':>9}")
        for name, r in table.items():
            print(f"{name:<32} {r['acceleration_mm']:>6.2f} {r['acceleration_30fps_mm']:>6.2f} {r['bone_cv']:>7.3f} "
                  f"{r['lag_frames']:>+6.2f} {r.get('lag_fixed_frames', float('nan')):>+6.2f} "
                  f"{r['root_step_median_mm']:>13.1f} {r['root_step_p95_mm']:>6.1f} {r['root_step_max_mm']:>6.1f} "
                  f"{r['depth_median_mm']:>9.0f}")
    single.close()
    temporal.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


class _Closed:
    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
