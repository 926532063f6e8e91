"""Temporal lifter: window building (edges, causality, strides), the per-frame mirror, the
model's flip averaging, ONNX parity, a tiny training run and the eval CLI on windows."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from engines.errors import UserError
from engines.models import LifterConfig, TemporalLifter
from engines.normalize import LIFT_INPUT_DIM, features_2d
from engines.skeleton import FLIP_PERMUTATION, flip_horizontal
from engines.temporal import (WINDOW, group_bounds, row_stride, window_flip, window_indices, window_offsets,
                              windowed_features)


def test_offsets_centred_and_causal():
    np.testing.assert_array_equal(window_offsets(5), [-2, -1, 0, 1, 2])
    np.testing.assert_array_equal(window_offsets(4, causal=True), [-3, -2, -1, 0])
    with pytest.raises(ValueError):
        window_offsets(4)


def test_windows_stay_inside_their_sequence_and_pad_with_the_edge_frame():
    keys = np.array([7, 7, 7, 7, 3, 3, 9])  # runs of 4, 2 and 1 samples
    first, last = group_bounds(keys)
    np.testing.assert_array_equal(first, [0, 0, 0, 0, 4, 4, 6])
    np.testing.assert_array_equal(last, [3, 3, 3, 3, 5, 5, 6])
    idx = window_indices(first, last, np.arange(7), window_offsets(3), stride=2)
    np.testing.assert_array_equal(idx, [[0, 0, 2], [0, 1, 3], [0, 2, 3], [1, 3, 3], [4, 4, 5], [4, 5, 5],
                                        [6, 6, 6]])
    # One stride per centre (training mixes frame spacings).
    idx = window_indices(first, last, np.array([1, 2]), window_offsets(3), stride=np.array([1, 2]))
    np.testing.assert_array_equal(idx, [[0, 1, 2], [0, 2, 3]])


def test_causal_windows_never_see_the_future():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, LIFT_INPUT_DIM)).astype(np.float32)
    keys = np.repeat([0, 1], 20)
    a = windowed_features(feats, keys, stride=2, window=5, causal=True)
    changed = feats.copy()
    changed[25:] += 10.0  # the future of sample 24 in run 1
    b = windowed_features(changed, keys, stride=2, window=5, causal=True)
    np.testing.assert_array_equal(a[:25], b[:25])
    np.testing.assert_array_equal(a[24, -1], feats[24])       # the reference frame is the last one
    assert not np.array_equal(windowed_features(changed, keys, 2, 5, causal=False)[24],
                              windowed_features(feats, keys, 2, 5, causal=False)[24])


def test_row_stride_matches_frame_rates():
    assert row_stride(100.0) == 1            # Human3.6M validation, 10 Hz
    assert row_stride(20.0) == 5             # 50 Hz
    assert row_stride(1000 / 30) == 3        # a 30 fps camera: 100 ms
    assert row_stride(40.0) == 2             # 25 Hz: 80 ms, within 25 %
    with pytest.raises(UserError, match="cannot be windowed"):
        row_stride(300.0)


def test_window_mirror_is_the_per_frame_feature_mirror():
    rng = np.random.default_rng(1)
    uv = rng.uniform(150, 850, (6, 3, 17, 2))
    f, c = np.array([1145.0, 1144.0]), np.array([512.5, 515.5])
    mirrored = uv[..., list(FLIP_PERMUTATION), :].copy()
    mirrored[..., 0] = 2 * c[0] - mirrored[..., 0]
    index, sign = window_flip(3)
    x = features_2d(uv, f, c).reshape(6, -1)
    np.testing.assert_allclose(features_2d(mirrored, f, c).reshape(6, -1), sign * x[:, index], atol=1e-6)


def _temporal_model(window: int, flip_tta: bool, hidden: int = 64) -> TemporalLifter:
    torch.manual_seed(0)
    cfg = LifterConfig(in_dim=window * LIFT_INPUT_DIM, hidden=hidden, window=window, flip_tta=flip_tta)
    m = TemporalLifter(cfg)
    g = torch.Generator().manual_seed(1)
    m.set_normalization(torch.randn(cfg.in_dim, generator=g) * 0.1, torch.rand(cfg.in_dim, generator=g) + 0.5,
                        torch.randn(51, generator=g) * 300, torch.rand(51, generator=g) * 200 + 50)
    return m.eval()


def test_temporal_lifter_shapes_and_flip_equivariance():
    m = _temporal_model(5, flip_tta=True)
    rng = np.random.default_rng(2)
    uv = rng.uniform(150, 850, (4, 5, 17, 2))
    f, c = np.array([1000.0, 1000.0]), np.array([500.0, 500.0])
    mirrored = uv[..., list(FLIP_PERMUTATION), :].copy()
    mirrored[..., 0] = 2 * c[0] - mirrored[..., 0]
    with torch.no_grad():
        y = m(torch.from_numpy(features_2d(uv, f, c))).numpy()
        ym = m(torch.from_numpy(features_2d(mirrored, f, c))).numpy()
    assert y.shape == (4, 17, 3)
    np.testing.assert_allclose(ym, flip_horizontal(y), atol=1e-3)
    with pytest.raises(AssertionError):
        m(torch.zeros(4, 5 * LIFT_INPUT_DIM))  # a flat input is refused, not misread


def test_temporal_checkpoint_exports_and_matches_onnx(tmp_path):
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.torch_backend import TorchBackend
    from engines.checkpoint import contract_metadata
    from engines.export import export_onnx
    from engines.stages import STAGES

    m = _temporal_model(WINDOW, flip_tta=True, hidden=128)
    pt = tmp_path / "t.pt"
    meta = {"window": WINDOW, "causal": False, "spacing_ms": 100.0}
    torch.save({"model": m.state_dict(), "kind": "temporal_lifter", "model_config": m.cfg.to_dict(),
                "contract": contract_metadata(), "artifact_meta": meta}, pt)
    x = STAGES["temporal_lifter"].example_inputs(5, seed=3)
    assert x["features"].shape == (5, WINDOW, LIFT_INPUT_DIM)
    want = TorchBackend(pt).run(x)["joints_mm"]
    be = OnnxRuntimeBackend(export_onnx(pt, tmp_path / "t.onnx"), threads=1)
    np.testing.assert_allclose(be.run(x)["joints_mm"], want, atol=2e-3)
    assert be.metadata["window"] == WINDOW and be.metadata["causal"] is False
    with pytest.raises(UserError, match="must have shape"):
        be.run({"features": x["features"][:, :3]})


def test_tiny_temporal_training_and_eval(tmp_path, h36m_train, h36m_val):
    from train.train_lifter import TrainConfig, train

    cfg = TrainConfig(data=str(h36m_train), val_data=str(h36m_val), input_kind="sh", every=400, epochs=2,
                      batch_size=64, hidden=128, val_every=100, threads=1, dropout=0.0, lr=3e-3, window=WINDOW)
    state = train(cfg, tmp_path / "run", log=lambda s: None)
    assert state["history"][-1]["train_l0"] < state["history"][0]["train_l0"]
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ck["kind"] == "temporal_lifter" and ck["model_config"]["window"] == WINDOW
    assert ck["artifact_meta"] == {"window": WINDOW, "causal": False, "spacing_ms": 100.0}
    out = tmp_path / "e.json"
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "eval", "--data", str(h36m_val), "--input", "sh",
                        "--model", str(tmp_path / "run" / "best.pt"), "--every", "20", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert len(d["per_action"]) == 15 and 0 < d["mpjpe_mm"] < 1000
    # Every 20th sample of all rows and cameras (the windows use all rows).
    assert d["frames"] == len(range(0, 14724 * 4, 20))
    # A file whose rows no whole stride brings near 100 ms: one line, exit 2.
    z = np.load(h36m_val)
    np.savez(tmp_path / "slow.npz", **{**{k: z[k] for k in z.files}, "frame_step": np.int32(15)})
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "eval", "--data", str(tmp_path / "slow.npz"),
                        "--input", "sh", "--model", str(tmp_path / "run" / "best.pt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot be windowed" in r.stderr and "Traceback" not in r.stderr
