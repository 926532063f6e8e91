"""Evaluation on a sequence render set (`posestream render --sequence`, MediaPipe in VIDEO mode).

    posestream eval --data data_out/seq_s9
    posestream eval --data data_out/seq_s9 --model runs/x/best.pt --compare temporal_mp

Every model sees MediaPipe's 2D of the rendered video, as the app would:
  * single-frame lifters (stage lifter): the 2D of the evaluated frame;
  * the Final model (a refiner): that plus its generator's coarse 3D and FBI, stored per frame
    by the render (`--cues`) from the crop the app would cut;
  * temporal models: their window resampled by timestamp (engines.temporal.timed_windows)
    from the frames of the clip where MediaPipe found the person (frames without a detection
    are skipped, as a dropped frame in the app's history), each frame's input computed by the
    function the model names (WindowSpec.frame_input, with its cues).
Metrics are taken on the frames that show a Human3.6M row exactly (`row` >= 0; on the S9 set
rendered at 30 fps from its 10 Hz rows, every 3rd frame) where MediaPipe found the person:
MPJPE and P-MPJPE per action (averaged over actions, as the Human3.6M tables), and MPJVE, the
mean per-joint error of the root-relative velocity between consecutive such rows (mm per row
step, 100 ms on S9), over pairs of evaluated rows that follow each other in a clip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.skeleton import NUM_JOINTS

DEFAULT_MODELS = ("base_gt", "final", "single_mp", "temporal_mp_causal", "temporal_mp")


def cue_arrays(ss, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The per-frame cues a model may name (engines.temporal.WindowSpec.frame_cues) at frames
    idx: world_mm (n, 17, 3) MediaPipe's world joints, coarse_mm (n, 17, 3) and fbi_prob (n,
    14, 3) the generator's outputs."""
    from engines.landmarks import world_landmarks_to_joints_mm

    return {"world_mm": world_landmarks_to_joints_mm(ss.world_mm[idx] / 1000.0),
            "coarse_mm": ss.coarse_mm[idx], "fbi_prob": ss.fbi_prob[idx]}


def frame_inputs(spec, ss, idx: np.ndarray) -> np.ndarray:
    """(n, D) per-frame inputs of a temporal model (spec: engines.temporal.WindowSpec) at frames idx."""
    from engines.temporal import frame_input_function

    cues = cue_arrays(ss, idx)
    missing = [k for k in spec.frame_cues if not np.isfinite(cues[k]).all()]
    if missing:
        raise UserError(f"the model needs the cues {missing}, which this render set lacks on some detected frames "
                        f"(render it with --cues)")
    fn = frame_input_function(spec.frame_input)
    return fn(ss.mp2d[idx], ss.f[idx], ss.c[idx], **{k: cues[k] for k in spec.frame_cues})


def temporal_windows(spec, ss, targets: np.ndarray, shift_ms: float = 0.0) -> np.ndarray:
    """(len(targets), window, D) windows of the target frames, from the detected frames of
    each one's clip, resampled by timestamp; shift_ms: the windows of the times shift_ms after
    the target frames' instead."""
    from engines.temporal import timed_windows

    out = None
    for clip in np.unique(ss.clip[targets]):
        own = np.flatnonzero(ss.clip == clip)
        have = own[ss.found[own]]
        rows = np.flatnonzero(ss.clip[targets] == clip)
        win = timed_windows(ss.time_ms[have], frame_inputs(spec, ss, have), ss.time_ms[targets[rows]] + shift_ms,
                            spec)
        if out is None:
            out = np.empty((len(targets),) + win.shape[1:], np.float32)
        out[rows] = win
    return out


