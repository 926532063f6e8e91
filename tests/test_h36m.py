import numpy as np
import pytest

from engines.errors import UserError
from engines.normalize import LIFT_INPUT_DIM, features_2d
from train import h36m


def test_loader_gt_and_sh_shapes(h36m_val):
    gt = h36m.load(h36m_val, "gt", every=50)
    sh = h36m.load(h36m_val, "sh", every=50)
    n = len(gt)
    assert n % 4 == 0 and len(sh) == n
    assert gt.joints_cam.shape == (n, 17, 3) and gt.uv.shape == (n, 17, 2)
    assert np.allclose(gt.joints_cam[:, 0], 0)  # root-relative
    assert (gt.root_cam[:, 2] > 2000).all()  # people are metres in front of the camera
    assert len(gt.action_names) == 15 and set(np.unique(gt.subject)) == {9}
    # SH joints land near the projected ground truth (limbs), and the filled neck is between.
    err = np.linalg.norm(gt.uv - sh.uv, axis=-1)
    assert np.median(err[:, [2, 5, 13, 16]]) < 15
    w = h36m.NECK_NOSE_FROM_SH
    assert np.allclose(sh.uv[:, 9], w[0] * sh.uv[:, 8] + w[1] * sh.uv[:, 10], atol=1e-3)


def test_sh_mapping_order():
    det = np.arange(32, dtype=np.float32).reshape(16, 2)
    out = h36m.sh_to_17(det)
    assert out.shape == (17, 2)
    assert (out[3] == det[0]).all() and (out[16] == det[10]).all() and (out[0] == det[6]).all()


def test_features_are_camera_agnostic():
    rng = np.random.default_rng(0)
    uv = rng.normal(size=(4, 17, 2)) * 50 + 500
    f, c = np.array([1000.0, 1000.0]), np.array([500.0, 500.0])
    x = features_2d(uv, f, c)
    assert x.shape == (4, LIFT_INPUT_DIM) and x.dtype == np.float32
    # The same rays seen by a camera with twice the focal length give the same features.
    uv2 = (uv - c) * 2 + c
    assert np.allclose(features_2d(uv2, f * 2, c), x, atol=1e-5)


def test_bad_files_give_user_errors(tmp_path, h36m_val):
    with pytest.raises(UserError, match="not found"):
        h36m.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="is not an .npz archive"):
        h36m.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", positions_3d=np.zeros((3, 17, 3)))
    with pytest.raises(UserError, match="missing keys"):
        h36m.load(tmp_path / "partial.npz")
    d = dict(np.load(h36m_val))
    d["detections_2d_sh"] = d["detections_2d_sh"].copy()
    d["detections_2d_sh"][5, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **d)
    with pytest.raises(UserError, match="NaN"):
        h36m.load(tmp_path / "nan.npz", "sh")
    with pytest.raises(UserError, match="unknown input"):
        h36m.load(h36m_val, "xyz")
