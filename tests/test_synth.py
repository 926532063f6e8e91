"""Synthetic renderer (train.synth): exact labels, FBI rule, determinism, shards, BVH."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest

from engines.camera import project_camera
from engines.crop import CropBox
from engines.errors import UserError
from engines.skeleton import fbi_states
from train.h36m import default_data_dir

DATA = default_data_dir()
MH = DATA / "makehuman" / "base.obj"
H36M_VAL = DATA / "h36m" / "h36m_val.npz"
BANDAI = DATA / "bandai" / "dataset-2" / "data"
needs_body = pytest.mark.skipif(not MH.is_file(), reason="MakeHuman assets not staged")
needs_h36m = pytest.mark.skipif(not (MH.is_file() and H36M_VAL.is_file()), reason="H36M/MakeHuman data not staged")

TINY_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Knee
  {
    OFFSET 0 -40 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 -40 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
0 90 0 0 0 0 0 0 0
1 90 2 90 0 0 0 90 0
"""


def test_bvh_parse_and_fk(tmp_path: Path) -> None:
    from train.synth.bvh import forward_kinematics, parse_bvh
    p = tmp_path / "tiny.bvh"
    p.write_text(TINY_BVH)
    b = parse_bvh(p)
    assert b.names == ("Hips", "Knee") and list(b.parents) == [-1, 0]
    assert b.motion.shape == (2, 9) and b.frame_time == pytest.approx(1 / 30, rel=1e-5)
    pos, rot = forward_kinematics(b)
    np.testing.assert_allclose(pos[0], [[0, 90, 0], [0, 50, 0]], atol=1e-9)
    # Frame 1: hips at (1,90,2) rotated 90 deg about z: the knee offset (0,-40,0) -> (40,0,0).
    np.testing.assert_allclose(pos[1], [[1, 90, 2], [41, 90, 2]], atol=1e-9)
    assert np.allclose(rot[1, 1] @ rot[1, 1].T, np.eye(3))
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT x\n{\n OFFSET 0 0\n")
    with pytest.raises(UserError):
        parse_bvh(bad)


@pytest.mark.skipif(not BANDAI.is_dir(), reason="Bandai-Namco data not staged")
def test_bandai_clip_is_a_walking_person() -> None:
    from train.synth.bvh import bandai_targets, parse_bvh
    f = BANDAI / "dataset-2_walk_active_001.bvh"
    b = parse_bvh(f)
    assert len(b.names) == 22 and b.num_frames == 207  # FILES.tsv: 207 frames
    t = bandai_targets(b)
    assert t.shape == (207, 17, 3)
    height = (t[:, 10, 2] - t[:, [3, 6], 2].min(1)).mean()
    assert 1200 < height < 1900  # mm, head joint over the lower ankle
    # Facing (left x up) agrees with the walking direction: left/right are not swapped.
    fwd = np.cross(t[:, 11] - t[:, 14], [0, 0, 1.0]).mean(0)
    vel = t[-1, 0] - t[0, 0]
    assert fwd @ vel / np.linalg.norm(fwd) / np.linalg.norm(vel) > 0.9


@needs_h36m
def test_solver_lands_on_h36m_joints() -> None:
    from train.h36m import open_npz
    from train.synth.body import load_body
    from train.synth.pose import PoseSolver
    d = open_npz(H36M_VAL)
    solver = PoseSolver(load_body())
    X = d["positions_3d"][::1500].astype(np.float64)
    err = np.stack([np.linalg.norm(solver.solve(x).joints - x, axis=1) for x in X])
    others = np.delete(err, 9, axis=1)
    assert others.max() < 1e-6, others.max()
    assert err[:, 9].mean() < 30.0  # neck_nose: the body's own point in the head


def _items():
    from train.synth.shards import H36MSource
    h = H36MSource(H36M_VAL, every=997, cameras=(0, 1, 2, 3))
    return [h.item(i) for i in (0, 5, 10, 15)]


@pytest.fixture(scope="module")
def renderer():
    from train.synth.samples import SampleRenderer
    return SampleRenderer(use_mediapipe=False)


@pytest.fixture(scope="module")
def samples(renderer):
    from train.synth.samples import PoseItem, SOURCE_BVH
    items = _items()
    # Plus mocap-style items: H36M joints on sampled bodies seen by sampled webcams.
    items += [PoseItem(it.joints_world, None, False, SOURCE_BVH, h36m_like=it.camera) for it in items[:3]]
    return [renderer.render(it, np.random.default_rng([7, i])) for i, it in enumerate(items)]


@needs_h36m
def test_labels_reproject_exactly(samples) -> None:
    for s in samples:
        X = s["joints_3d"].astype(np.float64) + s["root_cam"]
        uv = project_camera(X, s["f"], s["c"], s["k"], s["p"])
        np.testing.assert_allclose(uv, s["joints_2d_image"], atol=0.02)
        box = CropBox(*map(float, s["box"]))
        err = np.abs(box.image_to_crop(uv) - s["joints_2d_crop"]).max()
        assert err < 0.5, err
        np.testing.assert_allclose(s["depth"], X[:, 2], atol=0.01)
        assert s["images"].shape == (256, 256, 3) and s["images"].dtype == np.uint8


@needs_h36m
def test_h36m_labels_are_the_given_joints(samples) -> None:
    from train.h36m import open_npz
    from engines.camera import world_to_camera
    d = open_npz(H36M_VAL)
    for s in samples[:4]:
        x = d["positions_3d"][int(s["frame"])].astype(np.float64)
        xc = world_to_camera(x, s["cam_R"].astype(np.float64), s["cam_T"].astype(np.float64))
        got = s["joints_3d"] + s["root_cam"]
        err = np.linalg.norm(got - xc, axis=1)
        assert np.delete(err, 9).max() < 0.5, err  # float32 storage
        assert err[9] < 40


@needs_h36m
def test_joints_project_onto_the_rendered_body(renderer, samples) -> None:
    """Render on an empty background without effects: every joint's pixel is on the body."""
    from train.synth.scene import camera_affines, render_body, sample_albedo, sample_light
    from engines.camera import world_to_camera
    from engines.crop import box_from_joints
    item = _items()[1]
    rng = np.random.default_rng(3)
    posed = renderer.solver.solve(item.joints_world)
    cam = item.camera
    uv = project_camera(world_to_camera(posed.joints, cam.R, cam.T), cam.f, cam.c, cam.k, cam.p)
    box = box_from_joints(uv)
    img, zbuf, ids = render_body(renderer.body, camera_affines(posed.affine, cam), cam, box.affine,
                                 np.zeros((256, 256, 3), np.float32), sample_albedo(renderer.body, rng),
                                 sample_light(rng))
    uvc = np.rint(box.image_to_crop(uv)).astype(int)
    on_body = [np.isfinite(zbuf[v - 1:v + 2, u - 1:u + 2]).any() for u, v in uvc]
    assert all(on_body), on_body
    assert (ids >= 0).sum() == np.isfinite(zbuf).sum()


@needs_h36m
def test_fbi_labels_follow_the_rule(samples) -> None:
    for s in samples:
        X = s["joints_3d"].astype(np.float64) + s["root_cam"]
        np.testing.assert_array_equal(s["fbi"], fbi_states(X))
        np.testing.assert_array_equal(s["fbi"], fbi_states(s["joints_3d"].astype(np.float64)))


@needs_h36m
def test_deterministic_given_seed(renderer) -> None:
    it = _items()[2]
    a = renderer.render(it, np.random.default_rng([1, 2]))
    b = renderer.render(it, np.random.default_rng([1, 2]))
    c = renderer.render(it, np.random.default_rng([1, 3]))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["images"], c["images"])


