"""Train the refiner (2D + coarse 3D + FBI -> 3D) on renders, with the generator's outputs.

    posestream train-refiner --generator models/generator.pt --input mp --loss weighted --out runs/final_mp
    (resumes from OUT/last.pt; OUT/best.pt is the epoch with the lowest S9-render MPJPE)

Per training render, the 2D input is the detector the refiner will serve:
  --input mp  MediaPipe on the render (renders where it found nobody are left out)
  --input sh  the stacked-hourglass detection of the Human3.6M frame (Human3.6M renders);
              mocap renders have no SH, so they bring their MediaPipe 2D (a real detector's
              errors) instead
The same 2D conditions the generator, exactly as in the app. Every sample is also used
mirrored (train.render_data.mirror_samples, the generator run on the mirrored crop).
The generator's outputs on its own training renders are more accurate than on unseen ones;
--coarse-noise-mm adds Gaussian noise to the coarse 3D during training so the refiner does not
learn to over-trust it (the value used is recorded with the measured train/val gap).
--no-coarse / --no-fbi train the ablations; with both, it is a 2D-only Base on the renders.
--init-from base_gt|base_sh starts the refiner as exactly that Base lifter (init_from_lifter):
the renders are too few to learn Human3.6M's pose prior from scratch, and then Final vs Base
(fine-tuned alike without cues) isolates what the image cues add.
--h36m-mix NPZ mixes in Human3.6M train frames (2D-only: SH detections for --input sh; for
--input mp the projected ground truth plus real MediaPipe error vectors drawn from the
training renders, scaled to each pose: a detector-error model) with the image cues marked absent (coarse 3D zero, FBI uniform
1/3, values no generator output takes), so the refiner keeps the 2D->3D prior of hundreds of
thousands of poses and learns from the renders what the image cues add.
Loss: the paper's weighted loss (train.losses, epoch 1 plain L0) or plain L2.
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
from train.train_generator import TRAIN_SETS, VAL_SET


@dataclass(frozen=True)
class RefinerTrainConfig:
    generator: str = "models/generator.pt"
    input_kind: str = "mp"
    train_sets: tuple[str, ...] = TRAIN_SETS
    val_set: str = VAL_SET
    loss: str = "weighted"
    use_coarse: bool = True
    use_fbi: bool = True
    epochs: int = 12
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay: float = 0.85
    coarse_noise_mm: float = 0.0
    mirror: bool = True
    h36m_mix: str = ""              # Human3.6M train npz: 2D-only samples mixed in (see docstring)
    h36m_every: int = 8
    render_repeat: int = 1          # render samples appear this many times per epoch
    init_from: str = ""             # a Base lifter checkpoint: start the refiner as exactly that model
    seed: int = 0
    threads: int = 2
    flip_tta: bool = True           # the refiner averages with the mirrored input at test time


def input_2d(rs, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(crop-px 2D (N, 17, 2), usable mask (N,)) for --input kind."""
    mp_ok = np.isfinite(rs.mp2d).all((1, 2))
    if kind == "mp":
        return rs.mp2d, mp_ok
    if kind == "sh":
        sh_ok = np.isfinite(rs.sh2d).all((1, 2))
        return np.where(sh_ok[:, None, None], rs.sh2d, rs.mp2d), sh_ok | mp_ok
    raise UserError(f"unknown --input {kind!r}: mp or sh")


def cached_refiner_inputs(G, gen_path: str, rs, name: str, kind: str, cond: np.ndarray, mirror: bool,
                          log=print) -> dict[str, np.ndarray]:
    """refiner_inputs, cached in data_out/refiner_inputs/ keyed by the generator file's hash,
    the render set, the 2D input and the mirror flag (the generator pass is the slow part)."""
    from engines.checkpoint import file_sha256

    key = f"{file_sha256(gen_path)[:16]}_{Path(name).name}_{kind}_{'m' if mirror else 'o'}_{len(rs)}.npz"
    path = Path(name).parent / "refiner_inputs" / key
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = refiner_inputs(G, rs, cond, mirror)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    log(f"cached generator outputs in {path}")
    return out


