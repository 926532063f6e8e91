"""Temporal lifter: window building (edges, causality, strides), the per-frame mirror, the
model's flip averaging, the sequence form (dilated convolutions, stretches of frames), ONNX
parity, a tiny training run and the eval CLI on windows."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from engines.errors import UserError
from engines.models import LifterConfig, TemporalConvLifter, TemporalLifter
from engines.normalize import LIFT_INPUT_DIM, features_2d
from engines.skeleton import FLIP_PERMUTATION, flip_horizontal
from engines.temporal import (CONV_WINDOW, WINDOW, group_bounds, row_stride, window_flip, window_indices, window_offsets,
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
    assert row_stride(100.0, 100.0) == 1            # Human3.6M validation, 10 Hz
    assert row_stride(20.0, 100.0) == 5             # 50 Hz
    assert row_stride(1000 / 30, 100.0) == 3        # a 30 fps camera: 100 ms
    assert row_stride(40.0, 100.0) == 2             # 25 Hz: 80 ms, within 25 %
    assert row_stride(40.0, 40.0) == 1              # 25 Hz at a 40 ms model
    with pytest.raises(UserError, match="cannot be windowed"):
        row_stride(300.0, 100.0)
    with pytest.raises(UserError, match="cannot be windowed"):
        row_stride(100.0, 40.0)                     # 10 Hz rows cannot feed a 40 ms model by strides


def test_window_mirror_is_the_per_frame_feature_mirror():
    rng = np.random.default_rng(1)
    uv = rng.uniform(150, 850, (6, 3, 17, 2))
    f, c = np.array([1145.0, 1144.0]), np.array([512.5, 515.5])
    mirrored = uv[..., list(FLIP_PERMUTATION), :].copy()
    mirrored[..., 0] = 2 * c[0] - mirrored[..., 0]
    index, sign = window_flip(3)
    x = features_2d(uv, f, c).reshape(6, -1)
    np.testing.assert_allclose(features_2d(mirrored, f, c).reshape(6, -1), sign * x[:, index], atol=1e-6)


def _temporal_model(window: int, flip_tta: bool, hidden: int = 64, conv: bool = False,
                    causal: bool = False) -> TemporalLifter:
    torch.manual_seed(0)
    blocks = round(np.log(window) / np.log(3)) - 1 if conv else 2
    cfg = LifterConfig(in_dim=window * LIFT_INPUT_DIM, hidden=hidden, window=window, flip_tta=flip_tta,
                       conv=conv, num_blocks=blocks, causal=causal)
    m = (TemporalConvLifter if conv else TemporalLifter)(cfg)
    g = torch.Generator().manual_seed(1)
    m.set_normalization(torch.randn(cfg.in_dim, generator=g) * 0.1, torch.rand(cfg.in_dim, generator=g) + 0.5,
                        torch.randn(51, generator=g) * 300, torch.rand(51, generator=g) * 200 + 50)
    return m.eval()


@pytest.mark.parametrize("window,conv", [(5, False), (9, True), (27, True)])
def test_temporal_lifter_shapes_and_flip_equivariance(window, conv):
    m = _temporal_model(window, flip_tta=True, conv=conv)
    rng = np.random.default_rng(2)
    uv = rng.uniform(150, 850, (4, window, 17, 2))
    f, c = np.array([1000.0, 1000.0]), np.array([500.0, 500.0])
    mirrored = uv[..., list(FLIP_PERMUTATION), :].copy()
    mirrored[..., 0] = 2 * c[0] - mirrored[..., 0]
    with torch.no_grad():
        y = m(torch.from_numpy(features_2d(uv, f, c))).numpy()
        ym = m(torch.from_numpy(features_2d(mirrored, f, c))).numpy()
    assert y.shape == (4, 17, 3)
    np.testing.assert_allclose(ym, flip_horizontal(y), atol=1e-3)
    with pytest.raises(AssertionError):
        m(torch.zeros(4, window * LIFT_INPUT_DIM))  # a flat input is refused, not misread


def _as_trained(m: TemporalLifter) -> TemporalLifter:
    """m with the per-frame input statistics tiled over the window (what training does) and
    non-trivial BatchNorm running statistics."""
    w = m.cfg.window
    m.in_mean.copy_(m.in_mean[:LIFT_INPUT_DIM].repeat(w))
    m.in_std.copy_(m.in_std[:LIFT_INPUT_DIM].repeat(w))
    g = torch.Generator().manual_seed(4)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 1.5 + 0.5)
    return m


@pytest.mark.parametrize("window,conv,causal,flip", [(27, True, False, True), (27, True, True, False),
                                                     (81, True, True, True), (9, False, False, True)])
def test_sequence_form_is_the_model_on_each_window(window, conv, causal, flip):
    """forward_sequence over T frames gives forward() on each of the T - window + 1 windows: for
    the temporal convolution this is VideoPose3D's dilated form (dilations 1, 3, 9, 27), which
    computes each layer once per frame instead of once per window."""
    m = _as_trained(_temporal_model(window, flip_tta=flip, conv=conv, causal=causal))
    seq = torch.randn(2, window + 13, LIFT_INPUT_DIM)
    with torch.no_grad():
        got = m.forward_sequence(seq)
        want = torch.stack([m(seq[:, t:t + window]) for t in range(14)], 1)
    assert got.shape == want.shape == (2, 14, 17, 3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-3)


def test_sequence_form_refuses_per_position_input_statistics():
    from engines.models import SequenceForm

    m = _temporal_model(CONV_WINDOW, flip_tta=False, conv=True)   # statistics differ along the window
    with pytest.raises(ValueError, match="no sequence form"):
        SequenceForm(m)
    SequenceForm(_as_trained(m))
    SequenceForm(_temporal_model(WINDOW, flip_tta=False))           # the flattened lifter cuts windows out


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("window,causal", [(9, False), (27, True), (81, False)])
def test_sequence_chunks_give_every_window(stride, window, causal):
    """Each sample's slot among the stretches' outputs sees exactly its window (edge padding,
    strides, runs of 1 frame, runs shorter than the window)."""
    from engines.temporal import sequence_chunks

    keys = np.repeat([3, 1, 7, 2], [50, 5, 1, 300])
    feats = np.random.default_rng(0).standard_normal((len(keys), LIFT_INPUT_DIM)).astype(np.float32)
    chunks, slot = sequence_chunks(feats, keys, stride, window, causal, chunk=16)
    assert chunks.shape[1:] == (16 + window - 1, LIFT_INPUT_DIM) and slot.shape == (len(keys),)
    outputs = np.stack([chunks[:, t:t + window] for t in range(16)], 1).reshape(-1, window, LIFT_INPUT_DIM)
    np.testing.assert_array_equal(outputs[slot], windowed_features(feats, keys, stride, window, causal))
    assert len(np.unique(slot)) == len(keys)


def test_temporal_convolution_needs_a_power_of_three_window():
    from train.train_lifter import conv_blocks

    assert conv_blocks(27) == 2 and conv_blocks(81) == 3
    with pytest.raises(UserError, match="power of 3"):
        conv_blocks(25)
    with pytest.raises(ValueError, match="window of 27"):
        TemporalConvLifter(LifterConfig(in_dim=9 * LIFT_INPUT_DIM, window=9, num_blocks=2, conv=True))


@pytest.mark.parametrize("stage", ["temporal_lifter", "temporal_conv"])
def test_temporal_checkpoint_exports_and_matches_onnx(tmp_path, stage):
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.torch_backend import TorchBackend
    from engines.checkpoint import contract_metadata
    from engines.export import export_onnx
    from engines.stages import STAGES

    window = CONV_WINDOW if stage == "temporal_conv" else WINDOW
    m = _temporal_model(window, flip_tta=True, hidden=128, conv=stage == "temporal_conv")
    pt = tmp_path / "t.pt"
    meta = {"window": window, "causal": False, "spacing_ms": 100.0}
    torch.save({"model": m.state_dict(), "kind": stage, "model_config": m.cfg.to_dict(),
                "contract": contract_metadata(), "artifact_meta": meta}, pt)
    x = STAGES[stage].example_inputs(5, seed=3)
    assert x["features"].shape == (5, window, LIFT_INPUT_DIM)
    want = TorchBackend(pt).run(x)["joints_mm"]
    be = OnnxRuntimeBackend(export_onnx(pt, tmp_path / "t.onnx"), threads=1)
    np.testing.assert_allclose(be.run(x)["joints_mm"], want, atol=2e-3)
    assert be.metadata["window"] == window and be.metadata["causal"] is False
    # The other temporal stage's build refuses this checkpoint (its input shape is static).
    other = STAGES["temporal_lifter" if stage == "temporal_conv" else "temporal_conv"]
    with pytest.raises(UserError, match="this stage runs"):
        other.build(torch.load(pt, weights_only=False))
    with pytest.raises(UserError, match="must have shape"):
        be.run({"features": x["features"][:, :3]})


@pytest.mark.parametrize("stage", ["temporal_lifter", "temporal_conv"])
def test_sequence_stage_exports_and_matches_the_windowed_stage(tmp_path, stage):
    from engines.backends import open_backend
    from engines.checkpoint import contract_metadata
    from engines.stages import STAGES, resolve_stage
    from engines.temporal import SEQUENCE_CHUNK

    window = CONV_WINDOW if stage == "temporal_conv" else WINDOW
    m = _as_trained(_temporal_model(window, flip_tta=True, hidden=128, conv=stage == "temporal_conv"))
    pt = tmp_path / "t.pt"
    torch.save({"model": m.state_dict(), "kind": stage, "model_config": m.cfg.to_dict(),
                "contract": contract_metadata(),
                "artifact_meta": {"window": window, "causal": False, "spacing_ms": 100.0}}, pt)
    seq = STAGES[f"{stage}_sequence"]
    assert STAGES[stage].sequence == seq.name
    x = seq.example_inputs(2, seed=3)["features"]
    assert x.shape == (2, SEQUENCE_CHUNK + window - 1, LIFT_INPUT_DIM)
    windowed = open_backend(str(pt), "torch")
    want = np.stack([windowed.run({"features": x[:, t:t + window]})["joints_mm"] for t in range(SEQUENCE_CHUNK)], 1)
    for backend in ("torch", "onnxruntime"):
        be = open_backend(str(pt), backend, stage=seq.name, onnx_cache_dir=tmp_path / "cache")
        assert be.metadata["stage"] == seq.name and be.metadata["window"] == window
        np.testing.assert_allclose(be.run({"features": x})["joints_mm"], want, atol=2e-3)
    assert len(list((tmp_path / "cache").rglob(f"t.{seq.name}.onnx"))) == 1
    # A stage that is not this kind's, or an export of the windowed stage asked to be the sequence one.
    with pytest.raises(UserError, match="runs as stage"):
        resolve_stage("lifter", seq.name)
    with pytest.raises(UserError, match="runs as stage"):
        open_backend(str(pt), "torch", stage="temporal_ensemble_sequence")
    from engines.export import export_onnx
    onnx = export_onnx(pt, tmp_path / "plain.onnx")
    with pytest.raises(UserError, match=f"not {seq.name}"):
        open_backend(str(onnx), "onnxruntime", stage=seq.name)


@pytest.mark.parametrize("conv", [False, True])
def test_tiny_temporal_training_and_eval(tmp_path, h36m_train, h36m_val, conv):
    from train.train_lifter import TrainConfig, train

    window, kind = (CONV_WINDOW, "temporal_conv") if conv else (WINDOW, "temporal_lifter")
    cfg = TrainConfig(data=str(h36m_train), val_data=str(h36m_val), input_kind="sh", every=400, epochs=2,
                      batch_size=64, hidden=128, val_every=100, threads=1, dropout=0.0, lr=3e-3, window=window,
                      conv=conv, loss="mpjpe" if conv else "l2", keep_epochs=1)
    state = train(cfg, tmp_path / "run", log=lambda s: None)
    assert state["history"][-1]["train_l0"] < state["history"][0]["train_l0"]
    # keep_epochs: the last epoch's weights are kept beside latest.pt, earlier ones are not.
    assert sorted(p.name for p in (tmp_path / "run").glob("epoch*.pt")) == ["epoch02.pt"]
    kept, latest = (torch.load(tmp_path / "run" / n, weights_only=False) for n in ("epoch02.pt", "latest.pt"))
    assert kept["epoch"] == 2 and all(torch.equal(v, latest["model"][k]) for k, v in kept["model"].items())
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ck["kind"] == kind and ck["model_config"]["window"] == window
    assert ck["artifact_meta"] == {"window": window, "causal": False, "spacing_ms": 100.0,
                                   "frame_input": "engines.normalize.features_2d", "frame_cues": []}
    assert ck["model_config"]["spacing_ms"] == 100.0
    out = tmp_path / "e.json"
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "eval", "--data", str(h36m_val), "--input", "sh",
                        "--model", str(tmp_path / "run" / "best.pt"), "--every", "20", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert len(d["per_action"]) == 15 and 0 < d["mpjpe_mm"] < 1000
    # Every 20th sample of all rows and cameras (the windows use all rows).
    assert d["frames"] == len(range(0, 14724 * 4, 20))
    # eval runs the sequence form: the table is the one of the model on each sample's window.
    from engines.backends.torch_backend import TorchBackend
    from train import h36m
    from train.evaluate import run_in_chunks, summarize
    from train.metrics import mpjpe, p_mpjpe

    x, s = h36m.windowed(h36m.load(h36m_val, "sh"), h36m_val, window, False, 100.0, every=20)
    pred = run_in_chunks(TorchBackend(tmp_path / "run" / "best.pt"), {"features": x})
    want = summarize(mpjpe(pred, s.joints_cam), p_mpjpe(pred, s.joints_cam), s.action, s.action_names)
    assert abs(want.mpjpe_mm - d["mpjpe_mm"]) < 1e-3 and abs(want.p_mpjpe_mm - d["p_mpjpe_mm"]) < 1e-3
    if conv:  # the speed benchmark of the two paths agrees on every sample of the file
        from train.bench_eval import bench

        r = bench(str(h36m_val), "sh", str(tmp_path / "run" / "best.pt"), "onnxruntime", rounds=1)
        assert r["frames"] == 14724 * 4 and r["max_abs_diff_mm"] < 1e-2 and r["speedup"] > 0
    # A file whose rows no whole stride brings near 100 ms: one line, exit 2.
    z = np.load(h36m_val)
    np.savez(tmp_path / "slow.npz", **{**{k: z[k] for k in z.files}, "frame_step": np.int32(15)})
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "eval", "--data", str(tmp_path / "slow.npz"),
                        "--input", "sh", "--model", str(tmp_path / "run" / "best.pt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot be windowed" in r.stderr and "Traceback" not in r.stderr


def _save_member(m: TemporalLifter, path, causal: bool = False):
    from engines.checkpoint import contract_metadata

    kind = "temporal_conv" if m.cfg.conv else "temporal_lifter"
    torch.save({"model": m.state_dict(), "kind": kind, "model_config": m.cfg.to_dict(), "epoch": 3,
                "contract": contract_metadata(),
                "artifact_meta": {"window": m.cfg.window, "causal": causal, "spacing_ms": 100.0}}, path)
    return path


def test_ensemble_averages_its_members_on_the_centre_of_the_window(tmp_path):
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.torch_backend import TorchBackend
    from engines.export import export_onnx
    from engines.stages import STAGES
    from engines.temporal import ENSEMBLE_WINDOW
    from train.ensemble import build

    a = _temporal_model(WINDOW, flip_tta=True)
    b = _as_trained(_temporal_model(CONV_WINDOW, flip_tta=True, conv=True))
    out = tmp_path / "ens.pt"
    build([_save_member(a, tmp_path / "a.pt"), _save_member(b, tmp_path / "b.pt")], out)
    x = STAGES["temporal_ensemble"].example_inputs(4, seed=5)["features"]
    assert x.shape == (4, ENSEMBLE_WINDOW, LIFT_INPUT_DIM)
    mid = ENSEMBLE_WINDOW // 2
    with torch.no_grad():
        want = 0.5 * (a(torch.from_numpy(x[:, mid - WINDOW // 2:mid + WINDOW // 2 + 1]))
                      + b(torch.from_numpy(x[:, mid - CONV_WINDOW // 2:mid + CONV_WINDOW // 2 + 1]))).numpy()
    be = TorchBackend(out)
    got = be.run({"features": x})["joints_mm"]
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert be.metadata["window"] == ENSEMBLE_WINDOW and [m["source_file"] for m in be.metadata["members"]] == \
        ["a.pt", "b.pt"]
    ort = OnnxRuntimeBackend(export_onnx(out, tmp_path / "ens.onnx"), threads=1)
    np.testing.assert_allclose(ort.run({"features": x})["joints_mm"], want, atol=2e-3)
    # Its sequence form: each member over its part of every window of the stretch.
    stretch = STAGES["temporal_ensemble_sequence"].example_inputs(1, seed=6)["features"]
    n = stretch.shape[1] - ENSEMBLE_WINDOW + 1
    want = np.concatenate([be.run({"features": stretch[:, t:t + ENSEMBLE_WINDOW]})["joints_mm"] for t in range(n)])
    seq = OnnxRuntimeBackend(export_onnx(out, tmp_path / "seq.onnx", stage="temporal_ensemble_sequence"), threads=1)
    np.testing.assert_allclose(seq.run({"features": stretch})["joints_mm"][0], want, atol=2e-3)


def test_ensemble_refuses_members_that_do_not_agree(tmp_path):
    from train.ensemble import build

    a = _save_member(_temporal_model(WINDOW, flip_tta=False), tmp_path / "a.pt")
    c = _save_member(_temporal_model(WINDOW, flip_tta=False, causal=True), tmp_path / "c.pt", causal=True)
    with pytest.raises(UserError, match="causality"):
        build([a, c], tmp_path / "x.pt")
    with pytest.raises(UserError, match="at least two"):
        build([a], tmp_path / "x.pt")
    torch.save({"model": {}, "kind": "lifter"}, tmp_path / "l.pt")
    with pytest.raises(UserError, match="not a temporal lifter"):
        build([a, tmp_path / "l.pt"], tmp_path / "x.pt")


def test_time_average_is_the_mean_of_the_windows_around_the_output_frame(tmp_path):
    """ensemble --time-average: stage AVERAGED_STAGE, the member's outputs for the windows
    centred on the output frame and AVERAGED_REACH frames either side, averaged (torch, ONNX
    and the sequence form agree); causal members and other kinds are refused."""
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.torch_backend import TorchBackend
    from engines.export import export_onnx
    from engines.models import LifterConfig, TemporalConvLifter, TimeAveraged
    from engines.stages import STAGES
    from engines.temporal import AVERAGED_MEMBER, AVERAGED_REACH, AVERAGED_STAGE, WindowSpec
    from train.ensemble import time_averaged

    torch.manual_seed(0)
    cfg = LifterConfig(in_dim=AVERAGED_MEMBER * LIFT_INPUT_DIM, hidden=32, window=AVERAGED_MEMBER, conv=True,
                       num_blocks=3, flip_tta=True, spacing_ms=40.0)
    m = _as_trained(TemporalConvLifter(cfg).eval())
    member = _save_member(m, tmp_path / "m.pt")
    ck = torch.load(member, weights_only=False)
    torch.save({**ck, "kind": "temporal_conv81", "artifact_meta": cfg.window_spec().metadata()}, member)
    out = tmp_path / "avg.pt"
    time_averaged(member, out)
    be = TorchBackend(out)
    spec = WindowSpec.from_metadata(be.metadata)
    assert be.metadata["stage"] == AVERAGED_STAGE and spec.window == AVERAGED_MEMBER + 2 * AVERAGED_REACH
    assert spec.spacing_ms == 40.0 and not spec.causal
    x = STAGES[AVERAGED_STAGE].example_inputs(3, seed=2)["features"]
    with torch.no_grad():
        want = np.mean([m(torch.from_numpy(x[:, j:j + AVERAGED_MEMBER])).numpy()
                        for j in range(2 * AVERAGED_REACH + 1)], axis=0)
    np.testing.assert_allclose(be.run({"features": x})["joints_mm"], want, atol=1e-3)
    ort = OnnxRuntimeBackend(export_onnx(out, tmp_path / "avg.onnx"), threads=1)
    np.testing.assert_allclose(ort.run({"features": x})["joints_mm"], want, atol=2e-3)
    stretch = STAGES[f"{AVERAGED_STAGE}_sequence"].example_inputs(1, seed=6)["features"]
    n = stretch.shape[1] - spec.window + 1
    want = np.concatenate([be.run({"features": stretch[:, t:t + spec.window]})["joints_mm"] for t in range(n)])
    seq = OnnxRuntimeBackend(export_onnx(out, tmp_path / "seq.onnx", stage=f"{AVERAGED_STAGE}_sequence"), threads=1)
    np.testing.assert_allclose(seq.run({"features": stretch})["joints_mm"][0], want, atol=2e-3)
    with pytest.raises(ValueError, match="centred"):
        TimeAveraged(replace(cfg, causal=True), AVERAGED_REACH)
    with pytest.raises(UserError, match="not a temporal_conv81"):
        time_averaged(_save_member(_temporal_model(WINDOW, flip_tta=False), tmp_path / "w.pt"), tmp_path / "x.pt")


def test_soup_averages_the_weights_of_one_architecture(tmp_path):
    """--soup: one model of the members' architecture whose every float weight (BatchNorm
    statistics included) is the members' mean; members of another architecture are refused."""
    from engines.backends.torch_backend import TorchBackend
    from train.ensemble import soup

    a = _as_trained(_temporal_model(CONV_WINDOW, flip_tta=True, conv=True))
    b = _temporal_model(CONV_WINDOW, flip_tta=True, conv=True)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    paths = [_save_member(a, tmp_path / "a.pt"), _save_member(b, tmp_path / "b.pt")]
    ck = soup(paths, tmp_path / "soup.pt")
    for k, v in a.state_dict().items():
        want = 0.5 * (v + b.state_dict()[k]) if v.is_floating_point() else v
        torch.testing.assert_close(ck["model"][k], want)
    assert [m["source_file"] for m in ck["soup"]] == ["a.pt", "b.pt"] and ck["kind"] == "temporal_conv"
    be = TorchBackend(tmp_path / "soup.pt")   # loads and runs as its members' stage
    x = np.random.default_rng(3).normal(0, 1, (2, CONV_WINDOW, LIFT_INPUT_DIM)).astype(np.float32)
    assert np.isfinite(be.run({"features": x})["joints_mm"]).all()
    other = _save_member(_temporal_model(CONV_WINDOW, flip_tta=True, hidden=32, conv=True), tmp_path / "c.pt")
    with pytest.raises(UserError, match="not the same model"):
        soup([paths[0], other], tmp_path / "x.pt")
    with pytest.raises(UserError, match="at least two"):
        soup(paths[:1], tmp_path / "x.pt")


