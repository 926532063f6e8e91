"""realtime.rig: the T-pose rest, exact bone directions on a recorded clip, hinge-like elbows
and knees, landmarks that come and go, the mirror, camera levelling, the running rest of a
live stream and the rotation conversions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engines.skeleton import JOINT_INDEX
from realtime.rig import (CAM_TO_RIG, H36M_RIG, HUMANOID_BVH, HUMANOID_VMC, Rig, RunningRest, default_points,
                          default_rest, euler_zxy_from_matrix, fit_rest, forward, level_rotation, local_rotations,
                          matrix_from_euler_zxy, quaternion_from_matrix, rig_points, rotate_points, rotation_about,
                          solve, unity_quaternion)

from recorded import recorded_poses

RIGS = (HUMANOID_BVH, HUMANOID_VMC, H36M_RIG)


def _clip() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    poses, _ = recorded_poses()
    J = np.stack([p.joints_mm + p.translation_mm for p in poses]).astype(np.float64)
    return (J, np.stack([p.landmarks_world_mm for p in poses]), np.stack([p.landmarks_visibility for p in poses]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(_unit(a) * _unit(b), -1), -1.0, 1.0)))


def _rotation_axis_angle(R: np.ndarray) -> tuple[np.ndarray, float]:
    angle = math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return axis / max(np.linalg.norm(axis), 1e-12), math.degrees(angle)


@pytest.mark.parametrize("rig", RIGS, ids=lambda r: r.name)
def test_default_t_pose_is_the_rest(rig: Rig):
    pts = default_points()
    rest = default_rest(rig)
    G = solve(rig, pts, rest)
    np.testing.assert_allclose(local_rotations(rig, G), np.broadcast_to(np.eye(3), G.shape), atol=1e-9)
    pos, _ = forward(rig, rest, G, pts["pelvis"])
    for b, bone in enumerate(rig.bones):
        np.testing.assert_allclose(pos[0, b], pts[bone.at][0], atol=1e-9, err_msg=bone.name)
    # arms along X, legs down, palms... the T-pose: left hand at +X, feet below the hips
    hand = rig.names.index("LeftHand" if rig is not H36M_RIG else "l_wrist")
    assert pos[0, hand, 0] - pos[0, 0, 0] > 0.5 and abs(pos[0, hand, 1] - pos[0, 0, 1] - 0.48) < 0.01


@pytest.mark.parametrize("rig", RIGS, ids=lambda r: r.name)
def test_recorded_clip_bone_directions_are_exact(rig: Rig):
    J, lm, vis = _clip()
    pts = rig_points(J, lm, vis)
    rest = fit_rest(rig, pts, default_rest(rig))
    G = solve(rig, pts, rest)
    assert np.isfinite(G).all()
    pos, ends = forward(rig, rest, G, pts["pelvis"])
    checked = 0
    for b, bone in enumerate(rig.bones):
        kids = [c for c in rig.children(b) if rig.bones[c].at == bone.aim]
        if bone.aim is None or not (kids or bone.end == bone.aim):
            continue
        data = pts[bone.aim] - pts[bone.at]
        ok = np.isfinite(data).all(-1)
        fk = (pos[:, kids[0]] if kids else ends[:, b]) - pos[:, b]
        assert ok.sum() > 50, bone.name  # the landmarks are visible in most frames
        assert _angle_deg(fk[ok], data[ok]).max() < 1e-4, bone.name
        # fixed length: the clip's median
        length = np.linalg.norm(fk, axis=-1)
        np.testing.assert_allclose(length, np.median(np.linalg.norm(data[ok], axis=-1)), rtol=1e-9)
        checked += 1
    assert checked >= {"h36m": 13, "vmc": 17, "mixamo": 18}[rig.name]
    # the 17 joints come back as bone points or end sites, as close as a fixed skeleton can:
    # the lifter's own bone lengths vary (this clip's left upper arm: 194-258 mm)
    where = {bone.at: pos[:, b] for b, bone in enumerate(rig.bones)}
    where.update({bone.end: ends[:, b] for b, bone in enumerate(rig.bones) if isinstance(bone.end, str)})
    for name in ("pelvis", "l_elbow", "r_knee", "thorax", "head", "l_ankle"):
        err = np.linalg.norm(where[name] - pts[name], axis=-1)
        assert np.median(err) < 0.05, (name, np.median(err))  # metres


def test_elbow_and_knee_bend_as_hinges():
    """A bent elbow turns the forearm about the T-pose's hinge axis (Y for the arms, palms
    down), whichever way the upper arm is rolled: the roll goes into the upper arm."""
    rig = HUMANOID_BVH
    base = default_points()
    rest = default_rest(rig)
    L_arm, L_fore = rig.names.index("LeftArm"), rig.names.index("LeftForeArm")
    L_up, L_low = rig.names.index("LeftUpLeg"), rig.names.index("LeftLeg")
    for bend_to, arm_roll in (((0, 0, 1), 0.0), ((0, -1, 0), 90.0), ((0, 1, 0), -90.0)):
        pts = {k: v.copy() for k, v in base.items()}
        elbow = pts["l_elbow"][0]
        pts["l_wrist"][0] = elbow + 0.25 * np.asarray(bend_to, float)
        pts["l_hand"][0] = pts["l_wrist"][0] + 0.08 * np.asarray(bend_to, float)
        pts["l_palm"][0] = (-1.0, 0.0, 0.0)  # the knuckles' axis turned by the hinge alone (no pronation)
        L = local_rotations(rig, solve(rig, pts, rest))[0]
        axis, angle = _rotation_axis_angle(L[L_fore])
        assert angle == pytest.approx(90.0, abs=1e-6) and abs(axis[1]) == pytest.approx(1.0, abs=1e-6)
        axis, angle = _rotation_axis_angle(L[L_arm])
        assert angle == pytest.approx(abs(arm_roll), abs=1e-6)
        if arm_roll:
            assert abs(axis[0]) == pytest.approx(1.0, abs=1e-6)  # a roll about the upper arm's own axis
    # the knee: the shin swings back (rest bend -Z), a hinge about X
    pts = {k: v.copy() for k, v in base.items()}
    knee = pts["l_knee"][0]
    for k in ("l_ankle", "l_toe", "l_toe_base", "l_heel"):
        pts[k][0] = knee + (pts[k][0] - knee) @ rotation_about(np.array([1.0, 0.0, 0.0]), np.radians(70.0)).T
    L = local_rotations(rig, solve(rig, pts, rest))[0]
    axis, angle = _rotation_axis_angle(L[L_low])
    assert angle == pytest.approx(70.0, abs=1e-6) and abs(axis[0]) == pytest.approx(1.0, abs=1e-6)
    assert _rotation_axis_angle(L[L_up])[1] == pytest.approx(0.0, abs=1e-6)


def test_without_landmarks_hands_feet_and_head_follow_their_parents():
    J, _, _ = _clip()
    for rig in (HUMANOID_BVH, H36M_RIG):
        pts = rig_points(J)  # no MediaPipe landmarks at all
        rest = fit_rest(rig, pts, default_rest(rig))
        assert np.isfinite(rest.offset).all()
        G = solve(rig, pts, rest)
        L = local_rotations(rig, G)
        assert np.isfinite(L).all()
        for name in ("LeftHand", "RightFoot", "LeftToeBase", "l_wrist", "r_ankle"):
            if name in rig.names:
                np.testing.assert_allclose(L[:, rig.names.index(name)], np.broadcast_to(np.eye(3), L[:, 0].shape),
                                           atol=1e-9, err_msg=name)
        # the head still turns: its left-right axis comes from the face (neck_nose) without ears
        head = rig.names.index("Head" if rig is HUMANOID_BVH else "neck_nose")
        assert np.ptp(euler_zxy_from_matrix(L[:, head]), axis=0).max() > 1.0


def test_landmarks_below_the_visibility_threshold_are_ignored():
    J, lm, vis = _clip()
    low = vis.copy()
    low[:, 31] = 0.2  # the left toe "not visible"
    pts = rig_points(J, lm, low)
    assert np.isnan(pts["l_toe"]).all() and np.isfinite(pts["r_toe"]).all()
    assert np.isfinite(rig_points(J, lm, vis)["l_toe"]).all()


def test_mirror_swaps_sides_and_reflects():
    J, lm, vis = _clip()
    a, m = rig_points(J, lm, vis), rig_points(J, lm, vis, mirror=True)
    flip = np.array([-1.0, 1.0, 1.0])
    for left, right in (("l_wrist", "r_wrist"), ("l_toe", "r_toe"), ("l_hand", "r_hand")):
        np.testing.assert_allclose(m[left], a[right] * flip, atol=1e-12)
    np.testing.assert_allclose(m["head_side"], -a["head_side"] * flip, atol=1e-12)  # ears swap too


def test_level_rotation_undoes_a_camera_tilt():
    J, lm, vis = _clip()
    pts = rig_points(J, lm, vis)
    L0 = level_rotation(pts)
    line = np.median(_unit(pts["thorax"] - 0.5 * (pts["l_ankle"] + pts["r_ankle"])), axis=0)
    assert 5.0 < _angle_deg(line, np.array([0.0, 1.0, 0.0])) < 25.0  # this camera looks down at the person
    np.testing.assert_allclose(_unit(L0 @ line), [0.0, 1.0, 0.0], atol=1e-9)
    tilt = rotation_about(np.array([1.0, 0.0, 0.0]), np.radians(12.0)) @ rotation_about(np.array([0.0, 0.0, 1.0]),
                                                                                       np.radians(-8.0))
    L1 = level_rotation(rotate_points(pts, tilt))
    up0, up1 = L0 @ line, L1 @ tilt @ line
    assert _angle_deg(up0, up1) < 0.2  # per-component medians are nearly, not exactly, rotation-invariant
    # the heading is kept: levelling turns about a horizontal axis only
    assert abs(_rotation_axis_angle(L0)[0][1]) < 1e-9


def test_running_rest_settles_on_the_clip_rest():
    J, lm, vis = _clip()
    pts = rig_points(J, lm, vis)
    run = RunningRest(HUMANOID_VMC, window=300, every=30)
    np.testing.assert_allclose(run.rest.offset, default_rest(HUMANOID_VMC).offset)
    for i in range(90):
        run.update({k: v[i:i + 1] for k, v in pts.items()})
    clip_rest = fit_rest(HUMANOID_VMC, {k: v[:90] for k, v in pts.items()}, default_rest(HUMANOID_VMC))
    np.testing.assert_allclose(run.rest.offset, clip_rest.offset, atol=1e-12)
    np.testing.assert_allclose(run.level, level_rotation({k: v[:90] for k, v in pts.items()}), atol=1e-12)


def test_rotation_conversions_round_trip():
    rng = np.random.default_rng(3)
    for z, x, y in rng.uniform(-170, 170, size=(50, 3)) * np.array([1, 0.5, 1]):
        R = matrix_from_euler_zxy(z, x, y)
        np.testing.assert_allclose(matrix_from_euler_zxy(*euler_zxy_from_matrix(R)), R, atol=1e-9)
        q = quaternion_from_matrix(R)
        x_, y_, z_, w = q
        Rq = np.array([[1 - 2 * (y_ * y_ + z_ * z_), 2 * (x_ * y_ - z_ * w), 2 * (x_ * z_ + y_ * w)],
                       [2 * (x_ * y_ + z_ * w), 1 - 2 * (x_ * x_ + z_ * z_), 2 * (y_ * z_ - x_ * w)],
                       [2 * (x_ * z_ - y_ * w), 2 * (y_ * z_ + x_ * w), 1 - 2 * (x_ * x_ + y_ * y_)]])
        np.testing.assert_allclose(Rq, R, atol=1e-9)
    # Unity's view of a turn about the rig's Y (up) by +30 degrees: the same turn about Unity's
    # Y, opposite sense (the X axis flips between the two frames)
    qu = unity_quaternion(rotation_about(np.array([0.0, 1.0, 0.0]), np.radians(30.0)))
    np.testing.assert_allclose(qu, [0.0, -math.sin(math.radians(15)), 0.0, math.cos(math.radians(15))], atol=1e-12)
    # camera -> rig: y and z flip (a rotation, handedness kept)
    assert np.linalg.det(CAM_TO_RIG) == pytest.approx(1.0)
    assert JOINT_INDEX["pelvis"] == 0
