"""Train the Base lifter (Martinez et al. 2017) on Human3.6M train subjects.

    posestream train-lifter --input gt --loss weighted --out runs/base_gt
    (resumes from OUT/last.pt if present; writes OUT/best.pt with metadata)

Never trains on S9: the validation file is only used for the per-epoch validation figure.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from train import run_state

TRAIN_SUBJECTS = (1, 5, 6, 7, 8)


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""
    val_data: str = ""
    input_kind: str = "gt"          # 2D input: "gt" projected, "sh" stacked hourglass, "mp" MediaPipe-like
    error_model: str = ""           # input "mp": train.mp_error model turning gt into MediaPipe-like 2D
    loss: str = "weighted"          # "weighted" (paper), "l2" (Martinez) or "mpjpe" (VideoPose3D)
    epochs: int = 12                # epoch 1 is plain L0 (warm-up) for both losses
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay: float = 0.85          # per epoch, exponential (Martinez decays per step)
    every: int = 4                  # frame subsampling of the 25 Hz training file (CPU budget)
    flip: bool = True               # horizontal flip augmentation (doubles the data)
    noise_px: float = 0.0           # Gaussian 2D noise (pixels) added to inputs each step
    seed: int = 0
    threads: int = 1
    hidden: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5
    max_norm: float = 1.0
    val_every: int = 10             # frame subsampling of the validation file
    flip_tta: bool = True           # the model averages with the mirrored input at test time
    window: int = 1                 # > 1: a TemporalLifter over this many frames (engines.temporal)
    causal: bool = False            # TemporalLifter: predict the window's last frame, not its centre
    conv: bool = False              # temporal: a TemporalConvLifter (window 3**k), hidden = channels
    spacing_ms: float = 100.0       # temporal: time between window frames (rows at strides around it)
    cold_start: float = 0.0         # temporal: share of windows cut short as at a track's start (and end)
    rotate: bool = False            # `every` > 1: each epoch takes the next phase of rows (all rows over `every` epochs)
    renders: tuple[str, ...] = ()   # train on sequence renders (MediaPipe 2D) instead of --data
    val_renders: str = ""           # ... and validate on this sequence render set (S9)
    cues: tuple[str, ...] = ()      # renders: per-frame image cues in the input (engines.normalize.CUE_WIDTHS)
    init_from: str = ""             # start from this lifter's weights (new cue inputs start at zero weight)
    velocity_weight: float = 0.0    # temporal, loss mpjpe: train on pairs of consecutive outputs, + this x velocity error (mm)
    pair_ms: float = 40.0           # velocity pairs: time between a pair's frames (rounded to whole rows / frames)
    bone_weight: float = 0.0        # loss mpjpe: + this x bone-length error (mm) of every output
    hold_out: int = 0               # renders: train without this subject, validate on its renders (not on S9)
    keep_epochs: int = 0            # also keep the weights of each of the last N epochs (OUT/epochNN.pt)


def _features(uv: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    from engines.normalize import features_2d
    return features_2d(uv, f, c)


def _flip(uv: np.ndarray, c: np.ndarray, j3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror around the principal point (2D) and the camera's y-z plane (3D)."""
    from engines.skeleton import FLIP_PERMUTATION
    perm = list(FLIP_PERMUTATION)
    uv2 = uv[:, perm].copy()
    uv2[..., 0] = 2 * c[:, None, 0] - uv2[..., 0]
    j2 = j3[:, perm].copy()
    j2[..., 0] = -j2[..., 0]
    return uv2, j2


def train_strides(row_ms: float, spacing_ms: float) -> tuple[int, ...]:
    """Row strides whose spacings bracket spacing_ms: (2, 3) for 40 ms rows and 100 ms, (1,)
    for 40 ms rows and 40 ms."""
    x = spacing_ms / row_ms
    return tuple(sorted({max(1, math.floor(x + 1e-9)), max(1, math.ceil(x - 1e-9))}))


def conv_blocks(window: int) -> int:
    """Residual blocks of a TemporalConvLifter over `window` frames (3**(blocks+1) = window)."""
    blocks = round(math.log(window, 3)) - 1
    if window < 9 or 3 ** (blocks + 1) != window:
        raise UserError(f"--conv needs a window of 9, 27, 81, ... frames (a power of 3), got {window}")
    return blocks