# ---- the window contract: spacing in the checkpoint and its exports, timestamp resampling ----

def test_window_spec_reads_old_and_new_metadata():
    from engines.temporal import DEFAULT_SPACING_MS, FRAME_INPUT, WindowSpec, frame_input_function, window_metadata

    old = WindowSpec.from_metadata({"window": 9, "causal": False})          # before spacing_ms was recorded
    assert old.spacing_ms == DEFAULT_SPACING_MS and old.frame_input == FRAME_INPUT
    new = WindowSpec.from_metadata({"window": 81, "causal": True, "spacing_ms": 40.0})
    assert new.history_ms == 3200.0 and new.lookahead_ms == 0.0
    np.testing.assert_allclose(WindowSpec(5, False, 40.0).offsets_ms(), [-80, -40, 0, 40, 80])
    assert window_metadata({"stage": "lifter"}) == {}
    assert window_metadata({"window": 27, "causal": False})["spacing_ms"] == DEFAULT_SPACING_MS
    assert frame_input_function(FRAME_INPUT) is features_2d
    for bad in ("os.system", "engines.normalize.nothing", "features_2d"):
        with pytest.raises(UserError):
            frame_input_function(bad)
    with pytest.raises(ValueError):
        WindowSpec(4, False, 40.0)
    with pytest.raises(UserError, match="no temporal window"):
        WindowSpec.from_metadata({"stage": "lifter"})