@needs_h36m
def test_shards_round_trip_and_resume(tmp_path: Path) -> None:
    from train.render_cmd import add_arguments, run
    from train.synth.dataset import SynthDataset
    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "s9"
    argv = ["--data", str(H36M_VAL), "--out", str(out), "--every", "500", "--cameras", "1,3",
            "--limit", "6", "--shard-size", "4", "--no-mediapipe", "--seed", "5"]
    assert run(p.parse_args(argv)) == 0
    ds = SynthDataset(out)
    assert len(ds) == 6 and ds.manifest["complete"] and len(ds.files) == 2
    s5 = ds[5]
    assert s5["images"].shape == (256, 256, 3) and int(s5["index"]) == 5
    assert int(s5["camera_index"]) == 3 and int(s5["frame"]) == 1000  # sample 5 = row 2*500, camera 3
    lab = ds.labels()
    assert "images" not in lab and lab["joints_3d"].shape == (6, 17, 3) and lab["fbi"].shape == (6, 14)
    # Same sample rendered directly = same arrays (shards are a pure function of the seed).
    from train.synth.samples import SampleRenderer
    from train.synth.shards import H36MSource
    src = H36MSource(H36M_VAL, 500, (1, 3))
    direct = SampleRenderer(use_mediapipe=False).render(src.item(5), np.random.default_rng([5, 5]))
    np.testing.assert_array_equal(direct["images"], s5["images"])
    # Resume: nothing is re-rendered; a different seed in the same folder is refused.
    mtimes = [os.path.getmtime(f) for f in ds.files]
    assert run(p.parse_args(argv)) == 0
    assert mtimes == [os.path.getmtime(f) for f in ds.files]
    os.remove(ds.files[1])
    assert run(p.parse_args(argv)) == 0
    np.testing.assert_array_equal(SynthDataset(out)[5]["images"], s5["images"])
    with pytest.raises(UserError):
        run(p.parse_args(argv[:-1] + ["6"]))
    # Growing the set: the old samples stay, the partial last shard is redone.
    grown = [a if a != "6" else "9" for a in argv]
    assert run(p.parse_args(grown)) == 0
    big = SynthDataset(out)
    assert len(big) == 9 and big.manifest["complete"]
    np.testing.assert_array_equal(big[5]["images"], s5["images"])
    assert os.path.getmtime(big.files[0]) == mtimes[0]


