"""`posestream eval` on a sequence render set (train.eval_sequences): which frames count, the
windows resampled by timestamp from the detected frames only, MPJVE over consecutive rows,
and one-line refusals. The render's MediaPipe fields are written by the test (exact 2D plus
noise, some frames undetected), so no MediaPipe run is needed."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from engines.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _render_sequences(data, out, *extra: str) -> None:
    """`posestream render --sequence` of two 1 s clips at 30 fps, without MediaPipe (the tests
    write its fields)."""
    from train.render_cmd import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert run(p.parse_args(["--sequence", "--data", str(data), "--out", str(out), "--fps", "30", "--seconds", "1",
                             "--limit", "2", "--no-mediapipe", *extra])) == 0


@pytest.fixture(scope="module")
def seq_set(tmp_path_factory, h36m_val):
    out = tmp_path_factory.mktemp("seq") / "s9"
    _render_sequences(h36m_val, out, "--cameras", "1", "--shard-size", "2")
    shard = out / "shard_00000.npz"
    z = dict(np.load(shard))
    rng = np.random.default_rng(0)
    n = len(z["index"])
    z["mp_found"] = np.ones(n, bool)
    z["mp_found"][[4, 5, 6, 20]] = False                      # frames without a person (6 is a row)
    z["mp_joints_2d"] = np.where(z["mp_found"][:, None, None],
                                 z["joints_2d_image"] + rng.normal(0, 3, z["joints_2d_image"].shape), np.nan
                                 ).astype(np.float32)
    z["mp_world_mm"] = np.where(z["mp_found"][:, None, None], np.zeros((n, 33, 3)), np.nan).astype(np.float32)
    np.savez(shard, **z)
    return out


def _temporal_checkpoint(path, causal: bool):
    from engines.checkpoint import contract_metadata
    from engines.models import LifterConfig, TemporalConvLifter
    from engines.normalize import LIFT_INPUT_DIM

    torch.manual_seed(0)
    cfg = LifterConfig(in_dim=27 * LIFT_INPUT_DIM, hidden=32, window=27, conv=True, causal=causal, spacing_ms=40.0)
    m = TemporalConvLifter(cfg).eval()
    torch.save({"model": m.state_dict(), "kind": "temporal_conv", "model_config": cfg.to_dict(),
                "contract": contract_metadata(), "artifact_meta": cfg.window_spec().metadata()}, path)
    return m


def test_sequence_eval_counts_rows_and_resamples_windows_by_time(seq_set, tmp_path):
    from engines.normalize import features_2d
    from engines.temporal import WindowSpec, timed_windows
    from train.eval_sequences import evaluate_sequence_set
    from train.sequence_sets import load_sequence_set

    ss = load_sequence_set(seq_set)
    assert len(ss) == 62 and (ss.row >= 0).sum() == 22       # 2 clips of 31 frames, every 3rd a 10 Hz row
    m = _temporal_checkpoint(tmp_path / "c.pt", causal=True)
    out = evaluate_sequence_set(str(seq_set), ["base_gt", str(tmp_path / "c.pt")], backend="torch")
    assert out["rows"] == 22 and out["evaluated"] == 21       # the row on frame 6 had no detection
    base, temporal = out["models"]["base_gt"], out["models"][str(tmp_path / "c.pt")]
    assert base["stage"] == "lifter" and temporal["stage"] == "temporal_conv"
    # Consecutive evaluated rows: 11 + 11 rows per clip, minus the two pairs around the missing row.
    assert base["velocity_pairs"] == 18 and 0 < base["mpjve_mm"] < 200 and base["mpjpe_mm"] < 1000
    # The temporal model saw, for the last row of clip 0, its window from the detected frames only.
    own = np.flatnonzero((ss.clip == 0) & ss.found)
    t = ss.time_ms[own]
    win = timed_windows(t, features_2d(ss.mp2d[own], ss.f[own], ss.c[own]), t[-1:], WindowSpec(27, True, 40.0))
    with torch.no_grad():
        want = m(torch.from_numpy(win)).numpy()[0]
    from train.eval_sequences import predict
    got, _, _ = predict(str(tmp_path / "c.pt"), ss, own[-1:], backend="torch")
    np.testing.assert_allclose(got[0], want, atol=1e-3)


def test_fixed_bones_option_is_the_apps_body_per_clip(seq_set):
    """`posestream eval --fixed-bones`: each clip's poses through realtime.filters.fixed_bones
    over all its detected frames (as the app writes them), then the evaluated rows taken."""
    from engines.skeleton import bone_lengths
    from realtime.filters import BodyConfig, fixed_bones
    from train.eval_sequences import evaluate_sequence_set, predict
    from train.sequence_sets import load_sequence_set

    ss = load_sequence_set(seq_set)
    rows = np.flatnonzero((ss.row >= 0) & ss.found)
    whole_clip = BodyConfig(lookahead_s=10.0)
    raw, _, _ = predict("base_gt", ss, rows, backend="onnxruntime")
    fixed, _, _ = predict("base_gt", ss, rows, backend="onnxruntime", body=whole_clip)
    for c in np.unique(ss.clip[rows]):
        k = ss.clip[rows] == c
        lengths = bone_lengths(fixed[k])
        np.testing.assert_allclose(lengths, np.broadcast_to(lengths[0], lengths.shape), rtol=1e-6)  # one body a clip
        assert np.ptp(bone_lengths(raw[k]), axis=0).max() > 1.0
    # the body comes from every detected frame of the clip, not only the evaluated rows
    own = np.flatnonzero((ss.clip == ss.clip[rows[0]]) & ss.found)
    every, _, _ = predict("base_gt", ss, own, backend="onnxruntime")
    body = fixed_bones(every, ss.time_ms[own] / 1000.0, whole_clip)
    np.testing.assert_allclose(fixed[ss.clip[rows] == ss.clip[rows[0]]], body[np.isin(own, rows)], atol=1e-4)
    out = evaluate_sequence_set(str(seq_set), ["base_gt"], backend="onnxruntime", body=whole_clip)
    assert out["fixed_bones"] and 0 < out["models"]["base_gt"]["mpjpe_mm"] < 1000
    with pytest.raises(UserError, match="detection on every evaluated frame"):
        predict("base_gt", ss, np.flatnonzero(~ss.found)[:1], backend="onnxruntime", body=whole_clip)


def test_sequence_eval_refuses_what_it_cannot_run(seq_set):
    from train.eval_sequences import evaluate_sequence_set

    with pytest.raises(UserError, match="needs the generator's cues"):
        evaluate_sequence_set(str(seq_set), ["final"], backend="torch")
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "eval", "--data", str(seq_set), "--model", "generator"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_time_averaging_is_the_mean_over_shifted_and_respaced_windows(seq_set, tmp_path):
    """train.time_averaging (a study): the model's outputs for the windows at t + shift and at
    other frame spacings, averaged; with no shift and its own spacing it is the evaluated model."""
    from engines.normalize import features_2d
    from engines.temporal import WindowSpec, timed_windows
    from train.eval_sequences import evaluate_sequence_set, predict
    from train.sequence_sets import load_sequence_set
    from train.time_averaging import averaged, sequence_set

    ss = load_sequence_set(seq_set)
    path = str(tmp_path / "c.pt")
    m = _temporal_checkpoint(path, causal=False)
    targets = np.flatnonzero(ss.found)
    np.testing.assert_allclose(averaged(path, ss, targets, backend="torch"),
                               predict(path, ss, targets, backend="torch")[0], atol=1e-4)
    own = np.flatnonzero((ss.clip == 1) & ss.found)
    t, x = ss.time_ms[own], features_2d(ss.mp2d[own], ss.f[own], ss.c[own])
    with torch.no_grad():
        want = np.mean([m(torch.from_numpy(timed_windows(t, x, t[10:11] + sh, WindowSpec(27, False, sp)))).numpy()[0]
                        for sp in (30.0, 60.0) for sh in (-40.0, 0.0, 40.0)], axis=0)
    got = averaged(path, ss, own[10:11], shifts_ms=(-40, 0, 40), spacings_ms=(30, 60), backend="torch")
    np.testing.assert_allclose(got[0], want, atol=1e-3)
    row = evaluate_sequence_set(str(seq_set), [path], backend="torch")["models"][path]
    plain = sequence_set(str(seq_set), path, backend="torch")
    assert plain["mpjpe_mm"] == pytest.approx(row["mpjpe_mm"], abs=1e-3)
    assert plain["mpjve_mm"] == pytest.approx(row["mpjve_mm"], abs=1e-3)
    with pytest.raises(UserError, match="not a temporal model"):
        averaged("base_gt", ss, targets, backend="torch")


def test_eval_cli_on_a_sequence_set(seq_set, tmp_path):
    out = tmp_path / "e.json"
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "eval", "--data", str(seq_set), "--model", "base_gt",
                        "--compare", "single_mp", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "MPJVE" in r.stdout and set(json.loads(out.read_text())["models"]) == {"base_gt", "single_mp"}


@pytest.fixture(scope="module")
def train_renders(tmp_path_factory, h36m_train):
    """Two 1 s clips of S1 (camera 0) with stand-in MediaPipe 2D (exact + 2 px) and world landmarks."""
    renders = tmp_path_factory.mktemp("seq") / "s1"
    _render_sequences(h36m_train, renders, "--cameras", "0")
    shard = renders / "shard_00000.npz"
    z = dict(np.load(shard))
    z["mp_found"] = np.ones(len(z["index"]), bool)
    z["mp_joints_2d"] = z["joints_2d_image"] + np.float32(2.0)
    z["mp_world_mm"] = np.zeros_like(z["mp_world_mm"])
    np.savez(shard, **z)
    return renders


def test_training_on_sequence_renders_with_cues(seq_set, tmp_path, train_renders):
    """The cue ablation's trainer: windows of MediaPipe 2D (+ cues) from train-subject renders,
    validated on the S9 set; the checkpoint names its frame input and cues, and eval runs it."""
    from train.eval_sequences import evaluate_sequence_set
    from train.train_lifter import TrainConfig, train

    renders = train_renders
    cfg = TrainConfig(renders=(str(renders),), val_renders=str(seq_set), cues=("world_mm",), flip_tta=False,
                      window=27, conv=True, spacing_ms=40.0, hidden=16, epochs=1, batch_size=16, loss="mpjpe")
    with pytest.raises(UserError, match="no flip averaging"):
        train(replace(cfg, flip_tta=True), tmp_path / "bad", log=lambda s: None)
    state = train(cfg, tmp_path / "run", log=lambda s: None)
    assert state["epoch"] == 1
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ck["kind"] == "temporal_conv_cues"
    assert ck["artifact_meta"]["frame_input"] == "engines.normalize.features_2d_cues"
    assert ck["artifact_meta"]["frame_cues"] == ["world_mm"]
    out = evaluate_sequence_set(str(seq_set), [str(tmp_path / "run" / "best.pt")], backend="torch")
    assert out["models"][str(tmp_path / "run" / "best.pt")]["stage"] == "temporal_conv_cues"


def test_training_mixes_renders_with_error_model_2d(seq_set, tmp_path, train_renders, h36m_train):
    """--input mp with --renders: each epoch the Human3.6M window centres (error-model 2D) and
    every render window (real MediaPipe 2D), validated on the S9 render set; cues refused."""
    from test_mp_error import _known_model
    from train.train_lifter import TrainConfig, train

    z = np.load(h36m_train)
    end = int(z["seq_start"][2])           # the first two sequences only: a quick draw of the error model
    small = tmp_path / "two_seqs.npz"
    np.savez(small, **{k: (z[k][:end] if z[k].ndim and len(z[k]) == len(z["subject"]) else z[k]) for k in z.files
                       if k not in ("seq_start", "seq_names")},
             seq_start=z["seq_start"][:2], seq_names=z["seq_names"][:2])
    _known_model(np.random.default_rng(0)).save(tmp_path / "err.npz")
    cfg = TrainConfig(data=str(small), input_kind="mp", error_model=str(tmp_path / "err.npz"),
                      renders=(str(train_renders),), val_renders=str(seq_set), window=27, conv=True,
                      spacing_ms=40.0, hidden=16, epochs=1, batch_size=16, every=50, loss="mpjpe")
    with pytest.raises(UserError, match="without cues"):
        train(replace(cfg, cues=("world_mm",), flip_tta=False), tmp_path / "bad", log=lambda s: None)
    lines: list[str] = []
    state = train(cfg, tmp_path / "run", log=lines.append)
    h36m_windows = len(range(0, end * 4 * 2, 50))          # 4 cameras, mirrored
    render_windows = len(np.concatenate([np.load(f)["mp_found"] for f in sorted(train_renders.glob("shard_*.npz"))]))
    assert any(f"loaded {h36m_windows + render_windows} training samples" in ln for ln in lines), lines
    assert state["epoch"] == 1 and np.isfinite(state["history"][0]["val_mpjpe_mm"])
    ck = torch.load(tmp_path / "run" / "latest.pt", weights_only=False)
    assert ck["kind"] == "temporal_conv" and ck["artifact_meta"]["frame_cues"] == []
    # The velocity and bone-length terms: pairs of frames from both sources, same model contract.
    pairs = replace(cfg, velocity_weight=2.0, bone_weight=0.5)
    with pytest.raises(UserError, match="--loss mpjpe"):
        train(replace(pairs, loss="l2"), tmp_path / "bad_loss", log=lambda s: None)
    state = train(pairs, tmp_path / "pairs", log=lambda s: None)
    assert state["epoch"] == 1 and np.isfinite(state["history"][0]["train_l0"])
    ck = torch.load(tmp_path / "pairs" / "latest.pt", weights_only=False)
    assert ck["kind"] == "temporal_conv" and ck["train_config"]["velocity_weight"] == 2.0
    # A subject held out for validation (instead of S9): refused without renders or when absent;
    # its figures come from every detected frame of its clips.
    with pytest.raises(UserError, match="goes with --renders"):
        train(replace(cfg, renders=(), hold_out=1), tmp_path / "bad_hold", log=lambda s: None)
    with pytest.raises(UserError, match="no such subject"):
        train(replace(cfg, val_renders="", hold_out=5), tmp_path / "bad_hold", log=lambda s: None)
    from train.eval_sequences import holdout_figures

    fig = holdout_figures([str(train_renders)], 1, [str(tmp_path / "pairs" / "latest.pt")], backend="torch")
    e = fig[str(tmp_path / "pairs" / "latest.pt")]
    assert e["frames"] == render_windows and 0 < e["mpjve_1f_mm"] < e["mpjve_100ms_mm"] and 0 < e["mpjpe_mm"] < 1e4