def test_timed_windows_equal_row_windows_on_a_regular_stream():
    from engines.temporal import WindowSpec, timed_windows

    rng = np.random.default_rng(2)
    feats = rng.normal(size=(30, LIFT_INPUT_DIM)).astype(np.float32)
    times = 1000.0 + 20.0 * np.arange(30)                  # 50 Hz rows, a 40 ms model: stride 2
    for causal in (False, True):
        spec = WindowSpec(5, causal, 40.0)
        want = windowed_features(feats, np.zeros(30, np.int64), stride=2, window=5, causal=causal)
        np.testing.assert_allclose(timed_windows(times, feats, times, spec), want, atol=1e-6)


def test_timed_windows_interpolate_uneven_timestamps_and_dropped_frames():
    from engines.temporal import WindowSpec, timed_windows

    # A linear signal stays exactly linear under the resampling, whatever the frame times.
    times = np.array([0.0, 31.0, 70.0, 99.0, 240.0, 260.0, 301.0])   # jittered 30 fps, frames 100-240 dropped
    frames = np.stack([2.0 * times, -times + 5.0], 1)
    spec = WindowSpec(3, False, 40.0)
    got = timed_windows(times, frames, np.array([70.0, 150.0, 261.0]), spec)
    q = np.array([[30.0, 70.0, 110.0], [110.0, 150.0, 190.0], [221.0, 261.0, 301.0]])
    np.testing.assert_allclose(got, np.stack([2.0 * q, -q + 5.0], -1), atol=1e-4)
    # Before the first frame and after the last: the edge frame (padding), never extrapolation.
    edge = timed_windows(times, frames, np.array([0.0, 301.0]), WindowSpec(5, False, 40.0))
    np.testing.assert_allclose(edge[0, :3], np.repeat(frames[:1], 3, 0), atol=1e-4)
    np.testing.assert_allclose(edge[1, 2:], np.repeat(frames[-1:], 3, 0), atol=1e-4)
    with pytest.raises(ValueError, match="increasing"):
        timed_windows(times[::-1], frames, np.array([0.0]), spec)


