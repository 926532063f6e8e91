"""Temporal lifting in the app: the 2D history (resampling by timestamp, gaps, resets), the
SequenceLifter (centred / causal / single-frame, cold start, order) and the steady root
trajectory on a synthetic walk, with fake lifters (no model files, no MediaPipe)."""
from __future__ import annotations

import numpy as np
import pytest

from engines.camera import project_camera
from engines.errors import UserError
from realtime.detector import Detection
from realtime.estimator import Detected, PoseEstimator
from realtime.frames import PoseFrame
from realtime.history import History, TemporalSpec, resample
from realtime.sequence import lift_sequence
from realtime.trajectory import Intrinsics, RootFilterConfig, RootTrajectory, TrajectoryStage

from pose_fixtures import standing_pose

W, H = 640, 480
REL = standing_pose() - standing_pose()[0]


# ---- history --------------------------------------------------------------------------------
def test_resample_is_exact_on_linear_motion_at_uneven_timestamps():
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.uniform(0.01, 0.06, 60))          # 17-100 fps, jittered
    ts = np.delete(ts, [10, 11, 12, 30])                  # and dropped frames
    xs = np.stack([3.0 + 2.0 * ts, -1.0 * ts], axis=1)    # a joint moving at constant speed
    q = np.linspace(ts[0], ts[-1], 27)
    np.testing.assert_allclose(resample(ts, xs, q), np.stack([3.0 + 2.0 * q, -1.0 * q], 1), atol=1e-12)
    # outside the samples: the first / last one (edge padding)
    np.testing.assert_allclose(resample(ts, xs, np.array([ts[0] - 1, ts[-1] + 1])), xs[[0, -1]])


def test_history_window_spacing_padding_and_reset():
    spec = TemporalSpec(window=5, spacing_s=0.1, causal=True)
    np.testing.assert_allclose(spec.offsets_s, [-0.4, -0.3, -0.2, -0.1, 0.0])
    h = History(spec)
    assert h.max_gap_s == pytest.approx(0.4)  # lost for longer than the window -> new history
    for t in np.arange(0, 0.5, 1 / 30):       # 30 fps, x = 10 t
        assert not h.push(float(t), np.array([10 * t]))
    win, padded = h.window(h.last_s)
    assert not padded
    np.testing.assert_allclose(win[:, 0], 10 * (h.last_s + spec.offsets_s))
    win, padded = h.window(0.2)  # reaches 0.2 s before the first sample: padded with it
    assert padded and win[0, 0] == 0.0 and win[-1, 0] == pytest.approx(2.0)
    # frames dropped for 0.3 s (< window): interpolated across the gap
    assert not h.push(0.8, np.array([8.0]))
    win, padded = h.window(0.8)
    assert not padded and win[-1, 0] == pytest.approx(8.0)
    # lost for 0.5 s (> window): the history starts again
    assert h.push(1.3, np.array([13.0]))
    assert len(h) == 1 and h.window(1.3)[1]
    # forgetting keeps what later windows need
    for t in np.arange(1.3 + 1 / 30, 3.0, 1 / 30):
        h.push(float(t), np.array([10 * t]))
    before = h.window(2.9)[0]
    h.forget_before(2.5)
    assert len(h) < 40
    np.testing.assert_allclose(h.window(2.9)[0], before)
    assert not h.window(2.5)[1]


def test_temporal_spec_from_metadata():
    assert TemporalSpec.from_metadata({"stage": "lifter"}) is None
    s = TemporalSpec.from_metadata({"window": 27, "spacing_ms": 100.0, "causal": False})
    assert (s.window, s.spacing_s, s.causal, s.lookahead_s) == (27, 0.1, False, pytest.approx(1.3))
    with pytest.raises(ValueError):
        TemporalSpec(4, 0.1, causal=False)  # a centred window needs an odd length
    # One window contract (engines.temporal.WindowSpec): a model whose frames carry image cues
    # is refused with a clear error, not fed features_2d.
    cue_meta = {"window": 81, "causal": True, "spacing_ms": 40.0, "source_file": "cues.pt",
                "frame_input": "engines.normalize.features_2d_cues", "frame_cues": ["world_mm"]}
    with pytest.raises(UserError, match="cues.pt: its frames take engines.normalize.features_2d_cues with world_mm"):
        TemporalSpec.from_metadata(cue_meta)