@pytest.mark.slow
@needs_h36m
def test_mediapipe_finds_rendered_people(tmp_path: Path) -> None:
    from train.synth.samples import SampleRenderer, default_model_path
    if not default_model_path().is_file():
        pytest.skip("MediaPipe model bundle not built")
    r = SampleRenderer(use_mediapipe=True)
    try:
        ss = [r.render(it, np.random.default_rng([0, i])) for i, it in enumerate(_items())]
        again = r.render(_items()[0], np.random.default_rng([0, 0]))  # MediaPipe is deterministic too
    finally:
        r.close()
    for k in again:
        np.testing.assert_array_equal(again[k], ss[0][k], err_msg=k)
    assert np.mean([s["mp_found"] for s in ss]) >= 0.75
    for s in ss:
        if s["mp_found"]:
            assert np.isfinite(s["mp_landmarks_image"]).all()


def test_visibility_rule() -> None:
    from train.synth.samples import _visibility
    H = W = 32
    zbuf = np.full((H, W), np.inf, np.float32)
    idbuf = np.full((H, W), -1, np.int16)
    zbuf[:, :16], idbuf[:, :16] = 1000.0, 0   # segment 0 at z=1000 on the left half
    zbuf[:, 16:], idbuf[:, 16:] = 1000.0, 1   # segment 1 on the right half
    allowed = np.zeros((4, 2), bool)
    allowed[:, 0] = True                       # every joint may be seen on segment 0 only
    occ = np.zeros((H, W), bool)
    occ[0:4, 0:4] = True
    uv = np.array([[8.0, 8.0], [24.0, 24.0], [24.0, 24.0], [2.0, 2.0]])
    z = np.array([1050.0, 1050.0, 1500.0, 1050.0])
    radius = np.full(4, 20.0)
    vis = _visibility(uv, z, zbuf, idbuf, allowed, occ, radius, np.ones(4, bool))
    # own segment; other segment but within radius; other segment 500 mm in front; occluded
    assert vis.tolist() == [True, True, False, False]
    assert not _visibility(uv, z, zbuf, idbuf, allowed, occ, radius, np.zeros(4, bool)).any()


@needs_h36m
def test_worker_count_does_not_change_shards(tmp_path: Path) -> None:
    from train.synth.dataset import SynthDataset
    from train.synth.shards import H36MSource, RunConfig, render_shards
    src = H36MSource(H36M_VAL, 700, (0, 2))
    for w in (1, 2):
        render_shards(src, RunConfig(out=tmp_path / f"w{w}", seed=3, shard_size=2, mediapipe=False, workers=w,
                                     limit=4), log=lambda *_: None)
    a, b = SynthDataset(tmp_path / "w1"), SynthDataset(tmp_path / "w2")
    assert len(a) == len(b) == 4
    for i in range(4):
        np.testing.assert_array_equal(a[i]["images"], b[i]["images"])
        np.testing.assert_array_equal(a[i]["joints_3d"], b[i]["joints_3d"])