def test_causal_timed_windows_never_see_the_future():
    from engines.temporal import WindowSpec, timed_windows

    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(15, 45, 60))
    feats = rng.normal(size=(60, LIFT_INPUT_DIM))
    changed = feats.copy()
    changed[31:] += 100.0                                   # everything after frame 30
    spec = WindowSpec(27, True, 40.0)
    np.testing.assert_array_equal(timed_windows(times, feats, times[:31], spec),
                                  timed_windows(times, changed, times[:31], spec))
    centred = WindowSpec(27, False, 40.0)
    assert not np.array_equal(timed_windows(times, feats, times[30:31], centred),
                              timed_windows(times, changed, times[30:31], centred))


def test_conv81_stage_exports_its_window_contract(tmp_path):
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.torch_backend import TorchBackend
    from engines.checkpoint import contract_metadata
    from engines.export import export_onnx
    from engines.stages import STAGES
    from engines.temporal import WindowSpec, conv_stage

    assert conv_stage(81) == "temporal_conv81" and conv_stage(27) == "temporal_conv"
    with pytest.raises(UserError, match="no temporal-convolution stage"):
        conv_stage(243)
    torch.manual_seed(0)
    cfg = LifterConfig(in_dim=81 * LIFT_INPUT_DIM, hidden=32, num_blocks=3, window=81, conv=True, causal=True,
                       spacing_ms=40.0, flip_tta=True)
    m = TemporalConvLifter(cfg).eval()
    pt = tmp_path / "c81.pt"
    torch.save({"model": m.state_dict(), "kind": "temporal_conv81", "model_config": cfg.to_dict(),
                "contract": contract_metadata(), "artifact_meta": cfg.window_spec().metadata()}, pt)
    x = STAGES["temporal_conv81"].example_inputs(3)
    want = TorchBackend(pt).run(x)["joints_mm"]
    be = OnnxRuntimeBackend(export_onnx(pt, tmp_path / "c81.onnx"), threads=1)
    np.testing.assert_allclose(be.run(x)["joints_mm"], want, atol=2e-3)
    assert WindowSpec.from_metadata(be.metadata) == WindowSpec(81, True, 40.0)
    assert be.metadata["frame_input"] == "engines.normalize.features_2d"
    with pytest.raises(UserError, match="this stage runs"):
        STAGES["temporal_conv"].build(torch.load(pt, weights_only=False))