# ---- sequence lifter --------------------------------------------------------------------------
class FakeTemporal:
    """A temporal 'model' whose output encodes its whole input window: the standing pose with
    the head moved by the window's mean pelvis position and its last frame's spread."""

    name = "fake"

    def __init__(self, window: int, causal: bool, spacing_ms: float = 100.0) -> None:
        self.metadata = {"stage": "temporal_conv", "window": window, "causal": causal, "spacing_ms": spacing_ms}
        self.windows: list[np.ndarray] = []

    def run(self, inputs: dict) -> dict:
        x = inputs["features"]
        assert x.ndim == 3 and x.shape[1:] == (self.metadata["window"], 37)
        self.windows += list(x)
        out = np.repeat(REL[None], len(x), 0).astype(np.float32)
        out[:, 10, :2] += 1000 * x[:, :, 34:36].mean(axis=1)
        out[:, 10, 2] += 10 * x[:, -1, 36]
        return {"joints_mm": out}

    def close(self) -> None:
        pass


class FakeSingle:
    """A single-frame 'model': the standing pose, scaled per call by `scales` (a lifted scale
    error becomes a depth error of the same fraction in the root solve)."""

    name = "fake"
    metadata = {"stage": "lifter"}

    def __init__(self, scales: np.ndarray | None = None) -> None:
        self.scales = iter(scales) if scales is not None else None

    def run(self, inputs: dict) -> dict:
        s = next(self.scales) if self.scales is not None else 1.0
        return {"joints_mm": (REL * s)[None].astype(np.float32)}

    def close(self) -> None:
        pass


class NoDetector:
    def close(self) -> None:
        pass


def estimator(lifter, trajectory: bool = True) -> PoseEstimator:
    return PoseEstimator(detector=NoDetector(), lifter=lifter, trajectory=trajectory)


def detected(i: int, t: float, uv: np.ndarray | None) -> Detected:
    det = None if uv is None else Detection(uv.astype(np.float32), np.ones(17, np.float32), np.zeros((17, 3)),
                                            None, np.zeros((33, 2), np.float32), np.ones(33, np.float32))
    return Detected(i, t, (W, H), det)


def walking_2d(n: int, fps: float = 30.0, seed: int = 0, start: int = 0) -> list[np.ndarray]:
    """2D of the standing pose walking across the image, with a little jitter."""
    rng = np.random.default_rng(seed)
    intr = Intrinsics.from_fov(W, H, 60.0)
    out = []
    for i in range(start, start + n):
        root = np.array([-600 + 40 * i / fps * 30, 100, 4000.0])
        out.append(project_camera(REL + root, intr.f, intr.c) + rng.normal(0, 1.0, (17, 2)))
    return out


def run(est: PoseEstimator, dets: list[Detected], root: RootFilterConfig | None = None) -> list[PoseFrame]:
    return list(lift_sequence(dets, est, root))


@pytest.mark.parametrize("causal", [True, False])
def test_every_detection_answered_once_in_order(causal):
    uv = walking_2d(60)
    dets = [detected(i, i / 30, None if i in (7, 8, 40) else uv[i]) for i in range(60)]
    out = run(estimator(FakeTemporal(9, causal)), dets, RootFilterConfig(lag_s=0.5))
    assert [p.index for p in out] == list(range(60))
    assert [p.valid for p in out] == [d.detection is not None for d in dets]
    assert all(np.isfinite(p.translation_mm).all() for p in out if p.valid)


def test_centred_model_waits_for_its_lookahead_then_flushes_padded():
    est = estimator(FakeTemporal(9, causal=False), trajectory=False)  # lookahead 0.4 s
    lifter = est.sequence()
    uv = walking_2d(30)
    got = []
    for i in range(30):
        out = lifter.push(detected(i, i / 30, uv[i]))
        assert all(p.index <= i - 12 for p in out)  # frame k needs frames up to k + 0.4 s
        got += out
    assert [p.index for p in got] == list(range(18))
    rest = lifter.flush()
    assert [p.index for p in rest] == list(range(18, 30))
    # cold start: the first 0.4 s (window reaches before the track) and the flushed end
    cold = [p.index for p in got + rest if p.cold_start]
    assert cold == list(range(0, 12)) + list(range(18, 30))


