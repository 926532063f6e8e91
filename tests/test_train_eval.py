"""A tiny training run (overfit), checkpoint resume, and the eval CLI incl. its error paths."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dataclasses import replace

from engines.errors import UserError
from train.train_lifter import TrainConfig, train


def _cfg(train_npz, val_npz, **kw):
    base = dict(data=str(train_npz), val_data=str(val_npz), every=400, epochs=2, batch_size=64, hidden=128,
                val_every=100, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_training_decreases_error_and_resumes(tmp_path, h36m_train, h36m_val):
    cfg = _cfg(h36m_train, h36m_val, epochs=3, dropout=0.0, lr=3e-3)
    state = train(cfg, tmp_path / "run", log=lambda s: None)
    hist = state["history"]
    assert len(hist) == 3 and hist[-1]["train_l0"] < hist[0]["train_l0"]
    assert state["one_minus_a"] is not None and state["one_minus_a"] > 0
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ck["kind"] == "lifter" and ck["contract"]["joint_names"][0] == "pelvis"
    assert ck["train_config"]["loss"] == "weighted"
    # Resume: extending the run to 4 epochs continues from epoch 3 and trains one more.
    logs = []
    more = train(replace(cfg, epochs=4), tmp_path / "run", log=logs.append)
    assert more["epoch"] == 4 and len(more["history"]) == 4
    assert any("resumed" in line and "epoch 3" in line for line in logs)
    # A different config in the same run dir is refused rather than silently mixed.
    with pytest.raises(UserError, match="different config"):
        train(replace(cfg, epochs=5, lr=5e-3), tmp_path / "run", log=logs.append)


def _posestream(*args):
    return subprocess.run([sys.executable, "-m", "realtime.cli", *args], capture_output=True, text=True, timeout=300)


def test_eval_cli_json_and_errors(tmp_path, h36m_train, h36m_val):
    train(_cfg(h36m_train, h36m_val, epochs=1), tmp_path / "run", log=lambda s: None)
    model = str(tmp_path / "run" / "best.pt")
    out = tmp_path / "e.json"
    r = _posestream("eval", "--data", str(h36m_val), "--input", "sh", "--model", model, "--every", "20",
                    "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "Protocol 1" in r.stdout and "Protocol 2" in r.stdout and "Avg" in r.stdout
    d = json.loads(out.read_text())
    assert set(d) >= {"mpjpe_mm", "p_mpjpe_mm", "per_action", "frames", "model", "input"}
    assert len(d["per_action"]) == 15 and d["input"] == "sh"
    assert d["p_mpjpe_mm"] <= d["mpjpe_mm"]
    assert np.isclose(d["mpjpe_mm"], np.mean([v["mpjpe_mm"] for v in d["per_action"].values()]))
    assert "excluding_misaligned" in d
    # Bad input: one line, exit 2, no traceback.
    for args, msg in [(("--data", str(tmp_path / "nope.npz")), "not found"),
                      (("--data", str(h36m_val), "--model", "no_such_model"), "unknown model")]:
        r = _posestream("eval", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    r = _posestream("eval", "--data", str(tmp_path / "bad.npz"))
    assert r.returncode == 2 and "missing keys" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("input_kind,target_mm", [("gt", 45.0), ("sh", 65.0)])
def test_shipped_default_models_meet_the_s9_targets(h36m_val, input_kind, target_mm):
    """Issue #3's targets, on the full S9 file with the default model for each input (base_gt;
    temporal_ensemble_sh in sequence form): MPJPE averaged over the 15 actions, all 4 cameras."""
    from train.evaluate import DEFAULT_MODEL, evaluate

    d = evaluate(str(h36m_val), input_kind)
    assert d["model"].endswith(f"{DEFAULT_MODEL[input_kind]}.pt")
    assert d["frames"] == 14724 * 4 and len(d["per_action"]) == 15
    assert d["mpjpe_mm"] <= target_mm, d["mpjpe_mm"]
    assert d["p_mpjpe_mm"] < d["mpjpe_mm"]