def test_init_from_a_2d_model_keeps_its_output_with_zero_cue_weights(tmp_path):
    """--init-from: a cue model started from a 2D-only temporal model gives that model's output
    whatever the cues (their first-layer weights start at zero)."""
    from engines.checkpoint import contract_metadata
    from engines.normalize import CUE_FRAME_DIM
    from train.train_lifter import _init_from

    src = _as_trained(_temporal_model(CONV_WINDOW, flip_tta=False, hidden=32, conv=True))
    torch.save({"model": src.state_dict(), "kind": "temporal_conv", "model_config": src.cfg.to_dict(),
                "contract": contract_metadata()}, tmp_path / "src.pt")
    cfg = LifterConfig(in_dim=CONV_WINDOW * CUE_FRAME_DIM, hidden=32, num_blocks=2, window=CONV_WINDOW, conv=True,
                       frame_cues=("world_mm",))
    m = TemporalConvLifter(cfg).eval()
    m.in_std.fill_(3.0)                             # the cue statistics of the new data stay the model's own
    _init_from(m, str(tmp_path / "src.pt"), log=lambda s: None)
    rng = np.random.default_rng(4)
    x2d = rng.normal(size=(3, CONV_WINDOW, LIFT_INPUT_DIM)).astype(np.float32)
    cues = rng.normal(size=(3, CONV_WINDOW, CUE_FRAME_DIM - LIFT_INPUT_DIM)).astype(np.float32)
    with torch.no_grad():
        want = src(torch.from_numpy(x2d))
        got = m(torch.from_numpy(np.concatenate([x2d, cues], -1)))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-3)
    assert float(m.in_std.view(CONV_WINDOW, -1)[0, -1]) == 3.0