def pair_partners(keys: np.ndarray, samples: np.ndarray, gap: int = 1) -> np.ndarray:
    """keys (M,): one value per sample, equal within a contiguous run of one sequence (in time
    order); samples (n,) indices into them -> (n,) the sample each is paired with for the
    velocity loss: the one `gap` samples later in its run, or as much earlier near the run's
    end, or itself in a run too short for either."""
    keys = np.asarray(keys)
    samples = np.asarray(samples, np.int64)
    fwd, back = samples + gap, samples - gap
    ok_fwd = fwd < len(keys)
    ok_fwd[ok_fwd] = keys[fwd[ok_fwd]] == keys[samples[ok_fwd]]
    ok_back = back >= 0
    ok_back[ok_back] = keys[back[ok_back]] == keys[samples[ok_back]]
    return np.where(ok_fwd, fwd, np.where(ok_back, back, samples))


def pair_gap(pair_ms: float, step_ms: float) -> int:
    """Samples between a velocity pair's frames for samples step_ms apart (at least one)."""
    return max(1, int(round(pair_ms / step_ms)))


def temporal_metadata(mcfg) -> dict:
    """The window contract of a temporal lifter (engines.temporal.WindowSpec), stored with the
    checkpoint and its exports."""
    return mcfg.window_spec().metadata()


def _error_model(cfg: TrainConfig):
    """The MediaPipe error model of an "mp" run (train.mp_error), else None."""
    if cfg.input_kind != "mp":
        if cfg.error_model:
            raise UserError("--error-model goes with --input mp")
        return None
    if not cfg.error_model:
        raise UserError("--input mp needs --error-model FILE (fit one with `posestream mp-error fit`)")
    from train.mp_error import ErrorModel

    return ErrorModel.load(cfg.error_model)


def _mp_drawer(model, s, row_ms: float):
    """rng -> MediaPipe-like 2D (M, 17, 2) px of every sample of the H36MSet s (all rows of its
    file, rows row_ms apart): train.mp_error.simulate, dropouts filled in time as the app's
    history buffer fills them."""
    from train.mp_error import fill_dropouts, geometry, simulate

    keys = s.run_keys()
    first = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1]
    times = (np.arange(len(s)) - np.repeat(first, np.diff(np.r_[first, len(s)]))) * row_ms
    gt = s.uv.astype(np.float64)
    geom = geometry(gt, s.joints_cam, s.root_cam, s.f, times, keys)

    def draw(rng: np.random.Generator) -> np.ndarray:
        uv, det = simulate(model, gt, s.joints_cam, s.root_cam, s.f, times, keys, rng, geom)
        return fill_dropouts(uv, det, times, keys)

    return draw


