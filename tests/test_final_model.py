"""The paper's method: generator (depth + FBI), KCS discriminator, validity metrics, mirror
augmentation, refiner, FinalModel, and the whole training chain on tiny render sets."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.errors import UserError
from engines.skeleton import BONES, FBI_BONES, JOINT_NAMES, bone_lengths, fbi_states
from train.h36m import default_data_dir

sys.path.insert(0, str(Path(__file__).parent))
from engine_fixtures import make_generator_checkpoint, make_refiner_checkpoint  # noqa: E402
from pose_fixtures import standing_pose  # noqa: E402

J = {n: i for i, n in enumerate(JOINT_NAMES)}
DATA = default_data_dir()


def _small_generator(dropout: float = 0.2):
    from engines.generator import Generator, GeneratorConfig
    torch.manual_seed(0)
    return Generator(GeneratorConfig(widths=(8, 16, 16, 32), head_hidden=64, dropout=dropout))


def _crop_joints(b: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 17, 2, generator=g) * 160 + 48


def test_generator_contract_shapes_and_weak_perspective():
    g = _small_generator().eval()
    jc = _crop_joints(3)
    with torch.no_grad():
        coarse, prob = g(torch.rand(3, 3, 256, 256), jc)
    assert coarse.shape == (3, 17, 3) and prob.shape == (3, 14, 3)
    assert torch.allclose(coarse[:, 0], torch.zeros(3, 3))                   # root-relative
    assert torch.allclose(prob.sum(-1), torch.ones(3, 14), atol=1e-6)
    # x, y are the 2D offsets from the pelvis times one scale per sample (weak perspective)
    off = (jc - jc[:, :1])[:, 1:]
    ratio = coarse[:, 1:, :2] / off
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-4)


def test_heatmaps_peak_at_joints_and_ignore_missing():
    from engines.generator import joint_heatmaps
    j = torch.tensor([[[36.0, 100.0]] * 17])
    j[0, 3] = float("nan")
    hm = joint_heatmaps(j, 32, 8.0)
    peak = divmod(int(hm[0, 0].argmax()), 32)
    assert peak == (12, 4)                        # cell centres at (i + 0.5) * 8: x 36 -> 4, y 100 -> 12
    assert float(hm[0, 3].abs().max()) == 0.0


def test_pooled_cache_matches_model_pooling():
    from torch.nn import functional as F

    from engines.generator import pool_images_uint8
    img = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    ours = pool_images_uint8(img).astype(np.float32)
    ref = F.avg_pool2d(torch.from_numpy(img).permute(0, 3, 1, 2).float(), 2).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() <= 0.5


def test_kcs_diagonal_is_squared_bone_lengths():
    from train.adversarial import kcs_features, make_discriminator
    pose = torch.from_numpy(standing_pose()[None].astype(np.float32))
    k = kcs_features(pose)
    n = len(BONES)
    assert k.shape == (1, n * (n + 1) // 2)
    iu = torch.triu_indices(n, n)
    diag = k[0, iu[0] == iu[1]]
    np.testing.assert_allclose(diag.numpy(), (bone_lengths(standing_pose()) / 1000.0) ** 2, rtol=1e-5)
    d = make_discriminator(32)
    assert d(torch.rand(4, 17, 2) * 100, pose.repeat(4, 1, 1)).shape == (4,)


def test_validity_metrics():
    from train.pose_validity import angle_violations, bone_asymmetry_mm
    p = standing_pose()[None]
    assert bone_asymmetry_mm(p)[0] < 1e-6 and not angle_violations(p)[0]
    longer = p.copy()
    longer[0, J["l_wrist"]] += (longer[0, J["l_wrist"]] - longer[0, J["l_elbow"]]) * 0.5   # forearm +50%
    assert bone_asymmetry_mm(longer)[0] > 20
    # knee bent backwards (ankle behind) is fine, bent forwards is a violation
    fwd = np.cross(p[0, J["l_hip"]] - p[0, J["r_hip"]], p[0, J["thorax"]] - p[0, J["pelvis"]])
    fwd /= np.linalg.norm(fwd)
    shin = np.linalg.norm(p[0, J["l_ankle"]] - p[0, J["l_knee"]])
    for sign, bad in ((-1, False), (1, True)):
        q = p.copy()
        down = q[0, J["l_ankle"]] - q[0, J["l_knee"]]
        q[0, J["l_ankle"]] = q[0, J["l_knee"]] + (down / np.linalg.norm(down) * np.cos(0.8) + sign * fwd * np.sin(0.8)) * shin
        assert angle_violations(q)[0] == bad
    folded = p.copy()
    folded[0, J["r_wrist"]] = folded[0, J["r_shoulder"]] + 0.1 * (folded[0, J["r_elbow"]] - folded[0, J["r_shoulder"]])
    assert angle_violations(folded)[0]


def test_mirror_round_trip_and_labels():
    from train.render_data import mirror_matrices, mirror_samples
    rng = np.random.default_rng(0)
    j3 = np.stack([standing_pose() + rng.normal(0, 30, (17, 3)) for _ in range(5)]).astype(np.float32)
    j3 -= j3[:, :1]
    root = np.array([[x, 100, 4000] for x in (-800, -200, 0, 300, 900)], np.float32)
    f = np.full((5, 2), 1000, np.float32)
    c = np.full((5, 2), 500, np.float32)
    uv_img = (j3 + root[:, None])[..., :2] / (j3 + root[:, None])[..., 2:] * f[:, None] + c[:, None]
    box = np.stack([uv_img.mean(1)[:, 0], uv_img.mean(1)[:, 1], np.full(5, 600)], 1).astype(np.float32)
    crop = (uv_img - box[:, None, :2]) * (256 / 600) + 127.5
    mats = mirror_matrices(box, c, f)
    uv2, j32, root2, fbi2 = mirror_samples(crop, j3, root, mats)
    np.testing.assert_array_equal(fbi2, fbi_states(j32 + root2[:, None]))
    # the mirrored 3D projects onto the mirrored crop joints, to first order: the error grows
    # with the distance from the ray through the crop centre (hands of a person 13 deg off-axis)
    P = j32 + root2[:, None]
    proj = (P[..., :2] / P[..., 2:] * f[:, None] + c[:, None] - box[:, None, :2]) * (256 / 600) + 127.5
    err = np.linalg.norm(proj - uv2, axis=-1)
    assert err.mean() < 1.0 and err.max() < 8.0, (err.mean(), err.max())
    back = mirror_samples(uv2, j32, root2, mats)
    np.testing.assert_allclose(back[0], crop, atol=1e-3)
    np.testing.assert_allclose(back[1], j3, atol=1e-2)
    # bone lengths survive (a reflection), and left/right swapped names
    np.testing.assert_allclose(bone_lengths(j32), bone_lengths(j3)[:, [list(BONES).index(b) for b in _flipped_bones()]],
                               rtol=1e-5)


def _flipped_bones():
    from engines.skeleton import FLIP_PERMUTATION
    return [(FLIP_PERMUTATION[a], FLIP_PERMUTATION[b]) for a, b in BONES]


def test_detector_error_model_scales_errors_to_the_pose():
    from train.train_refiner import add_detector_error
    bank = np.zeros((1, 17, 2), np.float32)
    bank[0, 3] = (0.1, -0.05)  # right ankle: 10% of the box side right, 5% up
    uv = np.stack([standing_pose()[:, :2] * s for s in (0.2, 0.4)])       # two sizes, px
    out = add_detector_error(uv, bank, np.random.default_rng(0))
    side = 1.25 * np.ptp(uv, axis=1).max(-1)
    np.testing.assert_allclose(out[:, 3] - uv[:, 3], np.array([[0.1, -0.05]]) * side[:, None], rtol=1e-5)
    np.testing.assert_array_equal(np.delete(out, 3, 1), np.delete(uv, 3, 1))


def test_refiner_modalities():
    from engines.refiner import Refiner, RefinerConfig
    assert RefinerConfig().in_dim == 37 + 48 + 42
    assert RefinerConfig(use_coarse=False, use_fbi=False).in_dim == 37
    r = Refiner(RefinerConfig(use_coarse=False, hidden=32)).eval()
    x = torch.rand(2, 37)
    p = torch.softmax(torch.rand(2, 14, 3), -1)
    with torch.no_grad():
        a = r(x, torch.rand(2, 17, 3), p)
        b = r(x, torch.rand(2, 17, 3) * 100, p)   # coarse ignored when switched off
    assert a.shape == (2, 17, 3) and torch.equal(a, b)


def test_tiny_generator_overfits():
    g = _small_generator(dropout=0.0)
    torch.manual_seed(0)
    img, jc = torch.rand(8, 3, 64, 64), _crop_joints(8) / 2  # a 64 px image keeps it fast
    target = torch.randn(8, 17, 3) * 200
    target[:, 0] = 0
    fbi = torch.randint(0, 3, (8, 14))
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        coarse, logits = g.forward_small(img, jc)
        loss = (coarse[..., 2] - target[..., 2]).abs().mean() / 100 + torch.nn.functional.cross_entropy(
            logits.reshape(-1, 3), fbi.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    g.eval()
    with torch.no_grad():
        assert (g.forward_small(img, jc)[1].argmax(-1) == fbi).float().mean() > 0.9


def test_tiny_refiner_overfits_with_weighted_loss():
    from engines.models import apply_max_norm
    from engines.refiner import Refiner, RefinerConfig
    from train.losses import per_sample_l0, weighted_loss_terms
    torch.manual_seed(0)
    r = Refiner(RefinerConfig(hidden=128, dropout=0.0))
    x, c, p = torch.randn(64, 37), torch.randn(64, 17, 3) * 100, torch.softmax(torch.randn(64, 14, 3), -1)
    y = torch.randn(64, 51)
    opt = torch.optim.Adam(r.parameters(), lr=1e-3)
    one_minus_a, first = None, None
    for epoch in range(60):
        l0 = per_sample_l0(r.lifter.forward_normalized(r.inputs(x, c, p)), y)
        loss = l0.mean() if one_minus_a is None else weighted_loss_terms(l0, one_minus_a).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        apply_max_norm(r, 1.0)
        one_minus_a = float(l0.detach().mean())
        first = first or one_minus_a
    assert one_minus_a < 0.2 * first


@pytest.fixture(scope="module")
def final_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("final")
    gen = make_generator_checkpoint(d / "gen.pt")
    ref = make_refiner_checkpoint(d / "final.pt", generator=str(gen))
    return gen, ref


def test_final_model_lift_and_errors(final_pair):
    from engines.final import FinalModel
    _, ref = final_pair
    uv = standing_pose()[:, :2] * 0.3 + 320
    with FinalModel.open(str(ref), "torch") as m:
        out = m.lift(np.zeros((480, 640, 3), np.uint8), uv, np.array([600.0, 600.0]), np.array([320.0, 240.0]))
        assert out.joints_mm.shape == (17, 3) and np.allclose(out.joints_mm[0], 0)
        assert out.fbi_prob.shape == (14, 3) and out.coarse_mm.shape == (17, 3)
        with pytest.raises(UserError, match="uint8"):
            m.lift(np.zeros((480, 640), np.uint8), uv, np.ones(2), np.ones(2))
        with pytest.raises(UserError, match="17, 2"):
            m.lift(np.zeros((480, 640, 3), np.uint8), uv[:5], np.ones(2), np.ones(2))
        bad = uv.copy()
        bad[4] = np.nan
        with pytest.raises(UserError, match="finite"):
            m.lift(np.zeros((480, 640, 3), np.uint8), bad, np.ones(2), np.ones(2))
    with pytest.raises(UserError, match="not a refiner"):
        FinalModel.open(str(final_pair[0]), "torch")


def test_estimator_runs_final_and_fills_fbi(final_pair):
    from realtime.detector import Detection
    from realtime.estimator import PoseEstimator, open_lifter
    from realtime.frames import Frame

    uv = (standing_pose()[:, :2] * 0.3 + 320).astype(np.float32)

    class OnePerson:
        def detect(self, image, ts):
            return Detection(joints_2d_px=uv, confidence=np.ones(17, np.float32), world_mm=np.zeros((17, 3)),
                             box=None, landmarks_px=np.zeros((33, 2)), visibility=np.ones(33))

        def close(self):
            pass

    lifter = open_lifter(str(final_pair[1]), "torch")
    with PoseEstimator(detector=OnePerson(), lifter=lifter) as est:
        pf = est.process(Frame(0, 0.0, np.zeros((480, 640, 3), np.uint8)))
        assert pf.valid and pf.fbi is not None and pf.fbi.shape == (14, 3)
        assert np.isfinite(pf.joints_mm).all() and np.allclose(pf.joints_mm[0], 0)
        uv[2] = np.nan  # a broken detection: an empty frame, not a crash
        pf = est.process(Frame(1, 0.1, np.zeros((480, 640, 3), np.uint8)))
        assert not pf.valid and pf.index == 1


needs_renders = pytest.mark.skipif(
    not ((DATA / "makehuman" / "base.obj").is_file() and (DATA / "h36m" / "h36m_val.npz").is_file()
         and (DATA / "h36m" / "h36m_train.npz").is_file()),
    reason="MakeHuman / Human3.6M data not staged in ../shared/data")


def _cli(module, argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return module.run(p.parse_args(argv))


@needs_renders
def test_training_chain_on_tiny_render_sets(tmp_path, capsys):
    """render -> train-generator -> train-adversarial -> train-refiner -> eval, 1-2 epochs each."""
    from train import adversarial, evaluate, render_cmd, train_generator, train_refiner
    h = DATA / "h36m"
    tr, va = tmp_path / "tr", tmp_path / "va"
    assert _cli(render_cmd, ["--data", str(h / "h36m_train.npz"), "--out", str(tr), "--every", "4000",
                             "--limit", "70", "--no-mediapipe", "--seed", "1"]) == 0
    assert _cli(render_cmd, ["--data", str(h / "h36m_val.npz"), "--out", str(va), "--every", "700",
                             "--limit", "12", "--no-mediapipe", "--seed", "2"]) == 0
    with pytest.raises(UserError, match="S9"):  # never train on the validation subject
        _cli(train_generator, ["--train", str(va), "--val", str(va), "--out", str(tmp_path / "bad"), "--epochs", "1"])
    g = tmp_path / "gen"
    assert _cli(train_generator, ["--train", str(tr), "--val", str(va), "--out", str(g), "--epochs", "1",
                                  "--batch-size", "16"]) == 0
    adv = tmp_path / "adv"
    assert _cli(adversarial, ["--generator", str(g / "best.pt"), "--train", str(tr), "--val", str(va),
                              "--out", str(adv), "--epochs", "1", "--h36m-train", str(h / "h36m_train.npz")]) == 0
    rep = json.loads((adv / "report.json").read_text())
    for k in ("coarse_mpjpe_mm", "bone_asymmetry_mm", "angle_violation_pct"):
        assert k in rep["before"] and k in rep["after"]
    assert torch.load(adv / "best.pt", weights_only=False)["stage"] == "adversarial"
    # these renders have no MediaPipe 2D: the refiner and evaluation use the SH 2D of the frames
    ref = tmp_path / "ref"
    assert _cli(train_refiner, ["--generator", str(adv / "best.pt"), "--input", "sh", "--train", str(tr),
                                "--val", str(va), "--out", str(ref), "--epochs", "2",
                                "--h36m-mix", str(h / "h36m_train.npz"), "--h36m-every", "3000"]) == 0
    ck = torch.load(ref / "best.pt", weights_only=False)
    assert ck["kind"] == "refiner" and ck["artifact_meta"]["input_kind"] == "sh"
    assert _cli(evaluate, ["--data", str(va), "--input", "sh", "--model", str(ref / "best.pt"),
                           "--json", str(tmp_path / "e.json")]) == 0
    out = json.loads((tmp_path / "e.json").read_text())
    e = out["models"][str(ref / "best.pt")]
    assert out["samples"] == 12 and 0 < e["mpjpe_mm"] < 2000 and 0 <= e["fbi_accuracy"] <= 1
    assert len(e["fbi_per_bone"]) == len(FBI_BONES)
    assert "Protocol 1" in capsys.readouterr().out
