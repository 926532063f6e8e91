import math

import numpy as np
import pytest
import torch

from engines.skeleton import bone_lengths
from train.losses import (EPS, EXP_CAP, l2_loss, per_pair_velocity_error, per_sample_bone_error, per_sample_l0,
                          per_sample_mpjpe, training_loss, weighted_loss, weighted_loss_terms)
from train.metrics import mpjpe, p_mpjpe, procrustes_align


def test_weighted_loss_matches_hand_computation():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    tgt = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    # per-sample L0: (1 + 4)/2 = 2.5 and (0 + 1)/2 = 0.5
    l0 = per_sample_l0(pred, tgt)
    assert torch.allclose(l0, torch.tensor([2.5, 0.5]))
    one_minus_a = 0.8  # a = 0.2; exponent args 3.125 and 0.625, below the cap
    want = []
    for v in (2.5, 0.5):
        l1 = (v + 0.2) ** 2 * v * math.exp(v / 0.8)
        want.append(v + 0.001 * l1)
    got = weighted_loss_terms(l0, one_minus_a)
    assert np.allclose(got.numpy(), want, rtol=1e-6)
    assert math.isclose(float(weighted_loss(pred, tgt, one_minus_a)), sum(want) / 2, rel_tol=1e-6)
    assert EPS == 0.001


def test_weighted_loss_exponent_cap():
    l0 = torch.tensor([10.0])
    capped = float(weighted_loss_terms(l0, 0.5))
    want = 10 + 0.001 * (10 + 0.5) ** 2 * 10 * math.exp(EXP_CAP)
    assert math.isclose(capped, want, rel_tol=1e-6)
    uncapped = float(weighted_loss_terms(l0, 0.5, cap=math.inf))
    assert math.isclose(uncapped, 10 + 0.001 * 10.5**2 * 10 * math.exp(20), rel_tol=1e-6)
    with pytest.raises(ValueError):
        weighted_loss_terms(l0, 0.0)


def test_weighted_loss_reduces_to_l2_plus_small_term():
    pred, tgt = torch.randn(8, 51), torch.randn(8, 51)
    assert float(weighted_loss(pred, tgt, 1.0)) >= float(l2_loss(pred, tgt))


def test_mpjpe_and_procrustes():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(6, 17, 3)) * 300
    assert np.allclose(mpjpe(gt + 50.0, gt), 0)  # root alignment removes translation
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    moved = 1.3 * gt @ q.T + np.array([10.0, 20.0, 30.0])
    assert np.allclose(procrustes_align(moved, gt), gt, atol=1e-6)
    assert np.allclose(p_mpjpe(moved, gt), 0, atol=1e-6)
    noisy = gt + rng.normal(size=gt.shape) * 10
    assert (p_mpjpe(noisy, gt) <= mpjpe(noisy, gt) + 1e-9).all()


def test_mpjpe_loss_is_the_evaluation_metric_in_millimetres():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(51, generator=g) * 300, torch.rand(51, generator=g) * 200 + 50
    pred, tgt = torch.randn(6, 51, generator=g), torch.randn(6, 51, generator=g)
    # Root-relative poses (pelvis at 0), as the training targets are: then no alignment is needed.
    pelvis = slice(0, 3)
    pred[:, pelvis], tgt[:, pelvis] = -mean[pelvis] / std[pelvis], -mean[pelvis] / std[pelvis]
    mm = per_sample_mpjpe(pred, tgt, std)
    want = mpjpe((pred * std + mean).reshape(6, 17, 3).numpy(), (tgt * std + mean).reshape(6, 17, 3).numpy())
    np.testing.assert_allclose(mm.numpy(), want, rtol=1e-5)
    l0 = per_sample_l0(pred, tgt)
    assert torch.isclose(training_loss(l0, "mpjpe", None, mm), mm.mean())
    assert torch.isclose(training_loss(l0, "l2", None), l0.mean())
    with pytest.raises(ValueError, match="unknown loss"):
        training_loss(l0, "huber", None)


def _mm_space(n: int, seed: int = 0):
    """z-scoring statistics and n random root-relative poses (mm) with their z-scored form."""
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.randn(51, generator=g) * 300, torch.rand(51, generator=g) * 200 + 50
    joints = torch.randn(n, 17, 3, generator=g) * 250
    joints -= joints[:, :1].clone()
    return mean, std, joints, (joints.reshape(n, 51) - mean) / std


def test_velocity_error_is_the_error_of_the_displacement_in_mm():
    mean, std, joints, z = _mm_space(8)
    target = z.reshape(4, 2, 51)
    # The same error on both frames of a pair moves them alike: no velocity error.
    offset = torch.randn(4, 1, 51) * 0.3
    assert per_pair_velocity_error(target + offset, target, std).abs().max() < 1e-4
    # A pair whose second frame alone is off by d mm: the error is |d| averaged over joints.
    d = torch.zeros(4, 2, 17, 3)
    d[:, 1, 5] = torch.tensor([30.0, -40.0, 0.0])    # 50 mm on one joint
    pred_mm = joints.reshape(4, 2, 17, 3) + d
    pred = (pred_mm.reshape(4, 2, 51) - mean) / std
    np.testing.assert_allclose(per_pair_velocity_error(pred, target, std).numpy(), 50.0 / 17, rtol=1e-4)
    vel = (joints[1::2] - joints[0::2]) - (pred_mm[:, 1] - pred_mm[:, 0])
    np.testing.assert_allclose(per_pair_velocity_error(pred, target, std).numpy(),
                               vel.norm(dim=-1).mean(dim=1).numpy(), rtol=1e-4)


def test_bone_error_ignores_rigid_motion_and_measures_lengths_in_mm():
    mean, std, joints, z = _mm_space(3, seed=1)
    c, s_ = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, 0.0, s_], [0.0, 1.0, 0.0], [-s_, 0.0, c]])
    turned = (joints @ rot.T + torch.tensor([5.0, -7.0, 11.0]))
    pred = (turned.reshape(3, 51) - mean) / std
    assert per_sample_bone_error(pred, z, std, mean).abs().max() < 1e-3
    # Scaling the skeleton by 1.1 makes every bone 10 % too long.
    pred = (1.1 * joints.reshape(3, 51) - mean) / std
    want = 0.1 * bone_lengths(joints.numpy()).mean(axis=1)
    np.testing.assert_allclose(per_sample_bone_error(pred, z, std, mean).numpy(), want, rtol=1e-4)
