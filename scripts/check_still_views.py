"""Does the still-image search on turned views (realtime.detector, `views=True`) help or hurt
beyond the 8 annotated real frames? Runs the product's IMAGE-mode detector with and without
views on the same pictures and prints, per picture set:

- rendered stills (train.synth: the MakeHuman body posed as Human3.6M S9 rows in its own
  cameras, or Bandai mocap seen by sampled webcam/H36M-like cameras), each frame drawn at
  MediaPipe's frame size as `posestream render` draws it: persons answered, 2D error of the
  pelvis and 12 limb joints (px, and % of the person's extent), share of gross 2D failures
  (median limb error > 10 % of the extent), and MPJPE / P-MPJPE (mm) of a single-frame model
  lifted from each answer (with the render's own intrinsics);
- real photos (COCO images with keypoint annotations): images answered, and the 2D error of
  the limb joints against the annotated person nearest the answer (% of that person's box);
- detection time per picture (ms, mean over the run).

    python scripts/check_still_views.py --h36m ../shared/data/h36m/h36m_val.npz --every 50 \
        --bvh ../shared/data/bandai/dataset-2/data --count 200 --coco ../shared/data/media/images/coco
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.eval_renders import LIMB_AND_PELVIS  # noqa: E402

# COCO-17 index -> our joint, for the 12 limb joints COCO annotates.
COCO_LIMBS = {5: 11, 6: 14, 7: 12, 8: 15, 9: 13, 10: 16, 11: 4, 12: 1, 13: 5, 14: 2, 15: 6, 16: 3}
LIMBS = [j for j in LIMB_AND_PELVIS if j != 0]


def render_rows(source, indices: list[int], model: str) -> dict:
    """Render each item, run both detectors, lift with `model`. Per variant: pictures,
    answered, detection ms, and the means of the other figures over the pictures that both
    variants answered (like with like)."""
    from engines.backends import open_backend
    from engines.final import FinalModel
    from engines.normalize import features_2d
    from train.metrics import mpjpe, p_mpjpe
    from train.still_eval import DetectorStandIn, frame_view
    from train.synth.samples import SampleRenderer

    from realtime.detector import PoseDetector

    r = SampleRenderer(use_mediapipe=False)
    both = DetectorStandIn(single=PoseDetector(mode="image"), views=PoseDetector(mode="image", views=True))
    r.mp = both
    be = open_backend(model, "torch")
    lifter = FinalModel.from_refiner(be, "torch") if be.metadata.get("stage") == "refiner" else be
    acc: dict[str, dict[str, list]] = {k: {"found": [], "err_px": [], "err_rel": [], "gross": [],
                                           "mpjpe": [], "p_mpjpe": []} for k in both.dets}
    try:
        for i in indices:
            s = r.render(source.item(i), np.random.default_rng([0, i]))
            f, c, gt2 = frame_view(s)                          # the frame's intrinsics and 2D
            extent = float(np.ptp(gt2, axis=0).max())
            for name, det in both.found.items():
                a = acc[name]
                a["found"].append(det is not None)
                if det is None:
                    for key in ("err_px", "err_rel", "gross", "mpjpe", "p_mpjpe"):
                        a[key].append(np.nan)
                    continue
                e = np.linalg.norm(det.joints_2d_px - gt2, axis=1)
                a["err_px"].append(float(e[list(LIMB_AND_PELVIS)].mean()))
                a["err_rel"].append(100.0 * a["err_px"][-1] / extent)
                a["gross"].append(float(np.median(e[LIMBS]) > 0.1 * extent))
                uv = det.joints_2d_px
                if isinstance(lifter, FinalModel):
                    pred = lifter.lift(both.frame, uv, f, c).joints_mm[None]
                else:
                    pred = lifter.run({"features": features_2d(uv, f, c)[None]})["joints_mm"]
                gt = s["joints_3d"][None]
                a["mpjpe"].append(float(mpjpe(pred, gt)[0]))
                a["p_mpjpe"].append(float(p_mpjpe(pred, gt)[0]))
    finally:
        both.close()
        lifter.close()
        r.close()
    common = np.logical_and.reduce([np.asarray(a["found"]) for a in acc.values()])
    out = {}
    for name, a in acc.items():
        out[name] = {"pictures": len(a["found"]), "answered": int(np.sum(a["found"])), "both_answered": int(common.sum()),
                     "unanswered": [int(i) for i, f in zip(indices, a["found"]) if not f],
                     "detect_ms": both.ms[name] / max(both.calls, 1)} | {
            key: float(np.mean(np.asarray(v)[common])) for key, v in a.items() if key != "found"}
        out[name]["gross"] *= 100.0  # percent of pictures
        # pictures only this variant answered: are those answers right?
        only = np.asarray(a["found"]) & ~common
        if only.any():
            out[name]["only_this_answered"] = {"pictures": int(only.sum()),
                                               "err_rel": float(np.mean(np.asarray(a["err_rel"])[only])),
                                               "gross": 100.0 * float(np.mean(np.asarray(a["gross"])[only])),
                                               "mpjpe": float(np.mean(np.asarray(a["mpjpe"])[only]))}
    return out


def coco_rows(folder: Path) -> dict:
    """Both detectors on each COCO image: answered, limb error vs the nearest annotated person."""
    import cv2

    from realtime.detector import PoseDetector

    ann = json.loads((folder / "test_coco.json").read_text())
    people: dict[int, list] = {}
    for a in ann["annotations"]:
        if a.get("num_keypoints", 0) > 0:
            people.setdefault(a["image_id"], []).append(a)
    out = {}
    for name, kw in (("single", {}), ("views", {"views": True})):
        rows, ms = [], 0.0
        with PoseDetector(mode="image", **kw) as det:
            for im in ann["images"]:
                bgr = cv2.imread(str(folder / im["file_name"]))
                t = time.perf_counter()
                d = det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                ms += (time.perf_counter() - t) * 1000.0
                if d is None:
                    rows.append((im["file_name"], None))
                    continue
                best = None
                for a in people.get(im["id"], []):
                    kp = np.array(a["keypoints"], np.float64).reshape(17, 3)
                    idx = [ci for ci in COCO_LIMBS if kp[ci, 2] > 0]
                    if not idx:
                        continue
                    e = np.linalg.norm(kp[idx, :2] - d.joints_2d_px[[COCO_LIMBS[ci] for ci in idx]], axis=1)
                    rel = 100.0 * float(np.median(e)) / max(a["bbox"][2], a["bbox"][3])
                    best = rel if best is None else min(best, rel)
                rows.append((im["file_name"], best))
        out[name] = {"images": len(rows), "answered": sum(r[1] is not None for r in rows),
                     "limb_err_pct_of_box": {f: (None if e is None else round(e, 1)) for f, e in rows},
                     "detect_ms": ms / max(len(rows), 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--h36m", help="Human3.6M npz (staged schema), e.g. h36m_val.npz (S9)")
    p.add_argument("--every", type=int, default=50, help="H36M: every N-th row (4 cameras each)")
    p.add_argument("--bvh", help="folder of Bandai BVH clips")
    p.add_argument("--count", type=int, default=200, help="BVH: renders")
    p.add_argument("--coco", help="folder with COCO images and test_coco.json")
    p.add_argument("--model", default="final", help="single-frame model to lift with")
    p.add_argument("--view-sides", type=float, help="width of a view in crop-box sides "
                   "(default realtime.detector.VIEW_SIDES)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.view_sides:
        import realtime.detector

        realtime.detector.VIEW_SIDES = args.view_sides
    import os
    if os.environ.get("NO_REVOTE"):
        import realtime.detector

        realtime.detector.VIEW_REVOTE = False
    from train.synth.shards import BvhSource, H36MSource

    res: dict = {}
    if args.h36m:
        src = H36MSource(args.h36m, args.every)
        res["h36m"] = render_rows(src, list(range(len(src))), args.model)
    if args.bvh:
        with tempfile.TemporaryDirectory() as tmp:
            src = BvhSource(args.bvh, args.count, cache_dir=Path(tmp), seed=0)
            res["bvh"] = render_rows(src, list(range(len(src))), args.model)
    if args.coco:
        res["coco"] = coco_rows(Path(args.coco))
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
