"""Mirrored 2D on fresh S8 sequence renders, through the product's detector (`--mirror-2d`).

    python scripts/mirror_s8.py render OUT.npz [--subject 8] [--clips 24] [--cameras 0,1,2,3] [--seed 77] [--h36m DIR]
    python scripts/mirror_s8.py eval OUT.npz [--model temporal_mp --model single_mp]

render: clips of 5 s at 30 fps of one subject's Human3.6M sequences, rendered as `posestream
render --sequence` does (train.synth.sequences.ClipRenderer, MediaPipe in VIDEO mode on each
frame), with the renderer's MediaPipe replaced by realtime.detector.PoseDetector(mode="video",
mirror=True) (no re-detection, as the renders). Per frame it stores the detector's normal pass
(what the renders store: mp_*), its mirrored pass mapped back (mir_*) and the merged result it
returns (mrg_*), each as 17 joints (px) and confidence.

eval: on the frames where both passes found the person, the 2D error against the exact
projection (px; and of the displacement over 3 frames = 100 ms), then each model on the normal,
the mirrored, the plainly averaged and the merged 2D: MPJPE (mm) and MPJVE per frame and per
100 ms (mm), as train.eval_sequences measures them (windows resampled by timestamp over the
frames of the clip taken as detected).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.skeleton import NUM_JOINTS  # noqa: E402

H36M = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "h36m"
PASSES = ("mp", "mir", "mrg")  # normal, mirrored (mapped back), merged


class _ProductDetector:
    """Stands in for train.synth.samples.MediaPipe2D in the renderer: the product's detector
    with the mirrored pass; returns the normal pass (what the renders store) and records the
    three passes of each frame in `frames`."""

    MAX_SIDE = 640
    frames: list[dict] = []

    def __init__(self, model: str | None = None, video: bool = True) -> None:
        from realtime.detector import PoseDetector

        self.det = PoseDetector(model, mode="video", mirror=True)
        seen: dict = {}
        landmarks, mirrored = self.det._landmarks, self.det._mirrored

        def spy_landmarks(image, ts, roi=None):
            people, mp_image = landmarks(image, ts, roi)
            seen["mp"] = people[0] if people else None
            return people, mp_image

        def spy_mirrored(image, ts_ms):
            people = mirrored(image, ts_ms)
            seen["mir"] = people[0] if people else None
            return people

        self.det._landmarks, self.det._mirrored, self.seen = spy_landmarks, spy_mirrored, seen

    def close(self) -> None:
        self.det.close()

    def detect_video(self, rgb: np.ndarray, ts_ms: int) -> tuple[np.ndarray, np.ndarray] | None:
        self.seen.clear()
        merged = self.det.detect(rgb, ts_ms / 1000.0)
        self.frames.append({"mp": self.seen.get("mp"), "mir": self.seen.get("mir"), "mrg": merged})
        d = self.seen.get("mp")
        if d is None:
            return None
        return (np.concatenate([d.landmarks_px, d.visibility[:, None]], axis=1).astype(np.float32),
                d.landmarks_world_mm.astype(np.float32))


def render(args: argparse.Namespace) -> int:
    import train.synth.samples as samples
    from engines.landmarks import landmarks_to_joints_2d
    from train.synth.sequences import ClipRenderer, H36MClips

    path = args.h36m / ("h36m_val.npz" if args.subject == 9 else "h36m_train.npz")
    cameras = tuple(int(c) for c in args.cameras.split(","))
    clips = H36MClips(str(path), cameras=cameras, fps=30.0, seconds=5.0, start="random", seed=args.seed)
    items = [i for i, it in enumerate(clips.items) if int(clips.subject[it[0]]) == args.subject]
    pick = np.random.default_rng(args.seed).choice(items, size=min(args.clips, len(items)), replace=False)
    samples.MediaPipe2D = _ProductDetector  # the renderer makes one per clip (a cold start, as a new file)
    renderer = ClipRenderer(True, None, None)
    keys = ["mp_joints_2d", "mp_conf", "mp_found", "joints_2d_image", "joints_3d", "time_ms", "row", "f", "c",
            "subject", "camera_index", "action", "visibility"]
    out: dict[str, list] = {k: [] for k in keys + ["clip_id"] + [f"{p}_{k}" for p in PASSES[1:]
                                                                 for k in ("joints_2d", "conf", "found")]}
    t0 = time.time()
    try:
        for k, i in enumerate(sorted(int(i) for i in pick)[:args.limit]):
            _ProductDetector.frames.clear()
            d = renderer.render(clips.item(i), np.random.default_rng([args.seed, i]))
            T = len(d["time_ms"])
            W, H = d["image_size"][0]
            s = min(1.0, _ProductDetector.MAX_SIDE / max(W, H))
            fw, fh = max(int(round(W * s)), 1), max(int(round(H * s)), 1)
            scale = np.array([fw / W, fh / H])
            for p in PASSES[1:]:
                j2d = np.full((T, NUM_JOINTS, 2), np.nan, np.float32)
                conf = np.zeros((T, NUM_JOINTS), np.float32)
                found = np.zeros(T, bool)
                for t, rec in enumerate(_ProductDetector.frames):
                    det = rec[p]
                    if det is None:
                        continue
                    # the render's frame -> full image px (pixel centres), as the renderer maps the normal pass
                    lm = (det.landmarks_px + 0.5) / scale - 0.5
                    j2d[t], conf[t] = landmarks_to_joints_2d(lm, np.clip(det.visibility, 0, 1))
                    found[t] = True
                out[f"{p}_joints_2d"].append(j2d)
                out[f"{p}_conf"].append(conf)
                out[f"{p}_found"].append(found)
            for key in keys:
                out[key].append(d[key])
            out["clip_id"].append(np.full(T, k, np.int32))
            print(f"clip {k + 1}/{len(pick)} (item {i}): {T} frames, {time.time() - t0:.0f} s", flush=True)
    finally:
        renderer.close()
    tmp = Path(str(args.out) + ".tmp.npz")
    np.savez(tmp, **{k: np.concatenate(v) for k, v in out.items()})
    tmp.rename(args.out)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from train.eval_sequences import _predict, velocity_error
    from train.sequence_sets import SequenceSet

    z = dict(np.load(args.data))
    n = len(z["time_ms"])
    gt2d, clip = z["joints_2d_image"], z["clip_id"]
    both = z["mp_found"] & z["mir_found"]
    print(f"{n} frames of {len(np.unique(clip))} clips; found by the normal pass {z['mp_found'].sum()}, the mirrored "
          f"{z['mir_found'].sum()}, both {both.sum()}, the merge {z['mrg_found'].sum()}; evaluated on the {both.sum()} "
          f"frames both passes found")
    nan = np.full((n, 33, 3), np.nan, np.float32)
    variants = {"normal": z["mp_joints_2d"], "mirrored": z["mir_joints_2d"],
                "plain average": (z["mp_joints_2d"] + z["mir_joints_2d"]) / 2, "merged (--mirror-2d)": z["mrg_joints_2d"]}
    t = np.flatnonzero(both)
    c = clip[t]
    pair1 = np.flatnonzero((c[1:] == c[:-1]) & (t[1:] - t[:-1] == 1))
    pair3 = np.flatnonzero((c[3:] == c[:-3]) & (t[3:] - t[:-3] == 3))
    gt = z["joints_3d"][t]
    for name, m2d in variants.items():
        e = m2d - gt2d
        k = np.flatnonzero((clip[3:] == clip[:-3]) & both[3:] & both[:-3])
        row = [f"{name:<22} 2D {np.linalg.norm(e[both], axis=-1).mean():6.2f} px, 100 ms {np.linalg.norm(e[k + 3] - e[k], axis=-1).mean():5.2f} px"]
        ss = SequenceSet(gt2d=gt2d, mp2d=m2d.astype(np.float32), found=both.copy(), mp_conf=z["mp_conf"], landmarks=nan,
                         world_mm=nan, joints_3d=z["joints_3d"], root_cam=np.full((n, 3), np.nan, np.float32),
                         fbi=np.zeros((n, 14), np.int8), coarse_mm=np.full((n, 17, 3), np.nan, np.float32),
                         fbi_prob=np.full((n, 14, 3), np.nan, np.float32), visibility=z["visibility"], f=z["f"], c=z["c"],
                         time_ms=z["time_ms"], clip=clip, row=z["row"], seq=clip, camera=z["camera_index"],
                         subject=z["subject"], action=z["action"], action_names=())
        for model in args.model or ["temporal_mp", "single_mp"]:
            p, _, _ = _predict(model, ss, t)
            row.append(f"{model} MPJPE {np.linalg.norm(p - gt, axis=-1).mean():6.2f} MPJVE 1 frame "
                       f"{velocity_error(p, gt, pair1, 1):5.2f} 100 ms {velocity_error(p, gt, pair3, 3):5.2f}")
        print(" | ".join(row), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("out", type=Path)
    r.add_argument("--subject", type=int, default=8)
    r.add_argument("--clips", type=int, default=24)
    r.add_argument("--cameras", default="0,1,2,3")
    r.add_argument("--seed", type=int, default=77)
    r.add_argument("--h36m", type=Path, default=H36M, help=f"Human3.6M npz folder (default {H36M})")
    r.add_argument("--limit", type=int, default=None, help="render only the first N of the chosen clips (a check)")
    e = sub.add_parser("eval")
    e.add_argument("data", type=Path)
    e.add_argument("--model", action="append")
    args = ap.parse_args()
    return render(args) if args.cmd == "render" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