def predict(model: str, ss, targets: np.ndarray, backend: str = "auto", generator: str | None = None,
            body=None) -> tuple[np.ndarray, str, str]:
    """(joints (len(targets), 17, 3) mm, resolved path, stage) of a model on the target frames.
    body (a realtime.filters.BodyConfig): each clip's poses rebuilt with fixed bone lengths,
    as the app does (realtime.filters.fixed_bones over every detected frame of the clip, in
    time order, then the targets taken)."""
    if body is None:
        return _predict(model, ss, targets, backend, generator)
    frames = np.flatnonzero(ss.found & np.isin(ss.clip, ss.clip[targets]))
    if not np.isin(targets, frames).all():
        raise UserError("fixed bones need a MediaPipe detection on every evaluated frame")
    pred, path, stage = _predict(model, ss, frames, backend, generator)
    from realtime.filters import fixed_bones

    out = np.empty(pred.shape, np.float64)
    for c in np.unique(ss.clip[frames]):
        k = np.flatnonzero(ss.clip[frames] == c)
        out[k] = fixed_bones(pred[k], ss.time_ms[frames[k]] / 1000.0, body)
    return out[np.searchsorted(frames, targets)], path, stage


def _predict(model: str, ss, targets: np.ndarray, backend: str = "auto", generator: str | None = None
             ) -> tuple[np.ndarray, str, str]:
    """predict without a body."""
    from engines.normalize import features_2d
    from engines.stages import stage_for
    from engines.temporal import WindowSpec
    from train.eval_common import open_model, run_in_chunks

    be, path = open_model(model, backend)
    try:
        stage = be.metadata.get("stage")
        if stage == "lifter":
            x = {"features": features_2d(ss.mp2d[targets], ss.f[targets], ss.c[targets])}
        elif stage == "refiner":
            if not np.isfinite(ss.coarse_mm[targets]).all():
                raise UserError(f"{model} is a Final model: it needs the generator's cues, which this render set "
                                f"lacks (render it with --cues)")
            if generator and Path(str(be.metadata.get("generator"))).stem != Path(generator).stem:
                print(f"posestream: note: the render's cues come from {generator}, {model} was trained with "
                      f"{be.metadata.get('generator')}")
            x = {"features": features_2d(ss.mp2d[targets], ss.f[targets], ss.c[targets]),
                 "coarse_mm": ss.coarse_mm[targets], "fbi_prob": ss.fbi_prob[targets]}
        elif stage_for(stage).sequence is not None or "window" in be.metadata:
            x = {"features": temporal_windows(WindowSpec.from_metadata(be.metadata), ss, targets)}
        else:
            raise UserError(f"{model} is a {stage} model: evaluate a lifter, a refiner or a temporal lifter")
        return run_in_chunks(be, x, chunk=1024), path, str(stage)
    finally:
        be.close()


def velocity_error(pred: np.ndarray, gt: np.ndarray, first: np.ndarray, step: int = 1) -> float:
    """Mean per-joint error (mm) of the displacement from frame i to frame i + step, over the
    indices i of `first`; pred and gt (N, 17, 3) mm."""
    dv = (pred[first + step] - pred[first]) - (gt[first + step] - gt[first])
    return float(np.linalg.norm(dv, axis=-1).mean())


def mpjve(pred: np.ndarray, gt: np.ndarray, ss, targets: np.ndarray) -> tuple[float, int]:
    """(mean per-joint velocity error, mm per row step; number of pairs) over consecutive
    evaluated rows of the same clip."""
    clip, row = ss.clip[targets], ss.row[targets]
    pair = np.flatnonzero((clip[1:] == clip[:-1]) & (row[1:] == row[:-1] + 1))
    if not len(pair):
        return float("nan"), 0
    return velocity_error(pred, gt, pair), int(len(pair))


