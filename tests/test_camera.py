import numpy as np

from engines import camera as cm
from train import h36m


def test_world_camera_round_trip():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    T = rng.normal(size=3) * 1000
    x = rng.normal(size=(10, 3)) * 1000
    assert np.allclose(cm.camera_to_world(cm.world_to_camera(x, q, T), q, T), x)


def test_pinhole_projection_and_unprojection():
    cam = cm.Camera.pinhole(640, 480, 60.0)
    assert np.isclose(cam.f[0], 320 / np.tan(np.deg2rad(30)))
    x = np.array([[100.0, -50.0, 3000.0], [0.0, 0.0, 2000.0]])
    uv = cm.project(x, cam)
    assert np.allclose(uv[1], [320, 240])
    assert np.allclose(cm.unproject(uv, x[:, 2], cam.f, cam.c), x)


def test_distortion_matches_reference_formula():
    """Reference: 3d-pose-baseline's project_point_radial, written out independently."""
    k = np.array([-0.2, 0.24, -0.0015])
    p = np.array([-0.0009, -0.002])
    xy = np.array([[0.1, -0.2], [0.3, 0.05]])
    r2 = (xy**2).sum(1)
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * xy[:, 1] + p[1] * xy[:, 0]
    want = xy * (radial + tan)[:, None] + np.outer(r2, np.array([p[1], p[0]]))
    assert np.allclose(cm.distort(xy, k, p), want)


def test_staged_3d_projects_onto_sh_detections(h36m_val):
    """The data README's check: projected 3D vs SH detections, median a few pixels for limbs."""
    d = h36m.open_npz(h36m_val)
    rows = np.arange(0, len(d["positions_3d"]), 7)
    limbs = [2, 5, 13, 16]  # knees and wrists (SH index of 3D joints in SH_TO_17)
    sh_idx = [list(h36m.SH_TO_17).index(j) for j in limbs]
    for cam in range(4):
        c = h36m.camera_of(d, 9, cam)
        uv = cm.project(d["positions_3d"][rows], c)
        err = np.linalg.norm(uv[:, limbs] - d["detections_2d_sh"][rows, cam][:, sh_idx], axis=-1)
        assert np.median(err) < 12.0, (cam, np.median(err))
        # Without distortion the fit is measurably worse on the same points.
        uv0 = cm.project(d["positions_3d"][rows], c, distortion=False)
        assert np.abs(uv0 - uv).max() > 1.0


def test_solve_root_translation_recovers_offset():
    rng = np.random.default_rng(4)
    rel = rng.normal(size=(17, 3)) * 300
    rel -= rel[0]
    t = np.array([150.0, -80.0, 4200.0])
    cam = cm.Camera.pinhole(640, 480)
    uv = cm.project_camera(rel + t, cam.f, cam.c)
    assert np.allclose(cm.solve_root_translation(rel, uv, cam.f, cam.c), t, atol=1e-6)
