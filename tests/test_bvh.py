"""realtime.bvh: the file read back by an independent parser (tests/bvh_reader.py) and run
through forward kinematics reproduces our joints' directions; feet on the floor, first frame
at the origin, units, names, channels, the T-pose rest, frame time from the timestamps; and
(slow) Blender's own importer through the `bpy` wheel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bvh_reader import bvh_end_positions, bvh_positions, read_bvh, read_bvh_details
from recorded import recorded_poses

from engines.errors import UserError
from engines.skeleton import JOINT_NAMES
from realtime.bvh import BvhOptions, bvh_document, bvh_options, frame_slots, render_bvh
from realtime.frames import PoseFrame
from realtime.rig import (CAM_TO_RIG, H36M_RIG, default_rest, forward, level_rotation, matrix_from_euler_zxy,
                          rig_points)
from realtime.writers import Recording, add_file_arguments, output_spec

REPO = Path(__file__).resolve().parents[1]
MIXAMO = ["Hips", "Spine", "Spine1", "Spine2", "Neck", "Head"] + [
    f"{s}{b}" for s in ("Left", "Right")
    for b in ("Shoulder", "Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "ToeBase", "Heel")]
FEET = ("Foot", "ToeBase", "Heel", "ankle")
# Our bones -> the BVH joints whose segment carries them, per skeleton: (from, to) joint names
# of the file (a "+end" suffix: that joint's End Site).
SEGMENTS = {
    "mixamo": {("l_shoulder", "l_elbow"): ("LeftArm", "LeftForeArm"), ("l_elbow", "l_wrist"): ("LeftForeArm", "LeftHand"),
               ("r_shoulder", "r_elbow"): ("RightArm", "RightForeArm"), ("r_elbow", "r_wrist"): ("RightForeArm", "RightHand"),
               ("l_hip", "l_knee"): ("LeftUpLeg", "LeftLeg"), ("l_knee", "l_ankle"): ("LeftLeg", "LeftFoot"),
               ("r_hip", "r_knee"): ("RightUpLeg", "RightLeg"), ("r_knee", "r_ankle"): ("RightLeg", "RightFoot"),
               ("r_hip", "l_hip"): ("RightUpLeg", "LeftUpLeg"), ("spine", "thorax"): ("Spine", "Neck"),
               ("thorax", "l_shoulder"): ("LeftShoulder", "LeftArm")},
    "h36m": {(a, b): (a, b) for a, b in (("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("r_shoulder", "r_elbow"),
                                          ("r_elbow", "r_wrist"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
                                          ("r_hip", "r_knee"), ("r_knee", "r_ankle"), ("r_hip", "l_hip"),
                                          ("spine", "thorax"), ("r_shoulder", "l_shoulder"),
                                          ("neck_nose", "head"))},
}


def _clip_arrays():
    poses, fps = recorded_poses()
    J = np.stack([p.joints_mm + p.translation_mm for p in poses]).astype(np.float64)
    return (J, np.array([p.valid for p in poses]), np.array([p.timestamp_s for p in poses]), fps,
            np.stack([p.landmarks_world_mm for p in poses]), np.stack([p.landmarks_visibility for p in poses]))


def _write(tmp_path: Path, name: str = "a.bvh", **opts) -> Path:
    J, valid, t, fps, lm, vis = _clip_arrays()
    path = tmp_path / name
    path.write_text(bvh_document(J, valid, t, fps, lm, vis, BvhOptions(**opts)))
    return path


def _fk(path: Path):
    """names, positions (F, J, 3), end sites {name: (F, 3)}, frame time."""
    names, parents, offsets, motion, ft = read_bvh(path)
    ends, _ = read_bvh_details(path)
    pos = bvh_positions(parents, offsets, motion)
    end_pos = {names[j]: p for j, p in bvh_end_positions(parents, offsets, motion, ends).items()}
    return names, pos, end_pos, ft


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.sum(a * b, -1), -1.0, 1.0)))


def _lowest_foot(names: list[str], pos: np.ndarray, ends: dict[str, np.ndarray]) -> np.ndarray:
    """(F,) the lowest Y of the feet: their joints and end sites."""
    ys = [pos[:, i, 1] for i, n in enumerate(names) if any(k in n for k in FEET)]
    ys += [e[:, 1] for n, e in ends.items() if any(k in n for k in FEET)]
    return np.min(np.stack(ys, 1), axis=1)


@pytest.mark.parametrize("names", ["mixamo", "h36m"])
def test_round_trip_reproduces_our_joint_directions(tmp_path: Path, names: str):
    """FK of the file (camera placement: our camera axes turned to Y up) points every bone
    along ours; floor placement is the same motion, levelled."""
    J, valid, *_ = _clip_arrays()
    cam_names, cam_pos, _, _ = _fk(_write(tmp_path, "cam.bvh", names=names, root="camera"))
    floor_names, floor_pos, _, _ = _fk(_write(tmp_path, "floor.bvh", names=names))
    assert cam_names == floor_names
    level = level_rotation(rig_points(J[valid]))
    ours = J[valid] @ CAM_TO_RIG.T
    for (a, b), (fa, fb) in SEGMENTS[names].items():
        want = ours[:, JOINT_NAMES.index(b)] - ours[:, JOINT_NAMES.index(a)]
        got = cam_pos[:, cam_names.index(fb)] - cam_pos[:, cam_names.index(fa)]
        assert _angle_deg(got, want).max() < 0.01, (a, b)  # file precision: 1e-6 degrees, 1e-6 cm
        got = floor_pos[:, floor_names.index(fb)] - floor_pos[:, floor_names.index(fa)]
        assert _angle_deg(got, want @ level.T).max() < 0.01, (a, b)


def test_feet_on_the_floor_first_frame_at_the_origin(tmp_path: Path):
    names, pos, ends, _ = _write_and_fk(tmp_path)
    root = pos[:, 0]
    assert root[0, 0] == pytest.approx(0.0, abs=1e-6) and root[0, 2] == pytest.approx(0.0, abs=1e-6)
    assert 70.0 < root[0, 1] < 110.0  # hips about 0.9 m above the floor, in centimetres
    lowest = _lowest_foot(names, pos, ends)
    assert np.abs(lowest).max() < 3.0, lowest  # a standing clip: every frame within 3 cm of y = 0
    head = pos[:, names.index("Head")]
    assert np.degrees(np.arccos((head[:, 1] - root[:, 1]) / np.linalg.norm(head - root, axis=1))).max() < 15.0
    # contact: every frame's lowest foot point exactly on the floor
    names, pos, ends, _ = _fk(_write(tmp_path, "contact.bvh", root="contact"))
    np.testing.assert_allclose(_lowest_foot(names, pos, ends), 0.0, atol=1e-3)
    # camera: the camera-space trajectory (camera at the origin, looking along -Z)
    J, valid, *_ = _clip_arrays()
    names, pos, _, _ = _fk(_write(tmp_path, "camera.bvh", root="camera"))
    np.testing.assert_allclose(pos[:, 0], J[:, 0] @ CAM_TO_RIG.T / 10.0, atol=1e-4)
    assert (pos[:, 0, 2] < -250).all()  # the person is ~3 m in front of the camera


def _write_and_fk(tmp_path: Path, **opts):
    return _fk(_write(tmp_path, **opts))


def test_units_names_channels_and_t_pose_rest(tmp_path: Path):
    cm, m = _write(tmp_path, "cm.bvh"), _write(tmp_path, "m.bvh", units="m")
    n_cm, p_cm, o_cm, mo_cm, _ = read_bvh(cm)
    n_m, _, o_m, mo_m, _ = read_bvh(m)
    assert n_cm == n_m and sorted(n_cm) == sorted(MIXAMO) and n_cm[0] == "Hips"
    np.testing.assert_allclose(o_cm, 100.0 * o_m, atol=1e-4)
    np.testing.assert_allclose(mo_cm[:, :3], 100.0 * mo_m[:, :3], atol=1e-4)
    np.testing.assert_allclose(mo_cm[:, 3:], mo_m[:, 3:], atol=1e-6)
    text = cm.read_text()
    assert text.startswith("HIERARCHY\nROOT Hips\n")
    _, channels = read_bvh_details(cm)
    assert channels[0] == ["Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"]
    assert all(c == ["Zrotation", "Xrotation", "Yrotation"] for c in channels[1:])
    assert mo_cm.shape[1] == 6 + 3 * (len(n_cm) - 1)
    # T-pose rest: arms along X (left +X), legs straight down, fixed lengths: the clip's medians
    off = dict(zip(n_cm, o_cm))
    for joint, axis in (("LeftForeArm", (1, 0, 0)), ("LeftHand", (1, 0, 0)), ("RightForeArm", (-1, 0, 0)),
                        ("LeftLeg", (0, -1, 0)), ("LeftFoot", (0, -1, 0)), ("Spine1", (0, 1, 0))):
        assert _angle_deg(off[joint], np.asarray(axis, float)) < 1e-6, joint
    J, valid, *_ = _clip_arrays()
    thigh = np.median(np.linalg.norm(J[:, 5] - J[:, 4], axis=1)) / 10.0  # l_hip -> l_knee, cm
    assert np.linalg.norm(off["LeftLeg"]) == pytest.approx(thigh, abs=1e-4)
    # --names h36m: today's 17 joints and names
    h = _write(tmp_path, "h.bvh", names="h36m")
    n_h = read_bvh(h)[0]
    assert sorted(n_h) == sorted(JOINT_NAMES) and n_h[0] == "pelvis"
    with pytest.raises(UserError):
        BvhOptions(units="mm")


def test_frame_time_and_timeline_from_timestamps(tmp_path: Path):
    J, valid, t, fps, lm, vis = _clip_arrays()
    dt, slots = frame_slots(np.arange(10) / 25.0, 30.0)
    assert dt == pytest.approx(0.04) and slots.tolist() == list(range(10))
    # a source that dropped two frames (timestamps jump): the motion keeps real time
    keep = np.r_[0:40, 42:len(t)]
    text = bvh_document(J[keep], valid[keep], t[keep], fps, lm[keep], vis[keep])
    path = tmp_path / "gap.bvh"
    path.write_text(text)
    _, _, _, motion, ft = read_bvh(path)
    assert ft == pytest.approx(1 / 30.0, abs=1e-7) and len(motion) == len(t)
    np.testing.assert_allclose(motion[40], motion[39])  # the dropped frames hold the last pose
    np.testing.assert_allclose(motion[41], motion[39])
    assert not np.allclose(motion[42], motion[39])
    # no person: the previous pose; before the first person: the rest pose on the floor
    valid2 = valid.copy()
    valid2[:5] = False
    valid2[50:53] = False
    path.write_text(bvh_document(J, valid2, t, fps, lm, vis))
    names, parents, offsets, motion, _ = read_bvh(path)
    assert np.all(motion[:5, 3:] == 0.0) and motion[0, 0] == motion[0, 2] == 0.0
    np.testing.assert_allclose(motion[50:53], np.repeat(motion[49:50], 3, axis=0))
    ends, _ = read_bvh_details(path)
    pos = bvh_positions(parents, offsets, motion[:1])
    end_pos = {names[j]: p for j, p in bvh_end_positions(parents, offsets, motion[:1], ends).items()}
    assert abs(_lowest_foot(names, pos, end_pos)[0]) < 1e-3  # the rest pose stands on the floor
    # nobody at all: a valid file, rest pose throughout
    path.write_text(bvh_document(J, np.zeros(len(J), bool), t, fps))
    assert np.all(read_bvh(path)[3][:, 3:] == 0.0)


def test_render_bvh_from_a_run_clip(tmp_path: Path):
    """The output framework's entry point: a clip of root-relative joints + translation, and
    the options as the command line gives them."""
    poses, fps = recorded_poses()
    clip = SimpleNamespace(
        joints_mm=np.stack([p.joints_mm for p in poses]), translation_mm=np.stack([p.translation_mm for p in poses]),
        valid=np.array([p.valid for p in poses]), timestamps_s=np.array([p.timestamp_s for p in poses]), fps=fps,
        landmarks_world_mm=np.stack([p.landmarks_world_mm for p in poses]),
        landmarks_visibility=np.stack([p.landmarks_visibility for p in poses]))
    args = SimpleNamespace(units="m", names="mixamo", bvh_root="contact")
    opts = bvh_options(args)
    assert opts == {"units": "m", "names": "mixamo", "root": "contact"} and json.loads(json.dumps(opts)) == opts
    render_bvh(clip, tmp_path / "r.bvh", opts)
    J, valid, t, fps, lm, vis = _clip_arrays()
    (tmp_path / "d.bvh").write_text(bvh_document(J, valid, t, fps, lm, vis, BvhOptions("m", "mixamo", "contact")))
    a, b = read_bvh(tmp_path / "r.bvh"), read_bvh(tmp_path / "d.bvh")
    assert a[0] == b[0] and a[4] == b[4]
    np.testing.assert_allclose(a[2], b[2], atol=1e-5)
    np.testing.assert_allclose(a[3], b[3], atol=1e-3)  # float32 joints + translation summed in another order


def _through_the_writer(tmp_path: Path, cam_mm: np.ndarray, argv: list[str], invalid: tuple[int, ...] = ()):
    """cam_mm (T, 17, 3) camera space, as PoseFrames at 25 fps through the output framework
    with the command-line options `argv`; the file's FK back in camera mm (joints in our order)."""
    import argparse

    parser = argparse.ArgumentParser()
    add_file_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "a.bvh"), *argv])
    rec = Recording([output_spec(args.out[0], args)], 25.0)
    for i, c in enumerate(cam_mm):
        rec.write(PoseFrame.empty(i, i / 25, (640, 480)) if i in invalid else
                  PoseFrame(i, i / 25, True, (c - c[0]).astype(np.float32), c[0].astype(np.float32),
                            np.zeros((17, 2), np.float32), np.ones(17, np.float32), (640, 480)))
    rec.close()
    names, parents, offsets, motion, frame_time = read_bvh(tmp_path / "a.bvh")
    assert frame_time == pytest.approx(0.04) and len(motion) == len(cam_mm)
    pos = bvh_positions(parents, offsets, motion)
    return pos[:, [names.index(n) for n in JOINT_NAMES]] @ CAM_TO_RIG * 1000.0  # rig m -> camera mm (CAM_TO_RIG^-1 = ^T)