def train(cfg: TrainConfig, out: Path, log=print) -> dict:
    import torch

    from engines.temporal import conv_stage
    from train import h36m

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    t_load = time.time()
    temporal = cfg.window > 1
    # Refuse a bad --conv window before the minute of loading (conv_blocks also refuses window 1).
    num_blocks = conv_blocks(cfg.window) if cfg.conv else cfg.num_blocks
    kind = conv_stage(cfg.window, bool(cfg.cues)) if cfg.conv else "temporal_lifter" if temporal else "lifter"
    if cfg.hold_out and not cfg.renders:
        raise UserError("--hold-out validates on the held-out subject's renders: it goes with --renders")
    if cfg.velocity_weight > 0 and not temporal:
        raise UserError("--velocity-weight trains on pairs of consecutive outputs of a temporal model (--window > 1)")
    if cfg.renders and cfg.input_kind != "mp":
        return _train(cfg, out, log, kind, num_blocks, *_render_data(cfg, log), t_load=t_load)
    mp = _error_model(cfg)
    if cfg.renders and (cfg.cues or not temporal):
        raise UserError("--renders with --input mp (renders mixed with error-model 2D) trains a temporal model "
                        "without cues (Human3.6M rows have none)")
    # A temporal run needs every row to build windows, and MediaPipe-like 2D every row to draw
    # its noise in time; `every` then thins the window centres / samples.
    whole = temporal or mp is not None
    tr = h36m.load(cfg.data, "gt" if mp else cfg.input_kind, every=1 if whole else cfg.every)
    if cfg.hold_out:   # whole subjects: runs stay contiguous
        tr = tr.subset(tr.subject != cfg.hold_out)
    if set(np.unique(tr.subject)) - set(TRAIN_SUBJECTS):
        raise UserError(f"training data contains subjects {sorted(set(np.unique(tr.subject)))}; only {TRAIN_SUBJECTS} allowed")
    draw = _mp_drawer(mp, tr, h36m.row_spacing_ms(cfg.data)) if mp else None
    f, c, j3 = tr.f, tr.c, tr.joints_cam
    keys = tr.run_keys()   # contiguous runs: one sequence seen by one camera
    if cfg.flip:
        j3 = np.concatenate([j3, _flip(tr.uv, c, j3)[1]])
        f, c = np.concatenate([f, f]), np.concatenate([c, c])
        keys = np.concatenate([keys, keys + keys.max() + 1])

    def epoch_features(epoch: int) -> np.ndarray:
        """Per-frame features of every training row (and its mirror): MediaPipe-like 2D drawn
        anew each epoch, or the fixed 2D."""
        uv = draw(np.random.default_rng([cfg.seed, epoch, 17])) if draw else tr.uv
        if cfg.flip:
            uv = np.concatenate([uv, _flip(uv, tr.c, tr.joints_cam)[0]])
        return _features(uv, f, c)

    X = epoch_features(0)
    Y = j3.reshape(len(j3), -1).astype(np.float32)
    # Validation: S9 of the --val-data file (with --renders, the --val-renders set instead).
    va = None if cfg.renders else h36m.load(cfg.val_data, "gt" if mp else cfg.input_kind,
                                            every=1 if whole else cfg.val_every)
    if mp and va is not None:  # validation on MediaPipe-like 2D of S9, drawn once
        from dataclasses import replace

        va = replace(va, uv=_mp_drawer(mp, va, h36m.row_spacing_ms(cfg.val_data))(np.random.default_rng(9)))
        if not temporal:
            va = va.subset(np.arange(0, len(va), cfg.val_every))
    if temporal:
        from engines.temporal import group_bounds, window_indices, window_offsets

        if va is not None:
            Xv_np, va = h36m.windowed(va, cfg.val_data, cfg.window, cfg.causal, cfg.spacing_ms, cfg.val_every)
        strides = train_strides(h36m.row_spacing_ms(cfg.data), cfg.spacing_ms)
        run_first, run_last = group_bounds(keys)
        offsets = window_offsets(cfg.window, cfg.causal)
        log(f"temporal: {cfg.window} frames, {'causal' if cfg.causal else 'centred'}, training row strides "
            f"{strides}")
    else:
        Xv_np = _features(va.uv, va.f, va.c)
    step = cfg.every if whole else 1
    Xt = torch.from_numpy(X)
    uv_t = None
    if cfg.noise_px > 0:  # Gaussian noise on the fixed 2D of single-frame samples
        if temporal or mp:
            raise UserError("--noise-px applies to single-frame training on --input gt or sh")
        uv_t = torch.from_numpy(np.concatenate([tr.uv, _flip(tr.uv, tr.c, tr.joints_cam)[0]]) if cfg.flip else tr.uv)

    def samples(epoch: int) -> np.ndarray:
        """Window centres / samples of an epoch: every `every`-th row, the next phase each
        epoch when rotating."""
        return np.arange((epoch % step) if cfg.rotate else 0, len(X), step)

    def new_epoch(epoch: int) -> None:
        nonlocal Xt
        if draw and epoch > 0:   # new MediaPipe-like 2D each epoch (epoch 0's made the statistics)
            Xt = torch.from_numpy(epoch_features(epoch))

    def partner(centers: np.ndarray) -> np.ndarray:   # the row of the run pair_ms later
        return pair_partners(keys, centers, pair_gap(cfg.pair_ms, h36m.row_spacing_ms(cfg.data)))

    def make_input(idx, centers, partners=None):
        """The batch's flattened windows (B, window*D) at centers[idx]; with partners, (2B,
        window*D): then the windows at partners[idx], at the same strides and within the same
        cut-short track as their first frames."""
        if temporal:  # each window at a random one of the strides: frame spacings around spacing_ms
            step = rng.choice(strides, len(idx))
            ctr = centers[idx.numpy()]
            pair = None if partners is None else partners[idx.numpy()]
            refs, reps = (ctr, 1) if pair is None else (np.concatenate([ctr, pair]), 2)
            win = window_indices(run_first, run_last, refs, offsets, np.tile(step, reps))
            if cfg.cold_start > 0:  # the track began (or, centred, ends) k window steps away
                cut = np.flatnonzero(rng.random(len(idx)) < cfg.cold_start)
                k = rng.integers(0, cfg.window, len(cut))
                rows = np.concatenate([cut + r * len(idx) for r in range(reps)])
                lo, hi = (ctr, ctr) if pair is None else (np.minimum(ctr, pair), np.maximum(ctr, pair))
                win[rows] = np.maximum(win[rows], np.tile(lo[cut] - k * step[cut], reps)[:, None])
                if not cfg.causal:
                    win[rows] = np.minimum(win[rows], np.tile(hi[cut] + k * step[cut], reps)[:, None])
            return Xt[torch.from_numpy(win)].flatten(1)
        if uv_t is None:
            return Xt[torch.from_numpy(centers[idx.numpy()])]
        noisy = uv_t[idx] + cfg.noise_px * torch.randn_like(uv_t[idx])
        return torch.from_numpy(_features(noisy.numpy(), f[idx.numpy()], c[idx.numpy()]))

    if cfg.renders:
        return _train(cfg, out, log, kind, num_blocks, *_mixed((X, Y, samples, make_input, new_epoch, partner),
                                                               _render_data(cfg, log, every=1)),
                      rng=rng, t_load=t_load)
    return _train(cfg, out, log, kind, num_blocks, X, Y, Xv_np, va.joints_cam, samples, make_input, new_epoch,
                  partner if temporal else None, rng=rng, t_load=t_load)