@needs_h36m
def test_direct_crop_matches_crop_image_of_full_render(renderer) -> None:
    """The crop drawn through CropBox.affine equals engines.crop.crop_image of a full-frame
    render of the same scene, up to resampling (effects off)."""
    from engines.camera import world_to_camera
    from engines.crop import box_from_joints, crop_image
    from train.synth.scene import Effects, Scene, camera_affines, sample_albedo, sample_light, sample_scene
    item = _items()[3]
    rng = np.random.default_rng(11)
    posed = renderer.solver.solve(item.joints_world)
    cam = item.camera
    uv = project_camera(world_to_camera(posed.joints, cam.R, cam.T), cam.f, cam.c, cam.k, cam.p)
    sc = sample_scene(rng, cam.size, (0, 0, 1, 1), occluder_prob=0.0)
    sc = Scene(sc.background, (), Effects(0.0, 0.0, 0.0, 0.0))
    alb, light = sample_albedo(renderer.body, rng), sample_light(rng)
    A = camera_affines(posed.affine, cam)
    box = box_from_joints(uv)
    full, zf, _, _ = renderer._draw(A, cam, np.array([[1.0, 0, 0], [0, 1.0, 0]]), cam.size, sc, alb, light, rng)
    direct, zd, _, _ = renderer._draw(A, cam, box.affine, (256, 256), sc, alb, light, rng)
    via_crop = crop_image(full, box)
    body_full = crop_image(np.repeat(np.isfinite(zf)[..., None], 3, 2).astype(np.uint8) * 255, box)[..., 0] > 127
    body_direct = np.isfinite(zd)
    iou = (body_full & body_direct).sum() / (body_full | body_direct).sum()
    assert iou > 0.95, iou  # measured 0.988
    diff = np.abs(via_crop.astype(int) - direct.astype(int)).mean()
    assert diff < 3, diff  # grey levels (measured 0.33): edges and texture resampling differ


@pytest.mark.skipif(not (BANDAI.is_dir() and MH.is_file()), reason="Bandai-Namco/MakeHuman data not staged")
def test_bvh_source_items_are_deterministic_and_cached(tmp_path: Path, renderer) -> None:
    import shutil
    from train.synth.shards import BvhSource
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("dataset-2_walk_active_001.bvh", "dataset-2_raise-up-both-hands_active_001.bvh"):
        shutil.copy(BANDAI / name, clips / name)
    out = tmp_path / "out"
    a = BvhSource(clips, 5, cache_dir=out, seed=4)
    assert (out / "bvh_targets.npz").is_file() and len(a) == 5
    b = BvhSource(clips, 5, cache_dir=out, seed=4)  # from the cache
    for i in range(5):
        ia, ib = a.item(i), b.item(i)
        np.testing.assert_array_equal(ia.joints_world, ib.joints_world)
        assert (ia.clip, ia.frame) == (ib.clip, ib.frame) and ia.clip in (0, 1)
    s = renderer.render(a.item(0), np.random.default_rng([4, 0]))
    X = s["joints_3d"].astype(np.float64) + s["root_cam"]
    uv = project_camera(X, s["f"], s["c"], s["k"], s["p"])
    from engines.crop import CropBox
    assert np.abs(CropBox(*map(float, s["box"])).image_to_crop(uv) - s["joints_2d_crop"]).max() < 0.5


@pytest.mark.skipif(not (BANDAI.is_dir() and MH.is_file()), reason="Bandai-Namco/MakeHuman data not staged")
def test_render_command_bvh_mode(tmp_path: Path) -> None:
    import shutil
    from train.render_cmd import add_arguments, run
    from train.synth.dataset import SynthDataset
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(BANDAI / "dataset-2_walk_active_001.bvh", clips)
    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "bvh"
    assert run(p.parse_args(["--bvh", str(clips), "--out", str(out), "--count", "3", "--no-mediapipe"])) == 0
    ds = SynthDataset(out)
    lab = ds.labels()
    assert len(ds) == 3 and (lab["source"] == 1).all() and (lab["clip"] == 0).all()
    assert ds.manifest["source"]["clips"] == ["dataset-2_walk_active_001.bvh"]
    # Mocap bodies have sampled proportions: bone lengths differ between samples.
    from engines.skeleton import bone_lengths
    L = bone_lengths(lab["joints_3d"].astype(np.float64))
    assert np.ptp(L[:, 1]) > 1.0  # right thigh, mm


# ---- rendered sequences (train.synth.sequences) ----

def test_catmull_rom_is_exact_on_the_samples_and_smooth_between() -> None:
    from train.synth.sequences import catmull_rom
    t = np.arange(6) * 100.0
    v = np.stack([np.sin(t / 150.0), t ** 2 / 1e4], 1)
    np.testing.assert_allclose(catmull_rom(t, v, t), v, atol=1e-12)
    q = np.linspace(0, 500, 301)
    y = catmull_rom(t, v, q)
    inner = (q >= 100) & (q <= 400)                 # the end segments repeat the end sample
    np.testing.assert_allclose(y[inner, 1], q[inner] ** 2 / 1e4, atol=1e-9)   # exact on a parabola inside
    assert np.abs(np.diff(y[:, 0], 2)).max() < 1e-3                  # no kinks at the samples


