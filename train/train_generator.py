"""Pre-train the multimodal generator (coarse 3D and FBI from the crop) on renders.

engines.generator: depth branch -> coarse 3D, FBI branch -> 14 bone states; trained on
synthetic renders (train.synth), never on S9.

    posestream train-generator --train data_out/synth_bandai data_out/synth_h36m_train \
        --val data_out/synth_s9 --out runs/generator
    (resumes from OUT/last.pt; OUT/best.pt is the epoch with the lowest validation coarse MPJPE)

Losses: L1 on the coarse 3D (mm / 100) for the depth branch, cross-entropy on the FBI states
for the FBI branch; the branches share no weights, so one summed loss trains both at once.

The 2D conditioning of each training sample is drawn from the sources it has: MediaPipe on
the render (when found), the stacked-hourglass detection (Human3.6M renders) or the ground
truth plus Gaussian noise, so the generator serves every 2D input the refiner is used with.
Augmentation: a physically consistent left-right mirror (train.render_data.mirror_matrices)
and brightness/contrast jitter.
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

TRAIN_SETS = ("data_out/synth_bandai", "data_out/synth_h36m_train")
VAL_SET = "data_out/synth_s9"


@dataclass(frozen=True)
class GenTrainConfig:
    train_sets: tuple[str, ...] = TRAIN_SETS
    val_set: str = VAL_SET
    epochs: int = 14
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    gt_noise_px: float = 4.0        # crop px: noise on ground-truth 2D used as conditioning
    jitter_px: float = 1.0          # crop px: noise on every conditioning 2D
    mirror: bool = True
    seed: int = 0
    threads: int = 2
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    head_hidden: int = 256
    dropout: float = 0.2
    val_every: int = 1              # use every n-th validation sample (speed)
    init: str = ""                  # warm start: weights of an earlier run's checkpoint


def check_no_s9(sets: list) -> None:
    for rs, name in sets:
        if (rs.subject == 9).any():
            raise UserError(f"{name} contains S9 (validation subject): never train on it")


def conditioning_2d(rs, idx: np.ndarray, rng: np.random.Generator, gt_noise_px: float,
                    jitter_px: float) -> np.ndarray:
    """(B, 17, 2) crop-px 2D per sample: uniformly one of the sources it has (MediaPipe,
    stacked hourglass, ground truth + noise), plus jitter."""
    mp, sh, gt = rs.mp2d[idx], rs.sh2d[idx], rs.gt2d[idx]
    has = np.stack([np.isfinite(mp).all((1, 2)), np.isfinite(sh).all((1, 2)), np.ones(len(idx), bool)], 1)
    pick = np.argmax(has * rng.random(has.shape), 1)  # random among the available ones
    out = np.where((pick == 0)[:, None, None], mp, np.where((pick == 1)[:, None, None], sh, gt))
    noisy_gt = gt + rng.normal(0, gt_noise_px, gt.shape)
    out = np.where((pick == 2)[:, None, None], noisy_gt, out)
    return (out + rng.normal(0, jitter_px, out.shape)).astype(np.float32)


def training_batch(rs, idx: np.ndarray, rng: np.random.Generator, cfg) -> dict:
    """Tensors for one augmented batch: image (B,3,128,128) in [0,1], cond2d, joints_3d (mm),
    fbi (long), root_cam. `cfg` needs gt_noise_px, jitter_px, mirror."""
    import torch

    from train.render_data import mirror_matrices, mirror_samples

    img = rs.images[idx].astype(np.float32) / 255.0                       # (B, H, W, 3)
    cond = conditioning_2d(rs, idx, rng, cfg.gt_noise_px, cfg.jitter_px)
    j3, root, fbi = rs.joints_3d[idx].copy(), rs.root_cam[idx].copy(), rs.fbi[idx].astype(np.int64)
    if cfg.mirror:
        m = rng.random(len(idx)) < 0.5
        if m.any():
            mats = mirror_matrices(rs.box[idx][m], rs.c[idx][m], rs.f[idx][m])
            cond[m], j3[m], root[m], fbi_m = mirror_samples(cond[m], j3[m], root[m], mats)
            fbi[m] = fbi_m
            img[m] = img[m][:, :, ::-1]
    # brightness / contrast jitter
    img = img * rng.uniform(0.75, 1.25, (len(idx), 1, 1, 1)) + rng.uniform(-0.1, 0.1, (len(idx), 1, 1, 1))
    return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2), np.float32)),
            "cond": torch.from_numpy(cond), "joints_3d": torch.from_numpy(j3.astype(np.float32)),
            "fbi": torch.from_numpy(fbi), "root_cam": torch.from_numpy(root.astype(np.float32))}


def generator_outputs(model, rs, cond2d: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode generator over a render set with the given (N, 17, 2) conditioning ->
    (coarse (N, 17, 3) mm, fbi_prob (N, 14, 3))."""
    import torch

    model.eval()
    cs, ps = [], []
    with torch.no_grad():
        for i in range(0, len(rs), batch):
            img = torch.from_numpy(rs.images[i:i + batch].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
            coarse, logits = model.forward_small(img, torch.from_numpy(cond2d[i:i + batch].astype(np.float32)))
            cs.append(coarse.numpy())
            ps.append(torch.softmax(logits, -1).numpy())
    return np.concatenate(cs), np.concatenate(ps)


def validation_view(va, every: int = 1, log=print):
    """(renders, their crop-px 2D) to validate on: the renders MediaPipe found, with its 2D
    (as in the app); a set rendered without MediaPipe falls back to the exact 2D."""
    found = np.flatnonzero(va.mp_found)[::every]
    if len(found):
        sub = va.subset(found)
        return sub, sub.mp2d
    log("validation set has no MediaPipe 2D: validating on the exact 2D")
    sub = va.subset(np.arange(0, len(va), every))
    return sub, sub.gt2d


def val_metrics(model, va, cond: np.ndarray) -> dict:
    """Coarse MPJPE (mm) and FBI accuracy on validation renders with 2D `cond`."""
    from train.metrics import mpjpe

    coarse, prob = generator_outputs(model, va, cond)
    return {"coarse_mpjpe_mm": float(mpjpe(coarse, va.joints_3d).mean()),
            "fbi_acc": float((prob.argmax(-1) == va.fbi).mean())}


def load_generator(path: str):
    """(eval-mode Generator, its checkpoint dict) from a generator checkpoint, or UserError."""
    from engines.backends.torch_backend import load_checkpoint
    from engines.stages import stage_for

    ck = load_checkpoint(path)
    if ck.get("kind") != "generator":
        raise UserError(f"{path} is not a generator checkpoint")
    return stage_for("generator").build(ck), ck


def load_sets(names, log=print) -> list:
    from train.render_data import load_render_set
    return [(load_render_set(n, log=log), n) for n in names]


def train(cfg: GenTrainConfig, out: Path, log=print) -> dict:
    import torch
    from torch.nn import functional as F

    from engines.checkpoint import contract_metadata
    from engines.generator import Generator, GeneratorConfig
    from train.render_data import concat

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    sets = load_sets(cfg.train_sets, log)
    check_no_s9(sets)
    tr = concat([s for s, _ in sets])
    va, vcond = validation_view(load_sets([cfg.val_set], log)[0][0], cfg.val_every, log)
    log(f"{len(tr)} training renders, {len(va)} validation renders")

    mcfg = GeneratorConfig(widths=tuple(cfg.widths), head_hidden=cfg.head_hidden, dropout=cfg.dropout)
    model = Generator(mcfg)
    if cfg.init:
        model.load_state_dict(torch.load(cfg.init, map_location="cpu", weights_only=False)["model"])
        log(f"weights initialised from {cfg.init}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(tr) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    state = {"epoch": 0, "history": [], "best": math.inf, "train_seconds": 0.0}
    last = out / "last.pt"
    # no config change on resume: the one-cycle schedule is laid out for cfg.epochs
    state = run_state.resume(last, asdict(cfg), model, opt, sched, rng, state, (), log)

    while state["epoch"] < cfg.epochs:
        t0 = time.time()
        model.train()
        perm = rng.permutation(len(tr))
        sums = {"coarse_l1_mm": 0.0, "fbi_ce": 0.0}
        for s in range(steps_per_epoch):
            b = training_batch(tr, perm[s * cfg.batch_size:(s + 1) * cfg.batch_size], rng, cfg)
            coarse, logits = model.forward_small(b["image"], b["cond"])
            l_c = (coarse - b["joints_3d"]).abs().mean()
            l_f = F.cross_entropy(logits.reshape(-1, 3), b["fbi"].reshape(-1))
            loss = l_c / 100.0 + l_f
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["coarse_l1_mm"] += l_c.item()
            sums["fbi_ce"] += l_f.item()
            if s % 50 == 0:
                log(f"  epoch {state['epoch'] + 1} step {s}/{steps_per_epoch} coarse L1 {l_c.item():.1f} mm "
                    f"FBI CE {l_f.item():.3f} ({(s + 1) * cfg.batch_size / (time.time() - t0):.0f} samples/s)")
        val = val_metrics(model, va, vcond)
        dt = time.time() - t0
        state["train_seconds"] += dt
        state["epoch"] += 1
        rec = {"epoch": state["epoch"], **{k: v / steps_per_epoch for k, v in sums.items()}, **val, "seconds": dt}
        state["history"].append(rec)
        log(f"epoch {state['epoch']}/{cfg.epochs} val coarse MPJPE {val['coarse_mpjpe_mm']:.1f} mm, "
            f"FBI acc {100 * val['fbi_acc']:.1f}% ({dt:.0f}s)")
        meta = {"kind": "generator", "model_config": mcfg.to_dict(), "train_config": asdict(cfg),
                "contract": contract_metadata(), "val": val, "epoch": state["epoch"],
                "train_seconds": state["train_seconds"], "stage": "pretrain"}
        if val["coarse_mpjpe_mm"] < state["best"]:
            state["best"] = val["coarse_mpjpe_mm"]
            torch.save({"model": model.state_dict(), **meta}, out / "best.pt")
        run_state.save(last, asdict(cfg), model, opt, sched, rng, state)
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
    return state


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", nargs="+", default=list(TRAIN_SETS), help="training render sets (never S9)")
    p.add_argument("--val", default=VAL_SET, help="validation render set (S9)")
    p.add_argument("--out", required=True, help="run directory (resumes from OUT/last.pt)")
    for name, typ in (("epochs", int), ("batch-size", int), ("lr", float), ("seed", int), ("threads", int),
                      ("val-every", int)):
        p.add_argument(f"--{name}", type=typ, default=getattr(GenTrainConfig, name.replace("-", "_")))
    p.add_argument("--init", default="", help="warm start from this checkpoint's weights (a new schedule)")


def run(args: argparse.Namespace) -> int:
    cfg = GenTrainConfig(train_sets=tuple(args.train), val_set=args.val, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
                         val_every=args.val_every, init=args.init)
    train(cfg, Path(args.out), log=lambda s: print(s, flush=True))
    return 0
