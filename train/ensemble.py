"""Average trained temporal lifters into one model (`posestream ensemble`).

    posestream ensemble --member runs/a/best.pt --member runs/b/best.pt --out models/NAME.pt
    posestream ensemble --soup --member runs/a/epoch06.pt ... --member runs/a/epoch10.pt --out x.pt
    posestream ensemble --time-average --member runs/a/latest.pt --out models/NAME.pt

Members are temporal-lifter checkpoints (train-lifter --window N [--conv]) trained under this
code's contract, all centred or all causal, at the same frame spacing. The result is one
checkpoint of stage "temporal_ensemble" (engines.models.TemporalEnsemble) over
engines.temporal.ENSEMBLE_WINDOW frames: it evaluates, exports and benchmarks like any stage,
and records where each member came from.

With --soup the members' *weights* are averaged instead ("model soup", or stochastic weight
averaging when they are the last epochs of one run, `train-lifter --keep-epochs`): one model of
the members' own architecture and cost. That only makes sense for members on one training
trajectory or fine-tuned from one start, so they must share stage and model config.

With --time-average the one member (a centred 81-frame temporal convolution) becomes stage
engines.temporal.AVERAGED_STAGE (engines.models.TimeAveraged): its outputs for the windows at
the output frame and one frame spacing either side, averaged.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engines.errors import UserError


def build(members: list[Path], out: Path) -> dict:
    """Write the ensemble checkpoint of `members` to `out`; returns it."""
    import torch

    from engines.backends.torch_backend import load_checkpoint
    from engines.checkpoint import contract_metadata, file_sha256
    from engines.models import LifterConfig, TemporalEnsemble
    from engines.temporal import ENSEMBLE_WINDOW, CONV_WINDOWS, WindowSpec, conv_stage

    if len(members) < 2:
        raise UserError("an ensemble needs at least two --member checkpoints")
    cks = [load_checkpoint(p) for p in members]
    for p, ck in zip(members, cks):
        if ck.get("kind") not in ("temporal_lifter", *(conv_stage(w) for w in CONV_WINDOWS)):
            raise UserError(f"{p} is a {ck.get('kind')!r} checkpoint, not a temporal lifter")
        if ck.get("contract") != contract_metadata():
            raise UserError(f"{p} was trained under another contract than this code's")
    specs = [WindowSpec.from_metadata(ck["artifact_meta"]) for ck in cks]
    if len({(m.causal, m.spacing_ms, m.frame_input) for m in specs}) != 1:
        raise UserError("members differ in causality, frame spacing or input: "
                        + ", ".join(f"{p.name} ({m.causal}, {m.spacing_ms} ms, {m.frame_input})"
                                    for p, m in zip(members, specs)))
    spec = WindowSpec(ENSEMBLE_WINDOW, specs[0].causal, specs[0].spacing_ms, specs[0].frame_input)
    configs = [LifterConfig(**ck["model_config"]) for ck in cks]
    try:
        model = TemporalEnsemble(configs, ENSEMBLE_WINDOW)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for m, ck in zip(model.members, cks):
        m.load_state_dict(ck["model"])
    ck = {"kind": "temporal_ensemble", "model": model.state_dict(),
          "model_config": {"window": ENSEMBLE_WINDOW, "causal": spec.causal, "spacing_ms": spec.spacing_ms,
                           "members": [c.to_dict() for c in configs]},
          "contract": contract_metadata(),
          "artifact_meta": spec.metadata(),
          "members": [{"source_file": p.name, "source_sha256": file_sha256(p), "epoch": c.get("epoch"),
                       "val_mpjpe_mm": c.get("val_mpjpe_mm"), "train_config": c.get("train_config"),
                       "train_seconds": c.get("train_seconds")} for p, c in zip(members, cks)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, out)
    return ck


def soup(members: list[Path], out: Path) -> dict:
    """Write to `out` the checkpoint whose weights are the mean of `members`' (same stage and
    model config; integer buffers such as BatchNorm's step count are the first member's, every
    other metadata too, plus where each member came from); returns it."""
    import torch

    from engines.backends.torch_backend import load_checkpoint
    from engines.checkpoint import contract_metadata, file_sha256

    if len(members) < 2:
        raise UserError("a soup needs at least two --member checkpoints")
    cks = [load_checkpoint(p) for p in members]
    first = cks[0]
    for p, ck in zip(members, cks):
        if ck.get("contract") != contract_metadata():
            raise UserError(f"{p} was trained under another contract than this code's")
        if (ck.get("kind"), ck.get("model_config")) != (first.get("kind"), first.get("model_config")) \
                or ck["model"].keys() != first["model"].keys():
            raise UserError(f"{p} is not the same model as {members[0]} (stage {ck.get('kind')!r}); "
                            f"a soup averages the weights of one architecture")
    weights = {k: (torch.stack([ck["model"][k] for ck in cks]).mean(0) if v.is_floating_point() else v)
               for k, v in first["model"].items()}
    ck = {**first, "model": weights,
          "soup": [{"source_file": p.name, "source_sha256": file_sha256(p), "epoch": c.get("epoch"),
                    "val_mpjpe_mm": c.get("val_mpjpe_mm")} for p, c in zip(members, cks)]}
    ck.pop("val_mpjpe_mm", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, out)
    return ck


def time_averaged(member: Path, out: Path) -> dict:
    """Write to `out` the checkpoint of stage AVERAGED_STAGE over `member` (its weights
    unchanged, the window AVERAGED_REACH frames wider on each side); returns it."""
    import torch

    from engines.backends.torch_backend import load_checkpoint
    from engines.checkpoint import contract_metadata, file_sha256
    from engines.models import LifterConfig, TimeAveraged
    from engines.temporal import AVERAGED_MEMBER, AVERAGED_REACH, AVERAGED_STAGE, WindowSpec, conv_stage

    ck = load_checkpoint(member)
    if ck.get("kind") != conv_stage(AVERAGED_MEMBER) or ck.get("contract") != contract_metadata():
        raise UserError(f"{member} is not a {conv_stage(AVERAGED_MEMBER)} checkpoint trained under this code's "
                        f"contract")
    spec = WindowSpec.from_metadata(ck["artifact_meta"])
    try:
        model = TimeAveraged(LifterConfig(**ck["model_config"]), AVERAGED_REACH)
    except ValueError as exc:
        raise UserError(f"{member}: {exc}") from None
    model.model.load_state_dict(ck["model"])
    meta = WindowSpec(model.window, spec.causal, spec.spacing_ms, spec.frame_input, spec.frame_cues).metadata()
    out_ck = {"kind": AVERAGED_STAGE, "model": model.state_dict(),
              "model_config": {"window": model.window, "reach": AVERAGED_REACH, "causal": False,
                               "spacing_ms": spec.spacing_ms, "member": ck["model_config"]},
              "contract": contract_metadata(), "artifact_meta": meta,
              "members": [{"source_file": member.name, "source_sha256": file_sha256(member), "epoch": ck.get("epoch"),
                           "train_config": ck.get("train_config"), "train_seconds": ck.get("train_seconds")}]}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out_ck, out)
    return out_ck


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", action="append", type=Path, required=True, help="temporal lifter checkpoint (repeat)")
    p.add_argument("--soup", action="store_true",
                   help="average the members' weights into one model of their architecture (members of one run)")
    p.add_argument("--time-average", action="store_true",
                   help="one centred member: average its outputs over the output frame and one frame spacing "
                   "either side")
    p.add_argument("--out", type=Path, required=True, help="ensemble checkpoint to write (.pt)")


def run(args: argparse.Namespace) -> int:
    if args.time_average:
        if len(args.member) != 1:
            raise UserError("--time-average takes one --member")
        ck = time_averaged(args.member[0], args.out)
        print(f"wrote {args.out}: {args.member[0]} averaged over {ck['model_config']['window']}-frame windows")
        return 0
    if args.soup:
        ck = soup(args.member, args.out)
        print(f"wrote {args.out}: the weights of {len(ck['soup'])} {ck.get('kind')} checkpoints averaged")
        return 0
    ck = build(args.member, args.out)
    print(f"wrote {args.out}: {len(ck['members'])} members over {ck['model_config']['window']} frames")
    return 0