def test_rigid_skeleton_round_trips_exactly(tmp_path: Path):
    """Poses made by FK of a fixed 17-joint skeleton with random rotations come back exactly
    (--names h36m --bvh-root camera --units m, through the output framework)."""
    rest = default_rest(H36M_RIG)
    rng = np.random.default_rng(4)
    n = 30
    local = np.array([[matrix_from_euler_zxy(*e) for e in rng.uniform(-60, 60, (len(H36M_RIG.bones), 3))]
                      for _ in range(n)])
    G = np.zeros_like(local)
    for b, p in enumerate(H36M_RIG.parents):
        G[:, b] = local[:, b] if p < 0 else G[:, p] @ local[:, b]
    root = rng.uniform(-1, 1, (n, 3)) + [0, 0, -3]
    pos, _ = forward(H36M_RIG, rest, G, root)
    cam = pos[:, [H36M_RIG.names.index(j) for j in JOINT_NAMES]] @ CAM_TO_RIG * 1000.0
    back = _through_the_writer(tmp_path, cam, ["--names", "h36m", "--bvh-root", "camera", "--units", "m"], invalid=(5,))
    ok = np.arange(n) != 5
    assert np.linalg.norm(back[ok] - cam[ok], axis=-1).max() < 0.01  # mm (file precision: 1e-6 m, 1e-6 degrees)
    np.testing.assert_allclose(back[5], back[4], atol=1e-6)  # a frame without a person repeats the last pose


