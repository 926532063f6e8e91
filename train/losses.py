"""The paper's weighted regression loss (Zhou et al., ECCV 2018 PoseTrack workshop):

    Loss = L0 + eps * L1,   L1 = (L0 + a)^2 * L0 * exp(L0 / (1 - a)),   eps = 0.001

L0 is the per-sample squared error on the z-scored 3D outputs (mean over the 51 values, the
Martinez loss), so 1 - a, the mean L0 over the training set, is of order 0.1-1 and the
exp term is ~e for an average sample and grows fast for hard ones.

When 1 - a is measured: the first epoch is a warm-up with plain L0 (an untrained model has
no meaningful mean). After every epoch, 1 - a is set to the mean per-sample L0 over that
epoch's full pass of the training set, in training mode (dropout on, what the optimiser
sees), and held constant through the next epoch (no gradient flows through a).

Why the exponent is clamped (EXP_CAP = 5): with dropout 0.5 single samples reach 10-20x
the mean L0, and exp(L0/(1-a)) then weighs one sample 1e7-1e17 times the average: unclamped,
the loss diverges within an epoch (docs/results.md). Clamping L0/(1-a) at 5 keeps the paper's
shape (hard samples weighted up, by at most about e^5) and trains stably.
"""
from __future__ import annotations

import torch

EPS = 0.001
EXP_CAP = 5.0


def per_sample_l0(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, D) z-scored predictions and targets -> (B,) mean squared error per sample."""
    assert pred.shape == target.shape, (pred.shape, target.shape)
    return ((pred - target) ** 2).reshape(pred.shape[0], -1).mean(dim=1)


def weighted_loss_terms(l0: torch.Tensor, one_minus_a: float, eps: float = EPS,
                        cap: float = EXP_CAP) -> torch.Tensor:
    """Per-sample L0 + eps * L1 given the per-sample L0 (B,) and the constant 1 - a.
    The exponent L0/(1-a) is clamped at `cap` (see module docstring); cap=inf is the
    unclamped formula."""
    if not one_minus_a > 0:
        raise ValueError(f"1 - a must be positive, got {one_minus_a}")
    a = 1.0 - one_minus_a
    l1 = (l0 + a) ** 2 * l0 * torch.exp(torch.clamp(l0 / one_minus_a, max=cap))
    return l0 + eps * l1


def weighted_loss(pred: torch.Tensor, target: torch.Tensor, one_minus_a: float, eps: float = EPS) -> torch.Tensor:
    """Batch mean of the weighted loss."""
    return weighted_loss_terms(per_sample_l0(pred, target), one_minus_a, eps).mean()


def per_sample_mpjpe(pred: torch.Tensor, target: torch.Tensor, out_std: torch.Tensor) -> torch.Tensor:
    """(B, 51) z-scored predictions and targets, (51,) output std (mm) -> (B,) mean per-joint
    Euclidean error in mm: the evaluation metric itself, as VideoPose3D trains. Unlike L0 it
    grows linearly, not quadratically, with a joint's error, so the frames where the detector
    fails (occluded limbs when sitting) pull less on the fit of the others."""
    assert pred.shape == target.shape and pred.shape[1:] == out_std.shape, (pred.shape, target.shape, out_std.shape)
    return ((pred - target) * out_std).reshape(pred.shape[0], -1, 3).norm(dim=-1).mean(dim=1)


def per_pair_velocity_error(pred: torch.Tensor, target: torch.Tensor, out_std: torch.Tensor) -> torch.Tensor:
    """(B, 2, 51) z-scored predictions and targets of two nearby frames of one sequence, (51,)
    output std (mm) -> (B,) mean per-joint Euclidean error (mm) of the displacement between the
    two frames (the training form of MPJVE). A model whose consecutive outputs jitter around
    correct positions scores well on MPJPE but badly here: this is the term that asks the
    outputs of overlapping windows to move as the body does."""
    assert pred.shape == target.shape and pred.ndim == 3 and pred.shape[1] == 2 and pred.shape[2:] == out_std.shape, \
        (pred.shape, target.shape, out_std.shape)
    moved = (pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0])
    return (moved * out_std).reshape(pred.shape[0], -1, 3).norm(dim=-1).mean(dim=1)


def per_sample_bone_error(pred: torch.Tensor, target: torch.Tensor, out_std: torch.Tensor,
                          out_mean: torch.Tensor) -> torch.Tensor:
    """(B, 51) z-scored predictions and targets, (51,) output std and mean (mm) -> (B,) mean
    absolute error (mm) of the 16 bone lengths (engines.skeleton.BONES). A person's bones keep
    their length, so a model held to the true lengths on every frame cannot let them breathe
    from frame to frame (the bone-length CV of the app's output)."""
    from engines.skeleton import BONES

    assert pred.shape == target.shape and pred.shape[1:] == out_std.shape == out_mean.shape, \
        (pred.shape, target.shape, out_std.shape)
    parent = torch.tensor([b[0] for b in BONES])
    child = torch.tensor([b[1] for b in BONES])

    def lengths(y: torch.Tensor) -> torch.Tensor:
        j = (y * out_std + out_mean).reshape(y.shape[0], -1, 3)
        return (j[:, child] - j[:, parent]).norm(dim=-1)

    return (lengths(pred) - lengths(target)).abs().mean(dim=1)


LOSSES = ("weighted", "l2", "mpjpe")


def training_loss(l0: torch.Tensor, kind: str, one_minus_a: float | None,
                  mpjpe: torch.Tensor | None = None) -> torch.Tensor:
    """The batch loss of a training step from per-sample L0: "weighted" (once 1 - a is known,
    i.e. after the warm-up epoch), "l2", or "mpjpe" (the per-sample MPJPE given as `mpjpe`)."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}")
    if kind == "mpjpe":
        assert mpjpe is not None and mpjpe.shape == l0.shape, "the mpjpe loss needs the per-sample MPJPE"
        return mpjpe.mean()
    if kind == "weighted" and one_minus_a is not None:
        return weighted_loss_terms(l0, one_minus_a).mean()
    return l0.mean()


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain Martinez L2 (batch mean of per-sample L0)."""
    return per_sample_l0(pred, target).mean()