def test_causal_model_cold_start_and_reset_after_long_loss():
    est = estimator(FakeTemporal(5, causal=True), trajectory=False)  # window 0.4 s
    uv = walking_2d(100)
    present = [i for i in range(100) if not (40 <= i < 50 or 70 <= i < 90)]  # lost 0.33 s, then 0.67 s
    dets = [detected(i, i / 30, uv[i] if i in present else None) for i in range(100)]
    lifter = est.sequence()
    out = []
    for d in dets:
        step = lifter.push(d)
        assert [p.index for p in step] == [d.index]  # causal: answered at once
        out += step
    cold = {p.index for p in out if p.cold_start}
    assert cold == set(range(0, 12)) | set(range(90, 102)) & set(present)
    # the short loss (10 frames) kept the history: interpolated across it, not cold
    assert not out[50].cold_start and out[50].valid


def test_causal_never_sees_the_future():
    uv = walking_2d(60)
    other = walking_2d(60, seed=1)
    k = 30
    for causal in (True, False):
        a = run(estimator(FakeTemporal(9, causal)), [detected(i, i / 30, uv[i]) for i in range(60)],
                RootFilterConfig())
        # the same up to frame k, a different person's 2D afterwards
        b = run(estimator(FakeTemporal(9, causal)),
                [detected(i, i / 30, uv[i] if i <= k else other[i] + 50) for i in range(60)], RootFilterConfig())
        same = [np.array_equal(p.joints_mm, q.joints_mm) and np.array_equal(p.translation_mm, q.translation_mm)
                for p, q in zip(a[:k + 1], b[:k + 1])]
        if causal:
            assert all(same)
        else:  # control: a centred model does look ahead
            assert not all(same)


def test_resampling_makes_uneven_input_match_even_input():
    """The same motion seen at 30 fps with jittered timestamps and dropped frames gives (nearly)
    the windows of an even 60 fps stream: the model sees time, not frame counts."""
    fps_even, n = 60.0, 120
    intr = Intrinsics.from_fov(W, H, 60.0)

    def uv_at(t: float) -> np.ndarray:
        return project_camera(REL + np.array([-600 + 1200 * t, 100, 4000.0]), intr.f, intr.c)

    rng = np.random.default_rng(3)
    t_uneven = np.sort(rng.uniform(0, (n - 1) / fps_even, 70))
    t_uneven = t_uneven[(t_uneven < 0.8) | (t_uneven > 0.9)]  # a stretch of dropped frames
    ref_t = 1.5
    fake_even, fake_uneven = FakeTemporal(9, True), FakeTemporal(9, True)
    run(estimator(fake_even, False), [detected(i, t, uv_at(t)) for i, t in enumerate(np.arange(n) / fps_even)
                                      if t <= ref_t])
    run(estimator(fake_uneven, False), [detected(i, t, uv_at(t)) for i, t in enumerate(np.r_[t_uneven[t_uneven < ref_t], ref_t])])
    np.testing.assert_allclose(fake_uneven.windows[-1], fake_even.windows[-1], atol=1e-4)


def test_single_frame_model_lifts_each_frame_at_once():
    est = estimator(FakeSingle())
    lifter = est.sequence(None)
    uv = walking_2d(5)
    for i in range(5):
        (p,) = lifter.push(detected(i, i / 30, uv[i]))
        assert p.valid and not p.cold_start and np.allclose(p.joints_mm, REL, atol=1e-3)
    assert lifter.flush() == []


def _walk_truth(n: int, fps: float) -> np.ndarray:
    """Pelvis (n, 3) mm: walking across and away, 2.5 -> 5.5 m, turning back, at ~1.3 m/s."""
    t = np.arange(n) / fps
    return np.stack([1500 * np.sin(2 * np.pi * t / 9), 150 + 15 * np.sin(4 * np.pi * t),
                     4000 + 1500 * np.sin(2 * np.pi * t / 12 + 0.5)], axis=1)


