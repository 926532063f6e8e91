"""Test-time averaging of a temporal model over nearby window times and frame spacings: a study
for issue #17 (tried on S8 held out, not kept: docs/temporal.md).

A model's output for frame t can be averaged with its outputs for the windows at t + shift
(a low-pass filter on its output, costing one model run per shift) and with its outputs for
windows resampled at other frame spacings than the one it was trained at (the same motion seen
a little faster or slower). Both only need the model; this module measures them the way
`train.eval_sequences` measures a model, on a subject held out of training
(`holdout`, the figures of `holdout_figures`) and on a sequence render set (`sequence_set`,
a row of `posestream eval --data SET`):

    python -c 'from train.time_averaging import holdout; print(holdout(["data_out/seq_h36m_train_c0",
        "data_out/seq_h36m_train_c2"], 8, "runs/ho8_v0/latest.pt", shifts_ms=(-40, 0, 40)))'
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from engines.errors import UserError


def averaged(model: str, ss, targets: np.ndarray, shifts_ms: tuple[float, ...] = (0.0,),
             spacings_ms: tuple[float, ...] = (), backend: str = "auto") -> np.ndarray:
    """(len(targets), 17, 3) mm: the mean, over every shift and spacing, of the temporal
    model's output for the window at each target frame's time + shift (ms), resampled at that
    frame spacing (ms; none given: the model's own). ss: a train.sequence_sets set."""
    from engines.temporal import WindowSpec
    from train.eval_common import open_model, run_in_chunks
    from train.eval_sequences import temporal_windows

    be, _ = open_model(model, backend)
    try:
        if "window" not in be.metadata:
            raise UserError(f"{model} is not a temporal model: nothing to average over time")
        spec = WindowSpec.from_metadata(be.metadata)
        specs = [replace(spec, spacing_ms=float(s)) for s in spacings_ms] or [spec]
        runs = [run_in_chunks(be, {"features": temporal_windows(sp, ss, targets, float(sh))}, chunk=1024)
                for sp in specs for sh in shifts_ms]
    finally:
        be.close()
    return np.mean(runs, axis=0)


def holdout(renders: list[str], subject: int, model: str, shifts_ms: tuple[float, ...] = (0.0,),
            spacings_ms: tuple[float, ...] = (), backend: str = "auto") -> dict:
    """`train.eval_sequences.holdout_figures` of the averaged model: MPJPE (mm) and MPJVE (mm)
    at one frame and about 100 ms on one subject's detected frames of the training renders."""
    from train.eval_sequences import velocity_error
    from train.sequence_sets import concat_sets, load_sequence_set

    ss = concat_sets([load_sequence_set(r) for r in renders])
    ss = ss.subset(ss.subject == subject)
    targets = np.flatnonzero(ss.found)
    if not len(targets):
        raise UserError(f"no frame of subject {subject} with a MediaPipe detection in {', '.join(renders)}")
    gt, clip = ss.joints_3d[targets], ss.clip[targets]
    pred = averaged(model, ss, targets, shifts_ms, spacings_ms, backend)
    frame_ms = float(np.median(np.diff(ss.time_ms)[np.diff(ss.clip) == 0]))
    out = {"mpjpe_mm": float(np.linalg.norm(pred - gt, axis=-1).mean()), "frames": int(len(targets))}
    for name, g in (("mpjve_1f_mm", 1), ("mpjve_100ms_mm", max(1, int(round(100.0 / frame_ms))))):
        out[name] = velocity_error(pred, gt, np.flatnonzero((clip[g:] == clip[:-g]) & (targets[g:] - targets[:-g] == g)), g)
    return out


def sequence_set(data: str, model: str, shifts_ms: tuple[float, ...] = (0.0,), spacings_ms: tuple[float, ...] = (),
                 backend: str = "auto") -> dict:
    """The averaged model's row of `posestream eval --data DATA` (a sequence render set such as
    data_out/seq_s9): MPJPE and P-MPJPE (mm, mean over actions) and MPJVE (mm per row step)."""
    from train.eval_common import summarize
    from train.eval_sequences import mpjve
    from train.metrics import mpjpe, p_mpjpe
    from train.sequence_sets import load_sequence_set

    ss = load_sequence_set(data)
    targets = np.flatnonzero((ss.row >= 0) & ss.found)
    if not len(targets):
        raise UserError(f"{data}: no frame shows a Human3.6M row with a MediaPipe detection")
    names = ss.action_names or ("all",)
    action = ss.action[targets] if ss.action_names else np.zeros(len(targets), int)
    gt = ss.joints_3d[targets]
    pred = averaged(model, ss, targets, shifts_ms, spacings_ms, backend)
    res = summarize(mpjpe(pred, gt), p_mpjpe(pred, gt), action, names).to_json()
    return {"mpjpe_mm": res["mpjpe_mm"], "p_mpjpe_mm": res["p_mpjpe_mm"], "mpjve_mm": mpjve(pred, gt, ss, targets)[0]}
