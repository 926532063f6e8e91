"""Still-lift evaluation away from the 8 annotated real frames: which single-frame lifter (or
average of lifters) should lift unrelated stills?

Two steps, so lifters can be compared fast:

    python -m train.still_eval cache --h36m ../shared/data/h36m/h36m_val.npz --h36m-count 300 \\
        --bvh ../shared/data/bandai/dataset-2/data --bvh-count 300 --out data_out/still_eval
    python -m train.still_eval eval data_out/still_eval final base_gt single_mp final+base_gt ...

`cache` renders pictures (train.synth: the MakeHuman body posed as Human3.6M S9 rows in S9's
own cameras, one camera per row in turn, rows evenly spread; or random Bandai mocap frames
seen by sampled webcam/H36M-like cameras), each drawn at MediaPipe's frame size as
`posestream render` draws it, and runs the product's still-image detector on it
(realtime.detector, IMAGE mode with the turned views, as image folders and `--image-mode`
stills get). It keeps, per picture: the detected 2D, the frame's intrinsics, the ground-truth
root-relative 3D, MediaPipe's world landmarks, and the Final generator's inputs (the 256 crop
around the detected 2D), in chunk files written atomically (a rerun skips the chunks that
exist).

`eval` lifts the cached 2D with each candidate: a shipped model name, or members joined by
`+` (the mean of their root-relative 3D, e.g. `final+base_gt`). Per picture
set and pooled over both (the mean of the two sets' means): MPJPE, P-MPJPE and P-MPJPE on the
pelvis and 12 limb joints (the real-frame target's joints), and for each candidate the
difference to the first one on P-MPJPE13 with a 95 % bootstrap interval over pictures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import UserError

# The 13 joints the real-frame target is set on (train.eval_renders.LIMB_AND_PELVIS).
from train.eval_renders import LIMB_AND_PELVIS, pose_errors

SEPARATOR = "+"  # joins the members of an averaged candidate
SETS = ("s9", "s9_sitting", "bandai")
POOLED = ("s9", "bandai")  # the sets the pick is made on (s9_sitting is a subset of S9's poses)
SITTING = ("Sitting", "SittingDown")  # the Human3.6M actions with floor and chair sitting, bending
CHUNK = 50  # pictures per cache file
BOOTSTRAP = 2000


def frame_view(s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rendered sample (train.synth.samples.SampleRenderer.render) as MediaPipe's frame shows
    it (the whole image at <= MediaPipe2D.MAX_SIDE px): the frame's intrinsics f, c (2,) px
    and the ground-truth 2D (17, 2) in frame px."""
    from train.synth.samples import MediaPipe2D

    W, H = (int(v) for v in s["image_size"])
    sc = min(1.0, MediaPipe2D.MAX_SIDE / max(W, H))
    k = np.array([max(round(W * sc), 1) / W, max(round(H * sc), 1) / H])
    return s["f"] * k, s["c"] * k + 0.5 * k - 0.5, s["joints_2d_image"] * k + 0.5 * k - 0.5


class DetectorStandIn:
    """Stands in for a renderer's MediaPipe (train.synth.samples.SampleRenderer.mp): runs each
    named detector (realtime.detector.PoseDetector) on the frame it is shown and keeps the
    frame, their answers (`found`) and times (`last_ms`, total `ms`); returns None, so the
    render's own crop comes from the ground truth and is not needed."""

    def __init__(self, **detectors: Any) -> None:
        self.dets = detectors
        self.frame: np.ndarray | None = None
        self.found: dict[str, Any] = {}
        self.last_ms = {k: 0.0 for k in detectors}
        self.ms = {k: 0.0 for k in detectors}
        self.calls = 0

    def detect(self, frame: np.ndarray) -> None:
        self.frame = frame
        for k, d in self.dets.items():
            t = time.perf_counter()
            self.found[k] = d.detect(frame)
            self.last_ms[k] = (time.perf_counter() - t) * 1000.0
            self.ms[k] += self.last_ms[k]
        self.calls += 1
        return None

    def close(self) -> None:
        for d in self.dets.values():
            d.close()


