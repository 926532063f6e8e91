"""Flip averaging (test-time augmentation): the feature-space mirror is exact, the averaged
models are mirror-equivariant, and the exported ONNX graph computes the same thing."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.models import Lifter, LifterConfig, with_flip_tta
from engines.normalize import features_2d, features_flip
from engines.refiner import Refiner, RefinerConfig, refiner_input_flip
from engines.skeleton import FBI_FLIP_PERMUTATION, FLIP_PERMUTATION, fbi_states, flip_horizontal

sys.path.insert(0, str(Path(__file__).parent))
from engine_fixtures import make_lifter_checkpoint, make_refiner_checkpoint  # noqa: E402

PERM = list(FLIP_PERMUTATION)


def _mirror_uv(uv: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = uv[..., PERM, :].copy()
    out[..., 0] = 2 * c[0] - out[..., 0]
    return out


def _poses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    uv = rng.uniform(150, 850, (n, 17, 2))
    return uv, np.array([1145.0, 1144.0]), np.array([512.5, 515.5])


def test_feature_mirror_is_exact():
    uv, f, c = _poses(32)
    index, sign = features_flip()
    np.testing.assert_allclose(features_2d(_mirror_uv(uv, c), f, c), sign * features_2d(uv, f, c)[:, index],
                               atol=1e-6)
    assert sorted(index.tolist()) == list(range(len(index)))  # a permutation


def test_fbi_bone_permutation_matches_mirrored_states():
    rng = np.random.default_rng(3)
    j = rng.normal(0, 300, (200, 17, 3))
    np.testing.assert_array_equal(fbi_states(flip_horizontal(j)), fbi_states(j)[:, list(FBI_FLIP_PERMUTATION)])


def _random_lifter(cfg: LifterConfig, **kw) -> Lifter:
    torch.manual_seed(0)
    m = Lifter(cfg, **kw)
    g = torch.Generator().manual_seed(1)
    m.set_normalization(torch.randn(cfg.in_dim, generator=g) * 0.1, torch.rand(cfg.in_dim, generator=g) + 0.5,
                        torch.randn(51, generator=g) * 300, torch.rand(51, generator=g) * 200 + 50)
    return m.eval()


def test_flip_averaged_lifter_is_mirror_equivariant_and_averages():
    plain = _random_lifter(LifterConfig(hidden=64))
    tta = Lifter(LifterConfig(hidden=64, flip_tta=True)).eval()
    tta.load_state_dict(plain.state_dict(), strict=False)
    uv, f, c = _poses(16)
    x = torch.from_numpy(features_2d(uv, f, c))
    xm = torch.from_numpy(features_2d(_mirror_uv(uv, c), f, c))
    with torch.no_grad():
        y, ym = tta(x).numpy(), tta(xm).numpy()
        want = 0.5 * (plain(x).numpy() + flip_horizontal(plain(xm).numpy()))
    np.testing.assert_allclose(y, want, atol=1e-3)
    np.testing.assert_allclose(ym, flip_horizontal(y), atol=1e-3)
    assert np.abs(y).max() > 100  # mm scale, so the tolerance means something


def test_flip_averaged_refiner_is_mirror_equivariant():
    cfg = RefinerConfig(hidden=64, flip_tta=True)
    torch.manual_seed(0)
    m = Refiner(cfg).eval()
    uv, f, c = _poses(8, seed=5)
    rng = np.random.default_rng(6)
    coarse = rng.normal(0, 300, (8, 17, 3)).astype(np.float32)
    coarse[:, 0] = 0
    prob = rng.dirichlet(np.ones(3), (8, 14)).astype(np.float32)
    args = [torch.from_numpy(features_2d(uv, f, c)), torch.from_numpy(coarse), torch.from_numpy(prob)]
    margs = [torch.from_numpy(features_2d(_mirror_uv(uv, c), f, c)),
             torch.from_numpy(flip_horizontal(coarse).astype(np.float32)),
             torch.from_numpy(prob[:, list(FBI_FLIP_PERMUTATION)])]
    with torch.no_grad():
        y, ym = m(*args).numpy(), m(*margs).numpy()
    np.testing.assert_allclose(ym, flip_horizontal(y), atol=1e-3)
    # The input mirror over the concatenated vector agrees with mirroring each part.
    index, sign = refiner_input_flip(cfg)
    np.testing.assert_allclose(m.inputs(*margs).numpy(), sign * m.inputs(*args).numpy()[:, index], atol=1e-5)


@pytest.mark.parametrize("kind", ["lifter", "refiner"])
def test_flip_checkpoint_exports_and_matches_onnx(tmp_path, kind):
    from engines.backends.onnxruntime_backend import OnnxRuntimeBackend
    from engines.backends.torch_backend import TorchBackend
    from engines.export import export_onnx
    from engines.stages import STAGES

    if kind == "lifter":
        src = make_lifter_checkpoint(tmp_path / "plain.pt")
        classes = (Lifter, LifterConfig)
    else:
        src = make_refiner_checkpoint(tmp_path / "plain.pt")
        classes = (Refiner, RefinerConfig)
    ck = torch.load(src, weights_only=False)
    flipped = with_flip_tta(ck, *classes)
    assert flipped["model_config"]["flip_tta"] is True
    pt = tmp_path / "flip.pt"
    torch.save(flipped, pt)
    x = STAGES[kind].example_inputs(5, seed=2)
    want_plain = TorchBackend(src).run(x)["joints_mm"]
    want = TorchBackend(pt).run(x)["joints_mm"]
    got = OnnxRuntimeBackend(export_onnx(pt, tmp_path / "flip.onnx"), threads=1).run(x)["joints_mm"]
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert not np.allclose(want, want_plain, atol=1e-2)  # the averaging is really in the graph
