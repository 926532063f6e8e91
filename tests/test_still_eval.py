"""The still-lift evaluation (train/still_eval.py) and the Final model's prepared-input path
(engines.final.FinalModel.lift_crops) it lifts with."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engines.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_fixtures import make_generator_checkpoint, make_lifter_checkpoint, make_refiner_checkpoint  # noqa: E402
from pose_fixtures import standing_pose  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("still_models")
    gen = make_generator_checkpoint(d / "gen.pt")
    return {"final": str(make_refiner_checkpoint(d / "final.pt", generator=str(gen))),
            "lifter": str(make_lifter_checkpoint(d / "lifter.pt")), "generator": str(gen)}


def _cache(folder: Path, name: str, n: int, seed: int) -> None:
    """A cache chunk as train.still_eval.cache_chunk writes it: n standing people, one not
    found, crops of noise, intrinsics per picture."""
    rng = np.random.default_rng(seed)
    j3 = standing_pose()[None] + rng.normal(0, 30, (n, 17, 3))
    j3 = j3 - j3[:, :1]
    f = np.full((n, 2), 600.0) + rng.uniform(-50, 50, (n, 1))
    c = np.tile([320.0, 240.0], (n, 1))
    cam = j3 + np.array([0, 0, 4000.0])
    uv = cam[..., :2] / cam[..., 2:] * f[:, None] + c[:, None]
    found = np.ones(n, bool)
    found[1] = False
    np.savez(folder / f"{name}_000.npz", index=np.arange(n), found=found,
             uv=np.where(found[:, None, None], uv, np.nan).astype(np.float32), f=f.astype(np.float32),
             c=c.astype(np.float32), gt2d=uv.astype(np.float32), joints_3d=j3.astype(np.float32),
             world_mm=(j3 + rng.normal(0, 40, j3.shape)).astype(np.float32),
             crop=rng.integers(0, 255, (n, 256, 256, 3), dtype=np.uint8),
             joints_crop=rng.uniform(40, 215, (n, 17, 2)).astype(np.float32), detect_ms=np.full(n, 100.0))


def test_lift_crops_is_lift_batch_on_prepared_inputs(models):
    from engines.final import FinalModel, crop_input
    from engines.normalize import features_2d

    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    uv = np.stack([standing_pose()[:, :2] * 0.3 + 320, standing_pose()[:, :2] * 0.2 + 200])
    f, c = np.array([600.0, 600.0]), np.array([320.0, 240.0])
    with FinalModel.open(models["final"], "torch") as m:
        outs = m.lift_batch(image, uv, f, c)
        prep = [crop_input(image, u) for u in uv]
        joints, coarse, prob = m.lift_crops(np.concatenate([p[0] for p in prep]), np.concatenate([p[1] for p in prep]),
                                            features_2d(uv, f, c))
    assert np.allclose(joints, [o.joints_mm for o in outs], atol=1e-4) and np.allclose(joints[:, 0], 0)
    assert np.allclose(coarse, [o.coarse_mm for o in outs]) and np.allclose(prob, [o.fbi_prob for o in outs])


def test_frame_view_keeps_the_rays():
    """The frame's intrinsics and 2D describe the same rays as the full image's."""
    from train.still_eval import frame_view

    uv = np.array([[10.0, 20.0], [999.0, 500.0]] * 8 + [[0.0, 999.0]])
    s = {"image_size": np.array([1000, 1000]), "f": np.array([1145.0, 1144.0]), "c": np.array([512.0, 515.0]),
         "joints_2d_image": uv}
    f, c, gt2 = frame_view(s)
    assert np.allclose(f, s["f"] * 0.64)
    assert gt2.max() < 640 and np.allclose((gt2 - c) / f, (uv - s["c"]) / s["f"], atol=1e-3 / 1000)


def test_s9_indices_spread_rows_and_take_cameras_in_turn():
    from train.still_eval import s9_indices

    class Src:
        cameras = (0, 1, 2, 3)

        def __len__(self) -> int:
            return 4 * 1000

    idx = s9_indices(Src(), 10)
    rows, cams = np.divmod(idx, 4)
    assert rows[0] == 0 and rows[-1] == 999 and np.all(np.diff(rows) > 100)
    assert list(cams) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    sub = np.arange(500, 600)
    rows, _ = np.divmod(s9_indices(Src(), 5, sub), 4)
    assert set(rows) <= set(sub) and rows[0] == 500 and rows[-1] == 599


def test_averaged_candidate_is_the_mean_of_its_members(tmp_path, models):
    from train.still_eval import evaluate, lift_cached, load_cache, markdown

    _cache(tmp_path, "s9", 6, 0)
    _cache(tmp_path, "bandai", 5, 1)
    data = load_cache(tmp_path)
    assert set(data) == {"s9", "bandai"} and len(data["s9"]["found"]) == 6
    a = lift_cached(models["final"], data["s9"], "torch")
    b = lift_cached(models["lifter"], data["s9"], "torch")
    both = lift_cached(f"{models['final']}+{models['lifter']}", data["s9"], "torch")
    assert a.shape == (5, 17, 3) and np.allclose(a[:, 0], 0) and np.allclose(b[:, 0], 0)
    assert np.allclose(both, (a + b) / 2, atol=1e-4)
    res = evaluate(tmp_path, [models["final"], models["lifter"]], "torch")
    ref, other = res["candidates"][models["final"]], res["candidates"][models["lifter"]]
    assert ref["pooled"]["diff13"] == (0.0, 0.0, 0.0)
    assert np.isclose(other["pooled"]["p_mpjpe13"], (other["s9"]["p_mpjpe13"] + other["bandai"]["p_mpjpe13"]) / 2)
    assert np.isclose(other["pooled"]["diff13"][0], other["pooled"]["p_mpjpe13"] - ref["pooled"]["p_mpjpe13"])
    assert res["sets"]["s9"] == {**res["sets"]["s9"], "pictures": 6, "answered": 5}
    assert "mediapipe_world" in res["candidates"] and "| candidate |" in markdown(res)


def test_bootstrap_of_a_constant_difference():
    from train.still_eval import bootstrap_diff

    assert bootstrap_diff([np.full(7, 2.5), np.full(3, -0.5)]) == (1.0, 1.0, 1.0)
    est, lo, hi = bootstrap_diff([np.random.default_rng(0).normal(1.0, 1.0, 400)])
    assert lo < est < hi and hi - lo < 0.5


def test_bad_input_gets_one_line(tmp_path, models, capsys):
    from train.still_eval import lift_cached, load_cache, main

    assert main(["eval", str(tmp_path), "final"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no cached pictures" in err and err.count("\n") == 1
    _cache(tmp_path, "s9", 3, 0)
    data = load_cache(tmp_path)["s9"]
    with pytest.raises(UserError, match="generator model"):
        lift_cached(models["generator"], data, "torch")
    with pytest.raises(UserError, match="each once"):
        lift_cached(f"{models['lifter']}+{models['lifter']}", data, "torch")