def _mixed(sim: tuple, renders: tuple) -> tuple:
    """The arguments of _train for a run on Human3.6M rows through the error model (`sim`: X,
    Y, samples, make_input, new_epoch, partner) together with the real MediaPipe 2D of sequence
    renders (_render_data's tuple): input statistics from the Human3.6M rows, validation on the
    renders, each epoch's samples the Human3.6M window centres followed by every render window
    (their indices offset by the number of Human3.6M rows)."""
    import torch

    X, Y, samples, make_input, new_epoch, partner = sim
    _, Yr, Xv, val_y, samples_r, make_input_r, _, partner_r = renders
    n = len(Y)

    def both_samples(epoch: int) -> np.ndarray:
        return np.concatenate([samples(epoch), n + samples_r(epoch)])

    def both_partner(centers: np.ndarray) -> np.ndarray:
        real = centers >= n
        out = np.empty_like(centers)
        out[~real] = partner(centers[~real])
        out[real] = n + partner_r(centers[real] - n)
        return out

    def both_input(idx, centers, partners=None):
        picked = centers[idx.numpy()]
        real = picked >= n
        reps = 1 if partners is None else 2
        out = torch.empty((reps * len(picked), Xv.shape[1] * Xv.shape[2]), dtype=torch.float32)

        def place(mask: np.ndarray, rows: torch.Tensor) -> None:   # first frames, then partners
            at = np.concatenate([np.flatnonzero(mask) + r * len(picked) for r in range(reps)])
            out[torch.from_numpy(at)] = rows

        if (~real).any():
            place(~real, make_input(idx[torch.from_numpy(~real)], centers, partners))
        if real.any():
            own = picked[real] - n
            place(real, make_input_r(torch.arange(len(own)), own,
                                     None if partners is None else partners[idx.numpy()][real] - n))
        return out

    return X, np.concatenate([Y, Yr]), Xv, val_y, both_samples, both_input, new_epoch, both_partner


