"""Fine-tune the Final refiner on still-path pictures of training poses (issue #17, the 8 real
frames): does a refiner that has seen more sitting and bending poses, through the 2D the still
path really gives (the turned-view consensus), lift stills better?

    python -m train.still_eval cache --h36m ../shared/data/h36m/h36m_train.npz --h36m-count 1000 \\
        --sitting-count 1500 --bvh ../shared/data/bandai/dataset-2/data --bvh-count 800 \\
        --names h36mall h36msit bandai2 --bvh-seed 2 --out data_out/still_train
    python scripts/still_refiner_finetune.py data_out/still_train --out runs/still/final_ft.pt
    python -m train.still_eval eval data_out/still_eval final runs/still/final_ft.pt --backend torch

The training pictures are Human3.6M training-subject rows (every action, and the Sitting and
SittingDown actions) and Bandai frames of another seed than the evaluation's, rendered and
detected exactly as train.still_eval's evaluation pictures. The generator (unchanged) runs on
each cached crop; the refiner starts as the shipped `final` (its input and output
normalisation kept) and is trained with plain L2 on the pictures and their mirror images (the
mirror its flip averaging uses), for a fixed number of epochs (no epoch is picked on the
evaluation sets; the recipes tried and their figures are in docs/temporal.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch

    from engines.backends import open_backend
    from engines.checkpoint import resolve_model_path
    from engines.normalize import features_2d
    from engines.refiner import Refiner, RefinerConfig
    from train import run_state

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cache", help="folder of train.still_eval cache chunks (training pictures: never S9)")
    p.add_argument("--out", required=True, help="the fine-tuned refiner checkpoint")
    p.add_argument("--model", default="final", help="the refiner to start from")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep the BatchNorm running statistics of the shipped model (momentum 0)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    files = sorted(Path(a.cache).glob("*_[0-9][0-9][0-9].npz"))
    if not files or any(f.name.startswith("s9") for f in files):
        print(f"error: {a.cache} holds no training pictures (or S9 pictures)", file=sys.stderr)
        return 1
    parts = [dict(np.load(f)) for f in files]
    d = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    ok = d["found"]
    print(f"{len(files)} chunks: {int(ok.sum())} of {len(ok)} pictures answered", flush=True)
    ck = torch.load(resolve_model_path(a.model), map_location="cpu", weights_only=False)
    gen = open_backend(ck["artifact_meta"]["generator"], "onnxruntime")
    img = np.ascontiguousarray(d["crop"][ok].transpose(0, 3, 1, 2), np.float32) / np.float32(255.0)
    jc = d["joints_crop"][ok]
    coarse, prob = [], []
    for s in range(0, len(img), 64):
        g = gen.run({"image": img[s:s + 64], "joints_crop": jc[s:s + 64]})
        coarse.append(np.asarray(g["coarse_mm"], np.float32))
        prob.append(np.asarray(g["fbi_prob"], np.float32))
    gen.close()
    feats = features_2d(d["uv"][ok], d["f"][ok], d["c"][ok])
    cfg = RefinerConfig(**ck["model_config"])
    model = Refiner(cfg)
    model.load_state_dict(ck["model"])
    lifter = model.lifter
    if a.freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.momentum = 0.0

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))

    X = model.inputs(t(feats), t(np.concatenate(coarse)), t(np.concatenate(prob)))
    Y = t(d["joints_3d"][ok]).reshape(len(X), -1)
    X = torch.cat([X, X.index_select(1, lifter.flip_in_index) * lifter.flip_in_sign])
    Y = torch.cat([Y, Y.index_select(1, lifter.flip_out_index) * lifter.flip_out_sign])
    Yn = (Y - lifter.out_mean) / lifter.out_std
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.85)
    state = {"epoch": 0, "one_minus_a": None, "history": [], "best": float("inf"), "train_seconds": 0.0}
    t0 = time.time()
    for e in range(a.epochs):
        loss = run_state.lifter_epoch(lifter, lambda idx: X[idx], Yn, a.batch, "l2", state, rng, opt, cfg.max_norm)
        sched.step()
        print(f"epoch {e + 1}/{a.epochs}: training loss {loss:.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({**ck, "model": model.state_dict(), "shipped_from": None,
                "still_finetune": {"from": a.model, "lr": a.lr, "epochs": a.epochs, "batch": a.batch,
                                   "freeze_bn": a.freeze_bn,
                                   "pictures": int(ok.sum()), "chunks": [f.name for f in files],
                                   "train_seconds": time.time() - t0}}, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