def s9_indices(source, count: int, rows: np.ndarray | None = None) -> list[int]:
    """`count` items of an H36MSource (every=1, 4 cameras): rows (of `rows`, default all)
    evenly spread, one camera per row, in turn."""
    rows = np.arange(len(source) // len(source.cameras)) if rows is None else np.asarray(rows)
    rows = rows[np.linspace(0, len(rows) - 1, count).round().astype(int)]
    return [int(r) * len(source.cameras) + k % len(source.cameras) for k, r in enumerate(rows)]


def cache_chunk(source, indices: list[int], path: Path) -> None:
    """Render `indices` of `source`, detect, write one chunk file (atomically)."""
    from engines.final import crop_input
    from realtime.detector import PoseDetector
    from train.synth.samples import SampleRenderer

    r = SampleRenderer(use_mediapipe=False)
    still = DetectorStandIn(views=PoseDetector(mode="image", views=True))
    r.mp = still
    rows: dict[str, list] = {k: [] for k in ("index", "found", "uv", "f", "c", "gt2d", "joints_3d", "world_mm",
                                             "crop", "joints_crop", "detect_ms")}
    try:
        for i in indices:
            s = r.render(source.item(i), np.random.default_rng([0, i]))
            f, c, gt2 = frame_view(s)
            d = still.found["views"]
            rows["index"].append(i)
            rows["found"].append(d is not None)
            rows["f"].append(f)
            rows["c"].append(c)
            rows["gt2d"].append(gt2)
            rows["joints_3d"].append(s["joints_3d"])
            rows["detect_ms"].append(still.last_ms["views"])
            if d is None:
                rows["uv"].append(np.full((17, 2), np.nan))
                rows["world_mm"].append(np.full((17, 3), np.nan))
                rows["crop"].append(np.zeros((256, 256, 3), np.uint8))
                rows["joints_crop"].append(np.full((17, 2), np.nan))
                continue
            img, jc, _ = crop_input(still.frame, d.joints_2d_px)
            rows["uv"].append(d.joints_2d_px)
            rows["world_mm"].append(d.world_mm)
            rows["crop"].append(np.round(img[0].transpose(1, 2, 0) * 255.0).astype(np.uint8))
            rows["joints_crop"].append(jc[0])
    finally:
        still.close()
        r.close()
    arrays = {k: np.asarray(v, np.uint8 if k == "crop" else None) for k, v in rows.items()}
    arrays = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in arrays.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


def build_cache(out: Path, h36m: str | None, h36m_count: int, bvh: str | None, bvh_count: int,
                sitting_count: int = 0, names: tuple[str, str, str] = SETS, bvh_seed: int = 0, log=print) -> None:
    """Chunk files out/SET_KKK.npz for the sets `names` (default: S9, S9-sitting and Bandai):
    rows of the Human3.6M file, rows of its SITTING actions, random Bandai frames (BvhSource
    seed `bvh_seed`), interleaved (the sets grow together), skipping chunks that exist."""
    from train.synth.shards import BvhSource, H36MSource

    out.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, object, list[int]]] = []
    if h36m:
        src = H36MSource(h36m, 1)
        plan.append((names[0], src, s9_indices(src, h36m_count)))
        if sitting_count:
            from train.h36m import open_npz

            d = open_npz(h36m)
            sit = [list(d["action_names"]).index(a) for a in SITTING]
            plan.append((names[1], src, s9_indices(src, sitting_count, np.flatnonzero(np.isin(d["action"], sit)))))
    if bvh:
        src = BvhSource(bvh, bvh_count, cache_dir=out, seed=bvh_seed)
        plan.append((names[2], src, list(range(bvh_count))))
    if not plan:
        raise UserError("nothing to cache: give --h36m and/or --bvh")
    run_plan(out, plan, log)