def refiner_inputs(G, rs, cond: np.ndarray, mirror: bool = False) -> dict[str, np.ndarray]:
    """Everything the refiner sees for render set `rs` with crop-px 2D `cond`, optionally
    mirrored: features (N, 37), coarse (N, 17, 3), fbi_prob (N, 14, 3), the labels
    joints_3d (N, 17, 3) and fbi (N, 14) to match, and no_cues (N,) False."""
    from engines.normalize import features_2d
    from train.render_data import mirror_matrices, mirror_samples
    from train.train_generator import generator_outputs

    j3, fbi = rs.joints_3d, rs.fbi
    if mirror:
        cond, j3, _, fbi = mirror_samples(cond, j3, rs.root_cam, mirror_matrices(rs.box, rs.c, rs.f))
        rs = type(rs)(**{**rs.__dict__, "images": rs.images[:, :, ::-1]})
    coarse, prob = generator_outputs(G, rs, cond)
    return {"features": features_2d(rs.to_image_px(cond), rs.f, rs.c), "coarse": coarse, "fbi_prob": prob,
            "joints_3d": j3.astype(np.float32), "fbi": np.asarray(fbi), "no_cues": np.zeros(len(j3), bool)}


def detector_error_bank(sets: list) -> np.ndarray:
    """(M, 17, 2) MediaPipe-minus-truth 2D errors on render sets, in units of the crop box side
    (so they scale to any person size), with their left-right mirror images."""
    from engines.crop import CROP_SIZE
    from engines.skeleton import FLIP_PERMUTATION

    mp, gt = np.concatenate([s.mp2d for s in sets]), np.concatenate([s.gt2d for s in sets])
    ok = np.isfinite(mp).all((1, 2))
    err = (mp[ok] - gt[ok]) / CROP_SIZE
    mirrored = err[:, list(FLIP_PERMUTATION)] * np.array([-1.0, 1.0])
    return np.concatenate([err, mirrored]).astype(np.float32)


