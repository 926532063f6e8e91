import numpy as np

from engines import skeleton as sk


def test_joint_tree_is_consistent():
    assert sk.NUM_JOINTS == 17 and len(sk.PARENTS) == 17
    assert sk.JOINT_NAMES[0] == "pelvis" and sk.PARENTS[0] == -1
    assert all(p < c for p, c in sk.BONES)  # parents come first: a topological order
    assert len(sk.BONES) == 16
    for l, r in zip(sk.LEFT_JOINTS, sk.RIGHT_JOINTS):
        assert sk.JOINT_NAMES[l].replace("l_", "") == sk.JOINT_NAMES[r].replace("r_", "")
    perm = np.array(sk.FLIP_PERMUTATION)
    assert (perm[perm] == np.arange(17)).all()


def test_fbi_bones_are_tree_bones():
    assert sk.NUM_FBI_BONES == 14
    assert set(sk.FBI_BONES) <= set(sk.BONES)
    assert len(set(sk.FBI_BONES)) == 14


def _pose_with_bone(dz: float, length: float = 300.0) -> np.ndarray:
    """All bones lie in the image plane except r_hip->r_knee, tilted by dz/length."""
    j = np.zeros((17, 3))
    rng = np.random.default_rng(0)
    j[:, :2] = rng.normal(size=(17, 2)) * 200
    dx = np.sqrt(length**2 - dz**2)
    j[2] = j[1] + np.array([dx, 0.0, dz])
    return j


def test_fbi_rule_thresholds_and_directions():
    t = sk.FBI_THRESHOLD
    assert abs(t - np.sin(np.deg2rad(15))) < 1e-12
    k = sk.FBI_BONES.index((1, 2))
    # dz < 0: child nearer the camera (z is away from the camera) -> forward.
    assert sk.fbi_states(_pose_with_bone(-300 * (t + 0.05)))[k] == sk.FORWARD
    assert sk.fbi_states(_pose_with_bone(+300 * (t + 0.05)))[k] == sk.BACKWARD
    assert sk.fbi_states(_pose_with_bone(300 * (t - 0.05)))[k] == sk.PARALLEL
    assert sk.fbi_states(_pose_with_bone(-300 * (t - 0.05)))[k] == sk.PARALLEL


def test_fbi_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    poses = rng.normal(size=(5, 4, 17, 3)) * 300
    out = sk.fbi_states(poses)
    assert out.shape == (5, 4, 14) and out.dtype == np.int8
    for idx in np.ndindex(5, 4):
        for b, (a, c) in enumerate(sk.FBI_BONES):
            v = poses[idx][c] - poses[idx][a]
            s = v[2] / np.linalg.norm(v)
            want = sk.FORWARD if s < -sk.FBI_THRESHOLD else sk.BACKWARD if s > sk.FBI_THRESHOLD else sk.PARALLEL
            assert out[idx][b] == want


def test_fbi_invariant_to_scale_and_translation():
    rng = np.random.default_rng(2)
    p = rng.normal(size=(10, 17, 3)) * 300
    assert (sk.fbi_states(p) == sk.fbi_states(p * 2.5 + np.array([10.0, -20.0, 3000.0]))).all()


def test_flip_swaps_sides_and_mirrors():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(17, 3))
    f = sk.flip_horizontal(p)
    assert np.allclose(sk.flip_horizontal(f), p)
    assert np.allclose(f[sk.LEFT_JOINTS[0], 0], -p[sk.RIGHT_JOINTS[0], 0])
    assert np.allclose(sk.bone_lengths(f), sk.bone_lengths(p)[[sk.BONES.index((sk.FLIP_PERMUTATION[a], sk.FLIP_PERMUTATION[b])) for a, b in sk.BONES]])