def test_real_h36m_poses(tmp_path: Path, h36m_val: Path):
    """Human3.6M ground truth (every 3rd frame of 300): its girdles are not rigid (the spine
    bends), so a skeleton with fixed offsets cannot be exact; limbs keep their directions."""
    from engines.camera import world_to_camera

    d = np.load(h36m_val)
    cam = world_to_camera(d["positions_3d"][:300:3].astype(np.float64), d["camera_R"][0, 0], d["camera_T"][0, 0])
    back = _through_the_writer(tmp_path, cam, ["--names", "h36m", "--bvh-root", "camera", "--units", "m"])
    err = np.linalg.norm(back - cam, axis=-1)
    assert err[:, 0].max() < 0.01  # the root is exact (to the file's 1e-6 m)
    assert err.mean() < 20.0, err.mean()


def _bpy_path() -> str | None:
    """Where the `bpy` wheel is importable from: POSESTREAM_BPY, .venv/bpy, or the venv."""
    for cand in (os.environ.get("POSESTREAM_BPY"), str(REPO / ".venv" / "bpy")):
        if cand and (Path(cand) / "bpy").is_dir():
            return cand
    try:
        import importlib.util

        return "" if importlib.util.find_spec("bpy") else None
    except (ImportError, ValueError):
        return None