def run_plan(out: Path, plan: list[tuple[str, Any, list[int]]], log=print) -> None:
    """Chunk files out/NAME_KKK.npz of CHUNK pictures for each (name, source, indices) of
    `plan`, the sets interleaved chunk by chunk (they grow together), skipping chunks that
    exist (cache_chunk)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k in range(max(-(-len(idx) // CHUNK) for _, _, idx in plan)):
        for name, src, idx in plan:
            part = idx[k * CHUNK:(k + 1) * CHUNK]
            if part:
                jobs.append((out / f"{name}_{k:03d}.npz", src, part))
    for path, src, part in jobs:
        if path.is_file():
            continue
        t = time.time()
        cache_chunk(src, part, path)
        log(f"{path.name}: {len(part)} pictures, {time.time() - t:.0f} s", flush=True)


def load_cache(folder: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The cached sets: {set: arrays over its pictures} (only sets with chunks)."""
    folder = Path(folder)
    out = {}
    for name in SETS:
        files = sorted(folder.glob(f"{name}_[0-9][0-9][0-9].npz"))
        if files:
            parts = [dict(np.load(f)) for f in files]
            out[name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if not out:
        raise UserError(f"{folder} holds no cached pictures (run `python -m train.still_eval cache` first)")
    return out


def _open_member(name: str, backend: str) -> Any:
    """A single-frame model by name: a FinalModel for a refiner, else its backend (a lifter);
    UserError for anything else (a temporal model, a generator)."""
    from engines.backends import open_backend
    from engines.final import FinalModel

    be = open_backend(name, backend)
    stage = be.metadata.get("stage")
    if stage == "refiner":
        return FinalModel.from_refiner(be, backend)
    if stage != "lifter":
        be.close()
        raise UserError(f"{name} is a {stage} model: candidates are single-frame lifters and Final models")
    return be


def lift_cached(model: str, data: dict[str, np.ndarray], backend: str = "onnxruntime") -> np.ndarray:
    """Root-relative 3D (N, 17, 3) float32 mm of a candidate on the answered pictures of one
    set: a shipped single-frame model, or the mean of several joined by `+`."""
    from engines.final import FinalModel
    from engines.normalize import features_2d

    names = model.split(SEPARATOR)
    if any(not n for n in names) or len(set(names)) != len(names):
        raise UserError(f"candidate {model!r}: members joined by '{SEPARATOR}', each once, e.g. final+base_gt")
    ok = data["found"]
    feats = features_2d(data["uv"][ok], data["f"][ok], data["c"][ok])
    img = np.ascontiguousarray(data["crop"][ok].transpose(0, 3, 1, 2), np.float32) / np.float32(255.0)
    jc = data["joints_crop"][ok]
    preds = []
    for n in names:
        m = _open_member(n, backend)
        try:
            out = []
            for a in range(0, len(feats), 64):
                sl = slice(a, a + 64)
                if isinstance(m, FinalModel):
                    out.append(m.lift_crops(img[sl], jc[sl], feats[sl])[0])
                else:
                    j = np.asarray(m.run({"features": feats[sl]})["joints_mm"], np.float32)
                    out.append(j - j[:, :1])
            preds.append(np.concatenate(out))
        finally:
            m.close()
    return np.mean(preds, axis=0).astype(np.float32)


def lift_cached_mirrored(model: str, data: dict[str, np.ndarray], backend: str = "onnxruntime") -> np.ndarray:
    """As lift_cached for a Final model, its generator also run on the mirrored crop (the
    refiner is flip-averaged already, the generator is not): the mirrored pass's coarse 3D
    and FBI probabilities mirrored back (train.render_data.mirror_matrices: the reflection
    about the plane through the crop centre's ray, as the generator was trained) and averaged
    with the plain pass's before the refiner."""
    from engines.crop import CROP_SIZE, box_from_joints
    from engines.final import FinalModel
    from engines.normalize import features_2d
    from engines.skeleton import FBI_FLIP_PERMUTATION, FLIP_PERMUTATION
    from train.render_data import mirror_matrices

    ok = data["found"]
    uv, f, c = data["uv"][ok], data["f"][ok], data["c"][ok]
    feats = features_2d(uv, f, c)
    img = np.ascontiguousarray(data["crop"][ok].transpose(0, 3, 1, 2), np.float32) / np.float32(255.0)
    jc = data["joints_crop"][ok]
    perm = list(FLIP_PERMUTATION)
    jc_m = jc[:, perm].copy()
    jc_m[..., 0] = (CROP_SIZE - 1) - jc_m[..., 0]
    box = np.array([[b.cx, b.cy, b.side] for b in (box_from_joints(u) for u in uv)])
    mats = mirror_matrices(box, c, f)
    with FinalModel.open(model, backend) as m:
        out = []
        for a in range(0, len(feats), 64):
            sl = slice(a, a + 64)
            g = m.generator.run({"image": img[sl], "joints_crop": jc[sl]})
            gm = m.generator.run({"image": np.ascontiguousarray(img[sl][..., ::-1]), "joints_crop": jc_m[sl]})
            coarse_m = np.einsum("bij,bkj->bki", mats[sl], np.asarray(gm["coarse_mm"])[:, perm])
            coarse = 0.5 * (np.asarray(g["coarse_mm"]) + coarse_m)
            prob = 0.5 * (np.asarray(g["fbi_prob"]) + np.asarray(gm["fbi_prob"])[:, list(FBI_FLIP_PERMUTATION)])
            j = m.refiner.run({"features": feats[sl], "coarse_mm": coarse.astype(np.float32),
                               "fbi_prob": prob.astype(np.float32)})["joints_mm"]
            out.append(j - j[:, :1])
    return np.concatenate(out)


def bootstrap_diff(diffs: list[np.ndarray], n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Mean over sets of each set's mean difference, and its 95 % bootstrap interval
    (pictures resampled within each set)."""
    rng = np.random.default_rng(seed)
    means = np.zeros(n)
    for d in diffs:
        means += d[rng.integers(len(d), size=(n, len(d)))].mean(1)
    means /= len(diffs)
    est = float(np.mean([d.mean() for d in diffs]))
    return est, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def evaluate(folder: str | Path, candidates: list[str], backend: str = "onnxruntime",
             mirrored: list[str] = ()) -> dict:
    """Every candidate on every cached set (module docstring); the first candidate is the
    reference of the differences."""
    cache = load_cache(folder)
    res: dict = {"sets": {}, "candidates": {}}
    per: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, data in cache.items():
        ok = data["found"]
        gt = data["joints_3d"][ok]
        e2d = np.linalg.norm(data["uv"][ok] - data["gt2d"][ok], axis=-1)[:, list(LIMB_AND_PELVIS)].mean(1)
        res["sets"][name] = {"pictures": int(len(ok)), "answered": int(ok.sum()), "error_2d_px": float(e2d.mean()),
                             "detect_ms": float(data["detect_ms"].mean())}
        w = data["world_mm"][ok]
        per.setdefault("mediapipe_world", {})[name] = pose_errors(w - w[:, :1], gt)
        for m in candidates:
            per.setdefault(m, {})[name] = pose_errors(lift_cached(m, data, backend), gt)
        for m in mirrored:
            per.setdefault(f"{m} (generator mirrored too)", {})[name] = pose_errors(lift_cached_mirrored(m, data, backend), gt)
    ref = candidates[0]
    for m, by_set in per.items():
        row: dict = {}
        for name, e in by_set.items():
            row[name] = {k: float(v.mean()) for k, v in e.items()}
            d = e["p_mpjpe13"] - per[ref][name]["p_mpjpe13"]
            row[name]["diff13"] = bootstrap_diff([d])
        pool = [s for s in POOLED if s in by_set]
        row["pooled"] = {k: float(np.mean([row[s][k] for s in pool])) for k in ("mpjpe", "p_mpjpe", "p_mpjpe13")}
        row["pooled"]["diff13"] = bootstrap_diff([by_set[s]["p_mpjpe13"] - per[ref][s]["p_mpjpe13"] for s in pool])
        res["candidates"][m] = row
    res["reference"] = ref
    return res


def markdown(res: dict) -> str:
    sets = list(res["sets"])
    head = ", ".join(f"{s}: {v['answered']} of {v['pictures']} answered, 2D {v['error_2d_px']:.2f} px, "
                     f"detection {v['detect_ms']:.0f} ms" for s, v in res["sets"].items())
    lines = [head, "", f"MPJPE / P-MPJPE / P-MPJPE13, mm; diff: P-MPJPE13 minus `{res['reference']}`'s, "
                       "[95 % bootstrap interval]", "",
             "| candidate | " + " | ".join(sets) + f" | pooled (mean of {' and '.join(POOLED)}) | " +
             " | ".join(f"diff {s}" for s in sets) + " | diff pooled |",
             "|---" * (2 * len(sets) + 3) + "|"]
    for m, row in res["candidates"].items():
        cells = [f"{row[s]['mpjpe']:.1f} / {row[s]['p_mpjpe']:.1f} / {row[s]['p_mpjpe13']:.1f}" for s in [*sets, "pooled"]]
        diffs = [f"{row[s]['diff13'][0]:+.1f} [{row[s]['diff13'][1]:+.1f}, {row[s]['diff13'][2]:+.1f}]"
                 for s in [*sets, "pooled"]]
        lines.append(f"| `{m}` | " + " | ".join(cells + diffs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="render pictures, run the still-image detector, keep its 2D")
    c.add_argument("--h36m", help="Human3.6M npz (staged schema) of the held-out subject, e.g. h36m_val.npz (S9)")
    c.add_argument("--h36m-count", type=int, default=300)
    c.add_argument("--sitting-count", type=int, default=0,
                   help="also this many pictures of the --h36m file's Sitting and SittingDown rows")
    c.add_argument("--bvh", help="folder of Bandai BVH clips")
    c.add_argument("--bvh-count", type=int, default=300)
    c.add_argument("--out", required=True)
    c.add_argument("--names", nargs=3, default=list(SETS), metavar=("H36M", "SITTING", "BVH"),
                   help="the sets' names (eval reads the defaults; other names make training pictures)")
    c.add_argument("--bvh-seed", type=int, default=0, help="which Bandai frames, bodies and cameras")
    e = sub.add_parser("eval", help="lift the cached 2D with each candidate")
    e.add_argument("cache")
    e.add_argument("candidates", nargs="+", help="shipped model names, or members joined by + (averaged)")
    e.add_argument("--backend", default="onnxruntime")
    e.add_argument("--mirror-generator", nargs="*", default=[], metavar="MODEL",
                   help="Final models to evaluate also with their generator run on the mirrored crop")
    e.add_argument("--json")
    a = p.parse_args(argv)
    try:
        if a.cmd == "cache":
            build_cache(Path(a.out), a.h36m, a.h36m_count, a.bvh, a.bvh_count, a.sitting_count, tuple(a.names), a.bvh_seed)
            return 0
        res = evaluate(a.cache, a.candidates, a.backend, a.mirror_generator)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
