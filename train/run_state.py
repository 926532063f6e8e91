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
           state: dict, may_change: tuple[str, ...] = (), log: Callable[[str], None] = print) -> dict:
    """Load `last` (if it exists) into model/opt/sched/rng and return its run state, else
    return `state` unchanged. Only the config keys in `may_change` (e.g. "epochs", to extend
    a run) may differ from the saved config; anything else means a new run: UserError."""
    import torch

    if not last.exists():
        return state
    ck = torch.load(last, map_location="cpu", weights_only=False)
    masked = {k: None for k in may_change}
    if {**ck["train_config"], **masked} != {**cfg, **masked}:
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
