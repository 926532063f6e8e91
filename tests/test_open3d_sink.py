"""The --open3d window, rendered headless (Mesa EGL offscreen, or Xvfb if DISPLAY is set):
tubes and balls in one colour per track id, the id labels, the floor grid, a view framing
every person, the user taking the view over."""
from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.frames import PoseFrame

from pose_fixtures import standing_pose

W, H = 320, 240


@pytest.fixture
def sink():
    from realtime.open3d_sink import Open3DSink, Open3DUnavailable

    try:
        s = Open3DSink(W, H, visible=False)
    except Open3DUnavailable as exc:
        pytest.skip(f"Open3D cannot render here: {exc}")
    yield s
    s.close()


def _person(i: int, trans: np.ndarray | None, track_id: int = 0) -> PoseFrame:
    rel = standing_pose()
    tr = np.full(3, np.nan) if trans is None else trans
    return PoseFrame(i, i / 30.0, True, rel.astype(np.float32), np.asarray(tr, np.float32),
                     np.zeros((17, 2), np.float32), np.ones(17, np.float32), (640, 480), track_id=track_id)


def _frame(i: int, *people: tuple[int, np.ndarray | None]) -> PoseFrame:
    return PoseFrame.from_people([_person(i, tr, tid) for tid, tr in people], i, i / 30.0, (640, 480))


def _ink(img: np.ndarray) -> dict[str, float]:
    """Fractions of pixels in the colours of track 0 (blue shades), track 1 (orange shades),
    the floor grid (grey) and anything that is not the background."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return {"any": float((np.abs(img - img[0, 0]).max(axis=-1) > 0.05).mean()),
            "id0": float(((b > r + 0.25) & (b > g + 0.1)).mean()),
            "id1": float(((r > b + 0.3) & (g > b) & (r > g + 0.1)).mean()),
            "grid": float(((np.ptp(img, axis=-1) < 0.09) & (r > 0.45) & (r < 0.8)).mean())}


def _mask_centroid_x(img: np.ndarray, key: str) -> float:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    m = ((b > r + 0.25) & (b > g + 0.1)) if key == "id0" else ((r > b + 0.3) & (g > b) & (r > g + 0.1))
    return float(np.nonzero(m)[1].mean())


def test_skeleton_floor_and_trail_for_one_person(sink):
    assert sink.update(_frame(0, (0, None)))  # no metric root: drawn 3 m ahead
    img = sink.capture()
    assert img.shape == (H, W, 3)
    ink = _ink(img)
    assert ink["id0"] > 0.005 and ink["id1"] == 0.0, ink
    # The person walks away from the camera: smaller but framed, on a floor grid.
    t0 = time.perf_counter()
    for i in range(30):
        assert sink.update(_frame(i + 1, (0, np.array([-400.0 + 25 * i, 300.0, 2500.0 + 60 * i]))))
    per_update_ms = (time.perf_counter() - t0) * 1e3 / 30
    ink2 = _ink(sink.capture())
    assert ink2["id0"] > 0.003 and ink2["grid"] > 0.01, ink2
    assert len(sink._trails.lines) >= 25  # one segment per frame placed in the scene
    print(f"open3d update: {per_update_ms:.1f} ms/frame at {W}x{H}")


def test_every_person_in_their_colour_and_framed(sink):
    """Two people 5 m apart: both drawn, each in their id's colour, the left one on the left."""
    for i in range(20):
        sink.update(_frame(i, (0, np.array([-2500.0, 300.0, 5000.0])), (1, np.array([2500.0, 300.0, 6000.0]))))
    img = sink.capture()
    ink = _ink(img)
    assert ink["id0"] > 0.001 and ink["id1"] > 0.001, ink
    assert _mask_centroid_x(img, "id0") < W / 2 < _mask_centroid_x(img, "id1")
    assert len(sink._labels.triangles) > 0  # the ids written above the heads
    # One person leaves: only the other is drawn.
    sink.update(_frame(20, (1, np.array([2500.0, 300.0, 6000.0]))))
    assert _ink(sink.capture())["id0"] < 0.2 * ink["id0"]


def test_invalid_frame_clears_skeleton(sink):
    sink.update(_frame(0, (0, None)))
    before = _ink(sink.capture())
    sink.update(PoseFrame.empty(1, 1 / 30.0, (640, 480)))
    after = _ink(sink.capture())  # only the camera's small axis triad is left
    assert after["id0"] < 0.2 * before["id0"] and after["any"] < before["any"], (before, after)


def test_user_takes_over_the_view(sink):
    sink.update(_frame(0, (0, np.array([0.0, 300.0, 3000.0]))))
    assert sink.auto_view
    sink._vis.get_view_control().rotate(200.0, 0.0)  # as a mouse drag does
    sink.update(_frame(1, (0, np.array([1500.0, 300.0, 3000.0]))))
    assert not sink.auto_view


def test_poll_keeps_the_last_frame(sink):
    sink.update(_frame(0, (0, None)))
    before = _ink(sink.capture())
    assert sink.poll() and sink.poll()  # --hold: events handled, nothing new drawn
    assert _ink(sink.capture()) == pytest.approx(before, rel=0.05, abs=1e-4)


def test_close_is_idempotent(sink):
    sink.close()
    sink.close()
    assert sink.update(_frame(0, (0, None))) is False and sink.poll() is False


def test_person_colours_and_rotations():
    from realtime.open3d_sink import PERSON_RGB, _rotations_from_z, person_colours

    c = person_colours(0)
    assert c.shape == (3, 3) and (c[1] > c[0]).all() and (c[2] < c[0]).all()  # left lighter, right darker
    assert np.allclose(person_colours(len(PERSON_RGB)), c)  # the palette cycles
    d = np.array([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [0, 0.6, 0.8]])
    R = _rotations_from_z(d)
    assert np.allclose(R @ [0, 0, 1.0], d) and np.allclose(R @ R.transpose(0, 2, 1), np.eye(3))


def test_visible_window_without_display_is_a_clear_error(monkeypatch):
    import sys

    from realtime.open3d_sink import Open3DSink, Open3DUnavailable

    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY check is Linux-only")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(Open3DUnavailable, match="needs a display"):
        Open3DSink(visible=True)