def _render_data(cfg: TrainConfig, log, every: int | None = None) -> tuple:
    """Training and validation windows of sequence renders (MediaPipe's 2D and, with cfg.cues,
    image cues; engines.normalize.features_2d_cues): the arguments of _train after num_blocks.
    Training samples: every `every`-th frame with a detection; validation: every `val_every`-th
    frame showing a Human3.6M row with a detection (train.eval_sequences), or with cfg.hold_out
    every `val_every`-th detected frame of that subject's clips (then left out of training);
    every: override of cfg.every for the training samples."""
    import torch

    from engines.normalize import CUE_WIDTHS
    from train.eval_sequences import frame_inputs, temporal_windows
    from train.sequence_sets import concat_sets, load_sequence_set

    bad = [k for k in cfg.cues if k not in CUE_WIDTHS]
    if bad or cfg.window < 2 or not (cfg.val_renders or cfg.hold_out) or cfg.flip_tta and cfg.cues:
        raise UserError(f"--renders trains a temporal model (--window > 1), validates on --val-renders or "
                        f"--hold-out, takes cues "
                        f"among {', '.join(CUE_WIDTHS)} (got {', '.join(bad) or 'those'}) and no flip averaging "
                        f"with cues (--no-flip-tta)")
    spec = _render_spec(cfg)
    ss = concat_sets([load_sequence_set(r) for r in cfg.renders])
    if set(np.unique(ss.subject)) - set(TRAIN_SUBJECTS):
        raise UserError(f"training renders show subjects {sorted(set(np.unique(ss.subject)))}; only {TRAIN_SUBJECTS} allowed")
    if cfg.hold_out:   # validation: every val_every-th detected frame of the held-out subject's clips
        vs, ss = ss.subset(ss.subject == cfg.hold_out), ss.subset(ss.subject != cfg.hold_out)
        val_idx = np.flatnonzero(vs.found)[::cfg.val_every]
        if not len(val_idx):
            raise UserError(f"--hold-out {cfg.hold_out}: the training renders show no such subject")
    else:
        vs = load_sequence_set(cfg.val_renders)
        val_idx = np.flatnonzero((vs.row >= 0) & vs.found)[::cfg.val_every]
    train_idx = np.flatnonzero(ss.found)[::cfg.every if every is None else every]
    Xw = temporal_windows(spec, ss, train_idx)
    Xv = temporal_windows(spec, vs, val_idx)
    X = frame_inputs(spec, ss, np.flatnonzero(ss.found))
    Y = ss.joints_3d[train_idx].reshape(len(train_idx), -1).astype(np.float32)
    Xw_t = torch.from_numpy(Xw)

    clip = ss.clip[train_idx]
    same = clip[1:] == clip[:-1]
    gap = pair_gap(cfg.pair_ms, float(np.median(np.diff(ss.time_ms[train_idx])[same])) if same.any() else cfg.pair_ms)

    def partner(windows: np.ndarray) -> np.ndarray:   # the clip's training frame pair_ms later
        return pair_partners(clip, windows, gap)

    def make_input(idx, centers, partners=None):
        """Flattened windows centers[idx] (then partners[idx]): indices into the training windows."""
        rows = centers[idx.numpy()]
        if partners is not None:
            rows = np.concatenate([rows, partners[idx.numpy()]])
        return Xw_t[torch.from_numpy(rows)].flatten(1)

    log(f"renders: {len(train_idx)} training windows of {spec.window} frames ({', '.join(cfg.cues) or 'no cues'}), "
        f"{len(val_idx)} validation windows")
    return (X, Y, Xv, vs.joints_3d[val_idx], lambda epoch: np.arange(len(Y)), make_input, lambda epoch: None,
            partner)


def _init_from(model, path: str, log) -> None:
    """Copy a trained lifter of the same architecture into `model`: every weight, the output
    statistics and, for the first layer and the input statistics, the per-frame inputs they
    share (the first LIFT_INPUT_DIM of each frame); extra inputs (image cues) keep zero weight
    and their own statistics, so the model starts as the one it is initialised from."""
    import torch

    from engines.backends.torch_backend import load_checkpoint
    from engines.checkpoint import resolve_model_path
    from engines.normalize import LIFT_INPUT_DIM

    src = load_checkpoint(resolve_model_path(path))["model"]
    own = model.state_dict()
    window, dim = model.cfg.window, model.cfg.frame_dim
    with torch.no_grad():
        for k, v in own.items():
            if k.startswith("flip_") or k not in src:
                continue
            w = src[k]
            if k in ("in_mean", "in_std"):
                v.view(window, dim)[:, :LIFT_INPUT_DIM] = w.view(window, -1)[:, :LIFT_INPUT_DIM]
            elif k == "inp.linear.weight" and w.shape != v.shape:
                v.zero_()
                v.view(v.shape[0], -1, dim)[:, :, :LIFT_INPUT_DIM] = w.view(w.shape[0], -1, LIFT_INPUT_DIM)
            elif w.shape == v.shape:
                v.copy_(w)
            else:
                raise UserError(f"--init-from {path}: {k} has shape {tuple(w.shape)}, this model {tuple(v.shape)}")
    log(f"initialised from {path}")