@pytest.mark.parametrize("lag_s", [0.0, 1.0])
def test_root_trajectory_on_a_synthetic_walk_with_known_depth(lag_s):
    """The per-frame solve of a pose whose lifted scale is off by 6 % (random per frame, some
    frames far worse) swings in depth; the filter follows the walk without bias, with much
    less noise, and with steps near the true ones."""
    fps, n = 30.0, 360
    rng = np.random.default_rng(7)
    truth = _walk_truth(n, fps)
    intr = Intrinsics.from_fov(W, H, 60.0)
    scales = 1.0 + rng.normal(0, 0.06, n)
    scales[rng.random(n) < 0.03] *= 1.4  # outliers
    dets = [detected(i, i / fps, project_camera(REL + truth[i], intr.f, intr.c) + rng.normal(0, 1.5, (17, 2)))
            for i in range(n)]
    raw = run(estimator(FakeSingle(scales)), dets, None)
    out = run(estimator(FakeSingle(scales)), dets, RootFilterConfig(lag_s=lag_s))
    meas = np.stack([p.translation_mm for p in raw]).astype(np.float64)
    est = np.stack([p.translation_mm for p in out]).astype(np.float64)
    err_meas = np.linalg.norm(meas - truth, axis=1)
    err = np.linalg.norm(est - truth, axis=1)
    step = np.linalg.norm(np.diff(est, axis=0), axis=1)
    true_step = np.linalg.norm(np.diff(truth, axis=0), axis=1)
    # no bias: median depth as the truth's (and as the per-frame solve's) within 2 %
    assert abs(np.median(est[:, 2]) / np.median(truth[:, 2]) - 1) < 0.02
    assert abs(np.median(est[:, 2]) / np.median(meas[:, 2]) - 1) < 0.03
    # noise: the error shrinks (more with a lag), steps come close to the walk's own
    assert np.sqrt(np.mean(err ** 2)) < (0.35 if lag_s else 0.6) * np.sqrt(np.mean(err_meas ** 2))
    assert np.percentile(step, 95) < (1.5 if lag_s else 3.0) * np.percentile(true_step, 95) + 20
    assert np.percentile(step, 95) <= 100.0 if lag_s else True
    # image-plane position follows closely (across the ray the solve is precise)
    lateral = np.linalg.norm((est - truth)[:, :2], axis=1)
    assert np.median(lateral) < 40.0


def test_root_trajectory_causal_prefix_gap_and_pass_through():
    cam = TrajectoryStage()
    rng = np.random.default_rng(0)
    truth = _walk_truth(90, 30.0)

    def frames(noise_after: int | None = None) -> list[PoseFrame]:
        out = []
        for i, t in enumerate(truth):
            z = t + (rng.normal(0, 300, 3) if noise_after is not None and i > noise_after else 0)
            valid = i not in (20, 21)
            ts = i / 30 + (2.0 if i >= 60 else 0.0)  # lost for 2 s before frame 60
            out.append(PoseFrame(i, ts, valid, REL.astype(np.float32), z.astype(np.float32) if valid else
                                 np.full(3, np.nan, np.float32), np.zeros((17, 2), np.float32),
                                 np.ones(17, np.float32), (W, H)))
        return out

    def filtered(fr: list[PoseFrame], lag: float) -> list[PoseFrame]:
        rt = RootTrajectory(cam, RootFilterConfig(lag_s=lag))
        out = [q for p in fr for q in rt.push(p)]
        return out + rt.flush()

    a = filtered(frames(), 0.0)
    b = filtered(frames(noise_after=40), 0.0)
    assert [p.index for p in a] == list(range(90)) and not a[20].valid and np.isnan(a[20].translation_mm).all()
    for p, q in zip(a[:41], b[:41]):
        np.testing.assert_array_equal(p.translation_mm, q.translation_mm)  # causal: no future in the past
    # after the 2 s gap the filter starts again from the first solve, not dragged from the old track
    np.testing.assert_allclose(a[60].translation_mm, truth[60], atol=1e-3)
    smoothed = filtered(frames(), 1.0)
    assert [p.index for p in smoothed] == list(range(90))