def add_detector_error(uv: np.ndarray, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulate the detector on exact 2D (N, 17, 2) px: add a randomly drawn real error vector
    from `bank`, scaled to each pose's crop box (engines.crop: margin x the larger extent)."""
    from engines.crop import BOX_MARGIN

    side = BOX_MARGIN * np.ptp(uv, axis=1).max(-1)                                    # (N,)
    return uv + bank[rng.integers(0, len(bank), len(uv))] * side[:, None, None]


def h36m_without_cues(npz: str, kind: str, every: int, mirror: bool, error_bank: np.ndarray | None = None,
                      rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Human3.6M train frames as refiner samples with the image cues marked absent. With an
    `error_bank` (detector_error_bank) the exact 2D gets the detector's real errors."""
    from engines.normalize import features_2d
    from engines.skeleton import NUM_FBI_BONES, NUM_JOINTS
    from train import h36m
    from train.train_lifter import TRAIN_SUBJECTS, _flip

    s = h36m.load(npz, kind, every=every)
    if set(np.unique(s.subject)) - set(TRAIN_SUBJECTS):
        raise UserError(f"{npz} holds subjects other than the training ones {TRAIN_SUBJECTS}")
    uv, f, c, j3 = s.uv, s.f, s.c, s.joints_cam
    if mirror:
        uv_f, j3_f = _flip(uv, c, j3)
        uv, f, c, j3 = (np.concatenate([uv, uv_f]), np.concatenate([f, f]), np.concatenate([c, c]),
                        np.concatenate([j3, j3_f]))
    if error_bank is not None:
        uv = add_detector_error(uv, error_bank, rng or np.random.default_rng(0))
    n = len(uv)
    return {"features": features_2d(uv, f, c), "coarse": np.zeros((n, NUM_JOINTS, 3), np.float32),
            "fbi_prob": np.full((n, NUM_FBI_BONES, 3), 1.0 / 3.0, np.float32), "joints_3d": j3.astype(np.float32),
            "fbi": np.full((n, NUM_FBI_BONES), -1, np.int8), "no_cues": np.ones(n, bool)}


def init_from_lifter(model, lifter_path: str) -> None:
    """Make a Refiner compute exactly what a trained Base lifter computes: copy every layer and
    the 2D features' and outputs' normalisation, and zero the first layer's weights on the
    image-cue inputs. Fine-tuning then starts from Base's 2D->3D prior (hundreds of thousands
    of Human3.6M poses) and only has to learn what the cues add, from the few renders."""
    import torch

    from engines.backends.torch_backend import load_checkpoint
    from engines.checkpoint import resolve_model_path
    from engines.normalize import LIFT_INPUT_DIM

    ck = load_checkpoint(resolve_model_path(lifter_path))
    if ck.get("kind") != "lifter":
        raise UserError(f"--init-from needs a Base lifter checkpoint, {lifter_path} is {ck.get('kind')!r}")
    src, dst = ck["model"], model.lifter.state_dict()
    with torch.no_grad():
        for k, v in src.items():
            if k.startswith("flip_"):     # the refiner's own mirror covers its wider input
                continue
            if k == "inp.0.weight":
                dst[k].zero_()
                dst[k][:, :LIFT_INPUT_DIM] = v
            elif k in ("in_mean", "in_std"):
                dst[k][:LIFT_INPUT_DIM] = v
            else:
                if dst[k].shape != v.shape:
                    raise UserError(f"{lifter_path}: layer {k} is {tuple(v.shape)}, the refiner's {tuple(dst[k].shape)}")
                dst[k].copy_(v)
    model.lifter.load_state_dict(dst)


def generator_reference(path: str) -> str:
    """How a refiner names its generator: the shipped name for a file in models/ (so the
    pair can be exported and moved together), else the absolute path."""
    from engines.checkpoint import MODELS_DIR

    p = Path(path).resolve()
    return p.stem if p.parent == MODELS_DIR.resolve() else str(p)


def train(cfg: RefinerTrainConfig, out: Path, log=print) -> dict:
    import torch

    from engines.checkpoint import contract_metadata, file_sha256
    from engines.refiner import Refiner, RefinerConfig
    from train.metrics import mpjpe
    from train.train_generator import check_no_s9, load_generator, load_sets

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    G, _ = load_generator(cfg.generator)
    sets = load_sets(cfg.train_sets, log)
    check_no_s9(sets)
    t0 = time.time()
    parts, subsets = [], []
    for rs_i, name in sets:
        cond, ok = input_2d(rs_i, cfg.input_kind)
        rs_i, cond = rs_i.subset(np.flatnonzero(ok)), cond[ok]
        subsets.append(rs_i)
        for m in (False, True) if cfg.mirror else (False,):
            parts.append(cached_refiner_inputs(G, cfg.generator, rs_i, name, cfg.input_kind, cond, m, log))
    va = load_sets([cfg.val_set], log)[0][0]
    vcond, vok = input_2d(va, cfg.input_kind)
    va, vcond = va.subset(np.flatnonzero(vok)), vcond[vok]
    parts = parts * cfg.render_repeat
    if cfg.h36m_mix:  # SH input: the real SH detections; MediaPipe: exact 2D + MediaPipe's errors on renders
        bank = detector_error_bank(subsets) if cfg.input_kind == "mp" else None
        parts.append(h36m_without_cues(cfg.h36m_mix, "sh" if cfg.input_kind == "sh" else "gt", cfg.h36m_every,
                                       cfg.mirror, bank, rng))
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    has_cues = torch.from_numpy(~data["no_cues"]).float()
    vdata = cached_refiner_inputs(G, cfg.generator, va, cfg.val_set, cfg.input_kind, vcond, False, log)
    own = {k: np.concatenate([p[k] for p in parts if not p["no_cues"].any()]) for k in ("coarse", "joints_3d")}
    n_render = len(own["coarse"])
    gap = {"train_coarse_mpjpe_mm": float(mpjpe(own["coarse"], own["joints_3d"]).mean()),
           "val_coarse_mpjpe_mm": float(mpjpe(vdata["coarse"], vdata["joints_3d"]).mean())}
    log(f"{len(data['features'])} training inputs ({n_render} from renders), {len(vdata['features'])} validation; "
        f"generator outputs in "
        f"{time.time() - t0:.0f}s; coarse MPJPE train {gap['train_coarse_mpjpe_mm']:.1f} mm vs "
        f"val {gap['val_coarse_mpjpe_mm']:.1f} mm")

    mcfg = RefinerConfig(use_coarse=cfg.use_coarse, use_fbi=cfg.use_fbi, flip_tta=cfg.flip_tta)
    model = Refiner(mcfg)
    T = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in data.items()
         if k not in ("fbi", "no_cues")}
    X = model.inputs(T["features"], T["coarse"], T["fbi_prob"])
    Y = T["joints_3d"].reshape(len(X), -1)
    model.lifter.set_normalization(X.mean(0), X.std(0), Y.mean(0), Y.std(0))
    if cfg.init_from:
        init_from_lifter(model, cfg.init_from)
        log(f"refiner initialised from {cfg.init_from} (image-cue weights zero: starts as that Base)")
    Yn = (Y - model.lifter.out_mean) / model.lifter.out_std
    V = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in vdata.items()
         if k not in ("fbi", "no_cues")}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    state = {"epoch": 0, "one_minus_a": None, "history": [], "best": math.inf, "train_seconds": 0.0}
    last = out / "last.pt"
    state = run_state.resume(last, asdict(cfg), model, opt, sched, rng, state, ("epochs",), log)

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            pred = model(V["features"], V["coarse"], V["fbi_prob"]).numpy()
        return float(mpjpe(pred, vdata["joints_3d"]).mean())

    def make_input(idx):
        coarse = T["coarse"][idx]
        if cfg.coarse_noise_mm > 0:  # only where there are cues: absent ones stay exactly zero
            coarse = coarse + cfg.coarse_noise_mm * torch.randn_like(coarse) * has_cues[idx, None, None]
            coarse = coarse - coarse[:, :1]
        return model.inputs(T["features"][idx], coarse, T["fbi_prob"][idx])

    while state["epoch"] < cfg.epochs:
        t0 = time.time()
        epoch_l0 = run_state.lifter_epoch(model.lifter, make_input, Yn, cfg.batch_size, cfg.loss, state, rng, opt,
                                          mcfg.max_norm)
        sched.step()
        val = validate()
        meta = {"kind": "refiner", "model_config": mcfg.to_dict(), "train_config": asdict(cfg),
                "contract": contract_metadata(), "input_kind": cfg.input_kind, "generator_gap": gap,
                "generator_sha256": file_sha256(cfg.generator),
                "artifact_meta": {"generator": generator_reference(cfg.generator), "input_kind": cfg.input_kind}}
        run_state.end_epoch(out, state, cfg.epochs, epoch_l0, val, time.time() - t0, model, meta, log)
        run_state.save(last, asdict(cfg), model, opt, sched, rng, state)
        (out / "history.json").write_text(json.dumps({"gap": gap, "history": state["history"]}, indent=1))
    return state


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default=RefinerTrainConfig.generator, help="generator checkpoint")
    p.add_argument("--input", choices=("mp", "sh"), default="mp", help="2D input the refiner serves")
    p.add_argument("--train", nargs="+", default=list(TRAIN_SETS), help="training render sets (never S9)")
    p.add_argument("--val", default=VAL_SET, help="validation render set (S9)")
    p.add_argument("--loss", choices=("weighted", "l2"), default="weighted")
    p.add_argument("--no-coarse", action="store_true", help="ablation: no coarse-3D input")
    p.add_argument("--no-fbi", action="store_true", help="ablation: no FBI input")
    p.add_argument("--out", required=True, help="run directory (resumes from OUT/last.pt)")
    p.add_argument("--h36m-mix", default="", metavar="NPZ", help="mix in 2D-only Human3.6M train frames")
    p.add_argument("--init-from", default="", metavar="LIFTER",
                   help="start as this Base lifter (e.g. base_gt, base_sh), image-cue weights zero")
    for name, typ in (("epochs", int), ("lr", float), ("coarse-noise-mm", float), ("seed", int), ("threads", int),
                      ("h36m-every", int), ("render-repeat", int)):
        p.add_argument(f"--{name}", type=typ, default=getattr(RefinerTrainConfig, name.replace("-", "_")))
    p.add_argument("--no-flip-tta", action="store_true", help="no test-time averaging with the mirrored input")


def run(args: argparse.Namespace) -> int:
    cfg = RefinerTrainConfig(generator=args.generator, input_kind=args.input, train_sets=tuple(args.train),
                             val_set=args.val, loss=args.loss, use_coarse=not args.no_coarse,
                             use_fbi=not args.no_fbi, epochs=args.epochs, lr=args.lr,
                             coarse_noise_mm=args.coarse_noise_mm, seed=args.seed, threads=args.threads,
                             h36m_mix=args.h36m_mix, h36m_every=args.h36m_every, render_repeat=args.render_repeat,
                             init_from=args.init_from, flip_tta=not args.no_flip_tta)
    train(cfg, Path(args.out), log=lambda s: print(s, flush=True))
    return 0
