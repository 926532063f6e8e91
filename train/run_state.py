"""Resumable training runs: one OUT/last.pt holds everything needed to continue exactly
(weights, optimiser, scheduler, run state, both RNGs, the config), so a session that is
stopped mid-run loses at most the epoch in progress. Shared by every training command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from engines.errors import UserError


def resume(last: Path, cfg: dict, model: Any, opt: Any, sched: Any, rng: np.random.Generator,
           state: dict, may_change: tuple[str, ...] = (), log: Callable[[str], None] = print,
           defaults: dict | None = None) -> dict:
    """Load `last` (if it exists) into model/opt/sched/rng and return its run state, else
    return `state` unchanged. Only the config keys in `may_change` (e.g. "epochs", to extend
    a run) may differ from the saved config; anything else means a new run: UserError. A key
    the saved config lacks (an option added since) counts as its value in `defaults`, what the
    code did before the option existed."""
    import torch

    if not last.exists():
        return state
    ck = torch.load(last, map_location="cpu", weights_only=False)
    masked = {k: None for k in may_change}
    saved = {**{k: v for k, v in (defaults or {}).items() if k not in ck["train_config"]}, **ck["train_config"]}
    if {**saved, **masked} != {**cfg, **masked}:
        raise UserError(f"{last} was written with a different config; use a new --out")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["torch_rng"])
    rng.bit_generator.state = ck["numpy_rng"]
    log(f"resumed from {last} at epoch {ck['state']['epoch']}")
    return ck["state"]


def save(last: Path, cfg: dict, model: Any, opt: Any, sched: Any, rng: np.random.Generator, state: dict) -> None:
    """Write the resumable checkpoint (atomically: a stop mid-write keeps the previous one)."""
    import torch

    tmp = last.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "state": state, "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state,
                "train_config": cfg}, tmp)
    tmp.replace(last)


def lifter_epoch(lifter: Any, make_input: Callable[[Any], Any], targets: Any, batch_size: int, loss: str,
                 state: dict, rng: np.random.Generator, opt: Any, max_norm: float, velocity_weight: float = 0.0,
                 bone_weight: float = 0.0) -> float:
    """One epoch of a Martinez-style regressor (Base lifter or the refiner's inner lifter) on
    z-scored targets (N, 51): `make_input(idx)` gives the batch's raw input rows. Applies
    max-norm after every step. Returns the epoch's mean per-sample L0 and, for the weighted
    loss, stores it as 1 - a for the next epoch (mean L0 over this epoch's full pass in
    training mode, as the optimiser saw it).

    velocity_weight > 0: every sample is a pair of nearby frames of one sequence, targets (N,
    2, 51) and make_input(idx) the (2B, D) rows of the B first frames then of their B partners;
    the loss is the per-frame loss over all 2B frames plus velocity_weight times the velocity
    error of each pair (train.losses.per_pair_velocity_error, mm). bone_weight > 0 adds that
    times the bone-length error of every frame (per_sample_bone_error, mm). Both terms are in
    mm, so they go with loss "mpjpe". The two frames of a pair see the same dropout mask
    (engines.models.paired_dropout), so their difference is the model's, not dropout's."""
    from contextlib import nullcontext

    from engines.models import paired_dropout

    pairs = velocity_weight > 0
    assert targets.ndim == (3 if pairs else 2), (targets.shape, pairs)
    if (pairs or bone_weight > 0) and loss != "mpjpe":
        raise UserError("the velocity and bone-length terms are in mm: they go with --loss mpjpe")
    lifter.train()
    with paired_dropout(lifter) if pairs else nullcontext():
        return _lifter_steps(lifter, make_input, targets, batch_size, loss, state, rng, opt, max_norm, velocity_weight,
                             bone_weight)


def _lifter_steps(lifter: Any, make_input: Callable[[Any], Any], targets: Any, batch_size: int, loss: str,
                  state: dict, rng: np.random.Generator, opt: Any, max_norm: float, velocity_weight: float,
                  bone_weight: float) -> float:
    """The optimiser steps of lifter_epoch."""
    import torch

    from engines.models import apply_max_norm
    from train.losses import per_pair_velocity_error, per_sample_bone_error, per_sample_l0, per_sample_mpjpe, \
        training_loss

    pairs = velocity_weight > 0
    perm = torch.from_numpy(rng.permutation(len(targets)))
    l0_sum, seen = 0.0, 0
    for i in range(0, len(targets) - batch_size + 1, batch_size):
        idx = perm[i:i + batch_size]
        pred = lifter.forward_normalized(make_input(idx))
        target = targets[idx].transpose(0, 1).flatten(0, 1) if pairs else targets[idx]
        l0 = per_sample_l0(pred, target)
        mm = per_sample_mpjpe(pred, target, lifter.out_std) if loss == "mpjpe" else None
        total = training_loss(l0, loss, state["one_minus_a"], mm)
        if pairs:
            total = total + velocity_weight * per_pair_velocity_error(
                pred.reshape(2, len(idx), -1).transpose(0, 1), targets[idx], lifter.out_std).mean()
        if bone_weight > 0:
            total = total + bone_weight * per_sample_bone_error(pred, target, lifter.out_std, lifter.out_mean).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        apply_max_norm(lifter, max_norm)
        l0_sum += float(l0.detach().sum())
        seen += len(l0)
    epoch_l0 = l0_sum / max(seen, 1)
    if loss == "weighted":
        state["one_minus_a"] = epoch_l0
    return epoch_l0


def end_epoch(out: Path, state: dict, epochs: int, epoch_l0: float, val: float, seconds: float, model: Any,
              meta: dict, log: Callable[[str], None] = print, keep_epochs: int = 0) -> None:
    """Book-keeping after an epoch: history, log line, OUT/latest.pt (this epoch's weights +
    `meta`: a run validated on its test set is reported at a fixed epoch, not its best),
    OUT/best.pt when the validation MPJPE improved, and OUT/epochNN.pt as well during the
    last `keep_epochs` epochs (for averaging their weights: `posestream ensemble --soup`)."""
    import torch

    state["train_seconds"] += seconds
    state["epoch"] += 1
    state["history"].append({"epoch": state["epoch"], "train_l0": epoch_l0, "val_mpjpe_mm": val, "seconds": seconds})
    log(f"epoch {state['epoch']}/{epochs} train L0 {epoch_l0:.4f} val MPJPE {val:.2f} mm ({seconds:.0f}s)")
    weights = {"model": model.state_dict(), **meta, "val_mpjpe_mm": val, "epoch": state["epoch"],
               "train_seconds": state["train_seconds"]}
    tmp = out / "latest.tmp"
    torch.save(weights, tmp)
    tmp.replace(out / "latest.pt")
    if state["epoch"] > epochs - keep_epochs:
        tmp = out / "epoch.tmp"
        torch.save(weights, tmp)
        tmp.replace(out / f"epoch{state['epoch']:02d}.pt")
    if val < state["best"]:
        state["best"] = val
        torch.save(weights, out / "best.pt")