def _render_spec(cfg: TrainConfig):
    from engines.normalize import CUE_FRAME_INPUT
    from engines.temporal import WindowSpec

    if cfg.cues:
        return WindowSpec(cfg.window, cfg.causal, cfg.spacing_ms, CUE_FRAME_INPUT, tuple(cfg.cues))
    return WindowSpec(cfg.window, cfg.causal, cfg.spacing_ms)


def _train(cfg: TrainConfig, out: Path, log, kind: str, num_blocks: int, X: np.ndarray, Y: np.ndarray,
           Xv_np: np.ndarray, val_y: np.ndarray, samples, make_input, new_epoch, partner=None, rng=None,
           t_load: float = 0.0) -> dict:
    """The model, the optimiser and the resumable epoch loop. X (M, D) per-frame inputs (their
    statistics normalise every frame), Y (M', 51) targets of all samples, Xv_np / val_y the
    validation inputs and root-relative joints (mm); samples(epoch) -> the epoch's sample
    indices into Y, make_input(idx, samples[, partners]) -> the batch's flattened inputs (of
    the partners too when given), new_epoch(epoch) refreshes per-epoch inputs, partner(samples)
    -> the sample each is paired with for the velocity loss (cfg.velocity_weight)."""
    import torch

    from engines.checkpoint import contract_metadata, file_sha256
    from engines.models import Lifter, LifterConfig, temporal_lifter
    from train.metrics import mpjpe

    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    temporal = cfg.window > 1
    Xv = torch.from_numpy(np.ascontiguousarray(Xv_np).reshape(len(Xv_np), -1) if not temporal else Xv_np)
    log(f"loaded {len(samples(0))} training samples, {len(Xv)} validation samples in {time.time() - t_load:.1f}s")
    mcfg = LifterConfig(in_dim=cfg.window * X.shape[1], hidden=cfg.hidden, num_blocks=num_blocks,
                        dropout=cfg.dropout, max_norm=cfg.max_norm, flip_tta=cfg.flip_tta,
                        window=cfg.window, causal=cfg.causal, conv=cfg.conv, spacing_ms=cfg.spacing_ms,
                        frame_cues=tuple(cfg.cues))
    model = temporal_lifter(mcfg) if temporal else Lifter(mcfg)
    model.set_normalization(torch.from_numpy(np.tile(X.mean(0), cfg.window)),
                            torch.from_numpy(np.tile(X.std(0), cfg.window)),
                            torch.from_numpy(Y.mean(0)), torch.from_numpy(Y.std(0)))
    if cfg.init_from:
        _init_from(model, cfg.init_from, log)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    Yall = torch.from_numpy(Y)

    state = {"epoch": 0, "one_minus_a": None, "history": [], "best": math.inf, "train_seconds": 0.0}
    last = out / "last.pt"
    # Only the epoch count (and how many last epochs to keep) may change on resume (to extend a
    # run); anything else means a new run.
    state = run_state.resume(last, asdict(cfg), model, opt, sched, rng, state, ("epochs", "keep_epochs"), log,
                             defaults=asdict(TrainConfig()))

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(Xv[i:i + 8192]) for i in range(0, len(Xv), 8192)]).numpy()
        return float(mpjpe(pred, val_y).mean())

    data = [str(p) for p in cfg.renders] or [cfg.data]
    while state["epoch"] < cfg.epochs:
        t0 = time.time()
        new_epoch(state["epoch"])
        centers = samples(state["epoch"])
        partners = partner(centers) if cfg.velocity_weight > 0 else None
        Yn = (Yall[torch.from_numpy(centers)] - model.out_mean) / model.out_std
        if partners is not None:   # (N, 2, 51): each sample's frame and its partner's
            Yn = torch.stack([Yn, (Yall[torch.from_numpy(partners)] - model.out_mean) / model.out_std], 1)
        epoch_l0 = run_state.lifter_epoch(model, lambda idx: make_input(idx, centers, partners), Yn, cfg.batch_size,
                                          cfg.loss, state, rng, opt, cfg.max_norm, cfg.velocity_weight,
                                          cfg.bone_weight)
        sched.step()
        val = validate()
        meta = {"kind": kind, "model_config": mcfg.to_dict(), "train_config": asdict(cfg),
                "contract": contract_metadata(), "train_subjects": list(TRAIN_SUBJECTS),
                "data_sha256": file_sha256(data[0]) if state["epoch"] == 0 and Path(data[0]).is_file() else None}
        if temporal:  # what a runtime needs to build the windows; exported with the model
            meta["artifact_meta"] = temporal_metadata(mcfg)
        run_state.end_epoch(out, state, cfg.epochs, epoch_l0, val, time.time() - t0, model, meta, log,
                            cfg.keep_epochs)
        run_state.save(last, asdict(cfg), model, opt, sched, rng, state)
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
    return state


