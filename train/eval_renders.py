"""Image benchmarks for Base vs Final (`posestream eval` on a render set or on real frames).

    posestream eval --data data_out/synth_s9 --input mp --model final --compare base_gt base_sh
    posestream eval --data data_out/synth_s9 --input sh --model final_sh --compare base_sh
    posestream eval --data ../shared/data/media/frames --model final --compare base_gt

Render set (any folder made by `posestream render`, e.g. from an npz in the staged schema):
  --input mp  MediaPipe's 2D on the render (only renders where it found the person; the
              count is reported), --input sh  the stacked-hourglass 2D of the same Human3.6M
              frame and camera, --input gt  the exact projection.
  Base models (lifters) see that 2D; Final sees it plus the crop (its generator is
  conditioned on the same 2D). Tables per action (Human3.6M renders) in the paper's layout,
  Protocol 1 and 2, and the generator's FBI accuracy per bone.
Real frames (the mmpose-layout folder in ../shared/data/media/frames): the product's still-image
detector on each image (realtime.detector, IMAGE mode with its turned views), then as above
with the dataset's own intrinsics; few frames, reported per frame with the 2D error (px) of
the pelvis and 12 limb joints against the annotation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.skeleton import FBI_BONES, JOINT_NAMES

RENDER_INPUTS = ("mp", "sh", "gt")


def bone_names() -> list[str]:
    return [f"{JOINT_NAMES[a]}->{JOINT_NAMES[b]}" for a, b in FBI_BONES]


def fbi_report(hit: np.ndarray) -> dict:
    """(N, 14) bool, FBI state right per sample and bone -> overall and per-bone accuracy."""
    return {"fbi_accuracy": float(hit.mean()),
            "fbi_per_bone": {n: float(hit[:, i].mean()) for i, n in enumerate(bone_names())}}


def predict_render_set(model: str, rs, cond: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(N, 17, 3) predictions of a lifter or refiner on a render set with crop-px 2D `cond`;
    also the FBI probabilities (N, 14, 3) for a refiner (None for a lifter) and the path."""
    from engines.backends.torch_backend import TorchBackend
    from engines.checkpoint import resolve_model_path
    from engines.normalize import features_2d
    from train.eval_common import run_in_chunks
    from train.train_generator import generator_outputs, load_generator

    path = str(resolve_model_path(model))
    be = TorchBackend(path)
    stage = be.metadata["stage"]
    feats = features_2d(rs.to_image_px(cond), rs.f, rs.c)
    if stage == "lifter":
        return run_in_chunks(be, {"features": feats}), None, path
    if stage != "refiner":
        raise UserError(f"{model} is a {stage} model: evaluate a lifter or a refiner")
    G, _ = load_generator(str(resolve_model_path(be.metadata["generator"])))
    coarse, prob = generator_outputs(G, rs, cond)
    out = run_in_chunks(be, {"features": feats, "coarse_mm": coarse, "fbi_prob": prob})
    uses_fbi = be.metadata.get("model_config", {}).get("use_fbi", True)  # an ablation may not
    return out, prob if uses_fbi else None, path


def evaluate_render_set(data: str, input_kind: str, model: str, compare: list[str]) -> dict:
    from engines.skeleton import fbi_states
    from train.eval_common import summarize
    from train.metrics import mpjpe, p_mpjpe
    from train.render_data import load_render_set

    if input_kind not in RENDER_INPUTS:
        raise UserError(f"--input for a render set must be one of {', '.join(RENDER_INPUTS)}")
    rs = load_render_set(data)
    cond = {"mp": rs.mp2d, "sh": rs.sh2d, "gt": rs.gt2d}[input_kind]
    ok = np.isfinite(cond).all((1, 2))
    if not ok.any():
        raise UserError(f"no render in {data} has {input_kind} 2D")
    rs, cond = rs.subset(np.flatnonzero(ok)), cond[ok]
    names = rs.action_names or ("all",)
    action = np.where(rs.action >= 0, rs.action, 0) if rs.action_names else np.zeros(len(rs), int)
    out: dict = {"data": str(data), "input": input_kind, "samples": int(len(rs)),
                 "samples_total": int(len(ok)), "models": {}}
    for m in [model, *compare]:
        pred, prob, path = predict_render_set(m, rs, cond)
        res = summarize(mpjpe(pred, rs.joints_3d), p_mpjpe(pred, rs.joints_3d), action, names).to_json()
        entry = {**res, "model": path, "input": input_kind,
                 # the rule applied to the 3D output (dz / |bone| needs no root): every model has this
                 "fbi_from_3d_accuracy": float((fbi_states(pred) == rs.fbi).mean())}
        if prob is not None:
            entry.update(fbi_report(prob.argmax(-1) == rs.fbi))
        out["models"][m] = entry
    return out