@pytest.mark.slow
def test_blender_imports_the_bvh(tmp_path: Path):
    """Blender's stock BVH importer (bpy wheel) reads the file as an animator would: the
    bone count, a frame range equal to the clip, the scene end set, the feet within 3 cm of
    the floor on every frame of this standing clip, the person upright and facing the
    camera (Blender's front view)."""
    where = _bpy_path()
    if where is None:
        pytest.skip("bpy is not installed: .venv/bin/python -m pip install --no-deps --target .venv/bpy bpy==5.0.1")
    path = _write(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH", "")) if p))
    res = subprocess.run([sys.executable, str(REPO / "tests" / "blender_import_bvh.py"), str(path), "0.01"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BLENDER_BVH ")), None)
    assert line is not None, res.stdout[-2000:] + res.stderr[-2000:]
    got = json.loads(line[len("BLENDER_BVH "):])
    n_frames = len(recorded_poses()[0])
    assert got["bones"] == len(MIXAMO) and sorted(got["bone_names"]) == sorted(MIXAMO)
    assert got["frames"] == n_frames and (got["scene_start"], got["scene_end"]) == (1, n_frames)
    assert got["fps"] == pytest.approx(30.0, abs=1e-3)
    feet = np.array(got["feet_min_z"])
    assert np.abs(feet).max() < 0.03, feet  # metres (imported at 0.01 scale)
    up = np.array(got["up"])
    assert (up[:, 2] > np.cos(np.radians(15))).all()  # hips -> head within 15 degrees of Blender's Z
    facing = np.array(got["facing"])
    # towards the front view (-Y); this person stands turned 25-40 degrees to her right
    assert (np.degrees(np.arccos(-facing[:, 1])) < 60).all()
