"""Adversarial fine-tuning of the generator's coarse-3D branch (KCS discriminator).

Paper step 3, with a conditional kinematic-chain-space discriminator (Wandt & Rosenhahn 2019).

    posestream train-adversarial --generator runs/generator/best.pt --out runs/generator_adv

The discriminator D(2D, 3D) sees, for a pose:
  * the KCS matrix B B^T of the 16 bone vectors (metres): its diagonal holds the squared
    bone lengths and the rest the bones' pairwise inner products (angles), so implausible
    lengths, asymmetry and joint angles are linear features for it;
  * the root-relative 3D joints (metres) and the 2D joints (root-centred, RMS-scaled), the
    condition: a pose must be plausible *for this 2D input*, not just any human pose.
Real pairs: Human3.6M train 3D with its projected 2D, and the training renders' ground truth
with their 2D. Fake pairs: the depth branch's coarse 3D with the conditioning 2D it saw.
Least-squares GAN losses; the generator's loss is the supervised L1 (as in pre-training) plus
ADV_WEIGHT times its adversarial term. Only the depth branch is updated (FBI is frozen).

Before/after figures on the S9 renders (MediaPipe 2D): coarse MPJPE, left/right bone-length
asymmetry and joint-angle violations (train.pose_validity), written to OUT/report.json.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from train.train_generator import TRAIN_SETS, VAL_SET


@dataclass(frozen=True)
class AdvConfig:
    generator: str = "runs/generator/best.pt"
    train_sets: tuple[str, ...] = TRAIN_SETS
    val_set: str = VAL_SET
    h36m_train: str = ""            # real 3D poses; default ../shared/data/h36m/h36m_train.npz
    h36m_every: int = 20
    epochs: int = 3
    batch_size: int = 64
    lr_g: float = 1e-4
    lr_d: float = 2e-4
    adv_weight: float = 0.05
    gt_noise_px: float = 4.0
    jitter_px: float = 1.0
    mirror: bool = True
    seed: int = 0
    threads: int = 2
    hidden: int = 256


def kcs_features(joints_mm):
    """(B, 17, 3) mm tensor -> (B, 136) upper triangle of the 16x16 KCS matrix (m^2)."""
    import torch

    from engines.skeleton import BONES

    parents = [b[0] for b in BONES]
    children = [b[1] for b in BONES]
    x = joints_mm / 1000.0
    bones = x[:, children] - x[:, parents]                               # (B, 16, 3)
    k = torch.matmul(bones, bones.transpose(1, 2))                        # (B, 16, 16)
    iu = torch.triu_indices(len(BONES), len(BONES))
    return k[:, iu[0], iu[1]]


def norm_2d(uv):
    """(B, 17, 2) tensor px -> (B, 34) root-centred, RMS-scaled."""
    import torch

    rel = uv - uv[:, :1]
    rms = torch.sqrt((rel**2).sum(-1).mean(-1)).clamp_min(1e-6)
    return (rel / rms[:, None, None]).reshape(len(uv), -1)


def make_discriminator(hidden: int = 256):
    import torch
    from torch import nn

    from engines.skeleton import BONES, NUM_JOINTS

    nb = len(BONES)

    class KCSDiscriminator(nn.Module):
        """D(2D (B,17,2) px, 3D (B,17,3) mm) -> (B,) realness score (LSGAN: real 1, fake 0)."""

        def __init__(self) -> None:
            super().__init__()
            d = nb * (nb + 1) // 2 + NUM_JOINTS * 3 + NUM_JOINTS * 2
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                     nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                     nn.Linear(hidden, 1))

        def forward(self, uv: torch.Tensor, joints_mm: torch.Tensor) -> torch.Tensor:
            rel = joints_mm - joints_mm[:, :1]
            x = torch.cat([kcs_features(rel) * 4.0, rel.reshape(len(rel), -1) / 500.0, norm_2d(uv)], 1)
            return self.net(x)[:, 0]

    return KCSDiscriminator()


def evaluate_coarse(model, va, cond: np.ndarray) -> dict:
    from train.metrics import mpjpe
    from train.pose_validity import validity_report
    from train.train_generator import generator_outputs

    coarse, prob = generator_outputs(model, va, cond)
    return {"coarse_mpjpe_mm": float(mpjpe(coarse, va.joints_3d).mean()),
            "fbi_acc": float((prob.argmax(-1) == va.fbi).mean()), **validity_report(coarse)}


def train(cfg: AdvConfig, out: Path, log=print) -> dict:
    import torch

    from engines.generator import coarse_from_depth
    from train import h36m
    from train.pose_validity import validity_report
    from train.render_data import concat
    from train.train_generator import check_no_s9, load_generator, load_sets, training_batch, validation_view

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    G, ck = load_generator(cfg.generator)
    D = make_discriminator(cfg.hidden)
    sets = load_sets(cfg.train_sets, log)
    check_no_s9(sets)
    tr = concat([s for s, _ in sets])
    va, vcond = validation_view(load_sets([cfg.val_set], log)[0][0], log=log)
    real_path = cfg.h36m_train or str(h36m.default_data_dir() / "h36m" / "h36m_train.npz")
    real = h36m.load(real_path, "gt", every=cfg.h36m_every)
    if (real.subject == 9).any():
        raise UserError("the real-pose set contains S9")
    real_uv, real_3d = torch.from_numpy(real.uv), torch.from_numpy(real.joints_cam)
    log(f"{len(tr)} renders, {len(real_uv)} real Human3.6M poses, {len(va)} S9 validation renders")

    report = {"config": asdict(cfg), "ground_truth": validity_report(va.joints_3d), "before": evaluate_coarse(G, va, vcond)}
    log(f"before: {report['before']}  (ground truth: {report['ground_truth']})")
    opt_g = torch.optim.Adam(G.depth.parameters(), lr=cfg.lr_g)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    steps = len(tr) // cfg.batch_size
    t_start = time.time()
    history = []
    for epoch in range(cfg.epochs):
        G.train()
        G.fbi.eval()
        perm = rng.permutation(len(tr))
        sums = np.zeros(4)
        for s in range(steps):
            b = training_batch(tr, perm[s * cfg.batch_size:(s + 1) * cfg.batch_size], rng, cfg)
            coarse = coarse_from_depth(G.depth(b["image"], b["cond"]), b["cond"])
            # discriminator: real = Human3.6M pairs + this batch's ground truth; fake = coarse
            ri = torch.from_numpy(rng.integers(0, len(real_uv), cfg.batch_size))
            d_real = torch.cat([D(real_uv[ri], real_3d[ri]), D(b["cond"], b["joints_3d"])])
            d_fake = D(b["cond"], coarse.detach())
            loss_d = 0.5 * (((d_real - 1) ** 2).mean() + (d_fake**2).mean())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator (depth branch): supervised + adversarial
            sup = (coarse - b["joints_3d"]).abs().mean()
            adv = ((D(b["cond"], coarse) - 1) ** 2).mean()
            loss_g = sup / 100.0 + cfg.adv_weight * adv
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums += [sup.item(), adv.item(), loss_d.item(), d_fake.mean().item()]
            if s % 100 == 0:
                log(f"  epoch {epoch + 1} step {s}/{steps} L1 {sup.item():.1f} mm adv {adv.item():.3f} "
                    f"D {loss_d.item():.3f}")
        val = evaluate_coarse(G, va, vcond)
        rec = {"epoch": epoch + 1, "l1_mm": sums[0] / steps, "adv": sums[1] / steps, "loss_d": sums[2] / steps, **val}
        history.append(rec)
        log(f"epoch {epoch + 1}/{cfg.epochs}: {val}")
    report["after"] = history[-1] if history else report["before"]
    report["history"] = history
    report["train_seconds"] = time.time() - t_start
    meta = {k: v for k, v in ck.items() if k not in ("model",)}
    meta.update({"stage": "adversarial", "adversarial_config": asdict(cfg), "adversarial_report": report,
                 "val": {k: report["after"][k] for k in ("coarse_mpjpe_mm", "fbi_acc")},
                 "train_seconds": ck.get("train_seconds", 0.0) + report["train_seconds"]})
    torch.save({"model": G.state_dict(), **meta}, out / "best.pt")
    torch.save({"model": D.state_dict(), "kind": "discriminator", "hidden": cfg.hidden}, out / "discriminator.pt")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    log(f"after: {report['after']}")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default=AdvConfig.generator, help="pre-trained generator checkpoint")
    p.add_argument("--train", nargs="+", default=list(TRAIN_SETS), help="training render sets (never S9)")
    p.add_argument("--val", default=VAL_SET, help="validation render set (S9)")
    p.add_argument("--h36m-train", default="", help="Human3.6M train npz (real 3D poses)")
    p.add_argument("--out", required=True, help="output directory")
    for name, typ in (("epochs", int), ("adv-weight", float), ("lr-g", float), ("seed", int), ("threads", int)):
        p.add_argument(f"--{name}", type=typ, default=getattr(AdvConfig, name.replace("-", "_")))


def run(args: argparse.Namespace) -> int:
    cfg = AdvConfig(generator=args.generator, train_sets=tuple(args.train), val_set=args.val,
                    h36m_train=args.h36m_train, epochs=args.epochs, adv_weight=args.adv_weight, lr_g=args.lr_g,
                    seed=args.seed, threads=args.threads)
    train(cfg, Path(args.out), log=lambda s: print(s, flush=True))
    return 0