@needs_h36m
def test_h36m_clips_mark_the_rows_and_keep_the_labels(tmp_path: Path) -> None:
    from train.synth.sequences import ClipRenderer, H36MClips
    src = H36MClips(H36M_VAL, (1, 3), fps=30, seconds=1.0)
    assert len(src) == 29 * 2                       # one clip per sequence and camera
    clip = src.item(3)                              # sequence 1, camera 3
    assert clip.camera_index == 3 and len(clip.times_ms) == 31
    on_row = np.flatnonzero(clip.row >= 0)
    np.testing.assert_array_equal(on_row, np.arange(0, 31, 3))      # 10 Hz rows in a 30 fps clip
    pos = np.load(H36M_VAL)["positions_3d"]
    np.testing.assert_allclose(clip.joints_world[on_row], pos[clip.row[on_row]], atol=1e-3)
    r = ClipRenderer(use_mediapipe=False)
    a = r.render(src.item(3), np.random.default_rng([4, 3]))
    b = r.render(src.item(3), np.random.default_rng([4, 3]))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # One camera, body and scene per clip; labels are the file's joints in that camera.
    assert (a["f"] == a["f"][:1]).all() and (a["girth"] == a["girth"][0]).all()
    from engines.camera import world_to_camera
    from engines.skeleton import root_relative
    cam = src.cams[(9, 3)]
    want = root_relative(world_to_camera(pos[clip.row[on_row]].astype(np.float64), cam.R, cam.T))
    keep = [j for j in range(17) if j != 9]        # neck_nose is the body's own point (train.synth.samples)
    np.testing.assert_allclose(a["joints_3d"][on_row][:, keep], want[:, keep], atol=1e-3)
    assert not a["mp_found"].any() and np.isnan(a["mp_joints_2d"]).all()


@needs_h36m
def test_sequence_render_command_shards_clips_and_resumes(tmp_path: Path) -> None:
    from train.render_cmd import add_arguments, run
    from train.synth.dataset import SynthDataset
    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "seq"
    argv = ["--sequence", "--data", str(H36M_VAL), "--out", str(out), "--cameras", "0", "--fps", "30",
            "--seconds", "0.5", "--limit", "3", "--shard-size", "2", "--no-mediapipe"]
    assert run(p.parse_args(argv)) == 0
    ds = SynthDataset(out)
    assert ds.manifest["complete"] and len(ds) == 3 and ds.manifest["stats"]["frames"] == 3 * 16
    lab = ds.labels()
    assert lab["index"].tolist() == [0] * 16 + [1] * 16 + [2] * 16
    assert np.allclose(np.diff(lab["time_ms"][:16]), 1000 / 30) and "mp_world_mm" in ds.manifest["fields"]
    mtimes = [os.path.getmtime(f) for f in ds.files]
    assert run(p.parse_args(argv)) == 0
    assert mtimes == [os.path.getmtime(f) for f in ds.files]
    with pytest.raises(UserError, match="apply to --sequence"):
        run(p.parse_args(argv[1:]))


@pytest.mark.slow
@needs_h36m
def test_sequence_mediapipe_video_mode_and_cues() -> None:
    from train.synth.samples import default_model_path
    from train.synth.sequences import ClipRenderer, H36MClips
    if not default_model_path().is_file():
        pytest.skip("MediaPipe model bundle not built")
    r = ClipRenderer(use_mediapipe=True, generator="generator")
    try:
        out = r.render(H36MClips(H36M_VAL, (1,), fps=30, seconds=1.0).item(0), np.random.default_rng(0))
    finally:
        r.close()
    found = out["mp_found"]
    assert found.mean() > 0.8
    err = np.linalg.norm(out["mp_joints_2d"][found] - out["joints_2d_image"][found], axis=-1)
    assert np.median(err) < 25                      # px in a 1000 px image
    hips = 0.5 * (out["mp_world_mm"][found, 23] + out["mp_world_mm"][found, 24])
    assert np.abs(hips).max() < 50                  # world landmarks are hip-centred, mm
    assert np.isfinite(out["coarse_mm"][found]).all() and np.allclose(out["fbi_prob"][found].sum(-1), 1, atol=1e-4)