@dataclass(frozen=True)
class RealFrame:
    dataset: str
    name: str
    image: Path
    joints_cam_mm: np.ndarray   # (17, 3) camera coords, mm
    f: np.ndarray               # (2,) px
    c: np.ndarray               # (2,) px
    joints_2d_px: np.ndarray    # (17, 2) annotated image px
    valid_2d: np.ndarray        # (17,) bool, the annotation's flag


FROM_3DHP = [14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4]  # ours <- MPI-INF-3DHP-17


def load_real_frames(root: str | Path) -> list[RealFrame]:
    """The annotated Human3.6M and MPI-INF-3DHP frames (mmpose test layout, see the media
    README) in our joint order: 3D in camera coordinates (m -> mm), each camera's f, c, and
    the annotated 2D with its flags."""
    import pickle

    root = Path(root)
    h = root / "h36m" / "test_h36m_body3d.npz"
    if not h.is_file():
        raise UserError(f"{root} is not the annotated-frames folder (no h36m/test_h36m_body3d.npz)")
    out = []
    cams = pickle.load(open(root / "h36m" / "cameras.pkl", "rb"))
    z = np.load(h)
    for name, S, part in zip(z["imgname"], z["S"], z["part"]):
        stem = Path(str(name)).stem                       # e.g. S1_Directions_1.54138969_000001
        subj, cam = str(name).split("/")[0], stem.split(".")[1].split("_")[0]
        cp = cams[(subj, cam)]
        out.append(RealFrame("h36m", stem, root / "h36m" / str(name), S[:, :3] * 1000.0,
                             np.ravel(cp["f"]), np.ravel(cp["c"]), part[:, :2], part[:, 2] > 0))
    tr = pickle.load(open(root / "mpi_inf_3dhp" / "cameras_train.pkl", "rb"))
    te = pickle.load(open(root / "mpi_inf_3dhp" / "cameras_test.pkl", "rb"))
    for split in ("train", "test"):
        z = np.load(root / "mpi_inf_3dhp" / f"test_3dhp_{split}.npz")
        for name, S, part in zip(z["imgname"], z["S"], z["part"]):
            stem = Path(str(name)).stem
            key = "_".join(stem.split("_")[:3]) if split == "train" else stem.split("_")[0]
            cp = (tr if split == "train" else te)[key]
            p2 = part[FROM_3DHP]
            out.append(RealFrame("3dhp", stem, root / "mpi_inf_3dhp" / str(name), S[FROM_3DHP, :3] * 1000.0,
                                 np.ravel(cp["f"]), np.ravel(cp["c"]), p2[:, :2], p2[:, 2] > 0))
    return out


MEDIAPIPE_WORLD = "mediapipe_world"   # MediaPipe's own world landmarks, a reference row of the real-frame table
# The 13 joints the real-frame P-MPJPE target is set on: the pelvis and the 12 limb joints.
LIMB_AND_PELVIS = (0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16)