def test_velocity_pairs_are_neighbours_within_a_run():
    from train.train_lifter import pair_partners

    keys = np.array([3, 3, 3, 7, 7, 9, 4, 4, 4, 4])
    got = pair_partners(keys, np.arange(len(keys)))
    np.testing.assert_array_equal(got, [1, 2, 1, 4, 3, 5, 7, 8, 9, 8])
    assert (keys[got] == keys).all()
    got = pair_partners(keys, np.arange(len(keys)), gap=2)
    np.testing.assert_array_equal(got, [2, 1, 0, 3, 4, 5, 8, 9, 6, 7])


def test_velocity_training_needs_a_temporal_model(tmp_path, h36m_train, h36m_val):
    from train.train_lifter import TrainConfig, train

    cfg = TrainConfig(data=str(h36m_train), val_data=str(h36m_val), input_kind="sh", loss="mpjpe", velocity_weight=1.0)
    with pytest.raises(UserError, match="temporal model"):
        train(cfg, tmp_path / "run", log=lambda s: None)


def test_paired_dropout_shares_its_mask_between_the_halves_of_a_pair_batch():
    from engines.models import paired_dropout

    torch.manual_seed(0)
    m = TemporalConvLifter(LifterConfig(in_dim=27 * LIFT_INPUT_DIM, hidden=32, num_blocks=2, dropout=0.25,
                                        window=27, conv=True))
    m.train()
    x = torch.randn(8, 27 * LIFT_INPUT_DIM)
    both = torch.cat([x, x])
    with torch.no_grad():
        with paired_dropout(m):      # the same window twice: the same output (the masks are shared)
            y = m.forward_normalized(both)
        assert torch.equal(y[:8], y[8:])
        y = m.forward_normalized(both)   # outside: independent masks, as plain nn.Dropout
        assert not torch.allclose(y[:8], y[8:])
        m.eval()                         # eval: no dropout at all
        assert torch.equal(m.forward_normalized(x), m.forward_normalized(x))
