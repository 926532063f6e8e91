"""One Euro filter and bone-length stabiliser: step response, noise reduction, constant
bone lengths, resets on gaps and invalid frames."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engines.skeleton import BONES, NUM_JOINTS, bone_lengths
from realtime.filters import (BoneLengthStabilizer, OneEuroFilter, PoseSmoother, SmootherConfig,
                              rebuild_with_lengths)
from realtime.frames import PoseFrame

from pose_fixtures import standing_pose as _tpose

FPS = 30.0


def test_step_response_converges_without_overshoot():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = [f(np.zeros(3), 0.0)]
    for i in range(1, 90):
        out.append(f(np.full(3, 100.0), i / FPS))
    y = np.array(out)[:, 0]
    assert np.all(np.diff(y) >= -1e-9), "a first-order low-pass never moves backwards on a step"
    assert y.max() <= 100.0 + 1e-9
    # 1 Hz cutoff: time constant 1/(2 pi) s = 0.16 s; after 0.5 s (15 frames) > 90 % there.
    assert 0.0 < y[1] < 30.0
    assert y[15] > 90.0
    assert y[-1] == pytest.approx(100.0, abs=0.01)


def test_beta_reduces_lag_on_fast_moves():
    """The point of One Euro: with beta > 0 a fast step is followed faster."""
    slow, fast = OneEuroFilter(1.0, 0.0), OneEuroFilter(1.0, 0.05)
    slow(np.zeros(1), 0.0), fast(np.zeros(1), 0.0)
    ys, yf = [], []
    for i in range(1, 6):
        ys.append(slow(np.full(1, 500.0), i / FPS)[0])
        yf.append(fast(np.full(1, 500.0), i / FPS)[0])
    assert yf[2] > ys[2] + 100.0


def test_noisy_sine_noise_reduced_vectorised_over_joints():
    """A slow sway (150 mm at 0.25 Hz) under 15 mm lifter noise, all 17x3 coordinates at
    once: frame-to-frame jitter drops > 3x and the total error drops too (the filter's lag
    on the sway costs less than the noise it removes). Still poses are smoothed harder."""
    rng = np.random.default_rng(0)
    t = np.arange(600) / FPS
    sway = 150.0 * np.sin(2 * np.pi * 0.25 * t)[:, None, None]
    for amplitude in (1.0, 0.0):
        clean = amplitude * sway + _tpose()[None]
        noisy = clean + rng.normal(0.0, 15.0, clean.shape)
        f = OneEuroFilter()
        out = np.stack([f(noisy[i], t[i]) for i in range(len(t))])
        assert out.shape == noisy.shape
        e_in, e_out = (noisy - clean)[30:], (out - clean)[30:]
        jitter_in = np.sqrt(np.mean(np.diff(e_in, axis=0) ** 2))
        jitter_out = np.sqrt(np.mean(np.diff(e_out, axis=0) ** 2))
        assert jitter_out < jitter_in / 3.0, (jitter_in, jitter_out)
        rms_in, rms_out = np.sqrt(np.mean(e_in**2)), np.sqrt(np.mean(e_out**2))
        assert rms_out < (0.85 if amplitude else 0.5) * rms_in, (amplitude, rms_in, rms_out)


def test_nan_entries_restart_only_that_element():
    f = OneEuroFilter()
    f(np.array([0.0, 0.0]), 0.0)
    y = f(np.array([np.nan, 10.0]), 1 / FPS)
    assert np.isnan(y[0]) and 0.0 < y[1] < 10.0
    y = f(np.array([50.0, 10.0]), 2 / FPS)
    assert y[0] == 50.0  # restarted from the new value, not dragged from the old 0
    assert np.isfinite(y).all()


def test_rebuild_sets_exact_lengths_keeps_directions():
    j = _tpose()
    target = bone_lengths(j) * 1.3
    out = rebuild_with_lengths(j, target)
    np.testing.assert_allclose(bone_lengths(out), target, rtol=1e-9)
    for p, c in BONES:
        a, b = j[c] - j[p], out[c] - out[p]
        assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) == pytest.approx(1.0)
    np.testing.assert_allclose(out[0], j[0])


def test_bone_lengths_constant_after_stabilising():
    rng = np.random.default_rng(1)
    base = _tpose()
    stab = BoneLengthStabilizer(window=60)
    raw, out = [], []
    for i in range(300):
        # Every bone's length jitters by ~5 % (a lifter's breathing limbs), directions wobble.
        j = base * rng.normal(1.0, 0.05, (NUM_JOINTS, 1)) + rng.normal(0, 5.0, base.shape)
        raw.append(bone_lengths(j))
        out.append(bone_lengths(stab(j)))
    raw, out = np.array(raw)[60:], np.array(out)[60:]
    # Over time each bone varies by < 1/4 of its raw spread (a 60-frame running median)...
    assert np.all(out.std(axis=0) < 0.25 * raw.std(axis=0)), (out.std(axis=0), raw.std(axis=0))
    # ...and from one frame to the next by < 1/10: no visible breathing.
    step_raw = np.abs(np.diff(raw, axis=0)).mean(axis=0)
    step_out = np.abs(np.diff(out, axis=0)).mean(axis=0)
    assert np.all(step_out < 0.1 * step_raw), (step_out, step_raw)
    lengths = out[-1]
    np.testing.assert_allclose(lengths[[3, 4, 5]], lengths[[0, 1, 2]])  # left legs = right legs


def _pose_frame(i: int, joints: np.ndarray, valid: bool = True, t: float | None = None,
                trans: np.ndarray | None = None) -> PoseFrame:
    ts = i / FPS if t is None else t
    if not valid:
        return PoseFrame.empty(i, ts, (640, 480))
    tr = np.full(3, np.nan) if trans is None else trans
    return PoseFrame(i, ts, True, np.asarray(joints, np.float32), np.asarray(tr, np.float32),
                     np.zeros((17, 2), np.float32), np.ones(17, np.float32), (640, 480))


def test_pose_smoother_resets_on_invalid_frames_and_gaps():
    sm = PoseSmoother(SmootherConfig(bones_window=0))
    base = _tpose()
    moved = base.copy()
    moved[11:14, 1] += 400.0  # left arm drops by 400 mm
    sm(_pose_frame(0, base))
    # Without a reset, a 400 mm jump is smoothed (lags behind).
    lag = sm(_pose_frame(1, moved)).joints_mm
    assert np.abs(lag - moved).max() > 50.0
    sm(_pose_frame(2, base))
    empty = sm(_pose_frame(3, base, valid=False))
    assert not empty.valid and np.isnan(empty.joints_mm).all()
    after_invalid = sm(_pose_frame(4, moved)).joints_mm  # first frame after an invalid one
    np.testing.assert_allclose(after_invalid, moved, atol=1e-3)
    # A long timestamp gap resets too.
    sm(_pose_frame(5, base))
    jumped = sm(_pose_frame(6, moved, t=5 / FPS + 2.0)).joints_mm
    np.testing.assert_allclose(jumped, moved, atol=1e-3)


def test_pose_smoother_keeps_camera_space_at_smoothed_translation():
    sm = PoseSmoother()
    base = _tpose()
    rng = np.random.default_rng(2)
    outs = []
    for i in range(60):
        tr = np.array([0.0, 0.0, 3000.0]) + rng.normal(0, 40.0, 3)
        pf = sm(_pose_frame(i, base, trans=tr))
        assert pf.joints_mm.dtype == np.float32
        np.testing.assert_allclose(pf.joints_mm[0], 0.0, atol=1e-3)  # root-relative out
        outs.append(pf.translation_mm)
    assert np.std(np.array(outs)[20:, 2]) < 0.6 * 40.0
    assert dataclasses.is_dataclass(pf)


def test_bad_parameters_rejected():
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ValueError):
        BoneLengthStabilizer(window=0)