def pose_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pose MPJPE, P-MPJPE and P-MPJPE on LIMB_AND_PELVIS of (N, 17, 3) poses: (N,) mm each."""
    from train.metrics import mpjpe, p_mpjpe

    sel = list(LIMB_AND_PELVIS)
    return {"mpjpe": mpjpe(pred, gt), "p_mpjpe": p_mpjpe(pred, gt), "p_mpjpe13": p_mpjpe(pred[:, sel], gt[:, sel])}


def _frame_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """pose_errors of one frame (1, 17, 3), as floats named `<figure>_mm`."""
    return {f"{k}_mm": float(v[0]) for k, v in pose_errors(pred, gt).items()}


def evaluate_real_frames(root: str, model: str, compare: list[str], views: bool = True,
                         input_kind: str = "mp") -> dict:
    """The product's still-image path on each frame (realtime.detector in IMAGE mode, with its
    turned views unless `views` is False), then every model; per-frame errors. input_kind
    "gt" lifts the annotated 2D instead (no MediaPipe): what the lifting alone gets wrong."""
    import cv2

    from engines.backends import open_backend
    from engines.final import FinalModel
    from engines.normalize import features_2d
    from engines.skeleton import fbi_states, root_relative
    from realtime.detector import PoseDetector

    frames = load_real_frames(root)
    rows: list[dict] = []
    opened: dict[str, object] = {}
    det = PoseDetector(mode="image", views=views) if input_kind != "gt" else None
    try:
        for m in [model, *compare]:
            be = open_backend(m, "torch")
            opened[m] = FinalModel.from_refiner(be, "torch") if be.metadata.get("stage") == "refiner" else be
        for fr in frames:
            rgb = cv2.cvtColor(cv2.imread(str(fr.image)), cv2.COLOR_BGR2RGB)
            d = det.detect(rgb) if det is not None else None
            row: dict = {"dataset": fr.dataset, "frame": fr.name, "detected": d is not None}
            if d is not None or det is None:
                uv = d.joints_2d_px if d is not None else fr.joints_2d_px.astype(np.float32)
                gt = root_relative(fr.joints_cam_mm)[None]
                row["error_2d_px"] = float(np.linalg.norm(uv - fr.joints_2d_px, axis=1)[list(LIMB_AND_PELVIS)].mean())
                if d is not None:  # MediaPipe's own 3D, for reference
                    w = d.world_mm[None]
                    row[MEDIAPIPE_WORLD] = _frame_errors(w - w[:, :1], gt)
                for m, be in opened.items():
                    if isinstance(be, FinalModel):
                        o = be.lift(rgb, uv, fr.f, fr.c)
                        pred = o.joints_mm[None]
                        hit = o.fbi_prob.argmax(-1) == fbi_states(fr.joints_cam_mm)
                        row.setdefault("fbi_hits", hit.astype(int).tolist())
                    else:
                        pred = be.run({"features": features_2d(uv, fr.f, fr.c)[None]})["joints_mm"]
                    row[m] = _frame_errors(pred, gt)
            rows.append(row)
    finally:
        for be in opened.values():
            be.close()
        if det is not None:
            det.close()
    summary = {}
    for m in [*opened, MEDIAPIPE_WORLD]:
        for ds in ("h36m", "3dhp", "all"):
            r = [x[m] for x in rows if m in x and ds in (x["dataset"], "all")]
            if r:
                summary.setdefault(m, {})[ds] = {k: float(np.mean([v[k] for v in r])) for k in r[0]} | {"frames": len(r)}
    hits = np.array([x["fbi_hits"] for x in rows if "fbi_hits" in x])
    fbi = {}
    if len(hits):
        fbi = fbi_report(hits)
    return {"data": str(root), "input": "gt" if input_kind == "gt" else "mp", "views": bool(views), "frames": rows,
            "summary": summary, **fbi, "model": model}


def render_markdown(out: dict) -> str:
    from train.eval_common import format_table, result_from_json

    lines = [f"render set `{out['data']}`, 2D input `{out['input']}`: {out['samples']} of "
             f"{out['samples_total']} renders have it"]
    for m, e in out["models"].items():
        lines += ["", format_table(f"{m} ({Path(e['model']).name})", result_from_json(e))]
    lines += ["", "FBI states implied by each model's 3D output (engines.skeleton rule), accuracy: " +
              ", ".join(f"{m} {100 * e['fbi_from_3d_accuracy']:.1f}%" for m, e in out["models"].items())]
    for m, e in out["models"].items():
        if "fbi_accuracy" in e:
            per = e["fbi_per_bone"]
            lines += ["", f"FBI accuracy of {m}'s generator (FBI branch): {100 * e['fbi_accuracy']:.1f}%", "",
                      "| bone | " + " | ".join(per) + " |", "|---" * (len(per) + 1) + "|",
                      "| accuracy % | " + " | ".join(f"{100 * v:.1f}" for v in per.values()) + " |"]
    return "\n".join(lines)


def real_markdown(out: dict) -> str:
    models = list(out["summary"])

    def cell(d: dict) -> str:
        return f"{d['mpjpe_mm']:.1f} / {d['p_mpjpe_mm']:.1f} / {d['p_mpjpe13_mm']:.1f}"

    source = ("the annotated 2D" if out.get("input") == "gt" else
              f"MediaPipe 2D, IMAGE mode, {'turned views' if out.get('views', True) else 'one pass'}")
    lines = [f"real annotated frames ({source}; few frames: indicative only); MPJPE / P-MPJPE / "
             f"P-MPJPE on the pelvis and 12 limb joints; `{MEDIAPIPE_WORLD}` is MediaPipe's own world landmarks; "
             "2D: mean error of the pelvis and 12 limb joints, px", "",
             "| frame | 2D px | " + " | ".join(models) + " |", "|---" * (len(models) + 2) + "|"]
    for r in out["frames"]:
        cells = [cell(r[m]) if m in r else "not detected" for m in models]
        px = f"{r['error_2d_px']:.1f}" if "error_2d_px" in r else "-"
        lines.append(f"| {r['dataset']} {r['frame']} | {px} | " + " | ".join(cells) + " |")
    for ds in ("h36m", "3dhp", "all"):
        cells = [cell(out["summary"][m][ds]) if ds in out["summary"].get(m, {}) else "-" for m in models]
        px = [r["error_2d_px"] for r in out["frames"] if "error_2d_px" in r and ds in (r["dataset"], "all")]
        lines.append(f"| **{ds} mean** | {f'{np.mean(px):.1f}' if px else '-'} | " + " | ".join(cells) + " |")
    if "fbi_accuracy" in out:
        lines += ["", f"FBI accuracy ({out['model']}): {100 * out['fbi_accuracy']:.1f}% over "
                      f"{sum(1 for r in out['frames'] if 'fbi_hits' in r)} frames x 14 bones"]
    return "\n".join(lines)