def evaluate_sequence_set(data: str, models: list[str], backend: str = "auto", body=None, sequences=None,
                          only: np.ndarray | None = None) -> dict:
    """The table of `posestream eval --data SEQUENCE_SET` (module docstring); body (a
    realtime.filters.BodyConfig, `--fixed-bones`): every model's poses with the app's fixed
    bone lengths per clip; sequences: the set's SequenceSet with other 2D (e.g. the mirrored
    2D of scripts/mirror_s9.py) instead of the one loaded from `data`; only (N,) bool: the
    metrics on these frames alone (of those that show a row where the person was found)."""
    from train.eval_common import summarize
    from train.metrics import mpjpe, p_mpjpe
    from train.sequence_sets import load_sequence_set

    ss = load_sequence_set(data) if sequences is None else sequences
    rows = ss.row >= 0
    targets = np.flatnonzero(rows & ss.found & (True if only is None else only))
    if not len(targets):
        raise UserError(f"{data}: no frame shows a Human3.6M row with a MediaPipe detection")
    names = ss.action_names or ("all",)
    action = ss.action[targets] if ss.action_names else np.zeros(len(targets), int)
    gt = ss.joints_3d[targets]
    from train.synth.dataset import SynthDataset

    generator = SynthDataset(data).manifest.get("generator")
    out: dict = {"data": str(data), "input": "mp (VIDEO mode)", "frames": int(len(ss)), "rows": int(rows.sum()),
                 "evaluated": int(len(targets)), "clips": int(len(np.unique(ss.clip))),
                 "fixed_bones": body is not None, "models": {}}
    for m in models:
        pred, path, stage = predict(m, ss, targets, backend, generator, body)
        res = summarize(mpjpe(pred, gt), p_mpjpe(pred, gt), action, names).to_json()
        ve, pairs = mpjve(pred, gt, ss, targets)
        out["models"][m] = {**res, "model": path, "stage": stage, "mpjve_mm": ve, "velocity_pairs": pairs}
    return out


def sequence_markdown(out: dict) -> str:
    from train.eval_common import format_table, result_from_json

    lines = [f"sequence render set `{out['data']}`: {out['clips']} clips, {out['frames']} frames, MediaPipe "
             f"(VIDEO mode) found the person on {out['evaluated']} of the {out['rows']} frames that show a "
             f"Human3.6M row" + (", every clip's poses with fixed bone lengths (--fixed-bones)"
                                 if out.get("fixed_bones") else ""), "",
             "| model | stage | MPJPE | P-MPJPE | MPJVE (mm per row step) |", "|---|---|---|---|---|"]
    for m, e in out["models"].items():
        lines.append(f"| {m} | {e['stage']} | {e['mpjpe_mm']:.1f} | {e['p_mpjpe_mm']:.1f} | {e['mpjve_mm']:.1f} |")
    for m, e in out["models"].items():
        lines += ["", format_table(f"{m} ({Path(e['model']).name})", result_from_json(e))]
    return "\n".join(lines)


def holdout_figures(renders: list[str], subject: int, models: list[str], backend: str = "auto", body=None) -> dict:
    """MPJPE (mm) and MPJVE (mm) of each model on one subject's clips of the training renders,
    over every frame where MediaPipe found the person; MPJVE over pairs of such frames of a
    clip one frame apart and about 100 ms apart (S9's row step): the validation figures of a
    run trained with `train-lifter --hold-out SUBJECT`, for choosing among runs without looking
    at S9. body (a realtime.filters.BodyConfig): with the app's fixed bone lengths per clip."""
    from train.sequence_sets import concat_sets, load_sequence_set

    ss = concat_sets([load_sequence_set(r) for r in renders])
    ss = ss.subset(ss.subject == subject)
    targets = np.flatnonzero(ss.found)
    if not len(targets):
        raise UserError(f"no frame of subject {subject} with a MediaPipe detection in {', '.join(renders)}")
    gt = ss.joints_3d[targets]
    clip = ss.clip[targets]
    frame_ms = float(np.median(np.diff(ss.time_ms)[np.diff(ss.clip) == 0]))
    gaps = {"mpjve_1f_mm": 1, "mpjve_100ms_mm": max(1, int(round(100.0 / frame_ms)))}
    out = {}
    for m in models:
        pred = predict(m, ss, targets, backend, body=body)[0]
        res = {"mpjpe_mm": float(np.linalg.norm(pred - gt, axis=-1).mean()), "frames": int(len(targets))}
        for name, g in gaps.items():
            pair = np.flatnonzero((clip[g:] == clip[:-g]) & (targets[g:] - targets[:-g] == g))
            res[name] = velocity_error(pred, gt, pair, g)
        out[m] = res
    return out