def add_arguments(p: argparse.ArgumentParser) -> None:
    from train.h36m import default_data_dir
    from train.losses import LOSSES
    d = default_data_dir() / "h36m"
    p.add_argument("--data", default=str(d / "h36m_train.npz"), help="training npz (staged schema)")
    p.add_argument("--val-data", default=str(d / "h36m_val.npz"), help="validation npz (S9)")
    p.add_argument("--input", choices=("gt", "sh", "mp"), default="gt",
                   help="2D: projected ground truth, SH detections, or MediaPipe-like (gt through --error-model)")
    p.add_argument("--error-model", default="", help="--input mp: the MediaPipe error model (posestream mp-error fit)")
    p.add_argument("--loss", choices=LOSSES, default="weighted")
    p.add_argument("--out", required=True, help="run directory (resumes from OUT/last.pt)")
    for name, typ in (("epochs", int), ("batch-size", int), ("lr", float), ("lr-decay", float), ("every", int),
                      ("noise-px", float), ("seed", int), ("threads", int), ("hidden", int), ("window", int),
                      ("dropout", float), ("spacing-ms", float), ("val-every", int), ("cold-start", float),
                      ("velocity-weight", float), ("pair-ms", float), ("bone-weight", float),
                      ("keep-epochs", int)):
        p.add_argument(f"--{name}", type=typ, default=getattr(TrainConfig, name.replace("-", "_")))
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--causal", action="store_true", help="temporal lifter: predict the last frame of the window")
    p.add_argument("--conv", action="store_true",
                   help="temporal lifter as a strided temporal convolution (VideoPose3D); --hidden = channels")
    p.add_argument("--no-flip-tta", action="store_true", help="no test-time averaging with the mirrored input")
    p.add_argument("--rotate", action="store_true",
                   help="with --every N: each epoch takes the next of the N phases of rows (all rows over N epochs)")
    g = p.add_argument_group("training on sequence renders (the cue ablation)")
    g.add_argument("--renders", nargs="+", default=(), help="`posestream render --sequence` folders to train on "
                   "(their MediaPipe 2D; instead of --data)")
    g.add_argument("--val-renders", default="", help="sequence render set to validate on (S9)")
    g.add_argument("--hold-out", type=int, default=0, metavar="SUBJECT",
                   help="train without this subject (its Human3.6M rows and renders) and validate on its renders: "
                   "a validation split for choosing epochs or hyper-parameters without looking at S9")
    g.add_argument("--cues", default="", help="comma-separated image cues in each frame's input: world_mm "
                   "(MediaPipe's world landmarks), coarse_mm and fbi_prob (the Final generator's)")
    p.add_argument("--init-from", default="", help="start from this lifter (same architecture; cue inputs "
                   "start at zero weight)")


def run(args: argparse.Namespace) -> int:
    cfg = TrainConfig(data=args.data, val_data=args.val_data, input_kind=args.input, loss=args.loss,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                      every=args.every, flip=not args.no_flip, noise_px=args.noise_px, seed=args.seed,
                      threads=args.threads, hidden=args.hidden, flip_tta=not args.no_flip_tta,
                      window=args.window, causal=args.causal, conv=args.conv, dropout=args.dropout,
                      spacing_ms=args.spacing_ms, val_every=args.val_every, error_model=args.error_model,
                      cold_start=args.cold_start, rotate=args.rotate, renders=tuple(args.renders),
                      val_renders=args.val_renders, cues=tuple(c for c in args.cues.split(",") if c),
                      init_from=args.init_from, velocity_weight=args.velocity_weight,
                      bone_weight=args.bone_weight, hold_out=args.hold_out, pair_ms=args.pair_ms,
                      keep_epochs=args.keep_epochs)
    train(cfg, Path(args.out), log=lambda s: print(s, flush=True))
    return 0
